"""Tests for ntkpaper.metrics against closed forms, hand counts and numpy brute force.

Definitions: docs/measurements.md (kernel distance, ReLU activation-pattern distance,
function-space distance, weight-space distance, error barrier with batch-norm statistics).
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkpaper import metrics, models

from .conftest import numpy_variables

K = 3  # classes of the small networks
RESNET = models.ResNet(num_classes=K, depth=8, width=0.25)


@pytest.fixture(scope="module")
def resnet_bn_case():
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32)
    v = numpy_variables(RESNET, x, rng)
    return x, v


def fast_jit(fn):
    """``fn`` compiled with XLA's backend optimisations off, one compile per input shape.

    Eager ResNet passes (one small compile per op) or optimised compiles cost seconds each
    on a small CPU. Used for the tests' reference passes, and to run the pure function
    ``metrics.relu_patterns`` on the ResNet under jit.
    """
    compiled = {}

    def call(*args):
        key = (jax.tree.structure(args), tuple((a.shape, a.dtype) for a in jax.tree.leaves(args)))
        if key not in compiled:
            compiled[key] = (
                jax.jit(fn)
                .lower(*args)
                .compile(compiler_options={"xla_backend_optimization_level": 0})
            )
        return compiled[key](*args)

    return call


resnet_eval = fast_jit(lambda v, x: RESNET.apply(v, x, train=False))


def np_error(logits, y) -> float:
    return float(np.mean(np.argmax(np.asarray(logits), -1) != np.asarray(y)))


# --------------------------------------------------------------------------- kernel distance


def np_kernel_distance(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return 1.0 - a @ b / (np.sqrt(a @ a) * np.sqrt(b @ b))


def test_kernel_distance_is_zero_for_kernels_equal_up_to_scale():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 4))
    k = jnp.asarray(a @ a.T, jnp.float32)
    assert abs(float(metrics.kernel_distance(k, 3 * k))) <= 1e-6
    assert abs(float(metrics.kernel_distance(k, k))) <= 1e-6


def test_kernel_distance_is_one_for_orthogonal_kernels():
    # <I, diag(1, -1)>_F = 0; also two kernels with disjoint supports
    a = jnp.eye(2)
    b = jnp.diag(jnp.array([1.0, -1.0]))
    assert abs(float(metrics.kernel_distance(a, b)) - 1.0) <= 1e-6
    c, d = np.zeros((3, 3, 2, 2), np.float32), np.zeros((3, 3, 2, 2), np.float32)
    c[0, 1, 0, 0], d[2, 2, 1, 1] = 2.0, 5.0
    assert abs(float(metrics.kernel_distance(jnp.asarray(c), jnp.asarray(d))) - 1.0) <= 1e-6


def test_kernel_distance_random_pair_matches_numpy():
    rng = np.random.default_rng(1)
    for shape in [(5, 5), (4, 3, 2, 2)]:
        a, b = rng.normal(size=shape) + 0.5, rng.normal(size=shape)
        got = float(
            metrics.kernel_distance(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
        )
        want = np_kernel_distance(a, b)
        assert abs(want) > 0.05  # a non-trivial value
        assert abs(got - want) <= 1e-5


def test_kernel_distance_matrix_equals_pairwise():
    rng = np.random.default_rng(2)
    stack = rng.normal(size=(4, 3, 3, 2, 2))
    stack[1] = 2.5 * stack[0]  # one pair equal up to scale
    got = np.asarray(metrics.kernel_distance_matrix(jnp.asarray(stack, jnp.float32)))
    assert got.shape == (4, 4)
    for i, j in itertools.product(range(4), repeat=2):
        pair = float(
            metrics.kernel_distance(
                jnp.asarray(stack[i], jnp.float32), jnp.asarray(stack[j], jnp.float32)
            )
        )
        assert abs(got[i, j] - pair) <= 1e-5
        assert abs(got[i, j] - np_kernel_distance(stack[i], stack[j])) <= 1e-5
    assert abs(got[0, 1]) <= 1e-5


# --------------------------------------------------------------------------- ReLU patterns


def hand_mlp(bias0, kernel0=((1.0, 0.0), (0.0, 1.0))):
    """MLP(1, (2,)) whose hidden pre-activations are x @ kernel0 + bias0."""
    return {
        "params": {
            "Dense_0": {
                "kernel": jnp.asarray(kernel0, jnp.float32),
                "bias": jnp.asarray(bias0, jnp.float32),
            },
            "Dense_1": {"kernel": jnp.array([[1.0], [-1.0]]), "bias": jnp.array([0.3])},
        }
    }


X_SIGNS = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])


def test_relu_patterns_and_distance_by_hand():
    model = models.MLP(num_classes=1, hidden=(2,))
    # identity weights, no bias: unit j is on iff x_j > 0
    p1 = np.asarray(metrics.relu_patterns(model, hand_mlp([0.0, 0.0]), X_SIGNS))
    want1 = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], bool)
    assert p1.dtype == bool and p1.shape == (4, 2)
    np.testing.assert_array_equal(p1, want1)
    # bias 1: pre-activations 2 or exactly 0; "strictly positive" keeps the 0s off
    p2 = np.asarray(metrics.relu_patterns(model, hand_mlp([1.0, 1.0]), X_SIGNS))
    np.testing.assert_array_equal(p2, want1)
    assert float(metrics.relu_distance(jnp.asarray(p1), jnp.asarray(p2))) == 0.0
    # bias 1.5 on unit 0: unit 0 on for all four inputs, two entries of eight flip
    p3 = np.asarray(metrics.relu_patterns(model, hand_mlp([1.5, 0.0]), X_SIGNS))
    want3 = np.array([[1, 1], [1, 0], [1, 1], [1, 0]], bool)
    np.testing.assert_array_equal(p3, want3)
    assert abs(float(metrics.relu_distance(jnp.asarray(p1), jnp.asarray(p3))) - 0.25) <= 1e-7
    # unit 1 negated as well: six of eight entries differ from p1
    p4 = np.asarray(
        metrics.relu_patterns(model, hand_mlp([1.5, 0.0], ((1.0, 0.0), (0.0, -1.0))), X_SIGNS)
    )
    np.testing.assert_array_equal(p4, np.array([[1, 0], [1, 1], [1, 0], [1, 1]], bool))
    assert abs(float(metrics.relu_distance(jnp.asarray(p1), jnp.asarray(p4))) - 0.75) <= 1e-7


def test_relu_patterns_resnet_counts_every_spatial_unit(resnet_bn_case):
    # depth 8 = one block per stage, width 0.25: channels 4, 8, 16 on 8x8, 4x4, 2x2 maps;
    # ReLUs: stem (8*8*4) + 2 per block: 2*8*8*4 + 2*4*4*8 + 2*2*2*16 = 256 + 512 + 256 + 128
    x, v = resnet_bn_case
    n = x.shape[0]
    p = np.asarray(fast_jit(lambda v, x: metrics.relu_patterns(RESNET, v, x))(v, x))
    assert p.shape == (n, 1152) and p.dtype == bool
    assert 0 < p.mean() < 1
    # the stem's units by hand, evaluation mode: relu(BN(conv(x))) > 0 with stored statistics
    conv = np.asarray(
        jax.lax.conv_general_dilated(
            x,
            v["params"]["Conv_0"]["kernel"],
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        ),
        np.float64,
    )
    bn, st = v["params"]["Norm_0"]["BatchNorm_0"], v["batch_stats"]["Norm_0"]["BatchNorm_0"]
    pre = (conv - np.asarray(st["mean"])) / np.sqrt(np.asarray(st["var"]) + 1e-5) * np.asarray(
        bn["scale"]
    ) + np.asarray(bn["bias"])
    assert np.min(np.abs(pre)) > 1e-5  # no near-zero unit whose sign rounding could decide
    stem = (pre > 0).reshape(n, -1)
    # the stem's units appear as one contiguous run of 256 columns, in (H, W, C) order
    runs = [s for s in range(0, 1152 - 255) if np.array_equal(p[:, s : s + 256], stem)]
    assert runs, "stem ReLU pattern not found among the pattern columns"


def test_relu_distance_matrix_equals_pairwise():
    rng = np.random.default_rng(4)
    pats = rng.random((5, 6, 7)) > 0.5
    got = np.asarray(metrics.relu_distance_matrix(jnp.asarray(pats)))
    assert got.shape == (5, 5)
    for i, j in itertools.product(range(5), repeat=2):
        pair = float(metrics.relu_distance(jnp.asarray(pats[i]), jnp.asarray(pats[j])))
        brute = np.count_nonzero(pats[i] != pats[j]) / pats[i].size
        assert abs(got[i, j] - pair) <= 1e-7 and abs(pair - brute) <= 1e-7


# --------------------------------------------------------------------------- function distance


def np_function_distance(l1, l2, y) -> float:
    """Brute force of docs/measurements.md: disagreement / (E + E' - E E' K / (K - 1))."""
    l1, l2, y = np.asarray(l1), np.asarray(l2), np.asarray(y)
    n, k = l1.shape
    p1 = [int(np.argmax(l1[i])) for i in range(n)]
    p2 = [int(np.argmax(l2[i])) for i in range(n)]
    dis = sum(p1[i] != p2[i] for i in range(n)) / n
    e1 = sum(p1[i] != y[i] for i in range(n)) / n
    e2 = sum(p2[i] != y[i] for i in range(n)) / n
    return dis / (e1 + e2 - e1 * e2 * k / (k - 1))


def test_function_distance_of_model_with_itself_is_zero():
    rng = np.random.default_rng(5)
    model = models.MLP(num_classes=K, hidden=(8,))
    x = jnp.asarray(rng.normal(size=(30, 4)), jnp.float32)
    y = jnp.asarray(rng.integers(0, K, 30))
    logits = model.apply(numpy_variables(model, x, rng), x)
    assert np_error(logits, y) > 0  # else 0/0
    assert abs(float(metrics.function_distance(logits, logits, y))) <= 1e-7


@pytest.mark.parametrize("k", [2, 4, 10])
def test_function_distance_random_matches_brute_force(k):
    rng = np.random.default_rng(6 + k)
    n = 200
    l1, l2 = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    y = rng.integers(0, k, n)
    got = float(
        metrics.function_distance(
            jnp.asarray(l1, jnp.float32), jnp.asarray(l2, jnp.float32), jnp.asarray(y)
        )
    )
    want = np_function_distance(l1, l2, y)
    assert abs(got - want) <= 1e-5 * abs(want)
    # independent random classifiers: close to chance, d ~ 1
    assert 0.7 < want < 1.3


def test_function_distance_correlated_errors_below_one():
    # second classifier equal to the first except on 10 of 100 examples
    rng = np.random.default_rng(7)
    l1 = rng.normal(size=(100, 4))
    l2 = l1.copy()
    l2[:10] = np.roll(l2[:10], 1, axis=1)
    y = rng.integers(0, 4, 100)
    got = float(
        metrics.function_distance(
            jnp.asarray(l1, jnp.float32), jnp.asarray(l2, jnp.float32), jnp.asarray(y)
        )
    )
    assert abs(got - np_function_distance(l1, l2, y)) <= 1e-5
    assert got < 0.5


def onehot_logits(pred: np.ndarray, k: int) -> jnp.ndarray:
    """Logits whose arg-max is ``pred`` without ties (winner 2, the others 0 to -1)."""
    n = len(pred)
    logits = -np.linspace(0.0, 1.0, k)[None, :].repeat(n, 0) - 0.1
    logits[np.arange(n), pred] = 2.0
    return jnp.asarray(logits, jnp.float32)


def test_function_distance_known_disagreements_by_hand():
    # n = 40 examples, K = 4 classes, y_i = i mod 4. Classifier 1 is wrong on examples 0-7;
    # classifier 2 copies it except on examples 4-13, 10 disagreements:
    #   4-7   both wrong, different wrong classes;
    #   8-13  2 wrong where 1 is right.
    # So disagreement = 10/40, E = 8/40, E' = (8 - 4 + 4 + 6)/40 = 14/40.
    n, k = 40, 4
    y = np.arange(n) % k
    p1 = y.copy()
    p1[:8] = (y[:8] + 1) % k
    p2 = p1.copy()
    p2[4:8] = (y[4:8] + 2) % k
    p2[8:14] = (y[8:14] + 3) % k
    dis, e1, e2 = 10 / 40, 8 / 40, 14 / 40
    # the counts by brute force agree with the construction
    assert sum(int(a != b) for a, b in zip(p1, p2)) == 10
    assert sum(int(a != t) for a, t in zip(p1, y)) == 8
    assert sum(int(a != t) for a, t in zip(p2, y)) == 14
    want = dis / (e1 + e2 - e1 * e2 * k / (k - 1))  # 0.25 / (0.55 - 0.07 * 4/3) = 0.25/0.4567
    assert abs(want - 0.25 / (0.55 - 0.28 / 3)) <= 1e-12
    l1, l2 = onehot_logits(p1, k), onehot_logits(p2, k)
    yj = jnp.asarray(y)
    got = float(metrics.function_distance(l1, l2, yj))
    assert abs(got - want) <= 1e-6 * want
    assert abs(got - np_function_distance(l1, l2, y)) <= 1e-6 * want
    # symmetric in the two classifiers; the raw disagreement (0.25) would be wrong here
    assert abs(float(metrics.function_distance(l2, l1, yj)) - want) <= 1e-6 * want
    assert abs(got - dis) > 0.2
    # one more disagreement (example 20: 2 now wrong) moves it by the brute-force amount
    p3 = p2.copy()
    p3[20] = (y[20] + 1) % k
    got3 = float(metrics.function_distance(l1, onehot_logits(p3, k), yj))
    want3 = (11 / 40) / (8 / 40 + 15 / 40 - (8 / 40) * (15 / 40) * k / (k - 1))
    assert abs(got3 - want3) <= 1e-6 * want3


def test_function_distance_single_disagreement_is_not_zero():
    # one disagreement of four, where classifier 2 alone errs: E = 0 and E' = 1/4, so
    # Z = E' and d = (1/4) / (1/4) = 1 (a shortcut to 0 for E = 0 would be wrong)
    y = jnp.array([0, 1, 0, 1])
    l1 = onehot_logits(np.array([0, 1, 0, 1]), 2)
    l2 = onehot_logits(np.array([0, 1, 0, 0]), 2)
    assert abs(float(metrics.function_distance(l1, l2, y)) - 1.0) <= 1e-6


# --------------------------------------------------------------------------- weight distance


def test_weight_distance_matches_numpy():
    rng = np.random.default_rng(8)
    model = models.MLP(num_classes=K, hidden=(6, 5))
    x = jnp.zeros((1, 4))
    w1 = numpy_variables(model, x, rng)["params"]
    w2 = numpy_variables(model, x, rng)["params"]
    f1 = np.asarray(ravel_pytree(w1)[0], np.float64)
    f2 = np.asarray(ravel_pytree(w2)[0], np.float64)
    assert f1.size == 4 * 6 + 6 + 6 * 5 + 5 + 5 * K + K
    d, rel = metrics.weight_distance(w1, w2)
    want = np.sqrt(np.sum((f1 - f2) ** 2))
    assert abs(float(d) - want) <= 1e-5 * want
    assert abs(float(rel) - want / np.sqrt(np.sum(f1**2))) <= 1e-5 * want / np.linalg.norm(f1)
    d0, rel0 = metrics.weight_distance(w1, w1)
    assert float(d0) == 0.0 and float(rel0) == 0.0


# --------------------------------------------------------------------------- batch statistics


def np_bn_stats(a):
    a = np.asarray(a, np.float64)
    return a.mean(axis=(0, 1, 2)), a.var(axis=(0, 1, 2))


@fast_jit
def _resnet_train_intermediates(v, x):
    _, state = RESNET.apply(
        v,
        x,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, method: isinstance(mdl, nn.Conv) and method == "__call__",
    )
    return state["intermediates"]


def conv_inputs_of_every_bn(x, v) -> dict:
    """Inputs of every BatchNorm in a train-mode pass, keyed by the BN's path.

    Each Norm_i in the ResNet follows Conv_i of the same module (the stem: Conv_0 -> Norm_0;
    a block: Conv_0 -> Norm_0, Conv_1 -> Norm_1), so the input of .../Norm_i/BatchNorm_0 is
    the captured output of .../Conv_i.
    """
    inter = _resnet_train_intermediates(v, x)
    out = {}
    for path, _ in jax.tree_util.tree_leaves_with_path(v["batch_stats"]):
        keys = [p.key for p in path]  # [..., "Norm_i", "BatchNorm_0", "mean"|"var"]
        conv = inter
        for kk in keys[:-3]:
            conv = conv[kk]
        out[tuple(keys[:-1])] = conv["Conv_" + keys[-3].split("_")[1]]["__call__"][0]
    return out


def get(tree, keys):
    for kk in keys:
        tree = tree[kk]
    return tree


def test_recompute_batch_stats_first_layer_by_hand(resnet_bn_case):
    x, v = resnet_bn_case
    n = x.shape[0]
    assert "bias" not in v["params"]["Conv_0"]  # BN ResNet: the stem conv has no bias
    conv = jax.lax.conv_general_dilated(
        x,
        v["params"]["Conv_0"]["kernel"],
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    whole = metrics.recompute_batch_stats(RESNET, v["params"], v["batch_stats"], x, n)
    mean, var = np_bn_stats(conv)
    got = whole["Norm_0"]["BatchNorm_0"]
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["var"], var, rtol=1e-4, atol=1e-5)
    # batch size n/2: the average of the two half-batch statistics (not the whole-set ones)
    half = metrics.recompute_batch_stats(RESNET, v["params"], v["batch_stats"], x, n // 2)
    (m1, v1), (m2, v2) = np_bn_stats(conv[: n // 2]), np_bn_stats(conv[n // 2 :])
    got = half["Norm_0"]["BatchNorm_0"]
    np.testing.assert_allclose(got["mean"], (m1 + m2) / 2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["var"], (v1 + v2) / 2, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs((v1 + v2) / 2 - var)) > 1e-3  # the two answers really differ


def test_recompute_batch_stats_every_layer(resnet_bn_case):
    # every BN layer: statistics of its input in a train-mode pass, per half batch, averaged
    x, v = resnet_bn_case
    n = x.shape[0]
    halves = [conv_inputs_of_every_bn(x[: n // 2], v), conv_inputs_of_every_bn(x[n // 2 :], v)]
    assert len(halves[0]) == 7  # stem + 2 per block, 3 blocks
    got = metrics.recompute_batch_stats(RESNET, v["params"], v["batch_stats"], x, n // 2)
    for keys in halves[0]:
        (m1, v1), (m2, v2) = np_bn_stats(halves[0][keys]), np_bn_stats(halves[1][keys])
        np.testing.assert_allclose(
            get(got, keys)["mean"], (m1 + m2) / 2, rtol=1e-4, atol=1e-5, err_msg=str(keys)
        )
        np.testing.assert_allclose(
            get(got, keys)["var"], (v1 + v2) / 2, rtol=1e-4, atol=1e-5, err_msg=str(keys)
        )


def test_recompute_batch_stats_without_batch_norm_returns_input():
    rng = np.random.default_rng(10)
    model = models.MLP(num_classes=K, hidden=(4,))
    x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    params = numpy_variables(model, x, rng)["params"]
    out = metrics.recompute_batch_stats(model, params, {}, x, 3)
    assert out == {} and not jax.tree.leaves(out)


# --------------------------------------------------------------------------- error barrier


@pytest.mark.parametrize("bn_stats", ["recompute", "running"])
def test_error_barrier_of_network_with_itself_is_zero(resnet_bn_case, bn_stats):
    x_train, v = resnet_bn_case
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, K, 8))
    out = metrics.error_barrier(
        RESNET, v, v, {"test": (x, y)}, points=3, bn_stats=bn_stats, bn_x=x_train, batch_size=8
    )
    e = np.asarray(out["error_test"])
    assert e.shape == (3,)
    np.testing.assert_allclose(out["alpha"], [0.0, 0.5, 1.0])
    assert abs(float(out["barrier_test"])) <= 1e-7
    assert np.all(e == e[0])
    if bn_stats == "running":  # stored statistics: the network's own error (n = 8)
        own = np_error(resnet_eval(v, x), y)
        np.testing.assert_allclose(e, own, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def mlp_pair():
    rng = np.random.default_rng(12)
    model = models.MLP(num_classes=K, hidden=(8,))
    sets = {
        "test": (
            jnp.asarray(rng.normal(size=(40, 4)), jnp.float32),
            jnp.asarray(rng.integers(0, K, 40)),
        ),
        "train": (
            jnp.asarray(rng.normal(size=(30, 4)), jnp.float32),
            jnp.asarray(rng.integers(0, K, 30)),
        ),
    }
    v1 = numpy_variables(model, sets["test"][0], rng)
    v2 = numpy_variables(model, sets["test"][0], rng)
    assert v1["batch_stats"] == {}
    return model, v1, v2, sets


@pytest.mark.parametrize("bn_stats", ["recompute", "running"])
def test_error_barrier_mlp_matches_dense_loop(mlp_pair, bn_stats):
    model, v1, v2, sets = mlp_pair
    points = 7
    out = metrics.error_barrier(
        model, v1, v2, sets, points=points, bn_stats=bn_stats, bn_x=sets["train"][0], batch_size=10
    )
    alphas = np.linspace(0, 1, points)
    np.testing.assert_allclose(out["alpha"], alphas, atol=0)
    for name, (x, y) in sets.items():
        brute = []
        for a in alphas:  # w_a = a w + (1 - a) w', in float32 as the package computes it
            pa = jax.tree.map(
                lambda p, q: np.float32(a) * np.asarray(p) + np.float32(1 - a) * np.asarray(q),
                v1["params"],
                v2["params"],
            )
            brute.append(np_error(model.apply({"params": pa}, x), y))
        brute = np.array(brute)
        curve = np.asarray(out[f"error_{name}"])
        assert curve.shape == (points,)
        # errors are multiples of 1/n (n = 40, 30): agreement to 1e-6 (float32 rounding of
        # the package's mean) means the same count of errors at every alpha
        np.testing.assert_allclose(curve, brute, rtol=0, atol=1e-6)
        assert abs(curve[-1] - np_error(model.apply(v1, x), y)) <= 1e-6  # a = 1: w
        assert abs(curve[0] - np_error(model.apply(v2, x), y)) <= 1e-6  # a = 0: w'
        want_barrier = brute.max() - (brute[0] + brute[-1]) / 2
        assert abs(float(out[f"barrier_{name}"]) - want_barrier) <= 1e-6
    assert np.ptp(np.asarray(out["error_test"])) > 0  # the curve is not flat: a real check


@pytest.mark.parametrize("bn_stats", ["recompute", "running"])
def test_error_barrier_resnet_two_networks_matches_dense_loop(resnet_bn_case, bn_stats):
    # two different BN networks: at each alpha, params interpolated by hand and the running
    # statistics either interpolated by hand or recomputed by hand (numpy mean/var of every
    # BN input in a train-mode pass over bn_x, one batch of 8)
    x_train, v1 = resnet_bn_case
    rng = np.random.default_rng(13)
    v2 = numpy_variables(RESNET, x_train, rng)
    x = jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, K, 8))
    points = 3
    out = metrics.error_barrier(
        RESNET,
        v1,
        v2,
        {"test": (x, y)},
        points=points,
        bn_stats=bn_stats,
        bn_x=x_train,
        batch_size=8,
    )
    lerp = lambda a, t1, t2: jax.tree.map(  # noqa: E731
        lambda p, q: jnp.asarray(np.float32(a) * np.asarray(p) + np.float32(1 - a) * np.asarray(q)),
        t1,
        t2,
    )
    brute = []
    for a in np.linspace(0, 1, points):
        params = lerp(a, v1["params"], v2["params"])
        stats = lerp(a, v1["batch_stats"], v2["batch_stats"])
        if bn_stats == "recompute":
            inputs = conv_inputs_of_every_bn(x_train, {"params": params, "batch_stats": stats})
            for keys, act in inputs.items():
                m, s2 = np_bn_stats(act)
                get(stats, keys[:-1])[keys[-1]] = {
                    "mean": jnp.asarray(m, jnp.float32),
                    "var": jnp.asarray(s2, jnp.float32),
                }
        brute.append(np_error(resnet_eval({"params": params, "batch_stats": stats}, x), y))
    brute = np.array(brute)
    np.testing.assert_allclose(out["error_test"], brute, rtol=0, atol=1e-6)
    assert abs(float(out["barrier_test"]) - (brute.max() - (brute[0] + brute[-1]) / 2)) <= 1e-6


def test_function_distance_of_two_perfect_classifiers_is_zero():
    logits = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    y = jnp.array([0, 1])
    assert float(metrics.function_distance(logits, logits, y)) == 0.0
