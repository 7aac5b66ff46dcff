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
- **Histogram arithmetic.** A bin's (G, H) pair is one complex number, so adding a row's
  gradient pair is one two-lane vector addition (the same two float additions); codes are
  two bytes when they fit.
- **Split search.** Candidates of all features are gathered in L1-sized blocks and their gains
  computed by block (one long vector loop instead of a short one per feature; digits' 64
  features have 15 bins each). A division-free test first drops the candidates that cannot
  beat the best gain so far (see ``_choose``). A small node (fewer rows than a feature's bins)
  marks the bins its rows touch, and its scan visits only those.
- **Depth-first order, a small pool.** Nodes are split depth-first from an explicit stack, so at
  most ``max_depth + 1`` histograms are alive; the pool is allocated once per fit. The smaller
  child's histogram is built from its rows and the larger one's is the parent's minus it
  (the subtraction trick, in place in the parent's buffer). Node ids are then renumbered
  breadth-first, left child before right, as ``grow_tree`` numbers them.
- **A multiclass round at once.** Given a round's gradients its trees (one per class) are
  independent: :func:`grow_round_fused` grows them in one call, each thread its share in its own
  buffers, and each tree adds its leaf values to its class's scores.

The trees are identical to ``grow_tree``'s, float for float: each node's rows are summed in the
same (ascending) order, the split search keeps :func:`~deepnotes.boosting.splitting.
scan_feature`'s candidates, order and float formula, and the partition is the same stable one.
``tests/boosting/test_fused_grower.py`` holds the two to equality. It covers plain depth-wise
growth only (no monotone, interaction or categorical constraints, no per-node column sampling);
``grow_tree`` dispatches here when those hold and the input has at most ``FUSED_MAX_ROWS`` rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from deepnotes.boosting.histogram import CHUNK_ROWS
from deepnotes.boosting.partition import stable_partition
from deepnotes.boosting.predictor import Tree
from deepnotes.boosting.splitting import (
    MIN_GAIN,
    candidate_gains,
    leaf_score,
    leaf_weight,
    left_sums,
)

#: Inputs with more rows use ``grow_tree``'s level-parallel kernels. This bound also keeps every
#: node within one histogram chunk (``histogram.CHUNK_ROWS``), so the sums' order is the same.
FUSED_MAX_ROWS = CHUNK_ROWS
#: Deeper limits use ``grow_tree`` (the work arrays here are sized ``2**(max_depth + 1)`` nodes,
#: up to twice the rows).
FUSED_MAX_DEPTH = 24


#: The histogram pool (``max_depth + 2`` buffers of 16 bytes per histogram row) may take at most
#: this much memory; wider inputs or deeper trees use ``grow_tree``.
FUSED_MAX_POOL_BYTES = 256 * 2**20


def pool_bytes(n_edges: np.ndarray, max_depth: int) -> int:
    """Bytes of :class:`CompactBins`' histogram pool for these features and depth."""
    return (int(max_depth) + 2) * int(np.sum(np.asarray(n_edges) + 2)) * 16


def fusable(params) -> bool:
    """Whether :func:`grow_tree_fused` grows trees with these ``grower.TreeParams``."""
    p = params
    return (p.grow_policy == "depthwise" and p.max_leaves <= 0
            and 0 < p.max_depth <= FUSED_MAX_DEPTH and p.colsample_bynode >= 1.0
            and (p.monotone is None or not np.any(p.monotone))
            and p.interaction_sets is None
            and (p.is_categorical is None or not np.any(p.is_categorical)))


class CompactBins:
    """A binned matrix re-coded for the fused grower, and its buffers; built once per fit.

    Parameters
    ----------
    X_rows : ndarray of uint, shape (n_samples, n_features), C order   from ``BinMapper``
    n_edges : ndarray of int64, shape (n_features,)   non-missing bins of feature j: 0..n_edges[j]
    missing_bin : int                                  the mapper's bin of NaN
    max_depth : int                                    the trees' depth limit (sizes the pool)
    n_outputs : int          trees a round grows (one per output: classes of a softmax)
    n_workers : int          threads that grow a round's trees at once (each its own buffers)

    Attributes
    ----------
    codes : ndarray of uint16 (int32 past 65,535 rows), shape (n_samples, n_features)
        the histogram row each value adds to
    offsets : ndarray of int64, shape (n_features + 1,)
        feature ``j``'s histogram rows start here; its missing row is ``offsets[j + 1] - 1``
    pool : ndarray of float64, shape (n_workers, max_depth + 2, n_bins_total, 2)
        histogram buffers, (G, H) per row; ``pool_gh`` is the same memory as complex numbers
        ``G + iH``, so that adding a row's pair is one two-lane vector addition (the same two
        float additions)
    occupied : ndarray of uint64, shape (n_workers, max_depth + 2, ceil(n_bins_total / 64))
        per buffer, a bit per histogram row that received a row (valid where ``marked``)
    """

    def __init__(self, X_rows: np.ndarray, n_edges: np.ndarray, missing_bin: int,
                 max_depth: int, n_outputs: int = 1, n_workers: int = 1):
        n_edges = np.asarray(n_edges, dtype=np.int64)
        if X_rows.ndim != 2 or X_rows.shape[1] != n_edges.shape[0]:
            raise ValueError(f"X_rows has shape {X_rows.shape}, expected (n, {len(n_edges)})")
        self.offsets = np.zeros(n_edges.shape[0] + 1, dtype=np.int64)
        np.cumsum(n_edges + 2, out=self.offsets[1:])
        n_total = int(self.offsets[-1])
        bins = X_rows.astype(np.int32)
        codes = np.where(bins == missing_bin, (self.offsets[1:] - 1).astype(np.int32),
                         bins + self.offsets[:-1].astype(np.int32))
        # two bytes a value when they suffice: half the memory the gathers stream through
        self.codes = codes.astype(np.uint16) if n_total <= 65536 else codes
        self.n_edges = n_edges
        W = self.n_workers = max(1, int(n_workers))
        self.pool = np.empty((W, max_depth + 2, n_total, 2))
        self.pool_gh = self.pool.view(np.complex128).reshape(W, max_depth + 2, n_total)
        self.occupied = np.empty((W, max_depth + 2, (n_total + 63) // 64), dtype=np.uint64)
        self.marked = np.zeros((W, max_depth + 2), dtype=np.bool_)
        self.partition_buffer = np.empty((W, X_rows.shape[0]), dtype=np.int32)
        self.candidates = _candidate_arrays(W, int(n_edges.max()) + 2 if n_edges.size else 1)
        # per-node work arrays of ``_grow_into`` (a tree has at most this many nodes)
        cap = min(2 ** (max_depth + 1) - 1, 2 * X_rows.shape[0] + 1)
        self.node_ints = np.empty((W, 11, cap), dtype=np.int64)
        self.node_floats = np.empty((W, 6, cap))
        # each output's tree (a round grows one per output)
        K = max(1, int(n_outputs))
        self.out_ints = np.empty((K, 4, cap), dtype=np.int32)
        self.out_floats = np.empty((K, 4, cap))
        self.out_dl = np.empty((K, cap), dtype=np.uint8)
        self.leaf_bounds = np.empty((K, 2, (cap + 1) // 2), dtype=np.int64)
        self.leaf_value = np.empty((K, (cap + 1) // 2))
        self.n_nodes = np.empty(K, dtype=np.int64)


#: A node with fewer rows than this fraction of a feature's bins scans that feature through its
#: ``occupied`` bits (only the bins that hold rows); larger ones scan every bin, which is
#: faster when most bins hold rows.
SPARSE_ROWS_PER_BIN = 1.0


@njit(cache=True, nogil=True)
def _accumulate(codes, rows, start, stop, grad, hess, features, all_features, offsets, hist_gh,
                occupied, mark):  # pragma: no cover - numba
    # Zero the features' rows, then add each row's (g, h) to its bins, rows in ascending order
    # (one complex addition: G and H are added as two float64 lanes). ``mark``: also set the
    # occupied bit of every bin that receives a row.
    nf = features.shape[0]
    if all_features:
        hist_gh[:] = 0.0
    else:
        for k in range(nf):
            hist_gh[offsets[features[k]]:offsets[features[k] + 1]] = 0.0
    if mark:
        if all_features:
            occupied[:] = 0
        else:
            for k in range(nf):
                j = features[k]
                occupied[offsets[j] >> 6:((offsets[j + 1] - 1) >> 6) + 1] = 0
    one = np.uint64(1)
    for i in range(start, stop):
        r = rows[i]
        gh = complex(np.float64(grad[r]), np.float64(hess[r]))
        row = codes[r]
        if all_features:  # contiguous codes: the common case, kept free of the indirection
            for k in range(nf):
                hist_gh[row[k]] += gh
        else:
            for k in range(nf):
                hist_gh[row[features[k]]] += gh
        if mark:
            for k in range(nf):
                o = np.int64(row[features[k]])
                occupied[o >> 6] |= one << np.uint64(o & 63)


@njit(cache=True, nogil=True)
def _subtract(parent_gh, child_gh, features, all_features, offsets):  # pragma: no cover - numba
    # parent <- parent - child over the features' rows: the larger child's histogram
    if all_features:
        for o in range(parent_gh.shape[0]):
            parent_gh[o] = parent_gh[o] - child_gh[o]
        return
    for k in range(features.shape[0]):
        j = features[k]
        for o in range(offsets[j], offsets[j + 1]):
            parent_gh[o] = parent_gh[o] - child_gh[o]


#: Candidates are evaluated in blocks of at least this many (whole features at a time): long
#: enough for the gains' vector loop, short enough for the work arrays to stay in L1.
CANDIDATE_BLOCK = 512


def _candidate_arrays(n_workers: int, widest: int) -> tuple:
    # Work arrays of ``_best_split``, one row per worker: a block's candidate splits, at most
    # two per histogram row (missing values right, then left), the block ending after the
    # feature that fills it: (2 * row + default_left, G_L, H_L, gain)
    n = CANDIDATE_BLOCK + 2 * widest
    return (np.empty((n_workers, n), dtype=np.int64), np.empty((n_workers, n)),
            np.empty((n_workers, n)), np.empty((n_workers, n)))


@njit(cache=True, nogil=True, inline="always")
def _push(cand, n, o, gl, hl, gm, hm, has_missing, keep):  # pragma: no cover - numba
    # Write the candidates of histogram row o at slot n (missing right) and, when the node has
    # missing values, n + 1 (missing left); they are kept (the count advances) only when
    # ``keep``. Branch-free: an empty bin repeats the candidate below it, which wins the tie.
    at, gls, hls, _ = cand
    at[n], gls[n], hls[n] = 2 * o, gl, hl
    if has_missing:
        at[n + 1] = 2 * o + 1
        gls[n + 1] = gl + gm
        hls[n + 1] = hl + hm
        return n + 2 * keep
    return n + keep


@njit(cache=True, nogil=True, error_model="numpy")
def _best_split(hist, occupied, sparse_below, features, offsets, n_edges, g_tot, h_tot, lam,
                alpha, gamma, min_child_weight, cand):  # pragma: no cover - numba
    # ``splitting.find_best_split`` on the compact layout, with the same candidates in the same
    # order and the same floats, but gathered over all features first: one pass of Eq. 4's
    # gains over every candidate (long vector loops instead of one short loop per feature), then
    # one scan for the first largest gain. Bins of a feature with more than ``sparse_below``
    # bins are visited through the ``occupied`` bits (the others hold exact zeros, which leave
    # the running sums as they are).
    n = 0
    one = np.uint64(1)
    parent = leaf_score(g_tot, h_tot, lam, alpha)
    best_gain = MIN_GAIN
    best_at = -1  # 2 * histogram row + default_left of the best candidate so far
    for k in range(features.shape[0]):
        j = features[k]
        lo = offsets[j]
        gm = hist[lo + n_edges[j] + 1, 0]
        hm = hist[lo + n_edges[j] + 1, 1]
        # as splitting.scan_feature: a relative test for missing rows; the last non-missing
        # bin is a candidate only when it separates missing values
        has_missing = hm > 1e-10 * h_tot
        last = n_edges[j] + 1 if has_missing else n_edges[j]
        if last <= 0:
            continue
        gl = 0.0
        hl = 0.0
        if n_edges[j] + 1 <= sparse_below and not has_missing:
            # Every bin from the first that holds rows, without compaction: a node scanned
            # this way has about as many rows as bins, so few are empty, and an empty bin
            # repeats the candidate below it, which keeps the tie (the compaction's
            # data-dependent store addresses cost more than the repeats: breast_cancer
            # 232 -> 211 us a tree). Bins before the first hold no admissible candidate.
            at, gls, hls, _ = cand
            first = lo
            while first < lo + last and hist[first, 0] == 0.0 and hist[first, 1] == 0.0:
                first += 1
            for o in range(first, lo + last):
                gl += hist[o, 0]
                hl += hist[o, 1]
                at[n] = 2 * o
                gls[n] = gl
                hls[n] = hl
                n += 1
        elif n_edges[j] + 1 <= sparse_below:
            for b in range(last):
                gb = hist[lo + b, 0]
                hb = hist[lo + b, 1]
                gl += gb
                hl += hb
                n = _push(cand, n, lo + b, gl, hl, gm, hm, has_missing,
                          (gb != 0.0) | (hb != 0.0))
        else:
            hi = lo + last - 1
            for w in range(lo >> 6, (hi >> 6) + 1):
                word = occupied[w]
                if w == lo >> 6:
                    word &= ~((one << np.uint64(lo & 63)) - one)
                if w == hi >> 6 and (hi & 63) < 63:
                    word &= (one << np.uint64((hi & 63) + 1)) - one
                while word:
                    o = w * 64 + np.int64(trailing_zeros(word))
                    gb = hist[o, 0]
                    hb = hist[o, 1]
                    gl += gb
                    hl += hb
                    # a larger child's bin can hold zeros
                    n = _push(cand, n, o, gl, hl, gm, hm, has_missing,
                              (gb != 0.0) | (hb != 0.0))
                    word &= word - one
        if n >= CANDIDATE_BLOCK:
            best_gain, best_at = _choose(cand, n, g_tot, h_tot, parent, lam, alpha, gamma,
                                         min_child_weight, best_gain, best_at)
            n = 0
    best_gain, best_at = _choose(cand, n, g_tot, h_tot, parent, lam, alpha, gamma,
                                 min_child_weight, best_gain, best_at)
    if best_at < 0:
        return best_gain, -1, -1, False, 0.0, 0.0
    o = best_at >> 1
    dl = (best_at & 1) == 1
    j = np.searchsorted(offsets, o, side="right") - 1
    lo = offsets[j]
    miss = lo + n_edges[j] + 1
    gl, hl = left_sums(hist[lo:miss], o - lo, dl, hist[miss, 0], hist[miss, 1])
    return best_gain, j, o - lo, dl, gl, hl


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _choose(cand, n, g_tot, h_tot, parent, lam, alpha, gamma, min_child_weight, best_gain,
            best_at):  # pragma: no cover - numba
    # The first of the n candidates whose Eq. 4 gain beats best_gain, as one pass of
    # ``candidate_gains`` and a scan would find it, with fewer divisions (two per candidate
    # made the pass as slow as the running sums that feed it):
    #
    # 1. A division-free test drops the candidates that cannot win. Eq. 4 beats best_gain only
    #    if S = G_L^2 / (H_L + lambda) + G_R^2 / (H_R + lambda) exceeds
    #    S_min = 2 (best_gain + gamma) + score(parent), i.e. only if
    #    G_L^2 (H_R + lambda) + G_R^2 (H_L + lambda) > S_min (H_L + lambda)(H_R + lambda).
    #    Every term is non-negative, so both sides carry a relative rounding error of a few
    #    ulps; the test keeps a margin of 1e-9 of S_min, so no candidate that the exact pass
    #    would pick is dropped (the margin is ~10^6 times the rounding error).
    # 2. The candidates that pass get Eq. 4's gain, in order, computed as candidate_gains does.
    at, gls, hls, gains = cand
    if alpha != 0.0:  # T_alpha(G)^2 is not a plain square: the full pass
        candidate_gains(gls, hls, n, g_tot, h_tot, parent, lam, alpha, gamma,
                        min_child_weight, gains)
        for i in range(n):
            if gains[i] > best_gain:
                best_gain = gains[i]
                best_at = at[i]
        return best_gain, best_at
    s_min = (2.0 * (best_gain + gamma) + parent) * (1.0 - 1e-9)
    passed = gains  # 1.0 where a candidate may win
    for i in range(n):  # no division, no branch: a vector loop
        gl = gls[i]
        hl = hls[i]
        gr = g_tot - gl
        hr = h_tot - hl
        dl = hl + lam
        dr = hr + lam
        ok = (hl >= min_child_weight) & (hr >= min_child_weight) & (hl > 0.0) & (hr > 0.0)
        may_win = gl * gl * dr + gr * gr * dl > s_min * (dl * dr)
        passed[i] = 1.0 if ok & may_win else 0.0
    for i in range(n):
        if passed[i] != 0.0:
            gl = gls[i]
            hl = hls[i]
            gr = g_tot - gl
            hr = h_tot - hl
            gain = 0.5 * (gl * gl / (hl + lam) + gr * gr / (hr + lam) - parent) - gamma
            if gain > best_gain:
                best_gain = gain
                best_at = at[i]
    return best_gain, best_at


@njit(cache=True, nogil=True, inline="always")
def _sparse_below(n_rows, marked):  # pragma: no cover - numba
    # features with more bins than this are scanned through the occupied bits (never unmarked)
    return n_rows / SPARSE_ROWS_PER_BIN if marked else np.inf


@njit(cache=True, nogil=True)
def _grow_into(codes, offsets, n_edges, grad, hess, rows, features, edges, max_depth, lam,
               alpha, gamma, min_child_weight, learning_rate, pool, pool_gh, occupied, marked,
               buf, cand, node_ints, node_floats, out_ints, out_floats, out_dl, leaf_bounds,
               leaf_value):  # pragma: no cover - numba
    # One tree into the given outputs (their first n_nodes columns; n_nodes is returned):
    # out_ints (4, cap) feature, bin_threshold, left, right; out_floats (4, cap) threshold,
    # value, gain, cover; out_dl (cap,); leaf_bounds (2, cap_leaves); leaf_value (cap_leaves,)
    m = rows.shape[0]
    all_features = features.shape[0] == codes.shape[1]  # features are ascending and distinct
    # a node with fewer rows marks its occupied bins (some feature will scan through them)
    mark_below = SPARSE_ROWS_PER_BIN * (np.max(n_edges) + 1)
    # per node, in creation (depth-first) order: views of the fit's work arrays
    (feature, bin_threshold, default_left, left, start, stop, depth, s_f, s_b, s_dl,
     slot) = node_ints
    gain, g_node, h_node, s_gain, s_gl, s_hl = node_floats
    # s_*: the split found for a node still to be split (on the stack); slot: its histogram's
    # buffer in the pool

    free = np.arange(pool.shape[0])[::-1].copy()  # a stack of free buffers
    n_free = pool.shape[0]
    stack = np.empty(node_ints.shape[1], dtype=np.int64)
    n_stack = 0

    n_free -= 1
    root_slot = free[n_free]
    marked[root_slot] = m < mark_below
    _accumulate(codes, rows, 0, m, grad, hess, features, all_features, offsets,
                pool_gh[root_slot], occupied[root_slot], marked[root_slot])
    j0 = features[0]
    g0 = 0.0
    h0 = 0.0
    for o in range(offsets[j0], offsets[j0 + 1]):
        g0 += pool[root_slot, o, 0]
        h0 += pool[root_slot, o, 1]
    n_nodes = 1
    g_node[0], h_node[0], start[0], stop[0], depth[0] = g0, h0, 0, m, 0
    feature[0], bin_threshold[0], default_left[0], left[0], gain[0] = -1, -1, 0, -1, 0.0
    if max_depth > 0:
        s_gain[0], s_f[0], s_b[0], s_dl[0], s_gl[0], s_hl[0] = _best_split(
            pool[root_slot], occupied[root_slot], _sparse_below(m, marked[root_slot]),
            features, offsets, n_edges, g0, h0, lam, alpha, gamma, min_child_weight, cand)
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
        # in the compact codes, bin b of feature f is code offsets[f] + b and its missing
        # values are code offsets[f + 1] - 1 (above every bin)
        n_left = stable_partition(rows, a, z, codes[:, f], offsets[f] + b, offsets[f + 1] - 1,
                                  dl, buf)
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
        for child in (lc, rc):  # a leaf unless it is split later
            feature[child], bin_threshold[child], default_left[child] = -1, -1, 0
            left[child], gain[child] = -1, 0.0
        parent_slot = slot[node]
        if d >= max_depth:  # the children are leaves
            free[n_free] = parent_slot
            n_free += 1
            continue
        small, large = (lc, rc) if n_left <= z - a - n_left else (rc, lc)
        n_free -= 1
        small_slot = free[n_free]
        marked[small_slot] = stop[small] - start[small] < mark_below
        _accumulate(codes, rows, start[small], stop[small], grad, hess, features, all_features,
                    offsets, pool_gh[small_slot], occupied[small_slot], marked[small_slot])
        # the larger child's occupied bins are a subset of its parent's: it keeps those marks
        _subtract(pool_gh[parent_slot], pool_gh[small_slot], features, all_features, offsets)
        slot[small], slot[large] = small_slot, parent_slot
        # push the right child first: the left one is split next (any order gives these trees)
        for child in (rc, lc):
            s_gain[child], s_f[child], s_b[child], s_dl[child], s_gl[child], s_hl[child] = \
                _best_split(pool[slot[child]], occupied[slot[child]],
                            _sparse_below(stop[child] - start[child], marked[slot[child]]),
                            features, offsets, n_edges, g_node[child], h_node[child], lam,
                            alpha, gamma, min_child_weight, cand)
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
    n_leaf = 0
    for i in range(n_nodes):
        old = order[i]
        f = feature[old]
        out_ints[0, i] = f
        out_ints[1, i] = bin_threshold[old]
        out_dl[i] = default_left[old]
        value = leaf_weight(g_node[old], h_node[old], lam, alpha) * learning_rate
        out_floats[1, i] = value
        out_floats[2, i] = gain[old]
        out_floats[3, i] = h_node[old]
        if f >= 0:
            b = bin_threshold[old]
            out_floats[0, i] = edges[f, b] if b < edges.shape[1] else np.inf
            out_ints[2, i] = new_id[left[old]]
            out_ints[3, i] = new_id[left[old] + 1]
        else:
            out_floats[0, i] = 0.0
            out_ints[2, i] = -1
            out_ints[3, i] = -1
            leaf_bounds[0, n_leaf] = start[old]
            leaf_bounds[1, n_leaf] = stop[old]
            leaf_value[n_leaf] = value
            n_leaf += 1
    return n_nodes


@njit(cache=True, nogil=True)
def _grow(codes, offsets, n_edges, grad, hess, rows, features, edges, max_depth, lam, alpha,
          gamma, min_child_weight, learning_rate, pool, pool_gh, occupied, marked, buf, cand,
          node_ints, node_floats, out_ints, out_floats, out_dl, leaf_bounds,
          leaf_value):  # pragma: no cover - numba
    # one tree; returns exact-size copies of its outputs (few, wide arrays: each array returned
    # to Python is boxed, at about a microsecond each)
    n = _grow_into(codes, offsets, n_edges, grad, hess, rows, features, edges, max_depth, lam,
                   alpha, gamma, min_child_weight, learning_rate, pool, pool_gh, occupied,
                   marked, buf, cand, node_ints, node_floats, out_ints, out_floats, out_dl,
                   leaf_bounds, leaf_value)
    n_leaves = (n + 1) // 2
    return (out_ints[:, :n].copy(), out_floats[:, :n].copy(), out_dl[:n].copy(),
            leaf_bounds[:, :n_leaves].copy(), leaf_value[:n_leaves].copy())


@njit(parallel=True, cache=True, nogil=True)
def _grow_round(n_workers, codes, offsets, n_edges, grads, hesses, rows, features, edges,
                max_depth, lam, alpha, gamma, min_child_weight, learning_rate, pool, pool_gh,
                occupied, marked, buf, cand_at, cand_gl, cand_hl, cand_gain, node_ints,
                node_floats, out_ints, out_floats, out_dl, leaf_bounds, leaf_value, n_nodes,
                raw):  # pragma: no cover - numba
    # The K trees of one round (one per output: grads[k], rows[k]), worker w growing trees
    # w, w + n_workers, ... in its own buffers; each tree then adds its leaf values to raw[k]
    # for its rows. The trees are independent, so they are those of K separate calls.
    n_outputs = grads.shape[0]
    for w in prange(n_workers):
        cand = (cand_at[w], cand_gl[w], cand_hl[w], cand_gain[w])
        for k in range(w, n_outputs, n_workers):
            n = _grow_into(codes, offsets, n_edges, grads[k], hesses[k], rows[k], features,
                           edges, max_depth, lam, alpha, gamma, min_child_weight, learning_rate,
                           pool[w], pool_gh[w], occupied[w], marked[w], buf[w], cand,
                           node_ints[w], node_floats[w], out_ints[k], out_floats[k], out_dl[k],
                           leaf_bounds[k], leaf_value[k])
            n_nodes[k] = n
            for leaf in range((n + 1) // 2):
                v = leaf_value[k, leaf]
                for i in range(leaf_bounds[k, 0, leaf], leaf_bounds[k, 1, leaf]):
                    raw[k, rows[k, i]] += v


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
    p, c = params, compact
    out = _grow(c.codes, c.offsets, c.n_edges, grad, hess, rows, features, edges,
                int(p.max_depth), float(p.reg_lambda), float(p.reg_alpha), float(p.gamma),
                float(p.min_child_weight), float(p.learning_rate), c.pool[0], c.pool_gh[0],
                c.occupied[0], c.marked[0], c.partition_buffer[0],
                tuple(a[0] for a in c.candidates), c.node_ints[0], c.node_floats[0],
                c.out_ints[0], c.out_floats[0], c.out_dl[0], c.leaf_bounds[0], c.leaf_value[0])
    ints, floats, default_left, leaf_bounds, leaf_value = out
    arrays = {"feature": ints[0], "bin_threshold": ints[1], "left": ints[2], "right": ints[3],
              "default_left": default_left, "threshold": floats[0], "value": floats[1],
              "gain": floats[2], "cover": floats[3]}
    return arrays, leaf_bounds[0], leaf_bounds[1], leaf_value


def grow_round_fused(compact: CompactBins, grad: np.ndarray, hess: np.ndarray, rows: np.ndarray,
                     features: np.ndarray, edges: np.ndarray, params, raw: np.ndarray) -> list:
    """The trees of one boosting round, one per output, grown ``compact.n_workers`` at a time,
    each added to its output's training scores.

    Parameters
    ----------
    grad, hess : ndarray of float32, shape (n_outputs, n_samples)
    rows : ndarray of int32, shape (n_outputs, m)   each tree's rows, ascending (reordered)
    raw : ndarray of float64, shape (n_outputs, n_samples)
        training scores: ``raw[k, r] +=`` the value of the leaf of tree ``k`` that row ``r``
        reaches, for the rows in ``rows[k]``

    Returns a list of ``n_outputs`` ``Tree``: those :func:`grow_tree_fused` grows one by one.
    """
    p, c = params, compact
    n_outputs = grad.shape[0]
    if n_outputs > c.out_ints.shape[0]:
        raise ValueError(f"compact holds outputs for {c.out_ints.shape[0]} trees a round, "
                         f"got {n_outputs}")
    _grow_round(min(c.n_workers, n_outputs), c.codes, c.offsets, c.n_edges, grad, hess, rows,
                features, edges, int(p.max_depth), float(p.reg_lambda), float(p.reg_alpha),
                float(p.gamma), float(p.min_child_weight), float(p.learning_rate), c.pool,
                c.pool_gh, c.occupied, c.marked, c.partition_buffer, *c.candidates,
                c.node_ints, c.node_floats, c.out_ints, c.out_floats, c.out_dl, c.leaf_bounds,
                c.leaf_value, c.n_nodes, raw)
    trees = []
    for k in range(n_outputs):
        n = int(c.n_nodes[k])
        ints, floats = c.out_ints[k, :, :n].copy(), c.out_floats[k, :, :n].copy()
        trees.append(Tree(feature=ints[0], bin_threshold=ints[1], left=ints[2], right=ints[3],
                          default_left=c.out_dl[k, :n].copy(), threshold=floats[0],
                          value=floats[1], gain=floats[2], cover=floats[3]))
    return trees
