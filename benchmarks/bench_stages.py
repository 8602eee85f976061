"""Seconds per stage on this machine, and the cost of N vmapped children against one model.

    python benchmarks/bench_stages.py [--figure fort-fig2] [--profile quick] [--repeats 20]

Warm-up (compilation) excluded; every timing ends with block_until_ready; the device is
printed. Budgets: 4 vmapped children <= 2.5x one child on CPU, <= 1.5x on a GPU (issue 3);
one linearised step <= 2.5x one ordinary step (issue 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp

from ntkpaper import metrics, models, plan, spawn, views
from ntkpaper import train as T
from ntkpaper.jobs.measuring import ntk_of
from ntkpaper.jobs.setup import setup


def timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up: compile
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--figure", default="fort-fig2")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    fig = views.load(args.figure, args.profile, runs=False)
    r = plan.integrated_runs(fig)
    s = setup(r.parent)
    ds = s.dataset
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    )
    print(
        f"{args.figure}/{args.profile}: {fig.params.model.name}-{fig.params.model.depth} "
        f"x{fig.params.model.width:g}, batch {s.data_params.batch_size}, {s.spe} steps/epoch"
    )

    state = T.init_state(s.model, s.tx, jax.random.PRNGKey(0), ds.x_train[:1])
    step = T.make_train_step(s.model, s.tx, s.data_params, s.spe)
    t = jnp.asarray(3, jnp.int32)
    one = jax.jit(step)
    t1 = timed(lambda: one(state, jax.random.PRNGKey(1), t, ds.x_train, ds.y_train), args.repeats)
    print(f"train step, one model      {t1 * 1e3:8.1f} ms   epoch {t1 * s.spe:6.2f} s")
    many = jax.jit(spawn.vmap_children(step))
    for n in (2, 4):
        states, keys = spawn.stack(state, n), spawn.child_keys(0, 0, n)
        tn = timed(lambda: many(states, keys, t, ds.x_train, ds.y_train), args.repeats)
        print(
            f"train step, {n} children    {tn * 1e3:8.1f} ms   ratio to one model {tn / t1:5.2f}x"
        )

    big = dataclasses.replace(s.data_params, batch_size=4 * s.data_params.batch_size)
    wide = jax.jit(T.make_train_step(s.model, s.tx, big, s.spe // 4))
    tw = timed(lambda: wide(state, jax.random.PRNGKey(1), t, ds.x_train, ds.y_train), args.repeats)
    print(
        f"one model, 4x the batch    {tw * 1e3:8.1f} ms   ratio to one model {tw / t1:5.2f}x "
        "(the compute floor for 4 children)"
    )
    for degree in (1, 2):
        lin = jax.jit(T.make_taylor_step(s.model, s.tx, s.data_params, s.spe, degree))
        anchor = state.params
        tl = timed(
            lambda: lin(
                state, jax.random.PRNGKey(1), t, ds.x_train, ds.y_train, anchor, state.batch_stats
            ),
            args.repeats,
        )
        print(
            f"Taylor order {degree} step       {tl * 1e3:8.1f} ms   ratio to ordinary step "
            f"{tl / t1:5.2f}x (budget for order 1: 2.5x)"
        )

    v = state.variables
    m = fig.params.measure
    xp = ds.x_train[: m.probe_size]
    tk = timed(lambda: ntk_of(s, v, xp, plan.probe(m)), max(1, args.repeats // 10))
    print(f"NTK Gram, probe {m.probe_size:4d}        {tk:8.2f} s")
    tb = timed(
        lambda: metrics.recompute_batch_stats(
            s.model,
            v["params"],
            v["batch_stats"],
            ds.x_train[: m.bn_examples],
            s.data_params.eval_batch,
        ),
        3,
    )
    te = timed(lambda: models.predict(s.model, v, ds.x_test, s.data_params.eval_batch), 3)
    print(f"BN recompute ({m.bn_examples} ex.)   {tb:8.2f} s")
    print(f"test-set forward           {te:8.2f} s")
    print(
        f"error barrier ({m.barrier_points} points, est.) "
        f"{m.barrier_points * (tb + te * (1 + ds.x_train.shape[0] / ds.x_test.shape[0])):6.2f} s"
    )


if __name__ == "__main__":
    main()
