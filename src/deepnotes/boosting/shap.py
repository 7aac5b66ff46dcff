"""Exact TreeSHAP contributions and SHAP interaction values of a boosted forest.

Lundberg, Erion & Lee (2018), "Consistent Individualized Feature Attribution for Tree Ensembles",
arXiv:1802.03888, Algorithm 2 (polynomial-time TreeSHAP) and Sec. 4 (SHAP interaction values).

The value of a feature subset ``S`` for a row ``x`` is the tree's conditional expectation
``v(S) = E[f(x) | x_S]`` as TreeSHAP defines it: at a node splitting on a feature in ``S`` follow
``x`` (a missing value follows the node's default direction); otherwise average both children
weighted by their covers (hessian sums of the training rows, as xgboost uses). The Shapley values
of ``v`` (Eq. 9 of the gbdt-to-xgboost post) are computed in ``O(L D^2)`` per tree and row
(``L`` leaves, ``D`` depth) by tracking, along each root-to-leaf path, the weights of every
subset size ("extend" and "unwind" of the paper's Algorithm 2).

For many rows the same values come faster from precomputed leaves (Yang 2021, "Fast TreeSHAP:
Accelerating SHAP Value Computation for Trees", arXiv:2109.09847, its v2): a leaf's contributions
depend on the row only through which of its path's ``u`` distinct features the row follows, so
all ``2^u`` cases are tabulated once per leaf and a row then costs ``O(L D)`` per tree.
``tree_contributions(method='auto')`` picks whichever costs less (:func:`contributions_method`).

Interaction values (Eq. 11): for each feature ``i`` the tree is explained twice more, once with
``i`` always following ``x`` ("on") and once always averaged ("off"); the off-diagonal entry is
``(phi_j^on - phi_j^off) / 2`` and the diagonal makes each row of the matrix sum to ``phi_i``.
Only features the tree splits on are conditioned (the others give equal on/off values).

Layout (xgboost's ``pred_contribs`` / ``pred_interactions``): the last column is the bias, the
base score plus every tree's expected value ``E[f(x)] = v({})``. So a row of contributions sums
to the raw score (margin), Eq. 10.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from deepnotes.boosting.predictor import Tree, categorical_goes_left, category_bitsets

#: Rows per parallel work item (each item allocates its own path buffers).
_BLOCK = 16


def _flatten(trees: list[Tree], tree_class) -> tuple:
    """Concatenated node arrays with absolute child ids, per-tree roots, classes, depths and the
    sorted distinct split features of each tree (``feats[fstart[t]:fstart[t+1]]``)."""
    sizes = np.array([t.n_nodes for t in trees], dtype=np.int64)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    left = np.concatenate([np.where(t.left >= 0, t.left + r, -1)
                           for t, r in zip(trees, roots, strict=True)]).astype(np.int64)
    right = np.concatenate([np.where(t.right >= 0, t.right + r, -1)
                            for t, r in zip(trees, roots, strict=True)]).astype(np.int64)
    feature = np.concatenate([t.feature for t in trees]).astype(np.int64)
    threshold = np.concatenate([t.threshold for t in trees]).astype(np.float64)
    default_left = np.concatenate([t.default_left for t in trees]).astype(np.bool_)
    value = np.concatenate([t.value for t in trees]).astype(np.float64)
    cover = np.concatenate([t.cover for t in trees]).astype(np.float64)
    depths = np.array([t.depth() for t in trees], dtype=np.int64)
    used = [np.unique(t.feature[t.left != -1]).astype(np.int64) for t in trees]
    fstart = np.concatenate([[0], np.cumsum([len(u) for u in used])]).astype(np.int64)
    feats = np.concatenate(used).astype(np.int64) if used else np.empty(0, np.int64)
    return (feature, threshold, default_left, left, right, value, cover, roots,
            np.asarray(tree_class, dtype=np.int64), depths, feats, fstart)


def _categorical(trees: list[Tree]) -> tuple:
    """``predictor.category_bitsets`` of the concatenated trees; for trees without categorical
    splits, ``start = -1`` everywhere (every split numeric)."""
    sizes = np.array([t.n_nodes for t in trees], dtype=np.int64)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    cat = category_bitsets(trees, roots)
    if cat is None:
        cat = (np.full(int(sizes.sum()), -1, dtype=np.int64), np.zeros(1, dtype=np.int64),
               np.zeros(1, dtype=np.uint64))
    return cat


@njit(cache=True, nogil=True, inline="always")
def _goes_left(xv, node, threshold, default_left, cat):  # pragma: no cover - numba
    # the split's direction for value xv: NaN -> default side; categorical or numeric test
    if xv != xv:
        return default_left[node]
    if cat[0][node] >= 0:
        return categorical_goes_left(xv, default_left[node], cat[0][node], cat[1][node], cat[2])
    return xv <= threshold[node]


# --- the path algebra of Algorithm 2 (one path = one row of the level buffers) -----------------
@njit(cache=True, nogil=True)
def _extend(pf, pz, po, pw, ud, zero_fraction, one_fraction, feature):  # pragma: no cover
    """Append a split on ``feature`` to the path of length ``ud`` (EXTEND)."""
    pf[ud] = feature
    pz[ud] = zero_fraction
    po[ud] = one_fraction
    pw[ud] = 1.0 if ud == 0 else 0.0
    inv = 1.0 / (ud + 1)
    for i in range(ud - 1, -1, -1):
        pw[i + 1] += one_fraction * pw[i] * ((i + 1) * inv)
        pw[i] = zero_fraction * pw[i] * ((ud - i) * inv)


@njit(cache=True, nogil=True)
def _unwind(pf, pz, po, pw, ud, k):  # pragma: no cover - numba
    """Remove element ``k`` from the path whose last index is ``ud`` (UNWIND)."""
    one, zero = po[k], pz[k]
    nxt = pw[ud]
    for i in range(ud - 1, -1, -1):
        if one != 0.0:
            tmp = pw[i]
            pw[i] = nxt * (ud + 1) / ((i + 1) * one)
            nxt = tmp - pw[i] * zero * (ud - i) / (ud + 1)
        else:
            pw[i] = pw[i] * (ud + 1) / (zero * (ud - i))
    for i in range(k, ud):
        pf[i] = pf[i + 1]
        pz[i] = pz[i + 1]
        po[i] = po[i + 1]


@njit(cache=True, nogil=True)
def _unwound_sum(pz, po, pw, ud, k):  # pragma: no cover - numba
    """Total weight of the path with element ``k`` unwound, without modifying it."""
    one, zero = po[k], pz[k]
    nxt = pw[ud]
    total = 0.0
    inv = 1.0 / (ud + 1)
    if one == 1.0:  # the usual case (one fractions are 0 or 1): no division in the chain
        for i in range(ud - 1, -1, -1):
            tmp = nxt * ((ud + 1) / (i + 1))
            total += tmp
            nxt = pw[i] - tmp * zero * ((ud - i) * inv)
    elif one != 0.0:
        for i in range(ud - 1, -1, -1):
            tmp = nxt * (ud + 1) / ((i + 1) * one)
            total += tmp
            nxt = pw[i] - tmp * zero * ((ud - i) * inv)
    elif zero != 0.0:
        for i in range(ud - 1, -1, -1):
            total += pw[i] * (ud + 1) / (zero * (ud - i))
    return total


@njit(cache=True, nogil=True)
def _tree_shap(x, root, feature, threshold, default_left, cat, left, right, value, cover, phi,
               condition, cond_feature, PF, PZ, PO, PW, stack_node, stack_ud, stack_z,
               stack_o, stack_f, stack_c, stack_l):  # pragma: no cover - numba
    """Add one tree's SHAP values for row ``x`` to ``phi`` (shape (n_features,)).

    ``condition``: 0 plain; +1 / -1: feature ``cond_feature`` always follows ``x`` / is always
    averaged (the on / off runs of the interaction values). Depth-first with an explicit stack;
    the path of a node at level ``L`` lives in row ``L`` of the ``P*`` buffers, built from its
    parent's (row ``L - 1``, which its siblings' subtrees never overwrite).
    """
    top = 0
    stack_node[0] = root
    stack_ud[0] = 0
    stack_z[0] = 1.0
    stack_o[0] = 1.0
    stack_f[0] = -1
    stack_c[0] = 1.0
    stack_l[0] = 0
    while top >= 0:
        node = stack_node[top]
        ud = stack_ud[top]
        zf = stack_z[top]
        of = stack_o[top]
        pfeat = stack_f[top]
        cf = stack_c[top]
        L = stack_l[top]
        top -= 1
        if cf == 0.0:
            continue
        pf, pz, po, pw = PF[L], PZ[L], PO[L], PW[L]
        if L > 0:
            for i in range(ud + 1):
                pf[i] = PF[L - 1, i]
                pz[i] = PZ[L - 1, i]
                po[i] = PO[L - 1, i]
                pw[i] = PW[L - 1, i]
        if condition == 0 or cond_feature != pfeat:
            _extend(pf, pz, po, pw, ud, zf, of, pfeat)
        if left[node] == -1:
            v = value[node] * cf
            s0 = np.nan
            for i in range(1, ud + 1):
                if po[i] == 0.0:
                    # cold element: its unwound sum is s0 / z, so it adds -s0 v whatever its z
                    if pz[i] != 0.0:
                        if s0 != s0:
                            s0 = 0.0
                            for j in range(ud):
                                s0 += pw[j] * (ud + 1) / (ud - j)
                        phi[pf[i]] -= s0 * v
                else:
                    w = _unwound_sum(pz, po, pw, ud, i)
                    phi[pf[i]] += w * (po[i] - pz[i]) * v
            continue
        f = feature[node]
        go_left = _goes_left(x[f], node, threshold, default_left, cat)
        hot = left[node] if go_left else right[node]
        cold = right[node] if go_left else left[node]
        w = cover[node]
        hot_z = cover[hot] / w
        cold_z = cover[cold] / w
        inc_z = 1.0
        inc_o = 1.0
        k = 0
        while k <= ud and pf[k] != f:
            k += 1
        if k <= ud:  # feature already on the path: undo it, redo it here
            inc_z = pz[k]
            inc_o = po[k]
            _unwind(pf, pz, po, pw, ud, k)
            ud -= 1
        hot_c = cf
        cold_c = cf
        if condition > 0 and f == cond_feature:
            cold_c = 0.0
            ud -= 1
        elif condition < 0 and f == cond_feature:
            hot_c *= hot_z
            cold_c *= cold_z
            ud -= 1
        # push cold first so that the hot child is explored first (order is immaterial)
        top += 1
        stack_node[top] = cold
        stack_ud[top] = ud + 1
        stack_z[top] = cold_z * inc_z
        stack_o[top] = 0.0
        stack_f[top] = f
        stack_c[top] = cold_c
        stack_l[top] = L + 1
        top += 1
        stack_node[top] = hot
        stack_ud[top] = ud + 1
        stack_z[top] = hot_z * inc_z
        stack_o[top] = inc_o
        stack_f[top] = f
        stack_c[top] = hot_c
        stack_l[top] = L + 1


@njit(cache=True, nogil=True)
def _expected_values(roots, left, right, value, cover, out):  # pragma: no cover - numba
    """``out[t]`` = cover-weighted mean leaf value of tree ``t`` (its ``v({})``)."""
    for t in range(roots.shape[0]):
        total = 0.0
        stack = [roots[t]]
        while len(stack) > 0:
            node = stack.pop()
            if left[node] == -1:
                total += cover[node] * value[node]
            else:
                stack.append(left[node])
                stack.append(right[node])
        out[t] = total / cover[roots[t]]


@njit(cache=True, nogil=True)
def _shap_scratch(d):  # pragma: no cover - numba
    # one thread's work arrays for _tree_shap on trees of depth <= d - 2: the path tables
    # (feature, zero and one fractions, weights; d x d) and the explicit stack's columns (2d)
    return (np.empty((d, d), np.int64), np.empty((d, d)), np.empty((d, d)), np.empty((d, d)),
            np.empty(2 * d, np.int64), np.empty(2 * d, np.int64), np.empty(2 * d),
            np.empty(2 * d), np.empty(2 * d, np.int64), np.empty(2 * d),
            np.empty(2 * d, np.int64))


@njit(parallel=True, cache=True, nogil=True)
def _contribs_kernel(X, feature, threshold, default_left, cat, left, right, value, cover, roots,
                     tree_class, max_depth, out):  # pragma: no cover - numba
    n = X.shape[0]
    d = max_depth + 2
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        PF, PZ, PO, PW, sn, su, sz, so, sf, sc, sl = _shap_scratch(d)
        for r in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            for t in range(roots.shape[0]):
                _tree_shap(X[r], roots[t], feature, threshold, default_left, cat, left, right,
                           value, cover, out[r, tree_class[t]], 0, -1, PF, PZ, PO, PW, sn, su,
                           sz, so, sf, sc, sl)


@njit(parallel=True, cache=True, nogil=True)
def _interactions_kernel(X, feature, threshold, default_left, cat, left, right, value, cover, roots,
                         tree_class, feats, fstart, max_depth, out):  # pragma: no cover - numba
    # out: (n, K, M + 1, M + 1); off-diagonal entries only (the caller fills the diagonal).
    n = X.shape[0]
    M = X.shape[1]
    d = max_depth + 2
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        PF, PZ, PO, PW, sn, su, sz, so, sf, sc, sl = _shap_scratch(d)
        on = np.zeros(M + 1)
        off = np.zeros(M + 1)
        for r in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            for t in range(roots.shape[0]):
                c = tree_class[t]
                for q in range(fstart[t], fstart[t + 1]):
                    i = feats[q]
                    for j in range(fstart[t], fstart[t + 1]):
                        on[feats[j]] = 0.0
                        off[feats[j]] = 0.0
                    _tree_shap(X[r], roots[t], feature, threshold, default_left, cat, left, right,
                               value, cover, on, 1, i, PF, PZ, PO, PW, sn, su, sz, so, sf, sc, sl)
                    _tree_shap(X[r], roots[t], feature, threshold, default_left, cat, left, right,
                               value, cover, off, -1, i, PF, PZ, PO, PW, sn, su, sz, so, sf, sc, sl)
                    for j in range(fstart[t], fstart[t + 1]):
                        f = feats[j]
                        if f != i:
                            out[r, c, i, f] += (on[f] - off[f]) * 0.5


# --- precomputed leaves (Yang 2021, "Fast TreeSHAP", v2) ---------------------------------------
# For one leaf, Algorithm 2 depends on the row only through which of the path's distinct features
# the row "follows" (one fraction 1: x satisfies every split on that feature along the path) and
# which it does not (0). So each leaf's contributions for all 2^u such masks (u distinct features
# on its path, zero fractions fixed by the covers) are computed once; a row then costs one mask
# and u additions per leaf: O(L D) per tree instead of O(L D^2).

#: Largest number of precomputed doubles (2^u u summed over leaves) before falling back to paths.
PRECOMPUTE_MAX = 1 << 25


def _leaf_paths(trees: list[Tree]) -> tuple:
    """Per leaf (all trees, in order): its distinct path features with their zero fractions
    (product of child/parent cover ratios), and its split conditions (node, went left, element).
    Node ids are absolute (trees concatenated as in :func:`_flatten`)."""
    leaf_node, leaf_tree, e_start, e_feat, e_zero, c_start, c_node, c_left, c_elem = \
        [], [], [0], [], [], [0], [], [], []
    base = 0
    for t, tree in enumerate(trees):
        stack = [(0, [])]  # (node, path: list of (node, went_left))
        while stack:
            node, path = stack.pop()
            if tree.left[node] != -1:
                stack.append((int(tree.right[node]), path + [(node, False)]))
                stack.append((int(tree.left[node]), path + [(node, True)]))
                continue
            elem: dict[int, int] = {}
            for parent, went_left in path:
                f = int(tree.feature[parent])
                child = tree.left[parent] if went_left else tree.right[parent]
                if f not in elem:
                    elem[f] = len(e_feat) - e_start[-1]
                    e_feat.append(f)
                    e_zero.append(1.0)
                k = e_start[-1] + elem[f]
                e_zero[k] *= tree.cover[child] / tree.cover[parent]
                c_node.append(base + parent)
                c_left.append(went_left)
                c_elem.append(elem[f])
            leaf_node.append(base + node)
            leaf_tree.append(t)
            e_start.append(len(e_feat))
            c_start.append(len(c_node))
        base += tree.n_nodes
    i64 = np.int64
    return (np.array(leaf_node, i64), np.array(leaf_tree, i64), np.array(e_start, i64),
            np.array(e_feat, i64), np.array(e_zero, np.float64), np.array(c_start, i64),
            np.array(c_node, i64), np.array(c_left, np.bool_), np.array(c_elem, i64))


@njit(parallel=True, cache=True, nogil=True)
def _precompute_leaves(leaf_node, value, e_start, e_zero, v_start, table):  # pragma: no cover
    """``table[v_start[l] + mask * u + k]``: contribution of leaf ``l``'s element ``k`` when the
    row follows exactly the elements in ``mask`` (Algorithm 2 on that path)."""
    for leaf in prange(leaf_node.shape[0]):
        e0 = e_start[leaf]
        u = e_start[leaf + 1] - e0
        v = value[leaf_node[leaf]]
        pf = np.empty(u + 1, np.int64)
        pz = np.empty(u + 1)
        po = np.empty(u + 1)
        pw = np.empty(u + 1)
        for mask in range(1 << u):
            _extend(pf, pz, po, pw, 0, 1.0, 1.0, -1)
            for k in range(u):
                _extend(pf, pz, po, pw, k + 1, e_zero[e0 + k], float((mask >> k) & 1), k)
            base = v_start[leaf] + mask * u
            for k in range(u):
                w = _unwound_sum(pz, po, pw, u, k + 1)
                table[base + k] = w * (po[k + 1] - pz[k + 1]) * v


@njit(parallel=True, cache=True, nogil=True)
def _precomputed_kernel(X, feature, threshold, default_left, cat, left, roots, sizes, tree_class,
                        leaf_start, e_start, e_feat, v_start, table, c_start, c_node, c_left,
                        c_elem, out):  # pragma: no cover - numba
    n = X.shape[0]
    max_size = 0
    for t in range(roots.shape[0]):
        max_size = max(max_size, sizes[t])
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        goes_left = np.empty(max_size, np.bool_)
        for r in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            for t in range(roots.shape[0]):
                root = roots[t]
                for j in range(sizes[t]):
                    node = root + j
                    if left[node] != -1:
                        goes_left[j] = _goes_left(X[r, feature[node]], node, threshold,
                                                  default_left, cat)
                phi = out[r, tree_class[t]]
                for leaf in range(leaf_start[t], leaf_start[t + 1]):
                    e0 = e_start[leaf]
                    u = e_start[leaf + 1] - e0
                    mask = (1 << u) - 1
                    for c in range(c_start[leaf], c_start[leaf + 1]):
                        if goes_left[c_node[c] - root] != c_left[c]:
                            mask &= ~(1 << c_elem[c])
                    base = v_start[leaf] + mask * u
                    for k in range(u):
                        phi[e_feat[e0 + k]] += table[base + k]


def _pick_method(e_start, n_rows: int) -> str:
    """'precomputed' when the table fits in PRECOMPUTE_MAX doubles and costs less to build than
    walking the paths of ``n_rows`` rows (about 2^u u^2 vs u^2 per row, per leaf), else 'path'."""
    u = np.diff(e_start)
    per_leaf = np.exp2(u) * u  # float: no overflow on deep trees
    if per_leaf.sum() <= PRECOMPUTE_MAX and (per_leaf * u).sum() <= n_rows * (u * u).sum():
        return "precomputed"
    return "path"


def contributions_method(trees: list[Tree], n_rows: int) -> str:
    """The algorithm ``tree_contributions(..., method='auto')`` uses for ``n_rows`` rows."""
    return _pick_method(_leaf_paths(trees)[2], n_rows) if trees else "path"


def _contribs_precomputed(trees, flat, paths, X, out) -> None:
    """Add every tree's contributions to ``out`` through precomputed leaves."""
    (feature, threshold, default_left, left, right, value, cover, roots, tclass, depths,
     _, _) = flat
    leaf_node, leaf_tree, e_start, e_feat, e_zero, c_start, c_node, c_left, c_elem = paths
    u = np.diff(e_start)
    if u.size and u.max() > 24:
        raise ValueError(f"method='precomputed': a leaf has {u.max()} distinct features on its "
                         "path (2^u values per leaf); use method='path' or 'auto'")
    v_start = np.concatenate([[0], np.cumsum((1 << u) * u)]).astype(np.int64)
    table = np.empty(int(v_start[-1]))
    _precompute_leaves(leaf_node, value, e_start, e_zero, v_start, table)
    sizes = np.array([t.n_nodes for t in trees], dtype=np.int64)
    leaf_start = np.searchsorted(leaf_tree, np.arange(len(trees) + 1)).astype(np.int64)
    cat = _categorical(trees)
    _precomputed_kernel(X, feature, threshold, default_left, cat, left, roots, sizes, tclass,
                        leaf_start, e_start, e_feat, v_start, table, c_start, c_node, c_left,
                        c_elem, out)


def _check_X(X) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if np.isinf(X).any():
        raise ValueError("X contains infinity; only NaN (missing) is allowed")
    return X


def tree_contributions(trees: list[Tree], tree_class, n_outputs: int, base_score: np.ndarray,
                       X: np.ndarray, method: str = "auto") -> np.ndarray:
    """Exact TreeSHAP values (Algorithm 2) of a forest, bias in the last column.

    Parameters
    ----------
    trees : list of Tree        leaf ``value`` includes the learning rate; ``cover`` = hessian sum
    tree_class : int array, shape (n_trees,)   output each tree adds to
    n_outputs : int             K (1 for regression / binary)
    base_score : float array, shape (K,)       raw (margin) starting score
    X : float64, shape (n_samples, n_features), NaN = missing (default direction)
    method : 'auto' | 'path' | 'precomputed'
        'path': Algorithm 2 for every row and tree. 'precomputed': every leaf's values for all
        masks of followed features first, then O(L D) per row and tree (same values up to
        rounding). 'auto': precomputed when it costs less for these rows and fits in
        PRECOMPUTE_MAX doubles, else path.

    Returns
    -------
    float64 array, shape (n_samples, K, n_features + 1); ``out.sum(-1)`` is the raw score.
    """
    if method not in ("auto", "path", "precomputed"):
        raise ValueError(f"method must be 'auto', 'path' or 'precomputed', got {method!r}")
    X = _check_X(X)
    n, M = X.shape
    out = np.zeros((n, n_outputs, M + 1))
    out[:, :, M] = base_score
    if not trees:
        return out
    flat = _flatten(trees, tree_class)
    (feature, threshold, default_left, left, right, value, cover, roots, tclass, depths,
     _, _) = flat
    ev = np.empty(roots.shape[0])
    _expected_values(roots, left, right, value, cover, ev)
    out[:, :, M] += np.bincount(tclass, weights=ev, minlength=n_outputs)
    if n and method != "path":
        paths = _leaf_paths(trees)
        if method == "precomputed" or _pick_method(paths[2], n) == "precomputed":
            _contribs_precomputed(trees, flat, paths, X, out)
            return out
    if n:
        cat = _categorical(trees)
        _contribs_kernel(X, feature, threshold, default_left, cat, left, right, value, cover, roots,
                         tclass, int(depths.max()), out)
    return out


def tree_interactions(trees: list[Tree], tree_class, n_outputs: int, base_score: np.ndarray,
                      X: np.ndarray) -> np.ndarray:
    """SHAP interaction values (Lundberg et al. 2018, Sec. 4) of a forest.

    Returns
    -------
    float64 array, shape (n_samples, K, n_features + 1, n_features + 1), symmetric in the last
    two axes; ``out.sum(-1)`` equals :func:`tree_contributions`. The bias sits at ``[M, M]``
    (its row and column are zero elsewhere), as in xgboost's ``pred_interactions``.
    """
    X = _check_X(X)
    n, M = X.shape
    contrib = tree_contributions(trees, tree_class, n_outputs, base_score, X)
    out = np.zeros((n, n_outputs, M + 1, M + 1))
    if trees and n:
        (feature, threshold, default_left, left, right, value, cover, roots, tclass, depths,
         feats, fstart) = _flatten(trees, tree_class)
        cat = _categorical(trees)
        _interactions_kernel(X, feature, threshold, default_left, cat, left, right, value, cover,
                             roots, tclass, feats, fstart, int(depths.max()), out)
    idx = np.arange(M + 1)
    out[:, :, idx, idx] = contrib - out.sum(axis=-1)
    return out


__all__ = ["contributions_method", "tree_contributions", "tree_interactions"]
