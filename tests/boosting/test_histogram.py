"""deepnotes.boosting.histogram: kernels equal the numpy reference; subtraction equals a rebuild."""

import numpy as np
import pytest

from deepnotes.boosting.histogram import (
    build_histogram,
    build_histogram_root,
    histogram_reference,
    subtract_histogram,
)


def _data(n=40000, f=5, n_bins=17, seed=0):
    rng = np.random.default_rng(seed)
    Xb = np.asfortranarray(rng.integers(0, n_bins, size=(n, f)).astype(np.uint8))
    g = rng.normal(size=n).astype(np.float32)
    h = rng.random(n).astype(np.float32)
    return Xb, g, h


@pytest.mark.parametrize("n_rows", [1200, 30000])  # serial and prange-over-features kernels
def test_kernels_match_reference(n_rows):
    Xb, g, h = _data()
    feats = np.arange(5, dtype=np.int64)
    rows = np.sort(np.random.default_rng(1).choice(40000, n_rows, replace=False)).astype(np.int32)
    hist = np.empty((5, 17, 2))
    build_histogram(Xb, rows, g, h, feats, hist)
    # float64 sums of float32 inputs in a different order: agree to ~1e-12 relative
    np.testing.assert_allclose(hist, histogram_reference(Xb, rows, g, h, 17), rtol=1e-10,
                               atol=1e-10)
    build_histogram_root(Xb, g, h, feats, hist)
    np.testing.assert_allclose(hist, histogram_reference(Xb, np.arange(40000), g, h, 17),
                               rtol=1e-10, atol=1e-10)


def test_only_requested_features_are_written_and_subtraction_gives_sibling():
    Xb, g, h = _data()
    feats = np.array([1, 3], dtype=np.int64)
    left = np.arange(0, 40000, 3, dtype=np.int32)
    right = np.setdiff1d(np.arange(40000), left).astype(np.int32)
    parent = np.full((5, 17, 2), 7.0)
    build_histogram_root(Xb, g, h, feats, parent)
    assert np.all(parent[[0, 2, 4]] == 7.0)
    small = np.empty_like(parent)
    build_histogram(Xb, left, g, h, feats, small)
    subtract_histogram(parent, small, feats, parent)
    ref = histogram_reference(Xb, right, g, h, 17)
    np.testing.assert_allclose(parent[feats], ref[feats], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", [1000, 200_000])  # serial and chunked-parallel paths
def test_partition_is_stable_and_matches_numpy(n):
    from deepnotes.boosting.grower import partition_rows

    rng = np.random.default_rng(3)
    col = rng.integers(0, 11, size=n + 50).astype(np.uint8)  # bin 10 = missing
    rows = np.sort(rng.choice(n + 50, n, replace=False)).astype(np.int32)
    for default_left in (False, True):
        r = rows.copy()
        nl = partition_rows(r, 7, n - 3, col, 4, 10, default_left, np.empty(n, np.int32))
        seg = rows[7:n - 3]
        left = np.where(col[seg] == 10, default_left, col[seg] <= 4)
        assert nl == left.sum()
        np.testing.assert_array_equal(r[7:n - 3], np.concatenate([seg[left], seg[~left]]))
        np.testing.assert_array_equal(r[:7], rows[:7])
