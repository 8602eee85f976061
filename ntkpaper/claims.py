"""The papers' claims for each figure, checked on the tables of ``views``.

Each claim function takes a figure's tables and its ``claims:`` tolerances and returns one row
per claim: the paper's words, what would confirm them here, what this run measured, and whether
it holds. A claim that does not hold at this scale says so; rows that cannot test what the paper
claims (a confound, too few points) say that too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ntkpaper import params as P


@dataclass(frozen=True)
class Claim:
    """One row of a claims table: the paper's words, what would confirm them, what we saw."""

    claim: str
    expected: str
    measured: str
    holds: bool


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([c.__dict__ for c in claims])


def integrated_claims(view: dict[str, pd.DataFrame], c: P.IntegratedClaims, parent: P.Train):
    """Claims of Fort et al. section 4 (figures 2-4) on the integrated view's tables."""
    b, e = view["panel_B"]["barrier_test"], view["panel_E"]
    late = b[b.index >= c.late_epoch]
    first = b.iloc[0]
    rows = [
        Claim(
            "'the error barrier ... decreases rapidly with spawning time, falling close to 0 "
            "within two to five epochs' (section 4, panel B)",
            f"test barrier <= {c.barrier_zero:g} for spawn epoch >= {c.late_epoch:g}",
            f"max {late.max():.4f} over spawn epochs {list(late.index)}",
            bool(len(late) and late.max() <= c.barrier_zero),
        ),
        Claim(
            "children spawned at the start are separated by a barrier (panel B; "
            "section 8: basin fate is sealed in the first epochs)",
            f"barrier(spawn {b.index[0]:g}) - max late barrier >= {c.barrier_early_min:g}",
            f"{first:.4f} - {late.max():.4f} = {first - late.max():.4f}",
            bool(len(late) and first - late.max() >= c.barrier_early_min),
        ),
    ]
    confound = (
        f"; confounded here: the learning-rate drops at epochs {list(parent.lr_drops)} slow the "
        "kernel by themselves (the paper's caveat), so fort-fig4, at a constant learning rate, "
        "is the test of this claim"
        if parent.lr_drops
        else ""
    )
    v = view["velocity"]
    dt = f"{parent.pair_dt:g}" if parent.pair_dt else "? (set parent.pair_dt to measure it)"
    for col, name in (("kernel", "kernel"), ("relu", "ReLU")):
        early, later = v[col][v.index < c.late_epoch], v[col][v.index >= c.late_epoch]
        rows.append(
            Claim(
                f"'the NTK changes rapidly early in training, and more slowly later' (section 4, "
                f"panels C-D): {name} velocity S(t, t + dt) / dt at dt = {dt}" + confound,
                f"mean over t < {c.late_epoch:g} above mean over t >= {c.late_epoch:g}",
                f"{early.mean():.4f} ({len(early)} t) vs {later.mean():.4f} ({len(later)} t) "
                "per epoch",
                bool(len(early) and len(later) and early.mean() > later.mean()),
            )
        )
    for col in ("function_distance", "kernel_distance", "relu_distance"):
        rows.append(
            Claim(
                "'function, kernel and ReLU distances between children at the end of training also "
                f"drop as a function of spawn time' (section 4, panel E): {col}",
                f"last spawn epoch ({e.index[-1]:g}) below spawn epoch {e.index[0]:g}",
                f"{e[col].iloc[0]:.4f} -> {e[col].iloc[-1]:.4f}",
                bool(e[col].iloc[-1] < e[col].iloc[0]),
            )
        )
    return rows


def low_lr_converged(t: pd.DataFrame, low_lr: P.LowLrChildren) -> Claim:
    """Whether the low-lr children were trained 'until convergence' or stopped at the cap."""
    capped = list(t.index[t["low_lr_converged"] < 1])
    return Claim(
        "the low-learning-rate children are trained 'until convergence' (appendix D.3)",
        f"every child's training loss falls by < {low_lr.converged_rtol:g} (relative) between "
        f"two epochs before the cap of {low_lr.epochs:g} epochs",
        f"converged at every t~ (after {t['low_lr_epochs'].min():g}-{t['low_lr_epochs'].max():g} "
        "epochs)"
        if not capped
        else f"hit the cap unconverged at t~ {capped} (fraction converged "
        f"{t['low_lr_converged'].mean():.2f}): their errors are those at the cap, "
        "not at convergence",
        not capped,
    )


def linearised_claims(
    view: dict[str, pd.DataFrame], c: P.KernelClaims, epochs: float, low_lr: P.LowLrChildren
):
    """Claims of Fort et al. section 6 (figures 8 and 19) on the kernel view's tables."""
    t = view["t_tilde"]
    first = t["linearised"].iloc[0]
    early = t[(t.index > 0) & (t.index <= c.within_epochs)]["linearised"]
    horizon = c.match_fraction * epochs
    gap = (t["linearised"] - t["baseline"])[t.index <= horizon]
    return [
        Claim(
            "'the NTK rapidly learns useful features in training data, outperforming the "
            "standard NTK at initialization by a factor of 3 within 3 to 4 epochs' (section 8; "
            "figure 8 green)",
            f"min error for 0 < t~ <= {c.within_epochs:g} <= error(t~=0) / {c.speedup:g}",
            f"{early.min():.4f} vs {first:.4f} / {c.speedup:g} = {first / c.speedup:.4f}",
            bool(len(early) and early.min() <= first / c.speedup),
        ),
        Claim(
            "'the data dependent kernel performance continues to improve, matching that of full "
            "network training by 30 to 90 epochs ... representing 15% to 45% of the full 200 "
            "epochs' (section 8; figure 8 green vs purple). Baseline: the constant-lr parent, the "
            "network the linearised models start from (same schedule, like for like); the "
            "standard schedule's error is given beside it",
            f"linearised - baseline <= {c.match_gap:g} for some t~ <= {horizon:g} "
            f"({c.match_fraction:.0%} of {epochs:g} epochs)",
            f"min gap {gap.min():.4f} (baseline {t['baseline'].iloc[0]:.4f}"
            + (
                f"; standard schedule {t['standard'].iloc[0]:.4f})"
                if np.isfinite(t["standard"].iloc[0])
                else "; no standard-schedule run in this file)"
            ),
            bool(len(gap) and gap.min() <= c.match_gap),
        ),
        low_lr_converged(t, low_lr),
    ]


def correlations(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """Pearson and Spearman (Pearson of the ranks) correlation of two series."""
    if len(x) < 3:
        return float("nan"), float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant series: NaN, said as such
        pearson = float(np.corrcoef(x, y)[0, 1])
        spearman = float(np.corrcoef(x.rank(), y.rank())[0, 1])
    return pearson, spearman


def correlation_claim(claim: str, x: pd.Series, y: pd.Series, what: str, minimum: float,
                      points: int, over: str) -> Claim:  # fmt: skip
    """'x and y fall together': Pearson and Spearman correlation at least ``minimum`` over at
    least ``points`` points (fewer: the claim is not tested, and says so)."""
    pearson, spearman = correlations(x, y)
    enough = len(x) >= points
    return Claim(
        claim,
        f"Pearson and Spearman correlation of {what} >= {minimum:g} over >= {points} {over}",
        f"Pearson {pearson:.3f}, Spearman {spearman:.3f} over {len(x)} {over.split(' <=')[0]}"
        + ("" if enough else " (too few points to test the claim)"),
        bool(enough and min(pearson, spearman) >= minimum),
    )


def advantage_claims(view: dict[str, pd.DataFrame], c: P.KernelClaims, low_lr: P.LowLrChildren):
    """Claims of Fort et al. section 7 (figure 9) on the kernel view's tables."""
    t = view["t_tilde"]
    adv = t["advantage"]
    late = adv[adv.index >= c.late_epoch]
    both = t.dropna(subset=["barrier"])
    return [
        Claim(
            "'a significant performance gap persists between linearized and nonlinear training "
            "... but only during the first few epochs' (section 7, figure 9 left)",
            f"advantage(t~=0) > {c.advantage_zero:g} and advantage <= {c.advantage_zero:g} at "
            f"every t~ >= {c.late_epoch:g}",
            f"{adv.iloc[0]:.4f} at t~=0; max {late.max():.4f} over t~ {list(late.index)}",
            bool(adv.iloc[0] > c.advantage_zero and len(late) and late.max() <= c.advantage_zero),
        ),
        correlation_claim(
            "'the disappearance of this low learning rate nonlinear advantage is tightly "
            "correlated with the disappearance of the error barrier' (section 7, figure 9 right)",
            both["advantage"],
            both["barrier"],
            "advantage and barrier",
            c.correlation_min,
            c.correlation_points,
            "t~",
        ),  # fmt: skip
        low_lr_converged(t, low_lr),
    ]


def function_distance_claims(view: dict[str, pd.DataFrame], c: P.IntegratedClaims,
                             d: P.FunctionDistance) -> list[Claim]:  # fmt: skip
    """Claims of Fort et al. section 4 on figures 6, 10 and 20 (constant learning rate)."""
    t = view["spawn"]
    late = t[t.index >= c.late_epoch]
    fd = t["function_distance"]
    rows = [
        Claim(
            "children spawned late 'arrive at the same loss basin' (section 4, figure 6 right): "
            "their error barrier vanishes",
            f"test barrier <= {c.barrier_zero:g} for spawn epoch >= {c.late_epoch:g}",
            f"max {late['barrier_test'].max():.4f} over spawn epochs {list(late.index)}",
            bool(len(late) and late["barrier_test"].max() <= c.barrier_zero),
        ),
        Claim(
            "'this loss basin can still exhibit non-negligible function diversity (albeit "
            "smaller than the diversity between basins)' (section 4, figure 6 left)",
            f"function distance >= {d.diversity_min:g} at every spawn epoch >= {c.late_epoch:g}, "
            f"and below that of spawn epoch {t.index[0]:g}",
            f"{fd.iloc[0]:.3f} at spawn {t.index[0]:g}; {late['function_distance'].min():.3f}-"
            f"{late['function_distance'].max():.3f} late",
            bool(
                len(late)
                and late["function_distance"].min() >= d.diversity_min
                and late["function_distance"].max() < fd.iloc[0]
            ),
        ),
    ]
    if d.smooth_window:
        s = t["smoothed"]
        rows.append(
            Claim(
                "the children's function distance falls with spawn epoch (figure 10, smoothed "
                f"over a window of {d.smooth_window:g} epochs)",
                "smoothed distance at the last spawn epoch below the first",
                f"{s.iloc[0]:.3f} -> {s.iloc[-1]:.3f}",
                bool(s.iloc[-1] < s.iloc[0]),
            )
        )
    return rows


def velocity_claims(view: dict[str, pd.DataFrame], c: P.IntegratedClaims,
                    v: P.Velocity) -> list[Claim]:  # fmt: skip
    """Claims of Fort et al. section 5 (figure 7): barrier and kernel velocity fall together,
    and the velocity settles low but non-zero once the barrier has vanished."""
    both = view["both"]
    k = view["velocity"]["kernel"]
    b = view["barrier"]["barrier_test"]
    sealed = b[b <= c.barrier_zero]
    after = k[k.index >= float(sealed.index[0])] if len(sealed) else k.iloc[:0]
    return [
        correlation_claim(
            "'the early chaotic training regime is characterized by a tightly correlated "
            "reduction in both error barrier and kernel velocity' (section 5, figure 7 right)",
            both["kernel_velocity"],
            both["barrier_test"],
            "velocity and barrier",
            v.correlation_min,
            v.correlation_points,
            f"spawn epochs <= {v.zoom_until:g}",
        ),  # fmt: skip
        Claim(
            "the kernel velocity is 'stabilizing to a low non-zero velocity after the error "
            "barrier disappears' (section 5, figure 7)",
            f"from the first spawn epoch with barrier <= {c.barrier_zero:g} on: velocity > 0 and "
            f"<= {v.slow_fraction:g} x its largest value",
            f"from epoch {sealed.index[0]:g}: {after.min():.4f}-{after.max():.4f} per epoch, "
            f"largest {k.max():.4f}"
            if len(after)
            else f"the barrier never falls to {c.barrier_zero:g} (min {b.min():.4f})",
            bool(len(after) and after.min() > 0 and after.max() <= v.slow_fraction * k.max()),
        ),
    ]


def plane_claims(view: dict, c: P.IntegratedClaims, pg: P.PlaneGrid) -> list[Claim]:
    """Claims of Fort et al. section 4 on figure 5, early against late spawn."""
    s = view["summary"]
    early, late = s.loc[pg.spawn_epochs[0]], s.loc[pg.spawn_epochs[1]]
    e0, e1 = pg.spawn_epochs
    rows = [
        Claim(
            "'two children spawned at an early time in the chaotic training regime arrive at two "
            "different loss basins ... while two children spawned at a later time ... arrive at "
            "the same loss basin' (section 4, figure 5 left)",
            f"test barrier > {c.barrier_zero:g} at spawn {e0:g}, <= {c.barrier_zero:g} at {e1:g}",
            f"{early['barrier_test']:.4f} at {e0:g}; {late['barrier_test']:.4f} at {e1:g}",
            bool(early["barrier_test"] > c.barrier_zero >= late["barrier_test"]),
        )
    ]
    for at, where in (("spawn", "the spawn point"), ("child", "a child")):
        gap_e, gap_l = early[f"tangent_gap_{at}"], late[f"tangent_gap_{at}"]
        rows.append(
            Claim(
                f"the tangent plane at {where} 'is insufficient to describe the error along the "
                "full curved manifold ... when the children are in different basins ..., but can "
                "approximately describe the loss landscape when the children are in the same "
                "basin' (section 4, figure 5 right)",
                f"mean |tangent - network| test error over the grid > {pg.tangent_gap:g} at spawn "
                f"{e0:g} and <= {pg.tangent_gap:g} at {e1:g}",
                f"{gap_e:.4f} at {e0:g}; {gap_l:.4f} at {e1:g}",
                bool(gap_e > pg.tangent_gap >= gap_l),
            )
        )
    return rows


def tsne_claims(view: dict[str, pd.DataFrame], c: P.IntegratedClaims) -> list[Claim]:
    """Figure 11: the lineages bifurcate, early spawns farther apart in function space."""
    a = view["apart"]["children_apart"]
    late = a[a.index >= c.late_epoch]
    return [
        Claim(
            "'the bifurcating evolution of all parents and children in function space' "
            "(section 4, figure 11): children spawned early end farther apart than children "
            "spawned late (measured on the probabilities, not on the t-SNE map)",
            f"distance between children's predicted probabilities at the end: spawn {a.index[0]:g} "
            f"above every spawn epoch >= {c.late_epoch:g}",
            f"{a.iloc[0]:.4f} at {a.index[0]:g}; max {late.max():.4f} late",
            bool(len(late) and a.iloc[0] > late.max()),
        )
    ]


# ---------------------------------------------------------------------------------------
# Silent alignment (Atanasov et al. 2022)
# ---------------------------------------------------------------------------------------


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
    g = view["gram"]
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


def geometry_claims(view: dict[str, pd.DataFrame], c: P.IntegratedClaims, g: P.Geometry,
                    parent: P.Train) -> list[Claim]:  # fmt: skip
    """Claims of Fort et al. appendix B and C.2 (figures 14, 17)."""
    h, b, e = view["hessian"], view["panel_B"]["barrier_test"], view["panel_E"]
    early = h[h.index < c.late_epoch]
    horizon = g.sealed_fraction * parent.epochs
    after = b[b.index >= horizon]
    lg = e["logit_gradient_distance"]
    return [
        Claim(
            "the top Hessian eigenvalue exceeds 2/eta early in training (the step can escape a "
            "quadratic basin: eta lambda_max - 2 > 0), then falls below it (appendix B.3, "
            "figure 14)",
            f"escape threshold > 0 at some epoch < {c.late_epoch:g} and < 0 at the end"
            + (
                "; with Adam eta is Adam's step size, not a gradient-descent rate, so this is "
                "not the paper's test"
                if parent.optimizer == "adam"
                else ""
            ),
            f"max {early['escape'].max():.2f} before epoch {c.late_epoch:g}; "
            f"{h['escape'].iloc[-1]:.2f} at the end",
            bool(len(early) and early["escape"].max() > 0 and h["escape"].iloc[-1] < 0),
        ),
        Claim(
            "'very early in the training process - between 1 and 10% - of training time, the "
            "final basin fate of the neural network is determined' (appendix C.2)",
            f"test barrier <= {c.barrier_zero:g} for every spawn epoch >= {horizon:g} "
            f"({g.sealed_fraction:.0%} of {parent.epochs:g} epochs)",
            f"max {after.max():.4f} over spawn epochs {list(after.index)}"
            if len(after)
            else f"no spawn epoch at or after {horizon:g}",
            bool(len(after) and after.max() <= c.barrier_zero),
        ),
        Claim(
            "the logit-gradient distance between children drops with spawn time, like the other "
            "distances (figure 14, children row)",
            f"last spawn epoch ({lg.index[-1]:g}) below spawn epoch {lg.index[0]:g}",
            f"{lg.iloc[0]:.4f} -> {lg.iloc[-1]:.4f}",
            bool(lg.iloc[-1] < lg.iloc[0]),
        ),
    ]
