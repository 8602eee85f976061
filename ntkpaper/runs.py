"""Job runners: a job's spec in, its files in the store out; resumable after a kill.

One function per job kind (``parent``, ``children``, ``parent_measure``,
``children_measure``), and loaders that hand a figure's numbers to its notebook. Training
lives in ``train``/``spawn``, formulas in ``metrics``/``ntk``; this module wires them to the
store (open_lth's runner layer).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ntkpaper import data as data_lib
from ntkpaper import linearize, metrics, models, spawn, store
from ntkpaper import params as P
from ntkpaper import train as train_lib
from ntkpaper.ntk import empirical_ntk
from ntkpaper.plan import Job
from ntkpaper.store import parent_history, parent_snapshot, snapshot_name


@dataclass
class Setup:
    """What every job of one parent needs: data, model, optimiser, step function."""

    data_params: P.Data
    train_params: P.Train
    dataset: data_lib.Dataset
    model: nn.Module
    spe: int
    tx: object

    def template(self) -> train_lib.TrainState:
        """A state of the right structure (stored arrays are poured into it); made once."""
        return self._template

    @functools.cached_property
    def _template(self) -> train_lib.TrainState:
        return train_lib.init_state(
            self.model, self.tx, jax.random.PRNGKey(0), self.dataset.x_train[:1]
        )

    def step_of(self, epoch: float) -> int:
        return train_lib.epoch_to_step(epoch, self.spe)

    def variables(self, arrays: dict) -> dict:
        t = self.template()
        return {
            "params": store.tree_from_arrays(t.params, arrays, "params"),
            "batch_stats": store.tree_from_arrays(t.batch_stats, arrays, "batch_stats"),
        }


def setup(parent: Job) -> Setup:
    s = parent.spec
    data_params = P.from_dict(P.Data, s["data"])
    model_params = P.from_dict(P.Model, s["model"])
    train_params = P.from_dict(P.Train, s["train"])
    dataset = data_lib.load(data_params.dataset)
    model = models.build(
        model_params.name,
        dataset.num_classes,
        depth=model_params.depth,
        width=model_params.width,
        batch_norm=model_params.batch_norm,
    )
    spe = train_lib.steps_per_epoch(dataset.x_train.shape[0], data_params.batch_size)
    return Setup(
        data_params, train_params, dataset, model, spe, train_lib.optimizer(train_params, spe)
    )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------


def _state_arrays(state: train_lib.TrainState) -> dict:
    return {
        **store.tree_arrays(state.params, "params"),
        **store.tree_arrays(state.batch_stats, "batch_stats"),
        **store.tree_arrays(state.opt_state, "opt_state"),
    }


def _state_from(template: train_lib.TrainState, arrays: dict) -> train_lib.TrainState:
    return train_lib.TrainState(
        store.tree_from_arrays(template.params, arrays, "params"),
        store.tree_from_arrays(template.batch_stats, arrays, "batch_stats"),
        store.tree_from_arrays(template.opt_state, arrays, "opt_state"),
    )


def run_parent(job: Job) -> None:
    """Train the parent, saving a snapshot (state + errors) at every scheduled epoch.

    Resumes from the latest snapshot on disk: the data order is a function of the step, so
    the resumed run ends with the same numbers as an uninterrupted one.
    """
    s = setup(job)
    ds, tp = s.dataset, s.train_params
    out = store.run_dir(job.kind, job.key)
    store.write_json(out / "spec.json", job.spec)
    steps = sorted({s.step_of(e) for e in tp.snapshot_epochs()})
    init_key, order_key = jax.random.split(jax.random.PRNGKey(tp.seed))
    done = [st for st in steps if (out / snapshot_name(st)).exists()]
    if done:
        state = _state_from(s.template(), store.load_arrays(out / snapshot_name(done[-1])))
        start = done[-1]
        log(f"parent {job.key}: resuming from step {start}")
    else:
        state = train_lib.init_state(s.model, s.tx, init_key, ds.x_train[:1])
        start = -1

    def on_stop(step: int, state: train_lib.TrainState) -> None:
        v = state.variables
        tr = train_lib.evaluate(s.model, v, ds.x_train, ds.y_train, s.data_params.eval_batch)
        te = train_lib.evaluate(s.model, v, ds.x_test, ds.y_test, s.data_params.eval_batch)
        store.save_arrays(
            out / snapshot_name(step),
            {
                **_state_arrays(state),
                "step": step,
                "epoch": step / s.spe,
                "train_error": tr[0],
                "train_loss": tr[1],
                "test_error": te[0],
                "test_loss": te[1],
            },
        )
        log(
            f"parent {job.key}: epoch {step / s.spe:.2f} train error {tr[0]:.4f} "
            f"test error {te[0]:.4f}"
        )

    if start < 0:
        on_stop(0, state)
        start = 0
    step_fn = jax.jit(train_lib.make_train_step(s.model, s.tx, s.data_params, s.spe))
    train_lib.run_steps(
        step_fn,
        state,
        order_key,
        (ds.x_train, ds.y_train),
        start,
        [st for st in steps if st > start],
        on_stop,
        f"parent run {job.key}",
    )
    store.write_manifest(job.kind, job.key, job.spec, [snapshot_name(st) for st in steps])


# ---------------------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------------------


def epoch_stops(spe: int, start: int, end: int) -> list[int]:
    """Checkpoint steps after ``start``: every epoch boundary, and ``end``."""
    return sorted({st for st in range(start + 1, end + 1) if st % spe == 0} | {end})


def run_children(job: Job) -> None:
    """Spawn ``n_children`` from the parent at ``spawn_epoch``; train them, vmapped, to the end.

    Checkpoints the stacked state at every epoch boundary and resumes from it.
    """
    (parent,) = job.deps
    s = setup(parent)
    ds = s.dataset
    out = store.run_dir(job.kind, job.key)
    store.write_json(out / "spec.json", job.spec)
    n = job.spec["n_children"]
    spawn_step, end = s.step_of(job.spec["spawn_epoch"]), s.step_of(s.train_params.epochs)
    tx = s.tx
    if "lr" in job.spec:  # low-learning-rate children: constant lr for ``epochs`` after spawning
        tx = train_lib.optimizer(s.train_params, s.spe, lr=job.spec["lr"], lr_drops=())
        end = spawn_step + s.step_of(job.spec["epochs"])
    keys = spawn.child_keys(job.spec["seed"], spawn_step, n)
    ckpt = out / "checkpoint.npz"
    if ckpt.exists():
        arrays = store.load_arrays(ckpt)
        states = _state_from(spawn.stack(s.template(), n), arrays)
        start = int(arrays["step"])
        log(f"children {job.key}: resuming from step {start}")
    else:
        states = spawn.stack(_state_from(s.template(), parent_snapshot(parent, spawn_step)), n)
        start = spawn_step

    def on_stop(step: int, states: train_lib.TrainState) -> None:
        store.save_arrays(ckpt, {**_state_arrays(states), "step": step})
        log(f"children {job.key}: epoch {step / s.spe:.2f}")

    step_fn = jax.jit(
        spawn.vmap_children(train_lib.make_train_step(s.model, tx, s.data_params, s.spe))
    )
    stops = epoch_stops(s.spe, start, end)
    states = train_lib.run_steps(
        step_fn,
        states,
        keys,
        (ds.x_train, ds.y_train),
        start,
        [st for st in stops if st > start],
        on_stop,
        f"children run {job.key}",
    )
    test_error = [
        train_lib.evaluate(
            s.model,
            spawn.unstack(states, i).variables,
            ds.x_test,
            ds.y_test,
            s.data_params.eval_batch,
        )[0]
        for i in range(n)
    ]
    store.save_arrays(
        out / "final.npz",
        {
            **store.tree_arrays(states.params, "params"),
            **store.tree_arrays(states.batch_stats, "batch_stats"),
            "test_error": np.array(test_error),
        },
    )
    store.write_manifest(job.kind, job.key, job.spec, ["final.npz"])
    ckpt.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


def probe_indices(n_train: int, size: int, seed: int) -> np.ndarray:
    """The fixed probe subset: ``size`` training indices drawn by ``seed``, sorted."""
    if size > n_train:
        raise ValueError(f"probe_size {size} exceeds the {n_train} training examples")
    return np.sort(np.asarray(jax.random.permutation(jax.random.PRNGKey(seed), n_train))[:size])


def ntk_of(s: Setup, variables: dict, x: jax.Array, spec: dict) -> jax.Array:
    """NTK Gram matrix of a network on ``x`` w.r.t. its weights, BN statistics fixed."""
    return empirical_ntk(
        logits_with_stats(s.model),
        variables["params"],
        x,
        trace_axes=(-1,) if spec["ntk_trace"] else (),
        block_size=spec["ntk_block"],
        batch_stats=variables["batch_stats"],
    )


_LOGITS: dict = {}


def logits_with_stats(model: nn.Module):
    """``f(params, x, batch_stats) -> (n, K)`` in evaluation mode, one object per model."""
    return _LOGITS.setdefault(
        model,
        lambda params, x, batch_stats: model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=False
        ),
    )


def run_parent_measure(job: Job) -> None:
    """NTK on the probe and ReLU patterns at every snapshot; pairwise distance heat maps."""
    (parent,) = job.deps
    s = setup(parent)
    ds = s.dataset
    probe = probe_indices(ds.x_train.shape[0], job.spec["probe_size"], job.spec["probe_seed"])
    xp = ds.x_train[probe]
    hist = parent_history(parent)
    kernels, patterns = [], []
    for step in hist["step"]:
        v = s.variables(parent_snapshot(parent, int(step)))
        kernels.append(ntk_of(s, v, xp, job.spec))
        patterns.append(metrics.relu_patterns(s.model, v, xp))
        log(f"parent_measure {job.key}: step {int(step)}")
    kernels = jnp.stack(kernels)
    store.save_arrays(
        store.run_dir(job.kind, job.key) / "measure.npz",
        {
            **hist,
            "probe": probe,
            "kernels": kernels,
            "kernel_distance": metrics.kernel_distance_matrix(kernels),
            "relu_distance": metrics.relu_distance_matrix(jnp.stack(patterns)),
        },
    )
    store.write_manifest(job.kind, job.key, job.spec, ["measure.npz"])


def run_children_measure(job: Job) -> None:
    """Between children 0 and 1 at the end: error barrier (test set; train series on the
    ``bn_examples`` training examples), weight, ReLU, function and kernel distances."""
    (children,) = job.deps
    (parent,) = children.deps
    s = setup(parent)
    ds = s.dataset
    final = store.load_arrays(store.run_dir(children.kind, children.key) / "final.npz")
    n = children.spec["n_children"]
    # child i's weights and statistics: slice i of every stacked array, read as one network
    vs = [s.variables({k: a[i] for k, a in final.items()}) for i in range(n)]
    probe = probe_indices(ds.x_train.shape[0], job.spec["probe_size"], job.spec["probe_seed"])
    xp = ds.x_train[probe]
    # the train series is measured on the examples that recompute the BN statistics
    n_bn = job.spec["bn_examples"]
    bn_x = ds.x_train[:n_bn]
    eb = s.data_params.eval_batch
    barrier = metrics.error_barrier(
        s.model,
        vs[0],
        vs[1],
        {"test": (ds.x_test, ds.y_test), "train": (bn_x, ds.y_train[:n_bn])},
        bn_x=bn_x,
        batch_size=eb,
        points=job.spec["barrier_points"],
        bn_stats=job.spec["bn_stats"],
    )
    logits = [train_lib.predict(s.model, v, ds.x_test, eb) for v in vs]
    w_dist, w_rel = metrics.weight_distance(vs[0]["params"], vs[1]["params"])
    store.save_arrays(
        store.run_dir(job.kind, job.key) / "measure.npz",
        {
            **barrier,
            "spawn_epoch": children.spec["spawn_epoch"],
            "test_error": np.array([float(metrics.error(lg, ds.y_test)) for lg in logits]),
            "weight_distance": w_dist,
            "weight_distance_relative": w_rel,
            "relu_distance": metrics.relu_distance(
                metrics.relu_patterns(s.model, vs[0], xp), metrics.relu_patterns(s.model, vs[1], xp)
            ),
            "function_distance": metrics.function_distance(logits[0], logits[1], ds.y_test),
            "kernel_distance": metrics.kernel_distance(
                ntk_of(s, vs[0], xp, job.spec), ntk_of(s, vs[1], xp, job.spec)
            ),
        },
    )
    store.write_manifest(job.kind, job.key, job.spec, ["measure.npz"])


# ---------------------------------------------------------------------------------------
# Linearised (Taylor) training from the parent at several t~, one vmapped program
# ---------------------------------------------------------------------------------------


def run_linearised(job: Job) -> None:
    """Train the order-``degree`` Taylor model of the parent at every t~ (vmapped over t~).

    Records the test error of each t~'s model at every epoch; checkpoints each epoch and
    resumes from it. Fort et al. 2020, section 6 and appendix D.4.
    """
    (parent,) = job.deps
    s = setup(parent)
    ds = s.dataset
    lp = P.from_dict(
        P.Linearised, {k: v for k, v in job.spec.items() if k not in ("kind", "parent")}
    )
    out = store.run_dir(job.kind, job.key)
    store.write_json(out / "spec.json", job.spec)
    t = s.template()
    snaps = [parent_snapshot(parent, s.step_of(e)) for e in lp.spawn_epochs]
    anchor = jax.tree.map(
        lambda *a: jnp.stack(a), *[store.tree_from_arrays(t.params, a, "params") for a in snaps]
    )
    stats = jax.tree.map(
        lambda *a: jnp.stack(a),
        *[store.tree_from_arrays(t.batch_stats, a, "batch_stats") for a in snaps],
    )
    tx = train_lib.optimizer(lp, s.spe)
    end = s.step_of(lp.epochs)
    ckpt = out / "checkpoint.npz"
    template = train_lib.TrainState(anchor, {}, jax.vmap(tx.init)(anchor))
    if ckpt.exists():
        arrays = store.load_arrays(ckpt)
        state, start = _state_from(template, arrays), int(arrays["step"])
        errors = [list(e) for e in arrays["test_errors"]]
        log(f"linearised {job.key}: resuming from step {start}")
    else:
        state, start, errors = template, 0, []
    g = jax.jit(jax.vmap(linearize.model_taylor(s.model, lp.degree), in_axes=(0, None, 0, 0)))

    def test_error(state) -> list[float]:
        eb = s.data_params.eval_batch
        logits = jnp.concatenate(
            [
                g(state.params, ds.x_test[i : i + eb], anchor, stats)
                for i in range(0, ds.x_test.shape[0], eb)
            ],
            axis=1,
        )
        return [float(metrics.error(lg, ds.y_test)) for lg in logits]

    if start == 0:
        errors = [test_error(state)]

    def on_stop(step: int, state) -> None:
        errors.append(test_error(state))
        store.save_arrays(
            ckpt, {**_state_arrays(state), "step": step, "test_errors": np.array(errors)}
        )
        log(f"linearised {job.key}: epoch {step / s.spe:.2f} test errors {np.round(errors[-1], 4)}")

    step_fn = jax.jit(
        jax.vmap(
            linearize.make_taylor_step(s.model, tx, s.data_params, s.spe, lp.degree),
            in_axes=(0, None, None, None, None, 0, 0),
        )
    )
    stops = epoch_stops(s.spe, 0, end)
    train_lib.run_steps(
        step_fn,
        state,
        jax.random.PRNGKey(lp.seed),
        (ds.x_train, ds.y_train, anchor, stats),
        start,
        [st for st in stops if st > start],
        on_stop,
        f"linearised run {job.key}",
    )
    epochs = [0.0] + [st / s.spe for st in stops]
    store.save_arrays(
        out / "final.npz",
        {
            "spawn_epoch": np.array(lp.spawn_epochs),
            "epoch": np.array(epochs[: len(errors)]),
            "test_error": np.array(errors),
        },
    )
    store.write_manifest(job.kind, job.key, job.spec, ["final.npz"])
    ckpt.unlink(missing_ok=True)


RUNNERS = {
    "parent": run_parent,
    "linearised": run_linearised,
    "children": run_children,
    "parent_measure": run_parent_measure,
    "children_measure": run_children_measure,
}


def execute(job: Job) -> None:
    """Run ``job`` unless its manifest says it is complete."""
    if store.is_complete(job.kind, job.key):
        log(f"{job.kind} {job.key}: complete")
        return
    for dep in job.deps:
        if not store.is_complete(dep.kind, dep.key):
            raise RuntimeError(
                f"{job.kind} {job.key} needs {dep.kind} {dep.key}, which is not "
                "complete; run the workflow (snakemake) rather than this job alone"
            )
    RUNNERS[job.kind](job)
