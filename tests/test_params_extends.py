"""Parameter files that extend another, and declared shared parents checked by run key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ntkpaper import params, plan

PARAMS_DIR = Path(__file__).resolve().parent.parent / "params"


def copy_real(tmp_path: Path, *ids: str) -> Path:
    for fid in ids:
        shutil.copy(PARAMS_DIR / f"{fid}.yaml", tmp_path)
    return tmp_path


@pytest.mark.parametrize("profile", params.PROFILES)
def test_fig9_is_fig8_with_another_notebook(profile):
    figs = params.load_all(profile)
    assert figs["fort-fig9"].params == figs["fort-fig8"].params
    assert (figs["fort-fig9"].notebook, figs["fort-fig8"].notebook) == (
        "fort_nonlinear_advantage",
        "fort_linearised",
    )


def test_extension_overrides_nested_values_and_replaces_lists(tmp_path):
    copy_real(tmp_path, "fort-fig4", "fort-fig8")
    (tmp_path / "variant.yaml").write_text(
        "extends: fort-fig8\nquick:\n  linearised: {spawn_epochs: [0, 2], degree: 2}\n"
    )
    base = params.load_figure(tmp_path / "fort-fig8.yaml", "quick").params
    variant = params.load_figure(tmp_path / "variant.yaml", "quick").params
    assert variant.linearised.spawn_epochs == (0.0, 2.0)  # replaced, not appended
    assert variant.linearised.degree == 2
    assert variant.linearised.lr == base.linearised.lr  # inherited beside the overrides
    assert variant.parent == base.parent and variant.claims == base.claims
    paper = params.load_figure(tmp_path / "variant.yaml", "paper").params
    assert paper == params.load_figure(tmp_path / "fort-fig8.yaml", "paper").params


def test_extension_errors_name_the_file(tmp_path):
    copy_real(tmp_path, "fort-fig4", "fort-fig8")
    (tmp_path / "variant.yaml").write_text("extends: fort-fig8\nquick:\n  low_lr: {lr: -1}\n")
    with pytest.raises(params.ParamsError, match=r"variant.yaml: quick.low_lr.lr: expected"):
        params.load_figure(tmp_path / "variant.yaml", "quick")
    (tmp_path / "orphan.yaml").write_text("extends: fort-fig99\n")
    with pytest.raises(params.ParamsError, match=r"orphan.yaml: extends: expected the id"):
        params.load_figure(tmp_path / "orphan.yaml", "quick")
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(params.ParamsError, match=r"extends: .* \(a cycle\)"):
        params.load_figure(tmp_path / "a.yaml", "quick")


@pytest.mark.parametrize("profile", params.PROFILES)
def test_declared_shared_parents_are_one_run(profile):
    figs = params.load_all(profile)
    parents = {fid: plan.figure_runs(f).parent.key for fid, f in figs.items() if fid[:5] == "fort-"}
    assert parents["fort-fig8"] == parents["fort-fig4"] == parents["fort-fig19-taylor2"]


@pytest.mark.parametrize("profile", params.PROFILES)
def test_a_declared_shared_parent_that_differs_is_refused(tmp_path, profile):
    copy_real(tmp_path, "fort-fig4", "fort-fig8")
    path = tmp_path / "fort-fig8.yaml"
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{profile}:"))
    seed = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("seed:"))
    lines[seed] = lines[seed].replace("seed: 0", "seed: 5")
    path.write_text("\n".join(lines) + "\n")
    assert params.load_figure(path, profile).params.parent.seed == 5
    with pytest.raises(params.ParamsError, match=r"fort-fig8.yaml: shares_parent_with: fort-fig4"):
        params.load_all("quick", directory=tmp_path)
