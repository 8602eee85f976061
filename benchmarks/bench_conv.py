"""Training-step time of n vmapped children against one model at n times the batch, for each
convolution implementation (``ntkpaper.conv``), and the ratio of each to that floor.

On a GPU (16 children, ResNet-20, CIFAR-sized inputs, batch 128 per child):

    .venv/bin/python benchmarks/bench_conv.py

On a CPU the defaults are 4 children; ``--quick`` shrinks everything to finish in under a
minute (ResNet-8, 16x16 inputs, batch 32). Other models: ``--model wrn`` (WRN-16-4),
``--model simplecnn``; sizes: ``--children``, ``--batch``, ``--size``, ``--depth``, ``--width``;
a subset of implementations: ``--impls xla,patches``.

Each time is one jitted ``train.make_train_step`` (minibatch gather, forward, backward, SGD
update, batch norm in training mode) on synthetic data, warm-up (compilation) excluded, the
median of ``--repeats`` calls each ended by ``block_until_ready``, the rows timed
round robin. Rows:

    one model, batch B          the single-model step children are compared with
    one model, batch n*B        the floor: the same work as n children, no per-child weights
    n children (vmap), <impl>   ``spawn.vmap_children(step)`` with ``conv=<impl>``

and, per row, the compiled program's temporary memory (``memory_analysis``, where the
backend reports it). Target: 16 children <= 1.2x the floor on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from ntkpaper import conv, models, spawn
from ntkpaper import train as T
from ntkpaper.params import Data, Sgd


def temp_bytes(compiled) -> float | None:
    """Temporary memory of a compiled program, bytes (None where not reported)."""
    try:
        return float(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - a backend without memory analysis
        return None


def main() -> None:
    gpu = jax.default_backend() != "cpu"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--children", "-n", type=int, default=16 if gpu else 4)
    ap.add_argument("--batch", "-B", type=int, default=128, help="minibatch per child")
    ap.add_argument("--size", type=int, default=32, help="image height and width")
    ap.add_argument("--model", default="resnet", choices=("resnet", "wrn", "simplecnn"))
    ap.add_argument("--depth", type=int, default=None, help="default: 20 resnet, 16 wrn")
    ap.add_argument("--width", type=float, default=None, help="default: 1 resnet, 4 wrn")
    ap.add_argument("--no-bn", action="store_true", help="ResNet without batch norm")
    ap.add_argument("--impls", default=",".join(conv.IMPLEMENTATIONS), help="comma-separated")
    ap.add_argument("--repeats", type=int, default=20 if gpu else 3)
    ap.add_argument(
        "--quick", action="store_true", help="CPU-sized: ResNet-8 (WRN-10), 16x16, batch 32"
    )
    args = ap.parse_args()
    if args.quick:  # the shallowest of each model, small images
        args.batch, args.size = 32, 16
        args.depth = args.depth or {"resnet": 8, "wrn": 10, "simplecnn": 6}[args.model]
    depth = args.depth or {"resnet": 20, "wrn": 16, "simplecnn": 6}[args.model]
    width = args.width or {"resnet": 1.0, "wrn": 4.0, "simplecnn": 1.0}[args.model]
    n, b, impls = args.children, args.batch, args.impls.split(",")
    for impl in impls:
        conv.check(impl)

    def model(impl: str):
        kw = dict(depth=depth, width=width, conv=impl)
        if args.model != "wrn":
            kw["batch_norm"] = not args.no_bn
        return models.build(args.model, 10, **kw)

    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(
        f"{args.model}-{depth} x{width:g}, {args.size}x{args.size}x3, batch {b} per child, "
        f"{n} children, median of {args.repeats}"
    )
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x_train = jax.random.normal(kx, (n * b, args.size, args.size, 3), jnp.float32)
    y_train = jax.random.randint(ky, (n * b,), 0, 10)
    sgd = Sgd(lr=0.01, momentum=0.9, weight_decay=5e-4, lr_drops=(), lr_decay=1.0)
    step_t = jnp.asarray(0, jnp.int32)

    def one(impl: str, batch: int):
        m = model(impl)
        tx = T.optimizer(sgd, spe=1)
        data = Data("cifar10", batch, batch, False, 0)
        state = T.init_state(m, tx, jax.random.PRNGKey(1), x_train[:1])
        return T.make_train_step(m, tx, data, spe=1), state

    key = jax.random.PRNGKey(2)
    cases = []  # (label, jitted step, its arguments)
    step, state = one("xla", b)
    cases.append((f"one model, batch {b}", step, (state, key, step_t, x_train, y_train)))
    step, state = one("xla", n * b)
    cases.append(
        (f"one model, batch {n * b} (floor)", step, (state, key, step_t, x_train, y_train))
    )
    keys = spawn.child_keys(0, 0, n)
    for impl in impls:
        step, state = one(impl, b)
        args_ = (spawn.stack(state, n), keys, step_t, x_train, y_train)
        cases.append((f"{n} children (vmap), {impl}", spawn.vmap_children(step), args_))

    compiled = []
    for label, fn, a in cases:
        start = time.perf_counter()
        f = jax.jit(fn).lower(*a).compile()
        jax.block_until_ready(f(*a))  # warm up
        print(f"  compiled {label:34s} {time.perf_counter() - start:6.1f} s", flush=True)
        compiled.append((label, f, a, temp_bytes(f)))
    times: dict[str, list[float]] = {label: [] for label, *_ in compiled}
    for _ in range(args.repeats):  # round robin: a load that drifts hits every row alike
        for label, f, a, _ in compiled:
            start = time.perf_counter()
            jax.block_until_ready(f(*a))
            times[label].append(time.perf_counter() - start)
    rows = [(label, statistics.median(times[label]), mem) for label, _, _, mem in compiled]

    floor = rows[1][1]
    print(f"\n{'':34s} {'ms':>9s} {'/ floor':>8s} {'temp MB':>9s}")
    for label, seconds, mem in rows:
        mb = f"{mem / 2**20:9.1f}" if mem is not None else f"{'-':>9s}"
        print(f"{label:34s} {seconds * 1e3:9.2f} {seconds / floor:8.2f} {mb}")


if __name__ == "__main__":
    main()
