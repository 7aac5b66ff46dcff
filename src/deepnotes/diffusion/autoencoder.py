"""The KL-regularised autoencoder of latent diffusion, equal to diffusers' ``AutoencoderKL``.

Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models" (CVPR),
Sec. 3.1 and Appendix G: a convolutional encoder maps an image ``x`` of shape ``(3, H, W)`` to a
diagonal Gaussian posterior over latents of shape ``(c, H/f, W/f)``; a decoder maps a latent back
to an image. Training minimises a reconstruction loss plus a *tiny* KL term towards ``N(0, I)``
(weight ``1e-6`` in the paper's configs), so the latent space stays close to deterministic but
bounded in scale. Diffusion then runs on the scaled latent ``s (z - b)``, with the scale
``s = 1 / std(z)`` computed from data (paper Sec. 4.3.2 and Appendix D.1: SD1's ``0.18215``)
and, as in SD3's released autoencoder (its config's ``shift_factor``), a shift ``b = mean(z)``.
SD3 (Esser et al. 2024, Sec. 5.2.1) widens the latent from ``c = 4`` to ``c = 16`` channels.

Architecture (the one in ``ldm/modules/diffusionmodules/model.py`` and diffusers):

- encoder: ``conv_in`` → per level ``layers_per_block`` residual blocks and (except at the last
  level) a stride-2 convolution → a middle block (residual, single-head self-attention over the
  ``H/f · W/f`` positions, residual) → GroupNorm, SiLU, ``conv_out`` to ``2c`` channels (mean and
  log-variance) → ``quant_conv`` (1×1);
- decoder: ``post_quant_conv`` (1×1) → ``conv_in`` → the middle block → per level, in reverse,
  ``layers_per_block + 1`` residual blocks and (except at the last) nearest-neighbour 2× upsampling
  followed by a 3×3 convolution → GroupNorm, SiLU, ``conv_out``.

With ``L = len(block_out_channels)`` levels the downsampling factor is ``f = 2**(L - 1)``; this
project uses ``f = 4`` (three levels) on 32×32 images, so the latents are 8×8 with ``c = 4``
channels (SD1/SD2) or ``c = 16`` (SD3).

Parameter names follow diffusers' module tree, so :meth:`KLAutoencoder.from_diffusers` copies a
diffusers ``AutoencoderKL`` with a strict ``load_state_dict`` (every tensor accounted for) and then
``encode``/``decode``/``forward`` give the same outputs (``tests/diffusion/test_autoencoder.py``).
The classes mirror diffusers' as follows: :class:`ResnetBlock` ↔ ``ResnetBlock2D`` without a time
embedding, :class:`Downsample` ↔ ``Downsample2D(padding=0)``, :class:`Upsample` ↔
``Upsample2D``, :class:`SpatialSelfAttention` ↔ ``Attention`` (``_from_deprecated_attn_block``),
:class:`MidBlock` ↔ ``UNetMidBlock2D``, :class:`DownBlock` ↔ ``DownEncoderBlock2D``,
:class:`UpBlock` ↔ ``UpDecoderBlock2D``, :class:`Encoder`/:class:`Decoder` ↔ ``vae.Encoder``/
``vae.Decoder``, :class:`GaussianPosterior` ↔ ``DiagonalGaussianDistribution``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

NORM_EPS = 1e-6
"""GroupNorm epsilon of every normalisation in the autoencoder (the LDM/diffusers value)."""

LOGVAR_RANGE = (-30.0, 20.0)
"""Clamp of the posterior log-variance (LDM/diffusers), so ``exp`` neither under- nor overflows."""


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of a :class:`KLAutoencoder`; field names are diffusers' ``AutoencoderKL`` config keys.

    Attributes
    ----------
    in_channels, out_channels : int
        Image channels in and out (3 for RGB).
    block_out_channels : tuple of int
        Channels of each level, finest first; ``len`` levels give ``f = 2**(len - 1)``.
    layers_per_block : int
        Residual blocks per encoder level (the decoder has one more per level).
    latent_channels : int
        ``c``: 4 as in SD1/SD2, 16 as in SD3.
    norm_num_groups : int
        GroupNorm groups; must divide every entry of ``block_out_channels``.
    mid_block_add_attention : bool
        Self-attention in the middle blocks (True in SD; False drops it).
    use_quant_conv, use_post_quant_conv : bool
        The 1×1 convolutions after the encoder / before the decoder (SD1: True; SD3: False).
    scaling_factor, shift_factor : float
        Latent normalisation ``s`` and ``b`` of :meth:`KLAutoencoder.encode_latents`
        (``s (z - b)``); set from data with :func:`latent_scale_from_data`.
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    scaling_factor: float = 1.0
    shift_factor: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in
                                                             self.block_out_channels))
        for name in ("in_channels", "out_channels", "layers_per_block", "latent_channels",
                     "norm_num_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.block_out_channels:
            raise ValueError("block_out_channels must name at least one level")
        bad = [c for c in self.block_out_channels if c < 1 or c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={self.norm_num_groups} must divide every entry of "
                             f"block_out_channels={self.block_out_channels} (fails for {bad})")
        if not (math.isfinite(self.scaling_factor) and self.scaling_factor > 0):
            raise ValueError(f"scaling_factor must be finite and > 0, got {self.scaling_factor}")
        if not math.isfinite(self.shift_factor):
            raise ValueError(f"shift_factor must be finite, got {self.shift_factor}")

    @property
    def downsampling_factor(self) -> int:
        """``f = 2**(L - 1)``: image side / latent side."""
        return 2 ** (len(self.block_out_channels) - 1)


# --- building blocks ---------------------------------------------------------------------------
class ResnetBlock(nn.Module):
    """``x ↦ skip(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))))))``, no time embedding.

    ``skip`` is a 1×1 convolution (``conv_shortcut``) when the channel count changes, else the
    identity (He et al. 2016, pre-activation form of LDM's autoencoder).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = (nn.Conv2d(in_channels, out_channels, 1)
                              if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                    # (B, C_out, H, W)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nn.Module):
    """Stride-2 3×3 convolution after padding one pixel on the right and bottom only.

    The asymmetric pad is LDM's: with no padding on the left/top, output pixel ``i`` sees input
    pixels ``2i .. 2i+2``, and an even side ``H`` maps to exactly ``H / 2``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))                 # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour 2× upsampling followed by a 3×3 convolution (no checkerboard)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the ``H·W`` positions, with a residual connection.

    ``x + W_o softmax(Q Kᵀ / √C) V`` with ``Q, K, V`` linear maps of ``GN(x)`` viewed as ``H·W``
    tokens of ``C`` channels (Vaswani et al. 2017, Eq. 1). ``to_out`` is a two-entry list
    (projection, dropout) only so that parameter names match diffusers' (``to_out.0.weight``).
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        out = F.scaled_dot_product_attention(q, k, v)                     # (B, HW, C)
        out = self.to_out[1](self.to_out[0](out))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    """Residual block, self-attention (optional), residual block, at the coarsest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool = True):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups),
                                      ResnetBlock(channels, channels, groups)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)]
                                        if attention else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class DownBlock(nn.Module):
    """``num_layers`` residual blocks, then a :class:`Downsample` unless it is the last level."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int,
                 downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups)
            for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpBlock(nn.Module):
    """``num_layers`` residual blocks, then an :class:`Upsample` unless it is the last level."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int,
                 upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups)
            for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    """Image ``(B, C_in, H, W)`` → moments ``(B, 2c, H/f, W/f)`` (before ``quant_conv``)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        chans, g = config.block_out_channels, config.norm_num_groups
        self.conv_in = nn.Conv2d(config.in_channels, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownBlock(chans[max(i - 1, 0)], chans[i], config.layers_per_block, g,
                      downsample=i < len(chans) - 1)
            for i in range(len(chans))])
        self.mid_block = MidBlock(chans[-1], g, config.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(g, chans[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(chans[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                                       # (B, C_0, H, W)
        for block in self.down_blocks:
            h = block(h)                                          # ... (B, C_{L-1}, H/f, W/f)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))      # (B, 2c, H/f, W/f)


class Decoder(nn.Module):
    """Latent ``(B, c, h, w)`` (after ``post_quant_conv``) → image ``(B, C_out, f h, f w)``."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        chans, g = config.block_out_channels[::-1], config.norm_num_groups
        self.conv_in = nn.Conv2d(config.latent_channels, chans[0], 3, padding=1)
        self.mid_block = MidBlock(chans[0], g, config.mid_block_add_attention)
        self.up_blocks = nn.ModuleList([
            UpBlock(chans[max(i - 1, 0)], chans[i], config.layers_per_block + 1, g,
                    upsample=i < len(chans) - 1)
            for i in range(len(chans))])
        self.conv_norm_out = nn.GroupNorm(g, chans[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(chans[-1], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))                       # (B, C_{L-1}, h, w)
        for block in self.up_blocks:
            h = block(h)                                          # ... (B, C_0, f h, f w)
        return self.conv_out(F.silu(self.conv_norm_out(h)))      # (B, C_out, f h, f w)


# --- the posterior -----------------------------------------------------------------------------
@dataclass
class GaussianPosterior:
    """Diagonal Gaussian ``q(z | x) = N(mean, diag(exp(logvar)))``.

    Attributes
    ----------
    mean, logvar : Tensor, shape (B, c, h, w)
        ``logvar`` is already clamped to :data:`LOGVAR_RANGE`.
    """

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> GaussianPosterior:
        """Split ``(B, 2c, h, w)`` moments into mean (first ``c``) and clamped log-variance."""
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(*LOGVAR_RANGE))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        """The posterior mean (the mode of a Gaussian), shape (B, c, h, w)."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw ``mean + std ε``, ``ε ~ N(0, I)`` from ``generator``."""
        # Drawn on the generator's device and moved (as diffusers' randn_tensor does), so a CPU
        # generator gives the same noise whatever device the model runs on.
        device = self.mean.device if generator is None else generator.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device,
                          dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """``KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²)`` per image, in nats, shape (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum((1, 2, 3))


# --- the autoencoder ---------------------------------------------------------------------------
class KLAutoencoder(nn.Module):
    """KL-regularised autoencoder (Rombach et al. 2022); mirrors ``diffusers.AutoencoderKL``.

    Parameters
    ----------
    config : AutoencoderConfig, optional
        Shape; default ``f = 4``, ``c = 4``. Keyword arguments override its fields.

    Notes
    -----
    ``scaling_factor`` and ``shift_factor`` are buffers (saved with the weights, not trained).
    """

    def __init__(self, config: AutoencoderConfig | None = None, **overrides: Any):
        super().__init__()
        config = AutoencoderConfig(**{**asdict(config or AutoencoderConfig()), **overrides})
        self.config = config
        c = config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(c, c, 1) if config.use_post_quant_conv else None
        self.register_buffer("scaling_factor", torch.tensor(float(config.scaling_factor)))
        self.register_buffer("shift_factor", torch.tensor(float(config.shift_factor)))

    @property
    def downsampling_factor(self) -> int:
        return self.config.downsampling_factor

    def _check(self, x: torch.Tensor, name: str, channels: int, multiple: int) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{name} must have shape (B, {channels}, H, W), got "
                             f"{tuple(x.shape)}")
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(f"{name}: height and width {tuple(x.shape[2:])} must be multiples "
                             f"of the downsampling factor {multiple}")

    def encode(self, x: torch.Tensor) -> GaussianPosterior:
        """Posterior ``q(z | x)`` of images ``x``, shape (B, C_in, H, W), H and W multiples of f.

        Images are expected in ``[-1, 1]`` (the range the model was trained on).
        """
        self._check(x, "x", self.config.in_channels, self.downsampling_factor)
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return GaussianPosterior.from_moments(moments)           # (B, c, H/f, W/f) each

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C_out, f h, f w)`` from unscaled latents ``z``, shape (B, c, h, w)."""
        self._check(z, "z", self.config.latent_channels, 1)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction ``decode(z)`` with ``z`` the posterior mode (or a draw), same shape."""
        posterior = self.encode(sample)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z)

    # The latent diffusion model sees s (z - b): unit variance (and zero mean with SD3's shift).
    def encode_latents(self, x: torch.Tensor, generator: torch.Generator | None = None,
                       sample_posterior: bool = True) -> torch.Tensor:
        """Scaled latents ``s (z - b)``, ``z ~ q(z | x)`` (or its mode), shape (B, c, h, w)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images from scaled latents: ``decode(latents / s + b)``."""
        return self.decode(latents / self.scaling_factor + self.shift_factor)

    def set_latent_scale(self, scaling_factor: float, shift_factor: float = 0.0) -> None:
        """Set ``s`` and ``b`` (e.g. from :func:`latent_scale_from_data`)."""
        if not (math.isfinite(scaling_factor) and scaling_factor > 0):
            raise ValueError(f"scaling_factor must be finite and > 0, got {scaling_factor}")
        if not math.isfinite(shift_factor):
            raise ValueError(f"shift_factor must be finite, got {shift_factor}")
        self.scaling_factor.fill_(float(scaling_factor))
        self.shift_factor.fill_(float(shift_factor))
        self.config = AutoencoderConfig(**{**asdict(self.config),
                                           "scaling_factor": float(scaling_factor),
                                           "shift_factor": float(shift_factor)})

    @classmethod
    def from_diffusers(cls, module: nn.Module) -> KLAutoencoder:
        """A copy of a diffusers ``AutoencoderKL``: same configuration, same weights.

        Raises
        ------
        TypeError
            ``module`` is not a diffusers ``AutoencoderKL``.
        ValueError
            Its configuration uses a block type, activation or option this class does not
            implement (the message names the key).
        """
        if type(module).__name__ != "AutoencoderKL" or not hasattr(module, "config"):
            raise TypeError(f"module must be a diffusers AutoencoderKL, got "
                            f"{type(module).__name__}")
        cfg = module.config
        levels = len(cfg.block_out_channels)
        expected = {"down_block_types": ("DownEncoderBlock2D",) * levels,
                    "up_block_types": ("UpDecoderBlock2D",) * levels}
        for key, want in expected.items():
            if tuple(cfg[key]) != want:
                raise ValueError(f"module.config.{key}={tuple(cfg[key])} is not supported "
                                 f"(expected {want})")
        if cfg.act_fn not in ("silu", "swish"):
            raise ValueError(f"module.config.act_fn={cfg.act_fn!r} is not supported (silu only)")
        if cfg.get("latents_mean") is not None or cfg.get("latents_std") is not None:
            raise ValueError("module.config.latents_mean/latents_std (per-channel statistics) "
                             "are not supported; use scaling_factor/shift_factor")
        shift = cfg.get("shift_factor")
        ours = cls(AutoencoderConfig(
            in_channels=cfg.in_channels, out_channels=cfg.out_channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_num_groups,
            mid_block_add_attention=cfg.get("mid_block_add_attention", True),
            use_quant_conv=cfg.get("use_quant_conv", True),
            use_post_quant_conv=cfg.get("use_post_quant_conv", True),
            scaling_factor=float(cfg.scaling_factor),
            shift_factor=0.0 if shift is None else float(shift)))
        param = next(module.parameters())
        ours.to(device=param.device, dtype=param.dtype)
        state = dict(module.state_dict())
        state["scaling_factor"] = ours.scaling_factor
        state["shift_factor"] = ours.shift_factor
        ours.load_state_dict(state, strict=True)   # every tensor of both sides accounted for
        return ours

    def diffusers_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under diffusers' names (everything but the two latent-scale buffers)."""
        return {k: v for k, v in self.state_dict().items()
                if k not in ("scaling_factor", "shift_factor")}

    def to_diffusers_config(self) -> dict[str, Any]:
        """The ``AutoencoderKL(**config)`` keyword arguments of the same network."""
        levels = len(self.config.block_out_channels)
        out = {f.name: getattr(self.config, f.name) for f in fields(self.config)}
        out["scaling_factor"] = float(self.scaling_factor)
        out["shift_factor"] = float(self.shift_factor)
        return {**out, "down_block_types": ("DownEncoderBlock2D",) * levels,
                "up_block_types": ("UpDecoderBlock2D",) * levels, "act_fn": "silu"}


# --- training and latent statistics ------------------------------------------------------------
def vae_loss(model: KLAutoencoder, images: torch.Tensor, *, kl_weight: float = 1e-6,
             reconstruction: str = "l1", generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """``E_q[‖x − D(z)‖] + β KL(q(z|x) ‖ N(0, I))``, per image, averaged over the batch.

    Rombach et al. (2022, Appendix G) train with L1 + LPIPS + a patch GAN and ``β = 1e-6``;
    this is the first and last term (no perceptual or adversarial loss). Both terms are *sums*
    over an image's pixels / latent entries, as in LDM, so ``β`` has the paper's meaning.

    Parameters
    ----------
    images : Tensor, shape (B, C, H, W), values in [-1, 1]
    kl_weight : float, ``β ≥ 0``
    reconstruction : {"l1", "l2"}
        Absolute (paper) or squared error.
    generator : torch.Generator, optional
        Source of the posterior draw.

    Returns
    -------
    loss : scalar Tensor
    metrics : dict
        ``rec`` (reconstruction per image), ``kl`` (nats per image), ``mse`` (per pixel).
    """
    if reconstruction not in ("l1", "l2"):
        raise ValueError(f"reconstruction must be 'l1' or 'l2', got {reconstruction!r}")
    if not (kl_weight >= 0 and math.isfinite(kl_weight)):
        raise ValueError(f"kl_weight must be finite and >= 0, got {kl_weight}")
    posterior = model.encode(images)
    recon = model.decode(posterior.sample(generator))             # (B, C, H, W)
    err = recon - images
    per_pixel = err.abs() if reconstruction == "l1" else err.pow(2)
    rec = per_pixel.sum((1, 2, 3)).mean()
    kl = posterior.kl().mean()
    loss = rec + kl_weight * kl
    return loss, {"rec": float(rec.detach()), "kl": float(kl.detach()),
                  "mse": float(err.detach().pow(2).mean())}


@torch.no_grad()
def latent_scale_from_data(model: KLAutoencoder, images: torch.Tensor, *, shift: bool = False,
                           generator: torch.Generator | None = None,
                           batch_size: int = 256) -> tuple[float, float]:
    """``(s, b)`` with ``s = 1 / std(z)`` and ``b = mean(z)`` (or 0) over posterior draws.

    Rombach et al. (2022, Sec. 4.3.2, Appendix D.1) rescale by the component-wise standard
    deviation of latents of a data batch (SD1's ``0.18215``); SD3 also subtracts their mean
    (``shift_factor``). Statistics pool every latent entry of every image.

    Parameters
    ----------
    images : Tensor, shape (N, C, H, W), values in [-1, 1]
    shift : bool
        Return ``b = mean(z)`` (SD3) instead of ``b = 0`` (SD1). ``std`` is centred either way.

    Returns
    -------
    scaling_factor, shift_factor : float
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 2:
        raise ValueError("images must be a (N, C, H, W) tensor with N >= 2")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        z = torch.cat([model.encode(chunk).sample(generator)
                       for chunk in images.split(batch_size)]).double()
    finally:
        model.train(was_training)
    std = float(z.std())
    if not std > 0:
        raise ValueError("latents have zero variance; the scale is undefined")
    return 1.0 / std, float(z.mean()) if shift else 0.0
