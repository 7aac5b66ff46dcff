"""Continuous normalizing flow: traces, closed-form linear flows, peers, and the diffusion link."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq  # the peer ODE solver (bench extra): imported, never skipped
from scipy.linalg import expm
from torch import nn

from deepnotes.diffusion.gmm import GaussianMixture
from deepnotes.diffusion.likelihood import augmented_dynamics
from deepnotes.generative.flows.cnf import CNF, TimeMLP, rk4


def _gmm() -> GaussianMixture:
    return GaussianMixture(
        weights=[0.5, 0.3, 0.2],
        means=[[-2.0, 0.0], [2.0, 1.0], [0.0, -3.0]],
        covs=[[[0.25, 0.10], [0.10, 0.16]],
              [[0.09, -0.05], [-0.05, 0.20]],
              [[0.30, 0.00], [0.00, 0.05]]],
    )


def _random_cnf(dim: int, seed: int, **kw) -> CNF:
    """A CNF whose output layer is random (the default starts at zero: a zero Jacobian would
    make every trace test pass trivially)."""
    torch.manual_seed(seed)
    cnf = CNF(dim, hidden=16, depth=2, **kw).double()
    nn.init.normal_(cnf.dynamics.out.weight, std=0.5)
    return cnf


def _linear(a: torch.Tensor, **kw) -> CNF:
    return CNF(a.shape[0], dynamics=lambda x, t: x @ a.T, **kw).double()


A = torch.tensor([[-0.3, 1.0, 0.2], [-0.5, 0.2, 0.0], [0.1, -0.4, -0.6]], dtype=torch.float64)


def test_exact_trace_equals_brute_force_jacobian_trace():
    cnf = _random_cnf(3, seed=0)
    x = torch.randn(6, 3, dtype=torch.float64)
    div = cnf.divergence(x, 0.37, trace="exact")
    for i in range(6):
        jac = torch.autograd.functional.jacobian(lambda y: cnf.velocity(y[None], 0.37)[0], x[i])
        # float64 rounding of a few dozen operations: 1e-12 is ~1e4 ulps of the O(1) traces
        assert abs(float(div[i] - jac.trace())) < 1e-12
    assert float(div.abs().max()) > 0.05  # the test is not comparing zeros


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_closed_form_variance(probe):
    """n = 20000 probes at one point: the mean is within 5 standard errors of the exact trace,
    and the sample variance matches Eq. 5 — 2(‖S‖²_F − Σ S_ii²) for Rademacher, 2‖S‖²_F for
    Gaussian probes, S = (J + Jᵀ)/2. The variance estimate's relative standard error is
    ≈ sqrt((κ − 1)/n) ≤ 0.025 for the kurtosis κ ≲ 12 of these quadratic forms: 12% is 5 SE."""
    cnf = _random_cnf(3, seed=1)
    x = torch.randn(1, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda y: cnf.velocity(y[None], 0.5)[0], x[0])
    s = (jac + jac.T) / 2
    n = 20_000
    est = cnf.divergence(x.expand(n, 3).contiguous(), 0.5, trace="hutchinson", probe=probe,
                         generator=torch.Generator().manual_seed(2))
    se = float(est.std()) / math.sqrt(n)
    assert abs(float(est.mean() - jac.trace())) < 5 * se
    var = 2 * float((s ** 2).sum() - (probe == "rademacher") * (s.diagonal() ** 2).sum())
    assert abs(float(est.var()) / var - 1) < 0.12


def test_hutchinson_log_prob_is_unbiased_along_the_path():
    """The probe is fixed along each path and x(t) does not depend on it, so the integrated
    estimate is unbiased: 400 probes at one point, mean within 5 SE (+ solver tolerance)."""
    cnf = _random_cnf(3, seed=3, rtol=1e-8, atol=1e-8)
    x = torch.randn(1, 3, dtype=torch.float64)
    exact = float(cnf.log_prob(x, trace="exact"))
    est = cnf.log_prob(x.expand(400, 3).contiguous(), trace="hutchinson",
                       generator=torch.Generator().manual_seed(4))
    assert float(est.std()) > 1e-3
    assert abs(float(est.mean()) - exact) < 5 * float(est.std()) / 20 + 1e-6


def test_linear_dynamics_match_the_matrix_exponential_and_t_trace():
    """f(x) = Ax: x(t) = expm(tA) x(0) and log|det ∂x(t)/∂x(0)| = t tr(A) (Liouville). With
    rtol = atol = 1e-10 the adaptive solver's global error is far below 1e-7."""
    cnf = _linear(A, rtol=1e-10, atol=1e-10)
    x = torch.randn(5, 3, dtype=torch.float64)
    ts = [0.0, 0.25, 0.5, 1.0]
    xs, lds = cnf.trajectory(x, ts, logdet=True)
    for k, t in enumerate(ts):
        ref = x @ torch.from_numpy(expm(t * A.numpy())).T
        torch.testing.assert_close(xs[k], ref, rtol=0, atol=1e-7)
        torch.testing.assert_close(lds[k], torch.full((5,), t * float(A.trace()),
                                                      dtype=torch.float64), rtol=0, atol=1e-7)


def test_rk4_is_fourth_order_on_linear_dynamics():
    """Halving the step divides the global error by 2⁴ = 16 (12–20 allows for the error's
    higher-order terms at these step sizes)."""
    x0 = torch.randn(4, 3, dtype=torch.float64)
    ref = x0 @ torch.from_numpy(expm(2.0 * A.numpy())).T
    errs = [float((rk4(lambda t, y: y @ A.T, x0, torch.linspace(0, 2, n + 1)) - ref).abs().max())
            for n in (4, 8, 16)]
    assert 12 < errs[0] / errs[1] < 20 and 12 < errs[1] / errs[2] < 20


def test_inverse_of_forward_recovers_x_and_negates_log_det():
    """Both directions run the adaptive solver at rtol = atol = 1e-9: the round trip is exact
    up to twice its global error, well inside 1e-6."""
    cnf = _random_cnf(2, seed=5, rtol=1e-9, atol=1e-9)
    x = 2 * torch.randn(32, 2, dtype=torch.float64)
    z, ld = cnf(x)
    x_back, ld_back = cnf.inverse(z)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-6)
    torch.testing.assert_close(ld_back, -ld, rtol=0, atol=1e-6)
    assert float((z - x).abs().max()) > 0.1 and float(ld.abs().max()) > 0.01


def test_our_solvers_match_torchdiffeq_on_the_augmented_ode():
    """Same dynamics (the (x, ∫tr) ODE of a random CNF): our RK4 is torchdiffeq's 'rk4' (the 3/8
    rule) on the same grid, equal to float64 rounding; our Dormand–Prince and torchdiffeq's
    'dopri5' both at rtol = atol = 1e-10 agree within their global errors (≪ 1e-7)."""
    cnf = _random_cnf(2, seed=6)
    x = torch.randn(16, 2, dtype=torch.float64)
    f = augmented_dynamics(cnf.velocity, tuple(x.shape))
    y0 = torch.cat([x, x.new_zeros(16, 1)], 1)
    grid = torch.linspace(0, 1, 9, dtype=torch.float64)
    ours = rk4(f, y0, grid, return_all=True)
    theirs = torchdiffeq.odeint(lambda t, y: f(float(t), y), y0, grid, method="rk4")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    cnf.rtol = cnf.atol = 1e-10
    z, ld = cnf(x)
    ref = torchdiffeq.odeint(lambda t, y: f(float(t), y), y0, grid[[0, -1]], method="dopri5",
                             rtol=1e-10, atol=1e-10)[-1]
    torch.testing.assert_close(torch.cat([z, ld[:, None]], 1), ref, rtol=0, atol=1e-7)


def test_exact_mixture_velocity_gives_the_exact_mixture_density():
    """The diffusion ↔ CNF link: with the rectified-flow velocity E[ε − x_0 | x_t] of a Gaussian
    mixture (its probability-flow ODE), p_1 is exactly N(0, I), so the CNF log-density is the
    mixture's log-density up to the solver's error (rtol = atol = 1e-8: < 1e-5 nats). Its
    samples reproduce the mixture's mean to within 5 standard errors."""
    g = _gmm()
    cnf = CNF(2, dynamics=g.velocity, rtol=1e-8, atol=1e-8).double()
    x = g.sample(48, torch.Generator().manual_seed(7))
    lp = cnf.log_prob(x)
    torch.testing.assert_close(lp, g.log_prob(x), rtol=0, atol=1e-5)
    assert float(lp.max() - lp.min()) > 3
    cnf.rtol = cnf.atol = 1e-6
    xs = cnf.sample(400, generator=torch.Generator().manual_seed(8))
    se = g.covariance().diagonal().sqrt() / math.sqrt(400)
    assert bool(((xs.mean(0) - g.mean()).abs() < 5 * se).all())


def test_flow_matching_loss_is_minimised_by_the_exact_velocity():
    """L(v* + c) − L(v*) = ‖c‖² + 2E[(v* − u)·c], and the cross term vanishes because
    v* = E[u | x_t] (u = ε − x_0). With the same draws for both losses it is a mean of n = 20000
    terms, within 5 SE of 0. A flipped target (x_0 − ε) would make it 4 c·E[ε − x_0] ≈ 0.24 here,
    about 20 SE."""
    g = _gmm()
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)
    x = g.sample(20_000, torch.Generator().manual_seed(9))
    exact = CNF(2, dynamics=g.velocity).double()
    shifted = CNF(2, dynamics=lambda y, t: g.velocity(y, t) + c).double()
    l0 = exact.flow_matching_loss(x, generator=torch.Generator().manual_seed(10))
    l1 = shifted.flow_matching_loss(x, generator=torch.Generator().manual_seed(10))
    # per-example cross terms, for the standard error
    gen = torch.Generator().manual_seed(10)
    t = torch.rand(20_000, generator=gen, dtype=torch.float64)
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    xt = (1 - t[:, None]) * x + t[:, None] * eps
    cross = 2 * ((g.velocity(xt, t) - (eps - x)) @ c)
    se = float(cross.std()) / math.sqrt(20_000)
    assert abs(float(l1 - l0) - float(c @ c) - float(cross.mean())) < 1e-9  # same draws
    assert abs(float(cross.mean())) < 5 * se


def test_nll_loss_gradient_matches_finite_differences():
    """The ML loss back-propagates through RK4 *and* the exact trace (create_graph): a central
    difference along a random parameter direction agrees to 1e-6 relative (float64; h = 1e-5
    gives an O(h²) ≈ 1e-10 truncation error). Dropping the trace's graph would miss the
    ∂tr/∂θ term and fail by far."""
    cnf = _random_cnf(2, seed=11, rk4_steps=3)
    x = torch.randn(32, 2, dtype=torch.float64)
    params = list(cnf.parameters())
    loss = cnf.nll_loss(x)
    grads = torch.autograd.grad(loss, params)
    dirs = [torch.randn_like(p) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs, strict=True))
    h = 1e-5
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            for p, d in zip(params, dirs, strict=True):
                p.add_(sign * h * d)
            values.append(float(cnf.nll_loss(x)))
            for p, d in zip(params, dirs, strict=True):
                p.sub_(sign * h * d)
    numeric = (values[0] - values[1]) / (2 * h)
    assert abs(analytic - numeric) < 1e-6 * max(1.0, abs(analytic))


def test_trained_cnf_density_integrates_to_one():
    """A CNF trained briefly by flow matching on a Gaussian mixture, evaluated with the adaptive
    solver on an 81×81 grid over [−8, 8]²: the Riemann sum is 1 within 0.01 (the density is a
    push-forward of N(0, I) so it is normalised up to solver error, ~1e-4 at rtol 1e-5; grid
    quadrature error and the mass outside the box are each < 1e-3 for a density this smooth)."""
    g = _gmm()
    torch.manual_seed(12)
    cnf = CNF(2, hidden=32, depth=2)
    opt = torch.optim.Adam(cnf.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(13)
    for _ in range(150):
        loss = cnf.flow_matching_loss(g.sample(256, gen).float(), generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    cnf = cnf.double()
    c = torch.linspace(-8, 8, 81, dtype=torch.float64)
    xx, yy = torch.meshgrid(c, c, indexing="xy")
    with torch.no_grad():
        dens = cnf.log_prob(torch.stack([xx.ravel(), yy.ravel()], 1)).exp()
    mass = float(dens.sum()) * float(c[1] - c[0]) ** 2
    assert abs(mass - 1) < 0.01
    # and it is trained: on mixture samples it beats its initial density N(0, I) by > 1 nat
    # (measured 1.8 nats after these 150 steps; the exact mixture would gain 2.7)
    x = g.sample(500, torch.Generator().manual_seed(14))
    with torch.no_grad():
        gain = cnf.log_prob(x).mean() - cnf.base.log_prob(x).mean()
    assert float(gain) > 1.0


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown trace estimator"):
        CNF(2, trace="skilling")
    with pytest.raises(ValueError, match="unknown Hutchinson probe"):
        CNF(2, probe="uniform")
    with pytest.raises(TypeError, match="dynamics must be callable"):
        CNF(2, dynamics=3)
    with pytest.raises(ValueError, match="rk4_steps"):
        CNF(2, rk4_steps=0)
    cnf = CNF(2)
    with pytest.raises(ValueError, match=r"expected shape \(batch, 2\)"):
        cnf.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        cnf.log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="unknown trace estimator"):
        cnf.log_prob(torch.zeros(2, 2), trace="exactly")
    with pytest.raises(ValueError, match="unknown solver"):
        cnf.log_prob(torch.zeros(2, 2), solver="euler")
    with pytest.raises(ValueError, match="positive int"):
        cnf.sample(0)
    bad = CNF(2, dynamics=lambda x, t: x * float("nan"))
    with pytest.raises(ValueError, match="NaN or inf"):
        bad.log_prob(torch.ones(2, 2))
    with pytest.raises(ValueError, match="shape"):
        CNF(2, dynamics=lambda x, t: x[:, :1]).sample(3)


def test_time_mlp_starts_at_the_identity_flow():
    """Zero output layer: f ≡ 0, so z = x and log p is the standard normal's."""
    cnf = CNF(2, dynamics=TimeMLP(2, 8, 1))
    x = torch.randn(5, 2)
    z, ld = cnf(x)
    assert torch.equal(z, x) and torch.equal(ld, torch.zeros(5))


def test_cnf_composes_in_a_chain_and_maps_an_empty_batch_to_an_empty_batch():
    from deepnotes.generative.flows.base import Chain, Reverse

    torch.manual_seed(0)
    cnf = CNF(2, hidden=8, depth=1).double()
    chain = Chain([Reverse(2), cnf])
    x = torch.randn(5, 2, dtype=torch.float64)
    z, ld = chain.forward(x)
    z_direct, ld_direct = cnf.forward(x.flip(1))
    torch.testing.assert_close(z, z_direct)
    torch.testing.assert_close(ld, ld_direct)
    back, _ = chain.inverse(z)
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)
    empty = torch.zeros(0, 2, dtype=torch.float64)
    assert cnf.log_prob(empty).shape == (0,)
    z0, ld0 = cnf.forward(empty)
    assert z0.shape == (0, 2) and ld0.shape == (0,)


def test_a_batch_of_another_dtype_is_a_clear_error():
    cnf = CNF(2, hidden=8, depth=1)  # float32 parameters
    with pytest.raises(TypeError, match="input is torch.float64 but the flow's parameters are "
                                        "torch.float32"):
        cnf.log_prob(torch.zeros(3, 2, dtype=torch.float64))
