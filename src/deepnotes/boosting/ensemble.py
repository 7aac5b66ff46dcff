"""Bagging, AdaBoost (SAMME) and stacking over any scikit-learn-style estimator.

- **Bagging** (Breiman, 1996, "Bagging Predictors", Mach. Learn.): every member is fit on a
  bootstrap sample of the rows (and optionally a subset of the features); the ensemble averages
  the members' class probabilities (or votes when a member has no ``predict_proba``) or their
  regression outputs (Eq. 2 of the post). Rows a member never saw give the out-of-bag score.
  With our own :class:`~deepnotes.boosting.forest.DecisionTreeClassifier` as the member (the
  default) the members are grown on one shared binning in one thread pool
  (:class:`~deepnotes.boosting.forest.BaseForest`); any other estimator is cloned and fit on
  ``X[rows][:, features]``.
- **AdaBoost**, discrete multi-class SAMME (Zhu, Zou, Rosset & Hastie, 2009, "Multi-class
  AdaBoost", Stat. Interface), as scikit-learn >= 1.6 implements it. Round ``m`` fits ``h_m`` to
  the weights ``w``, takes its weighted error ``err_m``, its vote
  ``alpha_m = lr * (log((1 - err_m) / err_m) + log(K - 1))`` (Eq. 3) and multiplies the weight of
  every misclassified row by ``exp(alpha_m)`` before renormalising (Eq. 4). With ``K = 2`` the
  ``log(K - 1)`` term vanishes and this is Freund & Schapire's discrete AdaBoost. The decision
  function sums ``alpha_m`` times the symmetric code of ``h_m(x)`` (``1`` for the predicted
  class, ``-1/(K-1)`` for the others) over ``sum_m alpha_m`` (Eq. 5); probabilities are its
  softmax after scaling by ``1/(K-1)``. SAMME.R (real-valued) is not implemented: scikit-learn
  removed it in 1.6 and it is not what the peer runs.
- **Stacking** (Wolpert, 1992): :mod:`deepnotes.boosting.stacking`, re-exported here.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    clone,
)
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from deepnotes.boosting.cart import predict_trees, stack_trees
from deepnotes.boosting.forest import (
    MAX_INT,
    BaseForest,
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    _allows_nan,
    _check_n_jobs,
    _map,
)
from deepnotes.boosting.gbdt import _check
from deepnotes.boosting.stacking import StackingClassifier, StackingRegressor


def _set_random_state(est, seed):
    """Give every ``random_state`` parameter of ``est`` (nested ones too) the int ``seed``."""
    keys = [k for k in est.get_params(deep=True) if k == "random_state"
            or k.endswith("__random_state")]
    if keys:
        est.set_params(**{k: int(seed) for k in keys})
    return est


# ------------------------------------------------------------------------------------------------
# Bagging
# ------------------------------------------------------------------------------------------------
def _bag_draw(seed, n, n_draw, n_features, n_keep, bootstrap, bootstrap_features):
    """One member's row counts, shape (n,), and sorted feature indices (scikit-learn's order:
    features first, then rows, from ``RandomState(seed)``)."""
    rs = np.random.RandomState(seed)
    if bootstrap_features:
        features = np.unique(rs.randint(0, n_features, n_keep))
    else:
        features = np.sort(rs.permutation(n_features)[:n_keep])
    if bootstrap:
        counts = np.bincount(rs.randint(0, n, n_draw), minlength=n).astype(np.float64)
    else:
        counts = np.zeros(n)
        counts[rs.permutation(n)[:n_draw]] = 1.0
    return counts, features


class _BaggedTrees(BaseForest):
    """Our CART trees bagged with per-member feature subsets (Bagging's fast path)."""

    def __init__(self, n_estimators, tree_params, n_draw, n_keep, bootstrap, bootstrap_features,
                 oob_score, n_jobs, random_state, is_clf):
        super().__init__(n_estimators, tree_params["criterion"], tree_params["max_depth"],
                         tree_params["min_samples_split"], tree_params["min_samples_leaf"],
                         tree_params["max_features"], bootstrap, oob_score, None,
                         tree_params["max_bin"], n_jobs, random_state)
        self.n_draw, self.n_keep, self.bootstrap_features = n_draw, n_keep, bootstrap_features
        self._is_clf = is_clf
        self._criteria = ("gini",) if is_clf else ("squared_error",)

    def _draw(self, seed, n_boot, sw, n_features):
        counts, features = _bag_draw(seed, len(sw), self.n_draw, n_features, self.n_keep,
                                     self.bootstrap, self.bootstrap_features)
        return counts * sw, features


class _BaseBagging(BaseEstimator):
    """Bagging of any estimator; parameters as scikit-learn's ``BaggingClassifier``:

    estimator : estimator or None     the member (None: our CART tree, all features per node)
    n_estimators : int                members
    max_samples, max_features : int or float in (0, 1]   rows / features drawn per member
    bootstrap, bootstrap_features : bool                   draw with replacement
    oob_score : bool                  out-of-bag score (``oob_score_``), needs bootstrap
    n_jobs : int or None              threads; random_state : int, RandomState or None
    """

    def __init__(self, estimator=None, n_estimators=10, max_samples=1.0, max_features=1.0,
                 bootstrap=True, bootstrap_features=False, oob_score=False, n_jobs=None,
                 random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.bootstrap_features = bootstrap_features
        self.oob_score = oob_score
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _count(self, name, value, total):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            _check(name, value, numbers.Integral, 1, total)
            return int(value)
        _check(name, value, numbers.Real, 0, 1, low_open=True)
        return max(1, int(value * total))

    def fit(self, X, y, sample_weight=None):
        """Fit ``n_estimators`` members on resampled rows / features."""
        _check("n_estimators", self.n_estimators, numbers.Integral, 1)
        _check_n_jobs(self.n_jobs)
        if self.oob_score and not self.bootstrap:
            raise ValueError("oob_score=True needs bootstrap=True")
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64,
                             y_numeric=not self._is_clf)
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        n, n_features = X.shape
        n_draw = self._count("max_samples", self.max_samples, n)
        n_keep = self._count("max_features", self.max_features, n_features)
        if self._is_clf:
            check_classification_targets(y)
            self.classes_ = np.unique(y)
            self.n_classes_ = len(self.classes_)
        member = self.estimator if self.estimator is not None else self._default()
        if isinstance(member, (DecisionTreeClassifier, DecisionTreeRegressor)):
            self._trees = _BaggedTrees(self.n_estimators, member.get_params(), n_draw, n_keep,
                                       self.bootstrap, self.bootstrap_features, self.oob_score,
                                       self.n_jobs, self.random_state, self._is_clf)
            self._trees.fit(X, y, sample_weight)
            self.estimators_ = self._trees.estimators_
            if self.oob_score:
                self.oob_score_ = self._trees.oob_score_
            return self
        self._trees = None
        rs = check_random_state(self.random_state)
        seeds = rs.randint(MAX_INT, size=self.n_estimators)

        def one(seed):
            w, features = _bag_draw(seed, n, n_draw, n_features, n_keep, self.bootstrap,
                                    self.bootstrap_features)
            rows = np.repeat(np.arange(n), w.astype(np.int64))
            est = _set_random_state(clone(member), seed)
            if sample_weight is None:
                est.fit(X[rows][:, features], y[rows])
            else:
                est.fit(X[rows][:, features], y[rows], sample_weight=sw[rows])
            return est, features, w > 0

        fitted = _map(one, seeds, self.n_jobs)
        self.estimators_ = [f[0] for f in fitted]
        self.estimators_features_ = [f[1] for f in fitted]
        if self.oob_score:
            in_bag = np.stack([f[2] for f in fitted])
            out = np.zeros((n, self.n_classes_ if self._is_clf else 1))
            n_oob = np.zeros(n)
            for est, features, bag in zip(self.estimators_, self.estimators_features_, in_bag,
                                          strict=True):
                oob = ~bag
                out[oob] += self._member_output(est, X[oob][:, features])
                n_oob[oob] += 1
            seen = n_oob > 0
            pred = out[seen] / n_oob[seen, None]
            if self._is_clf:
                self.oob_score_ = float(np.mean(self.classes_[pred.argmax(1)] == y[seen]))
            else:
                t = y[seen]
                self.oob_score_ = float(1 - np.sum((t - pred[:, 0]) ** 2)
                                        / np.sum((t - t.mean()) ** 2))
        return self

    def _raw(self, X):
        check_is_fitted(self, "estimators_")
        if self._trees is not None:
            return self._trees._raw(X)
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        return sum(self._member_output(est, X[:, f])
                   for est, f in zip(self.estimators_, self.estimators_features_, strict=True))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = _allows_nan([self.estimator])
        return tags


class BaggingClassifier(ClassifierMixin, _BaseBagging):
    """Bagged classifiers: the mean of the members' class probabilities (Eq. 2)."""

    _is_clf = True
    _default = DecisionTreeClassifier

    def _member_output(self, est, X):
        """A member's class probabilities over ``classes_`` (one-hot votes without
        ``predict_proba``); a member that never saw a class gives it probability 0."""
        out = np.zeros((len(X), self.n_classes_))
        cols = np.searchsorted(self.classes_, est.classes_)
        if hasattr(est, "predict_proba"):
            out[:, cols] = est.predict_proba(X)
        else:
            out[np.arange(len(X)), np.searchsorted(self.classes_, est.predict(X))] = 1.0
        return out

    def predict_proba(self, X) -> np.ndarray:
        """Mean class probabilities, shape (n_samples, n_classes)."""
        return self._raw(X) / len(self.estimators_)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks the fit first
        return self.classes_[np.argmax(proba, axis=1)]


class BaggingRegressor(RegressorMixin, _BaseBagging):
    """Bagged regressors: the mean of the members' predictions (Eq. 2)."""

    _is_clf = False
    _default = DecisionTreeRegressor

    def _member_output(self, est, X):
        return np.asarray(est.predict(X), dtype=np.float64)[:, None]

    def predict(self, X) -> np.ndarray:
        return self._raw(X)[:, 0] / len(self.estimators_)


# ------------------------------------------------------------------------------------------------
# AdaBoost (SAMME)
# ------------------------------------------------------------------------------------------------
def _vote_trees(estimators, alphas, K):
    """Our trees with each leaf's value replaced by its vote ``alpha_m * code`` (Eq. 5), stacked:
    one :func:`~deepnotes.boosting.cart.predict_trees` call then sums every round's vote."""
    trees = []
    for est, alpha in zip(estimators, alphas, strict=True):
        t = est.tree_
        code = np.full((t.n_nodes, K), -alpha / (K - 1))
        code[np.arange(t.n_nodes), t.value.argmax(1)] = alpha
        trees.append(dataclasses.replace(t, value=code))
    return stack_trees(trees)


class AdaBoostClassifier(ClassifierMixin, BaseEstimator):
    """Discrete multi-class AdaBoost, SAMME (Zhu et al., 2009; Eqs. 3-5 of the post).

    Parameters
    ----------
    estimator : classifier or None   weak learner fit with ``sample_weight`` (None: our depth-1
                                     :class:`~deepnotes.boosting.forest.DecisionTreeClassifier`)
    n_estimators : int               rounds (fewer when a learner is perfect or no better than
                                     chance, as in scikit-learn)
    learning_rate : float > 0        shrinks every vote ``alpha_m``
    random_state : int, RandomState or None   seeds each learner's ``random_state``

    Attributes
    ----------
    estimators_, estimator_weights_ (alpha_m), estimator_errors_ (err_m),
    sample_weights_ : ndarray, shape (n_rounds, n_samples)   the normalised weights each learner
    was fit to (what the post's weight figure shows).
    """

    def __init__(self, estimator=None, n_estimators=50, learning_rate=1.0, random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        """Run up to ``n_estimators`` SAMME rounds. y: (n,) class labels."""
        _check("n_estimators", self.n_estimators, numbers.Integral, 1)
        _check("learning_rate", self.learning_rate, numbers.Real, 0, low_open=True)
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        check_classification_targets(y)
        w = _check_sample_weight(sample_weight, X, dtype=np.float64, copy=True,
                                 ensure_non_negative=True)
        if not np.sum(w) > 0:
            raise ValueError("sample_weight sums to zero")
        w /= w.sum()
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        K = self.n_classes_ = len(self.classes_)
        if K < 2:
            raise ValueError(f"AdaBoost needs at least two classes; got 1 class "
                             f"{self.classes_[0]!r}")
        base = self.estimator if self.estimator is not None else \
            DecisionTreeClassifier(max_depth=1)
        binned = None
        if isinstance(base, DecisionTreeClassifier):
            # Our trees share one binning of X across rounds (bins from uniform weights).
            from deepnotes.boosting.binning import BinMapper

            mapper = BinMapper(base.max_bin, random_state=np.random.default_rng(0)).fit(X)
            binned = (mapper.transform(X), mapper)
            Y = np.zeros((len(y), K))
            Y[np.arange(len(y)), y_enc] = 1.0
        rs = check_random_state(self.random_state)
        zero = w == 0
        eps = np.finfo(np.float64).eps
        self.estimators_, alphas, errors, weights = [], [], [], []
        for _ in range(self.n_estimators):
            w = np.where(zero, 0.0, np.maximum(w, eps))  # keep weights representable
            est = _set_random_state(clone(base), rs.randint(MAX_INT))
            if binned is not None:
                est.n_features_in_ = X.shape[1]
                est.classes_, est.n_classes_ = self.classes_, K
                est._validate_tree_params()
                est._fit_binned(X, Y, w, binned)
                wrong = est._raw(X).argmax(1) != y_enc
            else:
                est.fit(X, y, sample_weight=w)
                wrong = est.predict(X) != y
            err = float(np.average(wrong, weights=w))
            if err >= 1.0 - 1.0 / K:
                if not self.estimators_:
                    raise ValueError("the first weak learner is no better than chance "
                                     f"(weighted error {err:.3f} >= {1 - 1 / K:.3f}); AdaBoost "
                                     "cannot start")
                break
            self.estimators_.append(est)
            weights.append(w.copy())
            errors.append(err)
            if err <= 0:
                alphas.append(1.0)  # a perfect learner: it alone decides (scikit-learn's rule)
                break
            alpha = self.learning_rate * (np.log((1 - err) / err) + np.log(K - 1.0))  # Eq. 3
            alphas.append(alpha)
            w = w * np.exp(alpha * wrong * (w > 0))  # Eq. 4
            total = w.sum()
            if not np.isfinite(total) or total <= 0:
                break
            w /= total
        self._vote_stack = _vote_trees(self.estimators_, alphas, K) if binned is not None \
            else None
        self.estimator_weights_ = np.asarray(alphas)
        self.estimator_errors_ = np.asarray(errors)
        self.sample_weights_ = np.stack(weights)
        return self

    def _votes(self, X):
        """Each learner's predicted class index, shape (n_rounds, n_samples)."""
        check_is_fitted(self, "estimators_")
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        return np.stack([np.searchsorted(self.classes_, est.predict(X))
                         for est in self.estimators_])

    def staged_decision_function(self, X):
        """Eq. 5 after each round: (n,) for two classes (positive: ``classes_[1]``), else (n, K)."""
        votes = self._votes(X)  # checks the fit first
        K = self.n_classes_
        score = np.zeros((votes.shape[1], K))
        norm = 0.0
        for alpha, v in zip(self.estimator_weights_, votes, strict=True):
            code = np.full((len(v), K), -1.0 / (K - 1))
            code[np.arange(len(v)), v] = 1.0
            score += alpha * code
            norm += alpha
            out = score / norm
            yield out[:, 1] - out[:, 0] if K == 2 else out

    def decision_function(self, X) -> np.ndarray:
        """Weighted vote of Eq. 5 after the last round."""
        if getattr(self, "_vote_stack", None) is None:
            *_, last = self.staged_decision_function(X)
            return last
        X = np.ascontiguousarray(validate_data(self, X, reset=False, dtype=np.float64,
                                               ensure_all_finite="allow-nan"))
        out = np.zeros((X.shape[0], self.n_classes_))
        predict_trees(X, *self._vote_stack, out)
        out /= self.estimator_weights_.sum()
        return out[:, 1] - out[:, 0] if self.n_classes_ == 2 else out

    def staged_predict(self, X):
        """Predicted labels after each round."""
        for d in self.staged_decision_function(X):
            yield self.classes_[(d > 0).astype(int) if d.ndim == 1 else d.argmax(1)]

    def predict(self, X) -> np.ndarray:
        d = self.decision_function(X)
        return self.classes_[(d > 0).astype(int) if d.ndim == 1 else d.argmax(1)]

    def predict_proba(self, X) -> np.ndarray:
        """``softmax(f(x) / (K - 1))`` of the decision function (Zhu et al., Eq. 15 there)."""
        d = self.decision_function(X)
        d = np.stack([-d / 2, d / 2], axis=1) if d.ndim == 1 else d / (self.n_classes_ - 1)
        e = np.exp(d - d.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = _allows_nan([self.estimator])
        return tags


__all__ = ["AdaBoostClassifier", "BaggingClassifier", "BaggingRegressor", "StackingClassifier",
           "StackingRegressor"]
