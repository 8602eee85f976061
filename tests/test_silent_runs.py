"""The silent-alignment runs (Atanasov et al. 2022) from data to stored arrays.

``views.crossing`` against hand computations; ``jobs.silent.prepare`` against what the paper's
data are (whitened: X^T X / P = I, or the projector on the data's span; a linear teacher
y = x . beta with |beta| = 1; +1 / -1 and one-hot minus 1/C targets); ``run_alignment`` end to
end on a two-layer linear network (float32), its stored arrays against the closed forms of
gradient flow on whitened data (initial loss |beta|^2 / 2, final NTK eigenvalue ratio 1 + A/B,
eq. 37) and against separate one-sigma runs of the same spec.
"""

from __future__ import annotations

import numpy as np
import pytest

from ntkpaper import alignment, jobs, plan, store, theory, views
from ntkpaper import data as data_lib
from ntkpaper import params as P
from ntkpaper.jobs.silent import prepare

# ---------------------------------------------------------------------------------------
# crossing: the first time a logged curve reaches a level
# ---------------------------------------------------------------------------------------


def test_crossing_rising_and_falling_interpolate_between_logged_times():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    assert views.crossing(t, [0.0, 0.25, 0.75, 1.0], 0.5, rising=True) == 1.5
    assert views.crossing(t, [1.0, 0.75, 0.25, 0.0], 0.5, rising=False) == 1.5
    # a falling curve read as rising is 'reached' at once (it starts above the level)
    assert views.crossing(t, [1.0, 0.75, 0.25, 0.0], 0.5, rising=True) == 0.0


def test_crossing_is_exact_on_a_linear_segment_with_uneven_times():
    t = np.array([0.0, 0.5, 1.5, 4.0])
    v = 2 * t + 1  # 1, 2, 4, 9
    assert views.crossing(t, v, 6.0, rising=True) == 2.5  # (6 - 1) / 2
    assert views.crossing(t, -v, -6.0, rising=False) == 2.5
    assert views.crossing(t, v, 3.0, rising=True) == 1.0


def test_crossing_at_a_logged_point_the_first_point_and_the_first_of_several():
    t = np.array([0.25, 1.0, 2.0, 4.0])
    assert views.crossing(t, [0.0, 0.5, 1.0, 1.0], 0.5, rising=True) == 1.0  # reached exactly
    assert views.crossing(t, [0.75, 0.5, 1.0, 1.0], 0.5, rising=True) == 0.25  # at the start
    assert views.crossing(t, [0.0, 1.0, 0.0, 1.0], 0.5, rising=True) == 0.625  # the first time


def test_crossing_never_reached_is_nan():
    t = np.array([0.0, 1.0, 2.0])
    assert np.isnan(views.crossing(t, [0.0, 0.25, 0.375], 0.5, rising=True))
    assert np.isnan(views.crossing(t, [1.0, 0.75, 0.625], 0.5, rising=False))


# ---------------------------------------------------------------------------------------
# prepare: the data of the runs
# ---------------------------------------------------------------------------------------

SYNTHETIC = P.SaData(dataset="synthetic", classes=(0,), n_train=200, n_test=50, gamma=0.0, dim=10)


def linear_teacher(d: dict) -> None:
    """y = s x . beta on training and test points, |beta| = 1 (float32: 1e-5 relative)."""
    assert np.isclose(np.linalg.norm(d["beta"]), 1, rtol=1e-12)
    w = d["teacher_norm"] * d["beta"]
    for x, y in ((d["x"], d["y"]), (d["x_test"], d["y_test"])):
        assert y.shape == (len(x), 1)
        np.testing.assert_allclose(y[:, 0], x.astype(np.float64) @ w, atol=1e-5 * np.abs(y).max())


def test_synthetic_data_are_whitened_with_a_unit_linear_teacher():
    d = prepare(SYNTHETIC)
    assert d["x"].shape == (200, 10) and d["x_test"].shape == (50, 10)
    assert d["x"].dtype == np.float32
    x = d["x"].astype(np.float64)
    np.testing.assert_allclose(x.T @ x / 200, np.eye(10), atol=1e-5)
    assert np.isclose(d["teacher_norm"], 1.0, rtol=1e-12)
    linear_teacher(d)
    # the test points are Gaussian too, not whitened with their own covariance
    assert np.abs(d["x_test"].T @ d["x_test"] / 50 - np.eye(10)).max() > 0.05


def test_synthetic_raw_data_are_the_same_draw_unwhitened():
    raw = prepare(P.SaData(dataset="synthetic", classes=(0,), n_train=200, n_test=50,
                           gamma=None, dim=10))  # fmt: skip
    x = raw["x"].astype(np.float64)
    cov = x.T @ x / 200
    assert 0.05 < np.abs(cov - np.eye(10)).max() < 0.5  # N(0, I): near I, not whitened
    assert abs(x.mean()) < 0.1 and abs(x.var() - 1) < 0.1
    assert np.isclose(raw["teacher_norm"], 1.0, rtol=1e-12)
    linear_teacher(raw)
    # whitening the raw draw gives the whitened data; the teacher is the same direction
    white = prepare(SYNTHETIC)
    wx, wxt = alignment.whiten(raw["x"].astype(np.float64), raw["x_test"].astype(np.float64), 0)
    np.testing.assert_allclose(white["x"], wx, atol=1e-5)
    np.testing.assert_allclose(white["x_test"], wxt, atol=1e-5)
    np.testing.assert_allclose(white["beta"], raw["beta"], rtol=1e-12)


def digits(classes, n_train, n_test, gamma):
    d = prepare(P.SaData(dataset="digits", classes=classes, n_train=n_train, n_test=n_test,
                         gamma=gamma))  # fmt: skip
    ds = data_lib.load("digits")
    pick = lambda y, n: np.flatnonzero(np.isin(np.asarray(y), classes))[:n]  # noqa: E731
    i, it = pick(ds.y_train, n_train), pick(ds.y_test, n_test)
    raw = {
        "x": np.asarray(ds.x_train[i], np.float64).reshape(len(i), -1),
        "x_test": np.asarray(ds.x_test[it], np.float64).reshape(len(it), -1),
        "labels": np.asarray(ds.y_train)[i],
        "labels_test": np.asarray(ds.y_test)[it],
    }
    return d, raw


def test_two_class_digits_targets_centring_and_whitening():
    d, raw = digits((0, 1), 100, 50, 0.0)
    assert set(np.unique(raw["labels"])) == {0, 1}
    np.testing.assert_array_equal(d["y"][:, 0], np.where(raw["labels"] == 0, 1.0, -1.0))
    np.testing.assert_array_equal(d["y_test"][:, 0], np.where(raw["labels_test"] == 0, 1, -1))
    x = d["x"].astype(np.float64)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)  # centred (whitening keeps it so)
    cov = x.T @ x / 100
    eig = np.linalg.eigvalsh(cov)
    ones = np.abs(eig - 1) < 1e-4
    assert np.all(ones | (np.abs(eig) < 1e-4)), eig  # the projector on the data's span
    rank = np.linalg.matrix_rank(raw["x"] - raw["x"].mean(0))
    assert ones.sum() == rank < 64  # some pixels never vary; centring removes one more
    np.testing.assert_allclose(cov @ cov, cov, atol=1e-4)
    # beta: the minimum-norm fit, so the residual is orthogonal to the inputs
    fit = x @ (d["teacher_norm"] * d["beta"])
    np.testing.assert_allclose(x.T @ (d["y"][:, 0] - fit) / 100, 0, atol=1e-4)
    assert np.isclose(np.linalg.norm(d["beta"]), 1)


def test_raw_digits_are_centred_on_the_training_mean():
    d, raw = digits((0, 1), 100, 50, None)
    mean = raw["x"].mean(0)
    np.testing.assert_allclose(d["x"], raw["x"] - mean, atol=1e-5)
    np.testing.assert_allclose(d["x_test"], raw["x_test"] - mean, atol=1e-5)


def test_ten_class_digits_are_one_hot_minus_one_tenth():
    d, raw = digits(tuple(range(10)), 200, 50, 0.0)
    y = d["y"]
    assert y.shape == (200, 10) and d["y_test"].shape == (50, 10)
    np.testing.assert_allclose(y.sum(1), 0, atol=1e-6)
    expected = np.where(np.arange(10) == raw["labels"][:, None], 0.9, -0.1)
    np.testing.assert_allclose(y, expected, atol=1e-7)
    # the columns follow the order of ``classes``, not the labels' values
    d, raw = digits((2, 0, 1), 60, 20, 0.0)
    column = {2: 0, 0: 1, 1: 2}
    np.testing.assert_array_equal(np.argmax(d["y"], 1), [column[k] for k in raw["labels"]])
    np.testing.assert_allclose(d["y"].max(1), 2 / 3, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# run_alignment end to end: a two-layer linear network on whitened synthetic data
# ---------------------------------------------------------------------------------------

DATA = P.SaData(dataset="synthetic", classes=(0,), n_train=100, n_test=20, gamma=0.0, dim=10)
TRAIN = P.SaTrain(optimizer="gd", lr=0.05, steps=400, log_points=20)
SIGMAS = (0.01, 0.5)  # silent (rich) and lazy-ish


# D > P on raw inputs, so that test points leave the training span and the kernels disagree
WIDE = P.SaData(dataset="synthetic", classes=(0,), n_train=20, n_test=20, gamma=None, dim=40)
WIDE_TRAIN = P.SaTrain(optimizer="gd", lr=0.05, steps=2000, log_points=20)


def alignment_job(sigmas: tuple[float, ...], data=DATA, train=TRAIN) -> plan.Job:
    net = P.SaNetwork(activation="linear", depth=2, width=20, sigmas=sigmas, seed=0)
    return plan.Job("alignment", plan.AlignmentSpec(data, net, train))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Stored arrays, in a fresh store, of the two-sigma grid, of each sigma run alone (by
    its sigmas) and of the small sigma on ``WIDE`` data (``"wide"``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NTKPAPER_RUNS", str(tmp_path_factory.mktemp("runs")))
        todo = {s: alignment_job(s) for s in (SIGMAS, *((s,) for s in SIGMAS))}
        todo["wide"] = alignment_job(SIGMAS[:1], WIDE, WIDE_TRAIN)
        out = {}
        for name, job in todo.items():
            jobs.execute(job)
            assert store.is_complete(job.kind, job.key)
            out[name] = store.output(job, "run.npz")
        return out


def test_stored_arrays_have_one_row_per_sigma(runs):
    a = runs[SIGMAS]
    t = len(a["step"])
    assert t == 20 and a["step"][0] == 0 and a["step"][-1] == TRAIN.steps
    np.testing.assert_allclose(a["time"], TRAIN.lr * a["step"])
    for k in ("loss", "alignment", "kernel_norm", "cos", "q", "r"):
        assert a[k].shape == (2, t), k
    for k in ("predict_network", "predict_final_ntk", "predict_initial_ntk"):
        assert a[k].shape == (2, DATA.n_test, 1), k
    assert a["kernel_final"].shape == (2, DATA.n_train, DATA.n_train)
    np.testing.assert_array_equal(a["sigma"], SIGMAS)


def test_loss_starts_at_half_the_teacher_norm_and_falls(runs):
    loss = runs[SIGMAS]["loss"]
    # whitened inputs: L(0) = |s beta|^2 / 2 = 1/2 up to f_0 ~ sigma^2
    assert abs(loss[0, 0] - 0.5) < 1e-3
    assert np.all(np.diff(loss, axis=1) <= 1e-6 * loss[:, :1]), loss
    assert np.all(loss[:, -1] < 1e-6 * loss[:, 0])


def test_small_sigma_network_is_its_final_ntk_predictor_with_eq37_spectrum(runs):
    a = runs[SIGMAS]
    net, fin = a["predict_network"][0], a["predict_final_ntk"][0]
    np.testing.assert_allclose(fin, net, atol=1e-4 * np.abs(net).max())
    # both are the teacher: P > D, so the trained linear net is x . beta (and so is any
    # kernel regression with a full-rank linear kernel: see the next test)
    np.testing.assert_allclose(net[:, 0], a["x_test"] @ a["beta"], atol=1e-4)
    rank = np.linalg.matrix_rank(a["x"])
    ratio = theory.ntk_eigenvalue_ratio((1.0, 1.0))
    assert rank == DATA.dim and ratio == 2

    def eigen_ratio(k):
        e = np.sort(np.linalg.eigvalsh(k.astype(np.float64)))[::-1][:rank]
        return e[0] / e[-1]

    assert abs(eigen_ratio(a["kernel_final"][0]) / ratio - 1) < 0.05
    # the lazier sigma keeps an initial kernel that is not the rank-one spike of eq. 37
    assert abs(eigen_ratio(a["kernel_final"][1]) / ratio - 1) > 0.05


def test_every_sigma_starts_from_the_same_directions(runs):
    a = runs[SIGMAS]
    # cos(W1^T W1, beta beta^T) is scale invariant; q0 and ||K_0|| scale as sigma^2
    assert np.isclose(a["cos"][0, 0], a["cos"][1, 0], rtol=1e-5)
    scale = (SIGMAS[1] / SIGMAS[0]) ** 2
    np.testing.assert_allclose(a["q"][1, 0] / a["q"][0, 0], scale, rtol=1e-4)
    np.testing.assert_allclose(a["kernel_norm"][1, 0] / a["kernel_norm"][0, 0], scale, rtol=1e-4)


def test_vmapped_grid_equals_separate_one_sigma_runs(runs):
    grid = runs[SIGMAS]
    compared = 0
    for i, s in enumerate(SIGMAS):
        alone = runs[(s,)]
        for k, v in grid.items():
            if k == "sigma" or v.ndim == 0 or v.shape[0] != len(SIGMAS):
                assert k == "sigma" or np.array_equal(v, alone[k]), k  # data, steps, times
                continue
            b = alone[k][0]
            assert np.abs(v[i] - b).max() <= 1e-5 * max(np.abs(b).max(), 1e-30), (k, s)
            compared += 1
    assert compared >= 2 * 10


def test_final_ntk_predicts_the_network_where_the_initial_ntk_does_not(runs):
    a = runs["wide"]
    assert a["loss"][0, -1] < 1e-6 * a["loss"][0, 0]
    net = a["predict_network"][0]
    rms = lambda k: float(np.sqrt(np.mean((a[f"predict_{k}"][0] - net) ** 2)))  # noqa: E731
    size = float(np.sqrt(np.mean(net**2)))
    # from small sigma the net learns (nearly) the minimum-norm interpolator, as its final NTK
    # does; the initial NTK's interpolator leaves the data's span elsewhere (figure 1b)
    assert rms("final_ntk") <= 0.01 * size and rms("initial_ntk") >= 0.1 * size
    x, y = a["x"].astype(np.float64), a["y"].astype(np.float64)
    min_norm = a["x_test"] @ np.linalg.pinv(x) @ y
    assert float(np.sqrt(np.mean((min_norm - net) ** 2))) <= 0.01 * size
