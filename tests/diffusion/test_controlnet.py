"""Our ControlNet equals diffusers' ``ControlNetModel``; at step 0 it leaves the base unchanged.

Each configuration is built in diffusers with every parameter — the zero convolutions included,
otherwise the residuals would be 0 on both sides and prove nothing — redrawn from a seeded
N(0, 0.1²); :meth:`ControlNet.from_diffusers` copies it with a strict ``load_state_dict``.
Residuals and the controlled U-Net's output are compared at 1e-5 absolute in float32 (the
issue's parity rule), and each test checks the compared outputs are not trivially small.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from deepnotes.diffusion.controlnet import ControlNet, controlled_unet, skip_channels
from deepnotes.diffusion.unet_conditional import UNetConditional, UNetConditionalConfig

TOL = {"rtol": 0.0, "atol": 1e-5}

CONFIGS = {
    # SD 1.x layout in miniature, a 3-channel condition at 4× the latent side.
    "sd1": dict(block_out_channels=(16, 32, 32), layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                cross_attention_dim=12, attention_head_dim=2, norm_num_groups=8,
                conditioning_embedding_out_channels=(8, 8, 16)),
    # SD 2.x-like: linear projections, per-level heads, two transformer layers at the bottom,
    # two resnets per level; a 1-channel condition (edge map) at 8× the latent side.
    "sd2_linear": dict(block_out_channels=(16, 32), layers_per_block=2,
                       down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       cross_attention_dim=20, attention_head_dim=(4, 2),
                       transformer_layers_per_block=(1, 2), use_linear_projection=True,
                       norm_num_groups=4, conditioning_channels=1,
                       conditioning_embedding_out_channels=(4, 8, 8, 16)),
    # Plain first level, mid-block scale, padding 0, timestep features changed, 3 latent channels.
    "mixed": dict(block_out_channels=(8, 16, 16), layers_per_block=1,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  cross_attention_dim=8, attention_head_dim=(1, 4, 2), norm_num_groups=4,
                  mid_block_scale_factor=1.414, downsample_padding=0, norm_eps=1e-6,
                  flip_sin_to_cos=False, freq_shift=1, in_channels=3, conditioning_channels=2,
                  conditioning_embedding_out_channels=(4, 8)),
}


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _diffusers_controlnet(name: str, seed: int = 0) -> diffusers.ControlNetModel:
    ref = diffusers.ControlNetModel(**CONFIGS[name])
    _randomise(ref, seed)
    return ref.eval()


@pytest.fixture(params=list(CONFIGS), scope="module")
def pair(request):
    ref = _diffusers_controlnet(request.param)
    return ref, ControlNet.from_diffusers(ref).eval()


def _inputs(ref, side=8, batch=2, tokens=5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    cfg = ref.config
    f = 2 ** (len(cfg.conditioning_embedding_out_channels) - 1)
    x = torch.randn(batch, cfg.in_channels, side, side, generator=gen)
    text = torch.randn(batch, tokens, cfg.cross_attention_dim, generator=gen)
    cond = torch.rand(batch, cfg.conditioning_channels, side * f, side * f, generator=gen)
    t = torch.tensor([3, 981][:batch])
    return x, t, text, cond


@pytest.mark.parametrize("scale", [1.0, 0.6])
@torch.no_grad()
def test_residuals_match_diffusers(pair, scale):
    ref, ours = pair
    x, t, text, cond = _inputs(ref)
    want_down, want_mid = ref(x, t, text, cond, conditioning_scale=scale, return_dict=False)
    got_down, got_mid = ours(x, t, text, cond, conditioning_scale=scale)
    assert isinstance(got_down, tuple) and len(got_down) == len(want_down)
    assert len(got_down) == len(skip_channels(ours.config))
    for g, w in zip(got_down, want_down, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, **TOL)
    torch.testing.assert_close(got_mid, want_mid, **TOL)
    assert min(float(w.abs().mean()) for w in (*want_down, want_mid)) > 1e-2


@torch.no_grad()
def test_guess_mode_matches_diffusers(pair):
    ref, ours = pair
    x, t, text, cond = _inputs(ref, seed=2)
    want_down, want_mid = ref(x, t, text, cond, conditioning_scale=0.8, guess_mode=True,
                              return_dict=False)
    got_down, got_mid = ours(x, t, text, cond, conditioning_scale=0.8, guess_mode=True)
    for g, w in zip(got_down, want_down, strict=True):
        torch.testing.assert_close(g, w, **TOL)
    torch.testing.assert_close(got_mid, want_mid, **TOL)


def _matching_unets(name: str, seed: int = 5):
    """A random diffusers U-Net whose encoder matches CONFIGS[name], and our copy of it."""
    c = {k: v for k, v in CONFIGS[name].items()
         if k not in ("conditioning_channels", "conditioning_embedding_out_channels")}
    c["up_block_types"] = tuple("CrossAttnUpBlock2D" if d == "CrossAttnDownBlock2D"
                                else "UpBlock2D" for d in reversed(c["down_block_types"]))
    ref = diffusers.UNet2DConditionModel(**c)
    _randomise(ref, seed)
    ref.eval()
    return ref, UNetConditional.from_diffusers(ref).eval()


@pytest.mark.parametrize("name", ["sd1", "sd2_linear"])
@torch.no_grad()
def test_controlled_unet_matches_diffusers(name):
    """Our U-Net + our ControlNet == diffusers U-Net fed diffusers ControlNet's residuals."""
    ref_cn = _diffusers_controlnet(name, seed=3)
    ref_unet, unet = _matching_unets(name)
    ours = ControlNet.from_diffusers(ref_cn).eval()
    x, t, text, cond = _inputs(ref_cn, seed=4)
    down, mid = ref_cn(x, t, text, cond, conditioning_scale=0.7, return_dict=False)
    want = ref_unet(x, t, text, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
    got = controlled_unet(unet, ours, x, t, text, cond, conditioning_scale=0.7)
    torch.testing.assert_close(got, want, **TOL)
    base = ref_unet(x, t, text).sample
    assert float((want - base).abs().max()) > 1e-2        # the control changed the output


@torch.no_grad()
def test_multi_condition_adds_residuals():
    ref_unet, unet = _matching_unets("sd1")
    a = ControlNet.from_diffusers(_diffusers_controlnet("sd1", seed=6)).eval()
    b = ControlNet.from_diffusers(_diffusers_controlnet("sd1", seed=7)).eval()
    x, t, text, cond = _inputs(_diffusers_controlnet("sd1"), seed=8)
    cond_b = cond.flip(-1)
    got = controlled_unet(unet, [a, b], x, t, text, [cond, cond_b], [0.5, 1.5])
    da, ma = a(x, t, text, cond, 0.5)
    db, mb = b(x, t, text, cond_b, 1.5)
    want = ref_unet(x, t, text,
                    down_block_additional_residuals=[p + q for p, q in zip(da, db, strict=True)],
                    mid_block_additional_residual=ma + mb).sample
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_unet_matches_diffusers_from_unet(name):
    """Copying the encoder: same weights as diffusers' ``ControlNetModel.from_unet``."""
    ref_unet, unet = _matching_unets(name)
    extra = {k: CONFIGS[name][k] for k in ("conditioning_channels",
                                           "conditioning_embedding_out_channels")
             if k in CONFIGS[name]}
    ref_cn = diffusers.ControlNetModel.from_unet(ref_unet, **extra)
    ours = ControlNet.from_unet(unet, **extra)
    want, got = ref_cn.state_dict(), ours.state_dict()
    assert set(got) == set(want)
    copied = [k for k in got if k.split(".")[0] in ("conv_in", "time_embedding",
                                                    "down_blocks", "mid_block")]
    assert copied and len(copied) < len(got)
    for k in copied:
        assert torch.equal(got[k], want[k]), k
        assert got[k].data_ptr() != unet.state_dict()[k].data_ptr()   # a copy, not shared
    zero = [k for k in got if k.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                            "controlnet_cond_embedding.conv_out"))]
    assert zero and all(not got[k].any() for k in zero)


@pytest.mark.parametrize("name", ["sd1", "mixed"])
@torch.no_grad()
def test_step_zero_output_equals_base_exactly(name):
    """Zero convolutions: base + fresh ControlNet == base, bit for bit, at any scale."""
    _, unet = _matching_unets(name)
    net = ControlNet.from_unet(unet, **{k: CONFIGS[name][k] for k in
                                        ("conditioning_channels",
                                         "conditioning_embedding_out_channels")
                                        if k in CONFIGS[name]}).eval()
    x, t, text, cond = _inputs(_diffusers_controlnet(name), seed=9)
    base = unet(x, t, text)
    for scale in (1.0, 3.0):
        assert torch.equal(controlled_unet(unet, net, x, t, text, cond, scale), base)


def test_zero_convolutions_get_gradient_at_step_zero():
    """The paper's argument: zero weights, non-zero input → non-zero weight gradient."""
    _, unet = _matching_unets("sd1")
    unet.requires_grad_(False)
    net = ControlNet.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16))
    x, t, text, cond = _inputs(_diffusers_controlnet("sd1"), seed=10)
    out = controlled_unet(unet, net, x, t, text, cond)
    out.square().mean().backward()
    for z in (*net.controlnet_down_blocks, net.controlnet_mid_block):
        assert z.weight.grad is not None and float(z.weight.grad.abs().max()) > 0
    # the layers behind the zero convolutions see a zero upstream gradient at step 0
    assert float(net.conv_in.weight.grad.abs().max()) == 0.0
    assert all(p.grad is None for p in unet.parameters())


def test_wrong_condition_size_is_named():
    net = ControlNet.from_diffusers(_diffusers_controlnet("sd1"))
    x, t, text, cond = _inputs(_diffusers_controlnet("sd1"))
    with pytest.raises(ValueError, match=r"controlnet_cond must have shape \(2, 3, 32, 32\)"):
        net(x, t, text, cond[..., :16, :16])
    with pytest.raises(ValueError, match="controlnet_cond"):
        net(x, t, text, cond[:, :1])
    with pytest.raises(TypeError, match="controlnet_cond"):
        net(x, t, text, cond.numpy())
    with pytest.raises(ValueError, match="sample"):
        net(x[:, :2], t, text, cond)


def test_unsupported_diffusers_options_are_named():
    ref = diffusers.ControlNetModel(**{**CONFIGS["sd1"],
                                       "controlnet_conditioning_channel_order": "bgr"})
    with pytest.raises(ValueError, match="controlnet_conditioning_channel_order"):
        ControlNet.from_diffusers(ref)
    with pytest.raises(TypeError, match="ControlNetModel"):
        ControlNet.from_diffusers(torch.nn.Linear(2, 2))


def test_round_trip_config():
    cfg = UNetConditionalConfig(block_out_channels=(8, 16), norm_num_groups=4,
                                num_attention_heads=2, cross_attention_dim=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    net = ControlNet(cfg,
                     conditioning_channels=1, conditioning_embedding_out_channels=(4, 8, 8))
    ref = diffusers.ControlNetModel(**net.to_diffusers_config())
    assert ControlNet.from_diffusers(ref).state_dict().keys() == net.state_dict().keys()
