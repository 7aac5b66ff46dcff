"""tree_method='exact': the first tree equals xgboost's exact tree; hist equals exact when every
value has its own bin (fast path vs reference path)."""

import json

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes

from deepnotes.boosting import GBDTClassifier, GBDTRegressor


def _compare(tree, node, xn):
    """Walk our tree and xgboost's JSON dump together. xgboost keeps float32 thresholds and
    leaf values (rel=1e-6) and reports twice our gain (see splitting.py) as a float32 difference
    of node scores up to ~100x larger than the gain itself, so ~1e-7 * 100 relative error (1e-4)."""
    if "leaf" in xn:
        assert tree.left[node] == -1
        assert tree.value[node] == pytest.approx(xn["leaf"], rel=1e-6, abs=1e-7)
        return 1
    assert tree.feature[node] == int(xn["split"][1:])
    assert tree.threshold[node] == pytest.approx(xn["split_condition"], rel=1e-6)
    assert 2 * tree.gain[node] == pytest.approx(xn["gain"], rel=1e-4)
    assert tree.cover[node] == pytest.approx(xn["cover"], rel=1e-6)
    kids = {c["nodeid"]: c for c in xn["children"]}
    return (1 + _compare(tree, tree.left[node], kids[xn["yes"]])
            + _compare(tree, tree.right[node], kids[xn["no"]]))


@pytest.mark.parametrize("est_cls,xgb_cls,loader,kw", [
    (GBDTClassifier, "XGBClassifier", load_breast_cancer,
     dict(base_score=0.5, max_depth=4, reg_lambda=1.0, min_child_weight=1.0)),
    (GBDTRegressor, "XGBRegressor", load_diabetes,
     dict(base_score=150.0, max_depth=5, reg_lambda=2.0, reg_alpha=3.0, min_child_weight=4.0)),
])
def test_first_tree_equals_xgboost_exact(est_cls, xgb_cls, loader, kw):
    X, y = loader(return_X_y=True)
    # xgboost works in float32: give both the same float32-representable data
    X = X[:300].astype(np.float32).astype(np.float64)
    y = y[:300]
    kw = dict(n_estimators=1, learning_rate=0.5, **kw)
    ours = est_cls(tree_method="exact", **kw).fit(X, y)
    theirs = getattr(xgb, xgb_cls)(tree_method="exact", n_jobs=1, **kw).fit(X, y)
    dump = json.loads(theirs.get_booster().get_dump(dump_format="json", with_stats=True)[0])
    tree = ours.trees_[0]
    assert _compare(tree, 0, dump) == tree.n_nodes
    assert tree.n_nodes >= 15  # a real tree, not a stump


def test_hist_equals_exact_when_bins_are_exact():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 20, size=(800, 4)).astype(float)
    X[rng.random(X.shape) < 0.2] = np.nan
    y = (np.nan_to_num(X[:, 0], nan=25) + X[:, 1] * (rng.random(800) < 0.5) > 12).astype(int)
    kw = dict(n_estimators=5, max_depth=4, learning_rate=0.3, reg_alpha=0.1, gamma=0.05)
    a = GBDTClassifier(tree_method="hist", max_bin=64, **kw).fit(X, y)
    b = GBDTClassifier(tree_method="exact", **kw).fit(X, y)
    for ta, tb in zip(a.trees_, b.trees_, strict=True):
        np.testing.assert_array_equal(ta.feature, tb.feature)
        # A node whose non-missing rows share one value can split them from its missing rows:
        # exact says "x <= inf", hist the edge above that value; the same training partition.
        assert np.all((ta.threshold == tb.threshold) | np.isinf(tb.threshold))
        np.testing.assert_array_equal(ta.default_left, tb.default_left)
        # same sums in a different order (histogram vs sorted scan): float64 rounding only
        np.testing.assert_allclose(ta.value, tb.value, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-9)
