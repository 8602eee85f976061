"""The job runners wired right: children start where the parent was and train as if alone,
Taylor models train against a hand-computed linear model, low-lr children use their lr.

One tiny parent (ResNet-8 at width 1/4 on digits, 2 epochs, 44 steps per epoch, lr drop at
epoch 1.5) is trained once for the module; every test reads its snapshots from the store.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from ntkpaper import models, plan, spawn, store
from ntkpaper import params as P
from ntkpaper import train as T
from ntkpaper.jobs import execute, execute_together
from ntkpaper.jobs.setup import Setup, setup
from ntkpaper.plan import Job, LowLr
from ntkpaper.train import make_taylor_step

from .conftest import write_tiny, write_tiny_kernel

FIELDS = ("params", "batch_stats", "opt_state")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A store holding the trained tiny parent; the integrated and kernel figures' jobs."""
    root = tmp_path_factory.mktemp("runners")
    write_tiny(root / "params", "tiny-fig", **{"children.spawn_epochs": [0, 0.5, 1]})
    write_tiny_kernel(root / "params")
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in (
            ("NTKPAPER_PARAMS", "params"),
            ("NTKPAPER_RUNS", "runs"),
            ("NTKPAPER_RESULTS", "results"),
        ):
            mp.setenv(var, str(root / sub))
        figures = P.load_all("quick")
        integrated = plan.integrated_runs(figures["tiny-fig"])
        kernel = plan.kernel_runs(figures["tiny-kernel"])
        assert kernel.parent.key == integrated.parent.key
        execute(integrated.parent)
        s = setup(integrated.parent)
        assert s.spe == 44 and s.train_params.epochs == 2
        yield SimpleNamespace(
            parent=integrated.parent, integrated=integrated, kernel=kernel, setup=s
        )


def snapshot_state(s: Setup, parent: Job, step: int) -> T.TrainState:
    """The parent's state at ``step``, read from the store."""
    snap = store.parent_snapshot(parent, step)
    t = s.template()
    return T.TrainState(*(store.tree_from_arrays(getattr(t, f), snap, f) for f in FIELDS))


def state_arrays(state: T.TrainState, fields=FIELDS) -> dict:
    return {k: v for f in fields for k, v in store.tree_arrays(getattr(state, f), f).items()}


def recording_run_steps(monkeypatch) -> list:
    """Record every ``train.run_steps`` call the runners make: its arguments and result."""
    real, calls = T.run_steps, []

    def record(step_fn, state, key, args, start, stops, on_stop, name):
        stops = list(stops)
        out = real(step_fn, state, key, args, start, stops, on_stop, name)
        calls.append(SimpleNamespace(state=state, key=key, start=start, stops=stops, final=out))
        return out

    monkeypatch.setattr(T, "run_steps", record)
    return calls


def recording_run_together(monkeypatch) -> list:
    """Record every member of every ``spawn.run_together`` call (children runners): its
    start state, keys, stops and final state."""
    real, calls = spawn.run_together, []

    def record(fused, members, args, *rest):
        seen = [SimpleNamespace(state=m.state, key=m.keys, start=m.start, stops=list(m.stops),
                                name=m.name) for m in members]  # fmt: skip
        out = real(fused, members, args, *rest)
        for c in seen:
            c.final = out[c.name]
        calls.extend(seen)
        return out

    monkeypatch.setattr(spawn, "run_together", record)
    return calls


# ---------------------------------------------------------------------------------------
# Children start where the parent was
# ---------------------------------------------------------------------------------------


class _Captured(Exception):
    pass


def test_children_start_from_the_trained_parent_snapshot_with_their_own_keys(env, monkeypatch):
    s, job = env.setup, env.integrated.children[2]  # spawned at epoch 1
    n, seed = job.spec.n_children, job.spec.seed
    spawn_step = s.step_of(job.spec.spawn_epoch)
    assert spawn_step == 44
    seen = {}

    def capture(fused, members, args, *rest):
        (m,) = members
        seen.update(state=m.state, key=m.keys, start=m.start, stops=list(m.stops))
        raise _Captured

    monkeypatch.setattr(spawn, "run_together", capture)
    with pytest.raises(_Captured):
        execute(job)

    snap = store.parent_snapshot(env.parent, spawn_step)
    assert int(snap["step"]) == spawn_step
    start_state = seen["state"]
    # the trained parent's optimiser: its step count and a non-zero momentum buffer
    np.testing.assert_array_equal(
        optax.tree_utils.tree_get(start_state.opt_state, "count"), [spawn_step] * n
    )
    trace = optax.tree_utils.tree_get(start_state.opt_state, "trace")
    assert all(float(jnp.max(jnp.abs(t[i]))) > 0 for t in jax.tree.leaves(trace) for i in range(n))
    # every child: the parent snapshot's weights, batch statistics and optimiser state
    got = state_arrays(start_state)
    assert got.keys() == {k for k in snap if k.split("/")[0] in FIELDS}
    for name, a in got.items():
        assert a.shape[0] == n, name
        for i in range(n):
            np.testing.assert_array_equal(a[i], snap[name], err_msg=f"child {i}: {name}")
    # ... which is a trained network, not the initial one
    init = store.parent_snapshot(env.parent, 0)
    assert any(not np.array_equal(snap[k], init[k]) for k in got if k.startswith("params/"))
    assert any(not np.array_equal(snap[k], init[k]) for k in got if k.startswith("batch_stats/"))
    # it trains on from the spawn step to the parent's end
    assert seen["start"] == spawn_step
    assert seen["stops"][-1] == s.step_of(s.train_params.epochs)
    # and each child draws its own minibatches: those of its own key
    keys = spawn.child_keys(seed, spawn_step, n)
    np.testing.assert_array_equal(seen["key"], keys)
    ds = s.dataset
    for k in range(2):
        batches = []
        for i in range(n):
            x, y = T.minibatch(
                s.data_params, s.spe, seen["key"][i], seen["start"] + k, ds.x_train, ds.y_train
            )
            x0, y0 = T.minibatch(
                s.data_params, s.spe, keys[i], spawn_step + k, ds.x_train, ds.y_train
            )
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)
            batches.append(np.asarray(x))
        assert not np.array_equal(batches[0], batches[1])  # the children's data orders differ


# ---------------------------------------------------------------------------------------
# Vmapped children equal children trained alone
# ---------------------------------------------------------------------------------------


def test_children_runner_equals_children_trained_alone_across_an_epoch_boundary(env):
    s, job = env.setup, env.integrated.children[1]  # spawned at epoch 0.5
    n, seed = job.spec.n_children, job.spec.seed
    spawn_step, end = s.step_of(job.spec.spawn_epoch), s.step_of(s.train_params.epochs)
    # spawned mid-epoch; crosses the epoch boundary at step 44 and the lr drop at step 66
    assert (spawn_step, end, s.spe) == (22, 88, 44)
    assert s.step_of(s.train_params.lr_drops[0]) == 66
    execute(job)
    final = store.final(job)

    ds = s.dataset
    step = jax.jit(T.make_train_step(s.model, s.tx, s.data_params, s.spe))
    keys = spawn.child_keys(seed, spawn_step, n)
    alone = []
    for i in range(n):
        state = snapshot_state(s, env.parent, spawn_step)
        for t in range(spawn_step, end):
            state, _ = step(state, keys[i], jnp.asarray(t, jnp.int32), ds.x_train, ds.y_train)
        alone.append(state)
    for i, state in enumerate(alone):
        for name, a in state_arrays(state, ("params", "batch_stats")).items():
            # float drift of 66 steps, vmapped vs alone, is ~2e-5; the children differ by ~1e-1
            np.testing.assert_allclose(
                final[name][i], a, rtol=1e-3, atol=2e-4, err_msg=f"child {i}: {name}"
            )
        err = T.evaluate(s.model, state.variables, ds.x_test, ds.y_test, s.data_params.eval_batch)
        np.testing.assert_allclose(final["test_error"][i], err[0], atol=1.5 / len(ds.y_test))
    # the children did move apart (their own data orders)
    p0, p1 = (ravel_pytree(c.params)[0] for c in alone)
    assert float(jnp.linalg.norm(p0 - p1)) > 1e-3


def test_children_of_several_spawn_epochs_trained_together_equal_each_trained_alone(
    env, monkeypatch, tmp_path
):
    """Spawned at epochs 1 and 0.5 (mid-epoch), given in that order: one ``run_together`` call
    whose members start at their spawn steps; each run's files equal, to the bit, those of the
    same run trained alone in another store; each run has its own log."""
    import shutil

    jobs = [env.integrated.children[2], env.integrated.children[1]]
    finals = {}
    for how in ("together", "alone"):
        runs = tmp_path / how
        shutil.copytree(store.run_dir("parent", env.parent.key), runs / "parent" / env.parent.key)
        monkeypatch.setenv("NTKPAPER_RUNS", str(runs))
        calls = recording_run_together(monkeypatch)
        if how == "together":
            execute_together(jobs)
            assert [c.start for c in calls] == [22, 44]  # one call, by spawn step
        else:
            for job in jobs:
                execute(job)
            assert [c.start for c in calls] == [44, 22]  # one call each
        finals[how] = {j.key: store.final(j) for j in jobs}
        for j in jobs:
            assert "complete" in (store.run_dir(j.kind, j.key) / "log.txt").read_text()
    for key, alone in finals["alone"].items():
        assert alone.keys() == finals["together"][key].keys()
        for name, a in alone.items():
            np.testing.assert_array_equal(finals["together"][key][name], a, err_msg=name)


# ---------------------------------------------------------------------------------------
# Taylor models and low-lr children against something independent
# ---------------------------------------------------------------------------------------


def test_taylor_1_steps_equal_hand_computed_steps_of_the_linear_model():
    model = models.MLP(num_classes=3, hidden=(6,))
    rng = np.random.default_rng(0)
    x_train = jnp.asarray(rng.normal(size=(12, 4)), jnp.float32)
    y_train = jnp.asarray(rng.integers(0, 3, 12), jnp.int32)
    data = P.Data(dataset="digits", batch_size=4, eval_batch=4, augment=False, crop_padding=0)
    spe = T.steps_per_epoch(12, 4)
    lp = P.Linearised(
        spawn_epochs=(0.0,),
        degree=1,
        epochs=1.0,
        lr=0.3,
        momentum=0.9,
        weight_decay=0.05,
        lr_drops=(),
        lr_decay=1.0,
        seed=0,
    )
    tx = T.optimizer(lp, spe)
    anchor = model.init(jax.random.PRNGKey(0), x_train[:1])["params"]
    step = jax.jit(make_taylor_step(model, tx, data, spe, 1))
    state = T.TrainState(anchor, {}, tx.init(anchor))
    key = jax.random.PRNGKey(5)

    # by hand, float64: f_lin(w) = f(w0) + J(w0)(w - w0), cross-entropy gradient
    # J^T (softmax(f_lin) - onehot) / B, heavy-ball SGD on it plus weight_decay * w
    w0, unravel = ravel_pytree(anchor)
    f = jax.jit(lambda w, x: model.apply({"params": unravel(w)}, x))
    jacobian = jax.jit(jax.jacrev(f))
    w, trace = np.asarray(w0, np.float64), np.zeros(w0.shape)
    for t in range(4):  # crosses into the second epoch (spe = 3)
        x, y = T.minibatch(data, spe, key, jnp.asarray(t), x_train, y_train)
        jac = np.asarray(jacobian(w0, x), np.float64)  # (B, K, P)
        z = np.asarray(f(w0, x), np.float64) + jac @ (w - np.asarray(w0, np.float64))
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        grad = np.einsum("bkp,bk->p", jac, p - np.eye(3)[np.asarray(y)]) / len(y)
        trace = lp.momentum * trace + grad + lp.weight_decay * w
        w = w - lp.lr * trace
        state, loss = step(state, key, jnp.asarray(t, jnp.int32), x_train, y_train, anchor, {})
        loss_by_hand = -np.mean(np.log(p[np.arange(len(y)), np.asarray(y)]))
        np.testing.assert_allclose(float(loss), loss_by_hand, rtol=1e-5)
        np.testing.assert_allclose(ravel_pytree(state.params)[0], w, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(w - np.asarray(w0)) > 0.1  # it moved far enough to be nonlinear


def test_linearised_runner_vmapped_over_t_equals_each_t_alone(env, monkeypatch):
    base = env.kernel.linearised
    s = env.setup
    calls = recording_run_steps(monkeypatch)

    def job(spawn_epochs):
        lp = dataclasses.replace(base.spec.linearised, spawn_epochs=spawn_epochs, epochs=0.25)
        return Job("linearised", dataclasses.replace(base.spec, linearised=lp), base.deps)

    together, *alone = job([0.5, 1.0]), job([0.5]), job([1.0])
    for j in (together, *alone):
        execute(j)
    assert len(calls) == 3 and all(c.stops[-1] == 11 for c in calls)
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(calls[0].final.params), jax.tree.leaves(calls[0].state.params)
        )
    )
    assert moved > 1e-3  # the Taylor models did train away from their anchors
    both = store.final(together)
    for i, (j, call) in enumerate(zip(alone, calls[1:])):
        single = store.final(j)
        np.testing.assert_array_equal(both["epoch"], single["epoch"])
        np.testing.assert_allclose(
            both["test_error"][:, i], single["test_error"][:, 0], atol=1.5 / len(s.dataset.y_test)
        )
        got = jax.tree.map(lambda a: a[i], calls[0].final.params)
        for (path, a), b in zip(
            jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(call.final.params)
        ):
            np.testing.assert_allclose(
                a, b[0], rtol=1e-4, atol=1e-5, err_msg=f"t~ {i}: {jax.tree_util.keystr(path)}"
            )
        # at epoch 0 the Taylor model is the parent at t~, with its statistics as measured
        snap = store.parent_snapshot(env.parent, s.step_of(j.spec.linearised.spawn_epochs[0]))
        v = s.measured(s.variables(snap), j.spec.bn)
        err = T.evaluate(s.model, v, s.dataset.x_test, s.dataset.y_test, s.data_params.eval_batch)[
            0
        ]
        np.testing.assert_allclose(both["test_error"][0, i], err, atol=1e-6)
    assert both["test_error"][0, 0] != both["test_error"][0, 1]


def test_low_lr_children_train_at_their_own_constant_lr(env, monkeypatch):
    s, base = env.setup, env.kernel.low_lr[1]
    # from epoch 1 for 0.6 epochs: past the parent's lr drop (1.5), which they must ignore
    low = LowLr(base.spec.low_lr.lr, epochs=0.6, converged_rtol=0.0)  # never converged: the cap
    job = Job("children", dataclasses.replace(base.spec, low_lr=low), base.deps)
    lr, n, seed = job.spec.low_lr.lr, job.spec.n_children, job.spec.seed
    assert lr < s.train_params.lr
    spawn_step = s.step_of(job.spec.spawn_epoch)
    end = spawn_step + s.step_of(job.spec.low_lr.epochs)
    assert (spawn_step, end) == (44, 70)
    calls = recording_run_together(monkeypatch)
    execute(job)
    (call,) = calls
    assert call.start == spawn_step and call.stops[-1] == end
    final = store.final(job)

    # by hand: heavy-ball SGD at the constant low lr from the parent's state at t~
    ds, tp = s.dataset, s.train_params

    @jax.jit
    def manual(params, stats, trace, key, t):
        x, y = T.minibatch(s.data_params, s.spe, key, t, ds.x_train, ds.y_train)

        def loss(p):
            logits, upd = s.model.apply(
                {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            return T.cross_entropy(logits, y), upd["batch_stats"]

        (_, stats), g = jax.value_and_grad(loss, has_aux=True)(params)
        trace = jax.tree.map(
            lambda m, g, w: tp.momentum * m + g + tp.weight_decay * w, trace, g, params
        )
        return jax.tree.map(lambda w, m: w - lr * m, params, trace), stats, trace

    keys = spawn.child_keys(seed, spawn_step, n)
    start = snapshot_state(s, env.parent, spawn_step)
    for i in range(n):
        p, b = start.params, start.batch_stats
        m = optax.tree_utils.tree_get(start.opt_state, "trace")
        for t in range(spawn_step, end):
            p, b, m = manual(p, b, m, keys[i], jnp.asarray(t, jnp.int32))
        for name, a in {
            **store.tree_arrays(p, "params"),
            **store.tree_arrays(b, "batch_stats"),
        }.items():
            np.testing.assert_allclose(
                final[name][i], a, rtol=1e-4, atol=1e-5, err_msg=f"child {i}: {name}"
            )


def test_low_lr_children_stop_once_converged_and_record_when():
    """``converged``: the first checkpoint whose relative loss drop is below the tolerance."""
    from ntkpaper.jobs.training import converged

    low = LowLr(0.01, 10, converged_rtol=0.05)
    losses = [[1.0, 1.0], [0.5, 0.9], [0.49, 0.5], [0.3, 0.48]]  # drops: .5/.1, .02/.44, .39/.04
    np.testing.assert_array_equal(converged(losses, low), [2, 3])
    assert np.isinf(converged(losses[:3], low)[1])  # child 1 not yet
    assert np.isinf(converged(losses[:1], low)).all()  # nothing to compare at spawning


def test_low_lr_children_runner_stops_at_convergence_before_the_cap(env, monkeypatch):
    base = env.kernel.low_lr[1]  # spawned at epoch 1 (step 44)
    low = LowLr(base.spec.low_lr.lr, epochs=2.5, converged_rtol=1.0)  # any drop < 100 %: done
    job = Job("children", dataclasses.replace(base.spec, low_lr=low), base.deps)
    calls = recording_run_together(monkeypatch)
    execute(job)
    (call,) = calls
    assert call.stops == [88, 132, 154]  # the cap would be step 154
    final = store.final(job)
    assert int(final["steps"][-1]) == 88 and float(final["epochs_trained"]) == 1.0
    np.testing.assert_array_equal(final["converged_epoch"], [1.0, 1.0])
    assert final["train_loss"].shape == (2, 2)  # at spawning and after one epoch
