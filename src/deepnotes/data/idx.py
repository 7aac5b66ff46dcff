"""Reader and writer for IDX files (the MNIST format) and a loader for a local MNIST folder.

An IDX file is a 4-byte magic number — two zero bytes, a dtype code, the number of dimensions
``ndim`` — then ``ndim`` big-endian uint32 sizes, then the array in C order, big-endian
(LeCun et al., "The MNIST database of handwritten digits"). Gzip-compressed files (recognised by
their own magic bytes, whatever the name) are read transparently; ``write_idx`` compresses when
the name ends in ``.gz``.

Nothing here touches the network: :func:`load_mnist` reads files the user placed in a folder.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

#: IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=").str: code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Standard MNIST file names per split (each may also carry a ``.gz`` suffix)."""


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: corrupt gzip stream ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-endian array.

    Parameters
    ----------
    path : str or PathLike
        The file; gzip compression is detected from its content.

    Returns
    -------
    np.ndarray
        Shape as stored in the header; dtype uint8, int8, int16, int32, float32 or float64.

    Raises
    ------
    ValueError
        Bad magic number, unknown dtype code, truncated header or data (the message gives the
        path and the expected vs actual byte counts), or trailing bytes after the data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX header: expected at least 4 bytes, got {len(raw)}")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number {raw[:4].hex()}: the first two bytes "
                         "must be zero (is this an IDX file?)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02X}; known codes: {known}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                         f"got {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header
    if actual < expected:
        raise ValueError(f"{path}: truncated IDX data: header says shape {shape} of {dtype.name} "
                         f"({expected} bytes) but only {actual} bytes follow")
    if actual > expected:
        raise ValueError(f"{path}: {actual - expected} unexpected trailing bytes after the IDX "
                         f"data (header says shape {shape}, {expected} bytes)")
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=header)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def write_idx(path: str | os.PathLike, array, *, overwrite: bool = False) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Parameters
    ----------
    path : str or PathLike
        Destination. An existing file is an error unless ``overwrite`` is True.
    array : array_like
        dtype uint8, int8, int16, int32, float32 or float64; at most 255 dimensions, each
        smaller than 2**32.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=").str
    if key not in _CODES:
        raise TypeError(f"IDX cannot store dtype {arr.dtype}; use one of uint8, int8, int16, "
                        "int32, float32, float64")
    if arr.ndim > 255 or any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"IDX cannot store shape {arr.shape}: at most 255 dimensions of size "
                         "< 2**32")
    code = _CODES[key]
    payload = (bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes())
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)  # mtime=0: identical arrays give identical files
    mode = "wb" if overwrite else "xb"
    try:
        with open(path, mode) as fh:
            fh.write(payload)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
    return path


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(root: str | os.PathLike, split: str = "train",
               normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST (or a same-format set such as Fashion-MNIST) from a local folder.

    Looks for the standard names in ``root``: ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte`` (split "train") or ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` (split "test"), each plain or with ``.gz`` (plain preferred).
    Never downloads anything.

    Parameters
    ----------
    root : str or PathLike
        Folder holding the files.
    split : {"train", "test"}
    normalize : bool
        Scale pixels to ``[0, 1]`` (divide by 255); otherwise keep ``0..255`` (still float32).

    Returns
    -------
    X : np.ndarray, float32, shape (n, rows, cols)
        (n, 28, 28) for MNIST.
    y : np.ndarray, int64, shape (n,)

    Raises
    ------
    FileNotFoundError
        A file is missing (the message names the folder and the expected file names).
    ValueError
        Bad split, malformed files (see :func:`read_idx`), wrong dtype or rank, or different
        numbers of images and labels.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {tuple(MNIST_FILES)}, got {split!r}")
    root = Path(root)
    names = MNIST_FILES[split]
    found = [_find(root, name) for name in names]
    if any(f is None for f in found):
        missing = [n for n, f in zip(names, found, strict=True) if f is None]
        raise FileNotFoundError(
            f"MNIST {split} split: missing {', '.join(missing)} (plain or .gz) in folder {root}; "
            f"expected files: {', '.join(names)}. deepnotes never downloads data: place the "
            "files there yourself")
    images_path, labels_path = found
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{images_path}: expected uint8 images of rank 3, got {images.dtype} "
                         f"with shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected uint8 labels of rank 1, got {labels.dtype} "
                         f"with shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"count mismatch: {images_path} holds {len(images)} images but "
                         f"{labels_path} holds {len(labels)} labels")
    X = images.astype(np.float32)
    if normalize:
        X /= np.float32(255.0)
    return X, labels.astype(np.int64)
