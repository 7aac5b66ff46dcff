"""The flows' side of the autoregressive-models experiment: dequantisation of binary images and
the 2-level bound (Eq. 11 of the post ``autoregressive-models``)."""

import math

import numpy as np
import torch

from deepnotes.experiments.autoregressive_models import dequantise, flow_bits_per_dim
from deepnotes.generative.flows import Flow, LogitTransform, RealNVP


def _binary(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 2, (n, dim))).float()


def test_dequantise_lands_in_the_cell_of_each_pixel():
    x = _binary(500, 64, 0)
    y = dequantise(x, np.random.default_rng(1))
    assert torch.equal(torch.floor(2 * y), x)  # y in [x/2, (x+1)/2)
    assert not torch.equal(y, dequantise(x, np.random.default_rng(2)))  # fresh noise per call


def test_uniform_flow_scores_exactly_one_bit_per_pixel():
    # logit of a uniform variable is logistic: this flow is uniform on [0, 1)^D, so each binary
    # image gets P = 2^-D and the bound of Eq. 11 is tight at exactly 1 bit/dim
    model = Flow([LogitTransform(8, alpha=0.0)], base="logistic")
    x = _binary(200, 8, 3)
    draws = [dequantise(x, np.random.default_rng(4)) for _ in range(3)]
    # float32 log-density terms (~1e-7 relative rounding each) cancel to 1 bit: 1e-6 is a margin
    assert abs(flow_bits_per_dim(model, draws) - 1.0) < 1e-6


def test_bound_is_above_the_flows_binary_likelihood():
    # D = 2: P(cell) by midpoint quadrature of the flow's density; Eq. 11's bound on the same
    # points must lie above -log2 P / D, and the four cells carry at most all the mass
    torch.manual_seed(0)
    model = RealNVP(2, n_couplings=2, hidden=8, logit_alpha=0.05).double()
    m = 200
    t = (torch.arange(m, dtype=torch.float64) + 0.5) / m  # midpoints of u in [0, 1)
    u = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    total = 0.0
    for cell in ([0, 0], [0, 1], [1, 0], [1, 1]):
        y = (torch.tensor(cell, dtype=torch.float64) + u) / 2
        with torch.no_grad():
            p_cell = float(model.log_prob(y).exp().mean()) / 4.0  # cell volume 2^-2
        total += p_cell
        exact = -math.log2(p_cell) / 2
        bound = flow_bits_per_dim(model, [y])
        assert bound >= exact - 1e-12  # Jensen on the same quadrature points
    # a logit-squeezed flow puts some mass outside [0, 1)^2; quadrature error ~1e-5 at m=200
    assert total <= 1.0 + 1e-3
