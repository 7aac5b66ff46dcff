"""Trees as flat arrays, and prediction in numba (parallel over blocks of rows).

A tree is a set of parallel arrays indexed by node id (root = 0). An internal node sends a row
left when ``x[feature] <= threshold``, and a missing (NaN) ``x[feature]`` to the left child when
``default_left`` is set; a leaf (``left == -1``) adds ``value`` (learning rate included) to the
raw score of output ``tree_class``. A forest concatenates its trees' arrays, with child indices
made absolute, so one kernel walks every tree of every row without Python in the loop.

Prediction (:func:`predict_raw`) lays a numeric forest out once (:func:`kernel_arrays`: one
slot per node, the two children of a node in adjacent slots, a leaf as a self-loop so that every
row takes exactly ``depth`` branch-free steps per tree) and walks it in blocks of 64 rows, tree
by tree in order, so each output adds the same float64 leaf values in the same order as a plain
per-row walk: the scores are equal bit for bit (``tests/boosting/test_predictor.py``). Within a
block, eight rows at a time descend a tree with their slots held in registers (eight independent
chains of loads, about seven instructions a step), and a block without NaN takes a step without
the missing-value test. On the 200k x 28 test rows of ``benchmarks/gbdt.py`` (100 trees of depth
6, 2 threads, load average 0.3) the kernel went from 109 ms to 36 ms and ``predict_proba``
from 121 ms to 49 ms: 0.51x xgboost's 95 ms in the same interleaved run, where the previous
kernel gave 1.28x (it stepped all 64 rows one level at a time through an array of node ids,
about 33 instructions a step); with 20 % NaN, 122 ms to 79 ms (2026-12-02). Trees
with categorical splits take a plain per-row walk (:func:`_predict_rows_cat`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

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


#: Rows per block, a thread's unit of work: the block's rows (64 x 28 float64 = 14 KB on the
#: benchmark) stay in L1 while the block walks every tree (128 measured the same, 256 slower).
#: Inputs with fewer than PARALLEL_MIN_WORK row-trees (rows x trees), or fewer than two blocks,
#: are predicted on one thread (a parallel region costs tens of microseconds).
BLOCK, PARALLEL_MIN_WORK = 64, 200_000

#: One node as a 16-byte record (``meta = left << 32 | feature << 1 | default_left``), the layout
#: of the previous prediction kernel; :func:`deepnotes.boosting.forest.pack_nodes` still uses it.
NODE_DTYPE = np.dtype([("threshold", np.float64), ("meta", np.int64)])

_U = np.uint64  # slots and row offsets are unsigned: numba adds no negative-index wraparound


class KernelArrays(NamedTuple):
    """A numeric forest as :func:`_predict_block` walks it (built by :func:`kernel_arrays`).

    Per tree, shape (n_trees,): ``start`` (uint64, the slot of its root), ``depth`` (uint64, its
    longest root-to-leaf path: every row takes exactly that many steps). Per slot, shape
    (n_nodes,): ``feature`` (uint32), ``threshold`` (float64), ``default_left`` (uint8),
    ``left`` (uint32, the absolute slot of the left child; the right child is ``left + 1``),
    ``value`` (float64, the leaf value, read at the slot where a row ends).

    A tree keeps its block of slots (``start[t] = roots[t]``), renumbered root first and each
    node's two children in the next two free slots, so any child ids that form a tree will do.
    A leaf is a self-loop (feature 0, threshold +inf, missing goes left, ``left`` = itself): a row
    that reaches it before ``depth`` steps stays on it, so a step needs no leaf test.
    """

    start: np.ndarray
    depth: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    value: np.ndarray


@njit(cache=True, nogil=True)
def _layout(feature, threshold, default_left, left, right, value, roots):  # pragma: no cover
    # (plain loops and scalar assignments: the same code with tuple assignments, slices and
    # np.full took three times as long to compile)
    n_nodes = left.shape[0]
    n_trees = roots.shape[0]
    depth = np.zeros(n_trees, dtype=np.uint64)
    s_feature = np.zeros(n_nodes, dtype=np.uint32)
    s_threshold = np.empty(n_nodes)
    s_default_left = np.ones(n_nodes, dtype=np.uint8)
    s_left = np.zeros(n_nodes, dtype=np.uint32)
    s_value = np.zeros(n_nodes)
    for s in range(n_nodes):
        s_threshold[s] = np.inf
    slot = np.zeros(n_nodes, dtype=np.int64)  # each node's slot, relative to its tree's root
    node_depth = np.zeros(n_nodes, dtype=np.int64)
    stack = np.empty(n_nodes + 1, dtype=np.int64)
    for t in range(n_trees):
        b = roots[t]
        size = (roots[t + 1] if t + 1 < n_trees else n_nodes) - b
        slot[b] = 0
        node_depth[b] = 0
        stack[0] = b
        top, nxt, seen, d = 1, 1, 0, 0
        while top > 0:  # depth first from the root
            top -= 1
            k = stack[top]
            seen += 1
            if seen > size or (left[k] != -1 and nxt + 2 > size):
                raise ValueError("the child ids of a tree do not form a binary tree")
            s = b + slot[k]
            if node_depth[k] > d:
                d = node_depth[k]
            if left[k] == -1:
                s_left[s] = s
                s_value[s] = value[k]
                continue
            slot[left[k]] = nxt
            slot[right[k]] = nxt + 1
            node_depth[left[k]] = node_depth[k] + 1
            node_depth[right[k]] = node_depth[k] + 1
            s_feature[s] = feature[k]
            s_threshold[s] = threshold[k]
            s_default_left[s] = default_left[k]
            s_left[s] = b + nxt
            nxt += 2
            stack[top] = right[k]
            stack[top + 1] = left[k]
            top += 2
        depth[t] = d
    return (roots.astype(np.uint64), depth, s_feature, s_threshold, s_default_left, s_left,
            s_value)


def kernel_arrays(forest: Forest) -> KernelArrays:
    """Lay a numeric ``forest`` out for :func:`_predict_block` (see :class:`KernelArrays`)."""
    n, roots = forest.left.shape[0], forest.roots
    if roots.shape[0] == 0:
        raise ValueError("forest has no trees")
    if n >= 2**32:
        raise ValueError(f"forest has {n} nodes; the prediction kernel takes fewer than 2**32")
    inner = forest.left != -1
    if (np.any(np.diff(roots) <= 0) or roots[0] != 0 or roots[-1] >= n
            or np.any(forest.left[inner] < 0) or np.any(forest.left >= n)
            or np.any(forest.right[inner] < 0) or np.any(forest.right >= n)):
        raise ValueError("forest has child or root ids outside its nodes")
    return KernelArrays(*_layout(
        forest.feature.astype(np.int64), forest.threshold.astype(np.float64),
        forest.default_left.astype(np.uint8), forest.left.astype(np.int64),
        forest.right.astype(np.int64), forest.value.astype(np.float64), roots.astype(np.int64)))


@njit(cache=True, nogil=True)
def _step(X1, row, s, feature, threshold, default_left, left, nan):  # pragma: no cover - numba
    """The slot after slot ``s`` for the row whose first feature is ``X1[row]``.

    ``x <= threshold`` is the split's own comparison, so it sends every float64 (+/-inf, and
    any x against a NaN threshold, included) where a plain walk does. NaN makes it False, so
    only a NaN ``x`` needs ``default_left``; ``nan`` is a constant at every call (blocks without
    NaN compile to a step without that test)."""
    x = X1[row + _U(feature[s])]
    if nan:
        go_left = (x <= threshold[s]) | ((x != x) & (default_left[s] != 0))
    else:
        go_left = x <= threshold[s]
    return _U(left[s]) + _U(1) - _U(go_left)


@njit(cache=True, nogil=True)
def _walk_block(X1, n_features, lo, hi, start, depth, feature, threshold, default_left, left,
                value, tree_class, out, nan):  # pragma: no cover - numba
    """Rows ``lo:hi`` through every tree (``X1``: X flattened, rows of ``n_features``).

    Measured alternatives (kernel alone, 200k x 28 rows, 100 depth-6 trees, 2 threads, each
    against the eight-row walk in the same interleaved run; 2026-12-02): 4 rows in registers,
    1.14x the time; 12 or 16 rows, 1.07-1.09x (registers spill); the nodes as 16-byte records
    (threshold and a packed feature / child / missing bit) decoded each step, 1.3x; complete-tree
    (heap) layouts that compute the child instead of loading it, 0.99x on these full trees but
    1.02-1.07x on NaN inputs and on the 26-class set's sparse trees, so not kept; 128-row blocks
    the same, 256 slower. The missing-value test in every step costs 1.7x, hence the per-block
    NaN pass (about 1 ms of the 36)."""
    nf = _U(n_features)
    for t in range(start.shape[0]):
        b, d, c = start[t], depth[t], tree_class[t]
        i = lo
        # Eight rows at a time, their slots kept in registers through all `d` levels: eight
        # independent chains of loads overlap, and no slot goes through memory between levels.
        while i + 8 <= hi:
            r0 = _U(i) * nf
            r1 = r0 + nf
            r2 = r1 + nf
            r3 = r2 + nf
            r4 = r3 + nf
            r5 = r4 + nf
            r6 = r5 + nf
            r7 = r6 + nf
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = b
            for _ in range(d):
                s0 = _step(X1, r0, s0, feature, threshold, default_left, left, nan)
                s1 = _step(X1, r1, s1, feature, threshold, default_left, left, nan)
                s2 = _step(X1, r2, s2, feature, threshold, default_left, left, nan)
                s3 = _step(X1, r3, s3, feature, threshold, default_left, left, nan)
                s4 = _step(X1, r4, s4, feature, threshold, default_left, left, nan)
                s5 = _step(X1, r5, s5, feature, threshold, default_left, left, nan)
                s6 = _step(X1, r6, s6, feature, threshold, default_left, left, nan)
                s7 = _step(X1, r7, s7, feature, threshold, default_left, left, nan)
            out[i, c] += value[s0]
            out[i + 1, c] += value[s1]
            out[i + 2, c] += value[s2]
            out[i + 3, c] += value[s3]
            out[i + 4, c] += value[s4]
            out[i + 5, c] += value[s5]
            out[i + 6, c] += value[s6]
            out[i + 7, c] += value[s7]
            i += 8
        while i < hi:  # the block's last rows, one at a time
            r0, s0 = _U(i) * nf, b
            for _ in range(d):
                s0 = _step(X1, r0, s0, feature, threshold, default_left, left, nan)
            out[i, c] += value[s0]
            i += 1


@njit(cache=True, nogil=True)
def _predict_block(X, lo, hi, start, depth, feature, threshold, default_left, left, value,
                   tree_class, out):  # pragma: no cover - numba
    """``out[i, tree_class[t]] += value of row i's leaf in tree t`` for rows ``lo:hi``, tree by
    tree in order: every (row, output) sum adds the same float64 values in the same order as a
    plain per-row walk, so the results are equal bit for bit. A first pass over the block's
    values picks the step: with a NaN anywhere in the block, the one that tests for it."""
    n_features = X.shape[1]
    X1 = X.reshape(-1)
    has_nan = False
    for i in range(lo, hi):
        for k in range(n_features):
            has_nan |= X[i, k] != X[i, k]
    if has_nan:
        _walk_block(X1, n_features, lo, hi, start, depth, feature, threshold, default_left, left,
                    value, tree_class, out, True)
    else:
        _walk_block(X1, n_features, lo, hi, start, depth, feature, threshold, default_left, left,
                    value, tree_class, out, False)


@njit(parallel=True, cache=True, nogil=True)
def _predict_parallel(X, start, depth, feature, threshold, default_left, left, value, tree_class,
                      out):  # pragma: no cover - numba
    n = X.shape[0]
    for blk in prange((n + BLOCK - 1) // BLOCK):
        _predict_block(X, blk * BLOCK, min(n, (blk + 1) * BLOCK), start, depth, feature,
                       threshold, default_left, left, value, tree_class, out)


@njit(cache=True, nogil=True)
def _predict_serial(X, start, depth, feature, threshold, default_left, left, value, tree_class,
                    out):  # pragma: no cover - numba
    n = X.shape[0]
    for blk in range((n + BLOCK - 1) // BLOCK):
        _predict_block(X, blk * BLOCK, min(n, (blk + 1) * BLOCK), start, depth, feature,
                       threshold, default_left, left, value, tree_class, out)


def predict_raw(forest: Forest, X: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Add every tree's leaf value to ``out`` (shape (n, n_outputs)), in place; returns ``out``.

    ``X``: float64, shape (n, n_features), NaN = missing.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    if forest.roots.shape[0] and forest.categorical is not None:
        # trees with categorical splits: a plain walk per row (numeric-only forests take the
        # kernel below)
        start, n_words, bits = forest.categorical
        args = (forest.feature, forest.threshold, forest.default_left, forest.left, forest.right,
                forest.value, forest.roots, forest.tree_class, start, n_words, bits, out)
        if X.shape[0] * forest.roots.shape[0] >= PARALLEL_MIN_WORK:
            _predict_cat_parallel(X, *args)
        else:
            _predict_rows_cat(X, 0, X.shape[0], *args)
        return out
    if forest.roots.shape[0]:
        if not isinstance(forest._kernel, KernelArrays):  # (a pickle may hold an older layout)
            forest._kernel = kernel_arrays(forest)
        n_trees = forest.roots.shape[0]
        parallel = X.shape[0] >= 2 * BLOCK and X.shape[0] * n_trees >= PARALLEL_MIN_WORK
        kernel = _predict_parallel if parallel else _predict_serial
        kernel(X, *forest._kernel, forest.tree_class, out)
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
