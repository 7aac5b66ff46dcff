"""deepnotes.boosting.fused_grower: the same trees as grower.grow_tree, float for float."""

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

import deepnotes.boosting.gbdt as gbdt_module
from deepnotes.boosting import GBDTClassifier, GBDTRegressor
from deepnotes.boosting.binning import BinMapper
from deepnotes.boosting.fused_grower import CompactBins, fusable, grow_tree_fused
from deepnotes.boosting.grower import TreeParams, grow_tree
from deepnotes.boosting.predictor import TREE_FIELDS, make_forest, predict_raw


def _assert_same_trees(a, b):
    assert len(a._trees) == len(b._trees)
    for ta, tb in zip(a._trees, b._trees, strict=True):
        for name in TREE_FIELDS:
            np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name), err_msg=name)
            assert getattr(ta, name).dtype == getattr(tb, name).dtype, name


def _fit_both(monkeypatch, make, X, y, **kw):
    fused = make(**kw).fit(X, y)
    monkeypatch.setattr(gbdt_module, "FUSED_MAX_ROWS", 0)  # every tree through grow_tree
    plain = make(**kw).fit(X, y)
    monkeypatch.undo()
    return fused, plain


@pytest.mark.parametrize("kw", [
    dict(),
    dict(max_depth=1),
    dict(max_depth=8, min_child_weight=0.0, reg_lambda=0.0),
    dict(reg_alpha=0.5, gamma=0.05, min_child_weight=3.0),
    dict(subsample=0.7, colsample_bytree=0.6),
    dict(max_bin=16),
    dict(n_jobs=1),  # a round's three trees on one worker instead of two
])
def test_classifier_trees_equal_the_node_by_node_grower(monkeypatch, kw):
    X, y = make_classification(n_samples=700, n_features=9, n_informative=5, n_classes=3,
                               random_state=1)
    X[np.random.default_rng(1).random(X.shape) < 0.15] = np.nan
    X[:, 2] = np.round(X[:, 2])  # few distinct values: a short feature in the compact layout
    params = dict(n_estimators=15, learning_rate=0.3, tree_method="hist", random_state=3)
    params.update(kw)
    fused, plain = _fit_both(monkeypatch, GBDTClassifier, X, y, **params)
    _assert_same_trees(fused, plain)
    np.testing.assert_array_equal(fused.predict_proba(X), plain.predict_proba(X))


def test_regressor_with_weights_and_a_constant_feature(monkeypatch):
    X, y = make_regression(n_samples=400, n_features=6, noise=5.0, random_state=0)
    X[:, 4] = 1.0  # one bin: never split on
    w = np.random.default_rng(0).uniform(0.2, 2.0, size=len(y))
    fused = GBDTRegressor(n_estimators=20, max_depth=5, tree_method="hist").fit(
        X, y, sample_weight=w)
    monkeypatch.setattr(gbdt_module, "FUSED_MAX_ROWS", 0)
    plain = GBDTRegressor(n_estimators=20, max_depth=5, tree_method="hist").fit(
        X, y, sample_weight=w)
    _assert_same_trees(fused, plain)


def _grow_both(seed, n, max_depth, rows_frac=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 7))
    X[:, 3] = rng.integers(0, 4, size=n)
    X[rng.random(X.shape) < 0.1] = np.nan
    grad = (rng.normal(size=n) + np.nan_to_num(X[:, 0])).astype(np.float32)
    hess = rng.uniform(0.1, 1.5, size=n).astype(np.float32)
    mapper = BinMapper(64, subsample=None).fit(X)
    Xb_rows = mapper.transform_row_major(X)
    rows = np.arange(n, dtype=np.int32)
    if rows_frac < 1.0:
        rows = np.flatnonzero(rng.random(n) < rows_frac).astype(np.int32)
    params = TreeParams(max_depth=max_depth, learning_rate=0.5)
    features = np.array([0, 1, 3, 4, 6], dtype=np.int64)
    compact = CompactBins(Xb_rows, mapper.n_edges_, mapper.missing_bin, max_depth)
    fused_rows = rows.copy()
    arrays, leaf_start, leaf_stop, leaf_value = grow_tree_fused(
        compact, grad, hess, fused_rows, features, mapper.edges_, params)
    plain = grow_tree(np.asfortranarray(Xb_rows), Xb_rows, grad, hess, rows.copy(),
                      rows_frac == 1.0, features, mapper.n_edges_, mapper.edges_,
                      mapper.missing_bin, params, rng)
    return X, arrays, (leaf_start, leaf_stop, leaf_value, fused_rows), plain


@pytest.mark.parametrize("max_depth", [2, 6, 12])
@pytest.mark.parametrize("rows_frac", [1.0, 0.6])
def test_grow_tree_fused_equals_grow_tree(max_depth, rows_frac):
    X, arrays, leaves, plain = _grow_both(4, 2000, max_depth, rows_frac)
    for name in TREE_FIELDS:
        np.testing.assert_array_equal(arrays[name], getattr(plain.tree, name), err_msg=name)
    # every leaf's slice holds exactly the rows the tree sends to that leaf
    leaf_start, leaf_stop, leaf_value, rows = leaves
    leaf_ids = np.flatnonzero(arrays["left"] == -1)
    np.testing.assert_array_equal(leaf_value, arrays["value"][leaf_ids])
    tree = plain.tree
    ids = type(tree)(**{**{k: getattr(tree, k) for k in TREE_FIELDS},
                        "value": np.arange(tree.n_nodes, dtype=np.float64)})
    reached = predict_raw(make_forest([ids], [0]), X, np.zeros((len(X), 1)))[:, 0]
    assert np.sum(leaf_stop - leaf_start) == len(rows)
    for k, node in enumerate(leaf_ids):
        part = rows[leaf_start[k]:leaf_stop[k]]
        assert np.all(np.diff(part) > 0)  # slices stay ascending
        np.testing.assert_array_equal(reached[part], node)


def test_fusable_refuses_what_it_does_not_grow():
    assert fusable(TreeParams())
    assert not fusable(TreeParams(grow_policy="lossguide", max_leaves=8, max_depth=0))
    assert not fusable(TreeParams(colsample_bynode=0.5))
    assert not fusable(TreeParams(monotone=np.array([1, 0], dtype=np.int8)))
    assert fusable(TreeParams(monotone=np.zeros(2, dtype=np.int8)))
    assert not fusable(TreeParams(interaction_sets=(frozenset({0, 1}),)))
    assert not fusable(TreeParams(is_categorical=np.array([True, False])))
    assert not fusable(TreeParams(max_depth=40))


def test_compact_bins_codes_address_each_features_rows():
    Xb = np.array([[0, 255], [3, 1], [255, 0]], dtype=np.uint8)
    compact = CompactBins(Xb, np.array([3, 1]), 255, max_depth=2)
    # feature 0: bins 0..3 and missing at rows 0..4; feature 1: bins 0..1, missing: rows 5..7
    np.testing.assert_array_equal(compact.offsets, [0, 5, 8])
    np.testing.assert_array_equal(compact.codes, [[0, 7], [3, 6], [4, 5]])
    assert compact.pool.shape == (1, 4, 8, 2)
    with pytest.raises(ValueError, match="X_rows has shape"):
        CompactBins(Xb, np.array([3]), 255, max_depth=2)


@pytest.mark.parametrize("objective", ["reg:absoluteerror", "reg:quantileerror"])
def test_adaptive_leaves_from_the_leaf_slices_equal_those_from_prediction(monkeypatch,
                                                                          objective):
    # fused trees refresh their leaves from the rows of each leaf's slice; the node-by-node
    # grower's last level has no slices, so its leaves are found by predicting the tree
    X, y = make_regression(n_samples=500, n_features=5, noise=20.0, random_state=2)
    kw = dict(n_estimators=8, max_depth=4, tree_method="hist", objective=objective,
              quantile_alpha=0.8)
    w = np.random.default_rng(2).uniform(0.5, 2.0, size=len(y))
    fused = GBDTRegressor(**kw).fit(X, y, sample_weight=w)
    monkeypatch.setattr(gbdt_module, "FUSED_MAX_ROWS", 0)
    plain = GBDTRegressor(**kw).fit(X, y, sample_weight=w)
    _assert_same_trees(fused, plain)


def test_a_pool_over_the_memory_bound_falls_back_to_the_node_by_node_grower(monkeypatch):
    from deepnotes.boosting import fused_grower

    X, y = make_regression(n_samples=300, n_features=4, random_state=0)
    assert fused_grower.pool_bytes(np.array([254, 254, 254, 254]), 6) == 8 * 4 * 256 * 16
    built = []
    real = gbdt_module.CompactBins
    monkeypatch.setattr(gbdt_module, "CompactBins",
                        lambda *a, **k: built.append(1) or real(*a, **k))
    GBDTRegressor(n_estimators=2, tree_method="hist").fit(X, y)
    assert built == [1]
    monkeypatch.setattr(gbdt_module, "FUSED_MAX_POOL_BYTES", 1000)
    GBDTRegressor(n_estimators=2, tree_method="hist").fit(X, y)
    assert built == [1]  # not built again: the pool would exceed the bound


@pytest.mark.parametrize("max_bin", [8, 32])
def test_dense_scans_without_missing_values_equal_the_node_by_node_grower(monkeypatch, max_bin):
    # few bins and no NaN: deep nodes still have more rows than bins, so their scans run over
    # every bin (empty ones included) instead of the occupied bits
    X, y = make_classification(n_samples=3000, n_features=6, n_informative=4, random_state=5)
    X[:, 1] = np.round(X[:, 1] * 2)
    fused, plain = _fit_both(monkeypatch, GBDTClassifier, X, y, n_estimators=10, max_depth=8,
                             max_bin=max_bin, tree_method="hist", min_child_weight=0.0)
    _assert_same_trees(fused, plain)
