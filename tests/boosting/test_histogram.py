"""deepnotes.boosting.histogram: kernels equal the numpy reference; subtraction equals a rebuild."""

import numpy as np
import pytest

from deepnotes.boosting.histogram import (
    build_histogram,
    build_histogram_root,
    build_histograms,
    build_level,
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
    build_histogram(np.ascontiguousarray(Xb), rows, g, h, feats, hist)
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
    build_histogram(np.ascontiguousarray(Xb), left, g, h, feats, small)
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


def test_level_histograms_match_reference_and_subtract_from_parents():
    from deepnotes.boosting.histogram import CHUNK_ROWS

    Xb, g, h = _data(n=3 * CHUNK_ROWS, f=6, n_bins=17)
    Xr = np.ascontiguousarray(Xb)
    rng = np.random.default_rng(2)
    feats = np.array([0, 2, 3, 5], dtype=np.int64)
    # three nodes: one spanning several chunks (private histograms, summed), one small (written
    # directly), one empty
    sizes = [2 * CHUNK_ROWS + 5, 777, 0]
    picked = rng.permutation(Xb.shape[0])[:sum(sizes)]
    stops = np.cumsum(sizes).astype(np.int64)
    starts = stops - np.array(sizes, dtype=np.int64)
    rows = np.concatenate([np.sort(picked[a:b]) for a, b in zip(starts, stops, strict=True)])
    rows = rows.astype(np.int32)
    out = np.full((3, 6, 17, 2), 5.0)
    build_histograms(Xr, rows, starts, stops, g, h, feats, out)
    refs = [histogram_reference(Xb, rows[starts[s]:stops[s]], g, h, 17) for s in range(3)]
    for s in range(3):
        np.testing.assert_allclose(out[s, feats], refs[s][feats], rtol=1e-10, atol=1e-10)
        assert np.all(out[s, [1, 4]] == 5.0)  # features not asked for are left alone
    # build_level: parents picked by index; children[s] = (smaller child, parent - smaller)
    parents = rng.normal(size=(4, 6, 17, 2)) * 100
    parent_index = np.array([3, 0, 3])
    children = np.empty((3, 2, 6, 17, 2))
    build_level(Xr, rows, starts, stops, g, h, feats, parents, parent_index, children)
    for s in range(3):
        np.testing.assert_allclose(children[s, 0, feats], refs[s][feats], rtol=1e-10,
                                   atol=1e-10)
        np.testing.assert_allclose(children[s, 1, feats],
                                   parents[parent_index[s], feats] - refs[s][feats],
                                   rtol=1e-9, atol=1e-9)


def test_histograms_do_not_depend_on_the_thread_count():
    import numba

    most = numba.config.NUMBA_NUM_THREADS
    if most < 2:  # one thread only: there is nothing to compare against
        pytest.skip("numba runs with a single thread here")
    Xb, g, h = _data(n=60000)
    Xr = np.ascontiguousarray(Xb)
    rows = np.sort(np.random.default_rng(4).choice(60000, 50000, replace=False)).astype(np.int32)
    feats = np.arange(5, dtype=np.int64)
    starts, stops = np.array([0], dtype=np.int64), np.array([50000], dtype=np.int64)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, most):
            numba.set_num_threads(threads)
            out = np.zeros((1, 5, 17, 2))
            build_histograms(Xr, rows, starts, stops, g, h, feats, out)
            root = np.zeros((5, 17, 2))
            build_histogram_root(Xb, g, h, feats, root)
            results.append((out, root))
    finally:
        numba.set_num_threads(before)
    for out, root in results[1:]:
        assert np.array_equal(out, results[0][0]) and np.array_equal(root, results[0][1])


def test_row_kernel_refuses_a_column_major_matrix_or_output():
    Xb, g, h = _data(n=100)
    rows, feats = np.arange(100, dtype=np.int32), np.arange(5, dtype=np.int64)
    with pytest.raises(ValueError, match="row-major"):
        build_histogram(Xb, rows, g, h, feats, np.empty((5, 17, 2)))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        build_histogram(np.ascontiguousarray(Xb), rows, g, h, feats,
                        np.empty((5, 17, 2), order="F"))


@pytest.mark.parametrize("big", [True, False])  # chunked parallel kernel, one-thread kernel
def test_level_partition_is_stable_across_chunks_and_nodes(big):
    from deepnotes.boosting.grower import partition_level
    from deepnotes.boosting.histogram import CHUNK_ROWS

    rng = np.random.default_rng(7)
    n = 3 * CHUNK_ROWS
    X = np.asfortranarray(rng.integers(0, 11, size=(n, 3)).astype(np.uint16))  # 10 = missing
    sizes = np.array([2 * CHUNK_ROWS + 11 if big else 3000, 5, 0, 1000])
    picked = rng.permutation(n)[:sizes.sum()]
    stops = np.cumsum(sizes).astype(np.int64)
    starts = stops - sizes
    rows = np.concatenate([np.sort(picked[a:b]) for a, b in zip(starts, stops, strict=True)])
    rows = rows.astype(np.int32)
    feats = np.array([0, 2, 1, 2], dtype=np.int64)
    thresholds = np.array([4, 0, 3, 9], dtype=np.int64)
    default_left = np.array([True, False, True, False])
    out, n_left = rows.copy(), np.empty(4, dtype=np.int64)
    partition_level(out, starts, stops, X, feats, thresholds, 10, default_left,
                    np.empty_like(rows), n_left)
    for s in range(4):
        seg = rows[starts[s]:stops[s]]
        b = X[seg, feats[s]]
        left = np.where(b == 10, default_left[s], b <= thresholds[s])
        assert n_left[s] == left.sum()
        np.testing.assert_array_equal(out[starts[s]:stops[s]],
                                      np.concatenate([seg[left], seg[~left]]))
