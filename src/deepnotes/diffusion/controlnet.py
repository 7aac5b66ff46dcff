"""ControlNet: a trainable copy of a frozen U-Net's encoder, joined by zero convolutions.

Zhang, Rao & Agrawala (2023), "Adding Conditional Control to Text-to-Image Diffusion Models"
(ICCV), Sec. 3. A pretrained block ``F(x; Θ)`` is kept *locked*; a *trainable copy*
``F(·; Θ_c)`` reads the input plus the encoded condition ``c``, and its output re-enters the
locked network through a 1×1 convolution ``Z(·; Θ_z)`` whose weight and bias start at zero
(paper Eq. 2; our post's Eq. 1)::

    y_c = F(x; Θ) + Z(F(x + Z(c; Θ_z1); Θ_c); Θ_z2).

For Stable Diffusion the copied block is the whole encoder (``conv_in``, the down blocks and
the middle block); every skip connection and the middle block's output receive one zero
convolution, and the sums are added to the locked U-Net's skips and middle output (paper
Sec. 3.2, Fig. 3). The image-space condition is brought to latent resolution by a small conv
stack ``E`` whose last convolution is also zero-initialised (paper Sec. 3.2).

Because every zero convolution outputs exactly 0 at initialisation, the controlled U-Net equals
the base model bit for bit at step 0, yet the gradient with respect to a zero convolution's
weight is ``∂L/∂W = Σ (∂L/∂y) xᵀ`` — non-zero whenever its input ``x`` is — so training moves
the weights off zero after one step (post Eq. 2).

:class:`ControlNet` mirrors diffusers' ``ControlNetModel`` (same parameter names, so
:meth:`ControlNet.from_diffusers` is a strict ``load_state_dict``) and is built from the blocks
of :mod:`deepnotes.diffusion.unet_conditional` (:func:`make_down_blocks`,
:func:`make_mid_block`, :func:`run_down_blocks`); :meth:`ControlNet.from_unet` copies a base
U-Net's encoder weights, as ``ControlNetModel.from_unet`` does. :func:`controlled_unet` runs the
locked U-Net with the residuals of one or several ControlNets (several conditions add their
residuals, as diffusers' ``MultiControlNetModel``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deepnotes.diffusion.unet_conditional import (
    TimestepEmbedding,
    UNetConditional,
    UNetConditionalConfig,
    diffusers_config,
    make_down_blocks,
    make_mid_block,
    run_down_blocks,
    timestep_embedding,
    timestep_tensor,
)

DEFAULT_EMBEDDING_CHANNELS = (16, 32, 96, 256)
"""diffusers' default channels of the condition encoder ``E`` (three stride-2 stages, f = 8)."""


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (the paper's "zero convolution") and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ControlNetConditioningEmbedding(nn.Module):
    """The condition encoder ``E``: image-space condition → features at latent resolution.

    ``conv_in`` (3×3) then, per stage, a 3×3 convolution and a stride-2 3×3 convolution, SiLU
    after each, and a zero-initialised 3×3 ``conv_out`` to the U-Net's ``C_0`` channels. With
    ``k`` entries in ``block_out_channels`` the side shrinks by ``2**(k − 1)``.
    """

    def __init__(self, conditioning_embedding_channels: int, conditioning_channels: int = 3,
                 block_out_channels: tuple[int, ...] = DEFAULT_EMBEDDING_CHANNELS):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:], strict=True):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = zero_module(nn.Conv2d(block_out_channels[-1],
                                              conditioning_embedding_channels, 3, padding=1))

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv_in(conditioning))
        for block in self.blocks:
            h = F.silu(block(h))
        return self.conv_out(h)                                      # (B, C_0, H/f, W/f)


def skip_channels(config: UNetConditionalConfig) -> tuple[int, ...]:
    """Channels of every skip connection of a U-Net encoder, ``conv_in``'s output first."""
    chans = [config.block_out_channels[0]]
    last = len(config.block_out_channels) - 1
    for i, c in enumerate(config.block_out_channels):
        chans += [c] * config.layers_per_block[i] + ([c] if i < last else [])
    return tuple(chans)


class ControlNet(nn.Module):
    """Trainable encoder copy + condition encoder + zero convolutions (``ControlNetModel``).

    Parameters
    ----------
    config : UNetConditionalConfig
        The base U-Net's configuration; only the encoder part (``conv_in``, time embedding,
        down blocks, middle block) is built. ``up_block_types``/``out_channels`` are unused.
    conditioning_channels : int
        Channels of the image-space condition (3 for RGB; 1 for an edge map or a mask).
    conditioning_embedding_out_channels : tuple of int
        Channels of the condition encoder's stages; ``k`` entries downsample by ``2**(k − 1)``,
        which must equal the autoencoder's factor (the condition is given at image resolution).
    """

    def __init__(self, config: UNetConditionalConfig, conditioning_channels: int = 3,
                 conditioning_embedding_out_channels: tuple[int, ...] =
                 DEFAULT_EMBEDDING_CHANNELS):
        super().__init__()
        if not isinstance(config, UNetConditionalConfig):
            raise TypeError(f"config must be a UNetConditionalConfig, got "
                            f"{type(config).__name__}")
        if (isinstance(conditioning_channels, bool) or not isinstance(conditioning_channels, int)
                or conditioning_channels < 1):
            raise ValueError(f"conditioning_channels must be a positive int, got "
                             f"{conditioning_channels!r}")
        emb = tuple(int(c) for c in conditioning_embedding_out_channels)
        if not emb or any(c < 1 for c in emb):
            raise ValueError(f"conditioning_embedding_out_channels must be positive ints, got "
                             f"{conditioning_embedding_out_channels!r}")
        self.config = config
        self.conditioning_channels = conditioning_channels
        self.conditioning_embedding_out_channels = emb
        c0 = config.block_out_channels[0]
        self.conv_in = nn.Conv2d(config.in_channels, c0, config.conv_in_kernel,
                                 padding=config.conv_in_kernel // 2)
        self.time_embedding = TimestepEmbedding(c0, config.time_embed_dim)
        self.controlnet_cond_embedding = ControlNetConditioningEmbedding(
            c0, conditioning_channels, emb)
        self.down_blocks = make_down_blocks(config)
        self.controlnet_down_blocks = nn.ModuleList(
            zero_module(nn.Conv2d(c, c, 1)) for c in skip_channels(config))
        self.mid_block = make_mid_block(config)
        c_last = config.block_out_channels[-1]
        self.controlnet_mid_block = zero_module(nn.Conv2d(c_last, c_last, 1))

    @property
    def condition_factor(self) -> int:
        """How many condition pixels per latent pixel along a side: ``2**(k − 1)``."""
        return 2 ** (len(self.conditioning_embedding_out_channels) - 1)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_unet(cls, unet: UNetConditional, conditioning_channels: int = 3,
                  conditioning_embedding_out_channels: tuple[int, ...] =
                  DEFAULT_EMBEDDING_CHANNELS, load_weights_from_unet: bool = True
                  ) -> ControlNet:
        """A ControlNet whose encoder copy starts from ``unet``'s weights (paper Sec. 3.2).

        Copies ``conv_in``, ``time_embedding``, ``down_blocks`` and ``mid_block`` (the trainable
        copy ``Θ_c ← Θ``); the condition encoder and the zero convolutions are fresh. The result
        is on ``unet``'s device and dtype and shares no tensor with it.
        """
        if not isinstance(unet, UNetConditional):
            raise TypeError(f"unet must be a UNetConditional, got {type(unet).__name__}")
        net = cls(unet.config, conditioning_channels, conditioning_embedding_out_channels)
        param = next(unet.parameters())
        net.to(device=param.device, dtype=param.dtype)
        if load_weights_from_unet:
            for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
                part = getattr(unet, name)
                if part is not None:
                    getattr(net, name).load_state_dict(part.state_dict())
        return net

    @classmethod
    def from_diffusers(cls, module: nn.Module) -> ControlNet:
        """A copy of a diffusers ``ControlNetModel``: same configuration, same weights.

        Raises
        ------
        TypeError
            ``module`` is not a ``ControlNetModel``.
        ValueError
            Its configuration uses an option this class does not implement (the key is named).
        """
        required = {
            "only_cross_attention": False, "act_fn": "silu", "encoder_hid_dim": None,
            "encoder_hid_dim_type": None, "class_embed_type": None,
            "addition_embed_type": None, "num_class_embeds": None,
            "resnet_time_scale_shift": "default", "num_attention_heads": None,
            "controlnet_conditioning_channel_order": "rgb", "global_pool_conditions": False,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
        }
        cfg = diffusers_config(module, "ControlNetModel", required)
        depth = cfg.transformer_layers_per_block
        if not isinstance(depth, int) and any(not isinstance(d, int) for d in depth):
            raise ValueError(f"module.config.transformer_layers_per_block={depth} (per block) "
                             f"is not supported")
        if not isinstance(cfg.cross_attention_dim, int):
            raise ValueError(f"module.config.cross_attention_dim={cfg.cross_attention_dim} "
                             f"(per level) is not supported")
        down = tuple(cfg.down_block_types)
        up = tuple("CrossAttnUpBlock2D" if d == "CrossAttnDownBlock2D" else "UpBlock2D"
                   for d in reversed(down))
        try:
            config = UNetConditionalConfig(
                in_channels=cfg.in_channels, out_channels=cfg.in_channels,
                down_block_types=down, mid_block_type=cfg.mid_block_type, up_block_types=up,
                block_out_channels=tuple(cfg.block_out_channels),
                layers_per_block=cfg.layers_per_block, transformer_layers_per_block=depth,
                num_attention_heads=cfg.attention_head_dim,
                cross_attention_dim=cfg.cross_attention_dim,
                norm_num_groups=cfg.norm_num_groups, norm_eps=cfg.norm_eps,
                flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift,
                downsample_padding=cfg.downsample_padding,
                mid_block_scale_factor=cfg.mid_block_scale_factor,
                use_linear_projection=cfg.use_linear_projection,
                upcast_attention=cfg.upcast_attention)
        except ValueError as err:
            raise ValueError(f"module.config: {err}") from err
        ours = cls(config, cfg.conditioning_channels,
                   tuple(cfg.conditioning_embedding_out_channels))
        param = next(module.parameters())
        ours.to(device=param.device, dtype=param.dtype)
        ours.load_state_dict(module.state_dict(), strict=True)  # every tensor accounted for
        return ours

    def to_diffusers_config(self) -> dict[str, Any]:
        """The ``ControlNetModel(**config)`` keyword arguments of the same network."""
        c = self.config
        if len(set(c.layers_per_block)) != 1:
            raise ValueError(f"diffusers' ControlNetModel needs one layers_per_block for every "
                             f"level, got {c.layers_per_block}")
        if c.conv_in_kernel != 3:
            raise ValueError("diffusers' ControlNetModel has conv_in_kernel 3 only")
        d = asdict(c)
        for key in ("out_channels", "up_block_types", "dropout", "conv_in_kernel",
                    "conv_out_kernel"):
            d.pop(key)
        d["attention_head_dim"] = d.pop("num_attention_heads")
        d["layers_per_block"] = c.layers_per_block[0]
        d["conditioning_channels"] = self.conditioning_channels
        d["conditioning_embedding_out_channels"] = self.conditioning_embedding_out_channels
        return d

    # -- forward --------------------------------------------------------------------------------
    def check_condition(self, sample: torch.Tensor, controlnet_cond: torch.Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` naming ``controlnet_cond`` if its shape is wrong."""
        if not isinstance(controlnet_cond, torch.Tensor):
            raise TypeError(f"controlnet_cond must be a torch.Tensor, got "
                            f"{type(controlnet_cond).__name__}")
        f = self.condition_factor
        b, _, h, w = sample.shape
        want = (b, self.conditioning_channels, h * f, w * f)
        if tuple(controlnet_cond.shape) != want:
            raise ValueError(f"controlnet_cond must have shape {want} (batch, "
                             f"{self.conditioning_channels} condition channel(s), {f}× the "
                             f"latent side {h}×{w}), got {tuple(controlnet_cond.shape)}")

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                controlnet_cond: torch.Tensor, conditioning_scale: float = 1.0,
                guess_mode: bool = False
                ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Residuals for the locked U-Net's skips and middle block (paper Eq. 2; post Eq. 1).

        Parameters
        ----------
        sample : Tensor, shape (B, C_in, h, w)
            Noisy latents ``z_t`` (the same the locked U-Net receives).
        timestep : int, float or Tensor of shape () or (B,)
            Diffusion timesteps.
        encoder_hidden_states : Tensor, shape (B, S, cross_attention_dim)
            Text tokens ``τ(y)`` (an empty caption's for the paper's prompt-free training).
        controlnet_cond : Tensor, shape (B, conditioning_channels, f·h, f·w)
            The image-space condition (edge map, mask, …), ``f`` = :attr:`condition_factor`.
        conditioning_scale : float
            Multiplies every residual (0 switches the control off).
        guess_mode : bool
            diffusers' "guess mode": scales ``logspace(−1, 0)`` from the first skip (0.1) to the
            middle block (1), times ``conditioning_scale``.

        Returns
        -------
        down_block_res_samples : tuple of Tensor
            One per skip connection, ``conv_in``'s first (shapes of the U-Net's skips).
        mid_block_res_sample : Tensor, shape (B, C_last, h / 2**(L−1), w / 2**(L−1))
        """
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
        self.check_condition(sample, controlnet_cond)
        t = timestep_tensor(timestep, sample)
        feats = timestep_embedding(t, self.config.block_out_channels[0],
                                   self.config.flip_sin_to_cos, self.config.freq_shift)
        emb = self.time_embedding(feats.to(sample.dtype))                 # (B, 4 C_0)
        h = self.conv_in(sample) + self.controlnet_cond_embedding(controlnet_cond)
        h, skips = run_down_blocks(self.down_blocks, h, emb, encoder_hidden_states)
        if self.mid_block is not None:
            h = self.mid_block(h, emb, encoder_hidden_states)
        down = tuple(z(s) for z, s in zip(self.controlnet_down_blocks, skips, strict=True))
        mid = self.controlnet_mid_block(h)
        if guess_mode:
            scales = torch.logspace(-1, 0, len(down) + 1, device=sample.device)
            scales = scales * conditioning_scale
            down = tuple(d * s for d, s in zip(down, scales, strict=False))
            mid = mid * scales[-1]
        else:
            down = tuple(d * conditioning_scale for d in down)
            mid = mid * conditioning_scale
        return down, mid


def controlled_unet(unet: UNetConditional, controlnets: ControlNet | list[ControlNet],
                    sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                    controlnet_cond: torch.Tensor | list[torch.Tensor],
                    conditioning_scale: float | list[float] = 1.0) -> torch.Tensor:
    """The locked U-Net's prediction with one or several ControlNets' residuals added.

    Several conditions (the paper's composition of multiple ControlNets) add their residuals:
    ``skip_k + Σ_j s_j r_{j,k}`` (post Eq. 4), as diffusers' ``MultiControlNetModel`` does.

    Parameters
    ----------
    unet : UNetConditional
        The base model (frozen by the caller).
    controlnets : ControlNet or list of ControlNet
    controlnet_cond : Tensor or list of Tensor
        One condition per ControlNet.
    conditioning_scale : float or list of float
        One scale per ControlNet (a single float applies to all).

    Returns
    -------
    Tensor, shape (B, C_out, h, w)
    """
    nets = [controlnets] if isinstance(controlnets, ControlNet) else list(controlnets)
    conds = [controlnet_cond] if isinstance(controlnet_cond, torch.Tensor) else \
        list(controlnet_cond)
    if not nets:
        raise ValueError("controlnets must hold at least one ControlNet")
    if len(conds) != len(nets):
        raise ValueError(f"controlnet_cond must hold one condition per ControlNet "
                         f"({len(nets)}), got {len(conds)}")
    scales = ([float(conditioning_scale)] * len(nets)
              if isinstance(conditioning_scale, (int, float)) else list(conditioning_scale))
    if len(scales) != len(nets):
        raise ValueError(f"conditioning_scale must hold one scale per ControlNet "
                         f"({len(nets)}), got {len(scales)}")
    down, mid = None, None
    for net, cond, scale in zip(nets, conds, scales, strict=True):
        d, m = net(sample, timestep, encoder_hidden_states, cond, conditioning_scale=scale)
        if down is None:
            down, mid = d, m
        else:
            down = tuple(a + b for a, b in zip(down, d, strict=True))
            mid = mid + m
    return unet(sample, timestep, encoder_hidden_states,
                down_block_additional_residuals=down, mid_block_additional_residual=mid)
