"""Seconds per epoch of each stage against the plain single-model loop, and the GPU-hours of
every figure: measured step times times the plan's step counts.

On a GPU, the one command (every program is compiled first, in parallel, then timed; the
tables written to --out as each section is done; an estimate of 10-15 minutes on an H200, not
measured: the children trained together are timed at every padded batch their groups reach, up
to 40 children, so about six children programs per network):

    .venv/bin/python benchmarks/bench_cost.py --profile paper --out benchmarks/cost-h200.md

Shorter if needed: ``--no-alignment`` (Atanasov et al.'s runs), ``--convs xla`` (only the
runs' convolution for the 16 children), ``--scale-others`` (time only the figure-2 network,
scale the others by FLOPs); ``--list`` names the measurements without timing any.

On a CPU, a smoke test of a few minutes (shapes shrunk and the times scaled back):

    .venv/bin/python benchmarks/bench_cost.py --cpu-small
    .venv/bin/python benchmarks/bench_cost.py --profile quick --cpu-small

(``--profile quick`` alone times everything at its real, small shapes: about 20 minutes on
two CPU cores, most of it 16 vmapped children per convolution implementation.)

The datasets are random arrays of the real shapes (CIFAR: 50,000 32x32x3 training images);
the embedded digits are the real ones. Every time excludes compilation (printed apart), ends
with ``block_until_ready`` and runs on ``jax.devices()[0]``.

Printed as markdown (and written to ``--out``):

1. the stages on the figure-2 network: the plain loop (``plain_loop.py``: Flax TrainState,
   numpy loader, ``jax.jit`` step), ntkpaper's ``train_step`` jitted per step, ntkpaper's
   ``Fused`` epoch loop, one model at n times the batch (the floor of n children), n vmapped
   children (per convolution implementation when ``models.ResNet`` has a ``conv`` field),
   linearised epochs (the Taylor models of figures 8 and 19), the NTK on the probe, with the
   targets on one H100/H200;
2. the times the cost model uses, per network (measured, or scaled and how);
3. the cost of every job of ``plan.all_jobs`` (measured seconds per unit x the units its runner
   computes; the rules are printed under the tables), by kind, by figure ("reads": every job
   the figure needs; "own": those no earlier figure needed, so the owns add up to the whole
   set, shared jobs counted once), the groups of children trained together and the jobs that
   dominate.

Children (``--together``, default on off a CPU): the children jobs of one parent and optimiser
train as one batch of models (``plan.trained_together``, ``spawn.run_together``). Each group's
timeline is cut at its events (a member's spawn step, its end: the parent's last step, or the
cap of low-lr children); in each interval the rows in training run as one program padded to a
multiple of 8 (the memory cap ignored), timed at that size, and each job pays its rows' share.
``--together off`` (a CPU's runner): each job's children are a program of their own, steps x
the step of its n children. The groups' table sets the two side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import plain_loop

from ntkpaper import conv as conv_lib
from ntkpaper import data as data_lib
from ntkpaper import linearize, metrics, models, ntk, plan, silent, spawn
from ntkpaper import params as P
from ntkpaper import train as T
from ntkpaper.jobs import setup as setup_lib
from ntkpaper.jobs import training as training_lib

HEADLINE = "fort-fig2"  # the network of the stage table: ResNet-20 on CIFAR-10
LINEARISED = "fort-fig8"  # its order-1 linearised run
TARGETS = {  # on one H100/H200, for the paper profile
    "floor": 1.2,  # 16 children per step at most this times one model at 16x the batch
    "child_epoch": 0.5,  # seconds per ResNet-20 CIFAR-10 child-epoch, batched
    "fort_hours": 8.0,  # GPU-hours of the whole paper Fort set
}
SHAPES = {  # image shape, classes, train, test: what data.load would give
    "cifar10": ((32, 32, 3), 10, 50_000, 10_000),
    "cifar100": ((32, 32, 3), 100, 50_000, 10_000),
    "mnist": ((28, 28, 1), 10, 60_000, 10_000),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Data: random arrays of the real shapes (speed, not accuracy)
# ---------------------------------------------------------------------------------------


class SyntheticData:
    """``data.load`` for the benchmark: CIFAR and MNIST as random normal images and random
    labels of the real shapes (one array per shape, shared), the embedded digits real."""

    def __init__(self) -> None:
        self.real = data_lib.load
        self.arrays: dict[tuple, jax.Array] = {}
        self.sets: dict[str, data_lib.Dataset] = {}

    def images(self, shape: tuple) -> jax.Array:
        if shape not in self.arrays:
            key = jax.random.PRNGKey(len(self.arrays))
            self.arrays[shape] = jax.random.normal(key, shape, jnp.float32)
        return self.arrays[shape]

    def load(self, name: str, root=None) -> data_lib.Dataset:
        if name == "digits":
            return self.real(name)
        if name not in self.sets:
            image, k, n_train, n_test = SHAPES[name]
            ky, kt = jax.random.split(jax.random.PRNGKey(7))
            self.sets[name] = data_lib.Dataset(
                name,
                self.images((n_train, *image)),
                jax.random.randint(ky, (n_train,), 0, k, jnp.int32),
                self.images((n_test, *image)),
                jax.random.randint(kt, (n_test,), 0, k, jnp.int32),
                k,
            )
        return self.sets[name]


# ---------------------------------------------------------------------------------------
# Networks and timings
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shrink:
    """How far ``--cpu-small`` shrinks what it times; the times are scaled back linearly in
    the batch, the vmapped models and the NTK's Jacobian calls. All 1 / 0: nothing shrunk."""

    batch_div: int = 1  # minibatch and eval batch divided by this
    max_vmap: int = 0  # at most this many vmapped models (children, t~); 0: no cap
    ntk_block_div: int = 1  # NTK block (examples per Jacobian) divided by this


@dataclass
class Net:
    """A network as its runs train and measure it (one per distinct model and data)."""

    label: str
    model: Any
    data: P.Data
    spe: int
    tx: Any
    dataset: data_lib.Dataset
    bn: bool
    classes: int

    @property
    def n_train(self) -> int:
        return int(self.dataset.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.dataset.x_test.shape[0])


@dataclass
class Timing:
    """Seconds per ``unit`` at the shape the runs use."""

    seconds: float
    unit: str
    how: str
    compile_s: float = math.nan


def block(x):
    return jax.block_until_ready(x)


def per_unit(call: Callable[[int], Any], max_units: int, max_seconds: float) -> tuple[float, int]:
    """Seconds per unit of ``call(k)`` (k units): a warm-up ``call(1)``, a timed ``call(1)``,
    then, if that left time, one timed ``call(k)`` with k <= ``max_units`` filling about
    ``max_seconds``."""
    block(call(1))
    start = time.perf_counter()
    block(call(1))
    t1 = time.perf_counter() - start
    k = max(1, min(max_units, int(max_seconds / max(t1, 1e-9))))
    if k == 1:
        return t1, 1
    start = time.perf_counter()
    block(call(k))
    return (time.perf_counter() - start) / k, k


def on_cpu(fn: Callable):
    """Run ``fn()`` (eager initialisation: op by op) on the host, then put the result on the
    default device: no per-op GPU compilations."""
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:
        return fn()
    with jax.default_device(cpu):
        out = fn()
    return jax.device_put(out, jax.devices()[0])


def init_state(model, tx, sample: jax.Array) -> T.TrainState:
    sample = np.asarray(sample)
    return on_cpu(lambda: T.init_state(model, tx, jax.random.PRNGKey(0), jnp.asarray(sample)))


def stacked(tree, n: int):
    return jax.tree.map(lambda a: jnp.stack([a] * n), tree)


class Task:
    """One measurement: ``programs()`` (jitted function, arguments) to compile ahead, in
    parallel; ``measure()`` -> (seconds per unit at full shape, how)."""

    unit = "step"

    def __init__(self, label: str):
        self.label = label
        self.compile_s = 0.0

    def programs(self) -> list[tuple[Callable, tuple]]:
        return []

    def measure(self) -> tuple[float, str]:
        raise NotImplementedError


class FusedTask(Task):
    """Steps of ``Fused(step_fn, spe, in_axes).segment``: one model, vmapped children or
    vmapped Taylor models. ``scale``: full shape / timed shape."""

    def __init__(self, label, step_fn, spe, in_axes, state, key, args, scale, opts):
        super().__init__(label)
        self.fused = T.Fused(step_fn, max(1, spe), in_axes)
        self.state, self.key, self.args, self.scale, self.opts = state, key, args, scale, opts

    def call(self, k: int):
        n = jnp.asarray(k, jnp.int32)
        return self.fused.segment(self.state, self.key, jnp.asarray(0, jnp.int32), n, *self.args)

    def programs(self):
        if not hasattr(self.fused.segment, "lower"):  # a CPU: one jitted call per step,
            return []  # compiled by the warm-up call of ``measure``
        zero = jnp.asarray(0, jnp.int32)
        return [(self.fused.segment, (self.state, self.key, zero, zero, *self.args))]

    def measure(self):
        s, k = per_unit(self.call, self.opts.steps, self.opts.max_seconds)
        return s * self.scale, f"timed, {k} step{'s' * (k > 1)}" + scaled_note(self.scale)


class JitStepTask(Task):
    """ntkpaper's ``train_step`` jitted and called once per step (no ``Fused``)."""

    def __init__(self, label, step_fn, state, args, scale, opts):
        super().__init__(label)
        self.fn, self.state, self.args, self.scale, self.opts = (
            jax.jit(step_fn),
            state,
            args,
            scale,
            opts,
        )
        self.key = jax.random.PRNGKey(1)

    def call(self, k: int):
        state, out = self.state, None
        for i in range(k):
            state, out = self.fn(state, self.key, jnp.asarray(i, jnp.int32), *self.args)
        return out

    def programs(self):
        return [(self.fn, (self.state, self.key, jnp.asarray(0, jnp.int32), *self.args))]

    def measure(self):
        s, k = per_unit(self.call, self.opts.steps, self.opts.max_seconds)
        return s * self.scale, f"timed, {k} step{'s' * (k > 1)}" + scaled_note(self.scale)


class CallTask(Task):
    """``fn(*args)`` called repeatedly: one eval batch forward, one batch-norm statistics
    batch, one eval batch of the vmapped Taylor models."""

    def __init__(self, label, unit, fn, args, scale, opts, static=()):
        super().__init__(label)
        self.unit, self.fn, self.args, self.static = unit, fn, args, static
        self.scale, self.opts = scale, opts

    def call(self, k: int):
        return [self.fn(*self.static, *self.args) for _ in range(k)]

    def programs(self):
        return [(self.fn, (*self.static, *self.args))]

    def measure(self):
        s, k = per_unit(self.call, self.opts.steps, self.opts.max_seconds)
        return s * self.scale, f"timed, {k} call{'s' * (k > 1)}" + scaled_note(self.scale)


class NtkTask(Task):
    """``empirical_ntk`` as the measure jobs call it (``measuring.ntk_of``), on ``blocks``
    blocks of the probe (0: all), scaled by the Jacobian calls: n_b^2 of them for n_b blocks."""

    unit = "kernel"

    def __init__(self, label, net: Net, probe: plan.Probe, blocks: int, shrink: Shrink):
        super().__init__(label)
        self.b = probe.ntk_block
        self.b_small = max(1, self.b // shrink.ntk_block_div)
        nb = math.ceil(probe.probe_size / self.b)
        self.nb_timed = nb if blocks <= 0 else min(blocks, nb)
        self.n = probe.probe_size if self.nb_timed == nb and self.b_small == self.b else None
        self.n = self.n or self.nb_timed * self.b_small
        self.scale = (nb / self.nb_timed) ** 2 * (self.b / self.b_small)
        self.nb, self.trace = nb, probe.ntk_trace
        self.net = net
        v = init_state(net.model, net.tx, net.dataset.x_train[:1]).variables
        self.params, self.stats = v["params"], v["batch_stats"]
        self.x = net.dataset.x_train[: self.n]
        self.f = models.logits(net.model)

    def kernel(self, x):
        return ntk.empirical_ntk(
            self.f,
            self.params,
            x,
            trace_axes=(-1,) if self.trace else (),
            block_size=self.b_small,
            batch_stats=self.stats,
        )

    def programs(self):
        sizes = {self.b_small, self.n % self.b_small} - {0}
        kw = {"batch_stats": self.stats}
        return [(ntk._jacobian, (self.f, self.params, self.x[:m], kw)) for m in sorted(sizes)]

    def measure(self):
        r = self.n % self.b_small
        block(self.kernel(self.x[: self.b_small + r if r else min(self.n, 2 * self.b_small)]))
        start = time.perf_counter()
        block(self.kernel(self.x))
        s = time.perf_counter() - start
        how = f"timed on {self.nb_timed} of {self.nb} blocks"
        if self.b_small != self.b:
            how += f" of {self.b_small} (not {self.b}) examples"
        return s * self.scale, how + scaled_note(self.scale)


class PlainTask(Task):
    """The plain loop of ``plain_loop.py``; compiles on its own."""

    def __init__(self, label, net: Net, sgd: P.Sgd, batch: int, scale, opts):
        super().__init__(label)
        self.net, self.sgd, self.batch, self.scale, self.opts = net, sgd, batch, scale, opts

    def measure(self):
        d = self.net.data
        r = plain_loop.seconds_per_step(
            self.net.model,
            np.asarray(self.net.dataset.x_train),
            np.asarray(self.net.dataset.y_train),
            self.batch,
            self.opts.steps,
            augment=d.augment,
            crop_padding=d.crop_padding,
            lr=self.sgd.lr,
            momentum=self.sgd.momentum,
            weight_decay=self.sgd.weight_decay,
        )
        self.compile_s = r["compile_s"]
        steps = self.opts.steps
        how = f"timed, {steps} step{'s' * (steps > 1)} (host loader included)"
        return r["s_per_step"] * self.scale, how + scaled_note(self.scale)


class AlignTask(Task):
    """A silent-alignment run (``jobs.silent``), its data random of the spec's shapes, timed
    at two truncated lengths S1 < S2 with the same log points: seconds = a x steps + c, with
    a = (T2 - T1) / (S2 - S1) per step and c = T1 - a S1 what the log points cost.

    ``p_div``, ``max_logs`` (``--cpu-small``): P / p_div examples and at most ``max_logs``
    log points; a scaled back by p_div (a step is linear in P), c by p_div^2 (an NTK of P
    examples is quadratic) and by the log points."""

    unit = "step"

    def __init__(self, label, spec: plan.AlignmentSpec, opts, p_div: int = 1, max_logs: int = 0):
        super().__init__(label)
        d, net, tr = spec.data, spec.network, spec.train
        image = {
            "synthetic": (d.dim or 1,),
            "digits": (8, 8, 1),
            "mnist": (28, 28, 1),
            "cifar10": (32, 32, 3),
        }[d.dataset]
        outputs = (
            d.outputs
            if d.dataset == "synthetic"
            else (1 if len(d.classes) == 2 else len(d.classes))
        )
        n = max(min(d.n_train, 8), d.n_train // p_div)
        self.logs = min(tr.log_points, max_logs) if max_logs else tr.log_points
        self.scale_step, self.scale_logs = (
            d.n_train / n,
            (d.n_train / n) ** 2 * (tr.log_points / self.logs),
        )
        rng = np.random.default_rng(0)
        flat = int(np.prod(image))
        x = jnp.asarray(rng.standard_normal((n, flat)).astype(np.float32))
        self.y = jnp.asarray(rng.standard_normal((n, outputs)).astype(np.float32))
        key = jax.random.PRNGKey(net.seed)
        if net.arch == "wrn":
            self.x = x.reshape(-1, *image)
            shapes = silent.wrn_shapes(image[-1], net.width, net.depth, outputs)
            init = lambda s: silent.init_wrn(key, shapes, s, net.first_sigma)  # noqa: E731
            self.f = silent.wrn(net.depth)
        else:
            self.x = x
            sizes = [flat] + [net.width] * (net.depth - 1) + [outputs]
            init = lambda s: silent.init_mlp(key, sizes, s, net.first_sigma)  # noqa: E731
            self.f = silent.mlp(net.activation)
        self.params = [jnp.stack(w) for w in zip(*(init(s) for s in net.sigmas))]
        beta = rng.standard_normal(flat)
        self.beta = beta if outputs == 1 and net.arch == "mlp" else None
        self.tr, self.lengths, self.max_seconds = tr, opts.align_lengths, max(opts.max_seconds, 1)

    def run(self, steps: int) -> float:
        tr = self.tr
        log_steps = silent.log_times(steps, self.logs)
        start = time.perf_counter()
        silent.train_many(
            self.f,
            self.params,
            self.x,
            self.y,
            tr.lr,
            steps,
            log_steps,
            tr.layer_lr,
            tr.optimizer,
            beta=self.beta,
        )
        return time.perf_counter() - start

    def measure(self):
        s1, s2 = (max(s, self.logs) for s in self.lengths)
        self.compile_s = self.run(s1)
        t1 = self.run(s1)
        # S2 - S1 steps take at most about max_seconds (t1 / s1 bounds a step from above)
        s2 = max(s1 + 1, min(s2, s1 + int(self.max_seconds * s1 / max(t1, 1e-9))))
        t2 = self.run(s2)
        a = max(t2 - t1, 0.0) / (s2 - s1)
        self.fixed = max(t1 - a * s1, 0.0) * self.scale_logs
        how = f"timed at {s1} and {s2} steps"
        if self.scale_logs != 1:
            how += f" on P/{self.scale_step:.3g} examples, {self.logs} logs (scaled back)"
        return (
            a * self.scale_step,
            how + f"; + {fmt(self.fixed)} s for the {self.tr.log_points} logs",
        )


class Skipped(Task):
    """A measurement not taken (``why``): its jobs' costs are n/a."""

    def __init__(self, label, why: str):
        super().__init__(label)
        self.why = why

    def measure(self):
        raise RuntimeError(self.why)


def scaled_note(scale: float) -> str:
    return "" if abs(scale - 1) < 1e-9 else f", x{scale:.3g} (shrunk shape scaled back)"


# ---------------------------------------------------------------------------------------
# The bench: networks of the plan, tasks, compile, measure
# ---------------------------------------------------------------------------------------


class Bench:
    def __init__(self, opts, figures: dict[str, P.Figure]):
        self.opts, self.figures = opts, figures
        self.shrink = opts.shrink
        self.nets: dict[tuple, Net] = {}
        self.net_of_parent: dict[str, Net] = {}
        self.tasks: dict[tuple, Task] = {}
        self.timings: dict[tuple, Timing] = {}
        self.failed: dict[tuple, str] = {}
        self.ratio: dict[int, tuple[float, str]] = {}  # scaled mode: id(net) -> FLOP ratio
        self.ref: Net | None = None

    # networks ------------------------------------------------------------------------

    def net(self, parent: plan.Job) -> Net:
        if parent.key in self.net_of_parent:
            return self.net_of_parent[parent.key]
        s = setup_lib.setup(parent)
        d = s.data_params
        key = (
            s.model,
            d.batch_size,
            d.eval_batch,
            d.augment,
            d.crop_padding,
            tuple(s.dataset.x_train.shape),
            s.dataset.num_classes,
        )
        if key not in self.nets:
            m = parent.spec.model
            name = {"resnet": f"ResNet-{m.depth}", "wrn": f"WRN-{m.depth}-{m.width:g}"}.get(
                m.name, "SimpleCNN"
            )
            name += f" x{m.width:g}" * (m.width != 1 and m.name != "wrn")
            name += " no BN" * (not m.batch_norm and m.name == "resnet")
            conv = getattr(s.model, "conv", None)
            label = f"{name}, {d.dataset}, batch {d.batch_size}" + (
                f", conv {conv}" if conv not in (None, "xla") else ""
            )
            self.nets[key] = Net(
                label, s.model, d, s.spe, s.tx, s.dataset, m.batch_norm, s.dataset.num_classes
            )
        self.net_of_parent[parent.key] = self.nets[key]
        return self.nets[key]

    def small(self, net: Net) -> P.Data:
        div = self.shrink.batch_div
        return dataclasses.replace(
            net.data,
            batch_size=max(1, net.data.batch_size // div),
            eval_batch=max(1, net.data.eval_batch // div),
        )

    def vmap_n(self, n: int) -> int:
        return min(n, self.shrink.max_vmap) if self.shrink.max_vmap else n

    def scaled_to_ref(self, net: Net) -> bool:
        return self.opts.scale_others and self.ref is not None and net is not self.ref

    # tasks -----------------------------------------------------------------------------

    def add(self, key: tuple, make: Callable[[], Task]) -> None:
        if key in self.tasks:
            return
        try:
            self.tasks[key] = make()
        except Exception as e:  # noqa: BLE001 - reported in the tables, the rest runs
            label = " ".join(str(getattr(k, "label", k)) for k in key if not isinstance(k, int))
            self.tasks[key] = Skipped(label, f"setting up failed: {type(e).__name__}: {e}"[:300])
            log(f"{label}: {self.tasks[key].why}")

    def need(self, kind: str, net: Net, *extra, **kw) -> None:
        """Register the measurement ``(kind, net, *extra)`` (or, when scaled, the
        reference network's); ``kw`` go to the task, not into the key."""
        if kind == "bnstats" and not net.bn:
            return
        if self.scaled_to_ref(net):
            self.flop_ratio(net)
            net = self.ref
            if kind == "bnstats" and not net.bn:
                return
        key = (kind, id(net), *extra)
        self.add(key, lambda: getattr(self, f"task_{kind}")(net, *extra, **kw))

    def timing(self, kind: str, net: Net, *extra) -> Timing | None:
        if kind == "bnstats" and not net.bn:
            return Timing(0.0, "eval batch", "no batch norm")
        if self.scaled_to_ref(net):
            r, how = self.flop_ratio(net)
            t = self.timings.get((kind, id(self.ref), *extra))
            return None if t is None else Timing(t.seconds * r, t.unit, f"{how}; ref {t.how}")
        if kind == "ntk" and ("ntk_full", id(net), *extra) in self.timings:
            return self.timings[("ntk_full", id(net), *extra)]  # the whole probe, timed
        return self.timings.get((kind, id(net), *extra))

    def model_with(self, net: Net, impl: str | None, vmapped: bool = False):
        """The network with convolutions ``impl``; None: as the runs use it, ``vmapped`` over
        children or t~ (``conv.vmapped``) or alone."""
        if impl is not None:
            return net.model.clone(conv=impl)
        return conv_lib.vmapped(net.model) if vmapped else net.model

    def task_train(self, net: Net, impl: str | None = None, n: int | None = None) -> Task:
        """One model (``n`` None) or ``n`` vmapped children, minibatch as the runs'."""
        d = self.small(net)
        model = self.model_with(net, impl, vmapped=n is not None)
        state = init_state(model, net.tx, net.dataset.x_train[:1])
        step = T.make_train_step(model, net.tx, d, net.spe)
        scale = net.data.batch_size / d.batch_size
        args = (net.dataset.x_train, net.dataset.y_train)
        if n is None:
            return FusedTask(
                f"{net.label}: one model",
                step,
                net.spe,
                None,
                state,
                jax.random.PRNGKey(0),
                args,
                scale,
                self.opts,
            )
        m = self.vmap_n(n)
        return FusedTask(
            f"{net.label}: {n} children" + (f", conv {impl}" if impl else ""),
            step,
            net.spe,
            spawn.CHILDREN_AXES,
            spawn.stack(state, m),
            spawn.child_keys(1, 0, m),
            args,
            scale * n / m,
            self.opts,
        )

    def task_children(self, net: Net, n: int, impl: str | None = None) -> Task:
        return self.task_train(net, impl, n)

    def task_floor(self, net: Net, n: int) -> Task:
        """One model at n times the batch: the compute of n children without per-child
        weights."""
        d = self.small(net)
        m = self.vmap_n(n)
        big = dataclasses.replace(d, batch_size=m * d.batch_size)
        spe = max(1, net.n_train // big.batch_size)
        state = init_state(net.model, net.tx, net.dataset.x_train[:1])
        step = T.make_train_step(net.model, net.tx, big, spe)
        scale = n * net.data.batch_size / big.batch_size
        return FusedTask(
            f"{net.label}: one model, {n}x batch",
            step,
            spe,
            None,
            state,
            jax.random.PRNGKey(0),
            (net.dataset.x_train, net.dataset.y_train),
            scale,
            self.opts,
        )

    def task_jitstep(self, net: Net) -> Task:
        d = self.small(net)
        state = init_state(net.model, net.tx, net.dataset.x_train[:1])
        step = T.make_train_step(net.model, net.tx, d, net.spe)
        return JitStepTask(
            f"{net.label}: jit per step",
            step,
            state,
            (net.dataset.x_train, net.dataset.y_train),
            net.data.batch_size / d.batch_size,
            self.opts,
        )

    def task_plain(self, net: Net, sgd: P.Sgd) -> Task:
        d = self.small(net)
        return PlainTask(
            f"{net.label}: plain loop",
            net,
            sgd,
            d.batch_size,
            net.data.batch_size / d.batch_size,
            self.opts,
        )

    def taylor_parts(self, net: Net, degree: int, n: int):
        m = self.vmap_n(n)
        v = init_state(net.model, net.tx, net.dataset.x_train[:1]).variables
        return m, stacked(v["params"], m), stacked(v["batch_stats"], m)

    def task_taylor(self, net: Net, degree: int, n: int, lp: P.Linearised) -> Task:
        """``make_taylor_step`` vmapped over n t~, as ``jobs.linearised`` runs it."""
        d = self.small(net)
        m, anchor, stats = self.taylor_parts(net, degree, n)
        tx = T.optimizer(lp, net.spe)
        state = T.TrainState(anchor, {}, jax.vmap(tx.init)(anchor))
        step = T.make_taylor_step(self.model_with(net, None, True), tx, d, net.spe, degree)
        args = (net.dataset.x_train, net.dataset.y_train, anchor, stats)
        scale = net.data.batch_size / d.batch_size * n / m
        return FusedTask(
            f"{net.label}: Taylor order {degree}, {n} t~",
            step,
            net.spe,
            (0, None, None, None, None, 0, 0),
            state,
            jax.random.PRNGKey(2),
            args,
            scale,
            self.opts,
        )

    def task_taylor_eval(self, net: Net, degree: int, n: int) -> Task:
        """One eval batch of the n Taylor models (the per-epoch test error)."""
        d = self.small(net)
        m, anchor, stats = self.taylor_parts(net, degree, n)
        g = jax.jit(jax.vmap(linearize.model_taylor(net.model, degree), in_axes=(0, None, 0, 0)))
        x = net.dataset.x_test[: d.eval_batch]
        scale = net.data.eval_batch / d.eval_batch * n / m
        return CallTask(
            f"{net.label}: Taylor order {degree} eval, {n} t~",
            "eval batch",
            g,
            (anchor, x, anchor, stats),
            scale,
            self.opts,
        )

    def task_forward(self, net: Net) -> Task:
        """One eval batch of ``models.predict`` (evaluation mode)."""
        d = self.small(net)
        v = init_state(net.model, net.tx, net.dataset.x_train[:1]).variables
        x = net.dataset.x_test[: d.eval_batch]
        return CallTask(
            f"{net.label}: forward",
            "eval batch",
            models._logits_jit,
            (v["params"], x, v["batch_stats"]),
            net.data.eval_batch / d.eval_batch,
            self.opts,
            static=(net.model,),
        )

    def task_bnstats(self, net: Net) -> Task:
        """One batch of ``metrics.recompute_batch_stats`` (training-mode forward)."""
        d = self.small(net)
        v = init_state(net.model, net.tx, net.dataset.x_train[:1]).variables
        x = net.dataset.x_train[: d.eval_batch]
        fresh = net.model.clone(bn_momentum=0.0)
        return CallTask(
            f"{net.label}: batch-norm statistics",
            "eval batch",
            metrics._stats_step,
            (v, x),
            net.data.eval_batch / d.eval_batch,
            self.opts,
            static=(fresh,),
        )

    def task_ntk(self, net: Net, probe: plan.Probe, full: bool = False) -> Task:
        blocks = 0 if full and self.shrink.ntk_block_div == 1 else self.opts.ntk_blocks
        nb = math.ceil(probe.probe_size / probe.ntk_block)
        part = "whole probe" if blocks <= 0 or blocks >= nb else f"{blocks} of {nb} blocks"
        label = f"{net.label}: NTK, probe {probe.probe_size} ({part})"
        return NtkTask(label, net, probe, blocks, self.shrink)

    def task_align(self, shape: tuple, spec: plan.AlignmentSpec) -> Task:
        d, n = spec.data, spec.network
        label = (
            f"alignment: {n.arch} L={n.depth} N={n.width} x{len(n.sigmas)} sigma, "
            f"{d.dataset} P={d.n_train}, {spec.train.optimizer}, {spec.train.log_points} logs"
        )
        small = self.opts.cpu_small
        if small and n.arch != "mlp":
            return Skipped(
                label, "not timed under --cpu-small (convolutions in a loop: slow on XLA:CPU)"
            )
        return AlignTask(label, spec, self.opts, p_div=10 if small else 1, max_logs=6 * small)

    # scaled mode -----------------------------------------------------------------------

    def flop_ratio(self, net: Net) -> tuple[float, str]:
        """FLOPs of one training step of ``net`` over the reference network's (XLA's cost
        analysis of the lowered step; nothing compiled)."""
        if id(net) not in self.ratio:
            try:
                flops = [self.step_flops(m) for m in (net, self.ref)]
            except Exception:  # noqa: BLE001 - a model the cost analysis cannot trace
                flops = [None, None]
            if all(f and f > 0 for f in flops):
                r = flops[0] / flops[1]
                self.ratio[id(net)] = (r, f"scaled from {self.ref.label} by step FLOPs x{r:.3g}")
            else:
                self.ratio[id(net)] = (1.0, f"taken from {self.ref.label} (no FLOP count)")
        return self.ratio[id(net)]

    def step_flops(self, net: Net) -> float | None:
        d = self.small(net)
        state = jax.eval_shape(
            lambda: T.init_state(
                net.model,
                net.tx,
                jax.random.PRNGKey(0),
                jnp.zeros((1, *net.dataset.x_train.shape[1:])),
            )
        )
        step = jax.jit(T.make_train_step(net.model, net.tx, d, net.spe))
        try:
            ca = step.lower(
                state,
                jax.random.PRNGKey(0),
                jnp.asarray(0, jnp.int32),
                net.dataset.x_train,
                net.dataset.y_train,
            ).cost_analysis()
        except Exception:  # noqa: BLE001 - a backend without cost analysis
            return None
        ca = ca[0] if isinstance(ca, list | tuple) else ca
        return (ca or {}).get("flops")

    # compile and measure -------------------------------------------------------------------

    def compile(self) -> float:
        """Compile every task's programs ahead, in parallel threads (XLA compiles outside the
        GIL, and the jit caches keep what it compiled for the calls). Returns the wall
        seconds of the parallel compilation."""
        lowered = []
        log(f"lowering the programs of {len(self.tasks)} measurements")
        for key, task in self.tasks.items():
            try:
                for fn, args in task.programs():
                    lowered.append((key, fn.lower(*args)))
            except Exception as e:  # noqa: BLE001 - reported in the tables, the rest runs
                self.failed[key] = f"lowering failed: {type(e).__name__}: {e}"[:300]
                log(f"{task.label}: {self.failed[key]}")

        def compile_one(item):
            key, low = item
            start = time.perf_counter()
            try:
                low.compile()
            except Exception as e:  # noqa: BLE001
                return key, time.perf_counter() - start, f"{type(e).__name__}: {e}"[:300]
            return key, time.perf_counter() - start, None

        workers = max(1, min(self.opts.jobs, len(lowered)))
        log(f"compiling {len(lowered)} programs, {workers} at a time")
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            for key, seconds, err in pool.map(compile_one, lowered):
                self.tasks[key].compile_s += seconds
                if err:
                    self.failed[key] = f"compilation failed: {err}"
        wall = time.perf_counter() - start
        log(f"compiled in {wall:.1f} s")
        return wall

    def measure(self, keys) -> None:
        """Measure the tasks ``keys`` not yet measured, one at a time."""
        for key in keys:
            task = self.tasks[key]
            if key in self.failed or key in self.timings:
                continue
            try:
                seconds, how = task.measure()
            except Exception as e:  # noqa: BLE001
                self.failed[key] = (
                    str(e) if isinstance(task, Skipped) else f"{type(e).__name__}: {e}"[:300]
                )
                log(f"{task.label}: {self.failed[key]}")
                continue
            self.timings[key] = Timing(seconds, task.unit, how, task.compile_s)
            log(f"{task.label}: {seconds:.4g} s/{task.unit} ({how})")


# ---------------------------------------------------------------------------------------
# The cost of every job
# ---------------------------------------------------------------------------------------


def align_shape(spec: plan.AlignmentSpec) -> tuple:
    """What an alignment run's speed depends on: not its learning rate or its length."""
    d, n, tr = spec.data, spec.network, spec.train
    return (
        "align",
        d.dataset,
        d.n_train,
        d.dim,
        d.outputs,
        len(d.classes),
        n.arch,
        n.activation,
        n.depth,
        n.width,
        len(n.sigmas),
        tr.optimizer,
        tr.log_points,
    )


def parent_of(job: plan.Job) -> plan.Job:
    while job.kind != "parent":
        job = job.deps[0]
    return job


def closure(jobs) -> dict[str, plan.Job]:
    out: dict[str, plan.Job] = {}
    stack = list(jobs)
    while stack:
        j = stack.pop()
        if j.key not in out:
            out[j.key] = j
            stack.extend(j.deps)
    return out


def parent_snapshots(parent: plan.Job, spe: int) -> int:
    tp = parent.spec.train
    return len({T.epoch_to_step(e, spe) for e in tp.snapshot_epochs()})


PAD = spawn.PAD  # spawn.program_size on one accelerator: batches padded to multiples of it


def padded(rows: int) -> int:
    """The models one program of ``rows`` children computes (the memory cap ignored)."""
    return math.ceil(rows / PAD) * PAD


span = training_lib.span  # the steps [start, end) a children job trains


def timeline(group: tuple[plan.Job, ...], spe: int) -> list[tuple[int, list[plan.Job]]]:
    """(steps, members training) between consecutive events of a group, as
    ``spawn.run_together`` walks it: a member joins at its spawn step and leaves at its end
    (the epoch boundaries in between split no cost)."""
    spans = [(j, *span(j, spe)) for j in group]
    events = sorted({t for _, start, end in spans for t in (start, end)})
    out = []
    for a, b in zip(events[:-1], events[1:]):
        active = [j for j, start, end in spans if start <= a and b <= end]
        if active:
            out.append((b - a, active))
    return out


def n_rows(active: list[plan.Job]) -> int:
    return sum(j.spec.n_children for j in active)


@dataclass
class Cost:
    seconds: float  # nan: a timing it needs failed
    what: str  # the units, for the table of dominant jobs
    rough: bool = False


class CostModel:
    """GPU-seconds of each job: the units its runner computes times the measured seconds per
    unit (docstrings of ``jobs.*``). ``together``: children jobs train in the groups of
    ``plan.trained_together`` (``jobs.training.train_children``), each job costed at its share
    of its group's batches; otherwise each job's children are a program of their own."""

    def __init__(self, bench: Bench, jobs: dict[str, plan.Job], together: bool):
        self.b, self.together = bench, together
        self.groups = plan.trained_together(jobs.values()) if together else []
        self.group_of = {j.key: g for g in self.groups for j in g}

    def timeline(self, job: plan.Job) -> list[tuple[int, list[plan.Job]]]:
        """The timeline of the group ``job`` trains in (itself alone when not together)."""
        group = self.group_of.get(job.key, (job,))
        return timeline(group, self.b.net(parent_of(job)).spe)

    def t(self, kind: str, net: Net, *extra) -> float:
        t = self.b.timing(kind, net, *extra)
        return math.nan if t is None else t.seconds

    def fwd(self, net: Net, n: int) -> float:
        """``models.predict`` on n examples: ceil(n / eval_batch) eval batches."""
        return math.ceil(n / net.data.eval_batch) * self.t("forward", net)

    def bn(self, net: Net, bn: plan.BatchNorm) -> float:
        """``Setup.measured``: statistics recomputed on bn_examples (whole eval batches)."""
        if bn.bn_stats == "running" or not net.bn:
            return 0.0
        return max(1, bn.bn_examples // net.data.eval_batch) * self.t("bnstats", net)

    def requirements(self, job: plan.Job) -> None:
        b = self.b
        if job.kind == "alignment":
            key = align_shape(job.spec)
            b.add(key, lambda: b.task_align(key, job.spec))
            return
        net = b.net(parent_of(job))
        b.need("forward", net)
        b.need("bnstats", net)
        b.need("train", net)
        if job.kind == "children":
            b.need("children", net, job.spec.n_children)  # alone (together: the comparison)
            if job.key in self.group_of:
                for _, active in self.timeline(job):
                    b.need("children", net, padded(n_rows(active)))
        elif job.kind == "linearised":
            lp = job.spec.linearised
            n = len(lp.spawn_epochs)
            b.need("taylor", net, lp.degree, n, lp=lp)
            b.need("taylor_eval", net, lp.degree, n)
        elif job.kind in ("parent_measure", "children_measure"):
            b.need("ntk", net, job.spec.probe)

    def cost(self, job: plan.Job, alone: bool = False) -> Cost:
        """``alone``: children costed as their own program even when trained together."""
        k = job.kind
        if k == "alignment":
            key = align_shape(sp := job.spec)
            t, task = self.b.timings.get(key), self.b.tasks.get(key)
            s = math.nan if t is None else t.seconds * sp.train.steps + task.fixed
            return Cost(s, f"{sp.train.steps} full-batch steps, {sp.train.log_points} logs")
        net = self.b.net(parent_of(job))
        spe, sp = net.spe, job.spec
        if k == "parent":
            steps = T.epoch_to_step(sp.train.epochs, spe)
            snaps = parent_snapshots(job, spe)
            s = steps * self.t("train", net) + snaps * self.fwd(net, net.n_train + net.n_test)
            return Cost(s, f"{steps} steps, {snaps} snapshots evaluated")
        if k == "children":
            return self.children(job, net, alone)
        if k == "linearised":
            lp = sp.linearised
            n = len(lp.spawn_epochs)
            steps = T.epoch_to_step(lp.epochs, spe)
            stops = len(setup_lib.epoch_stops(spe, 0, steps))
            evals = (1 + stops) * math.ceil(net.n_test / net.data.eval_batch)
            s = steps * self.t("taylor", net, lp.degree, n)
            s += evals * self.t("taylor_eval", net, lp.degree, n) + n * self.bn(net, sp.bn)
            return Cost(s, f"{steps} steps of {n} order-{lp.degree} Taylor models")
        if k == "parent_measure":
            (parent,) = job.deps
            snaps = parent_snapshots(parent, spe)
            probe = sp.probe.probe_size
            per = (
                self.bn(net, sp.bn)
                + self.fwd(net, net.n_train + net.n_test)
                + self.t("ntk", net, sp.probe)
                + self.fwd(net, probe)
            )
            return Cost(snaps * per, f"{snaps} snapshots: NTK, errors, ReLU patterns")
        if k == "children_measure":
            bn_n = sp.bn.bn_examples
            pts = sp.barrier_points
            s = 2 * self.bn(net, sp.bn) + pts * (
                self.bn(net, sp.bn) + self.fwd(net, net.n_test) + self.fwd(net, bn_n)
            )
            s += 2 * (self.fwd(net, net.n_test) + self.fwd(net, sp.probe.probe_size))
            s += 2 * self.t("ntk", net, sp.probe)
            return Cost(s, f"barrier of {pts} points, 2 NTKs")
        # not timed as such: estimated from the closest measured stage
        if k == "plane":
            g = sp.resolution**2
            fwd_test = self.fwd(net, net.n_test)
            s = 3 * (self.bn(net, sp.bn) + 2 * fwd_test)
            s += g * (self.bn(net, sp.bn) + fwd_test) + 2 * g * 3 * fwd_test
            return Cost(
                s,
                f"{g} grid points x (statistics + test forward) + 2 tangent planes "
                "(JVP ~ 3 forwards)",
                rough=True,
            )
        if k == "tsne":
            parent, *kids = job.deps
            nets = parent_snapshots(parent, spe)
            end = T.epoch_to_step(parent.spec.train.epochs, spe)
            for c in kids:
                cs = c.spec
                start = T.epoch_to_step(cs.spawn_epoch, spe)
                every = (cs.snapshot_every or 0) * spe
                stages = [
                    st
                    for st in setup_lib.epoch_stops(spe, start, end)
                    if every and st % every == 0 and st < end
                ]
                nets += cs.n_children * (len(stages) + 1)
            s = nets * (self.bn(net, sp.bn) + self.fwd(net, net.n_test))
            return Cost(
                s,
                f"{nets} networks' test predictions (t-SNE itself on the host, not counted)",
                rough=True,
            )
        if k in ("parent_geometry", "children_geometry"):
            # a reverse pass ~ 2 forwards: centroids = 1 forward + K reverse passes per
            # example; a Hessian-vector product ~ 2 gradients ~ 6 forwards per example
            fwd_ex = self.t("forward", net) / net.data.eval_batch
            centroids = (1 + 2 * net.classes) * sp.centroid_examples * fwd_ex
            if k == "children_geometry":
                return Cost(
                    2 * (self.bn(net, sp.bn) + centroids),
                    "2 centroid sets (1 + 2K forwards per example)",
                    rough=True,
                )
            (parent,) = job.deps
            snaps = parent_snapshots(parent, spe)
            hvp = 6 * sp.hessian_examples * fwd_ex
            s = snaps * (self.bn(net, sp.bn) + sp.hessian_iters * hvp + centroids)
            return Cost(
                s,
                f"{snaps} snapshots x ({sp.hessian_iters} HVPs ~ 6 forwards, centroids)",
                rough=True,
            )
        return Cost(math.nan, f"kind {k} not costed", rough=True)

    def children(self, job: plan.Job, net: Net, alone: bool) -> Cost:
        """Training: alone, steps x the step of the job's n children; together, over the
        group's timeline, each interval's steps x the step of its padded batch, times the
        job's share n / rows. Then the evaluations, the same either way."""
        sp, spe, n = job.spec, net.spe, job.spec.n_children
        start, end = span(job, spe)
        if alone or job.key not in self.group_of:
            s = (end - start) * self.t("children", net, n)
            what = f"{end - start} steps of {n}"
        else:
            mine = [(k, n_rows(a)) for k, a in self.timeline(job) if job in a]
            s = sum(k * self.t("children", net, padded(r)) * n / r for k, r in mine)
            peak = max((r for _, r in mine), default=n)
            what = f"{end - start} steps of {n} in batches of up to {peak}"
        s += n * self.fwd(net, net.n_test)
        if sp.low_lr is None:
            return Cost(s, f"{what} children")
        stops = len(setup_lib.epoch_stops(spe, start, end))
        s += (1 + stops) * n * self.fwd(net, net.n_train)
        return Cost(s, f"{what} low-lr children (the cap), train loss each epoch")


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:,.0f}"


def hours(s: float) -> str:
    if not math.isfinite(s):
        return "n/a"
    return f"{s / 3600:.3f}" if s < 36 else f"{s / 3600:.2f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


class Report:
    def __init__(self, out: Path | None):
        self.out, self.parts = out, []

    def add(self, text: str) -> None:
        print(text + "\n", flush=True)
        self.parts.append(text)
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text("\n\n".join(self.parts) + "\n")


def natural(fid: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", fid)]


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def options() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="paper", choices=("paper", "quick"))
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="at most this many timed steps (calls) per measurement (default 50; --cpu-small: 1)",
    )
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="fewer steps when they would take longer than this (default 2)",
    )
    ap.add_argument(
        "--children",
        type=int,
        default=None,
        help="children of the stage table (default 16; --cpu-small: 2)",
    )
    ap.add_argument(
        "--convs",
        default=None,
        help="comma-separated convolution implementations for the children "
        "(default: all of ntkpaper.conv.IMPLEMENTATIONS, if models have one)",
    )
    ap.add_argument(
        "--ntk-blocks",
        type=int,
        default=4,
        help="NTK blocks timed per network, scaled by the n_b^2 Jacobian calls "
        "(0: the whole probe; the stage-table network always whole)",
    )
    ap.add_argument(
        "--scale-others",
        action="store_true",
        help="time only the figure-2 network; scale the other networks by the "
        "FLOPs of one training step (XLA cost analysis)",
    )
    ap.add_argument("--no-alignment", action="store_true", help="skip Atanasov et al.'s runs")
    ap.add_argument(
        "--together",
        choices=("auto", "on", "off"),
        default="auto",
        help="cost the children jobs of one parent and optimiser trained together "
        "(plan.trained_together: padded batches of every child in training) or one job at a "
        "time (default auto: on off a CPU; on a CPU the runner keeps each job's children as "
        "their own program)",
    )
    ap.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="programs compiled at a time"
    )
    ap.add_argument(
        "--cpu-small",
        action="store_true",
        help="smoke test on a CPU in minutes: 1 step per measurement, batch / 16, "
        "at most 2 vmapped models, NTK blocks of 1/5 the examples, other "
        "networks scaled by FLOPs; times scaled back linearly (not a "
        "measurement of anything but the script)",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the tables here")
    ap.add_argument(
        "--list",
        action="store_true",
        help="list the measurements and networks, compile and time nothing",
    )
    o = ap.parse_args()
    if o.cpu_small:
        o.shrink = Shrink(batch_div=16, max_vmap=2, ntk_block_div=5)
        o.steps = o.steps or 1
        o.max_seconds = o.max_seconds if o.max_seconds is not None else 0.0
        o.ntk_blocks = 2
        o.scale_others = True
        o.align_lengths = (20, 40)
        o.children = o.children or 2
    else:
        o.shrink = Shrink()
        o.align_lengths = (200, 2000)
    o.steps = o.steps or 50
    o.children = o.children or 16
    o.max_seconds = 2.0 if o.max_seconds is None else o.max_seconds
    auto = jax.default_backend() != "cpu"
    o.together = {"on": True, "off": False}.get(o.together, auto)
    return o


def conv_impls(opts, model) -> list[str | None]:
    """The children's convolution implementations to time: the runs' first, then the others
    of ``ntkpaper.conv.IMPLEMENTATIONS`` (``--convs``); [None] when models have no switch."""
    names = {f.name for f in dataclasses.fields(models.ResNet)}
    if "conv" not in names or not hasattr(model, "conv"):
        return [None]
    if opts.convs:
        wanted = opts.convs.split(",")
    else:
        wanted = [] if opts.cpu_small else list(conv_lib.IMPLEMENTATIONS)
    runs = conv_lib.vmapped(model).conv  # the children's, as the runs train them
    return [runs] + [i for i in wanted if i != runs]


@dataclass
class Headline:
    """The stage table: the figure-2 network's runs and the keys of their measurements."""

    fig: P.Figure
    net: Net
    n: int  # children
    impls: list
    probe: plan.Probe
    linearised: list  # (job, net) of the stage table's linearised rows
    keys: list

    def children_key(self, impl) -> tuple:
        own = impl == self.impls[0]
        return ("children", id(self.net), self.n) + (() if own else (impl,))


def headline(bench: Bench, opts, figures: dict, jobs: dict) -> Headline:
    fig = figures.get(HEADLINE) or next(f for f in figures.values() if hasattr(f.params, "parent"))
    runs = plan.figure_runs(fig)
    net = bench.net(runs.parent)
    bench.ref = net
    h = Headline(
        fig, net, opts.children, conv_impls(opts, net.model), plan.probe(fig.params.measure), [], []
    )
    lin = sorted(
        (j for j in jobs.values() if j.kind == "linearised"),
        key=lambda j: (j.spec.linearised.degree, j.key),
    )
    if LINEARISED in figures:
        first = plan.figure_runs(figures[LINEARISED]).linearised
        lin = [first] + [j for j in lin if j.key != first.key]
    for j in lin:  # the first, and the others on the same network
        if j is lin[0] or bench.net(parent_of(j)) is net:
            h.linearised.append((j, bench.net(parent_of(j))))

    def add(key, make):
        bench.add(key, make)
        h.keys.append(key)

    add(("plain", id(net)), lambda: bench.task_plain(net, runs.parent.spec.train))
    add(("jitstep", id(net)), lambda: bench.task_jitstep(net))
    add(("train", id(net)), lambda: bench.task_train(net))
    add(("floor", id(net), h.n), lambda: bench.task_floor(net, h.n))
    for impl in h.impls:
        add(h.children_key(impl), lambda impl=impl: bench.task_children(net, h.n, impl))
    for j, jn in h.linearised:
        lp = j.spec.linearised
        n = len(lp.spawn_epochs)
        ref = bench.ref if bench.scaled_to_ref(jn) else jn
        add(
            ("taylor", id(ref), lp.degree, n),
            lambda ref=ref, lp=lp, n=n: bench.task_taylor(ref, lp.degree, n, lp),
        )
    nb = math.ceil(h.probe.probe_size / h.probe.ntk_block)
    if bench.shrink.ntk_block_div == 1 and 0 < opts.ntk_blocks < nb:
        add(("ntk_full", id(net), h.probe), lambda: bench.task_ntk(net, h.probe, full=True))
    add(("ntk", id(net), h.probe), lambda: bench.task_ntk(net, h.probe))
    add(("forward", id(net)), lambda: bench.task_forward(net))
    if net.bn:
        add(("bnstats", id(net)), lambda: bench.task_bnstats(net))
    return h


def device_section(opts) -> str:
    dev = jax.devices()[0]
    text = "## Device\n\n" + table(
        ["device", "backend", "JAX", "Flax", "Optax", "Python", "profile", "options"],
        [
            [
                dev.device_kind,
                jax.default_backend(),
                jax.__version__,
                flax.__version__,
                optax.__version__,
                platform.python_version(),
                opts.profile,
                " ".join(sys.argv[1:]) or "(defaults)",
            ]
        ],
    )
    if opts.cpu_small:
        text += (
            "\n\n**--cpu-small: shapes shrunk and the times scaled back, other networks scaled "
            "by FLOPs: a smoke test of the script, not a measurement.**"
        )
    return text


def stage_section(bench: Bench, h: Headline, opts) -> str:
    net, spe, n = h.net, h.net.spe, h.n
    one = bench.timings.get(("train", id(net)))
    one_s = one.seconds if one else math.nan
    rows = []

    def row(stage, what, key, per_epoch, per_model, ratio="", target="", tm=None):
        tm = tm or bench.timings.get(key)
        if tm is None:
            rows.append(
                [
                    stage,
                    what,
                    "n/a",
                    "n/a",
                    "n/a",
                    "",
                    target,
                    bench.failed.get(key, "not measured"),
                ]
            )
            return None
        ep = tm.seconds * per_epoch if per_epoch else math.nan
        if not per_epoch:
            rows.append(
                [
                    stage,
                    what,
                    fmt(tm.seconds * 1e3),
                    "",
                    "",
                    "",
                    target,
                    f"{fmt(tm.compile_s)} s; {tm.how}",
                ]
            )
            return tm.seconds
        rows.append(
            [
                stage,
                what,
                fmt(tm.seconds * 1e3),
                fmt(ep),
                fmt(ep / per_model),
                ratio(tm.seconds) if callable(ratio) else ratio,
                target,
                f"{fmt(tm.compile_s)} s; {tm.how}",
            ]
        )
        return tm.seconds

    def vs(what, ref):
        return lambda s: f"{fmt(s / ref)}x {what}" if math.isfinite(ref) else ""

    row(
        "plain loop",
        "Flax TrainState, numpy loader, jit step; 1 model",
        ("plain", id(net)),
        spe,
        1,
        vs("ntkpaper Fused", one_s),
    )
    jit1 = row(
        "ntkpaper, jit per step",
        "train_step jitted, one call per step; 1 model",
        ("jitstep", id(net)),
        spe,
        1,
        vs("Fused", one_s),
    )
    row("ntkpaper Fused", "an epoch as one fori_loop; 1 model", ("train", id(net)), spe, 1, "1")
    floor = row(
        f"one model, {n}x batch",
        f"the floor of {n} children",
        ("floor", id(net), n),
        spe,
        n,
        vs("one model", one_s),
    )
    floor = math.nan if floor is None else floor
    for impl in h.impls:
        name = f"{n} children (vmap)" + (f", conv {impl}" if impl else "")
        if impl and impl == h.impls[0]:
            name += " (the runs')"

        def ratio(s):
            return f"{fmt(s / one_s)}x one model; {fmt(s / floor)}x floor"

        row(
            name,
            "Fused(step, spe, CHILDREN_AXES)",
            h.children_key(impl),
            spe,
            n,
            ratio,
            f"<= {TARGETS['floor']}x floor, <= {TARGETS['child_epoch']} s per child-epoch",
        )
    for j, jn in h.linearised:
        lp = j.spec.linearised
        k = len(lp.spawn_epochs)
        tm = bench.timing("taylor", jn, lp.degree, k)
        ref = bench.ref if bench.scaled_to_ref(jn) else jn
        row(
            f"linearised, order {lp.degree}",
            f"{k} t~ vmapped; {jn.label}",
            ("taylor", id(ref), lp.degree, k),
            jn.spe,
            k,
            lambda s, k=k: f"{fmt(s / k / one_s)}x one model per t~",
            tm=tm,
        )
    p = h.probe
    what = (
        f"probe {p.probe_size}, blocks of {p.ntk_block}, "
        f"{'traced' if p.ntk_trace else 'K x K'}; seconds per kernel"
    )
    ntk_rows = [("NTK on the probe", ("ntk", id(net), p))]
    if ("ntk_full", id(net), p) in bench.tasks:
        ntk_rows = [
            ("NTK on the probe", ("ntk_full", id(net), p)),
            ("NTK, block-scaled estimate", ("ntk", id(net), p)),
        ]
    for stage, key in ntk_rows:
        tm = bench.timings.get(key)
        rows.append(
            [
                stage,
                what,
                fmt(tm.seconds * 1e3) if tm else "n/a",
                "",
                "",
                "",
                "",
                f"{fmt(tm.compile_s)} s; {tm.how}" if tm else bench.failed.get(key, "not measured"),
            ]
        )
    for stage, key in (
        ("forward, eval batch", ("forward", id(net))),
        ("BN statistics, eval batch", ("bnstats", id(net))),
    ):
        if key in bench.tasks:
            row(stage, f"{net.data.eval_batch} examples", key, 0, 1)
    text = (
        f"## Stages: {net.label} ({h.fig.id}, {opts.profile}), {spe} steps per epoch\n\n"
        + table(
            [
                "stage",
                "what",
                "ms/step",
                "s/epoch",
                "s per model-epoch",
                "ratio",
                "target",
                "compile s; how",
            ],
            rows,
        )
        + f"\n\nTargets on one H100/H200 (paper profile): {n} children per step <= "
        f"{TARGETS['floor']}x one model at {n}x the batch; one ResNet-20 CIFAR-10 child-epoch <= "
        f"{TARGETS['child_epoch']} s, batched; the whole paper Fort set <= "
        f"{TARGETS['fort_hours']:g} GPU-hours. The plain loop's ratio: its step over ntkpaper's "
        "Fused step (above 1: ntkpaper is faster). Linearised: 's per model-epoch' is per t~."
    )
    if jit1 and one and one.seconds > 2 * jit1:
        text += (
            f"\n\nOn this {jax.default_backend()} backend the Fused epoch loop is "
            f"{fmt(one.seconds / jit1)}x slower per step than the same step jitted alone "
            "(XLA:CPU runs convolution gradients inside a while loop far slower)."
        )
    return text


def times_section(bench: Bench, compile_wall: float) -> str:
    rows = []
    for key, task in bench.tasks.items():
        tm = bench.timings.get(key)
        rows.append(
            [
                task.label,
                task.unit,
                fmt(tm.seconds) if tm else "n/a",
                fmt(tm.compile_s) if tm else "n/a",
                tm.how if tm else bench.failed.get(key, "not measured"),
            ]
        )
    for net in bench.nets.values():
        if bench.scaled_to_ref(net):
            r, how = bench.flop_ratio(net)
            rows.append([net.label, "every unit", f"x{fmt(r)}", "", how])
    return (
        f"## Measured times ({len(bench.tasks)} measurements; their programs compiled in "
        f"parallel in {fmt(compile_wall)} s wall)\n\n"
        + table(["measurement", "unit", "seconds", "compile s", "how"], rows)
    )


def variant(job: plan.Job) -> str:
    if job.kind == "children" and job.spec.low_lr is not None:
        return "children (low lr, at the cap)"
    return job.kind


def total(xs) -> float:
    """Sum of the finite costs (a cost is n/a where a timing it needs failed)."""
    return sum(x for x in xs if math.isfinite(x))


def cost_sections(bench: Bench, model: CostModel, figures: dict, jobs: dict, opts) -> list[str]:
    costs = {k: model.cost(j) for k, j in jobs.items()}
    whole = total(c.seconds for c in costs.values())
    missing = [k for k, c in costs.items() if not math.isfinite(c.seconds)]

    def share(s):
        return f"{100 * s / whole:.1f}%" if whole and math.isfinite(s) else ""

    groups: dict[str, list[str]] = defaultdict(list)
    for k, j in jobs.items():
        groups[j.kind].append(k)
    rows = []
    for kind, keys in sorted(
        groups.items(), key=lambda kv: -total(costs[k].seconds for k in kv[1])
    ):
        s = total(costs[k].seconds for k in keys)
        na = sum(k in missing for k in keys)
        rough = " (rough)" * any(costs[k].rough for k in keys)
        rows.append(
            [kind, len(keys), hours(s) + f" ({na} n/a)" * bool(na), share(s), HOW[kind] + rough]
        )
    children = "trained together" if model.together else "one job at a time"
    out = [
        f"## Cost by kind of job ({opts.profile} profile, {len(jobs)} jobs; children "
        f"{children})\n\n" + table(["kind", "jobs", "GPU-hours", "share", "how estimated"], rows)
    ]

    order = sorted(figures, key=natural)
    reads = {
        fid: [k for k in closure(plan.figure_runs(figures[fid]).jobs()) if k in jobs]
        for fid in order
    }
    owner: dict[str, str] = {}
    sets: dict[str, list[str]] = defaultdict(list)
    rows = []
    for fid in order:
        own = [k for k in reads[fid] if k not in owner]
        owner.update({k: fid for k in own})
        sets["Fort et al." if fid.startswith("fort") else "Atanasov et al."].extend(own)
        notes = ["rough parts"] * any(costs[k].rough for k in reads[fid])
        na = sum(k in missing for k in reads[fid])
        notes += [f"{na} jobs n/a"] * bool(na)
        rows.append(
            [
                fid,
                f"{len(reads[fid])} / {len(own)}",
                hours(total(costs[k].seconds for k in reads[fid])),
                hours(total(costs[k].seconds for k in own)),
                ", ".join(notes),
            ]
        )
    low = [k for k in sets["Fort et al."] if variant(jobs[k]).startswith("children (low")]
    for name, keys in sets.items():
        note = f"target <= {TARGETS['fort_hours']:g} (paper, H100/H200)" * name.startswith("F")
        rows.append(
            [
                f"**{name} set**",
                len(keys),
                "",
                f"**{hours(total(costs[k].seconds for k in keys))}**",
                note,
            ]
        )
        if name.startswith("F") and low:
            rows.append(
                [
                    f"of which low-lr children at their cap ({len(low)} jobs)",
                    "",
                    "",
                    hours(total(costs[k].seconds for k in low)),
                    "an upper bound: they stop once converged",
                ]
            )
    rows.append(
        [
            "**whole set**",
            len(jobs),
            "",
            f"**{hours(whole)}**",
            f"{len(missing)} jobs n/a" * bool(missing),
        ]
    )
    out.append(
        f"## GPU-hours per figure ({opts.profile} profile, on {jax.devices()[0].device_kind})"
        "\n\n"
        + table(["figure", "jobs read / own", "GPU-hours (reads)", "GPU-hours (own)", "note"], rows)
        + "\n\n'reads': every job the figure needs, shared ones included; 'own': the jobs no "
        "earlier figure in this order needs. A shared job is one run, counted once: the owns "
        "add up to the set totals."
    )

    if model.groups:
        out.append(together_section(model, costs, owner))

    grouped: dict[tuple, list[str]] = defaultdict(list)
    for k, j in jobs.items():
        grouped[(variant(j), describe(bench, j))].append(k)
    rows = []
    for (what, net), keys in sorted(
        grouped.items(), key=lambda kv: -total(costs[k].seconds for k in kv[1])
    )[:12]:
        s = total(costs[k].seconds for k in keys)
        figs = sorted({owner[k] for k in keys}, key=natural)
        biggest = max(
            keys, key=lambda k: costs[k].seconds if math.isfinite(costs[k].seconds) else -1
        )
        rows.append(
            [
                what,
                net,
                len(keys),
                hours(s),
                share(s),
                ", ".join(figs),
                f"largest: {biggest}, {hours(costs[biggest].seconds)} h, {costs[biggest].what}",
            ]
        )
    out.append(
        "## The jobs that dominate (by kind and network)\n\n"
        + table(
            ["jobs", "network", "count", "GPU-hours", "share", "first read by", "largest job"], rows
        )
    )
    out.append(
        "## How each job is costed\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in HOW_LONG.items())
    )
    return out


def together_section(model: CostModel, costs: dict[str, Cost], owner: dict[str, str]) -> str:
    """The groups of children trained together, against the same jobs one at a time."""

    def line(label, low, jobs, peak, together, alone):
        gain = f"{fmt(alone / together)}x" if together else ""
        return [label, low, jobs, peak, hours(together), hours(alone), gain]

    rows, sums = [], [0.0, 0.0]
    for group in model.groups:
        parent = group[0].deps[0].key
        peak = max((n_rows(a) for _, a in model.timeline(group[0])), default=0)
        pair = [
            total(costs[j.key].seconds for j in group),
            total(model.cost(j, alone=True).seconds for j in group),
        ]
        sums = [a + b for a, b in zip(sums, pair)]
        low = "yes" * (group[0].spec.low_lr is not None)
        label = f"{owner.get(parent, '')} ({parent})"
        rows.append(line(label, low, len(group), f"{peak} ({padded(peak)})", *pair))
    rows.sort(key=lambda r: (natural(r[0]), r[1]))
    rows.append(line("**all**", "", sum(map(len, model.groups)), "", *sums))
    header = ["parent (first read by)", "low lr", "jobs", "peak models (padded)"]
    header += ["GPU-hours together", "GPU-hours one at a time", "gain"]
    return (
        f"## Children trained together ({len(model.groups)} groups)\n\n"
        + table(header, rows)
        + "\n\nA group: the children jobs of one parent and optimiser (`plan.trained_together`), "
        "one batch of models. Between events (a spawn step, an end) the children in training "
        f"form one program padded to a multiple of {PAD}; a job pays its rows' share of each. "
        "The memory cap (`spawn.fill`: as many models as fit in 70% of the device) is ignored: "
        "a batch above it would run as several programs. 'One at a time': each job's children "
        "as their own program (`--together off`). Evaluations are in both; low-lr children at "
        "their cap."
    )


def main() -> None:
    opts = options()
    start = time.perf_counter()
    report = Report(opts.out)
    report.add(device_section(opts))
    data_lib.load = SyntheticData().load  # setup() loads through it: random, real shapes
    figures = P.load_all(opts.profile)
    jobs = plan.all_jobs(figures)
    if opts.no_alignment:
        jobs = {k: j for k, j in jobs.items() if j.kind != "alignment"}
    bench = Bench(opts, figures)
    model = CostModel(bench, jobs, opts.together)
    h = headline(bench, opts, figures, jobs)
    for job in jobs.values():
        model.requirements(job)
    log(f"{len(jobs)} jobs, {len(bench.nets)} networks, {len(bench.tasks)} measurements")
    if opts.list:
        report.add(
            table(
                ["measurement", "unit", "kind"],
                [[t.label, t.unit, type(t).__name__] for t in bench.tasks.values()],
            )
        )
        return
    compile_wall = bench.compile()
    bench.measure(h.keys)
    report.add(stage_section(bench, h, opts))
    bench.measure(list(bench.tasks))
    report.add(times_section(bench, compile_wall))
    for text in cost_sections(bench, model, figures, jobs, opts):
        report.add(text)
    log(f"done in {time.perf_counter() - start:.0f} s")


def describe(bench: Bench, job: plan.Job) -> str:
    if job.kind == "alignment":
        n = job.spec.network
        return f"{n.arch} L={n.depth} N={n.width}, {job.spec.data.dataset}"
    return bench.net(parent_of(job)).label


HOW = {
    "parent": "steps x one-model Fused step + snapshots x train/test forward",
    "children": "together: the job's share of its group's padded batches, interval by interval; "
    "otherwise steps x its n children's Fused step; + evaluations; low-lr at the cap",
    "linearised": "steps x vmapped Taylor step + per-epoch Taylor test forward",
    "parent_measure": "snapshots x (NTK + BN statistics + train/test forward)",
    "children_measure": "2 NTKs + barrier points x (BN statistics + forwards)",
    "plane": "grid points x (BN statistics + test forward) + tangent planes",
    "tsne": "networks x (BN statistics + test forward)",
    "parent_geometry": "snapshots x (Lanczos HVPs + centroids) from the forward time",
    "children_geometry": "2 x centroids from the forward time",
    "alignment": "truncated run timed at two lengths, extrapolated in steps",
}

HOW_LONG = {
    "parent": "epochs x steps/epoch x the measured seconds of one step of ntkpaper's `Fused` "
    "loop for that network, plus at every snapshot the evaluation of the train and test sets "
    "(eval batches x measured forward).",
    "children": "a job trains from its spawn step to the parent's last step; low-learning-rate "
    "children for the cap (`low_lr.epochs`), an upper bound since they stop once converged. "
    "Trained together (`--together on`, the default off a CPU): the jobs of one parent and "
    "optimiser are one batch (`plan.trained_together`); between consecutive events (a spawn "
    "step, an end) its A rows in training run as one program padded to P, the multiple of 8 "
    "at or above A (the memory cap of `spawn.fill` ignored), and the job pays steps x the "
    "measured `Fused` step of P vmapped children x n / A per interval it trains in. One job at "
    "a time (`--together off`, a CPU's runner): steps x the measured step of its n children. "
    "Step times measured at each n or P the plan reaches, not interpolated. Plus the test "
    "evaluation, and for low-lr children each child's training loss at every epoch boundary.",
    "linearised": "epochs x steps/epoch x the measured `Fused` step of `make_taylor_step` "
    "vmapped over the job's t~ (its degree), plus the per-epoch test error of every Taylor "
    "model (measured eval batches) and the anchors' batch-norm statistics.",
    "parent_measure": "per parent snapshot: the measured NTK on the probe (`empirical_ntk` as "
    "`ntk_of` calls it; on the stage-table network the whole probe, elsewhere --ntk-blocks "
    "blocks scaled by the n_b^2 Jacobian calls), the recomputed batch-norm statistics, the "
    "train and test forward passes and the probe's ReLU patterns (a forward).",
    "children_measure": "two NTKs, two networks' statistics, and per barrier point the "
    "statistics, the test forward and the forward on bn_examples.",
    "plane": "rough: every grid point's statistics and test forward (measured), the two "
    "tangent planes' JVP forward taken as 3 forwards per point (not timed).",
    "tsne": "rough: every embedded network's statistics and test forward (measured); the "
    "t-SNE itself runs on the host CPU and is not counted.",
    "parent_geometry": "rough: per snapshot, hessian_iters Hessian-vector products on "
    "hessian_examples taken as 2 gradients = 6 forwards per example each, and the "
    "logit-gradient centroids on centroid_examples as 1 forward + K reverse passes = 1 + 2K "
    "forwards per example, from the measured forward time per example (not timed as such).",
    "children_geometry": "rough: two networks' centroids as above.",
    "alignment": "each run's program (random data of its shapes) timed at two truncated "
    "lengths with the same log points; seconds = per-step x steps + the rest. The final "
    "kernel-regression predictions are not counted.",
    "shared jobs": "a job several figures read (a parent, its children, its measurements) "
    "is one run: counted once in the set totals, in the 'reads' of every figure that needs "
    "it and in the 'own' of the first such figure.",
}


if __name__ == "__main__":
    main()
