"""From validated figures to runs: each run is a job keyed by the content of its spec.

A job's spec holds exactly what determines its result, so two figures that need the same
parent (or the same children) name the same key and share one run. Light (no JAX): the
Snakefile imports it to build the workflow, the CLI to find what a key means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ntkpaper import params as P
from ntkpaper.store import data_dir


@dataclass(frozen=True)
class Job:
    """One cached run: ``kind`` (a rule), ``key`` = content_key(spec), the runs it reads."""

    kind: str
    spec: dict
    deps: tuple[Job, ...] = ()

    @property
    def key(self) -> str:
        return P.content_key(self.spec)


@dataclass(frozen=True)
class IntegratedRuns:
    """The runs behind Fort et al. figures 2-4."""

    parent: Job
    parent_measure: Job
    children: tuple[Job, ...]  # one per spawn epoch
    children_measure: tuple[Job, ...]

    def jobs(self) -> list[Job]:
        return [self.parent, self.parent_measure, *self.children, *self.children_measure]


def parent_job(data: P.Data, model: P.Model, train: P.Train) -> Job:
    return Job(
        "parent",
        {
            "kind": "parent",
            "data": P.as_dict(data),
            "model": P.as_dict(model),
            "train": P.as_dict(train),
        },
    )


def _probe(m: P.Measure) -> dict:
    return {
        "probe_size": m.probe_size,
        "probe_seed": m.probe_seed,
        "ntk_trace": m.ntk_trace,
        "ntk_block": m.ntk_block,
    }


def children_jobs(parent: Job, c: P.Children, m: P.Measure) -> tuple[list[Job], list[Job]]:
    """Children per spawn epoch (the parent's schedule to its end), and their measurements."""
    children, measures = [], []
    for e in c.spawn_epochs:
        job = Job(
            "children",
            {
                "kind": "children",
                "parent": parent.key,
                "spawn_epoch": e,
                "n_children": c.n_children,
                "seed": c.seed,
            },
            (parent,),
        )
        children.append(job)
        measures.append(
            Job(
                "children_measure",
                {
                    "kind": "children_measure",
                    "children": job.key,
                    **_probe(m),
                    "barrier_points": m.barrier_points,
                    "bn_stats": m.bn_stats,
                    "bn_examples": m.bn_examples,
                },
                (job,),
            )
        )
    return children, measures


def integrated_runs(fig: P.Figure) -> IntegratedRuns:
    """Parent, its measurements, children per spawn epoch and theirs (figures 2-4)."""
    p = fig.params
    parent = parent_job(p.data, p.model, p.parent)
    parent_measure = Job(
        "parent_measure",
        {"kind": "parent_measure", "parent": parent.key, **_probe(p.measure)},
        (parent,),
    )
    children, measures = children_jobs(parent, p.children, p.measure)
    return IntegratedRuns(parent, parent_measure, tuple(children), tuple(measures))


@dataclass(frozen=True)
class KernelRuns:
    """The runs behind Fort et al. figures 8, 9 and 19."""

    parent: Job
    linearised: Job  # every t~ in one vmapped run
    low_lr: tuple[Job, ...]  # low-learning-rate children, one job per t~
    children: tuple[Job, ...]  # children at the parent's lr, for the error barrier
    children_measure: tuple[Job, ...]

    def jobs(self) -> list[Job]:
        return [self.parent, self.linearised, *self.low_lr, *self.children, *self.children_measure]


def kernel_runs(fig: P.Figure) -> KernelRuns:
    """Parent, its Taylor models trained from every t~, low-lr children, barrier children."""
    p = fig.params
    parent = parent_job(p.data, p.model, p.parent)
    linearised = Job(
        "linearised",
        {"kind": "linearised", "parent": parent.key, **P.as_dict(p.linearised)},
        (parent,),
    )
    low_lr = [
        Job(
            "children",
            {
                "kind": "children",
                "parent": parent.key,
                "spawn_epoch": e,
                "n_children": p.low_lr.n_children,
                "seed": p.low_lr.seed,
                "lr": p.low_lr.lr,
                "epochs": p.low_lr.epochs,
            },
            (parent,),
        )
        for e in p.linearised.spawn_epochs
    ]
    children, measures = children_jobs(parent, p.children, p.measure)
    return KernelRuns(parent, linearised, tuple(low_lr), tuple(children), tuple(measures))


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


def dataset_files(parent: Job) -> list[Path]:
    """The cached dataset a parent run reads (none for the embedded digits)."""
    name = parent.spec["data"]["dataset"]
    return [] if name == "digits" else [data_dir() / f"{name}.npz"]
