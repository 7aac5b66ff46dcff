"""CART trees on binned features, grown and evaluated in numba (the base learner of
:mod:`deepnotes.boosting.forest` and :mod:`deepnotes.boosting.ensemble`).

**One criterion for both tasks.** Every tree here minimises a weighted sum of squares of
``K``-dimensional targets ``y_i``: one-hot class indicators for a classifier, the value itself for
a regressor. With ``W = sum_i w_i`` and ``S_k = sum_i w_i y_ik`` over a node's rows, a split into
children L, R lowers the node's weighted sum of squares by (Eq. 1 of the post)

    Delta = sum_k S_Lk^2 / W_L + sum_k S_Rk^2 / W_R - sum_k S_k^2 / W.

For one-hot targets ``W * Gini = W (1 - sum_k p_k^2) = W - sum_k S_k^2 / W``, so ``Delta`` is
exactly the weighted Gini decrease of CART (Breiman et al., 1984); for ``K = 1`` it is the
variance (squared-error) reduction. It is also twice XGBoost's gain (Eq. 4 of the gbdt post,
:func:`deepnotes.boosting.splitting.split_gain`) with ``g_i = -w_i y_i``, ``h_i = w_i``,
``lambda = alpha = gamma = 0``, summed over the ``K`` outputs: a Gini tree is a one-step squared
error boosting tree on the class indicators. A leaf stores ``S / W`` (class frequencies, or mean).

**Why a grower of its own.** :mod:`deepnotes.boosting.grower` grows one scalar output per tree
with a Python loop over nodes, which suits shallow boosting trees. A forest's trees are grown to
purity (thousands of nodes each), need all ``K`` outputs in one split (the Gini sum above) and
draw a new feature subset at every node, so :func:`grow_cart` builds a whole tree in one numba
call (depth first, an explicit stack, rows partitioned in place); it reuses the quantile bins of
:class:`deepnotes.boosting.binning.BinMapper` (NaN gets its own bin and a learned default side,
tried both ways as in :mod:`deepnotes.boosting.splitting`). Trees of one forest grow on Python
threads: the kernel releases the GIL (``nogil=True``), as scikit-learn's trees do.

Per-node feature sampling follows scikit-learn: draw features without replacement until
``max_features`` have been looked at and at least one of them is not constant in the node.
Deviation from scikit-learn's exact CART: split candidates are the bin edges (midpoints between
distinct values when a feature has at most ``max_bin`` of them, weighted quantiles otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from deepnotes.boosting.binning import BinMapper


@njit(cache=True, nogil=True, inline="always")
def _next(state):  # pragma: no cover - numba
    # xorshift64*: a per-tree generator, so the tree does not depend on which thread grows it.
    x = state[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[0] = x
    return (x * np.uint64(2685821657736338717)) >> np.uint64(11)


@njit(cache=True, nogil=True)
def _node_histogram(col, rows, a, b, Y, w, missing_bin, hist):  # pragma: no cover - numba
    """Fill ``hist[bin] = (S_1..S_K, W, count)`` of one feature over ``rows[a:b]``; returns the
    lowest and highest non-missing bin present (``hi = -1``: all missing)."""
    K = Y.shape[1]
    lo = missing_bin
    hi = -1
    for i in range(a, b):
        v = np.int64(col[rows[i]])
        if v != missing_bin:
            lo = min(lo, v)
            hi = max(hi, v)
    for v in range(max(lo, 0), hi + 1):
        hist[v, :] = 0.0
    hist[missing_bin, :] = 0.0
    for i in range(a, b):
        r = rows[i]
        v = np.int64(col[r])
        wi = w[r]
        for k in range(K):
            hist[v, k] += wi * Y[r, k]
        hist[v, K] += wi
        hist[v, K + 1] += 1.0
    return lo, hi


@njit(cache=True, nogil=True, inline="always")
def _proxy(L, S, WL, W, K):  # pragma: no cover - numba
    # sum_k S_Lk^2 / W_L + sum_k S_Rk^2 / W_R: the part of Delta (Eq. 1) that depends on the split
    sl = 0.0
    sr = 0.0
    for k in range(K):
        sl += L[k] * L[k]
        d = S[k] - L[k]
        sr += d * d
    return sl / WL + sr / (W - WL)


@njit(cache=True, nogil=True)
def grow_cart(Xb, Y, w, rows, features, n_edges, missing_bin, max_features, max_depth,
              min_samples_split, min_samples_leaf, seed):  # pragma: no cover - numba
    """Grow one CART tree (Eq. 1) on the rows ``rows`` (reordered in place).

    Parameters
    ----------
    Xb : ndarray of uint, shape (n, n_features), Fortran order    binned features (BinMapper)
    Y : ndarray, shape (n, K)        targets: one-hot classes or regression values
    w : ndarray, shape (n,)          sample weights (bootstrap counts times user weights)
    rows : ndarray of int64, shape (m,)   rows with ``w > 0``, each once (weights count repeats)
    features : ndarray of int64      features the tree may use; ``max_features`` drawn per node
    max_depth : int                  -1 for no limit
    seed : uint64                    non-zero state of the per-tree generator

    Returns
    -------
    feature, bin_threshold, default_left, left, right, value (n_nodes, K), weight, improvement:
    node arrays; children of a node are adjacent (``right = left + 1``); ``improvement`` is
    ``Delta`` of the node's split (0 at leaves).
    """
    K = Y.shape[1]
    m = rows.shape[0]
    cap = 2 * m + 1
    feature = np.full(cap, -1, np.int32)
    bin_thr = np.full(cap, -1, np.int32)
    dleft = np.zeros(cap, np.uint8)
    left = np.full(cap, -1, np.int32)
    right = np.full(cap, -1, np.int32)
    value = np.zeros((cap, K))
    weight = np.zeros(cap)
    improvement = np.zeros(cap)
    st_node = np.empty(cap, np.int64)
    st_a = np.empty(cap, np.int64)
    st_b = np.empty(cap, np.int64)
    st_depth = np.empty(cap, np.int64)
    hist = np.zeros((missing_bin + 1, K + 2))
    S = np.empty(K)
    L = np.empty(K)
    L2 = np.empty(K)
    feats = features.copy()
    nf = feats.shape[0]
    buf = np.empty(m, rows.dtype)
    state = np.array([seed], dtype=np.uint64)
    n_nodes = 1
    top = 1
    st_node[0], st_a[0], st_b[0], st_depth[0] = 0, 0, m, 0
    while top > 0:
        top -= 1
        node, a, b, depth = st_node[top], st_a[top], st_b[top], st_depth[top]
        S[:] = 0.0
        W = 0.0
        Q = 0.0
        for i in range(a, b):
            r = rows[i]
            wi = w[r]
            W += wi
            for k in range(K):
                yk = Y[r, k]
                S[k] += wi * yk
                Q += wi * yk * yk
        parent = 0.0
        for k in range(K):
            value[node, k] = S[k] / W
            parent += S[k] * S[k]
        parent /= W
        weight[node] = W
        cnt = b - a
        # Weighted sum of squares Q - sum S^2/W; pure (or constant) nodes are leaves. The
        # relative guard absorbs rounding of the difference for regression targets.
        if ((max_depth >= 0 and depth >= max_depth) or cnt < min_samples_split
                or cnt < 2 * min_samples_leaf or Q - parent <= 1e-12 * Q):
            continue
        best = -np.inf
        best_f = -1
        best_b = -1
        best_dl = False
        drawn = 0
        visited = 0
        found = False
        while drawn < nf and (visited < max_features or not found):
            idx = drawn + np.int64(_next(state) % np.uint64(nf - drawn))
            j = feats[idx]
            feats[idx] = feats[drawn]
            feats[drawn] = j
            drawn += 1
            visited += 1
            lo, hi = _node_histogram(Xb[:, j], rows, a, b, Y, w, missing_bin, hist)
            n_miss = hist[missing_bin, K + 1]
            if hi < 0 or (lo == hi and n_miss == 0):
                continue  # constant in this node
            found = True
            L[:] = 0.0
            WL = 0.0
            nL = 0.0
            last = hi + 1 if n_miss > 0 else hi
            for v in range(lo, last):
                if hist[v, K + 1] == 0.0:
                    continue  # same partition as the previous bin
                for k in range(K):
                    L[k] += hist[v, k]
                WL += hist[v, K]
                nL += hist[v, K + 1]
                nR = cnt - nL - n_miss
                # weights far below W (late AdaBoost rounds) can round W - W_L to zero
                if (nL >= min_samples_leaf and nR + n_miss >= min_samples_leaf
                        and W - WL > 0.0):
                    p = _proxy(L, S, WL, W, K)
                    if p > best:
                        best, best_f, best_b, best_dl = p, j, v, False
                WL2 = WL + hist[missing_bin, K]
                if (n_miss > 0 and v < hi and nL + n_miss >= min_samples_leaf
                        and nR >= min_samples_leaf and W - WL2 > 0.0):
                    for k in range(K):
                        L2[k] = L[k] + hist[missing_bin, k]
                    p = _proxy(L2, S, WL2, W, K)
                    if p > best:
                        best, best_f, best_b, best_dl = p, j, v, True
        if best_f < 0:
            continue
        col = Xb[:, best_f]
        nl = 0
        nr = 0
        for i in range(a, b):
            r = rows[i]
            v = np.int64(col[r])
            go = (v <= best_b and v != missing_bin) or (v == missing_bin and best_dl)
            if go:
                rows[a + nl] = r
                nl += 1
            else:
                buf[nr] = r
                nr += 1
        for i in range(nr):
            rows[a + nl + i] = buf[i]
        lid = n_nodes
        n_nodes += 2
        feature[node] = best_f
        bin_thr[node] = best_b
        dleft[node] = best_dl
        left[node] = lid
        right[node] = lid + 1
        improvement[node] = best - parent
        st_node[top], st_a[top], st_b[top], st_depth[top] = lid + 1, a + nl, b, depth + 1
        t = top + 1
        st_node[t], st_a[t], st_b[t], st_depth[t] = lid, a, a + nl, depth + 1
        top += 2
    return (feature[:n_nodes], bin_thr[:n_nodes], dleft[:n_nodes], left[:n_nodes],
            right[:n_nodes], value[:n_nodes], weight[:n_nodes], improvement[:n_nodes])


@njit(cache=True, nogil=True, inline="always")
def _leaf(X, i, nd, nodes):  # pragma: no cover - numba
    # One 32-byte row per node (threshold, feature, left child, default-left): a step of the
    # walk touches one cache line instead of one per array. The right child is left + 1.
    while nodes[nd, 2] >= 0.0:
        x = X[i, np.int64(nodes[nd, 1])]
        if x <= nodes[nd, 0] or (x != x and nodes[nd, 3] > 0.0):
            nd = np.int64(nodes[nd, 2])
        else:
            nd = np.int64(nodes[nd, 2]) + 1
    return nd


#: Fewest rows per block of :func:`predict_trees`.
MIN_BLOCK = 256


def predict_trees(X, nodes, value, roots, out) -> None:
    """``out[i] += sum_t value[leaf_t(x_i)]`` over the trees starting at ``roots`` (in place).

    ``X``: float64 (n, n_features), NaN = missing; ``nodes``: (n_nodes, 4) from
    :func:`stack_trees`; ``value``: (n_nodes, K); ``out``: (n, K).

    Rows go in few large blocks (two per thread): a block walks one tree over all its rows before
    the next tree, so the tree's nodes stay in cache, as when predicting tree by tree."""
    n_blocks = max(1, min(-(-X.shape[0] // MIN_BLOCK), 2 * numba.get_num_threads()))
    _predict_blocks(X, nodes, value, roots, out, n_blocks)


@njit(parallel=True, cache=True, nogil=True)
def _predict_blocks(X, nodes, value, roots, out, n_blocks):  # pragma: no cover - numba
    K = value.shape[1]
    n = X.shape[0]
    size = (n + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        for t in range(roots.shape[0]):
            for i in range(blk * size, min(n, (blk + 1) * size)):
                nd = _leaf(X, i, roots[t], nodes)
                for k in range(K):
                    out[i, k] += value[nd, k]


@njit(parallel=True, cache=True, nogil=True)
def predict_oob(X, nodes, value, roots, in_bag, out, n_oob):  # pragma: no cover - numba
    """Like :func:`predict_trees`, skipping tree ``t`` for row ``i`` when ``in_bag[t, i]``;
    ``n_oob[i]`` counts the trees that did predict row ``i``."""
    K = value.shape[1]
    for i in prange(X.shape[0]):
        for t in range(roots.shape[0]):
            if in_bag[t, i]:
                continue
            nd = _leaf(X, i, roots[t], nodes)
            n_oob[i] += 1
            for k in range(K):
                out[i, k] += value[nd, k]


@dataclass
class CartTree:
    """One fitted CART tree: node arrays of shape (n_nodes,), ``value`` (n_nodes, K).

    ``threshold`` is in raw feature units (go left when ``x <= threshold``; NaN follows
    ``default_left``); ``value`` holds class frequencies (classifier) or the mean (regressor);
    ``weight`` the weighted row count; ``improvement`` the split's ``Delta`` (Eq. 1)."""

    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    weight: np.ndarray
    improvement: np.ndarray

    @property
    def n_nodes(self) -> int:
        return int(self.feature.shape[0])

    @property
    def n_leaves(self) -> int:
        return int(np.sum(self.left == -1))

    def importances(self, n_features: int) -> np.ndarray:
        """Mean decrease in impurity per feature, normalised to sum 1 (scikit-learn's MDI)."""
        split = self.left != -1
        imp = np.bincount(self.feature[split], weights=self.improvement[split],
                          minlength=n_features)
        return imp / imp.sum() if imp.sum() > 0 else imp


def stack_trees(trees: list[CartTree]) -> tuple:
    """Concatenate trees for :func:`predict_trees`: ``(nodes, value, roots)`` with ``nodes`` of
    shape (n_nodes, 4) holding (threshold, feature, absolute left child or -1, default_left)."""
    sizes = np.array([t.n_nodes for t in trees], dtype=np.int64)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    nodes = np.empty((int(sizes.sum()), 4))
    for t, r in zip(trees, roots, strict=True):
        if np.any(t.right[t.left >= 0] != t.left[t.left >= 0] + 1):
            raise ValueError("right children must directly follow left children")
        rows = slice(r, r + t.n_nodes)
        nodes[rows, 0] = t.threshold
        nodes[rows, 1] = np.maximum(t.feature, 0)
        nodes[rows, 2] = np.where(t.left >= 0, t.left + r, -1)
        nodes[rows, 3] = t.default_left
    return nodes, np.concatenate([t.value for t in trees]), roots


def fit_tree(Xb, mapper: BinMapper, Y, w, features, max_features, max_depth, min_samples_split,
             min_samples_leaf, seed: int) -> CartTree:
    """Grow one :class:`CartTree` on binned data; rows with ``w == 0`` take no part."""
    rows = np.flatnonzero(w > 0).astype(np.int64)
    state = np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64) or 1
    f, b, dl, le, ri, val, wt, imp = grow_cart(
        Xb, Y, w, rows, np.asarray(features, dtype=np.int64), mapper.n_edges_,
        mapper.missing_bin, int(max_features), -1 if max_depth is None else int(max_depth),
        int(min_samples_split), int(min_samples_leaf), np.uint64(state))
    safe = np.where(b >= 0, f, 0)
    edge = mapper.edges_[safe, np.clip(b, 0, mapper.edges_.shape[1] - 1)]
    # a split at the last bin separates non-missing (all left) from missing values
    threshold = np.where(b < 0, 0.0, np.where(b >= mapper.n_edges_[safe], np.inf, edge))
    return CartTree(f, threshold, dl, le, ri, val, wt, imp)


__all__ = ["CartTree", "fit_tree", "grow_cart", "predict_oob", "predict_trees",
           "stack_trees"]
