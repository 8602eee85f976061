"""What a notebook reads: a figure's runs as the tables behind its panels, and its claims.

Each view loads complete runs from the store (never trains), returns one pandas table per
panel, and checks the paper's claims for that figure against the measured numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ntkpaper import params as P
from ntkpaper import plan, runs


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
    pm = runs.measurements(r.parent_measure)
    epoch = np.round(pm["epoch"], 4)
    a = pd.DataFrame({k: pm[k] for k in ("train_error", "test_error", "train_loss", "test_loss")},
                     index=pd.Index(epoch, name="epoch"))
    cms = [runs.measurements(j) for j in r.children_measure]
    spawn = pd.Index([float(m["spawn_epoch"]) for m in cms], name="spawn_epoch")
    b = pd.DataFrame({"barrier_test": [float(m["barrier_test"]) for m in cms],
                      "barrier_train": [float(m["barrier_train"]) for m in cms]}, index=spawn)
    e = pd.DataFrame({k: [float(m[k]) for m in cms] for k in (
        "relu_distance", "function_distance", "kernel_distance", "weight_distance",
        "weight_distance_relative")}, index=spawn)
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


def integrated_claims(view: dict[str, pd.DataFrame], c: P.IntegratedClaims,
                      epochs: float) -> list[Claim]:
    """Claims of Fort et al. section 4 (figures 2-4) checked on this run's tables."""
    b, e = view["panel_B"]["barrier_test"], view["panel_E"]
    late = b[b.index >= c.late_epoch]
    first = b.iloc[0]
    rows = [
        Claim("'the error barrier ... decreases rapidly with spawning time, falling close to 0 "
              "within two to five epochs' (section 4, panel B)",
              f"test barrier <= {c.barrier_zero:g} for spawn epoch >= {c.late_epoch:g}",
              f"max {late.max():.4f} over spawn epochs {list(late.index)}",
              bool(len(late) and late.max() <= c.barrier_zero)),
        Claim("children spawned at the start are separated by a barrier (panel B; "
              "section 8: basin fate is sealed in the first epochs)",
              f"barrier(spawn {b.index[0]:g}) - max late barrier >= {c.barrier_early_min:g}",
              f"{first:.4f} - {late.max():.4f} = {first - late.max():.4f}",
              bool(len(late) and first - late.max() >= c.barrier_early_min)),
    ]
    for panel, name in (("panel_D", "kernel"), ("panel_C", "ReLU")):
        early = _velocity(view[panel], 0, c.late_epoch)
        later = _velocity(view[panel], c.late_epoch, epochs)
        rows.append(Claim(
            f"'the NTK changes rapidly early in training, and more slowly later' "
            f"(section 4, panels C-D): {name} distance per epoch between consecutive snapshots",
            f"epochs < {c.late_epoch:g} faster than epochs >= {c.late_epoch:g}",
            f"{early:.4f} vs {later:.4f} per epoch", bool(early > later)))
    for col in ("function_distance", "kernel_distance", "relu_distance"):
        rows.append(Claim(
            "'function, kernel and ReLU distances between children at the end of training also "
            f"drop as a function of spawn time' (section 4, panel E): {col}",
            f"last spawn epoch ({e.index[-1]:g}) below spawn epoch {e.index[0]:g}",
            f"{e[col].iloc[0]:.4f} -> {e[col].iloc[-1]:.4f}",
            bool(e[col].iloc[-1] < e[col].iloc[0])))
    return rows
