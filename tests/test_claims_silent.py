"""The silent-alignment claims (Atanasov et al. 2022) on constructed tables: for every name in
``sa_claims.SILENT_CLAIMS`` and for ``sa_claims.transfer_claims``, one table where the claim must
hold, one where it must fail for the right reason, and one at its boundary.

Tables carry the columns ``views.silent_view`` (``summary``, ``curves``), ``views.gram_view``
and ``views.transfer_view`` write. Values and tolerances are exact binary fractions, so the
boundaries are exact; where a claim fits a slope (``_t_half_power``) the boundary is bracketed
by 2^-10 of the tolerance on either side instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ntkpaper import params as P
from ntkpaper import sa_claims

C = P.SaClaims(rows=(), silent=True, before=0.875, match_ratio=0.5, rtol=0.125)
COVERED = (
    "silent", "final_ntk", "max_alignment", "anisotropy", "closed_form_loss", "t_half_log",
    "q_r", "spike", "t_half_power", "depth_alignment", "gram",
)  # fmt: skip
"""The claim names this file tests (``check`` refuses others): a new claim needs its tests."""


def check(name: str, summary=None, curves=None, gram=None, c: P.SaClaims = C) -> sa_claims.Claim:
    """The one row ``name`` gives on these tables, called through ``sa_claims.silent_claims``."""
    assert name in COVERED, name
    view = {
        "summary": pd.DataFrame(summary if summary is not None else {}),
        "curves": pd.DataFrame(curves if curves is not None else {}),
    }
    if gram is not None:
        view["gram"] = {"table": pd.DataFrame(gram).set_index("run")}  # views.gram_view's shape
    (row,) = sa_claims.silent_claims(view, dataclasses.replace(c, rows=(name,)))
    return row


def test_silent_claims_returns_the_rows_named_in_order():
    summary = {"run": ["a"], "rms_final_ntk": [0.25], "rms_initial_ntk": [1.0],
               "eigen_ratio": [2.0], "eigen_ratio_theory": [2.0]}  # fmt: skip
    view = {"summary": pd.DataFrame(summary), "curves": pd.DataFrame()}
    rows = sa_claims.silent_claims(view, dataclasses.replace(C, rows=("spike", "final_ntk")))
    assert [r.claim for r in rows] == [
        sa_claims._spike(view["summary"], view["curves"], view, C)[0].claim,
        sa_claims._final_ntk(view["summary"], view["curves"], view, C)[0].claim,
    ]
    assert sa_claims.silent_claims(view, C) == []


# ---------------------------------------------------------------------------------------
# silent: alignment precedes the loss drop, at each run's smallest sigma
# ---------------------------------------------------------------------------------------


def silent_table(t_align, t_loss, expected=(True, True)):
    """Two runs, two sigmas each, the larger sigma first (so 'smallest' is not 'first row')."""
    return {
        "run": ["a", "a", "b", "b"],
        "sigma": [0.5, 0.125, 0.25, 0.0625],
        "t_align": t_align,
        "t_loss": t_loss,
        "silent_expected": [expected[0]] * 2 + [expected[1]] * 2,
    }


def test_silent_holds_at_the_smallest_sigma_whatever_the_larger_ones_do():
    # the larger sigmas align after the loss has dropped (lazy): not what the claim is about
    row = check("silent", silent_table([4.0, 1.0, 8.0, 2.0], [2.0, 2.0, 4.0, 4.0]))
    assert row.holds
    assert "sigma 0.125" in row.measured and "sigma 0.0625" in row.measured
    assert "sigma 0.5" not in row.measured and "opposite" not in row.expected


def test_silent_fails_when_the_smallest_sigma_does_not_align_first():
    # the larger sigma of 'b' is silent, its smallest is not
    row = check("silent", silent_table([1.0, 1.0, 1.0, 8.0], [2.0, 2.0, 4.0, 4.0]))
    assert not row.holds
    # never aligned (crossing gives NaN): not silent
    assert not check("silent", silent_table([1.0, 1.0, 1.0, np.nan], [2.0] * 4)).holds


def test_silent_boundary_alignment_at_the_loss_time_is_not_before():
    assert not check("silent", silent_table([1.0, 2.0, 1.0, 1.0], [2.0, 2.0, 4.0, 4.0])).holds
    assert check("silent", silent_table([1.0, 1.9375, 1.0, 1.0], [2.0, 2.0, 4.0, 4.0])).holds


def test_silent_respects_a_run_that_the_paper_expects_not_to_be_silent():
    # figure 5b: claims.silent is true, run 'b' is expected to align no earlier than the loss
    table = silent_table([1.0, 1.0, 1.0, 4.0], [2.0, 2.0, 4.0, 4.0], expected=(True, False))
    row = check("silent", table)
    assert row.holds, row
    assert "the paper expects the opposite for b" in row.expected
    # 'b' turns out silent after all: the paper's expectation fails
    table = silent_table([1.0, 1.0, 1.0, 2.0], [2.0, 2.0, 4.0, 4.0], expected=(True, False))
    assert not check("silent", table).holds
    # the figure's own claim is 'not silent' (appendix I): a run that is silent fails it
    unwhitened = dataclasses.replace(C, silent=False)
    table = silent_table([1.0, 4.0, 1.0, 4.0], [2.0] * 4, expected=(False, False))
    row = check("silent", table, c=unwhitened)
    assert row.holds and "appendix I" in row.claim and "no earlier than" in row.expected
    table["t_align"][1] = 1.0
    assert not check("silent", table, c=unwhitened).holds


# ---------------------------------------------------------------------------------------
# final_ntk: the final-NTK predictor matches the network, the initial one does not
# ---------------------------------------------------------------------------------------


def ntk_table(final, initial=(1.0, 1.0)):
    return {"run": ["a", "b"], "rms_final_ntk": list(final), "rms_initial_ntk": list(initial)}


def test_final_ntk_claim():
    assert check("final_ntk", ntk_table([0.25, 0.125])).holds
    assert check("final_ntk", ntk_table([0.25, 0.5])).holds  # boundary: match_ratio exactly
    assert not check("final_ntk", ntk_table([0.25, 0.5625])).holds  # one run misses it
    assert not check("final_ntk", ntk_table([0.25, 0.25], [1.0, 0.25])).holds  # no better
    empty = {"run": [], "rms_final_ntk": [], "rms_initial_ntk": []}
    assert not check("final_ntk", empty).holds


# ---------------------------------------------------------------------------------------
# max_alignment: linear runs reach eq. 42's final alignment
# ---------------------------------------------------------------------------------------


def alignment_table(final, activations=("linear", "linear", "relu")):
    return {
        "run": ["a", "a", "c"], "sigma": [0.5, 0.25, 0.25], "activation": list(activations),
        "alignment_final": list(final), "alignment_theory": [0.5, 0.5, 0.5],
    }  # fmt: skip


def test_max_alignment_claim_on_linear_runs_only():
    row = check("max_alignment", alignment_table([0.5, 0.5, 0.0625]))
    assert row.holds and "non-linear runs beside" in row.measured  # relu far off: not a claim
    # boundary, both sides: |final - theory| = rtol x theory
    assert check("max_alignment", alignment_table([0.5625, 0.4375, 0.0625])).holds
    assert not check("max_alignment", alignment_table([0.5, 0.625, 0.5])).holds
    row = check("max_alignment", alignment_table([0.5, 0.5, 0.5], ("relu", "relu", "tanh")))
    assert not row.holds and "no linear run" in row.measured


# ---------------------------------------------------------------------------------------
# anisotropy: whitened data align first with a longer lead; final NTK best for them
# ---------------------------------------------------------------------------------------


def anisotropy_table(t_align, t_loss, final=(0.125, 0.25, 0.5), initial=(1.0, 1.0, 1.0)):
    return {
        "run": ["gamma = 0", "gamma = 0.5", "gamma = 1"], "t_align": list(t_align),
        "t_loss": list(t_loss), "rms_final_ntk": list(final), "rms_initial_ntk": list(initial),
    }  # fmt: skip


def anisotropy(table) -> list[bool]:
    view = {"summary": pd.DataFrame(table), "curves": pd.DataFrame()}
    rows = sa_claims.silent_claims(view, dataclasses.replace(C, rows=("anisotropy",)))
    return [r.holds for r in rows]


def test_anisotropy_claims_hold():
    # leads 3, 2, 1: the raw data still align first here, just with a shorter lead
    assert anisotropy(anisotropy_table([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])) == [True, True]


def test_anisotropy_claims_fail_for_the_right_reasons():
    # whitened data do not align before the loss drops (boundary: at the same time)
    assert anisotropy(anisotropy_table([4.0, 2.0, 3.0], [4.0, 4.0, 8.0]))[0] is False
    # the same lead for whitened and raw data (boundary)
    assert anisotropy(anisotropy_table([1.0, 2.0, 1.0], [4.0, 4.0, 4.0]))[0] is False
    # the final NTK predicts the raw-data network best
    assert anisotropy(anisotropy_table([1.0, 2.0, 3.0], [4.0] * 3, (0.25, 0.25, 0.125)))[1] is False
    # the final NTK no better than the initial one for one run (boundary: equal)
    table = anisotropy_table([1.0, 2.0, 3.0], [4.0] * 3, initial=(1.0, 0.25, 1.0))
    assert anisotropy(table) == [True, False]


# ---------------------------------------------------------------------------------------
# closed_form_loss: two-layer linear loss against appendix B.3
# ---------------------------------------------------------------------------------------


def loss_curves(theory_last, other_theory=np.nan):
    """Run 'a' at two sigmas with the closed form; run 'deep' without one (NaN there)."""
    loss = [1.0, 0.5, 0.25]
    return {
        "run": ["a"] * 6 + ["deep"] * 3,
        "sigma": [0.5] * 3 + [0.25] * 3 + [0.5] * 3,
        "loss": loss * 3,
        "loss_theory": [1.0, 0.5, 0.25, 1.0, 0.5, theory_last] + [other_theory] * 3,
    }


def test_closed_form_loss_claim():
    assert check("closed_form_loss", curves=loss_curves(0.25)).holds
    row = check("closed_form_loss", curves=loss_curves(0.375))  # boundary: rtol x loss(0)
    assert row.holds and "sigma 0.5: 0" in row.measured and "sigma 0.25: 0.125" in row.measured
    assert not check("closed_form_loss", curves=loss_curves(0.40625)).holds
    # the run without a closed form (NaN) is left out; with one, it counts
    assert check("closed_form_loss", curves=loss_curves(0.25)).measured.count("sigma") == 2
    assert not check("closed_form_loss", curves=loss_curves(0.25, other_theory=0.0)).holds
    no_theory = pd.DataFrame(loss_curves(0.25)).drop(columns="loss_theory")
    row = check("closed_form_loss", curves=no_theory)
    assert not row.holds and "no two-layer linear run" in row.measured


# ---------------------------------------------------------------------------------------
# t_half_log: t_1/2 at every sigma against the closed form
# ---------------------------------------------------------------------------------------


def t_half_table(measured, theory=(2.0, 3.0)):
    sigma = np.array([0.5, 0.25])
    return {"run": ["a", "a"], "sigma": sigma, "t_half": list(measured),
            "t_half_theory": list(theory), "teacher_norm": [1.0, 1.0]}  # fmt: skip


def test_t_half_log_claim():
    assert check("t_half_log", t_half_table([2.0, 3.0])).holds
    assert check("t_half_log", t_half_table([2.25, 2.625])).holds  # boundary: 0.25/2, 0.375/3
    assert not check("t_half_log", t_half_table([2.5, 3.0])).holds
    # one sigma is not a scaling: at least two needed
    one = {k: v[:1] for k, v in t_half_table([2.0, 3.0]).items()}
    assert not check("t_half_log", one).holds


def test_t_half_log_reports_the_slope_in_log_one_over_sigma_squared():
    sigma = np.array([0.5, 0.25, 0.125])
    t = np.log(1 / sigma**2) / (2 * 2.0) + 1.0  # s = 2: slope 1/(2s) = 0.25
    table = {"run": ["a"] * 3, "sigma": sigma, "t_half": t, "t_half_theory": t,
             "teacher_norm": [2.0] * 3}  # fmt: skip
    row = check("t_half_log", table)
    assert row.holds and "= 0.250 (theory 1/(2s) = 0.250)" in row.measured


# ---------------------------------------------------------------------------------------
# q_r: q(t), r(t) against eqs. 27-28
# ---------------------------------------------------------------------------------------


def q_r_curves(q_off=0.0, r_off=0.0):
    q, r = np.array([0.25, 0.5, 1.0]), np.array([0.0, 0.5, 1.0])
    return {"run": ["a"] * 3, "sigma": [0.5] * 3, "q": q, "r": r,
            "q_theory": q + [0, 0, q_off], "r_theory": r + [0, r_off, 0]}  # fmt: skip


def test_q_r_claim():
    assert check("q_r", curves=q_r_curves()).holds
    assert check("q_r", curves=q_r_curves(q_off=0.125, r_off=-0.125)).holds  # boundary
    assert not check("q_r", curves=q_r_curves(q_off=0.25)).holds
    assert not check("q_r", curves=q_r_curves(r_off=0.25)).holds
    row = check("q_r", curves={"run": ["a"], "sigma": [0.5], "q": [1.0], "r": [1.0]})
    assert not row.holds and "no two-layer linear run" in row.measured


# ---------------------------------------------------------------------------------------
# spike: final-NTK eigenvalue ratio against eq. 37, growing with the first layer's rate
# ---------------------------------------------------------------------------------------


def spike_table(measured, theory=(1.25, 2.0, 5.0)):
    return {"run": ["eta 1/4", "eta 1", "eta 4"], "eigen_ratio": list(measured),
            "eigen_ratio_theory": list(theory)}  # fmt: skip


def test_spike_claim():
    assert check("spike", spike_table([1.25, 2.0, 5.0])).holds
    assert check("spike", spike_table([1.25, 2.25, 4.375])).holds  # boundary: 0.25/2, 0.625/5
    assert not check("spike", spike_table([1.25, 2.0, 5.75])).holds  # 0.75/5 > rtol


def test_spike_fails_when_the_ratio_does_not_grow():
    # each within rtol of its theory (2 vs 2.125: 1/17 off), but no growth from eta 1 to 4
    row = check("spike", spike_table([1.25, 2.0, 2.0], theory=(1.25, 2.0, 2.125)))
    assert not row.holds
    assert not check("spike", spike_table([1.25, 2.0, 1.9375], theory=(1.25, 2.0, 2.0))).holds


# ---------------------------------------------------------------------------------------
# t_half_power: t_1/2 and t_cos scale as sigma^-(L-2)
# ---------------------------------------------------------------------------------------

SIGMAS = np.array([0.0625, 0.125, 0.25, 0.5])


def power_table(depth: int, half_power: float, cos_power: float | None = None, cos_lead=0.5):
    cos_power = half_power if cos_power is None else cos_power
    return {
        "run": [f"L = {depth}"] * len(SIGMAS), "depth": [depth] * len(SIGMAS), "sigma": SIGMAS,
        "t_half": SIGMAS**half_power, "t_cos": cos_lead * SIGMAS**cos_power,
    }  # fmt: skip


def test_t_half_power_holds_for_sigma_to_the_minus_l_minus_2():
    for depth in (3, 4, 5):
        row = check("t_half_power", power_table(depth, -(depth - 2)))
        assert row.holds, row
        assert f"t_1/2 slope {2 - depth:.2f}, cos slope {2 - depth:.2f}" in row.measured


def test_t_half_power_fails_for_sigma_to_the_minus_l_minus_1():
    for depth in (3, 4):
        assert not check("t_half_power", power_table(depth, -(depth - 1))).holds
        # t_1/2 right, cos scaling wrong
        assert not check("t_half_power", power_table(depth, 2 - depth, 1 - depth, 1e-3)).holds


def test_t_half_power_boundary_and_cos_first():
    tol = C.rtol * (4 - 2)  # L = 4: slopes within 0.25 of -2
    inside, outside = -2 - tol * (1 - 2**-10), -2 - tol * (1 + 2**-10)
    assert check("t_half_power", power_table(4, inside)).holds
    assert not check("t_half_power", power_table(4, outside)).holds
    # the same for the cos slope alone (t_cos stays below t_1/2 at every sigma)
    assert check("t_half_power", power_table(4, -2, inside, 0.25)).holds
    assert not check("t_half_power", power_table(4, -2, outside, 0.25)).holds
    # cos reaches 1/2 exactly at t_1/2 at every sigma: not first (strict)
    assert not check("t_half_power", power_table(3, -1, cos_lead=1.0)).holds


def test_t_half_power_checks_every_run():
    good, bad = pd.DataFrame(power_table(3, -1)), pd.DataFrame(power_table(4, -3))
    row = check("t_half_power", pd.concat([good, bad], ignore_index=True))
    assert not row.holds and "L = 3" in row.measured and "L = 4" in row.measured
    fine = pd.concat([good, pd.DataFrame(power_table(4, -2))], ignore_index=True)
    assert check("t_half_power", fine).holds


# ---------------------------------------------------------------------------------------
# depth_alignment: final alignment rises with L, at eq. 42's values
# ---------------------------------------------------------------------------------------


def depth_table(final, theory=(0.75, 0.5, 0.625)):
    """Depths out of order: the claim sorts by depth."""
    return {"run": ["L = 4", "L = 2", "L = 3"], "depth": [4, 2, 3],
            "alignment_final": list(final), "alignment_theory": list(theory)}  # fmt: skip


def test_depth_alignment_claim():
    row = check("depth_alignment", depth_table([0.75, 0.5, 0.625]))
    assert row.holds and row.measured.startswith("L = 2")
    assert check("depth_alignment", depth_table([0.84375, 0.4375, 0.546875])).holds  # boundary
    assert not check("depth_alignment", depth_table([0.875, 0.5, 0.625])).holds  # 0.125/0.75
    # flat from L = 3 to L = 4 (each within rtol of its theory): does not rise
    assert not check("depth_alignment", depth_table([0.6875, 0.5, 0.6875])).holds
    one = {k: v[:1] for k, v in depth_table([0.75, 0.5, 0.625]).items()}
    assert not check("depth_alignment", one).holds


# ---------------------------------------------------------------------------------------
# gram: the final Gram matrix against eq. 42 (view["gram"], not the summary)
# ---------------------------------------------------------------------------------------


def gram_table(to_theory, to_inputs=(0.5, 0.5)):
    return {
        "run": ["L = 2", "L = 3"], "depth": [2, 3],
        "distance_to_theory": list(to_theory), "distance_to_inputs": list(to_inputs),
    }  # fmt: skip


def test_gram_claim_reads_the_gram_table():
    # the summary says nothing about Gram matrices; only view["gram"] counts
    assert check("gram", summary={"run": ["x"]}, gram=gram_table([0.0625, 0.125])).holds
    assert not check("gram", gram=gram_table([0.0625, 0.25])).holds  # above rtol
    # boundary: as far from eq. 42 as from X X^T, within rtol
    assert not check("gram", gram=gram_table([0.0625, 0.125], (0.5, 0.125))).holds
    row = check("gram", gram=gram_table([0.0625, 0.125], (0.5, 0.1875)))
    assert row.holds and "L = 3: 0.125 (vs X X^T 0.188)" in row.measured
    with pytest.raises(KeyError):
        check("gram", summary={"run": ["x"]})


# ---------------------------------------------------------------------------------------
# transfer (figure E.1): limits and orderings of eq. 46
# ---------------------------------------------------------------------------------------


def transfer_table(**errors) -> pd.DataFrame:
    """P in (1, 4), A in (0, 1, 4), alpha in (0, 1). E_g at P = 1: the target variance 1 for
    A = 0, falling with A at alpha = 1, and for A = 1 lower at alpha = 1; divided by P at
    P = 4. ``errors`` overrides single entries, keyed ``e_<P>_<A>_<alpha>``."""
    base = {(0, 0): 1.0, (0, 1): 1.0, (1, 0): 1.0, (1, 1): 0.75, (4, 0): 1.0, (4, 1): 0.5}
    rows = []
    for p in (1, 4):
        for (a, alpha), e in base.items():
            e = errors.get(f"e_{p}_{a}_{alpha}", e / p)
            rows.append({"P": p, "A": float(a), "alpha": float(alpha), "error": e})
    return pd.DataFrame(rows)


def transfer(table: pd.DataFrame) -> list[bool]:
    return [r.holds for r in sa_claims.transfer_claims(table, C)]


def test_transfer_claims_hold():
    assert transfer(transfer_table()) == [True, True, True]


def test_transfer_claims_fail_for_the_right_reasons():
    assert transfer(transfer_table(e_1_0_0=1.5)) == [False, True, True]  # not the variance
    assert transfer(transfer_table(e_1_4_1=0.875)) == [True, False, True]  # A = 4 worse than 1
    # A = 1, mean over P: alpha = 1 (0.75, 1) -> 0.875 above alpha = 0 (1, 0.25) -> 0.625
    assert transfer(transfer_table(e_4_1_1=1.0)) == [True, True, False]


def test_transfer_claims_boundaries():
    # |E_g - 1| = rtol at the smallest P, from either side; the largest over A = 0 counts
    assert transfer(transfer_table(e_1_0_0=0.875, e_1_0_1=1.125)) == [True, True, True]
    assert transfer(transfer_table(e_1_0_0=0.875, e_1_0_1=0.875)) == [True, True, True]
    assert transfer(transfer_table(e_1_0_0=0.859375, e_1_0_1=0.859375))[0] is False
    assert transfer(transfer_table(e_1_0_0=0.875, e_1_0_1=1.25))[0] is False
    # ties do not fall: A = 4 as bad as A = 1; alpha = 1 as hard as alpha = 0 on average
    assert transfer(transfer_table(e_1_4_1=0.75)) == [True, False, True]
    assert transfer(transfer_table(e_4_1_1=0.5)) == [True, True, False]
    # A = 1 at one alpha only: no ordering to test
    t = transfer_table()
    assert transfer(t[~((t.A == 1) & (t.alpha == 0))])[2] is False


def test_every_claim_name_is_tested():
    assert set(COVERED) == set(sa_claims.SILENT_CLAIMS)
    assert set(P.SA_CLAIMS) == set(sa_claims.SILENT_CLAIMS) | {"transfer"}
