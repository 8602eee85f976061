"""Tests for ntkpaper.silent: the NTK against eq. 5, training against hand-written loops,
the vmapped sigma grid against separate runs, and the silent alignment effect itself.

Atanasov et al. 2022: f = a^T W x with a_i ~ N(0, sigma^2/N), W_ij ~ N(0, sigma^2/D)
(section 3); K = x^T W^T W x' + |a|^2 x . x' (eq. 5); loss 1/(2P) sum (f - y)^2.
Float64 (tolerance 1e-9 relative) except the silent-alignment run (float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkpaper import silent
from ntkpaper.alignment import whiten

TOL = 1e-9


def close(a, b, tol=TOL) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return bool(np.linalg.norm(a - b) <= tol * np.linalg.norm(b))


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def data(p, d, c=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(p, d)), rng.normal(size=(p, c))


def test_init_scale_and_log_times():
    w, a = silent.init_mlp(jax.random.PRNGKey(0), (400, 300, 1), 0.5)
    assert w.shape == (300, 400) and a.shape == (1, 300)
    assert abs(np.var(np.asarray(w)) * 400 / 0.25 - 1) < 0.02  # Var W_ij = sigma^2 / D
    t = silent.log_times(20000, 60)
    assert t[0] == 0 and t[-1] == 20000 and t.size == 60 and np.all(np.diff(t) > 0)


def test_logged_ntk_is_eq5_and_q_r_cos_match_weights(x64):
    x, y = data(12, 5)
    beta = np.random.default_rng(1).normal(size=5)
    p0 = silent.init_mlp(jax.random.PRNGKey(1), (5, 7, 1), 1.0)
    probe = np.array([0, 3, 4, 9])
    out = silent.train(silent.mlp("linear"), p0, x, y, 0.05, 6, [0, 2, 6], probe=probe, beta=beta)

    def eq5(params, xs):
        w, a = (np.asarray(m) for m in params)
        return xs @ w.T @ w @ xs.T + (a @ a.T)[0, 0] * xs @ xs.T

    assert close(out["K_0"], eq5(p0, x[probe])) and close(
        out["K_inf"], eq5(out["params"], x[probe])
    )
    w, a = out["params"][0], out["params"][1][0]
    b = beta / np.linalg.norm(beta)
    assert np.isclose(out["q"][-1], 0.5 * (a @ a + b @ w.T @ w @ b), rtol=TOL)  # 1/2 b^T M b
    assert np.isclose(out["r"][-1], b @ w.T @ a, rtol=TOL)
    m1 = w.T @ w
    cos = np.sum(m1 * np.outer(b, b)) / np.linalg.norm(m1)
    assert np.isclose(out["cos"][-1], cos, rtol=TOL)
    assert np.allclose(out["time"], [0, 0.1, 0.3])


def hand_loss(params, x, y):
    h = jnp.tanh(x @ params[0].T)
    h = jnp.tanh(h @ params[1].T)
    return jnp.sum((h @ params[2].T - y) ** 2) / (2 * x.shape[0])


hand_grad = jax.jit(jax.grad(hand_loss))


def test_gd_with_layer_lr_matches_hand_written_loop(x64):
    x, y = data(10, 4, c=2)
    p = silent.init_mlp(jax.random.PRNGKey(2), (4, 6, 5, 2), 1.0)
    etas, lr = (1.0, 3.0, 0.5), 0.1
    out = silent.train(silent.mlp("tanh"), p, x, y, lr, 5, [0, 2, 4], layer_lr=etas)
    losses = []
    for step in range(5):
        if step in (0, 2, 4):
            losses.append(hand_loss(p, x, y))
        g = hand_grad(p, x, y)
        p = [w - lr * e * gw for w, e, gw in zip(p, etas, g)]
    assert close(out["loss"], losses)
    assert all(close(a, b) for a, b in zip(out["params"], p))


def test_adam_matches_optax_by_hand(x64):
    x, y = data(10, 4, c=2, seed=3)
    p = silent.init_mlp(jax.random.PRNGKey(3), (4, 6, 5, 2), 1.0)
    out = silent.train(silent.mlp("tanh"), p, x, y, 0.01, 4, [0, 4], optimizer="adam")
    tx = optax.adam(0.01)
    state = tx.init(p)
    for _ in range(4):
        u, state = tx.update(hand_grad(p, x, y), state, p)
        p = optax.apply_updates(p, u)
    assert all(close(a, b) for a, b in zip(out["params"], p))


def test_train_many_over_sigma_equals_separate_runs(x64):
    x, y = data(16, 6)
    f, sigmas = silent.mlp("relu"), jnp.array([0.3, 1.0, 2.0])
    stacked = jax.vmap(lambda s: silent.init_mlp(jax.random.PRNGKey(4), (6, 8, 1), s))(sigmas)
    args = (x, y, 0.05, 7, [0, 3, 7])
    many = silent.train_many(f, stacked, *args, layer_lr=(2.0, 1.0))
    for i in range(3):
        one = silent.train(f, [w[i] for w in stacked], *args, layer_lr=(2.0, 1.0))
        for key in ("loss", "alignment", "kernel_norm", "K_0", "K_inf"):
            assert close(many[key][i], one[key]), key
        assert all(close(a[i], b) for a, b in zip(many["params"], one["params"]))


def test_silent_alignment_in_two_layer_linear_network():
    """Whitened data, sigma = 1e-3: alignment reaches 90 % of its final value before the loss
    falls to 90 % of its initial value (sections 3.1, 3.1.1); the final alignment is that of
    K_inf = s X (b b^T + I) X^T (eq. 8), 2 / sqrt(D + 3) on X^T X / P = I. Control: from
    sigma = 1 the loss falls first (no separation of time scales)."""
    p, d, n, s = 64, 16, 20, 1.0
    rng = np.random.default_rng(5)
    x, _ = whiten(rng.normal(size=(p, d)), np.zeros((1, d)), 0.0)
    beta = rng.normal(size=d)
    y = s * x @ (beta / np.linalg.norm(beta))
    times = {}
    for sigma in (1e-3, 1.0):
        params = silent.init_mlp(jax.random.PRNGKey(5), (d, n, 1), sigma)
        out = silent.train(silent.mlp("linear"), params, x, y, 0.05, 800, silent.log_times(800, 80))
        align, loss = out["alignment"], out["loss"]
        t_align = out["time"][np.argmax(align >= 0.9 * align[-1])]
        times[sigma] = t_align, out["time"][np.argmax(loss <= 0.9 * loss[0])]
        assert loss[-1] < 1e-6 * loss[0]
        if sigma < 1:
            assert abs(align[-1] - 2 / np.sqrt(d + 3)) < 1e-3, align[-1]
    assert times[1e-3][0] < times[1e-3][1], times  # alignment first
    assert times[1.0][0] > times[1.0][1], times  # loss first


def test_ntk_predictions_of_converged_linear_network(x64):
    """D > P, small init: network and final-NTK predictor are the minimum-norm interpolator
    x . pinv(X) y up to O(sigma) (appendix F); the initial-NTK predictor is the interpolator
    nearest w0 = W0^T a0 in the norm of A0^{-1}, A0 = W0^T W0 + |a0|^2 I (eq. 5), which the
    random W0^T W0 makes differ from the minimum-norm one."""
    x, y = data(8, 20, seed=6)
    xt = np.random.default_rng(7).normal(size=(5, 20))
    f, p0 = silent.mlp("linear"), silent.init_mlp(jax.random.PRNGKey(6), (20, 30, 1), 1e-3)
    out = silent.train(f, p0, x, y, 0.02, 3000, [0, 3000])
    pred = silent.ntk_predictions(f, p0, out["params"], x, y, xt)
    min_norm = xt @ np.linalg.pinv(x) @ y
    assert close(pred["network"], min_norm, 5e-3) and close(pred["final_ntk"], min_norm, 5e-3)
    w0, a0 = (np.asarray(m) for m in p0)
    m0, v0 = w0.T @ w0 + (a0 @ a0.T)[0, 0] * np.eye(20), w0.T @ a0.T
    w_star = v0 + m0 @ x.T @ np.linalg.solve(x @ m0 @ x.T, y - x @ v0)
    assert pred["initial_ntk"].shape == (5, 1) and close(pred["initial_ntk"], xt @ w_star, 1e-7)


def test_wide_resnet_layers_and_initial_scales():
    """Appendix I's Wide ResNet: a 3x3 stem to 16 channels; per group, two 3x3 convolutions per
    block and a 3x3 shortcut on the first (the channels change); a dense head. Weights
    N(0, sigma^2 / fan_in), the stem with its own sigma."""
    from ntkpaper import silent

    shapes = silent.wrn_shapes(3, 2, 1, 1)
    assert shapes == [(3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 32), (3, 3, 16, 32),
                      (3, 3, 32, 64), (3, 3, 64, 64), (3, 3, 32, 64),
                      (3, 3, 64, 128), (3, 3, 128, 128), (3, 3, 64, 128), (1, 128)]  # fmt: skip
    assert len(silent.wrn_shapes(1, 1, 2, 10)) == 1 + 3 * (3 + 2) + 1
    w = silent.init_wrn(jax.random.PRNGKey(0), shapes, 0.3, 6.0)
    assert np.std(np.asarray(w[0])) * np.sqrt(27) == pytest.approx(6.0, rel=0.2)
    assert np.std(np.asarray(w[8])) * np.sqrt(9 * 128) == pytest.approx(0.3, rel=0.05)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 8, 8, 3)), jnp.float32)
    f = silent.wrn(1)
    assert f(w, x).shape == (5, 1)
    # no normalisation anywhere: the network is positively homogeneous in its input
    np.testing.assert_allclose(f(w, 2 * x), 2 * f(w, x), rtol=1e-4, atol=1e-5)
