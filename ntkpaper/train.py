"""Training: TrainState, loss, SGD with momentum and a step schedule, the training loop,
and the training step of a Taylor model.

Knows nothing of children: ``spawn`` vmaps the same ``train_step``. Data stay on the
device; each step gathers its minibatch from a permutation drawn from
``fold_in(key, epoch)``, so the data order is a pure function of (key, step) and a run
resumed from any checkpoint takes exactly the steps an uninterrupted run takes.
``Fused`` runs the steps of one epoch as one ``lax.scan``, the epoch's permutation drawn
once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from ntkpaper import data as data_lib
from ntkpaper import linearize, metrics, models
from ntkpaper.params import Data, Sgd

PyTree = Any


class Diverged(RuntimeError):
    """The training loss is not finite; the message names the run and the way out."""


def check_finite(name: str, loss, step: int) -> None:
    """Raise ``Diverged`` naming run ``name`` if ``loss`` (at ``step``) is not finite."""
    loss = np.asarray(loss)
    if not np.all(np.isfinite(loss)):
        raise Diverged(
            f"{name}: training loss is {loss} at step {step}; the run diverged. Lower the "
            "learning rate (or raise the batch size) in the parameter file, then run the same "
            "command again."
        )


class TrainState(struct.PyTreeNode):
    """Everything a run needs to continue: weights, batch-norm statistics, optimiser state."""

    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree

    @property
    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats}


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Full minibatches per epoch (the last partial batch is dropped)."""
    return n_train // batch_size


def epoch_to_step(epoch: float, spe: int) -> int:
    return int(round(epoch * spe))


def learning_rate(sgd: Sgd, epoch: float) -> float:
    """lr(t) of ``optimizer``'s schedule at epoch t: lr x lr_decay ^ #{drops d <= t}."""
    return sgd.lr * sgd.lr_decay ** sum(epoch >= d - 1e-9 for d in sgd.lr_drops)


def optimizer(
    sgd: Sgd, spe: int, lr: float | None = None, lr_drops: Sequence[float] | None = None
) -> optax.GradientTransformation:
    """SGD with momentum (or Adam) and L2 weight decay; lr multiplied by ``lr_decay`` at each
    drop.

    lr(step) = lr * lr_decay ** #{drops d : step >= d * spe}. Weight decay is added to the
    gradient before the optimiser (L2, not AdamW's decoupled decay). ``sgd`` is a parent's or a
    linearised run's section; ``lr`` and ``lr_drops`` override it (low-learning-rate
    children) with the same state layout.
    """
    lr = sgd.lr if lr is None else lr
    drops = sgd.lr_drops if lr_drops is None else lr_drops
    scales: dict[int, float] = {}
    for e in drops:
        s = epoch_to_step(e, spe)
        scales[s] = scales.get(s, 1.0) * sgd.lr_decay
    schedule = optax.piecewise_constant_schedule(lr, scales)
    step = (
        optax.adam(schedule)
        if sgd.optimizer == "adam"
        else optax.sgd(schedule, momentum=sgd.momentum)
    )
    return optax.chain(optax.add_decayed_weights(sgd.weight_decay), step)


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, sample_x: jax.Array
) -> TrainState:
    """Initial weights (Flax defaults) for inputs shaped like ``sample_x`` (n, H, W, C)."""
    variables = model.init(key, sample_x, train=False)
    params = variables["params"]
    return TrainState(params, variables.get("batch_stats", {}), tx.init(params))


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; logits (n, K), y (n,) integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def epoch_order(key: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
    """The data order of ``epoch``: ``permutation(fold_in(order_key, epoch), n)``, where
    ``order_key, aug_key = split(key)``."""
    order_key, _ = jax.random.split(key)
    return jax.random.permutation(jax.random.fold_in(order_key, epoch), n)


def minibatch(
    data: Data,
    spe: int,
    key: jax.Array,
    step: jax.Array,
    x_train: jax.Array,
    y_train: jax.Array,
    order: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The minibatch of ``step``: (B, H, W, C) inputs and (B,) labels, on device.

    Slice ``step % spe`` of ``epoch_order(key, step // spe)`` (``order``, when the caller drew
    it once for the epoch); augmentation (crop, flip) draws from ``fold_in(aug_key, step)``.
    """
    _, aug_key = jax.random.split(key)
    if order is None:
        order = epoch_order(key, step // spe, x_train.shape[0])
    idx = jax.lax.dynamic_slice(order, ((step % spe) * data.batch_size,), (data.batch_size,))
    x, y = x_train[idx], y_train[idx]
    if data.augment:
        x = data_lib.augment(jax.random.fold_in(aug_key, step), x, data.crop_padding)
    return x, y


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation, data: Data, spe: int
) -> Callable:
    """``train_step(state, key, step, x_train, y_train, order=None) -> (state, loss)``: one SGD
    step (``order``: the epoch's data order, see ``minibatch``).

    Batch norm in training mode (batch statistics, running averages updated). Pure: jit or
    vmap it at the call site, or fuse the steps of an epoch with ``Fused``.
    """

    def train_step(state, key, step, x_train, y_train, order=None):
        x, y = minibatch(data, spe, key, step, x_train, y_train, order)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return cross_entropy(logits, y), updates.get("batch_stats", {})

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, batch_stats, opt_state), loss

    return train_step


@dataclass(frozen=True)
class Fused:
    """Consecutive steps of ``step_fn(state, key, step, x_train, y_train, *rest, order=...)``
    within one epoch, the epoch's data order (``epoch_order``) drawn once, not at every step.

    On an accelerator (``in_loop``, the default there) the steps run as one jitted
    ``lax.fori_loop``: the host dispatches one program per piece of an epoch, and the number
    of steps is an argument, so one compilation serves every piece. On a CPU (default
    ``in_loop=False``) each step is its own jitted call, because XLA:CPU runs convolution
    gradients inside a loop several times slower (ResNet-20: 7x).

    ``in_axes`` vmaps over a batch of models (children: states and keys on axis 0, data
    shared), so each model draws its own order.
    """

    step_fn: Callable
    spe: int
    in_axes: tuple | None = None
    in_loop: bool | None = None  # None: on any backend but the CPU

    @functools.cached_property
    def segment(self) -> Callable:
        """``(state, key, start, n, x_train, y_train, *rest) -> (state, last loss)``: steps
        ``start .. start + n - 1``, all in the epoch of ``start``."""
        in_loop = jax.default_backend() != "cpu" if self.in_loop is None else self.in_loop
        vmap = lambda f, axes: f if self.in_axes is None else jax.vmap(f, axes)  # noqa: E731
        key_axis = None if self.in_axes is None else self.in_axes[1]
        order_of = lambda key, start, n: epoch_order(key, start // self.spe, n)  # noqa: E731
        if not in_loop:
            one_order = key_axis is None  # models sharing a key (Taylor models over t~)
            order_fn = order_of if one_order else jax.vmap(order_of, (key_axis, None, None))
            order_fn = jax.jit(order_fn, static_argnums=2)
            step = lambda st, key, t, *a: self.step_fn(st, key, t, *a[:-1], order=a[-1])  # noqa: E731
            step = jax.jit(vmap(step, (*(self.in_axes or ()), key_axis)))

            def run(state, key, start, n, *args):
                order, loss = order_fn(key, start, args[0].shape[0]), None
                for i in range(int(n)):
                    state, loss = step(state, key, start + i, *args, order)
                return state, loss

            return run

        def fused(state, key, start, n, *args):
            order = order_of(key, start, args[0].shape[0])
            body = lambda i, c: self.step_fn(c[0], key, start + i, *args, order=order)  # noqa: E731
            return jax.lax.fori_loop(0, n, body, (state, jnp.zeros((), jnp.float32)))

        axes = None if self.in_axes is None else (*self.in_axes[:3], None, *self.in_axes[3:])
        return jax.jit(vmap(fused, axes))


def run_steps(
    steps: Fused,
    state: TrainState,
    key: jax.Array,
    args: tuple,
    start: int,
    stops: Sequence[int],
    on_stop: Callable[[int, TrainState], bool | None],
    name: str,
) -> TrainState:
    """Run the steps from ``start`` through each of ``stops``, one ``steps.segment`` per piece
    of an epoch between them.

    ``args`` are the on-device arrays every step reads (``x_train, y_train``, ...). The
    pieces depend only on the steps and the stops, so a run resumed at a stop takes the same
    steps in the same pieces as an uninterrupted one. ``on_stop(step, state)`` runs at each
    stop; if it returns True, training ends there. The loss is checked at each stop (one host
    sync per stop); a non-finite loss raises ``Diverged`` naming ``name``.
    """
    step = start
    for stop in stops:
        loss = None
        while step < stop:
            n = min(stop, (step // steps.spe + 1) * steps.spe) - step
            state, loss = steps.segment(state, key, *jnp.asarray([step, n], jnp.int32), *args)
            step += n
        if loss is not None:
            check_finite(name, loss, step)
        if on_stop(step, state):
            break
    return state


def evaluate(
    model: nn.Module, variables: dict, x: jax.Array, y: jax.Array, batch_size: int
) -> tuple[float, float]:
    """Error R(w; S) (fraction of wrong arg-max) and mean cross-entropy on (x, y)."""
    logits = models.predict(model, variables, x, batch_size)
    return float(metrics.error(logits, y)), float(cross_entropy(logits, y))


def make_taylor_step(model, tx, data: Data, spe: int, degree: int) -> Callable:
    """``step(state, key, step, x_train, y_train, anchor, batch_stats, order=None) -> (state,
    loss)``.

    One SGD step on the cross-entropy of the order-``degree`` Taylor model (degree 1: the
    linearised network f_lin(w) = f(w~) + J_{w~}(w - w~)), on the same minibatches as
    ordinary training. ``state.params`` start at ``anchor``; ``state.batch_stats`` is unused.
    Pure: vmap it over several t~ (anchors on axis 0) and jit it at the call site.
    """
    g = linearize.model_taylor(model, degree)

    def step(state, key, step, x_train, y_train, anchor, batch_stats, order=None):
        x, y = minibatch(data, spe, key, step, x_train, y_train, order)
        loss_fn = lambda p: cross_entropy(g(p, x, anchor, batch_stats), y)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(
            params=jax.tree.map(lambda p, u: p + u, state.params, updates), opt_state=opt_state
        ), loss

    return step
