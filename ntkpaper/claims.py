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


def advantage_claims(view: dict[str, pd.DataFrame], c: P.KernelClaims, low_lr: P.LowLrChildren):
    """Claims of Fort et al. section 7 (figure 9) on the kernel view's tables."""
    t = view["t_tilde"]
    adv = t["advantage"]
    late = adv[adv.index >= c.late_epoch]
    both = t.dropna(subset=["barrier"])
    pearson, spearman = correlations(both["advantage"], both["barrier"])
    enough = len(both) >= c.correlation_points
    return [
        Claim(
            "'a significant performance gap persists between linearized and nonlinear training "
            "... but only during the first few epochs' (section 7, figure 9 left)",
            f"advantage(t~=0) > {c.advantage_zero:g} and advantage <= {c.advantage_zero:g} at "
            f"every t~ >= {c.late_epoch:g}",
            f"{adv.iloc[0]:.4f} at t~=0; max {late.max():.4f} over t~ {list(late.index)}",
            bool(adv.iloc[0] > c.advantage_zero and len(late) and late.max() <= c.advantage_zero),
        ),
        Claim(
            "'the disappearance of this low learning rate nonlinear advantage is tightly "
            "correlated with the disappearance of the error barrier' (section 7, figure 9 right)",
            f"Pearson and Spearman correlation of advantage and barrier >= {c.correlation_min:g} "
            f"over >= {c.correlation_points} t~",
            f"Pearson {pearson:.3f}, Spearman {spearman:.3f} over {len(both)} t~"
            + ("" if enough else " (too few points to test the claim)"),
            bool(enough and min(pearson, spearman) >= c.correlation_min),
        ),
        low_lr_converged(t, low_lr),
    ]
