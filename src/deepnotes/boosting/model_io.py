"""The JSON model format of ``save_model`` / ``load_model``.

One JSON object (UTF-8)::

    {
      "format": "deepnotes-gbdt",          # fixed
      "version": 1,
      "estimator": "GBDTClassifier",       # or "GBDTRegressor"
      "params": {...},                     # get_params(); a callable objective is stored as
                                           # "custom" (predictions do not need it)
      "objective": "binary:logistic",      # the objective actually used
      "n_features": 30,
      "feature_names": ["a", ...] | null,  # pandas column names seen in fit
      "classes": [0, 1] | null,            # classifier labels (numbers or strings)
      "base_score": [-0.52],               # raw starting score per output, length K
      "trees": [                           # boosting order; K per round for softmax
        {"class": 0,
         "feature": [...], "threshold": [...], "default_left": [...],
         "left": [...], "right": [...], "value": [...], "gain": [...], "cover": [...]}
      ],
      "best_iteration": 41 | null
    }

Node arrays follow :class:`deepnotes.boosting.predictor.Tree` (root = node 0, leaves have
``left == right == -1``, ``value`` includes the learning rate). A threshold of ``+inf`` (all
non-missing values go left) is written as ``null``. Floats are written by Python's shortest
round-trip repr, so a loaded model predicts bit for bit what the saved one did.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deepnotes.boosting.objectives import CLASSIFICATION, REGRESSION, CustomObjective, Objective
from deepnotes.boosting.predictor import TREE_FIELDS, tree_from_lists

FORMAT, VERSION = "deepnotes-gbdt", 1
_SAVED = ("feature", "threshold", "default_left", "left", "right", "value", "gain", "cover")


def _jsonable_params(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if k == "objective" and callable(v):
            v = "custom"
        elif isinstance(v, np.generic):
            v = v.item()
        elif not isinstance(v, (int, float, str, bool, type(None))):
            v = None  # e.g. a RandomState instance: not needed to predict
        out[k] = v
    return out


def to_dict(est) -> dict:
    """The JSON-able description of a fitted estimator."""
    trees = []
    for tree, k in zip(est._trees, est._tree_class, strict=True):
        d = {"class": int(k)}
        for name in _SAVED:
            arr = getattr(tree, name)
            if name == "threshold":
                d[name] = [None if np.isposinf(t) else float(t) for t in arr]
            else:
                d[name] = arr.tolist()
        trees.append(d)
    classes = getattr(est, "classes_", None)
    names = getattr(est, "feature_names_in_", None)
    return {
        "format": FORMAT, "version": VERSION, "estimator": type(est).__name__,
        "params": _jsonable_params(est.get_params()),
        "objective": est._objective.name,
        "n_features": int(est.n_features_in_),
        "feature_names": None if names is None else [str(n) for n in names],
        "classes": None if classes is None else classes.tolist(),
        "base_score": est._base_score.tolist(),
        "trees": trees,
        "best_iteration": getattr(est, "best_iteration_", None),
    }


def save(est, path) -> None:
    """Write ``to_dict(est)`` to ``path`` as JSON; any extension but ``.json`` (or none) is
    refused, so ``model.ubj`` never silently holds JSON."""
    suffix = Path(path).suffix.lower()
    if suffix not in ("", ".json"):
        kind = "UBJSON (xgboost's binary format)" if suffix == ".ubj" else f"{suffix!r} files"
        raise ValueError(f"save_model writes JSON only; {kind} cannot be written: use a "
                         f"'.json' path instead of {str(path)!r}")
    Path(path).write_text(json.dumps(to_dict(est)), encoding="utf-8")


def _corrupt(path, why):
    return ValueError(f"corrupt or unsupported model file {str(path)!r}: {why}")


def load_into(est, path) -> None:
    """Set ``est``'s parameters and fitted state from the file at ``path``."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"not JSON ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise _corrupt(path, f"'format' is not {FORMAT!r}")
    if d.get("version") != VERSION:
        raise _corrupt(path, f"version {d.get('version')!r} (this reader knows {VERSION})")
    if d.get("estimator") != type(est).__name__:
        raise _corrupt(path, f"it holds a {d.get('estimator')!r}, not a {type(est).__name__}")
    try:
        _restore(est, d)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from None


def _restore(est, d: dict) -> None:
    params = dict(d["params"])
    if params.get("objective") == "custom":
        params["objective"] = None
    est.set_params(**{k: v for k, v in params.items() if k in est.get_params()})
    n_features = int(d["n_features"])
    base = np.asarray(d["base_score"], dtype=np.float64)
    K = base.shape[0]
    name = d["objective"]
    obj: Objective
    if name in CLASSIFICATION:
        obj = CLASSIFICATION[name](K if name == "multi:softprob" else 1)
    elif name in REGRESSION:
        obj = REGRESSION[name](1)
    elif name == "custom":
        obj = CustomObjective(lambda y, p: (p - y, np.ones_like(p)))  # placeholder: predict only
    else:
        raise ValueError(f"unknown objective {name!r}")
    trees, classes = [], []
    for t in d["trees"]:
        cols = {k: t[k] for k in _SAVED}
        cols["threshold"] = [np.inf if v is None else v for v in cols["threshold"]]
        cols["bin_threshold"] = [-1] * len(cols["feature"])
        tree = tree_from_lists(**{k: cols[k] for k in TREE_FIELDS})
        n = tree.n_nodes
        if n == 0 or any(getattr(tree, k).shape != (n,) for k in TREE_FIELDS):
            raise ValueError("tree arrays have different lengths")
        internal = tree.left != -1
        for child in (tree.left, tree.right):
            if np.any(child[internal] <= np.flatnonzero(internal)) or np.any(child >= n):
                raise ValueError("child ids must point forward inside the tree")
        if np.any((tree.right != -1) != internal):
            raise ValueError("a node has exactly one child")
        if np.any(tree.feature[internal] < 0) or np.any(tree.feature >= n_features):
            raise ValueError("feature index out of range")
        k = int(t["class"])
        if not 0 <= k < K:
            raise ValueError(f"tree class {k} out of range")
        trees.append(tree)
        classes.append(k)
    est._objective = obj
    est._base_score = base
    est._trees, est._tree_class = trees, classes
    est.n_features_in_ = n_features
    if d.get("feature_names") is not None:
        est.feature_names_in_ = np.asarray(d["feature_names"], dtype=object)
    if d.get("classes") is not None:
        est.classes_ = np.asarray(d["classes"])
        est.n_classes_ = len(est.classes_)
    if d.get("best_iteration") is not None:
        est.best_iteration_ = int(d["best_iteration"])
    est._finish()
