"""Sample-quality distances for low-dimensional experiments and tests."""

from __future__ import annotations

import torch


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Sliced 2-Wasserstein distance ``sqrt(E_θ W_2²(θᵀx, θᵀy))`` (Bonneel et al. 2015).

    ``x`` and ``y``: (n, d) with the same ``n`` (the 1-D optimal coupling then pairs sorted
    projections); ``θ`` uniform on the unit sphere, ``n_projections`` Monte Carlo directions.
    Returns a scalar tensor, in the data's units.
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both have shape (n, d), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=x.dtype,
                        device=x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px = torch.sort(x @ theta, dim=0).values                            # (n, L)
    py = torch.sort(y.to(x) @ theta, dim=0).values
    return ((px - py) ** 2).mean().sqrt()
