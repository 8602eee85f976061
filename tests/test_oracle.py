"""Oracle test: ntkpaper's NTK and Taylor models equal neural-tangents' on real networks.

How to run::

    make oracle                     # runs `pytest -m oracle`
    .venv/bin/python -m pytest -m oracle tests/test_oracle.py -q

A plain ``pytest`` (``make test``) deselects these tests (``-m "not oracle"`` in addopts).

neural-tangents 0.6.5, its last release, cannot be imported on JAX >= 0.6, so ntkpaper
carries its own ``empirical_ntk``, ``linearize`` and ``taylor_expand``. This test runs
neural-tangents as the oracle in a pinned SIDE environment (tests/oracle/requirements.txt:
jax 0.5.3, neural-tangents 0.6.5 and its closure, tensorflow included, no flax), a venv
built once and cached under ``${NTKPAPER_CACHE:-~/.cache/ntkpaper}/oracle-venv-<hash>``
(the hash is that of requirements.txt; a marker file, written last, says it is complete).
The first run builds it: a few minutes and about 2.6 GB, from PyPI. Later runs reuse it.
``NTKPAPER_ORACLE_PYTHON`` names the interpreter the venv is made from (default
``python3``; the pins need CPython 3.10-3.12).

In the project environment the test builds two small networks, ``models.MLP(3, (16, 16))``
and ``models.ResNet(3, depth=8, width=0.25)`` with batch norm (evaluation mode; running
statistics from one training-mode pass, away from the defaults), on (n, 8, 8, 1) inputs,
x1 with 5 examples and x2 with 4. p0 is a generic point (LeCun-normal kernels, biases and
BN shifts 0.1 N(0, 1), BN scales 1 + 0.1 N(0, 1)), p1 = p0 + 0.05 N(0, 1). It computes
with ntkpaper:

- ``empirical_ntk`` at p0, traced (n1, n2) and full (n1, n2, K, K), for x1 against x2 and
  for x1 against itself (x2=None); on the MLP also in blocks of 2 examples;
- ``linearize(f, p0)(p1, x1)`` and ``taylor_expand(f, p0, d)(p1, x1)`` for d = 1, 2, and
  the second-order term alone (degree 2 minus degree 1).

It writes the inputs, the parameters (one array per flax leaf, named by its path), the batch
statistics and ntkpaper's logits to an NPZ (ntkpaper's outputs to a second one, beside it);
tests/oracle/side.py, run in the side venv while ntkpaper computes (2 cores),
rewrites the two networks in jax.numpy / jax.lax, first checks that the rewrite reproduces
ntkpaper's logits (relative error <= 1e-5, else it exits), then computes the same
quantities with ``neural_tangents.empirical_ntk_fn`` (implementations JACOBIAN_CONTRACTION
and NTK_VECTOR_PRODUCTS, ``vmap_axes=0``), ``neural_tangents.linearize`` and
``neural_tangents.taylor_expand``. Each quantity must agree to a relative error of
TOL = 1e-4 (max |ours - theirs| / max |theirs|, float32). The trace convention is checked
on its own: neural-tangents' traced kernel must be the mean over the logit axis of its
full kernel, ntkpaper's documented convention.

Run with ``-s`` to see the table of relative errors and the timings. With the venv cached
the test takes 30-60 s on 2 idle cores (about 65 CPU seconds: tensorflow's import and the
compilations of both sides' ResNet Jacobians dominate).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkpaper import models
from ntkpaper.linearize import linearize, taylor_expand
from ntkpaper.ntk import empirical_ntk

pytestmark = pytest.mark.oracle

ORACLE = Path(__file__).resolve().parent / "oracle"
REQUIREMENTS = ORACLE / "requirements.txt"
SIDE = ORACLE / "side.py"

TOL = 1e-4  # ntkpaper against neural-tangents
GUARD_TOL = 1e-5  # side.py's rewrite of the networks against the flax modules
MODELS = ("mlp", "resnet")
IMPLEMENTATIONS = ("jacobian_contraction", "ntk_vector_products")  # as in side.py
N1, N2, K = 5, 4, 3
PERTURBATION = 0.05

# ntkpaper's NTK quantity -> neural-tangents' reference (x1 against x2, or x1 against itself).
NTK_REFERENCE = {
    "ntk_traced": "ntk_traced",
    "ntk_full": "ntk_full",
    "ntk_traced_self": "ntk_traced_self",
    "ntk_full_self": "ntk_full_self",
    "ntk_traced_blocked": "ntk_traced",
    "ntk_full_blocked": "ntk_full",
    "ntk_traced_self_blocked": "ntk_traced_self",
}
# The block loop of empirical_ntk does not depend on the network, and every new block shape
# costs the ResNet's Jacobian a compilation (seconds on 2 cores): blocks on the MLP only.
# Kernels of x1 with itself (x2=None) are checked against JACOBIAN_CONTRACTION only.
NTK_CASES = [
    (m, q, impl)
    for m in MODELS
    for q, ref in NTK_REFERENCE.items()
    for impl in IMPLEMENTATIONS
    if (m == "mlp" or "blocked" not in q) and ("self" not in ref or impl == IMPLEMENTATIONS[0])
]
EXPANSIONS = ("linearize", "taylor1", "taylor2", "taylor2_term")

ERRORS: dict[str, float] = {}  # test id -> relative error, printed at the end (-s)


# --- the side environment -------------------------------------------------------------------


def pins() -> dict[str, str]:
    """name -> version of every ``name==version`` line of requirements.txt."""
    out = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def side_env() -> dict[str, str]:
    """The environment of side-venv processes: CPU, float32, nothing of the project's venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "JAX_ENABLE_X64", "JAX_PLATFORMS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return env


def side_python() -> Path:
    """The side venv's interpreter, building the venv first unless its marker says it's done.

    A lock file serialises concurrent builders; a half-built venv (no marker) is removed
    and built again.
    """
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("NTKPAPER_CACHE") or "~/.cache/ntkpaper").expanduser()
    venv = cache / f"oracle-venv-{digest}"
    python, marker = venv / "bin" / "python", venv / ".ntkpaper-oracle-complete"
    if marker.exists():
        return python
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"oracle-venv-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():  # built by another process while we waited
            return python
        shutil.rmtree(venv, ignore_errors=True)
        log = cache / f"oracle-venv-{digest}.log"
        base = os.environ.get("NTKPAPER_ORACLE_PYTHON", "python3")
        steps = [
            [base, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--no-input", "-r", str(REQUIREMENTS)],
            [str(python), "-c", "import jax, neural_tangents"],
        ]
        start = time.monotonic()
        with log.open("w") as out:
            for cmd in steps:
                try:
                    code = subprocess.run(
                        cmd,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=side_env(),
                        timeout=3600,
                        check=False,
                    ).returncode
                except (OSError, subprocess.TimeoutExpired) as error:
                    code = error
                if code:
                    tail = "\n".join(log.read_text().splitlines()[-30:])
                    pytest.fail(
                        f"building the oracle venv failed at {cmd} ({code}; log: {log}):\n{tail}"
                    )
        marker.write_text(
            f"{REQUIREMENTS.read_text()}\n# built in {time.monotonic() - start:.0f} s\n"
        )
    return python


# --- the project's side: networks, points, ntkpaper's results --------------------------------


def named_leaves(tree) -> dict[str, np.ndarray]:
    """{"BasicBlock_0/Conv_0/kernel": float32 array, ...} of a flax variable collection."""
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(a, np.float32)
        for path, a in jax.tree_util.tree_leaves_with_path(tree)
    }


def init_like(shapes, rng: np.random.Generator):
    """A parameter point of the shapes of flax's: LeCun-normal kernels, BN scales 1 + 0.1 N,
    biases 0.1 N (no zero biases, no unit scales: a generic point, not a special one)."""

    def value(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            return rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        return (name == "scale") + 0.1 * rng.normal(size=shape)  # "scale" or "bias"

    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: jnp.asarray(value(p, leaf), jnp.float32), shapes
    )


def build(name: str):
    """(f, kwargs, p0, p1, x1, x2) for ``mlp`` or ``resnet``; f(params, x, **kwargs) -> (n, K).

    Random numbers come from numpy, not jax.random: on 2 CPU cores every jax.random call of
    a new shape compiles for seconds, and flax's ``init`` makes one per parameter leaf.
    """
    rng = np.random.default_rng(20200815)
    x1 = jnp.asarray(rng.normal(size=(N1, 8, 8, 1)), jnp.float32)
    x2 = jnp.asarray(rng.normal(size=(N2, 8, 8, 1)), jnp.float32)
    kwargs = {}
    if name == "mlp":
        model = models.MLP(num_classes=K, hidden=(16, 16))

        def f(params, x):
            return model.apply({"params": params}, x)
    else:
        model = models.ResNet(num_classes=K, depth=8, width=0.25)

        def f(params, x, batch_stats):
            return model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)

    shapes = jax.eval_shape(model.init, jax.random.key(0), x1)
    p0 = init_like(shapes["params"], rng)
    if name == "resnet":
        # One training-mode pass on shifted, scaled inputs from the default statistics:
        # running means and variances away from (0, 1), so evaluation-mode BN is no identity.
        default = jax.tree_util.tree_map_with_path(
            lambda p, leaf: jnp.full(leaf.shape, float(p[-1].key == "var"), jnp.float32),
            shapes["batch_stats"],
        )
        xb = jnp.asarray(0.5 + 2.0 * rng.normal(size=(64, 8, 8, 1)), jnp.float32)
        _, state = model.apply(
            {"params": p0, "batch_stats": default}, xb, train=True, mutable=["batch_stats"]
        )
        kwargs = {"batch_stats": state["batch_stats"]}
        stats = named_leaves(kwargs["batch_stats"])
        assert max(np.abs(v - k.endswith("/var")).max() for k, v in stats.items()) > 0.05
    p1 = jax.tree.map(
        lambda w: w + jnp.asarray(PERTURBATION * rng.normal(size=w.shape), jnp.float32), p0
    )
    return f, kwargs, p0, p1, x1, x2


def ntkpaper_results(model, f, kwargs, p0, p1, x1, x2) -> dict[str, np.ndarray]:
    out = {
        "ntk_traced": empirical_ntk(f, p0, x1, x2, **kwargs),
        "ntk_full": empirical_ntk(f, p0, x1, x2, trace_axes=(), **kwargs),
        "ntk_traced_self": empirical_ntk(f, p0, x1, **kwargs),
        "ntk_full_self": empirical_ntk(f, p0, x1, trace_axes=(), **kwargs),
    }
    if model == "mlp":
        out["ntk_traced_blocked"] = empirical_ntk(f, p0, x1, x2, block_size=2, **kwargs)
        out["ntk_full_blocked"] = empirical_ntk(f, p0, x1, x2, (), block_size=2, **kwargs)
        out["ntk_traced_self_blocked"] = empirical_ntk(f, p0, x1, block_size=2, **kwargs)
    out |= {
        "linearize": linearize(f, p0)(p1, x1, **kwargs),
        "taylor1": taylor_expand(f, p0, 1)(p1, x1, **kwargs),
        "taylor2": taylor_expand(f, p0, 2)(p1, x1, **kwargs),
    }
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def rel_err(a, ref) -> float:
    """max |a - ref| / max |ref|, in float64."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """Both sides' results: {"ours": {model: {...}}, "theirs": {model: {...}}, "report": {...}}.

    ``ntkpaper.npz`` (inputs, parameters, batch statistics, ntkpaper's logits) is written
    first and side.py starts on it at once, in parallel with ntkpaper's own computations
    (2 cores: about halves the wall time); ntkpaper's outputs then go to
    ``ntkpaper_outputs.npz`` beside it, and side.py's to ``neural_tangents.npz``.
    """
    python = side_python()
    start = time.monotonic()
    directory = tmp_path_factory.mktemp("oracle")
    path_in, path_out = directory / "ntkpaper.npz", directory / "neural_tangents.npz"
    cases, record = {}, {}
    for m in MODELS:
        f, kwargs, p0, p1, x1, x2 = cases[m] = build(m)
        record[f"{m}:x1"], record[f"{m}:x2"] = np.asarray(x1), np.asarray(x2)
        for tag, tree in (("p0", p0), ("p1", p1), ("bs", kwargs.get("batch_stats", {}))):
            record.update({f"{m}:{tag}:{k}": v for k, v in named_leaves(tree).items()})
        for p_tag, p in (("p0", p0), ("p1", p1)):
            for x_tag, x in (("x1", x1), ("x2", x2)):
                record[f"{m}:logits:{p_tag}:{x_tag}"] = np.asarray(f(p, x, **kwargs), np.float32)
    np.savez(path_in, **record)

    command = [str(python), str(SIDE), str(path_in), str(path_out)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=side_env()
    ) as side:
        try:
            ours = {m: ntkpaper_results(m, *cases[m]) for m in MODELS}
            seconds = {"ntkpaper": time.monotonic() - start}
            stdout, stderr = side.communicate(timeout=600)
        finally:
            if side.poll() is None:
                side.kill()
    seconds["side.py"] = time.monotonic() - start
    cpu = {who: resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)}
    np.savez(
        directory / "ntkpaper_outputs.npz",
        **{f"{m}:{k}": v for m in MODELS for k, v in ours[m].items()},
    )
    if side.returncode:
        pytest.fail(f"tests/oracle/side.py failed ({side.returncode}):\n{stdout}\n{stderr[-5000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    with np.load(path_out, allow_pickle=False) as data:
        theirs = {
            m: {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith(f"{m}:")}
            for m in MODELS
        }
    yield {"ours": ours, "theirs": theirs, "report": report}
    print(
        "\nseconds from the start (env ready): "
        + ", ".join(f"{k} done at {v:.0f}" for k, v in seconds.items())
        + "; CPU seconds (pytest, side.py): "
        + ", ".join(f"{r.ru_utime + r.ru_stime:.0f}" for r in cpu.values())
    )
    if ERRORS:
        width = max(map(len, ERRORS))
        print(
            f"relative errors, ntkpaper vs neural-tangents (tolerance {TOL:g}; guard "
            f"{GUARD_TOL:g}):"
        )
        for k, v in ERRORS.items():
            print(f"  {k:<{width}}  {v:.2e}")


# --- the checks -------------------------------------------------------------------------------


def test_side_environment_is_the_pinned_one(oracle):
    pinned = pins()
    assert oracle["report"]["jax"] == pinned["jax"] == "0.5.3"
    assert oracle["report"]["neural_tangents"] == pinned["neural-tangents"] == "0.6.5"
    assert oracle["report"]["implementations"] == list(IMPLEMENTATIONS)


@pytest.mark.parametrize("model", MODELS)
def test_side_forward_reproduces_ntkpaper_logits(oracle, model):
    """Guard: the jax.numpy rewrite in side.py is the flax network (side.py exits if not)."""
    guard = oracle["report"]["guard"][model]
    assert set(guard) == {f"{p}:{x}" for p in ("p0", "p1") for x in ("x1", "x2")}
    ERRORS[f"{model} side forward (guard)"] = max(guard.values())
    assert max(guard.values()) <= GUARD_TOL, guard


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("model", MODELS)
def test_trace_convention_is_the_mean_over_logits(oracle, model, impl):
    """Traced kernel = mean over k of the full kernel's (k, k) entries, on both sides.

    That is ntkpaper's documented convention. If neural-tangents' traced kernel were the
    sum, this fails by name, and the traced comparisons below would fail by a factor K.
    """
    theirs, ours = oracle["theirs"][model], oracle["ours"][model]
    traced, diagonal_sum = (
        theirs[f"ntk_traced:{impl}"],
        np.trace(theirs[f"ntk_full:{impl}"], axis1=2, axis2=3),
    )
    if rel_err(traced, diagonal_sum) <= TOL:
        pytest.fail(
            f"neural-tangents ({impl}) traces the logit axis by a SUM; ntkpaper documents and "
            "computes a MEAN: the traced kernels differ by a factor K"
        )
    err = ERRORS[f"{model} nt traced vs mean of nt full ({impl})"] = rel_err(
        traced, diagonal_sum / K
    )
    assert err <= TOL, "neural-tangents' traced kernel is neither the mean nor the sum"
    mean = np.trace(ours["ntk_full"], axis1=2, axis2=3) / K
    assert rel_err(ours["ntk_traced"], mean) <= TOL, (
        "ntkpaper's traced kernel is not the mean over logits of its full kernel, "
        f"as ntk.empirical_ntk documents (ratio {np.mean(ours['ntk_traced'] / mean):.3g})"
    )


@pytest.mark.parametrize(("model", "quantity", "impl"), NTK_CASES)
def test_empirical_ntk_matches_neural_tangents(oracle, model, quantity, impl):
    ours = oracle["ours"][model][quantity]
    theirs = oracle["theirs"][model][f"{NTK_REFERENCE[quantity]}:{impl}"]
    expected = (N1, N1 if "self" in quantity else N2) + ((K, K) if "full" in quantity else ())
    assert ours.shape == theirs.shape == expected
    err = ERRORS[f"{model} {quantity} vs {impl}"] = rel_err(ours, theirs)
    assert err <= TOL


@pytest.mark.parametrize("quantity", EXPANSIONS)
@pytest.mark.parametrize("model", MODELS)
def test_taylor_models_match_neural_tangents(oracle, model, quantity):
    """f_lin(p1, x1), the degree-1 and -2 Taylor models, and the second-order term alone.

    The second-order term (degree 2 minus degree 1) is compared on its own scale, so an
    error in it cannot hide under the much larger zeroth- and first-order terms.
    """
    ours, theirs = oracle["ours"][model], oracle["theirs"][model]
    if quantity == "taylor2_term":
        a, b = ours["taylor2"] - ours["taylor1"], theirs["taylor2"] - theirs["taylor1"]
        # The term must matter: p1 is far enough from p0 for curvature to show.
        assert np.abs(b).max() > 1e-3 * np.abs(theirs["taylor2"]).max()
    else:
        a, b = ours[quantity], theirs[quantity]
    assert a.shape == b.shape == (N1, K)
    err = ERRORS[f"{model} {quantity}"] = rel_err(a, b)
    assert err <= TOL
    # Non-trivial expansion: the first-order term moves the output away from f(p0).
    assert rel_err(theirs["linearize"], theirs["f_p0"]) > 1e-3
