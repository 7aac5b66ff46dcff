"""Normalizing flows: invertible layers with tractable log-determinants, and models built on them.

Every layer maps data -> noise in ``forward(x) -> (z, log_det)`` and back in
``inverse(z) -> (x, log_det)``, ``log_det`` of shape (B,). :class:`Flow` composes layers with a
base density and gives ``log_prob``, ``sample`` and ``nll_bits_per_dim``.

- ``base``: :class:`Flow`, :class:`Chain`, :class:`FlowLayer`, :class:`Inverse`, :class:`Reverse`,
  :class:`Permute`, :class:`LogitTransform`, :class:`StandardNormal`, :class:`StandardLogistic`
- ``coupling``: :class:`AdditiveCoupling`, :class:`AffineCoupling`, :class:`Scaling`,
  :func:`coupling_mask`
- ``glow``: :class:`ActNorm`, :class:`InvertibleConv1x1`
- ``image``: :class:`Squeeze`, :class:`ConvAffineCoupling`, :class:`Split` (optionally with
  Glow's learned conditional prior), :class:`LearnedTopPrior`,
  :func:`image_mask` (checkerboard and channel masks), :class:`ConvNet`
- ``planar``: :class:`PlanarFlow`, :class:`RadialFlow`
- ``vi``: the energies U1-U4 of Rezende & Mohamed, :func:`potential`, :func:`vi_flow`,
  :func:`reverse_kl`, :func:`log_normaliser` (variational inference with flows)
- ``models``: :class:`NICE`, :class:`RealNVP`, :class:`Glow`, :class:`PlanarStack`,
  :class:`RadialStack`
"""

from deepnotes.generative.flows.base import (
    Chain,
    Flow,
    FlowLayer,
    Inverse,
    LogitTransform,
    Permute,
    Reverse,
    StandardLogistic,
    StandardNormal,
)
from deepnotes.generative.flows.coupling import (
    MLP,
    AdditiveCoupling,
    AffineCoupling,
    Scaling,
    coupling_mask,
)
from deepnotes.generative.flows.glow import ActNorm, InvertibleConv1x1
from deepnotes.generative.flows.image import (
    ConvAffineCoupling,
    ConvNet,
    LearnedTopPrior,
    Split,
    Squeeze,
    image_mask,
)
from deepnotes.generative.flows.models import NICE, Glow, PlanarStack, RadialStack, RealNVP
from deepnotes.generative.flows.planar import PlanarFlow, RadialFlow
from deepnotes.generative.flows.vi import log_normaliser, potential, reverse_kl, vi_flow

__all__ = [
    "MLP",
    "NICE",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Chain",
    "ConvAffineCoupling",
    "ConvNet",
    "Flow",
    "FlowLayer",
    "Glow",
    "Inverse",
    "InvertibleConv1x1",
    "LearnedTopPrior",
    "LogitTransform",
    "Permute",
    "PlanarFlow",
    "PlanarStack",
    "RadialFlow",
    "RadialStack",
    "RealNVP",
    "Reverse",
    "Scaling",
    "Split",
    "Squeeze",
    "StandardLogistic",
    "StandardNormal",
    "coupling_mask",
    "image_mask",
    "log_normaliser",
    "potential",
    "reverse_kl",
    "vi_flow",
]
