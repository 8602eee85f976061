"""From validated figures to runs: each run is a job keyed by the content of its spec.

A job's spec is a typed record of exactly what determines its result, so two figures that
need the same parent (or the same children) name the same key and share one run. The key
also carries the numerics version of the job's kind (``jobs.KINDS``). Light (no JAX): the
Snakefile imports it to build the workflow, the CLI to find what a key means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ntkpaper import params as P
from ntkpaper.jobs import KINDS
from ntkpaper.schema import as_dict, content_key
from ntkpaper.store import data_dir

# ---------------------------------------------------------------------------------------
# Job specs: what determines a run, by kind
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParentSpec:
    data: P.Data
    model: P.Model
    train: P.Train


@dataclass(frozen=True)
class LowLr:
    """Children at a constant low learning rate for ``epochs`` after spawning (appendix D.3)."""

    lr: float
    epochs: float  # the cap
    converged_rtol: float  # training stops once every child's loss falls by less than this


@dataclass(frozen=True)
class ChildrenSpec:
    parent: str  # the parent's key
    spawn_epoch: float
    n_children: int
    seed: int
    low_lr: LowLr | None = None  # None: the parent's schedule, to the parent's last epoch


@dataclass(frozen=True)
class Probe:
    """The fixed probe subset and how the NTK on it is computed."""

    probe_size: int
    probe_seed: int
    ntk_trace: bool
    ntk_block: int


@dataclass(frozen=True)
class BatchNorm:
    """Statistics of a measured network: ``recompute``d on the first ``bn_examples`` training
    inputs, or the stored ``running`` ones (docs/measurements.md)."""

    bn_stats: str
    bn_examples: int


@dataclass(frozen=True)
class ParentMeasureSpec:
    parent: str
    probe: Probe
    bn: BatchNorm


@dataclass(frozen=True)
class ChildrenMeasureSpec:
    children: str  # the children run's key
    probe: Probe
    bn: BatchNorm
    barrier_points: int


@dataclass(frozen=True)
class LinearisedSpec:
    parent: str
    linearised: P.Linearised
    bn: BatchNorm  # of the parent at each t~, the statistics of its Taylor model


@dataclass(frozen=True)
class Job:
    """One cached run: ``kind`` (a rule), its typed ``spec``, the runs it reads."""

    kind: str
    spec: Any
    deps: tuple[Job, ...] = ()

    def record(self) -> dict:
        """The spec as stored (``spec.json``) and hashed: kind, numerics version, fields."""
        return {"kind": self.kind, "numerics": KINDS[self.kind].numerics, **as_dict(self.spec)}

    @property
    def key(self) -> str:
        return content_key(self.record())


# ---------------------------------------------------------------------------------------
# The runs behind each kind of figure
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntegratedRuns:
    """The runs behind Fort et al. figures 2-4."""

    parent: Job
    parent_measure: Job
    children: tuple[Job, ...]  # one per spawn epoch
    children_measure: tuple[Job, ...]

    def jobs(self) -> list[Job]:
        return [self.parent, self.parent_measure, *self.children, *self.children_measure]


@dataclass(frozen=True)
class KernelRuns:
    """The runs behind Fort et al. figures 8, 9 and 19."""

    parent: Job
    linearised: Job  # every t~ in one vmapped run
    low_lr: tuple[Job, ...]  # low-learning-rate children, one job per t~
    children: tuple[Job, ...]  # children at the parent's lr, for the error barrier
    children_measure: tuple[Job, ...]
    standard: Job | None = None  # full training on the standard schedule, for comparison

    def jobs(self) -> list[Job]:
        standard = [self.standard] if self.standard else []
        return [
            self.parent, self.linearised, *self.low_lr, *self.children, *self.children_measure,
            *standard,
        ]  # fmt: skip


def parent_job(data: P.Data, model: P.Model, train: P.Train) -> Job:
    return Job("parent", ParentSpec(data, model, train))


def probe(m: P.Measure) -> Probe:
    return Probe(m.probe_size, m.probe_seed, m.ntk_trace, m.ntk_block)


def batch_norm(m: P.Measure) -> BatchNorm:
    return BatchNorm(m.bn_stats, m.bn_examples)


def children_jobs(parent: Job, c: P.Children, m: P.Measure) -> tuple[list[Job], list[Job]]:
    """Children per spawn epoch (the parent's schedule to its end), and their measurements."""
    children = [
        Job("children", ChildrenSpec(parent.key, e, c.n_children, c.seed), (parent,))
        for e in c.spawn_epochs
    ]
    measures = [
        Job(
            "children_measure",
            ChildrenMeasureSpec(job.key, probe(m), batch_norm(m), m.barrier_points),
            (job,),
        )
        for job in children
    ]
    return children, measures


def integrated_runs(fig: P.Figure) -> IntegratedRuns:
    """Parent, its measurements, children per spawn epoch and theirs (figures 2-4)."""
    p = fig.params
    parent = parent_job(p.data, p.model, p.parent)
    spec = ParentMeasureSpec(parent.key, probe(p.measure), batch_norm(p.measure))
    measure = Job("parent_measure", spec, (parent,))
    children, measures = children_jobs(parent, p.children, p.measure)
    return IntegratedRuns(parent, measure, tuple(children), tuple(measures))


def kernel_runs(fig: P.Figure) -> KernelRuns:
    """Parent, its Taylor models trained from every t~, low-lr children, barrier children."""
    p = fig.params
    parent = parent_job(p.data, p.model, p.parent)
    spec = LinearisedSpec(parent.key, p.linearised, batch_norm(p.measure))
    linearised = Job("linearised", spec, (parent,))
    low = LowLr(p.low_lr.lr, p.low_lr.epochs, p.low_lr.converged_rtol)
    low_lr = [
        Job(
            "children",
            ChildrenSpec(parent.key, e, p.low_lr.n_children, p.low_lr.seed, low),
            (parent,),
        )
        for e in p.linearised.spawn_epochs
    ]
    children, measures = children_jobs(parent, p.children, p.measure)
    standard = parent_job(p.data, p.model, p.standard) if p.standard else None
    return KernelRuns(parent, linearised, tuple(low_lr), tuple(children), tuple(measures), standard)


RUNS_OF = {
    "fort_integrated_view": integrated_runs,
    "fort_linearised": kernel_runs,
    "fort_nonlinear_advantage": kernel_runs,
}


def figure_runs(fig: P.Figure):
    """The runs a figure reads, by its notebook."""
    return RUNS_OF[fig.notebook](fig)


def all_jobs(figures: dict[str, P.Figure]) -> dict[str, Job]:
    """Every job the figures need, by key (shared runs appear once)."""
    jobs: dict[str, Job] = {}
    for fig in figures.values():
        for job in figure_runs(fig).jobs():
            jobs.setdefault(job.key, job)
    return jobs


def dataset_files(job: Job) -> list[Path]:
    """The cached dataset a parent run reads (none for the embedded digits)."""
    if job.kind != "parent" or job.spec.data.dataset == "digits":
        return []
    return [data_dir() / f"{job.spec.data.dataset}.npz"]
