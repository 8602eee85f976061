"""Wall time of the README's main job on a cold store, then of an unchanged rerun.

    python benchmarks/bench_workflow.py [--cores 2]

Runs the workflow (quick profile) in a fresh temporary directory, so set-up (the venv) is
excluded and nothing cached is reused: first the foundation's figures (fort-fig2/3/4), then
the kernel-learning figures on top of their runs (fort-fig8/9/19), then an unchanged rerun.
Budgets: fig2/3/4 cold <= 6 min, rerun <= 15 s (issue 3); fig8/9/19 <= 6 min (issue 4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


FOUNDATION = ("fort-fig2", "fort-fig3", "fort-fig4")
KERNEL = ("fort-fig8", "fort-fig9", "fort-fig19-taylor2", "fort-fig19-wrn")


def snakemake(workdir: Path, cores: str, figures: tuple[str, ...] = ()) -> float:
    """Seconds of one workflow run in ``workdir`` for ``figures`` (all when empty)."""
    targets = [str(workdir / "results" / "quick" / f / f"{f}.pdf") for f in figures]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    env = {
        **os.environ,
        "NTKPAPER_RUNS": str(workdir / "runs"),
        "NTKPAPER_RESULTS": str(workdir / "results"),
    }
    start = time.perf_counter()
    subprocess.run([*cmd, *targets, "--cores", cores, "--quiet", "all"], check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", default="2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cold = snakemake(Path(tmp), args.cores, FOUNDATION)
        print(f"cold fort-fig2/3/4:                 {cold:7.1f} s  (budget 360 s)")
        kernel = snakemake(Path(tmp), args.cores, KERNEL)
        print(f"then fort-fig8/9/19:                {kernel:7.1f} s  (budget 360 s)")
        rerun = snakemake(Path(tmp), args.cores)
        print(f"unchanged rerun:                    {rerun:7.1f} s  (budget 15 s)")


if __name__ == "__main__":
    main()
