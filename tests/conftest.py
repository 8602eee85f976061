"""Shared fixtures: a tiny figure (ResNet-8 at width 1/4 on digits) for CPU-sized tests."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def tiny_section() -> dict:
    """The quick section of fort-fig2 shrunk to seconds: depth 8, width 1/4, 2 epochs."""
    section = yaml.safe_load((ROOT / "params" / "fort-fig2.yaml").read_text())["quick"]
    section["data"].update(batch_size=32, eval_batch=512)
    section["model"].update(depth=8, width=0.25)
    section["parent"].update(
        epochs=2, lr_drops=[1.5], snapshots=[{"every": 0.5, "until": 1}, {"every": 1, "until": 2}]
    )
    section["children"].update(spawn_epochs=[0, 1], snapshot_every=1)
    section["measure"].update(probe_size=8, ntk_block=4, bn_examples=256)
    section["claims"].update(late_epoch=1)
    return section


def write_tiny(directory: Path, name: str = "tiny-fig", **edits) -> Path:
    """Write ``<directory>/<name>.yaml`` with the tiny section as both profiles."""
    section = tiny_section()
    for dotted, value in edits.items():
        node = section
        *head, last = dotted.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {"notebook": "fort_integrated_view", "quick": section, "paper": copy.deepcopy(section)}
        )
    )
    return path


@pytest.fixture
def tiny_env(tmp_path, monkeypatch):
    """A params dir with one tiny figure, and empty runs/results dirs, via the env vars."""
    params_dir = tmp_path / "params"
    write_tiny(params_dir)
    for var, sub in (
        ("NTKPAPER_PARAMS", "params"),
        ("NTKPAPER_RUNS", "runs"),
        ("NTKPAPER_RESULTS", "results"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def write_tiny_kernel(directory: Path, name: str = "tiny-kernel") -> Path:
    """A tiny fort_linearised figure on the same parent as ``write_tiny``'s."""
    section = tiny_section()
    section["linearised"] = {
        "spawn_epochs": [0, 1], "degree": 1, "epochs": 3, "lr": 0.01, "momentum": 0.9,
        "weight_decay": 0.0, "lr_drops": [], "lr_decay": 1.0, "seed": 2,
    }  # fmt: skip
    section["low_lr"] = {
        "lr": 0.01,
        "epochs": 1,
        "converged_rtol": 0.01,
        "n_children": 2,
        "seed": 3,
    }
    section["claims"] = {
        "speedup": 3, "within_epochs": 1, "match_gap": 0.01, "match_fraction": 0.5,
        "advantage_zero": 0.01, "correlation_min": 0.5, "late_epoch": 1, "correlation_points": 3,
    }  # fmt: skip
    path = directory / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {"notebook": "fort_linearised", "quick": section, "paper": copy.deepcopy(section)}
        )
    )
    return path


def numpy_variables(model, x, rng: np.random.Generator) -> dict:
    """Random variables of ``model`` drawn with numpy, shapes from ``jax.eval_shape``.

    (jax.random kernels take seconds each to compile on a small CPU; this keeps the
    tests fast.) Weights ~ N(0, 2 / fan_in), biases and BN shifts ~ N(0, 0.1^2), BN scales
    ~ U(0.5, 1.5); running means ~ N(0, 0.5^2) and variances ~ U(0.5, 2).
    """
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))

    def draw(path, s):
        name = path[-1].key
        if name == "kernel":
            w = rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))
        elif name == "scale":
            w = rng.uniform(0.5, 1.5, s.shape)
        elif name == "var":
            w = rng.uniform(0.5, 2.0, s.shape)
        elif name == "mean":
            w = 0.5 * rng.normal(size=s.shape)
        else:  # bias
            w = 0.1 * rng.normal(size=s.shape)
        return jnp.asarray(w, s.dtype)

    wanted = {c: shapes.get(c, {}) for c in ("params", "batch_stats")}  # not the sown "relu"
    return jax.tree_util.tree_map_with_path(draw, wanted)


def write_tiny_advantage(directory: Path, name: str = "tiny-advantage") -> Path:
    """A tiny fort_nonlinear_advantage figure: ``write_tiny_kernel``'s runs, figure 9's notebook."""
    path = write_tiny_kernel(directory, name)
    raw = yaml.safe_load(path.read_text())
    raw["notebook"] = "fort_nonlinear_advantage"
    path.write_text(yaml.safe_dump(raw))
    return path


LANDSCAPE = {  # tiny figure: (notebook, its own section)
    "tiny-plane": ("fort_plane", {"plane": {"spawn_epochs": [0, 1], "resolution": 4,
                                            "margin": 0.25, "tangent_gap": 0.05}}),
    "tiny-tsne": ("fort_tsne", {"tsne": {"perplexity": 3, "seed": 0}}),
    "tiny-distance": ("fort_function_distance",
                      {"distance": {"smooth_window": 1.0, "diversity_min": 0.05}}),
    "tiny-geometry": ("fort_geometry", {"geometry": {
        "hessian_examples": 64, "hessian_iters": 6, "centroid_examples": 64,
        "sealed_fraction": 0.1}}),
    "tiny-velocity": ("fort_kernel_velocity", {"velocity": {
        "zoom_until": 1, "slow_fraction": 0.5, "correlation_min": 0.5, "correlation_points": 3}}),
}  # fmt: skip


def write_tiny_landscape(directory: Path) -> list[Path]:
    """The tiny landscape figures (Fort et al. 5, 6/10, 7, 11) on ``write_tiny``'s runs."""
    paths = []
    for name, (notebook, extra) in LANDSCAPE.items():
        section = {**tiny_section(), **copy.deepcopy(extra)}
        path = directory / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump(
                {"notebook": notebook, "quick": section, "paper": copy.deepcopy(section)}
            )
        )
        paths.append(path)
    return paths


def _sa_run(name, dataset, activation, depth, sigmas, steps=300, **data) -> dict:
    """A tiny silent-alignment run: P = 60 examples, width 16, gradient descent."""
    return {
        "name": name,
        "data": {"dataset": dataset, "classes": [0, 1], "n_train": 60, "n_test": 20,
                 "gamma": 0.0, **data},
        "network": {"activation": activation, "depth": depth, "width": 16,
                    "sigmas": list(sigmas), "seed": 0},
        "train": {"optimizer": "gd", "lr": 0.05, "steps": steps, "log_points": 12},
    }  # fmt: skip


def _sa_claims(*rows: str) -> dict:
    return {"rows": list(rows), "silent": True, "before": 0.9, "match_ratio": 0.5, "rtol": 0.1}


SILENT = {  # tiny figure: (notebook, section)
    "tiny-sa-dynamics": ("sa_dynamics", {
        "runs": [_sa_run("relu digits", "digits", "relu", 2, [0.1]),
                 {**_sa_run("wrn digits", "digits", "relu", 1, [0.3], steps=20),
                  "network": {"activation": "relu", "depth": 1, "width": 1, "sigmas": [0.3],
                              "seed": 0, "arch": "wrn", "first_sigma": 6.0}}],
        "claims": _sa_claims("silent", "final_ntk", "max_alignment")}),
    "tiny-sa-linear": ("sa_linear", {
        "runs": [_sa_run("linear", "synthetic", "linear", 2, [1e-3, 1e-2], dim=8)],
        "claims": _sa_claims("closed_form_loss", "t_half_log", "q_r", "silent")}),
    "tiny-sa-deep": ("sa_deep_linear", {
        "runs": [_sa_run(f"L = {d}", "synthetic", "linear", d, [0.2, 0.3], dim=8, steps=600)
                 for d in (2, 3)],
        "claims": _sa_claims("t_half_power", "depth_alignment", "gram")}),
    "tiny-sa-transfer": ("sa_transfer", {
        "transfer": {"dim": 10, "ridge": 1e-3, "strengths": [0.0, 1.0], "overlaps": [0.5, 1.0],
                     "sample_sizes": [1, 5, 20]},
        "claims": _sa_claims("transfer")}),
}  # fmt: skip


def write_tiny_silent(directory: Path) -> list[Path]:
    """Tiny figures of the four silent-alignment notebooks (seconds each)."""
    paths = []
    for name, (notebook, section) in SILENT.items():
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(
            {"notebook": notebook, "quick": copy.deepcopy(section), "paper": copy.deepcopy(section)}
        ))  # fmt: skip
        paths.append(path)
    return paths


TINY_FIGURES = ("tiny-fig", "tiny-kernel", "tiny-advantage", *LANDSCAPE, *SILENT)
"""The figures of ``tiny_built``: one per notebook, all on one parent."""


def run_env(root: Path) -> dict[str, str]:
    """The environment that points the workflow at ``root``'s params, runs and results."""
    return {
        **os.environ,
        "NTKPAPER_PARAMS": str(root / "params"),
        "NTKPAPER_RUNS": str(root / "runs"),
        "NTKPAPER_RESULTS": str(root / "results"),
    }


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory) -> Path:
    """One uninterrupted run of the main command (``make figures``) on ``TINY_FIGURES``, shared
    by every test that reads its outputs: ``<root>/{params,runs,results}``, ``.snakemake`` in
    ``<root>``. Tests that edit its parameter files must restore them (content and mtime)."""
    root = tmp_path_factory.mktemp("tiny-built")
    write_tiny(root / "params")
    write_tiny_kernel(root / "params")
    write_tiny_advantage(root / "params")
    write_tiny_landscape(root / "params")
    write_tiny_silent(root / "params")
    done = subprocess.run(
        [sys.executable, "-m", "ntkpaper", "figures", "--cores", "2"],
        cwd=root,
        env=run_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-5000:]
    return root


@pytest.fixture
def built_env(tiny_built, monkeypatch) -> Path:
    """``tiny_built``, with the environment of this process pointing at it."""
    for k, v in run_env(tiny_built).items():
        if k.startswith("NTKPAPER_"):
            monkeypatch.setenv(k, v)
    return tiny_built
