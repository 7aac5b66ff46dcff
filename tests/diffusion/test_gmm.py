"""The exact reference itself: Gaussian-mixture marginals, score, denoiser and velocity.

Each closed form is checked against a computation that does not share its algebra: scipy's
multivariate normal densities, autograd of the log-density, Tweedie's formula, the orthogonality
property of a conditional mean (Monte Carlo), and the σ-space adapter for rectified flow.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from deepnotes.diffusion.gmm import GaussianMixture
from deepnotes.diffusion.parameterizations import velocity_from_denoiser


def _points(seed, n=200, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 2, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.7, 12.0])
def test_log_prob_matches_scipy_mixture(gmm, sigma):
    x = _points(0)
    terms = [math.log(float(w)) + multivariate_normal(m.numpy(), c.numpy() + sigma ** 2 * np.eye(2))
             .logpdf(x.numpy()) for w, m, c in zip(gmm.weights, gmm.means, gmm.covs, strict=True)]
    np.testing.assert_allclose(gmm.log_prob(x, sigma).numpy(), logsumexp(terms, axis=0),
                               rtol=1e-12)


def test_log_prob_with_per_example_sigma(gmm):
    x = _points(1, n=6)
    sigmas = torch.tensor([0.0, 0.1, 0.5, 1.0, 4.0, 30.0], dtype=torch.float64)
    each = torch.stack([gmm.log_prob(x[i:i + 1], float(s))[0] for i, s in enumerate(sigmas)])
    torch.testing.assert_close(gmm.log_prob(x, sigmas), each, rtol=1e-12, atol=1e-12)
    den_each = torch.cat([gmm.denoiser(x[i:i + 1], float(s)) for i, s in enumerate(sigmas)])
    torch.testing.assert_close(gmm.denoiser(x, sigmas), den_each, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sigma=st.floats(0.01, 50.0), seed=st.integers(0, 10_000))
def test_score_is_gradient_of_log_prob_and_tweedie_gives_denoiser(gmm, sigma, seed):
    x = _points(seed, n=16).requires_grad_(True)
    grad, = torch.autograd.grad(gmm.log_prob(x, sigma).sum(), x)
    score = gmm.score(x.detach(), sigma)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-12)
    # Tweedie: E[x0 | x] = x + σ² ∇log p_σ(x), against the per-component posterior-mean formula
    torch.testing.assert_close(gmm.denoiser(x.detach(), sigma), x.detach() + sigma ** 2 * score,
                               rtol=1e-9, atol=1e-9)


def test_denoiser_is_the_conditional_mean_by_orthogonality(gmm):
    """E[(x0 − D(x)) · g(x)] = 0 for any g: Monte Carlo over 200k pairs, g ∈ {1, x, x²}."""
    gen = torch.Generator().manual_seed(5)
    n, sigma = 200_000, 0.8
    x0 = gmm.sample(n, gen)
    x = x0 + sigma * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    resid = x0 - gmm.denoiser(x, sigma)
    for g in (torch.ones_like(x[:, :1]), x[:, :1], x[:, 1:], x[:, :1] ** 2):
        prod = resid * g
        z = prod.mean(0).abs() / (prod.std(0) / math.sqrt(n))
        assert float(z.max()) < 5.0  # 5 standard errors: see conftest.Z_BOUND
    # and a wrong denoiser (the one for σ = 0.6) fails the same test
    wrong = (x0 - gmm.denoiser(x, 0.6)) * x[:, :1]
    assert float((wrong.mean(0).abs() / (wrong.std(0) / math.sqrt(n))).max()) > 20


def test_velocity_matches_sigma_space_adapter_and_endpoints(gmm):
    x = _points(2, n=50)
    for t in (0.1, 0.5, 0.9):
        tt = torch.full((50,), t, dtype=torch.float64)
        via_sigma = velocity_from_denoiser(gmm.as_denoiser())(x, tt)
        torch.testing.assert_close(gmm.velocity(x, t), via_sigma, rtol=1e-9, atol=1e-9)
    # t = 1: x_1 = ε, so E[ε − x0 | x_1] = x − E[x0]
    torch.testing.assert_close(gmm.velocity(x, 1.0), x - gmm.mean(), rtol=1e-12, atol=1e-12)
    # t = 0: x_0 is observed, E[ε | x0] = 0, so v = −x0
    torch.testing.assert_close(gmm.velocity(x, 0.0), -x, rtol=1e-12, atol=1e-12)


def test_moments_and_sampling(gmm, matches_gmm):
    gen = torch.Generator().manual_seed(3)
    x = gmm.sample(50_000, gen)
    matches_gmm(x, gmm, who="exact draws")
    # mixture moments vs the empirical ones (5 standard errors)
    assert float((x.mean(0) - gmm.mean()).abs().max()) < 5 * math.sqrt(
        float(gmm.covariance().diagonal().max()) / 50_000)
    big = GaussianMixture([1.0], [[0.0, 0.0]], [[[2.0, 0.0], [0.0, 2.0]]])
    torch.testing.assert_close(big.covariance(), 2.0 * torch.eye(2, dtype=torch.float64))


def test_invalid_mixtures_are_rejected():
    eye = [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture([0.5, 0.6], [[0, 0], [1, 1]], [eye, eye])
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1.0], [[0, 0]], [[[1.0, 0.0], [0.0, -1.0]]])
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture([1.0], [[0, 0]], [[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="inconsistent"):
        GaussianMixture([1.0], [[0, 0]], [[[1.0]]])
    with pytest.raises(ValueError, match="shape"):
        GaussianMixture([1.0], [[0, 0]], [eye]).log_prob(torch.zeros(3, 3))
