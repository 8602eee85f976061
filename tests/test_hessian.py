"""Top Hessian eigenvalue and logit-gradient centroids against dense and brute-force sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkpaper import hessian, metrics, models, train
from tests.conftest import numpy_variables

RNG = np.random.default_rng(0)


def test_quadratic_with_a_known_spectrum():
    """L(w) = 1/2 w^T A w has Hessian A: Lanczos finds its largest eigenvalue, exactly once
    it has as many steps as A has distinct eigenvalues, from below before."""
    eig = np.array([7.5, 3.0, 2.0, 1.0, 0.5, -1.0])
    q = np.linalg.qr(RNG.normal(size=(6, 6)))[0]
    a = jnp.asarray(q @ np.diag(eig) @ q.T, jnp.float32)

    def loss(w):
        return 0.5 * w["w"] @ a @ w["w"]

    w = {"w": jnp.asarray(RNG.normal(size=6), jnp.float32)}
    assert hessian.top_eigenvalue(loss, w, iters=6) == pytest.approx(7.5, rel=1e-4)
    assert hessian.top_eigenvalue(loss, w, iters=2) <= 7.5 + 1e-4


def test_tiny_network_against_the_dense_hessian():
    model = models.build("mlp", 3, hidden=(12, 12))
    x = jnp.asarray(RNG.normal(size=(12, 4, 4, 1)), jnp.float32)
    y = jnp.asarray(RNG.integers(0, 3, 12))
    v = numpy_variables(model, x[:1], np.random.default_rng(1))
    f = models.logits(model)
    flat, unravel = ravel_pytree(v["params"])
    assert flat.size < 500

    def loss(p):
        return train.cross_entropy(f(p, x, v["batch_stats"]), y)

    dense = jax.hessian(lambda w: loss(unravel(w)))(flat)
    top = float(np.linalg.eigvalsh(np.asarray(dense, np.float64))[-1])
    assert hessian.top_eigenvalue(loss, v["params"], iters=30) == pytest.approx(top, rel=1e-3)
    assert hessian.escape_threshold(0.1, top) == pytest.approx(0.1 * top - 2)


def test_logit_gradient_centroids_against_per_example_gradients():
    model = models.build("resnet", 3, depth=8, width=0.125, batch_norm=True)
    x = jnp.asarray(RNG.normal(size=(10, 8, 8, 1)), jnp.float32)
    v = numpy_variables(model, x[:1], np.random.default_rng(2))
    f = models.logits(model)
    c = metrics.logit_gradient_centroids(model, v, x, batch_size=4)  # batches 4, 4, 2
    one = jax.jit(jax.jacrev(lambda p, xi: f(p, xi, v["batch_stats"])[0]))  # one example
    brute = sum(
        np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(one(v["params"], x[i : i + 1])))
        for i in range(10)
    ) / 10  # fmt: skip
    np.testing.assert_allclose(c, brute, rtol=2e-4, atol=1e-6)
    assert float(metrics.centroid_alignment(c, c)) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.centroid_alignment(c, -c)) == pytest.approx(-1.0, abs=1e-6)
    other = jnp.asarray(RNG.normal(size=c.shape), jnp.float32)
    d = metrics.centroid_distance_matrix(jnp.stack([c, other, c]))
    assert float(d[0, 2]) == pytest.approx(0.0, abs=1e-6)
    assert float(d[0, 1]) == pytest.approx(
        1 - float(metrics.centroid_alignment(c, other)), abs=1e-5
    )


def test_the_escape_threshold_reads_the_optimiser_s_own_learning_rate():
    """``train.learning_rate`` (the eta of eta lambda_max - 2) is the rate ``train.optimizer``
    applies at that epoch, drops included: one SGD step without momentum moves w by -lr g."""
    from ntkpaper import params as P

    sgd = P.Sgd(lr=0.5, momentum=0.0, weight_decay=0.0, lr_drops=(1.0, 2.5), lr_decay=0.1)
    spe = 4
    tx = train.optimizer(sgd, spe)
    w, g = {"w": jnp.ones(1)}, {"w": jnp.ones(1)}
    state = tx.init(w)
    for step in range(14):
        updates, state = tx.update(g, state, w)
        assert -float(updates["w"][0]) == pytest.approx(train.learning_rate(sgd, step / spe)), step
