"""Tests for ntkpaper.params: schema validation of params/*.yaml, defaults, schedules, keys.

Malformed files are built in tmp_path from params/fort-fig2.yaml by changing one thing;
every refusal must be a ParamsError whose message names the file and the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ntkpaper import params, schema

REPO = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO / "params"
EXAMPLE = PARAMS_DIR / "fort-fig2.yaml"
QUICK_EPOCHS = yaml.safe_load(EXAMPLE.read_text())["quick"]["parent"]["epochs"]
REAL_FILES = sorted(PARAMS_DIR.glob("*.yaml"))
BROKEN_NAME = "fort-broken-fig.yaml"


def base() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def write(tmp_path: Path, raw, name: str = BROKEN_NAME) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def refusal(path: Path, profile: str = "quick") -> str:
    with pytest.raises(params.ParamsError) as info:
        params.load_figure(path, profile)
    return str(info.value)


def refusal_all(directory: Path, profile: str = "quick") -> str:
    with pytest.raises(params.ParamsError) as info:
        params.load_all(profile, directory=directory)
    return str(info.value)


# ---------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------


def test_there_are_real_parameter_files():
    assert EXAMPLE in REAL_FILES


@pytest.mark.parametrize("profile", params.PROFILES)
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_real_file_loads(path, profile):
    raw = schema.read_raw(path)  # the file merged over the one it extends
    fig = params.load_figure(path, profile)
    assert fig.id == path.stem
    assert fig.profile == profile
    assert fig.notebook == raw["notebook"]
    assert isinstance(fig.params, params.NOTEBOOKS[raw["notebook"]])
    # Values come from the file, not from anywhere else.
    got = schema.as_dict(fig.params)
    for name, values in raw[profile].items():
        assert _given(values, got[name]), f"{profile}.{name}"


def _given(given, got) -> bool:
    """Every value the file gives is the loaded one (fields it leaves out take defaults)."""
    if isinstance(given, dict):
        return all(k in got and _given(v, got[k]) for k, v in given.items())
    if isinstance(given, list):
        return len(given) == len(got) and all(_given(a, b) for a, b in zip(given, got))
    return given == got


@pytest.mark.parametrize("profile", params.PROFILES)
def test_load_all_real_directory(profile):
    figures = params.load_all(profile, directory=PARAMS_DIR)
    assert set(figures) == {p.stem for p in REAL_FILES}
    assert all(f.profile == profile for f in figures.values())
    # The default directory is the repository's params/.
    assert set(params.load_all(profile)) == set(figures)


def test_load_all_unknown_profile():
    with pytest.raises(params.ParamsError, match="profile"):
        params.load_all("fast", directory=PARAMS_DIR)


def test_params_imports_no_jax():
    code = "import sys, ntkpaper.params; print('jax' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
        check=True,
    )
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------
# Malformed files: (id, change, key named in the message, other fragments of the message)
# ---------------------------------------------------------------------------------------


def setp(*path_and_value):
    *path, value = path_and_value

    def change(raw):
        node = raw
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return change


def delp(*path):
    def change(raw):
        node = raw
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]

    return change


MALFORMED = [
    ("unknown-top-level", setp("profiles", {"x": 1}), "profiles", ["unknown key"]),
    ("unknown-in-section", setp("quick", "parent", "foo", 1), "quick.parent.foo", ["unknown key"]),
    (
        "unknown-section",
        setp("quick", "optimizer", {"lr": 0.1}),
        "quick.optimizer",
        ["unknown key"],
    ),
    (
        "unknown-in-segment",
        setp("quick", "parent", "snapshots", [{"every": 0.2, "until": 2, "start": 0}]),
        "quick.parent.snapshots[0].start",
        ["unknown key"],
    ),
    ("missing-key", delp("quick", "parent", "lr"), "quick.parent.lr", ["missing"]),
    ("missing-section", delp("quick", "measure"), "quick.measure", ["missing"]),
    (
        "missing-in-segment",
        setp("quick", "parent", "snapshots", [{"every": 1}]),
        "quick.parent.snapshots[0].until",
        ["missing"],
    ),
    (
        "string-for-number",
        setp("quick", "parent", "lr", "0.1x"),
        "quick.parent.lr",
        ["expected a number", "0.1x"],
    ),
    (
        "bool-for-number",
        setp("quick", "parent", "lr", True),
        "quick.parent.lr",
        ["expected a number"],
    ),
    (
        "bool-for-integer",
        setp("quick", "data", "batch_size", True),
        "quick.data.batch_size",
        ["expected an integer"],
    ),
    (
        "float-for-integer",
        setp("quick", "model", "depth", 20.5),
        "quick.model.depth",
        ["expected an integer"],
    ),
    ("nan", setp("quick", "parent", "lr", float("nan")), "quick.parent.lr", ["expected a number"]),
    (
        "inf",
        setp("quick", "parent", "epochs", float("inf")),
        "quick.parent.epochs",
        ["expected a number"],
    ),
    (
        "string-for-bool",
        setp("quick", "data", "augment", "yes"),
        "quick.data.augment",
        ["true or false"],
    ),
    ("lr-negative", setp("quick", "parent", "lr", -0.1), "quick.parent.lr", ["> 0", "-0.1"]),
    ("lr-zero", setp("quick", "parent", "lr", 0), "quick.parent.lr", ["> 0"]),
    ("momentum-one", setp("quick", "parent", "momentum", 1.0), "quick.parent.momentum", ["< 1"]),
    (
        "momentum-negative",
        setp("quick", "parent", "momentum", -0.5),
        "quick.parent.momentum",
        [">= 0"],
    ),
    (
        "lr-decay-above-one",
        setp("quick", "parent", "lr_decay", 1.5),
        "quick.parent.lr_decay",
        ["<= 1"],
    ),
    (
        "barrier-points-one",
        setp("quick", "measure", "barrier_points", 1),
        "quick.measure.barrier_points",
        [">= 2"],
    ),
    (
        "n-children-one",
        setp("quick", "children", "n_children", 1),
        "quick.children.n_children",
        [">= 2"],
    ),
    (
        "lr-drops-scalar",
        setp("quick", "parent", "lr_drops", 80),
        "quick.parent.lr_drops",
        ["expected a list of epochs", "80"],
    ),
    (
        "lr-drops-item-negative",
        setp("quick", "parent", "lr_drops", [4, -1]),
        "quick.parent.lr_drops[1]",
        [">= 0"],
    ),
    (
        "lr-drops-item-string",
        setp("quick", "parent", "lr_drops", [4, "six"]),
        "quick.parent.lr_drops[1]",
        ["expected a number"],
    ),
    (
        "segment-every-zero",
        setp(
            "quick", "parent", "snapshots", [{"every": 0.2, "until": 2}, {"every": 0, "until": 8}]
        ),
        "quick.parent.snapshots[1].every",
        ["> 0"],
    ),
    (
        "snapshots-not-segments",
        setp("quick", "parent", "snapshots", [1, 2]),
        "quick.parent.snapshots[0]",
        ["expected"],
    ),
    (
        "bad-dataset",
        setp("quick", "data", "dataset", "mnist"),
        "quick.data.dataset",
        ["'digits'", "'cifar10'", "'cifar100'", "mnist"],
    ),
    ("bad-model", setp("quick", "model", "name", "vgg"), "quick.model.name", ["'resnet'", "'wrn'"]),
    (
        "bad-bn-stats",
        setp("quick", "measure", "bn_stats", "average"),
        "quick.measure.bn_stats",
        ["'recompute'", "'running'"],
    ),
    ("section-not-mapping", setp("quick", "parent", 5), "quick.parent", ["expected", "5"]),
    ("profile-not-mapping", setp("quick", [1, 2]), "quick", ["expected a mapping"]),
    (
        "spawn-off-schedule",
        setp("quick", "children", "spawn_epochs", [0, 0.4, 0.5, 2]),
        "quick.children.spawn_epochs[2]",
        ["snapshot schedule", "0.5"],
    ),
    (
        "spawn-past-schedule",
        setp("quick", "children", "spawn_epochs", [0, 9]),
        "quick.children.spawn_epochs[1]",
        ["snapshot schedule"],
    ),
    (
        "spawn-at-end",
        setp("quick", "children", "spawn_epochs", [0, 1, QUICK_EPOCHS]),
        "quick.children.spawn_epochs[2]",
        ["parent.epochs", str(QUICK_EPOCHS)],
    ),
    (
        "wrong-notebook",
        setp("notebook", "fort_integrated_veiw"),
        "notebook",
        ["fort_integrated_view", "fort_integrated_veiw"],
    ),
    ("missing-notebook", delp("notebook"), "notebook", []),
    ("missing-profile", delp("quick"), "quick", ["missing"]),
    ("null-profile", setp("quick", None), "quick", ["expected a mapping"]),
    ("resnet-depth", setp("quick", "model", "depth", 21), "quick.model.depth", ["6n + 2", "21"]),
    (
        "spawn-unsorted",
        setp("quick", "children", "spawn_epochs", [0, 2, 0.4]),
        "quick.children.spawn_epochs[2]",
        ["sorted"],
    ),
    (
        "spawn-not-from-0",
        setp("quick", "children", "spawn_epochs", [0.4, 2]),
        "quick.children.spawn_epochs[0]",
        ["start of training"],
    ),
    ("pair-dt-negative", setp("quick", "parent", "pair_dt", -0.4), "quick.parent.pair_dt", ["> 0"]),
    (
        "wrn-depth",
        lambda raw: raw["quick"]["model"].update(name="wrn", depth=20),
        "quick.model.depth",
        ["6n + 4"],
    ),
    (
        "wrn-without-bn",
        lambda raw: raw["quick"]["model"].update(name="wrn", depth=16, batch_norm=False),
        "quick.model.batch_norm",
        ["true for wrn"],
    ),
]


@pytest.mark.parametrize(
    "change,key,fragments", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_is_refused(tmp_path, change, key, fragments):
    raw = base()
    change(raw)
    path = write(tmp_path, raw)
    for msg in (refusal(path), refusal_all(tmp_path)):
        assert f"{BROKEN_NAME}: {key}: " in msg, msg
        for fragment in fragments:
            assert fragment in msg, msg


def test_example_message_from_docstring(tmp_path):
    raw = base()
    raw["quick"]["parent"]["lr_drops"] = 80
    msg = refusal(write(tmp_path, raw))
    assert msg.endswith(f"{BROKEN_NAME}: quick.parent.lr_drops: expected a list of epochs, got 80")


def test_unmodified_copy_loads(tmp_path):
    """Guard for the malformed cases: the copy written back by the helper itself is valid."""
    path = write(tmp_path, base())
    assert params.load_figure(path, "quick").params == params.load_figure(EXAMPLE, "quick").params
    assert set(params.load_all("quick", directory=tmp_path)) == {Path(BROKEN_NAME).stem}


def test_invalid_yaml(tmp_path):
    path = tmp_path / BROKEN_NAME
    path.write_text(EXAMPLE.read_text().replace("lr_drops: [", "lr_drops: [[", 1))
    for msg in (refusal(path), refusal_all(tmp_path)):
        assert BROKEN_NAME in msg and "YAML" in msg, msg


@pytest.mark.parametrize(
    "text", ["- 1\n- 2\n", "just a string\n", "42\n", ""], ids=["list", "string", "number", "empty"]
)
def test_non_mapping_file(tmp_path, text):
    path = tmp_path / BROKEN_NAME
    path.write_text(text)
    for msg in (refusal(path), refusal_all(tmp_path)):
        assert BROKEN_NAME in msg and "mapping" in msg, msg


def test_unreadable_file(tmp_path):
    msg = refusal(tmp_path / BROKEN_NAME)
    assert BROKEN_NAME in msg


def test_malformed_paper_refused_when_loading_quick(tmp_path):
    raw = base()
    raw["paper"]["parent"]["lr"] = -0.1
    path = write(tmp_path, raw)
    # The quick profile on its own is fine...
    assert params.load_figure(path, "quick").params.parent.lr == raw["quick"]["parent"]["lr"]
    # ...but load_all checks both profiles.
    msg = refusal_all(tmp_path, "quick")
    assert f"{BROKEN_NAME}: paper.parent.lr: " in msg and "> 0" in msg, msg


def test_missing_paper_refused_when_loading_quick(tmp_path):
    raw = base()
    del raw["paper"]
    write(tmp_path, raw)
    msg = refusal_all(tmp_path, "quick")
    assert f"{BROKEN_NAME}: paper: " in msg, msg


def test_one_bad_file_among_good_ones(tmp_path):
    write(tmp_path, base(), "fort-fig2.yaml")
    raw = base()
    raw["quick"]["data"]["dataset"] = "mnist"
    write(tmp_path, raw, "fort-fig9.yaml")
    msg = refusal_all(tmp_path)
    assert "fort-fig9.yaml: quick.data.dataset: " in msg, msg


def test_huge_integer_is_a_params_error(tmp_path):
    raw = base()
    raw["quick"]["parent"]["seed"] = 10**400
    msg = refusal(write(tmp_path, raw))
    assert f"{BROKEN_NAME}: quick.parent.seed: " in msg


# ---------------------------------------------------------------------------------------
# Accepted variations and defaults
# ---------------------------------------------------------------------------------------


def test_defaults_apply_when_omitted(tmp_path):
    raw = base()
    for k in ("barrier_points", "bn_stats", "ntk_trace"):
        del raw["quick"]["measure"][k]
    raw["paper"]["measure"].update(barrier_points=5, bn_stats="running", ntk_trace=False)
    path = write(tmp_path, raw)
    m = params.load_figure(path, "quick").params.measure
    assert m.barrier_points == 21
    assert m.bn_stats == "recompute"
    assert m.ntk_trace is True
    # Explicit values are not overridden by the defaults.
    m = params.load_figure(path, "paper").params.measure
    assert (m.barrier_points, m.bn_stats, m.ntk_trace) == (5, "running", False)


def test_integer_accepted_for_float_and_same_key(tmp_path):
    raw = base()
    raw["quick"]["parent"]["epochs"] = 8
    a = params.load_figure(write(tmp_path, raw, "a.yaml"), "quick").params.parent
    raw["quick"]["parent"]["epochs"] = 8.0
    b = params.load_figure(write(tmp_path, raw, "b.yaml"), "quick").params.parent
    assert isinstance(a.epochs, float) and a.epochs == 8.0
    assert a == b
    assert schema.content_key(schema.as_dict(a)) == schema.content_key(schema.as_dict(b))


# ---------------------------------------------------------------------------------------
# Snapshot schedule
# ---------------------------------------------------------------------------------------


def train(epochs, segments) -> params.Train:
    raw = base()["quick"]["parent"]
    raw.update(epochs=epochs, snapshots=[{"every": e, "until": u} for e, u in segments])
    raw.pop("pair_dt", None)  # the schedule alone
    return schema.from_dict(params.Train, raw)


def test_snapshot_epochs_two_segments():
    t = train(3, [(0.25, 1), (1, 3)])
    assert t.snapshot_epochs() == pytest.approx([0, 0.25, 0.5, 0.75, 1, 2, 3], abs=1e-9)


def test_snapshot_epochs_cut_at_epochs_and_end_with_it():
    t = train(2.5, [(0.25, 1), (1, 3)])
    assert t.snapshot_epochs() == pytest.approx([0, 0.25, 0.5, 0.75, 1, 2, 2.5], abs=1e-9)


def test_snapshot_segment_ends_are_snapshots_even_off_grid():
    t = train(2, [(0.3, 1), (1, 2)])
    assert t.snapshot_epochs() == pytest.approx([0, 0.3, 0.6, 0.9, 1, 2], abs=1e-9)


def test_snapshot_segments_must_move_forward(tmp_path):
    raw = base()
    raw["quick"]["parent"]["snapshots"] = [{"every": 0.5, "until": 2}, {"every": 1, "until": 1}]
    msg = refusal(write(tmp_path, raw))
    assert f"{BROKEN_NAME}: quick.parent.snapshots[1].until: " in msg


def test_snapshot_epochs_of_real_quick_schedule():
    # quick: every 0.2 up to 2, then every 1 up to the end of training.
    end = int(QUICK_EPOCHS)
    expected = [0.0] + [i / 5 for i in range(1, 11)] + [float(e) for e in range(3, end + 1)]
    t = dataclasses.replace(params.load_figure(EXAMPLE, "quick").params.parent, pair_dt=None)
    got = t.snapshot_epochs()
    assert len(got) == len(expected) == len(set(got))
    assert got == pytest.approx(expected, abs=1e-9)
    # Rounded, so that spawn epochs written as 0.6 match exactly.
    assert 0.6 in got and 1.4 in got


# ---------------------------------------------------------------------------------------
# Content keys
# ---------------------------------------------------------------------------------------


def test_content_key_ignores_key_order():
    a = {"kind": "parent", "train": {"lr": 0.1, "epochs": 8.0, "drops": [4.0, 6.0]}, "seed": 0}
    b = {"seed": 0, "train": {"drops": [4.0, 6.0], "epochs": 8.0, "lr": 0.1}, "kind": "parent"}
    assert list(a) != list(b)
    ka, kb = schema.content_key(a), schema.content_key(b)
    assert ka == kb
    assert len(ka) == 16 and int(ka, 16) >= 0
    assert schema.content_key(copy.deepcopy(a)) == ka


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))
    else:
        yield path, node


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + [99.0]
    if value is None:  # an optional field left at its default
        return 1
    raise AssertionError(type(value))


def test_content_key_changes_with_any_value():
    spec = schema.as_dict(params.load_figure(EXAMPLE, "quick").params)
    original = schema.content_key(spec)
    keys = {original}
    leaves = list(_leaves(spec))
    assert len(leaves) > 30
    for path, value in leaves:
        changed = copy.deepcopy(spec)
        node = changed
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = _changed(value)
        key = schema.content_key(changed)
        assert key != original, path
        keys.add(key)
    assert len(keys) == len(leaves) + 1
    assert schema.content_key(spec) == original  # spec itself untouched


@pytest.mark.parametrize("profile", params.PROFILES)
def test_from_dict_inverts_as_dict(profile):
    view = params.load_figure(EXAMPLE, profile).params
    d = schema.as_dict(view.parent)
    assert isinstance(d["snapshots"], list) and isinstance(d["snapshots"][0], dict)
    assert schema.from_dict(params.Train, d) == view.parent
    assert schema.from_dict(type(view), schema.as_dict(view)) == view
    # The stored form is plain JSON: key survives the round trip.
    assert schema.content_key(
        schema.as_dict(schema.from_dict(params.Train, d))
    ) == schema.content_key(d)


def test_from_dict_refuses_bad_spec():
    d = schema.as_dict(params.load_figure(EXAMPLE, "quick").params.parent)
    d["momentum"] = 2
    with pytest.raises(params.ParamsError, match=r"stored spec: momentum: .*< 1"):
        schema.from_dict(params.Train, d)
    d = schema.as_dict(params.load_figure(EXAMPLE, "quick").params.parent)
    d["extra"] = 1
    with pytest.raises(params.ParamsError, match=r"stored spec: extra: unknown key"):
        schema.from_dict(params.Train, d)


# ---------------------------------------------------------------------------------------
# Kernel figures (fort_linearised): linearised and low_lr sections, from fort-fig8.yaml
# ---------------------------------------------------------------------------------------

KERNEL_EXAMPLE = PARAMS_DIR / "fort-fig8.yaml"
KERNEL_NAME = KERNEL_EXAMPLE.name  # the broken copy keeps the real file's name


def kernel_base() -> dict:
    return yaml.safe_load(KERNEL_EXAMPLE.read_text())


def write_kernel(tmp_path: Path, raw: dict) -> Path:
    """Write the (changed) copy of fort-fig8.yaml, with the real files it names beside it."""
    for k in ("shares_parent_with", "extends"):  # a figure it refers to must be there too
        if isinstance(raw.get(k), str):
            other = PARAMS_DIR / f"{raw[k]}.yaml"
            (tmp_path / other.name).write_text(other.read_text())
    return write(tmp_path, raw, KERNEL_NAME)


# (id, change of the section, key under the profile, fragments of the message); each change
# is applied to one profile's section, whose schedule (quick: 0.2 grid to 2, then every
# epoch to 6; paper: 0.2 grid to 4, 1 to 20, 4 to 160) has no 0.5 and no epoch 1000.
KERNEL_MALFORMED = [
    (
        "linearised-spawn-off-schedule",
        lambda s: s["linearised"].update(spawn_epochs=[0, 0.4, 0.5, 2]),
        "linearised.spawn_epochs[2]",
        ["snapshot schedule", "0.5"],
    ),
    (
        "linearised-spawn-past-parent",
        lambda s: s["linearised"].update(spawn_epochs=[0, 1000]),
        "linearised.spawn_epochs[1]",
        ["snapshot schedule", "1000"],
    ),
    (
        "linearised-spawn-negative",
        lambda s: s["linearised"].update(spawn_epochs=[-0.2, 0]),
        "linearised.spawn_epochs[0]",
        [">= 0"],
    ),
    (
        "linearised-degree-3",
        lambda s: s["linearised"].update(degree=3),
        "linearised.degree",
        ["<= 2", "3"],
    ),
    (
        "linearised-degree-0",
        lambda s: s["linearised"].update(degree=0),
        "linearised.degree",
        [">= 1", "0"],
    ),
    (
        "linearised-degree-float",
        lambda s: s["linearised"].update(degree=1.5),
        "linearised.degree",
        ["expected an integer", "1.5"],
    ),
    (
        "low-lr-missing-lr",
        lambda s: s["low_lr"].pop("lr"),
        "low_lr.lr",
        ["missing"],
    ),
    (
        "low-lr-missing-n-children",
        lambda s: s["low_lr"].pop("n_children"),
        "low_lr.n_children",
        ["missing"],
    ),
    (
        "low-lr-missing-section",
        lambda s: s.pop("low_lr"),
        "low_lr",
        ["missing"],
    ),
    (
        "low-lr-not-mapping",
        lambda s: s.update(low_lr=0.001),
        "low_lr",
        ["expected a mapping", "0.001"],
    ),
    (
        "low-lr-string-lr",
        lambda s: s["low_lr"].update(lr="low"),
        "low_lr.lr",
        ["expected a number", "low"],
    ),
    (
        "low-lr-bool-epochs",
        lambda s: s["low_lr"].update(epochs=True),
        "low_lr.epochs",
        ["expected a number"],
    ),
    (
        "low-lr-float-n-children",
        lambda s: s["low_lr"].update(n_children=2.5),
        "low_lr.n_children",
        ["expected an integer", "2.5"],
    ),
    (
        "low-lr-lr-zero",
        lambda s: s["low_lr"].update(lr=0),
        "low_lr.lr",
        ["> 0", "0"],
    ),
    (
        "low-lr-lr-negative",
        lambda s: s["low_lr"].update(lr=-0.001),
        "low_lr.lr",
        ["> 0", "-0.001"],
    ),
    (
        "low-lr-unknown-key",
        lambda s: s["low_lr"].update(momentum=0.9),
        "low_lr.momentum",
        ["unknown key", "lr", "n_children"],
    ),
]


def test_kernel_example_is_a_kernel_figure_and_its_copy_loads(tmp_path):
    """Guard for the kernel cases: the real file's copy loads, with a linearised section."""
    path = write_kernel(tmp_path, kernel_base())
    for profile in params.PROFILES:
        fig = params.load_figure(path, profile)
        assert isinstance(fig.params, params.KernelLearning)
        assert fig.params == params.load_figure(KERNEL_EXAMPLE, profile).params
        assert fig.params.linearised.degree == 1
        assert KERNEL_EXAMPLE.stem in params.load_all(profile, directory=tmp_path)


@pytest.mark.parametrize("profile", params.PROFILES)
@pytest.mark.parametrize(
    "change,key,fragments",
    [m[1:] for m in KERNEL_MALFORMED],
    ids=[m[0] for m in KERNEL_MALFORMED],
)
def test_kernel_malformed_is_refused(tmp_path, profile, change, key, fragments):
    raw = kernel_base()
    change(raw[profile])
    path = write_kernel(tmp_path, raw)
    # The profile itself, and load_all for quick (which checks both profiles).
    for msg in (refusal(path, profile), refusal_all(tmp_path, "quick")):
        assert f"{KERNEL_NAME}: {profile}.{key}: " in msg, msg
        for fragment in fragments:
            assert fragment in msg, msg
    other = "paper" if profile == "quick" else "quick"
    assert (
        params.load_figure(path, other).params == params.load_figure(KERNEL_EXAMPLE, other).params
    )


def test_kernel_degree_message_in_full(tmp_path):
    raw = kernel_base()
    raw["quick"]["linearised"]["degree"] = 3
    msg = refusal(write_kernel(tmp_path, raw))
    assert msg.endswith(f"{KERNEL_NAME}: quick.linearised.degree: expected an integer <= 2, got 3")


def test_snapshot_pairs_at_a_fixed_dt():
    """``pair_dt`` adds t + dt after every scheduled t (within the run): the velocity pairs."""
    train = params.load_figure(EXAMPLE, "quick").params.parent
    plain = dataclasses.replace(train, pair_dt=None).snapshot_epochs()
    paired = dataclasses.replace(train, pair_dt=0.4).snapshot_epochs()
    assert set(plain) < set(paired)
    for t in plain:
        assert t + 0.4 > train.epochs + 1e-9 or any(abs(p - t - 0.4) < 1e-6 for p in paired), t
    assert set(paired) - set(plain) <= {round(t + 0.4, 6) for t in plain}
