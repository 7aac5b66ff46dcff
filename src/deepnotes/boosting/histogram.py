"""Gradient histograms per node: building, and the subtraction trick.

A node's histogram holds, for every feature ``j`` and bin ``b``, the sums of gradients and
hessians of the node's rows whose feature ``j`` falls in bin ``b``: ``hist[j, b] = (G_jb, H_jb)``
(Eq. 8 of the post). Split search then needs only prefix sums over bins.

Histogram subtraction: the rows of a parent are the disjoint union of its children's rows, so
``hist(parent) = hist(left) + hist(right)``. The grower builds the histogram of the child with
fewer rows and gets its sibling as ``hist(parent) - hist(smaller)``, at the cost of one pass over
``n_features * n_bins`` cells instead of over the larger child's rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Nodes with fewer rows are built on one thread: a parallel region's start-up (and, on a busy
#: machine, waiting for a descheduled worker) costs more than these rows take.
PARALLEL_MIN_ROWS = 20_000


@njit(cache=True, nogil=True, inline="always")
def _one_feature(col, rows, g, h, hj):  # pragma: no cover - numba
    for b in range(hj.shape[0]):
        hj[b, 0] = 0.0
        hj[b, 1] = 0.0
    for i in range(rows.shape[0]):
        b = col[rows[i]]
        hj[b, 0] += g[i]
        hj[b, 1] += h[i]


@njit(cache=True, nogil=True)
def _gather(rows, grad, hess):  # pragma: no cover - numba
    # The node's gradients once, contiguous, instead of once per feature.
    m = rows.shape[0]
    g = np.empty(m, dtype=np.float64)
    h = np.empty(m, dtype=np.float64)
    for i in range(m):
        r = rows[i]
        g[i] = grad[r]
        h[i] = hess[r]
    return g, h


@njit(parallel=True, cache=True, nogil=True)
def _build_parallel(X_binned, rows, grad, hess, features, hist):  # pragma: no cover - numba
    g, h = _gather(rows, grad, hess)
    for k in prange(features.shape[0]):
        j = features[k]
        _one_feature(X_binned[:, j], rows, g, h, hist[j])


@njit(cache=True, nogil=True)
def _build_serial(X_binned, rows, grad, hess, features, hist):  # pragma: no cover - numba
    g, h = _gather(rows, grad, hess)
    for k in range(features.shape[0]):
        j = features[k]
        _one_feature(X_binned[:, j], rows, g, h, hist[j])


def build_histogram(X_binned, rows, grad, hess, features, hist) -> None:
    """Fill ``hist[j]`` for ``j`` in ``features`` from the rows ``rows`` (in place).

    Parameters
    ----------
    X_binned : ndarray of uint, shape (n_samples, n_features), Fortran order
    rows : ndarray of int32, shape (m,)    the node's rows, ascending (cache-friendly gathers)
    grad, hess : ndarray of float32, shape (n_samples,)
    features : ndarray of int64, shape (k,)  the features to build (column subsampling per tree)
    hist : ndarray of float64, shape (n_features, n_bins, 2)   output; other features untouched

    One thread per feature (column-wise, ``prange`` over features): each feature's sums are
    formed in row order by one thread, so the result does not depend on the thread count. (A
    row-wise variant with per-thread partial histograms measured no faster on 2 cores.)
    """
    kernel = _build_parallel if rows.shape[0] >= PARALLEL_MIN_ROWS else _build_serial
    kernel(X_binned, rows, grad, hess, features, hist)


def build_histogram_root(X_binned, grad, hess, features, hist) -> None:
    """:func:`build_histogram` over all rows."""
    build_histogram(X_binned, np.arange(X_binned.shape[0], dtype=np.int32), grad, hess,
                    features, hist)


@njit(cache=True, nogil=True, inline="always")
def _level_task(X_binned, rows, starts, stops, grad, hess, features, small, parent,
                t):  # pragma: no cover - numba
    nf = features.shape[0]
    s = t // nf
    j = features[t % nf]
    hj = small[s, j]
    for b in range(hj.shape[0]):
        hj[b, 0] = 0.0
        hj[b, 1] = 0.0
    col = X_binned[:, j]
    for i in range(starts[s], stops[s]):
        r = rows[i]
        b = col[r]
        hj[b, 0] += grad[r]
        hj[b, 1] += hess[r]
    pj = parent[s, j]
    for b in range(hj.shape[0]):
        pj[b, 0] -= hj[b, 0]
        pj[b, 1] -= hj[b, 1]


@njit(parallel=True, cache=True, nogil=True)
def _build_level_parallel(X_binned, rows, starts, stops, grad, hess, features, small,
                          parent):  # pragma: no cover - numba
    for t in prange(starts.shape[0] * features.shape[0]):
        _level_task(X_binned, rows, starts, stops, grad, hess, features, small, parent, t)


@njit(cache=True, nogil=True)
def _build_level_serial(X_binned, rows, starts, stops, grad, hess, features, small,
                        parent):  # pragma: no cover - numba
    for t in range(starts.shape[0] * features.shape[0]):
        _level_task(X_binned, rows, starts, stops, grad, hess, features, small, parent, t)


def build_level(X_binned, rows, starts, stops, grad, hess, features, small, parent) -> None:
    """Histograms of a whole tree level at once, with the subtraction trick.

    For every split node ``s`` of the level: ``small[s]`` gets the histogram of its smaller
    child, whose rows are ``rows[starts[s]:stops[s]]``, and ``parent[s]`` (the node's own
    histogram) becomes the larger child's, ``parent[s] - small[s]``. One parallel pass over
    (node, feature) tasks per level, instead of one per node.

    Shapes: ``small``, ``parent`` (n_nodes, n_features, n_bins, 2); ``starts``, ``stops``
    (n_nodes,); the rest as in :func:`build_histogram`.
    """
    n_rows = int(np.sum(stops - starts))
    kernel = _build_level_parallel if n_rows >= PARALLEL_MIN_ROWS else _build_level_serial
    kernel(X_binned, rows, starts, stops, grad, hess, features, small, parent)


@njit(cache=True, nogil=True)
def subtract_histogram(parent, child, features, out):  # pragma: no cover - numba
    """``out[j] = parent[j] - child[j]`` for ``j`` in ``features`` (``out`` may be ``parent``)."""
    n_bins = parent.shape[1]
    for k in range(features.shape[0]):
        j = features[k]
        for b in range(n_bins):
            out[j, b, 0] = parent[j, b, 0] - child[j, b, 0]
            out[j, b, 1] = parent[j, b, 1] - child[j, b, 1]


def histogram_reference(X_binned: np.ndarray, rows: np.ndarray, grad: np.ndarray,
                        hess: np.ndarray, n_bins: int) -> np.ndarray:
    """Plain numpy histogram of all features (the reference the kernels are tested against)."""
    Xb = np.asarray(X_binned)[rows]
    out = np.zeros((Xb.shape[1], n_bins, 2))
    for j in range(Xb.shape[1]):
        out[j, :, 0] = np.bincount(Xb[:, j], weights=grad[rows], minlength=n_bins)
        out[j, :, 1] = np.bincount(Xb[:, j], weights=hess[rows], minlength=n_bins)
    return out
