"""Provenance of a figure: which code, parameters and runs produced it, where and when.

Recorded by each notebook next to its figure (``provenance.json``), stamped small in the
PDF/PNG footer (``store.save_figure(..., footer=...)``), copied into the executed notebook's
metadata (``ntkpaper`` key, by the workflow's figure rule) and shown on the report site.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import subprocess
from pathlib import Path

from ntkpaper import params as P
from ntkpaper import plan, store

REPO = Path(__file__).resolve().parent.parent
FILE = "provenance.json"


def code_version(repo: Path = REPO) -> tuple[str, bool]:
    """(git commit, modified): the checkout's HEAD and whether its tracked or untracked,
    not ignored files differ from it; ("unknown", False) outside a git checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        if done.returncode:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))
    except OSError:
        return "unknown", False


def of_figure(fig: P.Figure) -> dict:
    """The provenance of ``fig`` as drawn now from the runs in the store.

    ``device`` and ``jax``: those recorded in the runs' manifests (where they were computed),
    joined when they differ; this process's JAX version for a figure without runs.
    """
    commit, modified = code_version()
    jobs = plan.figure_runs(fig).jobs()
    where: dict[str, set] = {"device": set(), "jax": set()}
    for job in jobs:
        if store.is_complete(job.kind, job.key):
            manifest = store.read_json(store.manifest_path(job.kind, job.key))
            for k in where:
                where[k].add(manifest.get(k, "unknown"))
    if not jobs:
        where = {"device": {"none (theory only)"}, "jax": {importlib.metadata.version("jax")}}
    path = Path(fig.path)
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return {
        "figure": fig.id,
        "profile": fig.profile,
        "notebook": fig.notebook,
        "params_file": str(shown),
        "params_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "commit": commit,
        "modified": modified,
        "runs": [{"kind": j.kind, "key": j.key} for j in jobs],
        "device": ", ".join(sorted(where["device"])) or "unknown",
        "jax": ", ".join(sorted(where["jax"])) or "unknown",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def record(fig: P.Figure, out: Path) -> dict:
    """``of_figure(fig)``, written to ``out/provenance.json``."""
    prov = of_figure(fig)
    store.write_json(Path(out) / FILE, prov)
    return prov


def footer(prov: dict) -> str:
    """One line for a figure's footer: commit, profile, parameter hash, device, JAX, date."""
    commit = prov["commit"][:10] + (" (modified)" if prov["modified"] else "")
    return (
        f"ntkpaper {commit} | {prov['figure']} on {prov['profile']} | params "
        f"{prov['params_sha256'][:12]} | {len(prov['runs'])} runs on {prov['device']} | "
        f"JAX {prov['jax']} | {prov['date']}"
    )


def stamp_notebook(notebook: Path) -> None:
    """Copy the ``provenance.json`` beside ``notebook`` (the executed one) into its metadata
    (key ``ntkpaper``), atomically."""
    import nbformat

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata["ntkpaper"] = {"provenance": store.read_json(notebook.parent / FILE)}
    store.write_text(notebook, nbformat.writes(nb))
