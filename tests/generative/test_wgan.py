"""Tests for deepnotes.generative.wgan: exact W1 in 1-D against scipy, the transport LP against
POT's ot.emd2 and the assignment fast path, the critic losses, the gradient penalty on a critic
whose gradient is known, weight clipping, and a WGAN-GP critic's dual estimate in 1-D against the
exact W1."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from scipy.stats import wasserstein_distance

from deepnotes.generative import gan, wgan


@pytest.mark.parametrize("seed", range(8))
def test_wasserstein_1d_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 60, size=2)
    u = rng.normal(size=n) * rng.uniform(0.1, 3)
    v = rng.standard_t(3, size=m) + rng.normal()
    if seed % 2:  # ties inside and across the two samples
        u, v = np.round(u, 1), np.round(v, 1)
    uw, vw = rng.uniform(0, 5, size=n), rng.uniform(0, 5, size=m)
    if seed % 3 == 0:
        uw[0] = 0.0  # a zero weight is allowed
    assert abs(wgan.wasserstein_1d(u, v) - wasserstein_distance(u, v)) < 1e-12
    assert abs(wgan.wasserstein_1d(u, v, uw, vw) - wasserstein_distance(u, v, uw, vw)) < 1e-12


def test_wasserstein_1d_known_values():
    assert wgan.wasserstein_1d([0.0], [3.5]) == 3.5
    # shifting one distribution by c moves W1 by exactly |c|
    x = np.random.default_rng(0).normal(size=100)
    assert wgan.wasserstein_1d(x, x + 0.7) == pytest.approx(0.7, abs=1e-12)
    assert wgan.wasserstein_1d(x, x) == 0.0
    # weights: mass 1/4 at 0 and 3/4 at 1 against a point mass at 1 -> 1/4
    assert wgan.wasserstein_1d([0, 1], [1], [1, 3]) == pytest.approx(0.25, abs=1e-15)


def test_wasserstein_1d_validation():
    with pytest.raises(ValueError, match="u_weights"):
        wgan.wasserstein_1d([0, 1], [1], [1, -1])
    with pytest.raises(ValueError, match="v_weights"):
        wgan.wasserstein_1d([0, 1], [1], None, [0.0])
    with pytest.raises(ValueError, match="u must"):
        wgan.wasserstein_1d([], [1])
    with pytest.raises(ValueError, match="v must be finite"):
        wgan.wasserstein_1d([0.0], [np.nan])


# HiGHS stops at primal/dual feasibility 1e-7 on unit-mass problems; the objective of a vertex
# solution is then accurate to ~1e-9 relative (measured: below 1e-12 on these sets), so 1e-9.
LP_RTOL = 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_lp_w1_matches_pot(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(5, 40, size=2)
    d = 1 + seed % 3
    x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 0.5
    a, b = rng.uniform(0.1, 1, size=n), rng.uniform(0.1, 1, size=m)
    a, b = a / a.sum(), b / b.sum()
    ref = ot.emd2(a, b, ot.dist(x, y, metric="euclidean"))
    value, plan = wgan.wasserstein_discrete(x, y, a, b, return_plan=True)
    assert value == pytest.approx(ref, rel=LP_RTOL)
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-9)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-9)
    assert plan.min() >= -1e-12
    # uniform weights by default
    ref_u = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), ot.dist(x, y, metric="euclidean"))
    assert wgan.wasserstein_discrete(x, y) == pytest.approx(ref_u, rel=LP_RTOL)


def test_matching_equals_lp_and_1d():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 2)), rng.uniform(-1, 2, size=(30, 2))
    assert wgan.wasserstein_matching(x, y) == pytest.approx(wgan.wasserstein_discrete(x, y),
                                                            rel=LP_RTOL)
    # in one dimension all three exact methods agree
    u, v = rng.normal(size=25), rng.normal(size=25) * 2
    w = wgan.wasserstein_1d(u, v)
    assert wgan.wasserstein_matching(u[:, None], v[:, None]) == pytest.approx(w, rel=1e-12)
    assert wgan.wasserstein_discrete(u[:, None], v[:, None]) == pytest.approx(w, rel=LP_RTOL)
    with pytest.raises(ValueError, match="same shape"):
        wgan.wasserstein_matching(x, y[:5])
    with pytest.raises(ValueError, match="same dimension"):
        wgan.wasserstein_discrete(x, y[:, :1])


def test_critic_and_generator_losses():
    real = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    fake = torch.tensor([0.5, -0.5], requires_grad=True)
    loss = wgan.critic_loss(real, fake)
    assert loss.item() == pytest.approx(0.0 - 2.0)
    loss.backward()
    torch.testing.assert_close(real.grad, torch.full((3,), -1 / 3))
    torch.testing.assert_close(fake.grad, torch.full((2,), 1 / 2))
    assert wgan.generator_loss(torch.tensor([1.0, 3.0])).item() == -2.0


def test_gradient_penalty_of_a_linear_critic():
    """f(x) = w·x has gradient w everywhere, so the penalty is exactly (‖w‖ - 1)²."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1).double()
    real, fake = torch.randn(16, 3).double(), torch.randn(16, 3).double()
    gp = wgan.gradient_penalty(lin, real, fake)
    expected = (lin.weight.norm() - 1) ** 2
    torch.testing.assert_close(gp, expected)
    gp.backward()  # differentiable in the critic's parameters (double backprop)
    torch.testing.assert_close(lin.weight.grad,
                               2 * (lin.weight.norm() - 1) * lin.weight / lin.weight.norm())


def test_gradient_penalty_on_interpolates_of_a_nonlinear_critic():
    """For f(x) = ‖x‖²/2 the gradient at x̂ is x̂; with the same generator seed the penalty is
    recomputed by hand from the same ε."""
    class Half(torch.nn.Module):
        def forward(self, x):
            return 0.5 * (x**2).sum(1, keepdim=True)

    real, fake = torch.randn(10, 2).double(), torch.randn(10, 2).double()
    gp = wgan.gradient_penalty(Half(), real, fake, torch.Generator().manual_seed(5))
    eps = torch.rand((10, 1), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x_hat = eps * real + (1 - eps) * fake
    torch.testing.assert_close(gp, ((x_hat.norm(dim=1) - 1) ** 2).mean())


def test_clip_weights():
    lin = torch.nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.mul_(100)
    wgan.clip_weights_(lin, 0.01)
    assert all(p.abs().max() <= 0.01 for p in lin.parameters())
    with pytest.raises(ValueError, match="clip"):
        wgan.clip_weights_(lin, 0.0)


def test_wgan_gp_critic_estimates_exact_w1_in_1d():
    """Train only the critic between two fixed 1-D distributions, a Gaussian and a two-component
    mixture; its dual estimate on fresh samples is compared with the exact W1 between those
    samples. Tolerance: 3 % relative at λ = 100 (measured: 1.0 % above).

    Why λ = 100 and not the paper's 10: the penalty is soft, so where the interpolates are
    sparse the penalised optimum trades a slope above 1 for a larger dual gap, and the estimate
    lands *above* W1 (measured on this pair: 9 % above at λ = 10, 1 % at λ = 100); the
    wasserstein-gan post shows the same bias along training.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: a second thread only adds synchronisation
    try:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)

        def real(n):
            return torch.randn(n, 1, generator=gen)

        def fake(n):
            side = torch.randint(0, 2, (n, 1), generator=gen) * 2.0 - 1.0
            return 2.5 * side + 0.5 * torch.randn(n, 1, generator=gen)

        critic = gan.mlp(1, 1, hidden=64, depth=2)
        opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
        objective, _ = wgan.wgan_objectives(penalty=100.0)
        for _ in range(600):
            loss, _ = objective(critic, real(256), fake(256))
            opt.zero_grad()
            loss.backward()
            opt.step()
        xr, xf = real(20_000), fake(20_000)
        exact = wgan.wasserstein_1d(xr.numpy().ravel(), xf.numpy().ravel())
        estimate = wgan.dual_estimate(critic, xr, xf)
    finally:
        torch.set_num_threads(threads)
    assert estimate == pytest.approx(exact, rel=0.03), (estimate, exact)


def test_wgan_objectives_report_estimate_and_penalty():
    torch.manual_seed(0)
    critic = gan.mlp(2, 1, hidden=8, depth=1)
    real, fake = torch.randn(32, 2), torch.randn(32, 2) + 1
    plain, _ = wgan.wgan_objectives()
    loss, m = plain(critic, real, fake)
    assert m["gp"] == 0.0 and m["w_estimate"] == pytest.approx(-loss.item())
    assert m["w_estimate"] == pytest.approx(wgan.dual_estimate(critic, real, fake), abs=1e-6)
    gp_obj, _ = wgan.wgan_objectives(10.0)
    loss_gp, m_gp = gp_obj(critic, real, fake)
    assert m_gp["gp"] > 0
    assert loss_gp.item() == pytest.approx(-m_gp["w_estimate"] + 10 * m_gp["gp"], rel=1e-5)
    with pytest.raises(ValueError, match="penalty"):
        wgan.wgan_objectives(-1.0)


def test_one_sided_penalty_ignores_small_slopes():
    lin = torch.nn.Linear(2, 1).double()
    real, fake = torch.randn(8, 2).double(), torch.randn(8, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, 0.4]]))  # norm 0.5
    assert wgan.gradient_penalty(lin, real, fake, one_sided=True).item() == 0.0
    assert wgan.gradient_penalty(lin, real, fake).item() == pytest.approx(0.25)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.2, 1.6]]))  # norm 2
    assert wgan.gradient_penalty(lin, real, fake, one_sided=True).item() == pytest.approx(1.0)


@pytest.mark.parametrize("one_sided", [False, True])
def test_two_sided_penalty_traps_a_wrong_sign_slope_in_1d(one_sided):
    """A linear critic f(x) = s·x between a point mass at 0 and data at 2 (W1 = 2, best s = 1),
    started at s = -1. The two-sided penalty's objective 2s - λ(|s| - 1)² has a local maximum
    at s = -1 + 1/λ: gradient steps stay on the wrong side and the estimate is negative. The
    one-sided penalty has no barrier at s = 0, and the critic reaches s ≈ 1."""
    critic = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        critic.weight.fill_(-1.0)
    real = torch.full((64, 1), 2.0, dtype=torch.float64)
    fake = torch.zeros((64, 1), dtype=torch.float64)
    objective, _ = wgan.wgan_objectives(10.0, one_sided=one_sided)
    opt = torch.optim.SGD(critic.parameters(), lr=0.01)
    for _ in range(500):
        loss, _ = objective(critic, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    slope = critic.weight.item()
    if one_sided:
        assert slope == pytest.approx(1.1, abs=0.01)  # the soft penalty's optimum 1 + 1/λ
        assert wgan.dual_estimate(critic, real, fake) > 2.0
    else:
        assert slope == pytest.approx(-0.9, abs=0.01)
        assert wgan.dual_estimate(critic, real, fake) < 0
