"""Text every machine has offline: the Python standard library's own source files.

The corpus is the ``.py`` files under ``sysconfig.get_paths()["stdlib"]`` (the running
interpreter's standard library), without ``site-packages``/``dist-packages`` (installed third-party
code differs between machines) and without test suites (``test``/``tests``/``idle_test``
folders: half the bytes, and full of deliberately odd files). Nothing is downloaded.

Selection and split are deterministic functions of each file's path relative to the library root:

- **split**: a file goes to ``"val"`` when ``crc32(relpath) % 100 < 100 * val_fraction``,
  otherwise to ``"train"``; whole files, so no function is split between train and validation;
- **order**: files are concatenated in order of ``(crc32(relpath), relpath)``, a fixed shuffle
  that mixes packages, so a byte budget (``max_bytes``) takes a cross-section of the library
  instead of its alphabetically first packages.

The same interpreter version gives the same bytes on every machine; another version gives a
similar but not identical corpus (the loader reports which files it used through
:func:`stdlib_source_files`).
"""

from __future__ import annotations

import os
import sysconfig
import zlib
from pathlib import Path

import numpy as np

SPLITS = ("train", "val")
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests",
                           "idle_test"})
"""Folder names whose files never enter the corpus."""

SEPARATOR = b"\n\n"
"""Bytes placed between two concatenated files."""


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def _key(rel: str) -> int:
    return zlib.crc32(rel.encode("utf-8"))


def stdlib_source_files(split: str = "train", *, val_fraction: float = 0.05,
                        root: str | Path | None = None) -> list[Path]:
    """The corpus files of ``split``, in corpus order.

    Parameters
    ----------
    split : {"train", "val"}
    val_fraction : float in (0, 1)
        Fraction (in hundredths, by path hash) of files held out for validation.
    root : path, optional
        Library folder to read (default: :func:`stdlib_root`); tests pass a small folder.

    Returns
    -------
    list of Path, ordered by ``(crc32(relpath), relpath)``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    base = Path(root) if root is not None else stdlib_root()
    if not base.is_dir():
        raise ValueError(f"root {str(base)!r} is not a folder")
    cut = round(100 * val_fraction)
    chosen = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]  # prune: never walk site-packages
        for name in files:
            if not name.endswith(".py"):
                continue
            path = Path(folder) / name
            rel = path.relative_to(base).as_posix()
            key = _key(rel)
            if (key % 100 < cut) == (split == "val"):
                chosen.append((key, rel, path))
    chosen.sort()
    return [p for _, _, p in chosen]


def load_stdlib_text(split: str = "train", *, max_bytes: int | None = None,
                     val_fraction: float = 0.05, root: str | Path | None = None) -> np.ndarray:
    """The corpus of ``split`` as one byte array (files joined by :data:`SEPARATOR`).

    Parameters
    ----------
    split : {"train", "val"}
    max_bytes : int, optional
        Stop after this many bytes (the last file is cut); ``None`` reads every file.
    val_fraction, root
        As in :func:`stdlib_source_files`.

    Returns
    -------
    ndarray of uint8, shape (N,), ``N <= max_bytes``: token ids of a byte-level tokeniser.
    """
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
        raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
    parts, total = [], 0
    for path in stdlib_source_files(split, val_fraction=val_fraction, root=root):
        data = path.read_bytes() + SEPARATOR
        parts.append(data)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    if not parts:
        raise ValueError(f"no source files for split {split!r} under {root or stdlib_root()}")
    blob = b"".join(parts)
    if max_bytes is not None:
        blob = blob[:max_bytes]
    return np.frombuffer(blob, dtype=np.uint8).copy()
