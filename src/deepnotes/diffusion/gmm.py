"""Gaussian-mixture data: exact noised marginals, denoiser, score and velocity at any noise level.

If ``x_0 ~ Σ_k w_k N(μ_k, Σ_k)`` and ``x = a x_0 + b ε`` with ``ε ~ N(0, I)`` independent, then
``x`` is again a mixture, with components ``N(a μ_k, C_k)``, ``C_k = a² Σ_k + b² I``, and per
component the pair ``(x_0, x)`` is jointly Gaussian, so

    E[x_0 | x, k] = μ_k + a Σ_k C_k⁻¹ (x − a μ_k),      ∇ log p(x) = −Σ_k r_k(x) C_k⁻¹ (x − a μ_k),

with responsibilities ``r_k(x) ∝ w_k N(x; a μ_k, C_k)``. ``(a, b) = (1, σ)`` is the σ-space
marginal every sampler walks; ``(a, b) = (1 − t, t)`` is rectified flow. These closed forms are
the reference the sampler and likelihood tests compare against (no network, no training).
All computation is in the mixture's dtype (float64 by default).
"""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2 * math.pi)


class GaussianMixture:
    """A K-component Gaussian mixture in ``d`` dimensions.

    Parameters
    ----------
    weights : (K,) positive, summing to 1.
    means : (K, d).
    covs : (K, d, d) symmetric positive definite.
    """

    def __init__(self, weights, means, covs, dtype=torch.float64):
        w = torch.as_tensor(weights, dtype=dtype)
        mu = torch.as_tensor(means, dtype=dtype)
        cov = torch.as_tensor(covs, dtype=dtype)
        if w.ndim != 1 or mu.ndim != 2 or cov.ndim != 3:
            raise ValueError("expected weights (K,), means (K, d), covs (K, d, d); got shapes "
                             f"{tuple(w.shape)}, {tuple(mu.shape)}, {tuple(cov.shape)}")
        k, d = mu.shape
        if w.shape[0] != k or cov.shape != (k, d, d):
            raise ValueError(f"inconsistent shapes: weights {tuple(w.shape)}, means "
                             f"{tuple(mu.shape)}, covs {tuple(cov.shape)}")
        if bool((w <= 0).any()) or abs(float(w.sum()) - 1) > 1e-9:
            raise ValueError(f"weights must be positive and sum to 1, got {w.tolist()}")
        if not torch.allclose(cov, cov.transpose(-1, -2)):
            raise ValueError("covs must be symmetric")
        if bool((torch.linalg.eigvalsh(cov) <= 0).any()):
            raise ValueError("covs must be positive definite")
        self.weights, self.means, self.covs = w, mu, cov
        self.dim = d
        self._chol0 = torch.linalg.cholesky(cov)

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    def mean(self) -> torch.Tensor:
        """Mixture mean, shape (d,)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Mixture covariance, shape (d, d)."""
        m = self.mean()
        centred = self.means - m
        return (self.weights[:, None, None]
                * (self.covs + centred[:, :, None] * centred[:, None, :])).sum(0)

    def component(self, k: int) -> GaussianMixture:
        """Component ``k`` alone: the class-conditional data distribution ``p(x_0 | y = k)``."""
        if not 0 <= k < self.n_components:
            raise ValueError(f"k must be in [0, {self.n_components}), got {k}")
        return GaussianMixture([1.0], self.means[k:k + 1], self.covs[k:k + 1],
                               dtype=self.weights.dtype)

    def class_log_prob(self, x, sigma, k: int) -> torch.Tensor:
        """Exact noise-conditional classifier ``log p_σ(y = k | x) = log r_k(x)``, shape (n,)."""
        return self._terms(x, 1.0, sigma)[4][:, k]

    def sample(self, n: int, generator: torch.Generator | None = None,
               return_labels: bool = False):
        """``n`` draws of ``x_0``, shape (n, d) (and component labels (n,) if asked)."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.weights.dtype)
        x = self.means[labels] + (self._chol0[labels] @ z[:, :, None])[..., 0]
        return (x, labels) if return_labels else x

    # --- the joint Gaussian algebra, shared by every exact quantity below -------------------
    def _terms(self, x, a, b):
        """``(r, C⁻¹(x − aμ), log p(x), a, log r)``; r and log r (n, K), C⁻¹(x − aμ) (n, K, d)."""
        x = torch.as_tensor(x, dtype=self.weights.dtype)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        n = x.shape[0]
        a = torch.as_tensor(a, dtype=x.dtype).expand(n)[:, None, None, None]  # (n,1,1,1)
        b = torch.as_tensor(b, dtype=x.dtype).expand(n)[:, None, None, None]
        eye = torch.eye(self.dim, dtype=x.dtype)
        if bool((a == a[0]).all()) and bool((b == b[0]).all()):
            # one noise level for the whole batch (every sampler step): K factorisations, not n·K
            a, b = a[:1, 0], b[:1, 0]                                      # (1, 1, 1)
            chol = torch.linalg.cholesky(a ** 2 * self.covs + b ** 2 * eye)  # (K, d, d)
        else:
            chol = torch.linalg.cholesky(a ** 2 * self.covs + b ** 2 * eye)  # (n, K, d, d)
        prec = torch.cholesky_inverse(chol)
        diff = x[:, None, :] - a[..., 0] * self.means                      # (n, K, d)
        pattern = "kij,nkj->nki" if prec.ndim == 3 else "nkij,nkj->nki"
        prec_diff = torch.einsum(pattern, prec, diff)                      # (n, K, d)
        maha = torch.einsum("nki,nki->nk", diff, prec_diff)                # (n, K)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_n = -0.5 * (maha + logdet + self.dim * _LOG_2PI)
        log_joint = torch.log(self.weights) + log_n
        log_p = torch.logsumexp(log_joint, dim=1)                          # (n,)
        log_resp = log_joint - log_p[:, None]                              # (n, K)
        return log_resp.exp(), prec_diff, log_p, a[..., 0], log_resp

    def log_prob(self, x, sigma=0.0) -> torch.Tensor:
        """Exact ``log p_σ(x)`` of ``x_σ = x_0 + σ ε``; ``sigma`` scalar or (n,). Shape (n,)."""
        return self._terms(x, 1.0, sigma)[2]

    def responsibilities(self, x, sigma=0.0) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x)`` at noise level σ, shape (n, K)."""
        return self._terms(x, 1.0, sigma)[0]

    def score(self, x, sigma) -> torch.Tensor:
        """``∇_x log p_σ(x)``, shape (n, d)."""
        resp, prec_diff = self._terms(x, 1.0, sigma)[:2]
        return -(resp[..., None] * prec_diff).sum(1)

    def posterior_mean(self, x, a, b) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[x_0 | x], E[ε | x])`` for ``x = a x_0 + b ε``; ``a``, ``b`` scalar or (n,)."""
        resp, prec_diff, _, a_, _ = self._terms(x, a, b)
        # Σ_k C_k⁻¹(x − aμ_k) per component, then averaged with the responsibilities
        cond_x0 = self.means + a_ * torch.einsum("kij,nkj->nki", self.covs, prec_diff)
        x0 = (resp[..., None] * cond_x0).sum(1)
        b_ = torch.as_tensor(b, dtype=x0.dtype).expand(x0.shape[0])[:, None]
        eps = b_ * (resp[..., None] * prec_diff).sum(1)
        return x0, eps

    def denoiser(self, x, sigma) -> torch.Tensor:
        """The ideal denoiser ``D(x; σ) = E[x_0 | x_σ = x]`` (Karras et al. 2022, Eq. 2 optimum)."""
        return self.posterior_mean(x, 1.0, sigma)[0]

    def velocity(self, x_t, t) -> torch.Tensor:
        """Rectified-flow velocity ``E[ε − x_0 | x_t]``, ``x_t = (1 − t) x_0 + t ε``, t ∈ [0, 1]."""
        t = torch.as_tensor(t, dtype=self.weights.dtype)
        x0, eps = self.posterior_mean(x_t, 1 - t, t)
        return eps - x0

    def as_denoiser(self, dtype=None):
        """``D(x, sigma)`` callable in the samplers' convention, returning ``x``'s dtype."""

        def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            out = self.denoiser(x.to(self.weights.dtype), sigma.to(self.weights.dtype))
            return out.to(dtype or x.dtype)

        return denoiser
