"""Tests for deepnotes.data.idx: IDX round trips, corrupt files, and a tiny fake MNIST folder."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from deepnotes.data import load_mnist, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(tmp_path, dtype, suffix):
    gen = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        arr = gen.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    else:
        arr = gen.standard_normal((3, 4, 5)).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_known_bytes_big_endian(tmp_path):
    """The header and data layout of the IDX spec, written by hand."""
    raw = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 1]) + b"\x01\x02\xff\xfe"
    (tmp_path / "h.idx").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "h.idx"), [[0x0102], [-2]])
    write_idx(tmp_path / "w.idx", np.array([[0x0102], [-2]], dtype=np.int16))
    assert (tmp_path / "w.idx").read_bytes() == raw


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    write_idx(tmp_path / "a.gz", arr)
    (tmp_path / "renamed").write_bytes((tmp_path / "a.gz").read_bytes())
    assert (tmp_path / "renamed").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(tmp_path / "renamed"), arr)


def test_refuses_to_overwrite(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.zeros(3, np.uint8))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_idx(path, np.ones(3, np.uint8))
    np.testing.assert_array_equal(read_idx(path), 0)  # untouched
    write_idx(path, np.ones(3, np.uint8), overwrite=True)
    np.testing.assert_array_equal(read_idx(path), 1)


def test_unsupported_dtype_raises(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "a.idx", np.zeros(3, np.int64))


@pytest.mark.parametrize("raw, match", [
    (b"\x00\x00", "truncated IDX header"),
    (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "bad IDX magic"),
    (bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]), "unknown IDX dtype code 0x0A"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 1]), "3 dimensions need 16 bytes, got 8"),
    (bytes([0, 0, 0x0C, 1, 0, 0, 0, 3]) + bytes(10), r"\(12 bytes\) but only 10 bytes follow"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]), "1 unexpected trailing bytes"),
])
def test_corrupt_files_raise(tmp_path, raw, match):
    path = tmp_path / "bad.idx"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_file(tmp_path):
    path = write_idx(tmp_path / "a.idx.gz", np.arange(1000, dtype=np.int32))
    raw = path.read_bytes()
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(tmp_path / "cut.gz")
    # a valid gzip stream of a truncated IDX payload reports the byte counts
    payload = gzip.decompress(raw)[:-8]
    (tmp_path / "short.gz").write_bytes(gzip.compress(payload))
    with pytest.raises(ValueError, match="4000 bytes.*only 3992 bytes"):
        read_idx(tmp_path / "short.gz")


def _fake_mnist(root, split="train", n=7, n_labels=None, gz=False):
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    gen = np.random.default_rng(1)
    images = gen.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = gen.integers(0, 10, size=n_labels or n, dtype=np.uint8)
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_fake_folder(tmp_path, split, gz):
    images, labels = _fake_mnist(tmp_path, split, gz=gz)
    X, y = load_mnist(tmp_path, split)
    assert X.shape == (7, 28, 28) and X.dtype == np.float32
    assert y.shape == (7,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(X, images.astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)
    raw, _ = load_mnist(tmp_path, split, normalize=False)
    np.testing.assert_array_equal(raw, images.astype(np.float32))


def test_load_mnist_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, "test")
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert str(tmp_path) in msg
    _fake_mnist(tmp_path, "train")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing train-labels-idx1-ubyte"):
        load_mnist(tmp_path, "train")


def test_load_mnist_count_mismatch(tmp_path):
    _fake_mnist(tmp_path, n=7, n_labels=6)
    with pytest.raises(ValueError, match="7 images but .* 6 labels"):
        load_mnist(tmp_path)


def test_load_mnist_wrong_rank_and_split(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 784), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="rank 3"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "valid")
