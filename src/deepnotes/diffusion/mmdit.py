"""The multimodal diffusion transformer (MM-DiT) of Stable Diffusion 3, equal to diffusers'
``SD3Transformer2DModel``; and SD3's logit-normal training-time distribution.

Esser et al. (2024), "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"
(ICML), Sec. 4 and Fig. 2. Text and image are two token sequences with *their own weights*
(projections, MLPs, modulation) that meet only inside one attention over their concatenation:

- the latent ``(B, C, H, W)`` is cut into ``p×p`` patches by a stride-``p`` convolution and gets
  fixed 2-D sine-cosine positions (post Eq. 5), cropped from the centre of a
  ``pos_embed_max_size²`` table;
- the timestep (sinusoidal features, an MLP) plus the pooled text vector (an MLP) give one
  conditioning vector ``y`` (post Eq. 6);
- each block modulates both streams by adaLN-Zero (post Eq. 7): ``LN(x)(1 + γ) + β`` before
  attention and MLP, and a gate ``α`` on each residual branch, all six vectors a linear map of
  ``SiLU(y)``; the last block's text stream stops after attention (``context_pre_only``);
- joint attention (post Eq. 8): queries, keys and values of both streams, optionally RMS-normalised
  per head (``qk_norm="rms_norm"``, SD3.5), concatenated along the sequence, one softmax;
- a final adaptive LayerNorm and a linear map unpatchify back to ``(B, C, H, W)``.

Parameter names follow diffusers' module tree, so :meth:`MMDiT.from_diffusers` loads a diffusers
``SD3Transformer2DModel`` with a strict ``load_state_dict`` (every tensor accounted for) and the
forward gives the same output (``tests/diffusion/test_mmdit.py``). Class correspondence:
:class:`PatchEmbed` ↔ ``embeddings.PatchEmbed`` (SD3 cropping), :class:`TimeTextEmbedding` ↔
``CombinedTimestepTextProjEmbeddings``, :class:`AdaLNZero` ↔ ``AdaLayerNormZero``,
:class:`AdaLNContinuous` ↔ ``AdaLayerNormContinuous``, :class:`RMSNorm` ↔
``normalization.RMSNorm``, :class:`JointAttention` ↔ ``Attention`` + ``JointAttnProcessor2_0``,
:class:`FeedForward` ↔ ``attention.FeedForward("gelu-approximate")``, :class:`MMDiTBlock` ↔
``JointTransformerBlock``, :class:`MMDiT` ↔ ``SD3Transformer2DModel``. Not mirrored: SD3.5's dual
attention layers (MM-DiT-X), ControlNet residuals, IP-Adapter and layer skipping.

The timestep convention is diffusers': ``timestep`` is ``1000 t`` for the rectified-flow time
``t ∈ [0, 1]`` (``t = 1`` noise), as the SD3 pipeline passes ``σ·1000``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

NORM_EPS = 1e-6
"""Epsilon of every LayerNorm/RMSNorm in the model (SD3's value)."""

TIME_FEATURES = 256
"""Sinusoidal timestep features fed to the timestep MLP (diffusers' ``Timesteps(256)``)."""

QK_NORMS = (None, "rms_norm")


@dataclass(frozen=True)
class MMDiTConfig:
    """Shape of an :class:`MMDiT`; field names are diffusers' ``SD3Transformer2DModel`` keys.

    Attributes
    ----------
    sample_size : int
        Latent height/width the positions are centred for (``base_size = sample_size / p``).
    patch_size : int
        ``p``: side of the square patches (2 in SD3).
    in_channels, out_channels : int
        Latent channels in and out (16 in SD3).
    num_layers : int
        MM-DiT blocks (depth ``d``; SD3-medium 24).
    attention_head_dim, num_attention_heads : int
        Heads and their width; the model width is their product (must be even).
    joint_attention_dim : int
        Width of the per-token text features (SD3: 4096, CLIP-L/G padded and T5 concatenated).
    caption_projection_dim : int
        Width the text tokens are projected to; must equal the model width.
    pooled_projection_dim : int
        Width of the pooled text vector (SD3: 2048, CLIP-L ⊕ CLIP-G).
    pos_embed_max_size : int
        Side of the position table the positions are cropped from (patches).
    qk_norm : str or None
        ``"rms_norm"`` normalises queries and keys per head (with a learnt scale), or None.
    """

    sample_size: int = 8
    patch_size: int = 2
    in_channels: int = 16
    num_layers: int = 4
    attention_head_dim: int = 32
    num_attention_heads: int = 4
    joint_attention_dim: int = 64
    caption_projection_dim: int = 128
    pooled_projection_dim: int = 64
    out_channels: int = 16
    pos_embed_max_size: int = 8
    qk_norm: str | None = "rms_norm"

    def __post_init__(self) -> None:
        for name in ("sample_size", "patch_size", "in_channels", "num_layers",
                     "attention_head_dim", "num_attention_heads", "joint_attention_dim",
                     "caption_projection_dim", "pooled_projection_dim", "out_channels",
                     "pos_embed_max_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.inner_dim % 2:
            raise ValueError(f"num_attention_heads * attention_head_dim must be even for the "
                             f"2-D sin-cos positions, got {self.inner_dim}")
        if self.caption_projection_dim != self.inner_dim:
            raise ValueError(f"caption_projection_dim={self.caption_projection_dim} must equal "
                             f"num_attention_heads * attention_head_dim={self.inner_dim}")
        if self.qk_norm not in QK_NORMS:
            raise ValueError(f"qk_norm must be one of {QK_NORMS}, got {self.qk_norm!r}")
        if self.sample_size // self.patch_size > self.pos_embed_max_size:
            raise ValueError(f"pos_embed_max_size={self.pos_embed_max_size} is smaller than "
                             f"sample_size / patch_size = {self.sample_size // self.patch_size}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


# --- embeddings ----------------------------------------------------------------------------------
def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``[sin(pos ω), cos(pos ω)]`` with ``ω_k = 10000^{-2k/dim}`` (post Eq. 5), float64.

    pos : (M,) positions; returns (M, dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = torch.outer(pos.reshape(-1).to(torch.float64), omega)                 # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d_positions(dim: int, grid_size: int, base_size: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions of a ``grid_size²`` patch grid, (grid_size², dim) float32.

    Token ``(i, j)`` (row-major) gets ``[sincos_1d(j s), sincos_1d(i s)]``, each half ``dim/2``
    wide, with ``s = base_size / grid_size`` so that the table spans ``base_size`` "units"
    whatever its size (DiT/SD3; the column coordinate comes first, as in diffusers).
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    coord = torch.arange(grid_size, dtype=torch.float32) / (grid_size / base_size)
    rows = coord.repeat_interleave(grid_size)                                   # i of token i·G+j
    cols = coord.repeat(grid_size)                                              # j
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1).float()


def timestep_features(timestep: torch.Tensor, dim: int = TIME_FEATURES) -> torch.Tensor:
    """Sinusoidal features ``[cos(τ f_k), sin(τ f_k)]``, ``f_k = 10000^{-k/(dim/2)}``, (B, dim).

    ``timestep`` (B,) is ``τ = 1000 t`` (diffusers' ``Timesteps(flip_sin_to_cos=True,
    downscale_freq_shift=0)``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32,
                                                      device=timestep.device) / half)
    arg = timestep[:, None].float() * freqs[None, :]                            # (B, half)
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class PatchEmbed(nn.Module):
    """Patchify ``(B, C, H, W)`` into ``(B, H W / p², D)`` tokens plus 2-D positions."""

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        p, d = config.patch_size, config.inner_dim
        self.patch_size = p
        self.max_size = config.pos_embed_max_size
        self.proj = nn.Conv2d(config.in_channels, d, kernel_size=p, stride=p)
        table = sincos_2d_positions(d, self.max_size, config.sample_size // p)
        self.register_buffer("pos_embed", table.unsqueeze(0))                  # (1, M², D)

    def positions(self, h: int, w: int) -> torch.Tensor:
        """The centre ``h×w`` crop of the table, (1, h w, D) (SD3's cropping)."""
        top, left = (self.max_size - h) // 2, (self.max_size - w) // 2
        table = self.pos_embed.reshape(1, self.max_size, self.max_size, -1)
        return table[:, top:top + h, left:left + w].reshape(1, h * w, -1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h, w = latent.shape[-2] // self.patch_size, latent.shape[-1] // self.patch_size
        x = self.proj(latent).flatten(2).transpose(1, 2)                        # (B, h w, D)
        return x + self.positions(h, w)


class MLP2(nn.Module):
    """``linear_2(SiLU(linear_1(x)))``: the timestep and pooled-text embedders."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_out)
        self.linear_2 = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimeTextEmbedding(nn.Module):
    """``y = MLP(sinusoid(τ)) + MLP(pooled)`` (post Eq. 6), (B, D)."""

    def __init__(self, dim: int, pooled_dim: int):
        super().__init__()
        self.timestep_embedder = MLP2(TIME_FEATURES, dim)
        self.text_embedder = MLP2(pooled_dim, dim)

    def forward(self, timestep: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        t_emb = self.timestep_embedder(timestep_features(timestep).to(pooled.dtype))
        return t_emb + self.text_embedder(pooled)


# --- normalisation and modulation ----------------------------------------------------------------
def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNZero(nn.Module):
    """adaLN-Zero (post Eq. 7): six vectors from ``SiLU(y)``; returns the modulated LN(x) and
    ``(gate_msa, shift_mlp, scale_mlp, gate_mlp)``. Unlike DiT, diffusers/SD3 initialise the
    linear map like any other (no zero init); the name is the architecture's."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, emb: torch.Tensor):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.linear(F.silu(emb)).chunk(6, dim=1)
        return _modulate(self.norm(x), shift_msa, scale_msa), gate_msa, shift_mlp, scale_mlp, \
            gate_mlp


class AdaLNContinuous(nn.Module):
    """``LN(x)(1 + scale) + shift`` with ``(scale, shift)`` from ``SiLU(y)`` (this order, as in
    diffusers): the final layer and the last block's text stream."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(emb).to(x.dtype)).chunk(2, dim=1)
        return _modulate(self.norm(x), shift, scale)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + ε) · w`` over the last axis (the per-head QK norm), mean in float32."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return x * self.weight


# --- attention and MLP ---------------------------------------------------------------------------
class _GELUProj(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """``Linear(4D → D)(GELU_tanh(Linear(D → 4D) x))``; ``net.1`` is diffusers' dropout (p = 0)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.ModuleList([_GELUProj(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class JointAttention(nn.Module):
    """One softmax over the concatenated image and text tokens, separate weights per stream
    (post Eq. 8). ``context_pre_only``: no output projection for the text stream (last block)."""

    def __init__(self, dim: int, heads: int, head_dim: int, qk_norm: str | None,
                 context_pre_only: bool):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, dim) for _ in range(3))
        norm = (lambda: RMSNorm(head_dim)) if qk_norm == "rms_norm" else (lambda: None)
        self.norm_q, self.norm_k, self.norm_added_q, self.norm_added_k = (norm() for _ in range(4))
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Identity()])
        self.to_add_out = None if context_pre_only else nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor, projs, norms) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values of one stream, each (B, h, N, hd), by one matrix product
        over the three projections' stacked weights (the same parameters, fewer kernel calls)."""
        b, n, _ = x.shape
        weight = torch.cat([p.weight for p in projs])
        bias = torch.cat([p.bias for p in projs])
        qkv = F.linear(x, weight, bias).view(b, n, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                          # (B, h, N, hd)
        if norms[0] is not None:
            q, k = norms[0](q), norms[1](k)
        return q, k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor):
        n = x.shape[1]
        qx, kx, vx = self._qkv(x, (self.to_q, self.to_k, self.to_v), (self.norm_q, self.norm_k))
        qc, kc, vc = self._qkv(context, (self.add_q_proj, self.add_k_proj, self.add_v_proj),
                               (self.norm_added_q, self.norm_added_k))
        q, k, v = (torch.cat(pair, dim=2) for pair in ((qx, qc), (kx, kc), (vx, vc)))
        out = F.scaled_dot_product_attention(q, k, v)                           # (B, h, N+L, hd)
        out = out.transpose(1, 2).flatten(2)                                    # (B, N+L, D)
        x_out = self.to_out[0](out[:, :n])
        c_out = out[:, n:] if self.to_add_out is None else self.to_add_out(out[:, n:])
        return x_out, c_out


class MMDiTBlock(nn.Module):
    """One MM-DiT block (Esser et al. 2024, Fig. 2b): two streams, adaLN-Zero each, joint attention,
    per-stream MLPs. Returns ``(context, x)`` (diffusers' order); context is None in the last
    block (``context_pre_only``)."""

    def __init__(self, config: MMDiTConfig, context_pre_only: bool):
        super().__init__()
        d = config.inner_dim
        self.context_pre_only = context_pre_only
        self.norm1 = AdaLNZero(d)
        self.norm1_context = AdaLNContinuous(d) if context_pre_only else AdaLNZero(d)
        self.attn = JointAttention(d, config.num_attention_heads, config.attention_head_dim,
                                   config.qk_norm, context_pre_only)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=NORM_EPS)
        self.ff = FeedForward(d)
        if context_pre_only:
            self.norm2_context = self.ff_context = None
        else:
            self.norm2_context = nn.LayerNorm(d, elementwise_affine=False, eps=NORM_EPS)
            self.ff_context = FeedForward(d)

    def forward(self, x: torch.Tensor, context: torch.Tensor, temb: torch.Tensor):
        nx, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(x, temb)
        if self.context_pre_only:
            nc = self.norm1_context(context, temb)
        else:
            nc, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(context, temb)
        attn_x, attn_c = self.attn(nx, nc)
        x = x + gate_msa[:, None] * attn_x
        x = x + gate_mlp[:, None] * self.ff(_modulate(self.norm2(x), shift_mlp, scale_mlp))
        if self.context_pre_only:
            return None, x
        context = context + c_gate_msa[:, None] * attn_c
        ff_c = self.ff_context(_modulate(self.norm2_context(context), c_shift_mlp, c_scale_mlp))
        return context + c_gate_mlp[:, None] * ff_c, x


class MMDiT(nn.Module):
    """SD3's MM-DiT velocity network ``v(x_t, t, text)``: ``forward(hidden_states,
    encoder_hidden_states, pooled_projections, timestep) -> (B, C_out, H, W)``."""

    def __init__(self, config: MMDiTConfig | None = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = MMDiTConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either config or keyword arguments, not both")
        if not isinstance(config, MMDiTConfig):
            raise TypeError(f"config must be an MMDiTConfig, got {type(config).__name__}")
        self.config = config
        d = config.inner_dim
        self.pos_embed = PatchEmbed(config)
        self.time_text_embed = TimeTextEmbedding(d, config.pooled_projection_dim)
        self.context_embedder = nn.Linear(config.joint_attention_dim, d)
        self.transformer_blocks = nn.ModuleList(
            [MMDiTBlock(config, context_pre_only=i == config.num_layers - 1)
             for i in range(config.num_layers)])
        self.norm_out = AdaLNContinuous(d)
        self.proj_out = nn.Linear(d, config.patch_size ** 2 * config.out_channels)

    def _check(self, hidden_states, encoder_hidden_states, pooled_projections, timestep):
        cfg = self.config
        args = {"hidden_states": hidden_states, "encoder_hidden_states": encoder_hidden_states,
                "pooled_projections": pooled_projections, "timestep": timestep}
        for name, value in args.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if hidden_states.ndim != 4 or hidden_states.shape[1] != cfg.in_channels:
            raise ValueError(f"hidden_states must have shape (B, {cfg.in_channels}, H, W), got "
                             f"{tuple(hidden_states.shape)}")
        b, _, h, w = hidden_states.shape
        p, m = cfg.patch_size, cfg.pos_embed_max_size
        if h % p or w % p:
            raise ValueError(f"hidden_states height and width must be multiples of patch_size="
                             f"{p}, got {h}×{w}")
        if h // p > m or w // p > m:
            raise ValueError(f"hidden_states of {h}×{w} has more patches per side than "
                             f"pos_embed_max_size={m}")
        ctx = tuple(encoder_hidden_states.shape)
        if len(ctx) != 3 or ctx[0] != b or ctx[2] != cfg.joint_attention_dim:
            raise ValueError(f"encoder_hidden_states must have shape (B={b}, L, "
                             f"{cfg.joint_attention_dim}), got {ctx}")
        if pooled_projections.shape != (b, cfg.pooled_projection_dim):
            raise ValueError(f"pooled_projections must have shape ({b}, "
                             f"{cfg.pooled_projection_dim}), got {tuple(pooled_projections.shape)}")
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        if timestep.shape != (b,):
            raise ValueError(f"timestep must be a scalar or have shape ({b},), got "
                             f"{tuple(timestep.shape)}")
        return timestep

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The velocity (or whatever the weights were trained to predict).

        Parameters
        ----------
        hidden_states : Tensor, shape (B, in_channels, H, W)
            Noisy latents; H and W multiples of ``patch_size``.
        encoder_hidden_states : Tensor, shape (B, L, joint_attention_dim)
            Per-token text features.
        pooled_projections : Tensor, shape (B, pooled_projection_dim)
            Pooled text vector.
        timestep : Tensor, shape (B,) or ()
            ``1000 t`` (diffusers' convention; float).

        Returns
        -------
        Tensor, shape (B, out_channels, H, W)
        """
        timestep = self._check(hidden_states, encoder_hidden_states, pooled_projections, timestep)
        b, _, h, w = hidden_states.shape
        p, c = self.config.patch_size, self.config.out_channels
        x = self.pos_embed(hidden_states)                                       # (B, N, D)
        temb = self.time_text_embed(timestep, pooled_projections)               # (B, D)
        context = self.context_embedder(encoder_hidden_states)                  # (B, L, D)
        for block in self.transformer_blocks:
            context, x = block(x, context, temb)
        x = self.proj_out(self.norm_out(x, temb))                               # (B, N, p² C)
        x = x.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)     # (B, C, h, p, w, p)
        return x.reshape(b, c, h, w)

    @classmethod
    def from_diffusers(cls, module: nn.Module) -> MMDiT:
        """A copy of a diffusers ``SD3Transformer2DModel``: same configuration, same weights.

        Raises
        ------
        TypeError
            ``module`` is not a diffusers ``SD3Transformer2DModel``.
        ValueError
            Its configuration uses an option this class does not implement (the message names
            the key: ``dual_attention_layers``, ``qk_norm``).
        """
        if type(module).__name__ != "SD3Transformer2DModel" or not hasattr(module, "config"):
            raise TypeError(f"module must be a diffusers SD3Transformer2DModel, got "
                            f"{type(module).__name__}")
        cfg = module.config
        if tuple(cfg.get("dual_attention_layers") or ()):
            raise ValueError(f"module.config.dual_attention_layers="
                             f"{tuple(cfg.dual_attention_layers)} is not supported (SD3.5's "
                             f"MM-DiT-X); only () is")
        if cfg.get("qk_norm") not in QK_NORMS:
            raise ValueError(f"module.config.qk_norm={cfg.qk_norm!r} is not supported "
                             f"(one of {QK_NORMS})")
        ours = cls(MMDiTConfig(
            sample_size=cfg.sample_size, patch_size=cfg.patch_size,
            in_channels=cfg.in_channels, num_layers=cfg.num_layers,
            attention_head_dim=cfg.attention_head_dim,
            num_attention_heads=cfg.num_attention_heads,
            joint_attention_dim=cfg.joint_attention_dim,
            caption_projection_dim=cfg.caption_projection_dim,
            pooled_projection_dim=cfg.pooled_projection_dim,
            out_channels=cfg.out_channels if cfg.out_channels is not None else cfg.in_channels,
            pos_embed_max_size=cfg.pos_embed_max_size, qk_norm=cfg.get("qk_norm")))
        param = next(module.parameters())
        ours.to(device=param.device, dtype=param.dtype)
        ours.load_state_dict(module.state_dict(), strict=True)  # every tensor accounted for
        return ours

    def to_diffusers_config(self) -> dict[str, Any]:
        """The ``SD3Transformer2DModel(**config)`` keyword arguments of the same network."""
        return {**asdict(self.config), "dual_attention_layers": ()}


# --- SD3's training-time distribution ------------------------------------------------------------
def logit_normal_density(t: torch.Tensor, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    """``π_ln(t; m, s) = exp(−(logit t − m)² / 2s²) / (s √(2π) t (1 − t))`` on (0, 1)
    (Esser et al. 2024, Sec. 3.1; post Eq. 3)."""
    if s <= 0:
        raise ValueError(f"s must be positive, got {s}")
    logit = torch.log(t) - torch.log1p(-t)
    return torch.exp(-(logit - m) ** 2 / (2 * s * s)) / (s * math.sqrt(2 * math.pi) * t * (1 - t))


def sample_timesteps(n: int, kind: str = "logit_normal", m: float = 0.0, s: float = 1.0,
                     generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` training times ``t ∈ (0, 1)`` (``t = 1`` noise), shape (n,).

    ``kind="logit_normal"``: ``t = sigmoid(u)``, ``u ~ N(m, s²)`` (post Eq. 3), which puts more
    weight on the middle of the path where the velocity target is hardest (SD3's choice,
    ``m = 0, s = 1``); ``kind="uniform"``: ``t ~ U(0, 1)`` (plain rectified flow). Drawn on the
    CPU with ``generator`` and moved, so a seed gives the same numbers on every device.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if kind == "logit_normal":
        if s <= 0:
            raise ValueError(f"s must be positive, got {s}")
        t = torch.sigmoid(m + s * torch.randn(n, generator=generator))
    elif kind == "uniform":
        t = torch.rand(n, generator=generator)
    else:
        raise ValueError(f"kind must be 'logit_normal' or 'uniform', got {kind!r}")
    return t.to(device) if device is not None else t


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Resolution-dependent shift ``t' = α t / (1 + (α − 1) t)`` (Esser et al. 2024,
    Sec. 5.3.2; post Eq. 4): ``α = sqrt(m / n)`` for ``m`` pixels against a base of ``n`` (SD3
    uses α = 3 at 1024²); it moves every time towards noise, so that a bigger image is as
    destroyed at ``t'`` as a small one at ``t``."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * t / (1 + (shift - 1) * t)
