"""Monotone and interaction constraints (xgboost's semantics): property tests, trees equal to
xgboost's with ``tree_method='exact'``, and clear errors on bad input."""

import functools
import json

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_diabetes

from deepnotes.boosting import GBDTClassifier, GBDTRegressor
from deepnotes.boosting.splitting import find_best_split, find_best_split_ext

MONO = (1, 0, -1, 1)


def _data():
    rng = np.random.default_rng(3)
    n = 1500
    X = rng.uniform(-2, 2, size=(n, 4))
    X[rng.random(X.shape) < 0.05] = np.nan
    Z = np.nan_to_num(X)
    # non-monotone signal in the constrained features, so the constraints have work to do
    y = (np.sin(3 * Z[:, 0]) + Z[:, 0] + Z[:, 1] ** 2 - np.cos(3 * Z[:, 2]) - Z[:, 2]
         + Z[:, 3] * Z[:, 1] + rng.normal(0, 0.3, n))
    return X, y


@functools.cache
def _monotone_model(tree_method, grow_policy, constrained=True):
    X, y = _data()
    kw = (dict(grow_policy="lossguide", max_depth=0, max_leaves=12) if grow_policy == "lossguide"
          else dict(max_depth=4))
    return GBDTRegressor(n_estimators=30, learning_rate=0.3, tree_method=tree_method,
                         monotone_constraints=MONO if constrained else None, **kw).fit(X, y)


@settings(max_examples=60, deadline=None)
@given(method=st.sampled_from([("hist", "depthwise"), ("hist", "lossguide"),
                               ("exact", "depthwise")]),
       point=st.lists(st.one_of(st.floats(-3, 3), st.just(float("nan"))), min_size=4,
                      max_size=4),
       feature=st.sampled_from([0, 2, 3]),
       a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_predictions_are_monotone_along_constrained_features(method, point, feature, a, b):
    model = _monotone_model(*method)
    lo, hi = min(a, b), max(a, b)
    X = np.array([point, point], dtype=float)
    X[0, feature], X[1, feature] = lo, hi
    p_lo, p_hi = model.predict(X)
    if MONO[feature] > 0:
        assert p_lo <= p_hi
    else:
        assert p_lo >= p_hi


def test_unconstrained_model_is_not_monotone_on_the_same_data():
    """The property above is not vacuous: without constraints the fit wiggles."""
    model = _monotone_model("hist", "depthwise")
    free = _monotone_model("hist", "depthwise", constrained=False)
    grid = np.zeros((200, 4))
    grid[:, 0] = np.linspace(-2, 2, 200)
    assert np.any(np.diff(free.predict(grid)) < 0)
    assert np.all(np.diff(model.predict(grid)) >= 0)
    assert np.all(np.diff(model.predict(grid[:, [2, 1, 0, 3]])) <= 0)  # feature 2: decreasing


def _walk(tree, node, xn):
    """Our tree against xgboost's JSON dump, node by node (float32 tolerances, as test_exact)."""
    if "leaf" in xn:
        assert tree.left[node] == -1
        assert tree.value[node] == pytest.approx(xn["leaf"], rel=1e-5, abs=1e-6)
        return 1
    assert tree.feature[node] == int(xn["split"][1:])
    assert tree.threshold[node] == pytest.approx(xn["split_condition"], rel=1e-6)
    kids = {c["nodeid"]: c for c in xn["children"]}
    return (1 + _walk(tree, tree.left[node], kids[xn["yes"]])
            + _walk(tree, tree.right[node], kids[xn["no"]]))


@pytest.mark.parametrize("kind", ["monotone", "interaction"])
def test_trees_equal_xgboost_exact(kind):
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:300].astype(np.float32).astype(np.float64), y[:300]
    kw = dict(n_estimators=4, learning_rate=0.5, max_depth=4, base_score=150.0, reg_lambda=1.0)
    if kind == "monotone":
        mono = (1, 0, 1, 1, 0, -1, -1, 0, 1, 0)
        ours = GBDTRegressor(tree_method="exact", monotone_constraints=mono, **kw)
        theirs = xgb.XGBRegressor(tree_method="exact", n_jobs=1,
                                  monotone_constraints="(" + ",".join(map(str, mono)) + ")", **kw)
    else:
        sets = [[2, 3, 8], [0, 1], [5, 9]]
        ours = GBDTRegressor(tree_method="exact", interaction_constraints=sets, **kw)
        theirs = xgb.XGBRegressor(tree_method="exact", n_jobs=1,
                                  interaction_constraints=json.dumps(sets), **kw)
    ours.fit(X, y)
    theirs.fit(X, y)
    dumps = theirs.get_booster().get_dump(dump_format="json")
    for tree, dump in zip(ours.trees_, dumps, strict=True):
        assert _walk(tree, 0, json.loads(dump)) == tree.n_nodes
    assert ours.trees_[0].n_nodes >= 15
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6)


def test_monotone_hist_close_to_xgboost_hist():
    """hist bins differ from xgboost's sketch, so trees differ; the loss is close."""
    X, y = load_breast_cancer(return_X_y=True)
    mono = [1, -1] + [0] * 28
    kw = dict(n_estimators=30, max_depth=4, base_score=0.5)
    ours = GBDTClassifier(monotone_constraints=mono, **kw).fit(X, y)
    theirs = xgb.XGBClassifier(monotone_constraints=tuple(mono), n_jobs=1, **kw).fit(X, y)

    def logloss(p):
        return -np.mean(y * np.log(p[:, 1]) + (1 - y) * np.log(p[:, 0]))

    a, b = logloss(ours.predict_proba(X)), logloss(theirs.predict_proba(X))
    assert abs(a - b) < 0.1 * b


def test_interaction_paths_stay_in_one_set():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 6))
    y = X[:, 0] * X[:, 3] + X[:, 1] * X[:, 4] + X[:, 2] * X[:, 5] + np.sin(X[:, 5])
    sets = [[0, 1, 2], [3, 4], [5]]
    for method in ("hist", "exact"):
        model = GBDTRegressor(n_estimators=20, max_depth=5, tree_method=method,
                              interaction_constraints=sets).fit(X, y)
        n_multi = 0
        for t in model.trees_:
            stack = [(0, frozenset())]
            while stack:
                node, path = stack.pop()
                if t.left[node] == -1:
                    n_multi += len(path) > 1
                    # xgboost's rule: a path of two or more features lies inside one set
                    assert len(path) <= 1 or any(path <= set(s) for s in sets), path
                    continue
                path = path | {int(t.feature[node])}
                stack += [(t.left[node], path), (t.right[node], path)]
        assert n_multi > 0  # the sets were used, not just stumps


def test_ext_kernel_equals_plain_kernel_without_constraints():
    rng = np.random.default_rng(5)
    n_features, n_bins = 4, 12
    hist = rng.uniform(0.1, 1.0, size=(n_features, n_bins, 2))
    hist[..., 0] -= 0.5
    g, h = hist[0, :, 0].sum(), hist[0, :, 1].sum()
    hist[:, :, 0] += (g - hist[:, :, 0].sum(axis=1, keepdims=True)) / n_bins
    hist[:, :, 1] *= h / hist[:, :, 1].sum(axis=1, keepdims=True)
    feats = np.arange(n_features, dtype=np.int64)
    n_edges = np.full(n_features, n_bins - 2, dtype=np.int64)
    plain = find_best_split(hist, feats, n_edges, n_bins - 1, g, h, 1.0, 0.1, 0.0, 0.5)
    ext = find_best_split_ext(hist, feats, n_edges, n_bins - 1, g, h, 1.0, 0.1, 0.0, 0.5,
                              np.zeros(n_features, dtype=np.int8), -np.inf, np.inf, 0.0,
                              np.zeros(n_features, dtype=np.bool_), 4)
    assert plain == ext


@pytest.mark.parametrize("spec,match", [
    ((1, 0), "monotone_constraints has 2 entries but X has 3"),
    ("(1,0,-1,1)", "monotone_constraints has 4 entries"),
    ((1, 2, 0), "must be -1, 0 or 1"),
    ("(1,a,0)", "cannot parse"),
    ({"nope": 1}, "unknown feature 'nope'"),
    ({5: 1}, "out of range"),
])
def test_bad_monotone_constraints(spec, match):
    X = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(ValueError, match=match):
        GBDTRegressor(n_estimators=2, monotone_constraints=spec).fit(X, X[:, 0])


@pytest.mark.parametrize("spec,match", [
    ([[0, 7]], "out of range"),
    ([0, 1], "list of lists"),
    ("[[0, 1", "cannot parse"),
    ([["a", "b"]], "unknown feature 'a'"),
])
def test_bad_interaction_constraints(spec, match):
    X = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(ValueError, match=match):
        GBDTRegressor(n_estimators=2, interaction_constraints=spec).fit(X, X[:, 0])


def test_constraints_by_name_and_string_forms():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    y = np.sin(2 * df["a"]) + df["b"] - df["c"]
    kw = dict(n_estimators=10, max_depth=3)
    by_name = GBDTRegressor(monotone_constraints={"a": 1, "c": -1},
                            interaction_constraints=[["a", "b"], ["c"]], **kw).fit(df, y)
    by_index = GBDTRegressor(monotone_constraints="(1,0,-1)",
                             interaction_constraints="[[0, 1], [2]]", **kw).fit(df.values, y)
    np.testing.assert_array_equal(by_name.predict(df), by_index.predict(df.values))


def test_distributed_estimators_refuse_the_new_parameters():
    from deepnotes.boosting import dask as distributed

    for kw in (dict(monotone_constraints=[1, 0]), dict(interaction_constraints=[[0, 1]]),
               dict(categorical_features=[0])):
        with pytest.raises(ValueError, match="not supported by the Dask estimators"):
            distributed.DaskGBDTRegressor(**kw)._validate_params()
