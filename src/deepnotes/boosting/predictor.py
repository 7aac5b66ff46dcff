"""Trees as flat arrays, and prediction in numba (parallel over rows).

A tree is a set of parallel arrays indexed by node id (root = 0). An internal node sends a row
left when ``x[feature] <= threshold``, and a missing (NaN) ``x[feature]`` to the left child when
``default_left`` is set; a leaf (``left == -1``) adds ``value`` (learning rate included) to the
raw score of output ``tree_class``. A forest concatenates its trees' arrays, with child indices
made absolute, so one kernel walks every tree of every row without Python in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numba import njit, prange


@dataclass
class Tree:
    """One regression tree, node arrays of shape (n_nodes,).

    Attributes
    ----------
    feature : int32          split feature (-1 at leaves)
    threshold : float64      go left when ``x <= threshold`` (raw feature units)
    bin_threshold : int32    the same split in bin units (``bin <= bin_threshold``), training only
    default_left : uint8     1 when missing values go left
    left, right : int32      child node ids (-1 at leaves)
    value : float64          leaf weight times learning rate (Eq. 3); internal nodes keep theirs
    gain : float64           split gain (Eq. 4), 0 at leaves
    cover : float64          hessian sum of the node's training rows
    categories : dict or None
        Categorical splits: node id -> ``(left_codes, right_codes)``, sorted int64 arrays of the
        category codes sent left / right (their ``threshold`` is NaN). A code in neither (a
        category unseen in training), like NaN, follows ``default_left``.
    """

    feature: np.ndarray
    threshold: np.ndarray
    bin_threshold: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    gain: np.ndarray
    cover: np.ndarray
    categories: dict | None = None

    @property
    def n_nodes(self) -> int:
        return int(self.feature.shape[0])

    @property
    def n_leaves(self) -> int:
        return int(np.sum(self.left == -1))

    def depth(self) -> int:
        """Length of the longest root-to-leaf path."""
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        for node in range(self.n_nodes):  # parents precede children: ids are assigned in order
            if self.left[node] != -1:
                depth[self.left[node]] = depth[self.right[node]] = depth[node] + 1
        return int(depth.max())


TREE_FIELDS = tuple(f.name for f in fields(Tree) if f.name != "categories")
_DTYPES = {"feature": np.int32, "threshold": np.float64, "bin_threshold": np.int32,
           "default_left": np.uint8, "left": np.int32, "right": np.int32, "value": np.float64,
           "gain": np.float64, "cover": np.float64}


def tree_from_lists(**cols) -> Tree:
    """Build a :class:`Tree` from per-field lists, casting to the documented dtypes."""
    return Tree(**{k: np.asarray(cols[k], dtype=_DTYPES[k]) for k in TREE_FIELDS})


@dataclass
class Forest:
    """Concatenated trees ready for :func:`predict_raw`.

    Attributes
    ----------
    feature, threshold, default_left, left, right, value : arrays over all nodes (absolute ids)
    roots : int64, shape (n_trees,)        node id of each tree's root
    tree_class : int64, shape (n_trees,)   output column each tree adds to
    """

    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    tree_class: np.ndarray
    _kernel: tuple | None = None
    categorical: tuple | None = None
    """``category_bitsets`` of the trees' categorical splits, or None when there are none."""


def make_forest(trees: list[Tree], tree_class: list[int] | np.ndarray) -> Forest:
    """Concatenate trees, shifting child ids by each tree's offset."""
    if not trees:
        e = np.empty(0)
        return Forest(e.astype(np.int32), e, e.astype(np.uint8), e.astype(np.int32),
                      e.astype(np.int32), e, e.astype(np.int64), e.astype(np.int64))
    sizes = np.array([t.n_nodes for t in trees], dtype=np.int64)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    left = np.concatenate([np.where(t.left >= 0, t.left + r, -1)
                           for t, r in zip(trees, roots, strict=True)])
    right = np.concatenate([np.where(t.right >= 0, t.right + r, -1)
                            for t, r in zip(trees, roots, strict=True)])
    return Forest(
        feature=np.concatenate([t.feature for t in trees]).astype(np.int32),
        threshold=np.concatenate([t.threshold for t in trees]),
        default_left=np.concatenate([t.default_left for t in trees]).astype(np.uint8),
        left=left.astype(np.int32), right=right.astype(np.int32),
        value=np.concatenate([t.value for t in trees]),
        roots=roots, tree_class=np.asarray(tree_class, dtype=np.int64),
        categorical=category_bitsets(trees, roots))


# --- categorical splits ------------------------------------------------------------------------
def category_bitsets(trees: list[Tree], roots: np.ndarray) -> tuple | None:
    """The categorical splits of concatenated trees as bitsets: ``(start, n_words, bits)``.

    ``start`` (int64, one per node of the forest): -1 for a numeric split or a leaf, else the
    offset in ``bits`` (uint64) of the node's left-category bitset of ``n_words[node]`` words,
    followed by its right-category bitset of as many words (bit ``c`` = category code ``c``).
    None when no tree has a categorical split."""
    if not any(t.categories for t in trees):
        return None
    n_nodes = int(sum(t.n_nodes for t in trees))
    start = np.full(n_nodes, -1, dtype=np.int64)
    n_words = np.zeros(n_nodes, dtype=np.int64)
    chunks, at = [], 0
    for t, r in zip(trees, roots, strict=True):
        for node, (left, right) in sorted((t.categories or {}).items()):
            top = max(int(left.max()) if left.size else -1, int(right.max()) if right.size else -1)
            w = top // 64 + 1
            words = np.zeros(2 * w, dtype=np.uint64)
            for half, codes in ((0, left), (w, right)):
                codes = np.asarray(codes, dtype=np.int64)
                np.bitwise_or.at(words, half + codes // 64,
                                 np.left_shift(np.uint64(1), (codes % 64).astype(np.uint64)))
            start[r + node], n_words[r + node] = at, w
            chunks.append(words)
            at += 2 * w
    return start, n_words, np.concatenate(chunks)


@njit(cache=True, nogil=True, inline="always")
def categorical_goes_left(x, default_left, start, n_words, bits):  # pragma: no cover - numba
    """Direction of value ``x`` at a categorical split (``start``, ``n_words`` its entries in
    :func:`category_bitsets`): left or right when ``x`` is a code in the node's left or right set,
    ``default_left`` when it is NaN or a category the tree never saw."""
    if not (x >= 0.0) or x >= 64.0 * n_words:
        return default_left
    c = np.int64(x)
    word = c >> 6
    bit = np.uint64(1) << np.uint64(c & 63)
    if bits[start + word] & bit:
        return True
    if bits[start + n_words + word] & bit:
        return False
    return default_left


@njit(cache=True, nogil=True)
def _predict_rows_cat(X, lo, hi, feature, threshold, default_left, left, right, value, roots,
                      tree_class, start, n_words, bits, out):  # pragma: no cover - numba
    for i in range(lo, hi):
        for t in range(roots.shape[0]):
            node = roots[t]
            while left[node] != -1:
                x = X[i, feature[node]]
                if start[node] >= 0:
                    go = categorical_goes_left(x, default_left[node] != 0, start[node],
                                               n_words[node], bits)
                else:
                    go = (x <= threshold[node]) or (x != x and default_left[node] != 0)
                node = left[node] if go else right[node]
            out[i, tree_class[t]] += value[node]


@njit(parallel=True, cache=True, nogil=True)
def _predict_cat_parallel(X, feature, threshold, default_left, left, right, value, roots,
                          tree_class, start, n_words, bits, out):  # pragma: no cover - numba
    n = X.shape[0]
    for blk in prange((n + BLOCK - 1) // BLOCK):
        _predict_rows_cat(X, blk * BLOCK, min(n, (blk + 1) * BLOCK), feature, threshold,
                          default_left, left, right, value, roots, tree_class, start, n_words,
                          bits, out)


#: Rows per block. Inputs with fewer than PARALLEL_MIN_WORK row-trees (rows x trees), or fewer
#: than two blocks, are predicted on one thread (a parallel region costs tens of microseconds).
BLOCK, PARALLEL_MIN_WORK = 64, 200_000

#: One prediction node, 16 bytes, so a step reads one record instead of four arrays:
#: ``meta = left << 32 | feature << 1 | default_left``.
NODE_DTYPE = np.dtype([("threshold", np.float64), ("meta", np.int64)])


@njit(cache=True, nogil=True)
def _predict_block(X, lo, hi, nodes, value, roots, depths, tree_class,
                   out):  # pragma: no cover - numba
    # The block's rows descend each tree one level at a time: the rows' steps are independent,
    # so the CPU overlaps their loads instead of waiting on one row's chain of node lookups.
    # Leaves are self-loops (see ``kernel_arrays``): the step is branch-free and every row takes
    # exactly `depth` steps.
    m = hi - lo
    at = np.empty(m, dtype=np.int64)
    for t in range(roots.shape[0]):
        c = tree_class[t]
        for i in range(m):
            at[i] = roots[t]
        for _ in range(depths[t]):
            for i in range(m):
                node = nodes[at[i]]
                meta = node.meta
                x = X[lo + i, (meta >> 1) & 0x7FFFFFFF]
                go_left = (x <= node.threshold) | ((x != x) & ((meta & 1) == 1))
                at[i] = (meta >> 32) + 1 - go_left
        for i in range(m):
            out[lo + i, c] += value[at[i]]


@njit(parallel=True, cache=True, nogil=True)
def _predict_parallel(X, nodes, value, roots, depths, tree_class, out):  # pragma: no cover
    n = X.shape[0]
    for blk in prange((n + BLOCK - 1) // BLOCK):
        _predict_block(X, blk * BLOCK, min(n, (blk + 1) * BLOCK), nodes, value, roots, depths,
                       tree_class, out)


@njit(cache=True, nogil=True)
def _predict_serial(X, nodes, value, roots, depths, tree_class, out):  # pragma: no cover
    n = X.shape[0]
    for blk in range((n + BLOCK - 1) // BLOCK):
        _predict_block(X, blk * BLOCK, min(n, (blk + 1) * BLOCK), nodes, value, roots, depths,
                       tree_class, out)


def kernel_arrays(forest: Forest) -> tuple[np.ndarray, np.ndarray]:
    """Forest nodes in the form ``_predict_block`` walks: ``(nodes, depths)``.

    ``nodes`` (NODE_DTYPE, one per node): children are adjacent (right = left + 1, as both
    growers create them), and a leaf becomes a self-loop (feature 0, threshold +inf, missing left,
    left = itself), so extra steps below a leaf stay on it. ``depths``: each tree's depth.
    """
    leaf = forest.left == -1
    ids = np.arange(forest.left.shape[0], dtype=np.int64)
    if np.any(forest.right[~leaf] != forest.left[~leaf] + 1):
        raise ValueError("right children must directly follow left children")
    feature = np.where(leaf, 0, forest.feature).astype(np.int64)
    default_left = np.where(leaf, True, forest.default_left.astype(bool)).astype(np.int64)
    left = np.where(leaf, ids, forest.left).astype(np.int64)
    nodes = np.empty(ids.shape[0], dtype=NODE_DTYPE)
    nodes["threshold"] = np.where(leaf, np.inf, forest.threshold)
    nodes["meta"] = (left << 32) | (feature << 1) | default_left
    depths = np.zeros(forest.roots.shape[0], dtype=np.int64)
    node_depth = np.zeros(left.shape[0], dtype=np.int64)
    for k in np.flatnonzero(~leaf):  # parents precede children within each tree
        node_depth[forest.left[k]] = node_depth[forest.right[k]] = node_depth[k] + 1
    tree_of = np.searchsorted(forest.roots, ids, side="right") - 1
    np.maximum.at(depths, tree_of, node_depth)
    return nodes, depths


def predict_raw(forest: Forest, X: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Add every tree's leaf value to ``out`` (shape (n, n_outputs)), in place; returns ``out``.

    ``X``: float64, shape (n, n_features), NaN = missing.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    if forest.roots.shape[0] and forest.categorical is not None:
        # trees with categorical splits: a plain walk per row (numeric-only forests keep the
        # level-stepping kernel below)
        start, n_words, bits = forest.categorical
        args = (forest.feature, forest.threshold, forest.default_left, forest.left, forest.right,
                forest.value, forest.roots, forest.tree_class, start, n_words, bits, out)
        if X.shape[0] * forest.roots.shape[0] >= PARALLEL_MIN_WORK:
            _predict_cat_parallel(X, *args)
        else:
            _predict_rows_cat(X, 0, X.shape[0], *args)
        return out
    if forest.roots.shape[0]:
        if forest._kernel is None:
            forest._kernel = kernel_arrays(forest)
        nodes, depths = forest._kernel
        n_trees = forest.roots.shape[0]
        parallel = X.shape[0] >= 2 * BLOCK and X.shape[0] * n_trees >= PARALLEL_MIN_WORK
        kernel = _predict_parallel if parallel else _predict_serial
        kernel(X, nodes, forest.value, forest.roots, depths, forest.tree_class, out)
    return out


@njit(parallel=True, cache=True, nogil=True)
def predict_binned_rows(X_binned, rows, feature, bin_threshold, default_left, left, right,
                        value, missing_bin, out):  # pragma: no cover - numba
    """``out[rows[i]] += tree(X_binned[rows[i]])`` for one tree in bin units (training only)."""
    for i in prange(rows.shape[0]):
        r = rows[i]
        node = 0
        while left[node] != -1:
            b = X_binned[r, feature[node]]
            if b == missing_bin:
                node = left[node] if default_left[node] else right[node]
            elif b <= bin_threshold[node]:
                node = left[node]
            else:
                node = right[node]
        out[r] += value[node]
