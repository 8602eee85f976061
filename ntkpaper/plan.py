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
    snapshot_every: int | None = None  # keep the children's weights every this many epochs


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
class PlaneSpec:
    """The plane through a spawn point and its first two children (Fort et al. figure 5)."""

    children: str  # the children run's key
    bn: BatchNorm
    resolution: int
    margin: float


@dataclass(frozen=True)
class TsneSpec:
    """Parent and children at their snapshots, embedded together (Fort et al. figure 11)."""

    parent: str
    children: tuple[str, ...]
    bn: BatchNorm
    perplexity: float
    seed: int


@dataclass(frozen=True)
class ParentGeometrySpec:
    parent: str
    bn: BatchNorm
    hessian_examples: int
    hessian_iters: int
    centroid_examples: int


@dataclass(frozen=True)
class ChildrenGeometrySpec:
    children: str
    bn: BatchNorm
    centroid_examples: int


@dataclass(frozen=True)
class AlignmentSpec:
    """A silent-alignment run: data, network (a grid of sigma), training."""

    data: P.SaData
    network: P.SaNetwork
    train: P.SaTrain


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
class LandscapeRuns(IntegratedRuns):
    """Figures 2-4's runs and, for figures 5 and 11, the planes or the t-SNE."""

    extra: tuple[Job, ...] = ()

    def jobs(self) -> list[Job]:
        return [*super().jobs(), *self.extra]


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
        Job(
            "children",
            ChildrenSpec(parent.key, e, c.n_children, c.seed, snapshot_every=c.snapshot_every),
            (parent,),
        )
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


def landscape_runs(fig: P.Figure) -> LandscapeRuns:
    """Figures 6, 7, 10, 20: those of 2-4. Figure 5: a plane per spawn epoch of ``plane``.
    Figure 11: the t-SNE of the parent and every child. Figures 14, 17: the parent's and every
    children pair's geometry (Hessian, logit-gradient centroids)."""
    r, p = integrated_runs(fig), fig.params
    bn = batch_norm(p.measure)
    extra = []
    if isinstance(p, P.PlaneView):
        by_epoch = {job.spec.spawn_epoch: job for job in r.children}
        extra = [
            Job("plane", PlaneSpec(by_epoch[e].key, bn, p.plane.resolution, p.plane.margin),
                (by_epoch[e],))
            for e in p.plane.spawn_epochs
        ]  # fmt: skip
    if isinstance(p, P.GeometryView):
        g = p.geometry
        spec = ParentGeometrySpec(r.parent.key, bn, g.hessian_examples, g.hessian_iters,
                                  g.centroid_examples)  # fmt: skip
        extra = [Job("parent_geometry", spec, (r.parent,))] + [
            Job("children_geometry", ChildrenGeometrySpec(j.key, bn, g.centroid_examples), (j,))
            for j in r.children
        ]
    if isinstance(p, P.TsneView):
        spec = TsneSpec(r.parent.key, tuple(j.key for j in r.children), bn, p.tsne.perplexity,
                        p.tsne.seed)  # fmt: skip
        extra = [Job("tsne", spec, (r.parent, *r.children))]
    return LandscapeRuns(*(getattr(r, f) for f in ("parent", "parent_measure", "children",
                                                   "children_measure")), tuple(extra))  # fmt: skip


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


@dataclass(frozen=True)
class SilentRuns:
    """The runs behind an Atanasov et al. figure, in the order of its ``runs``."""

    runs: tuple[Job, ...]

    def jobs(self) -> list[Job]:
        return list(self.runs)


def silent_runs(fig: P.Figure) -> SilentRuns:
    runs = getattr(fig.params, "runs", ())
    return SilentRuns(
        tuple(Job("alignment", AlignmentSpec(r.data, r.network, r.train)) for r in runs)
    )


RUNS_OF = {
    "fort_integrated_view": integrated_runs,
    "fort_function_distance": landscape_runs,
    "fort_kernel_velocity": landscape_runs,
    "fort_plane": landscape_runs,
    "fort_tsne": landscape_runs,
    "fort_geometry": landscape_runs,
    "sa_dynamics": silent_runs,
    "sa_linear": silent_runs,
    "sa_deep_linear": silent_runs,
    "sa_transfer": silent_runs,
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


def trained_together(jobs) -> list[tuple[Job, ...]]:
    """The children ``jobs`` grouped as they train: one group per parent and optimiser (the
    parent's schedule, or one ``low_lr``), by spawn epoch. Each group is one batch of models
    (``spawn.run_together``) and one job of the workflow."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.kind == "children":
            groups.setdefault((job.spec.parent, job.spec.low_lr), []).append(job)
    return [tuple(sorted(g, key=lambda j: (j.spec.spawn_epoch, j.key))) for g in groups.values()]


def dataset_files(job: Job) -> list[Path]:
    """The cached dataset a parent or alignment run reads (none for the embedded digits or
    synthetic data)."""
    if job.kind not in ("parent", "alignment") or job.spec.data.dataset in ("digits", "synthetic"):
        return []
    return [data_dir() / f"{job.spec.data.dataset}.npz"]
