# ntkpaper workflow: runs (cached by content key) -> measurements -> one notebook per figure.
#   make figures                                 every figure, quick profile (embedded digits, CPU)
#   make figures ARGS="--config profile=paper"   the papers' data and hyperparameters (GPU)
# Parameter files are validated before any rule runs (ntkpaper/params.py).
#
# The one lint we keep, on purpose (`snakemake --lint`): "specify a conda environment or
# container for each rule". Every rule runs in the project's own environment, which `make`
# builds from the pinned requirements.lock and which the jobs find as sys.executable; a per-rule
# conda environment would be a second, unpinned copy of it (environment.yml is that same lock
# for conda users, used to create the environment the workflow then runs in).
import sys
from pathlib import Path

from ntkpaper import jobs, plan, store
from ntkpaper import params as P

PROFILE = config.get("profile", "quick")
try:
    FIGURES = P.load_all(PROFILE)
    JOBS = plan.all_jobs(FIGURES)
except P.ParamsError as e:
    sys.exit(f"error: {e}")
RUNS = store.runs_dir()
RESULTS = store.results_dir(PROFILE)
NOTEBOOKS = Path(workflow.basedir) / "notebooks"
PYTHON = sys.executable


def done(job):
    """The file that marks a run complete (its manifest, written last)."""
    return store.manifest_path(job.kind, job.key)


def run_inputs(wildcards):
    job = JOBS[wildcards.key]
    return [done(d) for d in job.deps] + plan.dataset_files(job)


def figure_runs(wildcards):
    return [done(j) for j in plan.figure_runs(FIGURES[wildcards.fid]).jobs()]


rule all:
    input:
        [RESULTS / fid / f"{fid}.pdf" for fid in FIGURES],


# One rule per kind of run (ntkpaper/jobs/__init__.py): parent, children, linearised, ...
for kind, about in jobs.KINDS.items():

    rule:
        name:
            kind
        message:
            f"{kind} {{wildcards.key}}: {about.about}"
        input:
            run_inputs,
        output:
            RUNS / kind / "{key}" / "manifest.json",
        log:
            RUNS / kind / "{key}" / "log.txt",
        params:
            python=PYTHON,
            profile=PROFILE,
        shell:
            "{params.python} -m ntkpaper run {wildcards.key} --profile {params.profile} > {log} 2>&1"


rule dataset:
    """Download (or find), verify and cache a dataset."""
    output:
        store.data_dir() / "{name}.npz",
    log:
        store.data_dir() / "{name}.log",
    params:
        python=PYTHON,
    shell:
        "{params.python} -m ntkpaper data {wildcards.name} 2>&1 | tee {log}"


rule figure:
    """Execute the figure's notebook with papermill; it writes PDF, PNG and panel data."""
    input:
        notebook=lambda w: NOTEBOOKS / f"{FIGURES[w.fid].notebook}.ipynb",
        params=lambda w: FIGURES[w.fid].path,
        runs=figure_runs,
    output:
        pdf=RESULTS / "{fid}" / "{fid}.pdf",
        png=RESULTS / "{fid}" / "{fid}.png",
        notebook=RESULTS / "{fid}" / "{fid}.ipynb",
    log:
        RESULTS / "{fid}" / "papermill.log",
    params:
        python=PYTHON,
        profile=PROFILE,
    shell:
        "{params.python} -m papermill {input.notebook} {output.notebook} -p figure_id {wildcards.fid}"
        " -p profile {params.profile} --cwd . > {log} 2>&1"
