"""Exact greedy split finding on presorted columns (``tree_method='exact'``; Alg. 1 and 3 of
Chen & Guestrin, 2016).

Every column is sorted once per fit. A tree grows level by level: for each feature (in parallel)
one pass over its sorted non-missing rows accumulates, for *every* open node of the level at once,
the running left sums ``(G_L, H_L)``; wherever the value changes within a node, the split at the
midpoint is scored with both directions for the node's missing rows (Eq. 4, sparsity-aware). So a
level costs ``O(n * n_features)`` however many nodes it has, as in xgboost's ``exact`` updater.
Candidate thresholds are midpoints between consecutive distinct values of the node's rows; the
split sends ``x <= threshold`` left (xgboost: ``x < threshold``, the same partition of the
training rows). Only ``grow_policy='depthwise'`` (like xgboost's ``exact``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from deepnotes.boosting.grower import GrownTree, TreeParams, allowed_features
from deepnotes.boosting.predictor import tree_from_lists
from deepnotes.boosting.splitting import (
    MIN_GAIN,
    clip_weight,
    leaf_score,
    leaf_weight,
    score_given_weight,
)


def presort(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order of every column by value (missing last), shape (n_features, n), int32, and the
    number of non-missing values per column."""
    order = np.argsort(X, axis=0, kind="stable").T.astype(np.int32)
    n_valid = np.sum(~np.isnan(X), axis=0).astype(np.int64)
    return np.ascontiguousarray(order), n_valid


@njit(parallel=True, cache=True)
def _level_splits(X, order, n_valid, slot, grad, hess, allowed, node_n, node_g, node_h, lam,
                  alpha, gamma, mcw, gain, thr, dleft, gl_out, hl_out, mono, has_mono, lower,
                  upper, node_w):  # pragma: no cover
    n_nodes = node_g.shape[0]
    for k in prange(order.shape[0]):
        m = n_valid[k]
        miss_g = node_g.copy()
        miss_h = node_h.copy()
        miss_n = node_n.copy()
        for i in range(m):
            r = order[k, i]
            s = slot[r]
            if s >= 0:
                miss_g[s] -= grad[r]
                miss_h[s] -= hess[r]
                miss_n[s] -= 1
        cg = np.zeros(n_nodes)
        ch = np.zeros(n_nodes)
        last = np.full(n_nodes, np.nan)
        parent = np.empty(n_nodes)
        has_miss = np.empty(n_nodes, dtype=np.bool_)
        for s in range(n_nodes):
            if has_mono:
                parent[s] = score_given_weight(node_g[s], node_h[s], lam, alpha, node_w[s])
            else:
                parent[s] = leaf_score(node_g[s], node_h[s], lam, alpha)
            has_miss[s] = miss_n[s] > 0
            gain[s, k] = MIN_GAIN
            thr[s, k] = np.nan
        r, s, x = 0, 0, 0.0
        for i in range(m + 1):
            if i < m:
                r = order[k, i]
                s = slot[r]
                if s < 0 or not allowed[s, k]:
                    continue
                x = X[r, k]
                if np.isnan(last[s]) or x == last[s]:
                    cg[s] += grad[r]
                    ch[s] += hess[r]
                    last[s] = x
                    continue
                t = last[s] + (x - last[s]) * 0.5
                lo, hi = s, s + 1
            else:  # all non-missing left, missing right
                t = np.inf
                lo, hi = 0, n_nodes
            for s2 in range(lo, hi):
                if i == m and not (has_miss[s2] and allowed[s2, k] and not np.isnan(last[s2])):
                    continue
                for d in range(2):
                    if d == 1 and (not has_miss[s2] or i == m):
                        continue
                    gl = cg[s2] + (miss_g[s2] if d == 1 else 0.0)
                    hl = ch[s2] + (miss_h[s2] if d == 1 else 0.0)
                    gr = node_g[s2] - gl
                    hr = node_h[s2] - hl
                    if hl < mcw or hr < mcw or hl <= 0.0 or hr <= 0.0:
                        continue
                    if has_mono:  # xgboost's monotone constraints (splitting.py, Eq. 15)
                        wl = clip_weight(leaf_weight(gl, hl, lam, alpha), lower[s2], upper[s2])
                        wr = clip_weight(leaf_weight(gr, hr, lam, alpha), lower[s2], upper[s2])
                        if (mono[k] > 0 and wl > wr) or (mono[k] < 0 and wl < wr):
                            continue
                        g = 0.5 * (score_given_weight(gl, hl, lam, alpha, wl)
                                   + score_given_weight(gr, hr, lam, alpha, wr)
                                   - parent[s2]) - gamma
                    else:
                        g = 0.5 * (leaf_score(gl, hl, lam, alpha)
                                   + leaf_score(gr, hr, lam, alpha) - parent[s2]) - gamma
                    if g > gain[s2, k]:
                        gain[s2, k] = g
                        thr[s2, k] = t
                        dleft[s2, k] = d == 1
                        gl_out[s2, k] = gl
                        hl_out[s2, k] = hl
            if i < m:
                cg[s] += grad[r]
                ch[s] += hess[r]
                last[s] = x


@njit(parallel=True, cache=True)
def _route(X, rows, slot, node_of_row, split_f, split_t, split_dl, left_slot, left_id,
           right_id):  # pragma: no cover - numba
    for i in prange(rows.shape[0]):
        r = rows[i]
        s = slot[r]
        if s < 0:
            continue
        f = split_f[s]
        if f < 0:
            slot[r] = -1
            continue
        x = X[r, f]
        go_left = split_dl[s] if np.isnan(x) else x <= split_t[s]
        slot[r] = left_slot[s] if go_left else left_slot[s] + 1
        node_of_row[r] = left_id[s] if go_left else right_id[s]


def grow_tree_exact(X: np.ndarray, presorted, grad: np.ndarray, hess: np.ndarray,
                    rows: np.ndarray, features: np.ndarray, params: TreeParams,
                    rng: np.random.Generator) -> GrownTree:
    """Grow one depth-wise tree by exact greedy search; same contract as ``grower.grow_tree``
    (``rows`` is reordered so that each leaf's rows are contiguous)."""
    p = params
    order, n_valid = presorted
    n, n_features = X.shape
    X = np.ascontiguousarray(X)
    slot = np.full(n, -1, dtype=np.int64)
    slot[rows] = 0
    node_of_row = np.zeros(n, dtype=np.int64)
    g64, h64 = grad.astype(np.float64), hess.astype(np.float64)
    out = {k: [] for k in ("feature", "threshold", "bin_threshold", "default_left", "left",
                           "right", "value", "gain", "cover")}

    def new_node(g, h):
        for k, v in (("feature", -1), ("threshold", 0.0), ("bin_threshold", -1),
                     ("default_left", 0), ("left", -1), ("right", -1), ("gain", 0.0)):
            out[k].append(v)
        out["value"].append(leaf_weight(g, h, p.reg_lambda, p.reg_alpha) * p.learning_rate)
        out["cover"].append(h)
        return len(out["value"]) - 1

    root_g, root_h = float(g64[rows].sum()), float(h64[rows].sum())
    # (node id, G, H, weight, lower, upper, path) per slot: the last four for the constraints
    frontier = [(new_node(root_g, root_h), root_g, root_h,
                 leaf_weight(root_g, root_h, p.reg_lambda, p.reg_alpha), -np.inf, np.inf,
                 frozenset())]
    depth = 0
    allowed_tree = np.zeros(n_features, dtype=np.bool_)
    allowed_tree[features] = True
    mono = (np.zeros(n_features, dtype=np.int8) if p.monotone is None
            else np.asarray(p.monotone, dtype=np.int8))
    has_mono = bool(np.any(mono != 0))
    while frontier and (p.max_depth <= 0 or depth < p.max_depth):
        s_n = len(frontier)
        allowed = np.repeat(allowed_tree[None, :], s_n, axis=0)
        if p.colsample_bynode < 1.0:
            kf = max(1, int(p.colsample_bynode * len(features)))
            allowed[:] = False
            for s in range(s_n):
                allowed[s, rng.choice(features, size=kf, replace=False)] = True
        if p.interaction_sets is not None:
            for s in range(s_n):
                if depth > 0:
                    allowed[s] &= allowed_features(frontier[s][6], p.interaction_sets,
                                                   n_features)
        node_g = np.array([f[1] for f in frontier])
        node_h = np.array([f[2] for f in frontier])
        shape = (s_n, n_features)
        gain, thr = np.empty(shape), np.empty(shape)
        dleft = np.zeros(shape, dtype=np.bool_)
        gl, hl = np.zeros(shape), np.zeros(shape)
        live = slot[rows]
        node_n = np.bincount(live[live >= 0], minlength=s_n).astype(np.int64)
        _level_splits(X, order, n_valid, slot, g64, h64, allowed, node_n, node_g, node_h,
                      p.reg_lambda,
                      p.reg_alpha, p.gamma, p.min_child_weight, gain, thr, dleft, gl, hl, mono,
                      has_mono, np.array([f[4] for f in frontier]),
                      np.array([f[5] for f in frontier]), np.array([f[3] for f in frontier]))
        best = np.argmax(gain, axis=1)  # first feature among equal gains, like the hist search
        split_f = np.full(s_n, -1, dtype=np.int64)
        split_t, split_dl = np.zeros(s_n), np.zeros(s_n, dtype=np.bool_)
        left_slot = np.zeros(s_n, dtype=np.int64)
        left_id, right_id = np.zeros(s_n, dtype=np.int64), np.zeros(s_n, dtype=np.int64)
        new_frontier = []
        for s, (node, g, h, _, lo, up, path) in enumerate(frontier):
            f = int(best[s])
            if not gain[s, f] > MIN_GAIN:
                continue
            a, b = new_node(gl[s, f], hl[s, f]), new_node(g - gl[s, f], h - hl[s, f])
            wa = min(max(leaf_weight(gl[s, f], hl[s, f], p.reg_lambda, p.reg_alpha), lo), up)
            wb = min(max(leaf_weight(g - gl[s, f], h - hl[s, f], p.reg_lambda, p.reg_alpha),
                         lo), up)
            bounds_a, bounds_b = [lo, up], [lo, up]
            if has_mono:  # as grower.grow_tree: clipped child weights, mid-point bounds
                out["value"][a], out["value"][b] = wa * p.learning_rate, wb * p.learning_rate
                mid = 0.5 * (wa + wb)
                if mono[f] > 0:
                    bounds_a[1] = bounds_b[0] = mid
                elif mono[f] < 0:
                    bounds_a[0] = bounds_b[1] = mid
            child_path = path | {f}
            out["feature"][node], out["threshold"][node] = f, float(thr[s, f])
            out["default_left"][node] = int(dleft[s, f])
            out["left"][node], out["right"][node] = a, b
            out["gain"][node] = float(gain[s, f])
            split_f[s], split_t[s], split_dl[s] = f, thr[s, f], dleft[s, f]
            left_slot[s], left_id[s], right_id[s] = len(new_frontier), a, b
            new_frontier += [(a, gl[s, f], hl[s, f], wa, *bounds_a, child_path),
                             (b, g - gl[s, f], h - hl[s, f], wb, *bounds_b, child_path)]
        _route(X, rows, slot, node_of_row, split_f, split_t, split_dl, left_slot, left_id,
               right_id)
        frontier = new_frontier
        depth += 1
    tree = tree_from_lists(**out)
    leaf_of = node_of_row[rows]
    rows[:] = rows[np.argsort(leaf_of, kind="stable")]
    leaves = np.flatnonzero(tree.left == -1)
    counts = np.bincount(leaf_of, minlength=tree.n_nodes)[leaves]
    stops = np.cumsum(counts)
    return GrownTree(tree, (stops - counts).astype(np.int64), stops.astype(np.int64),
                     tree.value[leaves].copy())
