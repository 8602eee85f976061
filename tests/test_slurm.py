"""The SLURM profile for real: a one-node Slurm cluster on this machine (tests/slurm/cluster.py),
the quick profile of one tiny figure through ``--profile profiles/slurm``, its jobs in the
cluster's records, its outputs equal to a local run's.

How to run (root: the test installs Debian's ``slurm-wlm`` and ``munge`` if they are missing,
links /etc/slurm/slurm.conf to a generated file for as long as it runs, and starts munged,
slurmctld and slurmd)::

    make slurm
    timeout -k 60 900 .venv/bin/python -m pytest -q -m slurm tests/test_slurm.py

4-5 minutes on 2 cores that other work shared (both runs of the figure share the cores; the
plugin's polling adds 10-30 s per level of the DAG), plus the install the first time (Debian's
packages: about 10 s from apt's cache).

A plain ``pytest`` deselects it (the ``slurm`` marker). Without Slurm and no way to install it
(not root, no apt) it skips, unless ``NTKPAPER_REQUIRE_SLURM=1`` (CI), where it fails.

The cluster has no GPU and the quick profile asks for none. It has no accounting database
either: the executor plugin polls ``squeue`` (``--slurm-status-command squeue``; finished jobs
stay there for ``MinJobAge`` = 1 h) and the test reads the job completion records with
``sacct --completion``. The user-facing profile is used as it is; what only this cluster needs
is given on the command line (``SLURM_TEST_OPTIONS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ntkpaper.schema import content_key

from .conftest import ROOT, run_env, write_tiny
from .slurm.cluster import Cluster, Unavailable

pytestmark = pytest.mark.slurm

FIGURE = "tiny-fig"
TIMEOUT = 600  # s, for each workflow run
SLURM_TEST_OPTIONS = (
    "--slurm-status-command", "squeue",  # no slurmdbd here
    "--slurm-init-seconds-before-status-checks", "2",  # the plugin's default waits 40 s
    "--seconds-between-status-checks", "2",
    "--slurm-keep-successful-logs",  # shown if the test fails
    "--retries", "0",
    "--latency-wait", "10",
)  # fmt: skip


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node cluster, stopped (and /etc/slurm/slurm.conf restored) at the end."""
    cluster = Cluster(tmp_path_factory.mktemp("slurm-cluster"))
    previous = signal.signal(signal.SIGTERM, interrupt)  # `timeout`: tear down all the same
    try:
        try:
            cluster.start()
        except Unavailable as e:
            if os.environ.get("NTKPAPER_REQUIRE_SLURM") == "1":
                pytest.fail(f"NTKPAPER_REQUIRE_SLURM=1 but no Slurm test cluster: {e}")
            pytest.skip(f"no Slurm test cluster: {e}")
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)


def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then runs the fixtures' teardown


def figure_target(root: Path) -> Path:
    return root / "results" / "quick" / FIGURE / f"{FIGURE}.pdf"


def slurm_logs(root: Path) -> str:
    """The tails of the Slurm logs of a workflow run in ``root`` (for failure messages)."""
    logs = sorted((root / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "".join(f"\n--- {p}:\n{p.read_text(errors='replace')[-1500:]}" for p in logs)


def read_tables(directory: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p) for p in sorted(directory.glob("*.csv"))}


@contextlib.contextmanager
def started(*runs: tuple[list, Path, Path]):
    """Each ``(cmd, root, log)``: ``cmd`` under ``timeout -k`` in ``root``'s environment,
    output to ``log``, all at once. Those still running at the end are stopped together:
    SIGTERM (``timeout`` passes it on to its process group), SIGKILL to the group 15 s later.
    """
    procs = []
    with contextlib.ExitStack() as stack:
        try:
            for cmd, root, log in runs:
                out = stack.enter_context(open(log, "w"))
                procs.append(
                    subprocess.Popen(
                        ["timeout", "-k", "10", str(TIMEOUT), *map(str, cmd)],
                        cwd=root,
                        env=run_env(root),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            yield procs
        finally:
            left = [p for p in procs if p.poll() is None]
            for p in left:
                p.terminate()
            deadline = time.monotonic() + 15
            for p in left:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)  # timeout leads its own process group
                    p.wait()


def test_quick_figure_through_the_slurm_profile(slurm_cluster, tmp_path):
    # the same tiny figure twice, at the same time: on the cluster, and locally as the main
    # command runs it
    cluster_root, local_root = tmp_path / "cluster", tmp_path / "local"
    for root in (cluster_root, local_root):
        write_tiny(root / "params", FIGURE)
    on_cluster = [
        sys.executable, "-m", "snakemake", "-s", ROOT / "Snakefile",
        "--profile", ROOT / "profiles" / "slurm", "--config", "profile=quick",
        *SLURM_TEST_OPTIONS, figure_target(cluster_root),
    ]  # fmt: skip
    local = [sys.executable, "-m", "ntkpaper", "figures", "--cores", "2", figure_target(local_root)]
    commands = [(on_cluster, cluster_root, tmp_path / "cluster.log"),
                (local, local_root, tmp_path / "local.log")]  # fmt: skip
    with started(*commands) as (cluster_run, local_run):
        cluster_run.wait()
        local_run.wait()
    log = (tmp_path / "cluster.log").read_text()
    assert cluster_run.returncode == 0, log[-6000:] + slurm_logs(cluster_root)
    assert local_run.returncode == 0, (tmp_path / "local.log").read_text()[-4000:]

    # every job went through Slurm: one per run and one for the figure, all COMPLETED
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", log))
    runs = sorted(p.parent.relative_to(cluster_root / "runs") for p in
                  (cluster_root / "runs").glob("*/*/manifest.json"))  # fmt: skip
    assert {r.parts[0] for r in runs} == {"parent", "children", "parent_measure",
                                          "children_measure"}, runs  # fmt: skip
    expected = {f"rule_{kind}_wildcards_{key}" for kind, key in (r.parts for r in runs)
                if kind != "children"}  # fmt: skip
    expected.add(f"rule_figure_wildcards_{FIGURE}")
    children = [key for kind, key in (r.parts for r in runs) if kind == "children"]
    assert len(children) == 2  # two spawn epochs, trained together: one job named by both

    def by_spawn_epoch(key):
        spec = json.loads((cluster_root / "runs" / "children" / key / "spec.json").read_text())
        return spec["spawn_epoch"], key

    expected.add(f"rule_children_{content_key(sorted(children, key=by_spawn_epoch))[:8]}")
    completed = slurm_cluster.completed(run_id)
    assert {j["JobID"] for j in completed} == submitted, (completed, submitted, log[-4000:])
    for j in completed:
        assert (j["State"], j["ExitCode"], j["AllocCPUS"]) == ("COMPLETED", "0:0", "1"), j
        assert j["NodeList"] == slurm_cluster.host, j
    # ... as the rules asked: the quick profile's resources, no GPU
    queued = slurm_cluster.queued(run_id)
    assert {j["JobID"] for j in queued} == submitted, queued
    assert sorted(j["Comment"] for j in queued) == sorted(expected), queued
    for j in queued:
        resources = (j["State"], j["Partition"], j["CPUs"], j["Memory"], j["TimeLimit"])
        assert resources == ("COMPLETED", "debug", "1", "4000M", "30:00"), j
        assert "gpu" not in j["TRES"], j

    # the same runs, and the figure's tables equal to the local run's
    local_runs = sorted(p.parent.relative_to(local_root / "runs") for p in
                        (local_root / "runs").glob("*/*/manifest.json"))  # fmt: skip
    assert runs == local_runs
    out, ref = (root / "results" / "quick" / FIGURE for root in (cluster_root, local_root))
    for name in (f"{FIGURE}.pdf", f"{FIGURE}.png", f"{FIGURE}.ipynb"):
        assert (out / name).stat().st_size > 0, name
    assert '"output_type": "error"' not in (out / f"{FIGURE}.ipynb").read_text()
    tables, reference = read_tables(out), read_tables(ref)
    assert set(tables) == set(reference) and "claims.csv" in tables, (tables, reference)
    for name, table in tables.items():
        pd.testing.assert_frame_equal(
            table, reference[name], check_exact=False, rtol=1e-12, atol=1e-12, obj=name
        )
