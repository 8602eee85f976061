"""Tests for ntkpaper.ntk.empirical_ntk against closed forms and a dense brute-force Jacobian.

Definitions: docs/measurements.md, "Empirical neural tangent kernel". The full kernel is
k(x, x')_{kl} = J_k(x) . J_l(x') with J the Jacobian of the logits w.r.t. the trainable
parameters only (batch-norm statistics fixed, evaluation mode); the traced kernel is the
mean over the K diagonal entries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkpaper import models
from ntkpaper.ntk import empirical_ntk

from .conftest import numpy_variables

RTOL_F32 = 1e-4  # relative Frobenius error allowed for float32 kernels


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------- linear model


def linear(w, x):
    """f(W, x) = x @ W, W (d, K): J_k(x) . J_l(x') = delta_kl x . x'."""
    return x @ w


@pytest.fixture(scope="module")
def linear_case():
    rng = np.random.default_rng(0)
    d, k = 6, 4
    w = jnp.asarray(rng.normal(size=(d, k)), jnp.float32)
    x1 = rng.normal(size=(5, d)).astype(np.float32)
    x2 = rng.normal(size=(3, d)).astype(np.float32)
    return w, x1, x2, k


def test_linear_traced_is_gram_of_inputs(linear_case):
    w, x1, x2, _ = linear_case
    got = empirical_ntk(linear, w, jnp.asarray(x1), jnp.asarray(x2))
    want = x1.astype(np.float64) @ x2.astype(np.float64).T
    assert got.shape == (5, 3)
    assert rel_err(got, want) <= 1e-6
    # x2 omitted: the kernel of x1 with itself
    got_same = empirical_ntk(linear, w, jnp.asarray(x1))
    assert rel_err(got_same, x1.astype(np.float64) @ x1.astype(np.float64).T) <= 1e-6


def test_linear_full_is_gram_times_identity(linear_case):
    w, x1, x2, k = linear_case
    got = empirical_ntk(linear, w, jnp.asarray(x1), jnp.asarray(x2), trace_axes=())
    want = (x1.astype(np.float64) @ x2.astype(np.float64).T)[:, :, None, None] * np.eye(k)
    assert got.shape == (5, 3, k, k)
    # off-diagonal logit blocks are exactly zero for a linear model; diagonal = x . x'
    assert np.max(np.abs(np.asarray(got) - want)) <= 1e-5 * np.max(np.abs(want))


@pytest.mark.parametrize("bad", [(0,), (1,), (-2,), (-1, -2), (0, 1)])
def test_unsupported_trace_axes_raise(linear_case, bad):
    w, x1, _, _ = linear_case
    with pytest.raises(ValueError):
        empirical_ntk(linear, w, jnp.asarray(x1), trace_axes=bad)


# --------------------------------------------------------------------------- brute force


def dense_jacobian(g):
    """jac(w, x, **kw) -> (n K, d): row r = gradient of logit r of g(w, x, **kw).reshape(-1).

    One vector-Jacobian product per row with a one-hot cotangent: a plain reverse pass over
    the whole batch, nothing shared with the package's per-example vmap of jacrev. Compiled
    with XLA's backend optimisations off (this reference only; the package's code is
    compiled normally), which cuts its CPU compile time several-fold.
    """

    def row(w, x, e, kw):
        _, vjp = jax.vjp(lambda w: g(w, x, **kw).reshape(-1), w)
        return vjp(e)[0]

    compiled = {}

    def jac(w, x, **kw):
        m = int(np.prod(jax.eval_shape(lambda: g(w, x, **kw)).shape))
        eye = jnp.eye(m, dtype=w.dtype)
        if x.shape not in compiled:
            compiled[x.shape] = (
                jax.jit(row)
                .lower(w, x, eye[0], kw)
                .compile(compiler_options={"xla_backend_optimization_level": 0})
            )
        return jnp.stack([compiled[x.shape](w, x, eye[r], kw) for r in range(m)])

    return jac


def brute_force_full(jac_fn, params, x1, x2, k, **kw) -> np.ndarray:
    """Dense Jacobian of all n*K logits w.r.t. the raveled params, J1 J2^T reshaped.

    ``jac_fn(flat, x, **kw) -> (n K, d)``; x1 and x2 go through one call (one compile),
    which is valid because evaluation-mode examples do not interact.
    """
    flat, _ = ravel_pytree(params)
    n1, n2 = x1.shape[0], x2.shape[0]
    j = np.asarray(jac_fn(flat, jnp.concatenate([x1, x2]), **kw), np.float64)
    j1, j2 = j[: n1 * k], j[n1 * k :]
    assert j2.shape[0] == n2 * k
    return (j1 @ j2.T).reshape(n1, k, n2, k).transpose(0, 2, 1, 3)


def traced(full: np.ndarray) -> np.ndarray:
    """Mean over the K diagonal entries of each logit block."""
    return np.trace(full, axis1=2, axis2=3) / full.shape[-1]


# --------------------------------------------------------------------------- small MLP


def mlp_ntk_closed_form(params, x1, x2) -> np.ndarray:
    """Full NTK of a one-hidden-layer MLP f(x) = W2^T relu(W1^T x + b1) + b2, by hand.

    With z = W1^T x + b1, h = relu(z), a = 1[z > 0]: df_k/dW2[j, l] = h_j delta_kl,
    df_k/db2[l] = delta_kl, df_k/dW1[i, j] = W2[j, k] a_j x_i, df_k/db1[j] = W2[j, k] a_j, so
    k(x, x')_{kl} = delta_kl (h . h' + 1) + sum_j W2[j, k] W2[j, l] a_j a'_j (x . x' + 1).
    """
    w1, b1 = (np.asarray(params["Dense_0"][n], np.float64) for n in ("kernel", "bias"))
    w2 = np.asarray(params["Dense_1"]["kernel"], np.float64)
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    z1, z2 = x1 @ w1 + b1, x2 @ w1 + b1
    h1, h2, a1, a2 = np.maximum(z1, 0), np.maximum(z2, 0), z1 > 0, z2 > 0
    k = w2.shape[1]
    out = (h1 @ h2.T + 1)[:, :, None, None] * np.eye(k)
    gate = np.einsum("aj,bj,jk,jl->abkl", a1, a2, w2, w2)
    return out + gate * (x1 @ x2.T + 1)[:, :, None, None]


@pytest.fixture(scope="module")
def mlp_case():
    model = models.MLP(num_classes=3, hidden=(7,))
    rng = np.random.default_rng(2)
    x1 = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    x2 = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    params = numpy_variables(model, x1, rng)["params"]
    f = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    return f, params, x1, x2


def test_mlp_closed_form_is_sane(mlp_case):
    # guards the reference: off-diagonal logit blocks are non-zero (W2 couples logits), so
    # a swapped (k, l) or a dropped first-layer term would show; symmetric in (k, l) at
    # x = x' only, so compare with x1 against itself
    _, params, x1, x2 = mlp_case
    full = mlp_ntk_closed_form(params, x1, x2)
    assert np.abs(full[:, :, 0, 1]).max() > 1e-2
    same = mlp_ntk_closed_form(params, x1, x1)
    mat = same.transpose(0, 2, 1, 3).reshape(5 * 3, 5 * 3)
    assert np.allclose(mat, mat.T, rtol=0, atol=1e-12)  # a Gram matrix
    assert np.linalg.eigvalsh(mat).min() >= -1e-10


@pytest.mark.parametrize("trace_axes", [(), (-1,)])
@pytest.mark.parametrize("with_x2", [False, True])
def test_mlp_uneven_blocks_match_closed_form(mlp_case, trace_axes, with_x2):
    # n1 = 5 in blocks of 2, 2, 1; n2 = 3 in blocks of 2, 1: the remainder blocks must land
    # in the right rows and columns
    f, params, x1, x2 = mlp_case
    other = x2 if with_x2 else None
    want = mlp_ntk_closed_form(params, x1, x2 if with_x2 else x1)
    if trace_axes:
        want = traced(want)
    blocked = empirical_ntk(f, params, x1, other, trace_axes, 2)
    whole = empirical_ntk(f, params, x1, other, trace_axes, None)
    assert blocked.shape == want.shape == whole.shape
    assert rel_err(whole, want) <= RTOL_F32
    assert rel_err(blocked, want) <= RTOL_F32


# --------------------------------------------------------------------------- tiny ResNet
# CPU compile time dominates here (each distinct batch shape of the per-example Jacobian
# compiles anew), so every kernel below uses batches of 4 (whole) or 2 (blocks) only.

K_RES = 3


@pytest.fixture(scope="module")
def resnet_case():
    model = models.ResNet(num_classes=K_RES, depth=8, width=0.25)
    rng = np.random.default_rng(1)
    x1 = jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32)
    x2 = jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32)
    v = numpy_variables(model, x1, rng)
    params, stats = v["params"], v["batch_stats"]
    # f(params, x, batch_stats) exactly as ntkpaper.models.logits builds it; one
    # object for the whole module so that the jitted Jacobian is compiled once per shape
    f = lambda params, x, batch_stats: model.apply(  # noqa: E731
        {"params": params, "batch_stats": batch_stats}, x, train=False
    )
    _, unravel = ravel_pytree(params)
    jac_fn = dense_jacobian(lambda w, x, batch_stats: f(unravel(w), x, batch_stats))
    return f, params, stats, x1, x2, jac_fn


@pytest.fixture(scope="module")
def resnet_brute(resnet_case):
    f, params, stats, x1, x2, jac_fn = resnet_case
    return {
        "11": brute_force_full(jac_fn, params, x1, x1, K_RES, batch_stats=stats),
        "12": brute_force_full(jac_fn, params, x1, x2, K_RES, batch_stats=stats),
    }


def test_resnet_brute_force_is_sane(resnet_brute):
    # guards the reference itself: symmetric positive semi-definite Gram matrix, non-zero
    full11 = resnet_brute["11"]
    n = full11.shape[0]
    mat = full11.transpose(0, 2, 1, 3).reshape(n * K_RES, n * K_RES)
    scale = np.abs(mat).max()
    assert scale > 0
    assert np.allclose(mat, mat.T, rtol=0, atol=1e-5 * scale)
    assert np.linalg.eigvalsh(mat).min() >= -1e-5 * scale


def test_resnet_full_matches_brute_force(resnet_case, resnet_brute):
    f, params, stats, x1, _, _ = resnet_case
    got = empirical_ntk(f, params, x1, None, (), None, batch_stats=stats)
    assert got.shape == (4, 4, K_RES, K_RES)
    assert rel_err(got, resnet_brute["11"]) <= RTOL_F32


def test_resnet_traced_matches_brute_force(resnet_case, resnet_brute):
    f, params, stats, x1, _, _ = resnet_case
    got = empirical_ntk(f, params, x1, None, (-1,), None, batch_stats=stats)
    assert got.shape == (4, 4)
    assert rel_err(got, traced(resnet_brute["11"])) <= RTOL_F32


def test_resnet_x2_different_from_x1(resnet_case, resnet_brute):
    f, params, stats, x1, x2, _ = resnet_case
    full = empirical_ntk(f, params, x1, x2, (), None, batch_stats=stats)
    tr = empirical_ntk(f, params, x1, x2, (-1,), None, batch_stats=stats)
    want = resnet_brute["12"]
    assert full.shape == (4, 4, K_RES, K_RES) and tr.shape == (4, 4)
    assert rel_err(full, want) <= RTOL_F32
    assert rel_err(tr, traced(want)) <= RTOL_F32
    # and x1 != x2 really gives a different kernel from x1 with itself
    assert rel_err(want, resnet_brute["11"]) > 1e-2


@pytest.mark.parametrize("trace_axes", [(), (-1,)])
@pytest.mark.parametrize("with_x2", [False, True])
def test_resnet_block_size_smaller_than_n(resnet_case, resnet_brute, trace_axes, with_x2):
    f, params, stats, x1, x2, _ = resnet_case
    other = x2 if with_x2 else None
    blocked = empirical_ntk(f, params, x1, other, trace_axes, 2, batch_stats=stats)
    whole = empirical_ntk(f, params, x1, other, trace_axes, None, batch_stats=stats)
    assert blocked.shape == whole.shape
    assert rel_err(blocked, whole) <= 1e-5
    want = resnet_brute["12" if with_x2 else "11"]
    assert rel_err(blocked, traced(want) if trace_axes else want) <= RTOL_F32


def test_resnet_kernel_uses_the_passed_batch_stats(resnet_case, resnet_brute):
    # other running statistics give another kernel, again equal to its own brute force
    f, params, stats, x1, _, jac_fn = resnet_case
    other = jax.tree.map(lambda s: 0.5 * s + 0.7, stats)
    got = empirical_ntk(f, params, x1, None, (), None, batch_stats=other)
    assert rel_err(got, resnet_brute["11"]) > 100 * RTOL_F32
    assert (
        rel_err(got, brute_force_full(jac_fn, params, x1, x1, K_RES, batch_stats=other)) <= RTOL_F32
    )
