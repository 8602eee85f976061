"""Training runs: the parent with its snapshots, and children spawned from a snapshot.

Both resume after a kill from their last checkpoint: the data order is a function of (key,
step), so a resumed run ends with the numbers of an uninterrupted one.
"""

from __future__ import annotations

import jax
import numpy as np

from ntkpaper import spawn, store
from ntkpaper import train as train_lib
from ntkpaper.jobs.setup import begin, epoch_stops, log, setup, state_arrays, state_from
from ntkpaper.plan import Job


def run_parent(job: Job) -> None:
    """Train the parent, saving a snapshot (state, errors, losses) at every scheduled epoch."""
    s = setup(job)
    ds, tp = s.dataset, s.train_params
    out = begin(job)
    steps = sorted({s.step_of(e) for e in tp.snapshot_epochs()})
    init_key, order_key = jax.random.split(jax.random.PRNGKey(tp.seed))
    done = [st for st in steps if (out / store.snapshot_name(st)).exists()]
    if done:
        state = state_from(s.template(), store.parent_snapshot(job, done[-1]))
        start = done[-1]
        log(f"parent {job.key}: resuming from step {start}")
    else:
        state = train_lib.init_state(s.model, s.tx, init_key, ds.x_train[:1])
        start = -1

    def on_stop(step: int, state: train_lib.TrainState) -> None:
        v, eb = state.variables, s.data_params.eval_batch
        tr = train_lib.evaluate(s.model, v, ds.x_train, ds.y_train, eb)
        te = train_lib.evaluate(s.model, v, ds.x_test, ds.y_test, eb)
        store.save_arrays(
            out / store.snapshot_name(step),
            {
                **state_arrays(state),
                "step": step,
                "epoch": step / s.spe,
                **dict(zip(store.ERRORS, (*tr, *te))),
            },
        )
        epoch = step / s.spe
        log(f"parent {job.key}: epoch {epoch:.2f} train error {tr[0]:.4f} test error {te[0]:.4f}")

    if start < 0:
        on_stop(0, state)
        start = 0
    step_fn = train_lib.make_train_step(s.model, s.tx, s.data_params, s.spe)
    train_lib.run_steps(
        train_lib.Fused(step_fn, s.spe),
        state,
        order_key,
        (ds.x_train, ds.y_train),
        start,
        [st for st in steps if st > start],
        on_stop,
        f"parent run {job.key}",
    )
    store.write_manifest(job.kind, job.key, job.record(), [store.snapshot_name(st) for st in steps])


def converged(losses: list, low_lr) -> np.ndarray:
    """Per child, the index of the first checkpoint at which its training loss had fallen by
    less than ``converged_rtol`` (relative) since the previous one; inf while there is none.

    ``losses``: (checkpoints, children), the first row at spawning."""
    loss = np.asarray(losses, dtype=float).reshape(len(losses), -1)
    if len(loss) < 2:
        return np.full(loss.shape[1], np.inf)
    drop = (loss[:-1] - loss[1:]) / np.maximum(loss[:-1], 1e-12)
    done = drop < low_lr.converged_rtol
    return np.where(done.any(axis=0), done.argmax(axis=0) + 1.0, np.inf)


def convergence(steps: list, losses: list, low_lr, spawn_step: int, spe: int) -> dict:
    """What ``final.npz`` records of low-lr children: checkpoint steps, training losses, the
    epochs trained and, per child, the epoch after t~ at which it converged (NaN: it hit the
    cap unconverged)."""
    t = np.array(steps)
    first = converged(losses, low_lr)
    epoch = [(t[int(i)] - spawn_step) / spe if np.isfinite(i) else np.nan for i in first]
    return {
        "steps": t,
        "train_loss": np.array(losses),
        "epochs_trained": (t[-1] - spawn_step) / spe,
        "converged_epoch": np.array(epoch),
    }


def run_children(job: Job) -> None:
    """Spawn ``n_children`` from the parent's snapshot at ``spawn_epoch`` (weights, statistics,
    optimiser state) and train them as one vmapped program, each on its own data order: to the
    parent's last epoch on its schedule or, for low-lr children, at a constant low learning rate
    until convergence (``converged``), at most ``low_lr.epochs``. Checkpoints the stacked state
    at every epoch boundary; with ``snapshot_every``, keeps the stacked weights and statistics
    at every multiple of it (``store.snapshot_name``)."""
    (parent,) = job.deps
    s = setup(parent)
    ds, spec = s.dataset, job.spec
    out = begin(job)
    spawn_step, end = s.step_of(spec.spawn_epoch), s.step_of(s.train_params.epochs)
    tx = s.tx
    if spec.low_lr is not None:
        tx = train_lib.optimizer(s.train_params, s.spe, lr=spec.low_lr.lr, lr_drops=())
        end = spawn_step + s.step_of(spec.low_lr.epochs)
    keys = spawn.child_keys(spec.seed, spawn_step, spec.n_children)
    eb = s.data_params.eval_batch

    def train_losses(states) -> list[float]:
        return [
            train_lib.evaluate(
                s.model, spawn.unstack(states, i).variables, ds.x_train, ds.y_train, eb
            )[1]
            for i in range(spec.n_children)
        ]

    ckpt = out / "checkpoint.npz"
    if ckpt.exists():
        arrays = store.load_arrays(ckpt)
        states = state_from(spawn.stack(s.template(), spec.n_children), arrays)
        start, steps, losses = int(arrays["step"]), list(arrays["steps"]), list(arrays["losses"])
        log(f"children {job.key}: resuming from step {start}")
    else:
        snapshot = store.parent_snapshot(parent, spawn_step)
        states = spawn.stack(state_from(s.template(), snapshot), spec.n_children)
        start, steps = spawn_step, [spawn_step]
        losses = [train_losses(states)] if spec.low_lr else []

    def all_converged() -> bool:
        return bool(spec.low_lr) and bool(np.isfinite(converged(losses, spec.low_lr)).all())

    def on_stop(step: int, states: train_lib.TrainState) -> bool:
        if spec.snapshot_every and step % (spec.snapshot_every * s.spe) == 0:
            store.save_arrays(
                out / store.snapshot_name(step),
                {**store.tree_arrays(states.params, "params"),
                 **store.tree_arrays(states.batch_stats, "batch_stats"), "step": step},
            )  # fmt: skip
        if spec.low_lr:
            steps.append(step)
            losses.append(train_losses(states))
        history = {"steps": np.array(steps), "losses": np.array(losses)}
        store.save_arrays(ckpt, {**state_arrays(states), "step": step, **history})
        log(f"children {job.key}: epoch {step / s.spe:.2f}")
        return all_converged()

    step_fn = train_lib.make_train_step(s.vmapped_model, tx, s.data_params, s.spe)
    states = train_lib.run_steps(
        train_lib.Fused(step_fn, s.spe, spawn.CHILDREN_AXES),
        spawn.shard(states),
        spawn.shard(keys),
        (ds.x_train, ds.y_train),
        start,
        [] if all_converged() else [st for st in epoch_stops(s.spe, start, end) if st > start],
        on_stop,
        f"children run {job.key}",
    )
    test_error = [
        train_lib.evaluate(s.model, spawn.unstack(states, i).variables, ds.x_test, ds.y_test, eb)[0]
        for i in range(spec.n_children)
    ]
    store.save_arrays(
        out / "final.npz",
        {
            **store.tree_arrays(states.params, "params"),
            **store.tree_arrays(states.batch_stats, "batch_stats"),
            "test_error": np.array(test_error),
            **(convergence(steps, losses, spec.low_lr, spawn_step, s.spe) if spec.low_lr else {}),
        },
    )
    snapshots = sorted(f.name for f in out.glob("snap-*.npz"))
    store.write_manifest(job.kind, job.key, job.record(), [*snapshots, "final.npz"])
    ckpt.unlink(missing_ok=True)
