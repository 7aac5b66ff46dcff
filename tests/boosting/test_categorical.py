"""Native categorical splits: predictions equal to xgboost's (``enable_categorical``) on the same
data, the partition search equal to brute force over all subsets, routing of unseen categories
and NaN, pandas ``category`` columns, TreeSHAP on categorical trees, and clear errors."""

import itertools

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from deepnotes.boosting import GBDTClassifier, GBDTRegressor
from deepnotes.boosting.binning import BinMapper
from deepnotes.boosting.grower import TreeParams, grow_tree
from deepnotes.boosting.predictor import make_forest, predict_raw
from deepnotes.boosting.splitting import MIN_GAIN, category_bins_left, find_best_split_ext


def _data(K, n=2000, seed=1):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, K, n).astype(float)
    x = rng.integers(0, 20, n).astype(float)  # few values: every value gets its own bin
    y = rng.normal(0, 3, K)[c.astype(int)] + 0.2 * x + rng.normal(0, 1, n)
    X = np.c_[c, x]
    X[rng.random(n) < 0.05, 0] = np.nan
    return X, y


@pytest.mark.parametrize("K,onehot", [(3, 4), (12, 1), (12, 12), (150, 1)])
def test_predictions_equal_xgboost_categorical(K, onehot):
    """One-vs-rest (K <= max_cat_to_onehot) and sorted partitions (K larger) give xgboost's
    trees; xgboost uses one-hot when K < its max_cat_to_onehot, so it gets ours + 1. With 150
    categories, xgboost's max_cat_threshold (64) caps the partitions of both, and categories
    lighter than min_child_weight sort as weight 0 (xgboost's CalcWeight)."""
    X, y = _data(K, n=4000 if K > 100 else 2000)
    kw = dict(n_estimators=3, learning_rate=0.5, max_depth=3, base_score=0.0, reg_lambda=1.0,
              min_child_weight=8.0 if K > 100 else 1.0)
    ours = GBDTRegressor(categorical_features=[0], max_cat_to_onehot=onehot, **kw).fit(X, y)
    theirs = xgb.XGBRegressor(tree_method="hist", enable_categorical=True,
                              feature_types=["c", "q"], max_cat_to_onehot=onehot + 1, n_jobs=1,
                              **kw).fit(X, y)
    assert any(t.categories for t in ours.trees_)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6, atol=1e-5)


def _hist_of(xb, g, h, n_bins):
    out = np.zeros((1, n_bins, 2))
    out[0, :, 0] = np.bincount(xb, weights=g, minlength=n_bins)
    out[0, :, 1] = np.bincount(xb, weights=h, minlength=n_bins)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_partition_search_equals_brute_force(seed):
    """With lambda = alpha = 0 the best binary partition of categories is a prefix of the
    categories sorted by G/H (Fisher 1958; Breiman et al. 1984): the sorted scan must find
    the gain of the best of all 2^(K-1) - 1 partitions."""
    rng = np.random.default_rng(seed)
    K, n = 7, 300
    xb = rng.integers(0, K, n)
    missing = K
    if seed % 2:
        xb[rng.random(n) < 0.2] = missing
    g = rng.normal(size=n) + 0.8 * (xb % 3)
    h = rng.uniform(0.2, 1.0, n)
    hist = _hist_of(xb, g, h, K + 1)
    G, H = g.sum(), h.sum()
    gain, f, label, dl, gl, hl = find_best_split_ext(
        hist, np.zeros(1, np.int64), np.array([K - 1]), missing, G, H, 0.0, 0.0, 0.0, 0.0,
        np.zeros(1, np.int8), -np.inf, np.inf, 0.0, np.ones(1, np.bool_), 1)

    def score(a, b):
        return a * a / b

    best = MIN_GAIN
    for r in range(1, K + 1):
        for subset in itertools.combinations(range(K), r):
            for d in (False, True):
                left = np.isin(xb, subset) | (d & (xb == missing))
                a, b = g[left].sum(), h[left].sum()
                if b <= 0 or H - b <= 0:
                    continue
                best = max(best, 0.5 * (score(a, b) + score(G - a, H - b) - score(G, H)))
    assert f == 0
    assert gain == pytest.approx(best, rel=1e-10)
    # the reported set and sums agree with the histogram
    bins = category_bins_left(hist[0], K, label, H, 0.0, 0.0, 0.0, 1)
    left = np.isin(xb, bins) | (dl & (xb == missing))
    assert gl == pytest.approx(g[left].sum()) and hl == pytest.approx(h[left].sum())


def test_training_scores_equal_prediction_of_categorical_tree():
    rng = np.random.default_rng(2)
    n = 3000
    X = np.c_[rng.integers(0, 30, n), rng.normal(size=n)].astype(float)
    X[rng.random(n) < 0.1, 0] = np.nan
    grad = (rng.normal(size=n) + np.nan_to_num(X[:, 0], nan=15) % 5).astype(np.float32)
    hess = np.ones(n, dtype=np.float32)
    cat = np.array([True, False])
    mapper = BinMapper(64, subsample=None).fit(X, categorical=cat)
    Xr = mapper.transform_row_major(X)
    rows = np.arange(n, dtype=np.int32)
    for policy in ("depthwise", "lossguide"):
        params = TreeParams(max_depth=4 if policy == "depthwise" else 0, grow_policy=policy,
                            max_leaves=0 if policy == "depthwise" else 10, is_categorical=cat)
        r = rows.copy()
        grown = grow_tree(np.asfortranarray(Xr), Xr, grad, hess, r, True,
                          np.arange(2, dtype=np.int64), mapper.n_edges_, mapper.edges_,
                          mapper.missing_bin, params, rng, categories=mapper.categories_)
        assert grown.tree.categories
        scores = np.zeros(n)
        grown.add_to_scores(scores, r, np.asfortranarray(Xr), mapper.missing_bin)
        expected = predict_raw(make_forest([grown.tree], [0]), X, np.zeros((n, 1)))[:, 0]
        np.testing.assert_array_equal(scores, expected)


def test_unseen_categories_and_nan_follow_the_default_side():
    X, y = _data(12)
    model = GBDTRegressor(n_estimators=5, max_depth=3, categorical_features=[0]).fit(X, y)
    x = np.array([[np.nan, 5.0], [99.0, 5.0], [12.0, 5.0]])  # NaN, two codes never seen
    p = model.predict(x)
    assert p[0] == p[1] == p[2]
    assert any(t.categories for t in model.trees_)


def test_pandas_category_columns_are_detected_and_recoded():
    X, y = _data(8)
    labels = np.array(list("abcdefgh"), dtype=object)
    col = pd.Categorical([None if np.isnan(v) else labels[int(v)] for v in X[:, 0]])
    df = pd.DataFrame({"city": col, "x": X[:, 1]})
    ours = GBDTRegressor(n_estimators=5, max_depth=3).fit(df, y)
    coded = GBDTRegressor(n_estimators=5, max_depth=3, categorical_features=["city"])
    coded.fit(pd.DataFrame({"city": col.codes.astype(float), "x": X[:, 1]}).replace(-1, np.nan), y)
    np.testing.assert_array_equal(ours.predict(df), coded.predict(
        pd.DataFrame({"city": col.codes.astype(float), "x": X[:, 1]}).replace(-1, np.nan)))
    # at predict time labels are re-coded by the training categories, whatever their order
    shuffled = pd.DataFrame({"city": pd.Categorical(df["city"].astype(object),
                                                    categories=list("hgfedcbaz")),
                             "x": X[:, 1]})
    np.testing.assert_array_equal(ours.predict(shuffled), ours.predict(df))
    unseen = pd.DataFrame({"city": pd.Categorical(["z", None]), "x": [3.0, 3.0]})
    p = ours.predict(unseen)
    assert p[0] == p[1]


def test_shap_of_categorical_trees_sums_to_the_raw_score():
    X, y = _data(10, n=800)
    model = GBDTClassifier(n_estimators=10, max_depth=3, categorical_features=[0],
                           max_cat_to_onehot=1).fit(X, y > np.median(y))
    Xt = np.vstack([X[:40], [[77.0, 3.0], [np.nan, 4.0]]])
    raw = model.decision_function_raw(Xt)[:, 0]
    contrib = model.predict_contributions(Xt)
    np.testing.assert_allclose(contrib.sum(axis=1), raw, rtol=1e-9, atol=1e-9)
    inter = model.predict_interactions(Xt)
    np.testing.assert_allclose(inter.sum(axis=2), contrib, rtol=1e-8, atol=1e-8)
    assert np.abs(contrib[:, 0]).mean() > 0  # the categorical feature gets credit


def test_native_beats_integer_codes_on_a_high_cardinality_feature():
    rng = np.random.default_rng(4)
    n, K = 4000, 80
    c = rng.integers(0, K, n)
    X = np.c_[c, rng.normal(size=n)].astype(float)
    y = rng.normal(0, 2, K)[c] + X[:, 1] + rng.normal(0, 0.3, n)
    kw = dict(n_estimators=40, max_depth=3, learning_rate=0.2)
    native = GBDTRegressor(categorical_features=[0], **kw).fit(X[:3000], y[:3000])
    codes = GBDTRegressor(**kw).fit(X[:3000], y[:3000])

    def mse(m):
        return np.mean((m.predict(X[3000:]) - y[3000:]) ** 2)

    assert mse(native) < 0.5 * mse(codes)


@pytest.mark.parametrize("bad,match", [(2.5, "holds 2.5, not an integer category code"),
                                       (-1.0, "holds -1.0, not an integer category code")])
def test_non_integer_codes_are_refused(bad, match):
    X, y = _data(5, n=100)
    Xb = X.copy()
    Xb[3, 0] = bad
    with pytest.raises(ValueError, match="categorical feature column 0 " + match):
        GBDTRegressor(n_estimators=2, categorical_features=[0]).fit(Xb, y)
    model = GBDTRegressor(n_estimators=2, categorical_features=[0]).fit(X, y)
    with pytest.raises(ValueError, match=match):
        model.predict(Xb)


def test_bad_categorical_settings():
    X, y = _data(5, n=100)
    with pytest.raises(ValueError, match="boolean mask needs 2 entries"):
        GBDTRegressor(categorical_features=[True]).fit(X, y)
    with pytest.raises(ValueError, match="categorical_features: feature index 4 out of range"):
        GBDTRegressor(categorical_features=[4]).fit(X, y)
    with pytest.raises(ValueError, match="needs tree_method='hist'"):
        GBDTRegressor(categorical_features=[0], tree_method="exact").fit(X, y)
    with pytest.raises(ValueError, match="is categorical"):
        GBDTRegressor(categorical_features=[0], monotone_constraints=(1, 0)).fit(X, y)
    with pytest.raises(ValueError, match="5 categories, more than max_bin=4"):
        GBDTRegressor(categorical_features=[0], max_bin=4).fit(X, y)


def test_save_load_keeps_categorical_splits(tmp_path):
    X, y = _data(9, n=600)
    model = GBDTRegressor(n_estimators=5, max_depth=3, categorical_features=[0]).fit(X, y)
    model.save_model(tmp_path / "m.json")
    loaded = GBDTRegressor().load_model(tmp_path / "m.json")
    Xt = np.vstack([X[:50], [[40.0, 1.0], [np.nan, 2.0]]])
    np.testing.assert_array_equal(loaded.predict(Xt), model.predict(Xt))
    with pytest.raises(ValueError, match="not an integer category code"):
        loaded.predict(np.array([[1.5, 0.0]]))
    df = pd.DataFrame({"c": pd.Categorical(np.array(list("abcdefghi"))[
        np.nan_to_num(X[:, 0]).astype(int)]), "x": X[:, 1]})
    model = GBDTRegressor(n_estimators=5, max_depth=3).fit(df, y)
    model.save_model(tmp_path / "p.json")
    loaded = GBDTRegressor().load_model(tmp_path / "p.json")
    np.testing.assert_array_equal(loaded.predict(df), model.predict(df))
