"""Spawning: children of a parent snapshot, stacked on axis 0 and trained as one program.

Fort et al. 2020, section 2: at spawn time t_s a child copies the parent's weights,
batch-norm statistics and optimiser state (momentum buffer and schedule step) and trains
on with its own SGD noise (its own data order and augmentation). All children of one
spawn time run as ``jax.vmap(train_step)``, one compiled program, not a loop over children.
Children of several spawn times of one parent train together (``run_together``): each takes
the parent's steps from its own spawn step on, so at any step every child in training is at
that same step and the children of all spawn times already reached form one batch of models.
With several devices, the children's axis is sharded across them (``shard``): a node with
8 GPUs trains 8 times as many children at once, in the same program.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ntkpaper.train import Fused, TrainState, check_finite


def stack(state: TrainState, n: int) -> TrainState:
    """``n`` copies of ``state`` on a new leading axis: every leaf (...) becomes (n, ...)."""
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *jnp.shape(a))), state)


def unstack(states: TrainState, i: int) -> TrainState:
    """Child ``i`` of a stacked state."""
    return jax.tree.map(lambda a: a[i], states)


def child_keys(seed: int, spawn_step: int, n: int) -> jax.Array:
    """Data-order keys of the ``n`` children spawned at ``spawn_step``: (n, key)."""
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), spawn_step), n)


CHILDREN_AXES = (0, 0, None, None, None)
"""``in_axes`` of a training step over stacked children: states and keys on axis 0, data
shared."""


def vmap_children(train_step):
    """``train_step`` over stacked children: states and keys on axis 0, data shared."""
    return jax.vmap(train_step, in_axes=CHILDREN_AXES)


def models_mesh(n: int, devices=None) -> Mesh | None:
    """A 1-d mesh (axis ``models``) of the most devices that divide ``n`` models evenly;
    None on one device."""
    devices = jax.devices() if devices is None else list(devices)
    d = max(k for k in range(1, len(devices) + 1) if n % k == 0)
    return Mesh(devices[:d], ("models",)) if d > 1 else None


def shard(tree, devices=None):
    """Leaves stacked on axis 0 (n models), split along that axis across the devices
    (``models_mesh``); the jitted program that reads them then runs each device's models
    there (GSPMD), with the data replicated. Unchanged on one device."""
    leaves = jax.tree.leaves(tree)
    if not leaves:  # e.g. the batch statistics of a network without batch norm
        return tree
    mesh = models_mesh(leaves[0].shape[0], devices)
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("models")))


# ---------------------------------------------------------------------------------------
# Children of several spawn epochs, trained together
# ---------------------------------------------------------------------------------------


@dataclass
class Member:
    """The children of one spawn epoch within ``run_together``.

    ``state`` (n, ...) and ``keys`` (n, key) at step ``start``; ``on_stop(step, state)`` runs at
    each of ``stops`` (sorted, after ``start``), and the member leaves the batch at the last one
    or when ``on_stop`` returns True (low-lr children that converged)."""

    name: str
    state: TrainState
    keys: jax.Array
    start: int
    stops: Sequence[int]
    on_stop: Callable[[int, TrainState], bool | None]
    loss: jax.Array | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.keys.shape[0])


def _cat(trees: list) -> object:
    return trees[0] if len(trees) == 1 else jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def _rows(tree, lo: int, hi: int) -> object:
    return jax.tree.map(lambda a: a[lo:hi], tree)


def programs(sizes: Sequence[int], per_program: int | None, pad_to: int = 1) -> list[list[int]]:
    """How the rows of members of ``sizes`` are batched: one list of row indices per program.

    ``per_program`` None: each member is its own program (a CPU, where vmapping more models
    gains nothing). Otherwise the rows are split into the fewest equal programs of at most
    ``per_program`` rows, each padded to a multiple of ``pad_to`` by repeating its first row
    (the padding's results are dropped), so that few program shapes are ever compiled."""
    if per_program is None:
        bounds = np.cumsum([0, *sizes])
        return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    rows = int(sum(sizes))
    k = math.ceil(rows / per_program)
    size = math.ceil(rows / k)
    out = [list(range(i * size, min(rows, (i + 1) * size))) for i in range(k)]
    return [p + [p[0]] * (-len(p) % pad_to) for p in out if p]


PAD = 8  # an accelerator's batch of models: a multiple of lcm(PAD, devices) (``program_size``)


def program_size(fused: Fused, member: Member, args: tuple, fraction: float = 0.7):
    """``(per_program, pad_to)`` for ``run_together`` on this machine's devices.

    On a CPU ``(None, 1)``: each member alone (vmapping more models gains nothing there). On an
    accelerator, as many models as fill ``fraction`` of a device's memory (``fill``), from the
    compiled program's memory analysis of one member's batch, padded to a multiple of
    ``lcm(8, devices)`` so that a batch growing child by child compiles few programs."""
    devices = jax.devices()
    if devices[0].platform == "cpu":
        return None, 1
    limit = (devices[0].memory_stats() or {}).get("bytes_limit")
    start = jnp.asarray([member.start, 1], jnp.int32)
    try:
        lowered = fused.segment.lower(member.state, member.keys, *start, *args)
        m = lowered.compile().memory_analysis()
        per_model = (m.temp_size_in_bytes + 2 * m.output_size_in_bytes) / member.n
    except Exception:  # no memory analysis on this backend: one program for every child
        limit = None
    shared = sum(a.nbytes for a in jax.tree.leaves(args)) * len(devices)  # on every device
    n = None if limit is None else fill(per_model, shared, limit * len(devices), fraction)
    return n, math.lcm(PAD, len(devices))


def fill(per_model: float, shared: float, memory: float, fraction: float = 0.7) -> int:
    """How many models fit in ``fraction`` of ``memory`` bytes beside ``shared`` ones (the
    data), at ``per_model`` bytes each (their state, gradients and activations); at least 1."""
    return max(1, int((fraction * memory - shared) // per_model))


def run_together(
    fused: Fused,
    members: Sequence[Member],
    args: tuple,
    per_program: int | None = None,
    pad_to: int = 1,
) -> dict[str, TrainState]:
    """Train ``members`` (children of several spawn steps, one step function) together; return
    each one's final state by name.

    The step is global: from step t to the next event (a member joining at its ``start``, a
    member's stop, an epoch boundary) every member with start <= t takes steps t, t+1, ... as
    one batch of models (``programs``), so each child takes exactly the steps it would alone.
    A member whose loss is not finite at one of its stops raises ``Diverged`` naming it."""
    pending = sorted((m for m in members if m.stops), key=lambda m: m.start)
    finals = {m.name: m.state for m in members if not m.stops}
    active: list[Member] = []
    t = pending[0].start if pending else 0
    while pending or active:
        while pending and pending[0].start <= t:
            active.append(pending.pop(0))
        if not active:
            t = pending[0].start
            continue
        nxt = min(
            [next(s for s in m.stops if s > t) for m in active]
            + [m.start for m in pending]
            + [(t // fused.spe + 1) * fused.spe]
        )
        _piece(fused, active, args, t, nxt - t, per_program, pad_to)
        t = nxt
        for m in list(active):
            if t not in m.stops:
                continue
            check_finite(m.name, m.loss, t)
            if m.on_stop(t, m.state) or t == m.stops[-1]:
                active.remove(m)
                finals[m.name] = m.state
    return finals


def _piece(fused, active, args, t, n, per_program, pad_to) -> None:
    """Steps t .. t + n - 1 of every active member, one ``fused.segment`` per program."""
    start = jnp.asarray([t, n], jnp.int32)
    if per_program is None:
        for m in active:
            m.state, m.loss = fused.segment(shard(m.state), shard(m.keys), *start, *args)
        return
    states, keys = _cat([m.state for m in active]), _cat([m.keys for m in active])
    outs, losses = [], []
    for rows in programs([m.n for m in active], per_program, pad_to):
        idx = jnp.asarray(rows)
        st, loss = fused.segment(
            shard(jax.tree.map(lambda a: a[idx], states)), shard(keys[idx]), *start, *args
        )
        real = len(set(rows))  # the padding repeats a row
        outs.append(_rows(st, 0, real))
        losses.append(loss[:real])
    states, loss = _cat(outs), jnp.concatenate(losses)
    lo = 0
    for m in active:
        m.state, m.loss = _rows(states, lo, lo + m.n), loss[lo : lo + m.n]
        lo += m.n
