"""Wall time of the README's main job on a cold store, then of an unchanged rerun.

    python benchmarks/bench_workflow.py [--cores 2] [--keep DIR]

Runs the workflow (quick profile) in a fresh temporary directory, so set-up (the venv) is
excluded and nothing cached is reused: first the foundation's figures (fort-fig2/3/4), then
the kernel-learning figures on top of their runs (fort-fig8/9/19), then the landscape figures
(fort-fig5/6/7/10/11/20, on fig4's runs), then the silent-alignment figures (sa-*), then an
unchanged rerun. Budgets: fig2/3/4 cold <= 6 min, rerun <= 15 s (issue 3); fig8/9/19 <= 6 min
(issue 4); the six landscape figures <= 4 min (issue 13); the twelve sa-* figures <= 5 min
(issue 17).
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
LANDSCAPE = ("fort-fig5", "fort-fig6", "fort-fig7", "fort-fig10", "fort-fig11", "fort-fig20")
SILENT = tuple(
    f"sa-fig{n}" for n in ("1", "3", "4", "5", "6", "B1", "D1", "D2", "D3", "D4", "E1", "I1")
)


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
    ap.add_argument("--keep", help="run in this (new) directory and keep its runs and results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        cold = snakemake(tmp, args.cores, FOUNDATION)
        print(f"cold fort-fig2/3/4:                 {cold:7.1f} s  (budget 360 s)")
        kernel = snakemake(tmp, args.cores, KERNEL)
        print(f"then fort-fig8/9/19:                {kernel:7.1f} s  (budget 360 s)")
        landscape = snakemake(tmp, args.cores, LANDSCAPE)
        print(f"then fort-fig5/6/7/10/11/20:        {landscape:7.1f} s  (budget 240 s)")
        silent = snakemake(tmp, args.cores, SILENT)
        print(f"then the twelve sa-* figures:       {silent:7.1f} s  (budget 300 s)")
        rerun = snakemake(tmp, args.cores)
        print(f"unchanged rerun:                    {rerun:7.1f} s  (budget 15 s)")


if __name__ == "__main__":
    main()
