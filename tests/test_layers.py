"""Layers that hold: what the Snakefile and the notebooks import loads no training stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("jax", "flax", "optax", "ntkpaper.runs", "ntkpaper.train")


@pytest.mark.parametrize(
    "modules",
    [
        "ntkpaper.params, ntkpaper.plan",  # the Snakefile and `python -m ntkpaper check`
        "ntkpaper.claims, ntkpaper.sa_claims, ntkpaper.plotting, ntkpaper.store, ntkpaper.views",
    ],
)
def test_readers_load_no_training_code(modules):
    code = f"import sys, {modules}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_notebooks_import_only_readers():
    """The notebooks' imports are the ones the test above holds light."""
    import json

    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        imported = {
            line.split()[1] for line in code.splitlines() if line.startswith(("import ", "from "))
        }
        assert imported & {"jax", "flax", "optax", "ntkpaper.runs"} == set(), nb.name
