"""Atanasov et al. 2022 closed forms (ntkpaper.theory) against independent computations.

Oracles: plain full-batch gradient descent written out here in float64 numpy (two-layer and
deep linear networks on whitened data), Jacobians from ``jax.jacrev`` multiplied out, least
squares from ``np.linalg.lstsq``, and Monte Carlo kernel regression. Each tolerance is
derived in a comment next to it. Convention: t = learning rate x steps, X^T X / P = I,
y = s beta . x with |beta| = 1 (docs/theory.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkpaper import theory as th


def _data(rng, p, d, s):
    """Whitened inputs X (P, D) with X^T X = P I, unit beta, targets y = s X beta."""
    x = np.sqrt(p) * np.linalg.qr(rng.standard_normal((p, d)))[0]
    beta = rng.standard_normal(d)
    beta /= np.linalg.norm(beta)
    return x, beta, s * x @ beta


def _unit(rng, n):
    v = rng.standard_normal(n)
    return v / np.linalg.norm(v)


def _gd_two_layer(x, y, a, w, eta, steps, beta, lrs=(1.0, 1.0)):
    """GD on L = 1/(2P) |X W^T a - y|^2; W steps by eta*lrs[0], a by eta*lrs[1].

    Returns the final (a, W) and, for every step, (q, r, loss) before it."""
    log = np.zeros((steps + 1, 3))
    for k in range(steps + 1):
        wb, e = w @ beta, x @ (w.T @ a) - y
        log[k] = 0.5 * (a @ a + wb @ wb), wb @ a, 0.5 * np.mean(e**2)
        if k < steps:
            g = x.T @ e / len(y)
            a, w = a - eta * lrs[1] * w @ g, w - eta * lrs[0] * np.outer(a, g)
    return a, w, log


def _jacobian_ntk(ws, x):
    """Brute-force NTK of f(x) = W^L .. W^1 x: J J^T with J from jax.jacrev, (P, P, C, C)."""
    with jax.enable_x64(True):

        def f(ws):
            h = jnp.asarray(x)
            for w in ws:
                h = h @ w.T
            return h

        jac = jax.jacrev(f)([jnp.asarray(w) for w in ws])
        j = jnp.concatenate([jw.reshape(jw.shape[0], jw.shape[1], -1) for jw in jac], -1)
        return np.asarray(jnp.einsum("pci,qdi->pqcd", j, j))


def _balanced(rng, beta, u, lrs, widths):
    """W^l = sqrt(eta_l/eta_L) u r_{l+1} r_l^T with r_1 = beta, random unit r_l (eq. 10)."""
    rs = [beta] + [_unit(rng, n) for n in widths] + [np.ones(1)]
    g = np.sqrt(np.asarray(lrs) / lrs[-1])
    return [g[i] * u * np.outer(rs[i + 1], rs[i]) for i in range(len(lrs))]


# --- two-layer network: eqs. 17, 27-28, B.3 -----------------------------------------------


def test_q0_moments_eq17():
    # <q0>, <r0> = 0, <r0^2> = sigma^4/D averaged over n inits; 5 standard errors.
    rng, n, nh, d, sigma = np.random.default_rng(0), 4000, 10, 25, 0.3
    beta = _unit(rng, d)
    a = rng.standard_normal((n, nh)) * sigma / np.sqrt(nh)
    wb = (rng.standard_normal((n, nh, d)) * sigma / np.sqrt(d)) @ beta
    q0, r0 = 0.5 * (np.sum(a * a, 1) + np.sum(wb * wb, 1)), np.sum(a * wb, 1)
    for v, mean in [(q0, th.q0_mean(sigma, nh, d)), (r0, 0.0), (r0**2, sigma**4 / d)]:
        assert abs(v.mean() - mean) < 5 * v.std() / np.sqrt(n)


def test_two_layer_gd_follows_q_r_loss_and_t_half():
    rng, p, d, nh, s, sigma, eta = np.random.default_rng(3), 50, 25, 10, 1.0, 1e-2, 1e-3
    x, beta, y = _data(rng, p, d, s)
    a = rng.standard_normal(nh) * sigma / np.sqrt(nh)
    w = rng.standard_normal((nh, d)) * sigma / np.sqrt(d)
    q0, r0 = 0.5 * (a @ a + (w @ beta) @ (w @ beta)), beta @ w.T @ a  # this init's, not eq. 17's
    t_half = th.t_half_two_layer(s, 0.5 * (q0 + r0))
    steps = int(2.5 * t_half / eta)
    _, _, log = _gd_two_layer(x, y, a, w, eta, steps, beta)
    t = eta * np.arange(steps + 1)
    q, r = th.q_r_two_layer(t, s, q0, r0)
    # Tolerance on |q - q_th| / q_th and |r - r_th| / q_th (|r| <= q). (i) Euler: in the early
    # phase q, r ~ (a + b)^2 with a + b growing by (1 + s eta) a step instead of e^{s eta}:
    # relative deficit s^2 eta t, frozen after the transition (the sigmoid contracts it), so
    # at most s^2 eta t_1/2; doubled. (ii) The part W_perp of W off beta damps a by
    # W_perp W_perp^T, norm <= sigma^2 (1 + sqrt(N/D))^2: relative sigma^2 (1 + sqrt(N/D))^2 t_1/2.
    # (iii) Matching eq. 16 to B.3 is exact up to O(q0/s). The init's own q0, r0 remove the
    # spread of q0 around eq. 17 (|r0|/q0 ~ 2/(sqrt(D) (1 + N/D)) ~ 0.3 would cost as much).
    spread = sigma**2 * (1 + np.sqrt(nh / d)) ** 2
    tol = 2 * s**2 * eta * t_half + spread * t_half + q0 / s
    assert np.max(np.abs(log[:, 0] - q) / q) < tol
    assert np.max(np.abs(log[:, 1] - r) / q) < tol
    # loss = (s - r)^2/2 + |W_perp^T a|^2/2: |dL| <= s |dr| + spread q, relative to s^2/2.
    loss = th.loss_two_layer(t, s, q0, r0)
    assert np.max(np.abs(log[:, 2] - loss)) < (2 * tol * q.max() / s + 2 * spread / s) * log[0, 2]
    # t_1/2: the deficit (i) is a delay s eta t_1/2 / 2, doubled, plus one step.
    measured = t[np.argmax(log[:, 2] <= log[0, 2] / 2)]
    assert abs(measured - t_half) < s * eta * t_half + eta + spread * t_half / s


def test_two_layer_closed_forms_agree():
    s, c0, t = 2.0, 1e-3, np.linspace(0, 5, 501)
    c = th.c_two_layer(t, s, c0)
    dc = np.gradient(c, t, edge_order=2)  # second-order differences: error ~ dt^2 c'''
    assert np.max(np.abs(dc - 2 * c * (s - c))) < 1e-3 * s**2
    assert np.allclose(th.deep_linear_dynamics(t, s, c0, 2)[0], c, rtol=1e-7)
    assert np.isclose(th.t_half_deep_linear(s, c0, 2), th.t_half_two_layer(s, c0), rtol=1e-7)
    q0 = 2 * c0  # eqs. 27-28 as printed (r0 = 0)
    e = np.exp(2 * s * t)
    q, r = th.q_r_two_layer(t, s, q0, 0.0)
    assert np.allclose(r, s * 2 * np.sinh(2 * s * t) / (e - 1 + 2 * s / q0), rtol=1e-12)
    assert np.allclose(q, s * 2 * np.cosh(2 * s * t) / (e - 1 + 2 * s / q0), rtol=1e-12)
    # L = 2 half time grows as log(1/c0) / (2s) (figure 3b)
    c0s = np.array([1e-6, 1e-8])
    slope = np.diff([th.t_half_two_layer(s, c) for c in c0s]) / np.diff(np.log(1 / c0s))
    assert np.isclose(slope[0], 1 / (2 * s), rtol=1e-6)


# --- deep linear networks: eq. 39 (factor L), eq. 40 ------------------------------------


@pytest.mark.parametrize("depth, u0", [(3, 0.05), (4, 0.15)])
def test_deep_linear_gd_t_half_follows_ode(depth, u0):
    # Balanced rank-one init aligned with beta: GD keeps W^l = u_k r_{l+1} r_l^T with equal
    # u_k, and u_{k+1} = u_k + eta u_k^{L-1} (s - u_k^L) is Euler's method for the flow.
    rng, p, d, n, s, eta = np.random.default_rng(2), 20, 6, 5, 1.0, 0.01
    x, beta, y = _data(rng, p, d, s)
    ws = _balanced(rng, beta, u0, np.ones(depth), [n] * (depth - 1))
    c0 = u0**depth
    t_ode = th.t_half_deep_linear(s, c0, depth)
    losses = []
    for _ in range(int(1.5 * t_ode / eta)):
        h = [x]
        for w in ws:
            h.append(h[-1] @ w.T)
        delta = (h[-1] - y[:, None]) / p
        losses.append(0.5 * p * np.sum(delta**2))
        grads = []
        for layer in reversed(range(depth)):
            grads.append(delta.T @ h[layer])
            delta = delta @ ws[layer]
        ws = [w - eta * g for w, g in zip(ws, grads[::-1])]
    measured = eta * np.argmax(np.array(losses) <= losses[0] / 2)
    # Euler follows the modified flow u' = f - (eta/2) f f' (f = u^{L-1}(s - u^L)), which
    # reaches u* later by (eta/2) log(f(u*)/f(u0)); plus one step for the first crossing.
    f = lambda u: u ** (depth - 1) * (s - u**depth)
    u_half = (s - th.HALF * (s - c0)) ** (1 / depth)
    assert abs(measured - t_ode) < eta * (1 + 0.5 * np.log(f(u_half) / f(u0)))


@pytest.mark.parametrize("depth", [3, 4])
def test_ode_t_half_power_law(depth):
    s, u0 = 1.5, np.array([1e-3, 1e-4])
    c0, c_half = u0**depth, s - th.HALF * (s - u0**depth)
    t = np.array([th.t_half_deep_linear(s, c, depth) for c in c0])
    # With k = 1 - 2/L, L s t_1/2 = int_{c0}^{c*} c^{-1-k} (1 + c/(s - c)) dc
    #   = (c0^-k - c*^-k)/k + int c^-k/(s - c) dc, so |t_1/2 / law - 1| <= delta =
    # (c0/c*)^k + (L - 2) c0^k c*^{1-k} / (2 (s - c*)), law = c0^-k / ((L - 2) s).
    k = 1 - 2 / depth
    delta = (c0 / c_half) ** k + (depth - 2) * c0**k * c_half ** (1 - k) / (2 * (s - c_half))
    law = np.array([th.t_half_power_law(s, c, depth) for c in c0])
    assert np.all(np.abs(t / law - 1) < delta) and np.all(t < law)
    # slope of log t_1/2 against log u0: -(L - 2) up to (delta_1 + delta_2) / log 10
    slope = np.diff(np.log(t)) / np.diff(np.log(u0))
    assert abs(slope[0] + (depth - 2)) < delta.sum() / np.log(10)
    c, loss = th.deep_linear_dynamics(np.array([0.0, t[1], 10 * t[1]]), s, c0[1], depth)
    assert np.isclose(loss[1], loss[0] / 2, rtol=1e-6) and np.isclose(c[2], s, rtol=1e-6)


# --- NTK of balanced deep linear networks: eqs. 10, 37, 42, 53 ---------------------------


def test_ntk_eq10_matches_jacobian_with_layer_rates():
    rng, p, d, lrs = np.random.default_rng(3), 7, 5, (3.0, 0.5, 2.0)
    x, beta = rng.standard_normal((p, d)), _unit(rng, d)
    ws = _balanced(rng, beta, 0.7, lrs, [4, 6])
    k = th.ntk_deep_linear(x, x, beta, 0.7, lrs)
    assert np.allclose(_jacobian_ntk(ws, x)[..., 0, 0], k, rtol=1e-10, atol=1e-12)
    a, b = th.ntk_coefficients((2.0, 1.0, 1.0))
    assert np.isclose(a / b, 2 * 2.0)  # eq. 37: (L - 1) eta_1 / eta


def test_final_ntk_eq42_eq53_match_jacobian_of_converged_network():
    rng, p, d, n, c, depth = np.random.default_rng(4), 9, 6, 5, 3, 3
    x = rng.standard_normal((p, d))
    z = np.linalg.qr(rng.standard_normal((c, c)))[0]
    v = np.linalg.qr(rng.standard_normal((d, c)))[0]
    sv = np.array([3.0, 1.5, 0.5])
    r = [
        v,
        np.linalg.qr(rng.standard_normal((n, c)))[0],
        np.linalg.qr(rng.standard_normal((n, c)))[0],
        z,
    ]
    u = sv ** (1 / depth)  # converged balanced modes: W^l = sum_a u_a r_{l+1}^a r_l^a^T
    ws = [(r[i + 1] * u) @ r[i].T for i in range(depth)]
    beta = (z * sv) @ v.T
    assert np.allclose(ws[2] @ ws[1] @ ws[0], beta)
    assert np.allclose(th.final_ntk(x, x, beta, depth), _jacobian_ntk(ws, x), atol=1e-10)
    # one output: eq. 42 = eq. 10 at u = s^{1/L}, r1 = beta / s
    b1 = 2.0 * _unit(rng, d)
    k42 = th.ntk_deep_linear(x, x, b1, 2.0 ** (1 / depth), np.ones(depth))
    assert np.allclose(th.final_ntk(x, x, b1, depth)[..., 0, 0], k42)


def test_alignment_and_final_alignment_rise_with_depth():
    rng, p, d = np.random.default_rng(5), 40, 10
    y = rng.standard_normal(p)
    assert np.isclose(th._alignment(np.outer(y, y), y), 1.0)
    assert np.isclose(th._alignment(3.0 * np.outer(y, y), y[:, None] * [1.0, -2.0]), 1.0)
    x, beta, y = _data(rng, p, d, 1.3)
    depths = [2, 3, 5, 10, 100]
    al = np.array([th.final_alignment(x, y, L) for L in depths])
    closed = np.array([L / np.sqrt(L**2 + d - 1) for L in depths])  # whitened, one output
    assert np.allclose(al, closed, rtol=1e-10)
    assert np.all(np.diff(al) > 0) and al[-1] > 0.999 and al[0] < 0.6
    ym = x @ rng.standard_normal((d, 3))  # multi-class (eq. 53): also rises with depth
    alm = [th.final_alignment(x, ym, L) for L in depths]
    assert np.all(np.diff(alm) > 0)


@pytest.mark.parametrize("ratio", [0.5, 2.0, 4.0])
def test_eq37_spike_ratio_of_trained_two_layer_ntk(ratio):
    rng, p, d, n, s, sigma, eta = np.random.default_rng(6), 30, 12, 6, 1.0, 1e-2, 2e-3
    x, beta, y = _data(rng, p, d, s)
    lrs = (ratio, 1.0)  # (eta_1 on W, eta_2 on a)

    def final_ratio(a, w):
        a, w, log = _gd_two_layer(x, y, a, w, eta, int(30 / (eta * np.sqrt(ratio))), beta, lrs)
        assert log[-1, 2] < 1e-12
        j = np.concatenate([x @ w.T, (a[None, :, None] * x[:, None, :]).reshape(p, -1)], 1)
        ev = np.linalg.eigvalsh(j @ j.T)[-d:]  # rank D: X M X^T, nonzero eigs P eig(M)
        return ev[-1] / ev[0]

    a = rng.standard_normal(n) * sigma / np.sqrt(n)
    w = rng.standard_normal((n, d)) * sigma / np.sqrt(d)
    # W W^T/eta_1 - a a^T/eta_2 = C0 is conserved, |C0| <= eps (below). At convergence
    # W^T a = s beta, |a|^2 = s sqrt(eta_2/eta_1) + O(eta_1 eps) and the top eigenvalue of
    # W^T W is (eta_1/eta_2)|a|^2 + O(eta_1 eps); M's smallest is |a|^2 (N < D). Ratio error
    # <= eta_1 eps / |a|^2 = eta_1^{3/2} eps / (s eta_2^{1/2}); doubled.
    eps = sigma**2 * ((1 + np.sqrt(n / d)) ** 2 / ratio + 1.0)
    tol = 2 * ratio**1.5 * eps / s
    assert abs(final_ratio(a, w) - th.ntk_eigenvalue_ratio(lrs)) < tol
    # unbalanced init (|a0| = 0.5 >> sigma): C0 is O(1) and eq. 37 no longer holds
    assert (
        abs(final_ratio(0.5 * a / np.linalg.norm(a), w) - th.ntk_eigenvalue_ratio(lrs)) > 10 * tol
    )


# --- kernel regression with a linear NTK (appendix F) and transfer (appendix E, eq. 46) ---


def _kernel_regression(k_train, k_test_train, y):
    return k_test_train @ np.linalg.pinv(k_train, hermitian=True) @ y


@pytest.mark.parametrize("p, d", [(8, 20), (30, 6)])
def test_linear_ntk_regression_is_min_norm_or_ols(p, d):
    rng = np.random.default_rng(7)
    x, xt, y = rng.standard_normal((p, d)), rng.standard_normal((5, d)), rng.standard_normal(p)
    pred = _kernel_regression(3.0 * x @ x.T, 3.0 * xt @ x.T, y)  # K = c X X^T
    w = np.linalg.lstsq(x, y, rcond=None)[0]  # min-norm (D > P) or least squares (P >= D)
    if p >= d:
        w_ols = np.linalg.solve(x.T @ x, x.T @ y)
        assert np.allclose(w, w_ols)
    assert np.allclose(pred, xt @ w, rtol=1e-8, atol=1e-10)


def test_eq46_limits_and_monte_carlo():
    d, a, alpha = 40, 4.0, 0.8
    for ridge in [0.0, 0.5]:
        assert np.isclose(th.transfer_error(0.0, a, alpha, d, ridge), 1.0)  # target variance
        assert np.isclose(th.transfer_error(1e-6, a, alpha, d, ridge), 1.0, rtol=1e-5)
        assert th.transfer_error(1e6, a, alpha, d, ridge) < 1e-6
    assert th.transfer_error(d, a, alpha, d, 0.0) == 0.0  # ridgeless, P >= D: interpolates w
    assert np.isclose(th.transfer_error(10, 0.0, alpha, d, 0.0), 1 - 10 / d)  # isotropic, exact
    errs = [th.transfer_error(10, aa, 1.0, d, 0.0) for aa in [0.0, 1.0, 4.0]]
    assert np.all(np.diff(errs) < 0)  # alpha = 1: more alignment A, lower error (appendix E)
    # Monte Carlo: ridgeless kernel regression, x ~ N(0, I_D), n draws. Theory is exact as
    # D -> inf; at D = 40 finite-size corrections are O(1/D) ~ 3 %, plus 3 standard errors.
    rng, p, n = np.random.default_rng(8), 12, 300
    m = np.eye(d) + a * np.outer(np.eye(d)[0], np.eye(d)[0])
    w = alpha * np.eye(d)[0] + np.sqrt(1 - alpha**2) * np.eye(d)[1]
    errs = []
    for _ in range(n):
        x = rng.standard_normal((p, d))
        w_hat = m @ x.T @ np.linalg.solve(x @ m @ x.T, x @ w)
        errs.append(np.sum((w_hat - w) ** 2))
    theory = th.transfer_error(p, a, alpha, d, 0.0)
    assert abs(np.mean(errs) - theory) < 0.03 * theory + 3 * np.std(errs) / np.sqrt(n)
