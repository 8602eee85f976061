"""Every claim on constructed tables: one where it must hold, one where it must fail, one at the
boundary; and the kernel velocity at a fixed dt against a kernel rotating at constant speed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ntkpaper import claims, views
from ntkpaper import params as P

# Tolerances and table values are exact binary fractions, so boundaries are exact.
INTEGRATED = P.IntegratedClaims(late_epoch=2, barrier_zero=0.0625, barrier_early_min=0.25)
KERNEL = P.KernelClaims(
    late_epoch=2, correlation_points=6, speedup=3, within_epochs=4, match_gap=0.0625,
    match_fraction=0.45, advantage_zero=0.0625, correlation_min=0.5,
)  # fmt: skip
LOW_LR = P.LowLrChildren(lr=0.005, epochs=4, converged_rtol=0.01, n_children=2, seed=3)
PARENT = P.Train(
    lr=0.1, momentum=0.9, weight_decay=0.0, lr_drops=(), lr_decay=0.1, seed=0, epochs=6,
    snapshots=(P.Segment(0.2, 2), P.Segment(1, 6)), pair_dt=0.4,
)  # fmt: skip


def holds(rows, fragment: str) -> bool:
    (row,) = [r for r in rows if fragment in r.claim]
    return row.holds


# ---------------------------------------------------------------------------------------
# Kernel velocity
# ---------------------------------------------------------------------------------------


def rotating_distances(t: np.ndarray, omega: float) -> pd.DataFrame:
    """S between K(t) = cos(wt) A + sin(wt) B, A and B orthonormal: 1 - cos(w (t - s))."""
    return pd.DataFrame(1 - np.cos(omega * (t[:, None] - t[None, :])), index=t, columns=t)


@pytest.mark.parametrize(
    "schedule",
    [PARENT, dataclasses.replace(PARENT, snapshots=(P.Segment(0.5, 1), P.Segment(2, 6)))],
    ids=["dense-then-sparse", "other"],
)
def test_constant_angular_speed_gives_one_velocity_whatever_the_schedule(schedule):
    t = np.array(schedule.snapshot_epochs())
    v = views.velocity(rotating_distances(t, omega=0.3), dt=0.4)
    assert len(v) >= 5 and v.index.min() == 0 and v.index.max() >= 4
    np.testing.assert_allclose(v.to_numpy(), (1 - np.cos(0.3 * 0.4)) / 0.4, rtol=1e-9)
    # the consecutive-gap estimate the fixed dt replaces would see the schedule, not the kernel
    gaps = np.diff(t)
    consecutive = (1 - np.cos(0.3 * gaps)) / gaps
    assert consecutive.max() / consecutive.min() > 1.5


def test_velocity_pairs_found_within_half_a_step_and_divided_by_the_true_gap():
    t = np.array([0.0, 0.4091, 1.0, 1.4091, 2.0])  # 0.4 epoch rounded to whole steps (22 / epoch)
    d = rotating_distances(t, omega=0.3)
    v = views.velocity(d, dt=0.4, tolerance=0.5 / 22)
    assert list(v.index) == [0.0, 1.0]
    np.testing.assert_allclose(v.to_numpy(), (1 - np.cos(0.3 * 0.4091)) / 0.4091)
    assert len(views.velocity(d, dt=0.4, tolerance=1e-6)) == 0


# ---------------------------------------------------------------------------------------
# Figures 2-4
# ---------------------------------------------------------------------------------------


def integrated_tables(barrier, velocity_early=0.1, velocity_late=0.01, distances=(0.5, 0.1)):
    spawn = pd.Index([0.0, 0.4, 2.0, 4.0], name="spawn_epoch")
    b = pd.DataFrame({"barrier_test": barrier, "barrier_train": barrier}, index=spawn)
    e = pd.DataFrame(
        {k: np.linspace(*distances, 4) for k in ("function_distance", "kernel_distance")}
        | {"relu_distance": np.linspace(*distances, 4)},
        index=spawn,
    )
    t = pd.Index([0.0, 0.2, 1.0, 2.0, 3.0, 4.0], name="epoch")
    v = [velocity_early] * 3 + [velocity_late] * 3
    return {"panel_B": b, "panel_E": e, "velocity": pd.DataFrame({"kernel": v, "relu": v}, t)}


@pytest.mark.parametrize(
    "barrier,zero,separated",
    [
        ([0.5, 0.25, 0.03125, 0.0], True, True),
        ([0.5, 0.25, 0.125, 0.0], False, True),  # late barrier above barrier_zero
        ([0.5, 0.25, 0.0625, 0.0], True, True),  # exactly barrier_zero: holds
        ([0.25, 0.25, 0.0625, 0.0], True, False),  # 0.25 - 0.0625 < barrier_early_min
        ([0.3125, 0.25, 0.0625, 0.0], True, True),  # 0.3125 - 0.0625 = barrier_early_min
    ],
)
def test_barrier_claims(barrier, zero, separated):
    rows = claims.integrated_claims(integrated_tables(barrier), INTEGRATED, PARENT)
    assert holds(rows, "falling close to 0") is zero
    assert holds(rows, "separated by a barrier") is separated


@pytest.mark.parametrize(
    "early,late,expected", [(0.1, 0.01, True), (0.01, 0.1, False), (0.05, 0.05, False)]
)
def test_velocity_claims_compare_early_and_late_means(early, late, expected):
    rows = claims.integrated_claims(
        integrated_tables([0.2, 0.1, 0, 0], early, late), INTEGRATED, PARENT
    )
    assert holds(rows, "kernel velocity") is expected
    assert holds(rows, "ReLU velocity") is expected
    assert "confounded" not in " ".join(r.claim for r in rows)


def test_velocity_claims_under_learning_rate_drops_say_they_are_confounded():
    parent = dataclasses.replace(PARENT, lr_drops=(3.0,))
    rows = claims.integrated_claims(integrated_tables([0.2, 0.1, 0, 0]), INTEGRATED, parent)
    (row,) = [r for r in rows if "kernel velocity" in r.claim]
    assert "confounded" in row.claim and "[3.0]" in row.claim and "fort-fig4" in row.claim


@pytest.mark.parametrize(
    "distances,expected", [((0.5, 0.1), True), ((0.1, 0.5), False), ((0.3, 0.3), False)]
)
def test_children_distance_claims(distances, expected):
    rows = claims.integrated_claims(
        integrated_tables([0.2, 0.1, 0, 0], distances=distances), INTEGRATED, PARENT
    )
    for col in ("function_distance", "kernel_distance", "relu_distance"):
        assert holds(rows, f"panel E): {col}") is expected


# ---------------------------------------------------------------------------------------
# Figures 8, 9, 19
# ---------------------------------------------------------------------------------------


def kernel_table(linearised, low_lr, barrier, baseline=0.25):
    t = pd.Index([0.0, 0.2, 0.4, 1.0, 2.0, 4.0, 6.0], name="t_tilde")
    table = pd.DataFrame({"linearised": linearised, "low_lr": low_lr}, index=t)
    table["baseline"] = baseline
    table["standard"] = 0.1875
    table["low_lr_converged"] = 1.0
    table["low_lr_epochs"] = 2.0
    table["advantage"] = table["linearised"] - table["low_lr"]
    table["barrier"] = barrier
    return {"t_tilde": table}


LIN = [0.75, 0.5, 0.5, 0.375, 0.3125, 0.25, 0.25]
BARRIER = [0.25, 0.125, 0.125, 0.0625, 0.0, 0.0, np.nan]  # children spawned up to t~ = 4


@pytest.mark.parametrize(
    "linearised,speedup",
    [
        ([0.75, 0.5, 0.125, 0.375, 0.3125, 0.25, 0.25], True),
        ([0.75, 0.5, 0.5, 0.375, 0.3125, 0.3125, 0.0], False),  # t~ = 6 is past within_epochs
        ([0.75, 0.5, 0.5, 0.375, 0.3125, 0.25, 0.0], True),  # 0.25 = 0.75 / 3 at t~ = 4
    ],
    ids=["holds", "fails", "boundary"],
)
def test_speedup_claim(linearised, speedup):
    rows = claims.linearised_claims(kernel_table(linearised, LIN, BARRIER), KERNEL, 6, LOW_LR)
    assert holds(rows, "factor of 3") is speedup


@pytest.mark.parametrize(
    "baseline,match",
    [(0.3125, True), (0.125, False), (0.25, True)],
    ids=["holds", "fails", "boundary"],
)
def test_match_claim_only_within_the_horizon(baseline, match):
    """Horizon 0.45 * 6 = 2.7 epochs: t~ <= 2 counts (0.3125 there), t~ = 4, 6 (0) do not."""
    linearised = [0.75, 0.5, 0.5, 0.375, 0.3125, 0.0, 0.0]
    rows = claims.linearised_claims(
        kernel_table(linearised, LIN, BARRIER, baseline), KERNEL, 6, LOW_LR
    )
    assert holds(rows, "matching that of full") is match


@pytest.mark.parametrize(
    "low_lr,vanishes",
    [
        ([0.25, 0.25, 0.25, 0.25, 0.3125, 0.25, 0.25], True),
        ([0.25, 0.25, 0.25, 0.25, 0.1875, 0.25, 0.25], False),  # advantage 0.125 at t~ = 2
        ([0.25, 0.25, 0.25, 0.25, 0.25, 0.1875, 0.1875], True),  # exactly 0.0625 from t~ = 2
        ([0.75, 0.25, 0.25, 0.25, 0.3125, 0.25, 0.25], False),  # no advantage at t~ = 0
        ([0.25, 0.25, 0.25, 0.25, 0.3125, 0.25, 0.0], False),  # the last t~ alone would miss it
    ],
)
def test_advantage_vanishes_at_every_late_t(low_lr, vanishes):
    rows = claims.advantage_claims(kernel_table(LIN, low_lr, BARRIER), KERNEL, LOW_LR)
    assert holds(rows, "persists") is vanishes


def correlation_row(linearised, low_lr, barrier, c=KERNEL):
    rows = claims.advantage_claims(kernel_table(linearised, low_lr, barrier), c, LOW_LR)
    (row,) = [r for r in rows if "tightly" in r.claim]
    return row


def test_correlation_claim_needs_both_correlations_and_enough_points():
    advantage = np.array([0.5, 0.25, 0.25, 0.125, 0.0, 0.0, 0.0])  # falls with the barrier
    low = list(np.subtract(LIN, advantage))
    row = correlation_row(LIN, low, BARRIER)
    assert row.holds and "over 6 t~" in row.measured and "Spearman" in row.measured
    row = correlation_row(LIN, low, BARRIER, dataclasses.replace(KERNEL, correlation_points=7))
    assert not row.holds and "too few points" in row.measured
    # one point at t~ = 0 carries Pearson; Spearman sees that the others run the other way
    barrier = [0.875, 0.0, 0.03125, 0.0625, 0.09375, 0.125, np.nan]
    advantage = np.array([0.5, 0.125, 0.09375, 0.0625, 0.03125, 0.0, 0.0])
    pearson, spearman = claims.correlations(pd.Series(advantage[:6]), pd.Series(barrier[:6]))
    assert pearson >= 0.5 > spearman
    assert not correlation_row(LIN, list(np.subtract(LIN, advantage)), barrier).holds


@pytest.mark.parametrize("fractions,expected", [([1.0] * 7, True), ([1.0] * 6 + [0.5], False)])
def test_low_lr_convergence_row_names_the_t_where_the_cap_was_hit(fractions, expected):
    tables = kernel_table(LIN, LIN, BARRIER)
    tables["t_tilde"]["low_lr_converged"] = fractions
    for rows in (
        claims.linearised_claims(tables, KERNEL, 6, LOW_LR),
        claims.advantage_claims(tables, KERNEL, LOW_LR),
    ):
        (row,) = [r for r in rows if "until convergence" in r.claim]
        assert row.holds is expected
        assert ("hit the cap unconverged at t~ [6.0]" in row.measured) is not expected
