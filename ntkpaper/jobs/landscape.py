"""Landscape runs: the plane through a spawn point and two children (Fort et al. figure 5),
and the t-SNE of parent and children in function space (figure 11). Formulas live in
``landscape``."""

from __future__ import annotations

import time

import jax
import numpy as np

from ntkpaper import landscape, models, store
from ntkpaper import train as train_lib
from ntkpaper.jobs.setup import begin, log, setup
from ntkpaper.plan import Job


def run_plane(job: Job) -> None:
    """Test error over the plane through the parent at the spawn epoch and children 0 and 1
    at the end: in weight space (statistics as ``bn`` says at every point), its image in
    function space, and the tangent planes at the spawn point and at child 0."""
    (children,) = job.deps
    (parent,) = children.deps
    s, spec = setup(parent), job.spec
    ds, eb = s.dataset, s.data_params.eval_batch
    out = begin(job)
    spawn = s.step_of(children.spec.spawn_epoch)
    w0 = s.measured(s.variables(store.parent_snapshot(parent, spawn)), spec.bn)
    nets = (w0, *s.children(store.final(children), 2, spec.bn))
    pl = landscape.plane(*(v["params"] for v in nets))
    xs, ys = landscape.grid(pl.corners, spec.resolution, spec.margin)
    xy = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)  # row-major: y slow, x fast
    ab = pl.affine(xy)
    n = (ds.x_test.shape[0] // eb) * eb or ds.x_test.shape[0]  # the whole batches evaluated
    probs = [jax.nn.softmax(models.predict(s.model, v, ds.x_test[:n], eb)).ravel() for v in nets]
    project = landscape.function_plane(*probs, n)
    bn_x = ds.x_train[: spec.bn.bn_examples]
    shape = (len(ys), len(xs))
    start = time.time()
    weight = landscape.plane_errors(
        s.model, nets, ab, ds.x_test, ds.y_test, bn_x, eb, spec.bn.bn_stats, project=project
    )
    log(f"plane {job.key}: weight space, {len(ab)} points, {time.time() - start:.1f} s")
    tangent = {
        f"error_tangent_{name}": landscape.tangent_errors(
            s.model, nets, at, ab, ds.x_test, ds.y_test, eb, nets[i]["batch_stats"]
        ).reshape(shape)
        for i, at, name in ((0, (0.0, 0.0), "spawn"), (1, (1.0, 0.0), "child"))
    }
    corner = [train_lib.evaluate(s.model, v, ds.x_test, ds.y_test, eb)[0] for v in nets]
    store.save_arrays(
        out / "plane.npz",
        {
            "spawn_epoch": children.spec.spawn_epoch,
            "x": xs,
            "y": ys,
            "corners": pl.corners,
            "corner_error": np.array(corner),
            "corner_function": np.array([project(p) for p in probs]),
            "error_weight": weight["error"].reshape(shape),
            "function_x": weight["projection"][:, 0].reshape(shape),
            "function_y": weight["projection"][:, 1].reshape(shape),
            "function_off_plane": weight["projection"][:, 2].reshape(shape),
            **tangent,
        },
    )
    store.write_manifest(job.kind, job.key, job.record(), ["plane.npz"])


def run_tsne(job: Job) -> None:
    """Predicted probabilities on the test inputs of the parent at every snapshot and of
    every child at its snapshots and end, statistics as ``bn`` says, embedded together by
    t-SNE. Each point: its lineage (spawn epoch, child; the parent has child -1) and epoch.
    ``children_apart``: per spawn epoch, the root mean square over test inputs of the L2
    distance between the probability vectors of children 0 and 1 at the end (in the
    original space: t-SNE distances are not distances)."""
    parent, *kids = job.deps
    s, spec = setup(parent), job.spec
    ds, eb = s.dataset, s.data_params.eval_batch
    out = begin(job)
    points, spawn_epoch, child, epoch, apart = [], [], [], [], []

    def add(v: dict, spawned: float, i: int, step: int) -> None:
        logits = models.predict(s.model, v, ds.x_test, eb)
        points.append(np.asarray(jax.nn.softmax(logits)).ravel())
        spawn_epoch.append(spawned), child.append(i), epoch.append(step / s.spe)

    for step in store.parent_history(parent)["step"]:
        add(s.measured(s.variables(store.parent_snapshot(parent, int(step))), spec.bn),
            np.nan, -1, int(step))  # fmt: skip
    for job_c in kids:
        e, end = job_c.spec.spawn_epoch, s.step_of(s.train_params.epochs)
        stages = [(int(a["step"]), a) for a in store.children_snapshots(job_c)]
        stages = [(st, a) for st, a in stages if st < end]  # the end is final.npz
        for step, arrays in [*stages, (end, store.final(job_c))]:
            for i, v in enumerate(s.children(arrays, job_c.spec.n_children, spec.bn)):
                add(v, e, i, step)
        p0, p1 = points[-job_c.spec.n_children :][:2]
        apart.append(np.sqrt(np.mean((p0 - p1) ** 2) * ds.num_classes))
        log(f"tsne {job.key}: children spawned at epoch {e}")
    emb = landscape.embed(np.stack(points), spec.perplexity, spec.seed)
    store.save_arrays(
        out / "tsne.npz",
        {
            "embedding": emb,
            "spawn_epoch": np.array(spawn_epoch),
            "child": np.array(child),
            "epoch": np.array(epoch),
            "children_spawn_epoch": np.array([j.spec.spawn_epoch for j in kids]),
            "children_apart": np.array(apart),
        },
    )
    store.write_manifest(job.kind, job.key, job.record(), ["tsne.npz"])
