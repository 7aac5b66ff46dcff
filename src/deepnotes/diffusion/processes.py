"""Noise processes ``x_t = α_t x_0 + σ_t ε`` and their conversion to the σ-space interface.

Every process here is a Gaussian perturbation of the data with a scale ``α_t`` and a noise level
``σ_t`` at the process's own time ``t``. The samplers only see the data-space variable
(Karras et al. 2022, §2 and Eq. 4: ``s(t) = α_t``)

    x_σ = x_t / α_t = x_0 + σ ε,      σ = σ_t / α_t,

so this module is the one place that knows each time convention:

=================  ==========================  ==============================  ==============
process            α_t                          σ_t                             paper
=================  ==========================  ==============================  ==============
``EDM``            1                            t                               Karras 2022
``VE``             1                            σ_min (σ_max/σ_min)^t           Song 2021
``VPLinear``       exp(-B(t)/2)                 sqrt(1 - α_t²)                  Ho 2020, Song 2021
``VPCosine``       f(t)/f(0)                    sqrt(1 - α_t²)                  Nichol 2021
``SubVP``          exp(-B(t)/2)                 1 - α_t²                        Song 2021
``RectifiedFlow``  1 - t                        t                               Liu 2022
=================  ==========================  ==============================  ==============

with ``B(t) = β_min t + (β_max - β_min) t² / 2`` and ``f(t) = cos((t + s)/(1 + s) · π/2)``.
The equivalent forward SDE ``dx = f(t) x dt + g(t) dw`` has ``f = α̇/α`` and
``g² = d(σ_t²)/dt - 2 f σ_t²`` (Song et al. 2021, Eq. 5; equivalently Karras et al.'s
``f = ṡ/s``, ``g = s sqrt(2 σ̇ σ)`` with ``s = α_t``).
"""

from __future__ import annotations

import math

import torch


def _as_tensor(t) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.to(torch.float64)
    return torch.as_tensor(t, dtype=torch.float64)


class NoiseProcess:
    """Base class: subclasses define ``alpha(t)``, ``sigma(t)`` and ``t_of_sigma(σ)``.

    All methods act elementwise on tensors of times ``t`` (any shape) and return the same shape.
    """

    t_min: float = 0.0
    t_max: float = 1.0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Signal scale ``α_t``."""
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The process's own noise level ``σ_t`` (not the σ-space σ)."""
        raise NotImplementedError

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sigma_of_t`: the time at which ``σ_t / α_t = sigma``."""
        raise NotImplementedError

    def sigma_of_t(self, t) -> torch.Tensor:
        """σ-space noise level ``σ_t / α_t`` (the noise-to-signal ratio)."""
        t = _as_tensor(t)
        return self.sigma(t) / self.alpha(t)

    def derivatives(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dα/dt, dσ_t/dt)`` by automatic differentiation (exact, elementwise)."""
        t = _as_tensor(t).detach()
        with torch.enable_grad():
            t = t.clone().requires_grad_(True)
            out = []
            for value in (self.alpha(t), self.sigma(t)):
                if value.requires_grad:
                    out.append(torch.autograd.grad(value.sum(), t)[0])
                else:  # a constant (α = 1 for VE/EDM)
                    out.append(torch.zeros_like(t))
        return out[0].detach(), out[1].detach()

    def sde(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift coefficient ``f(t)`` and squared diffusion ``g(t)²`` of the forward SDE."""
        t = _as_tensor(t)
        d_alpha, d_sigma = self.derivatives(t)
        alpha, sigma = self.alpha(t), self.sigma(t)
        f = d_alpha / alpha
        return f, 2 * sigma * d_sigma - 2 * f * sigma ** 2

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising ``x_t = α_t x_0 + σ_t ε`` (``t`` of shape (B,))."""
        t = _as_tensor(t).to(x0)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        return self.alpha(t).view(shape) * x0 + self.sigma(t).view(shape) * noise

    def to_sigma_space(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_σ, σ) = (x_t / α_t, σ_t / α_t)``; ``t`` of shape (B,)."""
        t = _as_tensor(t).to(x_t)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        return x_t / self.alpha(t).view(shape), self.sigma_of_t(t)

    def from_sigma_space(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, t)``: ``t = t_of_sigma(σ)``, ``x_t = α_t x_σ``; ``sigma`` of shape (B,)."""
        sigma = _as_tensor(sigma).to(x)
        t = self.t_of_sigma(sigma)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return self.alpha(t).view(shape) * x, t


class EDM(NoiseProcess):
    """Karras et al. (2022): ``α = 1``, ``σ_t = t`` — time is the noise level."""

    t_min, t_max = 0.0, math.inf

    def alpha(self, t):
        return torch.ones_like(_as_tensor(t))

    def sigma(self, t):
        return _as_tensor(t).clone()

    def t_of_sigma(self, sigma):
        return _as_tensor(sigma).clone()


class VE(NoiseProcess):
    """Variance exploding (Song et al. 2021, Eq. 9): geometric ``σ_t``, ``sigma_min`` at t = 0."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t):
        return torch.ones_like(_as_tensor(t))

    def sigma(self, t):
        return self.sigma_min * torch.exp(_as_tensor(t) * self._log_ratio)

    def t_of_sigma(self, sigma):
        return torch.log(_as_tensor(sigma) / self.sigma_min) / self._log_ratio


class _Beta:
    """Linear β(t) and its integral ``B(t)`` shared by VP and sub-VP."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def integral(self, t):
        t = _as_tensor(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2

    def t_of_integral(self, big_b):
        """Solve ``B(t) = big_b`` for ``t >= 0`` (a quadratic)."""
        d = self.beta_max - self.beta_min
        if d == 0:
            return big_b / self.beta_min
        return 2 * big_b / (self.beta_min + torch.sqrt(self.beta_min ** 2 + 2 * d * big_b))


class VPLinear(_Beta, NoiseProcess):
    """Variance preserving with linear β (DDPM's continuous limit; Song et al. 2021, Eq. 11)."""

    def alpha(self, t):
        return torch.exp(-0.5 * self.integral(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.integral(t)))

    def sigma_of_t(self, t):
        return torch.sqrt(torch.expm1(self.integral(_as_tensor(t))))

    def t_of_sigma(self, sigma):
        return self.t_of_integral(torch.log1p(_as_tensor(sigma) ** 2))


class SubVP(_Beta, NoiseProcess):
    """Sub-VP (Song et al. 2021, Eq. 12): VP's mean with variance ``(1 - α_t²)²``."""

    def alpha(self, t):
        return torch.exp(-0.5 * self.integral(t))

    def sigma(self, t):
        return -torch.expm1(-self.integral(t))

    def t_of_sigma(self, sigma):
        sigma = _as_tensor(sigma)
        # σ = (1 - α²)/α  <=>  α² + σα - 1 = 0; the positive root written without cancellation
        alpha = 2 / (sigma + torch.sqrt(sigma ** 2 + 4))
        return self.t_of_integral(-2 * torch.log(alpha))


class VPCosine(NoiseProcess):
    """Cosine schedule (Nichol & Dhariwal 2021, Eq. 17): ``α_t = sqrt(ᾱ_t) = f(t)/f(0)``."""

    def __init__(self, s: float = 0.008):
        if not s >= 0:
            raise ValueError(f"s must be >= 0, got {s}")
        self.s = float(s)
        self._f0 = math.cos(self.s / (1 + self.s) * math.pi / 2)

    def alpha(self, t):
        return torch.cos((_as_tensor(t) + self.s) / (1 + self.s) * math.pi / 2) / self._f0

    def sigma(self, t):
        return torch.sqrt(1 - self.alpha(t) ** 2)

    def t_of_sigma(self, sigma):
        alpha = torch.rsqrt(1 + _as_tensor(sigma) ** 2)
        return torch.acos(alpha * self._f0) * 2 * (1 + self.s) / math.pi - self.s


class RectifiedFlow(NoiseProcess):
    """Straight interpolation ``x_t = (1 - t) x_0 + t ε`` (Liu et al. 2022; Lipman et al. 2023).

    σ-space: ``σ = t / (1 - t)``, ``x_σ = x_t / (1 - t)``; ``t = 1`` (pure noise) is ``σ = ∞``.
    """

    def alpha(self, t):
        return 1 - _as_tensor(t)

    def sigma(self, t):
        return _as_tensor(t).clone()

    def t_of_sigma(self, sigma):
        sigma = _as_tensor(sigma)
        return sigma / (1 + sigma)


class DiscreteVP(NoiseProcess):
    """DDPM's discrete chain (Ho et al. 2020): a table ``ᾱ_0 … ᾱ_{T-1}`` at integer timesteps.

    ``σ_i = sqrt((1 − ᾱ_i)/ᾱ_i)``; between integers ``log σ`` is interpolated linearly, so
    ``t_of_sigma`` is exact at the table's σ (an integer timestep comes back as itself) and
    continuous in between. ``t`` ranges over ``[0, T − 1]``.
    """

    def __init__(self, alphas_cumprod):
        acp = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if acp.ndim != 1 or acp.numel() < 2:
            raise ValueError("alphas_cumprod must be 1-D with at least 2 entries")
        if bool((acp <= 0).any()) or bool((acp >= 1).any()) or bool((torch.diff(acp) >= 0).any()):
            raise ValueError("alphas_cumprod must lie in (0, 1) and strictly decrease")
        self.alphas_cumprod = acp
        self.log_sigmas = 0.5 * torch.log((1 - acp) / acp)
        self.t_min, self.t_max = 0.0, float(acp.numel() - 1)

    @classmethod
    def linear(cls, n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """Ho et al.'s linear β schedule: ``β_i`` from ``beta_start`` to ``beta_end``."""
        betas = torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0))

    def sigma_of_t(self, t):
        t = _as_tensor(t)
        table = self.log_sigmas.to(t)
        low = t.detach().floor().clamp(0, table.numel() - 2).long()
        frac = t - low.to(t)
        return torch.exp(table[low] + frac * (table[low + 1] - table[low]))

    def alpha(self, t):
        return torch.rsqrt(1 + self.sigma_of_t(t) ** 2)

    def sigma(self, t):
        s = self.sigma_of_t(t)
        return s * torch.rsqrt(1 + s ** 2)

    def t_of_sigma(self, sigma):
        log_s = torch.log(_as_tensor(sigma))
        table = self.log_sigmas.to(log_s)
        low = torch.searchsorted(table, log_s.detach().contiguous()) - 1
        low = low.clamp(0, table.numel() - 2)
        frac = (log_s - table[low]) / (table[low + 1] - table[low])
        return low.to(log_s) + frac
