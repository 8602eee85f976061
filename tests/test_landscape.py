"""Landscape geometry (Fort et al. figures 5, 7, 10, 11) against independent computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ntkpaper import landscape, metrics, models, views
from ntkpaper import train as train_lib
from tests.conftest import numpy_variables

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def three():
    """A tiny ResNet with batch norm, three random networks, inputs and labels."""
    model = models.build("resnet", 10, depth=8, width=0.25, batch_norm=True)
    x = jnp.asarray(RNG.normal(size=(40, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(RNG.integers(0, 10, 40))
    nets = tuple(numpy_variables(model, x[:1], np.random.default_rng(i)) for i in range(3))
    return model, nets, x, y


def test_plane_coordinates_place_the_three_networks_at_its_corners(three):
    _, nets, _, _ = three
    pl = landscape.plane(*(v["params"] for v in nets))
    np.testing.assert_allclose(pl.affine(pl.corners), [[0, 0], [1, 0], [0, 1]], atol=1e-9)
    flat = [np.concatenate([np.ravel(a) for a in jax.tree.leaves(v["params"])]) for v in nets]
    u1, u2 = flat[1] - flat[0], flat[2] - flat[0]
    assert pl.corners[1, 0] == pytest.approx(np.linalg.norm(u1), rel=1e-6)
    assert np.hypot(*pl.corners[2]) == pytest.approx(np.linalg.norm(u2), rel=1e-6)  # isometry


@pytest.mark.parametrize("bn_stats", ["recompute", "running"])
def test_plane_at_the_corners_equals_the_networks_own_test_errors(three, bn_stats):
    """The batched grid program at (a, b) = (0, 0), (1, 0), (0, 1) is the three networks,
    each measured as on its own (statistics recomputed on the same inputs, or its own)."""
    model, nets, x, y = three
    bn_x = x[:32]
    out = landscape.plane_errors(
        model, nets, np.array([[0, 0], [1, 0], [0, 1]]), x, y, bn_x, 16, bn_stats, chunk=2
    )
    for v, err in zip(nets, out["error"]):
        if bn_stats == "recompute":
            stats = metrics.recompute_batch_stats(model, v["params"], v["batch_stats"], bn_x, 16)
            v = {**v, "batch_stats": stats}
        expected = float(metrics.error(models.predict(model, v, x[:32], 16), y[:32]))
        assert err == pytest.approx(expected, abs=1e-6)
    mid = landscape.plane_errors(model, nets, np.array([[0.5, 0.5]]), x, y, bn_x, 16, bn_stats)
    assert out["projection"].shape == (3, 3) and mid["error"].shape == (1,)


def test_tangent_plane_is_exact_at_its_point_and_first_order_close_nearby(three):
    """f_lin over the grid (two Jacobian-vector products, then affine in (a, b)) against the
    network itself: equal at the anchor, a gap of second order in the step nearby."""
    model, nets, x, _ = three
    anchor = nets[0]
    f = models.logits(model)
    exact = f(anchor["params"], x, anchor["batch_stats"])
    eps = np.array([0.0, 0.02, 0.01, 0.005])
    ab = np.stack([eps, eps], axis=1)  # towards (w1 + w2) / 2 - w0
    lin = landscape.tangent_logits(model, nets, (0.0, 0.0), ab, x, 40, anchor["batch_stats"])
    np.testing.assert_allclose(lin[0], exact, rtol=1e-5, atol=1e-5)
    gaps = []
    for e, row in zip(eps[1:], lin[1:]):
        w = landscape.combine(tuple(v["params"] for v in nets), jnp.array([e, e]))
        gaps.append(float(jnp.linalg.norm(row - f(w, x, anchor["batch_stats"]))))
    # a remainder of second order: halving the step divides the gap by about 4 (ReLU kinks
    # make it rougher; a first-order error would divide it by 2)
    assert 2.5 < gaps[0] / gaps[1] < 5.0 and 2.5 < gaps[1] / gaps[2] < 5.0


def test_tangent_errors_are_those_of_the_tangent_logits(three):
    model, nets, x, y = three
    ab = np.array([[0.3, 0.1], [1.0, 0.0]])
    stats = nets[1]["batch_stats"]
    logits = landscape.tangent_logits(model, nets, (1.0, 0.0), ab, x, 40, stats)
    errors = landscape.tangent_errors(model, nets, (1.0, 0.0), ab, x, y, 40, stats)
    np.testing.assert_allclose(errors, [float(metrics.error(lg, y)) for lg in logits])
    # at its own point, the tangent plane at child 1 is child 1
    f = models.logits(model)
    np.testing.assert_allclose(logits[1], f(nets[1]["params"], x, stats), rtol=1e-4, atol=1e-4)


def test_function_plane_projection_of_the_three_functions():
    p = [jnp.asarray(RNG.random(30)) for _ in range(3)]
    project = landscape.function_plane(*p, n=3)
    c = np.array([project(q) for q in p])
    np.testing.assert_allclose(c[0], 0, atol=1e-7)
    assert c[1][0] == pytest.approx(float(jnp.linalg.norm(p[1] - p[0])) / np.sqrt(3), rel=1e-5)
    np.testing.assert_allclose(c[:, 2], 0, atol=1e-6)  # all three lie in their own plane
    off = project(p[0] + jnp.asarray(RNG.normal(size=30)))
    assert off[2] > 0.1


def test_smoothing_against_a_hand_computation():
    epochs = np.array([0.0, 0.2, 0.4, 1.0, 2.0, 4.0])
    values = np.array([6.0, 4.0, 2.0, 1.0, 3.0, 5.0])
    # window 1.3: the epochs within +- 0.65 of each epoch
    hand = [(6 + 4 + 2) / 3, (6 + 4 + 2) / 3, (6 + 4 + 2 + 1) / 4, (2 + 1) / 2, 3, 5]
    np.testing.assert_allclose(views.smooth(epochs, values, 1.3), hand)
    np.testing.assert_allclose(views.smooth(epochs, values, 1e-3), values)


def test_kernel_velocity_of_a_constant_kernel_is_zero():
    """S between kernels equal up to scale is 0, so v(t) = S(t, t + dt) / dt = 0; a kernel
    that turns has a positive velocity."""
    k = jnp.asarray(RNG.normal(size=(6, 6)))
    k = k @ k.T
    epochs = np.round(np.arange(0, 2.01, 0.2), 4)
    constant = jnp.stack([k * (1 + e) for e in epochs])
    d = pd.DataFrame(np.asarray(metrics.kernel_distance_matrix(constant)), epochs, epochs)
    v = views.velocity(d, 0.4)
    assert len(v) == 9 and np.allclose(v.to_numpy(), 0, atol=1e-6)
    other = jnp.asarray(RNG.normal(size=(6, 6)))
    turning = jnp.stack([k + e * other @ other.T for e in epochs])
    d = pd.DataFrame(np.asarray(metrics.kernel_distance_matrix(turning)), epochs, epochs)
    assert (views.velocity(d, 0.4).to_numpy() > 1e-4).all()


def test_embedding_keeps_clusters_apart():
    a = RNG.normal(size=(15, 50))
    b = RNG.normal(size=(15, 50)) + 20.0
    emb = landscape.embed(np.concatenate([a, b]), perplexity=5, seed=0)
    ca, cb = emb[:15].mean(0), emb[15:].mean(0)
    spread = max(emb[:15].std(0).max(), emb[15:].std(0).max())
    assert np.linalg.norm(ca - cb) > 3 * spread


def test_adam_is_optax_adam_after_l2(three):
    """``optimizer: adam`` is Adam on the gradient plus weight decay (L2), not SGD."""
    from ntkpaper import params as P

    sgd = P.Sgd(
        lr=0.01, momentum=0.0, weight_decay=0.1, lr_drops=(), lr_decay=1.0, optimizer="adam"
    )
    tx = train_lib.optimizer(sgd, spe=10)
    w = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, 0.25])}
    updates, _ = tx.update(g, tx.init(w), w)
    # first Adam step: -lr * m_hat / (sqrt(v_hat) + eps) = -lr * sign(g + wd w)
    grad = g["w"] + 0.1 * w["w"]
    np.testing.assert_allclose(updates["w"], -0.01 * grad / (jnp.abs(grad) + 1e-8), rtol=1e-5)
