"""Linearised and Taylor-expanded networks, with neural-tangents' call shapes.

``linearize(f, params)`` and ``taylor_expand(f, params, degree)`` return a function with
``f``'s own signature ``(params, *args, **kwargs)``. Both are built from Jacobian-vector
products (``jax.jvp``): no Jacobian is ever materialised. Batch norm: pass a ``f`` that
applies the network in evaluation mode with the statistics of the expansion point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from ntkpaper import models

PyTree = Any


def _sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda x, y: x - y, a, b)


def taylor_expand(f: Callable, params: PyTree, degree: int) -> Callable:
    """Order-``degree`` Taylor model of ``f`` in its parameters around ``params`` = w~.

    f_T(w, x) = sum_{k=0}^{degree} (1/k!) D^k f_{w~}(x)[w - w~, ..., w - w~],
    the k-th directional derivative taken by k nested ``jax.jvp``s along w - w~
    (Fort et al. 2020, section 7 and appendix D.4; Bai et al. 2020, "Taylorized training").

    Args:
      f: ``f(params, *args, **kwargs) -> array``.
      params: the expansion point w~ (a pytree).
      degree: 0, 1 (``linearize``), 2, ...
    Returns:
      ``f_T(params, *args, **kwargs)`` with ``f``'s output shape.
    """
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")

    def f_taylor(p: PyTree, *args, **kwargs):
        dw = _sub(p, params)
        g = lambda w: f(w, *args, **kwargs)  # noqa: E731
        derivative = g  # D^k g (w)[dw, ..., dw] as a function of w
        total = g(params)
        for k in range(1, degree + 1):
            derivative = (lambda d: lambda w: jax.jvp(d, (w,), (dw,))[1])(derivative)
            total = total + derivative(params) / math.factorial(k)
        return total

    return f_taylor


def linearize(f: Callable, params: PyTree) -> Callable:
    """First-order Taylor model: f_lin(w, x) = f(w~, x) + J_{w~}(x) (w - w~).

    Fort et al. 2020, section 2 (linearised training from a snapshot w~); Lee et al. 2019.
    One ``jax.jvp`` per call: J (w - w~) without forming J. Returns
    ``f_lin(params, *args, **kwargs)`` with ``f``'s output shape.
    """

    def f_lin(p: PyTree, *args, **kwargs):
        out, tangent = jax.jvp(lambda w: f(w, *args, **kwargs), (params,), (_sub(p, params),))
        return out + tangent

    return f_lin


def model_taylor(model, degree: int) -> Callable:
    """``g(params, x, anchor, batch_stats) -> (n, K)``: the Taylor model of a Flax network.

    Expanded around ``anchor`` (the parent's weights w~ at t~) with batch norm in evaluation
    mode and the statistics of w~ (``batch_stats``), as in docs/measurements.md.
    """

    f = models.logits(model)

    def g(params, x, anchor, batch_stats):
        return taylor_expand(f, anchor, degree)(params, x, batch_stats)

    return g
