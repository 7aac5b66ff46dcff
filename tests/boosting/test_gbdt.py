"""deepnotes.boosting estimators: known answers, missing values, persistence, determinism,
accuracy beside xgboost, and clear errors on bad input."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split

from deepnotes.boosting import GBDTClassifier, GBDTRegressor, load_model
from deepnotes.boosting.metrics import auc, logloss, mlogloss, rmse


def test_hand_checked_stump():
    X = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = np.array([1.0, 1.0, 3.0, 3.0])
    kw = dict(n_estimators=1, learning_rate=1.0, max_depth=1, base_score=0.0, min_child_weight=0)
    t = GBDTRegressor(**kw).fit(X, y).trees_[0]
    # g = -y, h = 1, lambda = 1: gain 4/15 at 2.5, leaves 2/3 and 6/3 (test_splitting.py)
    assert t.threshold[0] == 2.5 and t.gain[0] == pytest.approx(4 / 15)
    np.testing.assert_allclose(t.value[1:], [2 / 3, 2.0])
    # gamma above the gain prunes; L1 alpha = 1 shrinks the root weight to 7/5
    assert GBDTRegressor(gamma=0.27, **kw).fit(X, y).trees_[0].n_nodes == 1
    assert GBDTRegressor(gamma=0.26, **kw).fit(X, y).trees_[0].n_nodes == 3
    root = GBDTRegressor(reg_alpha=1.0, **kw).fit(X, y).trees_[0]
    assert root.n_nodes == 1 and root.value[0] == pytest.approx(1.4)


@pytest.mark.parametrize("tree_method", ["hist", "exact"])
def test_depth_one_tree_is_the_brute_force_best_stump(tree_method):
    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(300, 4)), 1)  # <= 256 distinct values: hist is exact too
    y = (X[:, 1] + 0.5 * X[:, 2] + rng.normal(size=300) > 0.3).astype(int)
    lam = 2.0
    est = GBDTClassifier(n_estimators=1, max_depth=1, learning_rate=1.0, reg_lambda=lam,
                         tree_method=tree_method).fit(X, y)
    p = y.mean()
    g = np.float32(p) - y  # gradients at the base score p (float32, as the library keeps them)
    h = np.full(300, np.float32(p * (1 - p)), dtype=np.float32)
    best = (-np.inf, None, None)
    for j in range(4):
        v = np.unique(X[:, j])
        for t in (v[1:] + v[:-1]) / 2:
            left = X[:, j] <= t
            gl, hl, gr, hr = g[left].sum(), h[left].sum(), g[~left].sum(), h[~left].sum()
            gain = 0.5 * (gl**2 / (hl + lam) + gr**2 / (hr + lam) - g.sum()**2 / (h.sum() + lam))
            if gain > best[0]:
                best = (gain, j, t, -gl / (hl + lam), -gr / (hr + lam))
    tree = est.trees_[0]
    assert (tree.feature[0], tree.threshold[0]) == (best[1], pytest.approx(best[2], abs=1e-12))
    assert tree.gain[0] == pytest.approx(best[0], rel=1e-6)  # float32 gradients summed
    np.testing.assert_allclose(tree.value[1:], best[3:], rtol=1e-6)


@pytest.mark.parametrize("missing", [0.1, 0.3, 0.5])
def test_feature_informative_only_through_missingness(missing):
    rng = np.random.default_rng(1)
    n = 4000
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < missing).astype(int)
    X[y == 1, 0] = np.nan  # x0's values are noise; only whether it is missing tells the class
    est = GBDTClassifier(n_estimators=10, max_depth=2).fit(X[:3000], y[:3000])
    assert est.trees_[0].feature[0] == 0
    assert (est.predict(X[3000:]) == y[3000:]).mean() == 1.0
    assert est.feature_importances_[0] > 0.9


def test_nan_at_predict_for_feature_without_missing_in_training_goes_right():
    X = np.arange(20, dtype=float)[:, None]
    est = GBDTRegressor(n_estimators=1, max_depth=1, learning_rate=1.0).fit(X, (X[:, 0] > 9.5))
    assert est.predict([[np.nan]])[0] == est.predict([[100.0]])[0]


@pytest.mark.parametrize("est", [
    GBDTClassifier(n_estimators=8, subsample=0.7, colsample_bynode=0.5, random_state=3),
    GBDTClassifier(n_estimators=4, grow_policy="lossguide", max_leaves=5, max_depth=0),
    GBDTRegressor(n_estimators=6, colsample_bytree=0.6, random_state=3),
    GBDTRegressor(n_estimators=3, tree_method="exact", subsample=0.8, random_state=1),
])
def test_save_load_round_trip_is_bit_identical(est, tmp_path):
    X, y = load_digits(return_X_y=True) if isinstance(est, GBDTClassifier) else \
        load_diabetes(return_X_y=True)
    X = X.copy()
    X[::7, 3] = np.nan
    est.fit(X, y)
    path = tmp_path / "model.json"
    est.save_model(path)
    loaded = load_model(path)
    assert type(loaded) is type(est) and loaded.get_params() == est.get_params()
    method = "predict_proba" if isinstance(est, GBDTClassifier) else "predict"
    np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(est, method)(X))
    np.testing.assert_array_equal(loaded.feature_importances_, est.feature_importances_)


def test_determinism_for_a_seed_and_variation_across_seeds():
    X, y = load_breast_cancer(return_X_y=True)
    kw = dict(n_estimators=10, subsample=0.6, colsample_bytree=0.7, colsample_bynode=0.7)
    a = GBDTClassifier(random_state=5, **kw).fit(X, y).predict_proba(X)
    b = GBDTClassifier(random_state=5, **kw).fit(X, y).predict_proba(X)
    c = GBDTClassifier(random_state=6, **kw).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lossguide_respects_max_leaves_and_depthwise_max_depth():
    X, y = load_diabetes(return_X_y=True)
    lg = GBDTRegressor(n_estimators=3, grow_policy="lossguide", max_leaves=7, max_depth=0).fit(X, y)
    assert all(t.n_leaves == 7 for t in lg.trees_)
    dw = GBDTRegressor(n_estimators=3, max_depth=3).fit(X, y)
    assert all(t.depth() == 3 and t.n_leaves <= 8 for t in dw.trees_)


def test_staged_predict_early_stopping_and_custom_objective():
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, random_state=0)
    est = GBDTRegressor(n_estimators=200, learning_rate=0.3).fit(
        Xtr, ytr, eval_set=[(Xva, yva)], early_stopping_rounds=5)
    curve = est.evals_result_["validation_0"]["rmse"]
    assert est.best_iteration_ < 199 and len(curve) == est.best_iteration_ + 6
    assert est.best_score_ == min(curve) and est.n_rounds_ == est.best_iteration_ + 1
    stages = list(est.staged_predict(Xva))
    assert len(stages) == est.n_rounds_
    np.testing.assert_allclose(stages[-1], est.predict(Xva), rtol=1e-12)
    assert rmse(yva, est.predict(Xva)) == pytest.approx(est.best_score_, rel=1e-12)
    # a callable objective with squared-error derivatives gives the built-in model
    custom = GBDTRegressor(n_estimators=5, base_score=0.0,
                           objective=lambda yt, yp: (yp - yt, np.ones_like(yp))).fit(Xtr, ytr)
    builtin = GBDTRegressor(n_estimators=5, base_score=0.0).fit(Xtr, ytr)
    np.testing.assert_allclose(custom.predict(Xva), builtin.predict(Xva), rtol=1e-12)


def test_integer_sample_weights_equal_repeated_rows():
    rng = np.random.default_rng(2)
    X = rng.integers(0, 30, size=(200, 3)).astype(float)
    y = X[:, 0] * 2 + rng.normal(size=200)
    w = rng.integers(1, 4, size=200)
    a = GBDTRegressor(n_estimators=5).fit(X, y, sample_weight=w)
    b = GBDTRegressor(n_estimators=5).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-6)  # float32 gradients


def test_pandas_and_string_labels_and_importance_types():
    import pandas as pd
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    labels = np.where(y == 1, "benign", "malignant")
    est = GBDTClassifier(n_estimators=5, importance_type="weight").fit(X, labels)
    assert list(est.classes_) == ["benign", "malignant"]
    assert set(est.predict(X.iloc[:20])) <= {"benign", "malignant"}
    assert isinstance(X, pd.DataFrame) and list(est.feature_names_in_) == list(X.columns)
    w = est.get_score("weight")  # a dict keyed by the DataFrame's column names, as xgboost's
    assert set(w) <= set(X.columns) and all(v > 0 for v in w.values())
    assert sum(w.values()) == sum(int((t.left != -1).sum()) for t in est.trees_)
    assert est.feature_importances_.sum() == pytest.approx(1.0)


# Tolerances: same hyper-parameters, but bin edges (xgboost's sketch vs our midpoints), the
# base score and, for digits, xgboost's doubled softmax hessian differ; test sets are small
# (143 / 111 / 450 rows), so one or two rows move accuracy by 0.7 / 0.2 percentage points.
@pytest.mark.parametrize("name", ["breast_cancer", "diabetes", "digits"])
def test_accuracy_close_to_xgboost(name):
    import xgboost as xgb
    loader = {"breast_cancer": load_breast_cancer, "diabetes": load_diabetes,
              "digits": load_digits}[name]
    X, y = loader(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    kw = dict(n_estimators=100, learning_rate=0.1, max_depth=4, max_bin=256, n_jobs=2)
    if name == "diabetes":
        ours = GBDTRegressor(**kw).fit(Xtr, ytr).predict(Xte)
        theirs = xgb.XGBRegressor(tree_method="hist", **kw).fit(Xtr, ytr).predict(Xte)
        assert rmse(yte, ours) <= 1.03 * rmse(yte, theirs)
        return
    ours = GBDTClassifier(**kw).fit(Xtr, ytr).predict_proba(Xte)
    theirs = xgb.XGBClassifier(tree_method="hist", **kw).fit(Xtr, ytr).predict_proba(Xte)
    acc = (ours.argmax(1) == yte).mean()
    assert acc >= (theirs.argmax(1) == yte).mean() - 0.015
    if name == "breast_cancer":
        assert auc(yte, ours[:, 1]) >= auc(yte, theirs[:, 1]) - 0.005
        assert logloss(yte, ours[:, 1]) <= logloss(yte, theirs[:, 1]) + 0.02
    else:
        assert mlogloss(yte, ours) <= mlogloss(yte, theirs) + 0.03


def _xy():
    return np.random.default_rng(0).normal(size=(30, 3)), np.arange(30) % 2


@pytest.mark.parametrize("kw,match", [
    (dict(max_depth=-1), "max_depth"), (dict(learning_rate=0.0), "learning_rate"),
    (dict(n_estimators=0), "n_estimators"), (dict(subsample=1.5), "subsample"),
    (dict(grow_policy="leafwise"), "grow_policy"), (dict(tree_method="approx"), "tree_method"),
    (dict(max_bin=1), "max_bin"), (dict(reg_lambda=-1.0), "reg_lambda"),
    (dict(n_jobs=0), "n_jobs"),
])
def test_invalid_parameters(kw, match):
    X, y = _xy()
    with pytest.raises(ValueError, match=match):
        GBDTClassifier(**kw).fit(X, y)


def test_bad_inputs(tmp_path):
    X, y = _xy()
    with pytest.raises(NotFittedError):
        GBDTClassifier().predict(X)
    with pytest.raises(ValueError, match="NaN"):
        GBDTRegressor().fit(X, np.where(y == 1, np.nan, 0.0))
    with pytest.raises(ValueError, match="infinity"):
        GBDTRegressor().fit(X, np.where(y == 1, np.inf, 0.0))
    with pytest.raises(ValueError, match="Unknown label type"):
        GBDTClassifier().fit(X, np.linspace(0, 1, 30))
    with pytest.raises(ValueError, match="one class"):
        GBDTClassifier().fit(X, np.zeros(30))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        GBDTClassifier().fit(X, y[:-1])
    with pytest.raises(ValueError, match="Negative values"):
        GBDTClassifier().fit(X, y, sample_weight=-np.ones(30))
    est = GBDTClassifier(n_estimators=2).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :2])
    bad = tmp_path / "bad.json"
    for text in ("{not json", '{"format": "other"}', "[1, 2]"):
        bad.write_text(text)
        with pytest.raises(ValueError, match="corrupt"):
            load_model(bad)
    est.save_model(bad)
    bad.write_text(bad.read_text().replace('"left": [1', '"left": [9999'))
    with pytest.raises(ValueError, match="corrupt"):
        GBDTClassifier().load_model(bad)


def test_save_model_refuses_an_extension_it_does_not_write(tmp_path):
    from sklearn.datasets import make_regression

    from deepnotes.boosting import GBDTRegressor

    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    model = GBDTRegressor(n_estimators=2, max_depth=2).fit(X, y)
    with pytest.raises(ValueError, match=r"'\.bin' files cannot be written: use a '\.json'"):
        model.save_model(tmp_path / "m.bin")  # .ubj is written (test_training_control.py)
    assert not (tmp_path / "m.bin").exists()
    model.save_model(tmp_path / "m.json")
    again = GBDTRegressor().load_model(tmp_path / "m.json")
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
