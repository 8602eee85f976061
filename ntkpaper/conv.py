"""2-D convolutions whose derivatives stay fast when children are vmapped.

Children of a parent train as ``jax.vmap(train_step)`` over stacked weights (``spawn``).
Under that vmap XLA turns each convolution with a child's own weights into one
feature-grouped convolution (one group per child), and its weight gradient into a
*batch-grouped* convolution. Measured on an H200 (ResNet-20, 16 children): the forward
pass runs at the speed of one model at 16x the batch, forward + backward 2.4x slower; on a
CPU, grouped convolutions are slow in every direction (vmapped children 3-8x one model at
n times the batch).

Implementations, by name (``IMPLEMENTATIONS``; ``models`` take ``conv=<name>``). All give
the per-child convolution and all its derivatives, and support every transformation and
nesting the project uses: ``grad``, ``jvp`` (linearised and Taylor models, Hessian-vector
products), ``vmap`` (children, NTK over examples), ``jit``.

``"xla"``
    ``lax.conv_general_dilated``: Flax's own ``nn.Conv``, unchanged.
``"patches"``
    XLA's convolution forward and for the input gradient (vmapped: feature-grouped, as
    ``"xla"``), the weight gradient as a matrix product: with P(x) the (B, Ho, Wo,
    kh*kw*Cin) image patches of x (each output pixel's receptive field, in the kernel's
    (kh, kw, Cin) order), dL/dW = P(x)^T dL/dy, a ``dot_general`` that vmap turns into a
    batched matmul, which GPUs run at full speed. A ``jax.custom_jvp`` (tangent
    conv(dx, W) + P(x) dW; ``grad`` transposes the second term into the matmul), public
    JAX API only. Memory: P(x) is kh*kw (9) times x; it is not kept between the forward
    and the backward pass (``jax.checkpoint``: the residual is x, as for ``"xla"``) but
    rebuilt for each layer's weight gradient, one layer at a time (ResNet-20, batch 128,
    16 children: 1.2 GB for a 16-channel 32x32 layer in float32; WRN-16-4: 4.8 GB for a
    64-channel 32x32 layer). Slow on a CPU (building P(x) there costs more than it saves).
``"loop"``
    Three primitives (the convolution, its input gradient, its weight gradient), each the
    XLA convolution of one model, whose vmap rule loops over the vmapped axis: n children
    are n ordinary convolutions in every direction, no grouped convolution anywhere. The
    three are bilinear and transpose into one another, so every derivative stays in the
    family. Where only the images are vmapped (NTK over examples, shared weights) the
    vmapped axis folds into the batch: one convolution. Axes longer than ``LOOP_MAX`` take
    XLA's own batching. No extra memory. The fastest on a CPU (children at the floor of one
    model at n times the batch); on a GPU, n small kernels per layer instead of one.
``"wgrad_loop"``
    The same primitives, vmapped as XLA does (grouped convolutions) forward and for the
    input gradient, and as a loop of n ordinary weight-gradient convolutions for the
    weight gradient: on a GPU, the one slow direction replaced by cuDNN's ordinary kernel.

Only what the models use is implemented: 2-D, NHWC inputs, HWIO kernels, any strides and
padding (``"SAME"``, ``"VALID"``, explicit pairs), no dilation, no groups; anything else
raises ``ValueError``. ``conv_general_dilated(name)`` is a drop-in for the
``conv_general_dilated`` field of Flax's ``nn.Conv``, so parameter names and shapes
(``kernel`` (kh, kw, Cin, Cout), ``bias`` (Cout,)) are those of ``nn.Conv``.

``benchmarks/bench_conv.py`` times all of them against the floor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

IMPLEMENTATIONS = ("xla", "patches", "loop", "wgrad_loop")

LOOP_MAX = 32  # "loop": longer vmapped axes (NTK over many examples) take XLA's batching

_DIMS = ("NHWC", "HWIO", "NHWC")

Pads = tuple[tuple[int, int], tuple[int, int]]


def check(name: str) -> str:
    """``name`` if it is one of ``IMPLEMENTATIONS``, else ``ValueError``."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown convolution {name!r}: expected one of {IMPLEMENTATIONS}")
    return name


def _xla(x, w, strides, pads, precision):
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=_DIMS, precision=precision
    )


# ---------------------------------------------------------------------------------------
# "patches": custom_jvp, the weight gradient as a matmul over image patches
# ---------------------------------------------------------------------------------------


def patches(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int], pads: Pads):
    """Image patches (B, Ho, Wo, kh*kw*C) of x (B, H, W, C), last axis in (kh, kw, C) order.

    ``patches(x, ...) @ w.reshape(kh * kw * C, O)`` is the convolution of x with the HWIO
    kernel w (cross-correlation, as ``lax.conv_general_dilated``). Built from kh*kw strided
    slices of the padded input (data movement only).
    """
    (kh, kw), (sh, sw) = kernel_hw, strides
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    b, h, w, c = xp.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    end = lambda i, j: (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c)  # noqa: E731
    cols = [
        lax.slice(xp, (0, i, j, 0), end(i, j), (1, sh, sw, 1)) for i in range(kh) for j in range(kw)
    ]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _matmul(x, w, strides, pads, precision):
    """P(x) @ W: the convolution as one matrix product over the patches."""
    kh, kw, cin, cout = w.shape
    p = patches(x, (kh, kw), strides, pads)
    return lax.dot_general(
        p, w.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())), precision=precision
    )


# jax.checkpoint: keep x, not P(x), between the forward and the backward pass.
_matmul_remat = jax.checkpoint(_matmul, static_argnums=(2, 3, 4))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv_patches(x, w, strides, pads, precision):
    return _xla(x, w, strides, pads, precision)


def _conv_patches_jvp(strides, pads, precision, primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _xla(x, w, strides, pads, precision)
    parts = []
    if not isinstance(dx, SymbolicZero):
        parts.append(_xla(dx, w, strides, pads, precision))  # transposes to the input gradient
    if not isinstance(dw, SymbolicZero):
        # Linear in dw; its transpose, the weight gradient, is P(x)^T g: a (batched) matmul.
        parts.append(_matmul_remat(x, dw, strides, pads, precision))
    if not parts:
        return y, jnp.zeros_like(y)
    return y, functools.reduce(jnp.add, parts)


# symbolic_zeros: no convolution of a zero tangent (the first layer's input, the data).
_conv_patches.defjvp(_conv_patches_jvp, symbolic_zeros=True)


# ---------------------------------------------------------------------------------------
# "loop", "wgrad_loop": three primitives (the convolution, its input and weight gradients)
# with their own vmap rule. Bilinear; each one's transposes are the other two:
# <conv(x, w), g> = <x, dgrad(g, w)> = <w, wgrad(x, g)>.
# ---------------------------------------------------------------------------------------


def _fwd_impl(x, w, *, strides, pads, precision, mode):
    return _xla(x, w, strides, pads, precision)


def _dgrad_impl(g, w, *, strides, pads, precision, mode, lhs_hw):
    x = jax.ShapeDtypeStruct((g.shape[0], *lhs_hw, w.shape[2]), g.dtype)
    return jax.linear_transpose(lambda x: _xla(x, w, strides, pads, precision), x)(g)[0]


def _wgrad_impl(x, g, *, strides, pads, precision, mode, kernel_hw):
    w = jax.ShapeDtypeStruct((*kernel_hw, x.shape[3], g.shape[3]), x.dtype)
    return jax.linear_transpose(lambda w: _xla(x, w, strides, pads, precision), w)(g)[0]


def _fwd_aval(x, w, *, strides, pads, precision, mode):
    b, h, wd, _ = x.shape
    kh, kw, _, cout = w.shape
    ho = (h + sum(pads[0]) - kh) // strides[0] + 1
    wo = (wd + sum(pads[1]) - kw) // strides[1] + 1
    return x.update(shape=(b, ho, wo, cout))


def _dgrad_aval(g, w, *, strides, pads, precision, mode, lhs_hw):
    return g.update(shape=(g.shape[0], *lhs_hw, w.shape[2]))


def _wgrad_aval(x, g, *, strides, pads, precision, mode, kernel_hw):
    return x.update(shape=(*kernel_hw, x.shape[3], g.shape[3]))


_fwd_p = Primitive("ntkpaper_conv")
_dgrad_p = Primitive("ntkpaper_conv_input_grad")
_wgrad_p = Primitive("ntkpaper_conv_weight_grad")
_PRIMS = {
    _fwd_p: (_fwd_impl, _fwd_aval),
    _dgrad_p: (_dgrad_impl, _dgrad_aval),
    _wgrad_p: (_wgrad_impl, _wgrad_aval),
}


def _shape(a) -> tuple[int, ...]:
    """Shape of a transpose rule's operand: an array, or the undefined primal (accumulator)
    of the operand being transposed, which has only an ``aval``."""
    aval = getattr(a, "aval", None)
    return aval.shape if aval is not None else jnp.shape(a)


def _common(p: dict) -> dict:
    return {k: p[k] for k in ("strides", "pads", "precision", "mode")}


def _fwd_t_x(ct, x, w, **p):
    return _dgrad_p.bind(ct, w, **_common(p), lhs_hw=_shape(x)[1:3])


def _fwd_t_w(ct, x, w, **p):
    return _wgrad_p.bind(x, ct, **_common(p), kernel_hw=_shape(w)[:2])


def _dgrad_t_g(ct, g, w, **p):
    return _fwd_p.bind(ct, w, **_common(p))


def _dgrad_t_w(ct, g, w, **p):
    return _wgrad_p.bind(ct, g, **_common(p), kernel_hw=_shape(w)[:2])


def _wgrad_t_x(ct, x, g, **p):
    return _dgrad_p.bind(g, ct, **_common(p), lhs_hw=_shape(x)[1:3])


def _wgrad_t_g(ct, x, g, **p):
    return _fwd_p.bind(x, ct, **_common(p))


def _batch(prim, axis_data, args, dims, **params):
    """vmap rule. Only the image-like (first) operand of the convolution or the input
    gradient vmapped: fold the vmapped axis into the batch, one call. Else one unbatched
    call per index ("loop"; "wgrad_loop" for the weight gradient only), or XLA's own
    batching (grouped convolutions) of the one-model convolution."""
    (a, b), (da, db) = args, dims  # a dimension None: not vmapped
    if da is None and db is None:
        return prim.bind(a, b, **params), None
    n = axis_data.size
    if prim is not _wgrad_p and db is None:
        a = jnp.moveaxis(a, da, 0)
        out = prim.bind(a.reshape(n * a.shape[1], *a.shape[2:]), b, **params)
        return out.reshape(n, a.shape[1], *out.shape[1:]), 0
    loop = params["mode"] == "loop" or prim is _wgrad_p
    if n > LOOP_MAX or not loop:
        impl = _PRIMS[prim][0]
        return jax.vmap(lambda a, b: impl(a, b, **params), in_axes=(da, db))(a, b), 0
    take = lambda v, d, i: v if d is None else lax.index_in_dim(v, i, d, keepdims=False)  # noqa: E731
    return jnp.stack([prim.bind(take(a, da, i), take(b, db, i), **params) for i in range(n)]), 0


for _prim, (_impl, _aval) in _PRIMS.items():
    _prim.def_impl(_impl)
    _prim.def_abstract_eval(_aval)
    mlir.register_lowering(_prim, mlir.lower_fun(_impl, multiple_results=False))
    batching.fancy_primitive_batchers[_prim] = functools.partial(_batch, _prim)
ad.defbilinear(_fwd_p, _fwd_t_x, _fwd_t_w)
ad.defbilinear(_dgrad_p, _dgrad_t_g, _dgrad_t_w)
ad.defbilinear(_wgrad_p, _wgrad_t_x, _wgrad_t_g)


def _conv_primitive(mode: str) -> Callable:
    def conv(x, w, strides, pads, precision):
        return _fwd_p.bind(x, w, strides=strides, pads=pads, precision=precision, mode=mode)

    return conv


# ---------------------------------------------------------------------------------------
# The drop-in for nn.Conv
# ---------------------------------------------------------------------------------------

_IMPL = {
    "patches": _conv_patches,
    "loop": _conv_primitive("loop"),
    "wgrad_loop": _conv_primitive("wgrad_loop"),
}


def _canonical(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
               dimension_numbers, feature_group_count, batch_group_count):  # fmt: skip
    """(strides, explicit pads) of a plain 2-D NHWC/HWIO convolution, else ``ValueError``."""
    if lhs.ndim != 4 or rhs.ndim != 4:
        raise ValueError(f"2-D convolutions only, got input {lhs.shape} and kernel {rhs.shape}")
    expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMS)
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if given != expected:
        raise ValueError(f"NHWC inputs and HWIO kernels only, got {dimension_numbers}")
    for name, d in (("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)):
        if d is not None and any(int(v) != 1 for v in d):
            raise ValueError(f"{name} {d} is not supported")
    if feature_group_count != 1 or batch_group_count != 1:
        raise ValueError("grouped convolutions are not supported")
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    else:
        pads = padding
    return strides, tuple((int(lo), int(hi)) for lo, hi in pads)


def _make(name: str) -> Callable:
    impl = _IMPL[name]

    def conv(
        lhs: jax.Array,
        rhs: jax.Array,
        window_strides: Sequence[int],
        padding: str | Sequence[tuple[int, int]],
        lhs_dilation: Sequence[int] | None = None,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers=None,
        feature_group_count: int = 1,
        batch_group_count: int = 1,
        precision=None,
        preferred_element_type=None,
    ) -> jax.Array:
        if preferred_element_type is not None:
            raise ValueError("preferred_element_type is not supported")
        strides, pads = _canonical(lhs, rhs, window_strides, padding, lhs_dilation,
                                   rhs_dilation, dimension_numbers, feature_group_count,
                                   batch_group_count)  # fmt: skip
        if isinstance(precision, list):
            precision = tuple(precision)
        return impl(lhs, rhs, strides, pads, precision)

    conv.__name__ = conv.__qualname__ = f"conv_{name}"
    conv.__doc__ = f"``lax.conv_general_dilated`` computed as {name!r} (``ntkpaper.conv``)."
    return conv


# One function object per name, so that modules holding it hash and compare equal.
_FUNCTIONS = {name: _make(name) for name in _IMPL}


def conv_general_dilated(name: str) -> Callable | None:
    """The ``conv_general_dilated`` of implementation ``name`` for Flax's ``nn.Conv``: None
    for ``"xla"`` (``nn.Conv``'s default), else a function with the signature of
    ``lax.conv_general_dilated``."""
    if check(name) == "xla":
        return None
    return _FUNCTIONS[name]


def conv2d(x: jax.Array, w: jax.Array, strides=(1, 1), padding="SAME", impl: str = "xla"):
    """Convolution of x (B, H, W, Cin) with w (kh, kw, Cin, Cout) by implementation ``impl``."""
    f = conv_general_dilated(impl) or lax.conv_general_dilated
    return f(x, w, strides, padding, dimension_numbers=_DIMS)


def for_vmapped_models(backend: str | None = None) -> str:
    """The implementation for a batch of vmapped models (children, Taylor models over t~) on
    ``backend`` (default: JAX's): ``"loop"`` on a CPU, where it reaches the floor of one model
    at n times the batch (``benchmarks/bench_conv.py``: 0.85-1.08x, against 2.4-2.8x for
    ``"xla"``); ``"patches"`` on a GPU, public JAX API and one batched matmul per weight
    gradient, until ``benchmarks/bench_conv.py`` measured on the GPU says otherwise."""
    backend = backend or jax.default_backend()
    return "loop" if backend == "cpu" else "patches"


def vmapped(model):
    """``model`` (a Flax module with a ``conv`` field) with the convolutions of
    ``for_vmapped_models``: the same function and parameters, fast when vmapped over models;
    a model without the field as it is."""
    if "conv" not in getattr(model, "__dataclass_fields__", {}):
        return model
    return model.clone(conv=for_vmapped_models())
