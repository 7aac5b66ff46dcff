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


@njit(cache=True, nogil=True)
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
    """
    best_gain = MIN_GAIN
    best_f = -1
    best_b = -1
    best_dl = False
    best_gl = 0.0
    best_hl = 0.0
    parent = leaf_score(g_tot, h_tot, lam, alpha)
    for k in range(features.shape[0]):
        j = features[k]
        gm = hist[j, missing_bin, 0]
        hm = hist[j, missing_bin, 1]
        # Relative test: a sibling's histogram is parent - child, so "no missing rows" can
        # show up as rounding residue rather than an exact zero.
        has_missing = hm > 1e-10 * h_tot
        gl = 0.0
        hl = 0.0
        # The last non-missing bin is a candidate only when it separates missing values.
        last = n_edges[j] + 1 if has_missing else n_edges[j]
        for b in range(last):
            gl += hist[j, b, 0]
            hl += hist[j, b, 1]
            # missing -> right
            gr = g_tot - gl
            hr = h_tot - hl
            if hl >= min_child_weight and hr >= min_child_weight and hl > 0.0 and hr > 0.0:
                gain = 0.5 * (leaf_score(gl, hl, lam, alpha) + leaf_score(gr, hr, lam, alpha)
                              - parent) - gamma
                if gain > best_gain:
                    best_gain, best_f, best_b, best_dl, best_gl, best_hl = gain, j, b, False, gl, hl
            if has_missing:
                gl2 = gl + gm
                hl2 = hl + hm
                gr = g_tot - gl2
                hr = h_tot - hl2
                if (hl2 >= min_child_weight and hr >= min_child_weight and hl2 > 0.0
                        and hr > 0.0):
                    gain = 0.5 * (leaf_score(gl2, hl2, lam, alpha)
                                  + leaf_score(gr, hr, lam, alpha) - parent) - gamma
                    if gain > best_gain:
                        best_gain, best_f, best_b, best_dl = gain, j, b, True
                        best_gl, best_hl = gl2, hl2
    return best_gain, best_f, best_b, best_dl, best_gl, best_hl


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
