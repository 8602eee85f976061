"""The workflow end to end on tiny figures: outputs, no-op rerun, minimal reruns, refusal;
the main command killed and run again as it is. One uninterrupted run of the tiny figures
(``conftest.tiny_built``) serves every test that only reads or dry-runs."""

from __future__ import annotations

import contextlib
import os
import re
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
    """Rule -> number of jobs that a dry run would execute (``children``: the rules of
    children trained together, one per parent and optimiser, ``children_<hash>``)."""
    out = snakemake(cwd, "-n")
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:]
    rows = dict(line.split() for line in table if line.strip())
    rows.pop("total", None)
    rows.pop("all", None)
    jobs: dict[str, int] = {}
    for rule, n in rows.items():
        rule = "children" if re.fullmatch(r"children_[0-9a-f]{8}", rule) else rule
        jobs[rule] = jobs.get(rule, 0) + int(n)
    return jobs


@contextlib.contextmanager
def edited(path: Path, **edits):
    """``path`` (a tiny figure) with ``section.key=value`` edits to its quick profile, then put
    back as it was, mtime included, so that the shared run is up to date again."""
    text, stat = path.read_text(), path.stat()
    raw = yaml.safe_load(text)
    for dotted, value in edits.items():
        node = raw["quick"]
        *head, last = dotted.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    try:
        path.write_text(yaml.safe_dump(raw))
        yield
    finally:
        path.write_text(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_workflow_builds_caches_and_refuses_bad_params(built_env):
    tiny_built = built_env  # the shared run, this process's environment pointing at it
    out = tiny_built / "results" / "quick" / "tiny-fig"
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

    assert planned(tiny_built) == {}  # rerun with nothing changed: no work

    path = tiny_built / "params" / "tiny-fig.yaml"
    with edited(path, **{"claims.barrier_zero": 0.02}):  # read by the notebook only
        assert planned(tiny_built) == {"figure": 1}
    with edited(path, **{"claims.barrier_zero": 0.02, "children.seed": 7}):  # same parent
        # the two new children runs: one job (both spawn epochs together)
        assert planned(tiny_built) == {"children": 1, "children_measure": 2, "figure": 1}

    bad_path = write_tiny(tiny_built / "params", "tiny-bad", **{"parent.lr": "0.1x"})
    try:
        bad = snakemake(tiny_built, "-n")
    finally:
        bad_path.unlink()
    assert bad.returncode != 0
    assert "tiny-bad.yaml: quick.parent.lr: expected a number" in bad.stderr + bad.stdout
    assert planned(tiny_built) == {}  # every edit undone


def test_landscape_notebooks_run_end_to_end(tiny_built):
    """fort_plane, fort_tsne, fort_function_distance and fort_kernel_velocity on tiny figures
    that read tiny-fig's runs: every output, the claims table, no error in the notebook; the
    workflow computed tiny-fig's parent and children once for all of them."""
    tables = {
        "tiny-plane": ["summary.csv"],
        "tiny-tsne": ["points.csv", "apart.csv"],
        "tiny-distance": ["spawn.csv"],
        "tiny-velocity": ["velocity.csv", "barrier.csv", "both.csv"],
        "tiny-geometry": ["hessian.csv", "logit_gradient.csv", "panel_E.csv"],
    }
    for fid, names in tables.items():
        out = tiny_built / "results" / "quick" / fid
        for name in (f"{fid}.pdf", f"{fid}.png", f"{fid}.ipynb", "claims.csv", *names):
            assert (out / name).stat().st_size > 0, (fid, name)
        executed = (out / f"{fid}.ipynb").read_text()
        assert '"output_type": "error"' not in executed, fid
        table = pd.read_csv(out / "claims.csv")
        assert len(table) >= 1 and table.holds.isin([True, False]).all(), (fid, table)
    runs = tiny_built / "runs"
    assert len(list((runs / "parent").iterdir())) == 1
    assert len(list((runs / "children").iterdir())) == 4  # 2 spawn epochs + 2 low-lr t~
    assert len(list((runs / "plane").iterdir())) == 2 and len(list((runs / "tsne").iterdir())) == 1
    assert len(list((runs / "parent_geometry").iterdir())) == 1
    assert len(list((runs / "children_geometry").iterdir())) == 2
    summary = pd.read_csv(tiny_built / "results" / "quick" / "tiny-plane" / "summary.csv")
    assert list(summary.spawn_epoch) == [0.0, 1.0]
    points = pd.read_csv(tiny_built / "results" / "quick" / "tiny-tsne" / "points.csv")
    # the parent at every snapshot, each of 2 x 2 children at epoch 1 (spawn 0 only) and the end
    snapshots = pd.read_csv(tiny_built / "results" / "quick" / "tiny-fig" / "panel_A.csv")
    assert (points.child < 0).sum() == len(snapshots) and (points.child >= 0).sum() == 6


def test_silent_alignment_notebooks_run_end_to_end(tiny_built):
    """sa_dynamics, sa_linear, sa_deep_linear and sa_transfer on tiny figures: every output, a
    claims row per claim the file names, no error in the executed notebook."""
    from .conftest import SILENT

    for fid, (_, section) in SILENT.items():
        out = tiny_built / "results" / "quick" / fid
        for name in (f"{fid}.pdf", f"{fid}.png", f"{fid}.ipynb", "claims.csv"):
            assert (out / name).stat().st_size > 0, (fid, name)
        executed = (out / f"{fid}.ipynb").read_text()
        assert '"output_type": "error"' not in executed, fid
        table = pd.read_csv(out / "claims.csv")
        expected = len(section["claims"]["rows"]) + 2 * (fid == "tiny-sa-transfer")
        assert len(table) == expected and table.holds.isin([True, False]).all(), (fid, table)
    summary = pd.read_csv(tiny_built / "results" / "quick" / "tiny-sa-linear" / "summary.csv")
    assert list(summary.sigma) == [1e-3, 1e-2]
    assert (summary.t_half_theory > 0).all() and (summary.t_half > 0).all()
    assert len(list((tiny_built / "runs" / "alignment").iterdir())) == 5  # 2 + 1 + 2 runs


def test_kernel_notebooks_run_end_to_end(tiny_built):
    """fort_linearised and fort_nonlinear_advantage on a tiny figure each: every output, the
    claims table, no error in the executed notebook."""
    for fid in ("tiny-kernel", "tiny-advantage"):
        out = tiny_built / "results" / "quick" / fid
        for name in (f"{fid}.pdf", f"{fid}.png", f"{fid}.ipynb", "claims.csv", "t_tilde.csv"):
            assert (out / name).stat().st_size > 0, (fid, name)
        t = pd.read_csv(out / "t_tilde.csv", index_col="t_tilde")
        assert list(t.index) == [0.0, 1.0], fid
        cols = ["linearised", "low_lr", "baseline", "advantage", "barrier"]
        assert t[cols].notna().all().all(), (fid, t)
        curves = pd.read_csv(out / "curves.csv", index_col="epoch")
        assert curves.shape == (4, 2), (fid, curves)  # epochs 0..3 of linearised training
        claims = pd.read_csv(out / "claims.csv")
        assert list(claims.columns[-4:]) == ["claim", "expected", "measured", "holds"], fid
        assert len(claims) == 3 and claims.holds.isin([True, False]).all(), (fid, claims)
        executed = (out / f"{fid}.ipynb").read_text()
        assert '"output_type": "error"' not in executed, fid
    # both notebooks read the same runs: one table
    kernel, advantage = (
        pd.read_csv(tiny_built / "results" / "quick" / f / "t_tilde.csv")
        for f in ("tiny-kernel", "tiny-advantage")
    )
    pd.testing.assert_frame_equal(kernel, advantage)
    # and the barrier column is the integrated figure's panel B at the same spawn epochs
    b = pd.read_csv(tiny_built / "results" / "quick" / "tiny-fig" / "panel_B.csv")
    assert list(kernel.barrier) == list(b.barrier_test)


def test_parent_learning_rate_edit_reruns_everything_downstream(built_env):
    tiny_built = built_env  # the shared run, this process's environment pointing at it
    path = tiny_built / "params" / "tiny-fig.yaml"
    with edited(path, **{"parent.lr": 0.05}):
        assert planned(tiny_built) == {
            "parent": 1,
            "parent_measure": 1,
            "children": 1,  # both spawn epochs, together
            "children_measure": 2,
            "figure": 1,
        }
    kernel = tiny_built / "params" / "tiny-kernel.yaml"
    with edited(kernel, **{"parent.lr": 0.05}):  # its Taylor models and low-lr children too
        assert planned(tiny_built) == {
            "parent": 1,
            "linearised": 1,
            "children": 2,  # the low-lr children and the barrier children: one job each
            "children_measure": 2,
            "figure": 1,
        }
    assert planned(tiny_built) == {}


def test_measure_edit_reruns_only_measurements_and_figures(built_env):
    tiny_built = built_env  # the shared run, this process's environment pointing at it
    path = tiny_built / "params" / "tiny-fig.yaml"
    with edited(path, **{"measure.probe_size": 6}):  # the NTK probe: both measurement jobs
        assert planned(tiny_built) == {"parent_measure": 1, "children_measure": 2, "figure": 1}
    with edited(path, **{"measure.barrier_points": 11}):  # the barrier only
        assert planned(tiny_built) == {"children_measure": 2, "figure": 1}
    kernel = tiny_built / "params" / "tiny-kernel.yaml"
    with edited(kernel, **{"measure.bn_examples": 128}):  # and the Taylor models' statistics
        assert planned(tiny_built) == {"linearised": 1, "children_measure": 2, "figure": 1}
    assert planned(tiny_built) == {}


def test_two_figures_share_one_parent(tiny_env):
    write_tiny(tiny_env / "params", "tiny-twin", **{"claims.late_epoch": 0.5})
    jobs = planned(tiny_env)
    assert jobs["parent"] == 1 and jobs["children"] == 1 and jobs["figure"] == 2


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


def test_main_command_killed_resumes_as_it_is_and_refuses_a_second_run(tiny_env, tiny_built):
    """SIGKILL the whole main command after the parent's first checkpoints; the same command
    clears the stale lock and ends with every result file of an uninterrupted run (the
    shared ``tiny_built``, whose tiny-fig is this figure)."""
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

    resumed = result_files(tiny_env / "results" / "quick" / "tiny-fig")
    uninterrupted = result_files(tiny_built / "results" / "quick" / "tiny-fig")
    assert resumed.keys() == uninterrupted.keys()
    assert (tiny_env / "results" / "quick" / "site" / "index.html").exists()
    data = [name for name in resumed if name.endswith(".csv")]
    assert len(data) >= 6  # panels A-E and the claims
    for name in data:  # the numbers, byte for byte; PDF, PNG and notebook carry dates
        assert resumed[name] == uninterrupted[name], name


def test_a_notebook_without_its_runs_says_which_command_produces_them(built_env, tmp_path):
    """Opened (or executed) before the workflow has produced its runs, a notebook stops at its
    first code cell with the command that produces them; it never trains by itself."""
    from ntkpaper import views

    assert views.load("tiny-fig", "quick").id == "tiny-fig"  # the runs are there: it loads
    env = {**os.environ, "NTKPAPER_RUNS": str(tmp_path / "empty")}
    out = tmp_path / "executed.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "fort_integrated_view.ipynb"),
         str(out), "-p", "figure_id", "tiny-fig", "-p", "profile", "quick", "--cwd", str(ROOT)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0
    text = out.read_text()
    assert "RunsMissing" in text and "tiny-fig.pdf --config profile=quick" in text
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("manifest.json"))


def test_a_diverging_figure_is_reported_failed_and_the_others_are_built(built_env):
    """A figure whose parent diverges (lr 1e6) fails with the run's message; the main command
    exits non-zero, the other figures stay built, and the report site shows it as failed,
    with the run's log."""
    params, results = built_env / "params", built_env / "results" / "quick"
    path = write_tiny(params, "tiny-diverge", **{"parent.lr": 1e6, "parent.seed": 11})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ntkpaper", "figures", "--cores", "2"],
            cwd=built_env, env=dict(os.environ), capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        path.unlink()
    assert done.returncode != 0
    assert not (results / "tiny-diverge" / "tiny-diverge.pdf").exists()
    assert (results / "tiny-fig" / "tiny-fig.pdf").exists()
    page = (results / "site" / "figures" / "tiny-diverge.html").read_text()
    assert "failed (run parent" in page and "the run diverged" in page
    index = (results / "site" / "index.html").read_text()
    assert "1 failed" in index and "tiny-diverge" in index
    assert planned(built_env) == {}  # the failed figure gone, every other one up to date
