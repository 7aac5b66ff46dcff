"""deepnotes.boosting.splitting: hand-checked gain/weights (Eq. 3-4), kernel vs brute force."""

import numpy as np
import pytest

from deepnotes.boosting.splitting import (
    best_split_reference,
    find_best_split,
    leaf_weight,
    split_gain,
)


def test_hand_checked_gain_and_weights():
    # y = [1, 1, 3, 3] around F = 0 under squared error: g = -y, h = 1, lambda = 1.
    # split {1,1} | {3,3}: 1/2 [4/3 + 36/3 - 64/5] = 4/15; leaves -(-2)/3, -(-6)/3
    assert split_gain(-2.0, 2.0, -6.0, 2.0, 1.0, 0.0, 0.0) == pytest.approx(4 / 15, rel=1e-14)
    assert leaf_weight(-2.0, 2.0, 1.0, 0.0) == pytest.approx(2 / 3, rel=1e-14)
    assert leaf_weight(-6.0, 2.0, 1.0, 0.0) == pytest.approx(2.0, rel=1e-14)
    # L1: T_1(-8) = -7, weight 7/5; |G| <= alpha gives 0
    assert leaf_weight(-8.0, 4.0, 1.0, 1.0) == pytest.approx(1.4, rel=1e-14)
    assert leaf_weight(0.5, 4.0, 1.0, 1.0) == 0.0
    # gamma is subtracted from the halved bracket (the paper's Eq. 7)
    assert split_gain(-2.0, 2.0, -6.0, 2.0, 1.0, 0.0, 0.25) == pytest.approx(4 / 15 - 0.25)


def _hist(xb, g, h, n_bins):
    out = np.zeros((1, n_bins, 2))
    out[0, :, 0] = np.bincount(xb, weights=g, minlength=n_bins)
    out[0, :, 1] = np.bincount(xb, weights=h, minlength=n_bins)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_kernel_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, n_edges, missing = 400, 9, 10
    xb = rng.integers(0, n_edges + 1, size=n)
    if seed % 2:
        xb[rng.random(n) < 0.3] = missing
    g = rng.normal(size=n) + (xb < 4) * 0.8 + (xb == missing) * (seed - 3) * 0.5
    h = rng.random(n) + 0.1
    lam, alpha, gamma, mcw = 1.0, 0.3 * (seed % 3), 0.1, 5.0
    gain, f, b, dl, gl, hl = find_best_split(_hist(xb, g, h, missing + 1),
                                             np.array([0], dtype=np.int64),
                                             np.array([n_edges], dtype=np.int64), missing,
                                             g.sum(), h.sum(), lam, alpha, gamma, mcw)
    ref_gain, ref_b, ref_dl = best_split_reference(xb, g, h, missing, lam, alpha, gamma, mcw)
    assert (b, dl) == (ref_b, ref_dl)
    assert gain == pytest.approx(ref_gain, rel=1e-9)
    if f >= 0:
        left = (xb <= b) & (xb != missing) | ((xb == missing) & dl)
        assert gl == pytest.approx(g[left].sum(), rel=1e-9)
        assert hl == pytest.approx(h[left].sum(), rel=1e-9)


def test_min_child_weight_blocks_small_children():
    xb = np.array([0, 1, 1, 1])
    g = np.array([-5.0, 1.0, 1.0, 1.0])
    h = np.ones(4)
    hist = _hist(xb, g, h, 3)
    args = (np.array([0], dtype=np.int64), np.array([1], dtype=np.int64), 2, g.sum(), h.sum(),
            1.0, 0.0, 0.0)
    assert find_best_split(hist, *args, 1.0)[1] == 0
    assert find_best_split(hist, *args, 1.5)[1] == -1  # left child's hessian is 1 < 1.5
