"""Second-order split scoring and the histogram split search.

With ``G, H`` the sums of gradients and hessians of a node's rows (Chen & Guestrin, 2016), the
optimal leaf weight with L2 penalty ``lambda`` and L1 penalty ``alpha`` is (Eq. 3 of the post)

    w* = -T_alpha(G) / (H + lambda),   T_alpha(G) = sign(G) max(|G| - alpha, 0),

its loss reduction ``score(G, H) = T_alpha(G)^2 / (H + lambda)`` and a split's gain (Eq. 4)

    gain = 1/2 [score(G_L, H_L) + score(G_R, H_R) - score(G_L + G_R, H_L + H_R)] - gamma.

A split is admissible when both children have hessian sums ``>= min_child_weight`` and it is kept
when ``gain > 0``. Deviations from xgboost, both about ``gamma``:

1. *Scale.* xgboost compares ``gamma`` with the bracket *without* the 1/2, so xgboost's
   ``gamma=2g`` equals our ``gamma=g``; we follow the paper's Eq. 7.
2. *What is reported.* Our ``gain`` (the trees' ``gain`` array, ``importance_type='gain'``) is
   Eq. 4 itself, net of ``gamma``; xgboost reports the bracket, not net of its gamma. Node by
   node, ``xgboost_gain = 2 * (our_gain + gamma)`` (tested in ``tests/boosting/
   test_splitting.py``); with ``gamma = 0`` the relation is a factor 2.
3. *When it acts.* We do not make a split whose gain is ``<= 0`` while growing; xgboost grows
   first and then prunes bottom-up the splits whose children are both leaves and whose bracket is
   below its gamma. A weak split above strong ones (XOR-like data) is therefore kept by xgboost
   and not made here; without such a node the two trees are the same.

Missing values (the last bin) are tried on both sides and go to the better one
(sparsity-aware split finding, Alg. 3 of the paper); on a tie, or when a node has no missing
values, they go right, as in xgboost.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Gains at or below this are treated as no improvement (xgboost's ``kRtEps``, halved with the
#: gain): it stops splits whose gain is rounding noise, e.g. a child that is empty.
MIN_GAIN = 5e-7


@njit(cache=True, inline="always")
def soft_threshold(g, alpha):  # pragma: no cover - numba
    """``T_alpha(g)`` of Eq. 3."""
    if g > alpha:
        return g - alpha
    if g < -alpha:
        return g + alpha
    return 0.0


@njit(cache=True, inline="always")
def leaf_score(g, h, lam, alpha):  # pragma: no cover - numba
    """``T_alpha(G)^2 / (H + lambda)``: twice the loss reduction of a leaf (Eq. 3)."""
    t = soft_threshold(g, alpha)
    return t * t / (h + lam)


@njit(cache=True)
def leaf_weight(g, h, lam, alpha):  # pragma: no cover - numba
    """Optimal leaf weight ``-T_alpha(G) / (H + lambda)`` (Eq. 3)."""
    return -soft_threshold(g, alpha) / (h + lam)


@njit(cache=True)
def split_gain(gl, hl, gr, hr, lam, alpha, gamma):  # pragma: no cover - numba
    """Gain of Eq. 4 for a split into (G_L, H_L) and (G_R, H_R)."""
    return 0.5 * (leaf_score(gl, hl, lam, alpha) + leaf_score(gr, hr, lam, alpha)
                  - leaf_score(gl + gr, hl + hr, lam, alpha)) - gamma


@njit(cache=True, nogil=True, error_model="numpy")
def find_best_split(hist, features, n_edges, missing_bin, g_tot, h_tot,
                    lam, alpha, gamma, min_child_weight):  # pragma: no cover - numba
    """Best split of a node over ``features`` from its histogram.

    Parameters
    ----------
    hist : ndarray, shape (n_features, n_bins, 2)    the node's (G, H) per feature and bin
    features : ndarray of int64, shape (k,)           candidate features (in increasing order)
    n_edges : ndarray of int64, shape (n_features,)   non-missing bins of feature j: 0..n_edges[j]
    missing_bin : int                                  bin index of NaN
    g_tot, h_tot : float                               the node's sums (missing rows included)

    Returns
    -------
    (gain, feature, bin, default_left, g_left, h_left): the split ``bin(x) <= bin`` with the
    largest gain (first feature, then lowest bin, on ties); feature is -1 when none has
    ``gain > MIN_GAIN``.

    Each feature is searched by :func:`scan_feature`. The fused grower (``fused_grower``)
    searches its compact histograms with the same candidates, order and gain formula
    (``candidate_gains``), gathered over features in blocks.
    """
    best_gain = MIN_GAIN
    best_f = -1
    best_b = -1
    best_dl = False
    best_gl = 0.0
    best_hl = 0.0
    parent = leaf_score(g_tot, h_tot, lam, alpha)
    scratch = split_scratch(hist.shape[1])
    for k in range(features.shape[0]):
        j = features[k]
        gain, b, dl = scan_feature(hist[j], n_edges[j], hist[j, missing_bin, 0],
                                   hist[j, missing_bin, 1], g_tot, h_tot, parent, lam, alpha,
                                   gamma, min_child_weight, best_gain, scratch)
        if b >= 0:
            best_gain, best_f, best_b, best_dl = gain, j, b, dl
            best_gl, best_hl = left_sums(hist[j], b, dl, hist[j, missing_bin, 0],
                                         hist[j, missing_bin, 1])
    return best_gain, best_f, best_b, best_dl, best_gl, best_hl


@njit(cache=True, nogil=True)
def split_scratch(n_bins):  # pragma: no cover - numba
    """Work arrays of :func:`scan_feature` for features of up to ``n_bins`` bins, shape
    (5, n_bins): bin index, G_L, H_L, gain with missing right, gain with missing left."""
    return np.empty((5, n_bins))


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def scan_feature(hist_j, n_edge, gm, hm, g_tot, h_tot, parent, lam, alpha, gamma,
                 min_child_weight, best_gain, scratch):  # pragma: no cover - numba
    """The best candidate of one feature that beats ``best_gain``: ``(gain, bin,
    default_left)``, bin -1 when none does.

    ``hist_j[b]`` holds (G, H) of the feature's bin ``b`` for ``b = 0..n_edge`` (its non-missing
    bins); ``gm, hm`` are its missing rows' sums. Three passes: the running sums (G_L, H_L) over
    the bins, kept only at the bins that hold rows (an empty bin repeats the candidate below it,
    which wins the tie; most bins of a small node are empty); the gains of Eq. 4 at those bins,
    a loop without a carried dependence that the compiler turns into vector divisions; then the
    scan for the first largest gain (missing right before missing left at each bin). The floats
    are those of one fused loop over every bin (the same sums, the same formula), so the chosen
    split is too.
    """
    at = scratch[0]
    gls = scratch[1]
    hls = scratch[2]
    gains = scratch[3]  # missing rows right
    gains_ml = scratch[4]  # missing rows left
    # Relative test: a sibling's histogram is parent - child, so "no missing rows" can show up
    # as rounding residue rather than an exact zero.
    has_missing = hm > 1e-10 * h_tot
    # The last non-missing bin is a candidate only when it separates missing values.
    last = n_edge + 1 if has_missing else n_edge
    gl = 0.0
    hl = 0.0
    m = 0
    for b in range(last):  # branch-free compaction: slot m is kept only for a non-empty bin
        gb = hist_j[b, 0]
        hb = hist_j[b, 1]
        gl += gb
        hl += hb
        at[m] = b
        gls[m] = gl
        hls[m] = hl
        m += (gb != 0.0) | (hb != 0.0)
    candidate_gains(gls, hls, m, g_tot, h_tot, parent, lam, alpha, gamma, min_child_weight,
                    gains)
    if has_missing:
        for i in range(m):
            gls[i] += gm
            hls[i] += hm
        candidate_gains(gls, hls, m, g_tot, h_tot, parent, lam, alpha, gamma, min_child_weight,
                        gains_ml)
    best_b = -1
    best_dl = False
    for i in range(m):  # in this order: missing right, then missing left, bin by bin
        if gains[i] > best_gain:
            best_gain, best_b, best_dl = gains[i], np.int64(at[i]), False
        if has_missing and gains_ml[i] > best_gain:
            best_gain, best_b, best_dl = gains_ml[i], np.int64(at[i]), True
    return best_gain, best_b, best_dl


@njit(cache=True, nogil=True, inline="always")
def left_sums(hist_j, b, default_left, gm, hm):  # pragma: no cover - numba
    """(G_L, H_L) of the split ``bin <= b`` of one feature, summed as :func:`scan_feature`'s
    running sums had them (bin by bin, then the missing rows when they go left)."""
    gl = 0.0
    hl = 0.0
    for i in range(b + 1):
        gl += hist_j[i, 0]
        hl += hist_j[i, 1]
    if default_left:
        gl += gm
        hl += hm
    return gl, hl


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def candidate_gains(gls, hls, n, g_tot, h_tot, parent, lam, alpha, gamma,
           min_child_weight, out):  # pragma: no cover - numba
    """``out[b]``: Eq. 4's gain of the split with left sums ``(gls[b], hls[b])``, or -inf
    where a child is below ``min_child_weight`` or empty. Every bin's gain is computed, the
    rejected ones too (with ``lambda = 0`` an empty child divides by zero: numpy's error model
    gives inf/nan there instead of raising, and lets the loop vectorise)."""
    if alpha == 0.0:  # T_0(g) = g exactly: the plain squares, which vectorise
        for b in range(n):
            gl = gls[b]
            hl = hls[b]
            gr = g_tot - gl
            hr = h_tot - hl
            gain = 0.5 * (gl * gl / (hl + lam) + gr * gr / (hr + lam) - parent) - gamma
            ok = (hl >= min_child_weight) & (hr >= min_child_weight) & (hl > 0.0) & (hr > 0.0)
            out[b] = gain if ok else -np.inf
        return
    for b in range(n):
        gl = gls[b]
        hl = hls[b]
        gr = g_tot - gl
        hr = h_tot - hl
        gain = 0.5 * (leaf_score(gl, hl, lam, alpha) + leaf_score(gr, hr, lam, alpha)
                      - parent) - gamma
        ok = (hl >= min_child_weight) & (hr >= min_child_weight) & (hl > 0.0) & (hr > 0.0)
        out[b] = gain if ok else -np.inf


def best_split_reference(x_binned: np.ndarray, grad: np.ndarray, hess: np.ndarray,
                         missing_bin: int, lam: float, alpha: float, gamma: float,
                         min_child_weight: float) -> tuple[float, int, bool]:
    """Brute force over every threshold and both missing directions of one binned feature.

    Returns ``(gain, bin, default_left)``; the plain reference that tests hold the kernel to.
    """
    def score(g, h):
        t = np.sign(g) * max(abs(g) - alpha, 0.0)
        return t * t / (h + lam)

    g_tot, h_tot = float(np.sum(grad)), float(np.sum(hess))
    miss = x_binned == missing_bin
    best = (MIN_GAIN, -1, False)
    for b in np.unique(x_binned[~miss]):
        for default_left in (False, True):
            left = (x_binned <= b) & ~miss
            if default_left:
                left |= miss
            gl, hl = float(np.sum(grad[left])), float(np.sum(hess[left]))
            gr, hr = g_tot - gl, h_tot - hl
            if min(hl, hr) < min_child_weight or hl <= 0 or hr <= 0:
                continue
            gain = 0.5 * (score(gl, hl) + score(gr, hr) - score(g_tot, h_tot)) - gamma
            if gain > best[0] + 1e-12:
                best = (gain, int(b), default_left)
    return best


# --- constrained and categorical split search (monotone constraints, categorical features) ----
# Monotone constraints follow xgboost (its ``TreeEvaluator``): every node carries bounds
# ``[lower, upper]`` on its weight; a candidate's child weights are Eq. 3's optima clipped to the
# node's bounds, the candidate is rejected when they violate the feature's order, and its gain is
# Eq. 4 with each score evaluated at the clipped weight (Eq. 15 of the post). A split on a
# constrained feature bounds its children by the mid-point of their weights (see ``grower``).


@njit(cache=True, inline="always")
def clip_weight(w, lower, upper):  # pragma: no cover - numba
    """``w`` clipped to ``[lower, upper]``."""
    if w < lower:
        return lower
    if w > upper:
        return upper
    return w


@njit(cache=True, inline="always")
def score_given_weight(g, h, lam, alpha, w):  # pragma: no cover - numba
    """Twice the loss reduction of a leaf held at weight ``w``:
    ``-(2 G w + (H + lambda) w^2 + 2 alpha |w|)`` (Eq. 15); equals :func:`leaf_score` at the
    optimum ``w*`` of Eq. 3. Zero for an empty leaf (``H <= 0``), as in xgboost."""
    if h <= 0.0:
        return 0.0
    return -(2.0 * g * w + (h + lam) * w * w + 2.0 * alpha * abs(w))


@njit(cache=True, nogil=True)
def category_order(hist_j, n_cats, h_tot, lam, alpha, min_child_weight):  # pragma: no cover
    """Bins ``0..n_cats-1`` of one categorical feature sorted by their leaf weight
    ``-T_alpha(G_c) / (H_c + lambda)`` (ascending, stable), a category whose hessian sum in the
    node is below ``min_child_weight`` (or zero) counting as weight 0 (xgboost's order): the
    order in which the partition search of :func:`find_best_split_ext` puts categories on the
    left (Eq. 17 of the post)."""
    key = np.zeros(n_cats)
    for c in range(n_cats):
        if hist_j[c, 1] > 1e-10 * h_tot and hist_j[c, 1] >= min_child_weight:
            key[c] = leaf_weight(hist_j[c, 0], hist_j[c, 1], lam, alpha)
    return np.argsort(key, kind="mergesort")


@njit(cache=True, inline="always")
def _candidate(gl, hl, g_tot, h_tot, parent, lam, alpha, gamma, mcw, mono, has_mono, lower,
               upper):  # pragma: no cover - numba
    # gain of one candidate (Eq. 4, or Eq. 15 under monotone constraints); -inf if inadmissible
    gr = g_tot - gl
    hr = h_tot - hl
    if hl < mcw or hr < mcw or hl <= 0.0 or hr <= 0.0:
        return -np.inf
    if not has_mono:
        return 0.5 * (leaf_score(gl, hl, lam, alpha) + leaf_score(gr, hr, lam, alpha)
                      - parent) - gamma
    wl = clip_weight(leaf_weight(gl, hl, lam, alpha), lower, upper)
    wr = clip_weight(leaf_weight(gr, hr, lam, alpha), lower, upper)
    if (mono > 0 and wl > wr) or (mono < 0 and wl < wr):
        return -np.inf
    return 0.5 * (score_given_weight(gl, hl, lam, alpha, wl)
                  + score_given_weight(gr, hr, lam, alpha, wr) - parent) - gamma


@njit(cache=True, nogil=True)
def find_best_split_ext(hist, features, n_edges, missing_bin, g_tot, h_tot, lam, alpha, gamma,
                        min_child_weight, monotone, lower, upper, node_weight, is_cat,
                        max_cat_to_onehot, max_cat_threshold=64):  # pragma: no cover - numba
    """:func:`find_best_split` with monotone constraints and categorical features.

    Extra parameters
    ----------------
    monotone : ndarray of int8, shape (n_features,)   -1, 0, +1 per feature (all 0: none)
    lower, upper : float       the node's weight bounds (+-inf at the root)
    node_weight : float        the node's own (clipped) weight: its score in Eq. 15
    is_cat : ndarray of bool, shape (n_features,)      categorical features: bin ``c`` is the
                               feature's ``c``-th category and bins ``0..n_edges[j]`` its categories
    max_cat_to_onehot : int    up to this many categories: one category against the rest;
                               more: the categories sorted by leaf weight (:func:`category_order`)
                               and cut into a prefix (left) and the rest
    max_cat_threshold : int    xgboost's cap on a partition: the side that does not hold the
                               missing values gets fewer than this many categories (either side
                               when the node has none)

    Returns ``(gain, feature, bin, default_left, g_left, h_left)`` as :func:`find_best_split`; for
    a categorical feature ``bin`` is the category sent left (one-vs-rest) or the number of
    categories of :func:`category_order` sent left (partition).
    """
    has_mono = False  # as in xgboost: any constraint switches every node to Eq. 15
    for j in range(monotone.shape[0]):
        if monotone[j] != 0:
            has_mono = True
    best_gain = MIN_GAIN
    best_f = -1
    best_b = -1
    best_dl = False
    best_gl = 0.0
    best_hl = 0.0
    if has_mono:
        parent = score_given_weight(g_tot, h_tot, lam, alpha, node_weight)
    else:
        parent = leaf_score(g_tot, h_tot, lam, alpha)
    for k in range(features.shape[0]):
        j = features[k]
        mono = monotone[j]
        gm = hist[j, missing_bin, 0]
        hm = hist[j, missing_bin, 1]
        has_missing = hm > 1e-10 * h_tot
        if is_cat[j]:
            n_cats = n_edges[j] + 1
            onehot = n_cats <= max_cat_to_onehot
            if onehot:
                order = np.arange(n_cats)
                steps = n_cats
            else:
                order = category_order(hist[j], n_cats, h_tot, lam, alpha, min_child_weight)
                steps = order.shape[0] if has_missing else order.shape[0] - 1
            gl = 0.0
            hl = 0.0
            n_rest = 0
            for i in range(steps):
                c = order[i]
                if onehot:
                    if not hist[j, c, 1] > 1e-10 * h_tot:
                        continue
                    gl = hist[j, c, 0]
                    hl = hist[j, c, 1]
                    label = c
                else:
                    gl += hist[j, c, 0]
                    hl += hist[j, c, 1]
                    label = i + 1
                    n_rest = order.shape[0] - label
                for d in range(2 if has_missing else 1):
                    if not onehot:  # xgboost's max_cat_threshold (see the docstring)
                        small_left = label < max_cat_threshold
                        small_right = n_rest < max_cat_threshold
                        if has_missing and not (small_right if d == 1 else small_left):
                            continue
                        if not has_missing and not (small_left or small_right):
                            continue
                    g2 = gl + (gm if d == 1 else 0.0)
                    h2 = hl + (hm if d == 1 else 0.0)
                    gain = _candidate(g2, h2, g_tot, h_tot, parent, lam, alpha, gamma,
                                      min_child_weight, 0, has_mono, lower, upper)
                    if gain > best_gain:
                        best_gain, best_f, best_b, best_dl = gain, j, label, d == 1
                        best_gl, best_hl = g2, h2
            continue
        gl = 0.0
        hl = 0.0
        last = n_edges[j] + 1 if has_missing else n_edges[j]
        for b in range(last):
            gl += hist[j, b, 0]
            hl += hist[j, b, 1]
            gain = _candidate(gl, hl, g_tot, h_tot, parent, lam, alpha, gamma, min_child_weight,
                              mono, has_mono, lower, upper)
            if gain > best_gain:
                best_gain, best_f, best_b, best_dl, best_gl, best_hl = gain, j, b, False, gl, hl
            if has_missing:
                gain = _candidate(gl + gm, hl + hm, g_tot, h_tot, parent, lam, alpha, gamma,
                                  min_child_weight, mono, has_mono, lower, upper)
                if gain > best_gain:
                    best_gain, best_f, best_b, best_dl = gain, j, b, True
                    best_gl, best_hl = gl + gm, hl + hm
    return best_gain, best_f, best_b, best_dl, best_gl, best_hl


def category_bins_left(hist_j: np.ndarray, n_cats: int, label: int, h_tot: float, lam: float,
                       alpha: float, min_child_weight: float,
                       max_cat_to_onehot: int) -> np.ndarray:
    """The bins (categories) a categorical split found by :func:`find_best_split_ext` sends left,
    from its ``bin`` label: sorted int64 array."""
    if n_cats <= max_cat_to_onehot:
        return np.array([label], dtype=np.int64)
    return np.sort(category_order(hist_j, n_cats, h_tot, lam, alpha, min_child_weight)[:label])
