"""Tests for deepnotes.data.text: the stdlib corpus is deterministic, split by file, and bounded."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from deepnotes.data.text import SEPARATOR, load_stdlib_text, stdlib_root, stdlib_source_files


@pytest.fixture
def fake_lib(tmp_path):
    """A library folder with 40 modules, a package, and folders that must be skipped."""
    for i in range(40):
        (tmp_path / f"mod{i}.py").write_text(f"x = {i}\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("y = 1\n")
    for skipped in ("site-packages", "test", "__pycache__"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "skip.py").write_text("SKIPPED\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    return tmp_path


def test_split_is_by_file_hash_and_disjoint(fake_lib):
    train = stdlib_source_files("train", root=fake_lib, val_fraction=0.2)
    val = stdlib_source_files("val", root=fake_lib, val_fraction=0.2)
    rel = {p.relative_to(fake_lib).as_posix() for p in train + val}
    assert len(train) + len(val) == 41 and len(rel) == 41  # disjoint and complete
    assert "pkg/__init__.py" in rel and not any("skip" in r for r in rel)
    for p in val:
        assert zlib.crc32(p.relative_to(fake_lib).as_posix().encode()) % 100 < 20
    # corpus order: by hash of the relative path
    keys = [zlib.crc32(p.relative_to(fake_lib).as_posix().encode()) for p in train]
    assert keys == sorted(keys)


def test_text_is_the_files_joined_and_cut(fake_lib):
    files = stdlib_source_files("train", root=fake_lib)
    full = load_stdlib_text("train", root=fake_lib)
    expected = b"".join(p.read_bytes() + SEPARATOR for p in files)
    assert full.dtype == np.uint8 and full.tobytes() == expected
    cut = load_stdlib_text("train", root=fake_lib, max_bytes=25)
    assert cut.tobytes() == expected[:25]
    assert np.array_equal(load_stdlib_text("train", root=fake_lib), full)  # deterministic


def test_real_stdlib_has_text():
    assert stdlib_root().is_dir()
    text = load_stdlib_text("val", max_bytes=20_000)
    assert len(text) == 20_000 and b"def " in text.tobytes()
    assert not set(stdlib_source_files("val")) & set(stdlib_source_files("train"))


@pytest.mark.parametrize("kwargs", [{"split": "test"}, {"val_fraction": 0.0},
                                    {"max_bytes": 0}, {"max_bytes": 1.5}])
def test_bad_arguments_raise(fake_lib, kwargs):
    with pytest.raises(ValueError):
        load_stdlib_text(root=fake_lib, **kwargs)


def test_missing_root_raises(tmp_path):
    with pytest.raises(ValueError, match="root"):
        stdlib_source_files(root=tmp_path / "nope")
