"""The claims of Fort et al. for each figure, checked on the tables of ``views`` (those of
Atanasov et al. are in ``sa_claims``).

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
