"""Training control as in xgboost >= 2: early_stopping_rounds / eval_metric / callbacks in the
constructor, evals_result(), best_iteration, get_score keyed by feature name; and save_model's
.json / .ubj files. On digits (integer pixels: both libraries get one bin per value) our model is
xgboost's, so curves, stopping round and split counts must be equal, not just close."""

import json

import numpy as np
import pytest
import xgboost as xgb
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from deepnotes.boosting import GBDTClassifier, GBDTRegressor
from deepnotes.boosting.metrics import auc, logloss
from deepnotes.boosting.model_io import load, read, ubjson_dumps, ubjson_loads


def _digits_binary():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, (y >= 5).astype(int), test_size=0.3, random_state=0)


def test_early_stopping_curves_and_importances_equal_xgboost():
    Xtr, Xva, ytr, yva = _digits_binary()
    kw = dict(n_estimators=300, learning_rate=0.5, max_depth=3, eval_metric=["auc", "logloss"],
              early_stopping_rounds=5, n_jobs=1)
    ours = GBDTClassifier(**kw).fit(Xtr, ytr, eval_set=[(Xtr, ytr), (Xva, yva)])
    theirs = xgb.XGBClassifier(tree_method="hist", **kw).fit(
        Xtr, ytr, eval_set=[(Xtr, ytr), (Xva, yva)], verbose=False)
    assert ours.best_iteration == theirs.best_iteration < 299  # the last set's last metric
    assert ours.best_score == pytest.approx(theirs.best_score, rel=1e-6)
    for data in ("validation_0", "validation_1"):
        for metric in ("auc", "logloss"):
            np.testing.assert_allclose(ours.evals_result()[data][metric],
                                       theirs.evals_result()[data][metric], rtol=1e-5)
    # xgboost keeps the trees after the best round; we drop them (predictions use the best)
    np.testing.assert_allclose(ours.predict_proba(Xva),
                               theirs.predict_proba(Xva), atol=1e-6)
    weight = ours.get_score(importance_type="weight")
    booster = theirs.get_booster()
    full = booster[: theirs.best_iteration + 1]
    assert weight == full.get_score(importance_type="weight")
    gain = ours.get_score(importance_type="total_gain")
    theirs_gain = full.get_score(importance_type="total_gain")
    assert set(gain) == set(theirs_gain)
    for name, v in gain.items():  # xgboost's gain is twice ours (see splitting.py)
        assert 2 * v == pytest.approx(theirs_gain[name], rel=1e-3)


def test_fit_argument_overrides_the_constructor_and_matches_it():
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, random_state=0)
    a = GBDTRegressor(n_estimators=200, early_stopping_rounds=4).fit(
        Xtr, ytr, eval_set=[(Xva, yva)])
    b = GBDTRegressor(n_estimators=200).fit(Xtr, ytr, eval_set=[(Xva, yva)],
                                            early_stopping_rounds=4)
    assert a.best_iteration == b.best_iteration < 199
    assert a.evals_result() == b.evals_result()
    c = GBDTRegressor(n_estimators=200, early_stopping_rounds=50).fit(
        Xtr, ytr, eval_set=[(Xva, yva)], early_stopping_rounds=4)
    assert c.best_iteration == a.best_iteration
    with pytest.raises(AttributeError, match="early stopping"):
        GBDTRegressor(n_estimators=3).fit(Xtr, ytr).best_iteration  # noqa: B018
    with pytest.raises(ValueError, match="needs an eval_set"):
        GBDTRegressor(early_stopping_rounds=3).fit(Xtr, ytr)


def test_callable_metric_and_callbacks():
    Xtr, Xva, ytr, yva = _digits_binary()

    def neg_auc(y_true, p):
        return -auc(y_true, p)

    calls = []

    class Recorder:
        def before_training(self, model):
            calls.append("before")

        def after_iteration(self, model, epoch, evals_log):
            calls.append(epoch)
            return epoch == 6  # stop after the 7th round

        def after_training(self, model):
            calls.append("after")

    est = GBDTClassifier(n_estimators=50, max_depth=2, eval_metric=["logloss", neg_auc],
                         callbacks=[Recorder()]).fit(Xtr, ytr, eval_set=[(Xva, yva)])
    assert calls == ["before", *range(7), "after"] and est.n_rounds_ == 7
    curves = est.evals_result()["validation_0"]
    staged = [p[:, 1] for p in est.staged_predict_proba(Xva)]
    np.testing.assert_allclose(curves["neg_auc"], [-auc(yva, p) for p in staged], rtol=1e-12)
    np.testing.assert_allclose(curves["logloss"], [logloss(yva, p) for p in staged],
                               rtol=1e-12)
    assert clone(est).get_params()["callbacks"][0].__class__ is Recorder
    with pytest.raises(TypeError, match="callbacks"):
        GBDTClassifier(callbacks=[object()]).fit(Xtr, ytr)
    with pytest.raises(ValueError, match="eval_metric: unknown metric 'ndgc'"):
        GBDTClassifier(eval_metric="ndgc").fit(Xtr, ytr)


def test_get_score_is_keyed_by_column_names():
    import pandas as pd

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    est = GBDTRegressor(n_estimators=5, max_depth=2).fit(X, y)
    score = est.get_score("weight")
    assert set(score) <= set(X.columns) and sum(score.values()) == sum(
        int((t.left != -1).sum()) for t in est.trees_)
    plain = GBDTRegressor(n_estimators=5, max_depth=2).fit(X.to_numpy(), y)
    assert set(plain.get_score()) <= {f"f{j}" for j in range(X.shape[1])}
    assert isinstance(X, pd.DataFrame)


@pytest.mark.parametrize("make", [
    lambda: GBDTClassifier(n_estimators=6, max_depth=3),
    lambda: GBDTRegressor(n_estimators=6, objective="reg:quantileerror", quantile_alpha=0.3),
    lambda: GBDTRegressor(n_estimators=6, objective="count:poisson"),
])
def test_ubj_and_json_round_trips_are_bit_identical(make, tmp_path):
    X, y = load_digits(return_X_y=True)
    X = X.astype(float)
    X[::9, 5] = np.nan
    if not isinstance(make(), GBDTClassifier):
        y = y.astype(float)
    est = make().fit(X, y)
    est.save_model(tmp_path / "m.ubj")
    est.save_model(tmp_path / "m.json")
    raw = (tmp_path / "m.ubj").read_bytes()
    assert raw[:2] != b'{"' and read(tmp_path / "m.ubj") == read(tmp_path / "m.json")
    for path in ("m.ubj", "m.json"):
        loaded = load(tmp_path / path)
        assert type(loaded) is type(est) and loaded.get_params() == est.get_params()
        np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    with pytest.raises(ValueError, match=r"'\.txt' files cannot be written"):
        est.save_model(tmp_path / "m.txt")
    (tmp_path / "bad.ubj").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        type(est)().load_model(tmp_path / "bad.ubj")


def test_ubjson_reads_xgboosts_ubj_as_its_json(tmp_path):
    """An independent writer: xgboost's .ubj model parses to its own .json document."""
    X, y = load_diabetes(return_X_y=True)
    model = xgb.XGBRegressor(n_estimators=3, max_depth=3).fit(X, y)
    model.save_model(tmp_path / "x.ubj")
    model.save_model(tmp_path / "x.json")
    ours = ubjson_loads((tmp_path / "x.ubj").read_bytes())
    theirs = json.loads((tmp_path / "x.json").read_text())

    def same(a, b):
        if isinstance(b, dict):
            assert isinstance(a, dict) and set(a) == set(b)
            for k in b:
                same(a[k], b[k])
        elif isinstance(b, list):
            assert isinstance(a, list) and len(a) == len(b)
            for u, v in zip(a, b, strict=True):
                same(u, v)
        elif isinstance(b, float):
            assert np.float32(a) == np.float32(b)  # xgboost writes float32
        else:
            assert a == b

    same(ours, theirs)
    doc = {"a": [1, -2, 300000], "b": [0.5, 1e300, -0.0], "c": [None, 1.5, "x", True],
           "d": {"é": "ü" * 300}, "e": [], "f": 2**40, "g": [[1, 2], {"h": False}]}
    assert ubjson_loads(ubjson_dumps(doc)) == doc
