"""Tests for ntkpaper.models: the Wide ResNet and the ResNet without batch norm.

Shapes and parameter counts come from ``jax.eval_shape`` (no initialisation is computed);
expected counts are derived here from the architectures' definitions (conv kernels, BN
scale and bias, the final dense layer), independently of the modules.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkpaper import models
from ntkpaper import train as T

from .conftest import numpy_variables

CIFAR = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
DIGITS = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)


def abstract_variables(model: nn.Module, x) -> dict:
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)


def abstract_logits(model: nn.Module, x, train: bool = False):
    v = abstract_variables(model, x)
    v = {c: v[c] for c in ("params", "batch_stats") if c in v}
    if train:
        f = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])  # noqa: E731
        return jax.eval_shape(f, v, x)
    return jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def paths(tree) -> list[str]:
    return [
        "/".join(str(p.key) for p in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)
    ]


def params_leaf(tree, path: str):
    for k in path.split("/"):
        tree = tree[k]
    return tree


# --------------------------------------------------------------------------- Wide ResNet


def wrn_count(depth: int, k: int, num_classes: int, in_channels: int = 3) -> int:
    """Parameters of WRN-depth-k (Zagoruyko and Komodakis 2016), pre-activation blocks.

    Stem 3x3 conv to 16 channels; three groups of n = (depth - 4) / 6 blocks of widths 16k,
    32k, 64k, each block BN-ReLU-conv3x3-BN-ReLU-conv3x3 with a 1x1 conv shortcut when the
    channel count changes; final BN, global average pool, dense. Convs have no bias; a BN
    has a scale and a bias per channel.
    """
    n = (depth - 4) // 6
    total = 3 * 3 * in_channels * 16  # stem
    c_in = 16
    for c in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += 2 * c_in  # BN on the block's input
            total += 3 * 3 * c_in * c  # first conv
            total += 2 * c  # BN between the convs
            total += 3 * 3 * c * c  # second conv
            if c_in != c:
                total += c_in * c  # 1x1 shortcut
            c_in = c
    total += 2 * c_in  # final BN
    return total + c_in * num_classes + num_classes  # dense


def test_wrn_16_4_parameter_count_is_the_published_one():
    # Zagoruyko and Komodakis 2016, table 1 (CIFAR): WRN-16-4 has 2.7M parameters.
    want = wrn_count(16, 4, 10)
    assert 2.7e6 <= want <= 2.8e6  # the independent count is itself ~2.75M
    v = abstract_variables(models.WideResNet(num_classes=10, depth=16, width=4.0), CIFAR)
    got = count(v["params"])
    assert got == want
    assert round(got / 1e6, 2) == 2.75


@pytest.mark.parametrize("depth,k,millions", [(16, 8, 11.0), (28, 10, 36.5), (40, 4, 8.9)])
def test_other_wrn_parameter_counts_match_table_1(depth, k, millions):
    # The same table: WRN-16-8 11.0M, WRN-28-10 36.5M, WRN-40-4 8.9M.
    v = abstract_variables(models.WideResNet(num_classes=10, depth=depth, width=float(k)), CIFAR)
    got = count(v["params"])
    assert got == wrn_count(depth, k, 10)
    assert abs(got / 1e6 - millions) <= 0.05 + 1e-9, got


def test_wrn_16_4_structure():
    v = abstract_variables(models.WideResNet(num_classes=10, depth=16, width=4.0), CIFAR)
    params, stats = v["params"], v["batch_stats"]
    assert sorted(k for k in params if k.startswith("WideBlock")) == [
        f"WideBlock_{i}" for i in range(6)
    ]  # n = 2 blocks in each of 3 groups
    kernels = {p: leaf.shape for p, leaf in zip(paths(params), jax.tree.leaves(params))}
    convs3 = [s for p, s in kernels.items() if p.endswith("kernel") and s[:2] == (3, 3)]
    convs1 = [s for p, s in kernels.items() if p.endswith("kernel") and s[:2] == (1, 1)]
    assert len(convs3) == 1 + 2 * 6  # stem + two per block
    assert sorted(convs1) == sorted([(1, 1, 16, 64), (1, 1, 64, 128), (1, 1, 128, 256)])
    assert kernels["Conv_0/kernel"] == (3, 3, 3, 16)
    assert kernels["Dense_0/kernel"] == (256, 10) and kernels["Dense_0/bias"] == (10,)
    assert not any(p.startswith("Conv") and p.endswith("bias") for p in kernels)  # no conv bias
    # a running mean and variance for every BN scale and bias: 2 per block + the final one
    bn = [p for p in paths(params) if "BatchNorm" in p]
    assert len(bn) == 2 * (2 * 6 + 1)
    assert count(stats) == count({p: params_leaf(params, p) for p in bn})


@pytest.mark.parametrize("x,k", [(CIFAR, 10), (DIGITS, 10), (CIFAR, 100)])
def test_wrn_output_shape(x, k):
    model = models.WideResNet(num_classes=k, depth=16, width=4.0)
    out = abstract_logits(model, x)
    assert out.shape == (x.shape[0], k) and out.dtype == jnp.float32
    logits, updates = abstract_logits(model, x, train=True)
    assert logits.shape == (x.shape[0], k)
    assert set(updates) == {"batch_stats"}


def test_wrn_built_from_a_parameter_file_name():
    model = models.build("wrn", 10, depth=16, width=4.0, batch_norm=True)
    assert isinstance(model, models.WideResNet)
    assert count(abstract_variables(model, CIFAR)["params"]) == wrn_count(16, 4, 10)


def test_wrn_refuses_a_depth_not_6n_plus_4_and_no_batch_norm():
    with pytest.raises(ValueError, match="6n"):
        abstract_variables(models.WideResNet(num_classes=10, depth=20), CIFAR)
    with pytest.raises(ValueError, match="batch norm"):
        abstract_variables(models.WideResNet(num_classes=10, batch_norm=False), CIFAR)


# --------------------------------------------------------------------------- ResNet, no BN


def resnet_count(depth: int, width: float, num_classes: int, in_channels: int, bn: bool) -> int:
    """Parameters of the CIFAR ResNet (He et al. 2016, 4.2): stem, 3 x n basic blocks with
    parameter-free shortcuts, dense. With BN: convs without bias, BN scale and bias after
    every conv; without BN: each conv has a bias instead, and nothing else."""
    n = (depth - 2) // 6
    widths = [max(1, round(c * width)) for c in (16, 32, 64)]
    per_conv_extra = lambda c: 2 * c if bn else c  # noqa: E731  (BN scale+bias, or conv bias)
    total = 3 * 3 * in_channels * widths[0] + per_conv_extra(widths[0])
    c_in = widths[0]
    for c in widths:
        for _ in range(n):
            total += 3 * 3 * c_in * c + per_conv_extra(c)
            total += 3 * 3 * c * c + per_conv_extra(c)
            c_in = c
    return total + c_in * num_classes + num_classes


def test_resnet20_parameter_count_with_and_without_batch_norm():
    # He et al. 2016, table 6: ResNet-20 on CIFAR-10 has 0.27M parameters.
    with_bn = count(abstract_variables(models.ResNet(num_classes=10), CIFAR)["params"])
    assert with_bn == resnet_count(20, 1.0, 10, 3, bn=True)
    assert round(with_bn / 1e6, 2) == 0.27
    no_bn = count(
        abstract_variables(models.ResNet(num_classes=10, batch_norm=False), CIFAR)["params"]
    )
    assert no_bn == resnet_count(20, 1.0, 10, 3, bn=False)
    assert no_bn < with_bn


@pytest.mark.parametrize("x", [DIGITS, CIFAR])
def test_resnet_without_batch_norm_has_no_batch_norm(x):
    model = models.build("resnet", 10, depth=20, width=1.0, batch_norm=False)
    v = abstract_variables(model, x)
    assert "batch_stats" not in v
    assert not any("BatchNorm" in p or "scale" in p for p in paths(v["params"]))
    # every conv carries its own bias instead: 1 stem + 2 per block, 3 x 3 blocks
    convs = [p for p in paths(v["params"]) if "Conv" in p and p.endswith("kernel")]
    biases = [p for p in paths(v["params"]) if "Conv" in p and p.endswith("bias")]
    assert len(convs) == len(biases) == 1 + 2 * 9
    assert abstract_logits(model, x).shape == (x.shape[0], 10)
    # a train-mode pass mutates nothing (no running statistics)
    logits, updates = abstract_logits(model, x, train=True)
    assert logits.shape == (x.shape[0], 10) and "batch_stats" not in updates
    # the BN network, for contrast, has running statistics and BatchNorm parameters
    with_bn = abstract_variables(models.ResNet(num_classes=10, batch_norm=True), x)
    assert jax.tree.leaves(with_bn["batch_stats"])
    assert any("BatchNorm" in p for p in paths(with_bn["params"]))


def test_resnet_without_batch_norm_trains():
    # ResNet-8 at width 1/4 without BN, numpy initial weights; SGD steps on one batch of
    # digit-shaped inputs: gradients reach every parameter, and the loss goes down.
    rng = np.random.default_rng(0)
    model = models.ResNet(num_classes=3, depth=8, width=0.25, batch_norm=False)
    x = jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 16), jnp.int32)
    v = numpy_variables(model, x, rng)
    assert v["batch_stats"] == {}
    params = v["params"]

    def loss_fn(p, x, y):
        logits, updates = model.apply({"params": p}, x, train=True, mutable=["batch_stats"])
        return T.cross_entropy(logits, y), updates

    grad_fn = (
        jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        .lower(params, x, y)
        .compile(compiler_options={"xla_backend_optimization_level": 0})
    )
    (loss0, updates), grads = grad_fn(params, x, y)
    assert "batch_stats" not in updates
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for path, g in zip(paths(grads), jax.tree.leaves(grads)):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), f"no gradient reaches {path}"
    tx = optax.sgd(0.05)
    opt = tx.init(params)
    losses = [float(loss0)]
    for _ in range(5):
        updates, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)
        (loss, _), grads = grad_fn(params, x, y)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 1e-3, losses
    # train and eval mode agree: without BN the mode changes nothing
    both = (
        jax.jit(lambda p, x: [model.apply({"params": p}, x, train=t) for t in (True, False)])
        .lower(params, x)
        .compile(compiler_options={"xla_backend_optimization_level": 0})
    )
    in_train, in_eval = both(params, x)
    np.testing.assert_allclose(in_train, in_eval, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,depth", [("resnet", 8), ("wrn", 10)])
def test_he_initialisation_has_twice_the_variance_of_lecun(name, depth):
    """``model.weight_init: he`` draws every convolution and the dense layer with variance
    2 / fan_in (He et al.), ``lecun`` with 1 / fan_in (Flax's default)."""
    x = jnp.zeros((1, 8, 8, 3))
    stds = {}
    for init in ("he", "lecun"):
        model = models.build(name, 10, depth=depth, width=1.0, batch_norm=True, weight_init=init)
        params = model.init(jax.random.PRNGKey(0), x)["params"]
        kernels = {
            jax.tree_util.keystr(p): np.asarray(a)
            for p, a in jax.tree_util.tree_leaves_with_path(params)
            if p[-1].key == "kernel"
        }
        stds[init] = {k: (a.std(), np.prod(a.shape[:-1])) for k, a in kernels.items()}
    assert stds["he"].keys() == stds["lecun"].keys() and len(stds["he"]) >= 8
    for k, (he, fan_in) in stds["he"].items():
        lecun = stds["lecun"][k][0]
        np.testing.assert_allclose(he, np.sqrt(2 / fan_in), rtol=0.25, err_msg=k)
        np.testing.assert_allclose(lecun, np.sqrt(1 / fan_in), rtol=0.25, err_msg=k)


def test_simplecnn_is_appendix_d1():
    """Six 3x3 convolutions with bias (32, 32, 64, 64, 128, 128 channels), Kaiming weights and
    zero biases, 2x2 max pooling after the 2nd, 4th and 6th, global average pooling, a dense
    layer; every ReLU output recorded for the activation patterns."""
    model = models.build("simplecnn", 10, depth=6, width=1.0, batch_norm=False, weight_init="he")
    x = jnp.ones((2, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(0), x)
    convs = [v["params"][f"Conv_{i}"] for i in range(6)]
    assert [c["kernel"].shape for c in convs] == [
        (3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64), (3, 3, 64, 64), (3, 3, 64, 128),
        (3, 3, 128, 128)]  # fmt: skip
    assert all(float(jnp.abs(c["bias"]).max()) == 0 for c in convs)
    assert float(jnp.std(convs[5]["kernel"])) == pytest.approx((2 / (9 * 128)) ** 0.5, rel=0.05)
    out, state = model.apply({"params": v["params"]}, x, mutable=["relu"])
    assert out.shape == (2, 10)
    sizes = [a.shape[1] for a in jax.tree.leaves(state["relu"])]
    assert sizes == [8, 8, 4, 4, 2, 2]  # pooled after layers 2 and 4 (and 6, before the mean)
