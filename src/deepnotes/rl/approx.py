"""Stochastic approximation: incremental mean, Robbins–Monro root finding, SGD as a special case.

The post ``stochastic-approximation`` numbers the equations cited here. References:
Robbins & Monro (1951), "A Stochastic Approximation Method", Ann. Math. Statist. 22(3);
Zhao (2025), *Mathematical Foundations of Reinforcement Learning*, ch. 6.

Conventions: an iterate ``w`` has shape ``(d,)`` (one run) or ``(R, d)`` (``R`` independent
replicates advanced together, each with its own noise); scalar root finding uses ``(R,)``. Step
``k`` counts from 1 and uses the step size ``alpha_k`` of a schedule (:class:`Schedule`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit

MODES = ("sgd", "minibatch", "full")
SAMPLINGS = ("replace", "shuffle")


# ----------------------------------------------------------------------------- incremental mean
def incremental_mean(samples) -> np.ndarray:
    """Running means by the incremental rule ``w_k = w_{k-1} - (1/k)(w_{k-1} - x_k)`` (Eq. 1).

    Parameters
    ----------
    samples : array_like, shape (n, ...)
        Samples ``x_1 .. x_n`` along the first axis; trailing axes are averaged independently.

    Returns
    -------
    ndarray, shape (n, ...)
        ``w_1 .. w_n``; ``w_k`` equals the mean of the first ``k`` samples (``w_0`` drops out
        because ``alpha_1 = 1``).
    """
    x = np.asarray(samples, dtype=float)
    if x.ndim == 0 or x.shape[0] < 1:
        raise ValueError(f"samples must have at least one sample along axis 0, got shape {x.shape}")
    out = np.empty_like(x)
    w = np.zeros_like(x[0])
    for k in range(1, x.shape[0] + 1):
        w = w - (w - x[k - 1]) / k
        out[k - 1] = w
    return out


# ----------------------------------------------------------------------------- step sizes
@dataclass(frozen=True)
class Schedule:
    """A step-size sequence ``alpha_k``, ``k = 1, 2, ...``; call it with ``k`` (int or array).

    ``sum_diverges`` (``sum alpha_k = inf``) and ``square_summable`` (``sum alpha_k^2 < inf``)
    are the two step-size conditions of the Robbins–Monro theorem (Eq. 4);
    ``satisfies_robbins_monro`` is their conjunction.
    """

    def alpha(self, k: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, k):
        k_arr = np.asarray(k)
        if np.any(k_arr < 1):
            raise ValueError("step indices k start at 1")
        out = self.alpha(k_arr.astype(float))
        return float(out) if out.ndim == 0 else out

    def partial_sum(self, steps: int, power: int = 1) -> float:
        """``sum_{k=1}^{steps} alpha_k**power`` (how far the iterate can move, Eq. 6)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return float(np.sum(self(np.arange(1, steps + 1)) ** power))

    @property
    def sum_diverges(self) -> bool:
        raise NotImplementedError

    @property
    def square_summable(self) -> bool:
        raise NotImplementedError

    @property
    def satisfies_robbins_monro(self) -> bool:
        return self.sum_diverges and self.square_summable


@dataclass(frozen=True)
class Harmonic(Schedule):
    """``alpha_k = a / (k + b)``: the incremental mean's ``1/k`` when ``a=1, b=0``."""

    a: float = 1.0
    b: float = 0.0

    def __post_init__(self):
        if self.a <= 0 or self.b <= -1:
            raise ValueError(f"harmonic needs a > 0 and b > -1, got a={self.a}, b={self.b}")

    def alpha(self, k):
        return self.a / (k + self.b)

    sum_diverges = True
    square_summable = True


@dataclass(frozen=True)
class Power(Schedule):
    """``alpha_k = a / k**p``: Robbins–Monro exactly when ``0.5 < p <= 1``."""

    a: float = 1.0
    p: float = 1.0

    def __post_init__(self):
        if self.a <= 0 or self.p < 0:
            raise ValueError(f"power needs a > 0 and p >= 0, got a={self.a}, p={self.p}")

    def alpha(self, k):
        return self.a / k**self.p

    @property
    def sum_diverges(self) -> bool:
        return self.p <= 1

    @property
    def square_summable(self) -> bool:
        return self.p > 0.5


@dataclass(frozen=True)
class Constant(Schedule):
    """``alpha_k = a``: ``sum alpha_k^2 = inf``, so the noise never averages out (Eq. 8)."""

    a: float = 0.1

    def __post_init__(self):
        if self.a <= 0:
            raise ValueError(f"constant needs a > 0, got a={self.a}")

    def alpha(self, k):
        return np.full_like(k, self.a, dtype=float)

    sum_diverges = True
    square_summable = False


@dataclass(frozen=True)
class Geometric(Schedule):
    """``alpha_k = a r**(k-1)``, ``0 < r < 1``: ``sum alpha_k = a/(1-r) < inf``, stops early."""

    a: float = 0.5
    r: float = 0.9

    def __post_init__(self):
        if self.a <= 0 or not 0 < self.r < 1:
            raise ValueError(f"geometric needs a > 0 and 0 < r < 1, got a={self.a}, r={self.r}")

    def alpha(self, k):
        return self.a * self.r ** (k - 1)

    sum_diverges = False
    square_summable = True


def harmonic(a: float = 1.0, b: float = 0.0) -> Harmonic:
    """``alpha_k = a/(k+b)`` (satisfies Robbins–Monro)."""
    return Harmonic(a, b)


def power(a: float = 1.0, p: float = 1.0) -> Power:
    """``alpha_k = a/k**p`` (Robbins–Monro iff ``0.5 < p <= 1``; ``p > 1`` stops too early)."""
    return Power(a, p)


def constant(a: float = 0.1) -> Constant:
    """``alpha_k = a`` (violates ``sum alpha^2 < inf``: a noise floor, Eq. 8)."""
    return Constant(a)


def geometric(a: float = 0.5, r: float = 0.9) -> Geometric:
    """``alpha_k = a r**(k-1)`` (violates ``sum alpha = inf``: converges to the wrong point)."""
    return Geometric(a, r)


# ----------------------------------------------------------------------------- trajectories
@dataclass(frozen=True)
class Trajectory:
    """Recorded iterates of a stochastic-approximation run.

    Attributes
    ----------
    k : ndarray, shape (T,)
        Iteration of each record (0 is ``w0``).
    w : ndarray, shape (T, *w0.shape)
        Iterates ``w_k``.
    loss : ndarray, shape (T, *batch) or None
        Full objective ``J(w_k)`` (Eq. 9) for SGD runs; ``batch`` is ``(R,)`` with replicates.
    samples : ndarray, shape (T,) or None
        Samples touched (gradient evaluations of ``f``) up to ``w_k``, per replicate.
    """

    k: np.ndarray
    w: np.ndarray
    loss: np.ndarray | None = None
    samples: np.ndarray | None = None


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return int(steps)


def _record_points(steps: int, record) -> np.ndarray:
    """Iterations to keep: every ``record``-th (plus the last) or an explicit array of ``k``."""
    if isinstance(record, int | np.integer) and not isinstance(record, bool):
        if record < 1:
            raise ValueError(f"record must be >= 1, got {record}")
        return np.unique(np.append(np.arange(0, steps + 1, record), steps))
    ks = np.unique(np.asarray(record, dtype=np.int64))
    if ks.ndim != 1 or ks.size == 0 or ks[0] < 0 or ks[-1] > steps:
        raise ValueError(f"record iterations must lie in [0, {steps}]")
    return ks


def _check_schedule(schedule) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule (harmonic, power, ...), got {schedule!r}")
    return schedule


def robbins_monro(g_noisy: Callable[[np.ndarray, np.random.Generator], np.ndarray], w0,
                  steps: int, schedule: Schedule, rng: np.random.Generator,
                  record=1) -> Trajectory:
    """Find a root of ``g(w) = 0`` from noisy observations: ``w_{k+1} = w_k - a_k g~(w_k)`` (Eq. 2).

    Parameters
    ----------
    g_noisy : callable ``(w, rng) -> g~``
        One noisy observation ``g(w) + eta`` per element of ``w``, same shape as ``w``; it draws
        its noise from ``rng`` (vectorised: all replicates in one call).
    w0 : array_like, shape (R,) or (R, d) or ()
        Initial guess(es); replicates are independent runs advanced together.
    steps : int
        Number of updates (>= 1).
    schedule : Schedule
        Step sizes ``a_k``.
    rng : numpy.random.Generator
    record : int or array_like of int
        Keep every ``record``-th iterate (and the last), or exactly the iterations listed.

    Returns
    -------
    Trajectory with ``k`` (T,) and ``w`` (T, *w0.shape).
    """
    steps = _check_steps(steps)
    schedule = _check_schedule(schedule)
    ks = _record_points(steps, record)
    w = np.array(w0, dtype=float, copy=True)
    alphas = schedule(np.arange(1, steps + 1))
    hist = np.empty((ks.size, *w.shape))
    slot = 0
    if ks[0] == 0:
        hist[0], slot = w, 1
    for k in range(1, steps + 1):
        obs = np.asarray(g_noisy(w, rng), dtype=float)
        if obs.shape != w.shape:
            raise ValueError(f"g_noisy returned shape {obs.shape}, expected {w.shape}")
        w = w - alphas[k - 1] * obs
        if slot < ks.size and ks[slot] == k:
            hist[slot], slot = w, slot + 1
    return Trajectory(k=ks, w=hist)


# ----------------------------------------------------------------------------- objectives
class MeanEstimation:
    """``J(w) = (1/n) sum_i f(w, x_i)``, ``f(w, x) = 1/2 ||w - x||^2`` (Eq. 9); minimiser: the mean.

    Parameters
    ----------
    x : array_like, shape (n, d)
    """

    def __init__(self, x):
        self.x = np.asarray(x, dtype=float)
        if self.x.ndim != 2 or self.x.shape[0] < 1:
            raise ValueError(f"x must have shape (n, d) with n >= 1, got {self.x.shape}")
        self.n, self.dim = self.x.shape
        self._mean = self.x.mean(axis=0)
        self._half_var = 0.5 * float(np.sum(self.x.var(axis=0)))

    def grad(self, w: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Mean of ``grad f = w - x_i`` over ``idx`` (shape (B,) or (R, B)), all data if None."""
        xb = self._mean if idx is None else self.x[idx].mean(axis=-2)
        return w - xb

    def loss(self, w: np.ndarray) -> np.ndarray:
        """``J(w) = 1/2 ||w - xbar||^2 + 1/2 tr Cov(x)``, shape ``w.shape[:-1]``."""
        return 0.5 * np.sum((w - self._mean) ** 2, axis=-1) + self._half_var

    def solution(self) -> np.ndarray:
        return self._mean.copy()

    def hessian(self) -> np.ndarray:
        return np.eye(self.dim)

    def noise_covariance(self) -> np.ndarray:
        """Covariance of one sampled gradient at the optimum: ``Cov(x)`` (ddof=0)."""
        xc = self.x - self._mean
        return xc.T @ xc / self.n


class LeastSquares:
    """``J(w) = (1/2n) ||X w - y||^2``, ``f(w, (x, y)) = 1/2 (x^T w - y)^2`` (Eq. 9).

    Parameters
    ----------
    X : array_like, shape (n, d)
    y : array_like, shape (n,)
    """

    def __init__(self, X, y):
        self.X = np.asarray(X, dtype=float)
        self.y = np.asarray(y, dtype=float)
        if self.X.ndim != 2 or self.X.shape[0] < 1:
            raise ValueError(f"X must have shape (n, d) with n >= 1, got {self.X.shape}")
        if self.y.shape != (self.X.shape[0],):
            raise ValueError(f"y must have shape ({self.X.shape[0]},), got {self.y.shape}")
        self.n, self.dim = self.X.shape

    def grad(self, w: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Mean of ``(x_i^T w - y_i) x_i`` over ``idx`` (shape (B,) or (R, B)), all data if None."""
        if idx is None:
            return (w @ self.X.T - self.y) @ self.X / self.n
        xb = self.X[idx]                                       # (..., B, d)
        r = np.einsum("...bd,...d->...b", xb, w) - self.y[idx]  # (..., B)
        return np.einsum("...bd,...b->...d", xb, r) / idx.shape[-1]

    def loss(self, w: np.ndarray) -> np.ndarray:
        """``J(w)``, shape ``w.shape[:-1]``."""
        r = w @ self.X.T - self.y
        return 0.5 * np.mean(r**2, axis=-1)

    def solution(self) -> np.ndarray:
        """Closed-form least squares ``w*`` (``np.linalg.lstsq``)."""
        return np.linalg.lstsq(self.X, self.y, rcond=None)[0]

    def hessian(self) -> np.ndarray:
        return self.X.T @ self.X / self.n

    def noise_covariance(self) -> np.ndarray:
        """Covariance of one sampled gradient at ``w*``: ``(1/n) sum r_i^2 x_i x_i^T``."""
        r = self.X @ self.solution() - self.y
        g = self.X * r[:, None]
        g = g - g.mean(axis=0)  # zero up to rounding: the normal equations
        return g.T @ g / self.n


def _batches(rng, n: int, batch_size: int, replicates: int | None, sampling: str,
             steps: int) -> Iterator[np.ndarray]:
    """Sample indices per step: i.i.d. uniform (``replace``, the setting of the theory) or
    consecutive slices of fresh permutations (``shuffle``: each epoch sees every sample once)."""
    lead = 1 if replicates is None else replicates
    if sampling == "replace":
        for _ in range(steps):
            idx = rng.integers(0, n, size=(lead, batch_size))
            yield idx[0] if replicates is None else idx
        return
    buf = np.empty((lead, 0), dtype=np.int64)
    base = np.broadcast_to(np.arange(n), (lead, n))
    for _ in range(steps):
        if buf.shape[1] < batch_size:
            buf = np.concatenate([buf, rng.permuted(base, axis=1)], axis=1)
        idx, buf = buf[:, :batch_size], buf[:, batch_size:]
        yield idx[0] if replicates is None else idx


def sgd(objective, w0, steps: int, schedule: Schedule, rng: np.random.Generator, *,
        mode: str = "sgd", batch_size: int | None = None, sampling: str = "replace",
        record=1) -> Trajectory:
    """SGD, mini-batch GD or batch GD on a finite-sum objective, as stochastic approximation.

    ``w_{k+1} = w_k - a_k (1/B) sum_{i in I_k} grad f(w_k, x_i)`` (Eq. 10-12): ``mode="sgd"``
    (``B = 1``), ``"minibatch"`` (``B = batch_size``), ``"full"`` (all ``n`` samples, no noise).

    Parameters
    ----------
    objective : MeanEstimation or LeastSquares
        Anything with ``n``, ``dim``, ``grad(w, idx)`` and ``loss(w)``.
    w0 : array_like, shape (d,) or (R, d)
        Start; with ``(R, d)`` the ``R`` replicates draw independent batches.
    steps : int
        Number of updates (>= 1).
    schedule : Schedule
    rng : numpy.random.Generator
    mode : {"sgd", "minibatch", "full"}
    batch_size : int, optional
        Needed for ``minibatch`` (1 <= B <= n); if given for the others it must be 1 / n.
    sampling : {"replace", "shuffle"}
        i.i.d. indices (the Robbins–Monro setting) or epochs without replacement (as in
        scikit-learn).
    record : int or array_like of int
        See :func:`robbins_monro`.

    Returns
    -------
    Trajectory with ``k`` (T,), ``w`` (T, *w0.shape), ``loss`` (T, *w0.shape[:-1]) and
    ``samples`` (T,).
    """
    steps = _check_steps(steps)
    schedule = _check_schedule(schedule)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    n = objective.n
    want = {"sgd": 1, "full": n}.get(mode, batch_size)
    if want is None:
        raise ValueError("mode='minibatch' needs batch_size")
    if batch_size is not None and batch_size != want:
        raise ValueError(f"mode={mode!r} uses batch_size={want}, got {batch_size}")
    if not 1 <= want <= n:
        raise ValueError(f"batch_size must be in [1, n={n}], got {want}")
    w = np.array(w0, dtype=float, copy=True)
    if w.ndim not in (1, 2) or w.shape[-1] != objective.dim:
        raise ValueError(f"w0 must have shape ({objective.dim},) or (R, {objective.dim}), "
                         f"got {w.shape}")
    replicates = w.shape[0] if w.ndim == 2 else None
    ks = _record_points(steps, record)
    alphas = schedule(np.arange(1, steps + 1))
    hist = np.empty((ks.size, *w.shape))
    losses = np.empty((ks.size, *w.shape[:-1]))
    slot = 0
    if ks[0] == 0:
        hist[0], losses[0], slot = w, objective.loss(w), 1
    batches = None if mode == "full" else _batches(rng, n, want, replicates, sampling, steps)
    for k in range(1, steps + 1):
        idx = None if batches is None else next(batches)
        w = w - alphas[k - 1] * objective.grad(w, idx)
        if slot < ks.size and ks[slot] == k:
            hist[slot], losses[slot], slot = w, objective.loss(w), slot + 1
    return Trajectory(k=ks, w=hist, loss=losses, samples=ks * want)


# ----------------------------------------------------------------------------- closed forms
def asymptotic_covariance(hessian, noise_cov, a: float, batch_size: int = 1) -> np.ndarray:
    """``Sigma`` with ``Cov(w_k) ~ Sigma / k`` for SGD with ``alpha_k = a/k`` near ``w*`` (Eq. 14).

    Solves ``(aH - I/2) Sigma + Sigma (aH - I/2) = a^2 S / B`` in the eigenbasis of ``H``.

    Parameters
    ----------
    hessian : array_like, shape (d, d)
        ``H``, symmetric positive definite.
    noise_cov : array_like, shape (d, d)
        ``S``, covariance of one per-sample gradient at ``w*``.
    a : float
        Step scale; needs ``a lambda_min(H) > 1/2`` (otherwise the error decays slower than
        ``1/sqrt(k)`` and no such ``Sigma`` exists).
    batch_size : int
    """
    h = np.asarray(hessian, dtype=float)
    s = np.asarray(noise_cov, dtype=float)
    if h.ndim != 2 or h.shape[0] != h.shape[1] or s.shape != h.shape:
        raise ValueError(f"hessian and noise_cov must be equal square matrices, got {h.shape}, "
                         f"{s.shape}")
    lam, u = np.linalg.eigh(h)
    if a * lam[0] <= 0.5:
        raise ValueError(f"a * lambda_min(H) = {a * lam[0]:.3g} must exceed 1/2")
    s_eig = u.T @ s @ u
    sigma = a**2 * s_eig / (batch_size * (a * (lam[:, None] + lam[None, :]) - 1.0))
    return u @ sigma @ u.T


def constant_step_variance(a: float, variance: float, batch_size: int = 1) -> float:
    """Stationary ``Var(w_k)`` of mean estimation with constant step ``a``: ``a s^2/(B(2-a))``
    (Eq. 8). From ``w_{k+1} = (1-a) w_k + a xbar_k``: ``V = (1-a)^2 V + a^2 s^2 / B``."""
    if not 0 < a < 2:
        raise ValueError(f"constant step a must lie in (0, 2) for a stationary variance, got {a}")
    return a * variance / (batch_size * (2.0 - a))


# ----------------------------------------------------------------------------- fast path
@njit(cache=True)
def _ls_sgd_kernel(X, y, w, order, alphas):  # pragma: no cover - compiled
    d = X.shape[1]
    for t in range(order.shape[0]):
        i = order[t]
        r = -y[i]
        for j in range(d):
            r += X[i, j] * w[j]
        step = alphas[t] * r
        for j in range(d):
            w[j] -= step * X[i, j]
    return w


def least_squares_sgd_numba(X, y, w0, order, alphas) -> np.ndarray:
    """Per-sample SGD on least squares in compiled code: ``w -= a_t (x_i^T w - y_i) x_i`` with
    ``i = order[t]`` (Eq. 10); the reference is :func:`sgd` with ``mode="sgd"``.

    Parameters
    ----------
    X : array_like, shape (n, d)
    y : array_like, shape (n,)
    w0 : array_like, shape (d,)
    order : array_like of int, shape (T,)
        Sample index of each step (e.g. a permutation per epoch).
    alphas : array_like, shape (T,)
        Step size of each step.

    Returns
    -------
    ndarray, shape (d,): ``w_T``.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    w = np.array(w0, dtype=np.float64, copy=True)
    order = np.ascontiguousarray(order, dtype=np.int64)
    alphas = np.ascontiguousarray(alphas, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],) or w.shape != (X.shape[1],):
        raise ValueError(f"shapes X {X.shape}, y {y.shape}, w0 {w.shape} do not match (n, d)")
    if order.shape != alphas.shape or order.ndim != 1:
        raise ValueError(f"order {order.shape} and alphas {alphas.shape} must be equal 1-D")
    if order.size and (order.min() < 0 or order.max() >= X.shape[0]):
        raise ValueError("order holds an index outside [0, n)")
    return _ls_sgd_kernel(X, y, w, order, alphas)
