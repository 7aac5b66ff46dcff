"""Random forests and single CART trees with scikit-learn's interface (Breiman, 2001, "Random
Forests", Mach. Learn.).

A forest grows ``n_estimators`` trees of :mod:`deepnotes.boosting.cart` (Gini / squared-error
CART, Eq. 1 of the post) on bootstrap samples, drawing ``max_features`` candidate features at
every node, and averages the trees' leaf class frequencies or means (Eq. 2). Bootstrap samples
are drawn exactly as scikit-learn draws them from the same ``random_state`` (one seed per tree
from ``randint(2**31 - 1)``, then ``RandomState(seed).randint(0, n, n_samples)``), enter the tree
as integer sample weights, and give the out-of-bag score: every row is predicted by the trees
whose sample missed it. Trees grow on Python threads (the numba kernel releases the GIL), as
scikit-learn's do.

Prediction walks a packed copy of the nodes (:func:`pack_nodes`, 16 bytes a node, leaves as
self-loops) with :func:`predict_packed`: one row block per thread walks tree by tree, sixteen
rows at a time in interleaved slots so their independent node loads overlap; a slot whose row
reaches its leaf takes the next row at once (a forest's leaves lie at very different depths, and
rows walked in lock step would all wait for the deepest). It adds the trees in the same order as
the reference walk :func:`deepnotes.boosting.cart.predict_trees`, so the sums are bit-identical.
"""

from __future__ import annotations

import numbers
import warnings
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from deepnotes.boosting.binning import BinMapper
from deepnotes.boosting.cart import CartTree, fit_tree, predict_oob, predict_trees, stack_trees
from deepnotes.boosting.gbdt import _check, _threads
from deepnotes.boosting.predictor import NODE_DTYPE

#: Upper bound of the per-tree seeds (scikit-learn's).
MAX_INT = np.iinfo(np.int32).max


#: Rows walked at once (in interleaved slots) by :func:`predict_packed`, and the fewest rows of a
#: thread's block.
GROUP, MIN_BLOCK = 16, 256


def pack_nodes(nodes: np.ndarray) -> np.ndarray:
    """The (n_nodes, 4) node table of :func:`~deepnotes.boosting.cart.stack_trees` as one
    16-byte record per node (:data:`deepnotes.boosting.predictor.NODE_DTYPE`):
    ``meta = left << 32 | feature << 1 | default_left``. A leaf becomes a self-loop (threshold
    +inf, missing goes left, left child = itself), so a step from a leaf stays on it."""
    if not isinstance(nodes, np.ndarray) or nodes.ndim != 2 or nodes.shape[1] != 4:
        raise ValueError(f"nodes must be an array of shape (n_nodes, 4), got {np.shape(nodes)}")
    left = nodes[:, 2].astype(np.int64)
    leaf = left < 0
    ids = np.arange(nodes.shape[0], dtype=np.int64)
    feature = np.where(leaf, 0, nodes[:, 1].astype(np.int64))
    default_left = np.where(leaf, 1, nodes[:, 3].astype(np.int64))
    packed = np.empty(nodes.shape[0], dtype=NODE_DTYPE)
    packed["threshold"] = np.where(leaf, np.inf, nodes[:, 0])
    packed["meta"] = (np.where(leaf, ids, left) << 32) | (feature << 1) | default_left
    return packed


@njit(parallel=True, cache=True, nogil=True)
def _predict_packed(X, nodes, value, roots, out, block):  # pragma: no cover - numba
    n = X.shape[0]
    K = value.shape[1]
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        at = np.empty(GROUP, np.int64)  # each slot's node
        row = np.empty(GROUP, np.int64)  # each slot's row, -1 when the block has run out
        for t in range(roots.shape[0]):
            root = roots[t]
            ahead = lo  # the next row to enter a slot
            active = 0
            for s in range(GROUP):
                row[s] = -1
                if ahead < hi:
                    row[s], at[s] = ahead, root
                    ahead += 1
                    active += 1
            while active > 0:
                for s in range(GROUP):
                    r = row[s]
                    if r < 0:
                        continue
                    nd = at[s]
                    meta = nodes[nd].meta
                    x = X[r, (meta >> 1) & 0x7FFFFFFF]
                    go_left = (x <= nodes[nd].threshold) | ((x != x) & ((meta & 1) == 1))
                    nxt = (meta >> 32) + 1 - go_left
                    if nxt != nd:
                        at[s] = nxt
                        continue
                    for k in range(K):  # a leaf (self-loop): add it, give the slot a new row
                        out[r, k] += value[nd, k]
                    if ahead < hi:
                        row[s], at[s] = ahead, root
                        ahead += 1
                    else:
                        row[s] = -1
                        active -= 1


def predict_packed(X, packed, value, roots, out) -> None:
    """``out[i] += sum_t value[leaf_t(x_i)]`` over the trees starting at ``roots`` (in place),
    adding trees in order: the same floats as :func:`~deepnotes.boosting.cart.predict_trees`.

    ``X``: C-contiguous float64 (n, n_features), NaN = missing; ``packed``: :func:`pack_nodes`;
    ``value``: (n_nodes, K); ``roots``: int64 (n_trees,); ``out``: (n, K). Runs on numba's
    current thread count, one block of rows per thread (the block's rows stay in cache while
    each tree is walked)."""
    n = X.shape[0]
    block = max(MIN_BLOCK, -(-n // numba.get_num_threads()))
    _predict_packed(X, packed, value, roots, out, block)


def _check_n_jobs(n_jobs):
    if n_jobs is not None and (not isinstance(n_jobs, numbers.Integral) or n_jobs == 0
                               or n_jobs < -1):
        raise ValueError(f"n_jobs must be None, -1 or a positive int, got {n_jobs!r}")


def _n_workers(n_jobs) -> int:
    import os

    cores = os.cpu_count() or 1
    return cores if n_jobs in (None, -1) else min(int(n_jobs), cores)


def _map(fn, items, n_jobs):
    items = list(items)
    workers = _n_workers(n_jobs)
    if workers == 1 or len(items) < 2:
        return [fn(it) for it in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _allows_nan(estimators) -> bool:
    """NaN is accepted when every given estimator accepts it (None: our trees, which do)."""
    from sklearn.utils import get_tags

    return all(est is None or not hasattr(est, "__sklearn_tags__")
               or get_tags(est).input_tags.allow_nan for est in estimators)


def resolve_max_features(max_features, n_features: int) -> int:
    """scikit-learn's rule: 'sqrt', 'log2', None (all), an int, or a fraction in (0, 1]."""
    if max_features is None:
        return n_features
    if isinstance(max_features, str):
        if max_features == "sqrt":
            return max(1, int(np.sqrt(n_features)))
        if max_features == "log2":
            return max(1, int(np.log2(n_features)))
        raise ValueError(f"max_features must be 'sqrt', 'log2', None, an int or a float, "
                         f"got {max_features!r}")
    if isinstance(max_features, numbers.Integral) and not isinstance(max_features, bool):
        _check("max_features", max_features, numbers.Integral, 1, n_features)
        return int(max_features)
    _check("max_features", max_features, numbers.Real, 0, 1, low_open=True)
    return max(1, int(max_features * n_features))


class _TreeParamsMixin:
    """Validation of the parameters trees and forests share."""

    def _validate_tree_params(self):
        if self.max_depth is not None:
            _check("max_depth", self.max_depth, numbers.Integral, 1)
        _check("min_samples_split", self.min_samples_split, numbers.Integral, 2)
        _check("min_samples_leaf", self.min_samples_leaf, numbers.Integral, 1)
        _check("max_bin", self.max_bin, numbers.Integral, 2, 65535)
        if self.criterion not in self._criteria:
            raise ValueError(f"criterion must be one of {self._criteria}, got {self.criterion!r}")

    def _prepare(self, X, y, sample_weight):
        """Validated X, targets Y (n, K) and weights; sets classes_ for classifiers."""
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64,
                             y_numeric=not self._is_clf)
        w = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if not np.sum(w) > 0:
            raise ValueError("sample_weight sums to zero")
        if self._is_clf:
            check_classification_targets(y)
            self.classes_, y_enc = np.unique(y, return_inverse=True)
            self.n_classes_ = len(self.classes_)
            Y = np.zeros((len(y), self.n_classes_))
            Y[np.arange(len(y)), y_enc] = 1.0
        else:
            Y = np.asarray(y, dtype=np.float64)[:, None]
        return np.ascontiguousarray(X), Y, w

    def _check_X(self, X):
        check_is_fitted(self, "_stacked")
        return np.ascontiguousarray(validate_data(self, X, reset=False, dtype=np.float64,
                                                  ensure_all_finite="allow-nan"))

    def _raw(self, X):
        """Sum over trees of leaf values, shape (n, K)."""
        X = self._check_X(X)
        nodes, value, roots = self._stacked
        packed = getattr(self, "_packed", None)
        if packed is None or packed.shape[0] != nodes.shape[0]:
            packed = self._packed = pack_nodes(nodes)
        out = np.zeros((X.shape[0], value.shape[1]))
        with _threads(self.n_jobs):
            predict_packed(X, packed, value, roots, out)
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class _ClfMixin(ClassifierMixin):
    _is_clf = True
    _criteria = ("gini",)

    def predict_proba(self, X) -> np.ndarray:
        """Mean of the trees' leaf class frequencies, shape (n_samples, n_classes)."""
        return self._raw(X) / len(self.estimators_)

    def predict(self, X) -> np.ndarray:
        """Class with the highest mean probability, shape (n_samples,)."""
        proba = self.predict_proba(X)  # checks the fit first
        return self.classes_[np.argmax(proba, axis=1)]


class _RegMixin(RegressorMixin):
    _is_clf = False
    _criteria = ("squared_error",)

    def predict(self, X) -> np.ndarray:
        """Mean of the trees' leaf means, shape (n_samples,)."""
        return self._raw(X)[:, 0] / len(self.estimators_)


class BaseForest(_TreeParamsMixin, BaseEstimator):
    """Random forest / bagged CART trees (Breiman, 2001). Parameters as scikit-learn's:

    n_estimators : int                 trees
    criterion : 'gini' (classifier) or 'squared_error' (regressor): both are Eq. 1
    max_depth : int or None            None grows until leaves are pure or too small
    min_samples_split, min_samples_leaf : int   in distinct rows of the node
    max_features : 'sqrt', 'log2', None, int or float   features drawn per node
    bootstrap : bool                   sample ``max_samples`` rows with replacement per tree
    oob_score : bool                   score on out-of-bag rows (``oob_score_``)
    max_samples : int, float or None   bootstrap size (None: n)
    max_bin : int                      quantile bins per feature (the split candidates)
    n_jobs : int or None               threads (None or -1: all)
    random_state : int, RandomState or None
    """

    def __init__(self, n_estimators=100, criterion=None, max_depth=None, min_samples_split=2,
                 min_samples_leaf=1, max_features=None, bootstrap=True, oob_score=False,
                 max_samples=None, max_bin=256, n_jobs=None, random_state=None):
        self.n_estimators = n_estimators
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.oob_score = oob_score
        self.max_samples = max_samples
        self.max_bin = max_bin
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        """Grow ``n_estimators`` trees. X: (n, n_features), NaN = missing; y: (n,)."""
        self._validate_tree_params()
        _check("n_estimators", self.n_estimators, numbers.Integral, 1)
        if self.oob_score and not self.bootstrap:
            raise ValueError("oob_score=True needs bootstrap=True")
        _check_n_jobs(self.n_jobs)
        X, Y, sw = self._prepare(X, y, sample_weight)
        return self._fit_binned(X, Y, sw)

    def _fit_binned(self, X, Y, sw, binned=None):
        """Grow the trees on validated ``X`` (n, n_features), targets ``Y`` (n, K) and weights
        ``sw``; ``binned = (Xb, mapper)`` reuses bins already computed (AdaBoost, bagging)."""
        n, n_features = X.shape
        n_boot = n
        if self.max_samples is not None:
            if isinstance(self.max_samples, numbers.Integral):
                _check("max_samples", self.max_samples, numbers.Integral, 1)
                n_boot = int(self.max_samples)
            else:
                _check("max_samples", self.max_samples, numbers.Real, 0, 1, low_open=True)
                n_boot = max(1, int(n * self.max_samples))
        mtry = resolve_max_features(self.max_features, n_features)
        rs = check_random_state(self.random_state)
        # One seed per tree, drawn as scikit-learn draws them: the same bootstrap samples.
        seeds = [rs.randint(MAX_INT) for _ in range(self.n_estimators)]
        if binned is None:
            mapper = BinMapper(self.max_bin, random_state=np.random.default_rng(seeds[0]))
            mapper.fit(X, sw)
            Xb = mapper.transform(X)
        else:
            Xb, mapper = binned

        def one(seed):
            w, features = self._draw(seed, n_boot, sw, n_features)
            return fit_tree(Xb, mapper, Y, w, features, min(mtry, len(features)),
                            self.max_depth, self.min_samples_split, self.min_samples_leaf, seed)

        workers = self._workers()
        with _threads(self.n_jobs):
            if workers == 1 or self.n_estimators == 1:
                self.estimators_ = [one(s) for s in seeds]
            else:
                with ThreadPoolExecutor(workers) as pool:
                    self.estimators_ = list(pool.map(one, seeds))
        self._stacked = stack_trees(self.estimators_)
        self._packed = pack_nodes(self._stacked[0])
        if self.oob_score:
            in_bag = np.stack([self._draw(s, n_boot, sw, n_features)[0] > 0 for s in seeds])
            self._set_oob(X, Y, in_bag)
        return self

    def _draw(self, seed, n_boot, sw, n_features):
        """Weights and allowed features of the tree grown from ``seed``: all features, and
        scikit-learn's bootstrap of ``n_boot`` rows (uniform, or with probabilities proportional
        to non-uniform sample weights) as integer weights."""
        features = np.arange(n_features)
        if not self.bootstrap:
            return sw, features
        rs = np.random.RandomState(seed)
        n = len(sw)
        if np.all(sw == sw[0]):
            idx = rs.randint(0, n, n_boot)
        else:
            idx = rs.choice(n, n_boot, replace=True, p=sw / sw.sum())
        return np.bincount(idx, minlength=n).astype(np.float64), features

    def _workers(self):
        return _n_workers(self.n_jobs)

    def _set_oob(self, X, Y, in_bag):
        out = np.zeros(Y.shape)
        n_oob = np.zeros(len(X), dtype=np.int64)
        with _threads(self.n_jobs):
            predict_oob(X, *self._stacked, in_bag, out, n_oob)
        seen = n_oob > 0
        if not seen.all():
            warnings.warn(f"{int((~seen).sum())} rows were in every bootstrap sample; the OOB "
                          "score leaves them out", UserWarning, stacklevel=3)
        pred = out / np.maximum(n_oob, 1)[:, None]
        if self._is_clf:
            self.oob_decision_function_ = pred
            self.oob_score_ = float(np.mean(pred[seen].argmax(1) == Y[seen].argmax(1)))
        else:
            self.oob_prediction_ = pred[:, 0]
            y, p = Y[seen, 0], pred[seen, 0]
            self.oob_score_ = float(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))

    def tree_predictions(self, X) -> np.ndarray:
        """Every tree's output, shape (n_trees, n_samples, K): class frequencies or values. The
        running mean over the first ``m`` trees is the forest of ``m`` trees (Eq. 2)."""
        X = self._check_X(X)
        out = np.zeros((len(self.estimators_), X.shape[0], self._stacked[1].shape[1]))
        with _threads(self.n_jobs):
            for t, tree in enumerate(self.estimators_):
                predict_trees(X, *stack_trees([tree]), out[t])
        return out

    @property
    def feature_importances_(self) -> np.ndarray:
        """Mean over trees of each tree's normalised impurity decrease (MDI), (n_features,)."""
        check_is_fitted(self, "_stacked")
        imp = np.mean([t.importances(self.n_features_in_) for t in self.estimators_], axis=0)
        return imp / imp.sum() if imp.sum() > 0 else imp


class RandomForestClassifier(_ClfMixin, BaseForest):
    """Random forest of Gini CART trees (Eq. 1); ``max_features='sqrt'`` per node by default."""

    def __init__(self, n_estimators=100, criterion="gini", max_depth=None, min_samples_split=2,
                 min_samples_leaf=1, max_features="sqrt", bootstrap=True, oob_score=False,
                 max_samples=None, max_bin=256, n_jobs=None, random_state=None):
        super().__init__(n_estimators, criterion, max_depth, min_samples_split, min_samples_leaf,
                         max_features, bootstrap, oob_score, max_samples, max_bin, n_jobs,
                         random_state)


class RandomForestRegressor(_RegMixin, BaseForest):
    """Random forest of squared-error CART trees; all features per node by default (as
    scikit-learn: bagged trees)."""

    def __init__(self, n_estimators=100, criterion="squared_error", max_depth=None,
                 min_samples_split=2, min_samples_leaf=1, max_features=1.0, bootstrap=True,
                 oob_score=False, max_samples=None, max_bin=256, n_jobs=None, random_state=None):
        super().__init__(n_estimators, criterion, max_depth, min_samples_split, min_samples_leaf,
                         max_features, bootstrap, oob_score, max_samples, max_bin, n_jobs,
                         random_state)


def _tree_init(self, criterion, max_depth, min_samples_split, min_samples_leaf, max_features,
               max_bin, random_state):
    self.criterion = criterion
    self.max_depth = max_depth
    self.min_samples_split = min_samples_split
    self.min_samples_leaf = min_samples_leaf
    self.max_features = max_features
    self.max_bin = max_bin
    self.random_state = random_state


class _SingleTree:
    """A forest of one tree on all rows (no bootstrap, one thread)."""

    n_estimators, bootstrap, oob_score, max_samples, n_jobs = 1, False, False, None, 1

    @property
    def tree_(self) -> CartTree:
        check_is_fitted(self, "_stacked")
        return self.estimators_[0]


class DecisionTreeClassifier(_SingleTree, RandomForestClassifier):
    """One Gini CART tree (Eq. 1) on all rows; all features per node by default. ``tree_`` is
    the :class:`CartTree`."""

    def __init__(self, criterion="gini", max_depth=None, min_samples_split=2, min_samples_leaf=1,
                 max_features=None, max_bin=256, random_state=None):
        _tree_init(self, criterion, max_depth, min_samples_split, min_samples_leaf, max_features,
                   max_bin, random_state)


class DecisionTreeRegressor(_SingleTree, RandomForestRegressor):
    """One squared-error CART tree on all rows; ``tree_`` is the :class:`CartTree`."""

    def __init__(self, criterion="squared_error", max_depth=None, min_samples_split=2,
                 min_samples_leaf=1, max_features=None, max_bin=256, random_state=None):
        _tree_init(self, criterion, max_depth, min_samples_split, min_samples_leaf, max_features,
                   max_bin, random_state)


__all__ = ["BaseForest", "DecisionTreeClassifier", "DecisionTreeRegressor",
           "RandomForestClassifier", "RandomForestRegressor", "pack_nodes", "predict_packed",
           "resolve_max_features"]
