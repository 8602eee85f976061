"""Loss-landscape geometry (Fort et al. 2020, section 4, figures 5, 10, 11).

The plane through three networks (the spawn point w0 and two children w1, w2), evaluated as
one batched program over its grid: in weight space, in function space (where the plane's
image is a curved manifold), and on the tangent planes (linearised models) at a point of it.
Also the t-SNE embedding of figure 11 (the window smoothing of figure 10 is
``views.smooth``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ntkpaper import models
from ntkpaper.linearize import linearize

PyTree = Any


def grid_batch() -> int:
    """Grid points per vmapped batch of ``plane_errors``: 1 on a CPU, where XLA runs a batch
    of differently weighted convolutions slower than one after another (benchmarks/
    bench_landscape.py: 16 points in 3.6 s one by one, 6.3 s vmapped 16 at a time), 32 on an
    accelerator. The numbers do not depend on it."""
    return 1 if jax.default_backend() == "cpu" else 32


@dataclass(frozen=True)
class Plane:
    """The affine plane w(a, b) = w0 + a (w1 - w0) + b (w2 - w0) in weight space, with
    orthonormal coordinates (x, y): e1 along w1 - w0, e2 the rest of w2 - w0.

    ``corners``: (x, y) of w0, w1, w2, i.e. (0, 0), (|w1 - w0|, 0), (u2 . e1, u2 . e2).
    """

    corners: np.ndarray  # (3, 2)

    def affine(self, xy: np.ndarray) -> np.ndarray:
        """(a, b) of points (G, 2) given in orthonormal coordinates: x e1 + y e2 = a u1 + b u2."""
        (_, _), (n1, _), (p, q) = self.corners
        b = xy[:, 1] / q
        return np.stack([(xy[:, 0] - b * p) / n1, b], axis=1)


def plane(w0: PyTree, w1: PyTree, w2: PyTree) -> Plane:
    """The plane through three parameter pytrees (Gram-Schmidt on u1 = w1 - w0, u2 = w2 - w0)."""
    f0, f1, f2 = (np.asarray(ravel_pytree(w)[0], np.float64) for w in (w0, w1, w2))
    u1, u2 = f1 - f0, f2 - f0
    n1 = np.linalg.norm(u1)
    p = u2 @ u1 / n1
    q = np.sqrt(max(u2 @ u2 - p**2, 0.0))
    if n1 == 0 or q == 0:
        raise ValueError("the three networks are collinear: they span no plane")
    return Plane(np.array([[0.0, 0.0], [n1, 0.0], [p, q]]))


def grid(corners: np.ndarray, resolution: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """``resolution`` x ``resolution`` points (x, y) covering the corners' bounding box,
    widened by ``margin`` times its extent on each side: axes (R,), (R,)."""
    lo, hi = corners.min(0), corners.max(0)
    pad = margin * (hi - lo)
    return (np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
            np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution))  # fmt: skip


def combine(trees: tuple[PyTree, PyTree, PyTree], ab: jax.Array) -> PyTree:
    """t0 + a (t1 - t0) + b (t2 - t0), leaf by leaf."""
    a, b = ab[0], ab[1]
    return jax.tree.map(lambda t0, t1, t2: t0 + a * (t1 - t0) + b * (t2 - t0), *trees)


def _batches(x: jax.Array, size: int) -> jax.Array:
    """(n, ...) -> (n // size, size, ...) whole batches; all of ``x`` if it is one short batch."""
    n = (x.shape[0] // size) * size
    if n == 0:
        return x[None]
    return x[:n].reshape(n // size, size, *x.shape[1:])


def batch_stats(model: nn.Module, params: PyTree, stats: PyTree, bn_x: jax.Array) -> PyTree:
    """Batch-norm statistics recomputed on the batches ``bn_x`` (B, n, ...): the mean over
    batches of each batch's statistics, as ``metrics.recompute_batch_stats``; a pure function
    (it runs inside the batched grid program)."""
    if not jax.tree.leaves(stats):
        return stats
    fresh = model.clone(bn_momentum=0.0)

    def one(x):
        return fresh.apply({"params": params, "batch_stats": stats}, x, train=True,
                           mutable=["batch_stats"])[1]["batch_stats"]  # fmt: skip

    return jax.tree.map(lambda s: jnp.mean(s, axis=0), jax.lax.map(one, bn_x))


def probabilities(f, params: PyTree, stats: PyTree, x: jax.Array) -> jax.Array:
    """softmax f(params, x) on the batches ``x`` (B, n, ...) -> (B n, K)."""
    logits = jax.lax.map(lambda xb: f(params, xb, stats), x)
    return jax.nn.softmax(logits.reshape(-1, logits.shape[-1]))


def plane_errors(
    model: nn.Module,
    variables: tuple[dict, dict, dict],
    ab: np.ndarray,
    x: jax.Array,
    y: jax.Array,
    bn_x: jax.Array,
    batch_size: int,
    bn_stats: str = "recompute",
    chunk: int | None = None,
    project=None,
) -> dict[str, np.ndarray]:
    """Test error R(w(a, b)) at every grid point ``ab`` (G, 2), as one program batched over
    the grid (``jax.lax.map`` over chunks of ``chunk`` vmapped points, ``grid_batch()`` by
    default).

    Batch norm: statistics recomputed on ``bn_x`` at every point (``recompute``) or the
    corners' stored ones combined like the weights (``running``). ``project``: a function of
    the flattened probabilities (n K,) returning a vector per point (the function-space
    coordinates of ``function_plane``). Returns ``error`` (G,) and ``projection`` (G, 3), NaN
    without ``project``.
    """
    f = models.logits(model)
    params = tuple(v["params"] for v in variables)
    stats = tuple(v["batch_stats"] for v in variables)
    xb, bnb = _batches(x, batch_size), _batches(bn_x, batch_size)
    yb = y[: xb.shape[0] * xb.shape[1]]

    def point(c):
        p, s = combine(params, c), combine(stats, c)
        if bn_stats == "recompute":
            s = batch_stats(model, p, s, bnb)
        probs = probabilities(f, p, s, xb)
        err = jnp.mean(jnp.argmax(probs, -1) != yb)
        return err, (project(probs.ravel()) if project else jnp.full(3, jnp.nan))

    chunk = chunk or grid_batch()
    err, proj = jax.jit(lambda g: jax.lax.map(point, g, batch_size=chunk))(
        jnp.asarray(ab, jnp.float32)
    )
    return {"error": np.asarray(err), "projection": np.asarray(proj)}


def tangent_logits(
    model: nn.Module,
    variables: tuple[dict, dict, dict],
    anchor: tuple[float, float],
    ab: np.ndarray,
    x: jax.Array,
    batch_size: int,
    batch_stats: PyTree,
) -> jax.Array:
    """The tangent plane at the plane's point ``anchor`` = (a~, b~), with ``batch_stats`` (its
    statistics as measured): f_lin(w(a, b); x) = f(w~; x) + J_{w~}(x) (w(a, b) - w~) at every
    ``ab`` (G, 2). The model is affine in w and w(a, b) in (a, b), so
    f_lin = f(w~) + (a - a~) J u1 + (b - b~) J u2 with u1 = w1 - w0, u2 = w2 - w0: two
    Jacobian-vector products (``linearize``), then the whole grid at once. Logits (G, n, K)."""
    f = models.logits(model)
    params = tuple(v["params"] for v in variables)
    w = combine(params, jnp.asarray(anchor, jnp.float32))
    xb = _batches(x, batch_size)
    f_lin = linearize(lambda p, b: f(p, b, batch_stats), w)
    base = jax.lax.map(lambda b: f(w, b, batch_stats), xb)
    ju = [
        jax.lax.map(lambda b, d=d: f_lin(jax.tree.map(jnp.add, w, d), b), xb) - base
        for d in (jax.tree.map(jnp.subtract, params[i], params[0]) for i in (1, 2))
    ]
    da = jnp.asarray(ab - np.asarray(anchor), jnp.float32)
    out = base[None] + da[:, 0, None, None, None] * ju[0] + da[:, 1, None, None, None] * ju[1]
    return out.reshape(len(ab), -1, out.shape[-1])


def tangent_errors(model, variables, anchor, ab, x, y, batch_size, batch_stats) -> np.ndarray:
    """Test error on the tangent plane at the plane's point ``anchor`` at every ``ab`` (Fort
    et al. figure 5, right columns): (G,)."""
    logits = tangent_logits(model, variables, anchor, ab, x, batch_size, batch_stats)
    y = y[: logits.shape[1]]
    return np.asarray(jnp.mean(jnp.argmax(logits, -1) != y, axis=1))


def function_plane(p0: jax.Array, p1: jax.Array, p2: jax.Array, n: int):
    """The plane in function space through three flattened probability vectors (n inputs
    times K classes), and a projection onto it: phi(p) = (x, y, r) / sqrt(n), (x, y) the
    coordinates of p - p0 in the orthonormal basis of (p1 - p0, p2 - p0), r the norm of what
    lies off that plane (the image of the weight-space plane is curved). Divided by sqrt(n):
    root mean square over inputs of the per-input distances."""
    u1, u2 = p1 - p0, p2 - p0
    e1 = u1 / jnp.linalg.norm(u1)
    v = u2 - (u2 @ e1) * e1
    e2 = v / jnp.linalg.norm(v)

    def project(p):
        d = p - p0
        x, y = d @ e1, d @ e2
        r = jnp.linalg.norm(d - x * e1 - y * e2)
        return jnp.stack([x, y, r]) / np.sqrt(n)

    return project


def embed(points: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """t-SNE (scikit-learn, van der Maaten & Hinton 2008) of points (n, d) -> (n, 2), all
    embedded together (Fort et al. figure 11); PCA initialisation, fixed seed."""
    from sklearn.manifold import TSNE

    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(np.asarray(points, np.float64))
