"""The numbers a figure shows, recomputed from the run store with a few independent lines.

One end-to-end run of the tiny figures (``conftest.tiny_built``) is read back: an error
barrier and kernel distances are recomputed here from the stored weights (our own linear
interpolation, batch-norm statistics, reverse-mode NTK and kernel distance) and compared with
the panel CSVs the notebook wrote. A wiring bug (a child compared with itself, children
swapped, a kernel taken at the wrong snapshot) changes these numbers; the unit tests of
``metrics`` would not see it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ntkpaper import data, models, plan, store
from ntkpaper import params as P

pytestmark = pytest.mark.workflow

FIG = "tiny-fig"


class Tiny:
    """The tiny figure's parameters, data and model, and its runs found by their specs."""

    def __init__(self, root: Path):
        self.root = root
        figure = P.load_figure(root / "params" / f"{FIG}.yaml", "quick")
        self.p = figure.params
        self.ds = data.load(self.p.data.dataset)
        m = self.p.model
        self.model = models.build(
            m.name,
            self.ds.num_classes,
            depth=m.depth,
            width=m.width,
            batch_norm=m.batch_norm,
            weight_init=m.weight_init,
        )
        shapes = jax.eval_shape(
            lambda: self.model.init(jax.random.PRNGKey(0), self.ds.x_train[:1], train=False)
        )
        self.shapes = {c: shapes[c] for c in ("params", "batch_stats")}
        # the three figures share it (another test may add a parent of its own)
        self.parent = root / "runs" / "parent" / plan.integrated_runs(figure).parent.key
        self.out = root / "results" / "quick" / FIG

    def children_dir(self, spawn_epoch: float) -> Path:
        """The barrier children (no ``lr``, unlike the low-lr ones) spawned at ``spawn_epoch``."""
        found = [
            d
            for d in (self.root / "runs" / "children").iterdir()
            if (spec := store.read_json(d / "manifest.json")["spec"])["parent"] == self.parent.name
            and spec["spawn_epoch"] == spawn_epoch
            and spec["low_lr"] is None
            and spec["seed"] == self.p.children.seed
        ]
        assert len(found) == 1, found
        return found[0]

    def variables(self, arrays: dict, index: int | None = None) -> dict:
        """Stored ``<collection>/<key path>`` arrays (slice ``index`` of stacked ones) as a tree."""

        def leaf(collection):
            def get(path, _):
                a = arrays[f"{collection}/{jax.tree_util.keystr(path)}"]
                return jnp.asarray(a if index is None else a[index])

            return get

        return {
            c: jax.tree_util.tree_map_with_path(leaf(c), self.shapes[c])
            for c in ("params", "batch_stats")
        }

    def measured(self, v: dict) -> dict:
        """``v`` with batch-norm statistics recomputed on the first ``bn_examples`` inputs."""
        assert self.p.measure.bn_stats == "recompute"
        x = self.ds.x_train[: self.p.measure.bn_examples]
        stats = bn_statistics(self.model, v["params"], v["batch_stats"], x, self.p.data.eval_batch)
        return {**v, "batch_stats": stats}

    def probe(self) -> jax.Array:
        m = self.p.measure
        n = self.ds.x_train.shape[0]
        order = np.asarray(jax.random.permutation(jax.random.PRNGKey(m.probe_seed), n))
        return np.sort(order[: m.probe_size])


@pytest.fixture(scope="module")
def tiny(tiny_built) -> Tiny:
    return Tiny(tiny_built)


@functools.partial(jax.jit, static_argnums=0)
def logits(model, v: dict, x) -> jax.Array:
    return model.apply(v, x, train=False)


def error_rate(model, v: dict, x, y) -> float:
    return float(np.mean(np.argmax(np.asarray(logits(model, v, x)), -1) != np.asarray(y)))


@functools.partial(jax.jit, static_argnums=0)
def train_mode_stats(model, params: dict, batch_stats: dict, x) -> dict:
    return model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
    )[1]["batch_stats"]


def bn_statistics(model, params: dict, batch_stats: dict, x, batch: int) -> dict:
    """Batch-norm statistics of ``params`` on ``x``: the mean over whole batches of ``batch``
    examples (all of ``x`` if fewer) of each batch's mean and variance, read off a train-mode
    forward pass from zero running averages (Flax keeps ``m * old + (1 - m) * batch``)."""
    zero = jax.tree.map(jnp.zeros_like, batch_stats)
    n = x.shape[0] // batch * batch
    starts = range(0, n, batch) if n else [0]
    size = batch if n else x.shape[0]
    kept = [train_mode_stats(model, params, zero, x[i : i + size]) for i in starts]
    momentum = model.bn_momentum
    return jax.tree.map(lambda *s: sum(s) / len(s) / (1.0 - momentum), *kept)


@functools.partial(jax.jit, static_argnums=(0, 3))
def ntk(model, v: dict, x, trace: bool) -> jax.Array:
    """Theta(x_i, x_j) = sum_p J(x_i)_p J(x_j)_p, J from ``jax.jacrev`` (logit axis summed if
    ``trace``, else kept: (n, n, K, K)); batch norm in evaluation mode."""
    jac = jax.jacrev(lambda p: logits(model, {**v, "params": p}, x))(v["params"])
    flat = jnp.concatenate(
        [j.reshape(x.shape[0], j.shape[1], -1) for j in jax.tree.leaves(jac)], axis=-1
    )
    if trace:
        return jnp.einsum("ikp,jkp->ij", flat, flat)
    return jnp.einsum("ikp,jlp->ijkl", flat, flat)


def distance(k1: np.ndarray, k2: np.ndarray) -> float:
    a, b = np.asarray(k1, np.float64).ravel(), np.asarray(k2, np.float64).ravel()
    return float(1.0 - a @ b / np.sqrt((a @ a) * (b @ b)))


def test_error_barrier_at_spawn_epoch_0_recomputed_from_the_children(tiny):
    """Panel B at spawn epoch 0: the barrier between children 0 and 1 on the linear path,
    each point with batch-norm statistics recomputed on the first ``bn_examples`` training
    examples; and each child's own test error, in order."""
    m, model, ds = tiny.p.measure, tiny.model, tiny.ds
    assert m.bn_stats == "recompute"
    final = store.load_arrays(tiny.children_dir(0.0) / "final.npz")
    v0, v1 = tiny.variables(final, 0), tiny.variables(final, 1)
    sets = {
        "test": (ds.x_test, ds.y_test),
        "train": (ds.x_train[: m.bn_examples], ds.y_train[: m.bn_examples]),
    }
    curves = {name: [] for name in sets}
    alphas = np.linspace(0.0, 1.0, m.barrier_points)
    for a in alphas:  # w_a = a w_0 + (1 - a) w_1
        params = jax.tree.map(lambda p, q: a * p + (1 - a) * q, v0["params"], v1["params"])
        stats = bn_statistics(
            model, params, v0["batch_stats"], sets["train"][0], tiny.p.data.eval_batch
        )
        for name, (x, y) in sets.items():
            curves[name].append(error_rate(model, {"params": params, "batch_stats": stats}, x, y))
    barrier = {k: max(e) - (e[0] + e[-1]) / 2 for k, e in curves.items()}

    b = pd.read_csv(tiny.out / "panel_B.csv", index_col="spawn_epoch")
    one = 1 / ds.x_test.shape[0]  # one test example more or less wrong
    assert barrier["test"] >= one  # the run is big enough for this test to mean something
    np.testing.assert_allclose(b.loc[0.0, "barrier_test"], barrier["test"], atol=1e-6)
    np.testing.assert_allclose(b.loc[0.0, "barrier_train"], barrier["train"], atol=1e-6)

    # the curve itself, in order: alpha = 0 is child 1, alpha = 1 child 0
    measured = [
        store.load_arrays(d / "measure.npz")
        for d in (tiny.root / "runs" / "children_measure").iterdir()
        if store.read_json(d / "manifest.json")["spec"]["children"] == tiny.children_dir(0.0).name
    ]
    (cm,) = measured
    np.testing.assert_allclose(cm["alpha"], alphas)
    np.testing.assert_allclose(cm["error_test"], curves["test"], atol=1e-6)
    np.testing.assert_allclose(cm["error_train"], curves["train"], atol=1e-6)
    own = [error_rate(model, tiny.measured(v), ds.x_test, ds.y_test) for v in (v0, v1)]
    assert own[0] != own[1]  # else a swap would go unseen
    np.testing.assert_allclose(cm["test_error"], own, atol=1e-6)
    e = pd.read_csv(tiny.out / "panel_E.csv", index_col="spawn_epoch")
    np.testing.assert_allclose(e.loc[0.0, "child_test_error"], np.mean(own), atol=1e-6)


def test_kernel_distances_recomputed_from_the_stored_weights(tiny):
    """Panel E (children 0 and 1 at the end, spawn epoch 0) and panel D (the parent at its
    first and last snapshots): NTKs on the probe from ``jax.jacrev``, kernel distance by hand."""
    m, model = tiny.p.measure, tiny.model
    probe = tiny.probe()
    (pm_dir,) = list((tiny.root / "runs" / "parent_measure").iterdir())
    np.testing.assert_array_equal(store.load_arrays(pm_dir / "measure.npz")["probe"], probe)
    xp = tiny.ds.x_train[probe]

    final = store.load_arrays(tiny.children_dir(0.0) / "final.npz")
    k0, k1 = (ntk(model, tiny.measured(tiny.variables(final, i)), xp, m.ntk_trace) for i in (0, 1))
    children = distance(k0, k1)
    e = pd.read_csv(tiny.out / "panel_E.csv", index_col="spawn_epoch")
    assert children > 1e-3
    np.testing.assert_allclose(e.loc[0.0, "kernel_distance"], children, rtol=1e-3, atol=1e-6)

    snaps = sorted(tiny.parent.glob("snap-*.npz"))
    first, last = (store.load_arrays(s) for s in (snaps[0], snaps[-1]))
    parent = distance(
        ntk(model, tiny.measured(tiny.variables(first)), xp, m.ntk_trace),
        ntk(model, tiny.measured(tiny.variables(last)), xp, m.ntk_trace),
    )
    d = pd.read_csv(tiny.out / "panel_D.csv", index_col="epoch")
    assert d.index[0] == float(first["epoch"]) and d.index[-1] == float(last["epoch"])
    assert parent > 1e-3
    np.testing.assert_allclose(d.iloc[0, -1], parent, rtol=1e-3, atol=1e-6)


def test_heat_maps_are_distance_matrices_and_children_spawned_at_0_differ(tiny):
    """Panels C and D: symmetric, zero diagonal, over the parent's snapshot epochs (panel A's),
    not all zero; panel E: every distance between children spawned at epoch 0 is positive."""
    a = pd.read_csv(tiny.out / "panel_A.csv", index_col="epoch")
    for panel in ("panel_C", "panel_D"):
        df = pd.read_csv(tiny.out / f"{panel}.csv", index_col="epoch")
        np.testing.assert_allclose(df.index, a.index)
        np.testing.assert_allclose(df.columns.astype(float), a.index)
        mat = df.to_numpy()
        np.testing.assert_allclose(mat, mat.T, atol=1e-6, err_msg=panel)
        np.testing.assert_allclose(np.diag(mat), 0.0, atol=1e-6, err_msg=panel)
        off = mat[~np.eye(len(mat), dtype=bool)]
        assert (off > 1e-4).all(), (panel, mat)  # every snapshot differs from every other
    e = pd.read_csv(tiny.out / "panel_E.csv", index_col="spawn_epoch")
    for col in (
        "relu_distance",
        "function_distance",
        "kernel_distance",
        "weight_distance",
        "weight_distance_relative",
    ):
        assert e.loc[0.0, col] > 0, col


def test_snapshot_errors_are_measured_with_recomputed_statistics(tiny):
    """Panel A at t = 0: the network at initialisation with batch-norm statistics recomputed on
    the first ``bn_examples`` training inputs, not Flax's placeholders (mean 0, variance 1)."""
    snaps = sorted(tiny.parent.glob("snap-*.npz"))
    first = store.load_arrays(snaps[0])
    assert float(first["epoch"]) == 0.0
    v = tiny.variables(first)
    placeholders = jax.tree.leaves(v["batch_stats"])
    assert all(np.all((a == 0) | (a == 1)) for a in placeholders)  # what Flax stores at init
    ds = tiny.ds
    a = pd.read_csv(tiny.out / "panel_A.csv", index_col="epoch")

    def loss(v):  # mean softmax cross-entropy, by hand
        z = np.asarray(logits(tiny.model, v, ds.x_test), np.float64)
        z = z - z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return float(-np.mean(logp[np.arange(len(z)), np.asarray(ds.y_test)]))

    measured, stored = loss(tiny.measured(v)), loss(v)
    np.testing.assert_allclose(a.loc[0.0, "test_loss"], measured, rtol=1e-4)
    np.testing.assert_allclose(
        a.loc[0.0, "test_error"], error_rate(tiny.model, tiny.measured(v), ds.x_test, ds.y_test)
    )
    assert abs(measured - stored) > 1e-3 * measured  # the placeholders would show
