"""Linearised (Taylor) training from the parent at several t~, one vmapped program
(Fort et al. 2020, section 6 and appendix D.4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ntkpaper import linearize, metrics, spawn, store
from ntkpaper import train as train_lib
from ntkpaper.jobs.setup import begin, epoch_stops, log, setup, state_arrays, state_from
from ntkpaper.plan import Job


def stacked(trees: list):
    """Several pytrees of one structure, stacked on a new axis 0."""
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def run_linearised(job: Job) -> None:
    """Train the order-``degree`` Taylor model of the parent at every t~ (vmapped over t~).

    Batch norm of each Taylor model: the parent's statistics at t~ (recomputed by default).
    Records the test error of each t~'s model at every epoch; checkpoints each epoch and
    resumes from it.
    """
    (parent,) = job.deps
    s = setup(parent)
    ds, lp = s.dataset, job.spec.linearised
    out = begin(job)
    anchors = [  # the parent at each t~, statistics as ``bn`` says
        s.measured(s.variables(store.parent_snapshot(parent, s.step_of(e))), job.spec.bn)
        for e in lp.spawn_epochs
    ]
    anchor = stacked([v["params"] for v in anchors])
    stats = stacked([v["batch_stats"] for v in anchors])
    tx = train_lib.optimizer(lp, s.spe)
    end = s.step_of(lp.epochs)
    ckpt = out / "checkpoint.npz"
    template = train_lib.TrainState(anchor, {}, jax.vmap(tx.init)(anchor))
    if ckpt.exists():
        arrays = store.load_arrays(ckpt)
        state, start = state_from(template, arrays), int(arrays["step"])
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
            ckpt, {**state_arrays(state), "step": step, "test_errors": np.array(errors)}
        )
        log(f"linearised {job.key}: epoch {step / s.spe:.2f} test errors {np.round(errors[-1], 4)}")

    step_fn = train_lib.make_taylor_step(s.vmapped_model, tx, s.data_params, s.spe, lp.degree)
    stops = epoch_stops(s.spe, 0, end)
    train_lib.run_steps(  # vmapped over t~: states, anchors and statistics on axis 0
        train_lib.Fused(step_fn, s.spe, (0, None, None, None, None, 0, 0)),
        spawn.shard(state),
        jax.random.PRNGKey(lp.seed),
        (ds.x_train, ds.y_train, spawn.shard(anchor), spawn.shard(stats)),
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
    store.write_manifest(job.kind, job.key, job.record(), ["final.npz"])
    ckpt.unlink(missing_ok=True)
