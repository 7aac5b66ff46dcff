"""Evaluation metrics (xgboost's names), all with optional sample weights.

Each takes ``y_true`` and the *transformed* prediction: the value for ``rmse``, the positive-class
probability of shape (n,) for ``logloss``, ``auc`` and ``error``, class probabilities of shape
(n, K) for ``mlogloss``. Probabilities are clipped to [1e-15, 1 - 1e-15] inside the logs.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-15


def _w(y, sample_weight):
    return np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)


def rmse(y_true, y_pred, sample_weight=None) -> float:
    """Root mean squared error."""
    w = _w(y_true, sample_weight)
    d = np.asarray(y_true, float) - np.asarray(y_pred, float)
    return float(np.sqrt(np.sum(w * d * d) / np.sum(w)))


def logloss(y_true, p, sample_weight=None) -> float:
    """Binary cross-entropy of positive-class probabilities ``p``."""
    w = _w(y_true, sample_weight)
    y = np.asarray(y_true, float)
    p = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    return float(-np.sum(w * (y * np.log(p) + (1 - y) * np.log1p(-p))) / np.sum(w))


def error(y_true, p, sample_weight=None) -> float:
    """Binary error rate at threshold 0.5 (``p > 0.5`` predicts class 1)."""
    w = _w(y_true, sample_weight)
    wrong = (np.asarray(p) > 0.5) != (np.asarray(y_true) > 0.5)
    return float(np.sum(w * wrong) / np.sum(w))


def mlogloss(y_true, proba, sample_weight=None) -> float:
    """Multiclass cross-entropy; ``y_true`` holds class indices 0..K-1."""
    w = _w(y_true, sample_weight)
    proba = np.asarray(proba, float)
    p = np.clip(proba[np.arange(len(y_true)), np.asarray(y_true, np.int64)], _EPS, 1.0)
    return float(-np.sum(w * np.log(p)) / np.sum(w))


def auc(y_true, score, sample_weight=None) -> float:
    """Area under the ROC curve (ties count one half), by the weighted rank statistic."""
    w = _w(y_true, sample_weight)
    y = np.asarray(y_true) > 0.5
    score = np.asarray(score, float)
    order = np.argsort(score, kind="mergesort")
    s, yy, ww = score[order], y[order], w[order]
    # Group tied scores: each positive beats the negatives strictly below and half the tied ones.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    neg_w = np.add.reduceat(ww * ~yy, starts)
    pos_w = np.add.reduceat(ww * yy, starts)
    neg_below = np.cumsum(neg_w) - neg_w
    total_pos, total_neg = pos_w.sum(), neg_w.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    return float(np.sum(pos_w * (neg_below + 0.5 * neg_w)) / (total_pos * total_neg))


# --- gbdt-a: regression metrics of the new objectives, NDCG, and name resolution -----------
def mae(y_true, y_pred, sample_weight=None) -> float:
    """Mean absolute error."""
    w = _w(y_true, sample_weight)
    return float(np.sum(w * np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float)))
                 / np.sum(w))


def mphe(y_true, y_pred, sample_weight=None, slope: float = 1.0) -> float:
    """Mean pseudo-Huber error ``slope^2 (sqrt(1 + (y - p)^2 / slope^2) - 1)``."""
    w = _w(y_true, sample_weight)
    z = (np.asarray(y_true, float) - np.asarray(y_pred, float)) / slope
    return float(np.sum(w * slope * slope * (np.sqrt(1.0 + z * z) - 1.0)) / np.sum(w))


def poisson_nloglik(y_true, mu, sample_weight=None) -> float:
    """Poisson negative log-likelihood ``mu - y log mu + log y!`` of the means ``mu``."""
    from scipy.special import gammaln

    w = _w(y_true, sample_weight)
    y = np.asarray(y_true, float)
    mu = np.maximum(np.asarray(mu, float), 1e-16)
    return float(np.sum(w * (gammaln(y + 1.0) + mu - y * np.log(mu))) / np.sum(w))


def gamma_nloglik(y_true, mu, sample_weight=None) -> float:
    """Gamma negative log-likelihood with unit shape, ``y / mu + log mu`` (xgboost's)."""
    w = _w(y_true, sample_weight)
    mu = np.maximum(np.asarray(mu, float), 1e-16)
    return float(np.sum(w * (np.asarray(y_true, float) / mu + np.log(mu))) / np.sum(w))


def tweedie_nloglik(y_true, mu, sample_weight=None, rho: float = 1.5) -> float:
    """Tweedie negative log-likelihood up to a constant,
    ``-y mu^(1-rho)/(1-rho) + mu^(2-rho)/(2-rho)``."""
    w = _w(y_true, sample_weight)
    y = np.asarray(y_true, float)
    mu = np.maximum(np.asarray(mu, float), 1e-16)
    loss = -y * mu ** (1.0 - rho) / (1.0 - rho) + mu ** (2.0 - rho) / (2.0 - rho)
    return float(np.sum(w * loss) / np.sum(w))


def quantile_loss(y_true, y_pred, sample_weight=None, alpha: float = 0.5) -> float:
    """Mean pinball loss at level ``alpha``: ``alpha (y - p)`` above, ``(1 - alpha)(p - y)``
    below."""
    w = _w(y_true, sample_weight)
    d = np.asarray(y_true, float) - np.asarray(y_pred, float)
    return float(np.sum(w * np.where(d >= 0, alpha * d, (alpha - 1.0) * d)) / np.sum(w))


def group_pointer(group=None, qid=None, n_rows: int | None = None) -> np.ndarray:
    """Query-group boundaries ``ptr`` (group ``g`` is rows ``ptr[g]:ptr[g+1]``), from either
    xgboost's ``group`` (sizes of consecutive groups, summing to ``n_rows``) or ``qid`` (one
    query id per row, equal ids contiguous). Raises ``ValueError`` naming the argument."""
    if (group is None) == (qid is None):
        raise ValueError("give exactly one of group (group sizes) and qid (query id per row)")
    if group is not None:
        sizes = np.asarray(group)
        if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.number) \
                or np.any(sizes != np.round(sizes)) or np.any(sizes < 1):
            raise ValueError("group must be a 1-D array of positive integer group sizes")
        total = int(sizes.sum())
        if n_rows is not None and total != n_rows:
            raise ValueError(f"group sizes sum to {total} but there are {n_rows} rows")
        return np.concatenate([[0], np.cumsum(sizes.astype(np.int64))])
    q = np.asarray(qid)
    if q.ndim != 1 or (n_rows is not None and q.shape[0] != n_rows):
        raise ValueError(f"qid must have one entry per row ({n_rows}), got shape {q.shape}")
    if q.shape[0] == 0:
        raise ValueError("qid is empty")
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    if len(np.unique(q)) != len(starts):
        raise ValueError("qid: the rows of each query must be contiguous (sort by qid)")
    return np.concatenate([starts, [q.shape[0]]]).astype(np.int64)


def dcg_discount(n: int) -> np.ndarray:
    """``1 / log2(i + 2)`` for positions ``i = 0..n-1``."""
    return 1.0 / np.log2(np.arange(n) + 2.0)


def ndcg(y_true, score, group_ptr, k: int | None = None, sample_weight=None,
         exp_gain: bool = True) -> float:
    """Mean NDCG@k over query groups (Järvelin & Kekäläinen, 2002), xgboost's ``ndcg@k``.

    Gain ``2^y - 1`` (``exp_gain``) or ``y``, discount ``1 / log2(rank + 1)``; documents ranked by
    ``score`` descending (ties in input order); a group whose ideal DCG is 0 scores 1.
    ``sample_weight`` holds one weight per *group*. ``k=None``: all positions.
    """
    y = np.asarray(y_true, float)
    score = np.asarray(score, float)
    ptr = np.asarray(group_ptr, np.int64)
    n_groups = len(ptr) - 1
    gw = np.ones(n_groups) if sample_weight is None else np.asarray(sample_weight, float)
    vals = np.empty(n_groups)
    for g in range(n_groups):
        yg, sg = y[ptr[g]:ptr[g + 1]], score[ptr[g]:ptr[g + 1]]
        kk = len(yg) if k is None else min(k, len(yg))
        gain = np.exp2(yg) - 1.0 if exp_gain else yg
        disc = dcg_discount(kk)
        ideal = np.sort(gain)[::-1][:kk] @ disc
        order = np.argsort(-sg, kind="stable")[:kk]
        vals[g] = 1.0 if ideal <= 0 else float(gain[order] @ disc / ideal)
    return float(np.sum(gw * vals) / np.sum(gw))


METRICS = {"rmse": rmse, "logloss": logloss, "error": error, "mlogloss": mlogloss, "auc": auc,
           "mae": mae, "mphe": mphe, "poisson-nloglik": poisson_nloglik,
           "gamma-nloglik": gamma_nloglik, "quantile": quantile_loss}
#: Metrics where larger is better (early stopping maximises them).
MAXIMIZE = {"auc", "ndcg"}
#: Metrics that need query groups (``ndcg``, ``ndcg@k``).
RANKING = {"ndcg"}


def metric_base(name: str) -> str:
    """``'ndcg@10'`` -> ``'ndcg'``, ``'tweedie-nloglik@1.5'`` -> ``'tweedie-nloglik'``."""
    return name.split("@", 1)[0]


def is_known(name) -> bool:
    """Whether ``name`` is a metric :func:`resolve` understands."""
    if not isinstance(name, str):
        return False
    base, _, arg = name.partition("@")
    if base in ("ndcg", "tweedie-nloglik") and arg:
        try:
            (int if base == "ndcg" else float)(arg)
        except ValueError:
            return False
        return base != "ndcg" or int(arg) >= 1
    return name in METRICS or name in RANKING


def resolve(name: str, **params):
    """The metric ``fn(y_true, y_pred, sample_weight=None, group_ptr=None) -> float`` named
    ``name`` (xgboost's names; ``params``: ``alpha`` for ``quantile``, ``slope`` for ``mphe``)."""
    base, _, arg = name.partition("@")
    if base == "ndcg":
        k = int(arg) if arg else None
        return lambda y, p, sample_weight=None, group_ptr=None: ndcg(y, p, group_ptr, k)
    if base == "tweedie-nloglik":
        rho = float(arg) if arg else 1.5
        return lambda y, p, sample_weight=None, group_ptr=None: tweedie_nloglik(
            y, p, sample_weight, rho)
    fn = METRICS[name]
    extra = {}
    if name == "quantile":
        extra["alpha"] = params.get("alpha", 0.5)
    elif name == "mphe":
        extra["slope"] = params.get("slope", 1.0)
    return lambda y, p, sample_weight=None, group_ptr=None: fn(y, p, sample_weight, **extra)
