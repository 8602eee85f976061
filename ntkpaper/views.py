"""What a notebook reads: a figure's runs as the tables behind its panels.

Each view loads complete runs from the store (never trains) and returns one pandas table per
panel; ``claims`` checks the paper's claims against those tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ntkpaper import params as P
from ntkpaper import plan, store


def load(figure_id: str, profile: str) -> P.Figure:
    """The validated figure ``params/<figure_id>.yaml`` for ``profile``."""
    return P.load_figure(P.params_dir() / f"{figure_id}.yaml", profile)


def integrated_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figures 2-4, panels A-E, as tables.

    A: parent errors and losses by snapshot epoch. B: error barrier (test, train) between
    two children at the end, by spawn epoch. C, D: ReLU and kernel distance between the
    parent at every pair of snapshot epochs. E: ReLU, function-space, kernel and weight
    distance between two children at the end, by spawn epoch. ``velocity``: kernel and ReLU
    velocity at the fixed ``parent.pair_dt``, by epoch.
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
    dt, half_step = fig.params.parent.pair_dt, 0.5 * pm["epoch"][-1] / pm["step"][-1]
    f = pd.DataFrame(
        {"kernel": velocity(d, dt, half_step), "relu": velocity(c, dt, half_step)}
        if dt
        else {"kernel": [], "relu": []}
    )
    f.index.name = "epoch"
    return {"panel_A": a, "panel_B": b, "panel_C": c, "panel_D": d, "panel_E": e, "velocity": f}


def velocity(distance: pd.DataFrame, dt: float, tolerance: float = 1e-6) -> pd.Series:
    """v(t) = S(t, t') / (t' - t) for every snapshot t with a snapshot t' = t + dt (within
    ``tolerance``: schedules are rounded to whole steps). At one fixed dt, unlike the gaps
    between consecutive snapshots, which mix the schedule into the velocity (S ~ theta^2 / 2
    for small angles, so S / dt grows with dt at constant angular speed)."""
    t = distance.index.to_numpy(dtype=float)
    m = distance.to_numpy()
    rows = {}
    for i, ti in enumerate(t):
        j = int(np.argmin(np.abs(t - ti - dt)))
        if j > i and abs(t[j] - ti - dt) <= tolerance:
            rows[ti] = m[i, j] / (t[j] - ti)
    return pd.Series(rows, dtype=float)


def kernel_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figures 8, 9 and 19 as tables.

    ``t_tilde``: by t~, the final test error of the Taylor model trained from the parent at
    t~ (``linearised``), of the low-learning-rate children spawned at t~ (``low_lr``, mean
    over children; ``low_lr_converged`` the fraction of them that converged before the cap,
    ``low_lr_epochs`` how long they trained), the fully trained constant-lr parent
    (``baseline``), full training on the
    standard schedule (``standard``, NaN without one), the nonlinear advantage
    (linearised - low_lr) and, where children at the parent's lr were spawned at t~, their
    error barrier. ``curves``: linearised test error by epoch of its training (rows) and t~.
    """
    r = plan.kernel_runs(fig)
    lin = store.final(r.linearised)
    t = pd.Index(np.round(lin["spawn_epoch"], 4), name="t_tilde")
    finals = [store.final(j) for j in r.low_lr]
    low = [float(np.mean(f["test_error"])) for f in finals]
    baseline = float(store.parent_history(r.parent)["test_error"][-1])
    table = pd.DataFrame({"linearised": lin["test_error"][-1], "low_lr": low}, index=t)
    table["baseline"] = baseline
    table["standard"] = (
        float(store.parent_history(r.standard)["test_error"][-1]) if r.standard else np.nan
    )
    table["advantage"] = table["linearised"] - table["low_lr"]
    table["low_lr_converged"] = [float(np.mean(np.isfinite(f["converged_epoch"]))) for f in finals]
    table["low_lr_epochs"] = [float(f["epochs_trained"]) for f in finals]
    barrier = {}
    for job in r.children_measure:
        m = store.measurements(job)
        barrier[float(m["spawn_epoch"])] = float(m["barrier_test"])
    table["barrier"] = [barrier.get(float(e), np.nan) for e in t]
    curves = pd.DataFrame(
        lin["test_error"], index=pd.Index(np.round(lin["epoch"], 4), name="epoch"), columns=t
    )
    return {"t_tilde": table, "curves": curves}
