"""Noise processes: σ-space conversions are exact inverses; SDE coefficients match closed forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepnotes.diffusion.processes import EDM, VE, RectifiedFlow, SubVP, VPCosine, VPLinear

PROCESSES = {
    "edm": (EDM(), 0.01, 80.0),
    "ve": (VE(0.01, 50.0), 0.0, 1.0),
    "vp": (VPLinear(0.1, 20.0), 1e-3, 1.0),
    "vp-constant-beta": (VPLinear(2.0, 2.0), 1e-3, 1.0),
    "subvp": (SubVP(0.1, 20.0), 1e-3, 1.0),
    "cosine": (VPCosine(0.008), 1e-3, 0.999),
    "rf": (RectifiedFlow(), 1e-3, 0.999),
}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_sigma_of_t_is_increasing_and_inverted_by_t_of_sigma(name):
    proc, lo, hi = PROCESSES[name]
    t = torch.linspace(lo, hi, 101, dtype=torch.float64)
    sig = proc.sigma_of_t(t)
    assert bool((torch.diff(sig) > 0).all())
    torch.testing.assert_close(proc.t_of_sigma(sig), t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sig, proc.sigma(t) / proc.alpha(t), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_derivatives_match_central_differences(name):
    proc, lo, hi = PROCESSES[name]
    t = torch.linspace(lo + 0.01 * (hi - lo), hi - 0.01 * (hi - lo), 7, dtype=torch.float64)
    h = 1e-6 * (hi - lo)
    d_alpha, d_sigma = proc.derivatives(t)
    # central differences: truncation O(h²) and rounding O(1e-16/h), both < 1e-6 relative
    torch.testing.assert_close(d_alpha, (proc.alpha(t + h) - proc.alpha(t - h)) / (2 * h),
                               rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(d_sigma, (proc.sigma(t + h) - proc.sigma(t - h)) / (2 * h),
                               rtol=1e-6, atol=1e-8)


def test_sde_coefficients_match_song_et_al():
    t = torch.linspace(0.01, 1.0, 9, dtype=torch.float64)
    beta = 0.1 + 19.9 * t
    big_b = 0.1 * t + 0.5 * 19.9 * t ** 2
    f, g2 = VPLinear().sde(t)                      # Eq. 11: f = -β/2, g² = β
    torch.testing.assert_close(f, -beta / 2)
    torch.testing.assert_close(g2, beta)
    f, g2 = SubVP().sde(t)                         # Eq. 12: g² = β (1 - e^{-2B})
    torch.testing.assert_close(f, -beta / 2)
    torch.testing.assert_close(g2, beta * -torch.expm1(-2 * big_b))
    ve = VE(0.01, 50.0)                            # Eq. 9: f = 0, g² = dσ²/dt
    f, g2 = ve.sde(t)
    torch.testing.assert_close(f, torch.zeros_like(t))
    torch.testing.assert_close(g2, 2 * ve.sigma(t) ** 2 * torch.log(torch.tensor(5000.0)).double())
    f, g2 = EDM().sde(t)                           # Karras et al.: g² = 2σσ̇ = 2t
    torch.testing.assert_close(g2, 2 * t)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(PROCESSES)), u=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_q_sample_in_sigma_space_is_x0_plus_sigma_eps(name, u, seed):
    proc, lo, hi = PROCESSES[name]
    t = torch.full((4,), lo + u * (hi - lo), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    x_t = proc.q_sample(x0, t, eps)
    x_sigma, sigma = proc.to_sigma_space(x_t, t)
    torch.testing.assert_close(x_sigma, x0 + sigma[:, None] * eps, rtol=1e-10, atol=1e-10)
    back, t_back = proc.from_sigma_space(x_sigma, sigma)
    torch.testing.assert_close(back, x_t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(t_back, t, rtol=1e-8, atol=1e-8)


def test_variance_preserving_identities():
    t = torch.linspace(0.01, 0.99, 11, dtype=torch.float64)
    for proc in (VPLinear(), VPCosine()):
        torch.testing.assert_close(proc.alpha(t) ** 2 + proc.sigma(t) ** 2, torch.ones_like(t))
    sub = SubVP()
    torch.testing.assert_close(sub.sigma(t), 1 - sub.alpha(t) ** 2)
    rf = RectifiedFlow()
    torch.testing.assert_close(rf.alpha(t) + rf.sigma(t), torch.ones_like(t))


def test_invalid_parameters():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VE(1.0, 1.0)
    with pytest.raises(ValueError, match="beta_min <= beta_max"):
        VPLinear(1.0, 0.5)
    with pytest.raises(ValueError, match="s must be"):
        VPCosine(-0.1)


def test_discrete_vp_reads_the_table_and_inverts():
    from deepnotes.diffusion.processes import DiscreteVP

    proc = DiscreteVP.linear(1000, 1e-4, 0.02)
    acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    ints = torch.tensor([0.0, 1.0, 17.0, 500.0, 999.0], dtype=torch.float64)
    torch.testing.assert_close(proc.alpha(ints) ** 2, acp[ints.long()], rtol=1e-12, atol=0)
    t = torch.linspace(0, 999, 777, dtype=torch.float64)
    sig = proc.sigma_of_t(t)
    assert bool((torch.diff(sig) > 0).all())
    torch.testing.assert_close(proc.t_of_sigma(sig), t, rtol=1e-9, atol=1e-9)
    # between integers log σ is linear: the midpoint is the geometric mean of the neighbours
    torch.testing.assert_close(proc.sigma_of_t(torch.tensor([10.5]).double()),
                               (proc.sigma_of_t(torch.tensor([10.0, 11.0]).double()).prod())
                               .sqrt().reshape(1))
    with pytest.raises(ValueError, match="strictly decrease"):
        DiscreteVP(torch.tensor([0.5, 0.6]))
