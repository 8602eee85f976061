"""The landscape claims (Fort et al. figures 5, 6, 7, 10, 11, 20) on constructed tables: where
each must hold, where it must fail, and at its boundary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ntkpaper import claims
from ntkpaper import params as P

# Exact binary fractions, so the boundaries are exact.
C = P.IntegratedClaims(late_epoch=2, barrier_zero=0.0625, barrier_early_min=0.25)
SPAWN = pd.Index([0.0, 0.5, 1.0, 2.0, 4.0], name="spawn_epoch")


def by_claim(rows, fragment: str):
    (row,) = [r for r in rows if fragment in r.claim]
    return row


# ---------------------------------------------------------------------------------------
# Figures 6, 10, 20: function distance
# ---------------------------------------------------------------------------------------


def distance_view(fd, barrier, smoothed=None):
    t = pd.DataFrame({"function_distance": fd, "barrier_test": barrier}, index=SPAWN)
    t["smoothed"] = smoothed if smoothed is not None else np.nan
    return {"spawn": t}


def test_function_distance_claims_hold_fail_and_boundary():
    d = P.FunctionDistance(smooth_window=None, diversity_min=0.25)
    good = distance_view([1.0, 0.75, 0.5, 0.5, 0.25], [0.5, 0.25, 0.125, 0.0625, 0.0])
    rows = claims.function_distance_claims(good, C, d)
    assert len(rows) == 2 and all(r.holds for r in rows)  # boundary: 0.0625 and 0.25 hold
    # barrier just above zero late
    bad = distance_view([1.0, 0.75, 0.5, 0.5, 0.25], [0.5, 0.25, 0.125, 0.125, 0.0])
    assert not by_claim(claims.function_distance_claims(bad, C, d), "same loss basin").holds
    # no diversity left late (below diversity_min), or more diverse than the first spawn
    for fd in ([1.0, 0.75, 0.5, 0.5, 0.125], [1.0, 0.75, 0.5, 1.0, 0.5]):
        rows = claims.function_distance_claims(distance_view(fd, [0.5, 0.25, 0.125, 0, 0]), C, d)
        assert not by_claim(rows, "non-negligible").holds, fd


def test_smoothed_function_distance_claim():
    d = P.FunctionDistance(smooth_window=1.0, diversity_min=0.0)
    falls = distance_view([1, 1, 1, 1, 1], [0] * 5, smoothed=[1.0, 0.9, 0.8, 0.7, 0.5])
    assert by_claim(claims.function_distance_claims(falls, C, d), "figure 10").holds
    flat = distance_view([1, 1, 1, 1, 1], [0] * 5, smoothed=[0.5, 0.9, 0.8, 0.7, 0.5])
    assert not by_claim(claims.function_distance_claims(flat, C, d), "figure 10").holds


# ---------------------------------------------------------------------------------------
# Figure 7: velocity and barrier
# ---------------------------------------------------------------------------------------

V = P.Velocity(zoom_until=2, slow_fraction=0.5, correlation_min=0.5, correlation_points=4)


def velocity_view(velocity, barrier):
    t = pd.Index([0.0, 0.5, 1.0, 2.0, 4.0], name="epoch")
    v = pd.DataFrame({"kernel": velocity, "relu": velocity}, index=t)
    b = pd.DataFrame({"barrier_test": barrier}, index=SPAWN)
    both = pd.DataFrame({"kernel_velocity": velocity, "barrier_test": barrier}, index=SPAWN)
    return {"velocity": v, "barrier": b, "both": both[both.index <= V.zoom_until]}


def test_velocity_claims_hold_when_both_fall_together_and_the_velocity_settles_low():
    view = velocity_view([1.0, 0.75, 0.5, 0.5, 0.5], [0.5, 0.25, 0.125, 0.0625, 0.0])
    rows = claims.velocity_claims(view, C, V)
    assert [r.holds for r in rows] == [True, True]  # 0.5 = slow_fraction x max: the boundary


def test_velocity_claims_fail_for_the_right_reasons():
    # anti-correlated: the velocity rises as the barrier falls
    rows = claims.velocity_claims(
        velocity_view([0.25, 0.5, 0.75, 1, 1], [0.5, 0.25, 0.125, 0, 0]), C, V
    )
    assert not by_claim(rows, "tightly correlated").holds
    # the velocity stays fast after the barrier has vanished (spawn 2 on)
    rows = claims.velocity_claims(
        velocity_view([1.0, 0.75, 0.5, 0.75, 0.5], [0.5, 0.25, 0.125, 0, 0]), C, V
    )
    assert not by_claim(rows, "low non-zero").holds
    # the velocity stops (zero is not 'low non-zero')
    rows = claims.velocity_claims(
        velocity_view([1.0, 0.75, 0.5, 0.25, 0.0], [0.5, 0.25, 0.125, 0, 0]), C, V
    )
    assert not by_claim(rows, "low non-zero").holds
    # the barrier never vanishes
    rows = claims.velocity_claims(velocity_view([1.0, 0.75, 0.5, 0.25, 0.25], [0.5] * 5), C, V)
    assert not by_claim(rows, "low non-zero").holds and "never falls" in rows[1].measured


def test_velocity_correlation_needs_enough_points():
    few = P.Velocity(zoom_until=2, slow_fraction=0.5, correlation_min=0.5, correlation_points=5)
    view = velocity_view([1.0, 0.75, 0.5, 0.5, 0.5], [0.5, 0.25, 0.125, 0.0625, 0.0])
    row = claims.velocity_claims(view, C, few)[0]
    assert not row.holds and "too few points" in row.measured


# ---------------------------------------------------------------------------------------
# Figure 5: the planes
# ---------------------------------------------------------------------------------------

PLANE = P.PlaneGrid(spawn_epochs=(0.0, 4.0), resolution=5, margin=0.25, tangent_gap=0.125)


def plane_view(barrier, gap_spawn, gap_child):
    s = pd.DataFrame(
        {"barrier_test": barrier, "tangent_gap_spawn": gap_spawn, "tangent_gap_child": gap_child},
        index=pd.Index([0.0, 4.0], name="spawn_epoch"),
    )
    return {"summary": s}


def test_plane_claims():
    rows = claims.plane_claims(plane_view([0.25, 0.0625], [0.5, 0.125], [0.25, 0.0]), C, PLANE)
    assert [r.holds for r in rows] == [True, True, True]  # late values at the boundaries
    rows = claims.plane_claims(plane_view([0.0625, 0.0], [0.5, 0.25], [0.125, 0.0]), C, PLANE)
    assert [r.holds for r in rows] == [False, False, False]  # early barrier / gaps at the boundary


# ---------------------------------------------------------------------------------------
# Figure 11: t-SNE lineages
# ---------------------------------------------------------------------------------------


def test_tsne_claim():
    apart = lambda v: {"apart": pd.DataFrame({"children_apart": v}, index=SPAWN)}  # noqa: E731
    assert claims.tsne_claims(apart([0.5, 0.25, 0.25, 0.25, 0.125]), C)[0].holds
    assert not claims.tsne_claims(apart([0.5, 0.25, 0.25, 0.5, 0.125]), C)[0].holds  # a tie


# ---------------------------------------------------------------------------------------
# Figures 14, 17: Hessian, basin fate, logit gradients
# ---------------------------------------------------------------------------------------

GEO = P.Geometry(hessian_examples=8, hessian_iters=4, centroid_examples=8, sealed_fraction=0.25)
TRAIN = P.Train(
    lr=0.5, momentum=0.0, weight_decay=0.0, lr_drops=(), lr_decay=1.0, seed=0, epochs=8,
    snapshots=(P.Segment(1, 8),),
)  # fmt: skip


def geometry_view(escape, barrier, logit_gradient):
    h = pd.DataFrame({"escape": escape}, index=pd.Index([0.0, 1.0, 2.0, 4.0, 8.0], name="epoch"))
    return {
        "hessian": h,
        "panel_B": pd.DataFrame({"barrier_test": barrier}, index=SPAWN),
        "panel_E": pd.DataFrame({"logit_gradient_distance": logit_gradient}, index=SPAWN),
    }


def test_geometry_claims():
    # escape > 0 before epoch 2, < 0 at the end; barrier 0 from 25 % of 8 epochs = spawn 2
    good = geometry_view(
        [0.5, 0.25, -1, -1, -0.5], [0.5, 0.25, 0.125, 0.0625, 0], [1, 1, 1, 1, 0.5]
    )
    assert [r.holds for r in claims.geometry_claims(good, C, GEO, TRAIN)] == [True, True, True]
    bad = geometry_view([0.0, -0.25, 1, 1, 0.0], [0.5, 0.25, 0.125, 0.125, 0], [1, 1, 1, 1, 1])
    assert [r.holds for r in claims.geometry_claims(bad, C, GEO, TRAIN)] == [False, False, False]
