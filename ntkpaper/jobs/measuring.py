"""Measurement runs: the parent's kernels and ReLU patterns over its snapshots; the error
barrier and distances between two children. Formulas live in ``metrics`` and ``ntk``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ntkpaper import metrics, models, store
from ntkpaper import train as train_lib
from ntkpaper.jobs.setup import Setup, begin, log, setup
from ntkpaper.ntk import empirical_ntk
from ntkpaper.plan import Job, Probe


def probe_indices(n_train: int, size: int, seed: int) -> np.ndarray:
    """The fixed probe subset: ``size`` training indices drawn by ``seed``, sorted."""
    if size > n_train:
        raise ValueError(f"probe_size {size} exceeds the {n_train} training examples")
    return np.sort(np.asarray(jax.random.permutation(jax.random.PRNGKey(seed), n_train))[:size])


def probe_inputs(s: Setup, probe: Probe) -> tuple[np.ndarray, jax.Array]:
    idx = probe_indices(s.dataset.x_train.shape[0], probe.probe_size, probe.probe_seed)
    return idx, s.dataset.x_train[idx]


def ntk_of(s: Setup, variables: dict, x: jax.Array, probe: Probe) -> jax.Array:
    """NTK Gram matrix of a network on ``x`` w.r.t. its weights, BN statistics fixed."""
    return empirical_ntk(
        models.logits(s.model),
        variables["params"],
        x,
        trace_axes=(-1,) if probe.ntk_trace else (),
        block_size=probe.ntk_block,
        batch_stats=variables["batch_stats"],
    )


def run_parent_measure(job: Job) -> None:
    """At every snapshot, batch-norm statistics as ``bn`` says: errors and losses, the NTK on
    the probe and ReLU patterns; pairwise distance heat maps. ``<name>_running``: the errors
    recorded in training, with the running statistics."""
    (parent,) = job.deps
    s = setup(parent)
    ds, eb = s.dataset, s.data_params.eval_batch
    out = begin(job)
    idx, xp = probe_inputs(s, job.spec.probe)
    hist = store.parent_history(parent)
    kernels, patterns, errors = [], [], []
    for step in hist["step"]:
        v = s.measured(s.variables(store.parent_snapshot(parent, int(step))), job.spec.bn)
        errors.append(
            train_lib.evaluate(s.model, v, ds.x_train, ds.y_train, eb)
            + train_lib.evaluate(s.model, v, ds.x_test, ds.y_test, eb)
        )
        kernels.append(ntk_of(s, v, xp, job.spec.probe))
        patterns.append(metrics.relu_patterns(s.model, v, xp))
        log(f"parent_measure {job.key}: step {int(step)}")
    kernels = jnp.stack(kernels)
    store.save_arrays(
        out / "measure.npz",
        {
            "step": hist["step"],
            "epoch": hist["epoch"],
            **{f"{k}_running": hist[k] for k in store.ERRORS},
            **{k: np.array(col) for k, col in zip(store.ERRORS, zip(*errors))},
            "probe": idx,
            "kernels": kernels,
            "kernel_distance": metrics.kernel_distance_matrix(kernels),
            "relu_distance": metrics.relu_distance_matrix(jnp.stack(patterns)),
        },
    )
    store.write_manifest(job.kind, job.key, job.record(), ["measure.npz"])


def run_children_measure(job: Job) -> None:
    """Between children 0 and 1 at the end, each with batch-norm statistics as ``bn`` says:
    error barrier (test set; train series on the ``bn_examples`` training examples), test
    errors, weight, ReLU, function and kernel distances."""
    (children,) = job.deps
    (parent,) = children.deps
    s, spec = setup(parent), job.spec
    ds = s.dataset
    out = begin(job)
    vs = s.children(store.final(children), 2, spec.bn)
    _, xp = probe_inputs(s, spec.probe)
    bn_x, bn_y = ds.x_train[: spec.bn.bn_examples], ds.y_train[: spec.bn.bn_examples]
    eb = s.data_params.eval_batch
    barrier = metrics.error_barrier(
        s.model,
        vs[0],
        vs[1],
        {"test": (ds.x_test, ds.y_test), "train": (bn_x, bn_y)},
        bn_x=bn_x,
        batch_size=eb,
        points=spec.barrier_points,
        bn_stats=spec.bn.bn_stats,
    )
    logits = [models.predict(s.model, v, ds.x_test, eb) for v in vs]
    w_dist, w_rel = metrics.weight_distance(vs[0]["params"], vs[1]["params"])
    relu = [metrics.relu_patterns(s.model, v, xp) for v in vs]
    store.save_arrays(
        out / "measure.npz",
        {
            **barrier,
            "spawn_epoch": children.spec.spawn_epoch,
            "test_error": np.array([float(metrics.error(lg, ds.y_test)) for lg in logits]),
            "weight_distance": w_dist,
            "weight_distance_relative": w_rel,
            "relu_distance": metrics.relu_distance(*relu),
            "function_distance": metrics.function_distance(logits[0], logits[1], ds.y_test),
            "kernel_distance": metrics.kernel_distance(*(ntk_of(s, v, xp, spec.probe) for v in vs)),
        },
    )
    store.write_manifest(job.kind, job.key, job.record(), ["measure.npz"])
