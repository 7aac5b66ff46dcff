"""The model format of ``save_model`` / ``load_model``: JSON, or the same document as UBJSON.

A ``.ubj`` path holds the document below in Universal Binary JSON (written and read by this
module, see :func:`ubjson_dumps`); ``.json`` or no extension holds it as JSON text. Loading
tells the two apart by content. One JSON object (UTF-8)::

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
         "left": [...], "right": [...], "value": [...], "gain": [...], "cover": [...],
         "categories": {"3": [[left codes], [right codes]], ...}}   # categorical splits only
      ],
      "best_iteration": 41 | null,
      "categorical": {"features": [0, 4], "pandas": {"city": ["a", "b"]}}   # or absent
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

from deepnotes.boosting.objectives import (
    CLASSIFICATION,
    REGRESSION,
    CustomObjective,
    Objective,
    make_regression_objective,
)
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
        if tree.categories:  # gbdt-b: categorical splits (their threshold is NaN -> null)
            d["threshold"] = [None if not np.isfinite(t) and not np.isneginf(t) else float(t)
                              for t in tree.threshold]
            d["categories"] = {str(k): [a.tolist(), b.tolist()]
                               for k, (a, b) in tree.categories.items()}
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
        **_categorical_state(est),
    }


def _categorical_state(est) -> dict:
    """gbdt-b: which features are categorical, and pandas' category labels seen in fit."""
    mask = getattr(est, "_categorical_", None)
    if mask is None:
        return {}
    pandas = {k: list(v.tolist()) for k, v in getattr(est, "_pandas_categories_", {}).items()}
    return {"categorical": {"features": np.flatnonzero(mask).tolist(), "pandas": pandas}}


def save(est, path) -> None:
    """Write ``to_dict(est)`` to ``path``: UBJSON for a ``.ubj`` path (the same document in
    Universal Binary JSON, as xgboost does), JSON for ``.json`` or no extension; any other
    extension is refused, so a file never holds a format its name does not say."""
    suffix = Path(path).suffix.lower()
    if suffix == ".ubj":
        Path(path).write_bytes(ubjson_dumps(to_dict(est)))
        return
    if suffix not in ("", ".json"):
        raise ValueError(f"save_model writes JSON ('.json' or no extension) or UBJSON ('.ubj'); "
                         f"{suffix!r} files cannot be written: use a '.json' or '.ubj' path "
                         f"instead of {str(path)!r}")
    Path(path).write_text(json.dumps(to_dict(est)), encoding="utf-8")


# --- gbdt-a: Universal Binary JSON (https://ubjson.org, draft 12), written and read here ----
# Big-endian. Scalars: Z null, T/F booleans, i/U/I/l/L integers (int8, uint8, int16, int32,
# int64), D float64 (so floats round-trip bit for bit), S strings (length, then UTF-8). Lists of
# numbers become strongly typed arrays ``[ $ <type> # <count>`` followed by the raw values;
# other lists and objects are written element by element.
_INT_TYPES = ((b"i", ">i1", -(2**7), 2**7 - 1), (b"U", ">u1", 0, 2**8 - 1),
              (b"I", ">i2", -(2**15), 2**15 - 1), (b"l", ">i4", -(2**31), 2**31 - 1),
              (b"L", ">i8", -(2**63), 2**63 - 1))
_NUMERIC = {b"i": ">i1", b"U": ">u1", b"I": ">i2", b"l": ">i4", b"L": ">i8", b"d": ">f4",
            b"D": ">f8"}


def _int_marker(lo: int, hi: int) -> tuple[bytes, str]:
    for marker, dtype, a, b in _INT_TYPES:
        if a <= lo and hi <= b:
            return marker, dtype
    raise ValueError(f"integer out of UBJSON's int64 range: {lo}..{hi}")


def _ubj_length(n: int) -> bytes:
    marker, dtype = _int_marker(n, n)
    return marker + np.array(n, dtype=dtype).tobytes()


def _ubj_encode(value, out: list) -> None:
    if value is None:
        out.append(b"Z")
    elif isinstance(value, (bool, np.bool_)):
        out.append(b"T" if value else b"F")
    elif isinstance(value, (int, np.integer)):
        marker, dtype = _int_marker(int(value), int(value))
        out.append(marker + np.array(int(value), dtype=dtype).tobytes())
    elif isinstance(value, (float, np.floating)):
        out.append(b"D" + np.array(float(value), dtype=">f8").tobytes())
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(b"S" + _ubj_length(len(raw)) + raw)
    elif isinstance(value, dict):
        out.append(b"{")
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"UBJSON object keys must be str, got {k!r}")
            raw = k.encode("utf-8")
            out.append(_ubj_length(len(raw)) + raw)
            _ubj_encode(v, out)
        out.append(b"}")
    elif isinstance(value, (list, tuple)):
        kinds = {type(v) for v in value}
        if value and kinds <= {int}:
            marker, dtype = _int_marker(min(value), max(value))
            out.append(b"[$" + marker + b"#" + _ubj_length(len(value))
                       + np.asarray(value, dtype=dtype).tobytes())
        elif value and kinds <= {int, float} and float in kinds:
            out.append(b"[$D#" + _ubj_length(len(value))
                       + np.asarray(value, dtype=">f8").tobytes())
        else:
            out.append(b"[")
            for v in value:
                _ubj_encode(v, out)
            out.append(b"]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as UBJSON")


def ubjson_dumps(value) -> bytes:
    """``value`` (None, bool, int, float, str, list, dict with str keys) as UBJSON bytes."""
    out: list = []
    _ubj_encode(value, out)
    return b"".join(out)


class _UBJReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("UBJSON ends early")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def scalar(self, marker: bytes):
        if marker in _NUMERIC:
            dtype = np.dtype(_NUMERIC[marker])
            v = np.frombuffer(self.take(dtype.itemsize), dtype=dtype)[0]
            return float(v) if dtype.kind == "f" else int(v)
        if marker == b"Z":
            return None
        if marker in (b"T", b"F"):
            return marker == b"T"
        if marker == b"S":
            return self.take(self.length()).decode("utf-8")
        if marker == b"C":
            return self.take(1).decode("utf-8")
        if marker == b"[":
            return self.array()
        if marker == b"{":
            return self.object()
        raise ValueError(f"unknown UBJSON marker {marker!r} at byte {self.pos - 1}")

    def length(self) -> int:
        n = self.scalar(self.take(1))
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"bad UBJSON length {n!r}")
        return n

    def container_header(self):
        kind = count = None
        if self.data[self.pos:self.pos + 1] == b"$":
            self.pos += 1
            kind = self.take(1)
        if self.data[self.pos:self.pos + 1] == b"#":
            self.pos += 1
            count = self.length()
        elif kind is not None:
            raise ValueError("UBJSON typed container without a count")
        return kind, count

    def array(self) -> list:
        kind, count = self.container_header()
        if count is not None:
            if kind in _NUMERIC:
                dtype = np.dtype(_NUMERIC[kind])
                return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).tolist()
            return [self.scalar(kind or self.take(1)) for _ in range(count)]
        out = []
        while True:
            marker = self.take(1)
            if marker == b"]":
                return out
            if marker != b"N":
                out.append(self.scalar(marker))

    def object(self) -> dict:
        kind, count = self.container_header()
        out = {}
        for _ in iter(int, 1):
            if count is not None and len(out) == count:
                return out
            if count is None and self.data[self.pos:self.pos + 1] == b"}":
                self.pos += 1
                return out
            key = self.take(self.length()).decode("utf-8")
            out[key] = self.scalar(kind or self.take(1))


def ubjson_loads(data: bytes):
    """Parse UBJSON bytes (any valid document, typed containers included)."""
    reader = _UBJReader(bytes(data))
    value = reader.scalar(reader.take(1))
    if reader.pos != len(reader.data):
        raise ValueError(f"trailing bytes after the UBJSON value at byte {reader.pos}")
    return value


def read(path) -> dict:
    """The saved document at ``path``, JSON or UBJSON (told apart by content, not by name)."""
    raw = Path(path).read_bytes()
    if raw[:1] == b"{" and raw[1:2] in (b"i", b"U", b"I", b"l", b"L", b"$", b"#", b"}"):
        try:
            return ubjson_loads(raw)
        except (ValueError, UnicodeDecodeError, TypeError) as exc:
            raise _corrupt(path, f"not UBJSON ({exc})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"not JSON ({exc})") from None


def load(path):
    """A new estimator of the saved class (``GBDTRegressor``, ``GBDTClassifier`` or
    ``GBDTRanker``) holding the model saved at ``path`` (JSON or UBJSON)."""
    from deepnotes.boosting.gbdt import GBDTClassifier, GBDTRegressor
    from deepnotes.boosting.ranking import GBDTRanker

    d = read(path)
    classes = {"GBDTClassifier": GBDTClassifier, "GBDTRegressor": GBDTRegressor,
               "GBDTRanker": GBDTRanker}
    name = d.get("estimator") if isinstance(d, dict) else None
    if name not in classes:
        raise _corrupt(path, f"unknown estimator {name!r}")
    return classes[name]().load_model(path)


def _corrupt(path, why):
    return ValueError(f"corrupt or unsupported model file {str(path)!r}: {why}")


def load_into(est, path) -> None:
    """Set ``est``'s parameters and fitted state from the file at ``path``."""
    d = read(path)
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
        obj = make_regression_objective(name, params)
    elif name.startswith("rank:"):  # gbdt-a: rankers predict raw scores
        from deepnotes.boosting.ranking import RANKING

        if name not in RANKING:
            raise ValueError(f"unknown objective {name!r}")
        obj = RANKING[name]()
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
        if t.get("categories"):  # gbdt-b: categorical splits
            tree.categories = {int(k): (np.asarray(a, dtype=np.int64), np.asarray(b, np.int64))
                               for k, (a, b) in t["categories"].items()}
            cat_nodes = np.array(sorted(tree.categories), dtype=np.int64)
            tree.threshold[cat_nodes] = np.nan
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
    est._categorical_, est._pandas_categories_ = None, {}
    if d.get("categorical"):  # gbdt-b
        mask = np.zeros(n_features, dtype=np.bool_)
        mask[d["categorical"]["features"]] = True
        est._categorical_ = mask
        if d["categorical"]["pandas"]:  # labels of pandas 'category' columns seen in fit
            import pandas as pd

            est._pandas_categories_ = {k: pd.Index(v)
                                       for k, v in d["categorical"]["pandas"].items()}
    est._finish()
