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


METRICS = {"rmse": rmse, "logloss": logloss, "error": error, "mlogloss": mlogloss, "auc": auc}
#: Metrics where larger is better (early stopping maximises them).
MAXIMIZE = {"auc"}
