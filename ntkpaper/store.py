"""Content-keyed run store: the only module that writes run and result files.

Layout (open_lth's ``paths.py``: one function per file name)::

    runs/<kind>/<key>/spec.json        what determines the run (its key is a hash of it)
    runs/<kind>/<key>/<name>.npz       arrays, each file carrying its own sha256
    runs/<kind>/<key>/manifest.json    written last: a run without it is incomplete

Every write goes to a temporary file in the same directory, is flushed and fsynced, then
renamed over the target (``os.replace``), so a killed job never leaves a half-written
file under a final name. Every ``.npz`` stores a sha256 of its arrays and is verified on
load: a corrupted or truncated entry raises ``CorruptEntry``, never loads silently.
No pickle: ``np.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

CHECKSUM = "__sha256__"


class CorruptEntry(RuntimeError):
    """A stored file whose checksum does not match; the message says how to recover."""


def runs_dir() -> Path:
    """Root of the run store: ``$NTKPAPER_RUNS`` or ``runs/`` in the working directory."""
    return Path(os.environ.get("NTKPAPER_RUNS", "runs"))


def data_dir() -> Path:
    """Dataset cache: ``$NTKPAPER_DATA`` if set, else ``~/.cache/ntkpaper``."""
    env = os.environ.get("NTKPAPER_DATA")
    return Path(env) if env else Path.home() / ".cache" / "ntkpaper"


def run_dir(kind: str, key: str) -> Path:
    return runs_dir() / kind / key


def manifest_path(kind: str, key: str) -> Path:
    return run_dir(kind, key) / "manifest.json"


def results_dir(profile: str, figure_id: str = "") -> Path:
    """Where a figure's PDF, PNG, executed notebook and panel data go:
    ``$NTKPAPER_RESULTS`` (default ``results/``) ``/<profile>/<figure_id>``."""
    return Path(os.environ.get("NTKPAPER_RESULTS", "results")) / profile / figure_id


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename over ``path``.

    The file gets the mode an ordinary ``open`` would give (0666 less the umask), not
    ``mkstemp``'s 0600, so a group or a web server serving ``results/`` can read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path: Path, arrays: dict[str, Any]) -> None:
    """Write ``arrays`` atomically as an ``.npz`` that carries its own sha256."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if any(a.dtype == object for a in arrays.values()):
        raise TypeError("object arrays would need pickle; store numbers or strings")
    if CHECKSUM in arrays:
        raise ValueError(f"{CHECKSUM!r} is reserved for the checksum")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # the .npz layout, without np.savez's keyword names
        for name, a in {**arrays, CHECKSUM: np.array(_digest(arrays))}.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
    _atomic_write(Path(path), buf.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by ``save_arrays``; raise ``CorruptEntry`` if it is damaged."""
    path = Path(path)
    how = f"delete {path.parent} and run the same command again to recompute it"
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptEntry(f"{path}: unreadable ({e}); {how}") from None
    stored = arrays.pop(CHECKSUM, None)
    if stored is None or str(stored) != _digest(arrays):
        raise CorruptEntry(f"{path}: checksum mismatch (corrupted or truncated); {how}")
    return arrays


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptEntry(f"{path}: not valid JSON ({e}); delete it and rerun") from None


def ran_on() -> dict[str, str]:
    """The device and JAX version of this process: where a run was computed."""
    import jax

    devices = jax.devices()
    device = f"{devices[0].platform} ({devices[0].device_kind})"
    return {"device": device + (f" x{len(devices)}" if len(devices) > 1 else ""),
            "jax": jax.__version__}  # fmt: skip


def write_manifest(kind: str, key: str, spec: dict, files: list[str]) -> None:
    """Mark a run complete: its spec, the files it produced and where it ran (written last)."""
    record = {"kind": kind, "key": key, "spec": spec, "files": files, **ran_on()}
    write_json(manifest_path(kind, key), record)


def is_complete(kind: str, key: str) -> bool:
    return manifest_path(kind, key).exists()


# ---------------------------------------------------------------------------------------
# Readers of complete runs (what views and notebooks read; no training code)
# ---------------------------------------------------------------------------------------


def snapshot_name(step: int) -> str:
    """File of a parent's snapshot at ``step``."""
    return f"snap-{step:08d}.npz"


def parent_snapshot(parent: Any, step: int) -> dict[str, np.ndarray]:
    """Arrays of ``parent``'s snapshot at ``step``: state, step, epoch, errors and losses."""
    return load_arrays(run_dir(parent.kind, parent.key) / snapshot_name(step))


def children_snapshots(children: Any) -> list[dict[str, np.ndarray]]:
    """The stacked snapshots a complete children run kept (``snapshot_every``), by step."""
    files = read_json(manifest_path(children.kind, children.key))["files"]
    return [
        load_arrays(run_dir(children.kind, children.key) / f) for f in files if f != "final.npz"
    ]


ERRORS = ("train_error", "train_loss", "test_error", "test_loss")
"""What a parent snapshot records of the network, and a parent measurement of each snapshot."""


def parent_history(parent: Any) -> dict[str, np.ndarray]:
    """Errors and losses of a complete parent at every snapshot: arrays (T,)."""
    files = read_json(manifest_path(parent.kind, parent.key))["files"]
    out = {k: [] for k in ("step", "epoch", *ERRORS)}
    for f in files:
        a = load_arrays(run_dir(parent.kind, parent.key) / f)
        for k in out:
            out[k].append(a[k])
    return {k: np.array(v) for k, v in out.items()}


def measurements(job: Any) -> dict[str, np.ndarray]:
    """The ``measure.npz`` of a complete measurement job."""
    return load_arrays(run_dir(job.kind, job.key) / "measure.npz")


def output(job: Any, name: str) -> dict[str, np.ndarray]:
    """The arrays file ``name`` of a complete run."""
    return load_arrays(run_dir(job.kind, job.key) / name)


def final(job: Any) -> dict[str, np.ndarray]:
    """The ``final.npz`` of a complete training job (children, linearised)."""
    return load_arrays(run_dir(job.kind, job.key) / "final.npz")


# ---------------------------------------------------------------------------------------
# Pytrees <-> flat arrays
# ---------------------------------------------------------------------------------------


def tree_arrays(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    """Flatten a pytree into ``{"<prefix>/<path>": array}`` (path from its key path)."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{prefix}/{jax.tree_util.keystr(p)}": np.asarray(v) for p, v in leaves}


def tree_from_arrays(template: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """Inverse of ``tree_arrays``: fill ``template``'s structure with stored arrays."""
    import jax

    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = [arrays[f"{prefix}/{jax.tree_util.keystr(p)}"] for p, _ in paths]
    return jax.tree_util.tree_unflatten(treedef, leaves)


# ---------------------------------------------------------------------------------------
# Figure results
# ---------------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    _atomic_write(Path(path), text.encode())


def save_figure(fig: Any, out: Path, name: str, footer: str = "") -> list[Path]:
    """Write a matplotlib figure as ``<name>.pdf`` and ``<name>.png`` (atomically), with
    ``footer`` (its provenance, ``provenance.footer``) in small grey type under it."""
    if footer:  # centred under everything drawn (the tight box, in inches)
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        w, h = fig.get_size_inches()
        x, y = (box.x0 + box.x1) / 2 / w, (box.y0 - 0.04) / h
        fig.text(x, y, footer, ha="center", va="top", fontsize=5, color="0.45")
    paths = []
    for ext in ("pdf", "png"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
        _atomic_write(Path(out) / f"{name}.{ext}", buf.getvalue())
        paths.append(Path(out) / f"{name}.{ext}")
    return paths


def save_tables(out: Path, tables: dict[str, Any]) -> list[Path]:
    """Write each pandas DataFrame as ``<out>/<name>.csv``: the numbers behind the panels."""
    paths = []
    for name, df in tables.items():
        _atomic_write(Path(out) / f"{name}.csv", df.to_csv(index=True).encode())
        paths.append(Path(out) / f"{name}.csv")
    return paths
