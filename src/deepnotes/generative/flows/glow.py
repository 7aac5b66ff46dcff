"""Glow's layers: ActNorm and the invertible 1×1 convolution, for flat vectors and for images.

For a vector (``dim``) the 1×1 convolution is an invertible linear map of all features; for an
image (``image_shape=(C, H, W)``, flattened channel-major to C·H·W) it is the same C×C matrix at
every pixel, and ActNorm has one scale and bias per channel, so both log-determinants are H·W
times the per-pixel term (Eq. 6-7 of the post ``normalizing-flows``).
Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS.
"""

from __future__ import annotations

import torch
from torch import nn

from deepnotes.generative.flows.base import FlowLayer
from deepnotes.generative.flows.image import dim_and_shape


class _PerChannel(FlowLayer):
    """Shared view: (B, D) as (B, D, 1) for vectors, (B, C, H·W) for images."""

    def __init__(self, dim, image_shape):
        dim, shape = dim_and_shape(dim, image_shape)
        super().__init__(dim)
        self.image_shape = shape
        self.n_features = dim if shape is None else shape[0]
        self.n_pixels = 1 if shape is None else shape[1] * shape[2]

    def _view(self, x):
        return x.reshape(x.shape[0], self.n_features, self.n_pixels)


class ActNorm(_PerChannel):
    """``y = (x + b) ⊙ exp(s)`` with data-dependent initialisation (Eq. 6 of ``normalizing-flows``).

    On the first ``forward`` call ``b`` and ``s`` are set so that the batch's outputs have zero
    mean and unit variance per feature (per channel, over batch and pixels, for images);
    afterwards they are ordinary parameters. log|det| = ``H·W sum_c s_c`` (H·W = 1 for
    vectors). ``inverse`` before any ``forward`` uses the identity start (b = 0, s = 0).

    Parameters
    ----------
    dim : int, optional
        Length of flat vectors (or C·H·W when ``image_shape`` is given).
    eps : float
        Added to the batch standard deviation at initialisation (a constant feature would
        otherwise get an infinite scale).
    image_shape : (C, H, W), optional
        Image mode: one ``b``, ``s`` per channel.
    """

    def __init__(self, dim: int | None = None, eps: float = 1e-6, *, image_shape=None):
        super().__init__(dim, image_shape)
        self.loc = nn.Parameter(torch.zeros(self.n_features))
        self.log_scale = nn.Parameter(torch.zeros(self.n_features))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``b = -mean(x)``, ``s = -log(std(x) + eps)`` per feature over the batch (B, dim)."""
        if x.shape[0] * self.n_pixels < 2:
            raise ValueError("ActNorm's data-dependent initialisation needs a batch of at "
                             f"least 2 examples, got {x.shape[0]}")
        v = self._view(x).transpose(0, 1).reshape(self.n_features, -1)  # (C, B·H·W)
        self.loc.copy_(-v.mean(1))
        self.log_scale.copy_(-torch.log(v.std(1) + self.eps))
        self.initialized.fill_(True)

    def _log_det(self, b: int) -> torch.Tensor:
        return (self.n_pixels * self.log_scale.sum()).expand(b)

    def _forward(self, x):
        if not bool(self.initialized):
            self.initialize(x)
        y = (self._view(x) + self.loc[:, None]) * torch.exp(self.log_scale)[:, None]
        return y.reshape(x.shape), self._log_det(x.shape[0])

    def _inverse(self, z):
        x = self._view(z) * torch.exp(-self.log_scale)[:, None] - self.loc[:, None]
        return x.reshape(z.shape), -self._log_det(z.shape[0])


class InvertibleConv1x1(_PerChannel):
    """An invertible linear map ``y = W x`` of the features or channels (Glow, Eq. 7).

    ``lu=False`` stores ``W`` and pays ``O(C³)`` for ``log|det W|`` (``torch.linalg.slogdet``);
    ``lu=True`` stores ``W = P L (U + diag(sign ⊙ exp(log_s)))`` (Eq. 8) with ``P`` a fixed
    permutation, ``L`` unit lower-triangular and ``U`` strictly upper-triangular, so
    ``log|det W| = sum(log_s)`` in ``O(C)`` and ``W`` stays invertible by construction.
    Both start from a random rotation (QR of a Gaussian matrix); ``generator`` seeds it.
    With ``image_shape=(C, H, W)`` ``W`` is C×C, applied at every pixel: log|det| is
    ``H·W log|det W|``.
    """

    def __init__(self, dim: int | None = None, lu: bool = False,
                 generator: torch.Generator | None = None, *, image_shape=None):
        super().__init__(dim, image_shape)
        self.lu = lu
        c = self.n_features
        q, _ = torch.linalg.qr(torch.randn(c, c, generator=generator))
        if not lu:
            self.weight = nn.Parameter(q)
            return
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1))
        self.register_buffer("eye", torch.eye(c))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(diag.abs()))

    @property
    def matrix(self) -> torch.Tensor:
        """The current ``W``, shape (C, C) (C = dim for vectors)."""
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
        log_det = self.n_pixels * self.log_abs_det()
        if self.image_shape is None:
            return x @ w.T, log_det.expand(x.shape[0])
        y = torch.matmul(w, self._view(x))  # (C, C) @ (B, C, H·W)
        return y.reshape(x.shape), log_det.expand(x.shape[0])

    def _inverse(self, z):
        log_det = self.n_pixels * self.log_abs_det()  # checks invertibility before solving
        # one factorisation of W for all pixels: solve against (C, B·H·W)
        v = self._view(z).transpose(0, 1).reshape(self.n_features, -1)
        x = torch.linalg.solve(self.matrix, v).reshape(self.n_features, z.shape[0], -1)
        return x.transpose(0, 1).reshape(z.shape), (-log_det).expand(z.shape[0])
