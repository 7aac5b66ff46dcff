"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, §4.3 and App. D.2).

Along a solution of ``dx/dσ = f(x, σ) = (x − D(x; σ))/σ`` the instantaneous change of variables
(Chen et al. 2018, Thm. 1) gives ``d log p_σ(x(σ))/dσ = −∇·f``, hence

    log p_{σ_min}(x) = log p_{σ_max}(x(σ_max)) + ∫_{σ_min}^{σ_max} ∇·f(x(σ), σ) dσ,

integrated upwards from the data with :func:`deepnotes.diffusion.ode.dormand_prince`. The
divergence is exact (one backward pass per dimension; fine in 2-D) or Hutchinson's estimate
``E[zᵀ (∂f/∂x) z]`` with one Rademacher ``z`` per example held fixed along the path
(Grathwohl et al. 2019, FFJORD).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from deepnotes.diffusion.ode import dormand_prince


def gaussian_prior_log_prob(sigma_max: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``log N(x; 0, σ_max² I)`` per example: the usual stand-in for ``p_{σ_max}``."""

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        d = x[0].numel()
        return (-0.5 * (x.flatten(1) ** 2).sum(1) / sigma_max ** 2
                - d * math.log(sigma_max) - 0.5 * d * math.log(2 * math.pi))

    return log_prob


def divergence(f_val: torch.Tensor, x: torch.Tensor, probe: torch.Tensor | None = None,
               create_graph: bool = False) -> torch.Tensor:
    """``∇·f = tr(∂f/∂x)`` per example, shape (B,), for ``f_val = f(x)`` computed from ``x``.

    ``probe=None`` gives the exact trace (one vector-Jacobian product per dimension);
    a probe ``z`` of ``x``'s shape gives Hutchinson's ``zᵀ (∂f/∂x) z`` (unbiased when
    ``E[z zᵀ] = I``). ``create_graph=True`` keeps the result differentiable, for training
    through the trace (FFJORD); ``x`` must require grad either way.
    """
    if probe is None:
        flat_f = f_val.flatten(1)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for j in range(flat_f.shape[1]):
            g, = torch.autograd.grad(flat_f[:, j].sum(), x, retain_graph=True,
                                     create_graph=create_graph)
            div = div + g.flatten(1)[:, j]
        return div
    g, = torch.autograd.grad((f_val * probe).sum(), x, create_graph=create_graph)
    return (g * probe).flatten(1).sum(1)


def augmented_dynamics(velocity: Callable[[torch.Tensor, float], torch.Tensor],
                       shape: tuple[int, ...], probe: torch.Tensor | None = None,
                       create_graph: bool = False
                       ) -> Callable[[float, torch.Tensor], torch.Tensor]:
    """The ODE of ``(x, ℓ)`` with ``dx/dt = v(x, t)`` and ``dℓ/dt = ∇·v(x, t)``.

    The state is flat, ``(B, D + 1)``: the points of shape ``shape = (B, ...)`` flattened, then
    the accumulated divergence; integrating ``ℓ`` from 0 gives ``log|det ∂x(t1)/∂x(t0)|``
    (Chen et al. 2018, Thm. 1). ``velocity(y, t)`` gets ``y`` of ``shape`` and ``t`` a float.
    With ``create_graph=False`` the returned derivative is detached (evaluation with an
    adaptive solver); with ``True`` it stays differentiable, so a fixed-step solver can be
    back-propagated through (training).
    """
    flat_dim = math.prod(shape[1:])

    def f(t: float, state: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y = state[:, :flat_dim].reshape(shape)
            if not create_graph or not y.requires_grad:
                y = y.detach().requires_grad_(True)
            v = velocity(y, t)
            div = divergence(v, y, probe, create_graph=create_graph)
        out = torch.cat([v.flatten(1), div[:, None]], dim=1)
        return out if create_graph else out.detach()

    return f


def ode_log_likelihood(model, x: torch.Tensor, sigma_min: float, sigma_max: float,
                       prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       hutchinson: bool = False, generator: torch.Generator | None = None,
                       rtol: float = 1e-5, atol: float = 1e-5, return_info: bool = False):
    """``log p_{σ_min}(x)`` in nats per example, shape (B,), for the denoiser ``model(x, sigma)``.

    Parameters
    ----------
    x : (B, ...) points at noise level ``sigma_min`` (data, for small ``sigma_min``).
    prior_log_prob : ``log p_{σ_max}`` per example; defaults to :func:`gaussian_prior_log_prob`.
    hutchinson : use the stochastic trace (unbiased; for high dimension) instead of the exact one.
    return_info : also return ``{"nfe", "z": x(σ_max)}``.
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if prior_log_prob is None:
        prior_log_prob = gaussian_prior_log_prob(sigma_max)
    b = x.shape[0]
    flat_dim = x[0].numel()
    probe = None
    if hutchinson:
        probe = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x) * 2 - 1

    def velocity(y: torch.Tensor, s: float) -> torch.Tensor:
        denoised = model(y, y.new_full((b,), s))
        if not bool(torch.isfinite(denoised).all()):
            raise ValueError(f"model returned NaN or inf at sigma={s:.6g}")
        return (y - denoised) / s

    f = augmented_dynamics(velocity, tuple(x.shape), probe)
    state0 = torch.cat([x.detach().flatten(1), x.new_zeros(b, 1)], dim=1)
    state, stats = dormand_prince(f, state0, sigma_min, sigma_max, rtol=rtol, atol=atol)
    z = state[:, :flat_dim].reshape(x.shape)
    log_p = prior_log_prob(z) + state[:, flat_dim]
    if return_info:
        return log_p, {"nfe": stats.nfe, "z": z}
    return log_p


def bits_per_dim(log_likelihood: torch.Tensor, dim: int, log_scale: float = 0.0) -> torch.Tensor:
    """``−(log p + log_scale) / (dim · ln 2)``; ``log_scale`` is the log-Jacobian of any rescaling
    of the data (e.g. ``dim · ln(2/256)`` for 8-bit pixels mapped to [−1, 1])."""
    return -(log_likelihood + log_scale) / (dim * math.log(2))
