"""Our MM-DiT equals diffusers' ``SD3Transformer2DModel`` weight for weight; SD3's time sampling.

Each configuration is built in diffusers, every parameter (the QK RMS-norm scales included, so a
missing or swapped normalisation shows) is redrawn from a seeded N(0, 0.1²), and
:meth:`MMDiT.from_diffusers` copies it with a strict ``load_state_dict``. Outputs are compared at
1e-5 absolute in float32: both sides run the same float32 kernels in the same order (both call
SDPA on the same concatenated tensors); the outputs observed are bit-identical on these
configurations. Each test also checks the output is not trivially small, so that the tolerance
means something.
"""

from __future__ import annotations

import math

import diffusers
import pytest
import torch

from deepnotes.diffusion.mmdit import (
    MMDiT,
    MMDiTConfig,
    logit_normal_density,
    sample_timesteps,
    shift_timesteps,
    sincos_2d_positions,
)

TOL = {"rtol": 0.0, "atol": 1e-5}

CONFIGS = {
    # SD3.5-like: QK RMS-norm, three blocks (the last one context_pre_only), patch 2.
    "qk_rms": dict(sample_size=8, patch_size=2, in_channels=16, num_layers=3,
                   attention_head_dim=8, num_attention_heads=4, joint_attention_dim=24,
                   caption_projection_dim=32, pooled_projection_dim=12, out_channels=16,
                   pos_embed_max_size=8, qk_norm="rms_norm"),
    # SD3.0-like: no QK norm, a single block (context_pre_only at once), c = 4, wider table.
    "no_qk_norm": dict(sample_size=8, patch_size=2, in_channels=4, num_layers=1,
                       attention_head_dim=6, num_attention_heads=2, joint_attention_dim=10,
                       caption_projection_dim=12, pooled_projection_dim=7, out_channels=4,
                       pos_embed_max_size=6, qk_norm=None),
    # Patch 1, different in/out channels, two blocks.
    "patch1": dict(sample_size=4, patch_size=1, in_channels=3, num_layers=2,
                   attention_head_dim=4, num_attention_heads=4, joint_attention_dim=8,
                   caption_projection_dim=16, pooled_projection_dim=8, out_channels=5,
                   pos_embed_max_size=4, qk_norm="rms_norm"),
}


def _diffusers_model(seed: int, **cfg) -> diffusers.SD3Transformer2DModel:
    ref = diffusers.SD3Transformer2DModel(**cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return ref.eval()


def _inputs(cfg: dict, b: int = 3, seq: int = 5, size: int | None = None, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    size = size or cfg["sample_size"]
    return dict(
        hidden_states=torch.randn(b, cfg["in_channels"], size, size, generator=gen),
        encoder_hidden_states=torch.randn(b, seq, cfg["joint_attention_dim"], generator=gen),
        pooled_projections=torch.randn(b, cfg["pooled_projection_dim"], generator=gen),
        timestep=1000 * torch.rand(b, generator=gen))


@pytest.fixture(params=list(CONFIGS), scope="module")
def pair(request):
    ref = _diffusers_model(0, **CONFIGS[request.param])
    return CONFIGS[request.param], ref, MMDiT.from_diffusers(ref).eval()


def test_positions_match_diffusers_table(pair):
    cfg, ref, _ = pair
    fresh = MMDiT(MMDiTConfig(**cfg))   # computed by us, not copied
    torch.testing.assert_close(fresh.pos_embed.pos_embed, ref.pos_embed.pos_embed, **TOL)


def test_forward_matches_diffusers(pair):
    cfg, ref, ours = pair
    x = _inputs(cfg)
    with torch.no_grad():
        want = ref(**x).sample
        got = ours(**x)
    assert got.shape == want.shape == (3, cfg["out_channels"], cfg["sample_size"],
                                       cfg["sample_size"])
    assert want.abs().mean() > 0.05
    torch.testing.assert_close(got, want, **TOL)


def test_smaller_latent_crops_positions_like_diffusers(pair):
    cfg, ref, ours = pair
    x = _inputs(cfg, b=2, seq=3, size=cfg["sample_size"] - cfg["patch_size"], seed=4)
    with torch.no_grad():
        torch.testing.assert_close(ours(**x), ref(**x).sample, **TOL)


def test_gradients_match_diffusers():
    cfg = CONFIGS["qk_rms"]
    ref = _diffusers_model(2, **cfg)
    ours = MMDiT.from_diffusers(ref)
    x = _inputs(cfg, seed=7)
    ref(**x).sample.square().sum().backward()
    ours(**x).square().sum().backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-4, atol=1e-4,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_last_block_is_context_pre_only():
    ours = MMDiT(MMDiTConfig(**CONFIGS["qk_rms"]))
    flags = [b.context_pre_only for b in ours.transformer_blocks]
    assert flags == [False, False, True]
    assert ours.transformer_blocks[-1].ff_context is None
    assert ours.transformer_blocks[-1].attn.to_add_out is None


def test_scalar_timestep_broadcasts():
    cfg = CONFIGS["patch1"]
    ours = MMDiT(MMDiTConfig(**cfg)).eval()
    x = _inputs(cfg, b=2)
    x["timestep"] = torch.tensor([250.0, 250.0])
    with torch.no_grad():
        full = ours(**x)
        x["timestep"] = torch.tensor(250.0)
        torch.testing.assert_close(ours(**x), full, rtol=0, atol=0)


def test_round_trip_config():
    ours = MMDiT(MMDiTConfig(**CONFIGS["no_qk_norm"]))
    ref = diffusers.SD3Transformer2DModel(**ours.to_diffusers_config())
    ref.load_state_dict(ours.state_dict(), strict=True)


# --- named errors --------------------------------------------------------------------------------
def test_from_diffusers_rejects_dual_attention_and_other_modules():
    cfg = dict(CONFIGS["qk_rms"], dual_attention_layers=(0,))
    with pytest.raises(ValueError, match="dual_attention_layers"):
        MMDiT.from_diffusers(diffusers.SD3Transformer2DModel(**cfg))
    with pytest.raises(TypeError, match="SD3Transformer2DModel"):
        MMDiT.from_diffusers(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("bad, field", [
    (dict(caption_projection_dim=8), "caption_projection_dim"),
    (dict(qk_norm="layer_norm"), "qk_norm"),
    (dict(pos_embed_max_size=2), "pos_embed_max_size"),
    (dict(num_layers=0), "num_layers"),
])
def test_config_errors_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        MMDiTConfig(**dict(CONFIGS["qk_rms"], **bad))


@pytest.mark.parametrize("key, value, name", [
    ("hidden_states", torch.zeros(3, 5, 8, 8), "hidden_states"),
    ("hidden_states", torch.zeros(3, 16, 7, 8), "patch_size"),
    ("hidden_states", torch.zeros(3, 16, 18, 18), "pos_embed_max_size"),
    ("encoder_hidden_states", torch.zeros(3, 5, 23), "encoder_hidden_states"),
    ("pooled_projections", torch.zeros(2, 12), "pooled_projections"),
    ("timestep", torch.zeros(2), "timestep"),
    ("timestep", 3.0, "timestep"),
])
def test_forward_errors_name_the_argument(key, value, name):
    cfg = CONFIGS["qk_rms"]
    ours = MMDiT(MMDiTConfig(**cfg))
    x = _inputs(cfg)
    x[key] = value
    with pytest.raises((ValueError, TypeError), match=name):
        ours(**x)


# --- positions and SD3's time distribution -------------------------------------------------------
def test_sincos_positions_known_values():
    table = sincos_2d_positions(4, grid_size=2, base_size=2)   # s = 1: positions are 0, 1
    # token (i=1, j=0): first half encodes the column j = 0, second half the row i = 1
    torch.testing.assert_close(table[2], torch.tensor([0.0, 1.0, math.sin(1.0), math.cos(1.0)]))


def test_logit_normal_density_integrates_to_one_and_matches_samples():
    t = torch.linspace(1e-6, 1 - 1e-6, 200001, dtype=torch.float64)
    for m, s in ((0.0, 1.0), (0.5, 0.6)):
        dens = logit_normal_density(t, m, s)
        assert abs(float(torch.trapezoid(dens, t)) - 1.0) < 1e-4
        draws = sample_timesteps(200000, "logit_normal", m, s,
                                 generator=torch.Generator().manual_seed(0)).double()
        # empirical CDF vs the integrated density at a few points (KS-like, n = 2e5: se < 1.2e-3)
        cdf = torch.cumulative_trapezoid(dens, t)
        for q in (0.2, 0.5, 0.8):
            want = float(cdf[int(q * (len(t) - 1)) - 1])
            got = float((draws <= q).double().mean())
            assert abs(got - want) < 6e-3, (m, s, q, got, want)


def test_uniform_and_errors():
    u = sample_timesteps(50000, "uniform", generator=torch.Generator().manual_seed(1))
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    with pytest.raises(ValueError, match="kind"):
        sample_timesteps(4, "beta")
    with pytest.raises(ValueError, match="n must"):
        sample_timesteps(0)
    with pytest.raises(ValueError, match="s must"):
        sample_timesteps(4, s=0.0)


def test_shift_is_monotone_maps_ends_and_moves_towards_noise():
    t = torch.linspace(0, 1, 11)
    shifted = shift_timesteps(t, 3.0)
    assert float(shifted[0]) == 0.0 and float(shifted[-1]) == 1.0
    assert bool((shifted[1:-1] > t[1:-1]).all()) and bool((shifted.diff() > 0).all())
    torch.testing.assert_close(shift_timesteps(t, 1.0), t)
    # signal-to-noise ratio (1 - t)/t is divided by the shift (Esser et al. 2024, Sec. 5.3.2)
    mid = t[1:-1]
    snr_ratio = ((1 - shift_timesteps(mid, 3.0)) / shift_timesteps(mid, 3.0)) / ((1 - mid) / mid)
    torch.testing.assert_close(snr_ratio, torch.full_like(mid, 1 / 3))
    with pytest.raises(ValueError, match="shift"):
        shift_timesteps(t, 0.0)
