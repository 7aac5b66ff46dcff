"""Our KL autoencoder equals diffusers' ``AutoencoderKL`` weight for weight.

Each configuration is built in diffusers, every parameter (GroupNorm affines included, so a swapped
or missing normalisation shows) is redrawn from a seeded N(0, 0.1²), and
:meth:`KLAutoencoder.from_diffusers` copies it with a strict ``load_state_dict``. The outputs are
then compared at 1e-5 absolute, float32: both sides run the same float32 kernels in the same order
except the attention call (diffusers' processor and ours both call SDPA, reshaped differently), so
the observed differences are ~1e-7 on outputs of order 0.1-1; each test also checks that the
output is not trivially small, so the tolerance means something relative to it.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from deepnotes.diffusion.autoencoder import (
    AutoencoderConfig,
    GaussianPosterior,
    KLAutoencoder,
    latent_scale_from_data,
    vae_loss,
)

TOL = {"rtol": 0.0, "atol": 1e-5}

CONFIGS = {
    # SD1-like: c = 4, quant convs, mid-block attention; f = 4 (three levels).
    "sd1_c4": dict(block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=4,
                   norm_num_groups=8, use_quant_conv=True, use_post_quant_conv=True,
                   scaling_factor=0.18215),
    # SD3-like: c = 16, no quant convs, a shift factor; two resnets per level.
    "sd3_c16": dict(block_out_channels=(16, 16, 32), layers_per_block=2, latent_channels=16,
                    norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
                    scaling_factor=1.5305, shift_factor=0.0609),
    # No mid-block attention (diffusers' mid_block_add_attention=False).
    "no_attention_c4": dict(block_out_channels=(8, 16, 16), layers_per_block=1,
                            latent_channels=4, norm_num_groups=4,
                            mid_block_add_attention=False),
}


def _diffusers_vae(seed: int, **cfg) -> diffusers.AutoencoderKL:
    levels = len(cfg["block_out_channels"])
    ref = diffusers.AutoencoderKL(in_channels=3, out_channels=3,
                                  down_block_types=("DownEncoderBlock2D",) * levels,
                                  up_block_types=("UpDecoderBlock2D",) * levels, **cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return ref.eval()


@pytest.fixture(params=list(CONFIGS), scope="module")
def pair(request):
    ref = _diffusers_vae(0, **CONFIGS[request.param])
    return ref, KLAutoencoder.from_diffusers(ref).eval()


def _images(n=3, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_encode_matches_diffusers(pair):
    ref, ours = pair
    x = _images()
    theirs, mine = ref.encode(x).latent_dist, ours.encode(x)
    c = ref.config.latent_channels
    assert mine.mean.shape == (3, c, 8, 8)                      # f = 4
    assert ours.downsampling_factor == 4
    assert mine.mean.std() > 1e-2
    torch.testing.assert_close(mine.mean, theirs.mean, **TOL)
    torch.testing.assert_close(mine.logvar, theirs.logvar, **TOL)
    torch.testing.assert_close(mine.kl(), theirs.kl(), rtol=1e-5, atol=1e-4)  # sums of 8·8·c


@torch.no_grad()
def test_decode_matches_diffusers(pair):
    ref, ours = pair
    z = torch.randn(2, ref.config.latent_channels, 8, 8,
                    generator=torch.Generator().manual_seed(2))
    out = ours.decode(z)
    assert out.shape == (2, 3, 32, 32) and out.std() > 1e-2
    torch.testing.assert_close(out, ref.decode(z).sample, **TOL)


@torch.no_grad()
@pytest.mark.parametrize("sample_posterior", [False, True])
def test_forward_matches_diffusers(pair, sample_posterior):
    ref, ours = pair
    x = _images(seed=3)
    g_ref, g_ours = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    theirs = ref(sample=x, sample_posterior=sample_posterior, generator=g_ref).sample
    mine = ours(sample=x, sample_posterior=sample_posterior, generator=g_ours)
    assert isinstance(mine, torch.Tensor)
    torch.testing.assert_close(mine, theirs, **TOL)


@torch.no_grad()
def test_latent_scaling_matches_diffusers_convention(pair):
    """Pipelines scale as ``(z - shift) * scaling_factor`` and invert before ``decode``."""
    ref, ours = pair
    x = _images(seed=5)
    shift = ref.config.shift_factor or 0.0
    z = ref.encode(x).latent_dist.mode()
    torch.testing.assert_close(ours.encode_latents(x, sample_posterior=False),
                               (z - shift) * ref.config.scaling_factor, **TOL)
    lat = torch.randn_like(z)
    torch.testing.assert_close(ours.decode_latents(lat),
                               ref.decode(lat / ref.config.scaling_factor + shift).sample, **TOL)


@torch.no_grad()
def test_our_weights_load_into_diffusers():
    """The other direction: diffusers built from our config runs our weights the same way."""
    torch.manual_seed(0)
    ours = KLAutoencoder(block_out_channels=(8, 16, 16), norm_num_groups=4,
                         latent_channels=16).eval()
    ref = diffusers.AutoencoderKL(**ours.to_diffusers_config()).eval()
    ref.load_state_dict(ours.diffusers_state_dict(), strict=True)
    x = _images(seed=6)
    torch.testing.assert_close(ours(x), ref(x).sample, **TOL)


def test_from_diffusers_rejects_what_it_cannot_mirror():
    with pytest.raises(TypeError, match="AutoencoderKL"):
        KLAutoencoder.from_diffusers(torch.nn.Linear(2, 2))
    ref = diffusers.AutoencoderKL(block_out_channels=(8, 8), norm_num_groups=4,
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, act_fn="gelu")
    with pytest.raises(ValueError, match="act_fn"):
        KLAutoencoder.from_diffusers(ref)


def test_input_checks_name_the_argument():
    model = KLAutoencoder(block_out_channels=(8, 8, 8), norm_num_groups=4)
    with pytest.raises(ValueError, match=r"x: height and width \(30, 32\)"):
        model.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4, H, W\)"):
        model.decode(torch.zeros(1, 16, 8, 8))
    with pytest.raises(ValueError, match="norm_num_groups=32 must divide"):
        AutoencoderConfig(block_out_channels=(16, 32), norm_num_groups=32)


def test_kl_is_the_closed_form():
    mean = torch.tensor([0.5, -1.0]).reshape(1, 2, 1, 1)
    logvar = torch.tensor([0.0, -2.0]).reshape(1, 2, 1, 1)
    post = GaussianPosterior(mean, logvar)
    expected = 0.5 * (0.25 + 1 - 1 - 0) + 0.5 * (1.0 + torch.exp(torch.tensor(-2.0)) - 1 + 2)
    torch.testing.assert_close(post.kl(), expected.reshape(1))


@torch.no_grad()
def test_latent_scale_from_data_standardises_latents():
    torch.manual_seed(0)
    model = KLAutoencoder(block_out_channels=(8, 16, 16), norm_num_groups=4,
                          latent_channels=16).eval()
    x = _images(n=16, seed=7)
    s, b = latent_scale_from_data(model, x, shift=True, generator=torch.Generator().manual_seed(8))
    model.set_latent_scale(s, b)
    lat = model.encode_latents(x, generator=torch.Generator().manual_seed(8)).double()
    assert abs(float(lat.std()) - 1.0) < 1e-5 and abs(float(lat.mean())) < 1e-5
    assert model.config.scaling_factor == s and model.config.shift_factor == b
    s0, b0 = latent_scale_from_data(model, x, generator=torch.Generator().manual_seed(8))
    assert b0 == 0.0 and s0 == pytest.approx(s)


def test_vae_loss_trains_the_autoencoder():
    """Forty Adam steps on a fixed batch of shapes cut the reconstruction error."""
    from deepnotes.data.shapes import ShapesWorld
    from deepnotes.nn.training import fit

    torch.manual_seed(0)
    model = KLAutoencoder(block_out_channels=(8, 16, 16), norm_num_groups=4)
    images = ShapesWorld(seed=0).batch(0, 16).images
    gen = torch.Generator().manual_seed(0)
    result = fit(model, lambda m, x: vae_loss(m, x, generator=gen), lambda step: images,
                 torch.optim.Adam(model.parameters(), lr=3e-3), 40)
    mse = result.history["mse"]
    assert all(torch.isfinite(torch.tensor(result.history["loss"])))
    assert sum(mse[-5:]) / 5 < 0.5 * sum(mse[:5]) / 5
