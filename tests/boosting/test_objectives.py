"""Regression objectives (Poisson, Gamma, Tweedie, pseudo-Huber, absolute, quantile): gradients
and hessians against finite differences of the loss, trees and predictions against xgboost's
with the same parameters, xgboost's quantile definition, and clear errors on bad labels."""

import json

import numpy as np
import pytest
import xgboost as xgb
from test_exact import _compare

from deepnotes.boosting import GBDTRegressor
from deepnotes.boosting.metrics import mae, quantile_loss
from deepnotes.boosting.objectives import (
    AbsoluteError,
    Gamma,
    Poisson,
    PseudoHuber,
    Quantile,
    Tweedie,
    quantile,
)

RHO, SLOPE, ALPHA = 1.3, 1.5, 0.8

# Per-row losses l(y, F) whose derivatives in F the objectives must return.
LOSSES = {
    "poisson": (Poisson(1, max_delta_step=0.0), lambda y, f: np.exp(f) - y * f),
    "gamma": (Gamma(1), lambda y, f: y * np.exp(-f) + f),
    "tweedie": (Tweedie(1, RHO), lambda y, f: -y * np.exp((1 - RHO) * f) / (1 - RHO)
                + np.exp((2 - RHO) * f) / (2 - RHO)),
    "pseudohuber": (PseudoHuber(1, SLOPE),
                    lambda y, f: SLOPE**2 * (np.sqrt(1 + ((f - y) / SLOPE) ** 2) - 1)),
    "absolute": (AbsoluteError(1), lambda y, f: np.abs(y - f)),
    "quantile": (Quantile(1, ALPHA),
                 lambda y, f: np.maximum(ALPHA * (y - f), (ALPHA - 1) * (y - f))),
}


def _grad_hess(obj, y, f, w):
    g = np.empty((1, len(y)), np.float32)
    h = np.empty((1, len(y)), np.float32)
    obj.gradients(y, f[None, :].copy(), w, g, h)
    return g[0].astype(float), h[0].astype(float)


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_and_hessians_match_finite_differences(name):
    obj, loss = LOSSES[name]
    rng = np.random.default_rng(0)
    n = 200
    y = rng.gamma(2.0, 1.0, size=n) if name in ("gamma", "poisson", "tweedie") \
        else rng.normal(size=n)
    f = rng.normal(scale=0.8, size=n)
    if name in ("absolute", "quantile"):  # stay off the kink at f = y
        f = np.where(np.abs(f - y) < 1e-2, f + 0.1, f)
    w = rng.uniform(0.5, 2.0, size=n)
    g, h = _grad_hess(obj, y, f, w)
    eps = 1e-5
    fd_g = (loss(y, f + eps) - loss(y, f - eps)) / (2 * eps)
    np.testing.assert_allclose(g, w * fd_g, rtol=1e-5, atol=1e-6)  # float32 storage
    if name in ("absolute", "quantile"):
        # piecewise-linear loss: its second derivative is 0 off the kink; xgboost uses h = 1
        # (the leaves are then re-fitted to residual quantiles, so h only shapes the splits)
        np.testing.assert_array_equal(h, w.astype(np.float32))
    else:
        fd_h = (loss(y, f + eps) - 2 * loss(y, f) + loss(y, f - eps)) / eps**2
        np.testing.assert_allclose(h, w * fd_h, rtol=2e-3, atol=1e-4)


def test_poisson_hessian_carries_xgboosts_max_delta_step():
    y, f, w = np.array([0.0, 3.0]), np.array([0.2, -0.4]), np.ones(2)
    _, h = _grad_hess(Poisson(1), y, f, w)
    np.testing.assert_allclose(h, np.exp(f + 0.7), rtol=1e-6)


def _float32_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32).astype(np.float64)
    return rng, X


@pytest.mark.parametrize("objective,kw", [
    ("reg:gamma", {}),
    ("reg:tweedie", {"tweedie_variance_power": RHO}),
    ("reg:pseudohubererror", {"huber_slope": SLOPE}),
    ("count:poisson", {"reg_lambda": 30.0, "max_depth": 3, "min_child_weight": 40.0}),
])
def test_first_tree_equals_xgboost_exact(objective, kw):
    rng, X = _float32_data()
    mu = np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1])
    y = {"reg:gamma": rng.gamma(2.0, mu / 2.0),
         "reg:tweedie": rng.poisson(mu) * rng.gamma(2.0, 0.5, size=len(mu)),
         "reg:pseudohubererror": 2 * X[:, 0] + rng.standard_t(2, size=len(mu)),
         "count:poisson": rng.poisson(mu).astype(float)}[objective]
    y = y.astype(np.float32).astype(np.float64)
    base = 0.1 if objective == "reg:pseudohubererror" else float(np.float32(y.mean()))
    params = dict(n_estimators=1, learning_rate=0.5, max_depth=4, base_score=base,
                  min_child_weight=0.5)
    params.update(kw)
    ours = GBDTRegressor(objective=objective, tree_method="exact", **params).fit(X, y)
    theirs = xgb.XGBRegressor(objective=objective, tree_method="exact", n_jobs=1,
                              **params).fit(X, y)
    tree = ours.trees_[0]
    if objective == "count:poisson":
        # xgboost also caps Poisson's leaf weights at max_delta_step = 0.7 (we do not: a
        # deviation), candidates' included; reg_lambda and min_child_weight keep every weight
        # below the cap, so the trees must agree.
        assert np.max(np.abs(tree.value)) / params["learning_rate"] < 0.7
    dump = json.loads(theirs.get_booster().get_dump(dump_format="json", with_stats=True)[0])
    assert _compare(tree, 0, dump) == tree.n_nodes >= 7
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=2e-6)


@pytest.mark.parametrize("objective,kw", [
    ("reg:absoluteerror", {}),
    ("reg:quantileerror", {"quantile_alpha": 0.8}),
    ("reg:quantileerror", {"quantile_alpha": 0.1}),
])
def test_adaptive_leaves_equal_xgboost_over_rounds(objective, kw):
    """Leaves re-fitted to the residual quantile each round, as xgboost does with hist (its
    exact updater does not re-fit); integer features give both libraries exact bins."""
    rng = np.random.default_rng(1)
    X = rng.integers(0, 30, size=(600, 4)).astype(float)
    y = (X[:, 0] / 10 + rng.standard_t(2, size=600)).astype(np.float32).astype(float)
    params = dict(n_estimators=30, learning_rate=0.3, max_depth=3, base_score=0.5, **kw)
    ours = GBDTRegressor(objective=objective, **params).fit(X, y)
    theirs = xgb.XGBRegressor(objective=objective, tree_method="hist", n_jobs=1,
                              **params).fit(X, y)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=1e-5)
    # and the default base score (the alpha-quantile of y) is xgboost's too
    del params["base_score"]
    a = GBDTRegressor(objective=objective, **params).fit(X, y)
    b = xgb.XGBRegressor(objective=objective, tree_method="hist", n_jobs=1, **params).fit(X, y)
    np.testing.assert_allclose(a.predict(X), b.predict(X), atol=1e-5)


def test_quantile_is_xgboosts_definition():
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 50):
        v = rng.normal(size=n)
        for a in (0.01, 0.1, 0.5, 0.8, 0.99):
            assert quantile(v, a) == pytest.approx(np.quantile(v, a, method="weibull"))
    v, w = np.array([3.0, 1.0, 2.0, 4.0]), np.array([1.0, 1.0, 2.0, 0.5])
    # sorted 1, 2, 3, 4 with cumulative weights 1, 3, 4, 4.5: first reaching alpha * 4.5
    assert [quantile(v, a, w) for a in (0.2, 0.5, 0.8, 0.95)] == [1.0, 2.0, 3.0, 4.0]
    assert np.isnan(quantile(np.array([]), 0.5))


def test_quantile_regression_covers_alpha_and_absolute_error_beats_squared_on_outliers():
    rng = np.random.default_rng(3)
    X = rng.uniform(-2, 2, size=(2000, 3))
    y = np.sin(X[:, 0]) + rng.normal(scale=0.3 + 0.3 * np.abs(X[:, 1]), size=2000)
    for a in (0.1, 0.9):
        est = GBDTRegressor(objective="reg:quantileerror", quantile_alpha=a, n_estimators=60,
                            max_depth=3, learning_rate=0.2).fit(X, y)
        assert np.mean(y <= est.predict(X)) == pytest.approx(a, abs=0.03)
        lower = GBDTRegressor(n_estimators=60, max_depth=3, learning_rate=0.2).fit(X, y)
        assert (quantile_loss(y, est.predict(X), alpha=a)
                < quantile_loss(y, lower.predict(X), alpha=a))
    y_out = y + np.where(rng.random(2000) < 0.05, 30.0, 0.0)  # 5% gross outliers
    kw = dict(n_estimators=60, max_depth=3, learning_rate=0.2)
    l1 = GBDTRegressor(objective="reg:absoluteerror", **kw).fit(X, y_out)
    l2 = GBDTRegressor(**kw).fit(X, y_out)
    assert mae(np.sin(X[:, 0]), l1.predict(X)) < 0.5 * mae(np.sin(X[:, 0]), l2.predict(X))


def test_log_link_predictions_are_means():
    rng, X = _float32_data(1000, seed=4)
    mu = np.exp(0.7 * X[:, 0])
    y = rng.poisson(mu).astype(float)
    est = GBDTRegressor(objective="count:poisson", n_estimators=50, max_depth=2).fit(X, y)
    pred = est.predict(X)
    assert np.all(pred > 0)
    np.testing.assert_allclose(pred, np.exp(est.decision_function_raw(X)[:, 0]), rtol=1e-12)
    assert np.corrcoef(np.log(pred), np.log(mu))[0, 1] > 0.9
    assert est.evals_result_ == {}  # no eval_set


@pytest.mark.parametrize("objective,y_bad,match", [
    ("count:poisson", -1.0, r"y must be >= 0"),
    ("reg:tweedie", -0.5, r"y must be >= 0"),
    ("reg:gamma", 0.0, r"y must be > 0"),
])
def test_labels_outside_the_domain_are_refused(objective, y_bad, match):
    X = np.arange(20.0)[:, None]
    y = np.ones(20)
    y[7] = y_bad
    with pytest.raises(ValueError, match=match + ".*row 7"):
        GBDTRegressor(objective=objective, n_estimators=2).fit(X, y)


@pytest.mark.parametrize("kw,match", [
    (dict(objective="count:poisson", base_score=0.0), "base_score"),
    (dict(quantile_alpha=1.0), "quantile_alpha"), (dict(huber_slope=0.0), "huber_slope"),
    (dict(tweedie_variance_power=2.0), "tweedie_variance_power"),
    (dict(objective="reg:huber"), "objective"),
])
def test_bad_objective_parameters(kw, match):
    X, y = np.arange(20.0)[:, None], np.arange(20.0) + 1
    with pytest.raises(ValueError, match=match):
        GBDTRegressor(n_estimators=2, **kw).fit(X, y)


def _walk(tree, node, xn, hess_scale=1.0):
    """Our tree against xgboost's dump: same splits and covers (xgboost's are ``hess_scale``
    times ours); leaves to rel 1e-5, since the two base scores can differ by xgboost's float32
    rounding (~1e-6)."""
    if "leaf" in xn:
        assert tree.left[node] == -1
        assert tree.value[node] == pytest.approx(xn["leaf"], rel=1e-5, abs=1e-7)
        return 1
    assert tree.feature[node] == int(xn["split"][1:])
    assert tree.threshold[node] == pytest.approx(xn["split_condition"], rel=1e-6)
    assert hess_scale * tree.cover[node] == pytest.approx(xn["cover"], rel=1e-5)
    kids = {c["nodeid"]: c for c in xn["children"]}
    return (1 + _walk(tree, tree.left[node], kids[xn["yes"]], hess_scale)
            + _walk(tree, tree.right[node], kids[xn["no"]], hess_scale))


def test_softmax_base_score_equals_xgboost_and_trees_match_with_doubled_parameters():
    """Multiclass: the base score is xgboost's (centred log priors); xgboost's hessian is
    2 p (1 - p) against our p (1 - p), so xgboost with twice our reg_lambda, min_child_weight
    and learning_rate grows our trees, with twice our covers."""
    from sklearn.datasets import load_wine

    from deepnotes.boosting import GBDTClassifier

    X, y = load_wine(return_X_y=True)
    X = X.astype(np.float32).astype(np.float64)
    params = dict(n_estimators=1, max_depth=3)
    ours = GBDTClassifier(tree_method="exact", learning_rate=0.5, reg_lambda=1.0,
                          min_child_weight=0.5, **params).fit(X, y)
    theirs = xgb.XGBClassifier(tree_method="exact", n_jobs=1, learning_rate=1.0,
                               reg_lambda=2.0, min_child_weight=1.0, **params).fit(X, y)
    config = json.loads(theirs.get_booster().save_config())
    base = json.loads(config["learner"]["learner_model_param"]["base_score"])
    np.testing.assert_allclose(ours._base_score, base, atol=2e-6)  # xgboost: float32 sums
    dumps = theirs.get_booster().get_dump(dump_format="json", with_stats=True)
    assert len(dumps) == len(ours.trees_) == 3
    for tree, dump in zip(ours.trees_, dumps, strict=True):
        assert _walk(tree, 0, json.loads(dump), hess_scale=2.0) == tree.n_nodes >= 5
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-6)
