"""Stacking with k-fold out-of-fold meta-features (Wolpert, 1992, "Stacked Generalization",
Neural Networks).

The meta-features of row ``i`` are the base learners' predictions from the models fit on the
``k - 1`` folds that do not contain ``i`` (Eq. 6 of the post); the meta-learner is fit on them, and
the base learners are then refit on all rows to make the meta-features of new data. Folds are
scikit-learn's ``check_cv`` folds (stratified for classifiers, no shuffling), so the meta-features
equal ``cross_val_predict``'s. Any scikit-learn-style estimators work as base or meta learners.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin, clone
from sklearn.model_selection import check_cv
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from deepnotes.boosting.forest import _allows_nan, _check_n_jobs, _map


# ------------------------------------------------------------------------------------------------
class _BaseStacking(TransformerMixin, BaseEstimator):
    """Stacked generalisation with k-fold out-of-fold meta-features (Eq. 6).

    Parameters
    ----------
    estimators : list of (name, estimator)   the base learners
    final_estimator : estimator or None      the meta-learner (None: scikit-learn's
                                             LogisticRegression / RidgeCV, as its stacking)
    cv : int or splitter                     folds (int: (Stratified)KFold without shuffling)
    stack_method : 'auto', 'predict_proba', 'decision_function' or 'predict'
    passthrough : bool                       also give the meta-learner the raw features
    n_jobs : int or None                     threads over (learner, fold) fits

    Attributes
    ----------
    oof_predictions_ : ndarray, shape (n_samples, n_meta)   the meta-features the meta-learner
        was fit on; row ``i`` comes from models that never saw row ``i``.
    folds_ : list of (train, test) index arrays
    estimators_ : the base learners refit on all rows; final_estimator_ : the fitted meta-learner
    """

    def __init__(self, estimators, final_estimator=None, cv=5, stack_method="auto",
                 passthrough=False, n_jobs=None):
        self.estimators = estimators
        self.final_estimator = final_estimator
        self.cv = cv
        self.stack_method = stack_method
        self.passthrough = passthrough
        self.n_jobs = n_jobs

    def _method(self, est):
        if self.stack_method != "auto":
            if self.stack_method not in ("predict_proba", "decision_function", "predict"):
                raise ValueError(f"stack_method must be 'auto', 'predict_proba', "
                                 f"'decision_function' or 'predict', got {self.stack_method!r}")
            if not hasattr(est, self.stack_method):
                raise ValueError(f"{type(est).__name__} has no {self.stack_method}")
            return self.stack_method
        if not self._is_clf:
            return "predict"
        for name in ("predict_proba", "decision_function", "predict"):
            if hasattr(est, name):
                return name
        raise ValueError(f"{type(est).__name__} has no prediction method")

    def _meta(self, est, method, X):
        """One learner's meta-features; a binary probability keeps its positive column only."""
        out = np.asarray(getattr(est, method)(X), dtype=np.float64)
        if out.ndim == 1:
            return out[:, None]
        return out[:, 1:] if method == "predict_proba" and out.shape[1] == 2 else out

    def fit(self, X, y, sample_weight=None):
        """Out-of-fold meta-features, the meta-learner on them, then the base learners on all."""
        if (not isinstance(self.estimators, (list, tuple)) or not self.estimators
                or not all(isinstance(p, (list, tuple)) and len(p) == 2
                           for p in self.estimators)):
            raise ValueError("estimators must be a non-empty list of (name, estimator) pairs")
        _check_n_jobs(self.n_jobs)
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64,
                             y_numeric=not self._is_clf)
        if self._is_clf:
            check_classification_targets(y)
            self.classes_ = np.unique(y)
        bases = [est for _, est in self.estimators]
        methods = [self._method(est) for est in bases]
        splitter = check_cv(self.cv, y, classifier=self._is_clf)
        self.folds_ = list(splitter.split(X, y))
        fit_kw = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight)}

        def fit_one(task):
            k, train = task
            est = clone(bases[k])
            kw = {key: v if train is None else v[train] for key, v in fit_kw.items()}
            return est.fit(X if train is None else X[train], y if train is None else y[train],
                           **kw)

        tasks = [(k, tr) for k in range(len(bases)) for tr, _ in self.folds_]
        tasks += [(k, None) for k in range(len(bases))]
        fitted = _map(fit_one, tasks, self.n_jobs)
        n_folds = len(self.folds_)
        blocks = []
        for k in range(len(bases)):
            parts = [(test, self._meta(fitted[k * n_folds + f], methods[k], X[test]))
                     for f, (_, test) in enumerate(self.folds_)]
            block = np.full((len(X), parts[0][1].shape[1]), np.nan)
            for test, pred in parts:
                block[test] = pred
            blocks.append(block)
        oof = np.hstack(blocks)
        if np.isnan(oof).any():
            raise ValueError("cv must put every row in exactly one test fold (a partition)")
        self.oof_predictions_ = oof
        self.estimators_ = fitted[len(bases) * n_folds:]
        self._methods = methods
        final = self.final_estimator if self.final_estimator is not None else self._default()
        self.final_estimator_ = clone(final).fit(self._with_passthrough(oof, X), y, **fit_kw)
        return self

    def _with_passthrough(self, meta, X):
        return np.hstack([meta, X]) if self.passthrough else meta

    def transform(self, X) -> np.ndarray:
        """Meta-features of new rows from the refit base learners, shape (n, n_meta)."""
        check_is_fitted(self, "final_estimator_")
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        meta = np.hstack([self._meta(est, m, X)
                          for est, m in zip(self.estimators_, self._methods, strict=True)])
        return self._with_passthrough(meta, X)

    def predict(self, X) -> np.ndarray:
        meta = self.transform(X)  # checks the fit first
        return self.final_estimator_.predict(meta)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        members = [e for _, e in self.estimators] if isinstance(self.estimators, list) else []
        tags.input_tags.allow_nan = _allows_nan([*members, self.final_estimator])
        return tags


class StackingClassifier(ClassifierMixin, _BaseStacking):
    """Stacking for classification (Eq. 6); meta-features are probabilities by default."""

    _is_clf = True

    @staticmethod
    def _default():
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression()

    def predict_proba(self, X) -> np.ndarray:
        meta = self.transform(X)
        return self.final_estimator_.predict_proba(meta)


class StackingRegressor(RegressorMixin, _BaseStacking):
    """Stacking for regression (Eq. 6); meta-features are the base predictions."""

    _is_clf = False

    @staticmethod
    def _default():
        from sklearn.linear_model import RidgeCV

        return RidgeCV()


__all__ = ["StackingClassifier", "StackingRegressor"]
