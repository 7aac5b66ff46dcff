"""Depth-wise growth of a whole tree in one compiled call, for inputs one thread handles best.

``grower.grow_tree`` runs a Python loop over nodes and calls numba kernels for the work that
touches rows. On a few hundred or thousand rows the work per node is microseconds, and the
Python around it (node objects, argument arrays, one kernel call per level and per node) cost
more than the work itself: on breast cancer (455 rows, 30 features) about half of a fit. This
module grows the same tree inside one numba function, and stores histograms compactly:

- **Compact bins.** Feature ``j`` has ``n_edges[j] + 1`` non-missing bins and one missing bin; its
  histogram occupies ``n_edges[j] + 2`` consecutive rows of one ``(n_bins_total, 2)`` array from
  offset ``offsets[j]``, instead of ``max_bin + 1`` rows padded to the widest feature. The
  binned matrix is re-coded once per fit (:class:`CompactBins`): ``codes[r, j]`` is the row of
  ``hist`` that row ``r``'s value of feature ``j`` adds to. On digits (pixel intensities 0..16,
  17 bins of 257) the histograms shrink 15-fold, and so do their clearing, subtraction and scan.
- **Depth-first order, a small pool.** Nodes are split depth-first from an explicit stack, so at
  most ``max_depth + 1`` histograms are alive; the pool is allocated once per fit. The smaller
  child's histogram is built from its rows and the larger one's is the parent's minus it
  (the subtraction trick, in place in the parent's buffer). Node ids are then renumbered
  breadth-first, left child before right, as ``grow_tree`` numbers them.

The trees are identical to ``grow_tree``'s, float for float: each node's rows are summed in the
same (ascending) order, the split search is the same :func:`~deepnotes.boosting.splitting.
scan_feature`, and the partition is the same stable one. ``tests/boosting/test_fused_grower.py``
holds the two to equality. It covers plain depth-wise growth only (no monotone, interaction or
categorical constraints, no per-node column sampling); ``grow_tree`` dispatches here when those
hold and the input has at most ``FUSED_MAX_ROWS`` rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from deepnotes.boosting.histogram import CHUNK_ROWS
from deepnotes.boosting.splitting import (
    MIN_GAIN,
    leaf_score,
    leaf_weight,
    left_sums,
    scan_feature,
    split_scratch,
)

#: Inputs with more rows use ``grow_tree``'s level-parallel kernels. This bound also keeps every
#: node within one histogram chunk (``histogram.CHUNK_ROWS``), so the sums' order is the same.
FUSED_MAX_ROWS = CHUNK_ROWS
#: Deeper limits use ``grow_tree`` (its node count is not bounded by ``2**(max_depth + 1)``).
FUSED_MAX_DEPTH = 24


def fusable(params) -> bool:
    """Whether :func:`grow_tree_fused` grows trees with these ``grower.TreeParams``."""
    p = params
    return (p.grow_policy == "depthwise" and p.max_leaves <= 0
            and 0 < p.max_depth <= FUSED_MAX_DEPTH and p.colsample_bynode >= 1.0
            and (p.monotone is None or not np.any(p.monotone))
            and p.interaction_sets is None
            and (p.is_categorical is None or not np.any(p.is_categorical)))


class CompactBins:
    """A binned matrix re-coded for the fused grower; built once per fit.

    Parameters
    ----------
    X_rows : ndarray of uint, shape (n_samples, n_features), C order   from ``BinMapper``
    n_edges : ndarray of int64, shape (n_features,)   non-missing bins of feature j: 0..n_edges[j]
    missing_bin : int                                  the mapper's bin of NaN
    max_depth : int                                    the trees' depth limit (sizes the pool)

    Attributes
    ----------
    codes : ndarray of int32, shape (n_samples, n_features)   row of ``hist`` for each value
    offsets : ndarray of int64, shape (n_features + 1,)       feature ``j``'s rows start here;
                                                              its missing row is ``offsets[j+1]-1``
    pool : ndarray of float64, shape (max_depth + 2, n_bins_total, 2)   histogram buffers
    """

    def __init__(self, X_rows: np.ndarray, n_edges: np.ndarray, missing_bin: int,
                 max_depth: int):
        n_edges = np.asarray(n_edges, dtype=np.int64)
        if X_rows.ndim != 2 or X_rows.shape[1] != n_edges.shape[0]:
            raise ValueError(f"X_rows has shape {X_rows.shape}, expected (n, {len(n_edges)})")
        self.offsets = np.zeros(n_edges.shape[0] + 1, dtype=np.int64)
        np.cumsum(n_edges + 2, out=self.offsets[1:])
        bins = X_rows.astype(np.int32)
        missing = bins == missing_bin
        self.codes = np.where(missing, (self.offsets[1:] - 1).astype(np.int32),
                              bins + self.offsets[:-1].astype(np.int32))
        self.n_edges = n_edges
        self.pool = np.empty((max_depth + 2, int(self.offsets[-1]), 2))
        self.partition_buffer = np.empty(X_rows.shape[0], dtype=np.int32)
        self.scratch = split_scratch(int(n_edges.max()) + 2 if n_edges.size else 1)


@njit(cache=True, nogil=True)
def _accumulate(codes, rows, start, stop, grad, hess, features, offsets, hist):  # pragma: no cover
    # zero the features' rows, then add each row's (g, h) to its bins, rows in ascending order
    nf = features.shape[0]
    for k in range(nf):
        j = features[k]
        hist[offsets[j]:offsets[j + 1]] = 0.0
    for i in range(start, stop):
        r = rows[i]
        g = np.float64(grad[r])
        h = np.float64(hess[r])
        for k in range(nf):
            o = codes[r, features[k]]
            hist[o, 0] += g
            hist[o, 1] += h


@njit(cache=True, nogil=True)
def _subtract(parent, child, features, offsets):  # pragma: no cover - numba
    # parent <- parent - child over the features' rows: the larger child's histogram
    for k in range(features.shape[0]):
        j = features[k]
        for o in range(offsets[j], offsets[j + 1]):
            parent[o, 0] = parent[o, 0] - child[o, 0]
            parent[o, 1] = parent[o, 1] - child[o, 1]


@njit(cache=True, nogil=True, error_model="numpy")
def _best_split(hist, features, offsets, n_edges, g_tot, h_tot, lam, alpha, gamma,
                min_child_weight, scratch):  # pragma: no cover - numba
    # ``splitting.find_best_split`` on the compact layout: the same scan, feature by feature
    best_gain = MIN_GAIN
    best_f = -1
    best_b = -1
    best_dl = False
    best_gl = 0.0
    best_hl = 0.0
    parent = leaf_score(g_tot, h_tot, lam, alpha)
    for k in range(features.shape[0]):
        j = features[k]
        hist_j = hist[offsets[j]:offsets[j + 1]]
        gm = hist_j[n_edges[j] + 1, 0]
        hm = hist_j[n_edges[j] + 1, 1]
        gain, b, dl = scan_feature(hist_j, n_edges[j], gm, hm, g_tot, h_tot, parent, lam,
                                   alpha, gamma, min_child_weight, best_gain, scratch)
        if b >= 0:
            best_gain, best_f, best_b, best_dl = gain, j, b, dl
            best_gl, best_hl = left_sums(hist_j, b, dl, gm, hm)
    return best_gain, best_f, best_b, best_dl, best_gl, best_hl


@njit(cache=True, nogil=True)
def _partition(rows, start, stop, codes, feature, last_left, missing_code, default_left,
               buf):  # pragma: no cover - numba
    # stable: left rows (code <= last_left, or missing and default_left) first, in order
    nl = 0
    nr = 0
    for i in range(start, stop):
        r = rows[i]
        c = codes[r, feature]
        left = np.int64((c <= last_left) | ((c == missing_code) & default_left))
        rows[start + nl] = r
        buf[nr] = r
        nl += left
        nr += 1 - left
    for i in range(nr):
        rows[start + nl + i] = buf[i]
    return nl


@njit(cache=True, nogil=True)
def _grow(codes, offsets, n_edges, grad, hess, rows, features, edges, max_depth, lam, alpha,
          gamma, min_child_weight, learning_rate, pool, buf, scratch):  # pragma: no cover
    m = rows.shape[0]
    cap = min(2 ** (max_depth + 1) - 1, 2 * m + 1)
    # per node, in creation (depth-first) order
    feature = np.full(cap, -1, dtype=np.int64)
    bin_threshold = np.full(cap, -1, dtype=np.int64)
    default_left = np.zeros(cap, dtype=np.bool_)
    left = np.full(cap, -1, dtype=np.int64)
    gain = np.zeros(cap)
    g_node = np.empty(cap)
    h_node = np.empty(cap)
    start = np.empty(cap, dtype=np.int64)
    stop = np.empty(cap, dtype=np.int64)
    depth = np.empty(cap, dtype=np.int64)
    # the split found for a node still to be split (on the stack)
    s_gain = np.empty(cap)
    s_f = np.empty(cap, dtype=np.int64)
    s_b = np.empty(cap, dtype=np.int64)
    s_dl = np.zeros(cap, dtype=np.bool_)
    s_gl = np.empty(cap)
    s_hl = np.empty(cap)
    slot = np.empty(cap, dtype=np.int64)  # its histogram's buffer in the pool

    free = np.arange(pool.shape[0])[::-1].copy()  # a stack of free buffers
    n_free = pool.shape[0]
    stack = np.empty(cap, dtype=np.int64)
    n_stack = 0

    n_free -= 1
    root_slot = free[n_free]
    _accumulate(codes, rows, 0, m, grad, hess, features, offsets, pool[root_slot])
    j0 = features[0]
    g0 = 0.0
    h0 = 0.0
    for o in range(offsets[j0], offsets[j0 + 1]):
        g0 += pool[root_slot, o, 0]
        h0 += pool[root_slot, o, 1]
    n_nodes = 1
    g_node[0], h_node[0], start[0], stop[0], depth[0] = g0, h0, 0, m, 0
    if max_depth > 0:
        s_gain[0], s_f[0], s_b[0], s_dl[0], s_gl[0], s_hl[0] = _best_split(
            pool[root_slot], features, offsets, n_edges, g0, h0, lam, alpha, gamma,
            min_child_weight, scratch)
    else:
        s_f[0] = -1
    if s_f[0] >= 0:
        slot[0] = root_slot
        stack[0] = 0
        n_stack = 1
    else:
        free[n_free] = root_slot
        n_free += 1

    while n_stack > 0:
        n_stack -= 1
        node = stack[n_stack]
        f = s_f[node]
        b = s_b[node]
        dl = s_dl[node]
        a, z = start[node], stop[node]
        n_left = _partition(rows, a, z, codes, f, offsets[f] + b, offsets[f + 1] - 1, dl, buf)
        feature[node], bin_threshold[node], default_left[node] = f, b, dl
        gain[node] = s_gain[node]
        lc = n_nodes
        rc = n_nodes + 1
        n_nodes += 2
        left[node] = lc
        d = depth[node] + 1
        gl, hl = s_gl[node], s_hl[node]
        g_node[lc], h_node[lc], start[lc], stop[lc], depth[lc] = gl, hl, a, a + n_left, d
        g_node[rc], h_node[rc] = g_node[node] - gl, h_node[node] - hl
        start[rc], stop[rc], depth[rc] = a + n_left, z, d
        parent_slot = slot[node]
        if d >= max_depth:  # the children are leaves
            free[n_free] = parent_slot
            n_free += 1
            continue
        small, large = (lc, rc) if n_left <= z - a - n_left else (rc, lc)
        n_free -= 1
        small_slot = free[n_free]
        _accumulate(codes, rows, start[small], stop[small], grad, hess, features, offsets,
                    pool[small_slot])
        _subtract(pool[parent_slot], pool[small_slot], features, offsets)
        slot[small], slot[large] = small_slot, parent_slot
        # push the right child first: the left one is split next (any order gives these trees)
        for child in (rc, lc):
            s_gain[child], s_f[child], s_b[child], s_dl[child], s_gl[child], s_hl[child] = \
                _best_split(pool[slot[child]], features, offsets, n_edges, g_node[child],
                            h_node[child], lam, alpha, gamma, min_child_weight, scratch)
            if s_f[child] >= 0:
                stack[n_stack] = child
                n_stack += 1
            else:
                free[n_free] = slot[child]
                n_free += 1

    # breadth-first ids, left before right: grow_tree's numbering
    order = np.empty(n_nodes, dtype=np.int64)
    new_id = np.empty(n_nodes, dtype=np.int64)
    order[0] = 0
    n_seen = 1
    for i in range(n_nodes):
        old = order[i]
        new_id[old] = i
        if left[old] >= 0:
            order[n_seen] = left[old]
            order[n_seen + 1] = left[old] + 1
            n_seen += 2
    out_feature = np.empty(n_nodes, dtype=np.int32)
    out_threshold = np.empty(n_nodes)
    out_bin = np.empty(n_nodes, dtype=np.int32)
    out_dl = np.empty(n_nodes, dtype=np.uint8)
    out_left = np.empty(n_nodes, dtype=np.int32)
    out_right = np.empty(n_nodes, dtype=np.int32)
    out_value = np.empty(n_nodes)
    out_gain = np.empty(n_nodes)
    out_cover = np.empty(n_nodes)
    n_leaves = (n_nodes + 1) // 2
    leaf_start = np.empty(n_leaves, dtype=np.int64)
    leaf_stop = np.empty(n_leaves, dtype=np.int64)
    leaf_value = np.empty(n_leaves)
    n_leaf = 0
    for i in range(n_nodes):
        old = order[i]
        f = feature[old]
        out_feature[i] = f
        out_bin[i] = bin_threshold[old]
        out_dl[i] = default_left[old]
        out_value[i] = leaf_weight(g_node[old], h_node[old], lam, alpha) * learning_rate
        out_gain[i] = gain[old]
        out_cover[i] = h_node[old]
        if f >= 0:
            b = bin_threshold[old]
            out_threshold[i] = edges[f, b] if b < edges.shape[1] else np.inf
            out_left[i] = new_id[left[old]]
            out_right[i] = new_id[left[old] + 1]
        else:
            out_threshold[i] = 0.0
            out_left[i] = -1
            out_right[i] = -1
            leaf_start[n_leaf] = start[old]
            leaf_stop[n_leaf] = stop[old]
            leaf_value[n_leaf] = out_value[i]
            n_leaf += 1
    return (out_feature, out_threshold, out_bin, out_dl, out_left, out_right, out_value,
            out_gain, out_cover, leaf_start, leaf_stop, leaf_value)


def grow_tree_fused(compact: CompactBins, grad: np.ndarray, hess: np.ndarray, rows: np.ndarray,
                    features: np.ndarray, edges: np.ndarray, params):
    """One depth-wise tree, as ``grower.grow_tree`` grows it with plain ``params``
    (``grower.TreeParams``: no constraints, no categorical features, ``colsample_bynode=1``).

    Parameters
    ----------
    compact : CompactBins                the fit's re-coded binned matrix and buffers
    grad, hess : ndarray of float32, shape (n_samples,)
    rows : ndarray of int32, shape (m,)   the rows this tree sees, ascending; reordered in place
    features : ndarray of int64           features this tree may use (ascending)
    edges : ndarray of float64            the bin mapper's ``edges_`` (thresholds in raw units)

    Returns
    -------
    ``(arrays, leaf_start, leaf_stop, leaf_value)``: ``arrays`` maps each ``Tree`` field to its
    node array; leaf ``k`` (in node-id order) holds the rows ``rows[leaf_start[k]:leaf_stop[k]]``.
    """
    p = params
    out = _grow(compact.codes, compact.offsets, compact.n_edges, grad, hess, rows, features,
                edges, int(p.max_depth), float(p.reg_lambda), float(p.reg_alpha),
                float(p.gamma), float(p.min_child_weight), float(p.learning_rate),
                compact.pool, compact.partition_buffer, compact.scratch)
    names = ("feature", "threshold", "bin_threshold", "default_left", "left", "right", "value",
             "gain", "cover")
    return dict(zip(names, out[:9], strict=True)), out[9], out[10], out[11]
