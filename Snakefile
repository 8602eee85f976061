# ntkpaper workflow: runs (cached by content key) -> measurements -> one notebook per figure.
#   snakemake                          every figure, quick profile (embedded digits, CPU)
#   snakemake --config profile=paper   the papers' data and hyperparameters (GPU)
# Parameter files are validated before any rule runs; see ntkpaper/params.py.
import sys

from ntkpaper import params as P
from ntkpaper import plan, store

PROFILE = config.get("profile", "quick")
PY = sys.executable
try:
    FIGURES = P.load_all(PROFILE)
except P.ParamsError as e:
    sys.exit(f"error: {e}")
JOBS = plan.all_jobs(FIGURES)
RESULTS = str(store.results_dir(PROFILE))
BASE = workflow.basedir


def done(job):
    """The file that marks a run complete (its manifest, written last)."""
    return str(store.manifest_path(job.kind, job.key))


def deps(wildcards):
    job = JOBS[wildcards.key]
    files = [done(d) for d in job.deps]
    if job.kind == "parent":
        files += [str(p) for p in plan.dataset_files(job)]
    return files


RUN = PY + " -m ntkpaper run {wildcards.key} --profile " + PROFILE + " > {log} 2>&1"


rule all:
    input:
        expand(RESULTS + "/{fid}/{fid}.pdf", fid=FIGURES),


rule parent:
    """Train a parent, snapshots on its schedule (resumes from the last one)."""
    input: deps
    output: str(store.runs_dir() / "parent/{key}/manifest.json")
    log: str(store.runs_dir() / "parent/{key}/log.txt")
    shell: RUN


rule children:
    """Children of one spawn epoch, trained as one vmapped program."""
    input: deps
    output: str(store.runs_dir() / "children/{key}/manifest.json")
    log: str(store.runs_dir() / "children/{key}/log.txt")
    shell: RUN


rule linearised:
    """Linearised (or order-2 Taylor) training from the parent at every t~, vmapped over t~."""
    input: deps
    output: str(store.runs_dir() / "linearised/{key}/manifest.json")
    log: str(store.runs_dir() / "linearised/{key}/log.txt")
    shell: RUN


rule parent_measure:
    """NTK and ReLU patterns at every parent snapshot; pairwise distances."""
    input: deps
    output: str(store.runs_dir() / "parent_measure/{key}/manifest.json")
    log: str(store.runs_dir() / "parent_measure/{key}/log.txt")
    shell: RUN


rule children_measure:
    """Error barrier and distances between the children of one spawn epoch."""
    input: deps
    output: str(store.runs_dir() / "children_measure/{key}/manifest.json")
    log: str(store.runs_dir() / "children_measure/{key}/log.txt")
    shell: RUN


rule dataset:
    """Download (or find), verify and cache a dataset."""
    output: str(store.data_dir() / "{name}.npz")
    log: str(store.data_dir() / "{name}.log")
    shell: PY + " -m ntkpaper data {wildcards.name} 2>&1 | tee {log}"


rule figure:
    """Execute the figure's notebook with papermill; it writes PDF, PNG and panel data."""
    input:
        notebook=lambda w: f"{BASE}/notebooks/{FIGURES[w.fid].notebook}.ipynb",
        params=lambda w: str(FIGURES[w.fid].path),
        runs=lambda w: [done(j) for j in plan.figure_runs(FIGURES[w.fid]).jobs()],
    output:
        pdf=RESULTS + "/{fid}/{fid}.pdf",
        png=RESULTS + "/{fid}/{fid}.png",
        notebook=RESULTS + "/{fid}/{fid}.ipynb",
    log: RESULTS + "/{fid}/papermill.log"
    shell:
        PY + " -m papermill {input.notebook} {output.notebook} -p figure_id {wildcards.fid}"
        " -p profile " + PROFILE + " --cwd . > {log} 2>&1"
