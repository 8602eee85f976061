"""What a notebook reads: a figure's runs as the tables behind its panels, and its claims.

Each view loads complete runs from the store (never trains), returns one pandas table per
panel, and checks the paper's claims for that figure against the measured numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ntkpaper import params as P
from ntkpaper import plan, store


def load(figure_id: str, profile: str) -> P.Figure:
    """The validated figure ``params/<figure_id>.yaml`` for ``profile``."""
    return P.load_figure(P.params_dir() / f"{figure_id}.yaml", profile)


@dataclass(frozen=True)
class Claim:
    """One row of a claims table: the paper's words, what would confirm them, what we saw."""

    claim: str
    expected: str
    measured: str
    holds: bool


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([c.__dict__ for c in claims])


def integrated_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figures 2-4, panels A-E, as tables.

    A: parent errors and losses by snapshot epoch. B: error barrier (test, train) between
    two children at the end, by spawn epoch. C, D: ReLU and kernel distance between the
    parent at every pair of snapshot epochs. E: ReLU, function-space, kernel and weight
    distance between two children at the end, by spawn epoch.
    """
    r = plan.integrated_runs(fig)
    pm = store.measurements(r.parent_measure)
    epoch = np.round(pm["epoch"], 4)
    a = pd.DataFrame(
        {k: pm[k] for k in ("train_error", "test_error", "train_loss", "test_loss")},
        index=pd.Index(epoch, name="epoch"),
    )
    cms = [store.measurements(j) for j in r.children_measure]
    spawn = pd.Index([float(m["spawn_epoch"]) for m in cms], name="spawn_epoch")
    b = pd.DataFrame(
        {
            "barrier_test": [float(m["barrier_test"]) for m in cms],
            "barrier_train": [float(m["barrier_train"]) for m in cms],
        },
        index=spawn,
    )
    e = pd.DataFrame(
        {
            k: [float(m[k]) for m in cms]
            for k in (
                "relu_distance",
                "function_distance",
                "kernel_distance",
                "weight_distance",
                "weight_distance_relative",
            )
        },
        index=spawn,
    )
    e["child_test_error"] = [float(np.mean(m["test_error"])) for m in cms]
    labels = pd.Index(epoch, name="epoch")
    c = pd.DataFrame(np.asarray(pm["relu_distance"]), index=labels, columns=epoch)
    d = pd.DataFrame(np.asarray(pm["kernel_distance"]), index=labels, columns=epoch)
    return {"panel_A": a, "panel_B": b, "panel_C": c, "panel_D": d, "panel_E": e}


def _velocity(matrix: pd.DataFrame, start: float, stop: float) -> float:
    """Mean distance per epoch between consecutive snapshots with start <= t < stop."""
    t = matrix.index.to_numpy()
    m = matrix.to_numpy()
    v = [m[i, i + 1] / (t[i + 1] - t[i]) for i in range(len(t) - 1) if start <= t[i] < stop]
    return float(np.mean(v)) if v else float("nan")


def integrated_claims(
    view: dict[str, pd.DataFrame], c: P.IntegratedClaims, epochs: float
) -> list[Claim]:
    """Claims of Fort et al. section 4 (figures 2-4) checked on this run's tables."""
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
    for panel, name in (("panel_D", "kernel"), ("panel_C", "ReLU")):
        early = _velocity(view[panel], 0, c.late_epoch)
        later = _velocity(view[panel], c.late_epoch, epochs)
        rows.append(
            Claim(
                f"'the NTK changes rapidly early in training, and more slowly later' "
                f"(section 4, panels C-D): {name} distance per epoch between consecutive snapshots",
                f"epochs < {c.late_epoch:g} faster than epochs >= {c.late_epoch:g}",
                f"{early:.4f} vs {later:.4f} per epoch",
                bool(early > later),
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


def kernel_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figures 8, 9 and 19 as tables.

    ``t_tilde``: by t~, the final test error of the Taylor model trained from the parent at
    t~ (``linearised``), of the low-learning-rate children spawned at t~ (``low_lr``, mean
    over children), the fully trained parent (``baseline``), the nonlinear advantage
    (linearised - low_lr) and, where children at the parent's lr were spawned at t~, their
    error barrier. ``curves``: linearised test error by epoch of its training (rows) and t~.
    """
    r = plan.kernel_runs(fig)
    lin = store.final(r.linearised)
    t = pd.Index(np.round(lin["spawn_epoch"], 4), name="t_tilde")
    low = [float(np.mean(store.final(j)["test_error"])) for j in r.low_lr]
    baseline = float(store.parent_history(r.parent)["test_error"][-1])
    table = pd.DataFrame({"linearised": lin["test_error"][-1], "low_lr": low}, index=t)
    table["baseline"] = baseline
    table["advantage"] = table["linearised"] - table["low_lr"]
    barrier = {}
    for job in r.children_measure:
        m = store.measurements(job)
        barrier[float(m["spawn_epoch"])] = float(m["barrier_test"])
    table["barrier"] = [barrier.get(float(e), np.nan) for e in t]
    curves = pd.DataFrame(
        lin["test_error"], index=pd.Index(np.round(lin["epoch"], 4), name="epoch"), columns=t
    )
    return {"t_tilde": table, "curves": curves}


def linearised_claims(
    view: dict[str, pd.DataFrame], c: P.KernelClaims, epochs: float
) -> list[Claim]:
    """Claims of Fort et al. section 6 (figures 8 and 19) checked on this run's tables."""
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
            "epochs' (section 8; figure 8 green vs purple)",
            f"linearised - baseline <= {c.match_gap:g} for some t~ <= {horizon:g} "
            f"({c.match_fraction:.0%} of {epochs:g} epochs)",
            f"min gap {gap.min():.4f} (baseline {t['baseline'].iloc[0]:.4f})",
            bool(len(gap) and gap.min() <= c.match_gap),
        ),
    ]


def advantage_claims(view: dict[str, pd.DataFrame], c: P.KernelClaims) -> list[Claim]:
    """Claims of Fort et al. section 7 (figure 9) checked on this run's tables."""
    t = view["t_tilde"]
    adv = t["advantage"]
    both = t.dropna(subset=["barrier"])
    corr = float(np.corrcoef(both["advantage"], both["barrier"])[0, 1]) if len(both) > 2 else np.nan
    return [
        Claim(
            "'a significant performance gap persists between linearized and nonlinear training "
            "... but only during the first few epochs' (section 7, figure 9 left)",
            f"advantage(t~=0) > {c.advantage_zero:g} and advantage(last t~) <= "
            f"{c.advantage_zero:g}",
            f"{adv.iloc[0]:.4f} -> {adv.iloc[-1]:.4f}",
            bool(adv.iloc[0] > c.advantage_zero and adv.iloc[-1] <= c.advantage_zero),
        ),
        Claim(
            "'the disappearance of this low learning rate nonlinear advantage is tightly "
            "correlated with the disappearance of the error barrier' (section 7, figure 9 right)",
            f"Pearson correlation of advantage and barrier over t~ >= {c.correlation_min:g}",
            f"{corr:.3f} over {len(both)} t~",
            bool(corr >= c.correlation_min),
        ),
    ]
