"""The workflow end to end on a tiny figure: outputs, no-op rerun, minimal reruns, refusal;
the main command killed and run again as it is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import ROOT, write_tiny

pytestmark = pytest.mark.workflow


def snakemake(cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(cwd),
            "--cores",
            "2",
            *args,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )


def planned(cwd) -> dict[str, int]:
    """Rule -> number of jobs that a dry run would execute."""
    out = snakemake(cwd, "-n")
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:]
    rows = dict(line.split() for line in table if line.strip())
    rows.pop("total", None)
    rows.pop("all", None)
    return {k: int(v) for k, v in rows.items()}


def test_workflow_builds_caches_and_refuses_bad_params(tiny_env):
    first = snakemake(tiny_env)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tiny_env / "results" / "quick" / "tiny-fig"
    for name in (
        "tiny-fig.pdf",
        "tiny-fig.png",
        "tiny-fig.ipynb",
        "claims.csv",
        *(f"panel_{p}.csv" for p in "ABCDE"),
    ):
        assert (out / name).stat().st_size > 0, name
    b = pd.read_csv(out / "panel_B.csv")
    assert list(b.spawn_epoch) == [0.0, 1.0]
    claims = pd.read_csv(out / "claims.csv")
    assert {"claim", "expected", "measured", "holds"} <= set(claims.columns)
    executed = (out / "tiny-fig.ipynb").read_text()
    assert '"output_type": "error"' not in executed

    assert planned(tiny_env) == {}  # rerun with nothing changed: no work

    path = tiny_env / "params" / "tiny-fig.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["quick"]["claims"]["barrier_zero"] = 0.02  # read by the notebook only
    path.write_text(yaml.safe_dump(raw))
    assert planned(tiny_env) == {"figure": 1}

    raw["quick"]["children"]["seed"] = 7  # new children, same parent
    path.write_text(yaml.safe_dump(raw))
    assert planned(tiny_env) == {"children": 2, "children_measure": 2, "figure": 1}

    write_tiny(tiny_env / "params", "tiny-bad", **{"parent.lr": "0.1x"})
    bad = snakemake(tiny_env, "-n")
    assert bad.returncode != 0
    assert "tiny-bad.yaml: quick.parent.lr: expected a number" in bad.stderr + bad.stdout


def test_two_figures_share_one_parent(tiny_env):
    write_tiny(tiny_env / "params", "tiny-twin", **{"claims.late_epoch": 0.5})
    jobs = planned(tiny_env)
    assert jobs["parent"] == 1 and jobs["children"] == 2 and jobs["figure"] == 2


def main_command(cwd: Path) -> subprocess.Popen:
    """``make figures``'s command in its own process group, as a terminal would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "ntkpaper", "figures", "--cores", "2"],
        cwd=cwd,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def result_files(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for p in results.rglob("*") if p.is_file()}


def test_main_command_killed_resumes_as_it_is_and_refuses_a_second_run(tiny_env, monkeypatch):
    """SIGKILL the whole main command after the parent's first checkpoints; the same command
    clears the stale lock and ends with every result file of an uninterrupted run."""
    monkeypatch.setenv("NTKPAPER_RUNS", str(tiny_env / "clean-runs"))
    monkeypatch.setenv("NTKPAPER_RESULTS", str(tiny_env / "clean-results"))
    (tiny_env / "clean").mkdir()
    clean = main_command(tiny_env / "clean")
    assert clean.wait() == 0, clean.stdout.read().decode()[-3000:]

    monkeypatch.setenv("NTKPAPER_RUNS", str(tiny_env / "runs"))
    monkeypatch.setenv("NTKPAPER_RESULTS", str(tiny_env / "results"))
    first = main_command(tiny_env)
    deadline = time.time() + 300
    while len(list((tiny_env / "runs" / "parent").glob("*/snap-*.npz"))) < 2:
        assert first.poll() is None and time.time() < deadline, first.stdout.read().decode()
        time.sleep(0.01)
    second = main_command(tiny_env)  # while the first is live: refused, and harmless
    out = second.communicate(timeout=60)[0].decode()
    assert second.returncode != 0 and "another run of the workflow is live" in out, out
    assert str(first.pid) in out, out
    assert first.poll() is None
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert any((tiny_env / ".snakemake" / "locks").iterdir())  # what Snakemake left behind

    again = main_command(tiny_env)
    out = again.communicate(timeout=600)[0].decode()
    assert again.returncode == 0, out[-3000:]
    assert "clearing the lock left by a run that was killed" in out

    resumed = result_files(tiny_env / "results" / "quick")
    uninterrupted = result_files(tiny_env / "clean-results" / "quick")
    assert resumed.keys() == uninterrupted.keys()
    data = [name for name in resumed if name.endswith(".csv")]
    assert len(data) >= 6  # panels A-E and the claims
    for name in data:  # the numbers, byte for byte; PDF, PNG and notebook carry dates
        assert resumed[name] == uninterrupted[name], name
