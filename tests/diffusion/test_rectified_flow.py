"""Reflow couplings and straightness with exact velocities."""

from __future__ import annotations

import pytest
import torch

from deepnotes.diffusion.gmm import GaussianMixture
from deepnotes.diffusion.parameterizations import prediction_loss
from deepnotes.diffusion.processes import RectifiedFlow
from deepnotes.diffusion.rectified_flow import rectified_flow_loss, reflow_pairs, straightness
from deepnotes.diffusion.samplers import sample_rf_euler


def test_straight_flow_has_zero_straightness_and_one_step_is_exact():
    """v(x, t) = ε − x_0 for the deterministic coupling x_0 = ε + m: paths are straight lines, so
    S = 0 and one Euler step lands exactly where 100 steps do."""
    m = torch.tensor([1.5, -0.5], dtype=torch.float64)

    def v(x, t):
        return -m.expand_as(x)

    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = torch.linspace(1, 0, 101, dtype=torch.float64)
    assert float(straightness(v, noise, ts)) < 1e-20
    one = sample_rf_euler(v, noise, torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(one, sample_rf_euler(v, noise, ts))
    torch.testing.assert_close(one, noise + m)


def test_exact_mixture_flow_is_curved_and_reflow_pairs_are_its_endpoints(gmm):
    """Independent coupling of a multi-modal mixture with noise: 1-rectified flow paths bend
    (S > 0), and one Euler step misses the 200-step endpoint by far more than 200 steps' error."""
    noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ts = torch.linspace(1, 0, 201, dtype=torch.float64)
    s = float(straightness(gmm.velocity, noise, ts))
    assert s > 0.1
    x0, eps = reflow_pairs(gmm.velocity, noise, ts)
    assert eps is noise
    torch.testing.assert_close(x0, sample_rf_euler(gmm.velocity, noise, ts))
    one = sample_rf_euler(gmm.velocity, noise, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert float((one - x0).norm(dim=1).mean()) > 0.5
    # one-step generation of 1-RF collapses every mode onto the data mean
    torch.testing.assert_close(one, gmm.mean().expand_as(one), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="ts\\[0\\] must be 1"):
        reflow_pairs(gmm.velocity, noise, ts[1:])


def test_single_gaussian_straightness_matches_closed_form():
    """x_0 ~ N(0, s²I): x_t = c(t) ε with c(t) = sqrt((1 − t)² s² + t²) up to the coupling, so
    v = ċ/c · x_t and the endpoint chord is (1 − s) ε; S = ∫ (ċ(t) − (1 − s))² dt · E||ε||²."""
    s2 = 0.25
    g = GaussianMixture([1.0], [[0.0, 0.0]], [[[s2, 0.0], [0.0, s2]]])
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ts = torch.linspace(1, 0, 2001, dtype=torch.float64)
    t = ts[:-1]
    c = torch.sqrt((1 - t) ** 2 * s2 + t ** 2)
    c_dot = (t - (1 - t) * s2) / c
    chord = 1 - s2 ** 0.5
    expected = float(((c_dot - chord) ** 2 * (ts[:-1] - ts[1:])).sum()) * float(
        (noise ** 2).sum(1).mean())
    # left Riemann sums on the same grid on both sides; the residual is the Euler path error
    assert abs(float(straightness(g.velocity, noise, ts)) - expected) < 0.01 * expected


def test_loss_is_zero_for_a_straight_coupling_and_grows_by_the_offset():
    """Coupling x_0 = ε + m: the target ε − x_0 = −m everywhere, so v = −m has zero loss and
    v = −m + δ has loss exactly |δ|² at every t."""
    gen = torch.Generator().manual_seed(6)
    noise = torch.randn(256, 2, generator=gen, dtype=torch.float64)
    m = torch.tensor([0.5, 2.0], dtype=torch.float64)
    delta = torch.tensor([0.3, -0.4], dtype=torch.float64)
    x0 = noise + m
    assert float(rectified_flow_loss(lambda x, t: -m.expand_as(x), x0, noise, generator=gen)) \
        < 1e-28
    loss = rectified_flow_loss(lambda x, t: (delta - m).expand_as(x), x0, noise, generator=gen)
    assert abs(float(loss) - float(delta @ delta)) < 1e-12


def test_loss_matches_the_velocity_prediction_loss_of_the_process(gmm):
    """Independent coupling = flow matching: the same (t, ε) give the same number as
    ``prediction_loss(..., RectifiedFlow(), prediction="velocity")``, whose target α̇ x_0 + σ̇ ε
    comes from autograd; equal up to float64 round-off."""
    x0 = gmm.sample(128, torch.Generator().manual_seed(7))
    t = torch.rand(128, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    ours = rectified_flow_loss(gmm.velocity, x0, torch.randn(
        x0.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64), t=t)
    theirs = prediction_loss(gmm.velocity, RectifiedFlow(), x0, "velocity", t=t,
                             generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_exact_velocity_minimises_the_loss(gmm):
    """E[ε − x_0 | x_t] minimises the loss: shifting it by δ adds |δ|² plus a cross term
    2δ·mean(v − target) whose mean is 0; with 20 000 pairs the cross term is checked against
    5 of its standard errors."""
    gen = torch.Generator().manual_seed(10)
    n = 20_000
    x0 = gmm.sample(n, gen)
    noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(n, generator=gen, dtype=torch.float64)
    delta = torch.tensor([0.2, -0.1], dtype=torch.float64)
    base = rectified_flow_loss(gmm.velocity, x0, noise, t=t)
    shifted = rectified_flow_loss(lambda x, s: gmm.velocity(x, s) + delta, x0, noise, t=t)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * noise
    resid = (gmm.velocity(x_t, t) - (noise - x0)) @ delta                # (n,)
    cross = float(shifted - base) - float(delta @ delta)
    assert abs(cross) < 5 * 2 * float(resid.std()) / n ** 0.5
    assert float(shifted) > float(base)


def test_loss_rejects_bad_shapes():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="same shape"):
        rectified_flow_loss(lambda y, t: y, x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="t must have shape"):
        rectified_flow_loss(lambda y, t: y, x, x, t=torch.zeros(3))
