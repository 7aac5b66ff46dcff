"""Ready-made flows for flat vectors: NICE, RealNVP, Glow, and stacks of planar/radial layers.

Each is a :class:`~deepnotes.generative.flows.base.Flow` (``log_prob``, ``sample``,
``nll_bits_per_dim``). Image variants (squeeze, checkerboard/channel masks on feature maps,
multi-scale split) are not implemented yet.
"""

from __future__ import annotations

import math

import torch

from deepnotes.generative.flows.base import Flow, LogitTransform, StandardLogistic
from deepnotes.generative.flows.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    Scaling,
    coupling_mask,
)
from deepnotes.generative.flows.glow import ActNorm, InvertibleConv1x1
from deepnotes.generative.flows.planar import PlanarFlow, RadialFlow


def _positive_int(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _preprocess(dim: int, logit_alpha: float | None) -> list:
    return [] if logit_alpha is None else [LogitTransform(dim, logit_alpha)]


class NICE(Flow):
    """NICE (Dinh, Krueger & Bengio 2015, "NICE: Non-linear Independent Components Estimation",
    ICLR workshop): additive couplings on alternating partitions, then a diagonal scaling.

    Parameters
    ----------
    dim : int
        Length of the data vectors (>= 2).
    n_couplings : int
        Additive coupling layers (the paper uses 4); consecutive layers swap the partition.
    hidden, n_hidden : int
        Width and depth of each coupling's ReLU network.
    prior : {"logistic", "normal"}
        Base density (the paper's logistic for MNIST/TFD, Gaussian for SVHN/CIFAR-10).
    mask : {"parity", "half"}
        The partition: odd/even features (the paper's) or first/second half.
    logit_alpha : float, optional
        If given, a :class:`LogitTransform` runs first (the paper feeds [0, 1] data directly).
    zero_init : bool
        Start every coupling as the identity. Off by default (the paper's random start): at the
        identity the gradient of an additive coupling's shift is ``E[∇ log p_Z(x) | x_I1]``,
        which vanishes for data symmetric in the updated coordinates (eight Gaussians on a
        circle), so a zero start never moves.
    """

    def __init__(self, dim: int, n_couplings: int = 4, hidden: int = 256, n_hidden: int = 3,
                 prior: str = "logistic", mask: str = "parity",
                 logit_alpha: float | None = None, zero_init: bool = False):
        _positive_int(dim=dim, n_couplings=n_couplings)
        layers = _preprocess(dim, logit_alpha)
        for k in range(n_couplings):
            m = coupling_mask(dim, mask, flip=k % 2 == 1)
            layers.append(AdditiveCoupling(dim, m, hidden, n_hidden, zero_init))
        layers.append(Scaling(dim))
        super().__init__(layers, base=prior)

    @torch.no_grad()
    def initialize_scaling(self, x: torch.Tensor) -> None:
        """Data-dependent start of the scaling layer (a deviation from the paper).

        Sets ``s`` so that the batch ``x`` (B, dim), mapped through the couplings, has the
        prior's standard deviation per feature (π/√3 for the logistic, 1 for the Gaussian).
        Data in [0, 1] with near-constant pixels would otherwise need ``s`` of 4 or more, which
        Adam reaches only after thousands of steps.
        """
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"initialize_scaling needs a batch (B >= 2, dim), got {x.shape}")
        h = x
        for layer in self.layers[:-1]:
            h, _ = layer(h)
        prior_std = math.pi / math.sqrt(3.0) if isinstance(self.base, StandardLogistic) else 1.0
        self.layers[-1].log_scale.copy_(math.log(prior_std) - torch.log(h.std(0) + 1e-6))


class RealNVP(Flow):
    """RealNVP for vectors (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real
    NVP", ICLR): affine couplings on alternating masks, Gaussian prior.

    ``scale`` picks the log-scale parameterisation of :class:`AffineCoupling` (``"tanh"``, the
    paper's). The paper's batch normalisation is left out (``actnorm=True`` adds Glow's ActNorm
    before each coupling instead).
    """

    def __init__(self, dim: int, n_couplings: int = 6, hidden: int = 128, n_hidden: int = 2,
                 scale: str = "tanh", mask: str = "parity", actnorm: bool = False,
                 logit_alpha: float | None = None):
        _positive_int(dim=dim, n_couplings=n_couplings)
        layers = _preprocess(dim, logit_alpha)
        for k in range(n_couplings):
            if actnorm:
                layers.append(ActNorm(dim))
            m = coupling_mask(dim, mask, flip=k % 2 == 1)
            layers.append(AffineCoupling(dim, m, hidden, n_hidden, scale))
        super().__init__(layers, base="normal")


class Glow(Flow):
    """Glow for vectors (Kingma & Dhariwal 2018): ``n_steps`` of ActNorm -> invertible 1×1
    "convolution" (a learned linear map of the features) -> affine coupling on halves.

    ``lu=True`` uses the LU-decomposed linear map; ``scale="sigmoid"`` is Glow's coupling scale.
    ``generator`` seeds the random rotations that initialise the linear maps.
    """

    def __init__(self, dim: int, n_steps: int = 6, hidden: int = 128, n_hidden: int = 2,
                 lu: bool = True, scale: str = "sigmoid", logit_alpha: float | None = None,
                 generator: torch.Generator | None = None):
        _positive_int(dim=dim, n_steps=n_steps)
        layers = _preprocess(dim, logit_alpha)
        for _ in range(n_steps):
            layers += [ActNorm(dim), InvertibleConv1x1(dim, lu=lu, generator=generator),
                       AffineCoupling(dim, "half", hidden, n_hidden, scale)]
        super().__init__(layers, base="normal")


class PlanarStack(Flow):
    """``n_layers`` planar flows (data -> noise) on a Gaussian base, a density model."""

    def __init__(self, dim: int, n_layers: int = 32, constrain: bool = True,
                 generator: torch.Generator | None = None):
        _positive_int(dim=dim, n_layers=n_layers)
        super().__init__([PlanarFlow(dim, constrain, generator=generator)
                          for _ in range(n_layers)], base="normal")


class RadialStack(Flow):
    """``n_layers`` radial flows (data -> noise) on a Gaussian base, a density model."""

    def __init__(self, dim: int, n_layers: int = 32, constrain: bool = True,
                 generator: torch.Generator | None = None):
        _positive_int(dim=dim, n_layers=n_layers)
        super().__init__([RadialFlow(dim, constrain, generator=generator)
                          for _ in range(n_layers)], base="normal")
