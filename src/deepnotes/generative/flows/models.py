"""Ready-made flows: NICE, RealNVP, Glow, and stacks of planar/radial layers.

Each is a :class:`~deepnotes.generative.flows.base.Flow` (``log_prob``, ``sample``,
``nll_bits_per_dim``) on flat vectors of length ``dim``. RealNVP and Glow also have an image
mode, ``image_shape=(C, H, W)``: convolutional couplings with checkerboard/channel masks,
squeeze and the multi-scale split (:mod:`deepnotes.generative.flows.image`). Image models take
(B, C, H, W) or flattened (B, C·H·W) input; ``sample`` returns flat rows (reshape with
``model.image_shape``).
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
from deepnotes.generative.flows.image import (
    ConvAffineCoupling,
    as_flat,
    dim_and_shape,
    glow_levels,
    realnvp_scales,
)
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


class _ImageInput:
    """Lets an image-mode model take (B, C, H, W) batches as well as flat (B, C·H·W) rows."""

    image_shape: tuple[int, int, int] | None = None

    def forward(self, x):
        if self.image_shape is not None:
            x = as_flat(x, self.image_shape, self.dim, type(self).__name__ + ".forward")
        return super().forward(x)

    def inverse(self, z):
        if self.image_shape is not None:
            z = as_flat(z, self.image_shape, self.dim, type(self).__name__ + ".inverse")
        return super().inverse(z)


class RealNVP(_ImageInput, Flow):
    """RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP", ICLR):
    affine couplings on alternating masks, Gaussian prior.

    Vectors (``dim``): ``n_couplings`` MLP couplings on alternating ``mask`` partitions
    (``"parity"``, the 1-D checkerboard, or ``"half"``, the 1-D channel mask).

    Images (``image_shape=(C, H, W)``): the paper's multi-scale architecture (Sec. 3.6,
    :func:`~deepnotes.generative.flows.image.realnvp_scales`) with ``n_scales`` scales; per
    scale ``n_couplings`` checkerboard couplings, squeeze, ``n_couplings`` channel couplings and
    a split (the last scale: ``n_couplings + 1`` checkerboard couplings). Conditioners are
    convolutional (:class:`ConvAffineCoupling`), ``hidden`` channels wide; ``mask`` is unused.

    ``scale`` picks the log-scale parameterisation (``"tanh"``, the paper's). The paper's batch
    normalisation is left out (``actnorm=True`` adds Glow's ActNorm before each coupling).
    ``logit_alpha`` puts a :class:`LogitTransform` first (data in [0, 1]).
    """

    def __init__(self, dim: int | None = None, n_couplings: int = 6, hidden: int = 128,
                 n_hidden: int = 2, scale: str = "tanh", mask: str = "parity",
                 actnorm: bool = False, logit_alpha: float | None = None, *,
                 image_shape=None, n_scales: int = 2):
        dim, shape = dim_and_shape(dim, image_shape)
        _positive_int(dim=dim, n_couplings=n_couplings, n_scales=n_scales)
        layers = _preprocess(dim, logit_alpha)
        if shape is not None:
            norm = (lambda shp: ActNorm(image_shape=shp)) if actnorm else None
            layers += realnvp_scales(shape, n_scales, n_couplings, hidden, n_hidden, scale, norm)
        else:
            for k in range(n_couplings):
                if actnorm:
                    layers.append(ActNorm(dim))
                m = coupling_mask(dim, mask, flip=k % 2 == 1)
                layers.append(AffineCoupling(dim, m, hidden, n_hidden, scale))
        super().__init__(layers, base="normal")
        self.image_shape = shape


class Glow(_ImageInput, Flow):
    """Glow (Kingma & Dhariwal 2018): steps of ActNorm -> invertible 1×1 convolution -> affine
    coupling on halves.

    Vectors (``dim``): ``n_steps`` steps; the "1×1 convolution" is a learned linear map of all
    features and the coupling network an MLP.

    Images (``image_shape=(C, H, W)``): the multi-scale architecture (Fig. 2b,
    :func:`~deepnotes.generative.flows.image.glow_levels`): ``n_levels`` levels of squeeze,
    ``n_steps`` steps (per-channel ActNorm, C×C 1×1 convolution, convolutional coupling on the
    channel halves) and, except at the last level, a split that factors out the half the last
    coupling has just updated (the paper's code). H and W must be divisible by
    ``2 ** n_levels``.

    ``learn_prior`` (images only): the paper's learned priors, a Gaussian for each split's
    factored-out half conditioned on the kept half by a zero-initialised 3×3 convolution and a
    per-channel Gaussian at the top (:class:`~deepnotes.generative.flows.image.Split`,
    :class:`~deepnotes.generative.flows.image.LearnedTopPrior`); both start as the standard
    normal. ``False`` scores every factored-out coordinate with the fixed standard normal.

    ``lu=True`` uses the LU-decomposed 1×1 map; ``scale="sigmoid"`` is Glow's coupling scale
    (contracting in the data -> noise direction); ``"inv_sigmoid"``, its reciprocal, expands
    instead: better likelihoods on digits images at the benchmark's budget, but unbounded, so
    it can overflow on points far from the data (it does on the 2-D toys).
    ``generator`` seeds the random rotations that initialise the 1×1 maps.
    """

    def __init__(self, dim: int | None = None, n_steps: int = 6, hidden: int = 128,
                 n_hidden: int = 2, lu: bool = True, scale: str = "sigmoid",
                 logit_alpha: float | None = None, generator: torch.Generator | None = None, *,
                 image_shape=None, n_levels: int = 2, learn_prior: bool = True):
        dim, shape = dim_and_shape(dim, image_shape)
        _positive_int(dim=dim, n_steps=n_steps, n_levels=n_levels)
        layers = _preprocess(dim, logit_alpha)
        if shape is not None:
            def step(shp):
                out = []
                for _ in range(n_steps):
                    out += [ActNorm(image_shape=shp),
                            InvertibleConv1x1(lu=lu, generator=generator, image_shape=shp),
                            ConvAffineCoupling(shp, "channel", False, hidden, n_hidden, scale)]
                return out
            layers += glow_levels(shape, n_levels, step, learn_prior)
        else:
            for _ in range(n_steps):
                layers += [ActNorm(dim), InvertibleConv1x1(dim, lu=lu, generator=generator),
                           AffineCoupling(dim, "half", hidden, n_hidden, scale)]
        super().__init__(layers, base="normal")
        self.image_shape = shape


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
