"""Glow's layers for flat vectors: ActNorm and the invertible "1×1 convolution".

For a vector the 1×1 convolution over channels is an invertible linear map of the features;
images (the same matrix at every pixel, log|det| times H·W) are a later increment.
Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS.
"""

from __future__ import annotations

import torch
from torch import nn

from deepnotes.generative.flows.base import FlowLayer


class ActNorm(FlowLayer):
    """``y = (x + b) ⊙ exp(s)`` with data-dependent initialisation (Eq. 6 of ``normalizing-flows``).

    On the first ``forward`` call ``b`` and ``s`` are set so that the batch's outputs have zero
    mean and unit variance per feature; afterwards they are ordinary parameters. log|det| =
    ``sum_i s_i``. ``inverse`` before any ``forward`` uses the identity start (b = 0, s = 0).

    Parameters
    ----------
    dim : int
    eps : float
        Added to the batch standard deviation at initialisation (a constant feature would
        otherwise get an infinite scale).
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``b = -mean(x)``, ``s = -log(std(x) + eps)`` over the batch, shape (B, dim)."""
        if x.shape[0] < 2:
            raise ValueError("ActNorm's data-dependent initialisation needs a batch of at "
                             f"least 2 examples, got {x.shape[0]}")
        self.loc.copy_(-x.mean(0))
        self.log_scale.copy_(-torch.log(x.std(0) + self.eps))
        self.initialized.fill_(True)

    def _forward(self, x):
        if not bool(self.initialized):
            self.initialize(x)
        return (x + self.loc) * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def _inverse(self, z):
        return z * torch.exp(-self.log_scale) - self.loc, (-self.log_scale.sum()).expand(z.shape[0])


class InvertibleConv1x1(FlowLayer):
    """An invertible linear map ``y = W x`` of the features (Glow's 1×1 convolution, Eq. 7).

    ``lu=False`` stores ``W`` and pays ``O(D³)`` for ``log|det W|`` (``torch.linalg.slogdet``);
    ``lu=True`` stores ``W = P L (U + diag(sign ⊙ exp(log_s)))`` (Eq. 8) with ``P`` a fixed
    permutation, ``L`` unit lower-triangular and ``U`` strictly upper-triangular, so
    ``log|det W| = sum(log_s)`` in ``O(D)`` and ``W`` stays invertible by construction.
    Both start from a random rotation (QR of a Gaussian matrix); ``generator`` seeds it.
    """

    def __init__(self, dim: int, lu: bool = False, generator: torch.Generator | None = None):
        super().__init__(dim)
        self.lu = lu
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        if not lu:
            self.weight = nn.Parameter(q)
            return
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(dim, dim), -1))
        self.register_buffer("eye", torch.eye(dim))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(diag.abs()))

    @property
    def matrix(self) -> torch.Tensor:
        """The current ``W``, shape (dim, dim)."""
        if not self.lu:
            return self.weight
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def log_abs_det(self) -> torch.Tensor:
        """``log|det W|`` (a scalar); raises ValueError if W is singular (plain form only)."""
        if self.lu:
            return self.log_s.sum()
        sign, logabsdet = torch.linalg.slogdet(self.weight)
        if sign == 0 or not bool(torch.isfinite(logabsdet)):
            raise ValueError("InvertibleConv1x1: W is singular (the layer is not invertible); "
                             "use lu=True to keep it invertible by construction")
        return logabsdet

    def _forward(self, x):
        w = self.matrix
        log_det = self.log_abs_det()
        return x @ w.T, log_det.expand(x.shape[0])

    def _inverse(self, z):
        log_det = self.log_abs_det()  # checks invertibility before solving
        x = torch.linalg.solve(self.matrix, z.T).T
        return x, (-log_det).expand(z.shape[0])
