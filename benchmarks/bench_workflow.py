"""Wall time of the README's main job on a cold store, then of an unchanged rerun.

    python benchmarks/bench_workflow.py [--cores 2]

Runs the workflow (quick profile) in a fresh temporary directory, so set-up (the venv) is
excluded and nothing cached is reused. Budgets (issue 3): cold <= 6 min, rerun <= 15 s.
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


def snakemake(workdir: Path, cores: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(workdir),
            "--cores",
            cores,
            "--quiet",
        ],
        check=True,
        env={
            **os.environ,
            "NTKPAPER_RUNS": str(workdir / "runs"),
            "NTKPAPER_RESULTS": str(workdir / "results"),
        },
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", default="2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cold = snakemake(Path(tmp), args.cores)
        print(f"cold workflow (quick, all figures): {cold:7.1f} s  (budget 360 s)")
        rerun = snakemake(Path(tmp), args.cores)
        print(f"unchanged rerun:                    {rerun:7.1f} s  (budget 15 s)")


if __name__ == "__main__":
    main()
