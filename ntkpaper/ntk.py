"""Empirical neural tangent kernel: the only NTK in the code base, for both papers.

Call shapes follow neural-tangents (``empirical_ntk_fn``): ``f(params, x) -> (n, K)``;
the kernel is taken with respect to ``params`` only (close batch-norm statistics and other
collections over in ``f``, evaluation mode).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


@partial(jax.jit, static_argnums=0)
def _jacobian(f: Callable, params: PyTree, x: jax.Array, kwargs: dict) -> jax.Array:
    """Per-example Jacobians, flattened: (n, K, d), d the number of parameters.

    Each example's reverse pass sees that example alone (``vmap`` over examples of
    ``jacrev``), so the cost is n K backward passes of one example.
    """

    def g(p, xi):  # one example: (...) -> (K,)
        return f(p, xi[None], **kwargs)[0]

    def one(xi):
        jac = jax.jacrev(g)(params, xi)  # leaves (K, *w.shape)
        return jnp.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree.leaves(jac)], axis=1)

    return jax.vmap(one)(x)


@partial(jax.jit, static_argnums=2)
def _contract(j1: jax.Array, j2: jax.Array, trace: bool) -> jax.Array:
    """J1 J2^T from (n1, K, d) and (n2, K, d): (n1, n2) averaged over logits, or (n1, n2, K, K).

    Both forms are one matrix product: traced = (n1, K d) (K d, n2) / K.
    """
    (n1, k, d), n2 = j1.shape, j2.shape[0]
    if trace:
        return j1.reshape(n1, k * d) @ j2.reshape(n2, k * d).T / k
    full = j1.reshape(n1 * k, d) @ j2.reshape(n2 * k, d).T
    return full.reshape(n1, k, n2, k).transpose(0, 2, 1, 3)


def empirical_ntk(
    f: Callable,
    params: PyTree,
    x1: jax.Array,
    x2: jax.Array | None = None,
    trace_axes: Sequence[int] = (-1,),
    block_size: int | None = None,
    **apply_kwargs,
) -> jax.Array:
    """Empirical NTK Gram matrix (Fort et al. 2020, eq. 4): Theta(x, x') = J(x) J(x')^T.

    J(x) in R^{K x d} is the Jacobian of the K logits with respect to the d parameters.
    With ``trace_axes=(-1,)`` (default) the logit axis is traced and averaged,
    Theta(x, x') = (1/K) sum_k J_k(x) . J_k(x'); with ``trace_axes=()`` the full K x K
    blocks are kept.

    The Jacobians are contracted block by block, ``block_size`` examples of ``x1`` against
    ``block_size`` of ``x2``, so a dense Jacobian of the whole probe set never exists
    (memory ~ 2 block_size K d floats); ``None`` takes all examples in one block.

    Args:
      f: ``f(params, x, **apply_kwargs) -> (n, K)``; ``apply_kwargs`` (e.g. batch-norm
        statistics) are passed through and not differentiated, as in neural-tangents.
      params: the pytree the kernel differentiates.
      x1: (n1, ...) inputs; x2: (n2, ...) inputs, or None for ``x1``.
    Returns:
      (n1, n2) traced, or (n1, n2, K, K) full.
    """
    if tuple(trace_axes) not in ((), (-1,)):
        raise ValueError(f"trace_axes must be () or (-1,), got {trace_axes}")
    trace = bool(trace_axes)
    same = x2 is None
    x2 = x1 if same else x2
    b = block_size or max(x1.shape[0], x2.shape[0])
    rows = []
    for i in range(0, x1.shape[0], b):
        ji = _jacobian(f, params, x1[i : i + b], apply_kwargs)
        row = []
        for j in range(0, x2.shape[0], b):
            jj = ji if same and i == j else _jacobian(f, params, x2[j : j + b], apply_kwargs)
            row.append(_contract(ji, jj, trace))
        rows.append(jnp.concatenate(row, axis=1))
    return jnp.concatenate(rows, axis=0)
