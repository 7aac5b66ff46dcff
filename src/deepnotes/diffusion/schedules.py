"""Noise-level schedules in σ-space: decreasing ``sigmas`` tensors ending in 0.

Every sampler in :mod:`deepnotes.diffusion.samplers` walks a grid ``σ_0 > σ_1 > … > σ_{N-1} > 0``
followed by a final 0 (``N`` steps, ``N + 1`` entries). Here ``σ`` is the noise-to-signal ratio
of the data-space variable ``x_σ = x_0 + σ ε`` (Karras et al. 2022, §2), so grids of processes
with another time convention (VP, sub-VP, rectified flow) are produced by mapping their time grid
through :meth:`deepnotes.diffusion.processes.NoiseProcess.sigma_of_t` — the one place that knows
those conventions.
"""

from __future__ import annotations

import math

import torch

from deepnotes.diffusion.processes import NoiseProcess, RectifiedFlow, VPCosine, VPLinear


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of steps) must be a positive int, got {n!r}")
    return n


def _check_range(sigma_min, sigma_max) -> tuple[float, float]:
    sigma_min, sigma_max = float(sigma_min), float(sigma_max)
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max)):
        raise ValueError(f"sigma_min and sigma_max must be finite, got {sigma_min}, {sigma_max}")
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min} >= "
                         f"sigma_max={sigma_max}")
    return sigma_min, sigma_max


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """Append the terminal ``σ = 0``: shape (N,) -> (N + 1,)."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def check_sigmas(sigmas) -> torch.Tensor:
    """Validate a sampler grid: 1-D, finite, strictly decreasing, positive, ending in exactly 0.

    Returns the tensor unchanged; raises ``TypeError``/``ValueError`` naming the problem.
    """
    if not isinstance(sigmas, torch.Tensor):
        raise TypeError(f"sigmas must be a torch.Tensor, got {type(sigmas).__name__}")
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape "
                         f"{tuple(sigmas.shape)}")
    if not bool(torch.isfinite(sigmas).all()):
        raise ValueError("sigmas contains NaN or inf")
    if float(sigmas[-1]) != 0.0:
        raise ValueError(f"sigmas must end in 0 (the clean sample), got last entry "
                         f"{float(sigmas[-1]):.4g}")
    if bool((sigmas[:-1] <= 0).any()):
        raise ValueError("sigmas must be > 0 before the terminal 0")
    steps = sigmas[1:] - sigmas[:-1]
    if bool((steps >= 0).any()):
        i = int(torch.nonzero(steps >= 0)[0])
        raise ValueError(f"sigmas must be strictly decreasing; sigmas[{i}]={float(sigmas[i]):.4g}"
                         f" <= sigmas[{i + 1}]={float(sigmas[i + 1]):.4g}")
    return sigmas


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  dtype=torch.float64, device=None) -> torch.Tensor:
    """EDM grid (Karras et al. 2022, Eq. 5): ``n`` levels, ``sigma_max`` to ``sigma_min``, then 0.

    ``σ_i = (σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ``.

    Larger ``rho`` concentrates steps near ``sigma_min``; ``rho = 1`` is uniform in σ.
    Returns shape (n + 1,), ending in 0.
    """
    n = _check_n(n)
    sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    ramp = torch.linspace(0, 1, n, dtype=dtype, device=device) if n > 1 else \
        torch.zeros(1, dtype=dtype, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho)


def geometric_sigmas(n: int, sigma_min: float, sigma_max: float, dtype=torch.float64,
                     device=None) -> torch.Tensor:
    """VE grid (Song et al. 2021, NCSN): σ geometric from ``sigma_max`` to ``sigma_min``, then 0."""
    n = _check_n(n)
    sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
    if n == 1:
        return append_zero(torch.tensor([sigma_max], dtype=dtype, device=device))
    log = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=dtype, device=device)
    return append_zero(log.exp())


def process_sigmas(process: NoiseProcess, n: int, t_min: float, t_max: float,
                   dtype=torch.float64, device=None) -> torch.Tensor:
    """σ grid of ``process`` at ``n`` times uniform from ``t_max`` down to ``t_min``, then 0.

    This is the DDPM/score-SDE discretisation (uniform in the process's own time).
    """
    n = _check_n(n)
    if not 0 <= t_min < t_max:
        raise ValueError(f"need 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max}")
    ts = torch.linspace(t_max, t_min, n, dtype=dtype, device=device) if n > 1 else \
        torch.tensor([t_max], dtype=dtype, device=device)
    sigmas = process.sigma_of_t(ts)
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas <= 0).any()):
        raise ValueError(f"{type(process).__name__}: times [{t_min}, {t_max}] map to a σ that "
                         "is 0 or infinite; choose t_min > 0 (and t_max < 1 for rectified flow)")
    return check_sigmas(append_zero(sigmas))


def vp_sigmas(n: int, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3,
              **kw) -> torch.Tensor:
    """Linear-β VP grid (Ho et al. 2020; Song et al. 2021, Eq. 11) uniform in ``t ∈ [t_min, 1]``."""
    return process_sigmas(VPLinear(beta_min, beta_max), n, t_min, 1.0, **kw)


def cosine_sigmas(n: int, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.999,
                  **kw) -> torch.Tensor:
    """Cosine VP grid (Nichol & Dhariwal 2021) uniform in ``t``; ``t_max < 1`` keeps σ finite."""
    return process_sigmas(VPCosine(s), n, t_min, t_max, **kw)


def rf_sigmas(n: int, t_min: float = 1e-3, t_max: float = 0.999, **kw) -> torch.Tensor:
    """Rectified-flow grid uniform in ``t`` (Liu et al. 2022), mapped by ``σ = t / (1 - t)``."""
    return process_sigmas(RectifiedFlow(), n, t_min, t_max, **kw)
