"""Spawning: children of a parent snapshot, stacked on axis 0 and trained as one program.

Fort et al. 2020, section 2: at spawn time t_s a child copies the parent's weights,
batch-norm statistics and optimiser state (momentum buffer and schedule step) and trains
on with its own SGD noise (its own data order and augmentation). All children of one
spawn time run as ``jax.vmap(train_step)``, one compiled program, not a loop over children.
With several devices, the children's axis is sharded across them (``shard``): a node with
8 GPUs trains 8 times as many children at once, in the same program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ntkpaper.train import TrainState


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
