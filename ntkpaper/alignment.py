"""Kernel-target alignment, kernel regression, partial whitening and label coding.

Atanasov, Bordelon, Pehlevan 2022 ("The Silent Alignment Effect"): alignment (section 2),
the kernel predictor f = f_0 + k^T K^+ (y - f_0) (appendix A), partial whitening X_gamma
(section 5). Pure functions of arrays; no training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def kernel_alignment(k: jax.Array, y: jax.Array) -> jax.Array:
    """Uncentred kernel-target alignment (section 2; Cortes et al. 2012, not centred).

    A = y^T K y / (||K||_F ||y||^2) for one output; for Y (P, C),
    A = <K, Y Y^T>_F / (||K||_F ||Y Y^T||_F) (the multi-class form is ours), which is the
    same number for C = 1. Computed as sum(Y * K Y) / (||K||_F ||Y^T Y||_F).

    Args:
      k: (P, P) kernel Gram matrix; y: (P,) or (P, C) targets.
    Returns:
      scalar in [-1, 1]; 1 for K proportional to Y Y^T, 0 for K orthogonal to it.
    """
    y = y.reshape(y.shape[0], -1)
    return jnp.sum(y * (k @ y)) / (jnp.linalg.norm(k) * jnp.linalg.norm(y.T @ y))


def kernel_regression(
    k_train: jax.Array,
    k_test_train: jax.Array,
    y: jax.Array,
    f0_train: jax.Array | None = None,
    f0_test: jax.Array | None = None,
    ridge: float = 0.0,
) -> jax.Array:
    """Kernel predictor f(x) = f_0(x) + k(x)^T K^+ (y - f_0) (appendix A, eq. 14).

    K^+ is the pseudo-inverse when ``ridge == 0`` (``jnp.linalg.pinv``, hermitian, default
    cutoff: singular values below 10 P eps(dtype) times the largest are dropped), else
    (K + ridge I)^{-1}. With the linear kernel X X^T this is the minimum-norm interpolator
    for D > P (appendix F, eq. 49) and ordinary least squares for P >= D.

    Args:
      k_train: (P, P) K(x_mu, x_nu); k_test_train: (n, P) K(x, x_mu); y: (P,) or (P, C).
      f0_train: f_0 on the training inputs, shaped like y (None: 0); f0_test: (n,) or
        (n, C) (None: 0).
    Returns:
      (n,) or (n, C), shaped like y.
    """
    r = y if f0_train is None else y - f0_train.reshape(y.shape)
    if ridge == 0.0:
        alpha = jnp.linalg.pinv(k_train, hermitian=True) @ r
    else:
        alpha = jnp.linalg.solve(k_train + ridge * jnp.eye(k_train.shape[0], dtype=r.dtype), r)
    f = k_test_train @ alpha
    return f if f0_test is None else f + f0_test.reshape(f.shape)


def whiten(x_train: np.ndarray, x_test: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Partial whitening (section 5): X = U S V^T -> c U S^g V^T, test x -> c x V S^(g-1) V^T.

    g = gamma. X (P, D) holds the training inputs flattened, examples by features, not
    centred. gamma = 0 is fully whitened, gamma = 1 the raw data. Singular values at or below
    max(P, D) eps(dtype) s_max (numpy's ``matrix_rank`` tolerance) are dropped, leaving rank
    r; test points lose their component outside the training span (also at gamma = 1).
    The one constant c = sqrt(P r / sum_i s_i^(2 gamma)) makes ||X_gamma||_F^2 = P r, so at
    gamma = 0, c = sqrt(P) and X_0^T X_0 / P = V V^T, the projector on the span (I when
    r = D): the covariance I the theory assumes (section 4.2), not I / P. This sets the time
    axis. A training point sent through the test map lands on its row of X_gamma.

    Args:
      x_train: (P, ...) inputs; x_test: (n, ...) inputs; gamma in [0, 1].
    Returns:
      (x_train_w (P, D), x_test_w (n, D)), float (float32 unless the input is float64).
    """
    dtype = np.result_type(x_train.dtype, np.float32)
    x = np.asarray(x_train, np.float64).reshape(x_train.shape[0], -1)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    keep = s > s[0] * max(x.shape) * np.finfo(dtype).eps
    u, s, vt = u[:, keep], s[keep], vt[keep]
    c = np.sqrt(x.shape[0] * s.size / np.sum(s ** (2 * gamma)))
    train = c * (u * s**gamma) @ vt
    xt = np.asarray(x_test, np.float64).reshape(x_test.shape[0], -1)
    test = c * ((xt @ vt.T) * s ** (gamma - 1)) @ vt
    return train.astype(dtype), test.astype(dtype)


def two_class(
    x: np.ndarray, y: np.ndarray, classes: tuple[int, int] = (0, 1), n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` examples (in order) of two classes, targets +1 (classes[0]) and -1.

    Args:
      x: (M, ...) inputs; y: (M,) integer labels.
    Returns:
      (x (n, ...), targets (n,) float32 in {+1, -1}).
    """
    idx = np.flatnonzero(np.isin(y, classes))[:n]
    return x[idx], np.where(y[idx] == classes[0], 1.0, -1.0).astype(np.float32)


def one_hot_targets(y: np.ndarray, c: int) -> np.ndarray:
    """Multi-class targets, one-hot minus 1/C (ours: the paper is silent on the coding).

    Each row sums to zero, as the +1/-1 two-class targets do for balanced classes.

    Args:
      y: (P,) integer labels in [0, C).
    Returns:
      (P, C) float32: 1 - 1/C at the label, -1/C elsewhere.
    """
    return (np.eye(c, dtype=np.float32)[y] - 1.0 / c).astype(np.float32)
