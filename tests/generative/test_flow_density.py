"""Briefly trained 2-D flows define normalised densities: ``exp(log_prob)`` integrates to 1."""

import numpy as np
import pytest
import torch

from deepnotes.data import get_toy
from deepnotes.generative.flows import NICE, Glow, PlanarStack, RadialStack, RealNVP

torch.set_num_threads(1)

MODELS = {
    "nice": lambda: NICE(2, n_couplings=4, hidden=32, n_hidden=2, prior="normal"),
    "nice_logistic": lambda: NICE(2, n_couplings=4, hidden=32, n_hidden=2),
    "realnvp": lambda: RealNVP(2, n_couplings=4, hidden=32),
    "glow": lambda: Glow(2, n_steps=4, hidden=32),
    "planar": lambda: PlanarStack(2, n_layers=16),
    "radial": lambda: RadialStack(2, n_layers=16),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trained_2d_flow_integrates_to_one(name):
    torch.manual_seed(0)
    toy, rng = get_toy("two-moons"), np.random.default_rng(0)
    model = MODELS[name]().double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x_test = torch.from_numpy(toy.sample(1000, rng))
    with torch.no_grad():
        nll_before = -model.log_prob(x_test).mean()
    for _ in range(250):
        loss = -model.log_prob(torch.from_numpy(toy.sample(256, rng))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert -model.log_prob(x_test).mean() < nll_before - 0.2  # it did learn something

        half, n = 8.0, 400
        edges = torch.linspace(-half, half, n + 1, dtype=torch.float64)
        mid = 0.5 * (edges[:-1] + edges[1:])
        grid = torch.stack(torch.meshgrid(mid, mid, indexing="ij"), -1).reshape(-1, 2)
        mass_in_box = float(model.log_prob(grid).exp().sum()) * (2 * half / n) ** 2
        # the mass outside the box, estimated from the model's own samples
        samples = model.sample(100_000, generator=torch.Generator().manual_seed(1))
        mass_outside = float((samples.abs() > half).any(1).double().mean())
    assert mass_outside < 0.01
    # Midpoint rule at h = 0.04 on densities whose features are >= 0.1 wide (the moons' noise):
    # error below h² / (24 · 0.1²) ≈ 7e-3 relative, far less in practice since the rule is
    # exact for linear pieces; the outside-mass estimate's standard error is < 3e-4.
    assert mass_in_box + mass_outside == pytest.approx(1.0, abs=7e-3)
