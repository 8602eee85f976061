"""Closed forms and ODEs of Atanasov, Bordelon, Pehlevan 2022 (the silent alignment effect).

One time convention throughout (derivations in docs/theory.md): gradient flow on
L = 1/(2P) sum_mu (f(x_mu) - y_mu)^2, time t = learning rate x steps, per-layer learning
rates eta_l as multipliers of that rate. Inputs are whitened, X^T X / P = I (X (P, D),
examples by features); the teacher is y = s beta . x with beta a unit vector, so s = ||beta_T||
for y = beta_T . x, and the loss is |w - s beta|^2 / 2 for the end-to-end weights w. c is the
projection w . beta (c = u^L for a balanced depth-L network), c0 its initial value.
Pure functions of numpy arrays; nothing here trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

RCOND = 1e-5  # singular values of X below this fraction of the largest count as 0 (float32 data)
HALF = 1.0 / np.sqrt(2.0)  # loss = (s - c)^2 / 2 halves when s - c shrinks by 1/sqrt(2)


# --- two-layer linear network f(x) = a^T W x (section 3, appendix B) ----------------------


def c_two_layer(t: ArrayLike, s: float, c0: float) -> np.ndarray:
    """Saxe et al. sigmoid c(t) = s e^{2st} / (e^{2st} - 1 + s/c0) (appendix B.3).

    Solves c' = 2c(s - c), which is gradient flow in our convention (B.3 as printed).
    Written as s / (1 + (s/c0 - 1) e^{-2st}) so that large t does not overflow.
    Returns c(t), shaped like t.
    """
    return s / (1.0 + (s / c0 - 1.0) * np.exp(-2.0 * s * np.asarray(t, float)))


def q0_mean(sigma: float, n: int, d: int) -> float:
    """<q0> = sigma^2/2 (1 + N/D) (eq. 17), for a_i ~ N(0, sigma^2/N), W_ij ~ N(0, sigma^2/D).

    Exact for any N, D (section 3's standard parameterisation); <r0> = 0, <r0^2> = sigma^4/D.
    """
    return 0.5 * sigma**2 * (1.0 + n / d)


def q_r_two_layer(t: ArrayLike, s: float, q0: float, r0: float) -> tuple[np.ndarray, np.ndarray]:
    """q(t) = 1/2 beta^T M beta and r(t) = beta^T W^T a (eqs. 27-28, with r0).

    With A = (q0 + r0)/2 and B = (q0 - r0)/2, the early solution of eq. 16 matched to the
    sigmoid of B.3 with c0 = A:
      r = s (A e^{2st} - B e^{-2st}) / (A (e^{2st} - 1) + s),
      q = s (A e^{2st} + B e^{-2st}) / (A (e^{2st} - 1) + s),
    exact at t = 0 and up to O(q0/s) corrections after; r0 = 0 gives eqs. 27-28 as printed.
    Returns (q, r), each shaped like t.
    """
    t = np.asarray(t, float)
    a, b = 0.5 * (q0 + r0), 0.5 * (q0 - r0)
    e, e2 = np.exp(-2.0 * s * t), np.exp(-4.0 * s * t)  # numerator and denominator / e^{2st}
    den = a * (1.0 - e) + s * e
    return s * (a + b * e2) / den, s * (a - b * e2) / den


def loss_two_layer(t: ArrayLike, s: float, q0: float, r0: float) -> np.ndarray:
    """Training loss L(t) = (s - r(t))^2 / 2 (whitened data, W = u a_hat beta^T; eq. 27).

    Returns L(t), shaped like t.
    """
    return 0.5 * (s - q_r_two_layer(t, s, q0, r0)[1]) ** 2


def t_half_two_layer(s: float, c0: float) -> float:
    """Time to half the initial loss for L = 2: t_1/2 = log(((sqrt 2 - 1) s + c0) / c0) / (2s).

    From c/(s - c) = c0/(s - c0) e^{2st} (appendix B.3) at s - c = (s - c0)/sqrt 2; for
    small c0 ~ sigma^2 this is log(1/sigma^2)/(2s) + O(1) (figure 3b).
    """
    return np.log(((np.sqrt(2.0) - 1.0) * s + c0) / c0) / (2.0 * s)


# --- deep linear networks (section 4, appendix D.1) ---------------------------------------


def _z(c: ArrayLike, depth: int) -> np.ndarray:
    """z = (1 - c^{-k}) / k, k = 1 - 2/L (z = log c for L = 2), in which eq. 39 is z' = L (s - c).

    From dz/dc = c^{-k-1} = c^{-2+2/L}: the blow-up of the early phase becomes a straight line.
    """
    k = 1.0 - 2.0 / depth
    return np.log(c) if k == 0 else -np.expm1(-k * np.log(c)) / k


def _c(z: ArrayLike, depth: int) -> np.ndarray:
    """Inverse of ``_z``: c = (1 - k z)^{-1/k}."""
    k = 1.0 - 2.0 / depth
    return np.exp(z) if k == 0 else np.exp(-np.log1p(-k * z) / k)


def _rate(z: ArrayLike, s: float, depth: int) -> np.ndarray:
    """dz/dt = L (s - c(z)): eq. 39, c' = L c^{2-2/L} (s - c), in the variable z of ``_z``.

    Past z(2s) (c(z) blows up at z = 1/k) solver trial steps see z(2s); solutions stay below
    z(s).
    """
    return depth * (s - _c(np.minimum(z, _z(2.0 * s, depth)), depth))


def deep_linear_dynamics(
    t: ArrayLike, s: float, c0: float, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """c(t) and loss (s - c)^2/2 from c' = L c^{2-2/L} (s - c) (eq. 39, factor L restored).

    ``solve_ivp`` on z' = L (s - c(z)), LSODA (the approach to c = s is stiff), outwards
    from the half-loss point, so that the tolerances bite where c changes. L = 2 gives
    ``c_two_layer``. Per-layer learning rates eta_l multiply the right side by
    (prod_l eta_l)^{1/L} (docs/theory.md).
    Args:
      t: (T,) increasing times >= 0; c0 in (0, s); depth = L >= 2.
    Returns:
      (c (T,), loss (T,)).
    """
    t = np.asarray(t, float)
    t_half, z_half = t_half_deep_linear(s, c0, depth), _z(s - HALF * (s - c0), depth)
    z = np.empty_like(t)
    for side, order in ((t < t_half, slice(None, None, -1)), (t >= t_half, slice(None))):
        if side.any():  # integrate out from (t_1/2, z(c*)), where |z| = O(1)
            ts = t[side][order]
            sol = solve_ivp(
                lambda t, z: _rate(z, s, depth),
                (t_half, ts[-1]),
                [z_half],
                "LSODA",
                ts,
                rtol=1e-10,
                atol=1e-10,
            )
            z[side] = sol.y[0][order]
    c = _c(z, depth)
    return c, 0.5 * (s - c) ** 2


def t_half_deep_linear(s: float, c0: float, depth: int) -> float:
    """Time to half the initial loss: t_1/2 = int_{z(c0)}^{z(c*)} dz / (L (s - c(z))) (eq. 39).

    The loss halves at c* = s - (s - c0)/sqrt 2. Integrated with ``solve_ivp`` in z, where
    the integrand lies between 1/(L s) and 1/(L (s - c*)): well conditioned for any c0.
    """
    z = (_z(c0, depth), _z(s - HALF * (s - c0), depth))
    sol = solve_ivp(lambda z, t: 1.0 / _rate(z, s, depth), z, [0.0], rtol=1e-12, atol=1e-12)
    return float(sol.y[0, -1])


def t_half_power_law(s: float, c0: float, depth: int) -> float:
    """Small-c0 limit t_1/2 ~ c0^{-(L-2)/L} / ((L - 2) s) for L >= 3 (eq. 40, factor L restored).

    The blow-up time of c' = L s c^{2-2/L}; with c0 = sigma^L (each balanced layer of size
    sigma) it is sigma^{-(L-2)} / ((L-2) s), not the L/((L-2) s) sigma^{-(L-2)} of
    section 4.1.1 (nor appendix D.1's sigma^{-L-2}). The exact t_1/2 differs by
    O(s^{-2+2/L}), relatively O((c0/s)^{(L-2)/L}).
    """
    return c0 ** (-(depth - 2) / depth) / ((depth - 2) * s)


# --- NTK of balanced deep linear networks (section 4.1, appendices D and G) ---------------


def ntk_coefficients(lrs: Sequence[float]) -> tuple[float, float]:
    """A = sum_{l=2}^L prod_{l' != l} eta_l'/eta_L, B = prod_{l != 1} eta_l/eta_L (eq. 36).

    Args:
      lrs: (L,) per-layer learning rates eta_1 .. eta_L (first layer first).
    """
    eta = np.asarray(lrs, float) / lrs[-1]
    return float(np.sum(np.prod(eta) / eta[1:])), float(np.prod(eta[1:]))


def ntk_eigenvalue_ratio(lrs: Sequence[float]) -> float:
    """Largest over smallest eigenvalue of A r1 r1^T + B I: 1 + A/B (eq. 37).

    A/B = (L - 1) eta_1/eta when eta_2 = .. = eta_L = eta; 1 + eta_1/eta_2 for two layers
    (figure D.1b). On whitened data the Gram matrix's nonzero eigenvalues have this ratio.
    """
    a, b = ntk_coefficients(lrs)
    return 1.0 + a / b


def ntk_deep_linear(
    x1: np.ndarray, x2: np.ndarray, r1: np.ndarray, u: float, lrs: Sequence[float]
) -> np.ndarray:
    """NTK of a balanced deep linear net: u^{2(L-1)} x^T [A r1 r1^T + B I] x' (eqs. 10, 35).

    Balanced: W^l = sqrt(eta_l/eta_L) u r_{l+1} r_l^T, w^L = u r_L; the NTK is the plain sum
    over layers of gradient inner products (eq. 34), not weighted by the rates.
    Args:
      x1: (P1, D), x2: (P2, D); r1: (D,) first-layer input direction (normalised here).
    Returns:
      (P1, P2).
    """
    a, b = ntk_coefficients(lrs)
    r1 = r1 / np.linalg.norm(r1)
    return u ** (2 * (len(lrs) - 1)) * (a * np.outer(x1 @ r1, x2 @ r1) + b * x1 @ x2.T)


def final_ntk(x1: np.ndarray, x2: np.ndarray, beta: np.ndarray, depth: int) -> np.ndarray:
    """Final NTK of a depth-L linear net that learned f(x) = beta x, equal rates (eqs. 42, 53).

    beta = sum_a s_a z_a v_a^T (SVD), u_a = s_a^{1/L}. Block (c, c'):
      K_cc'(x, x') = sum_{l=1}^L [G_l]_cc' x^T H_l x',  G_l = sum_a u_a^{2(L-l)} z_a z_a^T,
      H_l = sum_a u_a^{2(l-1)} v_a v_a^T, except G_L = I_C and H_1 = I_D.
    The l = 1 term is isotropic, (W^L..W^2)(W^L..W^2)^T x.x': eq. 53 as printed puts
    sum_a v_a v_a^T there. For C = 1: s^{2-2/L} x^T [(L-1) b b^T + I] x', b = beta/|beta|
    (eq. 42 with A = L-1, B = 1; eq. 42 prints s^{2L-2}).
    Args:
      x1: (P1, D), x2: (P2, D); beta: (C, D) or (D,) end-to-end weights.
    Returns:
      (P1, P2, C, C).
    """
    z, sv, vt = np.linalg.svd(np.atleast_2d(beta), full_matrices=False)
    u2 = sv ** (2.0 / depth)
    k = np.zeros((len(x1), len(x2), z.shape[0], z.shape[0]))
    for layer in range(1, depth + 1):
        g = np.eye(z.shape[0]) if layer == depth else (z * u2 ** (depth - layer)) @ z.T
        h = np.eye(x1.shape[1]) if layer == 1 else (vt.T * u2 ** (layer - 1)) @ vt
        k += np.einsum("pq,cd->pqcd", x1 @ h @ x2.T, g)
    return k


def _alignment(k: np.ndarray, y: np.ndarray) -> float:
    """<K, Y Y^T>_F / (||K||_F ||Y Y^T||_F); y^T K y / (||K||_F |y|^2) for one output."""
    y = y.reshape(len(y), -1)
    return float(np.sum(y * (k @ y)) / (np.linalg.norm(k) * np.linalg.norm(y.T @ y)))


def min_norm_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """beta = (X^+ Y)^T, the minimum-norm linear fit (C, D); singular values of X below
    ``RCOND`` of the largest are dropped (directions the data do not span)."""
    return np.linalg.lstsq(x, y.reshape(len(y), -1), rcond=RCOND)[0].T


def final_alignment(x: np.ndarray, y: np.ndarray, depth: int) -> float:
    """Alignment of the final NTK (eqs. 42, 53) with the targets: the maximal final alignment.

    beta = (X^+ Y)^T, the minimum-norm interpolator ("the component of beta_T in the span of
    the data", appendix D.2); K is ``final_ntk`` traced over outputs and divided by C.
    On whitened data with one output it is L / sqrt(L^2 + D - 1) (-> 1 as L -> inf).
    Args:
      x: (P, D) training inputs; y: (P,) or (P, C) targets.
    """
    k = final_ntk(x, x, min_norm_fit(x, y), depth)
    return _alignment(np.einsum("pqcc->pq", k) / k.shape[-1], y)


# --- transfer learning with the learned kernel (appendix E) -------------------------------


def _kappa(p: float, eigs: np.ndarray, ridge: float) -> float:
    """kappa = ridge + kappa sum_k lam_k / (lam_k P + kappa), the positive root (eq. 46).

    Root of h(kappa) = 1 - ridge/kappa - sum_k lam_k/(lam_k P + kappa), increasing in
    kappa, h(2 (ridge + sum lam)) >= 1/2. Ridgeless with P >= (number of modes): kappa = 0.
    """
    hi = 2.0 * (ridge + eigs.sum())
    h = lambda k: 1.0 - ridge / k - np.sum(eigs / (eigs * p + k))
    lo = ridge if ridge > 0 else 1e-14 * hi
    if h(lo) >= 0:
        return 0.0
    return brentq(h, lo, hi, xtol=1e-15 * hi, rtol=1e-13)


def generalization_error(p: float, eigs: ArrayLike, v2: ArrayLike, ridge: float) -> float:
    """E_g = kappa^2/(1 - gamma) sum_k v_k^2/(lam_k P + kappa)^2 (eq. 46 with kappa^2 restored).

    gamma = P sum_k lam_k^2/(lam_k P + kappa)^2, kappa from ``_kappa``; v_k = <y phi_k> the
    target's components on the kernel's orthonormal eigenfunctions (Canatar, Bordelon,
    Pehlevan 2021, noise-free). E_g = sum v_k^2 (target variance) at P = 0; 0 at P -> inf.
    Args:
      p: number of training points (real >= 0); eigs: (K,) kernel eigenvalues lam_k >= 0;
      v2: (K,) v_k^2; ridge: lambda >= 0, kernel regression with (K + lambda I)^{-1}.
    """
    eigs, v2 = np.asarray(eigs, float), np.asarray(v2, float)
    kappa = _kappa(p, eigs, ridge)
    den = eigs * p + kappa
    gamma = p * np.sum(np.divide(eigs**2, den**2, out=np.zeros_like(den), where=den > 0))
    frac = np.divide(kappa, den, out=np.ones_like(den), where=den > 0)  # 1: unlearnable mode
    err = np.sum(v2 * frac**2)
    return 0.0 if err == 0 else float(err / (1.0 - gamma))  # 0: kappa = 0, all modes learned


def transfer_error(p: float, a: float, alpha: float, d: int, ridge: float) -> float:
    """E_g of kernel x^T [A b b^T + I] x' on y = w . x, w = alpha b + sqrt(1 - alpha^2) w_perp.

    Appendix E.1 (eqs. 44-48, figure E.1), x ~ N(0, I_D): eigenvalues 1 + A (along b) and 1
    (D - 1 times), v^2 = alpha^2 and 1 - alpha^2 spread over the D - 1; |w| = 1.
    """
    eigs = np.r_[1.0 + a, np.ones(d - 1)]
    v2 = np.r_[alpha**2, np.full(d - 1, (1.0 - alpha**2) / (d - 1))]
    return generalization_error(p, eigs, v2, ridge)
