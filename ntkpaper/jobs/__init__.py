"""Kinds of runs: one module per family, one Snakemake rule per kind (children: one rule per
parent and optimiser, whose runs train together: ``execute_together``).

Light (no JAX): the Snakefile reads ``KINDS`` to make its rules and ``plan`` reads each kind's
numerics version into every run key, so a change to what a runner computes is a new key, not
a stale run that looks valid. Bump ``numerics`` by hand when a kind's numbers can change;
``tests/test_numerics.py`` fails, naming the kind, when the code behind it changes without a
bump (or without recording that its numbers did not change).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    module: str  # ntkpaper.jobs.<module> defines run_<kind>(job)
    numerics: int  # part of every run key of this kind
    about: str  # what one run does (the rule's message)


KINDS: dict[str, Kind] = {
    "parent": Kind("training", 3, "train a parent; a snapshot at every scheduled epoch"),
    "children": Kind(
        "training", 4, "children of one spawn epoch; a parent's spawn epochs train together"
    ),
    "linearised": Kind("linearised", 4, "Taylor models of the parent at every t~, vmapped"),
    "parent_measure": Kind("measuring", 2, "NTK and ReLU patterns at every parent snapshot"),
    "children_measure": Kind("measuring", 2, "error barrier and distances between two children"),
    "plane": Kind(
        "landscape", 1, "test error over the plane through a spawn point and two children"
    ),
    "parent_geometry": Kind("geometry", 1, "top Hessian eigenvalue and logit-gradient centroids"),
    "children_geometry": Kind("geometry", 1, "logit-gradient distance between two children"),
    "alignment": Kind(
        "silent", 1, "a grid of sigma trained as one program; NTK alignment over time"
    ),
    "tsne": Kind("landscape", 1, "t-SNE of parent and children predictions at their snapshots"),
}


def _pending(job) -> bool:
    """Whether ``job`` is still to run: not complete, and every run it reads complete."""
    from ntkpaper import store

    if store.is_complete(job.kind, job.key):
        print(f"{job.kind} {job.key}: complete", file=sys.stderr, flush=True)
        return False
    for dep in job.deps:
        if not store.is_complete(dep.kind, dep.key):
            raise RuntimeError(
                f"{job.kind} {job.key} needs {dep.kind} {dep.key}, which is not "
                "complete; run the workflow (make figures) rather than this job alone"
            )
    return True


def execute(job) -> None:
    """Run ``job`` unless its manifest says it is complete; its dependencies must be."""
    if _pending(job):
        module = importlib.import_module(f"ntkpaper.jobs.{KINDS[job.kind].module}")
        getattr(module, f"run_{job.kind}")(job)


def execute_together(jobs) -> None:
    """Children jobs, grouped by parent and optimiser (``plan.trained_together``), each group
    trained as one batch of models; those complete are skipped."""
    from ntkpaper import plan
    from ntkpaper.jobs import training

    if any(job.kind != "children" for job in jobs):
        raise ValueError("only children runs train together; run other keys one at a time")
    for group in plan.trained_together([job for job in jobs if _pending(job)]):
        training.train_children(list(group))
