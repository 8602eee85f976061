"""``python -m ntkpaper check`` in a subprocess: on the real params/, and on a bad directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ntkpaper import params, plan

REPO = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO / "params"
LINE = re.compile(r"^(\d+) figures, (\d+) runs on profile (quick|paper): ok$")


def check(*args: str, params_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NTKPAPER_PARAMS"}
    env["PYTHONPATH"] = str(REPO)
    if params_dir is not None:
        env["NTKPAPER_PARAMS"] = str(params_dir)
    return subprocess.run(
        [sys.executable, "-m", "ntkpaper", "check", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("profile", [None, *params.PROFILES])
def test_check_real_params(profile):
    out = check(*(["--profile", profile] if profile else []))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    m = LINE.match(lines[0])
    assert m, lines[0]
    want_profile = profile or "quick"  # the default profile
    figures = params.load_all(want_profile, directory=PARAMS_DIR)
    assert int(m[1]) == len(figures) == len(list(PARAMS_DIR.glob("*.yaml")))
    assert int(m[2]) == len(plan.all_jobs(figures)) > 0
    assert m[3] == want_profile
    assert "error" not in out.stderr


def copy_params(directory: Path, *names: str) -> None:
    """Copy real parameter files, with the figures they name (a shared parent, a base)."""
    for name in names:
        text = (PARAMS_DIR / f"{name}.yaml").read_text()
        (directory / f"{name}.yaml").write_text(text)
        raw = yaml.safe_load(text)
        for k in ("shares_parent_with", "extends"):
            if isinstance(raw.get(k), str) and not (directory / f"{raw[k]}.yaml").exists():
                copy_params(directory, raw[k])


def test_check_counts_the_given_directory(tmp_path):
    # a directory of a few good files: the line counts them, not the repository's params/
    copy_params(tmp_path, "fort-fig2", "fort-fig8")
    n = len(list(tmp_path.glob("*.yaml")))
    assert 2 <= n < len(list(PARAMS_DIR.glob("*.yaml")))
    out = check(params_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    figures = params.load_all("quick", directory=tmp_path)
    want = f"{n} figures, {len(plan.all_jobs(figures))} runs on profile quick: ok"
    assert out.stdout.strip() == want


@pytest.mark.parametrize(
    "section,key,value,fragment",
    [
        ("quick", "linearised.degree", 3, "<= 2"),
        ("paper", "low_lr.lr", 0, "> 0"),  # the other profile is checked too
    ],
)
def test_check_bad_file_fails_naming_file_and_key(tmp_path, section, key, value, fragment):
    copy_params(tmp_path, "fort-fig2", "fort-fig8")
    raw = yaml.safe_load((PARAMS_DIR / "fort-fig8.yaml").read_text())
    head, last = key.split(".")
    raw[section][head][last] = value
    (tmp_path / "fort-fig8.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = check(params_dir=tmp_path)
    assert out.returncode != 0
    assert "ok" not in out.stdout and not LINE.match(out.stdout.strip())
    assert "Traceback" not in out.stderr, out.stderr  # a message, not a crash
    assert f"fort-fig8.yaml: {section}.{key}: " in out.stderr, out.stderr
    assert fragment in out.stderr and out.stderr.startswith("error: "), out.stderr


def test_check_unknown_profile_is_refused():
    out = check("--profile", "fast")
    assert out.returncode != 0 and "fast" in out.stderr and not out.stdout


def test_run_refuses_unknown_keys_and_non_children_keys_together():
    """``run KEY ...``: several keys train together only if all are children runs; every
    refusal is a one-line message before any compute."""
    jobs = plan.all_jobs(params.load_all("quick", directory=PARAMS_DIR))
    kinds: dict[str, list[str]] = {}
    for key, job in jobs.items():
        kinds.setdefault(job.kind, []).append(key)
    env = {k: v for k, v in os.environ.items() if k != "NTKPAPER_PARAMS"}
    env["PYTHONPATH"] = str(REPO)

    def run(*keys):
        return subprocess.run([sys.executable, "-m", "ntkpaper", "run", *keys], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip

    out = run(kinds["children"][0], "0123456789abcdef")
    assert out.returncode == 2 and "no run with key 0123456789abcdef" in out.stderr
    out = run(kinds["children"][0], kinds["parent"][0])
    assert out.returncode == 2 and "only children keys run together" in out.stderr
    assert "Traceback" not in out.stderr
