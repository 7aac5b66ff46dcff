"""Gradient-boosted decision trees with scikit-learn estimators: XGBoost's algorithm.

Round ``m`` fits a tree ``f_m`` to the second-order Taylor expansion of the loss around the current
raw scores ``F_{m-1}`` (Eq. 2 of the post) and adds it with shrinkage:
``F_m = F_{m-1} + eta * f_m`` (Chen & Guestrin, 2016, "XGBoost: A Scalable Tree Boosting
System", KDD). Trees come from :mod:`deepnotes.boosting.grower` (``tree_method='hist'``) or
:mod:`deepnotes.boosting.exact` (``tree_method='exact'``); see those modules for the split search.
Parameters keep xgboost's names and meaning; see ``deepnotes.boosting.splitting`` for how
``gamma`` relates to xgboost's.
"""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from dataclasses import replace

import numba
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from deepnotes.boosting import exact as _exact
from deepnotes.boosting import model_io
from deepnotes.boosting import shap as _shap
from deepnotes.boosting.binning import BinMapper
from deepnotes.boosting.fused_grower import (
    FUSED_MAX_POOL_BYTES,
    FUSED_MAX_ROWS,
    CompactBins,
    fusable,
    grow_round_fused,
    pool_bytes,
)
from deepnotes.boosting.grower import TreeParams, grow_tree
from deepnotes.boosting.metrics import MAXIMIZE, METRICS, metric_base
from deepnotes.boosting.metrics import is_known as is_known_metric
from deepnotes.boosting.metrics import resolve as resolve_metric
from deepnotes.boosting.objectives import (
    CLASSIFICATION,
    REGRESSION,
    CustomObjective,
    Objective,
    _LogLink,
    make_regression_objective,
    sigmoid,
)
from deepnotes.boosting.predictor import Forest, make_forest, predict_binned_rows, predict_raw

IMPORTANCE_TYPES = ("gain", "weight", "cover", "total_gain", "total_cover")
#: Methods a training callback may define (xgboost's ``TrainingCallback``, given the estimator).
_CALLBACK_METHODS = ("before_training", "after_iteration", "after_training")


@contextmanager
def _threads(n_jobs):
    """Run numba kernels on ``n_jobs`` threads (None or -1: all), restoring the previous count."""
    prev = numba.get_num_threads()
    limit = numba.config.NUMBA_NUM_THREADS
    n = limit if n_jobs is None or n_jobs == -1 else min(int(n_jobs), limit)
    numba.set_num_threads(max(n, 1))
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def _check(name, value, kind, low=None, high=None, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


class _BaseGBDT(BaseEstimator):
    """Shared fitting, prediction and persistence of :class:`GBDTRegressor` / ``Classifier``.

    Parameters (xgboost's names and meaning)
    ----------------------------------------
    n_estimators : int             boosting rounds
    learning_rate : float > 0      shrinkage eta of every tree (Eq. 1)
    max_depth : int >= 0           depth limit; 0 = none (lossguide with max_leaves only)
    max_leaves : int >= 0          leaf limit, 0 = none (lossguide's budget; hist only)
    grow_policy : 'depthwise' | 'lossguide'
    min_child_weight : float       minimum hessian sum of a child
    reg_lambda, reg_alpha : float  L2 / L1 penalties on leaf weights (Eq. 3)
    gamma : float                  minimum gain of a split (Eq. 4; half of xgboost's scale).
                                   Trees' ``gain`` and importances are net of it (xgboost's
                                   are not): xgboost's gain = 2 (our gain + gamma); see
                                   :mod:`deepnotes.boosting.splitting` for where they differ
    subsample : float in (0, 1]    Bernoulli row sampling per round
    colsample_bytree, colsample_bynode : float in (0, 1]   feature sampling per tree / node
    max_bin : int                  non-missing bins per feature (``tree_method='hist'``)
    tree_method : 'hist' | 'exact'
    objective : str or callable    see the subclasses
    base_score : float or None     starting prediction (a probability for binary:logistic);
                                   None: the weighted mean / log-odds / log class priors
    eval_metric : str or None      'rmse', 'logloss', 'auc', 'error' or 'mlogloss'
    importance_type : str          'gain', 'weight', 'cover', 'total_gain' or 'total_cover'
    n_jobs : int or None           numba threads (None or -1: all)
    random_state : int, RandomState or None   None means 0, as in xgboost (refits agree)
    monotone_constraints : None, sequence, dict or str    gbdt-b: -1/0/+1 per feature (a list of
                                   n_features, a dict by name or index, or xgboost's "(1,0,-1)");
                                   xgboost's bounds (Eqs. 14-15 of the post)
    interaction_constraints : None, list of lists or str  gbdt-b: allowed feature sets (indices
                                   or names); a branch stays inside one set (Eq. 16)
    categorical_features : None, indices, names or bool mask   gbdt-b: integer-coded categorical
                                   columns; pandas 'category' columns are detected. hist only
    max_cat_to_onehot : int        gbdt-b: up to this many categories one-vs-rest splits, more:
                                   sorted partitions (Eq. 17)
    max_cat_threshold : int        gbdt-b: xgboost's cap: a sorted partition sends fewer than this
                                   many categories to the side without the missing values
    """

    def __init__(self, n_estimators=100, learning_rate=0.3, max_depth=6, max_leaves=0,
                 grow_policy="depthwise", min_child_weight=1.0, reg_lambda=1.0, reg_alpha=0.0,
                 gamma=0.0, subsample=1.0, colsample_bytree=1.0, colsample_bynode=1.0,
                 max_bin=256, tree_method="hist", objective=None, base_score=None,
                 eval_metric=None, importance_type="gain", n_jobs=None, random_state=None,
                 # gbdt-a: objective parameters and training control (xgboost >= 2 names)
                 quantile_alpha=0.5, huber_slope=1.0, tweedie_variance_power=1.5,
                 early_stopping_rounds=None, callbacks=None,
                 # gbdt-b: constraints and categorical features (xgboost's names)
                 monotone_constraints=None, interaction_constraints=None,
                 categorical_features=None, max_cat_to_onehot=4, max_cat_threshold=64):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.grow_policy = grow_policy
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.gamma = gamma
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.colsample_bynode = colsample_bynode
        self.max_bin = max_bin
        self.tree_method = tree_method
        self.objective = objective
        self.base_score = base_score
        self.eval_metric = eval_metric
        self.importance_type = importance_type
        self.n_jobs = n_jobs
        self.random_state = random_state
        # gbdt-a
        self.quantile_alpha = quantile_alpha
        self.huber_slope = huber_slope
        self.tweedie_variance_power = tweedie_variance_power
        self.early_stopping_rounds = early_stopping_rounds
        self.callbacks = callbacks
        # gbdt-b
        self.monotone_constraints = monotone_constraints
        self.interaction_constraints = interaction_constraints
        self.categorical_features = categorical_features
        self.max_cat_to_onehot = max_cat_to_onehot
        self.max_cat_threshold = max_cat_threshold

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # --- parameters ------------------------------------------------------------------------
    def _validate_params(self):
        real, integ = numbers.Real, numbers.Integral
        _check("n_estimators", self.n_estimators, integ, 1)
        _check("learning_rate", self.learning_rate, real, 0, low_open=True)
        _check("max_depth", self.max_depth, integ, 0)
        _check("max_leaves", self.max_leaves, integ, 0)
        if self.grow_policy not in ("depthwise", "lossguide"):
            raise ValueError(f"grow_policy must be 'depthwise' or 'lossguide', "
                             f"got {self.grow_policy!r}")
        if self.max_depth == 0 and (self.grow_policy != "lossguide" or self.max_leaves == 0):
            raise ValueError("max_depth=0 (no limit) needs grow_policy='lossguide' and "
                             "max_leaves > 0")
        for name in ("min_child_weight", "reg_lambda", "reg_alpha", "gamma"):
            _check(name, getattr(self, name), real, 0)
        for name in ("subsample", "colsample_bytree", "colsample_bynode"):
            _check(name, getattr(self, name), real, 0, 1, low_open=True)
        _check("max_bin", self.max_bin, integ, 2, 65535)
        if self.tree_method not in ("hist", "exact"):
            raise ValueError(f"tree_method must be 'hist' or 'exact', got {self.tree_method!r}")
        if self.tree_method == "exact" and self.grow_policy != "depthwise":
            raise ValueError("tree_method='exact' supports grow_policy='depthwise' only")
        if self.tree_method == "exact" and self.max_leaves > 0:
            raise ValueError("tree_method='exact' does not support max_leaves; use 'hist'")
        if self.importance_type not in IMPORTANCE_TYPES:
            raise ValueError(f"importance_type must be one of {IMPORTANCE_TYPES}, "
                             f"got {self.importance_type!r}")
        if self.n_jobs is not None and (not isinstance(self.n_jobs, numbers.Integral)
                                        or self.n_jobs == 0 or self.n_jobs < -1):
            raise ValueError(f"n_jobs must be None, -1 or a positive int, got {self.n_jobs!r}")
        if self.base_score is not None:
            _check("base_score", self.base_score, real)
        self._validate_training_params()
        self._validate_feature_params()

    # --- gbdt-a: objective parameters, eval metrics, early stopping, callbacks ---------------
    def _validate_training_params(self):
        real = numbers.Real
        _check("quantile_alpha", self.quantile_alpha, real, 0, 1, low_open=True, high_open=True)
        _check("huber_slope", self.huber_slope, real, 0, low_open=True)
        _check("tweedie_variance_power", self.tweedie_variance_power, real, 1, 2,
               low_open=True, high_open=True)
        if self.early_stopping_rounds is not None:
            _check("early_stopping_rounds", self.early_stopping_rounds, numbers.Integral, 1)
        for cb in self.callbacks or ():
            if not any(callable(getattr(cb, m, None)) for m in _CALLBACK_METHODS):
                raise TypeError(f"callbacks: {cb!r} has none of the methods "
                                f"{', '.join(_CALLBACK_METHODS)}")
        self._metric_names()  # raises on an unknown name

    def _metric_names(self) -> list:
        """``eval_metric`` as a list of names and callables (None: the objective's default)."""
        m = self.eval_metric
        items = [] if m is None else list(m) if isinstance(m, (list, tuple)) else [m]
        for item in items:
            if not (callable(item) or is_known_metric(item)):
                raise ValueError(f"eval_metric: unknown metric {item!r}; known: "
                                 f"{sorted(METRICS)} plus 'ndcg', 'ndcg@k', "
                                 f"'tweedie-nloglik@rho' or a callable(y_true, y_pred)")
        return items

    def _tree_params(self) -> TreeParams:
        return TreeParams(max_depth=self.max_depth, max_leaves=self.max_leaves,
                          grow_policy=self.grow_policy,
                          min_child_weight=float(self.min_child_weight),
                          reg_lambda=float(self.reg_lambda), reg_alpha=float(self.reg_alpha),
                          gamma=float(self.gamma), learning_rate=float(self.learning_rate),
                          colsample_bynode=float(self.colsample_bynode),
                          # gbdt-b: set by fit (_resolve_feature_params)
                          monotone=getattr(self, "_monotone_", None),
                          interaction_sets=getattr(self, "_interaction_sets_", None),
                          is_categorical=getattr(self, "_categorical_", None),
                          max_cat_to_onehot=int(self.max_cat_to_onehot),
                          max_cat_threshold=int(self.max_cat_threshold))

    # --- fitting ---------------------------------------------------------------------------
    def _make_objective(self, y) -> tuple[Objective, np.ndarray]:
        raise NotImplementedError

    def _metric_input(self, raw):
        """Transformed predictions in the form :mod:`metrics` expects."""
        return self._objective.transform(raw)

    def fit(self, X, y, sample_weight=None, eval_set=None, early_stopping_rounds=None):
        """Boost ``n_estimators`` rounds of trees.

        Parameters
        ----------
        X : array-like or DataFrame, shape (n_samples, n_features); NaN means missing
        y : array-like, shape (n_samples,)
        sample_weight : array-like, shape (n_samples,), non-negative, optional
        eval_set : list of (X, y) pairs, optional
            Evaluated after every round into ``evals_result_``; the last one drives early stopping.
        early_stopping_rounds : int, optional
            Stop when the last eval set's last metric has not improved for this many rounds; the
            model keeps the trees up to the best round (``best_iteration_``). Overrides the
            constructor's ``early_stopping_rounds`` (xgboost >= 2 sets it there).
        """
        self._validate_params()
        X = self._encode_pandas_categories(X, fit=True)
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64,
                             y_numeric=not isinstance(self, ClassifierMixin))
        self._resolve_feature_params(X)
        w = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if not np.sum(w) > 0:
            raise ValueError("sample_weight sums to zero")
        obj, y_enc = self._make_objective(y)
        self._objective = obj
        if early_stopping_rounds is None:
            early_stopping_rounds = self.early_stopping_rounds
        if early_stopping_rounds is not None:
            _check("early_stopping_rounds", early_stopping_rounds, numbers.Integral, 1)
            if not eval_set:
                raise ValueError("early_stopping_rounds needs an eval_set")
        evals = []
        for k, pair in enumerate(eval_set or []):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError("eval_set must be a list of (X, y) pairs")
            Xe = self._check_X(pair[0], fitted=False)
            ye = self._encode_eval_labels(np.asarray(pair[1]))
            if len(ye) != len(Xe):
                raise ValueError(f"eval_set[{k}]: X has {len(Xe)} rows but y has {len(ye)}")
            evals.append((np.ascontiguousarray(Xe), ye))
        metrics = self._resolve_metrics(obj)
        # None means seed 0, as in xgboost: a refit gives the same model (the bin-edge
        # subsample and any row/column sampling all draw from this generator).
        seed = 0 if self.random_state is None else self.random_state
        rng = np.random.default_rng(check_random_state(seed).randint(2**31 - 1))
        with _threads(self.n_jobs):
            self._boost(X, y_enc, w, evals, metrics, early_stopping_rounds, rng)
        return self

    def _resolve_metrics(self, obj) -> list:
        """``[(name, fn(y, pred, group_ptr) -> float, maximize), ...]`` for ``eval_metric``."""
        out = []
        for item in self._metric_names() or [obj.default_metric]:
            if callable(item):
                name = getattr(item, "__name__", "custom")
                out.append((name, lambda y, p, group_ptr=None, f=item: float(f(y, p)), False))
                continue
            fn = resolve_metric(item, alpha=float(self.quantile_alpha),
                                slope=float(self.huber_slope))
            out.append((item, lambda y, p, group_ptr=None, f=fn: f(y, p, group_ptr=group_ptr),
                        metric_base(item) in MAXIMIZE))
        return out

    def _encode_eval_labels(self, y):
        return np.asarray(y, dtype=np.float64)

    def _boost(self, X, y, w, evals, metrics, early_stopping_rounds, rng):
        n, n_features = X.shape
        obj = self._objective
        K = obj.n_outputs
        base = (obj.init_score(y, w) if self.base_score is None
                else np.full(K, self._raw_base_score(float(self.base_score))))
        self._base_score = np.asarray(base, dtype=np.float64)
        raw = np.repeat(self._base_score[:, None], n, axis=1)  # (K, n)
        grad = np.empty((K, n), dtype=np.float32)
        hess = np.empty((K, n), dtype=np.float32)
        params = self._tree_params()
        if self.tree_method == "hist":
            mapper = BinMapper(self.max_bin, random_state=rng).fit(X, w, self._categorical_)
            Xb_rows = mapper.transform_row_major(X)  # for the gathers below the root
            Xb = np.asfortranarray(Xb_rows)  # for the root histogram and the partitions
            # small inputs: each tree in one compiled call on compact histograms
            missing_bin = mapper.missing_bin  # a property that reduces n_edges_: once
            # several outputs (softmax): a round's trees grow in parallel, one per thread
            workers = min(K, numba.get_num_threads()) if obj.refresh_leaf is None else 1
            compact = (CompactBins(Xb_rows, mapper.n_edges_, missing_bin, params.max_depth,
                                   n_outputs=K, n_workers=workers)
                       if n <= FUSED_MAX_ROWS and fusable(params)
                       and workers * pool_bytes(mapper.n_edges_, params.max_depth)
                       <= FUSED_MAX_POOL_BYTES
                       else None)
        else:
            presorted = _exact.presort(X)
            compact = None
        eval_raw = [np.repeat(self._base_score[None, :], len(Xe), axis=0) for Xe, _ in evals]
        self.evals_result_ = {f"validation_{k}": {name: [] for name, _, _ in metrics}
                              for k in range(len(evals))}
        self._trees, self._tree_class = [], []
        best_score, best_round, maximize = None, 0, metrics[-1][2]
        callbacks = list(self.callbacks or ())
        self._call(callbacks, "before_training")
        n_cols = max(1, int(self.colsample_bytree * n_features))
        # the fused grower was set up with a worker per output only without adaptive leaves
        round_at_once = compact is not None and K > 1 and obj.refresh_leaf is None
        for m in range(self.n_estimators):
            obj.gradients(y, raw, w, grad, hess)
            if self.subsample < 1.0:
                mask = rng.random(n) < self.subsample
                sampled = np.flatnonzero(mask).astype(np.int32)
                rest = np.flatnonzero(~mask).astype(np.int32)
            else:
                sampled, rest = np.arange(n, dtype=np.int32), None
            features = (np.arange(n_features, dtype=np.int64) if n_cols == n_features
                        else np.sort(rng.choice(n_features, n_cols, replace=False)))
            if round_at_once:
                # the round's K trees in one call, in parallel; each adds to raw[k] itself
                round_rows = np.repeat(sampled[None, :], K, axis=0)
                trees = grow_round_fused(compact, grad, hess, round_rows, features,
                                         mapper.edges_, params, raw)
                for k, tree in enumerate(trees):
                    if rest is not None and len(rest):
                        predict_binned_rows(Xb, rest, tree.feature, tree.bin_threshold,
                                            tree.default_left, tree.left, tree.right, tree.value,
                                            missing_bin, raw[k])
                    self._trees.append(tree)
                    self._tree_class.append(k)
            else:
                for k in range(K):
                    rows = sampled.copy()
                    if self.tree_method == "hist":
                        grown = grow_tree(Xb, Xb_rows, grad[k], hess[k], rows, rest is None,
                                          features, mapper.n_edges_, mapper.edges_, missing_bin,
                                          params, rng, categories=mapper.categories_,
                                          compact=compact)
                    else:
                        grown = _exact.grow_tree_exact(X, presorted, grad[k], hess[k], rows,
                                                       features, params, rng)
                    tree = grown.tree
                    if obj.refresh_leaf is not None:  # gbdt-a: absolute / quantile error
                        self._refresh_leaves(tree, X, y, raw[k], w, sampled,
                                             grown if rest is None else None, rows)
                    elif self.tree_method == "hist":
                        grown.add_to_scores(raw[k], rows, Xb, missing_bin)
                    else:
                        grown.add_to_scores(raw[k], rows, None, -1)
                    if rest is not None and len(rest) and obj.refresh_leaf is None:
                        if self.tree_method == "hist" and not tree.categories:
                            predict_binned_rows(Xb, rest, tree.feature, tree.bin_threshold,
                                                tree.default_left, tree.left, tree.right,
                                                tree.value, missing_bin, raw[k])
                        else:
                            out = np.zeros((len(rest), 1))
                            predict_raw(make_forest([tree], [0]), X[rest], out)
                            raw[k, rest] += out[:, 0]
                    self._trees.append(tree)
                    self._tree_class.append(k)
            if evals:
                new = make_forest(self._trees[-K:], self._tree_class[-K:])
                for e, (Xe, ye) in enumerate(evals):
                    predict_raw(new, Xe, eval_raw[e])
                    ptr = self._eval_group_ptr(e)
                    for name, fn, _ in metrics:
                        score = fn(ye, self._metric_for(name, eval_raw[e]), group_ptr=ptr)
                        self.evals_result_[f"validation_{e}"][name].append(score)
                if early_stopping_rounds is not None:
                    if (best_score is None or (score > best_score if maximize
                                               else score < best_score)):
                        best_score, best_round = score, m
                    elif m - best_round >= early_stopping_rounds:
                        break
            if any(self._call(callbacks, "after_iteration", m, self.evals_result_)):
                break
        if early_stopping_rounds is not None:
            self.best_iteration_, self.best_score_ = best_round, best_score
            del self._trees[(best_round + 1) * K:]
            del self._tree_class[(best_round + 1) * K:]
        self._finish()
        self._call(callbacks, "after_training")

    # --- gbdt-a: callbacks, adaptive leaves, eval groups, xgboost-style accessors ---------------
    def _call(self, callbacks, method, *args) -> list:
        """Call ``method(self, *args)`` on every callback that defines it; their results."""
        return [getattr(cb, method)(self, *args) for cb in callbacks
                if callable(getattr(cb, method, None))]

    def _eval_group_ptr(self, e):
        """Query-group boundaries of eval set ``e`` (rankers), else None."""
        return None

    def _refresh_leaves(self, tree, X, y, raw_k, w, sampled, grown=None, rows=None):
        """Set each leaf of ``tree`` to ``learning_rate`` times the objective's
        ``refresh_leaf`` of the residuals ``y - F`` of its sampled training rows (xgboost's
        adaptive leaves for absolute / quantile error), then add the tree to ``raw_k``.

        ``grown`` (the ``GrownTree``, when every row was sampled and every leaf has its slice
        of ``rows``): the leaves' rows are read from the slices instead of by predicting the
        tree (the same rows, ascending)."""
        residual = y - raw_k
        leaf_ids = np.flatnonzero(tree.left == -1)
        if grown is not None and grown.routed is None and len(grown.leaf_start) == len(leaf_ids):
            for node, a, b in zip(leaf_ids, grown.leaf_start, grown.leaf_stop, strict=True):
                r = rows[a:b]
                tree.value[node] = self.learning_rate * self._objective.refresh_leaf(
                    residual[r], w[r])
                raw_k[r] += tree.value[node]
            return
        ids = replace(tree, value=np.arange(tree.n_nodes, dtype=np.float64))
        leaf = np.zeros((X.shape[0], 1))
        predict_raw(make_forest([ids], [0]), X, leaf)
        leaf = leaf[:, 0].astype(np.int64)
        rows = sampled[np.argsort(leaf[sampled], kind="stable")]
        bounds = np.flatnonzero(np.r_[True, leaf[rows][1:] != leaf[rows][:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            r = rows[a:b]
            tree.value[leaf[r[0]]] = self.learning_rate * self._objective.refresh_leaf(
                residual[r], w[r])
        raw_k += tree.value[leaf]

    def evals_result(self) -> dict:
        """The per-round eval metrics, ``{"validation_0": {"rmse": [...]}, ...}`` (xgboost's)."""
        check_is_fitted(self, "_forest")
        return self.evals_result_

    @property
    def best_iteration(self) -> int:
        """Round (0-based) with the best last eval metric; set by early stopping (xgboost's)."""
        check_is_fitted(self, "_forest")
        if not hasattr(self, "best_iteration_"):
            raise AttributeError("best_iteration is only set by early stopping")
        return self.best_iteration_

    @property
    def best_score(self) -> float:
        """The best last eval metric; set by early stopping (xgboost's)."""
        check_is_fitted(self, "_forest")
        if not hasattr(self, "best_score_"):
            raise AttributeError("best_score is only set by early stopping")
        return self.best_score_

    def _raw_base_score(self, value):
        return value

    def _metric_for(self, metric_name, raw):
        pred = self._objective.transform(raw)
        # binary: the positive-class probability (callables too, as xgboost passes them)
        if metric_name != "mlogloss" and pred.ndim == 2 and pred.shape[1] == 2 \
                and isinstance(self, ClassifierMixin):
            return pred[:, -1]
        return pred[:, 0] if pred.ndim == 2 and pred.shape[1] == 1 else pred

    def _finish(self):
        self._forest = make_forest(self._trees, self._tree_class)
        self.n_trees_per_round_ = self._objective.n_outputs

    # --- gbdt-b: monotone / interaction constraints and categorical features -----------------
    def _validate_feature_params(self):
        _check("max_cat_to_onehot", self.max_cat_to_onehot, numbers.Integral, 1)
        _check("max_cat_threshold", self.max_cat_threshold, numbers.Integral, 1)
        used = [name for name in ("monotone_constraints", "interaction_constraints",
                                  "categorical_features") if getattr(self, name) is not None]
        if used and type(self).__module__ == "deepnotes.boosting.dask":
            raise ValueError(f"{', '.join(used)}: not supported by the Dask estimators")
        if self.categorical_features is not None and self.tree_method == "exact":
            raise ValueError("categorical_features needs tree_method='hist' (as in xgboost)")

    def _feature_label(self, j) -> str:
        names = getattr(self, "feature_names_in_", None)
        return f"{names[j]!r} (column {j})" if names is not None else f"column {j}"

    def _feature_index(self, key, what) -> int:
        """Column index of ``key``: an int index or a DataFrame column name."""
        nf = self.n_features_in_
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            if not 0 <= key < nf:
                raise ValueError(f"{what}: feature index {key} out of range for {nf} features")
            return int(key)
        names = [str(n) for n in getattr(self, "feature_names_in_", [])]
        if isinstance(key, str) and key in names:
            return names.index(key)
        raise ValueError(f"{what}: unknown feature {key!r} (known names: {names or 'none'})")

    def _encode_pandas_categories(self, X, fit):
        """pandas ``category`` columns as float codes (NaN: missing), coded by the categories seen
        in fit; a label not seen in fit becomes NaN and follows each split's default side."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is a dependency of the tests only
            return X
        if fit:
            self._pandas_categories_ = {}
        if not isinstance(X, pd.DataFrame):
            return X
        if fit:
            self._pandas_categories_ = {
                str(c): X[c].cat.categories for c in X.columns
                if isinstance(X[c].dtype, pd.CategoricalDtype)}
        known = getattr(self, "_pandas_categories_", {})
        columns = [c for c in X.columns if str(c) in known]
        if not columns:
            return X
        X = X.copy()
        for c in columns:
            codes = known[str(c)].get_indexer(X[c].astype(object))  # -1: NaN or unseen
            X[c] = np.where(codes < 0, np.nan, codes).astype(np.float64)
        return X

    def _resolve_feature_params(self, X):
        """Per-feature arrays of ``categorical_features``, ``monotone_constraints`` and
        ``interaction_constraints`` (None when unused); bad input raises ``ValueError``."""
        nf = X.shape[1]
        cat = np.zeros(nf, dtype=np.bool_)
        spec = self.categorical_features
        if spec is not None:
            arr = np.asarray(spec)
            if arr.dtype == np.bool_:
                if arr.shape != (nf,):
                    raise ValueError(f"categorical_features: a boolean mask needs {nf} entries, "
                                     f"got shape {arr.shape}")
                cat |= arr
            else:
                for key in np.atleast_1d(spec).tolist():
                    cat[self._feature_index(key, "categorical_features")] = True
        for name in self._pandas_categories_:
            cat[self._feature_index(name, "categorical_features")] = True
        self._categorical_ = cat if cat.any() else None
        self._check_category_codes(X)
        self._monotone_ = self._parse_monotone(nf)
        if self._monotone_ is not None and cat[self._monotone_ != 0].any():
            j = int(np.flatnonzero(cat & (self._monotone_ != 0))[0])
            raise ValueError(f"monotone_constraints: feature {self._feature_label(j)} is "
                             f"categorical; categories have no order to be monotone in")
        self._interaction_sets_ = self._parse_interactions()

    def _parse_monotone(self, nf):
        spec = self.monotone_constraints
        if spec is None:
            return None
        if isinstance(spec, str):  # xgboost's "(1,0,-1)"
            body = spec.strip().strip("()[]").strip()
            try:
                spec = [int(v) for v in body.split(",")] if body else []
            except ValueError:
                raise ValueError(f"monotone_constraints: cannot parse {self.monotone_constraints!r}"
                                 f"; expected e.g. '(1,0,-1)'") from None
        if isinstance(spec, dict):
            mono = np.zeros(nf, dtype=np.int8)
            for key, v in spec.items():
                mono[self._feature_index(key, "monotone_constraints")] = self._sign(v)
        else:
            values = list(spec)
            if len(values) != nf:
                raise ValueError(f"monotone_constraints has {len(values)} entries but X has "
                                 f"{nf} features")
            mono = np.array([self._sign(v) for v in values], dtype=np.int8)
        return mono if np.any(mono != 0) else None

    @staticmethod
    def _sign(v) -> int:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v not in (-1, 0, 1):
            raise ValueError(f"monotone_constraints: each entry must be -1, 0 or 1, got {v!r}")
        return int(v)

    def _parse_interactions(self):
        spec = self.interaction_constraints
        if spec is None:
            return None
        if isinstance(spec, str):  # xgboost's "[[0, 1], [2, 3]]"
            import json
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError:
                raise ValueError(f"interaction_constraints: cannot parse {spec!r}; expected "
                                 f"e.g. '[[0, 1], [2, 3]]'") from None
        if not isinstance(spec, (list, tuple)) or not all(
                isinstance(s, (list, tuple, set, frozenset)) for s in spec):
            raise ValueError("interaction_constraints must be a list of lists of feature "
                             f"indices or names, got {spec!r}")
        return tuple(frozenset(self._feature_index(k, "interaction_constraints") for k in s)
                     for s in spec)

    def _check_category_codes(self, X):
        """Categorical columns must hold integer codes >= 0 or NaN."""
        cat = getattr(self, "_categorical_", None)
        if cat is None:
            return
        for j in np.flatnonzero(cat):
            v = X[:, j]
            bad = ~np.isnan(v) & ((v < 0) | (v != np.floor(v)) | (v > 2**31 - 1))
            if bad.any():
                raise ValueError(f"categorical feature {self._feature_label(j)} holds "
                                 f"{float(v[bad][0])!r}, not an integer category code >= 0 "
                                 f"(or NaN)")

    # --- prediction ------------------------------------------------------------------------
    @property
    def forest_(self) -> Forest:
        check_is_fitted(self, "_forest")
        return self._forest

    @property
    def trees_(self):
        """The fitted trees in boosting order (K per round for K-class softmax)."""
        check_is_fitted(self, "_forest")
        return list(self._trees)

    @property
    def n_rounds_(self) -> int:
        check_is_fitted(self, "_forest")
        return len(self._trees) // self.n_trees_per_round_

    def _check_X(self, X, fitted=True):
        if fitted:
            check_is_fitted(self, "_forest")
        X = validate_data(self, self._encode_pandas_categories(X, fit=False), reset=False,
                          ensure_all_finite="allow-nan", dtype=np.float64)
        self._check_category_codes(X)
        return X

    def decision_function_raw(self, X) -> np.ndarray:
        """Raw scores ``F(x)``, shape (n_samples, K): base score plus every tree (Eq. 1)."""
        X = self._check_X(X)
        out = np.repeat(self._base_score[None, :], X.shape[0], axis=0)
        with _threads(self.n_jobs):
            return predict_raw(self._forest, X, out)

    def _staged_raw(self, X):
        X = self._check_X(X)
        out = np.repeat(self._base_score[None, :], X.shape[0], axis=0)
        K = self.n_trees_per_round_
        with _threads(self.n_jobs):
            for m in range(self.n_rounds_):
                predict_raw(make_forest(self._trees[m * K:(m + 1) * K], self._tree_class[
                    m * K:(m + 1) * K]), X, out)
                yield out.copy()

    # --- explanations (TreeSHAP, Lundberg et al. 2018; see deepnotes.boosting.shap) ----------
    def _shap(self, X, fn):
        X = self._check_X(X)
        with _threads(self.n_jobs):
            out = fn(self._trees, self._tree_class, self.n_trees_per_round_, self._base_score, X)
        return out[:, 0] if self.n_trees_per_round_ == 1 else out

    def predict_contributions(self, X) -> np.ndarray:
        """Exact TreeSHAP values, xgboost's ``pred_contribs`` layout: shape
        (n_samples, n_features + 1), or (n_samples, K, n_features + 1) for K-class softmax.
        The last column is the bias (base score plus each tree's cover-weighted mean); a row
        sums to the raw score. NaN follows each split's default direction."""
        return self._shap(X, _shap.tree_contributions)

    def predict_interactions(self, X) -> np.ndarray:
        """SHAP interaction values, xgboost's ``pred_interactions`` layout: shape
        (n_samples, n_features + 1, n_features + 1), or (n_samples, K, ...) for K-class softmax;
        summing the last axis gives :meth:`predict_contributions`."""
        return self._shap(X, _shap.tree_interactions)

    # --- importances -----------------------------------------------------------------------
    def _importance(self, kind: str) -> np.ndarray:
        """Unnormalised importance per feature, shape (n_features,): ``weight`` = number of
        splits, ``gain`` / ``cover`` = mean gain (Eq. 4) / hessian cover of its splits,
        ``total_gain`` / ``total_cover`` = their sums."""
        check_is_fitted(self, "_forest")
        if kind not in IMPORTANCE_TYPES:
            raise ValueError(f"importance_type must be one of {IMPORTANCE_TYPES}, got {kind!r}")
        nf = self.n_features_in_
        count, gain, cover = np.zeros(nf), np.zeros(nf), np.zeros(nf)
        for t in self._trees:
            split = t.left != -1
            f = t.feature[split]
            count += np.bincount(f, minlength=nf)
            gain += np.bincount(f, weights=t.gain[split], minlength=nf)
            cover += np.bincount(f, weights=t.cover[split], minlength=nf)
        safe = np.maximum(count, 1)
        return {"weight": count, "gain": gain / safe, "cover": cover / safe,
                "total_gain": gain, "total_cover": cover}[kind]

    def feature_names(self) -> list[str]:
        """The DataFrame's column names seen in fit, else ``f0, f1, ...`` (xgboost's)."""
        check_is_fitted(self, "_forest")
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"f{j}" for j in range(self.n_features_in_)]

    def get_score(self, importance_type: str | None = None) -> dict[str, float]:
        """Importance per feature name (xgboost's ``Booster.get_score``): a dict over the
        features used in at least one split, keyed by :meth:`feature_names`. ``weight`` =
        number of splits, ``gain`` / ``cover`` = mean gain (Eq. 4; half of xgboost's, see
        :mod:`deepnotes.boosting.splitting`) / hessian cover of its splits, ``total_gain`` /
        ``total_cover`` = their sums. None: the estimator's ``importance_type``."""
        kind = importance_type or self.importance_type
        values = self._importance(kind)
        used = self._importance("weight") > 0
        return {name: float(v) for name, v, u in
                zip(self.feature_names(), values, used, strict=True) if u}

    @property
    def feature_importances_(self) -> np.ndarray:
        """``importance_type`` importances as an array over all features, normalised to sum 1
        (zeros when there is no split)."""
        s = self._importance(self.importance_type)
        return s / s.sum() if s.sum() > 0 else s

    # --- persistence -----------------------------------------------------------------------
    def save_model(self, path) -> None:
        """Write the fitted model as JSON (format: :mod:`deepnotes.boosting.model_io`)."""
        check_is_fitted(self, "_forest")
        model_io.save(self, path)

    def load_model(self, path):
        """Replace this estimator's parameters and fitted state by those saved at ``path``."""
        model_io.load_into(self, path)
        return self


class GBDTRegressor(RegressorMixin, _BaseGBDT):
    """Gradient-boosted trees for regression (``objective='reg:squarederror'`` or a callable
    ``obj(y_true, y_pred) -> (grad, hess)``). Parameters: see the module docstring and xgboost's
    ``XGBRegressor``; ``max_bin`` counts non-missing bins, NaN gets one more."""

    def _make_objective(self, y):
        y = np.asarray(y, dtype=np.float64)
        if callable(self.objective):
            return CustomObjective(self.objective), y
        name = self.objective or "reg:squarederror"
        if name not in REGRESSION:
            raise ValueError(f"objective must be one of {sorted(REGRESSION)} or a callable, "
                             f"got {name!r}")
        obj = make_regression_objective(name, self.get_params())
        obj.check_labels(y)
        return obj, y

    def _raw_base_score(self, value):
        if isinstance(self._objective, _LogLink):  # base_score is a mean, as in xgboost
            if not value > 0:
                raise ValueError(f"base_score must be > 0 for {self._objective.name} (a mean "
                                 f"on the log link), got {value}")
            return float(np.log(value))
        return value

    def predict(self, X) -> np.ndarray:
        """Predictions, shape (n_samples,): the raw score through the objective's link (``exp``
        for Poisson, Gamma and Tweedie; the identity otherwise)."""
        raw = self.decision_function_raw(X)  # first: raises NotFittedError before fit
        return self._objective.transform(raw)[:, 0]

    def staged_predict(self, X):
        """Predictions after each boosting round (a generator of arrays of shape (n_samples,))."""
        for raw in self._staged_raw(X):
            yield self._objective.transform(raw)[:, 0]


class GBDTClassifier(ClassifierMixin, _BaseGBDT):
    """Gradient-boosted trees for classification: ``binary:logistic`` for two classes,
    ``multi:softprob`` (one tree per class per round) for more. Labels may be any sortable
    values; ``classes_`` holds them."""

    def _make_objective(self, y):
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"Classifier can't train when only one class is present "
                             f"(got class {self.classes_[0]!r})")
        self.n_classes_ = len(self.classes_)
        name = self.objective or ("binary:logistic" if self.n_classes_ == 2
                                  else "multi:softprob")
        if name not in CLASSIFICATION:
            raise ValueError(f"objective must be one of {sorted(CLASSIFICATION)}, got {name!r}")
        if (name == "binary:logistic") != (self.n_classes_ == 2):
            raise ValueError(f"objective {name!r} does not fit {self.n_classes_} classes")
        return CLASSIFICATION[name](1 if self.n_classes_ == 2 else self.n_classes_), \
            y_enc.astype(np.float64)

    def _raw_base_score(self, value):
        if self.n_classes_ == 2:  # base_score is a probability, as in xgboost
            if not 0 < value < 1:
                raise ValueError(f"base_score must be in (0, 1) for binary:logistic, got {value}")
            return float(np.log(value / (1 - value)))
        raise ValueError("base_score is not supported for multi:softprob (it starts from the "
                         "log class priors)")

    def _encode_eval_labels(self, y):
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[idx] == y):
            raise ValueError("eval_set labels contain classes not seen in y")
        return idx.astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes)."""
        raw = self.decision_function_raw(X)
        return self._objective.transform(raw)

    def predict(self, X) -> np.ndarray:
        """Most probable class labels, shape (n_samples,)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def staged_predict_proba(self, X):
        """Class probabilities after each boosting round."""
        for raw in self._staged_raw(X):
            yield self._objective.transform(raw)

    def staged_predict(self, X):
        """Predicted labels after each boosting round."""
        for proba in self.staged_predict_proba(X):
            yield self.classes_[np.argmax(proba, axis=1)]


__all__ = ["GBDTClassifier", "GBDTRegressor", "sigmoid"]
