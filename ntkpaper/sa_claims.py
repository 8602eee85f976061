"""The claims of Atanasov, Bordelon and Pehlevan 2022 for each figure, checked on the tables
of ``views.silent_view`` (and ``gram_view``, ``transfer_view``): each parameter file names the
claims it tests (``claims.rows``), ``SILENT_CLAIMS`` says which function tests each."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ntkpaper import params as P
from ntkpaper.claims import Claim


def _each(table: pd.DataFrame, fmt: str) -> str:
    """One ``fmt`` per row of ``table`` (its columns by name), joined by '; '."""
    return "; ".join(fmt.format(**row) for row in table.to_dict("records"))


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x."""
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if ok.sum() >= 2 else np.nan


def silent_claims(view: dict, c: P.SaClaims) -> list[Claim]:
    """The claims ``c.rows`` names, on ``views.silent_view``'s tables (``gram`` on
    ``views.gram_view``'s, passed as ``view["gram"]``)."""
    s, curves = view["summary"], view["curves"]
    rows = []
    for name in c.rows:
        rows += SILENT_CLAIMS[name](s, curves, view, c)
    return rows


def _silent(s, curves, view, c):
    s = s.loc[s.groupby("run", sort=False).sigma.idxmin()]  # each run's smallest sigma
    precedes = s.t_align < s.t_loss
    expected = s.silent_expected.astype(bool)
    said = "before" if c.silent else "no earlier than"
    return [Claim(
        "alignment precedes the loss drop: 'early in training ... the NTK eigenvectors and "
        "relative eigenvalues align to the target function and stay fixed' while the loss has "
        "not moved (section 2, figure 1; figure 3c at small sigma)" if c.silent else
        "in the unwhitened case 'the loss decreases significantly before the kernel reaches its "
        "final alignment value' (appendix I)",
        f"at each run's smallest sigma, alignment reaches {c.before:g} x its final value {said} "
        f"the time the loss falls to {c.before:g} x its initial value"
        + ("" if (expected == c.silent).all() else "; the paper expects the opposite for " +
           ", ".join(s.run[expected != c.silent])),
        _each(s, "{run} sigma {sigma:g}: {t_align:.3g} vs {t_loss:.3g}"),
        bool(len(s) and (precedes == expected).all()),
    )]  # fmt: skip


def _final_ntk(s, curves, view, c):
    ratio = s.rms_final_ntk / s.rms_initial_ntk
    return [Claim(
        "'the final learned function is well described as a kernel regression solution with the "
        "final kernel ... the initial NTK is not a good model of the network's predictions' "
        "(figure 1b)",
        f"RMS gap to the network on test points: final NTK <= {c.match_ratio:g} x initial NTK's",
        _each(s, "{run}: {rms_final_ntk:.3g} vs {rms_initial_ntk:.3g}"),
        bool(len(s) and (ratio <= c.match_ratio).all()),
    )]  # fmt: skip


def _max_alignment(s, curves, view, c):
    lin = s[s.activation == "linear"]
    gap = (lin.alignment_final - lin.alignment_theory).abs() / lin.alignment_theory
    others = s[s.activation != "linear"]
    note = ("; non-linear runs beside the linear theory (the paper overlays it, not a claim): " +
            "; ".join(f"{r.run} {r.alignment_final:.3f} vs {r.alignment_theory:.3f}"
                      for r in others.itertuples())) if len(others) else ""  # fmt: skip
    return [Claim(
        "the final alignment of a linear network is the analytic maximal final alignment "
        "(appendix D.2, eq. 42; eq. 53 for several classes), dashed in figures 1, 3 and 5",
        f"linear runs: |final - theory| <= {c.rtol:g} x theory",
        ("; ".join(f"{r.run} sigma {r.sigma:g}: {r.alignment_final:.3f} vs {r.alignment_theory:.3f}"
                   for r in lin.itertuples()) or "no linear run") + note,
        bool(len(lin) and (gap <= c.rtol).all()),
    )]  # fmt: skip


def _anisotropy(s, curves, view, c):
    by = s.reset_index(drop=True)
    lag = by.t_loss - by.t_align
    first, last = by.iloc[0], by.iloc[-1]
    return [
        Claim(
            "whitened data align 'all at once before the loss decreases'; anisotropic data do "
            "not (section 5, figure 6 b, e)",
            f"alignment precedes the loss ({c.before:g} of final / initial) for {first.run}, "
            f"with a longer lead than for {last.run}",
            _each(by, "{run}: align {t_align:.3g}, loss {t_loss:.3g}"),
            bool(first.t_align < first.t_loss and lag.iloc[0] > lag.iloc[-1]),
        ),
        Claim(
            "'the final NTK predictor gives a better predictor for the neural network when the "
            "data is whitened, but still substantially outperforms the initial kernel' (figure 6f)",
            f"final-NTK RMS gap smallest for {first.run}; below the initial NTK's for every run",
            _each(by, "{run}: {rms_final_ntk:.3g} vs {rms_initial_ntk:.3g}"),
            bool(by.rms_final_ntk.idxmin() == 0 and (by.rms_final_ntk < by.rms_initial_ntk).all()),
        ),
    ]  # fmt: skip


def _closed_form_loss(s, curves, view, c):
    out = []
    for (run, sigma), g in curves.groupby(["run", "sigma"], sort=False):
        if "loss_theory" in g and g.loss_theory.notna().all():
            out.append((run, sigma, float((g.loss - g.loss_theory).abs().max() / g.loss.iloc[0])))
    return [Claim(
        "two-layer linear networks from small initialisation 'follow sigmoidal trajectories' "
        "given by the closed form (appendix B.3; figure 3a, theory dashed)",
        f"max |loss - closed form| <= {c.rtol:g} x initial loss, every sigma",
        "; ".join(f"sigma {sg:g}: {gap:.3g}" for _, sg, gap in out) or "no two-layer linear run",
        bool(out and all(gap <= c.rtol for *_, gap in out)),
    )]  # fmt: skip


def _t_half_log(s, curves, view, c):
    ok = s.dropna(subset=["t_half_theory"])  # a sigma whose loss never halved stays, and fails
    gap = (ok.t_half - ok.t_half_theory).abs() / ok.t_half_theory
    slope = _slope(1 / ok.sigma.to_numpy() ** 2, np.exp(ok.t_half.to_numpy()))  # t vs log(1/s^2)
    return [Claim(
        "'the Phase I time t_1/2 ... scales logarithmically with sigma^2' (figure 3b): "
        "t_1/2 = log(((sqrt 2 - 1) s + c0) / c0) / (2 s) in gradient-flow time (docs/theory.md)",
        f"measured t_1/2 within {c.rtol:g} (relative) of the closed form at every sigma",
        _each(ok, "sigma {sigma:g}: {t_half:.3g} vs {t_half_theory:.3g}")
        + f"; slope d t_1/2 / d log(1/sigma^2) = {slope:.3f} (theory 1/(2s) = "
        f"{1 / (2 * ok.teacher_norm.mean()):.3f})",
        bool(len(ok) >= 2 and ok.t_half.notna().all() and (gap <= c.rtol).all()),
    )]  # fmt: skip


def _q_r(s, curves, view, c):
    out = []
    for (run, _), g in curves.groupby(["run", "sigma"], sort=False):
        if "q_theory" in g and g.q_theory.notna().all():
            scale = max(g.q.abs().max(), 1e-12)
            out.append(
                (
                    run,
                    float(
                        max((g.q - g.q_theory).abs().max(), (g.r - g.r_theory).abs().max()) / scale
                    ),
                )
            )
    return [Claim(
        "q(t) and r(t) of two-layer linear networks follow the exact solutions, eqs. 27-28 "
        "(figure B.1)",
        f"max |measured - exact| <= {c.rtol:g} x max q, for q and r, every run",
        "; ".join(f"{run}: {gap:.3g}" for run, gap in out) or "no two-layer linear run",
        bool(out and all(gap <= c.rtol for _, gap in out)),
    )]  # fmt: skip


def _spike(s, curves, view, c):
    gap = (s.eigen_ratio - s.eigen_ratio_theory).abs() / s.eigen_ratio_theory
    grows = bool(len(s) >= 2 and (np.diff(s.eigen_ratio.to_numpy()) > 0).all())
    return [Claim(
        "'the size of the rank-one spike in the kernel grows linearly with the first layer's "
        "relative learning rate' (figure D.1b): largest over smallest eigenvalue of the final NTK "
        "= 1 + A/B (eq. 37)",
        f"within {c.rtol:g} (relative) of eq. 37 for every ratio, and growing with it",
        _each(s, "{run}: {eigen_ratio:.3f} vs {eigen_ratio_theory:.3f}"),
        bool(len(s) and (gap <= c.rtol).all() and grows),
    )]  # fmt: skip


def _t_half_power(s, curves, view, c):
    out = []
    for run, g in s.groupby("run", sort=False):
        depth = int(g.depth.iloc[0])
        half, cos = (
            _slope(g.sigma.to_numpy(), g.t_half.to_numpy()),
            _slope(g.sigma.to_numpy(), g.t_cos.to_numpy()),
        )
        out.append((run, depth, half, cos, bool((g.t_cos < g.t_half).all())))
    return [Claim(
        "'the time to get to 1/2 the initial loss and the time for the cosine similarity of "
        "W1^T W1 with beta beta^T to reach 1/2 both scale as sigma^(-L+2), however ... alignment "
        "occurs before half loss is achieved' (figure 4c)",
        f"slopes of log t against log sigma within {c.rtol:g} x (L - 2) of -(L - 2); cos reaches "
        "1/2 first at every sigma",
        "; ".join(f"{run}: t_1/2 slope {h:.2f}, cos slope {cs:.2f} (theory {2 - d}), "
                  f"cos first {first}" for run, d, h, cs, first in out),
        bool(out and all(abs(h + d - 2) <= c.rtol * (d - 2) and abs(cs + d - 2) <= c.rtol * (d - 2)
                         and first for _, d, h, cs, first in out)),
    )]  # fmt: skip


def _depth_alignment(s, curves, view, c):
    by = s.sort_values("depth")
    gap = (by.alignment_final - by.alignment_theory).abs() / by.alignment_theory
    rises = bool((np.diff(by.alignment_final.to_numpy()) > 0).all())
    return [Claim(
        "'final kernel alignment increases monotonically with depth L and approaches 1' "
        "(figure D.3b; D.4a), at the value of eq. 42",
        f"final alignment rises with L, each within {c.rtol:g} (relative) of eq. 42's",
        _each(by, "L = {depth}: {alignment_final:.3f} vs {alignment_theory:.3f}"),
        bool(len(by) >= 2 and rises and (gap <= c.rtol).all()),
    )]  # fmt: skip


def _gram(s, curves, view, c):
    g = view["gram"]["table"]
    return [Claim(
        "'the final gram matrix has the form K_inf ~ (L - 1) y y^T + K_0' (figure D.4b; eq. 42)",
        f"kernel distance S(K_inf, eq. 42) <= {c.rtol:g} at every depth, and below S(K_inf, X X^T)",
        "; ".join(f"L = {r.depth}: {r.distance_to_theory:.3g} (vs X X^T {r.distance_to_inputs:.3g})"
                  for r in g.itertuples()),
        bool(len(g) and (g.distance_to_theory <= c.rtol).all()
             and (g.distance_to_theory < g.distance_to_inputs).all()),
    )]  # fmt: skip


def transfer_claims(t: pd.DataFrame, c: P.SaClaims) -> list[Claim]:
    """Figure E.1 (theory only): limits and orderings of eq. 46."""
    first = t[t.P == t.P.min()]
    big_a = t[(t.alpha == t.alpha.max()) & (t.P == t.P.min())].sort_values("A")
    at_one = t[(t.A == 1.0)].groupby("alpha").error.mean()
    return [
        Claim(
            "with few samples the error is the target's variance (eq. 46 with kappa^2, "
            "Canatar et al. 2021; as printed it does not tend there)",
            f"E_g at the smallest P within {c.rtol:g} of 1 (unit task) for A = 0",
            f"{first[first.A == 0].error.max():.3f}",
            bool(abs(first[first.A == 0].error.max() - 1) <= c.rtol),
        ),
        Claim(
            "'neural networks with large feature learning A give lower generalization error at "
            "small sample sizes' for a correlated task (figure E.1a)",
            f"at alpha = {t.alpha.max():g} and the smallest P, E_g falls as A grows",
            "; ".join(f"A = {r.A:g}: {r.error:.3f}" for r in big_a.itertuples()),
            bool(len(big_a) >= 2 and (np.diff(big_a.error.to_numpy()) < 0).all()),
        ),
        Claim(
            "'for fixed A = 1, the tasks strongly correlated with beta are easier' (figure E.1b)",
            "mean E_g over P falls as alpha grows",
            "; ".join(f"alpha {a:g}: {e:.3f}" for a, e in at_one.items())
            or "A = 1 not in the file",
            bool(len(at_one) >= 2 and (np.diff(at_one.to_numpy()) < 0).all()),
        ),
    ]


SILENT_CLAIMS = {
    "silent": _silent, "final_ntk": _final_ntk, "max_alignment": _max_alignment,
    "anisotropy": _anisotropy, "closed_form_loss": _closed_form_loss, "t_half_log": _t_half_log,
    "q_r": _q_r, "spike": _spike, "t_half_power": _t_half_power,
    "depth_alignment": _depth_alignment, "gram": _gram,
}  # fmt: skip
"""The silent-alignment claims by name (``claims.rows`` of a parameter file); ``transfer``
is ``transfer_claims``."""
