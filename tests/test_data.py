"""Tests for ntkpaper.data on fake CIFAR archives in the official binary format and fake MNIST
files in the official IDX + gzip format (no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkpaper import data

RNG = np.random.default_rng(0)


def np_load_calls(monkeypatch) -> list[dict]:
    """Record the keyword arguments of every ``np.load`` the data module makes."""
    calls, real_load = [], np.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(data.np, "load", spy)
    return calls


def encode(img: np.ndarray) -> bytes:
    """One (32, 32, 3) uint8 image -> 3072 bytes: byte c*1024 + h*32 + w holds img[h, w, c]."""
    buf = np.zeros(3072, np.uint8)
    h, w, c = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    buf[c * 1024 + h * 32 + w] = img[h, w, c]
    return buf.tobytes()


def make_tar(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_images(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def cifar10(tmp_path, monkeypatch):
    """Fake cifar-10-binary.tar.gz: 5 train batches of 2 records, 3 test records."""
    x_train, x_test = fake_images(10), fake_images(3)
    x_train[0] = 0
    x_train[0, 5, 7, 2] = 255  # a single bright blue pixel at (h=5, w=7)
    y_train, y_test = np.arange(10) % 10, np.array([9, 4, 1])
    members = {
        f"cifar-10-batches-bin/data_batch_{b + 1}.bin": b"".join(
            bytes([y_train[i]]) + encode(x_train[i]) for i in (2 * b, 2 * b + 1)
        )
        for b in range(5)
    }
    members["cifar-10-batches-bin/test_batch.bin"] = b"".join(
        bytes([y]) + encode(x) for x, y in zip(x_test, y_test)
    )
    md5 = make_tar(tmp_path / "cifar-10-binary.tar.gz", members)
    monkeypatch.setitem(data.CHECKSUMS, "cifar-10-binary.tar.gz", md5)
    return tmp_path, x_train, y_train, x_test, y_test


def expected_normalised(x_train: np.ndarray, x_test: np.ndarray):
    xt, xs = x_train / 255.0, x_test / 255.0
    mean, std = xt.mean(axis=(0, 1, 2)), xt.std(axis=(0, 1, 2))
    return (xt - mean) / std, (xs - mean) / std


def test_cifar10_fake_archive(cifar10):
    root, x_train, y_train, x_test, y_test = cifar10
    ds = data.load("cifar10", root)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.int32
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    # Layout: the single bright pixel of image 0 decodes to (h=5, w=7, c=2).
    img0 = np.asarray(ds.x_train[0])
    assert np.unravel_index(np.argmax(img0 - img0.min(axis=(0, 1))), img0.shape) == (5, 7, 2)
    # Normalisation with TRAIN statistics, applied to train and test alike.
    exp_train, exp_test = expected_normalised(x_train, x_test)
    np.testing.assert_allclose(ds.x_train, exp_train, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, exp_test, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ds.x_train).mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ds.x_train).std(axis=(0, 1, 2)), 1, atol=1e-5)


def test_cifar10_npz_cache(cifar10, monkeypatch):
    root, *_ = cifar10
    first = data.load("cifar10", root)
    npz = root / "cifar10.npz"
    assert npz.exists()
    assert not list(root.glob("*.part"))  # atomic write left no temporary file
    with np.load(npz, allow_pickle=False) as f:
        assert f["x_train"].dtype == np.uint8 and f["x_train"].shape == (10, 32, 32, 3)
    (root / "cifar-10-binary.tar.gz").unlink()  # the second load must not need the archive

    calls = np_load_calls(monkeypatch)
    second = data.load("cifar10", root)
    assert calls and all(kw.get("allow_pickle") is False for kw in calls)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert data.prepare("cifar10", root) == npz


def test_cifar100_fine_labels(tmp_path, monkeypatch):
    x_train, x_test = fake_images(4), fake_images(2)
    coarse_train, fine_train = [1, 2, 3, 4], [99, 0, 57, 12]
    coarse_test, fine_test = [5, 6], [42, 77]
    members = {
        "cifar-100-binary/train.bin": b"".join(
            bytes([c, f]) + encode(x) for x, c, f in zip(x_train, coarse_train, fine_train)
        ),
        "cifar-100-binary/test.bin": b"".join(
            bytes([c, f]) + encode(x) for x, c, f in zip(x_test, coarse_test, fine_test)
        ),
    }
    md5 = make_tar(tmp_path / "cifar-100-binary.tar.gz", members)
    monkeypatch.setitem(data.CHECKSUMS, "cifar-100-binary.tar.gz", md5)
    ds = data.load("cifar100", tmp_path)
    assert ds.num_classes == 100
    assert ds.x_train.shape == (4, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, fine_train)
    np.testing.assert_array_equal(ds.y_test, fine_test)
    exp_train, exp_test = expected_normalised(x_train, x_test)
    np.testing.assert_allclose(ds.x_train, exp_train, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, exp_test, atol=1e-5)


def test_wrong_checksum(cifar10, monkeypatch):
    root, *_ = cifar10
    monkeypatch.setitem(data.CHECKSUMS, "cifar-10-binary.tar.gz", "0" * 32)
    with pytest.raises(data.DatasetUnavailable) as e:
        data.load("cifar10", root)
    msg = str(e.value)
    assert "md5" in msg and "0" * 32 in msg and "cifar-10-binary.tar.gz" in msg and "delete" in msg
    assert not (root / "cifar10.npz").exists()


def test_offline_missing_archive(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("NTKPAPER_DATA", str(tmp_path / "store"))
    assert data.data_dir() == tmp_path / "store"
    with pytest.raises(data.DatasetUnavailable) as e:
        data.load("cifar100")
    msg = str(e.value)
    expected = tmp_path / "store" / "cifar-100-binary.tar.gz"
    assert "cifar100" in msg and str(expected) in msg
    assert (
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz" in msg and "NTKPAPER_DATA" in msg
    )
    assert not expected.exists() and not list((tmp_path / "store").glob("*.part"))


def test_download_path(cifar10, tmp_path, monkeypatch):
    """When the archive is absent it is fetched with urlopen, verified and converted."""
    src, _, y_train, _, _ = cifar10
    payload = (src / "cifar-10-binary.tar.gz").read_bytes()
    urls = []

    def fake_urlopen(url, *args, **kwargs):
        urls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "fresh"
    ds = data.load("cifar10", root)
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    assert (root / "cifar-10-binary.tar.gz").read_bytes() == payload
    np.testing.assert_array_equal(ds.y_train, y_train)


def test_data_dir_default(monkeypatch):
    monkeypatch.delenv("NTKPAPER_DATA", raising=False)
    assert data.data_dir() == Path.home() / ".cache" / "ntkpaper"


def test_unknown_name():
    assert "mnist" in data.DATASETS
    with pytest.raises(ValueError, match="cifar100"):
        data.load("imagenet")
    with pytest.raises(ValueError):
        data.prepare("svhn")
    assert data.prepare("digits") is None


MNIST_NAMES = [f for pair in data.MNIST_FILES.values() for f in pair]


def idx(magic: int, arr: np.ndarray) -> bytes:
    """The official IDX layout: big-endian magic, one big-endian uint32 per dimension, then
    the unsigned bytes in row-major order."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_gz(path: Path, payload: bytes, monkeypatch) -> None:
    """Gzip ``payload`` into ``path`` and make its MD5 the expected one."""
    path.write_bytes(gzip.compress(payload))
    monkeypatch.setitem(data.CHECKSUMS, path.name, hashlib.md5(path.read_bytes()).hexdigest())


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    """The four fake MNIST files (20 train, 10 test images of 28x28) in tmp_path."""
    x_train = RNG.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    x_test = RNG.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    x_train[0] = 0
    x_train[0, 3, 17] = 255  # a single bright pixel at (h=3, w=17): catches a transpose
    y_train = np.array([5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1, 7, 2, 8, 6, 9], np.uint8)
    y_test = np.array([7, 2, 1, 0, 4, 1, 4, 9, 5, 9], np.uint8)
    payloads = {
        "train-images-idx3-ubyte.gz": idx(2051, x_train),
        "train-labels-idx1-ubyte.gz": idx(2049, y_train),
        "t10k-images-idx3-ubyte.gz": idx(2051, x_test),
        "t10k-labels-idx1-ubyte.gz": idx(2049, y_test),
    }
    for name, payload in payloads.items():
        write_gz(tmp_path / name, payload, monkeypatch)
    return tmp_path, x_train[..., None], y_train, x_test[..., None], y_test


def test_mnist_round_trip(mnist):
    root, x_train, y_train, x_test, y_test = mnist
    npz = data.prepare("mnist", root)
    assert npz == root / "mnist.npz" and not list(root.glob("*.part"))
    with np.load(npz, allow_pickle=False) as f:  # the cache holds the pixels exactly
        assert f["x_train"].dtype == np.uint8 and f["x_train"].shape == (20, 28, 28, 1)
        np.testing.assert_array_equal(f["x_train"], x_train)
        np.testing.assert_array_equal(f["x_test"], x_test)
        np.testing.assert_array_equal(f["y_train"], y_train)
        np.testing.assert_array_equal(f["y_test"], y_test)
    ds = data.load("mnist", root)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.int32
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    img0 = np.asarray(ds.x_train[0])
    assert np.unravel_index(np.argmax(img0), img0.shape) == (3, 17, 0)
    exp_train, exp_test = expected_normalised(x_train, x_test)
    np.testing.assert_allclose(ds.x_train, exp_train, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, exp_test, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ds.x_train).mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ds.x_train).std(axis=(0, 1, 2)), 1, atol=1e-5)


def test_mnist_npz_cache(mnist, monkeypatch):
    root, *_ = mnist
    first = data.load("mnist", root)
    for name in MNIST_NAMES:  # the second load must not need the downloaded files
        (root / name).unlink()
    calls = np_load_calls(monkeypatch)
    second = data.load("mnist", root)
    assert calls and all(kw.get("allow_pickle") is False for kw in calls)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)


@pytest.mark.parametrize("mirror_down", [False, True])
def test_mnist_download_file_url(mnist, tmp_path, monkeypatch, mirror_down):
    """Absent files are fetched (real urlopen on file:// URLs) from the first mirror that
    answers, verified and converted."""
    src, _, y_train, _, y_test = mnist
    missing = (tmp_path / "no-such-mirror").as_uri() + "/"
    mirrors = ([missing] if mirror_down else []) + [src.as_uri() + "/"]
    monkeypatch.setattr(data, "MNIST_MIRRORS", tuple(mirrors))
    root = tmp_path / "fresh"
    ds = data.load("mnist", root)
    for name in MNIST_NAMES:
        assert (root / name).read_bytes() == (src / name).read_bytes()
    assert not list(root.glob("*.part"))
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)


def test_mnist_mirror_first(mnist, tmp_path, monkeypatch):
    src, *_ = mnist
    urls = []

    def fake_urlopen(url, *args, **kwargs):
        urls.append(url)
        return io.BytesIO((src / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    data.prepare("mnist", tmp_path / "fresh")
    assert urls == [f"https://ossci-datasets.s3.amazonaws.com/mnist/{n}" for n in MNIST_NAMES]


def test_mnist_wrong_checksum(mnist, monkeypatch):
    root, *_ = mnist
    monkeypatch.setitem(data.CHECKSUMS, "t10k-labels-idx1-ubyte.gz", "0" * 32)
    with pytest.raises(data.DatasetUnavailable) as e:
        data.load("mnist", root)
    msg = str(e.value)
    assert "md5" in msg and "0" * 32 in msg and "delete" in msg
    assert str(root / "t10k-labels-idx1-ubyte.gz") in msg
    assert not (root / "mnist.npz").exists()


def test_mnist_offline(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    store = tmp_path / "store"
    monkeypatch.setenv("NTKPAPER_DATA", str(store))
    with pytest.raises(data.DatasetUnavailable) as e:
        data.load("mnist")
    msg = str(e.value)
    assert "'mnist'" in msg and f"place them in {store} " in msg and "NTKPAPER_DATA" in msg
    assert all(name in msg for name in MNIST_NAMES)
    for base in (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ):
        assert base + "train-images-idx3-ubyte.gz" in msg  # both mirrors were tried
    assert not list(store.iterdir())  # nothing half-written


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_cache(request, dataset, damage):
    root, *_ = request.getfixturevalue(dataset)
    npz = data.prepare(dataset, root)
    good = npz.read_bytes()
    npz.write_bytes(
        {"truncated": good[: len(good) // 2], "garbage": b"x" * 100, "empty": b""}[damage]
    )
    with pytest.raises(data.DatasetUnavailable) as e:
        data.load(dataset, root)
    msg = str(e.value)
    assert repr(dataset) in msg and str(npz) in msg and "delete it" in msg
    npz.unlink()  # the recovery the message names
    data.load(dataset, root)
    assert npz.read_bytes() == good


def replace_payload(root: Path, name: str, edit, monkeypatch) -> None:
    payload = gzip.decompress((root / name).read_bytes())
    write_gz(root / name, edit(payload), monkeypatch)


MALFORMED = {
    "images-magic": (
        "train-images-idx3-ubyte.gz",
        lambda b: idx_magic(b, 2049),
        "magic number 2049",
    ),
    "labels-magic": (
        "t10k-labels-idx1-ubyte.gz",
        lambda b: idx_magic(b, 2051),
        "magic number 2051",
    ),
    "images-truncated": ("train-images-idx3-ubyte.gz", lambda b: b[:-5], "expected 15696"),
    "labels-truncated": ("train-labels-idx1-ubyte.gz", lambda b: b[:-1], "expected 28"),
    "labels-trailing": ("t10k-labels-idx1-ubyte.gz", lambda b: b + b"\0", "expected 18"),
    "header-cut": ("t10k-images-idx3-ubyte.gz", lambda b: b[:10], "header"),
    "dimensions": (
        "t10k-images-idx3-ubyte.gz",
        lambda b: b[:8] + (27).to_bytes(4, "big") + b[12:],
        "expected (n, 28, 28)",
    ),
    "count-mismatch": (
        "train-labels-idx1-ubyte.gz",
        lambda b: b[:4] + (19).to_bytes(4, "big") + b[8:-1],
        "20 images but",
    ),
    "label-range": ("t10k-labels-idx1-ubyte.gz", lambda b: b[:-1] + b"\x0a", "label 10"),
}


def idx_magic(payload: bytes, magic: int) -> bytes:
    return magic.to_bytes(4, "big") + payload[4:]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_mnist_malformed_idx(mnist, monkeypatch, case):
    root, *_ = mnist
    name, edit, reason = MALFORMED[case]
    replace_payload(root, name, edit, monkeypatch)
    with pytest.raises(data.DatasetUnavailable) as e:
        data.load("mnist", root)
    msg = str(e.value)
    assert str(root / name) in msg and reason in msg and "delete" in msg, msg
    assert not (root / "mnist.npz").exists()


def test_mnist_not_gzip(mnist, monkeypatch):
    root, *_ = mnist
    path = root / "train-labels-idx1-ubyte.gz"
    full = path.read_bytes()
    for bad in (gzip.decompress(full), full[:-9]):  # not gzipped at all; gzip stream cut short
        path.write_bytes(bad)
        monkeypatch.setitem(data.CHECKSUMS, path.name, hashlib.md5(bad).hexdigest())
        with pytest.raises(data.DatasetUnavailable) as e:
            data.prepare("mnist", root)
        assert str(path) in str(e.value) and "cannot decompress" in str(e.value)
    assert not (root / "mnist.npz").exists()


def test_digits():
    ds = data.load("digits")
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (
        data.DIGITS_TEST_SIZE,
        8,
        8,
        1,
    )
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    assert ds.num_classes == 10 and ds.y_train.dtype == jnp.int32
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert abs(float(ds.x_train.mean())) < 1e-4
    assert abs(float(ds.x_train.std()) - 1) < 1e-4


def tiny_batch(n=6, h=5, w=4, c=2):
    return jnp.asarray(RNG.normal(size=(n, h, w, c)).astype(np.float32) + 3.0)  # no zeros


def test_augment_flip_only():
    # padding 0: no crop; each image is itself or its exact mirror along the width, and
    # with this fixed key both occur (a no-op augmentation, or flipping all, would fail)
    x = tiny_batch(n=16)
    xs = np.asarray(x)
    assert not any(np.array_equal(xi, xi[:, ::-1]) for xi in xs)  # no image is symmetric
    y = np.asarray(data.augment(jax.random.PRNGKey(0), x, 0))
    assert y.shape == x.shape and y.dtype == xs.dtype
    flipped = []
    for xi, yi in zip(xs, y):
        same, mirrored = np.array_equal(yi, xi), np.array_equal(yi, xi[:, ::-1])
        assert same != mirrored, "output is neither the image nor its horizontal mirror"
        if mirrored:  # pixel by pixel: column j is column w - 1 - j, rows untouched
            w = xi.shape[1]
            assert all(np.array_equal(yi[:, j], xi[:, w - 1 - j]) for j in range(w))
        flipped.append(mirrored)
    assert 0 < sum(flipped) < len(flipped), flipped
    # the same key gives the same flips; another key gives other flips
    np.testing.assert_array_equal(np.asarray(data.augment(jax.random.PRNGKey(0), x, 0)), y)
    other = np.asarray(data.augment(jax.random.PRNGKey(1), x, 0))
    assert [np.array_equal(o, xi[:, ::-1]) for o, xi in zip(other, xs)] != flipped


def crop_flip(img: np.ndarray, dy: int, dx: int, h: int, w: int, flip: bool) -> np.ndarray:
    crop = img[dy : dy + h, dx : dx + w]
    return crop[:, ::-1] if flip else crop


def test_augment_crop_and_flip_under_jit():
    x = tiny_batch(n=8)
    p = 2
    _, h, w, _ = x.shape
    f = jax.jit(data.augment, static_argnums=2)
    seen = set()
    for seed in range(4):
        y = f(jax.random.PRNGKey(seed), x, p)
        assert y.shape == x.shape
        padded = np.pad(np.asarray(x), ((0, 0), (p, p), (p, p), (0, 0)))
        for xi, yi in zip(padded, np.asarray(y)):
            matches = [
                (dy, dx, flip)
                for dy in range(2 * p + 1)
                for dx in range(2 * p + 1)
                for flip in (False, True)
                if np.array_equal(yi, crop_flip(xi, dy, dx, h, w, flip))
            ]
            assert matches, "output is not a crop (or flipped crop) of the padded input"
            seen.update(matches)
    assert len(seen) > 4  # randomness: several offsets/flips occur
    assert any(fl for *_, fl in seen) and any(not fl for *_, fl in seen)
