"""Small networks of the silent-alignment figures and their full-batch training.

Atanasov, Bordelon, Pehlevan 2022. Networks are f(x) = w^L . phi(W^{L-1} ... phi(W^1 x)),
no biases, in the paper's standard parameterisation (section 3; appendix G.2): no width
factors in the forward pass, entries of W^l in R^{N_{l+1} x N_l} drawn N(0, sigma^2 / N_l).
Training is gradient descent (or Adam) on L = 1/(2P) sum_mu |f(x_mu) - y_mu|^2, with
time t = lr x step, so that on inputs with X^T X / P = I gradient flow is eq. 4.
``train`` is one compiled program per call shape: the steps between log points run in a
``fori_loop`` with a traced trip count, the log points in a ``scan``; ``train_many`` is the
same program vmapped over stacked initial weights (a grid of sigma).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkpaper.alignment import kernel_alignment, kernel_regression
from ntkpaper.ntk import empirical_ntk

PyTree = Any
ACTIVATIONS = {"linear": lambda h: h, "relu": jax.nn.relu, "tanh": jnp.tanh}


def init_mlp(
    key: jax.Array, sizes: Sequence[int], sigma: float, first_sigma: float | None = None
) -> list[jax.Array]:
    """Weights W^l (N_{l+1}, N_l) ~ N(0, sigma_l^2 / N_l), l = 1..L (section 3, appendix G.2).

    sigma_1 = ``first_sigma`` (default sigma; appendix I sets the first layer apart), the
    others sigma. For a two-layer net, a_i ~ N(0, sigma^2 / N), W_ij ~ N(0, sigma^2 / D).
    The same key gives the same directions for every sigma, so
    ``jax.vmap(lambda s: init_mlp(key, sizes, s))(sigmas)`` stacks a sigma grid on axis 0.

    Args:
      sizes: (D, N_2, ..., C), L + 1 widths for depth L = number of weight matrices.
    Returns:
      list of L arrays, W^l of shape (sizes[l + 1], sizes[l]).
    """
    keys = jax.random.split(key, len(sizes) - 1)
    sig = [sigma if first_sigma is None else first_sigma] + [sigma] * (len(sizes) - 2)
    return [
        s * jax.random.normal(k, (n_out, n_in)) / np.sqrt(n_in)
        for k, s, n_in, n_out in zip(keys, sig, sizes[:-1], sizes[1:])
    ]


@functools.cache
def mlp(activation: str) -> Callable:
    """f(params, x) = phi(...phi(x W^1T)...) W^LT: (n, ...) inputs, flattened -> (n, C).

    ``activation`` in "linear", "relu", "tanh", applied after every layer but the last.
    Cached, so one activation is one function (one compiled ``train`` per call shape).
    """
    phi = ACTIVATIONS[activation]

    def f(params: list[jax.Array], x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        for w in params[:-1]:
            h = phi(h @ w.T)
        return h @ params[-1].T

    return f


def wrn_shapes(channels: int, k: int, blocks: int, outputs: int) -> list[tuple[int, ...]]:
    """Weight shapes of ``wrn``: a 3x3 convolution to 16 channels, three groups of ``blocks``
    residual blocks (16k, 32k, 64k channels; two 3x3 convolutions each, and a 3x3 convolution
    on the shortcut of each group's first block, where the channels change), a dense layer."""
    shapes, c_in = [(3, 3, channels, 16)], 16
    for c in (16 * k, 32 * k, 64 * k):
        for b in range(blocks):
            shapes += [(3, 3, c_in, c), (3, 3, c, c)] + ([(3, 3, c_in, c)] if b == 0 else [])
            c_in = c
    return shapes + [(outputs, c_in)]


def init_wrn(key: jax.Array, shapes, sigma: float, first_sigma: float | None = None) -> list:
    """Weights of ``wrn`` ~ N(0, sigma^2 / fan_in), standard parameterisation; the first
    convolution's with ``first_sigma`` (appendix I: 6.0, with sigma = 0.3)."""
    keys = jax.random.split(key, len(shapes))
    sig = [sigma if first_sigma is None else first_sigma] + [sigma] * (len(shapes) - 1)
    fan_in = [int(np.prod(sh[:-1])) if len(sh) == 4 else sh[1] for sh in shapes]
    return [
        s * jax.random.normal(k, sh) / np.sqrt(f) for k, s, sh, f in zip(keys, sig, shapes, fan_in)
    ]


@functools.cache
def wrn(blocks: int) -> Callable:
    """f(params, x): the Wide ResNet of neural-tangents' example (Novak et al. 2020; Zagoruyko
    & Komodakis 2017) without batch norm, as appendix I uses it: x (n, H, W, C) -> (n, C_out).
    Blocks are relu-conv-relu-conv plus the shortcut; groups 2 and 3 stride 2; global average
    pooling, then the dense layer. No biases. ``params`` from ``init_wrn(wrn_shapes(...))``."""

    def conv(x, w, stride=1):
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def f(params: list[jax.Array], x: jax.Array) -> jax.Array:
        h, i = conv(x, params[0]), 1
        for group in range(3):
            for b in range(blocks):
                stride = 2 if group and b == 0 else 1
                main = conv(jax.nn.relu(conv(jax.nn.relu(h), params[i], stride)), params[i + 1])
                if b == 0:
                    h, i = main + conv(h, params[i + 2], stride), i + 3
                else:
                    h, i = main + h, i + 2
        return jnp.mean(h, axis=(1, 2)) @ params[-1].T

    return f


def log_times(steps: int, n: int) -> np.ndarray:
    """min(n, steps + 1) integer steps in [0, steps], unique, sorted, 0 and ``steps`` always
    included: 0 and the fewest geometric grid points from 1 to ``steps`` that round to that
    many distinct values (log-spaced where rounding allows)."""
    m = max(n - 1, 1)
    while steps > 0:
        grid = np.round(np.geomspace(steps, 1, m)).astype(int)  # m = 1: just ``steps``
        out = np.unique(np.concatenate([[0], grid]))
        if out.size >= min(n, steps + 1):
            return out
        m += 1
    return np.zeros(1, int)


def _loss(f: Callable, params: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
    """L = 1/(2P) sum_mu sum_c (f_c(x_mu) - y_mu,c)^2."""
    return 0.5 * jnp.mean(jnp.sum((f(params, x) - y) ** 2, axis=-1))


@functools.partial(jax.jit, static_argnames=("f", "optimizer", "batched"))
def _program(params, x, y, lr, layer_lr, gaps, tail, probe, beta, *, f, optimizer, batched):
    """Train for gaps[0], gaps[1], ... steps, measuring after each; then ``tail`` steps."""
    xp, yp = (x, y) if probe is None else (x[probe], y[probe])

    def run(params):
        tx = optax.adam(lr) if optimizer == "adam" else optax.sgd(lr)
        grad = jax.grad(lambda p: _loss(f, p, x, y))

        def step(_, state):
            p, s = state
            u, s = tx.update(grad(p), s, p)
            return [w + m * d for w, m, d in zip(p, layer_lr, u)], s

        def advance(state, n):
            return jax.lax.fori_loop(0, n, step, state)

        def measure(p):
            k = empirical_ntk(f, p, xp)
            m = dict(loss=_loss(f, p, x, y), alignment=kernel_alignment(k, yp))
            m["kernel_norm"] = jnp.linalg.norm(k)
            if beta is not None:  # appendix B.1, figure 4b: M = W^T W + |a|^2 I
                wb = p[0] @ beta
                m["cos"] = wb @ wb / jnp.linalg.norm(p[0] @ p[0].T)  # cos(W1^T W1, b b^T)
                if len(p) == 2 and p[1].shape[0] == 1:
                    m["q"] = 0.5 * (p[1][0] @ p[1][0] + wb @ wb)
                    m["r"] = wb @ p[1][0]
            return m, k

        state = advance((params, tx.init(params)), gaps[0])
        m0, k0 = measure(state[0])

        def body(carry, n):
            state = advance(carry[0], n)
            m, k = measure(state[0])
            return (state, k), m

        (state, k_inf), ms = jax.lax.scan(body, (state, k0), gaps[1:])
        logs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), m0, ms)
        return logs, advance(state, tail)[0], k0, k_inf

    return jax.vmap(run)(params) if batched else run(params)


def _train(f, params, x, y, lr, steps, log_steps, layer_lr, optimizer, probe, beta, batched):
    log_steps = np.asarray(log_steps, int)
    depth = len(params)
    layer_lr = (1.0,) * depth if layer_lr is None else tuple(layer_lr)
    if optimizer not in ("gd", "adam"):
        raise ValueError(f"optimizer: expected 'gd' or 'adam', got {optimizer!r}")
    if len(layer_lr) != depth:
        raise ValueError(f"layer_lr: expected {depth} multipliers, got {len(layer_lr)}")
    ok = log_steps.size and log_steps[0] >= 0 and log_steps[-1] <= steps
    if not ok or np.any(np.diff(log_steps) <= 0):
        raise ValueError(f"log_steps: expected increasing steps in [0, {steps}], got {log_steps}")
    dt = params[0].dtype
    y = jnp.asarray(y, dt).reshape(len(y), -1)
    beta = None if beta is None else jnp.asarray(beta, dt) / np.linalg.norm(beta)
    probe = None if probe is None else jnp.asarray(probe, int)
    logs, final, k0, k_inf = _program(
        params, jnp.asarray(x, dt), y, jnp.asarray(lr, dt), jnp.asarray(layer_lr, dt),
        jnp.diff(log_steps, prepend=0), steps - int(log_steps[-1]), probe, beta,
        f=f, optimizer=optimizer, batched=batched,
    )  # fmt: skip
    out = {k: np.asarray(v) for k, v in logs.items()}
    out.update(step=log_steps, time=lr * log_steps, K_0=np.asarray(k0), K_inf=np.asarray(k_inf))
    return out | {"params": [np.asarray(w) for w in final]}


def train(
    f: Callable,
    params: list[jax.Array],
    x: jax.Array,
    y: jax.Array,
    lr: float,
    steps: int,
    log_steps: Sequence[int],
    layer_lr: Sequence[float] | None = None,
    optimizer: str = "gd",
    probe: jax.Array | None = None,
    beta: jax.Array | None = None,
    *,
    many: bool = False,
) -> dict:
    """Full-batch training on L = 1/(2P) sum (f - y)^2, logged at ``log_steps``.

    gd: W^l <- W^l - lr eta_l dL/dW^l, eta_l = ``layer_lr[l]`` (eq. 9's per-layer rates,
    default 1); adam: optax.adam(lr) updates times eta_l. Time t = lr x step. At each logged
    step: loss; the NTK K = J J^T (all weights, unweighted by eta_l, as eq. 5 and eq. 34;
    traced over outputs) on the training inputs, or on x[probe]; its alignment with y
    (``kernel_alignment``) and ||K||_F. With ``beta`` (D,), normalised to unit length
    here: cos = <W1^T W1, beta beta^T>_F / (||W1^T W1||_F ||beta beta^T||_F) (figure 4b), and
    for L = 2, C = 1 (f = a^T W x when linear) q = 1/2 beta^T M beta with
    M = W^T W + |a|^2 I and r = beta^T W^T a (appendix B.1, eqs. 16, 27-28).

    Args:
      f: ``mlp(...)`` or any f(params, x) -> (n, C); params: list of weight matrices;
      x: (P, ...) inputs; y: (P,) or (P, C) targets; log_steps: increasing, in [0, steps];
      probe: (m,) indices into the training set; many: every W^l stacked (S, ...) on axis 0,
      the S runs vmapped in one program (``train_many``).
    Returns:
      dict of numpy arrays: step, time, loss, alignment, kernel_norm (T,) [+ cos, q, r (T,)];
      K_0, K_inf (m, m) at the first and last logged step; params, the final weights.
    """
    return _train(f, params, x, y, lr, steps, log_steps, layer_lr, optimizer, probe, beta, many)


train_many = functools.partial(train, many=True)
train_many.__doc__ = """``train`` vmapped over stacked initial weights: every W^l (S, N_{l+1}, N_l).

One compiled program for all S runs (e.g. a grid of sigma, see ``init_mlp``); data, learning
rates and log steps are shared. Returns ``train``'s dict with a leading axis S on every array
but step and time."""


def ntk_predictions(
    f: Callable,
    params0: list[jax.Array],
    params_inf: list[jax.Array],
    x_train: jax.Array,
    y: jax.Array,
    x_test: jax.Array,
) -> dict:
    """Network, final-NTK and initial-NTK predictions on x_test (appendix A; figure 1b).

    predictor(K) = f_0(x) + k(x)^T K^+ (y - f_0) (``kernel_regression``, pseudo-inverse),
    f_0 the network at params0, K the (output-traced) NTK at params_inf or params0.

    Args:
      x_train: (P, ...); y: (P,) or (P, C); x_test: (n, ...).
    Returns:
      dict network, final_ntk, initial_ntk: numpy arrays (n, C).
    """
    y = jnp.asarray(y).reshape(len(y), -1)
    f0_train, f0_test = f(params0, x_train), f(params0, x_test)
    out = {"network": f(params_inf, x_test)}
    for name, p in (("final_ntk", params_inf), ("initial_ntk", params0)):
        k, kt = empirical_ntk(f, p, x_train), empirical_ntk(f, p, x_test, x_train)
        out[name] = kernel_regression(k, kt, y, f0_train, f0_test)
    return {k: np.asarray(v) for k, v in out.items()}
