"""ntkpaper.conv: every convolution implementation equals the per-child reference.

Reference: a Python loop over children, each with plain ``lax.conv_general_dilated`` and
``jax.grad`` / ``jax.jvp``. Checked under ``jax.vmap`` over children with different weights
and inputs (the spawned children's program), without vmap, in forward mode (linearised
models), to second order (Hessian-vector products, grad of grad), vmapped over examples
with shared weights (the NTK), and for a whole ResNet-20 training step.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ntkpaper import conv, models, spawn
from ntkpaper import train as T
from ntkpaper.params import Data, Sgd

NEW = [name for name in conv.IMPLEMENTATIONS if name != "xla"]


@pytest.fixture(autouse=True)
def full_float32():
    """Float32 products everywhere (a GPU would otherwise use TF32 for convolutions and
    matmuls alike, and the tolerances here are float32's)."""
    with jax.default_matmul_precision("float32"):
        yield


N = 3  # children
TOL = dict(rtol=2e-5, atol=2e-5)


def close(actual, expected, **tol):
    """Every leaf of ``actual`` equals ``expected`` to float32 tolerance."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), **{**TOL, **tol})


def stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


# --------------------------------------------------------------------------- one layer
# Odd sizes (7x6) with stride 2 and SAME padding: the input gradient must know the input's
# shape, which the output's does not determine.

LAYERS = [(3, 1), (3, 2), (1, 2)]  # (kernel size, stride): 3x3 convs, WRN's 1x1 shortcut


def layer(impl: str, kernel: int, stride: int, bias: bool) -> nn.Conv:
    return models.Conv(impl, 4, (kernel, kernel), strides=(stride, stride), padding="SAME",
                       use_bias=bias)  # fmt: skip


def reference(params, x, kernel: int, stride: int):
    """The convolution as lax computes it, for one child: params of ``nn.Conv``."""
    y = lax.conv_general_dilated(
        x, params["kernel"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + params["bias"] if "bias" in params else y


def children(kernel: int, bias: bool, n: int = N, batch: int = 2):
    """n children's params (different weights, nonzero biases), inputs and output weights."""
    k = jax.random.split(jax.random.PRNGKey(kernel + 10 * bias), 4)
    params = {"kernel": jax.random.normal(k[0], (n, kernel, kernel, 3, 4))}
    if bias:
        params["bias"] = jax.random.normal(k[1], (n, 4))
    x = jax.random.normal(k[2], (n, batch, 7, 6, 3))
    r = jax.random.normal(k[3], (n, batch, 7, 6, 4))  # the loss weights each output pixel
    return params, x, r


def crop(r, stride):
    return r[:, ::stride, ::stride]


@pytest.mark.parametrize("impl", NEW)
@pytest.mark.parametrize("kernel,stride", LAYERS)
@pytest.mark.parametrize("bias", [False, True])
def test_vmapped_children_equal_the_per_child_reference(impl, kernel, stride, bias):
    params, x, r = children(kernel, bias)
    r = jax.vmap(crop, in_axes=(0, None))(r, stride)
    mod = layer(impl, kernel, stride, bias)
    f = lambda p, x: mod.apply({"params": p}, x)  # noqa: E731
    g = lambda p, x: reference(p, x, kernel, stride)  # noqa: E731
    loss = lambda apply: lambda p, x, r: jnp.sum(jnp.sin(apply(p, x)) * r)  # noqa: E731

    out = jax.jit(jax.vmap(f))(params, x)
    value_grads = jax.jit(jax.vmap(jax.value_and_grad(loss(f), argnums=(0, 1))))(params, x, r)
    ref_out = stack([g(jax.tree.map(lambda a: a[i], params), x[i]) for i in range(N)])
    ref = stack(
        [
            jax.value_and_grad(loss(g), argnums=(0, 1))(
                jax.tree.map(lambda a: a[i], params), x[i], r[i]
            )
            for i in range(N)
        ]
    )
    assert out.shape == ref_out.shape == (N, 2, -(-7 // stride), -(-6 // stride), 4)
    close(out, ref_out)
    close(value_grads, ref)  # loss, weight (and bias) gradients, input gradients

    # One model, no vmap.
    p0 = jax.tree.map(lambda a: a[0], params)
    close(jax.jit(f)(p0, x[0]), ref_out[0])
    close(
        jax.jit(jax.grad(loss(f), argnums=(0, 1)))(p0, x[0], r[0]),
        jax.tree.map(lambda a: a[0], ref[1]),
    )


@pytest.mark.parametrize("impl", NEW)
def test_forward_mode_and_second_derivatives_equal_the_reference(impl):
    """jvp (linearised and Taylor models), jvp of grad (Hessian-vector products) and grad of
    grad (reverse over reverse: every transpose of every derivative), vmapped over children
    (several linearisation points at once) and alone."""
    kernel, stride = 3, 2
    params, x, r = children(kernel, True)
    r = jax.vmap(crop, in_axes=(0, None))(r, stride)
    dp = jax.tree.map(lambda a: jnp.cos(a) + 0.5, params)  # the tangent directions
    dx = jnp.sin(3 * x)
    mod = layer(impl, kernel, stride, True)
    f = lambda p, x: mod.apply({"params": p}, x)  # noqa: E731
    g = lambda p, x: reference(p, x, kernel, stride)  # noqa: E731

    def derivatives(apply):
        def one(p, x, r, dp, dx):
            tangent = jax.jvp(apply, (p, x), (dp, dx))[1]
            loss = lambda p, x: jnp.sum(jnp.sin(apply(p, x)) * r)  # noqa: E731
            hvp = jax.jvp(lambda p: jax.grad(loss)(p, x), (p,), (dp,))[1]
            sq = lambda t: sum(jnp.sum(a**2) for a in jax.tree.leaves(t))  # noqa: E731
            gg = jax.grad(lambda p, x: sq(jax.grad(loss, argnums=(0, 1))(p, x)), (0, 1))(p, x)
            return tangent, hvp, gg

        return one

    got = jax.jit(jax.vmap(derivatives(f)))(params, x, r, dp, dx)
    pick = lambda t, i: jax.tree.map(lambda a: a[i], t)  # noqa: E731
    ref = stack([derivatives(g)(pick(params, i), x[i], r[i], pick(dp, i), dx[i]) for i in range(N)])
    close(got, ref, rtol=1e-4, atol=1e-4)
    alone = jax.jit(derivatives(f))(pick(params, 1), x[1], r[1], pick(dp, 1), dx[1])
    close(alone, pick(ref, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", NEW)
@pytest.mark.parametrize("examples", [5, conv.LOOP_MAX + 3])
def test_per_example_gradients_with_shared_weights(impl, examples):
    """The NTK's pattern: vmap over examples of grad, one set of weights; both the folded
    forward and (past LOOP_MAX) XLA's batching of per-example weight gradients."""
    params, x, r = children(3, True, n=1, batch=examples)
    p0, x0, r0 = jax.tree.map(lambda a: a[0], params), x[0], r[0]
    mod = layer(impl, 3, 1, True)
    f = lambda p, x: mod.apply({"params": p}, x[None])[0]  # noqa: E731
    g = lambda p, x: reference(p, x[None], 3, 1)[0]  # noqa: E731
    loss = lambda apply: lambda p, x, r: jnp.sum(jnp.sin(apply(p, x)) * r)  # noqa: E731
    got = jax.jit(jax.vmap(jax.grad(loss(f), argnums=(0, 1)), in_axes=(None, 0, 0)))(p0, x0, r0)
    ref = jax.vmap(jax.grad(loss(g), argnums=(0, 1)), in_axes=(None, 0, 0))(p0, x0, r0)
    close(got, ref)


def test_unknown_or_unsupported_convolutions_are_refused():
    with pytest.raises(ValueError, match="unknown convolution 'cudnn'"):
        models.ResNet(num_classes=10, depth=8, conv="cudnn").init(
            jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))
        )
    f = conv.conv_general_dilated("loop")
    x, w = jnp.zeros((1, 8, 8, 3)), jnp.zeros((3, 3, 3, 4))
    with pytest.raises(ValueError, match="rhs_dilation"):
        f(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    with pytest.raises(ValueError, match="NHWC"):
        f(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    assert conv.conv_general_dilated("xla") is None  # nn.Conv's default, unchanged


# --------------------------------------------------------------------------- whole models


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet", dict(depth=20)),
        ("resnet", dict(depth=8, batch_norm=False)),
        ("wrn", dict(depth=10, width=1)),
        ("simplecnn", dict(width=0.25)),
    ],
)
def test_parameters_are_those_of_the_xla_model(name, kwargs):
    """Same names and shapes whatever the implementation: checkpoints and parameter trees do
    not change (and the same initial values: the training-step tests start from them)."""
    x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
    init = lambda impl: jax.eval_shape(  # noqa: E731
        lambda x: models.build(name, 10, conv=impl, **kwargs).init(jax.random.PRNGKey(0), x), x
    )
    ref = init("xla")
    for impl in NEW:
        assert init(impl) == ref


def train_step(impl: str):
    """ResNet-20's training step (SGD with momentum, weight decay, augmentation), batch 4."""
    m = models.ResNet(num_classes=10, depth=20, conv=impl)
    sgd = Sgd(lr=0.1, momentum=0.9, weight_decay=5e-4, lr_drops=(), lr_decay=1.0)
    tx = T.optimizer(sgd, spe=2)
    data = Data("cifar10", batch_size=4, eval_batch=4, augment=True, crop_padding=2)
    return m, tx, T.make_train_step(m, tx, data, spe=2)


def run_steps(impl: str, x_train, y_train):
    """Two steps of 2 vmapped children (own data order and augmentation, weights diverging
    after the first step), and one step of a single model: (states, losses), (state, loss)."""
    m, tx, step = train_step(impl)
    state = T.init_state(m, tx, jax.random.PRNGKey(0), x_train[:1])
    states, keys = spawn.stack(state, 2), spawn.child_keys(0, 0, 2)
    f = jax.jit(spawn.vmap_children(step))
    losses = []
    for t in range(2):
        states, loss = f(states, keys, jnp.asarray(t, jnp.int32), x_train, y_train)
        losses.append(loss)
    alone = jax.jit(step)(state, jax.random.PRNGKey(1), jnp.asarray(0), x_train, y_train)
    return (states, losses), alone


@pytest.fixture(scope="module")
def cifar_like():
    kx, ky = jax.random.split(jax.random.PRNGKey(3))
    x_train, y_train = jax.random.normal(kx, (16, 8, 8, 3)), jax.random.randint(ky, (16,), 0, 10)
    return x_train, y_train, run_steps("xla", x_train, y_train)


@pytest.mark.parametrize("impl", NEW)
def test_resnet20_train_step_equals_xla_vmapped_and_alone(impl, cifar_like):
    """``jax.vmap(make_train_step(...))`` over 2 children, and the step of one model: states
    (weights, batch-norm statistics, momentum) and losses equal those of conv='xla'."""
    x_train, y_train, ((ref, ref_losses), ref_alone) = cifar_like
    (got, got_losses), got_alone = run_steps(impl, x_train, y_train)
    assert not np.allclose(got_losses[1][0], got_losses[1][1])  # the children differ
    close(got_losses, ref_losses, rtol=1e-4, atol=1e-5)
    close(got, ref, rtol=1e-4, atol=1e-5)
    close(got_alone, ref_alone, rtol=1e-4, atol=1e-5)
