"""The top eigenvalue of the training loss's Hessian (Fort et al. 2020, appendix B.3).

Hessian-vector products forward-over-reverse (``jax.jvp`` of ``jax.grad``), never a dense
Hessian; the largest eigenvalue by the Lanczos iteration with full reorthogonalisation (the
largest Ritz value of the tridiagonal matrix after ``iters`` products).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any


def hvp(loss: Callable, params: PyTree, v: PyTree, *args) -> PyTree:
    """H v, H the Hessian of ``loss(params, *args)`` in ``params``: d/de grad L(params + e v)."""
    return jax.jvp(lambda p: jax.grad(loss)(p, *args), (params,), (v,))[1]


_hvp = jax.jit(hvp, static_argnums=0)  # one compiled program per loss function


def top_eigenvalue(loss: Callable, params: PyTree, *args, iters: int = 30, seed: int = 0) -> float:
    """lambda_max of the Hessian of ``loss(params, *args)`` by ``iters`` Lanczos steps.

    Lanczos builds an orthonormal basis q_1..q_m of the Krylov space of H from a random start
    (``seed``) and the tridiagonal T = Q^T H Q; T's largest eigenvalue converges to
    lambda_max from below, exactly once m reaches the number of distinct eigenvalues.
    ``iters`` Hessian-vector products, each about the cost of two gradients. Pass the same
    ``loss`` object each time (data through ``args``) to reuse the compiled product.
    """
    flat, unravel = ravel_pytree(params)

    def product(v: np.ndarray) -> np.ndarray:
        hv = _hvp(loss, params, unravel(jnp.asarray(v, flat.dtype)), *args)
        return np.asarray(ravel_pytree(hv)[0], np.float64)

    rng = np.random.default_rng(seed)
    q = rng.normal(size=flat.shape).astype(np.float64)
    basis, alphas, betas = [q / np.linalg.norm(q)], [], []
    for i in range(min(iters, flat.size)):
        w = product(basis[-1])
        alphas.append(float(w @ basis[-1]))
        for b in basis:  # full reorthogonalisation: stable in float32 products
            w -= (w @ b) * b
        beta = float(np.linalg.norm(w))
        if beta < 1e-10 * max(abs(a) for a in alphas) or i == iters - 1:
            break
        betas.append(beta)
        basis.append(w / beta)
    off = betas[: len(alphas) - 1]
    t = np.diag(alphas) + np.diag(off, 1) + np.diag(off, -1)
    return float(np.linalg.eigvalsh(t)[-1])


def escape_threshold(lr: float, lambda_max: float) -> float:
    """eta lambda_max - 2: positive when a gradient step of size eta along the top eigenvector
    can leave a quadratic basin (eta g^T H g > 2 g^T g possible)."""
    return lr * lambda_max - 2.0
