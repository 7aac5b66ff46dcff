"""Training objectives: gradients and hessians of the loss w.r.t. the raw score (Eq. 2).

Each objective gives, for raw scores ``F`` of shape (K, n) (K = 1 except for softmax), the first
and second derivatives of the per-row loss, multiplied by the sample weights, written in place into
float32 arrays of shape (K, n); an initial score (``base_score``); and the link from raw score to
prediction. Hessians are floored at 1e-16 so that a saturated probability never yields an empty
node's weight ``-G / (H + lambda)`` of 0/0 when ``lambda = 0``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, prange

_H_FLOOR = 1e-16
#: Below this many rows the gradients are computed on one thread (no parallel start-up cost).
PARALLEL_MIN_ROWS = 50_000


@njit(cache=True, nogil=True)
def _squared_error(y, raw, w, grad, hess, lo, hi):  # pragma: no cover - numba
    for i in range(lo, hi):
        grad[0, i] = (raw[0, i] - y[i]) * w[i]
        hess[0, i] = w[i]


@njit(cache=True, nogil=True)
def _logistic(y, raw, w, grad, hess, lo, hi):  # pragma: no cover - numba
    for i in range(lo, hi):
        p = 1.0 / (1.0 + np.exp(-raw[0, i]))
        grad[0, i] = (p - y[i]) * w[i]
        hess[0, i] = max(p * (1.0 - p), _H_FLOOR) * w[i]


@njit(cache=True, nogil=True)
def _softmax(y, raw, w, grad, hess, lo, hi):  # pragma: no cover - numba
    k_classes = raw.shape[0]
    for i in range(lo, hi):
        m = raw[0, i]
        for k in range(1, k_classes):
            m = max(m, raw[k, i])
        s = 0.0
        for k in range(k_classes):
            s += np.exp(raw[k, i] - m)
        for k in range(k_classes):
            p = np.exp(raw[k, i] - m) / s
            target = 1.0 if y[i] == k else 0.0
            grad[k, i] = (p - target) * w[i]
            hess[k, i] = max(p * (1.0 - p), _H_FLOOR) * w[i]


@njit(parallel=True, cache=True, nogil=True)
def _chunked(kind, y, raw, w, grad, hess):  # pragma: no cover - numba
    n = y.shape[0]
    n_chunks = 64
    size = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo, hi = c * size, min(n, (c + 1) * size)
        if kind == 0:
            _squared_error(y, raw, w, grad, hess, lo, hi)
        elif kind == 1:
            _logistic(y, raw, w, grad, hess, lo, hi)
        else:
            _softmax(y, raw, w, grad, hess, lo, hi)


_KERNELS = (_squared_error, _logistic, _softmax)


def _gradients(kind: int, y, raw, w, grad, hess) -> None:
    """Run objective ``kind`` (0 squared error, 1 logistic, 2 softmax) over all rows, on one
    thread below PARALLEL_MIN_ROWS rows."""
    if y.shape[0] >= PARALLEL_MIN_ROWS:
        _chunked(kind, y, raw, w, grad, hess)
    else:
        _KERNELS[kind](y, raw, w, grad, hess, 0, y.shape[0])


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic link, overflow-free for large |z|."""
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of shape (n, K)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Objective:
    """Base of the built-in objectives; ``name`` follows xgboost's objective strings."""

    name = ""
    default_metric = ""

    def __init__(self, n_outputs: int = 1):
        self.n_outputs = n_outputs

    def init_score(self, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Raw starting score, shape (K,): the constant that minimises the weighted loss."""
        raise NotImplementedError

    def gradients(self, y, raw, w, grad, hess) -> None:
        """Write d loss / d raw and d^2 loss / d raw^2 (times ``w``) into ``grad, hess``."""
        raise NotImplementedError

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores (n, K) -> predictions (regression) or probabilities (classification)."""
        return raw


class SquaredError(Objective):
    """``l = (y - F)^2 / 2``: g = F - y, h = 1 (``reg:squarederror``)."""

    name = "reg:squarederror"
    default_metric = "rmse"

    def init_score(self, y, w):
        return np.array([np.average(y, weights=w)])

    def gradients(self, y, raw, w, grad, hess):
        _gradients(0, y, raw, w, grad, hess)


class Logistic(Objective):
    """Binary log loss on ``p = sigmoid(F)``: g = p - y, h = p (1 - p) (``binary:logistic``)."""

    name = "binary:logistic"
    default_metric = "logloss"

    def init_score(self, y, w):
        p = float(np.clip(np.average(y, weights=w), 1e-7, 1 - 1e-7))
        return np.array([np.log(p / (1 - p))])

    def gradients(self, y, raw, w, grad, hess):
        _gradients(1, y, raw, w, grad, hess)

    def transform(self, raw):
        p = sigmoid(raw[:, 0])
        return np.column_stack([1 - p, p])


class Softmax(Objective):
    """Multiclass log loss on ``p = softmax(F)``; one tree per class per round
    (``multi:softprob``). Hessian: the diagonal ``p_k (1 - p_k)``; xgboost doubles it, which
    only halves its effective step size, so equal hyper-parameters are not equal trees here."""

    name = "multi:softprob"
    default_metric = "mlogloss"

    def init_score(self, y, w):
        prior = np.bincount(y.astype(np.int64), weights=w, minlength=self.n_outputs)
        logp = np.log(np.clip(prior / prior.sum(), 1e-7, None))
        return logp - logp.mean()

    def gradients(self, y, raw, w, grad, hess):
        _gradients(2, y, raw, w, grad, hess)

    def transform(self, raw):
        return softmax(raw)


class CustomObjective(Objective):
    """A callable ``obj(y_true, y_pred_raw) -> (grad, hess)`` (arrays of shape (n,)), as in
    xgboost's scikit-learn API; sample weights multiply what it returns. Starts at 0."""

    name = "custom"
    default_metric = "rmse"

    def __init__(self, func: Callable):
        super().__init__(1)
        self.func = func

    def init_score(self, y, w):
        return np.zeros(1)

    def gradients(self, y, raw, w, grad, hess):
        out = self.func(y, raw[0].copy())
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("a custom objective must return a tuple (grad, hess)")
        g, h = (np.asarray(a, dtype=np.float64).reshape(-1) for a in out)
        if g.shape != y.shape or h.shape != y.shape:
            raise ValueError(f"custom objective returned grad {g.shape} / hess {h.shape}, "
                             f"expected {y.shape}")
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
            raise ValueError("custom objective returned non-finite grad or hess")
        grad[0] = g * w
        hess[0] = h * w


REGRESSION = {"reg:squarederror": SquaredError}
CLASSIFICATION = {"binary:logistic": Logistic, "multi:softprob": Softmax}
