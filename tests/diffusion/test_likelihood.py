"""Probability-flow ODE log-likelihood against the exact Gaussian-mixture log-density."""

from __future__ import annotations

import math

import pytest
import torch

from deepnotes.diffusion.gmm import GaussianMixture
from deepnotes.diffusion.likelihood import (
    bits_per_dim,
    gaussian_prior_log_prob,
    ode_log_likelihood,
)

SIGMA_MIN, SIGMA_MAX = 0.01, 20.0


def _data(gmm, n, seed):
    gen = torch.Generator().manual_seed(seed)
    return gmm.sample(n, gen) + SIGMA_MIN * torch.randn(n, gmm.dim, generator=gen,
                                                       dtype=torch.float64)


def test_exact_trace_likelihood_equals_gmm_log_density(gmm):
    """With the exact prior ``p_{σ_max}`` the only error is the integrator's (rtol = atol = 1e-7
    on a state of size ~σ_max): 1e-3 nats covers it with room; the log-densities themselves
    span ~5 nats over these points, so a wrong divergence sign or factor fails by far."""
    x = _data(gmm, 64, seed=0)
    ll, info = ode_log_likelihood(gmm.as_denoiser(), x, SIGMA_MIN, SIGMA_MAX,
                                  prior_log_prob=lambda z: gmm.log_prob(z, SIGMA_MAX),
                                  rtol=1e-7, atol=1e-7, return_info=True)
    exact = gmm.log_prob(x, SIGMA_MIN)
    assert float((ll - exact).abs().max()) < 1e-3
    assert float(exact.max() - exact.min()) > 3
    # z = x(σ_max) is a draw from p_{σ_max}: its spread is ~σ_max
    assert 0.7 * SIGMA_MAX < float(info["z"].std()) < 1.3 * SIGMA_MAX


def test_gaussian_prior_error_is_the_prior_mismatch(gmm):
    """The default prior N(0, σ_max²I) replaces p_{σ_max}; the result moves by exactly the
    log-density gap at the ODE's endpoint z, which is what this test measures."""
    x = _data(gmm, 32, seed=1)
    exact = gmm.log_prob(x, SIGMA_MIN)
    ll, info = ode_log_likelihood(gmm.as_denoiser(), x, SIGMA_MIN, SIGMA_MAX, rtol=1e-7,
                                  atol=1e-7, return_info=True)
    gap = gaussian_prior_log_prob(SIGMA_MAX)(info["z"]) - gmm.log_prob(info["z"], SIGMA_MAX)
    torch.testing.assert_close(ll - exact, gap, rtol=0, atol=1e-3)
    # and the gap is O(1/σ_max): |z| ≲ 3σ_max and |E x_0| ≈ 0.6 give ≈ 3 · 0.6/σ_max = 0.09
    assert 0 < float(gap.abs().max()) < 0.1


def test_three_dimensional_exact_trace():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)
    covs = a @ a.transpose(-1, -2) * 0.2 + 0.1 * torch.eye(3, dtype=torch.float64)
    g3 = GaussianMixture([0.6, 0.4], [[1.0, 0.0, -1.0], [-1.5, 1.0, 0.5]], covs)
    x = _data(g3, 16, seed=3)
    ll = ode_log_likelihood(g3.as_denoiser(), x, SIGMA_MIN, SIGMA_MAX,
                            prior_log_prob=lambda z: g3.log_prob(z, SIGMA_MAX),
                            rtol=1e-7, atol=1e-7)
    assert float((ll - g3.log_prob(x, SIGMA_MIN)).abs().max()) < 1e-3


def test_hutchinson_estimate_is_unbiased(gmm):
    """One point, 256 independent Rademacher probes: the mean of the estimates is within
    5 standard errors of the exact value, and single estimates do vary (it is stochastic)."""
    x = _data(gmm, 1, seed=4).expand(256, 2).contiguous()
    ll = ode_log_likelihood(gmm.as_denoiser(), x, SIGMA_MIN, SIGMA_MAX,
                            prior_log_prob=lambda z: gmm.log_prob(z, SIGMA_MAX),
                            hutchinson=True, generator=torch.Generator().manual_seed(5),
                            rtol=1e-6, atol=1e-6)
    exact = float(gmm.log_prob(x[:1], SIGMA_MIN))
    se = float(ll.std()) / math.sqrt(ll.numel())
    assert float(ll.std()) > 1e-3
    assert abs(float(ll.mean()) - exact) < 5 * se + 1e-3


def test_hutchinson_matches_exact_density_in_64d():
    """The digits' dimension: a 2-component mixture in 64-d with dense covariances, so the
    Jacobian of the ODE field is not diagonal and Rademacher probes do vary (per-probe sd ≈ 5
    nats here). For two points, 1024 probes each: the exact trace reproduces the closed-form
    ``log p_{σ_min}`` to 1e-3 nats (integrator tolerance, as in 2-D), and the mean of the
    Hutchinson estimates lies within 5 standard errors (false alarm 6e-7 per point) of it. The
    standard error (≈ 0.17 nats) must stay below 0.3 nats so that a biased trace, e.g. a wrong
    factor on the ~240-nat divergence integral, cannot hide in it."""
    d, n_probes = 64, 1024
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(2, d, d, generator=gen, dtype=torch.float64)
    covs = a @ a.transpose(-1, -2) / d * 0.3 + 0.05 * torch.eye(d, dtype=torch.float64)
    g = GaussianMixture([0.6, 0.4], torch.randn(2, d, generator=gen, dtype=torch.float64), covs)
    x = _data(g, 2, seed=7)
    prior = lambda z: g.log_prob(z, SIGMA_MAX)  # noqa: E731
    exact = g.log_prob(x, SIGMA_MIN)
    ll_exact = ode_log_likelihood(g.as_denoiser(), x, SIGMA_MIN, SIGMA_MAX, prior_log_prob=prior,
                                  rtol=1e-6, atol=1e-6)
    assert float((ll_exact - exact).abs().max()) < 1e-3
    ll = ode_log_likelihood(g.as_denoiser(), x.repeat_interleave(n_probes, 0), SIGMA_MIN,
                            SIGMA_MAX, prior_log_prob=prior, hutchinson=True,
                            generator=torch.Generator().manual_seed(8), rtol=1e-6, atol=1e-6)
    ll = ll.reshape(2, n_probes)
    se = ll.std(1) / math.sqrt(n_probes)
    assert bool((se < 0.3).all()) and bool((ll.std(1) > 1.0).all())
    assert bool(((ll.mean(1) - exact).abs() < 5 * se).all()), (ll.mean(1) - exact) / se


def test_bits_per_dim_and_errors(gmm):
    ll = torch.tensor([-2 * math.log(2.0)], dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(ll, dim=2), torch.tensor([1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        ode_log_likelihood(gmm.as_denoiser(), torch.zeros(2, 2, dtype=torch.float64), 1.0, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        ode_log_likelihood(lambda x, s: x * math.nan, torch.ones(2, 2, dtype=torch.float64),
                           0.1, 1.0)
