"""TreeSHAP (deepnotes.boosting.shap): equal to xgboost's pred_contribs / pred_interactions on the
same exact trees, to brute-force Shapley values over all feature subsets, and additive."""

import itertools
import json
import math

import numpy as np
import pytest
import xgboost as xgb

from deepnotes.boosting import GBDTClassifier, GBDTRegressor
from deepnotes.boosting.shap import tree_contributions


def _grid_data(task, n=300, m=5, seed=0):
    """Features are powers of two: every split midpoint is exact in float32 and is never a value
    itself, so xgboost's ``x < t`` and our ``x <= t`` route every row alike. 15 % missing."""
    rng = np.random.default_rng(seed)
    X = 2.0 ** rng.integers(-6, 8, size=(n, m))
    L = np.log2(X)
    z = L[:, 0] - 0.5 * L[:, 1] + 0.3 * L[:, 2] * (L[:, 3] > 1) + rng.normal(0, 1, n)
    X[rng.random(X.shape) < 0.15] = np.nan
    if task == "regression":
        return X, 10 * z
    if task == "binary":
        return X, (z > np.median(z)).astype(int)
    return X, np.digitize(z, np.quantile(z, [1 / 3, 2 / 3]))


CASES = [
    ("regression", GBDTRegressor, "XGBRegressor", dict(base_score=3.0, reg_alpha=0.5)),
    ("binary", GBDTClassifier, "XGBClassifier", dict(base_score=0.5)),
    # xgboost's softmax hessian is 2 p (1 - p), ours p (1 - p): with twice our L2 penalty,
    # learning rate and min_child_weight, xgboost grows the same trees (covers doubled); gamma
    # keeps both from splitting pure nodes on float32 rounding noise (the gains are equal)
    ("multiclass", GBDTClassifier, "XGBClassifier", dict(gamma=0.01)),
]
XGB_MULTICLASS = dict(learning_rate=1.0, min_child_weight=2.0, reg_lambda=2.0)


def _align(tree, node, xn, hess_scale=1.0):
    """Check that our tree and xgboost's JSON dump are the same tree. One known difference is
    aligned: where a node's non-missing rows share one value, our exact split is ``x <= inf``
    (non-missing vs missing, see exact.py) and xgboost's is ``x < t`` for some t above the value;
    SHAP also walks nodes a row does not reach, so we take xgboost's threshold there."""
    if "leaf" in xn:
        assert tree.left[node] == -1
        assert tree.value[node] == pytest.approx(xn["leaf"], rel=1e-5, abs=1e-6)
        assert hess_scale * tree.cover[node] == pytest.approx(xn["cover"], rel=1e-5)
        return
    assert tree.feature[node] == int(xn["split"][1:])
    if np.isinf(tree.threshold[node]):  # x <= (the float below t) is xgboost's x < t
        tree.threshold[node] = np.nextafter(xn["split_condition"], -np.inf)
    assert tree.threshold[node] == pytest.approx(xn["split_condition"], rel=1e-6)
    assert bool(tree.default_left[node]) == (xn["missing"] == xn["yes"])
    assert hess_scale * tree.cover[node] == pytest.approx(xn["cover"], rel=1e-5)
    kids = {c["nodeid"]: c for c in xn["children"]}
    _align(tree, tree.left[node], kids[xn["yes"]], hess_scale)
    _align(tree, tree.right[node], kids[xn["no"]], hess_scale)


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def pair(request):
    task, ours_cls, xgb_cls, extra = request.param
    X, y = _grid_data(task)
    kw = dict(n_estimators=6, learning_rate=0.5, max_depth=4, min_child_weight=1.0)
    kw.update(extra)
    ours = ours_cls(tree_method="exact", n_jobs=1, **kw).fit(X, y)
    # the same starting margin for both (ours starts multiclass at the log class priors)
    margin = np.repeat(ours._base_score[None, :], len(X), axis=0)
    if task == "multiclass":
        kw.update(XGB_MULTICLASS)
    else:
        margin = None
    theirs = getattr(xgb, xgb_cls)(tree_method="exact", n_jobs=1, **kw).fit(
        X, y, base_margin=margin)
    booster = theirs.get_booster()
    dumps = booster.get_dump(dump_format="json", with_stats=True)
    assert len(dumps) == len(ours.trees_)
    for tree, dump in zip(ours.trees_, dumps, strict=True):
        _align(tree, 0, json.loads(dump), 2.0 if task == "multiclass" else 1.0)
    ours._finish()  # rebuild the prediction forest from the aligned trees
    return task, X, ours, booster, margin


def _dmatrix(X, margin):
    return xgb.DMatrix(X, base_margin=None if margin is None else margin[:len(X)])


def test_contributions_equal_xgboost(pair):
    task, X, ours, booster, margin = pair
    dm = _dmatrix(X, margin)
    # same trees: the margins agree (xgboost sums in float32)
    raw = ours.decision_function_raw(X)
    theirs_raw = booster.predict(dm, output_margin=True).reshape(raw.shape)
    np.testing.assert_allclose(raw, theirs_raw, rtol=1e-5, atol=1e-4)
    ours_c = ours.predict_contributions(X)
    theirs_c = booster.predict(dm, pred_contribs=True)
    assert ours_c.shape == theirs_c.shape
    assert ours_c.shape == ((len(X), 3, 6) if task == "multiclass" else (len(X), 6))
    np.testing.assert_allclose(ours_c, theirs_c, rtol=1e-5, atol=1e-4)
    assert np.abs(ours_c[..., :-1]).max() > 0.1  # features carry real attributions
    for method in ("path", "precomputed"):  # both algorithms, whatever 'auto' picked
        c = tree_contributions(ours.trees_, ours._tree_class, ours.n_trees_per_round_,
                               ours._base_score, X, method=method)
        np.testing.assert_allclose(c.reshape(theirs_c.shape), theirs_c, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(c.reshape(ours_c.shape), ours_c, rtol=1e-12, atol=1e-12)


def test_interactions_equal_xgboost(pair):
    task, X, ours, booster, margin = pair
    ours_i = ours.predict_interactions(X[:60])
    theirs_i = booster.predict(_dmatrix(X[:60], margin), pred_interactions=True)
    assert ours_i.shape == theirs_i.shape
    np.testing.assert_allclose(ours_i, theirs_i, rtol=1e-5, atol=1e-4)
    off = ours_i[..., :-1, :-1] - np.einsum("...ii->...i", ours_i[..., :-1, :-1])[..., None] * \
        np.eye(X.shape[1])
    assert np.abs(off).max() > 1e-3  # real interactions, not only main effects


def test_additivity(pair):
    _, X, ours, _, _ = pair
    c = ours.predict_contributions(X)
    raw = ours.decision_function_raw(X)
    np.testing.assert_allclose(c.sum(-1), raw[:, 0] if c.ndim == 2 else raw, rtol=0, atol=1e-10)
    inter = ours.predict_interactions(X[:40])
    np.testing.assert_allclose(inter.sum(-1), c[:40], rtol=0, atol=1e-10)
    np.testing.assert_allclose(inter, np.swapaxes(inter, -1, -2), rtol=0, atol=1e-10)


# --- brute force: Shapley values of v(S) = E[f(x) | x_S] (TreeSHAP's conditional expectation) --
def _v(tree, x, S, node=0):
    if tree.left[node] == -1:
        return tree.value[node]
    f = tree.feature[node]
    if f in S:
        go_left = tree.default_left[node] if np.isnan(x[f]) else x[f] <= tree.threshold[node]
        return _v(tree, x, S, tree.left[node] if go_left else tree.right[node])
    a, b = tree.left[node], tree.right[node]
    return (tree.cover[a] * _v(tree, x, S, a) + tree.cover[b] * _v(tree, x, S, b)) \
        / tree.cover[node]


def _brute(trees, x, M):
    """Shapley values and Shapley interaction indices over all subsets of the M features."""
    v = {}
    for k in range(M + 1):
        for S in itertools.combinations(range(M), k):
            v[S] = sum(_v(t, x, set(S)) for t in trees)

    def val(S):
        return v[tuple(sorted(S))]

    phi = np.zeros(M)
    inter = np.zeros((M, M))
    for i in range(M):
        others = [j for j in range(M) if j != i]
        for k in range(M):
            for S in itertools.combinations(others, k):
                w = math.factorial(k) * math.factorial(M - k - 1) / math.factorial(M)
                phi[i] += w * (val(S + (i,)) - val(S))
        for j in others:
            rest = [q for q in others if q != j]
            for k in range(M - 1):
                for S in itertools.combinations(rest, k):
                    w = math.factorial(k) * math.factorial(M - k - 2) / (
                        2 * math.factorial(M - 1))
                    inter[i, j] += w * (val(S + (i, j)) - val(S + (i,)) - val(S + (j,))
                                        + val(S))
    for i in range(M):
        inter[i, i] = phi[i] - inter[i].sum()
    return phi, inter, val(())


def test_equals_brute_force_shapley():
    X, y = _grid_data("regression", n=200, m=4, seed=1)
    model = GBDTRegressor(tree_method="exact", n_estimators=3, max_depth=4, learning_rate=0.5,
                          n_jobs=1).fit(X, y)
    assert max(t.depth() for t in model.trees_) == 4
    assert any(len(set(t.feature[t.left != -1])) == 4 for t in model.trees_)
    c = model.predict_contributions(X[:8])
    args = (model.trees_, model._tree_class, 1, model._base_score, X[:8])
    c_path = tree_contributions(*args, method="path")[:, 0]
    c_pre = tree_contributions(*args, method="precomputed")[:, 0]
    inter = model.predict_interactions(X[:8])
    for r in range(8):
        phi, phi_ij, ev = _brute(model.trees_, X[r], 4)
        np.testing.assert_allclose(c[r, :4], phi, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(c_path[r, :4], phi, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(c_pre[r, :4], phi, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(c[r, 4], ev + model._base_score[0], rtol=1e-12)
        np.testing.assert_allclose(inter[r, :4, :4], phi_ij, rtol=1e-10, atol=1e-10)


def test_missing_follows_default_direction():
    X, y = _grid_data("binary", n=300, m=4, seed=2)
    model = GBDTClassifier(tree_method="exact", n_estimators=3, max_depth=3, n_jobs=1).fit(X, y)
    x = X[:5].copy()
    x[:, 0] = np.nan
    phi, _, _ = _brute(model.trees_, x[0], 4)
    np.testing.assert_allclose(model.predict_contributions(x)[0, :4], phi, atol=1e-10)
    np.testing.assert_allclose(model.predict_contributions(x).sum(1),
                               model.decision_function_raw(x)[:, 0], atol=1e-10)


def test_hist_model_is_additive():
    X, y = _grid_data("multiclass", n=400, m=6, seed=3)
    model = GBDTClassifier(n_estimators=5, max_depth=5, n_jobs=1).fit(X, y)
    c = model.predict_contributions(X)
    np.testing.assert_allclose(c.sum(-1), model.decision_function_raw(X), atol=1e-10)


def test_bad_input_is_named():
    X, y = _grid_data("regression", n=100, m=4)
    model = GBDTRegressor(n_estimators=2, max_depth=2, n_jobs=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict_contributions(X[:, :3])
    with pytest.raises(ValueError, match="features"):
        model.predict_interactions(np.zeros((2, 5)))
    bad = X[:3].copy()
    bad[0, 1] = np.inf
    with pytest.raises(ValueError, match="[Ii]nfinity"):
        model.predict_contributions(bad)
    with pytest.raises(ValueError, match="2D array"):
        model.predict_contributions(np.zeros(4))
    with pytest.raises(ValueError, match="method"):
        tree_contributions(model.trees_, [0, 0], 1, model._base_score, X, method="fast")
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        GBDTRegressor().predict_contributions(X)
