"""Hostile parameter files: each is refused fast, in small memory, naming the file (and key).

Built from params/fort-fig4.yaml (the file of the report) by one textual change each.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ntkpaper import params

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "params" / "fort-fig4.yaml"
NAME = "fort-fig4.yaml"


def bomb(level: int) -> str:
    """YAML flow sequence of 9^(level+1) leaves in a few hundred bytes ("billion laughs")."""
    if level == 0:
        return "&a0 [" + ", ".join(["lol"] * 9) + "]"
    return f"&a{level} [{bomb(level - 1)}, " + ", ".join([f"*a{level - 1}"] * 8) + "]"


def refused_in_subprocess(directory: Path, memory_mb: int = 1024) -> tuple[str, float]:
    """``load_all`` in a fresh interpreter capped at ``memory_mb`` of address space."""
    code = textwrap.dedent(f"""
        import resource, sys
        cap = {memory_mb} * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        from pathlib import Path
        from ntkpaper import params
        try:
            params.load_all("quick", directory=Path({str(directory)!r}))
        except params.ParamsError as e:
            print(e)
            sys.exit(7)
    """)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    seconds = time.perf_counter() - start
    assert out.returncode == 7, out.stdout + out.stderr[-2000:]
    return out.stdout.strip(), seconds


def test_alias_bomb_is_refused_by_name_in_small_memory(tmp_path):
    text = SOURCE.read_text().replace("lr_drops: []", f"lr_drops: [{bomb(8)}]", 1)
    assert len(text) - len(SOURCE.read_text()) < 1000
    (tmp_path / NAME).write_text(text)
    msg, seconds = refused_in_subprocess(tmp_path)
    assert msg.startswith(f"{tmp_path / NAME}: ") or NAME in msg, msg
    assert "alias" in msg, msg
    assert seconds < 30, seconds  # generous: the refusal itself is milliseconds


def test_alias_alone_is_refused(tmp_path):
    text = SOURCE.read_text()
    anchored = text.replace("lr_drops: []", "lr_drops: &drops []", 1)
    assert anchored != text
    path = tmp_path / NAME
    path.write_text(anchored.replace("lr_drops: []", "lr_drops: *drops", 1))
    with pytest.raises(params.ParamsError, match=rf"{NAME}: .*alias \*drops"):
        params.load_figure(path, "quick")


def test_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / NAME
    path.write_text(SOURCE.read_text() + "#" * (10 * 2**20) + "\n")
    start = time.perf_counter()
    with pytest.raises(params.ParamsError, match=rf"{NAME}: larger than"):
        params.load_figure(path, "quick")
    assert time.perf_counter() - start < 5


def test_invalid_utf8_names_the_file(tmp_path):
    path = tmp_path / NAME
    path.write_bytes(SOURCE.read_bytes().replace(b"quick:", b"quick: # \xff\xfe", 1))
    for load in (
        lambda: params.load_figure(path, "quick"),
        lambda: params.load_all("quick", tmp_path),
    ):
        with pytest.raises(params.ParamsError, match=rf"{NAME}: not UTF-8 text"):
            load()


@pytest.mark.parametrize("value", ["[1, 2]", "5", "just words"], ids=["list", "int", "string"])
def test_profile_section_of_the_wrong_type_names_the_section(tmp_path, value):
    lines = SOURCE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("quick:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace())
    path = tmp_path / NAME
    path.write_text("\n".join(lines[:start] + [f"quick: {value}"] + lines[end:]) + "\n")
    for load in (
        lambda: params.load_figure(path, "quick"),
        lambda: params.load_all("quick", tmp_path),
    ):
        with pytest.raises(params.ParamsError, match=rf"{NAME}: quick: expected a mapping"):
            load()


HOSTILE = [
    ("duplicate-key", ("    lr: 0.1\n", "    lr: 0.1\n    lr: 0.2\n"), "duplicate key 'lr'"),
    ("tab-indent", ("\n  parent:", "\n\tparent:"), "not valid YAML"),
    ("unclosed-bracket", ("lr_drops: []", "lr_drops: [1, 2"), "not valid YAML"),
    ("python-tag", ("lr_drops: []", "lr_drops: !!python/object:os.system ls"), "not valid YAML"),
    ("nan", ("    lr: 0.1\n", "    lr: .nan\n"), r"quick.parent.lr: expected"),
    ("huge-number", ("    seed: 0\n", "    seed: 1.0e+400\n"), r"quick.parent.seed: expected"),
]


@pytest.mark.parametrize("name,change,fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_text_is_refused_by_name(tmp_path, name, change, fragment):
    text = SOURCE.read_text()
    assert change[0] in text, change[0]
    path = tmp_path / NAME
    path.write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(params.ParamsError, match=rf"{NAME}: .*{fragment}"):
        params.load_figure(path, "quick")
