"""Exact quantities behind maximum-likelihood learning: entropy, cross-entropy, KL, on tables
and on grids, and the parameter counts of the Bayes-net view of a binary image model.

Equation numbers refer to the post ``generative-modeling-basics``:

- ``KL(p || q) = sum_x p(x) log p(x)/q(x) = H(p, q) - H(p)`` (Eqs. 1-3): the expected test
  negative log-likelihood ``H(p_data, p_theta)`` minus the data entropy is the KL, so maximum
  likelihood minimises ``KL(p_data || p_theta)``.
- Forward and reverse KL between densities on a uniform grid (Eqs. 5-6), checked against the
  closed-form Gaussian KL (Eq. 7).
- Moment matching as the forward-KL Gaussian fit (Eq. 8); the chain rule and its parameter
  counts for D binary variables (Eq. 9); the total correlation (Eq. 10).

All functions are numpy-only and work in nats; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, xlogy

_LOG_2PI = math.log(2.0 * math.pi)


def _check_distribution(p, name: str, atol: float = 1e-9) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of probabilities, got shape "
                         f"{p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name} must hold finite non-negative probabilities")
    if abs(p.sum() - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1 (within {atol}), sums to {p.sum()!r}")
    return p


def _pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = _check_distribution(p, "p"), _check_distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    return p, q


def entropy(p) -> float:
    """Shannon entropy ``H(p) = -sum_x p(x) log p(x)`` in nats (Eq. 2), with ``0 log 0 = 0``."""
    p = _check_distribution(p, "p")
    return float(-xlogy(p, p).sum())


def cross_entropy(p, q) -> float:
    """``H(p, q) = -sum_x p(x) log q(x)`` in nats (Eq. 1): the expected NLL of q on data from p.

    ``inf`` when q gives zero probability to an outcome p can produce.
    """
    p, q = _pair(p, q)
    with np.errstate(divide="ignore"):
        return float(-xlogy(p, q).sum()) if np.all(q[p > 0] > 0) else math.inf


def kl_divergence(p, q) -> float:
    """``KL(p || q) = sum_x p(x) log(p(x) / q(x))`` in nats (Eq. 3), computed directly."""
    p, q = _pair(p, q)
    support = p > 0
    if np.any(q[support] == 0):
        return math.inf
    return float((p[support] * (np.log(p[support]) - np.log(q[support]))).sum())


def enumerate_binary(dim: int) -> np.ndarray:
    """All ``2**dim`` binary vectors, shape (2**dim, dim), float64, lexicographic order.

    Row ``i`` is the binary expansion of ``i`` with the first pixel most significant.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 24:
        raise ValueError(f"dim must be an int in [1, 24] (2**dim rows), got {dim!r}")
    codes = np.arange(2**dim)[:, None]
    return ((codes >> np.arange(dim - 1, -1, -1)[None, :]) & 1).astype(np.float64)


def config_index(x) -> np.ndarray:
    """Row index in :func:`enumerate_binary` of each binary vector in ``x`` (n, D); shape (n,)."""
    x = _check_binary(x)
    weights = 2 ** np.arange(x.shape[1] - 1, -1, -1)
    return (x.astype(np.int64) * weights).sum(axis=1)


def empirical_distribution(x) -> np.ndarray:
    """Frequencies of each of the ``2**D`` configurations in binary data ``x`` (n, D)."""
    x = _check_binary(x)
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one row")
    counts = np.bincount(config_index(x), minlength=2 ** x.shape[1])
    return counts / counts.sum()


def _check_binary(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, D), got {x.shape}")
    if np.any(np.isnan(x)):
        raise ValueError("x contains NaN values")
    if not np.all((x == 0) | (x == 1)):
        raise ValueError("x must be binary (every entry 0 or 1)")
    return x


def fit_independent_bernoulli(x, alpha: float = 0.0) -> np.ndarray:
    """Maximum-likelihood independent-pixel model: ``p_d = (sum_n x_nd + alpha) / (N + 2 alpha)``.

    ``alpha = 0`` is the MLE; ``alpha > 0`` is add-alpha smoothing (the posterior mean under a
    Beta(alpha, alpha) prior; alpha = 1 is Laplace's rule), which keeps pixels never seen on in
    training from getting probability exactly 0. Returns shape (D,).
    """
    x = _check_binary(x)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    if x.shape[0] == 0 and alpha == 0:
        raise ValueError("x must hold at least one row when alpha = 0")
    return (x.sum(axis=0) + alpha) / (x.shape[0] + 2.0 * alpha)


def bernoulli_log_prob(x, probs) -> np.ndarray:
    """``sum_d log Bernoulli(x_d; probs_d)`` in nats for binary ``x`` (n, D); shape (n,).

    ``-inf`` where ``x_d = 1`` and ``probs_d = 0`` (or ``x_d = 0`` and ``probs_d = 1``).
    """
    x = _check_binary(x)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (x.shape[1],) or np.any((probs < 0) | (probs > 1)):
        raise ValueError(f"probs must have shape ({x.shape[1]},) with entries in [0, 1]")
    with np.errstate(divide="ignore"):
        return (xlogy(x, probs) + xlogy(1.0 - x, 1.0 - probs)).sum(axis=1)


def marginals(p_table, dim: int) -> np.ndarray:
    """``P(x_d = 1)`` for each pixel of a joint table over :func:`enumerate_binary` (dim)."""
    p = _check_distribution(p_table, "p_table")
    if p.size != 2**dim:
        raise ValueError(f"p_table must have 2**{dim} = {2**dim} entries, got {p.size}")
    return p @ enumerate_binary(dim)


def total_correlation(p_table, dim: int) -> float:
    """``KL(p || prod_d p_d) = sum_d H(p_d) - H(p)`` (Eq. 10): the KL floor of independent pixels.

    The best independent model (its marginals) is at this KL from ``p``; no independent model
    does better, whatever the amount of data.
    """
    m = marginals(p_table, dim)
    h_marg = -(xlogy(m, m) + xlogy(1 - m, 1 - m)).sum()
    return float(h_marg - entropy(p_table))


def parameter_counts(dim: int, nade_hidden: int | None = None) -> dict[str, int]:
    """Free parameters of models of ``dim`` binary pixels (Eq. 9), as exact Python ints.

    ``full_table``: one probability per configuration less one, ``2**D - 1``.
    ``bayes_net_tables``: the chain rule with a full conditional table per pixel,
    ``sum_k 2**(k-1) = 2**D - 1`` (the same model, written differently).
    ``fvsbn``: a logistic regression per pixel on its predecessors, ``sum_k k = D (D + 1) / 2``.
    ``independent``: one Bernoulli per pixel, ``D``.
    ``nade`` (if ``nade_hidden``): ``W, V`` of ``D H`` each, biases ``b`` (D) and ``c`` (H).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    counts = {"full_table": 2**dim - 1,
              "bayes_net_tables": sum(2 ** (k - 1) for k in range(1, dim + 1)),
              "fvsbn": dim * (dim + 1) // 2,
              "independent": dim}
    if nade_hidden is not None:
        counts["nade"] = 2 * dim * nade_hidden + dim + nade_hidden
    return counts


# ---- densities on a grid -------------------------------------------------------------------

def gaussian_log_pdf(x, mean: float, std: float) -> np.ndarray:
    """Log-density of N(mean, std^2) at ``x`` (any shape)."""
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    return -0.5 * z**2 - math.log(std) - 0.5 * _LOG_2PI


def mixture_log_pdf(x, weights: Sequence[float], means: Sequence[float],
                    stds: Sequence[float]) -> np.ndarray:
    """Log-density of a 1-D Gaussian mixture at ``x`` (any shape), by logsumexp (no underflow)."""
    w = _check_distribution(weights, "weights")
    if not len(w) == len(means) == len(stds):
        raise ValueError("weights, means and stds must have the same length")
    x = np.asarray(x, dtype=np.float64)
    comps = np.stack([math.log(wk) + gaussian_log_pdf(x, m, s)
                      for wk, m, s in zip(w, means, stds, strict=True) if wk > 0])
    return logsumexp(comps, axis=0)


def gaussian_kl(mean_p: float, std_p: float, mean_q: float, std_q: float) -> float:
    """Closed form ``KL(N(mean_p, std_p^2) || N(mean_q, std_q^2))`` in nats (Eq. 7)."""
    if not (std_p > 0 and std_q > 0):
        raise ValueError("standard deviations must be > 0")
    return float(math.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2)
                 - 0.5)


def _check_grid(grid, *logs) -> tuple[np.ndarray, float]:
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 3:
        raise ValueError(f"grid must be a 1-D array of at least 3 points, got shape {grid.shape}")
    steps = np.diff(grid)
    dx = float(steps.mean())
    if not dx > 0 or np.max(np.abs(steps - dx)) > 1e-9 * max(1.0, abs(dx)):
        raise ValueError("grid must be increasing and uniformly spaced")
    for lg in logs:
        if np.shape(lg) != grid.shape:
            raise ValueError(f"log-densities must have the grid's shape {grid.shape}, got "
                             f"{np.shape(lg)}")
        if np.any(np.isnan(lg)):
            raise ValueError("log-densities contain NaN values")
    return grid, dx


def kl_on_grid(grid, log_p, log_q) -> float:
    """``KL(p || q) ~ sum_i p(x_i) (log p(x_i) - log q(x_i)) dx`` on a uniform 1-D grid (Eq. 5).

    The Riemann sum of a smooth, fast-decaying integrand converges faster than any power of
    ``dx`` when the grid covers the mass, so it matches closed forms to ~1e-12.
    Points where ``p = 0`` contribute 0; ``inf`` if ``q = 0`` where ``p > 0``.
    """
    grid, dx = _check_grid(grid, log_p, log_q)
    log_p, log_q = np.asarray(log_p, np.float64), np.asarray(log_q, np.float64)
    p = np.exp(log_p)
    support = p > 0
    if np.any(np.isneginf(log_q[support])):
        return math.inf
    return float((p[support] * (log_p[support] - log_q[support])).sum() * dx)


def fit_gaussian_forward_kl(grid, log_p) -> tuple[float, float]:
    """Argmin of ``KL(p || N(m, s^2))`` over (m, s): moment matching (Eq. 8), on the grid.

    Returns ``(mean, std)`` of p computed by the same Riemann sums as :func:`kl_on_grid`.
    """
    grid, dx = _check_grid(grid, log_p)
    w = np.exp(np.asarray(log_p, np.float64)) * dx
    mass = w.sum()
    mean = float((w * grid).sum() / mass)
    std = float(math.sqrt((w * (grid - mean) ** 2).sum() / mass))
    return mean, std


def fit_gaussian_kl(grid, log_p, direction: str, init_means: Sequence[float],
                    init_std: float = 1.0) -> list[tuple[float, float, float]]:
    """Minimise ``KL(p || q)`` (``"forward"``) or ``KL(q || p)`` (``"reverse"``, Eq. 6) over
    Gaussians ``q = N(m, s^2)`` by Nelder-Mead on ``(m, log s)``, from each of ``init_means``.

    Returns one ``(mean, std, kl)`` per start, sorted by ``kl``: the reverse KL has a local
    minimum per mode, so the list shows every one found.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    grid, _ = _check_grid(grid, log_p)
    if len(init_means) == 0:
        raise ValueError("init_means must hold at least one starting mean")

    def objective(theta):
        log_q = gaussian_log_pdf(grid, theta[0], math.exp(theta[1]))
        return (kl_on_grid(grid, log_p, log_q) if direction == "forward"
                else kl_on_grid(grid, log_q, log_p))

    fits = []
    for m0 in init_means:
        res = minimize(objective, np.array([float(m0), math.log(init_std)]),
                       method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12,
                                                      "maxiter": 4000})
        fits.append((float(res.x[0]), float(math.exp(res.x[1])), float(res.fun)))
    return sorted(fits, key=lambda f: f[2])
