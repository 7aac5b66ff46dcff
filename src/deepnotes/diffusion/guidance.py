"""Guidance: steer a denoiser towards a label with a classifier or with a conditional model.

Both act on the denoiser, so every sampler can use them unchanged. In σ-space
``∇ log p_σ(x | y) = ∇ log p_σ(x) + ∇ log p_σ(y | x)`` and Tweedie's formula
``D = x + σ² ∇ log p_σ`` turn a scaled classifier gradient into a denoiser offset.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_guidance(model: Denoiser, log_prob_y: Callable[[torch.Tensor, torch.Tensor],
                                                              torch.Tensor],
                        scale: float = 1.0) -> Denoiser:
    """``D_s(x; σ) = D(x; σ) + s σ² ∇_x log p_σ(y | x)`` (Dhariwal & Nichol 2021, Algorithm 2).

    ``log_prob_y(x, sigma) -> (B,)`` is a noise-conditional classifier's log-probability of the
    wanted labels (bind the labels in a closure). ``scale = 1`` samples the exact conditional
    ``p(x | y)`` when both the denoiser and the classifier are exact; ``scale > 1`` sharpens it
    to ``p(x) p(y | x)^s`` (up to the approximation that tempering commutes with noising).
    """

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(log_prob_y(xg, sigma).sum(), xg)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return model(x, sigma) + scale * sigma.to(x).view(shape) ** 2 * grad

    return guided


def classifier_free_guidance(cond: Denoiser, uncond: Denoiser, w: float) -> Denoiser:
    """``(1 + w) D(x; σ, y) − w D(x; σ, ∅)`` (Ho & Salimans 2022, Eq. 6; w = 0 is conditional).

    With exact models this equals :func:`classifier_guidance` of the unconditional denoiser with
    the implicit classifier ``p(y | x) ∝ p(x | y)/p(x)`` at scale ``1 + w``.
    """

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (1 + w) * cond(x, sigma) - w * uncond(x, sigma)

    return guided


def drop_labels(labels: torch.Tensor, p: float, null_label: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time label dropout for classifier-free guidance: each label becomes
    ``null_label`` with probability ``p`` (Ho & Salimans 2022, Algorithm 1)."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_label), labels)
