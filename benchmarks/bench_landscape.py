"""Seconds of the landscape stages (Fort et al. figures 5, 11, 20) and each figure's projected cost.

    python benchmarks/bench_landscape.py [--profile quick|paper] [--repeats 3]

Measures on this machine's device, with random networks and random inputs of the profile's
shapes (no dataset needed, so the `paper` projection runs anywhere; on a GPU it is the GPU's):
one plane grid point (batch-norm statistics recomputed, test error), one by one against vmapped
in batches of 8 (the ratio decides ``landscape.grid_batch``); the tangent planes of a whole grid;
one training step of a parent and of two vmapped children; t-SNE of the figure's networks. Then
the cost of each figure: number of operations x seconds each, printed per stage. On the GPU
machine: `python benchmarks/bench_landscape.py --profile paper`.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from bench_stages import timed  # noqa: E402  (benchmarks/ is the script's directory)

from ntkpaper import landscape, models, plan, spawn, views
from ntkpaper import train as T
from ntkpaper.data import _NUM_CLASSES

SHAPES = {  # dataset: (image shape, training examples, test examples)
    "digits": ((8, 8, 1), 1437, 360),
    "cifar10": ((32, 32, 3), 50000, 10000),
    "cifar100": ((32, 32, 3), 50000, 10000),
    "mnist": ((28, 28, 1), 60000, 10000),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    fig5 = views.load("fort-fig5", args.profile, runs=False)
    p = fig5.params
    shape, n_train, n_test = SHAPES[p.data.dataset]
    k = _NUM_CLASSES[p.data.dataset]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n_test, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, k, n_test))
    bn_x = jnp.asarray(rng.normal(size=(p.measure.bn_examples, *shape)), jnp.float32)
    model = models.build(p.model.name, k, depth=p.model.depth, width=p.model.width,
                         batch_norm=p.model.batch_norm)  # fmt: skip
    v0 = model.init(jax.random.PRNGKey(0), x[:1], train=False)
    nets = tuple({"params": jax.tree.map(lambda a, i=i: a * (1 + 0.1 * i), v0["params"]),
                  "batch_stats": v0.get("batch_stats", {})} for i in range(3))  # fmt: skip
    eb = p.data.eval_batch
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    )
    print(f"{args.profile}: {p.model.name}-{p.model.depth} on {p.data.dataset}-shaped inputs, "
          f"{n_test} test, {p.measure.bn_examples} for batch norm")  # fmt: skip

    ab = rng.uniform(0, 1, (8, 2))
    one = {c: timed(lambda c=c: landscape.plane_errors(
        model, nets, ab, x, y, bn_x, eb, p.measure.bn_stats, chunk=c)["error"], args.repeats) / 8
        for c in (1, 8)}  # fmt: skip
    print(f"plane grid point, one by one   {one[1]:8.3f} s")
    print(f"plane grid point, vmapped x8   {one[8]:8.3f} s   (ratio {one[8] / one[1]:.2f})")
    point = min(one.values())
    grid = rng.uniform(0, 1, (p.plane.resolution**2, 2))
    tangent = timed(lambda: landscape.tangent_logits(
        model, nets, (0.0, 0.0), grid, x, eb, nets[0]["batch_stats"]), 1)  # fmt: skip
    print(f"tangent plane, whole grid      {tangent:8.3f} s")

    xb = jnp.asarray(rng.normal(size=(n_train, *shape)), jnp.float32)
    yb = jnp.asarray(rng.integers(0, k, n_train))
    spe = T.steps_per_epoch(n_train, p.data.batch_size)

    def step_times(fig) -> tuple[float, float]:
        """Seconds of one training step of a parent and of two vmapped children."""
        q = fig.params
        m = models.build(q.model.name, k, depth=q.model.depth, width=q.model.width,
                         batch_norm=q.model.batch_norm)  # fmt: skip
        tx = T.optimizer(q.parent, spe)
        state = T.init_state(m, tx, jax.random.PRNGKey(0), x[:1])
        fn = T.make_train_step(m, tx, q.data, spe)
        one, two = jax.jit(fn), jax.jit(spawn.vmap_children(fn))
        key = jax.random.PRNGKey(1)
        stacked, keys = spawn.stack(state, 2), jax.random.split(key, 2)
        n = args.repeats * 5
        t_one = timed(lambda: one(state, key, jnp.int32(0), xb, yb)[1], n)
        return t_one, timed(lambda: two(stacked, keys, jnp.int32(0), xb, yb)[1], n)

    f20 = views.load("fort-fig20", args.profile, runs=False).params
    t_parent, t_kids = step_times(views.load("fort-fig20", args.profile, runs=False))
    print(f"fort-fig20 train step, parent  {t_parent:8.4f} s")
    print(f"... 2 vmapped children         {t_kids:8.4f} s")

    r = plan.landscape_runs(views.load("fort-fig11", args.profile, runs=False))
    stages = len(r.parent.spec.train.snapshot_epochs()) + sum(
        2 * (int((p.parent.epochs - j.spec.spawn_epoch) // p.children.snapshot_every) + 1)
        for j in r.children
    )
    pts = rng.random((stages, min(n_test * k, 20000)))
    perplexity = min(
        views.load("fort-fig11", args.profile, runs=False).params.tsne.perplexity, stages - 1
    )
    t_tsne = timed(lambda: landscape.embed(pts, perplexity, 0), 1)
    forward = timed(lambda: models.predict(model, nets[0], x, eb), args.repeats)
    print(f"t-SNE of {stages} networks         {t_tsne:8.3f} s   (inputs cut to 20000 numbers)")

    planes = len(p.plane.spawn_epochs) * (p.plane.resolution**2 * point + 2 * tangent)
    tsne = stages * (forward + point) + t_tsne
    spe20 = T.steps_per_epoch(n_train, f20.data.batch_size)
    train20 = f20.parent.epochs * spe20 * t_parent + sum(
        (f20.parent.epochs - e) * spe20 * t_kids for e in f20.children.spawn_epochs
    )
    print("\nprojected cost on this device (runs of fort-fig4 shared, not counted):")
    print(f"  fort-fig5   planes        {planes:10.0f} s")
    print(f"  fort-fig11  t-SNE         {tsne:10.0f} s")
    print(
        f"  fort-fig20  training      {train20:10.0f} s   (parent and children; their measurements "
        "as fort-fig4's)"
    )
    print("  fort-fig6/7/10            notebooks only")


if __name__ == "__main__":
    main()
