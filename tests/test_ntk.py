"""Tests for ntkpaper.ntk.empirical_ntk against closed forms and a dense brute-force Jacobian.

Definitions: ../shared/METRICS.md, "Empirical neural tangent kernel". The full kernel is
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


# --------------------------------------------------------------------------- tiny ResNet


K_RES = 3


def logits_with_stats(model):
    """As ntkpaper.runs.logits_with_stats: f(params, x, batch_stats), evaluation mode."""
    return lambda params, x, batch_stats: model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=False)


@pytest.fixture(scope="module")
def resnet_case():
    model = models.ResNet(num_classes=K_RES, depth=8, width=0.25)
    rng = np.random.default_rng(1)
    x1 = jnp.asarray(rng.normal(size=(5, 8, 8, 1)), jnp.float32)
    x2 = jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32)
    v = model.init(jax.random.PRNGKey(0), x1, train=False)
    # non-trivial parameters (BN scale/bias away from 1/0) and running statistics
    # (away from 0/1), so that using the wrong statistics or train mode would show
    leaves, tree = jax.tree.flatten(v["params"])
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(kk, p.shape)
                                       for p, kk in zip(leaves, keys)])
    stats = jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(0.5, 2.0, s.shape), jnp.float32), v["batch_stats"])
    stats = jax.tree_util.tree_map_with_path(
        lambda path, s: s - 1.25 if path[-1].key == "mean" else s, stats)
    return model, params, stats, x1, x2


def brute_force_full(model, params, stats, x1, x2) -> np.ndarray:
    """Dense Jacobian of all n*K logits w.r.t. the raveled params; J1 J2^T reshaped."""
    flat, unravel = ravel_pytree(params)

    def jac(x):
        g = lambda w: model.apply({"params": unravel(w), "batch_stats": stats}, x,  # noqa: E731
                                  train=False).reshape(-1)
        return np.asarray(jax.jacrev(g)(flat), np.float64)  # (n K, d)

    j1, j2 = jac(x1), jac(x2)
    n1, n2 = x1.shape[0], x2.shape[0]
    full = j1 @ j2.T  # (n1 K, n2 K)
    return full.reshape(n1, K_RES, n2, K_RES).transpose(0, 2, 1, 3)


@pytest.fixture(scope="module")
def resnet_brute(resnet_case):
    model, params, stats, x1, x2 = resnet_case
    return (brute_force_full(model, params, stats, x1, x1),
            brute_force_full(model, params, stats, x1, x2))


def test_resnet_brute_force_is_sane(resnet_case, resnet_brute):
    # guards the reference itself: symmetric PSD Gram matrix, non-trivial size
    full11, _ = resnet_brute
    n = full11.shape[0]
    mat = full11.transpose(0, 2, 1, 3).reshape(n * K_RES, n * K_RES)
    assert np.allclose(mat, mat.T, rtol=1e-5, atol=1e-6 * np.abs(mat).max())
    assert np.linalg.eigvalsh(mat).min() >= -1e-5 * np.abs(mat).max()
    assert np.abs(mat).max() > 0


def test_resnet_full_matches_brute_force(resnet_case, resnet_brute):
    model, params, stats, x1, _ = resnet_case
    f = logits_with_stats(model)
    got = empirical_ntk(f, params, x1, None, (), None, batch_stats=stats)
    assert got.shape == (5, 5, K_RES, K_RES)
    assert rel_err(got, resnet_brute[0]) <= RTOL_F32


def test_resnet_traced_matches_brute_force(resnet_case, resnet_brute):
    model, params, stats, x1, _ = resnet_case
    f = logits_with_stats(model)
    got = empirical_ntk(f, params, x1, None, (-1,), None, batch_stats=stats)
    want = np.trace(resnet_brute[0], axis1=2, axis2=3) / K_RES
    assert got.shape == (5, 5)
    assert rel_err(got, want) <= RTOL_F32


def test_resnet_kernel_uses_the_passed_batch_stats(resnet_case, resnet_brute):
    # the stats passed as a keyword must be the ones used: a kernel with default
    # (init) statistics differs from the brute force with the perturbed ones
    model, params, stats, x1, _ = resnet_case
    f = logits_with_stats(model)
    other = jax.tree_util.tree_map_with_path(
        lambda path, s: jnp.zeros_like(s) if path[-1].key == "mean" else jnp.ones_like(s), stats)
    got = empirical_ntk(f, params, x1, None, (), None, batch_stats=other)
    assert rel_err(got, resnet_brute[0]) > 10 * RTOL_F32
    assert rel_err(got, brute_force_full(model, params, other, x1, x1)) <= RTOL_F32


def test_resnet_x2_different_from_x1(resnet_case, resnet_brute):
    model, params, stats, x1, x2 = resnet_case
    f = logits_with_stats(model)
    full = empirical_ntk(f, params, x1, x2, (), None, batch_stats=stats)
    traced = empirical_ntk(f, params, x1, x2, (-1,), None, batch_stats=stats)
    want = resnet_brute[1]
    assert full.shape == (5, 4, K_RES, K_RES) and traced.shape == (5, 4)
    assert rel_err(full, want) <= RTOL_F32
    assert rel_err(traced, np.trace(want, axis1=2, axis2=3) / K_RES) <= RTOL_F32


@pytest.mark.parametrize("trace_axes", [(), (-1,)])
@pytest.mark.parametrize("with_x2", [False, True])
def test_resnet_block_size_smaller_than_n(resnet_case, resnet_brute, trace_axes, with_x2):
    # n = 5 with block_size 2: blocks of 2, 2, 1 (x2: 4 = 2 + 2) must tile the whole matrix
    model, params, stats, x1, x2 = resnet_case
    f = logits_with_stats(model)
    other = x2 if with_x2 else None
    blocked = empirical_ntk(f, params, x1, other, trace_axes, 2, batch_stats=stats)
    whole = empirical_ntk(f, params, x1, other, trace_axes, None, batch_stats=stats)
    assert blocked.shape == whole.shape
    assert rel_err(blocked, whole) <= 1e-5
    want = resnet_brute[1 if with_x2 else 0]
    if trace_axes:
        want = np.trace(want, axis1=2, axis2=3) / K_RES
    assert rel_err(blocked, want) <= RTOL_F32
