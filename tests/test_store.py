"""Tests for ntkpaper.store: checksummed npz, atomic writes, manifests, pytrees, tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from ntkpaper import store

RNG = np.random.default_rng(1234)


def sample_arrays() -> dict[str, np.ndarray]:
    return {
        "f32": RNG.standard_normal((3, 4)).astype(np.float32),
        "f64_3d": RNG.standard_normal((2, 3, 5)),
        "f64_big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "f16": np.linspace(-1, 1, 7).astype(np.float16),
        "i8": np.array([-128, -1, 0, 1, 127], np.int8),
        "u16": np.array([0, 1, 65535], np.uint16),
        "i64": np.arange(-5, 5, dtype=np.int64).reshape(5, 2),
        "bool": np.array([[True, False], [False, True]]),
        "c64": (RNG.standard_normal(4) + 1j * RNG.standard_normal(4)).astype(np.complex64),
        "scalar_f": np.array(3.25),
        "scalar_i": np.array(-7, np.int32),
        "empty": np.zeros((0, 3), np.float32),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "strided": np.arange(20, dtype=np.int16)[::3],
        "text": np.array(["alpha", "béta", "γ-ray ✓", ""]),
        "scalar_text": np.array("ünïcode"),
    }


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, w in want.items():
        g = got[k]
        assert g.dtype == np.asarray(w).dtype, k
        assert g.shape == np.shape(w), k
        np.testing.assert_array_equal(g, w, err_msg=k)


# ---------------------------------------------------------------------------------------
# save_arrays / load_arrays
# ---------------------------------------------------------------------------------------


def test_round_trip_many_dtypes(tmp_path):
    arrays = sample_arrays()
    path = tmp_path / "run" / "arrays.npz"  # parent directory is created
    store.save_arrays(path, arrays)
    assert_same(store.load_arrays(path), arrays)
    assert os.listdir(path.parent) == ["arrays.npz"]  # no temporary files left behind


def test_file_is_plain_npz_without_pickle(tmp_path):
    arrays = sample_arrays()
    path = tmp_path / "arrays.npz"
    store.save_arrays(path, arrays)
    with np.load(path, allow_pickle=False) as f:
        assert set(f.files) == set(arrays) | {store.CHECKSUM}
        raw = {k: f[k] for k in f.files if k != store.CHECKSUM}
        checksum = f[store.CHECKSUM]
    assert_same(raw, arrays)
    assert checksum.shape == () and len(str(checksum)) == 64 and int(str(checksum), 16) >= 0


def test_python_values_become_arrays(tmp_path):
    path = tmp_path / "a.npz"
    store.save_arrays(path, {"list": [[1, 2], [3, 4]], "float": 0.5, "str": "hello"})
    got = store.load_arrays(path)
    np.testing.assert_array_equal(got["list"], [[1, 2], [3, 4]])
    assert got["float"].shape == () and float(got["float"]) == 0.5
    assert str(got["str"]) == "hello"


def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "a.npz"
    store.save_arrays(path, {"x": np.arange(3)})
    store.save_arrays(path, {"y": np.ones(2)})
    assert_same(store.load_arrays(path), {"y": np.ones(2)})
    assert os.listdir(tmp_path) == ["a.npz"]


@pytest.mark.parametrize(
    "bad",
    [np.array([1, "a", None], dtype=object), np.array([{"a": 1}], dtype=object)],
    ids=["mixed", "dict"],
)
def test_object_arrays_refused(tmp_path, bad):
    path = tmp_path / "a.npz"
    with pytest.raises(TypeError):
        store.save_arrays(path, {"ok": np.arange(3), "bad": bad})
    assert not path.exists()


def test_missing_file_is_not_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError):
        store.load_arrays(tmp_path / "nope.npz")


# ---------------------------------------------------------------------------------------
# Corruption is detected
# ---------------------------------------------------------------------------------------


def distinctive() -> np.ndarray:
    return np.random.default_rng(99).integers(0, 256, 4096, dtype=np.uint8)


def saved(tmp_path: Path) -> tuple[Path, dict]:
    arrays = {
        "weights": distinctive(),
        "other": np.arange(50, dtype=np.float64),
        "names": np.array(["a", "b"]),
    }
    path = tmp_path / "entry.npz"
    store.save_arrays(path, arrays)
    assert_same(store.load_arrays(path), arrays)
    return path, arrays


def corrupt_message(path: Path) -> str:
    with pytest.raises(store.CorruptEntry) as info:
        store.load_arrays(path)
    msg = str(info.value)
    assert str(path) in msg
    return msg


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_flipped_byte_in_data(tmp_path, where):
    path, arrays = saved(tmp_path)
    blob = bytearray(path.read_bytes())
    raw = arrays["weights"].tobytes()
    start = bytes(blob).find(raw)
    assert start >= 0 and bytes(blob).find(raw, start + 1) == -1
    i = start + int(where * (len(raw) - 1))
    blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))
    corrupt_message(path)


@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -22, -1], ids=lambda k: f"keep={k}")
def test_truncated_file(tmp_path, keep):
    path, _ = saved(tmp_path)
    blob = path.read_bytes()
    n = int(keep * len(blob)) if isinstance(keep, float) else keep % len(blob) if keep < 0 else keep
    path.write_bytes(blob[:n])
    corrupt_message(path)


def test_rewritten_checksum(tmp_path):
    path, arrays = saved(tmp_path)
    with open(path, "wb") as f:
        np.savez(f, **arrays, **{store.CHECKSUM: np.array("0" * 64)})
    assert "checksum" in corrupt_message(path)


def test_changed_data_with_original_checksum(tmp_path):
    """The zip's own CRC is valid here: only the stored sha256 can catch the change."""
    path, arrays = saved(tmp_path)
    with np.load(path) as f:
        checksum = f[store.CHECKSUM]
    arrays["other"] = arrays["other"].copy()
    arrays["other"][7] += 1e-9
    with open(path, "wb") as f:
        np.savez(f, **arrays, **{store.CHECKSUM: checksum})
    assert "checksum" in corrupt_message(path)


@pytest.mark.parametrize("change", ["dtype", "shape", "rename", "drop", "add"])
def test_checksum_covers_names_dtypes_shapes(tmp_path, change):
    path = tmp_path / "entry.npz"
    arrays = {"a": np.arange(12, dtype=np.int32).reshape(3, 4), "b": np.ones(3)}
    store.save_arrays(path, arrays)
    with np.load(path) as f:
        checksum = f[store.CHECKSUM]
    a = arrays["a"]
    forged = {
        "dtype": {"a": a.view(np.float32), "b": arrays["b"]},  # same bytes, other dtype
        "shape": {"a": a.reshape(4, 3), "b": arrays["b"]},  # same bytes, other shape
        "rename": {"c": a, "b": arrays["b"]},
        "drop": {"a": a},
        "add": {**arrays, "extra": np.zeros(1)},
    }[change]
    with open(path, "wb") as f:
        np.savez(f, **forged, **{store.CHECKSUM: checksum})
    corrupt_message(path)


def test_missing_checksum(tmp_path):
    path, arrays = saved(tmp_path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    corrupt_message(path)


def test_not_a_zip(tmp_path):
    path = tmp_path / "entry.npz"
    path.write_bytes(b"this is not an npz file at all" * 10)
    corrupt_message(path)


def test_array_named_like_a_savez_keyword(tmp_path):
    path = tmp_path / "a.npz"
    store.save_arrays(path, {"allow_pickle": np.arange(3)})
    assert_same(store.load_arrays(path), {"allow_pickle": np.arange(3)})


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fail", ["replace", "fsync"])
def test_failed_write_keeps_previous_file(tmp_path, monkeypatch, fail):
    path = tmp_path / "entry.npz"
    old = {"x": np.arange(10)}
    store.save_arrays(path, old)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(store.os, fail, boom)
    with pytest.raises(OSError, match="disk on fire"):
        store.save_arrays(path, {"x": np.arange(1000) * 2})
    with pytest.raises(OSError, match="disk on fire"):
        store.write_json(tmp_path / "spec.json", {"a": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_same(store.load_arrays(path), old)
    assert sorted(os.listdir(tmp_path)) == ["entry.npz"]  # no temp file, no spec.json


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    """A KeyboardInterrupt (killed job) between write and rename also cleans up."""
    path = tmp_path / "spec.json"
    store.write_json(path, {"v": 1})

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.write_json(path, {"v": 2})
    monkeypatch.undo()
    assert store.read_json(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["spec.json"]


def test_write_goes_through_temp_in_same_directory(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst)))
        assert Path(src).exists() and not Path(dst).exists()
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", spy)
    target = tmp_path / "sub" / "arrays.npz"
    store.save_arrays(target, {"x": np.arange(3)})
    assert len(calls) == 1
    src, dst = calls[0]
    assert dst == target and src.parent == target.parent and src != target
    assert not src.exists() and target.exists()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    """Results must be readable by whoever the umask lets read them (mkstemp alone gives 0600)."""
    old = os.umask(umask)
    try:
        store.save_arrays(tmp_path / "a.npz", {"x": np.arange(3)})
        store.write_json(tmp_path / "b.json", {"x": 1})
        store.save_tables(tmp_path, {"panel_A": pd.DataFrame({"x": [1.0]})})
    finally:
        os.umask(old)
    for name in ("a.npz", "b.json", "panel_A.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


# ---------------------------------------------------------------------------------------
# Pytrees
# ---------------------------------------------------------------------------------------


def test_tree_round_trip_nested_dict_with_tuples(tmp_path):
    import jax

    tree = {
        "a": (np.arange(3, dtype=np.int32), {"b": np.ones((2, 2), np.float32)}),
        "c": {"d": (np.array(1.5), np.array([True, False])), "e": np.array(["x", "yz"])},
    }
    arrays = store.tree_arrays(tree, "state")
    assert len(arrays) == len(jax.tree_util.tree_leaves(tree)) == 5
    assert all(k.startswith("state/") for k in arrays)
    store.save_arrays(tmp_path / "t.npz", arrays)
    loaded = store.load_arrays(tmp_path / "t.npz")
    template = jax.tree_util.tree_map(np.zeros_like, tree)
    back = store.tree_from_arrays(template, loaded, "state")
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(tree)
    assert isinstance(back["a"], tuple) and isinstance(back["c"]["d"], tuple)
    for got, want in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(tree)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_tree_round_trip_optax_state(tmp_path):
    import jax
    import jax.numpy as jnp
    import optax

    params = {
        "dense": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([1.0, 2.0, 3.0])},
        "scale": jnp.array(0.5),
    }
    opt = optax.sgd(0.1, momentum=0.9)
    state = opt.init(params)
    grads = jax.tree_util.tree_map(lambda p: p * 0.1 + 1.0, params)
    for _ in range(2):  # non-zero, leaf-specific momentum traces
        updates, state = opt.update(grads, state, params)
    arrays = {**store.tree_arrays(params, "params"), **store.tree_arrays(state, "opt")}
    n_state = len(jax.tree_util.tree_leaves(state))
    assert len(arrays) == len(jax.tree_util.tree_leaves(params)) + n_state
    store.save_arrays(tmp_path / "ckpt.npz", arrays)
    loaded = store.load_arrays(tmp_path / "ckpt.npz")

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    back_params = store.tree_from_arrays(zeros, loaded, "params")
    back_state = store.tree_from_arrays(opt.init(zeros), loaded, "opt")
    assert jax.tree_util.tree_structure(back_state) == jax.tree_util.tree_structure(state)
    for got, want in zip(jax.tree_util.tree_leaves(back_state), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for got, want in zip(jax.tree_util.tree_leaves(back_params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # The restored state is usable and continues exactly like the original.
    u1, _ = opt.update(grads, state, params)
    u2, _ = opt.update(grads, back_state, back_params)
    for a, b in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tree_from_arrays_missing_leaf(tmp_path):
    arrays = store.tree_arrays({"a": np.ones(2)}, "p")
    with pytest.raises(KeyError):
        store.tree_from_arrays({"a": np.ones(2), "b": np.ones(1)}, arrays, "p")
    with pytest.raises(KeyError):
        store.tree_from_arrays({"a": np.ones(2)}, arrays, "q")


# ---------------------------------------------------------------------------------------
# Run directories, manifests, JSON
# ---------------------------------------------------------------------------------------


def test_manifest_marks_run_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKPAPER_RUNS", str(tmp_path / "runs"))
    kind, key = "parent", "0123456789abcdef"
    assert store.runs_dir() == tmp_path / "runs"
    assert store.run_dir(kind, key) == tmp_path / "runs" / kind / key
    assert store.manifest_path(kind, key) == tmp_path / "runs" / kind / key / "manifest.json"
    assert not store.is_complete(kind, key)
    # Files of a run that has not finished: still incomplete until the manifest is written.
    store.save_arrays(store.run_dir(kind, key) / "snap_000.npz", {"x": np.arange(3)})
    store.write_json(store.run_dir(kind, key) / "spec.json", {"lr": 0.1})
    assert not store.is_complete(kind, key)

    spec = {"lr": 0.1, "snapshots": [{"every": 0.2, "until": 2.0}], "name": "résumé"}
    files = ["snap_000.npz", "metrics.npz"]
    store.write_manifest(kind, key, spec, files)
    assert store.is_complete(kind, key)
    assert store.read_json(store.manifest_path(kind, key)) == {
        "kind": kind,
        "key": key,
        "spec": spec,
        "files": files,
        "device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})",
        "jax": jax.__version__,
    }
    assert sorted(os.listdir(store.run_dir(kind, key))) == [
        "manifest.json",
        "snap_000.npz",
        "spec.json",
    ]  # no temporary files
    # Other runs are unaffected.
    assert not store.is_complete(kind, "fedcba9876543210")
    assert not store.is_complete("child", key)
    # The root is read from the environment on each call.
    monkeypatch.setenv("NTKPAPER_RUNS", str(tmp_path / "elsewhere"))
    assert not store.is_complete(kind, key)


def test_runs_dir_default(monkeypatch):
    monkeypatch.delenv("NTKPAPER_RUNS", raising=False)
    assert store.runs_dir() == Path("runs")
    assert store.manifest_path("k", "x") == Path("runs/k/x/manifest.json")


def test_json_round_trip(tmp_path):
    obj = {"b": [1, 2.5, None, True], "a": {"nested": "ünï"}}
    path = tmp_path / "x" / "spec.json"
    store.write_json(path, obj)
    assert store.read_json(path) == obj
    assert json.loads(path.read_text()) == obj


@pytest.mark.parametrize(
    "text",
    ['{"kind": "parent", "key": ', "", "not json", "{'a': 1}"],
    ids=["truncated", "empty", "words", "single-quotes"],
)
def test_read_json_broken(tmp_path, text):
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(store.CorruptEntry) as info:
        store.read_json(path)
    assert str(path) in str(info.value)


def test_read_json_binary_garbage(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_bytes(b'{"kind": "\xff\xfe\x00')
    with pytest.raises(store.CorruptEntry):
        store.read_json(path)


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------


def test_save_tables_csv(tmp_path):
    barrier = pd.DataFrame(
        {
            "spawn_epoch": [0.0, 0.4, 1.0, 2.0],
            "barrier": [0.31, 1 / 3, 0.0125, -0.0],
            "n": [2, 2, 2, 2],
            "label": ["a", "b c", "d,e", "f"],
        },
        index=pd.Index([10, 20, 30, 40], name="row"),
    )
    ntk = pd.DataFrame({"epoch": np.arange(5) * 0.2, "distance": np.linspace(0, 1, 5) ** 2})
    out = tmp_path / "results" / "quick" / "fort-fig2"
    paths = store.save_tables(out, {"barrier": barrier, "ntk": ntk})
    assert paths == [out / "barrier.csv", out / "ntk.csv"]
    assert sorted(os.listdir(out)) == ["barrier.csv", "ntk.csv"]

    back = pd.read_csv(out / "barrier.csv", index_col=0)
    pd.testing.assert_frame_equal(back, barrier, check_exact=True)
    back = pd.read_csv(out / "ntk.csv", index_col=0)
    pd.testing.assert_frame_equal(back, ntk, check_exact=True, check_index_type=False)
