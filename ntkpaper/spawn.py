"""Spawning: children of a parent snapshot, stacked on axis 0 and trained as one program.

Fort et al. 2020, section 2: at spawn time t_s a child copies the parent's weights,
batch-norm statistics and optimiser state (momentum buffer and schedule step) and trains
on with its own SGD noise (its own data order and augmentation). All children of one
spawn time run as ``jax.vmap(train_step)``, one compiled program, not a loop over children.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def vmap_children(train_step):
    """``train_step`` over stacked children: states and keys on axis 0, data shared."""
    return jax.vmap(train_step, in_axes=(0, 0, None, None, None))
