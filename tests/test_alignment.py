"""Tests for ntkpaper.alignment against closed forms and brute-force loops.

Definitions: Atanasov et al. 2022, section 2 (alignment), appendix A and F (kernel
regression, minimum-norm interpolator), section 5 (partial whitening). Float64 throughout;
tolerances 1e-10 relative unless stated.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ntkpaper.alignment import (
    kernel_alignment,
    kernel_regression,
    one_hot_targets,
    two_class,
    whiten,
)

TOL = 1e-10


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_alignment_of_target_kernel_is_one_and_orthogonal_is_zero():
    rng = np.random.default_rng(0)
    y = rng.normal(size=12)
    assert abs(kernel_alignment(np.outer(y, y), y) - 1) < TOL
    assert abs(kernel_alignment(np.outer(y, y), y[:, None]) - 1) < TOL
    v = rng.normal(size=12)
    v -= (v @ y) / (y @ y) * y  # v orthogonal to y
    assert abs(kernel_alignment(np.outer(v, v), y)) < TOL
    y3 = rng.normal(size=(12, 3))
    assert abs(kernel_alignment(y3 @ y3.T, y3) - 1) < TOL


def test_alignment_is_scale_invariant():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 10))
    k, y = a @ a.T, rng.normal(size=10)
    base = float(kernel_alignment(k, y))
    assert abs(kernel_alignment(7.5 * k, -0.3 * y) - base) < TOL


def test_multiclass_alignment_matches_brute_force_loop():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(8, 8))
    k, y = a @ a.T, rng.normal(size=(8, 3))
    num = kk = yy = 0.0
    for i in range(8):
        for j in range(8):
            t = sum(y[i, c] * y[j, c] for c in range(3))  # (Y Y^T)_ij
            num, kk, yy = num + k[i, j] * t, kk + k[i, j] ** 2, yy + t**2
    assert abs(kernel_alignment(k, y) - num / np.sqrt(kk * yy)) < TOL


@pytest.mark.parametrize("p, d", [(6, 15), (20, 5)])
def test_linear_kernel_regression_is_min_norm_or_ols(p, d):
    """K = X X^T: D > P gives x . pinv(X) y (eq. 49), P >= D gives OLS; both fit y if D > P."""
    rng = np.random.default_rng(3)
    x, xt, y = rng.normal(size=(p, d)), rng.normal(size=(4, d)), rng.normal(size=p)
    got = kernel_regression(x @ x.T, xt @ x.T, y)
    if d > p:
        want = xt @ (np.linalg.pinv(x) @ y)
        assert np.allclose(kernel_regression(x @ x.T, x @ x.T, y), y, atol=1e-9)
    else:
        want = xt @ np.linalg.lstsq(x, y, rcond=None)[0]
    assert np.allclose(got, want, rtol=1e-8, atol=1e-9)


def test_kernel_regression_with_f0_is_the_interpolator_nearest_f0():
    """f0 = x . w0: the predictor is x . w*, w* = argmin |w - w0| s.t. X w = y."""
    rng = np.random.default_rng(4)
    x, xt = rng.normal(size=(5, 12)), rng.normal(size=(3, 12))
    y, w0 = rng.normal(size=(5, 2)), rng.normal(size=(12, 2))
    got = kernel_regression(x @ x.T, xt @ x.T, y, x @ w0, xt @ w0)
    w_star = w0 + np.linalg.lstsq(x, y - x @ w0, rcond=None)[0]  # min-norm correction
    assert np.allclose(got, xt @ w_star, atol=1e-9)
    fit = kernel_regression(x @ x.T, x @ x.T, y, x @ w0, x @ w0)
    assert np.allclose(fit, y, atol=1e-9)
    ridge = kernel_regression(x @ x.T, xt @ x.T, y[:, 0], ridge=0.5)
    assert np.allclose(ridge, xt @ x.T @ np.linalg.solve(x @ x.T + 0.5 * np.eye(5), y[:, 0]))


def test_whiten_gamma_zero_has_identity_covariance():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6)) * np.array([10, 3, 1, 0.5, 0.1, 0.01])  # P > D
    xw, _ = whiten(x, x[:2], 0.0)
    assert np.allclose(xw.T @ xw / 40, np.eye(6), atol=1e-10)
    # D > P: X^T X / P is the projector on the span, and X X^T / P = I
    x = rng.normal(size=(5, 9))
    xw, _ = whiten(x, x[:2], 0.0)
    proj = xw.T @ xw / 5
    assert np.allclose(proj @ proj, proj, atol=1e-10) and abs(np.trace(proj) - 5) < 1e-10
    assert np.allclose(xw @ xw.T / 5, np.eye(5), atol=1e-10)
    # rank-deficient input (a repeated column): the null direction is dropped
    x = rng.normal(size=(30, 4))
    xw, _ = whiten(np.concatenate([x, x[:, :1]], 1), x[:2, :1].repeat(5, 1), 0.0)
    proj = xw.T @ xw / 30
    assert np.allclose(proj @ proj, proj, atol=1e-10) and abs(np.trace(proj) - 4) < 1e-10


def test_whiten_gamma_one_is_raw_data_times_c_and_test_map_matches_training():
    rng = np.random.default_rng(6)
    x, xt = rng.normal(size=(30, 7)) * np.arange(1, 8), rng.normal(size=(4, 7))
    xw, xtw = whiten(x, xt, 1.0)
    c = np.sqrt(30 * 7 / np.sum(x**2))  # ||X_1||_F^2 = P rank
    assert np.allclose(xw, c * x, atol=1e-10) and np.allclose(xtw, c * xt, atol=1e-10)
    for gamma in (0.0, 0.3, 1.0):
        xw, xtw = whiten(x, x, gamma)
        assert np.allclose(xtw, xw, atol=1e-10)
        assert abs(np.sum(xw**2) - 30 * 7) < 1e-8
    images = rng.integers(0, 255, size=(10, 2, 2, 3), dtype=np.uint8)
    xw, xtw = whiten(images, images[:3], 0.5)
    assert xw.shape == (10, 12) and xtw.shape == (3, 12) and xw.dtype == np.float32


def test_two_class_and_one_hot():
    x, y = np.arange(10)[:, None], np.array([3, 1, 0, 1, 2, 3, 1, 0, 3, 2])
    xs, t = two_class(x, y, classes=(3, 1), n=4)
    assert xs.ravel().tolist() == [0, 1, 3, 5] and t.tolist() == [1, -1, -1, 1]
    onehot = one_hot_targets(np.array([0, 2]), 4)
    assert np.allclose(onehot, [[0.75, -0.25, -0.25, -0.25], [-0.25, -0.25, 0.75, -0.25]])
