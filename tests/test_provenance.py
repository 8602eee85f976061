"""Provenance: the code version from git, a figure's record against its plan and files, the
footer of its PDF/PNG, and (end to end) every built figure's record and executed notebook."""

from __future__ import annotations

import hashlib
import json
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from ntkpaper import params as P  # noqa: E402
from ntkpaper import plan, provenance, store  # noqa: E402

from .conftest import TINY_FIGURES  # noqa: E402


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_code_version_is_the_commit_and_says_when_the_tree_is_modified(tmp_path):
    assert provenance.code_version(tmp_path) == ("unknown", False)  # not a checkout
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert provenance.code_version(tmp_path) == (head, False)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert provenance.code_version(tmp_path) == (head, True)


def test_a_figure_record_names_its_parameters_runs_and_where_they_ran(built_env):
    fig = P.load_all("quick")["tiny-fig"]
    prov = provenance.of_figure(fig)
    jobs = plan.figure_runs(fig).jobs()
    assert prov["runs"] == [{"kind": j.kind, "key": j.key} for j in jobs] and len(jobs) > 2
    assert prov["params_sha256"] == hashlib.sha256(fig.path.read_bytes()).hexdigest()
    manifest = store.read_json(store.manifest_path(jobs[0].kind, jobs[0].key))
    assert prov["device"] == manifest["device"] and prov["jax"] == manifest["jax"]
    assert (prov["figure"], prov["profile"], prov["notebook"]) == (
        "tiny-fig", "quick", fig.notebook
    )  # fmt: skip
    assert prov["commit"] == provenance.code_version()[0]
    line = provenance.footer({**prov, "commit": "0123456789abcdef", "modified": True})
    assert line.startswith("ntkpaper 0123456789 (modified) | tiny-fig on quick | params ")
    assert prov["params_sha256"][:12] in line and prov["device"] in line


def test_the_footer_is_drawn_under_the_figure(tmp_path):
    def png(footer: str) -> np.ndarray:
        figure, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1])
        store.save_figure(figure, tmp_path, "f", footer=footer)
        plt.close(figure)
        return np.asarray(Image.open(tmp_path / "f.png"))

    plain, stamped = png(""), png("ntkpaper 0123456789 | tiny-fig on quick | params abc")
    assert stamped.shape[0] > plain.shape[0]  # a line of type added at the bottom
    assert stamped[plain.shape[0] :, :, :3].min() < 200  # and something is drawn there


@pytest.mark.workflow
def test_every_built_figure_carries_its_provenance(built_env):
    results = built_env / "results" / "quick"
    for fid in TINY_FIGURES:
        prov = json.loads((results / fid / provenance.FILE).read_text())
        fig = P.load_all("quick")[fid]
        assert prov["runs"] == [
            {"kind": j.kind, "key": j.key} for j in plan.figure_runs(fig).jobs()
        ]
        assert prov["params_sha256"] == hashlib.sha256(fig.path.read_bytes()).hexdigest()
        nb = nbformat.read(results / fid / f"{fid}.ipynb", as_version=4)
        assert nb.metadata["ntkpaper"]["provenance"] == prov, fid
