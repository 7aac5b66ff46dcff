"""Latent diffusion networks and pipelines against diffusers, with the same weights and inputs.

Sections (each a function returning its rows; :data:`SECTIONS` lists them in run order):

- ``unet`` (:func:`unet_rows`): our :class:`~deepnotes.diffusion.unet_conditional.UNetConditional`
  vs diffusers' ``UNet2DConditionModel`` holding the same weights (``from_diffusers``), on the
  same batch: forward+backward time (loss = mean square of the output), interleaved rounds
  (ours, theirs, then theirs, ours, ...), medians and the ratio ours / diffusers (target ≤ 1.0),
  and the largest output difference (the parity check, again, on the timed inputs). Two shapes:
  the stable-diffusion topic's U-Net on its batch, and an SD1-layout U-Net (three levels, two
  cross-attention levels, two resnets per level) on 16×16 latents.
- ``pipeline`` (:func:`pipeline_rows`): images/s of the whole text-to-image pipeline — text
  encoder → guided U-Net sampling loop → VAE decode — ours (:func:`deepnotes.experiments.
  stable_diffusion.text_to_image`: DDIM of ``deepnotes.diffusion.samplers`` in σ-space) vs a
  diffusers pipeline assembled from the same parts: diffusers' ``DDIMScheduler`` (SD's scaled
  linear β, "leading" spacing, ``set_alpha_to_one``) driving diffusers' ``UNet2DConditionModel``
  and ``AutoencoderKL`` loaded with our weights, the same text encoder, the same initial noise,
  steps and guidance scale. Both produce the same images up to float rounding (recorded as
  ``max_abs_diff``: the DDIM updates are the same map written in two coordinates). The U-Net's
  weights are random (the timing does not depend on them); the autoencoder and text encoder are
  the cached ones of ``experiments._shapes_cache`` (``--quick``: the small stand-ins).

Every timing runs on one torch thread (the machine is shared; see ``_diffusion_digits.one_thread``)
and the load average is recorded before and after.

    python benchmarks/latent_diffusion.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import time

import diffusers
import torch

from deepnotes.core.bench import bench_main
from deepnotes.diffusion.unet_conditional import UNetConditional
from deepnotes.experiments import _shapes_cache as cache
from deepnotes.experiments import stable_diffusion as SD

#: The topics whose posts quote this benchmark (`deepnotes bench SLUG` finds it).
TOPICS = ("stable-diffusion", "sd3")


def _quiet(iterable, *args, **kwargs):
    return iterable


def _interleaved(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Wall seconds of each ``fns[name]()`` over ``rounds`` rounds, the order alternating."""
    names = list(fns)
    for fn in fns.values():                                     # warm-up, untimed
        fn()
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def _random_unet(seed: int, **cfg) -> diffusers.UNet2DConditionModel:
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(**cfg)


UNET_CASES = {
    # the stable-diffusion topic's full-preset U-Net (latents 4×8×8, 19 text tokens of width 64)
    "topic_unet": dict(
        cfg=dict(block_out_channels=(32, 64), attention_head_dim=2, cross_attention_dim=64,
                 norm_num_groups=16, layers_per_block=1,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
        batch=32, side=8, tokens=19),
    # SD1's layout scaled down: three levels, cross-attention in the two finest, 2 resnets each
    "sd1_layout": dict(
        cfg=dict(block_out_channels=(32, 64, 64), attention_head_dim=4, cross_attention_dim=64,
                 norm_num_groups=16, layers_per_block=2,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
        batch=8, side=16, tokens=19),
}


def unet_rows(quick: bool = False) -> dict:
    rounds = 3 if quick else 9
    rows = {}
    for name, case in UNET_CASES.items():
        batch = 4 if quick else case["batch"]
        ref = _random_unet(0, **case["cfg"]).train()
        ours = UNetConditional.from_diffusers(ref).train()
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(batch, 4, case["side"], case["side"], generator=gen)
        text = torch.randn(batch, case["tokens"], case["cfg"]["cross_attention_dim"],
                           generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)

        def step(model, diffusers_out=False, x=x, t=t, text=text):
            def go():
                out = model(x, t, text)
                out = out.sample if diffusers_out else out
                out.square().mean().backward()
                model.zero_grad(set_to_none=True)
            return go

        with torch.no_grad():
            diff = float((ours(x, t, text) - ref(x, t, text).sample).abs().max())
        times = _interleaved({"ours": step(ours), "diffusers": step(ref, True)}, rounds)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows[name] = {"batch": batch, "latent_side": case["side"],
                      "params": sum(p.numel() for p in ours.parameters()),
                      "ours_fwd_bwd_s": med["ours"], "diffusers_fwd_bwd_s": med["diffusers"],
                      "ours_over_diffusers": med["ours"] / med["diffusers"],
                      "best_ratio": min(times["ours"]) / min(times["diffusers"]),
                      "max_abs_diff": diff, "rounds": rounds, "times": times}
    return rows


def _diffusers_pipeline(dunet, dvae, scheduler, text, null_text, noise, scale, steps):
    """diffusers' parts in SD's sampling loop (what ``StableDiffusionPipeline`` runs)."""
    scheduler.set_timesteps(steps)
    latents = noise * scheduler.init_noise_sigma
    cond = torch.cat([text, null_text])
    for t in scheduler.timesteps:
        both = dunet(torch.cat([latents, latents]), t, encoder_hidden_states=cond).sample
        eps_c, eps_u = both.chunk(2)
        eps = eps_u + scale * (eps_c - eps_u)
        latents = scheduler.step(eps, t, latents).prev_sample
    z = latents / dvae.config.scaling_factor + (dvae.config.shift_factor or 0.0)
    return dvae.decode(z).sample.clamp(-1, 1)


def pipeline_rows(quick: bool = False) -> dict:
    n_images, steps, scale = (4, 5, 7.5) if quick else (16, 20, 7.5)
    rounds = 3 if quick else 5
    # loaded from the cache (trained there first on a fresh machine, with gradients on)
    vae, _ = cache.autoencoder(4, lambda *_: None, _quiet, small=quick)
    text_encoder, _ = cache.text_encoder(lambda *_: None, _quiet, small=quick)
    width = text_encoder.config.hidden_size
    full = SD.PRESETS["full"]
    k = len(full.block_out_channels)
    dunet = _random_unet(0, block_out_channels=full.block_out_channels,
                         attention_head_dim=full.num_attention_heads,
                         cross_attention_dim=width, norm_num_groups=16,
                         in_channels=vae.config.latent_channels,
                         out_channels=vae.config.latent_channels,
                         down_block_types=("CrossAttnDownBlock2D",) * k,
                         up_block_types=("CrossAttnUpBlock2D",) * k).eval()
    unet = UNetConditional.from_diffusers(dunet).eval()
    dvae = diffusers.AutoencoderKL(**vae.to_diffusers_config()).eval()
    dvae.load_state_dict(vae.diffusers_state_dict(), strict=True)
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True,
        steps_offset=0, timestep_spacing="leading", prediction_type="epsilon")
    process = SD.sd_process()
    captions = [SD.DEFAULT_CAPTIONS[i % len(SD.DEFAULT_CAPTIONS)] for i in range(n_images)]
    noise = torch.randn(n_images, vae.config.latent_channels, 8, 8,
                        generator=torch.Generator().manual_seed(3))

    def encode():
        text, _, _ = text_encoder.encode_captions(captions)
        null, _, _ = text_encoder.encode_captions([""] * n_images)
        return text, null

    def ours():
        text, null = encode()
        return SD.text_to_image(unet, vae, text, null, process, scale=scale, steps=steps,
                                sampler="ddim", noise=noise)

    def theirs():
        text, null = encode()
        return _diffusers_pipeline(dunet, dvae, scheduler, text, null, noise, scale, steps)

    with torch.no_grad():
        diff = float((ours() - theirs()).abs().max())
        times = _interleaved({"ours": ours, "diffusers": theirs}, rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n_images": n_images, "steps": steps, "guidance_scale": scale,
            "unet_calls_per_image_batch": steps,
            "ours_images_per_s": n_images / med["ours"],
            "diffusers_images_per_s": n_images / med["diffusers"],
            "ours_over_diffusers_speed": med["diffusers"] / med["ours"],
            "max_abs_diff": diff, "rounds": rounds, "times": times}


MMDIT_CASES = {
    # the sd3 topic's full-preset MM-DiT: 8×8×16 latents (16 patches), 19 text tokens of width 64
    "topic_mmdit": dict(
        cfg=dict(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=4,
                 attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64,
                 caption_projection_dim=64, pooled_projection_dim=64, pos_embed_max_size=4,
                 qk_norm="rms_norm"),
        batch=32, tokens=19),
    # SD3's layout scaled down: 16×16×16 latents (64 patches), more and wider blocks, no QK norm
    "sd3_layout": dict(
        cfg=dict(sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=6,
                 attention_head_dim=32, num_attention_heads=4, joint_attention_dim=96,
                 caption_projection_dim=128, pooled_projection_dim=64, pos_embed_max_size=12,
                 qk_norm=None),
        batch=8, tokens=32),
}


def mmdit_rows(quick: bool = False) -> dict:
    """Our :class:`~deepnotes.diffusion.mmdit.MMDiT` vs diffusers' ``SD3Transformer2DModel``
    holding the same weights (``from_diffusers``) on the same batch: forward+backward seconds
    (loss = mean square of the output), interleaved rounds, medians, the ratio ours / diffusers
    (target ≤ 1.0) and the largest output difference on the timed inputs."""
    from deepnotes.diffusion.mmdit import MMDiT

    rounds = 3 if quick else 9
    rows = {}
    for name, case in MMDIT_CASES.items():
        cfg = case["cfg"]
        batch = 4 if quick else case["batch"]
        torch.manual_seed(0)
        ref = diffusers.SD3Transformer2DModel(**cfg).train()
        ours = MMDiT.from_diffusers(ref).train()
        gen = torch.Generator().manual_seed(1)
        args = dict(
            hidden_states=torch.randn(batch, cfg["in_channels"], cfg["sample_size"],
                                      cfg["sample_size"], generator=gen),
            encoder_hidden_states=torch.randn(batch, case["tokens"], cfg["joint_attention_dim"],
                                              generator=gen),
            pooled_projections=torch.randn(batch, cfg["pooled_projection_dim"], generator=gen),
            timestep=1000 * torch.rand(batch, generator=gen))

        def step(model, diffusers_out=False, args=args):
            def go():
                out = model(**args)
                out = out.sample if diffusers_out else out
                out.square().mean().backward()
                model.zero_grad(set_to_none=True)
            return go

        with torch.no_grad():
            diff = float((ours(**args) - ref(**args).sample).abs().max())
        times = _interleaved({"ours": step(ours), "diffusers": step(ref, True)}, rounds)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows[name] = {"batch": batch, "latent_side": cfg["sample_size"],
                      "image_tokens": (cfg["sample_size"] // cfg["patch_size"]) ** 2,
                      "text_tokens": case["tokens"], "qk_norm": cfg["qk_norm"],
                      "params": sum(p.numel() for p in ours.parameters()),
                      "ours_fwd_bwd_s": med["ours"], "diffusers_fwd_bwd_s": med["diffusers"],
                      "ours_over_diffusers": med["ours"] / med["diffusers"],
                      "best_ratio": min(times["ours"]) / min(times["diffusers"]),
                      "max_abs_diff": diff, "rounds": rounds, "times": times}
    return rows


#: Section name → function(quick) -> rows, in run order (sd3 registers its MM-DiT rows here).
SECTIONS = {"unet": unet_rows, "pipeline": pipeline_rows, "mmdit": mmdit_rows}


def run(quick: bool = False) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        figures: dict = {"torch_threads": 1, "loadavg_before": os.getloadavg()}
        for name, fn in SECTIONS.items():
            figures[name] = fn(quick)
        figures["loadavg_after"] = os.getloadavg()
        return figures
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    bench_main(__file__, run)
