"""Geometry runs (Fort et al. appendix B, figures 14 and 17): the top Hessian eigenvalue and
the logit-gradient centroids of the parent at every snapshot; the centroid alignment of two
children at the end. Formulas live in ``hessian`` and ``metrics``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ntkpaper import hessian, metrics, models, store
from ntkpaper import train as train_lib
from ntkpaper.jobs.setup import begin, log, setup
from ntkpaper.plan import Job


def run_parent_geometry(job: Job) -> None:
    """At every parent snapshot, statistics as ``bn`` says: lambda_max of the Hessian of the
    training loss on the first ``hessian_examples`` training examples (batch norm in
    evaluation mode, ``hessian_iters`` Lanczos steps), the learning rate there, and the
    logit-gradient centroids on the first ``centroid_examples``; their distance heat map."""
    (parent,) = job.deps
    s, spec = setup(parent), job.spec
    ds, eb = s.dataset, s.data_params.eval_batch
    out = begin(job)
    hist = store.parent_history(parent)
    xh, yh = ds.x_train[: spec.hessian_examples], ds.y_train[: spec.hessian_examples]
    f = models.logits(s.model)

    def loss(params, stats):  # one function: the Hessian-vector product compiles once
        return train_lib.cross_entropy(f(params, xh, stats), yh)

    lam, unit = [], []
    for step in hist["step"]:
        v = s.measured(s.variables(store.parent_snapshot(parent, int(step))), spec.bn)
        lam.append(
            hessian.top_eigenvalue(loss, v["params"], v["batch_stats"], iters=spec.hessian_iters)
        )
        c = metrics.logit_gradient_centroids(s.model, v, ds.x_train[: spec.centroid_examples], eb)
        unit.append(np.asarray(c / jnp.linalg.norm(c, axis=1, keepdims=True)))
        log(f"parent_geometry {job.key}: step {int(step)}, lambda_max {lam[-1]:.3g}")
    unit = np.stack(unit)
    store.save_arrays(
        out / "geometry.npz",
        {
            "step": hist["step"],
            "epoch": hist["epoch"],
            "lambda_max": np.array(lam),
            "lr": np.array([train_lib.learning_rate(s.train_params, e) for e in hist["epoch"]]),
            "logit_gradient_distance": metrics.centroid_distance_matrix(jnp.asarray(unit)),
        },
    )
    store.write_manifest(job.kind, job.key, job.record(), ["geometry.npz"])


def run_children_geometry(job: Job) -> None:
    """Logit-gradient distance, 1 - centroid alignment, between children 0 and 1 at the end."""
    (children,) = job.deps
    (parent,) = children.deps
    s, spec = setup(parent), job.spec
    out = begin(job)
    vs = s.children(store.final(children), 2, spec.bn)
    x = s.dataset.x_train[: spec.centroid_examples]
    c = [metrics.logit_gradient_centroids(s.model, v, x, s.data_params.eval_batch) for v in vs]
    store.save_arrays(
        out / "geometry.npz",
        {
            "spawn_epoch": children.spec.spawn_epoch,
            "logit_gradient_distance": 1.0 - metrics.centroid_alignment(*c),
        },
    )
    store.write_manifest(job.kind, job.key, job.record(), ["geometry.npz"])
