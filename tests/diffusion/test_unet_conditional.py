"""Our text-conditioned U-Net equals diffusers' ``UNet2DConditionModel`` weight for weight.

Each configuration is built in diffusers, every parameter (norm affines included, so a swapped or
missing normalisation shows) is redrawn from a seeded N(0, 0.1²), and
:meth:`UNetConditional.from_diffusers` copies it with a strict ``load_state_dict``. Outputs are
compared at 1e-5 absolute in float32 (the issue's parity rule): both sides run the same float32
kernels (convolutions, GroupNorm, LayerNorm, SDPA) in the same order, so the differences observed
are 0 to ~1e-7 on outputs of order 0.1; each test also checks that the output is not trivially
small, so the tolerance is meaningful relative to it.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from deepnotes.diffusion.unet_conditional import (
    UNetConditional,
    UNetConditionalConfig,
    make_down_blocks,
    run_down_blocks,
    timestep_embedding,
)

TOL = {"rtol": 0.0, "atol": 1e-5}

CONFIGS = {
    # SD 1.x layout in miniature: three levels, cross-attention in the two finest, 1×1-conv
    # projections, one head count for every level (diffusers' attention_head_dim=2).
    "sd1": dict(block_out_channels=(16, 32, 32), layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=12, attention_head_dim=2, norm_num_groups=8),
    # SD 2.x-like: linear projections, per-level heads, two transformer layers in the middle,
    # two resnets per level, a different text width.
    "sd2_linear": dict(block_out_channels=(16, 32), layers_per_block=2,
                       down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                       cross_attention_dim=20, attention_head_dim=(4, 2),
                       transformer_layers_per_block=(1, 2), use_linear_projection=True,
                       norm_num_groups=4),
    # Asymmetric: plain levels at both ends, a mid-block output scale, downsample padding 0,
    # GroupNorm epsilon and timestep features changed (flip off, frequency shift 1).
    "mixed": dict(block_out_channels=(8, 16, 16), layers_per_block=(1, 2, 1),
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  cross_attention_dim=8, attention_head_dim=(1, 4, 2), norm_num_groups=4,
                  mid_block_scale_factor=1.414, downsample_padding=0, norm_eps=1e-6,
                  flip_sin_to_cos=False, freq_shift=1, in_channels=3, out_channels=5),
}


def _diffusers_unet(name: str, seed: int = 0) -> diffusers.UNet2DConditionModel:
    ref = diffusers.UNet2DConditionModel(**CONFIGS[name])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return ref.eval()


@pytest.fixture(params=list(CONFIGS), scope="module")
def pair(request):
    ref = _diffusers_unet(request.param)
    return ref, UNetConditional.from_diffusers(ref).eval()


def _inputs(ref, side=8, batch=2, tokens=5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, ref.config.in_channels, side, side, generator=gen)
    text = torch.randn(batch, tokens, ref.config.cross_attention_dim, generator=gen)
    t = torch.tensor([3, 981][:batch])
    return x, t, text


@pytest.mark.parametrize("side", [8, 12])      # 12 is not a multiple of 4: upsample to size
@torch.no_grad()
def test_forward_matches_diffusers(pair, side):
    ref, ours = pair
    x, t, text = _inputs(ref, side)
    theirs = ref(x, t, text).sample
    mine = ours(x, t, text)
    assert mine.shape == (2, ref.config.out_channels, side, side)
    assert theirs.abs().mean() > 1e-2
    torch.testing.assert_close(mine, theirs, **TOL)


@torch.no_grad()
def test_scalar_and_float_timesteps_match_diffusers(pair):
    ref, ours = pair
    x, _, text = _inputs(ref)
    for t in (17, 17.5, torch.tensor(400), torch.tensor([250])):
        torch.testing.assert_close(ours(x, t, text), ref(x, t, text).sample, **TOL)


@torch.no_grad()
def test_controlnet_residuals_match_diffusers(pair):
    ref, ours = pair
    x, t, text = _inputs(ref)
    # the skip shapes, read from our encoder: conv_in output, then each block's
    emb = ours.time_embed(x, t)
    h, skips = run_down_blocks(ours.down_blocks, ours.conv_in(x), emb, text)
    gen = torch.Generator().manual_seed(5)
    down = tuple(torch.randn(s.shape, generator=gen) for s in skips)
    mid = torch.randn(h.shape, generator=gen)
    theirs = ref(x, t, text, down_block_additional_residuals=down,
                 mid_block_additional_residual=mid).sample
    mine = ours(x, t, text, down_block_additional_residuals=down,
                mid_block_additional_residual=mid)
    torch.testing.assert_close(mine, theirs, **TOL)
    # the residuals change the output (so the check above is not vacuous)
    assert (mine - ours(x, t, text)).abs().max() > 1e-2
    # zero residuals leave it unchanged, exactly (ControlNet's zero-convolution start)
    zeros = tuple(torch.zeros_like(d) for d in down)
    torch.testing.assert_close(ours(x, t, text, zeros, torch.zeros_like(mid)),
                               ours(x, t, text), rtol=0, atol=0)


def test_gradients_match_diffusers():
    ref = _diffusers_unet("sd1")
    ours = UNetConditional.from_diffusers(ref)
    x, t, text = _inputs(ref)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(x_ours, t, text).square().mean().backward()
    ref(x_ref, t, text).sample.square().mean().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-6)
    theirs = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")


@torch.no_grad()
def test_to_diffusers_config_round_trip():
    ours = UNetConditional(block_out_channels=(8, 16), num_attention_heads=(2, 4),
                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                           cross_attention_dim=6, norm_num_groups=4).eval()
    ref = diffusers.UNet2DConditionModel(**ours.to_diffusers_config()).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x, t, text = _inputs(ref)
    torch.testing.assert_close(ours(x, t, text), ref(x, t, text).sample, **TOL)


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding
    t = torch.tensor([0.0, 1.0, 17.0, 999.0])
    for flip, shift in ((True, 0), (False, 1)):
        torch.testing.assert_close(timestep_embedding(t, 32, flip, shift),
                                   get_timestep_embedding(t, 32, flip, shift), rtol=0, atol=0)


def test_down_blocks_are_reusable():
    # ControlNet builds its own copy of the encoder from the same config
    unet = UNetConditional(block_out_channels=(8, 16), num_attention_heads=2,
                           cross_attention_dim=6, norm_num_groups=4,
                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    copy = make_down_blocks(unet.config)
    copy.load_state_dict(unet.down_blocks.state_dict(), strict=True)


# --- errors --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return UNetConditional(block_out_channels=(8, 16), num_attention_heads=2,
                           cross_attention_dim=6, norm_num_groups=4,
                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()


def test_wrong_shapes_are_named(small):
    x, text, t = torch.zeros(2, 4, 8, 8), torch.zeros(2, 3, 6), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"sample must have shape \(B, 4, H, W\)"):
        small(torch.zeros(2, 3, 8, 8), t, text)
    with pytest.raises(ValueError, match="encoder_hidden_states must have shape"):
        small(x, t, torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match="encoder_hidden_states must have shape"):
        small(x, t, torch.zeros(3, 3, 6))                       # batch mismatch
    with pytest.raises(ValueError, match="timestep must be a scalar or have shape"):
        small(x, torch.tensor([1, 2, 3]), text)
    with pytest.raises(TypeError, match="sample must be a torch.Tensor"):
        small(x.numpy(), t, text)
    with pytest.raises(TypeError, match="timestep must be a number or a tensor"):
        small(x, "5", text)


def test_wrong_residuals_are_named(small):
    x, text, t = torch.zeros(2, 4, 8, 8), torch.zeros(2, 3, 6), torch.tensor([1, 2])
    emb = small.time_embed(x, t)
    h, skips = run_down_blocks(small.down_blocks, small.conv_in(x), emb, text)
    down = tuple(torch.zeros_like(s) for s in skips)
    mid = torch.zeros_like(h)
    with pytest.raises(ValueError, match="must be given together"):
        small(x, t, text, down_block_additional_residuals=down)
    with pytest.raises(ValueError, match=f"must hold {len(skips)} tensors"):
        small(x, t, text, down[:-1], mid)
    bad = down[:1] + (torch.zeros(2, 1, 8, 8),) + down[2:]
    with pytest.raises(ValueError, match=r"down_block_additional_residuals\[1\] must have shape"):
        small(x, t, text, bad, mid)
    with pytest.raises(ValueError, match="mid_block_additional_residual must have shape"):
        small(x, t, text, down, torch.zeros(2, 16, 8, 8))


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="num_attention_heads"):
        UNetConditionalConfig(block_out_channels=(8, 16), num_attention_heads=3,
                              norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
                              up_block_types=("UpBlock2D",) * 2)
    with pytest.raises(ValueError, match="down_block_types: unsupported"):
        UNetConditionalConfig(block_out_channels=(8,), norm_num_groups=4,
                              down_block_types=("AttnDownBlock2D",), up_block_types=("UpBlock2D",))
    with pytest.raises(ValueError, match="norm_num_groups=3 must divide"):
        UNetConditionalConfig(block_out_channels=(8, 16), norm_num_groups=3,
                              down_block_types=("DownBlock2D",) * 2,
                              up_block_types=("UpBlock2D",) * 2)


def test_from_diffusers_refuses_unsupported_options():
    cfg = dict(CONFIGS["sd1"], resnet_time_scale_shift="scale_shift")
    with pytest.raises(ValueError, match="resnet_time_scale_shift"):
        UNetConditional.from_diffusers(diffusers.UNet2DConditionModel(**cfg))
    with pytest.raises(TypeError, match="UNet2DConditionModel"):
        UNetConditional.from_diffusers(torch.nn.Linear(2, 2))
