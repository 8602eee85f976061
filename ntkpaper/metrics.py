"""Measurements of docs/measurements.md: errors, distances, kernel distance, error barrier.

Pure functions of arrays and parameter pytrees; no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ntkpaper import models

PyTree = Any


def error(logits: jax.Array, y: jax.Array) -> jax.Array:
    """R(w; S): fraction of examples whose arg-max logit is not the label. logits (n, K)."""
    return jnp.mean(jnp.argmax(logits, -1) != y)


def kernel_distance(k1: jax.Array, k2: jax.Array) -> jax.Array:
    """S(w, w') = 1 - <K, K'>_F / (||K||_F ||K'||_F) (Fort et al. 2020, section 2).

    0 for kernels equal up to scale, 1 for orthogonal ones. Any matching shapes.
    """
    a, b = k1.ravel(), k2.ravel()
    return 1.0 - jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def kernel_distance_matrix(kernels: jax.Array) -> jax.Array:
    """S between every pair of a stack of kernels (T, ...) -> (T, T)."""
    flat = kernels.reshape(kernels.shape[0], -1)
    flat = flat / jnp.linalg.norm(flat, axis=1, keepdims=True)
    return 1.0 - flat @ flat.T


def relu_patterns(model: nn.Module, variables: dict, x: jax.Array) -> jax.Array:
    """B_w(x)_{i,u} = 1[unit u > 0 on x_i] over every ReLU output: (n, U) bool.

    Units are all ReLU outputs of the network, every spatial position counting as a unit.
    Batch norm in evaluation mode.
    """
    _, state = model.apply(variables, x, train=False, mutable=["relu"])
    outs = jax.tree.leaves(state["relu"])
    return jnp.concatenate([o.reshape(x.shape[0], -1) > 0 for o in outs], axis=1)


def relu_distance(p1: jax.Array, p2: jax.Array) -> jax.Array:
    """Hamming(B_w, B_w') / number of entries; patterns of equal shape."""
    return jnp.mean(p1 != p2)


def relu_distance_matrix(patterns: jax.Array) -> jax.Array:
    """ReLU distance between every pair of a stack of patterns (T, n, U) -> (T, T)."""
    flat = patterns.reshape(patterns.shape[0], -1)
    return jnp.stack([jnp.mean(flat[i][None] != flat, axis=1) for i in range(flat.shape[0])])


def function_distance(logits1: jax.Array, logits2: jax.Array, y: jax.Array) -> jax.Array:
    """Normalised disagreement (Fort, Hu, Lakshminarayanan 2019).

    d = mean_i 1[argmax f(x_i) != argmax f'(x_i)] / Z,  Z = E + E' - E E' K / (K - 1),
    E, E' the two error rates on (x, y), K the number of classes. logits (n, K), y (n,).
    """
    k = logits1.shape[-1]
    p1, p2 = jnp.argmax(logits1, -1), jnp.argmax(logits2, -1)
    e1, e2 = jnp.mean(p1 != y), jnp.mean(p2 != y)
    z = e1 + e2 - e1 * e2 * k / (k - 1)
    disagreement = jnp.mean(p1 != p2)
    return jnp.where(disagreement == 0, 0.0, disagreement / jnp.where(z == 0, 1.0, z))


def weight_distance(w1: PyTree, w2: PyTree) -> tuple[jax.Array, jax.Array]:
    """||w - w'||_2 over the given parameters, and ||w - w'|| / ||w||."""
    diff = jnp.sqrt(
        sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(w1), jax.tree.leaves(w2)))
    )
    norm = jnp.sqrt(sum(jnp.sum(a**2) for a in jax.tree.leaves(w1)))
    return diff, diff / norm


def interpolate(w1: PyTree, w2: PyTree, a: float) -> PyTree:
    """w_a = a w + (1 - a) w'."""
    return jax.tree.map(lambda p, q: a * p + (1 - a) * q, w1, w2)


_stats_step = jax.jit(
    lambda model, variables, x: model.apply(variables, x, train=True, mutable=["batch_stats"])[1],
    static_argnums=0,
)


def recompute_batch_stats(
    model: nn.Module, params: PyTree, batch_stats: PyTree, x: jax.Array, batch_size: int
) -> PyTree:
    """Batch-norm running statistics recomputed on ``x`` for weights ``params``.

    Mean over the whole minibatches of ``x`` (a remainder of fewer than ``batch_size``
    examples is left out) of each batch's mean and (biased, as Flax keeps it) variance;
    ``batch_stats`` gives the structure. Returned unchanged (empty) without batch norm.
    """
    if not jax.tree.leaves(batch_stats):
        return batch_stats
    fresh = model.clone(bn_momentum=0.0)  # running stats := this batch's stats
    n = (x.shape[0] // batch_size) * batch_size or x.shape[0]
    stats = [
        _stats_step(fresh, {"params": params, "batch_stats": batch_stats}, x[i : i + batch_size])[
            "batch_stats"
        ]
        for i in range(0, n, batch_size)
    ]
    return jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), axis=0), *stats)


def error_barrier(
    model: nn.Module,
    v1: dict,
    v2: dict,
    sets: dict[str, tuple],
    bn_x: jax.Array,
    batch_size: int,
    points: int = 21,
    bn_stats: Literal["recompute", "running"] = "recompute",
) -> dict:
    """Error barrier on the linear path between two networks (Fort et al. 2020, section 2).

    w_a = a w + (1 - a) w', a on ``points`` evenly spaced values in [0, 1];
    barrier = max_a R(w_a) - (R(w_0) + R(w_1)) / 2, on each evaluation set. With
    ``bn_stats="recompute"`` each w_a gets running statistics recomputed on ``bn_x``
    (training inputs) before it is evaluated; ``"running"`` interpolates the stored ones.

    Args: v1, v2: variables ``{"params", "batch_stats"}``; sets: ``{name: (x (n, ...), y (n,))}``.
    Returns: ``{"alpha": (points,), "error_<name>": (points,), "barrier_<name>": ()}``.
    """
    alphas = np.linspace(0.0, 1.0, points)
    errors = {name: [] for name in sets}
    for a in alphas:
        params = interpolate(v1["params"], v2["params"], a)
        stats = interpolate(v1["batch_stats"], v2["batch_stats"], a)
        if bn_stats == "recompute":
            stats = recompute_batch_stats(model, params, stats, bn_x, batch_size)
        for name, (x, y) in sets.items():
            logits = models.predict(model, {"params": params, "batch_stats": stats}, x, batch_size)
            errors[name].append(float(error(logits, y)))
    out = {"alpha": alphas}
    for name, e in errors.items():
        e = np.array(e)
        out[f"error_{name}"] = e
        out[f"barrier_{name}"] = e.max() - (e[0] + e[-1]) / 2
    return out


def logit_gradient_centroids(
    model: nn.Module, variables: dict, x: jax.Array, batch_size: int
) -> jax.Array:
    """c_k(w) = mean over x of grad_w f_k(x), for every logit k (Fort et al. appendix B.1;
    Fort and Ganguli 2019): (K, d), weights flattened in ``ravel_pytree`` order. Batch norm
    in evaluation mode with the given statistics; one reverse pass per logit and batch."""
    from jax.flatten_util import ravel_pytree

    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        j = _centroid_sum(
            model, variables["params"], x[i : i + batch_size], variables["batch_stats"]
        )
        total = total + jax.vmap(lambda t: ravel_pytree(t)[0])(j)  # leaves (K, ...) -> (K, d)
    return total / x.shape[0]


_centroid_sum = jax.jit(
    lambda model, p, x, stats: jax.jacrev(lambda q: jnp.sum(models.logits(model)(q, x, stats), 0))(
        p
    ),
    static_argnums=0,
)  # sum over x of grad_w f_k(x), one reverse pass per logit


def centroid_alignment(c1: jax.Array, c2: jax.Array) -> jax.Array:
    """(1/K) sum_k cos(c_k(w), c_k(w')) for centroids (K, d) of two networks."""
    cos = jnp.sum(c1 * c2, axis=1) / (jnp.linalg.norm(c1, axis=1) * jnp.linalg.norm(c2, axis=1))
    return jnp.mean(cos)


def centroid_distance_matrix(centroids: jax.Array) -> jax.Array:
    """1 - centroid alignment between every pair of a stack of centroids (T, K, d) -> (T, T):
    the logit-gradient distance heat map."""
    unit = centroids / jnp.linalg.norm(centroids, axis=2, keepdims=True)
    return 1.0 - jnp.einsum("skd,tkd->st", unit, unit) / centroids.shape[1]
