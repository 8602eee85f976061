"""The plain single-model training loop, written the ordinary Flax/Optax way: the baseline
``bench_cost.py`` measures ntkpaper against.

    .venv/bin/python benchmarks/plain_loop.py [--steps 50] [--batch 128] [--depth 20]

A ``flax.training.train_state.TrainState`` (with the batch-norm statistics beside it), a
host-side numpy data loader (a fresh permutation each epoch, minibatches sliced from it,
random crop after zero padding and horizontal flip in numpy), one ``@jax.jit`` train step on
one model, a Python loop that feeds it a numpy minibatch at a time. Same model
(``ntkpaper.models.ResNet``) and optimiser (L2 weight decay added to the gradient, then SGD
with momentum on a piecewise-constant schedule) as ntkpaper's runs. Nothing of ntkpaper's
training code is used, only its model.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from flax.training import train_state

from ntkpaper import models


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the batch-norm running statistics (as in Flax's ImageNet
    example)."""

    batch_stats: Any


def create_state(
    model: nn.Module,
    key: jax.Array,
    sample_x: np.ndarray,
    lr: float,
    momentum: float,
    weight_decay: float,
    lr_drops: Sequence[int] = (),
    lr_decay: float = 0.1,
) -> TrainState:
    """Initial weights and SGD with momentum; ``lr_drops`` are steps where lr *= lr_decay."""
    variables = model.init(key, sample_x, train=False)
    schedule = optax.piecewise_constant_schedule(lr, {int(s): lr_decay for s in lr_drops})
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum))
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
    )


@jax.jit
def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
    """One SGD step on a minibatch; batch norm in training mode."""

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates.get("batch_stats", {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), loss


def crop_flip(x: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
    """Random crop of each image after zero padding by ``padding``, then a horizontal flip
    with probability 1/2; x: (n, H, W, C)."""
    n, h, w, _ = x.shape
    if padding > 0:
        padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        dy, dx = rng.integers(0, 2 * padding + 1, size=(2, n))
        rows = (dy[:, None] + np.arange(h))[:, :, None]
        cols = (dx[:, None] + np.arange(w))[:, None, :]
        x = padded[np.arange(n)[:, None, None], rows, cols]
    else:
        x = x.copy()
    flip = rng.random(n) < 0.5
    x[flip] = x[flip, :, ::-1]
    return x


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    augment: bool = False,
    padding: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Minibatches forever: each epoch a fresh permutation, the last partial batch dropped."""
    n = len(x)
    while True:
        order = rng.permutation(n)
        for i in range(n // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            yield (crop_flip(xb, rng, padding) if augment else xb), yb


def seconds_per_step(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    batch_size: int,
    steps: int,
    *,
    augment: bool = True,
    crop_padding: int = 4,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> dict[str, float]:
    """Seconds per training step of the plain loop, data loading included.

    The first step (compilation) and a second (warm-up) are excluded; then ``steps`` steps,
    ended by ``block_until_ready``. Returns ``s_per_step``, ``compile_s`` (the first step)
    and ``loss`` (the last, to show it trained on numbers)."""
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    rng = np.random.default_rng(seed)
    state = create_state(model, jax.random.PRNGKey(seed), x_train[:1], lr, momentum, weight_decay)
    data = batches(x_train, y_train, batch_size, rng, augment, crop_padding)
    start = time.perf_counter()
    state, loss = train_step(state, *next(data))
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - start
    state, loss = train_step(state, *next(data))
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = train_step(state, *next(data))
    jax.block_until_ready((state, loss))
    return {
        "s_per_step": (time.perf_counter() - start) / steps,
        "compile_s": compile_s,
        "loss": float(loss),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--n-train", type=int, default=50_000, help="CIFAR-10-shaped random data")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n_train, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, args.n_train).astype(np.int32)
    model = models.ResNet(num_classes=10, depth=args.depth)
    r = seconds_per_step(model, x, y, args.batch, args.steps)
    spe = args.n_train // args.batch
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(
        f"plain loop, ResNet-{args.depth}, batch {args.batch}: "
        f"{r['s_per_step'] * 1e3:.1f} ms/step, "
        f"{r['s_per_step'] * spe:.2f} s/epoch ({spe} steps), compile {r['compile_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
