"""Prediction targets are exact inverses; adapters reproduce the exact denoiser in every process.

The adapter test builds each network output from the Gaussian mixture's posterior *in the
process's own time convention* (``x_t = α_t x_0 + σ_t ε``, via ``GaussianMixture.posterior_mean``
with ``(a, b) = (α_t, σ_t)``), so agreement with the σ-space ``GaussianMixture.denoiser`` checks
the time conversion and the prediction conversion together, to rounding.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deepnotes.diffusion.parameterizations import (
    PREDICTIONS,
    EDMPrecond,
    as_denoiser,
    edm_loss,
    from_x0,
    prediction_loss,
    sample_logit_normal_t,
    sample_lognormal_sigma,
    to_eps,
    to_x0,
    x0_loss_weight,
)
from deepnotes.diffusion.processes import EDM, VE, RectifiedFlow, SubVP, VPCosine, VPLinear

pos = st.floats(0.05, 5.0)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(PREDICTIONS), alpha=pos, sigma=pos, d_alpha=st.floats(-3.0, 0.0),
       d_sigma=pos, seed=st.integers(0, 1000))
def test_conversions_are_exact_inverses(kind, alpha, sigma, d_alpha, d_sigma, seed):
    # d_alpha <= 0 < d_sigma: σ/α increases with t, as in every process here, so the 2×2 map
    # from (x0, ε) to (x_t, prediction) is invertible
    gen = torch.Generator().manual_seed(seed)
    x0, eps, pred = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    x_t = alpha * x0 + sigma * eps
    kw = {"d_alpha": d_alpha, "d_sigma": d_sigma}
    p = from_x0(x0, kind, x_t, alpha, sigma, **kw)
    torch.testing.assert_close(to_x0(p, kind, x_t, alpha, sigma, **kw), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(to_eps(p, kind, x_t, alpha, sigma, **kw), eps, rtol=1e-9,
                               atol=1e-9)
    back = from_x0(to_x0(pred, kind, x_t, alpha, sigma, **kw), kind, x_t, alpha, sigma, **kw)
    torch.testing.assert_close(back, pred, rtol=1e-9, atol=1e-9)
    # the definitions themselves
    expected = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0,
                "velocity": d_alpha * x0 + d_sigma * eps}[kind]
    torch.testing.assert_close(p, expected, rtol=1e-9, atol=1e-9)


def _exact_model(gmm, process, kind):
    """``model(x_t, t)`` returning the exact posterior prediction of type ``kind``."""

    def model(x_t, t):
        alpha, sigma = process.alpha(t), process.sigma(t)
        x0, eps = gmm.posterior_mean(x_t, alpha, sigma)
        a, s = alpha[:, None], sigma[:, None]
        if kind == "eps":
            return eps
        if kind == "x0":
            return x0
        if kind == "v":
            return a * eps - s * x0
        d_alpha, d_sigma = process.derivatives(t)
        return d_alpha[:, None] * x0 + d_sigma[:, None] * eps

    return model


PROCESSES = [EDM(), VE(0.01, 50.0), VPLinear(), SubVP(), VPCosine(), RectifiedFlow()]


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
def test_as_denoiser_recovers_the_exact_denoiser(gmm, process, kind):
    gen = torch.Generator().manual_seed(0)
    for sigma in (0.05, 0.5, 3.0):
        x = gmm.sample(40, gen) + sigma * torch.randn(40, 2, generator=gen, dtype=torch.float64)
        s = torch.full((40,), sigma, dtype=torch.float64)
        got = as_denoiser(_exact_model(gmm, process, kind), process, kind)(x, s)
        torch.testing.assert_close(got, gmm.denoiser(x, s), rtol=1e-7, atol=1e-8)


def test_velocity_needs_derivatives_and_kind_is_checked():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="d_alpha"):
        to_x0(x, "velocity", x, 1.0, 1.0)
    with pytest.raises(ValueError, match="prediction must be one of"):
        to_x0(x, "score", x, 1.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(sigma=st.floats(1e-3, 100.0), sigma_data=st.floats(0.1, 2.0))
def test_edm_preconditioning_gives_unit_variance_input_and_target(sigma, sigma_data):
    """Karras et al. (2022), App. B.6: Var(c_in x) = 1 and Var(F target) = 1 for data of
    variance σ_d², with the target ``(x0 − c_skip x)/c_out``; λ(σ) = 1/c_out²."""
    pre = EDMPrecond(nn.Identity(), sigma_data)
    s = torch.tensor(sigma, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = pre.coefficients(s)
    sd2 = sigma_data ** 2
    torch.testing.assert_close(c_in ** 2 * (sd2 + sigma ** 2), torch.tensor(1.0).double())
    target_var = ((1 - c_skip) ** 2 * sd2 + c_skip ** 2 * sigma ** 2) / c_out ** 2
    torch.testing.assert_close(target_var, torch.tensor(1.0).double())
    torch.testing.assert_close(pre.loss_weight(s), 1 / c_out ** 2)
    torch.testing.assert_close(c_noise, torch.log(s) / 4)


def test_edm_precond_wraps_a_backbone(gmm):
    """With the ideal backbone ``F = (D* − c_skip x)/c_out`` the wrapper returns D* exactly,
    and a zero backbone leaves the skip path ``c_skip x``."""
    sigma_data = 0.5

    class Ideal(nn.Module):
        def forward(self, x_in, c_noise):
            sigma = torch.exp(4 * c_noise)
            pre = EDMPrecond(nn.Identity(), sigma_data)
            c_skip, c_out, c_in, _ = (c[:, None] for c in pre.coefficients(sigma))
            x = x_in / c_in
            return (gmm.denoiser(x, sigma) - c_skip * x) / c_out

    gen = torch.Generator().manual_seed(1)
    x = 2.0 * torch.randn(30, 2, generator=gen, dtype=torch.float64)
    s = torch.linspace(0.01, 20, 30, dtype=torch.float64)
    torch.testing.assert_close(EDMPrecond(Ideal(), sigma_data)(x, s), gmm.denoiser(x, s))
    zero = EDMPrecond(_Zero(), sigma_data)
    torch.testing.assert_close(zero(x, s), (sigma_data ** 2 / (s ** 2 + sigma_data ** 2))[:, None]
                               * x)


class _Zero(nn.Module):
    def forward(self, x, c_noise):
        return torch.zeros_like(x)


def test_edm_loss_is_smallest_at_the_exact_denoiser(gmm):
    """Same σ and noise draws (same generator seed) for each candidate: the exact posterior
    mean beats denoisers of slightly wrong mixtures (it minimises the weighted L2 loss)."""
    from deepnotes.diffusion.gmm import GaussianMixture

    def wrapped(mix):
        class Backbone(nn.Module):
            def forward(self, x_in, c_noise):
                sigma = torch.exp(4 * c_noise)
                c_skip, c_out, c_in, _ = (c[:, None] for c in pre.coefficients(sigma))
                x = x_in / c_in
                return (mix.denoiser(x, sigma) - c_skip * x) / c_out

        pre = EDMPrecond(Backbone(), 0.5)  # the backbone reads pre's coefficients
        return pre

    x0 = gmm.sample(20_000, torch.Generator().manual_seed(2))
    loss = {}
    for name, mix in {
        "exact": gmm,
        "shifted": GaussianMixture(gmm.weights, gmm.means + 0.15, gmm.covs),
        "wider": GaussianMixture(gmm.weights, gmm.means, gmm.covs * 1.5),
    }.items():
        loss[name] = float(edm_loss(wrapped(mix), x0, generator=torch.Generator().manual_seed(3)))
    assert loss["exact"] < loss["shifted"] and loss["exact"] < loss["wider"], loss
    with pytest.raises(TypeError, match="EDMPrecond"):
        edm_loss(lambda x, s: x, x0)


def test_training_noise_distributions():
    n = 40_000
    gen = torch.Generator().manual_seed(4)
    log_s = sample_lognormal_sigma(n, -1.2, 1.2, gen, torch.float64).log()
    # 5 standard errors: mean se = std/√n, std se ≈ std/√(2n)
    assert abs(float(log_s.mean()) + 1.2) < 5 * 1.2 / math.sqrt(n)
    assert abs(float(log_s.std()) - 1.2) < 5 * 1.2 / math.sqrt(2 * n)
    t = sample_logit_normal_t(n, 0.0, 1.0, gen, torch.float64)
    assert bool(((t > 0) & (t < 1)).all())
    u = torch.logit(t)
    assert abs(float(u.mean())) < 5 / math.sqrt(n)
    assert abs(float(u.std()) - 1.0) < 5 / math.sqrt(2 * n)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(nn.Identity(), 0.0)


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_prediction_loss_is_smallest_at_the_exact_posterior(gmm, kind):
    """Same (t, ε) draws for each candidate: the exact posterior prediction has the lowest
    loss, a slightly wrong mixture's prediction a higher one (conditional mean minimises L2)."""
    from deepnotes.diffusion.gmm import GaussianMixture

    process = VPLinear()
    x0 = gmm.sample(20_000, torch.Generator().manual_seed(5))
    losses = {}
    for name, mix in {"exact": gmm,
                      "shifted": GaussianMixture(gmm.weights, gmm.means + 0.15, gmm.covs)}.items():
        model = _exact_model(mix, process, kind)
        gen = torch.Generator().manual_seed(6)
        losses[name] = float(prediction_loss(model, process, x0, kind, generator=gen))
    assert losses["exact"] < losses["shifted"], losses


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_each_loss_is_a_weighted_x0_loss(kind):
    """Per example, ||p̂ − p||² = w ||x̂_0 − x_0||² when p̂ is implied by x̂_0 at the same x_t;
    for ε the weight is the SNR (α/σ_t)² (Kingma et al. 2021)."""
    gen = torch.Generator().manual_seed(7)
    x0, eps, x0_hat = torch.randn(3, 16, 2, generator=gen, dtype=torch.float64)
    alpha, sigma, d_alpha, d_sigma = 0.6, 0.8, -0.7, 1.3
    x_t = alpha * x0 + sigma * eps
    kw = {"d_alpha": d_alpha, "d_sigma": d_sigma}
    pred_hat = from_x0(x0_hat, kind, x_t, alpha, sigma, **kw)
    pred = from_x0(x0, kind, x_t, alpha, sigma, **kw)
    w = x0_loss_weight(kind, alpha, sigma, **kw)
    torch.testing.assert_close(((pred_hat - pred) ** 2).sum(1),
                               w * ((x0_hat - x0) ** 2).sum(1))
    if kind == "eps":
        assert w == pytest.approx((alpha / sigma) ** 2)
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="pass t"):
        prediction_loss(lambda x, t: x, EDM(), x0)
