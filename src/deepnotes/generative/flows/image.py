"""Flow layers for images: squeeze, checkerboard and channel masks, convolutional affine couplings
and the multi-scale architecture with factored-out halves (RealNVP, Glow).

Every layer keeps the flat contract of :class:`~deepnotes.generative.flows.base.FlowLayer`:
inputs and outputs are (B, C·H·W) in channel-major order (the layout of ``x.reshape(B, -1)`` for
an image batch ``x`` of shape (B, C, H, W)) and are viewed as images inside the layer. So an image
model is an ordinary :class:`Flow` whose base is a standard normal over all C·H·W coordinates; a
coordinate "factored out" at an early scale simply skips the later layers (Eq. 17 of the post
``normalizing-flows``).

Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", ICLR, Sec. 3.4-3.6;
Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deepnotes.generative.flows.base import Chain, FlowLayer
from deepnotes.generative.flows.coupling import SCALES, bounded_log_scale

IMAGE_MASKS = ("checkerboard", "channel")


def check_image_shape(image_shape) -> tuple[int, int, int]:
    """``image_shape`` as a (C, H, W) tuple of positive ints, or a ValueError naming the problem."""
    try:
        shape = tuple(image_shape)
    except TypeError:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}") from None
    if len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                              for v in shape):
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}")
    return shape


def dim_and_shape(dim, image_shape) -> tuple[int, tuple[int, int, int] | None]:
    """Resolve a layer's ``dim`` and optional ``image_shape`` (dim = C·H·W if both are given)."""
    if image_shape is None:
        if dim is None:
            raise ValueError("give dim (flat vectors) or image_shape=(C, H, W) (images)")
        return dim, None
    shape = check_image_shape(image_shape)
    if dim is not None and dim != math.prod(shape):
        raise ValueError(f"dim={dim!r} does not match image_shape {shape} "
                         f"(C·H·W = {math.prod(shape)})")
    return math.prod(shape), shape


class ImageLayer(FlowLayer):
    """A flow layer on images of shape ``image_shape`` = (C, H, W), flattened to C·H·W."""

    def __init__(self, image_shape):
        shape = check_image_shape(image_shape)
        super().__init__(math.prod(shape))
        self.image_shape = shape

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.image_shape)  # (B, C, H, W)


class Squeeze(ImageLayer):
    """Space-to-depth (RealNVP Sec. 3.6): (C, H, W) -> (4C, H/2, W/2), a permutation, log|det| = 0.

    Each 2×2 block of pixels becomes 4 channels, so later convolutions see a wider context and
    channel masks can split what used to be neighbouring pixels. Output channel ``4c + 2i + j``
    holds pixel ``(2h + i, 2w + j)`` of input channel ``c``.
    """

    def __init__(self, image_shape):
        super().__init__(image_shape)
        c, h, w = self.image_shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs an even height and width, got image_shape "
                             f"{self.image_shape}")
        self.out_shape = (4 * c, h // 2, w // 2)

    def _forward(self, x):
        b, (c, h, w) = x.shape[0], self.image_shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)  # (B,C,2,2,H/2,W/2)
        return y.reshape(b, -1), x.new_zeros(b)

    def _inverse(self, z):
        b, (c, h, w) = z.shape[0], self.image_shape
        x = z.reshape(b, c, 2, 2, h // 2, w // 2).permute(0, 1, 4, 2, 5, 3)  # (B,C,H/2,2,W/2,2)
        return x.reshape(b, -1), z.new_zeros(b)


def image_mask(image_shape, kind: str = "checkerboard", flip: bool = False) -> torch.Tensor:
    """A {0, 1} mask broadcastable to (C, H, W); 1 marks the unchanged (conditioning) entries.

    ``"checkerboard"``: pixels with ``h + w`` even, shape (1, H, W) (same for every channel);
    ``"channel"``: the first ``C // 2`` channels, shape (C, 1, 1) (needs C >= 2). ``flip`` swaps
    the roles so that alternating layers update every entry (RealNVP Sec. 3.4, Fig. 3).
    """
    c, h, w = check_image_shape(image_shape)
    if kind == "checkerboard":
        if h * w < 2:
            raise ValueError(f"a checkerboard mask needs at least 2 pixels, got {(c, h, w)}")
        idx = torch.arange(h)[:, None] + torch.arange(w)[None, :]
        keep = (idx % 2 == 0)[None]
    elif kind == "channel":
        if c < 2:
            raise ValueError(f"a channel mask needs at least 2 channels, got image_shape "
                             f"{(c, h, w)} (squeeze first)")
        keep = (torch.arange(c) < c // 2)[:, None, None]
    else:
        raise ValueError(f"image mask kind must be one of {IMAGE_MASKS}, got {kind!r}")
    return (keep != flip).to(torch.get_default_dtype())


class ConvNet(nn.Sequential):
    """Conditioner ``c_in -> hidden (3×3, ReLU) -> hidden (1×1, ReLU) x (n_hidden - 1) -> c_out
    (3×3)``, the last convolution zero-initialised if asked (Glow's NN(), Sec. 3.3)."""

    def __init__(self, c_in: int, c_out: int, hidden: int = 64, n_hidden: int = 2,
                 zero_init: bool = True):
        if hidden < 1 or n_hidden < 1:
            raise ValueError(f"hidden and n_hidden must be >= 1, got {hidden}, {n_hidden}")
        layers: list[nn.Module] = [nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU()]
        for _ in range(n_hidden - 1):
            layers += [nn.Conv2d(hidden, hidden, 1), nn.ReLU()]
        last = nn.Conv2d(hidden, c_out, 3, padding=1)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        super().__init__(*layers, last)


class ConvAffineCoupling(ImageLayer):
    """Affine coupling on images: ``y = m ⊙ x + (1 - m) ⊙ (x ⊙ exp(s) + t)`` (Eq. 3, 16).

    ``s`` and ``t`` come from a :class:`ConvNet` applied to the kept entries; ``m`` is a
    checkerboard or channel mask (:func:`image_mask`). log|det| = ``sum (1 - m) ⊙ s`` (Eq. 4).
    With a checkerboard the network sees ``m ⊙ x`` (all C channels) and predicts s, t for every
    entry (the kept ones are then zeroed); with a channel mask it sees only the kept channels and
    predicts s, t for the others, the same map at half the cost. The log-scale goes through
    ``scale`` as in :class:`AffineCoupling` (Eq. 5), with one ``c`` per channel for ``"tanh"``.
    """

    def __init__(self, image_shape, mask: str = "checkerboard", flip: bool = False,
                 hidden: int = 64, n_hidden: int = 2, scale: str = "tanh",
                 zero_init: bool = True):
        super().__init__(image_shape)
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        c = self.image_shape[0]
        self.register_buffer("mask", image_mask(self.image_shape, mask, flip))
        self.kind = mask
        if mask == "channel":
            first = slice(0, c // 2)
            rest = slice(c // 2, c)
            self._keep, self._update = (rest, first) if flip else (first, rest)
            n_in = self._keep.stop - self._keep.start
            n_out = self._update.stop - self._update.start
        else:
            n_in = n_out = c
        self.net = ConvNet(n_in, 2 * n_out, hidden, n_hidden, zero_init)
        self.scale = scale
        if scale == "tanh":
            self.tanh_scale = nn.Parameter(torch.ones(n_out, 1, 1))

    def _log_scale_shift(self, cond):
        a, t = self.net(cond).chunk(2, dim=1)
        return bounded_log_scale(a, self.scale, getattr(self, "tanh_scale", None)), t

    def _couple(self, x, sign: float):
        """``sign = 1``: forward, ``x ⊙ e^s + t``; ``sign = -1``: inverse, ``(x - t) ⊙ e^-s``."""
        x = self._image(x)  # (B, C, H, W)
        if self.kind == "channel":
            s, t = self._log_scale_shift(x[:, self._keep])  # (B, C_update, H, W) each
            xu = x[:, self._update]
            yu = xu * torch.exp(s) + t if sign > 0 else (xu - t) * torch.exp(-s)
            parts = [x[:, self._keep], yu]
            if self._update.start == 0:
                parts.reverse()
            y = torch.cat(parts, 1)
        else:
            s, t = self._log_scale_shift(x * self.mask)  # kept entries equal in x and y
            keep = 1.0 - self.mask
            s, t = s * keep, t * keep
            y = x * torch.exp(s) + t if sign > 0 else (x - t) * torch.exp(-s)
        return y.flatten(1), sign * s.flatten(1).sum(1)

    def _forward(self, x):
        return self._couple(x, 1.0)

    def _inverse(self, z):
        return self._couple(z, -1.0)


FACTOR_OUT = ("leading", "trailing")


class Split(FlowLayer):
    """Factor out part of the features and transform the rest (multi-scale, RealNVP Sec. 3.6).

    ``factor_out="leading"``: ``y = (x[:, :dim - d], inner(x[:, dim - d:]))`` with
    ``d = inner.dim``; ``"trailing"``: ``y = (x[:, d:], inner(x[:, :d]))``. Either way the
    factored-out part goes straight to the base density (Eq. 17) and comes first in ``y``; the
    rest continues through ``inner``. In the channel-major layout the first C/2 channels of a
    (C, H, W) image are the leading features. log|det| is ``inner``'s. Glow factors out the
    trailing half, the one its last channel coupling has just transformed (the paper's code,
    ``split2d``); RealNVP's stack keeps the leading choice.

    ``learn_prior=True`` (needs ``image_shape`` = (C, H, W), the shape being split) gives the
    factored-out half z2 Glow's learned conditional prior (Kingma & Dhariwal 2018, "split2d"):
    ``z2 ~ N(mu(z1), diag(sigma(z1)^2))`` with ``(mu, log sigma)`` from a zero-initialised 3×3
    convolution of the kept half z1 (before ``inner``). It is applied as the affine bijection
    ``eps = (z2 - mu) ⊙ exp(-log sigma)``, whose log|det| ``-sum log sigma`` is added to
    ``inner``'s, so the standard-normal base density of ``eps`` plus this term is exactly
    ``log p(z2 | z1)``. At initialisation mu = 0 and sigma = 1: the fixed standard normal.
    """

    def __init__(self, dim: int, inner: FlowLayer, image_shape=None, learn_prior: bool = False,
                 factor_out: str = "leading"):
        super().__init__(dim)
        if not isinstance(inner, FlowLayer) or not 1 <= inner.dim < dim:
            raise ValueError(f"Split needs an inner FlowLayer of dim in [1, {dim}), "
                             f"got {getattr(inner, 'dim', inner)!r}")
        if factor_out not in FACTOR_OUT:
            raise ValueError(f"factor_out must be one of {FACTOR_OUT}, got {factor_out!r}")
        self.inner = inner
        self.n_out = dim - inner.dim
        self.factor_out = factor_out
        self.prior = None
        if learn_prior:
            if image_shape is None:
                raise ValueError("Split(learn_prior=True) needs image_shape=(C, H, W)")
            c, h, w = check_image_shape(image_shape)
            if c * h * w != dim or c < 2 or c % 2 or inner.dim != dim // 2:
                raise ValueError(f"Split(learn_prior=True) needs an even channel count, "
                                 f"C·H·W = dim and inner.dim = dim / 2; got image_shape "
                                 f"{(c, h, w)}, dim {dim}, inner.dim {inner.dim}")
            self.half_shape = (c // 2, h, w)
            self.prior = nn.Conv2d(c // 2, c, 3, padding=1)
            nn.init.zeros_(self.prior.weight)
            nn.init.zeros_(self.prior.bias)

    def _mean_log_std(self, kept):
        """(mu, log sigma) of the factored-out half, each (B, C/2·H·W), from the kept half."""
        out = self.prior(kept.reshape(kept.shape[0], *self.half_shape))  # (B, C, H, W)
        mu, log_std = out.chunk(2, dim=1)
        return mu.flatten(1), log_std.flatten(1)

    def _parts(self, x):
        """(factored-out part, kept part) of ``x`` (B, dim)."""
        if self.factor_out == "leading":
            return x[:, :self.n_out], x[:, self.n_out:]
        d = self.inner.dim
        return x[:, d:], x[:, :d]

    def _forward(self, x):
        out, kept = self._parts(x)
        h, ld = self.inner._forward(kept)
        if self.prior is not None:
            mu, log_std = self._mean_log_std(kept)
            out = (out - mu) * torch.exp(-log_std)
            ld = ld - log_std.sum(1)
        return torch.cat([out, h], 1), ld

    def _inverse(self, z):
        out = z[:, :self.n_out]
        kept, ld = self.inner._inverse(z[:, self.n_out:])
        if self.prior is not None:
            mu, log_std = self._mean_log_std(kept)
            out = out * torch.exp(log_std) + mu
            ld = ld + log_std.sum(1)
        parts = [out, kept] if self.factor_out == "leading" else [kept, out]
        return torch.cat(parts, 1), ld


class LearnedTopPrior(ImageLayer):
    """Glow's learned prior at the top level ("learntop"): ``z ~ N(mu_c, sigma_c^2)`` with one
    mean and log-std per channel, zero-initialised (the standard normal at the start).

    Applied as ``eps = (z - mu) ⊙ exp(-log sigma)`` with log|det| ``-H·W·sum_c log sigma_c``, so
    the standard-normal base density of ``eps`` plus log|det| is exactly ``log N(z; mu, sigma)``.
    """

    def __init__(self, image_shape):
        super().__init__(image_shape)
        c = self.image_shape[0]
        self.mean = nn.Parameter(torch.zeros(c, 1, 1))
        self.log_std = nn.Parameter(torch.zeros(c, 1, 1))

    def _log_det(self, z):
        _, h, w = self.image_shape
        return (-h * w * self.log_std.sum()).expand(z.shape[0])

    def _forward(self, x):
        z = (self._image(x) - self.mean) * torch.exp(-self.log_std)
        return z.flatten(1), self._log_det(x)

    def _inverse(self, z):
        x = self._image(z) * torch.exp(self.log_std) + self.mean
        return x.flatten(1), -self._log_det(z)


def half_channels(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The shape that continues after a split of ``shape``: the second half of its channels."""
    c, h, w = shape
    if c < 2 or c % 2:
        raise ValueError(f"a split needs an even number of channels, got {shape}")
    return c // 2, h, w


def realnvp_scales(image_shape, n_scales: int, n_couplings: int, hidden: int, n_hidden: int,
                   scale: str, step_norm=None) -> list[FlowLayer]:
    """RealNVP's multi-scale stack (Sec. 3.6), data -> noise.

    Each scale but the last: ``n_couplings`` checkerboard couplings (alternating), a squeeze,
    ``n_couplings`` channel couplings (alternating), then half of the channels are factored out
    and the rest go to the next scale. The last scale: ``n_couplings + 1`` checkerboard
    couplings. ``step_norm(shape)``, if given, returns a layer put before every coupling (e.g.
    ActNorm). Needs H and W divisible by ``2 ** (n_scales - 1)``.
    """
    shape = check_image_shape(image_shape)
    c, h, w = shape
    if h % 2 ** (n_scales - 1) or w % 2 ** (n_scales - 1):
        raise ValueError(f"{n_scales} scales need H and W divisible by {2 ** (n_scales - 1)}, "
                         f"got image_shape {shape}")

    def coupling(shp, mask, k):
        pre = [] if step_norm is None else [step_norm(shp)]
        return pre + [ConvAffineCoupling(shp, mask, k % 2 == 1, hidden, n_hidden, scale)]

    layers: list[FlowLayer] = []
    last = n_scales == 1
    for k in range(n_couplings + (1 if last else 0)):
        layers += coupling(shape, "checkerboard", k)
    if last:
        return layers
    sq = Squeeze(shape)
    layers.append(sq)
    for k in range(n_couplings):
        layers += coupling(sq.out_shape, "channel", k)
    rest = realnvp_scales(half_channels(sq.out_shape), n_scales - 1, n_couplings, hidden,
                          n_hidden, scale, step_norm)
    layers.append(Split(sq.dim, Chain(rest)))
    return layers


def glow_levels(image_shape, n_levels: int, step, learn_prior: bool = False) -> list[FlowLayer]:
    """Glow's multi-scale stack (Fig. 2b), data -> noise: per level a squeeze, the layers
    ``step(shape)`` returns (K steps of ActNorm, 1×1 convolution, coupling), and, except at the
    last level, a split that factors out half of the channels. Needs H, W divisible by
    ``2 ** n_levels``. Each split factors out the trailing half of the channels, which the
    level's last channel coupling has just updated, and passes on the half that conditioned it
    (the paper's code; factoring out the leading half instead cost about 0.07 bits/dim on digits in
    ``benchmarks/flows.py``).

    ``learn_prior=True``: the paper's learned priors, a conditional Gaussian for each split's
    factored-out half (:class:`Split`) and a per-channel Gaussian at the top
    (:class:`LearnedTopPrior`); ``False``: the standard normal for both.
    """
    shape = check_image_shape(image_shape)
    _, h, w = shape
    if h % 2 ** n_levels or w % 2 ** n_levels:
        raise ValueError(f"{n_levels} levels need H and W divisible by {2 ** n_levels}, "
                         f"got image_shape {shape}")
    sq = Squeeze(shape)
    layers: list[FlowLayer] = [sq, *step(sq.out_shape)]
    if n_levels > 1:
        rest = glow_levels(half_channels(sq.out_shape), n_levels - 1, step, learn_prior)
        layers.append(Split(sq.dim, Chain(rest), sq.out_shape, learn_prior, "trailing"))
    elif learn_prior:
        layers.append(LearnedTopPrior(sq.out_shape))
    return layers


def as_flat(x, image_shape: tuple[int, int, int], dim: int, who: str):
    """Flatten an image batch (B, C, H, W) of the right shape to (B, C·H·W); pass others on.

    A 4-D tensor of another shape (e.g. a wrong channel count) raises a ValueError naming both
    shapes; anything else is left to the flat checks of ``FlowLayer``.
    """
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        if tuple(x.shape[1:]) != image_shape:
            c, h, w = image_shape
            raise ValueError(f"{who}: expected images of shape (batch, {c}, {h}, {w}) or flat "
                             f"(batch, {dim}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1)
    return x
