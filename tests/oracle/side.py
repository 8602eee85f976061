"""Oracle side of tests/test_oracle.py: neural-tangents 0.6.5 on the same networks and points.

Runs in the pinned side environment (tests/oracle/requirements.txt: jax 0.5.3,
neural-tangents 0.6.5, no flax), never in the project's. Usage::

    python side.py IN.npz OUT.npz

IN.npz (written by the test, read with ``allow_pickle=False``) holds, for each model
``m`` in ``mlp`` and ``resnet``:

    m:x1, m:x2                      inputs (n1, 8, 8, 1), (n2, 8, 8, 1)
    m:p0:<path>, m:p1:<path>        parameters, one array per flax leaf ("Dense_0/kernel")
    m:bs:<path>                     batch-norm running statistics (resnet only)
    m:logits:p0:x1, ...             the project's forward, for the guard below

The forward is rewritten here in jax.numpy / jax.lax for exactly ntkpaper.models.MLP and
ntkpaper.models.ResNet (batch norm in evaluation mode). Guard: before anything else, it must
reproduce the project's logits to a relative error of GUARD_TOL, or this script exits 3, so
that a wrong rewrite cannot pass as agreement.

OUT.npz holds neural-tangents' results (names in ``main``); a JSON line on stdout gives
the versions, the guard's errors and which NTK implementations ran.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # neural_tangents imports tensorflow

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

GUARD_TOL = 1e-5
BN_EPSILON = 1e-5  # ntkpaper.models.Norm
MODELS = ("mlp", "resnet")
# NtkImplementation.STRUCTURED_DERIVATIVES (3) fails on jax 0.5.3 inside neural-tangents
# (jax.interpreters.ad.source_info_util is gone), so the two others are the references.
IMPLEMENTATIONS = {
    "jacobian_contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
    "ntk_vector_products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
}


def unflatten(arrays: dict[str, np.ndarray]) -> dict:
    """{"A/B/kernel": array} -> {"A": {"B": {"kernel": array}}} (jnp float32 leaves)."""
    tree: dict = {}
    for path, a in arrays.items():
        *head, last = path.split("/")
        node = tree
        for k in head:
            node = node.setdefault(k, {})
        node[last] = jnp.asarray(a, dtype=jnp.float32)
    return tree


def index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


# --- ntkpaper.models.MLP -------------------------------------------------------------------


def mlp_apply(params: dict, x: jax.Array) -> jax.Array:
    """x -> flatten -> (Dense -> ReLU)* -> Dense; the layers are Dense_0, Dense_1, ..."""
    layers = sorted(params, key=index)
    h = x.reshape(x.shape[0], -1)
    for name in layers[:-1]:
        h = jax.nn.relu(h @ params[name]["kernel"] + params[name]["bias"])
    last = params[layers[-1]]
    return h @ last["kernel"] + last["bias"]


# --- ntkpaper.models.ResNet (batch_norm=True, train=False) -----------------------------------


def conv3x3(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """flax nn.Conv((3, 3), strides=stride, padding="SAME", use_bias=False): NHWC, HWIO."""
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def batch_norm(x: jax.Array, params: dict, stats: dict) -> jax.Array:
    """flax nn.BatchNorm(use_running_average=True): (x - mean) / sqrt(var + eps) * scale + bias."""
    mul = lax.rsqrt(stats["var"] + BN_EPSILON) * params["scale"]
    return (x - stats["mean"]) * mul + params["bias"]


def norm(params: dict, stats: dict, name: str, x: jax.Array) -> jax.Array:
    """ntkpaper.models.Norm, enabled: its one child is BatchNorm_0."""
    return batch_norm(x, params[name]["BatchNorm_0"], stats[name]["BatchNorm_0"])


def resnet_apply(params: dict, x: jax.Array, batch_stats: dict) -> jax.Array:
    """Stem conv-BN-ReLU, BasicBlock_0..., global average pool, Dense_0.

    Blocks: 3 stages of n blocks; the first block of stages 1 and 2 has stride 2 and an
    option-A shortcut (subsample by 2, pad the new channels with zeros, half before and
    half after), as in ntkpaper.models.BasicBlock.
    """
    h = conv3x3(x, params["Conv_0"]["kernel"], 1)
    h = jax.nn.relu(norm(params, batch_stats, "Norm_0", h))
    blocks = sorted((k for k in params if k.startswith("BasicBlock_")), key=index)
    if len(blocks) % 3:
        raise ValueError(f"expected 3 stages of blocks, got {len(blocks)} blocks")
    per_stage = len(blocks) // 3
    for b, name in enumerate(blocks):
        p, s = params[name], batch_stats[name]
        stride = 2 if b >= per_stage and b % per_stage == 0 else 1
        channels = p["Conv_0"]["kernel"].shape[-1]
        y = jax.nn.relu(norm(p, s, "Norm_0", conv3x3(h, p["Conv_0"]["kernel"], stride)))
        y = norm(p, s, "Norm_1", conv3x3(y, p["Conv_1"]["kernel"], 1))
        shortcut = h
        if stride != 1 or h.shape[-1] != channels:
            shortcut = h[:, ::stride, ::stride, :]
            extra = channels - h.shape[-1]
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        h = jax.nn.relu(y + shortcut)
    h = jnp.mean(h, axis=(1, 2))
    return h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]


# -------------------------------------------------------------------------------------------


def rel_err(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def load_model(data, m: str):
    """(f, kwargs, p0, p1, x1, x2) of model ``m`` from the input NPZ."""

    def group(tag: str) -> dict:
        prefix = f"{m}:{tag}:"
        return unflatten({k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)})

    x1 = jnp.asarray(data[f"{m}:x1"], jnp.float32)
    x2 = jnp.asarray(data[f"{m}:x2"], jnp.float32)
    if m == "mlp":
        return mlp_apply, {}, group("p0"), group("p1"), x1, x2
    return resnet_apply, {"batch_stats": group("bs")}, group("p0"), group("p1"), x1, x2


def main(path_in: str, path_out: str) -> None:
    data = np.load(path_in, allow_pickle=False)
    out: dict[str, np.ndarray] = {}
    report: dict = {
        "jax": jax.__version__,
        "neural_tangents": nt.__version__,
        "implementations": list(IMPLEMENTATIONS),
        "guard": {},
    }
    for m in MODELS:
        f, kw, p0, p1, x1, x2 = load_model(data, m)

        # Guard: this rewrite is the project's network, at both parameter points.
        errors = {
            f"{p}:{x}": rel_err(f(params, xs, **kw), data[f"{m}:logits:{p}:{x}"])
            for p, params in (("p0", p0), ("p1", p1))
            for x, xs in (("x1", x1), ("x2", x2))
        }
        report["guard"][m] = errors
        if max(errors.values()) > GUARD_TOL:
            print(json.dumps(report))
            sys.exit(f"side forward of {m} does not reproduce ntkpaper's logits: {errors}")

        for impl, code in IMPLEMENTATIONS.items():
            for form, axes in (("traced", (-1,)), ("full", ())):
                ntk_fn = nt.empirical_ntk_fn(f, trace_axes=axes, vmap_axes=0, implementation=code)
                out[f"{m}:ntk_{form}:{impl}"] = np.asarray(ntk_fn(x1, x2, p0, **kw))
                if impl == "jacobian_contraction":  # x2=None: one reference is enough
                    out[f"{m}:ntk_{form}_self:{impl}"] = np.asarray(ntk_fn(x1, None, p0, **kw))

        f_lin = nt.linearize(f, p0)
        out[f"{m}:linearize"] = np.asarray(f_lin(p1, x1, **kw))
        for degree in (1, 2):
            f_taylor = nt.taylor_expand(f, p0, degree)
            out[f"{m}:taylor{degree}"] = np.asarray(f_taylor(p1, x1, **kw))
        out[f"{m}:f_p0"] = np.asarray(f(p0, x1, **kw))
        out[f"{m}:f_p1"] = np.asarray(f(p1, x1, **kw))
    np.savez(path_out, **out)
    print(json.dumps(report))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: side.py IN.npz OUT.npz")
    main(sys.argv[1], sys.argv[2])
