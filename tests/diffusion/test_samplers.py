"""Every sampler, fed the exact Gaussian-mixture denoiser, reproduces the data distribution.

The reference is closed form (``deepnotes.diffusion.gmm``): no network, no training. Samplers start
from exact draws of the noised marginal ``p_{σ_max}`` (data + σ_max·noise), so the only error left
is the sampler's own discretisation, and the samples' per-component weights, means and
covariances are compared with the mixture's in units of their standard errors (conftest).
Step counts are the smallest round numbers at which each sampler's bias is well inside that
bound; the negative controls show the same check rejects a too-coarse grid and a 15% wrong
covariance.
"""

from __future__ import annotations

import math

import pytest
import torch

from deepnotes.diffusion import samplers as S
from deepnotes.diffusion.parameterizations import as_denoiser
from deepnotes.diffusion.processes import RectifiedFlow
from deepnotes.diffusion.schedules import geometric_sigmas, karras_sigmas

N = 10_000          # samples per sampler: standard errors of ~1% of each statistic
SIGMA_MAX = 20.0    # exact start, so σ_max need not swamp the data
SIGMA_MIN = 0.002


def _start(gmm, seed):
    gen = torch.Generator().manual_seed(seed)
    x = gmm.sample(N, gen) + SIGMA_MAX * torch.randn(N, 2, generator=gen, dtype=torch.float64)
    return x, gen


def _karras(n):
    return karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)


def _geometric(n):
    # ancestral/SDE samplers lose variance per coarse step at σ ≈ data scale, which ρ = 7 skips
    return geometric_sigmas(n, SIGMA_MIN, SIGMA_MAX)


SAMPLERS = {
    "euler-200": lambda D, x, g: S.sample_euler(D, x, _karras(200)),
    "heun-40": lambda D, x, g: S.sample_heun(D, x, _karras(40)),
    "dpmpp_2m-40": lambda D, x, g: S.sample_dpmpp_2m(D, x, _karras(40)),
    "edm-churn-80": lambda D, x, g: S.sample_edm(D, x, _karras(80), s_churn=40, s_tmin=0.01,
                                                 s_tmax=10.0, generator=g),
    "ddim-eta0-200": lambda D, x, g: S.sample_ddim(D, x, _karras(200), eta=0.0),
    "ddim-eta1-400": lambda D, x, g: S.sample_ddim(D, x, _geometric(400), eta=1.0, generator=g),
    "ddim-eta0.5-200": lambda D, x, g: S.sample_ddim(D, x, _geometric(200), eta=0.5, generator=g),
    "ddpm-ancestral-400": lambda D, x, g: S.sample_ddpm_ancestral(D, x, _geometric(400),
                                                                  generator=g),
    "euler-maruyama-200": lambda D, x, g: S.sample_euler_maruyama(D, x, _geometric(200),
                                                                  generator=g),
    "pc-100": lambda D, x, g: S.sample_pc(D, x, _geometric(100), snr=0.16, generator=g),
    "rk45": lambda D, x, g: S.sample_rk45(D, x, _karras(2), rtol=1e-5, atol=1e-5),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_with_exact_denoiser_reproduces_gmm(gmm, matches_gmm, name):
    x, gen = _start(gmm, seed=1)
    out = SAMPLERS[name](gmm.as_denoiser(), x, gen)
    assert out.shape == x.shape
    matches_gmm(out, gmm, who=name)


def test_rectified_flow_euler_with_exact_velocity_reproduces_gmm(gmm, matches_gmm):
    # x_1 = ε is exact for rectified flow: p_1 = N(0, I)
    gen = torch.Generator().manual_seed(2)
    x1 = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    out = S.sample_rf_euler(gmm.velocity, x1, torch.linspace(1, 0, 201, dtype=torch.float64))
    matches_gmm(out, gmm, who="rf-euler-200")


def test_checker_rejects_coarse_grid_and_wrong_covariance(gmm, matches_gmm, z_scores):
    x, _ = _start(gmm, seed=1)
    coarse = S.sample_dpmpp_2m(gmm.as_denoiser(), x, _karras(10))
    assert max(z_scores(coarse, gmm).values()) > 10
    gen = torch.Generator().manual_seed(3)
    mean = gmm.means.mean(0)
    wrong = mean + 1.15 ** 0.5 * (gmm.sample(N, gen) - mean)
    with pytest.raises(AssertionError, match="standard errors"):
        matches_gmm(wrong, gmm)
    # and exact draws pass: the check is calibrated, not merely strict
    matches_gmm(gmm.sample(N, gen), gmm)


def test_ddim_eta0_is_euler(gmm):
    x, _ = _start(gmm, seed=4)
    D, sigmas = gmm.as_denoiser(), _karras(25)
    torch.testing.assert_close(S.sample_ddim(D, x, sigmas, eta=0.0), S.sample_euler(D, x, sigmas),
                               rtol=1e-12, atol=1e-12)


def test_ddim_eta1_is_ddpm_ancestral_step_by_step(gmm):
    """DDIM's Eq. 16 variance at η = 1 is DDPM's posterior variance, so with the same noise the
    two trajectories coincide to rounding (in distribution they both pass the GMM check)."""
    x, _ = _start(gmm, seed=5)
    D, sigmas = gmm.as_denoiser(), _geometric(30)
    trajectory = {"ddim": [], "ddpm": []}
    a = S.sample_ddim(D, x, sigmas, eta=1.0, generator=torch.Generator().manual_seed(9),
                      callback=lambda info: trajectory["ddim"].append(info["x"]))
    b = S.sample_ddpm_ancestral(D, x, sigmas, generator=torch.Generator().manual_seed(9),
                                callback=lambda info: trajectory["ddpm"].append(info["x"]))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for xa, xb in zip(trajectory["ddim"], trajectory["ddpm"], strict=True):
        torch.testing.assert_close(xa, xb, rtol=1e-10, atol=1e-10)


def test_edm_without_churn_in_range_is_heun(gmm):
    x, _ = _start(gmm, seed=6)
    D, sigmas = gmm.as_denoiser(), _karras(12)
    heun = S.sample_heun(D, x, sigmas)
    outside = S.sample_edm(D, x, sigmas, s_churn=50, s_tmin=100.0, s_tmax=200.0)
    torch.testing.assert_close(outside, heun, rtol=0, atol=0)
    churned = S.sample_edm(D, x, sigmas, s_churn=50, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(churned, heun)


def test_rf_euler_is_sigma_space_euler_through_the_adapter(gmm):
    """Euler in t on ``x_t`` equals Euler in σ = t/(1 − t) on ``x_σ = x_t/(1 − t)`` exactly."""
    ts = torch.linspace(0.97, 0.0, 31, dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)
    t0 = float(ts[0])
    x_t = (1 - t0) * gmm.sample(500, gen) + t0 * torch.randn(500, 2, generator=gen,
                                                             dtype=torch.float64)
    in_t = S.sample_rf_euler(gmm.velocity, x_t, ts)
    D = as_denoiser(gmm.velocity, RectifiedFlow(), prediction="velocity")
    sigmas = ts / (1 - ts)
    in_sigma = S.sample_euler(D, x_t / (1 - t0), sigmas)
    torch.testing.assert_close(in_sigma, in_t, rtol=1e-9, atol=1e-9)


def test_rk45_reports_work_and_callback_sees_every_step(gmm):
    x, _ = _start(gmm, seed=8)
    out, info = S.sample_rk45(gmm.as_denoiser(), x[:200], _karras(5), return_info=True)
    assert info["nfe"] == 6 * info["n_accepted"] + 6 * info["n_rejected"] + 2 + 1 \
        and info["n_accepted"] > 3
    seen = []
    S.sample_heun(gmm.as_denoiser(), x[:10], _karras(7), callback=seen.append)
    assert [s["i"] for s in seen] == list(range(7))
    assert set(seen[0]) == {"i", "x", "sigma", "sigma_next", "denoised"}
    assert seen[-1]["sigma_next"] == 0.0


def test_stochastic_samplers_are_reproducible_from_the_generator(gmm):
    x, _ = _start(gmm, seed=9)
    D, sigmas = gmm.as_denoiser(), _geometric(20)
    for fn in (S.sample_pc, S.sample_euler_maruyama, S.sample_ddpm_ancestral):
        a = fn(D, x[:50], sigmas, generator=torch.Generator().manual_seed(3))
        b = fn(D, x[:50], sigmas, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# --- invalid inputs give clear errors, never NaN samples ---------------------------------------
ALL = [S.sample_euler, S.sample_heun, S.sample_edm, S.sample_dpmpp_2m, S.sample_ddim,
       S.sample_ddpm_ancestral, S.sample_euler_maruyama, S.sample_pc, S.sample_rk45]


@pytest.mark.parametrize("sampler", ALL, ids=lambda f: f.__name__)
def test_nan_from_model_is_reported_with_its_sigma(sampler):
    def broken(x, sigma):
        out = torch.zeros_like(x)
        if float(sigma[0]) < 1.0:
            out[0, 0] = math.nan
        return out

    sigmas = karras_sigmas(10, 0.01, 10.0)
    with pytest.raises(ValueError, match=r"model returned NaN at sigma=0\.\d+"):
        sampler(broken, 10.0 * torch.randn(4, 2, dtype=torch.float64), sigmas)


@pytest.mark.parametrize("sampler", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("sigmas, message", [
    (torch.tensor([5.0, 1.0, 2.0, 0.0]), "strictly decreasing"),
    (torch.tensor([5.0, 1.0, 0.5]), "must end in 0"),
    (torch.tensor([5.0, 0.0, 0.0]), "> 0 before the terminal 0"),
    (torch.tensor([5.0, math.nan, 0.0]), "NaN"),
    (torch.tensor([[5.0, 0.0]]), "1-D"),
])
def test_invalid_sigmas_are_rejected(sampler, sigmas, message):
    with pytest.raises(ValueError, match=message):
        sampler(lambda x, s: x, torch.zeros(3, 2, dtype=torch.float64), sigmas.double())


def test_other_invalid_inputs():
    sigmas = karras_sigmas(4, 0.1, 10.0)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        S.sample_euler(lambda x, s: x[:, :1], x, sigmas)
    with pytest.raises(ValueError, match="initial x"):
        S.sample_euler(lambda x, s: x, torch.full((3, 2), math.nan, dtype=torch.float64), sigmas)
    with pytest.raises(ValueError, match="eta"):
        S.sample_ddim(lambda x, s: x, x, sigmas, eta=1.5)
    with pytest.raises(ValueError, match="snr"):
        S.sample_pc(lambda x, s: x, x, sigmas, snr=0.0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        S.sample_rf_euler(lambda x, t: x, x, torch.tensor([1.0, 0.5, 0.6, 0.0]))
    with pytest.raises(ValueError, match="end in exactly 0"):
        S.sample_rf_euler(lambda x, t: x, x, torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        S.sample_rf_euler(lambda x, t: x * math.nan, x + 1, torch.tensor([1.0, 0.0]))
