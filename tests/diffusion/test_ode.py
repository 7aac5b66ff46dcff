"""The probability-flow ODE solvers: convergence orders and our Dormand–Prince against scipy.

Reference trajectories come from ``scipy.integrate.solve_ivp(method="DOP853")`` at rtol = atol =
1e-12 on the exact Gaussian-mixture ODE ``dx/dσ = (x − D(x; σ))/σ`` — an independent
8th-order integrator, so its error is far below every quantity measured here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from deepnotes.diffusion import samplers as S
from deepnotes.diffusion.ode import dormand_prince
from deepnotes.diffusion.schedules import karras_sigmas

SIGMA_MAX, SIGMA_MIN, B = 20.0, 0.05, 64


@pytest.fixture(scope="module")
def problem(gmm):
    D = gmm.as_denoiser()
    gen = torch.Generator().manual_seed(0)
    x = gmm.sample(B, gen) + SIGMA_MAX * torch.randn(B, 2, generator=gen, dtype=torch.float64)

    def f(s, y):
        yt = torch.from_numpy(y.reshape(B, 2))
        return ((yt - D(yt, torch.full((B,), s, dtype=torch.float64))) / s).numpy().ravel()

    sol = solve_ivp(f, (SIGMA_MAX, SIGMA_MIN), x.numpy().ravel(), method="DOP853",
                    rtol=1e-12, atol=1e-12)
    assert sol.success
    x_end = torch.from_numpy(sol.y[:, -1].reshape(B, 2))
    # every sampler's last step to 0 is x ← D(x; σ_min), so compare after that same map
    ref = D(x_end, torch.full((B,), SIGMA_MIN, dtype=torch.float64))
    return D, x, ref


@pytest.mark.parametrize("sampler, order", [
    (S.sample_euler, 1), (S.sample_heun, 2), (S.sample_dpmpp_2m, 2),
])
def test_global_error_order(problem, sampler, order):
    """Error ∝ h^order: the least-squares slope of log error vs log N over N = 128, 256, 512.

    The band ±0.2 allows the pre-asymptotic drift still visible at these N (measured slopes:
    Euler 1.04–1.09, Heun and DPM++(2M) 1.93–1.97) while separating 1st from 2nd order.
    """
    D, x, ref = problem
    ns = np.array([128, 256, 512])
    errors = np.array([float((sampler(D, x, karras_sigmas(int(n), SIGMA_MIN, SIGMA_MAX)) - ref)
                             .abs().max()) for n in ns])
    slope = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.2, (errors, slope)


def test_heun_converges_to_the_rk45_trajectory(problem):
    D, x, ref = problem
    sigmas = karras_sigmas(64, SIGMA_MIN, SIGMA_MAX)
    ours, info = S.sample_rk45(D, x, sigmas, rtol=1e-9, atol=1e-9, return_info=True)
    # tolerance 1e-9 per step, accumulated over ~100 steps and through D's Lipschitz constant
    assert float((ours - ref).abs().max()) < 1e-6
    heun = [float((S.sample_heun(D, x, karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)) - ours).abs().max())
            for n in (32, 64, 128, 256)]
    assert all(b < a for a, b in zip(heun, heun[1:], strict=False)) and heun[-1] < 1e-3
    assert info["nfe"] < 2000


def test_dormand_prince_matches_closed_form_both_directions():
    # y' = -2 t y  =>  y(t) = y0 exp(-(t² - t0²)); a batch of initial values
    y0 = torch.linspace(-2, 3, 7, dtype=torch.float64)

    def f(t, y):
        return -2 * t * y

    for t0, t1 in ((0.0, 2.0), (2.0, -0.5)):
        y, stats = dormand_prince(f, y0, t0, t1, rtol=1e-8, atol=1e-10)
        exact = y0 * math.exp(-(t1 ** 2 - t0 ** 2))
        # local tolerance 1e-8; the global error stays within a small multiple of it here
        torch.testing.assert_close(y, exact, rtol=1e-7, atol=1e-8)
        assert stats.nfe == 2 + 6 * (stats.n_accepted + stats.n_rejected)


def test_dormand_prince_step_count_tracks_scipy():
    """Same tableau and controller family as scipy's RK45: similar step counts, same answer."""
    def f_np(t, y):
        return np.array([y[1], -y[0] + (1 - y[0] ** 2) * y[1]])  # van der Pol, mu = 1

    y0 = np.array([2.0, 0.0])
    sol = solve_ivp(f_np, (0, 10), y0, method="RK45", rtol=1e-6, atol=1e-6)
    tight = solve_ivp(f_np, (0, 10), y0, method="DOP853", rtol=1e-12, atol=1e-12).y[:, -1]
    y, stats = dormand_prince(lambda t, y: torch.from_numpy(f_np(t, y.numpy())),
                              torch.from_numpy(y0), 0.0, 10.0, rtol=1e-6, atol=1e-6)
    assert np.abs(y.numpy() - tight).max() < 1e-4
    assert 0.5 < stats.n_accepted / (len(sol.t) - 1) < 2.0


def test_dormand_prince_rejects_bad_tolerances_and_blowup():
    with pytest.raises(ValueError, match="rtol"):
        dormand_prince(lambda t, y: y, torch.ones(2), 0.0, 1.0, rtol=0.0)
    with pytest.raises((FloatingPointError, RuntimeError)):
        dormand_prince(lambda t, y: y ** 2, torch.ones(2, dtype=torch.float64), 0.0, 2.0,
                       max_steps=2000)
