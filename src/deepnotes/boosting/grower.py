"""Growing one tree on binned data: depth-wise or loss-guided (best-first).

Rows of a node occupy a contiguous slice ``rows[start:stop]`` of one index array; splitting a
node partitions its slice stably (left rows first), so every slice stays in ascending row order
and the histogram kernel gathers memory front to back. The Python loop here runs over *nodes*
(at most ``2 * max_leaves`` of them); everything that touches rows is a numba kernel.

- ``grow_policy='depthwise'``: nodes are split level by level, up to ``max_depth`` (xgboost's
  default policy). Each level is one parallel partition pass and one parallel histogram pass
  over all its nodes (``histogram.build_histograms``), so a tree costs ``max_depth`` parallel
  regions rather than one per node.
- ``grow_policy='lossguide'``: the open node with the largest gain is split next, until
  ``max_leaves`` leaves (LightGBM's leaf-wise growth; ``max_depth=0`` means no depth limit).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from deepnotes.boosting.fused_grower import (
    FUSED_MAX_ROWS,
    CompactBins,
    fusable,
    grow_tree_fused,
)
from deepnotes.boosting.histogram import (
    PARALLEL_MIN_ROWS,
    PREFETCH_DISTANCE,
    build_histogram,
    build_histogram_root,
    build_level,
    chunk_plan,
    subtract_histogram,
)
from deepnotes.boosting.partition import goes_left, stable_partition
from deepnotes.boosting.predictor import Tree, tree_from_lists
from deepnotes.boosting.prefetch import prefetch
from deepnotes.boosting.splitting import (
    category_bins_left,
    find_best_split,
    find_best_split_ext,
    leaf_weight,
)


@dataclass
class TreeParams:
    """Hyper-parameters of one tree (xgboost names; see ``deepnotes.boosting.GBDTRegressor``)."""

    max_depth: int = 6
    max_leaves: int = 0
    grow_policy: str = "depthwise"
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    reg_alpha: float = 0.0
    gamma: float = 0.0
    learning_rate: float = 0.3
    colsample_bynode: float = 1.0
    # --- constraints and categorical features (None: none) ---
    monotone: np.ndarray | None = None
    """int8 per feature: +1 increasing, -1 decreasing, 0 free (xgboost's semantics)."""
    interaction_sets: tuple | None = None
    """Allowed interaction sets (frozensets of feature indices), xgboost's semantics."""
    is_categorical: np.ndarray | None = None
    """bool per feature: its bins are categories (see ``BinMapper``)."""
    max_cat_to_onehot: int = 4
    """Up to this many categories: one-vs-rest splits; more: sorted partitions."""
    max_cat_threshold: int = 64
    """A sorted partition sends fewer than this many categories to the side without NaN."""


#: Nodes with more rows are partitioned by chunks in parallel (two passes); smaller ones in one.
PARALLEL_PARTITION_ROWS = 65536


@njit(cache=True, nogil=True, inline="always")
def _partition_chunk(rows, X_binned, features, bin_thresholds, missing_bin, default_left, buf,
                     lo, hi, owner, c):  # pragma: no cover - numba
    # Left rows forward from the chunk's start, right rows backward from its end; both slots
    # are written and one counter advances: no branch on the (unpredictable) side. The two
    # slots are the ends of the chunk's still-unassigned middle.
    s = owner[c]
    col = X_binned[:, features[s]]
    a, b = lo[c], hi[c]
    nl = 0
    nr = 0
    for i in range(a, b):
        if i + PREFETCH_DISTANCE < b:
            prefetch(col, rows[i + PREFETCH_DISTANCE])
        r = rows[i]
        left = np.int64(goes_left(col[r], bin_thresholds[s], missing_bin, default_left[s]))
        buf[a + nl] = r
        buf[b - 1 - nr] = r
        nl += left
        nr += 1 - left
    return nl


@njit(cache=True, nogil=True, inline="always")
def _chunk_offsets(starts, first, lo, hi, chunk_left, n_left):  # pragma: no cover - numba
    left_at = np.empty(lo.shape[0], dtype=np.int64)
    right_at = np.empty(lo.shape[0], dtype=np.int64)
    for s in range(starts.shape[0]):
        total = 0
        for c in range(first[s], first[s + 1]):
            total += chunk_left[c]
        n_left[s] = total
        at_left, at_right = starts[s], starts[s] + total
        for c in range(first[s], first[s + 1]):
            left_at[c] = at_left
            right_at[c] = at_right
            at_left += chunk_left[c]
            at_right += hi[c] - lo[c] - chunk_left[c]
    return left_at, right_at


@njit(cache=True, nogil=True, inline="always")
def _place_chunk(rows, buf, lo, hi, chunk_left, left_at, right_at, c):  # pragma: no cover
    # the right rows were stored backwards: reversing them keeps the partition stable
    for k in range(chunk_left[c]):
        rows[left_at[c] + k] = buf[lo[c] + k]
    for k in range(hi[c] - lo[c] - chunk_left[c]):
        rows[right_at[c] + k] = buf[hi[c] - 1 - k]


@njit(parallel=True, cache=True, nogil=True)
def _partition_level_parallel(rows, starts, stops, X_binned, features, bin_thresholds,
                              missing_bin, default_left, buf, n_left):  # pragma: no cover
    first, lo, hi, owner = chunk_plan(starts, stops)
    chunk_left = np.empty(lo.shape[0], dtype=np.int64)
    for c in prange(lo.shape[0]):
        chunk_left[c] = _partition_chunk(rows, X_binned, features, bin_thresholds, missing_bin,
                                         default_left, buf, lo, hi, owner, c)
    left_at, right_at = _chunk_offsets(starts, first, lo, hi, chunk_left, n_left)
    for c in prange(lo.shape[0]):
        _place_chunk(rows, buf, lo, hi, chunk_left, left_at, right_at, c)


@njit(cache=True, nogil=True)
def _partition_level_serial(rows, starts, stops, X_binned, features, bin_thresholds,
                            missing_bin, default_left, buf, n_left):  # pragma: no cover
    first, lo, hi, owner = chunk_plan(starts, stops)
    chunk_left = np.empty(lo.shape[0], dtype=np.int64)
    for c in range(lo.shape[0]):
        chunk_left[c] = _partition_chunk(rows, X_binned, features, bin_thresholds, missing_bin,
                                         default_left, buf, lo, hi, owner, c)
    left_at, right_at = _chunk_offsets(starts, first, lo, hi, chunk_left, n_left)
    for c in range(lo.shape[0]):
        _place_chunk(rows, buf, lo, hi, chunk_left, left_at, right_at, c)


def partition_level(rows, starts, stops, X_binned, features, bin_thresholds, missing_bin,
                    default_left, buf, n_left) -> None:
    """Partition the disjoint slices ``rows[starts[s]:stops[s]]`` of one level (see
    :func:`partition_rows`); ``n_left[s]`` receives each node's left count.

    Nodes are cut into fixed-size chunks (``histogram.chunk_plan``) so that a level with one or
    two large, unequal nodes still keeps every thread busy. Each chunk partitions itself into
    ``buf`` (one read of the column), then the chunks are placed at their offsets in ``rows``;
    placement keeps the order, so the partition is stable. Below ``PARALLEL_MIN_ROWS`` rows in
    all, one thread (a parallel region costs more than a small level)."""
    n_rows = int(np.sum(stops - starts))
    kernel = (_partition_level_parallel if n_rows >= PARALLEL_MIN_ROWS
              else _partition_level_serial)
    kernel(rows, starts, stops, X_binned, features, bin_thresholds, missing_bin, default_left,
           buf, n_left)


@njit(parallel=True, cache=True, nogil=True)
def partition_rows(rows, start, stop, col, bin_threshold, missing_bin, default_left,
                   buf):  # pragma: no cover - numba
    """Stable in-place partition of ``rows[start:stop]``: rows with ``col[r] <= bin_threshold``
    (or missing and ``default_left``) first. Returns the number of left rows.

    Large nodes: every chunk counts its left rows, a prefix sum gives each chunk its offsets on
    both sides, and the chunks scatter in parallel into ``buf`` (stable: chunks are in order)."""
    m = stop - start
    if m < PARALLEL_PARTITION_ROWS:
        return stable_partition(rows, start, stop, col, bin_threshold, missing_bin,
                                 default_left, buf)
    n_chunks = 16
    size = (m + n_chunks - 1) // n_chunks
    n_left = np.zeros(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        cnt = 0
        for i in range(start + c * size, min(stop, start + (c + 1) * size)):
            if goes_left(col[rows[i]], bin_threshold, missing_bin, default_left):
                cnt += 1
        n_left[c] = cnt
    total_left = 0
    left_off = np.empty(n_chunks, dtype=np.int64)
    right_off = np.empty(n_chunks, dtype=np.int64)
    for c in range(n_chunks):
        left_off[c] = total_left
        total_left += n_left[c]
    for c in range(n_chunks):
        right_off[c] = total_left + c * size - left_off[c]
    for c in prange(n_chunks):
        a = left_off[c]
        b = right_off[c]
        for i in range(start + c * size, min(stop, start + (c + 1) * size)):
            r = rows[i]
            if goes_left(col[r], bin_threshold, missing_bin, default_left):
                buf[a] = r
                a += 1
            else:
                buf[b] = r
                b += 1
    for i in prange(m):
        rows[start + i] = buf[i]
    return total_left


@njit(cache=True, nogil=True, inline="always")
def _leaf_chunk(out, rows, values, lo, hi, owner, c):  # pragma: no cover - numba
    v = values[owner[c]]
    for i in range(lo[c], hi[c]):
        out[rows[i]] += v


@njit(parallel=True, cache=True, nogil=True)
def _leaf_values_parallel(out, rows, starts, stops, values):  # pragma: no cover - numba
    first, lo, hi, owner = chunk_plan(starts, stops)
    for c in prange(lo.shape[0]):
        _leaf_chunk(out, rows, values, lo, hi, owner, c)


@njit(cache=True, nogil=True)
def _leaf_values_serial(out, rows, starts, stops, values):  # pragma: no cover - numba
    first, lo, hi, owner = chunk_plan(starts, stops)
    for c in range(lo.shape[0]):
        _leaf_chunk(out, rows, values, lo, hi, owner, c)


def add_leaf_values(out, rows, starts, stops, values) -> None:
    """``out[rows[start:stop]] += value`` for every leaf: the training scores' update."""
    big = rows.shape[0] >= PARALLEL_MIN_ROWS
    (_leaf_values_parallel if big else _leaf_values_serial)(out, rows, starts, stops, values)


@njit(cache=True, nogil=True, inline="always")
def _routed_chunk(out, rows, X_binned, features, bin_thresholds, missing_bin, default_left,
                  left_values, right_values, lo, hi, owner, c):  # pragma: no cover - numba
    s = owner[c]
    col = X_binned[:, features[s]]
    for i in range(lo[c], hi[c]):
        if i + PREFETCH_DISTANCE < hi[c]:
            ahead = rows[i + PREFETCH_DISTANCE]
            prefetch(col, ahead)
            prefetch(out, ahead)
        r = rows[i]
        left = goes_left(col[r], bin_thresholds[s], missing_bin, default_left[s])
        out[r] += left_values[s] if left else right_values[s]


@njit(parallel=True, cache=True, nogil=True)
def _routed_parallel(out, rows, starts, stops, X_binned, features, bin_thresholds, missing_bin,
                     default_left, left_values, right_values):  # pragma: no cover - numba
    first, lo, hi, owner = chunk_plan(starts, stops)
    for c in prange(lo.shape[0]):
        _routed_chunk(out, rows, X_binned, features, bin_thresholds, missing_bin, default_left,
                      left_values, right_values, lo, hi, owner, c)


@njit(cache=True, nogil=True)
def _routed_serial(out, rows, starts, stops, X_binned, features, bin_thresholds, missing_bin,
                   default_left, left_values, right_values):  # pragma: no cover - numba
    first, lo, hi, owner = chunk_plan(starts, stops)
    for c in range(lo.shape[0]):
        _routed_chunk(out, rows, X_binned, features, bin_thresholds, missing_bin, default_left,
                      left_values, right_values, lo, hi, owner, c)


def add_routed_values(out, rows, starts, stops, X_binned, features, bin_thresholds, missing_bin,
                      default_left, left_values, right_values) -> None:
    """For nodes whose children are both leaves, without partitioning their rows: every row of
    ``rows[starts[s]:stops[s]]`` adds the value of the leaf its split sends it to."""
    big = int(np.sum(stops - starts)) >= PARALLEL_MIN_ROWS
    (_routed_parallel if big else _routed_serial)(
        out, rows, starts, stops, X_binned, features, bin_thresholds, missing_bin, default_left,
        left_values, right_values)


class _Node:
    __slots__ = ("id", "start", "stop", "depth", "g", "h", "hist", "split", "weight", "lower",
                 "upper", "path", "allowed", "cat_bins")

    def __init__(self, node_id, start, stop, depth, g, h):
        self.id, self.start, self.stop, self.depth = node_id, start, stop, depth
        self.g, self.h = g, h
        self.hist = None
        self.split = None
        # monotone constraints: the node's (clipped) weight and its bounds
        self.weight, self.lower, self.upper = 0.0, -np.inf, np.inf
        # interaction constraints: features on the path from the root, features allowed here
        self.path, self.allowed = frozenset(), None
        self.cat_bins = None  # categorical split: the bins sent left


class NodeTable:
    """The node arrays of a tree being grown: every new node appends one entry per ``Tree``
    field, as a leaf (a split then sets its split fields); node ids are creation order."""

    FIELDS = ("feature", "threshold", "bin_threshold", "default_left", "left", "right", "value",
              "gain", "cover")

    def __init__(self, params: TreeParams):
        self.params = params
        self.cols = {k: [] for k in self.FIELDS}

    def new_node(self, start, stop, depth, g, h) -> _Node:
        """A leaf over ``rows[start:stop]`` with sums ``g, h``: its weight (Eq. 3) times the
        learning rate, its cover ``h``."""
        p = self.params
        node = _Node(len(self.cols["value"]), start, stop, depth, g, h)
        for k, v in (("feature", -1), ("threshold", 0.0), ("bin_threshold", -1),
                     ("default_left", 0), ("left", -1), ("right", -1), ("gain", 0.0)):
            self.cols[k].append(v)
        self.cols["value"].append(leaf_weight(g, h, p.reg_lambda, p.reg_alpha) * p.learning_rate)
        self.cols["cover"].append(h)
        return node


def can_split(params: TreeParams, depth: int, n_leaves: int) -> bool:
    """Whether a node at ``depth`` may split when the tree has ``n_leaves`` leaves."""
    return ((params.max_depth <= 0 or depth < params.max_depth)
            and (params.max_leaves <= 0 or n_leaves < params.max_leaves))


def node_features(features: np.ndarray, colsample_bynode: float,
                  rng: np.random.Generator) -> np.ndarray:
    """The features one node may split on: all of ``features``, or a sorted sample of
    ``colsample_bynode`` of them (rounded, at least one) drawn from ``rng``."""
    if colsample_bynode >= 1.0:
        return features
    k = max(1, int(colsample_bynode * len(features) + 0.5))
    return np.sort(rng.choice(features, size=k, replace=False))


@njit(cache=True, nogil=True)
def partition_rows_table(rows, start, stop, col, table, buf):  # pragma: no cover - numba
    """Stable in-place partition of ``rows[start:stop]``: rows with ``table[col[r]] != 0`` first
    (a categorical split: ``table`` marks the left bins, its ``missing_bin`` entry is
    ``default_left``). Returns the number of left rows."""
    nl = 0
    nr = 0
    for i in range(start, stop):
        r = rows[i]
        if table[col[r]]:
            rows[start + nl] = r
            nl += 1
        else:
            buf[nr] = r
            nr += 1
    for i in range(nr):
        rows[start + nl + i] = buf[i]
    return nl


def allowed_features(path: frozenset, sets: tuple, n_features: int) -> np.ndarray:
    """Features a node whose path from the root splits on ``path`` may split on (xgboost's
    interaction constraints, Eq. 16 of the post): those of ``path`` and of every set that
    contains all of ``path``. Bool mask, shape (n_features,)."""
    mask = np.zeros(n_features, dtype=np.bool_)
    mask[list(path)] = True
    for s in sets:
        if path <= s:
            mask[list(s)] = True
    return mask


@dataclass
class GrownTree:
    """A tree and where its leaves' training rows are: ``rows[leaf_start[k]:leaf_stop[k]]``.

    ``routed`` (depth-wise growth at ``max_depth``): the last level's nodes are not partitioned,
    since their children are leaves; ``(starts, stops, feature, bin_threshold, default_left,
    left_value, right_value)`` per such node, its rows ``rows[start:stop]`` (these leaves have
    no slice of their own).
    """

    tree: Tree
    leaf_start: np.ndarray
    leaf_stop: np.ndarray
    leaf_value: np.ndarray
    routed: tuple | None = None

    def add_to_scores(self, scores: np.ndarray, rows: np.ndarray, X_binned: np.ndarray,
                      missing_bin: int) -> None:
        """``scores[r] += `` the value of the leaf that training row ``r`` reaches, for every row
        the tree was grown on (``rows`` as returned by :func:`grow_tree`)."""
        add_leaf_values(scores, rows, self.leaf_start, self.leaf_stop, self.leaf_value)
        if self.routed is not None:
            starts, stops, feature, bin_threshold, default_left, left_v, right_v = self.routed
            add_routed_values(scores, rows, starts, stops, X_binned, feature, bin_threshold,
                              missing_bin, default_left, left_v, right_v)


def grow_tree(X_binned: np.ndarray, X_rows: np.ndarray, grad: np.ndarray, hess: np.ndarray,
              rows: np.ndarray,
              all_rows: bool, features: np.ndarray, n_edges: np.ndarray, edges: np.ndarray,
              missing_bin: int, params: TreeParams, rng: np.random.Generator,
              categories: list | None = None, compact: CompactBins | None = None) -> GrownTree:
    """Grow one tree on the gradients ``grad, hess`` (float32, shape (n_samples,)).

    Parameters
    ----------
    X_binned : ndarray, shape (n_samples, n_features), Fortran order (from ``BinMapper``)
    X_rows : the same matrix in C order (row-major): the layout the gathers below the root use
    rows : ndarray of int32, shape (m,)   the rows this tree sees, ascending; reordered in place
    all_rows : bool                       ``rows`` is ``arange(n_samples)`` (no subsampling)
    features : ndarray of int64           features this tree may use (ascending)
    n_edges, edges, missing_bin           the bin mapper's ``n_edges_``, ``edges_``, ``max_bin``
    rng                                   draws the per-node feature subsample
    categories : list or None             per feature, the sorted category codes of bins
                                          ``0..n_edges[j]`` (None for a numeric feature); needed
                                          when ``params.is_categorical`` marks any feature

    Monotone and interaction constraints (``params.monotone``, ``params.interaction_sets``)
    follow xgboost: see :mod:`deepnotes.boosting.splitting` and :func:`allowed_features`. A
    categorical split stores its left and right category codes in ``tree.categories``; trees
    with categorical features grow node by node (the level kernels route by thresholds).

    ``compact`` (a ``fused_grower.CompactBins`` of ``X_rows``, built once per fit): when given,
    ``params`` are plain (``fused_grower.fusable``) and there are at most ``FUSED_MAX_ROWS``
    rows, the whole tree is grown in one compiled call (``fused_grower.grow_tree_fused``): the
    same tree, without this function's per-node Python.
    """
    if compact is not None and rows.shape[0] <= FUSED_MAX_ROWS and fusable(params):
        arrays, leaf_start, leaf_stop, leaf_value = grow_tree_fused(compact, grad, hess, rows,
                                                                    features, edges, params)
        return GrownTree(Tree(**arrays), leaf_start, leaf_stop, leaf_value)
    p = params
    n_bins = missing_bin + 1
    n_features = X_binned.shape[1]
    buf = np.empty(rows.shape[0], dtype=rows.dtype)
    cols = {}

    def column(j):
        if j not in cols:
            cols[j] = X_binned[:, j]
        return cols[j]

    mono = p.monotone if p.monotone is not None else np.zeros(n_features, dtype=np.int8)
    is_cat = (p.is_categorical if p.is_categorical is not None
              else np.zeros(n_features, dtype=np.bool_))
    has_mono, any_cat = bool(np.any(mono != 0)), bool(np.any(is_cat))
    tree_categories = {}

    def evaluate(node, hist=None):
        feats = node_features(features, p.colsample_bynode, rng)
        if node.allowed is not None:
            feats = feats[node.allowed[feats]]
        h = node.hist if hist is None else hist
        if has_mono or any_cat:
            node.split = find_best_split_ext(h, feats, n_edges, missing_bin, node.g, node.h,
                                             p.reg_lambda, p.reg_alpha, p.gamma,
                                             p.min_child_weight, mono, node.lower, node.upper,
                                             node.weight, is_cat, p.max_cat_to_onehot,
                                             p.max_cat_threshold)
            f = node.split[1]
            if f >= 0 and is_cat[f]:
                node.cat_bins = category_bins_left(h[f], int(n_edges[f]) + 1, node.split[2],
                                                   node.h, p.reg_lambda, p.reg_alpha,
                                                   p.min_child_weight, p.max_cat_to_onehot)
        else:
            node.split = find_best_split(h, feats, n_edges, missing_bin, node.g, node.h,
                                         p.reg_lambda, p.reg_alpha, p.gamma, p.min_child_weight)
        return node.split[1] >= 0

    table = NodeTable(p)  # node arrays, grown as nodes are created
    cols_out, new_node = table.cols, table.new_node

    root_hist = np.empty((n_features, n_bins, 2))
    if all_rows:
        build_histogram_root(X_binned, grad, hess, features, root_hist)
    else:
        build_histogram(X_rows, rows, grad, hess, features, root_hist)
    g0, h0 = root_hist[features[0]].sum(axis=0)
    root = new_node(0, rows.shape[0], 0, float(g0), float(h0))
    root.weight = leaf_weight(root.g, root.h, p.reg_lambda, p.reg_alpha)
    if p.interaction_sets is not None:
        root.allowed = np.ones(n_features, dtype=np.bool_)
    root.hist = root_hist
    heap: list = []
    leaves = {root.id: root}
    counter = 0

    def push(node):
        nonlocal counter
        if evaluate(node):
            key = node.depth if p.grow_policy == "depthwise" else -node.split[0]
            heapq.heappush(heap, (key, counter, node))
            counter += 1
        node_hist_done = node.split[1] < 0
        if node_hist_done:
            node.hist = None

    def record_split(node, n_left):
        """Children of ``node``; ``n_left = -1``: rows not partitioned (children get no slice)."""
        gain, f, b, dl, gl, hl = node.split
        mid = node.start + n_left if n_left >= 0 else -1
        left = new_node(node.start, mid, node.depth + 1, gl, hl)
        right = new_node(mid, node.stop, node.depth + 1, node.g - gl, node.h - hl)
        i = node.id
        cols_out["feature"][i] = f
        if is_cat[f]:
            codes = categories[f]
            in_left = np.zeros(codes.shape[0], dtype=np.bool_)
            in_left[node.cat_bins] = True
            tree_categories[i] = (codes[in_left].copy(), codes[~in_left].copy())
            cols_out["threshold"][i] = np.nan
            cols_out["bin_threshold"][i] = -1
        else:
            cols_out["threshold"][i] = float(edges[f, b]) if b < edges.shape[1] else np.inf
            cols_out["bin_threshold"][i] = b
        cols_out["default_left"][i] = int(dl)
        if has_mono:
            # xgboost's bounds: children's weights clipped to the node's bounds; a split on a
            # constrained feature bounds them further by the mid-point of the two weights
            wl = min(max(leaf_weight(gl, hl, p.reg_lambda, p.reg_alpha), node.lower), node.upper)
            wr = min(max(leaf_weight(node.g - gl, node.h - hl, p.reg_lambda, p.reg_alpha),
                         node.lower), node.upper)
            cols_out["value"][left.id] = wl * p.learning_rate
            cols_out["value"][right.id] = wr * p.learning_rate
            left.weight, right.weight = wl, wr
            for child in (left, right):
                child.lower, child.upper = node.lower, node.upper
            mid = 0.5 * (wl + wr)
            if mono[f] > 0:
                left.upper = right.lower = mid
            elif mono[f] < 0:
                left.lower = right.upper = mid
        if p.interaction_sets is not None:
            path = node.path | {int(f)}
            allowed = allowed_features(path, p.interaction_sets, n_features)
            for child in (left, right):
                child.path, child.allowed = path, allowed
        cols_out["left"][i], cols_out["right"][i] = left.id, right.id
        cols_out["gain"][i] = gain
        del leaves[i]
        if n_left >= 0:
            leaves[left.id] = left
            leaves[right.id] = right
        small, large = (left, right) if n_left <= node.stop - mid else (right, left)
        return left, right, small, large

    routed = None
    if p.grow_policy == "depthwise" and p.max_leaves <= 0 and not any_cat:
        # Level-synchronous: one parallel partition and one parallel histogram pass per level,
        # instead of one per node. Same trees (nodes are split in the same order). The last
        # level is not partitioned: its rows are routed to their leaves when scores are updated.
        frontier = [root] if can_split(p, 0, 1) and evaluate(root) else []
        level_hists = root_hist[None]
        root.hist = 0
        while frontier:
            m = len(frontier)
            starts = np.array([nd.start for nd in frontier], dtype=np.int64)
            stops = np.array([nd.stop for nd in frontier], dtype=np.int64)
            split_features = np.array([nd.split[1] for nd in frontier], dtype=np.int64)
            bin_thresholds = np.array([nd.split[2] for nd in frontier], dtype=np.int64)
            default_left = np.array([nd.split[3] for nd in frontier], dtype=np.bool_)
            depth = frontier[0].depth + 1
            if not can_split(p, depth, 0):
                # the children are leaves: route each row to its leaf's value later instead of
                # partitioning (``GrownTree.add_to_scores``)
                for nd in frontier:
                    record_split(nd, -1)
                routed = (starts, stops, split_features, bin_thresholds, default_left,
                          np.array([cols_out["value"][cols_out["left"][nd.id]]
                                    for nd in frontier]),
                          np.array([cols_out["value"][cols_out["right"][nd.id]]
                                    for nd in frontier]))
                break
            n_left = np.empty(m, dtype=np.int64)
            partition_level(rows, starts, stops, X_binned, split_features, bin_thresholds,
                            missing_bin, default_left, buf, n_left)
            pairs = [record_split(nd, int(k)) for nd, k in zip(frontier, n_left, strict=True)]
            new_frontier = []
            # children[k, 0] / [k, 1]: the smaller / larger child of frontier[k]; a node's
            # ``hist`` is an index into ``level_hists``, this level's parents
            children = np.empty((m, 2, n_features, n_bins, 2))
            build_level(X_rows, rows,
                        np.array([q[2].start for q in pairs], dtype=np.int64),
                        np.array([q[2].stop for q in pairs], dtype=np.int64),
                        grad, hess, features, level_hists,
                        np.array([nd.hist for nd in frontier], dtype=np.int64), children)
            level_hists = children.reshape(2 * m, n_features, n_bins, 2)
            for k, (left, right, small, large) in enumerate(pairs):
                small.hist, large.hist = 2 * k, 2 * k + 1
                for child in (left, right):
                    if evaluate(child, level_hists[child.hist]):
                        new_frontier.append(child)
            frontier = new_frontier
    else:
        if can_split(p, 0, 1):
            push(root)
        while heap:
            if p.max_leaves > 0 and len(leaves) >= p.max_leaves:
                break
            _, _, node = heapq.heappop(heap)
            if node.cat_bins is not None and is_cat[node.split[1]]:
                table = np.zeros(n_bins, dtype=np.uint8)
                table[node.cat_bins] = 1
                table[missing_bin] = node.split[3]
                n_left = partition_rows_table(rows, node.start, node.stop,
                                              column(node.split[1]), table, buf)
            else:
                n_left = partition_rows(rows, node.start, node.stop, column(node.split[1]),
                                        node.split[2], missing_bin, node.split[3], buf)
            left, right, small, large = record_split(node, n_left)
            if can_split(p, node.depth + 1, len(leaves)):
                small.hist = np.empty_like(node.hist)
                build_histogram(X_rows, rows[small.start:small.stop], grad, hess, features,
                                small.hist)
                subtract_histogram(node.hist, small.hist, features, node.hist)
                large.hist = node.hist
                push(left)
                push(right)
            node.hist = None

    tree = tree_from_lists(**cols_out)
    if tree_categories:
        tree.categories = tree_categories
    ids = sorted(leaves)
    return GrownTree(tree,
                     np.array([leaves[k].start for k in ids], dtype=np.int64),
                     np.array([leaves[k].stop for k in ids], dtype=np.int64),
                     tree.value[ids].copy(), routed)
