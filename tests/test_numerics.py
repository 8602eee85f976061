"""A change to the code that computes a kind of run must be a decision about its numerics.

Run keys carry each kind's numerics version (``ntkpaper/jobs/__init__.py``), so bumping it
makes every old run of that kind stale. This test holds a fingerprint of the code behind each
kind (the modules' syntax trees without docstrings: comments and formatting do not count) and
fails, naming the kind, when that code changes: bump the version if the numbers can change,
and in either case record the new fingerprint below.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from ntkpaper.jobs import KINDS

PACKAGE = Path(__file__).resolve().parent.parent / "ntkpaper"
TRAINING = [
    "jobs/setup.py", "train.py", "models.py", "conv.py", "data.py", "metrics.py", "linearize.py"
]  # fmt: skip
SOURCES = {
    "parent": ["jobs/training.py", *TRAINING],
    "children": ["jobs/training.py", "spawn.py", *TRAINING],
    "linearised": ["jobs/linearised.py", *TRAINING],
    "parent_measure": ["jobs/measuring.py", "ntk.py", *TRAINING],
    "children_measure": ["jobs/measuring.py", "ntk.py", *TRAINING],
    "plane": ["jobs/landscape.py", "landscape.py", *TRAINING],
    "alignment": ["jobs/silent.py", "silent.py", "alignment.py", "theory.py", "ntk.py", "data.py"],
    "tsne": ["jobs/landscape.py", "landscape.py", *TRAINING],
    "parent_geometry": ["jobs/geometry.py", "jobs/landscape.py", "hessian.py", *TRAINING],
    "children_geometry": ["jobs/geometry.py", "jobs/landscape.py", "hessian.py", *TRAINING],
}
RECORDED = {  # kind: (numerics version, fingerprint of SOURCES[kind])
    "parent": (3, "0da472e178e249c3"),  # runs cached before the CPU path of Fused were stale
    "children": (4, "61e54949f4f5a9a8"),  # together: bit for bit each alone, on a CPU
    "linearised": (4, "c32cd26833e5bccb"),
    "parent_measure": (2, "ace2011149e88ee9"),
    "children_measure": (2, "ace2011149e88ee9"),
    "plane": (1, "9b02819d75f7bafc"),
    "alignment": (1, "d4c6abc4e64a0178"),
    "tsne": (1, "9b02819d75f7bafc"),
    "parent_geometry": (1, "e4ebcb7e9230074d"),
    "children_geometry": (1, "e4ebcb7e9230074d"),
}


def fingerprint(files: list[str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        tree = ast.parse((PACKAGE / name).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]  # drop the docstring
        h.update(name.encode() + ast.dump(tree).encode())
    return h.hexdigest()[:16]


def test_every_kind_has_its_sources():
    assert set(SOURCES) == set(KINDS) == set(RECORDED)


def test_code_behind_each_kind_is_recorded_with_its_numerics_version():
    stale = []
    for kind, (version, recorded) in RECORDED.items():
        now = (KINDS[kind].numerics, fingerprint(SOURCES[kind]))
        if now != (version, recorded):
            stale.append(f'    "{kind}": ({now[0]}, "{now[1]}"),')
    assert not stale, (
        "The code that computes these kinds of runs changed. If their numbers can change, "
        "bump KINDS[kind].numerics in ntkpaper/jobs/__init__.py (old runs then get new keys); "
        "either way, record in tests/test_numerics.py:\n" + "\n".join(stale)
    )
