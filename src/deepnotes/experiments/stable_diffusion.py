"""Stable Diffusion on the shapes world: latent diffusion with a text-conditioned U-Net and CFG.

The recipe of Rombach et al. (2022) scaled down to two CPU cores:

1. a frozen KL autoencoder (f = 4, c = 4) maps 32×32 images to 4×8×8 latents, rescaled by the
   factor ``s = 1 / std(z)`` computed from data (SD1's 0.18215 plays this role);
2. a frozen CLIP-style text transformer maps captions to per-token states ``τ(y)``;
3. :class:`~deepnotes.diffusion.unet_conditional.UNetConditional` (the architecture of diffusers'
   ``UNet2DConditionModel``) learns ε-prediction on SD's discrete "scaled linear" β schedule,
   with 10% of the captions replaced by the empty caption so that one network is both
   conditional and unconditional (classifier-free guidance, Ho & Salimans 2022);
4. sampling: DPM-Solver++(2M) or DDIM of :mod:`deepnotes.diffusion.samplers` on the guided
   prediction ``ε_∅ + s (ε_y − ε_∅)``, then the autoencoder's decoder.

Evaluation: a caption score (the kit's attribute classifier reads the generated shapes back and
the caption must match in count, kind, colour, size and relation) and a shapes FID, for each
guidance scale; sample grids per caption; reconstructions of the c = 4 and c = 16 autoencoders.
The frozen parts come from ``experiments._shapes_cache`` (trained once, cached on disk).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data.shapes import CaptionTokenizer, ShapesWorld, parse_caption
from deepnotes.diffusion.caption_score import caption_score_details, predict_scenes
from deepnotes.diffusion.parameterizations import as_denoiser
from deepnotes.diffusion.processes import DiscreteVP
from deepnotes.diffusion.samplers import sample_ddim, sample_dpmpp_2m
from deepnotes.diffusion.unet_conditional import UNetConditional
from deepnotes.experiments import _shapes_cache as cache
from deepnotes.experiments._diffusion_digits import one_thread
from deepnotes.nn.training import fit

SAMPLERS = {"ddim": sample_ddim, "dpmpp_2m": sample_dpmpp_2m}
"""Samplers of :mod:`deepnotes.diffusion.samplers` the pipeline can use (name → function)."""

DEFAULT_CAPTIONS = (
    "a large red circle",
    "a small blue square",
    "a large green triangle left of a small yellow circle",
    "a small purple cross above a large blue diamond",
    "a large yellow square right of a small red triangle",
    "a small green circle below a small purple square and left of a large red cross",
)


@dataclass
class Config(ExperimentConfig):
    block_out_channels: tuple[int, ...] = (32, 64)
    """U-Net channels per level (latents are 8×8: two levels work at 8×8 and 4×4)."""
    num_attention_heads: int = 2
    """Attention heads in every spatial transformer."""
    cross_attention_levels: int = 2
    """How many levels (finest first) carry spatial transformers; the others are plain."""
    prediction: str = "eps"
    """What the U-Net predicts: eps (SD 1.x) or v (SD 2.x 768-v)."""
    train_steps: int = 900
    """AdamW steps of the U-Net."""
    batch_size: int = 32
    """Training batch size (latents)."""
    lr: float = 1e-3
    """AdamW learning rate (constant after a linear warm-up of 5% of the steps)."""
    ema_decay: float = 0.999
    """Decay of the weight average that is sampled (with warm-up)."""
    p_uncond: float = 0.1
    """Caption dropout: probability that a training caption is replaced by the empty one."""
    n_train: int = 6000
    """Training images, encoded once to latent posteriors and text states."""
    sampler: str = "dpmpp_2m"
    """Sampler for every figure: dpmpp_2m or ddim."""
    sample_steps: int = 12
    """Sampler steps (each a guided U-Net call on a doubled batch)."""
    guidance_scales: tuple[float, ...] = (1.0, 2.0, 4.0, 7.5)
    """Guidance scales s evaluated (s = 1: conditional model alone; SD's default is 7.5)."""
    grid_scale: float = 4.0
    """Guidance scale of the sample grids."""
    n_eval: int = 128
    """Test captions (one image each) per guidance scale for caption score and FID."""
    n_fid_real: int = 2000
    """Real test-split images forming the shapes-FID reference."""
    captions: tuple[str, ...] = DEFAULT_CAPTIONS
    """Captions of the sample grid (an unknown word is an error naming it)."""
    per_caption: int = 6
    """Samples per caption in the grid."""
    small_parts: bool = False
    """Use the cache's seconds-long stand-ins for the frozen parts (smoke and quick presets)."""


PRESETS = make_presets(
    smoke=Config(block_out_channels=(16, 32), train_steps=4, batch_size=8, n_train=64,
                 sample_steps=3, guidance_scales=(1.0, 3.0), grid_scale=3.0, n_eval=8,
                 n_fid_real=32, captions=DEFAULT_CAPTIONS[:2], per_caption=2,
                 small_parts=True),
    quick=Config(block_out_channels=(16, 32), train_steps=40, batch_size=16, n_train=256,
                 sample_steps=6, guidance_scales=(1.0, 4.0), n_eval=32, n_fid_real=128,
                 per_caption=3, small_parts=True),
    full=Config(),
)
HEADLINE = "score/caption_best"
PEER = "score/caption_real"


# --- the pipeline pieces (also used by benchmarks/latent_diffusion.py) -------------------------
def sd_process(n_steps: int = 1000, beta_start: float = 0.00085,
               beta_end: float = 0.012) -> DiscreteVP:
    """SD's "scaled linear" chain: ``√β_i`` linear from ``√beta_start`` to ``√beta_end``."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n_steps, dtype=torch.float64) ** 2
    return DiscreteVP(torch.cumprod(1 - betas, 0))


def leading_timesteps(n: int, n_train_steps: int = 1000) -> torch.Tensor:
    """``k · ⌊T/n⌋`` for ``k = n − 1 … 0``: diffusers' "leading" spacing with offset 0."""
    return torch.arange(n - 1, -1, -1, dtype=torch.float64) * (n_train_steps // n)


def sampling_sigmas(process: DiscreteVP, n: int) -> torch.Tensor:
    """σ-space grid of :func:`leading_timesteps`, ending in 0 (what the samplers take)."""
    ts = leading_timesteps(n, process.alphas_cumprod.numel())
    return torch.cat([process.sigma_of_t(ts), torch.zeros(1, dtype=torch.float64)])


def guided_denoiser(unet: UNetConditional, process: DiscreteVP, text: torch.Tensor,
                    null_text: torch.Tensor, scale: float, prediction: str = "eps"):
    """``D(x, σ)`` of the guided prediction ``p_∅ + s (p_y − p_∅)`` (post Eq. 5).

    One U-Net call on the doubled batch ``[x, x]`` with ``[τ(y), τ(∅)]``, as SD pipelines do;
    ``s = 1`` skips the unconditional half. ``text``, ``null_text``: (B, S, D), same shape.
    """
    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x_t.dtype)
        if scale == 1.0:
            return unet(x_t, t, text)
        both = unet(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, null_text]))
        cond, uncond = both.chunk(2)
        return uncond + scale * (cond - uncond)

    return as_denoiser(model, process, prediction)


@torch.no_grad()
def text_to_image(unet: UNetConditional, vae, text: torch.Tensor, null_text: torch.Tensor,
                  process: DiscreteVP, *, scale: float, steps: int, sampler: str = "dpmpp_2m",
                  prediction: str = "eps", generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Text states → latents by guided sampling → images ``(B, 3, 32, 32)`` in [-1, 1].

    ``noise``: the initial latent noise ``x_T`` ``(B, c, 8, 8)`` (unit variance, as
    diffusers' ``latents``), else drawn from ``generator`` on the CPU.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    b, c = text.shape[0], unet.config.in_channels
    side = 32 // vae.downsampling_factor
    if noise is None:
        noise = torch.randn(b, c, side, side, generator=generator)
    sigmas = sampling_sigmas(process, steps)
    # x_T ~ N(0, I) in the chain's units is x_σ = x_T / α_T, of std sqrt(1 + σ_T²) in σ-space
    x = noise.to(text.device, text.dtype) * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    denoiser = guided_denoiser(unet, process, text, null_text, scale, prediction)
    latents = SAMPLERS[sampler](denoiser, x, sigmas)
    return vae.decode_latents(latents).clamp(-1, 1)


def check_captions(captions) -> list[str]:
    """Tokenize and parse every caption; an unknown word raises ``ValueError`` naming it."""
    tok = CaptionTokenizer()
    out = []
    for c in captions:
        if not isinstance(c, str):
            raise TypeError(f"captions must be strings, got {type(c).__name__}")
        tok.encode(c)
        parse_caption(c)
        out.append(c)
    return out


def diffusion_loss(unet: UNetConditional, batch: dict, process: DiscreteVP,
                   prediction: str) -> tuple[torch.Tensor, dict[str, float]]:
    """``E ‖target − net(z_t, t, τ)‖²`` with ``z_t = α_t z_0 + σ_t ε`` (post Eq. 3).

    Target ``ε`` (eps) or ``v = α_t ε − σ_t z_0`` (v; Salimans & Ho 2022).
    """
    z0, eps, t = batch["z0"], batch["eps"], batch["t"]
    acp = process.alphas_cumprod.to(z0)[t].view(-1, 1, 1, 1)
    alpha, sigma = acp.sqrt(), (1 - acp).sqrt()
    z_t = alpha * z0 + sigma * eps                                          # (B, c, h, w)
    target = eps if prediction == "eps" else alpha * eps - sigma * z0
    pred = unet(z_t, t, batch["text"])
    loss = (pred - target).square().mean()
    return loss, {}


# --- the experiment ----------------------------------------------------------------------------
def _encode_dataset(world, n, batch, vae, text_encoder, device, track):
    """Posterior means/stds of the scaled latents and text states of ``n`` training images."""
    means, stds, texts = [], [], []
    s, b = vae.scaling_factor, vae.shift_factor
    for step in track(range(math.ceil(n / batch)), "encode training set"):
        data = world.batch(step, min(batch, n - step * batch))
        post = vae.encode(data.images.to(device))
        means.append((post.mean - b) * s)
        stds.append(post.std * s)
        hidden, _ = text_encoder(data.tokens.to(device), data.attention_mask.to(device))
        texts.append(hidden)
    return torch.cat(means), torch.cat(stds), torch.cat(texts)


def run(config: Config) -> Result:
    if config.prediction not in ("eps", "v"):
        raise ValueError(f"prediction must be 'eps' or 'v', got {config.prediction!r}")
    if config.sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {config.sampler!r}")
    captions = check_captions(config.captions)
    if not 1 <= config.cross_attention_levels <= len(config.block_out_channels):
        raise ValueError("cross_attention_levels must be in 1..len(block_out_channels)")
    with start_run(__name__, config) as run, one_thread():
        device = run.device
        t0 = time.perf_counter()
        kw = dict(small=config.small_parts, out=config.out, device=device)
        vae4, ae_meta = cache.autoencoder(4, run.log, run.track, **kw)
        text_encoder, _ = cache.text_encoder(run.log, run.track, **kw)
        scorer, _ = cache.caption_scorer(run.log, run.track, **kw)
        fid, fid_meta = cache.shapes_fid(run.log, run.track, n_reference=config.n_fid_real, **kw)
        run.log_metrics({"time/frozen_parts_s": time.perf_counter() - t0,
                         "ae/scaling_factor_c4": float(vae4.scaling_factor),
                         "fid/real_floor": fid_meta["floor_fid"]})

        # -- data: latents and text states of the training images, encoded once -----------------
        t0 = time.perf_counter()
        with torch.no_grad():
            z_mean, z_std, text = _encode_dataset(ShapesWorld(config.seed, "train"),
                                                  config.n_train, 256, vae4, text_encoder,
                                                  device, run.track)
            null_tokens, null_mask = CaptionTokenizer()([""])
            null_text = text_encoder(null_tokens.to(device), null_mask.to(device))[0]  # (1,S,D)
        run.log(f"encoded {config.n_train} training images: latents {tuple(z_mean.shape[1:])}, "
                f"text {tuple(text.shape[1:])}, latent std after scaling "
                f"{float(z_mean.std()):.3f}")

        # -- the U-Net --------------------------------------------------------------------------
        levels = len(config.block_out_channels)
        k = config.cross_attention_levels
        unet = UNetConditional(
            in_channels=z_mean.shape[1], out_channels=z_mean.shape[1],
            block_out_channels=config.block_out_channels,
            down_block_types=("CrossAttnDownBlock2D",) * k + ("DownBlock2D",) * (levels - k),
            up_block_types=("UpBlock2D",) * (levels - k) + ("CrossAttnUpBlock2D",) * k,
            num_attention_heads=config.num_attention_heads, cross_attention_dim=text.shape[-1],
            norm_num_groups=min(16, config.block_out_channels[0])).to(device)
        n_params = sum(p.numel() for p in unet.parameters())
        process = sd_process()
        gen = torch.Generator().manual_seed(config.seed + 1)

        def batches(step: int) -> dict:
            g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            idx = torch.randint(config.n_train, (config.batch_size,), generator=g)
            drop = torch.rand(config.batch_size, generator=g) < config.p_uncond
            noise = torch.randn((config.batch_size,) + tuple(z_mean.shape[1:]), generator=g)
            post_noise = torch.randn(noise.shape, generator=g)
            t = torch.randint(0, process.alphas_cumprod.numel(), (config.batch_size,),
                              generator=g)
            idx_d, drop_d = idx.to(device), drop.to(device)
            cond = torch.where(drop_d[:, None, None], null_text.expand(len(idx), -1, -1),
                               text[idx_d])
            z0 = z_mean[idx_d] + z_std[idx_d] * post_noise.to(device)   # posterior draw
            return {"z0": z0, "text": cond, "eps": noise.to(device), "t": t.to(device)}

        opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.01)
        warm = max(1, config.train_steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm))
        t0 = time.perf_counter()
        result = fit(unet, lambda m, b: diffusion_loss(m, b, process, config.prediction),
                     batches, opt, config.train_steps, scheduler=sched, clip_grad_norm=1.0,
                     ema_decay=config.ema_decay, ema_warmup=True, progress=run.track,
                     description="U-Net", **run.fit_checkpoint(gen, every=200))
        train_s = time.perf_counter() - t0
        result.ema.copy_to(unet)
        unet.eval()
        losses = result.history["loss"]
        tail = losses[-max(1, len(losses) // 10):]
        run.log_metrics({"train/final_loss": sum(tail) / len(tail), "train/params": n_params,
                         "time/train_s": train_s,
                         "time/train_step_s":
                             train_s / max(1, result.steps_done - result.resumed_from)})

        # -- evaluation: caption score and FID per guidance scale -------------------------------
        test = ShapesWorld(config.seed, "test").batch(0, config.n_eval)
        with torch.no_grad():
            test_text = text_encoder(test.tokens.to(device), test.attention_mask.to(device))[0]
        real_details = caption_details(scorer, test.images, test.captions)
        real_score = real_details["full"]
        run.log_metrics({f"checks/{k}_real": v for k, v in real_details.items() if k != "full"})
        with torch.no_grad():   # the ceiling the autoencoder sets: its own reconstructions
            recon = vae4(test.images.to(device)).clamp(-1, 1).cpu()
        recon_score = cache_score(scorer, recon, test.captions)
        run.log_metrics({"score/caption_real": real_score, "score/caption_recon_c4": recon_score})
        noise = torch.randn(config.n_eval, z_mean.shape[1], 8, 8,
                            generator=torch.Generator().manual_seed(config.seed + 7))
        rows = []
        t0 = time.perf_counter()
        for s in run.track(config.guidance_scales, "guidance scales"):
            imgs = text_to_image(unet, vae4, test_text, null_text.expand_as(test_text), process,
                                 scale=s, steps=config.sample_steps, sampler=config.sampler,
                                 prediction=config.prediction, noise=noise).cpu()
            details = caption_details(scorer, imgs, test.captions)
            score = details["full"]
            fd = fid.fid(imgs)
            rows.append((s, score, fd))
            key = f"{s:g}".replace(".", "p")
            run.log_metrics({f"score/caption_cfg{key}": score, f"fid/cfg{key}": fd,
                             **{f"checks/{k}_cfg{key}": v for k, v in details.items()
                                if k != "full"}})
            run.log(f"guidance {s:4g}: caption score {score:.3f}, FID {fd:.2f}")
        sample_s = time.perf_counter() - t0
        n_images = config.n_eval * len(config.guidance_scales)
        best = max(rows, key=lambda r: r[1])
        run.log_metrics({"score/caption_best": best[1], "score/best_scale": best[0],
                         "fid/best_scale": best[2],
                         "time/sample_images_per_s": n_images / sample_s})

        # -- figures ----------------------------------------------------------------------------
        _plot_guidance(run, rows, real_score, recon_score, fid_meta["floor_fid"])
        with torch.no_grad():
            grid_text = text_encoder(*(t.to(device) for t in CaptionTokenizer()(
                [c for c in captions for _ in range(config.per_caption)])))[0]
        grid = text_to_image(unet, vae4, grid_text, null_text.expand_as(grid_text), process,
                             scale=config.grid_scale, steps=config.sample_steps,
                             sampler=config.sampler, prediction=config.prediction,
                             generator=torch.Generator().manual_seed(config.seed + 11)).cpu()
        _plot_grid(run, grid, captions, config.per_caption, config.grid_scale)
        _autoencoders(run, vae4, config, device)
        fig, ax = new_figure(size="column", layout="constrained")
        ax.plot(losses, color=PALETTE[0], lw=0.5, alpha=0.4, label="per step")
        w = max(1, len(losses) // 40)
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(smooth)) + w // 2, smooth, color=PALETTE[3],
                label=f"moving mean of {w} steps")
        ax.set(xlabel="training step",
               ylabel=r"$\|\epsilon - \epsilon_\theta\|^2$ per entry",
               yscale="log", title="U-Net training loss")
        ax.legend(fontsize=9)
        run.save_figure(fig, "training_loss")
        run.log_metrics({"time/total_s": run.wall_time_s, "time/total_min": run.wall_time_s / 60,
                         "time/train_min": train_s / 60})
    return run.result


def cache_score(scorer, images: torch.Tensor, captions) -> float:
    """Caption score of ``images`` for ``captions`` with the cached attribute classifier."""
    return caption_details(scorer, images, captions)["full"]


def caption_details(scorer, images: torch.Tensor, captions) -> dict[str, float]:
    """Fraction of ``images`` passing each check (count, kinds, colours, sizes, relations …)
    and all of them (``full``: the caption score)."""
    return {k: float(v) for k, v in caption_score_details(predict_scenes(scorer, images),
                                                          list(captions)).items()}


def _to_rgb(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def _mosaic(images: torch.Tensor, ncol: int) -> np.ndarray:
    imgs = _to_rgb(images)
    n, h, w, _ = imgs.shape
    nrow = math.ceil(n / ncol)
    canvas = np.ones((nrow * (h + 2) + 2, ncol * (w + 2) + 2, 3))
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w] = imgs[i]
    return canvas


def _plot_grid(run, images, captions, per_caption, scale) -> None:
    n = len(captions)
    fig, axes = new_figure(n, 1, size=(7.0, 1.25 * n + 0.3))
    axes = np.atleast_1d(axes)
    for i, (ax, cap) in enumerate(zip(axes, captions, strict=True)):
        ax.imshow(_mosaic(images[i * per_caption:(i + 1) * per_caption], per_caption),
                  interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"“{cap}”", fontsize=9)
    fig.suptitle(rf"Samples per caption (guidance scale $s_g={scale:g}$)", fontsize=10)
    fig.tight_layout()
    run.save_figure(fig, "samples_per_caption")


def _plot_guidance(run, rows, real_score, recon_score, real_fid) -> None:
    s = [r[0] for r in rows]
    fig, (ax, ax2) = new_figure(1, 2, size="column_tall", layout="constrained")
    ax.plot(s, [r[1] for r in rows], marker="o", color=PALETTE[0], label="generated")
    ax.axhline(real_score, color="k", ls="--", lw=1, label="real test images")
    ax.axhline(recon_score, color="grey", ls=":", lw=1.5,
               label="their reconstructions ($c=4$)")
    ax.set(xlabel="guidance scale $s_g$", ylabel="caption score", ylim=(0, 1.02),
           title="Images that match their caption")
    # legends under the axes: a curve may cross any part of the plot
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    ax2.plot(s, [r[2] for r in rows], marker="s", color=PALETTE[3], label="generated")
    ax2.axhline(real_fid, color="k", ls="--", lw=1, label="real held-out images")
    ax2.set(xlabel="guidance scale $s_g$", ylabel="shapes FID (lower is better)",
            yscale="log", title="Distance to real images")
    ax2.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    run.save_figure(fig, "guidance_tradeoff")


def _autoencoders(run, vae4, config, device) -> None:
    vae16, _ = cache.autoencoder(16, run.log, run.track, small=config.small_parts,
                                 out=config.out, device=device)     # trains (grad) if not cached
    images = ShapesWorld(config.seed, "test").batch(1, 256).images
    recs = {}
    for c, vae in ((4, vae4), (16, vae16)):
        err = cache.reconstruction_error(vae, images)   # pixels in [0, 1] units
        run.log_metrics({f"ae/mse_c{c}": err["mse"], f"ae/psnr_c{c}_db": err["psnr_db"]})
        with torch.no_grad():
            recs[c] = vae(images[:8].to(device)).clamp(-1, 1).cpu()
    show = torch.cat([images[:8], recs[4][:8], recs[16][:8]])
    fig, ax = new_figure(size=(7.0, 3.0), layout="constrained")
    ax.imshow(_mosaic(show, 8), interpolation="nearest")
    ax.set_yticks([18, 52, 86], ["input", "$c=4$", "$c=16$"])
    ax.tick_params(length=0)
    ax.grid(False)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(r"Autoencoder reconstructions: $c=4$ vs $c=16$ latent channels ($f=4$)")
    run.save_figure(fig, "autoencoder_c4_vs_c16")
