"""The workflow end to end on a tiny figure: outputs, no-op rerun, minimal reruns, refusal."""

from __future__ import annotations

import os
import subprocess
import sys

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
