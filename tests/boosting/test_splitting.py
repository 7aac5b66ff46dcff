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


@pytest.mark.parametrize("seed", range(8))
def test_kernel_equals_brute_force_on_sparse_histograms(seed):
    # a small node: 25 rows over 200 bins, most bins empty (the kernel keeps only the bins that
    # hold rows), with and without missing rows, lambda 0 (an empty child then divides by zero
    # in the rejected candidates) and min_child_weight 0
    rng = np.random.default_rng(100 + seed)
    n, n_edges, missing = 25, 199, 200
    xb = rng.integers(0, n_edges + 1, size=n)
    if seed % 2:
        xb[rng.random(n) < 0.3] = missing
    g = rng.normal(size=n)
    h = 0.25 * rng.integers(1, 5, size=n)  # exact sums: the last candidate's right child is 0.0
    lam, alpha, mcw = (0.0, 0.0, 0.0) if seed < 4 else (1.0, 0.2, 0.5)
    gain, f, b, dl, gl, hl = find_best_split(_hist(xb, g, h, missing + 1),
                                             np.array([0], dtype=np.int64),
                                             np.array([n_edges], dtype=np.int64), missing,
                                             g.sum(), h.sum(), lam, alpha, 0.0, mcw)
    ref_gain, ref_b, ref_dl = best_split_reference(xb, g, h, missing, lam, alpha, 0.0, mcw)
    assert (b, dl) == (ref_b, ref_dl)
    assert gain == pytest.approx(ref_gain, rel=1e-9)
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


def test_reported_gain_is_net_of_gamma_and_half_of_xgboosts():
    """Our ``gain`` (Eq. 4) is the halved bracket minus gamma; xgboost reports the bracket itself
    (not net of its gamma) and compares it with its gamma: ours(gamma=g) grows xgboost's tree of
    gamma=2g, and xgboost's gain = 2 (ours + g) node by node."""
    import json

    import xgboost as xgb
    from sklearn.datasets import load_diabetes

    from deepnotes.boosting import GBDTRegressor

    X, y = load_diabetes(return_X_y=True)
    X, y = X[:300].astype(np.float32).astype(np.float64), y[:300]  # xgboost works in float32
    kw = dict(n_estimators=1, learning_rate=0.5, base_score=150.0, max_depth=3, reg_lambda=1.0,
              min_child_weight=1.0)
    free = GBDTRegressor(tree_method="exact", gamma=0.0, **kw).fit(X, y).trees_[0]
    split = free.left != -1
    g = 0.25 * float(free.gain[split].min())  # prunes nothing: the same tree in both libraries
    ours = GBDTRegressor(tree_method="exact", gamma=g, **kw).fit(X, y).trees_[0]
    np.testing.assert_array_equal(ours.feature, free.feature)
    np.testing.assert_allclose(ours.gain[split], free.gain[split] - g, rtol=1e-12)
    theirs = xgb.XGBRegressor(tree_method="exact", n_jobs=1, gamma=2 * g, **kw).fit(X, y)
    dump = json.loads(theirs.get_booster().get_dump(dump_format="json", with_stats=True)[0])
    stack, n = [(0, dump)], 0
    while stack:
        node, xn = stack.pop()
        n += 1
        if "leaf" in xn:
            assert ours.left[node] == -1
            continue
        assert ours.feature[node] == int(xn["split"][1:])
        assert xn["gain"] == pytest.approx(2 * (ours.gain[node] + g), rel=1e-4)
        kids = {c["nodeid"]: c for c in xn["children"]}
        stack += [(ours.left[node], kids[xn["yes"]]), (ours.right[node], kids[xn["no"]])]
    assert n == ours.n_nodes >= 7
    # a gamma above the root's gain: both keep the root as a leaf (ours at g, xgboost at 2g)
    big = float(free.gain[0]) * 1.01 + 1.0
    stump = dict(kw, max_depth=1)
    assert GBDTRegressor(tree_method="exact", gamma=big, **stump).fit(X, y).trees_[0].n_nodes == 1
    dump = xgb.XGBRegressor(tree_method="exact", n_jobs=1, gamma=2 * big, **stump).fit(X, y)
    assert "leaf" in json.loads(dump.get_booster().get_dump(dump_format="json")[0])


def test_gamma_stops_growth_where_xgboost_prunes_after_growth():
    """The documented difference in how gamma acts: a weak split above strong ones (XOR) is not
    made by ours (gain - gamma <= 0 at growth), while xgboost grows first and prunes bottom-up
    only splits whose children are leaves, so it keeps the weak root."""
    import xgboost as xgb

    from deepnotes.boosting import GBDTRegressor

    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(400, 2)) + 0.1 * rng.random((400, 2))
    y = 10.0 * ((X[:, 0] > 0.5) ^ (X[:, 1] > 0.5)) + 0.3 * (X[:, 0] > 0.5)
    kw = dict(n_estimators=1, learning_rate=1.0, base_score=float(y.mean()), max_depth=2,
              reg_lambda=1.0, min_child_weight=1.0)
    free = GBDTRegressor(tree_method="exact", **kw).fit(X, y).trees_[0]
    assert free.n_nodes == 7 and free.gain[0] < min(free.gain[1], free.gain[2])
    g = float(free.gain[0]) + 1.0  # above the root's gain, below its children's
    assert GBDTRegressor(tree_method="exact", gamma=g, **kw).fit(X, y).trees_[0].n_nodes == 1
    theirs = xgb.XGBRegressor(tree_method="exact", n_jobs=1, gamma=2 * g, **kw).fit(X, y)
    assert theirs.get_booster().get_dump()[0].count("leaf=") == 4
