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
def _shift_by_max(raw, out):  # pragma: no cover - numba
    # out[k, i] = raw[k, i] - max_k raw[k, i]: the softmax's overflow-free exponents
    m = raw[0].copy()
    for k in range(1, raw.shape[0]):
        for i in range(raw.shape[1]):
            m[i] = max(m[i], raw[k, i])
    for k in range(raw.shape[0]):
        for i in range(raw.shape[1]):
            out[k, i] = raw[k, i] - m[i]


@njit(cache=True, nogil=True)
def _softmax(y, e, w, grad, hess, lo, hi):  # pragma: no cover - numba
    # e: exp(raw - max) (``_gradients`` takes the exponentials with numpy's vectorised exp,
    # several times faster than a scalar one per value); classes in order for the sum
    k_classes = e.shape[0]
    s = np.zeros(hi - lo)
    for k in range(k_classes):
        for i in range(lo, hi):
            s[i - lo] += e[k, i]
    for k in range(k_classes):
        for i in range(lo, hi):
            p = e[k, i] / s[i - lo]
            target = 1.0 if y[i] == k else 0.0
            grad[k, i] = (p - target) * w[i]
            hess[k, i] = max(p * (1.0 - p), _H_FLOOR) * w[i]


# --- gbdt-a: the elementwise regression objectives (kinds 3..8; ``a`` is the objective's
# parameter: Poisson's max_delta_step, Tweedie's rho, the Huber slope or the quantile alpha).
@njit(cache=True, nogil=True)
def _elementwise(kind, a, y, raw, w, grad, hess, lo, hi):  # pragma: no cover - numba
    for i in range(lo, hi):
        f = raw[0, i]
        if kind == 3:  # Poisson, log link: l = e^F - y F
            g = np.exp(f) - y[i]
            h = np.exp(f + a)  # xgboost's max_delta_step inflates the hessian (Eq. 9)
        elif kind == 4:  # Gamma, log link: l = y e^-F + F
            g = 1.0 - y[i] * np.exp(-f)
            h = y[i] * np.exp(-f)
        elif kind == 5:  # Tweedie, log link, power a in (1, 2)
            e1 = np.exp((1.0 - a) * f)
            e2 = np.exp((2.0 - a) * f)
            g = -y[i] * e1 + e2
            h = -y[i] * (1.0 - a) * e1 + (2.0 - a) * e2
        elif kind == 6:  # pseudo-Huber with slope a
            z = f - y[i]
            s = 1.0 + (z / a) * (z / a)
            g = z / np.sqrt(s)
            h = 1.0 / (s * np.sqrt(s))
        elif kind == 7:  # absolute error: g = sign(F - y), leaves refreshed to medians
            d = f - y[i]
            g = 1.0 if d > 0 else (-1.0 if d < 0 else 0.0)
            h = 1.0
        else:  # quantile (pinball) loss at alpha = a, leaves refreshed to alpha-quantiles
            g = (1.0 - a) if f - y[i] >= 0 else -a
            h = 1.0
        grad[0, i] = g * w[i]
        hess[0, i] = max(h, _H_FLOOR) * w[i]


@njit(parallel=True, cache=True, nogil=True)
def _chunked(kind, a, y, raw, w, grad, hess):  # pragma: no cover - numba
    n = y.shape[0]
    n_chunks = 64
    size = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo, hi = c * size, min(n, (c + 1) * size)
        if kind == 0:
            _squared_error(y, raw, w, grad, hess, lo, hi)
        elif kind == 1:
            _logistic(y, raw, w, grad, hess, lo, hi)
        elif kind == 2:
            _softmax(y, raw, w, grad, hess, lo, hi)
        else:
            _elementwise(kind, a, y, raw, w, grad, hess, lo, hi)


_KERNELS = (_squared_error, _logistic, _softmax)


def _gradients(kind: int, y, raw, w, grad, hess, a: float = 0.0) -> None:
    """Run objective ``kind`` (0 squared error, 1 logistic, 2 softmax, 3..8 the elementwise
    objectives of :func:`_elementwise` with parameter ``a``) over all rows, on one thread below
    PARALLEL_MIN_ROWS rows."""
    if kind == 2:  # softmax: the kernels take exp(raw - max) in place of raw
        shifted = np.empty_like(raw, dtype=np.float64)
        _shift_by_max(raw, shifted)
        raw = np.exp(shifted, out=shifted)
    if y.shape[0] >= PARALLEL_MIN_ROWS:
        _chunked(kind, float(a), y, raw, w, grad, hess)
    elif kind < 3:
        _KERNELS[kind](y, raw, w, grad, hess, 0, y.shape[0])
    else:
        _elementwise(kind, float(a), y, raw, w, grad, hess, 0, y.shape[0])


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

    #: Objectives whose leaf values are recomputed from the residuals after a tree is grown
    #: (absolute and quantile error) define ``refresh_leaf(residual, w) -> float``.
    refresh_leaf = None

    def check_labels(self, y: np.ndarray) -> None:
        """Raise ``ValueError`` naming ``y`` when a label is outside the objective's domain."""


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
    (``multi:softprob``). Hessian: the diagonal ``p_k (1 - p_k)``. xgboost doubles it (halving
    its Newton steps), so xgboost with twice our ``reg_lambda``, ``min_child_weight`` and
    ``learning_rate`` grows our trees (tested); the base scores (centred log priors) are equal.
    Doubling it here gave equal or lower test log loss on digits, wine and iris, but turned an
    exact tie between two mirror-image splits into a float32 coin toss that breaks scikit-learn's
    sample-weight equivalence check (gbdt-a, 2026-12-02), so the true diagonal stays."""

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


# --- gbdt-a: Poisson, Gamma, Tweedie, pseudo-Huber, absolute and quantile regression ----------
def quantile(values: np.ndarray, alpha: float, weights: np.ndarray | None = None) -> float:
    """xgboost's quantile of ``values`` (shape (n,)): without weights, linear interpolation at
    position ``alpha (n + 1)`` of the sorted values, clamped to the extremes (NIST's / numpy's
    ``method='weibull'``); with weights, the step function: the first sorted value whose
    cumulative weight reaches ``alpha`` times the total. NaN for no values."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    if n == 0:
        return float("nan")
    order = np.argsort(v, kind="stable")
    v = v[order]
    if weights is None:
        if alpha <= 1.0 / (n + 1):
            return float(v[0])
        if alpha >= n / (n + 1):
            return float(v[-1])
        x = alpha * (n + 1)
        k = int(np.floor(x)) - 1
        d = (x - 1) - k
        return float(v[k] + d * (v[k + 1] - v[k]))
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    idx = int(np.searchsorted(cdf, cdf[-1] * alpha, side="left"))
    return float(v[min(idx, n - 1)])


def _unit_weights(w):
    """None when every weight is 1 (xgboost's unweighted quantile), else ``w``."""
    return None if np.all(w == 1.0) else w


class _LogLink(Objective):
    """Regression with a log link: prediction ``exp(F)``; starts at ``log`` of the weighted mean
    (the constant that minimises the Poisson, Gamma and Tweedie losses alike; xgboost's too)."""

    kind = -1
    param = 0.0
    positive = False  # labels must be > 0 (Gamma) rather than >= 0

    def check_labels(self, y):
        bad = y <= 0 if self.positive else y < 0
        if np.any(bad):
            need = "> 0" if self.positive else ">= 0"
            raise ValueError(f"y must be {need} for objective {self.name!r}; got "
                             f"{y[bad][0]!r} at row {int(np.flatnonzero(bad)[0])}")

    def init_score(self, y, w):
        return np.array([np.log(max(np.average(y, weights=w), 1e-16))])

    def gradients(self, y, raw, w, grad, hess):
        _gradients(self.kind, y, raw, w, grad, hess, self.param)

    def transform(self, raw):
        return np.exp(raw)


class Poisson(_LogLink):
    """Poisson deviance, ``l = e^F - y F``: g = e^F - y; h = e^(F + max_delta_step) with xgboost's
    ``max_delta_step = 0.7`` (a safeguard: a larger hessian shortens the Newton step where
    ``e^F`` is small) (``count:poisson``)."""

    name = "count:poisson"
    default_metric = "poisson-nloglik"
    kind = 3

    def __init__(self, n_outputs: int = 1, max_delta_step: float = 0.7):
        super().__init__(n_outputs)
        self.param = float(max_delta_step)


class Gamma(_LogLink):
    """Gamma deviance with log link, ``l = y e^-F + F``: g = 1 - y e^-F, h = y e^-F
    (``reg:gamma``); labels > 0."""

    name = "reg:gamma"
    default_metric = "gamma-nloglik"
    kind = 4
    positive = True


class Tweedie(_LogLink):
    """Tweedie deviance with power ``rho`` in (1, 2) and log link,
    ``l = -y e^((1-rho)F)/(1-rho) + e^((2-rho)F)/(2-rho)`` (``reg:tweedie``)."""

    name = "reg:tweedie"
    kind = 5

    def __init__(self, n_outputs: int = 1, tweedie_variance_power: float = 1.5):
        super().__init__(n_outputs)
        self.param = float(tweedie_variance_power)
        self.default_metric = f"tweedie-nloglik@{self.param:g}"


class PseudoHuber(Objective):
    """Pseudo-Huber loss with slope ``delta``, ``l = delta^2 (sqrt(1 + (F - y)^2/delta^2) - 1)``:
    g = z / sqrt(s), h = s^(-3/2) with ``z = F - y``, ``s = 1 + z^2/delta^2``
    (``reg:pseudohubererror``). Starts at the weighted minimiser of the loss (IRLS from the
    median); xgboost starts from a one-step estimate instead."""

    name = "reg:pseudohubererror"
    default_metric = "mphe"

    def __init__(self, n_outputs: int = 1, huber_slope: float = 1.0):
        super().__init__(n_outputs)
        self.slope = float(huber_slope)

    def init_score(self, y, w):
        c = quantile(y, 0.5, _unit_weights(w))
        for _ in range(100):  # IRLS: c = sum(v y) / sum(v), v = w / sqrt(1 + (c - y)^2/delta^2)
            v = w / np.sqrt(1.0 + ((c - y) / self.slope) ** 2)
            c_new = float(np.sum(v * y) / np.sum(v))
            if abs(c_new - c) <= 1e-12 * max(1.0, abs(c)):
                c = c_new
                break
            c = c_new
        return np.array([c])

    def gradients(self, y, raw, w, grad, hess):
        _gradients(6, y, raw, w, grad, hess, self.slope)


class Quantile(Objective):
    """Pinball loss at level ``alpha``, ``l = max(alpha (y - F), (1 - alpha)(F - y))``:
    g = 1 - alpha where ``F >= y`` else -alpha, h = 1 (``reg:quantileerror``). The tree's
    *structure* comes from these gradients; its leaf values are then replaced by
    ``learning_rate`` times the alpha-quantile of the residuals ``y - F`` of each leaf's rows
    (:meth:`refresh_leaf`, xgboost's adaptive leaves). Starts at the alpha-quantile of y."""

    name = "reg:quantileerror"
    default_metric = "quantile"
    kind = 8

    def __init__(self, n_outputs: int = 1, quantile_alpha: float = 0.5):
        super().__init__(n_outputs)
        self.alpha = float(quantile_alpha)

    def init_score(self, y, w):
        return np.array([quantile(y, self.alpha, _unit_weights(w))])

    def gradients(self, y, raw, w, grad, hess):
        _gradients(self.kind, y, raw, w, grad, hess, self.alpha)

    def refresh_leaf(self, residual: np.ndarray, w: np.ndarray) -> float:
        """The new (unshrunk) value of a leaf whose training rows have these residuals."""
        return quantile(residual, self.alpha, _unit_weights(w))


class AbsoluteError(Quantile):
    """Absolute error ``|y - F|``: the quantile objective at alpha = 1/2 (g = sign(F - y), leaves
    refreshed to residual medians; ``reg:absoluteerror``). Starts at the median of y."""

    name = "reg:absoluteerror"
    default_metric = "mae"
    kind = 7

    def __init__(self, n_outputs: int = 1):
        super().__init__(n_outputs, 0.5)


REGRESSION = {"reg:squarederror": SquaredError, "count:poisson": Poisson, "reg:gamma": Gamma,
              "reg:tweedie": Tweedie, "reg:pseudohubererror": PseudoHuber,
              "reg:absoluteerror": AbsoluteError, "reg:quantileerror": Quantile}
CLASSIFICATION = {"binary:logistic": Logistic, "multi:softprob": Softmax}


def make_regression_objective(name: str, params: dict) -> Objective:
    """The regression objective ``name`` with its parameters taken from an estimator's
    ``get_params()`` (``quantile_alpha``, ``huber_slope``, ``tweedie_variance_power``)."""
    cls = REGRESSION[name]
    if cls is Quantile:
        return Quantile(1, float(params.get("quantile_alpha", 0.5)))
    if cls is PseudoHuber:
        return PseudoHuber(1, float(params.get("huber_slope", 1.0)))
    if cls is Tweedie:
        return Tweedie(1, float(params.get("tweedie_variance_power", 1.5)))
    return cls(1)
