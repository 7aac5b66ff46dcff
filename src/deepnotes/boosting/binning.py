"""Quantile binning of features for the histogram method (``tree_method='hist'``).

Every feature ``j`` gets sorted, finite bin edges ``e_0 < e_1 < ... < e_{m-2}`` (``m <= max_bin``)
and a value ``x`` falls in bin ``b(x) = #{k : e_k < x}``; so ``x <= e_b`` exactly when
``b(x) <= b``, which lets the trees store the raw threshold ``e_b`` and predict on unbinned data
with the same routing as training. NaN (missing) goes to its own bin, the same index for every
feature, ``missing_bin = 1 + max_j n_edges[j]`` (``max_bin`` when some feature fills all its
bins); the split finder sends it to a learned default side (Eq. 5 of the post). Placing it right
after the largest bin in use sizes the histograms by the data, not by ``max_bin``: digits' 17 grey
levels need 18 bins per feature instead of 257.

Edges are midpoints between consecutive distinct values. When a feature has at most ``max_bin``
distinct values every value gets its own bin (the histogram split search is then exact); otherwise
the edges sit at the (sample-)weighted quantiles ``k / max_bin``, ``k = 1..max_bin-1``.

What xgboost does: ``hist`` sketches weighted quantiles of the whole column (weights = sample
weights, not hessians; only its ``approx`` method re-sketches with hessian weights each
iteration). What we do: exact weighted quantiles of the column, or of a uniform random subsample
of ``subsample`` rows when the data are larger (a deviation that only moves edges by a quantile
sampling error of order ``1/sqrt(subsample)``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from deepnotes.boosting.histogram import PARALLEL_MIN_ROWS


def bin_dtype(max_bin: int, has_missing: bool = True) -> type:
    """Smallest unsigned dtype holding bins ``0..max_bin`` (``max_bin`` being the missing bin), or
    ``0..max_bin - 1`` when the data have no missing value (then ``max_bin = 256`` fits a byte,
    which halves the memory the histogram kernels stream)."""
    if max_bin < 2:
        raise ValueError(f"max_bin must be >= 2, got {max_bin}")
    if max_bin <= (255 if has_missing else 256):
        return np.uint8
    if max_bin <= 65535:
        return np.uint16
    return np.uint32


@njit(cache=True, inline="always")
def _feature_edges(X, w, unit_weights, max_bin, edges, n_edges, j):  # pragma: no cover - numba
    col = X[:, j]
    # zero-weight rows take no part: fitting with weight 0 equals dropping the row
    keep = ~np.isnan(col) & (w > 0)
    v = col[keep]
    if unit_weights:
        # Same cumulative weights as below (1, 2, ..., m), without carrying the weights
        # through the sort: a plain sort is several times faster than a stable argsort.
        v = np.sort(v)
        m = v.shape[0]
        cum = np.arange(1, m + 1).astype(np.float64)
    else:
        wv = w[keep]
        order = np.argsort(v, kind="mergesort")
        v = v[order]
        m = v.shape[0]
        cum = np.cumsum(wv[order])
    n_distinct = 0
    for i in range(m):
        if i == 0 or v[i] != v[i - 1]:
            n_distinct += 1
    k = 0
    if n_distinct <= max_bin:
        for i in range(1, m):
            if v[i] != v[i - 1]:
                edges[j, k] = v[i - 1] + (v[i] - v[i - 1]) * 0.5
                k += 1
    elif m > 0:
        total = cum[m - 1]
        for q in range(1, max_bin):
            i = np.searchsorted(cum, total * q / max_bin, side="left")
            if i >= m:
                i = m - 1
            nxt = np.searchsorted(v, v[i], side="right")
            if nxt >= m:
                continue
            e = v[i] + (v[nxt] - v[i]) * 0.5
            if k == 0 or e > edges[j, k - 1]:
                edges[j, k] = e
                k += 1
    n_edges[j] = k


@njit(parallel=True, cache=True)
def _find_edges_parallel(X, w, unit_weights, max_bin, edges, n_edges):  # pragma: no cover
    for j in prange(X.shape[1]):
        _feature_edges(X, w, unit_weights, max_bin, edges, n_edges, j)


@njit(cache=True)
def _find_edges_serial(X, w, unit_weights, max_bin, edges, n_edges):  # pragma: no cover
    for j in range(X.shape[1]):
        _feature_edges(X, w, unit_weights, max_bin, edges, n_edges, j)


@njit(cache=True, inline="always")
def _count_nan(X, lo, hi):  # pragma: no cover - numba
    found = 0
    for i in range(lo, hi):
        for j in range(X.shape[1]):
            found += X[i, j] != X[i, j]
    return found


@njit(parallel=True, cache=True)
def _has_nan_parallel(X):  # pragma: no cover - numba
    found = 0
    for i in prange(X.shape[0]):
        found += _count_nan(X, i, i + 1)
    return found > 0


@njit(cache=True)
def _has_nan_serial(X):  # pragma: no cover - numba
    return _count_nan(X, 0, X.shape[0]) > 0


@njit(cache=True, nogil=True, inline="always")
def count_below(edges, n, x):  # pragma: no cover - numba
    """``#{k < n : edges[k] < x}`` for sorted ``edges[:n]`` (binary search; any ``n``)."""
    a = 0
    b = n
    while a < b:
        mid = (a + b) >> 1
        if edges[mid] < x:
            a = mid + 1
        else:
            b = mid
    return a


@njit(cache=True, nogil=True, inline="always")
def count_below_256(table, x):  # pragma: no cover - numba
    """``#{k : table[k] < x}`` for a sorted ``table`` of exactly 256 entries (edges padded with
    +inf), in eight probes that compile to conditional moves.

    A branching binary search mispredicts about half its branches (data-dependent), which made
    it the cost of binning; a fixed probe sequence has no branch to mispredict."""
    a = 0
    a += 128 if table[a + 127] < x else 0
    a += 64 if table[a + 63] < x else 0
    a += 32 if table[a + 31] < x else 0
    a += 16 if table[a + 15] < x else 0
    a += 8 if table[a + 7] < x else 0
    a += 4 if table[a + 3] < x else 0
    a += 2 if table[a + 1] < x else 0
    a += 1 if table[a] < x else 0
    return a


@njit(cache=True, inline="always")
def _map_chunk(X, edges, n_edges, missing_bin, out, lo, hi):  # pragma: no cover - numba
    # a feature at a time within the chunk: its edges stay in L1
    fixed = edges.shape[1] == 256
    for j in range(X.shape[1]):
        e = edges[j]
        for i in range(lo, hi):
            x = X[i, j]
            b = count_below_256(e, x) if fixed else count_below(e, n_edges[j], x)
            out[i, j] = missing_bin if x != x else b


@njit(parallel=True, cache=True)
def _map_to_bins_parallel(X, edges, n_edges, missing_bin, out):  # pragma: no cover - numba
    # out: row-major; rows in chunks
    n = X.shape[0]
    n_chunks = min(n, 512)
    chunk = (n + n_chunks - 1) // max(n_chunks, 1)
    for c in prange(n_chunks):
        _map_chunk(X, edges, n_edges, missing_bin, out, c * chunk, min(n, (c + 1) * chunk))


@njit(cache=True)
def _map_to_bins_serial(X, edges, n_edges, missing_bin, out):  # pragma: no cover - numba
    _map_chunk(X, edges, n_edges, missing_bin, out, 0, X.shape[0])


def _kernel(parallel, serial, n_rows: int):
    """The parallel twin for large inputs; below ``PARALLEL_MIN_ROWS`` rows the serial one (a
    parallel region's start, or waiting for a busy core, costs more than such inputs take)."""
    return parallel if n_rows >= PARALLEL_MIN_ROWS else serial


class BinMapper:
    """Learns per-feature bin edges and maps raw features to bin indices.

    Parameters
    ----------
    max_bin : int
        Maximum number of bins for non-missing values per feature (xgboost's ``max_bin``); bin
        :attr:`missing_bin` holds the missing values.
    subsample : int or None
        Rows used to find the edges (uniform subsample when the data are larger); None uses all.
    random_state : numpy.random.Generator or None
        Draws the subsample.

    Attributes
    ----------
    edges_ : ndarray, shape (n_features, max_bin - 1)
        Edges per feature, padded with +inf after ``n_edges_[j]``.
    n_edges_ : ndarray of int64, shape (n_features,)
        Number of edges per feature; feature ``j`` uses bins ``0..n_edges_[j]`` and
        :attr:`missing_bin`.
    categories_ : list of (ndarray or None), length n_features
        For a categorical feature (``fit(..., categorical=mask)``), its sorted category codes:
        bin ``c`` holds code ``categories_[j][c]`` (its edges are the midpoints between
        consecutive codes, so the same binning kernel maps codes to bins); None otherwise.
    """

    def __init__(self, max_bin: int = 256, subsample: int | None = 200_000, random_state=None):
        self.max_bin = int(max_bin)
        if self.max_bin < 2:
            raise ValueError(f"max_bin must be >= 2, got {self.max_bin}")
        self.subsample = subsample
        self.random_state = random_state

    @property
    def missing_bin(self) -> int:
        """Bin index of NaN for every feature: one past the largest bin any feature uses."""
        return int(self.n_edges_.max()) + 1 if self.n_edges_.shape[0] else 1

    def fit(self, X: np.ndarray, sample_weight: np.ndarray | None = None,
            categorical: np.ndarray | None = None) -> BinMapper:
        """Find the edges. ``X``: float64, shape (n, n_features), NaN = missing.

        ``categorical``: optional bool mask, shape (n_features,); those columns hold integer
        category codes (checked by the estimator) and get one bin per code seen in the rows of
        positive weight (all rows, not the subsample); more than ``max_bin`` codes is an error.
        """
        X = np.asarray(X, dtype=np.float64)
        n = X.shape[0]
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.categories_ = [None] * X.shape[1]
        if categorical is not None:
            for j in np.flatnonzero(categorical):
                col = X[:, j]
                codes = np.unique(col[~np.isnan(col) & (w > 0)])
                if codes.shape[0] > self.max_bin:
                    raise ValueError(f"categorical feature {j} has {codes.shape[0]} categories, "
                                     f"more than max_bin={self.max_bin}: raise max_bin")
                self.categories_[j] = codes.astype(np.int64)
        if self.subsample is not None and n > self.subsample:
            rng = self.random_state if self.random_state is not None else np.random.default_rng(0)
            rows = np.sort(rng.choice(n, size=self.subsample, replace=False))
            X, w = X[rows], w[rows]
        self.edges_ = np.full((X.shape[1], max(self.max_bin - 1, 1)), np.inf)
        self.n_edges_ = np.zeros(X.shape[1], dtype=np.int64)
        find_edges = _kernel(_find_edges_parallel, _find_edges_serial, X.shape[0])
        find_edges(np.ascontiguousarray(X), np.ascontiguousarray(w), bool(np.all(w == 1.0)),
                   self.max_bin, self.edges_, self.n_edges_)
        for j, codes in enumerate(self.categories_):
            if codes is not None:
                k = max(codes.shape[0] - 1, 0)
                self.edges_[j] = np.inf
                self.edges_[j, :k] = 0.5 * (codes[:-1] + codes[1:])
                self.n_edges_[j] = k
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Bin indices, shape (n, n_features), Fortran order (one contiguous column per feature,
        which is how the root histogram and the partition read them)."""
        return np.asfortranarray(self.transform_row_major(X))

    def transform_row_major(self, X: np.ndarray) -> np.ndarray:
        """Bin indices, shape (n, n_features), C order (one contiguous row per sample, which is
        how the histogram kernel below the root gathers them); dtype ``bin_dtype(max_bin,
        has_missing)`` for whether ``X`` has a NaN."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        dtype = bin_dtype(max(self.missing_bin, 2), has_missing=_kernel(
            _has_nan_parallel, _has_nan_serial, X.shape[0])(X))
        out = np.empty(X.shape, dtype=dtype)
        edges = self.edges_
        if edges.shape[1] < 256:  # pad to the fixed-size table of the branch-free search
            edges = np.full((edges.shape[0], 256), np.inf)
            edges[:, :self.edges_.shape[1]] = self.edges_
        _kernel(_map_to_bins_parallel, _map_to_bins_serial, X.shape[0])(
            X, edges, self.n_edges_, self.missing_bin, out)
        return out

    def threshold(self, feature: int, bin_index: int) -> float:
        """Raw threshold of the split ``bin <= bin_index``: go left when ``x <= threshold``."""
        return float(self.edges_[feature, bin_index])
