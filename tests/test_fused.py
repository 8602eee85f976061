"""Fused training (``train.Fused``: an epoch's steps as one ``lax.fori_loop`` or, on a CPU, one
jitted call each, its data order drawn once) against the step-by-step reference, and children
sharded across devices against the same children on one device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkpaper import models, spawn
from ntkpaper import params as P
from ntkpaper import train as T

from .conftest import ROOT

SGD = P.Sgd(lr=0.05, momentum=0.9, weight_decay=1e-3, lr_drops=(1.5,), lr_decay=0.1)
DATA = P.Data(dataset="digits", batch_size=4, eval_batch=4, augment=True, crop_padding=1)


def problem(n_train: int = 20):
    """A small ResNet with batch norm on random 8x8 images: 5 steps per epoch."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n_train, 8, 8, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, n_train), jnp.int32)
    model = models.ResNet(num_classes=3, depth=8, width=0.5)
    spe = T.steps_per_epoch(n_train, DATA.batch_size)
    tx = T.optimizer(SGD, spe)
    state = T.init_state(model, tx, jax.random.PRNGKey(0), x[:1])
    return model, tx, spe, state, x, y


def close(a, b, err_msg=""):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(
            np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-5, err_msg=err_msg
        )


@pytest.mark.parametrize("children", [0, 3])
@pytest.mark.parametrize("in_loop", [False, True])
def test_fused_steps_equal_the_step_by_step_reference(children, in_loop):
    """From mid-epoch, across two epoch boundaries and the lr drop, with a stop mid-epoch:
    every piece of an epoch is one scan with the epoch's order drawn once; the result is
    the plain loop's, in which every step draws its own order."""
    model, tx, spe, state, x, y = problem()
    step_fn = T.make_train_step(model, tx, DATA, spe)
    key = jax.random.PRNGKey(7)
    start, stops = 3, [9, 13]  # 3..4 | 5..8 stop | 9 | 10..12 stop
    if children:
        state, key = spawn.stack(state, children), jax.random.split(key, children)
        fused = T.Fused(step_fn, spe, spawn.CHILDREN_AXES, in_loop=in_loop)
        reference = jax.jit(spawn.vmap_children(step_fn))
    else:
        fused, reference = T.Fused(step_fn, spe, in_loop=in_loop), jax.jit(step_fn)
    seen = []
    got = T.run_steps(fused, state, key, (x, y), start, stops, lambda t, s: seen.append(t), "x")
    assert seen == stops
    if in_loop:
        assert fused.segment._cache_size() == 1  # one program for every piece
    want = state
    for t in range(start, stops[-1]):
        want, _ = reference(want, key, jnp.asarray(t, jnp.int32), x, y)
    close(got, want)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), got, state))
    assert max(moved) > 1e-2
    if children:  # the children drew their own data orders
        p = jax.tree.leaves(got.params)[0]
        assert float(jnp.abs(p[0] - p[1]).max()) > 1e-4


@pytest.mark.parametrize("in_loop", [False, True])
def test_fused_taylor_steps_vmapped_over_anchors_equal_the_reference(in_loop):
    """The linearised runner's program: Taylor steps vmapped over two anchors (t~)."""
    model, tx, spe, state, x, y = problem()
    step_fn = T.make_taylor_step(model, tx, DATA, spe, 1)
    anchors = spawn.stack(state, 2)
    anchors = anchors.replace(
        params=jax.tree.map(lambda a: a * jnp.array([1.0, 0.9]).reshape(2, *[1] * (a.ndim - 1)),
                            anchors.params)
    )  # fmt: skip
    lin = T.TrainState(anchors.params, {}, jax.vmap(tx.init)(anchors.params))
    axes = (0, None, None, None, None, 0, 0)
    key, args = jax.random.PRNGKey(3), (x, y, anchors.params, anchors.batch_stats)
    fused = T.Fused(step_fn, spe, axes, in_loop=in_loop)
    got = T.run_steps(fused, lin, key, args, 0, [7], lambda *_: None, "l")
    reference, want = jax.jit(jax.vmap(step_fn, in_axes=axes)), lin
    for t in range(7):
        want, _ = reference(want, key, jnp.asarray(t, jnp.int32), *args)
    close(got.params, want.params)


def test_a_run_resumed_at_a_stop_runs_the_same_programs():
    """Resumed at step 9 (a stop), the pieces are those of the uninterrupted run: the same
    numbers to the bit."""
    model, tx, spe, state, x, y = problem()
    fused, key = T.Fused(T.make_train_step(model, tx, DATA, spe), spe), jax.random.PRNGKey(1)
    whole = T.run_steps(fused, state, key, (x, y), 2, [9, 13], lambda *_: None, "x")
    half = T.run_steps(fused, state, key, (x, y), 2, [9], lambda *_: None, "x")
    resumed = T.run_steps(fused, half, key, (x, y), 9, [13], lambda *_: None, "x")
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


SHARDED = textwrap.dedent(
    """
    import jax, numpy as np
    from ntkpaper import spawn
    from ntkpaper import train as T
    from tests.test_fused import DATA, problem

    assert jax.device_count() == 4, jax.devices()
    model, tx, spe, state, x, y = problem()
    fused = T.Fused(T.make_train_step(model, tx, DATA, spe), spe, spawn.CHILDREN_AXES, in_loop=True)
    states, keys = spawn.stack(state, 8), jax.random.split(jax.random.PRNGKey(2), 8)
    one = T.run_steps(fused, states, keys, (x, y), 0, [7], lambda *_: None, "one device")
    sharded = spawn.shard(states)
    assert len(jax.tree.leaves(sharded)[0].sharding.device_set) == 4
    many = T.run_steps(fused, sharded, spawn.shard(keys), (x, y), 0, [7], lambda *_: None, "4")
    leaves = jax.tree.leaves(many)
    assert all(len(a.sharding.device_set) == 4 for a in leaves), "ran on one device"
    for a, b in zip(jax.tree.leaves(one), leaves):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert spawn.models_mesh(6).devices.size == 3 and spawn.models_mesh(5) is None
    assert spawn.shard({}) == {}  # no batch statistics (a network without batch norm)
    print("sharded equal")
    """
)


def test_children_sharded_across_four_devices_equal_children_on_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-c", SHARDED], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "sharded equal" in done.stdout
