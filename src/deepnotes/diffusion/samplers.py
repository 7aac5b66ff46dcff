"""Samplers with one signature: ``sample_*(D, x, sigmas, ..., callback=None) -> x_0``.

- ``D(x, sigma) -> x0_estimate``: a denoiser on the σ-space variable ``x_σ = x_0 + σ ε``
  (``sigma`` a tensor of shape (B,)); :func:`deepnotes.diffusion.parameterizations.as_denoiser`
  adapts ε/x0/v/velocity networks of any process (VP, VE, rectified flow, ...) to it.
- ``x``: the initial noise already scaled to ``sigmas[0]`` (``x = sigmas[0] · randn``).
- ``sigmas``: strictly decreasing, positive, ending in exactly 0
  (:mod:`deepnotes.diffusion.schedules`).
- ``callback(info)``: called after every step with ``i, x, sigma, sigma_next, denoised``.

The probability-flow ODE in σ-space is ``dx/dσ = (x − D(x; σ))/σ`` (Karras et al. 2022, Eq. 1
with ``σ(t) = t``) and the reverse SDE ``dx = −2σ ∇log p_σ(x) dσ + sqrt(2σ) dw̄`` (Song et al.
2021, Eq. 6), both with ``∇log p_σ(x) = (D(x; σ) − x)/σ²`` (Karras et al. Eq. 3; Tweedie). Every
stochastic sampler takes its last step to σ = 0 as the plain denoising step ``x ← D(x; σ_{N-1})``
(an Euler step to 0 is exactly that).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from deepnotes.diffusion.ode import dormand_prince
from deepnotes.diffusion.schedules import check_sigmas

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _prepare(x, sigmas) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a non-empty batch dimension, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("initial x contains NaN or inf")
    if not isinstance(sigmas, torch.Tensor):
        raise TypeError(f"sigmas must be a torch.Tensor, got {type(sigmas).__name__}")
    # validate in the sampler's dtype: a float64 grid may collapse to ties in float32
    return check_sigmas(sigmas.to(device=x.device, dtype=x.dtype))


def _denoise(model: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Call the model at one noise level and refuse NaN/inf or a wrong shape."""
    out = model(x, x.new_full((x.shape[0],), sigma))
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must return a tensor of shape {tuple(x.shape)}, got {got}")
    if not bool(torch.isfinite(out).all()):
        bad = "NaN" if bool(torch.isnan(out).any()) else "inf"
        raise ValueError(f"model returned {bad} at sigma={sigma:.6g}")
    return out


def _noise(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _report(callback, i, x, sigma, sigma_next, denoised):
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


@torch.no_grad()
def sample_euler(model: Denoiser, x, sigmas, callback=None) -> torch.Tensor:
    """Probability-flow ODE, Euler (Karras et al. 2022, Algorithm 1 without the Heun correction)."""
    sigmas = _prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _denoise(model, x, s)
        x = x + (s_next - s) * (x - denoised) / s
        _report(callback, i, x, s, s_next, denoised)
    return x


@torch.no_grad()
def sample_heun(model: Denoiser, x, sigmas, callback=None) -> torch.Tensor:
    """Probability-flow ODE, Heun's 2nd order method (Karras et al. 2022, Algorithm 1)."""
    return sample_edm(model, x, sigmas, s_churn=0.0, callback=callback)


@torch.no_grad()
def sample_edm(model: Denoiser, x, sigmas, s_churn: float = 0.0, s_tmin: float = 0.0,
               s_tmax: float = math.inf, s_noise: float = 1.0,
               generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """EDM stochastic Heun sampler with churn (Karras et al. 2022, Algorithm 2).

    At each σ_i in ``[s_tmin, s_tmax]`` noise is added to reach ``σ̂ = σ_i (1 + γ)``,
    ``γ = min(s_churn / N, sqrt(2) − 1)``, then a Heun step goes from σ̂ to σ_{i+1} (Euler on the
    last step to 0). ``s_churn = 0`` is the deterministic Algorithm 1.
    """
    sigmas = _prepare(x, sigmas)
    if s_churn < 0 or s_noise < 0:
        raise ValueError(f"s_churn and s_noise must be >= 0, got {s_churn}, {s_noise}")
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= s <= s_tmax else 0.0
        s_hat = s * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(s_hat ** 2 - s ** 2) * s_noise * _noise(x, generator)
        denoised = _denoise(model, x, s_hat)
        d = (x - denoised) / s_hat
        x_next = x + (s_next - s_hat) * d
        if s_next > 0:
            d_next = (x_next - _denoise(model, x_next, s_next)) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)
        x = x_next
        _report(callback, i, x, s, s_next, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x, sigmas, callback=None) -> torch.Tensor:
    """DPM-Solver++(2M), data-prediction multistep in λ = −log σ (Lu et al. 2022, Algorithm 2).

    First step and the last step to σ = 0 are first order (DDIM); the others extrapolate the
    denoised value linearly in λ with ratio ``r = h_{i-1}/h_i``.
    """
    sigmas = _prepare(x, sigmas)
    old = None
    h_last = None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _denoise(model, x, s)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s) - math.log(s_next)
            d = denoised
            if old is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (s_next / s) * x - math.expm1(-h) * d
            h_last = h
        old = denoised
        _report(callback, i, x, s, s_next, denoised)
    return x


@torch.no_grad()
def sample_ddim(model: Denoiser, x, sigmas, eta: float = 0.0,
                generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021, Eq. 12 with σ_t(η) of Eq. 16), written in σ-space.

    Dividing DDIM's update by ``α_{t-1}`` gives ``x' = x̂_0 + sqrt(σ'² − s²) ε̂ + s z`` with
    ``ε̂ = (x − x̂_0)/σ`` and ``s = η σ' sqrt(1 − σ'²/σ²)``; η = 0 is deterministic (and equals
    :func:`sample_euler`), η = 1 is DDPM's ancestral sampler.

    Each step goes from ``sigmas[i]`` to ``sigmas[i + 1]`` (DDIM's sub-sequence τ), the last to
    σ = 0. Difference from diffusers' ``DDIMScheduler``: its step from timestep ``t`` lands on
    ``t − T // N`` (T = 1000 training steps, N steps), not on the next timestep of its list, and
    the next step reads that sample as if it were at the listed timestep; its last step lands on
    ``t = 0`` (ᾱ_0, σ ≈ 0.01 for the linear β schedule) when ``t − T // N = 0``. The two agree
    (to float64 rounding) when the list is evenly spaced by ``T // N`` ("leading" spacing, or
    "trailing" with N dividing T). "Trailing" with N not dividing T differs: on 200 samples of
    the test mixture the largest difference was 3e-3 to 0.12 for N in {3, 7, 15, 60}, and 1.07
    for N = 30 (a sample near the border of two modes changed mode).
    ``tests/diffusion/test_peers.py`` writes diffusers' rule out and matches it exactly. We keep
    the consistent sub-sequence of the paper.
    """
    sigmas = _prepare(x, sigmas)
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _denoise(model, x, s)
        eps = (x - denoised) / s
        s_up = eta * s_next * math.sqrt(1 - (s_next / s) ** 2)
        x = denoised + math.sqrt(s_next ** 2 - s_up ** 2) * eps
        if s_up > 0:
            x = x + s_up * _noise(x, generator)
        _report(callback, i, x, s, s_next, denoised)
    return x


@torch.no_grad()
def sample_ddpm_ancestral(model: Denoiser, x, sigmas, generator: torch.Generator | None = None,
                          callback=None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) from the posterior q(x_σ' | x_σ, x̂_0).

    In σ-space the forward chain is ``x_σ = x_σ' + sqrt(σ² − σ'²) n``, so the posterior
    (Ho et al. Eq. 6–7) has mean ``x̂_0 + (σ'/σ)² (x − x̂_0)`` and variance ``σ'²(σ² − σ'²)/σ²``.
    """
    sigmas = _prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _denoise(model, x, s)
        ratio = (s_next / s) ** 2
        x = denoised + ratio * (x - denoised)
        if s_next > 0:
            x = x + s_next * math.sqrt(1 - ratio) * _noise(x, generator)
        _report(callback, i, x, s, s_next, denoised)
    return x


@torch.no_grad()
def sample_euler_maruyama(model: Denoiser, x, sigmas, generator: torch.Generator | None = None,
                          callback=None) -> torch.Tensor:
    """Reverse-time SDE, Euler–Maruyama (Song et al. 2021, Eq. 6) with ``g² = dσ²/dσ = 2σ``.

    Step σ → σ': ``x' = x + 2σ(σ − σ')∇log p_σ(x) + sqrt(2σ(σ − σ')) z``; the last step to 0 is
    the denoising step.
    """
    sigmas = _prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _denoise(model, x, s)
        if s_next == 0:
            x = denoised
        else:
            ds = s - s_next
            score = (denoised - x) / s ** 2
            x = x + 2 * s * ds * score + math.sqrt(2 * s * ds) * _noise(x, generator)
        _report(callback, i, x, s, s_next, denoised)
    return x


@torch.no_grad()
def sample_pc(model: Denoiser, x, sigmas, snr: float = 0.16, n_corrector: int = 1,
              generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Predictor–corrector (Song et al. 2021, Algorithms 2 and 4): Langevin + reverse diffusion.

    At each σ > 0: ``n_corrector`` Langevin steps ``x ← x + ε s + sqrt(2ε) z`` with
    ``ε = 2 (snr ‖z‖/‖s‖)²`` (``s = ∇log p_σ``; norms averaged over the batch as in the
    paper's code, since one example's ‖s‖ can be ~0 at a mode), then the reverse-diffusion predictor
    ``x ← x + (σ² − σ'²) s + sqrt(σ² − σ'²) z`` (the denoising step when σ' = 0).
    """
    sigmas = _prepare(x, sigmas)
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector must be an int >= 0, got {n_corrector!r}")
    dims = tuple(range(1, x.ndim))
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        for _ in range(n_corrector):
            score = (_denoise(model, x, s) - x) / s ** 2
            z = _noise(x, generator)
            z_norm = z.square().sum(dims).sqrt().mean()
            s_norm = score.square().sum(dims).sqrt().mean().clamp_min(1e-30)
            step = 2 * (snr * z_norm / s_norm) ** 2
            x = x + step * score + (2 * step).sqrt() * z
        denoised = _denoise(model, x, s)
        if s_next == 0:
            x = denoised
        else:
            var = s ** 2 - s_next ** 2
            x = x + var * (denoised - x) / s ** 2 + math.sqrt(var) * _noise(x, generator)
        _report(callback, i, x, s, s_next, denoised)
    return x


@torch.no_grad()
def sample_rk45(model: Denoiser, x, sigmas, rtol: float = 1e-5, atol: float = 1e-5,
                callback=None, return_info: bool = False):
    """Probability-flow ODE with adaptive Dormand–Prince RK5(4) (Song et al. 2021, §4.3; RK45).

    Integrates ``dx/dσ = (x − D(x; σ))/σ`` from ``sigmas[0]`` to the last positive σ with our own
    :func:`deepnotes.diffusion.ode.dormand_prince`, then takes the denoising step to 0; the
    intermediate entries of ``sigmas`` are ignored. With ``return_info`` also returns
    ``{"nfe": ..., "n_accepted": ..., "n_rejected": ...}`` (nfe includes the final step).
    """
    sigmas = _prepare(x, sigmas)
    s_first, s_last = float(sigmas[0]), float(sigmas[-2])

    def f(s: float, y: torch.Tensor) -> torch.Tensor:
        return (y - _denoise(model, y, s)) / s

    x, stats = dormand_prince(f, x, s_first, s_last, rtol=rtol, atol=atol)
    denoised = _denoise(model, x, s_last)
    _report(callback, len(sigmas) - 2, denoised, s_last, 0.0, denoised)
    if return_info:
        return denoised, {"nfe": stats.nfe + 1, "n_accepted": stats.n_accepted,
                          "n_rejected": stats.n_rejected}
    return denoised


def _check_ts(ts) -> torch.Tensor:
    if not isinstance(ts, torch.Tensor) or ts.ndim != 1 or ts.numel() < 2:
        raise ValueError("ts must be a 1-D tensor with at least 2 entries")
    if not bool(torch.isfinite(ts).all()) or float(ts[0]) > 1 or float(ts[-1]) != 0:
        raise ValueError(f"ts must start at <= 1 and end in exactly 0, got "
                         f"{float(ts[0]):.4g}..{float(ts[-1]):.4g}")
    if bool((ts[1:] >= ts[:-1]).any()):
        raise ValueError("ts must be strictly decreasing")
    return ts


@torch.no_grad()
def sample_rf_euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, ts,
                    callback=None) -> torch.Tensor:
    """Rectified-flow Euler ``x ← x + (t' − t) v(x, t)`` down to t = 0 (Liu et al. 2022, Alg. 1).

    ``velocity(x_t, t)`` with ``t`` of shape (B,) predicts ``ε − x_0`` for
    ``x_t = (1 − t) x_0 + t ε``; ``x`` is ``x_{ts[0]}`` (pure noise when ``ts[0] = 1``). This
    is :func:`sample_euler` in the σ-space of
    :class:`~deepnotes.diffusion.processes.RectifiedFlow` (``σ = t/(1 − t)``, tested), kept in
    ``t`` only because ``t = 1`` is ``σ = ∞``; one Euler step from ``t = 1`` is one-step generation.
    The callback's ``sigma``/``sigma_next`` hold ``t``/``t'`` and ``denoised`` is None.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    ts = _check_ts(ts).to(device=x.device, dtype=x.dtype)
    for i in range(len(ts) - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        v = velocity(x, x.new_full((x.shape[0],), t))
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            raise ValueError(f"velocity must return a tensor of shape {tuple(x.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"model returned NaN or inf at t={t:.6g}")
        x = x + (t_next - t) * v
        _report(callback, i, x, t, t_next, None)
    return x
