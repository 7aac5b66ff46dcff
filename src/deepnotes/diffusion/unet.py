"""A small U-Net for digit-sized images, and its encoder as a noise-conditional classifier.

The backbone has the EDM signature ``F(x_in, c_noise, class_labels=None) -> (B, C, H, W)`` and is
meant to be wrapped by :class:`deepnotes.diffusion.parameterizations.EDMPrecond`
(Karras et al. 2022, Eq. 7). Its pieces follow Ho et al. (2020, Appendix B) scaled down:
residual blocks with GroupNorm and SiLU that add a projection of the noise (and class)
embedding, 2× average-pool down / nearest-neighbour up, skip connections concatenated on the way
up, and single-head self-attention at the lowest resolution only (at 4×4 it costs 16² scores).

Classifier-free guidance (Ho & Salimans 2022) needs one network that is both conditional and
unconditional: the class embedding table has ``n_classes + 1`` rows, the last one the *null
class* ``∅`` used when ``class_labels`` is None or a label equals :attr:`UNet.null_label`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepnotes.diffusion.networks import FourierEmbedding


def _groups(channels: int) -> int:
    """Largest of 8, 4, 2, 1 dividing ``channels`` (GroupNorm needs a divisor)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ResBlock(nn.Module):
    """``h = conv(SiLU(GN(x))) + W e``; ``out = skip(x) + conv(SiLU(GN(h)))`` (Ho et al. 2020).

    The second convolution starts at zero, so every block is the identity (or its 1×1 skip) at
    initialisation and the network starts as a shallow, well-conditioned map.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                          # (B, c_out, H, W)
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the H·W positions with a zero-initialised output."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # (B, C, HW) each
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2))          # (B, HW, C)
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class _Embedding(nn.Module):
    """Noise embedding ``MLP(Fourier(c_noise))`` plus an optional class embedding (null row)."""

    def __init__(self, emb_dim: int, n_classes: int):
        super().__init__()
        self.fourier = FourierEmbedding(16)
        self.mlp = nn.Sequential(nn.Linear(32, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.n_classes = n_classes
        self.label = nn.Embedding(n_classes + 1, emb_dim) if n_classes > 0 else None

    def forward(self, c_noise: torch.Tensor, class_labels: torch.Tensor | None,
                batch: int, like: torch.Tensor) -> torch.Tensor:
        if not isinstance(c_noise, torch.Tensor):
            raise TypeError("c_noise must be a torch.Tensor")
        c_noise = c_noise.to(like).reshape(-1)
        if c_noise.numel() == 1:
            c_noise = c_noise.expand(batch)
        if c_noise.shape[0] != batch:
            raise ValueError(f"c_noise must have {batch} entries (one per image), got "
                             f"{c_noise.shape[0]}")
        emb = self.mlp(self.fourier(c_noise))                          # (B, E)
        if self.label is None:
            if class_labels is not None:
                raise ValueError("this network is unconditional (n_classes=0) but got labels")
            return emb
        if class_labels is None:
            class_labels = torch.full((batch,), self.n_classes, dtype=torch.long,
                                      device=like.device)
        if class_labels.dtype not in (torch.int32, torch.int64) or class_labels.shape != (batch,):
            raise ValueError(f"class_labels must be an integer tensor of shape ({batch},), got "
                             f"{class_labels.dtype} {tuple(class_labels.shape)}")
        if bool(((class_labels < 0) | (class_labels > self.n_classes)).any()):
            raise ValueError(f"class_labels must lie in 0..{self.n_classes} "
                             f"({self.n_classes} is the null class)")
        return emb + self.label(class_labels.to(like.device).long())


class UNet(nn.Module):
    """``F(x, c_noise, class_labels=None)``: a two-level U-Net for small square images.

    Parameters
    ----------
    in_channels : int
        Image channels ``C`` (1 for digits).
    channels : int
        Width at full resolution; ``channel_mult`` widths at the lower levels.
    channel_mult : tuple of int
        One entry per resolution level; the image side halves between levels, so ``H`` and ``W``
        must be divisible by ``2 ** (len(channel_mult) - 1)``.
    n_classes : int
        Number of labels (0: unconditional). Row ``n_classes`` is the null class ``∅``.
    emb_dim : int
        Width of the noise/class embedding added in every residual block.
    dropout : float
        Dropout inside residual blocks.

    Shapes: ``x`` (B, C, H, W); ``c_noise`` (B,) (EDM's ``ln(σ)/4``); ``class_labels`` (B,)
    int64 or None (None means ``∅`` for every image). Returns (B, C, H, W). The output
    convolution starts at zero, so inside ``EDMPrecond`` the untrained denoiser is ``c_skip x``.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2), n_classes: int = 0,
                 emb_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        if in_channels < 1 or channels < 1 or emb_dim < 1 or n_classes < 0:
            raise ValueError(f"in_channels, channels, emb_dim must be >= 1 and n_classes >= 0, "
                             f"got {in_channels}, {channels}, {emb_dim}, {n_classes}")
        if len(channel_mult) < 1 or any(m < 1 for m in channel_mult):
            raise ValueError(f"channel_mult must be non-empty positive ints, got {channel_mult}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.n_levels = len(channel_mult)
        self.embed = _Embedding(emb_dim, n_classes)
        widths = [channels * m for m in channel_mult]
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        c = channels
        for w in widths:
            self.down.append(ResBlock(c, w, emb_dim, dropout))
            c = w
        self.mid1 = ResBlock(c, c, emb_dim, dropout)
        self.attn = SelfAttention(c)
        self.mid2 = ResBlock(c, c, emb_dim, dropout)
        self.up = nn.ModuleList()
        for w in reversed(widths):
            self.up.append(ResBlock(c + w, w, emb_dim, dropout))
            c = w
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def null_label(self) -> int:
        """The label index of the null class ``∅`` (classifier-free guidance)."""
        return self.n_classes

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {got}")
        factor = 2 ** (self.n_levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"H and W must be divisible by {factor}, got {tuple(x.shape[2:])}")

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x)
        emb = self.embed(c_noise, class_labels, x.shape[0], x)        # (B, E)
        h = self.stem(x)                                               # (B, ch, H, W)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)                                 # halve H, W
            h = block(h, emb)
            skips.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)               # lowest resolution
        for i, block in enumerate(self.up):
            if i > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))                      # (B, C, H, W)


class NoisyClassifier(nn.Module):
    """``log p_σ(y | x_σ)`` logits: the U-Net's encoder half and a pooled linear head.

    The input is EDM-scaled like the denoiser's (``x_in = x_σ / sqrt(σ² + σ_d²)``, ``c_noise =
    ln(σ)/4``; see :meth:`forward`), so one classifier serves every noise level; trained with
    cross-entropy on noised data it gives classifier guidance's gradient ``∇_x log p_σ(y | x)``
    (Dhariwal & Nichol 2021, §4, who also reuse the U-Net encoder).
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1, channels: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2), emb_dim: int = 64,
                 sigma_data: float = 0.5):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)
        self.trunk = UNet(in_channels, channels, channel_mult, 0, emb_dim)
        del self.trunk.up, self.trunk.out, self.trunk.out_norm    # only the encoder is used
        width = channels * channel_mult[-1]
        self.head_norm = nn.GroupNorm(_groups(width), width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) for ``x_σ`` (B, C, H, W) at noise levels ``sigma`` (B,)."""
        t = self.trunk
        t._check(x)
        sigma = sigma.to(x).reshape(-1).expand(x.shape[0])
        c_in = (sigma ** 2 + self.sigma_data ** 2).rsqrt()[:, None, None, None]
        emb = t.embed(sigma.log() / 4, None, x.shape[0], x)
        h = t.stem(c_in * x)
        for i, block in enumerate(t.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = block(h, emb)
        h = t.mid2(t.attn(t.mid1(h, emb)), emb)
        return self.head(F.silu(self.head_norm(h)).mean(dim=(2, 3)))  # (B, n_classes)
