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


def span(job: Job, spe: int) -> tuple[int, int]:
    """The steps a children job trains, [spawn step, end): to the parent's last step or, for
    low-lr children, for ``low_lr.epochs`` (the cap; they may stop earlier, converged)."""
    (parent,) = job.deps
    start = train_lib.epoch_to_step(job.spec.spawn_epoch, spe)
    if job.spec.low_lr is not None:
        return start, start + train_lib.epoch_to_step(job.spec.low_lr.epochs, spe)
    return start, train_lib.epoch_to_step(parent.spec.train.epochs, spe)


def run_children(job: Job) -> None:
    """The children of one spawn epoch (``train_children`` of one job)."""
    train_children([job])


def train_children(jobs: list[Job]) -> None:
    """Train the children of several spawn epochs of one parent together (``spawn.run_together``:
    one batch of models, each child at the parent's step from its own spawn step on).

    Each job spawns ``n_children`` from the parent's snapshot at its ``spawn_epoch`` (weights,
    statistics, optimiser state); each child trains on its own data order, to the parent's
    last epoch on its schedule or, for low-lr children, at a constant low learning rate until
    convergence (``converged``), at most ``low_lr.epochs``. The jobs share one optimiser: the
    same parent and the same ``low_lr``. Each job keeps its own files, checkpoint and log and
    resumes from its own checkpoint; it is complete (its manifest written) as soon as it ends."""
    if not jobs:
        return
    (parent,) = jobs[0].deps
    if any(j.deps != (parent,) or j.spec.low_lr != jobs[0].spec.low_lr for j in jobs):
        raise ValueError("children trained together need one parent and one low_lr")
    jobs = [j for j in jobs if not store.is_complete(j.kind, j.key)]
    if not jobs:
        return
    s = setup(parent)
    runs = [_Children(j, s) for j in jobs]
    step_fn = train_lib.make_train_step(s.vmapped_model, runs[0].tx, s.data_params, s.spe)
    fused = train_lib.Fused(step_fn, s.spe, spawn.CHILDREN_AXES)
    members = [run.member() for run in runs]
    args = (s.dataset.x_train, s.dataset.y_train)
    per_program, pad_to = spawn.program_size(fused, members[0], args)
    try:
        finals = spawn.run_together(fused, members, args, per_program, pad_to)
    except BaseException as e:  # the log of every job left incomplete says why it stopped
        for run in runs:
            if not store.is_complete(run.job.kind, run.job.key):
                run.log(f"error: {type(e).__name__}: {e}")
        raise
    for run in runs:  # those that ended before training (converged when they were killed)
        if not store.is_complete(run.job.kind, run.job.key):
            run.finish(finals[run.member_name])


class _Children:
    """One children job within ``train_children``: its member of the batch, its stops (every
    epoch boundary and its end), its files and its log. It checkpoints its stacked state at
    every stop and, with ``snapshot_every``, keeps the stacked weights and statistics at every
    multiple of it (``store.snapshot_name``)."""

    def __init__(self, job: Job, s) -> None:
        self.job, self.s, spec = job, s, job.spec
        self.out = begin(job)
        self.spawn_step, self.end = span(job, s.spe)
        self.tx = s.tx
        if spec.low_lr is not None:
            self.tx = train_lib.optimizer(s.train_params, s.spe, lr=spec.low_lr.lr, lr_drops=())
        self.member_name = f"children run {job.key}"
        self.ckpt = self.out / "checkpoint.npz"

    def log(self, msg: str) -> None:
        log(msg)
        with open(self.out / "log.txt", "a") as f:
            f.write(msg + "\n")

    def evaluate(self, states, x, y) -> list[tuple[float, float]]:
        """Error and cross-entropy of each child on (x, y) (``train.evaluate``)."""
        s = self.s
        return [
            train_lib.evaluate(s.model, spawn.unstack(states, i).variables, x, y,
                               s.data_params.eval_batch)
            for i in range(self.job.spec.n_children)
        ]  # fmt: skip

    def train_losses(self, states) -> list[float]:
        ds = self.s.dataset
        return [loss for _, loss in self.evaluate(states, ds.x_train, ds.y_train)]

    def member(self) -> spawn.Member:
        """The job's children at its checkpoint, or spawned from the parent's snapshot."""
        s, spec = self.s, self.job.spec
        (parent,) = self.job.deps
        if self.ckpt.exists():
            arrays = store.load_arrays(self.ckpt)
            states = state_from(spawn.stack(s.template(), spec.n_children), arrays)
            start = int(arrays["step"])
            self.steps, self.losses = list(arrays["steps"]), list(arrays["losses"])
            self.log(f"children {self.job.key}: resuming from step {start}")
        else:
            snapshot = store.parent_snapshot(parent, self.spawn_step)
            states = spawn.stack(state_from(s.template(), snapshot), spec.n_children)
            start, self.steps = self.spawn_step, [self.spawn_step]
            self.losses = [self.train_losses(states)] if spec.low_lr else []
        stops = (
            []
            if self.all_converged()
            else [st for st in epoch_stops(s.spe, start, self.end) if st > start]
        )
        keys = spawn.child_keys(spec.seed, self.spawn_step, spec.n_children)
        return spawn.Member(self.member_name, states, keys, start, stops, self.on_stop)

    def all_converged(self) -> bool:
        low = self.job.spec.low_lr
        return bool(low) and bool(np.isfinite(converged(self.losses, low)).all())

    def on_stop(self, step: int, states: train_lib.TrainState) -> bool:
        """Snapshot, low-lr training loss, checkpoint; at the end (or once converged) the
        final files: True, the job leaves the batch."""
        spec, spe = self.job.spec, self.s.spe
        if spec.snapshot_every and step % (spec.snapshot_every * spe) == 0:
            store.save_arrays(
                self.out / store.snapshot_name(step),
                {**store.tree_arrays(states.params, "params"),
                 **store.tree_arrays(states.batch_stats, "batch_stats"), "step": step},
            )  # fmt: skip
        if spec.low_lr:
            self.steps.append(step)
            self.losses.append(self.train_losses(states))
        self.log(f"children {self.job.key}: epoch {step / spe:.2f}")
        if step == self.end or self.all_converged():
            self.finish(states)
            return True
        history = {"steps": np.array(self.steps), "losses": np.array(self.losses)}
        store.save_arrays(self.ckpt, {**state_arrays(states), "step": step, **history})
        return False

    def finish(self, states: train_lib.TrainState) -> None:
        """``final.npz`` (weights, statistics, test errors, low-lr convergence), then the
        manifest; the checkpoint goes."""
        s, spec = self.s, self.job.spec
        test_error = [e for e, _ in self.evaluate(states, s.dataset.x_test, s.dataset.y_test)]
        low = spec.low_lr
        store.save_arrays(
            self.out / "final.npz",
            {
                **store.tree_arrays(states.params, "params"),
                **store.tree_arrays(states.batch_stats, "batch_stats"),
                "test_error": np.array(test_error),
                **(
                    convergence(self.steps, self.losses, low, self.spawn_step, s.spe) if low else {}
                ),
            },
        )
        snapshots = sorted(f.name for f in self.out.glob("snap-*.npz"))
        store.write_manifest(
            self.job.kind, self.job.key, self.job.record(), [*snapshots, "final.npz"]
        )
        self.ckpt.unlink(missing_ok=True)
        self.log(f"children {self.job.key}: complete")
