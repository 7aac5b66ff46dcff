"""Trained 2-D models reach a stated sliced-Wasserstein distance to the data (Song et al. 2021's
VP ε-model and Liu et al.'s rectified flow), and reflow straightens a learned flow.

Companion of ``test_networks.py``'s EDM run: here the networks are trained in their own time
conventions (VP ``t ∈ [10⁻³, 1]`` with ε-prediction, reaching the σ-space Heun sampler through
:func:`deepnotes.diffusion.parameterizations.as_denoiser`; rectified flow ``t ∈ [0, 1]`` with
velocity prediction and its own Euler sampler). Data: the 3-component reference mixture of
``conftest.py`` (standard deviation ~1.6). Each training takes a few seconds on one core.

Scale of the bounds: two independent 8 000-point draws of this mixture are 0.04–0.13 apart in
SW₂ (20 pairs, median 0.08; mostly the random mass imbalance between modes 4 apart), and a
sampler that returns the mixture's mean (what one Euler step of the exact 1-rectified flow does)
is ~1.6 away.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deepnotes.diffusion.metrics import sliced_wasserstein
from deepnotes.diffusion.networks import MLPBackbone
from deepnotes.diffusion.parameterizations import as_denoiser, prediction_loss
from deepnotes.diffusion.processes import VPLinear
from deepnotes.diffusion.rectified_flow import rectified_flow_loss, reflow_pairs, straightness
from deepnotes.diffusion.samplers import sample_heun, sample_rf_euler
from deepnotes.diffusion.schedules import vp_sigmas

N = 8000


class TimeNet(nn.Module):
    """``model(x_t, t)``: the MLP backbone with the process time as its noise input."""

    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(2, hidden=96, depth=3)

    def forward(self, x, t):
        return self.net(x, t.to(x))


def _fit(model, loss_fn, steps, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _new_model(seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # weight init only; the global RNG is restored afterwards
        return TimeNet()


def _sw(x, gmm, gen):
    return float(sliced_wasserstein(x.double(), gmm.sample(N, gen), 256, gen))


def test_vp_eps_model_reaches_stated_sliced_wasserstein(gmm):
    """Target: SW₂ < 0.2 after 1500 steps, Heun on 32 VP levels; untrained: > 1."""
    gen = torch.Generator().manual_seed(0)
    process = VPLinear()
    model = _new_model(0)

    def loss():
        t = 1e-3 + (1 - 1e-3) * torch.rand(512, generator=gen)
        return prediction_loss(model, process, gmm.sample(512, gen).float(), "eps", t=t,
                               generator=gen)

    _fit(model, loss, 1500, 3e-3)
    sigmas = vp_sigmas(32).float()
    with torch.no_grad():
        den = as_denoiser(model, process, "eps")
        samples = sample_heun(den, float(sigmas[0]) * torch.randn(N, 2, generator=gen), sigmas)
        untrained = sample_heun(as_denoiser(_new_model(1), process, "eps"),
                                float(sigmas[0]) * torch.randn(N, 2, generator=gen), sigmas)
    assert _sw(samples, gmm, gen) < 0.2
    assert _sw(untrained, gmm, gen) > 1.0


@pytest.fixture(scope="module")
def flows(gmm):
    """A 1-rectified flow, and the 2-rectified flow reflowed from it (Liu et al. 2022, Alg. 1)."""
    gen = torch.Generator().manual_seed(1)
    rf1 = _new_model(2)
    _fit(rf1, lambda: rectified_flow_loss(rf1, gmm.sample(512, gen).float(),
                                          torch.randn(512, 2, generator=gen), generator=gen),
         1500, 3e-3)
    x0, noise = reflow_pairs(rf1, torch.randn(8000, 2, generator=gen), torch.linspace(1, 0, 51))
    rf2 = copy.deepcopy(rf1)

    def coupled():
        idx = torch.randint(0, x0.shape[0], (512,), generator=gen)
        return rectified_flow_loss(rf2, x0[idx], noise[idx], generator=gen)

    _fit(rf2, coupled, 600, 1e-3)
    return rf1, rf2


def test_rectified_flow_reaches_stated_sliced_wasserstein(gmm, flows):
    """Target: SW₂ < 0.2 with 64 Euler steps of the learned 1-rectified flow."""
    gen = torch.Generator().manual_seed(3)
    x = sample_rf_euler(flows[0], torch.randn(N, 2, generator=gen), torch.linspace(1, 0, 65))
    assert _sw(x, gmm, gen) < 0.2


def test_reflow_straightens_and_improves_one_step_generation(gmm, flows):
    """2-RF paths are straighter (S at most half of 1-RF's), and one Euler step of 1-RF lands
    near the mixture mean (SW₂ > 1; the data's spread is ~1.6) while one step of 2-RF, whose
    field carries noise almost straight to its mode, stays within 0.4 (a quarter of that)."""
    rf1, rf2 = flows
    gen = torch.Generator().manual_seed(4)
    noise = torch.randn(2000, 2, generator=gen)
    ts = torch.linspace(1, 0, 101)
    s1, s2 = float(straightness(rf1, noise, ts)), float(straightness(rf2, noise, ts))
    assert s2 < 0.5 * s1, (s1, s2)
    z = torch.randn(N, 2, generator=gen)
    one = torch.tensor([1.0, 0.0])
    sw1 = _sw(sample_rf_euler(rf1, z, one), gmm, gen)
    sw2 = _sw(sample_rf_euler(rf2, z, one), gmm, gen)
    assert sw1 > 1.0 and sw2 < 0.4, (sw1, sw2)
