"""Datasets for the figures: sklearn digits (offline), CIFAR-10/100 (official binary archives)
and MNIST (official IDX files, gzip).

Images are NHWC float32, normalised per channel with the TRAIN mean and std; labels are int32.
CIFAR archives and MNIST files are downloaded once into :func:`data_dir`, checked against
:data:`CHECKSUMS` and converted to ``<root>/<name>.npz`` (uint8 images, no pickle anywhere).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ntkpaper.store import data_dir

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "mnist")
DIGITS_TEST_SIZE = 360
URL_BASE = "https://www.cs.toronto.edu/~kriz/"
ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}
# MNIST: the S3 mirror torchvision uses first (the original site is often down), then the original.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# split -> (images file, labels file)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CHECKSUMS = {
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
    # as in torchvision.datasets.MNIST.resources
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# IDX magic numbers (0x0000 08 0D: unsigned bytes, D dimensions) and the per-item shape.
_IDX_IMAGES, _IDX_LABELS = 2051, 2049
_MNIST_SHAPE = (28, 28)
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
_NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "mnist": 10}


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


def _download(name: str, urls: list[str], path: Path, by_hand: str = "") -> None:
    """Fetch the first of ``urls`` that answers into ``path`` via a temporary file; when all
    fail -> DatasetUnavailable saying what to place where (``by_hand``, default: this file)."""
    failures: list[str] = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                shutil.copyfileobj(resp, out)
            os.replace(tmp, path)
            return
        except (urllib.error.URLError, OSError) as e:
            failures.append(f"{url} ({e})")
            error = e
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DatasetUnavailable(
        f"dataset {name!r}: cannot download {' or '.join(failures)}. Download "
        f"{by_hand or f'it elsewhere and place it at {path}'} (the directory is chosen by the "
        f"NTKPAPER_DATA environment variable, default ~/.cache/ntkpaper)."
    ) from error


def _fetch(
    name: str, file_name: str, bases: tuple[str, ...], root: Path, by_hand: str = ""
) -> Path:
    """``root/file_name``, fetched from the first base URL that answers if absent; MD5-checked."""
    path = root / file_name
    if not path.exists():
        _download(name, [base + file_name for base in bases], path, by_hand)
    expected, actual = CHECKSUMS[file_name], _md5(path)
    if actual != expected:
        raise DatasetUnavailable(
            f"dataset {name!r}: {path} has md5 {actual}, expected {expected}; "
            f"the file is corrupt or incomplete, delete it and retry."
        )
    return path


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


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Parse a gzipped IDX file of unsigned bytes -> (n, *item_shape) uint8, strictly: magic
    number, dimensions and the exact data size are checked; any mismatch -> DatasetUnavailable."""

    def malformed(reason: str) -> DatasetUnavailable:
        return DatasetUnavailable(
            f"dataset 'mnist': {path} is not a valid MNIST IDX file ({reason}); the file is "
            f"corrupt or not the official one: delete it and retry, or place the official "
            f"{path.name} (gzip, as published) there by hand."
        )

    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise malformed(f"cannot decompress: {e}") from e
    ndim = 1 + len(item_shape)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise malformed(f"{len(raw)} bytes, shorter than its {header}-byte header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise malformed(f"magic number {found}, expected {magic}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != item_shape:
        raise malformed(f"dimensions {dims}, expected (n, {', '.join(map(str, item_shape))})")
    size = header + int(np.prod(dims))
    if len(raw) != size:
        raise malformed(f"{len(raw)} bytes, expected {size} for dimensions {dims}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def _mnist(root: Path) -> dict[str, np.ndarray]:
    """Fetch, verify and parse the four MNIST files -> uint8 images (n, 28, 28, 1), labels (n,)."""
    names = [f for pair in MNIST_FILES.values() for f in pair]
    by_hand = (
        f"the MNIST files {', '.join(names)} (gzip, as published at "
        f"{' or '.join(MNIST_MIRRORS)}) elsewhere and place them in {root}"
    )
    out = {}
    for split, (images_file, labels_file) in MNIST_FILES.items():
        images_path = _fetch("mnist", images_file, MNIST_MIRRORS, root, by_hand)
        labels_path = _fetch("mnist", labels_file, MNIST_MIRRORS, root, by_hand)
        images = _read_idx(images_path, _IDX_IMAGES, _MNIST_SHAPE)
        labels = _read_idx(labels_path, _IDX_LABELS, ())
        if len(images) != len(labels):
            raise DatasetUnavailable(
                f"dataset 'mnist': {images_path} holds {len(images)} images but {labels_path} "
                f"{len(labels)} labels; delete both and retry."
            )
        if labels.max(initial=0) >= _NUM_CLASSES["mnist"]:
            raise DatasetUnavailable(
                f"dataset 'mnist': {labels_path} holds label {labels.max()}, expected 0..9; "
                f"delete it and retry."
            )
        out[f"x_{split}"], out[f"y_{split}"] = images[..., None], labels
    return out


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
    if name == "mnist":
        arrays = _mnist(root)
    else:
        archive = _fetch(name, ARCHIVES[name], (URL_BASE,), root)
        train, test, label_bytes, label_index = _MEMBERS[name]
        with tarfile.open(archive, "r:gz") as tar:
            x_train, y_train = _read_records(tar, train, label_bytes, label_index)
            x_test, y_test = _read_records(tar, test, label_bytes, label_index)
        arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f"{name}.", suffix=".npz.part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
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
        npz = prepare(name, root)
        try:
            with np.load(npz, allow_pickle=False) as f:
                x_train, y_train = f["x_train"] / 255.0, f["y_train"]
                x_test, y_test = f["x_test"] / 255.0, f["y_test"]
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise DatasetUnavailable(
                f"dataset {name!r}: the converted cache {npz} is unreadable ({e!r}); delete it "
                f"and retry: it is rebuilt from the downloaded files."
            ) from e
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
