"""Sample-quality distances: sliced Wasserstein (low-dimensional data) and the Fréchet
distance between Gaussian feature moments (FID)."""

from __future__ import annotations

import numpy as np
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


def gaussian_moments(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of ``features`` (n, d), in float64."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features,
                   dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (n, d) with n >= 2, got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians (Dowson & Landau 1982).

    ``d² = ||μ_1 − μ_2||² + tr(Σ_1 + Σ_2 − 2 (Σ_1 Σ_2)^{1/2})``: the FID of Heusel et al. (2017)
    when the moments are those of a classifier's penultimate features. ``mu*`` (d,), ``cov*``
    (d, d) symmetric positive semi-definite. The matrix square root is
    :func:`scipy.linalg.sqrtm`; its imaginary round-off (present when ``Σ_1 Σ_2`` is singular)
    is dropped, and a tiny ridge is added first if the product has no finite root.
    """
    from scipy import linalg

    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    cov1, cov2 = (np.atleast_2d(np.asarray(c, np.float64)) for c in (cov1, cov2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"shapes must be (d,), (d, d), (d,), (d, d); got {mu1.shape}, "
                         f"{cov1.shape}, {mu2.shape}, {cov2.shape}")
    for a in (mu1, mu2, cov1, cov2):
        if not np.isfinite(a).all():
            raise ValueError("moments contain NaN or inf")
    root = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(root).all():
        # a singular product can defeat the Schur-based root: regularise, as FID code does
        eps = 1e-6 * np.eye(d)
        root = linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    root = np.real(root)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root))
