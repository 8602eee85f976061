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
from ntkpaper.schema import content_key

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


# Cluster resources (profiles/slurm reads them; a local run ignores them unless asked, e.g.
# `--resources gpu=1` runs one job at a time on a one-GPU machine). runtime in minutes, mem_mb
# per job. The paper profile trains on a GPU: one per run; quick runs on CPUs, as do figures.
# A cluster's own limits: `set-resources` in the profile (README, "On a SLURM cluster").
PAPER_RUN_MINUTES = {  # one GPU; a run killed at its limit resumes from its checkpoint
    "parent": 12 * 60, "children": 24 * 60, "linearised": 48 * 60, "parent_measure": 8 * 60,
    "children_measure": 4 * 60, "plane": 4 * 60, "parent_geometry": 4 * 60,
    "children_geometry": 2 * 60, "alignment": 4 * 60, "tsne": 2 * 60,
}  # fmt: skip


def cluster_resources(rule):
    """The resources of a job of ``rule`` (a kind of run, "figure" or "dataset")."""
    if rule == "dataset":
        return dict(cpus_per_task=1, mem_mb=4000, runtime=60)
    if PROFILE != "paper":
        return dict(cpus_per_task=1, mem_mb=4000, runtime=30)
    if rule == "figure":
        return dict(cpus_per_task=2, mem_mb=16000, runtime=60)
    return dict(gpu=1, cpus_per_task=8, mem_mb=32000, runtime=PAPER_RUN_MINUTES.get(rule, 24 * 60))


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


# One rule per kind of run (ntkpaper/jobs/__init__.py): parent, linearised, measurements, ...
for kind, about in jobs.KINDS.items():
    if kind == "children":  # the next rules
        continue

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
        resources:
            **cluster_resources(kind),
        shell:
            "{params.python} -m ntkpaper run {wildcards.key} --profile {params.profile} > {log} 2>&1"


# Children: the children runs of one parent and one optimiser train together, as one batch of
# models (ntkpaper.spawn.run_together), so one rule per such group, named by all its runs (the
# same name when some are done, as when a cluster job is retried), its outputs the manifests of
# those not yet complete: complete runs are files no rule makes, so a group that adds a run (a
# figure's new spawn epoch) trains only that one, and a killed group resumes (each run has its
# own checkpoint).
for group in plan.trained_together(JOBS.values()):
    name = "children_" + content_key([j.key for j in group])[:8]
    group = [j for j in group if not store.is_complete(j.kind, j.key)]
    if not group:
        continue
    epochs = ", ".join(f"{j.spec.spawn_epoch:g}" for j in group)
    low = " (low lr)" if group[0].spec.low_lr else ""

    rule:
        name:
            name
        message:
            f"children{low} of parent {group[0].spec.parent} spawned at epochs {epochs}, "
            f"trained together ({sum(j.spec.n_children for j in group)} networks)"
        input:
            [done(d) for d in group[0].deps] + plan.dataset_files(group[0].deps[0]),
        output:
            [done(j) for j in group],
        log:
            RUNS / "logs" / f"{name}.log",
        params:
            python=PYTHON,
            profile=PROFILE,
            runs=" ".join(j.key for j in group),
        resources:
            **cluster_resources("children"),
        shell:
            "{params.python} -m ntkpaper run {params.runs} --profile {params.profile} > {log} 2>&1"


# Downloads run where Snakemake runs (a cluster's login node has the internet; nodes may not).
localrules:
    dataset,


rule dataset:
    """Download (or find), verify and cache a dataset."""
    output:
        store.data_dir() / "{name}.npz",
    log:
        store.data_dir() / "{name}.log",
    params:
        python=PYTHON,
    resources:
        **cluster_resources("dataset"),
    shell:
        "{params.python} -m ntkpaper data {wildcards.name} 2>&1 | tee {log}"


rule figure:
    """Execute the figure's notebook with papermill; it writes PDF, PNG, panel data and its
    provenance, which ``stamp`` then copies into the executed notebook's metadata."""
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
    resources:
        **cluster_resources("figure"),
    shell:
        "{params.python} -m papermill {input.notebook} {output.notebook} -p figure_id {wildcards.fid}"
        " -p profile {params.profile} --cwd . > {log} 2>&1"
        " && {params.python} -m ntkpaper stamp {output.notebook} >> {log} 2>&1"


# The report site, results/<profile>/site/, after every run that did something, whether every
# figure was built or some failed (those appear as failed, with their logs).
onsuccess:
    shell(f"{PYTHON} -m ntkpaper site --profile {PROFILE}")


onerror:
    shell(f"{PYTHON} -m ntkpaper site --profile {PROFILE}")
