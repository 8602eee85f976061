"""Datasets for the figures: sklearn digits (offline) and CIFAR-10/100 (official binary archives).

Images are NHWC float32, normalised per channel with the TRAIN mean and std; labels are int32.
CIFAR archives are downloaded once into :func:`data_dir`, checked against :data:`CHECKSUMS` and
converted to ``<root>/<name>.npz`` (uint8 images, no pickle anywhere).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ntkpaper.store import data_dir

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100")
DIGITS_TEST_SIZE = 360
URL_BASE = "https://www.cs.toronto.edu/~kriz/"
ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}
CHECKSUMS = {
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
}
# Archive members: (train files, test files, label bytes per record, index of the label used).
_MEMBERS = {
    "cifar10": (
        [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
        ["cifar-10-batches-bin/test_batch.bin"],
        1,
        0,
    ),
    "cifar100": (
        ["cifar-100-binary/train.bin"],
        ["cifar-100-binary/test.bin"],
        2,
        1,
    ),  # fine labels
}
_NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


class DatasetUnavailable(RuntimeError):
    """A dataset file is missing (and cannot be downloaded) or is corrupt."""


@dataclass(frozen=True)
class Dataset:
    """Normalised images ``x_*``: (n, H, W, C) float32; labels ``y_*``: (n,) int32."""

    name: str
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    num_classes: int


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(name: str, url: str, path: Path) -> None:
    """Fetch ``url`` into ``path`` via a temporary file; network errors -> DatasetUnavailable."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError) as e:
        raise DatasetUnavailable(
            f"dataset {name!r}: cannot download {url} ({e}). Download it elsewhere and place it at "
            f"{path} (the directory is chosen by the NTKPAPER_DATA environment variable, "
            f"default ~/.cache/ntkpaper)."
        ) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_records(tar: tarfile.TarFile, members: list[str], label_bytes: int, label_index: int):
    """Parse binary records -> images (n, 32, 32, 3) uint8 and labels (n,) uint8."""
    recs = []
    for m in members:
        f = tar.extractfile(m)
        if f is None:
            raise DatasetUnavailable(f"archive member {m} is not a regular file")
        recs.append(np.frombuffer(f.read(), np.uint8).reshape(-1, label_bytes + 3072))
    rec = np.concatenate(recs)
    images = rec[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> HWC
    return np.ascontiguousarray(images), rec[:, label_index].copy()


def prepare(name: str, root: Path | None = None) -> Path | None:
    """Ensure ``<root>/<name>.npz`` exists (download, verify MD5, convert); None for digits."""
    _check_name(name)
    if name == "digits":
        return None
    root = Path(root) if root is not None else data_dir()
    npz = root / f"{name}.npz"
    if npz.exists():
        return npz
    root.mkdir(parents=True, exist_ok=True)
    archive_name = ARCHIVES[name]
    archive = root / archive_name
    if not archive.exists():
        _download(name, URL_BASE + archive_name, archive)
    expected, actual = CHECKSUMS[archive_name], _md5(archive)
    if actual != expected:
        raise DatasetUnavailable(
            f"dataset {name!r}: {archive} has md5 {actual}, expected {expected}; "
            f"the file is corrupt or incomplete, delete it and retry."
        )
    train, test, label_bytes, label_index = _MEMBERS[name]
    with tarfile.open(archive, "r:gz") as tar:
        x_train, y_train = _read_records(tar, train, label_bytes, label_index)
        x_test, y_test = _read_records(tar, test, label_bytes, label_index)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f"{name}.", suffix=".npz.part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        os.replace(tmp, npz)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return npz


def _normalise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel standardisation (last axis) with the train mean and std."""
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
    mean = x_train.mean(axis=(0, 1, 2))
    std = x_train.std(axis=(0, 1, 2))
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def load(name: str, root: Path | None = None) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) as a normalised :class:`Dataset` on device."""
    _check_name(name)
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0)[..., None]  # (1797, 8, 8, 1)
        y = d.target
        n_train = len(y) - DIGITS_TEST_SIZE
        x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    else:
        with np.load(prepare(name, root), allow_pickle=False) as f:
            x_train, y_train = f["x_train"] / 255.0, f["y_train"]
            x_test, y_test = f["x_test"] / 255.0, f["y_test"]
    x_train, x_test = _normalise(x_train, x_test)
    return Dataset(
        name=name,
        x_train=jnp.asarray(x_train),
        y_train=jnp.asarray(y_train, dtype=jnp.int32),
        x_test=jnp.asarray(x_test),
        y_test=jnp.asarray(y_test, dtype=jnp.int32),
        num_classes=_NUM_CLASSES[name],
    )


def augment(key: jax.Array, x: jax.Array, padding: int) -> jax.Array:
    """Random crop after zero-padding by ``padding``, horizontal flip (p=1/2); x: (n, H, W, C)."""
    n, h, w, c = x.shape
    k_crop, k_flip = jax.random.split(key)
    if padding > 0:
        padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * padding + 1)
        crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
        x = jax.vmap(crop)(padded, offsets)
    flip = jax.random.bernoulli(k_flip, 0.5, (n,))
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
