"""The stable-diffusion topic's pipeline pieces: caption checks, SD's schedule, the sampling loop
against diffusers' ``DDIMScheduler`` loop on the same U-Net, and the training targets."""

from __future__ import annotations

import diffusers
import pytest
import torch

from deepnotes.diffusion.autoencoder import KLAutoencoder
from deepnotes.diffusion.unet_conditional import UNetConditional
from deepnotes.experiments import stable_diffusion as SD


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny networks on a shared machine: a second thread only adds spin-waiting
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_unknown_word_is_named():
    with pytest.raises(ValueError, match="unknown word 'dog'"):
        SD.check_captions(["a small red dog"])
    with pytest.raises(ValueError, match="unknown word 'Circle'"):
        SD.run(SD.Config(captions=("a large blue Circle",)))   # before any run folder or work
    assert SD.check_captions(list(SD.DEFAULT_CAPTIONS)) == list(SD.DEFAULT_CAPTIONS)


def test_sd_schedule_matches_diffusers():
    ref = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear")
    torch.testing.assert_close(SD.sd_process().alphas_cumprod,
                               ref.alphas_cumprod.double(), rtol=1e-6, atol=0)
    ref.set_timesteps(20)
    assert SD.leading_timesteps(20).long().tolist() == ref.timesteps.tolist()


@torch.no_grad()
def test_text_to_image_equals_diffusers_ddim_loop():
    # small random parts; both pipelines start from the same x_T and apply guidance scale 3
    torch.manual_seed(0)
    dunet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), attention_head_dim=2, cross_attention_dim=6,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    unet = UNetConditional.from_diffusers(dunet).eval()
    vae = KLAutoencoder(block_out_channels=(8, 8, 8), norm_num_groups=4).eval()
    vae.set_latent_scale(0.5, 0.1)
    dvae = diffusers.AutoencoderKL(**vae.to_diffusers_config()).eval()
    dvae.load_state_dict(vae.diffusers_state_dict(), strict=True)
    text, null = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    noise = torch.randn(2, 4, 8, 8)
    sched = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                    beta_schedule="scaled_linear", clip_sample=False,
                                    set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(10)
    lat = noise.clone()
    for t in sched.timesteps:
        eps_c, eps_u = dunet(torch.cat([lat, lat]), t,
                             encoder_hidden_states=torch.cat([text, null])).sample.chunk(2)
        lat = sched.step(eps_u + 3.0 * (eps_c - eps_u), t, lat).prev_sample
    theirs = dvae.decode(lat / 0.5 + 0.1).sample.clamp(-1, 1)
    ours = SD.text_to_image(unet, vae, text, null, SD.sd_process(), scale=3.0, steps=10,
                            sampler="ddim", noise=noise)
    assert theirs.std() > 1e-2
    # same DDIM map in two coordinates (x_t vs x_σ = x_t/α_t, float64 σ-grid): round-off only
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_diffusion_loss_targets():
    process = SD.sd_process()

    class Oracle(torch.nn.Module):
        """Returns the exact target, so the loss must be 0 for the matching prediction."""

        def __init__(self, kind):
            super().__init__()
            self.kind = kind

        def forward(self, z_t, t, text):
            acp = process.alphas_cumprod.float()[t].view(-1, 1, 1, 1)
            a, s = acp.sqrt(), (1 - acp).sqrt()
            eps = batch["eps"]
            return eps if self.kind == "eps" else a * eps - s * batch["z0"]

    g = torch.Generator().manual_seed(0)
    batch = {"z0": torch.randn(4, 4, 8, 8, generator=g), "eps": torch.randn(4, 4, 8, 8,
                                                                            generator=g),
             "t": torch.tensor([0, 10, 500, 999]), "text": torch.zeros(4, 3, 6)}
    for kind in ("eps", "v"):
        loss, _ = SD.diffusion_loss(Oracle(kind), batch, process, kind)
        assert float(loss) < 1e-10
    loss, _ = SD.diffusion_loss(Oracle("eps"), batch, process, "v")
    assert float(loss) > 1e-2
