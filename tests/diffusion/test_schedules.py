"""σ grids: endpoints, monotonicity, the Karras ρ-warp, and clear errors for invalid ranges."""

from __future__ import annotations

import math

import pytest
import torch

from deepnotes.diffusion.processes import RectifiedFlow, VPCosine, VPLinear
from deepnotes.diffusion.schedules import (
    check_sigmas,
    cosine_sigmas,
    geometric_sigmas,
    karras_sigmas,
    process_sigmas,
    rf_sigmas,
    vp_sigmas,
)


@pytest.mark.parametrize("rho", [1.0, 3.0, 7.0])
def test_karras_endpoints_and_warp(rho):
    s = karras_sigmas(10, 0.002, 80.0, rho=rho)
    assert s.shape == (11,) and float(s[-1]) == 0.0
    torch.testing.assert_close(s[[0, 9]], torch.tensor([80.0, 0.002], dtype=torch.float64))
    check_sigmas(s)
    # σ^{1/ρ} is uniform in the step index (Karras et al. 2022, Eq. 5)
    steps = torch.diff(s[:-1] ** (1 / rho))
    torch.testing.assert_close(steps, steps[:1].expand(9), rtol=1e-10, atol=0)


def test_higher_rho_spends_more_steps_at_low_noise():
    low = [int((karras_sigmas(40, 0.002, 80.0, rho=r)[:-1] < 1.0).sum()) for r in (1, 3, 7)]
    assert low[0] < low[1] < low[2]


def test_geometric_has_constant_ratio():
    s = geometric_sigmas(8, 0.01, 50.0)
    ratios = s[1:-1] / s[:-2]
    torch.testing.assert_close(ratios, ratios[:1].expand(7), rtol=1e-12, atol=0)
    assert math.isclose(float(s[0]), 50.0) and math.isclose(float(s[-2]), 0.01)


def test_process_grids_use_each_time_convention():
    t = torch.linspace(1.0, 1e-3, 5, dtype=torch.float64)
    b = 0.1 * t + 0.5 * 19.9 * t ** 2
    torch.testing.assert_close(vp_sigmas(5)[:-1], torch.sqrt(torch.expm1(b)))
    t = torch.linspace(0.999, 1e-3, 6, dtype=torch.float64)
    torch.testing.assert_close(rf_sigmas(6)[:-1], t / (1 - t))
    torch.testing.assert_close(cosine_sigmas(6)[:-1], VPCosine().sigma_of_t(t))
    torch.testing.assert_close(process_sigmas(VPLinear(), 3, 0.1, 0.9)[:-1],
                               VPLinear().sigma_of_t(torch.tensor([0.9, 0.5, 0.1])).double())


@pytest.mark.parametrize("fn", [karras_sigmas, geometric_sigmas])
def test_invalid_ranges(fn):
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        fn(10, 5.0, 5.0)
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        fn(10, 10.0, 1.0)
    with pytest.raises(ValueError, match="sigma_min must be > 0"):
        fn(10, 0.0, 1.0)
    with pytest.raises(ValueError, match="positive int"):
        fn(0, 0.1, 1.0)
    with pytest.raises(ValueError, match="finite"):
        fn(3, 0.1, math.inf)


def test_invalid_process_grids():
    with pytest.raises(ValueError, match="t_min < t_max"):
        process_sigmas(VPLinear(), 4, 0.5, 0.5)
    with pytest.raises(ValueError, match="rectified flow"):
        process_sigmas(RectifiedFlow(), 4, 0.1, 1.0)  # t = 1 is σ = ∞
    with pytest.raises(ValueError, match="rectified flow"):
        process_sigmas(VPLinear(), 4, 0.0, 1.0)  # t = 0 is σ = 0 before the end
    with pytest.raises(ValueError, match="karras_sigmas rho|rho must be > 0"):
        karras_sigmas(4, 0.1, 1.0, rho=0.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_sigmas([1.0, 0.0])
