"""The text-conditioned U-Net of Stable Diffusion, equal to diffusers' ``UNet2DConditionModel``.

Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models" (CVPR),
Sec. 3.3: the denoiser ``ε_θ(z_t, t, τ(y))`` of latent diffusion is a U-Net over the latent
``z_t`` whose residual blocks receive the timestep embedding and whose *spatial transformers*
read the text tokens ``τ(y)`` by cross-attention (LDM Sec. 3.3; our post's Eq. 2)::

    Attention(Q, K, V) = softmax(Q Kᵀ / √d) V,   Q = W_Q φ(z_t),  K = W_K τ(y),  V = W_V τ(y).

The pieces (``ldm/modules/diffusionmodules/openaimodel.py`` and ``ldm/modules/attention.py``,
re-expressed by diffusers) and the classes that mirror them here:

- timestep → sinusoidal features (Vaswani et al. 2017; :func:`timestep_embedding`) → two-layer
  SiLU MLP :class:`TimestepEmbedding` (``time_embedding``) of width ``4 · C_0``;
- :class:`ResnetBlock2D`: GroupNorm-SiLU-conv, plus a projection of the time embedding, then
  GroupNorm-SiLU-dropout-conv, plus the (1×1) skip;
- :class:`Transformer2DModel`: GroupNorm, ``proj_in`` (1×1 conv, or linear with
  ``use_linear_projection`` as in SD2), then :class:`BasicTransformerBlock` s — pre-LayerNorm
  self-attention, cross-attention to ``encoder_hidden_states`` and a GEGLU feed-forward
  (Shazeer 2020), each with a residual — then ``proj_out`` and the outer residual;
- :class:`CrossAttnDownBlock2D` / :class:`DownBlock2D` / :class:`UNetMidBlock2DCrossAttn` /
  :class:`CrossAttnUpBlock2D` / :class:`UpBlock2D`, :class:`Downsample2D` (stride-2 conv),
  :class:`Upsample2D` (nearest 2× then conv), and :class:`UNetConditional` ↔
  ``UNet2DConditionModel``.

Parameter names are diffusers', so :meth:`UNetConditional.from_diffusers` copies a diffusers
model with a strict ``load_state_dict`` and the outputs agree to float32 round-off
(``tests/diffusion/test_unet_conditional.py``). The configuration covered is the one SD 1.x/2.x
use: positional timestep embedding, ``"default"`` time conditioning, SiLU, the four block types
above and the cross-attention middle block, ``use_linear_projection``, per-level heads and
transformer depths; options such as class/added embeddings or dual cross-attention are refused
by :meth:`~UNetConditional.from_diffusers` with the key named.

ControlNet (Zhang et al. 2023) reuses these blocks: :func:`make_down_blocks`,
:func:`make_mid_block`, :class:`TimestepEmbedding` and :func:`run_down_blocks` build and run a
trainable copy of the encoder, and :meth:`UNetConditional.forward` adds its
``down_block_additional_residuals`` / ``mid_block_additional_residual`` to the skips and to the
middle block's output, as diffusers does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn", None)

TRANSFORMER_NORM_EPS = 1e-6
"""GroupNorm epsilon in front of every spatial transformer (diffusers' fixed value)."""
LAYER_NORM_EPS = 1e-5
"""LayerNorm epsilon inside the transformer blocks (diffusers' ``norm_eps`` default)."""


def _per_level(value, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a positive int or {n} positive ints (one per level), "
                         f"got {value!r}")
    return out


@dataclass(frozen=True)
class UNetConditionalConfig:
    """Shape of a :class:`UNetConditional`; names are ``UNet2DConditionModel`` config keys.

    Attributes
    ----------
    in_channels, out_channels : int
        Latent channels in and out (4 for SD1's autoencoder).
    down_block_types, up_block_types : tuple of str
        Per level, finest first (down) / coarsest first (up): ``"CrossAttnDownBlock2D"`` or
        ``"DownBlock2D"``; ``"CrossAttnUpBlock2D"`` or ``"UpBlock2D"``.
    mid_block_type : str or None
        ``"UNetMidBlock2DCrossAttn"`` (SD) or None (no middle block).
    block_out_channels : tuple of int
        Channels ``C_l`` of each level; ``L`` levels downsample ``L − 1`` times.
    layers_per_block : tuple of int
        Residual blocks per down level (the up level has one more); an int means every level.
    transformer_layers_per_block : tuple of int
        :class:`BasicTransformerBlock` s in each spatial transformer, per level (the middle block
        uses the last level's).
    num_attention_heads : tuple of int
        Heads per level; the head width is ``C_l / heads``. diffusers stores this under the key
        ``attention_head_dim`` (a naming slip it keeps for compatibility: SD 1.x's ``8`` means
        eight heads); :meth:`UNetConditional.from_diffusers` translates.
    cross_attention_dim : int
        Width of the text tokens ``encoder_hidden_states`` (768 in SD1.x: CLIP ViT-L/14).
    norm_num_groups, norm_eps : int, float
        GroupNorm groups (must divide every ``C_l``) and epsilon of the residual blocks.
    flip_sin_to_cos, freq_shift : bool, int
        Timestep features as ``[cos, sin]`` (True, SD) and the frequency shift (0 in SD).
    downsample_padding : int
        Padding of the stride-2 downsampling convolution (1 in SD).
    mid_block_scale_factor : float
        The middle block's residual outputs are divided by it (1 in SD).
    use_linear_projection : bool
        Linear instead of 1×1-conv ``proj_in``/``proj_out`` (SD2).
    upcast_attention : bool
        Stored for the round trip; the SDPA path of diffusers ignores it, as we do.
    dropout : float
        Dropout in the residual blocks.
    conv_in_kernel, conv_out_kernel : int
        Odd kernel sizes of the first and last convolution.
    """

    in_channels: int = 4
    out_channels: int = 4
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                         "DownBlock2D")
    mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D",
                                       "CrossAttnUpBlock2D")
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: tuple[int, ...] | int = 1
    transformer_layers_per_block: tuple[int, ...] | int = 1
    num_attention_heads: tuple[int, ...] | int = 4
    cross_attention_dim: int = 64
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    use_linear_projection: bool = False
    upcast_attention: bool = False
    dropout: float = 0.0
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3

    def __post_init__(self):
        n = len(self.block_out_channels)
        set_ = object.__setattr__
        set_(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        set_(self, "down_block_types", tuple(self.down_block_types))
        set_(self, "up_block_types", tuple(self.up_block_types))
        if n == 0:
            raise ValueError("block_out_channels must name at least one level")
        for name, allowed in (("down_block_types", DOWN_BLOCK_TYPES),
                              ("up_block_types", UP_BLOCK_TYPES)):
            types = getattr(self, name)
            if len(types) != n:
                raise ValueError(f"{name} must have one entry per level ({n}), got {types}")
            bad = [t for t in types if t not in allowed]
            if bad:
                raise ValueError(f"{name}: unsupported block type(s) {bad}; allowed {allowed}")
        if self.mid_block_type not in MID_BLOCK_TYPES:
            raise ValueError(f"mid_block_type must be one of {MID_BLOCK_TYPES}, got "
                             f"{self.mid_block_type!r}")
        for name in ("layers_per_block", "transformer_layers_per_block", "num_attention_heads"):
            set_(self, name, _per_level(getattr(self, name), n, name))
        for name in ("in_channels", "out_channels", "cross_attention_dim", "norm_num_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        bad = [c for c in self.block_out_channels if c < 1 or c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={self.norm_num_groups} must divide every entry of "
                             f"block_out_channels={self.block_out_channels} (fails for {bad})")
        for c, h in zip(self.block_out_channels, self.num_attention_heads, strict=True):
            if c % h:
                raise ValueError(f"num_attention_heads={self.num_attention_heads} must divide "
                                 f"block_out_channels={self.block_out_channels} level by level")
        if self.block_out_channels[0] % 2:
            raise ValueError("block_out_channels[0] must be even (sin/cos timestep features)")
        for name in ("conv_in_kernel", "conv_out_kernel"):
            k = getattr(self, name)
            if not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(f"{name} must be a positive odd int, got {k!r}")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.mid_block_scale_factor) and self.mid_block_scale_factor > 0):
            raise ValueError(f"mid_block_scale_factor must be finite and > 0, got "
                             f"{self.mid_block_scale_factor}")

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding MLP: ``4 · C_0`` (Ho et al. 2020; SD)."""
        return 4 * self.block_out_channels[0]

    @property
    def downsampling_factor(self) -> int:
        """``2**(L − 1)``: sides not divisible by it are handled as diffusers does."""
        return 2 ** (len(self.block_out_channels) - 1)


# --- time ----------------------------------------------------------------------------------------
def timestep_embedding(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of timesteps (Vaswani et al. 2017, Sec. 3.5; DDPM; post Eq. 4).

    ``ω_j = max_period^(−j / (dim/2 − freq_shift))``, ``j = 0 … dim/2 − 1``; the features are
    ``[sin(t ω), cos(t ω)]`` or, with ``flip_sin_to_cos`` (SD), ``[cos(t ω), sin(t ω)]``.

    Parameters
    ----------
    timesteps : Tensor, shape (B,)
        Discrete or continuous timesteps (float32 arithmetic).
    dim : int
        Even feature width.

    Returns
    -------
    Tensor, shape (B, dim), float32
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape (B,), got {tuple(timesteps.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                    device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))                       # (dim/2,)
    angles = timesteps[:, None].float() * freqs[None, :]                    # (B, dim/2)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """``linear_2(SiLU(linear_1(features)))``: timestep features → the blocks' embedding."""

    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(sample)))


# --- residual and sampling blocks ----------------------------------------------------------------
class ResnetBlock2D(nn.Module):
    """``(skip(x) + conv2(drop(SiLU(GN(conv1(SiLU(GN(x))) + W SiLU(e)))))) / s``.

    ``e`` is the timestep embedding, broadcast over the pixels; ``skip`` is a 1×1 convolution
    when the channel count changes; ``s`` is ``output_scale_factor`` (1 except in configs that set
    ``mid_block_scale_factor``).
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int,
                 eps: float, dropout: float = 0.0, output_scale_factor: float = 1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = (nn.Conv2d(in_channels, out_channels, 1)
                              if in_channels != out_channels else None)
        self.output_scale_factor = output_scale_factor

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(input_tensor)))                   # (B, C_out, H, W)
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor)
        return (skip + h) / self.output_scale_factor


class Downsample2D(nn.Module):
    """Stride-2 3×3 convolution (``padding`` 1 in SD; 0 pads right/bottom by one, as LDM)."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            hidden_states = F.pad(hidden_states, (0, 1, 0, 1))
        return self.conv(hidden_states)                                    # (B, C, ⌈H/2⌉, ⌈W/2⌉)


class Upsample2D(nn.Module):
    """Nearest-neighbour 2× (or to ``output_size``) followed by a 3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, hidden_states: torch.Tensor,
                output_size: tuple[int, int] | None = None) -> torch.Tensor:
        if output_size is None:
            hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
        else:
            hidden_states = F.interpolate(hidden_states, size=output_size, mode="nearest")
        return self.conv(hidden_states)


# --- attention -----------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head (cross-)attention ``W_o softmax(Q Kᵀ / √d) V`` (Vaswani et al. 2017, Eq. 1;
    post Eq. 2).

    ``Q`` from ``hidden_states``; ``K, V`` from ``encoder_hidden_states`` when given (cross-
    attention to the text tokens, LDM Sec. 3.3), else from ``hidden_states`` (self-attention).
    No biases on the Q/K/V maps, a bias on the output (SD's convention). ``to_out`` is a
    (projection, dropout) list only so that parameter names match diffusers' (``to_out.0``).
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int,
                 cross_attention_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if cross_attention_dim is None else cross_attention_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(dropout)])

    def forward(self, hidden_states: torch.Tensor,
                encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, n, _ = hidden_states.shape
        q = self.to_q(hidden_states).view(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, d)
        k = self.to_k(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)                             # (B, h, N, d)
        out = out.transpose(1, 2).reshape(b, n, -1)                               # (B, N, h d)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    """``a ⊙ GELU(g)`` with ``[a, g] = proj(x)`` (Shazeer 2020, "GLU Variants", Eq. 5)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(hidden_states).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to ``4 · dim`` hidden units, dropout, linear back to ``dim`` (``net.0 … net.2``)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, mult * dim), nn.Dropout(dropout),
                                  nn.Linear(mult * dim, dim)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            hidden_states = module(hidden_states)
        return hidden_states


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention and GEGLU feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int,
                 eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.ff = FeedForward(dim)

    def forward(self, hidden_states: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.attn1(self.norm1(hidden_states)) + hidden_states       # (B, N, D)
        hidden_states = self.attn2(self.norm2(hidden_states),
                                   encoder_hidden_states) + hidden_states
        return self.ff(self.norm3(hidden_states)) + hidden_states


class Transformer2DModel(nn.Module):
    """Spatial transformer: pixels as ``H·W`` tokens through :class:`BasicTransformerBlock` s
    (post Eq. 4).

    ``x + proj_out(blocks(proj_in(GN(x))))`` with the feature map flattened to tokens between
    the projections (LDM Sec. 3.3, Fig. 3's "cross-attention" boxes).
    """

    def __init__(self, heads: int, dim_head: int, in_channels: int, num_layers: int,
                 cross_attention_dim: int, groups: int, use_linear_projection: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(groups, in_channels, eps=TRANSFORMER_NORM_EPS)
        if use_linear_projection:
            self.proj_in = nn.Linear(in_channels, inner)
            self.proj_out = nn.Linear(inner, in_channels)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner, 1)
            self.proj_out = nn.Conv2d(inner, in_channels, 1)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(inner, heads, dim_head, cross_attention_dim)
            for _ in range(num_layers)])

    def forward(self, hidden_states: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        b, _, h, w = hidden_states.shape
        residual = hidden_states
        x = self.norm(hidden_states)
        if not self.use_linear_projection:
            x = self.proj_in(x)
        inner = x.shape[1]
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, inner)                 # (B, HW, D)
        if self.use_linear_projection:
            x = self.proj_in(x)
            inner = x.shape[-1]
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states)
        if self.use_linear_projection:
            x = self.proj_out(x)
        x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()         # (B, D, H, W)
        if not self.use_linear_projection:
            x = self.proj_out(x)
        return x + residual


# --- U-Net levels --------------------------------------------------------------------------------
class DownBlock2D(nn.Module):
    """``num_layers`` residual blocks, then an optional :class:`Downsample2D`.

    ``forward`` returns the output and the tuple of skip tensors (one per residual block, plus
    the downsampled output), which the decoder consumes in reverse.
    """

    has_cross_attention = False

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int,
                 groups: int, eps: float, add_downsample: bool, downsample_padding: int = 1,
                 dropout: float = 0.0, **_: Any):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels,
                          groups, eps, dropout) for i in range(num_layers)])
        self.downsamplers = (nn.ModuleList([Downsample2D(out_channels, downsample_padding)])
                             if add_downsample else None)

    def _attend(self, i, hidden_states, encoder_hidden_states):
        return hidden_states

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor,
                encoder_hidden_states: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips = ()
        for i, resnet in enumerate(self.resnets):
            hidden_states = self._attend(i, resnet(hidden_states, temb), encoder_hidden_states)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class CrossAttnDownBlock2D(DownBlock2D):
    """:class:`DownBlock2D` with a :class:`Transformer2DModel` after each residual block."""

    has_cross_attention = True

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int,
                 groups: int, eps: float, add_downsample: bool, downsample_padding: int = 1,
                 dropout: float = 0.0, *, heads: int, transformer_layers: int,
                 cross_attention_dim: int, use_linear_projection: bool = False):
        super().__init__(in_channels, out_channels, temb_channels, num_layers, groups, eps,
                         add_downsample, downsample_padding, dropout)
        self.attentions = nn.ModuleList([
            Transformer2DModel(heads, out_channels // heads, out_channels, transformer_layers,
                               cross_attention_dim, groups, use_linear_projection)
            for _ in range(num_layers)])

    def _attend(self, i, hidden_states, encoder_hidden_states):
        return self.attentions[i](hidden_states, encoder_hidden_states)


class UNetMidBlock2DCrossAttn(nn.Module):
    """Residual block, then (spatial transformer, residual block) at the coarsest level."""

    has_cross_attention = True

    def __init__(self, channels: int, temb_channels: int, groups: int, eps: float, *,
                 heads: int, transformer_layers: int, cross_attention_dim: int,
                 use_linear_projection: bool = False, output_scale_factor: float = 1.0,
                 dropout: float = 0.0):
        super().__init__()
        self.attentions = nn.ModuleList([
            Transformer2DModel(heads, channels // heads, channels, transformer_layers,
                               cross_attention_dim, groups, use_linear_projection)])
        self.resnets = nn.ModuleList([
            ResnetBlock2D(channels, channels, temb_channels, groups, eps, dropout,
                          output_scale_factor) for _ in range(2)])

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.resnets[0](hidden_states, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:], strict=True):
            hidden_states = resnet(attn(hidden_states, encoder_hidden_states), temb)
        return hidden_states


class UpBlock2D(nn.Module):
    """``num_layers`` residual blocks over ``[h, skip]`` (concatenated), then an upsample.

    The first block sees ``prev_output_channel + skip`` channels; the skip of the last block
    comes from the level above (``in_channels``).
    """

    has_cross_attention = False

    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int,
                 temb_channels: int, num_layers: int, groups: int, eps: float,
                 add_upsample: bool, dropout: float = 0.0, **_: Any):
        super().__init__()
        self.resnets = nn.ModuleList()
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            first = prev_output_channel if i == 0 else out_channels
            self.resnets.append(ResnetBlock2D(first + skip_channels, out_channels,
                                              temb_channels, groups, eps, dropout))
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def _attend(self, i, hidden_states, encoder_hidden_states):
        return hidden_states

    def forward(self, hidden_states: torch.Tensor, res_hidden_states_tuple: tuple,
                temb: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                upsample_size: tuple[int, int] | None = None) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            skip = res_hidden_states_tuple[-1 - i]
            hidden_states = resnet(torch.cat([hidden_states, skip], dim=1), temb)
            hidden_states = self._attend(i, hidden_states, encoder_hidden_states)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states


class CrossAttnUpBlock2D(UpBlock2D):
    """:class:`UpBlock2D` with a :class:`Transformer2DModel` after each residual block."""

    has_cross_attention = True

    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int,
                 temb_channels: int, num_layers: int, groups: int, eps: float,
                 add_upsample: bool, dropout: float = 0.0, *, heads: int,
                 transformer_layers: int, cross_attention_dim: int,
                 use_linear_projection: bool = False):
        super().__init__(in_channels, prev_output_channel, out_channels, temb_channels,
                         num_layers, groups, eps, add_upsample, dropout)
        self.attentions = nn.ModuleList([
            Transformer2DModel(heads, out_channels // heads, out_channels, transformer_layers,
                               cross_attention_dim, groups, use_linear_projection)
            for _ in range(num_layers)])

    def _attend(self, i, hidden_states, encoder_hidden_states):
        return self.attentions[i](hidden_states, encoder_hidden_states)


def make_down_blocks(config: UNetConditionalConfig) -> nn.ModuleList:
    """The encoder levels of ``config`` (shared by :class:`UNetConditional` and ControlNet)."""
    chans = config.block_out_channels
    blocks = nn.ModuleList()
    for i, kind in enumerate(config.down_block_types):
        common = dict(in_channels=chans[max(i - 1, 0)], out_channels=chans[i],
                      temb_channels=config.time_embed_dim, num_layers=config.layers_per_block[i],
                      groups=config.norm_num_groups, eps=config.norm_eps,
                      add_downsample=i < len(chans) - 1,
                      downsample_padding=config.downsample_padding, dropout=config.dropout)
        if kind == "CrossAttnDownBlock2D":
            blocks.append(CrossAttnDownBlock2D(
                **common, heads=config.num_attention_heads[i],
                transformer_layers=config.transformer_layers_per_block[i],
                cross_attention_dim=config.cross_attention_dim,
                use_linear_projection=config.use_linear_projection))
        else:
            blocks.append(DownBlock2D(**common))
    return blocks


def make_mid_block(config: UNetConditionalConfig) -> UNetMidBlock2DCrossAttn | None:
    """The middle block of ``config`` (None when ``mid_block_type`` is None)."""
    if config.mid_block_type is None:
        return None
    return UNetMidBlock2DCrossAttn(
        config.block_out_channels[-1], config.time_embed_dim, config.norm_num_groups,
        config.norm_eps, heads=config.num_attention_heads[-1],
        transformer_layers=config.transformer_layers_per_block[-1],
        cross_attention_dim=config.cross_attention_dim,
        use_linear_projection=config.use_linear_projection,
        output_scale_factor=config.mid_block_scale_factor, dropout=config.dropout)


def make_up_blocks(config: UNetConditionalConfig) -> nn.ModuleList:
    """The decoder levels of ``config``, coarsest first."""
    chans = config.block_out_channels[::-1]
    heads = config.num_attention_heads[::-1]
    layers = config.layers_per_block[::-1]
    depth = config.transformer_layers_per_block[::-1]
    blocks = nn.ModuleList()
    for i, kind in enumerate(config.up_block_types):
        common = dict(in_channels=chans[min(i + 1, len(chans) - 1)],
                      prev_output_channel=chans[max(i - 1, 0)], out_channels=chans[i],
                      temb_channels=config.time_embed_dim, num_layers=layers[i] + 1,
                      groups=config.norm_num_groups, eps=config.norm_eps,
                      add_upsample=i < len(chans) - 1, dropout=config.dropout)
        if kind == "CrossAttnUpBlock2D":
            blocks.append(CrossAttnUpBlock2D(
                **common, heads=heads[i], transformer_layers=depth[i],
                cross_attention_dim=config.cross_attention_dim,
                use_linear_projection=config.use_linear_projection))
        else:
            blocks.append(UpBlock2D(**common))
    return blocks


def run_down_blocks(blocks: nn.ModuleList, hidden_states: torch.Tensor, temb: torch.Tensor,
                    encoder_hidden_states: torch.Tensor
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Run encoder levels; returns the coarsest features and every skip, ``conv_in``'s first."""
    skips = (hidden_states,)
    for block in blocks:
        hidden_states, res = block(hidden_states, temb, encoder_hidden_states)
        skips += res
    return hidden_states, skips


# --- the U-Net -----------------------------------------------------------------------------------
def diffusers_config(module: nn.Module, class_name: str, required: dict) -> Any:
    """``module.config`` once ``module`` is a diffusers ``class_name`` whose configuration has
    each key of ``required`` at its value (a missing key counts as that value; ``act_fn``
    ``"swish"`` equals ``"silu"``) and a ``norm_num_groups``: the options our ports implement.

    Raises
    ------
    TypeError
        ``module`` is not a ``class_name``.
    ValueError
        A configuration key has another value (the key is named).
    """
    if type(module).__name__ != class_name or not hasattr(module, "config"):
        raise TypeError(f"module must be a diffusers {class_name}, got {type(module).__name__}")
    cfg = module.config
    for key, want in required.items():
        got = cfg.get(key, want)
        if got != want and not (key == "act_fn" and got == "swish"):
            raise ValueError(f"module.config.{key}={got!r} is not supported (expected {want!r})")
    if cfg.norm_num_groups is None:
        raise ValueError("module.config.norm_num_groups=None is not supported")
    return cfg


class UNetConditional(nn.Module):
    """Text-conditioned latent U-Net (Rombach et al. 2022); mirrors ``UNet2DConditionModel``.

    Parameters
    ----------
    config : UNetConditionalConfig, optional
        Shape; keyword arguments override its fields.
    """

    def __init__(self, config: UNetConditionalConfig | None = None, **overrides: Any):
        super().__init__()
        config = (UNetConditionalConfig(**overrides) if config is None
                  else UNetConditionalConfig(**{**asdict(config), **overrides}))
        self.config = config
        c0 = config.block_out_channels[0]
        self.conv_in = nn.Conv2d(config.in_channels, c0, config.conv_in_kernel,
                                 padding=config.conv_in_kernel // 2)
        self.time_embedding = TimestepEmbedding(c0, config.time_embed_dim)
        self.down_blocks = make_down_blocks(config)
        self.mid_block = make_mid_block(config)
        self.up_blocks = make_up_blocks(config)
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, c0, eps=config.norm_eps)
        self.conv_out = nn.Conv2d(c0, config.out_channels, config.conv_out_kernel,
                                  padding=config.conv_out_kernel // 2)

    # -- the pieces, public so that ControlNet and samplers can call them -----------------------
    def time_embed(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """Timestep embedding ``(B, 4 C_0)`` for a batch ``sample``; ``timestep`` scalar or (B,)."""
        t = timestep_tensor(timestep, sample)
        feats = timestep_embedding(t, self.config.block_out_channels[0],
                                   self.config.flip_sin_to_cos, self.config.freq_shift)
        return self.time_embedding(feats.to(sample.dtype))

    def check_inputs(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` naming the argument whose type or shape is wrong."""
        cfg = self.config
        for name, x in (("sample", sample), ("encoder_hidden_states", encoder_hidden_states)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if sample.ndim != 4 or sample.shape[1] != cfg.in_channels:
            raise ValueError(f"sample must have shape (B, {cfg.in_channels}, H, W), got "
                             f"{tuple(sample.shape)}")
        e = encoder_hidden_states
        if e.ndim != 3 or e.shape[0] != sample.shape[0] or e.shape[2] != cfg.cross_attention_dim:
            raise ValueError(f"encoder_hidden_states must have shape (B={sample.shape[0]}, S, "
                             f"{cfg.cross_attention_dim}), got {tuple(e.shape)}")

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
                mid_block_additional_residual: torch.Tensor | None = None) -> torch.Tensor:
        """The noise (or v) prediction ``ε_θ(z_t, t, τ(y))`` (LDM Eq. 3; post Eqs. 2-3).

        Parameters
        ----------
        sample : Tensor, shape (B, C_in, H, W)
            Noisy latents ``z_t``.
        timestep : int, float or Tensor of shape () or (B,)
            Diffusion timesteps (SD: integers in ``[0, 1000)``).
        encoder_hidden_states : Tensor, shape (B, S, cross_attention_dim)
            Per-token text features ``τ(y)``.
        down_block_additional_residuals : tuple of Tensor, optional
            ControlNet: one tensor per skip connection (``conv_in`` output first, then each
            block's), added to the skips; requires ``mid_block_additional_residual`` too.
        mid_block_additional_residual : Tensor, optional
            ControlNet: added to the middle block's output.

        Returns
        -------
        Tensor, shape (B, C_out, H, W)
        """
        self.check_inputs(sample, encoder_hidden_states)
        if (down_block_additional_residuals is None) != (mid_block_additional_residual is None):
            raise ValueError("down_block_additional_residuals and mid_block_additional_residual "
                             "must be given together (ControlNet residuals)")
        factor = self.config.downsampling_factor
        forward_upsample_size = any(s % factor for s in sample.shape[-2:])
        emb = self.time_embed(sample, timestep)                            # (B, 4 C_0)
        h = self.conv_in(sample)                                           # (B, C_0, H, W)
        h, skips = run_down_blocks(self.down_blocks, h, emb, encoder_hidden_states)
        if down_block_additional_residuals is not None:
            skips = _add_residuals(skips, down_block_additional_residuals)
        if self.mid_block is not None:
            h = self.mid_block(h, emb, encoder_hidden_states)
        if mid_block_additional_residual is not None:
            if mid_block_additional_residual.shape != h.shape:
                raise ValueError(f"mid_block_additional_residual must have shape "
                                 f"{tuple(h.shape)}, got "
                                 f"{tuple(mid_block_additional_residual.shape)}")
            h = h + mid_block_additional_residual
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            size = (skips[-1].shape[2:] if forward_upsample_size and i < len(self.up_blocks) - 1
                    else None)
            h = block(h, res, emb, encoder_hidden_states, size)
        return self.conv_out(F.silu(self.conv_norm_out(h)))               # (B, C_out, H, W)

    # -- diffusers interop --------------------------------------------------------------------
    @classmethod
    def from_diffusers(cls, module: nn.Module) -> UNetConditional:
        """A copy of a diffusers ``UNet2DConditionModel``: same configuration, same weights.

        Raises
        ------
        TypeError
            ``module`` is not a ``UNet2DConditionModel``.
        ValueError
            Its configuration uses an option this class does not implement (the key is named).
        """
        required = {
            "center_input_sample": False, "only_cross_attention": False,
            "act_fn": "silu", "encoder_hid_dim": None, "encoder_hid_dim_type": None,
            "dual_cross_attention": False, "class_embed_type": None,
            "addition_embed_type": None, "num_class_embeds": None,
            "resnet_time_scale_shift": "default", "resnet_skip_time_act": False,
            "resnet_out_scale_factor": 1.0, "time_embedding_type": "positional",
            "time_embedding_dim": None, "time_embedding_act_fn": None,
            "timestep_post_act": None, "time_cond_proj_dim": None,
            "attention_type": "default", "class_embeddings_concat": False,
            "cross_attention_norm": None, "num_attention_heads": None,
            "reverse_transformer_layers_per_block": None,
        }
        cfg = diffusers_config(module, "UNet2DConditionModel", required)
        if cfg.get("mid_block_only_cross_attention") not in (None, False):
            raise ValueError("module.config.mid_block_only_cross_attention=True is not supported")
        cross = cfg.cross_attention_dim
        if not isinstance(cross, int):
            if len(set(cross)) != 1:
                raise ValueError(f"module.config.cross_attention_dim={cross} (per level) is not "
                                 f"supported; one width for every level")
            cross = cross[0]
        depth = cfg.transformer_layers_per_block
        if not isinstance(depth, int) and any(not isinstance(d, int) for d in depth):
            raise ValueError(f"module.config.transformer_layers_per_block={depth} (per block) "
                             f"is not supported")
        try:
            config = UNetConditionalConfig(
                in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                down_block_types=tuple(cfg.down_block_types),
                mid_block_type=cfg.mid_block_type, up_block_types=tuple(cfg.up_block_types),
                block_out_channels=tuple(cfg.block_out_channels),
                layers_per_block=cfg.layers_per_block, transformer_layers_per_block=depth,
                num_attention_heads=cfg.attention_head_dim, cross_attention_dim=cross,
                norm_num_groups=cfg.norm_num_groups, norm_eps=cfg.norm_eps,
                flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift,
                downsample_padding=cfg.downsample_padding,
                mid_block_scale_factor=cfg.mid_block_scale_factor,
                use_linear_projection=cfg.use_linear_projection,
                upcast_attention=cfg.upcast_attention, dropout=cfg.dropout,
                conv_in_kernel=cfg.conv_in_kernel, conv_out_kernel=cfg.conv_out_kernel)
        except ValueError as err:
            raise ValueError(f"module.config: {err}") from err
        ours = cls(config)
        param = next(module.parameters())
        ours.to(device=param.device, dtype=param.dtype)
        ours.load_state_dict(module.state_dict(), strict=True)  # every tensor accounted for
        return ours

    def to_diffusers_config(self) -> dict[str, Any]:
        """The ``UNet2DConditionModel(**config)`` keyword arguments of the same network."""
        c = asdict(self.config)
        c["attention_head_dim"] = c.pop("num_attention_heads")
        return c


def timestep_tensor(timestep, sample: torch.Tensor) -> torch.Tensor:
    """``timestep`` (number, 0-d or (B,) / (1,) tensor) as a (B,) tensor on ``sample``'s device."""
    if isinstance(timestep, bool):
        raise TypeError("timestep must be a number or a tensor, got bool")
    if not isinstance(timestep, torch.Tensor):
        if not isinstance(timestep, (int, float)):
            raise TypeError(f"timestep must be a number or a tensor, got "
                            f"{type(timestep).__name__}")
        dtype = torch.int64 if isinstance(timestep, int) else torch.float32
        timestep = torch.tensor([timestep], dtype=dtype)
    timestep = timestep.to(sample.device).reshape(-1) if timestep.ndim == 0 else \
        timestep.to(sample.device)
    b = sample.shape[0]
    if timestep.ndim != 1 or timestep.shape[0] not in (1, b):
        raise ValueError(f"timestep must be a scalar or have shape ({b},), got "
                         f"{tuple(timestep.shape)}")
    return timestep.expand(b)


def _add_residuals(skips: tuple[torch.Tensor, ...],
                   residuals: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    if len(residuals) != len(skips):
        raise ValueError(f"down_block_additional_residuals must hold {len(skips)} tensors (one "
                         f"per skip connection), got {len(residuals)}")
    for i, (s, r) in enumerate(zip(skips, residuals, strict=True)):
        if r.shape != s.shape:
            raise ValueError(f"down_block_additional_residuals[{i}] must have shape "
                             f"{tuple(s.shape)}, got {tuple(r.shape)}")
    return tuple(s + r for s, r in zip(skips, residuals, strict=True))
