"""Small backbones for the 2-D experiments and tests: an MLP with a noise-level embedding.

The backbone has the EDM signature ``F(x_in, c_noise) -> (B, d)`` and is meant to be wrapped by
:class:`deepnotes.diffusion.parameterizations.EDMPrecond` (or used with any prediction type
through :func:`deepnotes.diffusion.parameterizations.as_denoiser`, passing the time as
``c_noise``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierEmbedding(nn.Module):
    """``[sin(2π f_k c), cos(2π f_k c)]`` with fixed frequencies ``f_k`` geometric in [1/16, 16]
    (Tancik et al. 2020; the sinusoidal time embedding of Ho et al. 2020 on a log scale)."""

    def __init__(self, n_freqs: int = 16):
        super().__init__()
        if n_freqs < 1:
            raise ValueError(f"n_freqs must be >= 1, got {n_freqs}")
        self.register_buffer("freqs", torch.logspace(-4, 4, n_freqs, base=2.0))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * c[:, None] * self.freqs.to(c)          # (B, n_freqs)
        return torch.cat([angle.sin(), angle.cos()], dim=1)            # (B, 2 n_freqs)


class MLPBackbone(nn.Module):
    """``F(x, c)``: concat(x, embed(c)) -> ``depth`` SiLU layers of width ``hidden`` -> ``dim``.

    The last layer starts at zero so that, inside ``EDMPrecond``, the untrained denoiser is the
    skip path ``c_skip x`` (the best linear guess for unit-variance data).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, n_freqs: int = 16):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"dim, hidden and depth must be >= 1, got {dim}, {hidden}, {depth}")
        self.embed = FourierEmbedding(n_freqs)
        layers: list[nn.Module] = []
        width = dim + 2 * n_freqs
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, self.embed(c_noise.to(x).reshape(-1))], dim=1)  # (B, dim + 2 n_freqs)
        return self.out(self.body(h))                                   # (B, dim)
