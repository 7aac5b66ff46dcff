"""SD3 in miniature: an MM-DiT rectified flow on the captioned shapes world, against a U-Net DDPM.

Everything runs in the latent space of the cached ``c = 16`` KL autoencoder (SD3's latent width;
:func:`deepnotes.experiments._shapes_cache.autoencoder`): a 32×32 image is an 8×8×16 latent, cut
into 2×2 patches, so the transformer sees 16 image tokens next to the caption's tokens. The text
features (per-token and pooled) come from the cached CLIP-style text encoder. Latents and text
features of a pool of training captions are computed once (the encoders are frozen), as
SD3's training pipeline precomputes them.

Three models are trained on the same pool, batch size and optimiser:

- ``mmdit_ln``: :class:`~deepnotes.diffusion.mmdit.MMDiT` as a rectified flow
  (:func:`~deepnotes.diffusion.rectified_flow.rectified_flow_loss`) with SD3's logit-normal
  training times (:func:`~deepnotes.diffusion.mmdit.sample_timesteps`, ``m = 0, s = 1``);
- ``mmdit_uniform``: the same with ``t ~ U(0, 1)``, the same number of steps;
- ``unet_ddpm``: SD1's recipe, :class:`~deepnotes.diffusion.unet_conditional.UNetConditional`
  predicting ε on DDPM's discrete chain (``scaled_linear`` β, 1000 steps), with as many optimiser
  steps as give it the MM-DiT's training FLOPs (counted by ``torch.utils.flop_counter``).

Captions are dropped (replaced by the empty caption's features) with probability
``caption_dropout`` for classifier-free guidance. Sampling: rectified-flow Euler
(:func:`~deepnotes.diffusion.samplers.sample_rf_euler`) on ``sample_steps`` shifted times for the
flows, DDIM (:func:`~deepnotes.diffusion.samplers.sample_ddim`) with the same number of network
calls for the U-Net, both with :func:`~deepnotes.diffusion.guidance.classifier_free_guidance`.
Quality: the caption score (:func:`~deepnotes.diffusion.caption_score.caption_score`, the fraction
of images whose shapes, colours, sizes and relations match the caption, read by the cached
attribute classifier) and a shapes FID (Fréchet distance of the classifier's features), plus a
held-out flow-matching loss on a fixed grid of ``t`` (comparable between the two t-samplings).

Figures: ``samples``, ``t_sampling``, ``equal_compute``, ``guidance``.
Headline: caption score of ``mmdit_ln``; peer: ``unet_ddpm`` at the same training FLOPs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data.shapes import ShapesWorld
from deepnotes.diffusion.caption_score import caption_score_details, predict_scenes
from deepnotes.diffusion.guidance import classifier_free_guidance
from deepnotes.diffusion.mmdit import (
    MMDiT,
    MMDiTConfig,
    logit_normal_density,
    sample_timesteps,
    shift_timesteps,
)
from deepnotes.diffusion.parameterizations import as_denoiser
from deepnotes.diffusion.processes import DiscreteVP
from deepnotes.diffusion.rectified_flow import rectified_flow_loss
from deepnotes.diffusion.samplers import sample_ddim, sample_rf_euler
from deepnotes.diffusion.unet_conditional import UNetConditional, UNetConditionalConfig
from deepnotes.experiments import _shapes_cache
from deepnotes.experiments._diffusion_digits import one_thread
from deepnotes.nn.training import fit


@dataclass
class Config(ExperimentConfig):
    latent_channels: int = 16
    """Channels c of the cached autoencoder's latent (16 as in SD3; 4 as in SD1)."""
    small_cache: bool = False
    """Use the cache's small (seconds-to-train) autoencoder, text encoder and scorer (smoke and
    quick: the demo tour never trains the full-size cached networks)."""
    width: int = 64
    """MM-DiT width (heads × 32)."""
    depth: int = 4
    """MM-DiT blocks."""
    qk_norm: bool = True
    """RMS-normalise queries and keys per head (SD3.5; SD3.0 had none)."""
    unet_channels: tuple[int, ...] = (32, 64)
    """U-Net channels per level (cross-attention at every level, SD1's block types)."""
    n_pool: int = 4000
    """Training images (and captions) encoded once into latents and text features."""
    steps: int = 1200
    """Optimiser steps of each MM-DiT run (the U-Net gets the same training FLOPs)."""
    batch: int = 32
    """Batch size of every model."""
    lr: float = 1e-3
    """AdamW learning rate (linear warm-up over 5 % of the steps, then cosine to 10 %)."""
    logit_mean: float = 0.0
    """m of the logit-normal training-time density."""
    logit_std: float = 1.0
    """s of the logit-normal training-time density."""
    caption_dropout: float = 0.1
    """Probability of training on the empty caption (classifier-free guidance)."""
    guidance: float = 4.0
    """Guidance scale γ of the evaluations (γ = 1: no guidance)."""
    guidance_sweep: tuple[float, ...] = (1.0, 4.0, 7.0)
    """Guidance scales of the γ sweep (MM-DiT, logit-normal)."""
    shift: float = 1.0
    """Resolution-dependent shift α of the sampling times (SD3: 3 at 1024²; 1 = none)."""
    sample_steps: int = 20
    """Network evaluations per sample (Euler for the flows, DDIM for the U-Net)."""
    n_evals: int = 3
    """Evaluations during training (caption score and held-out loss vs steps)."""
    n_eval_images: int = 32
    """Images per evaluation during training."""
    n_final_images: int = 128
    """Images of the final evaluation of each model (caption score and FID)."""
    n_held_out: int = 256
    """Held-out (latent, noise) pairs of the held-out flow-matching loss."""
    fid_reference: int = 2000
    """Real test-split images of the shapes-FID reference."""
    grid_captions: int = 6
    """Captions (rows) of the sample grid; four seeds each."""


PRESETS = make_presets(
    smoke=Config(small_cache=True, width=32, depth=2, unet_channels=(16, 32), n_pool=64,
                 steps=4, batch=8, guidance_sweep=(1.0, 4.0), sample_steps=2, n_evals=1,
                 n_eval_images=8, n_final_images=8, n_held_out=8, fid_reference=32,
                 grid_captions=2),
    quick=Config(small_cache=True, width=64, depth=2, unet_channels=(16, 32), n_pool=1000,
                 steps=120, guidance_sweep=(1.0, 4.0), sample_steps=12, n_evals=2,
                 n_eval_images=32, n_final_images=96, n_held_out=128),
    full=Config(),
)
HEADLINE = "mmdit_ln/caption_score"
PEER = "unet_ddpm/caption_score"

HEAD_DIM = 32
DDPM_STEPS = 1000
HELD_OUT_TS = torch.linspace(0.05, 0.95, 10)
MODELS = {"mmdit_ln": "MM-DiT + RF, logit-normal $t$", "mmdit_uniform": "MM-DiT + RF, uniform $t$",
          "unet_ddpm": "U-Net + DDPM ($\\epsilon$)"}


# --- frozen parts and the encoded pool -----------------------------------------------------------
@dataclass
class Pool:
    """Encoded captions and images: ``latents`` (N, c, 8, 8), ``tokens`` (N, T, d),
    ``pooled`` (N, d_p) and the captions; the empty caption's ``null_tokens`` (1, T, d),
    ``null_pooled`` (1, d_p)."""

    latents: torch.Tensor
    tokens: torch.Tensor
    pooled: torch.Tensor
    captions: list[str]
    null_tokens: torch.Tensor
    null_pooled: torch.Tensor


class Parts:
    """The cached, frozen autoencoder, text encoder, attribute classifier and FID features."""

    def __init__(self, config: Config, run):
        kw = {"small": config.small_cache, "out": config.out, "device": run.device}
        self.device = run.device
        self.vae, self.vae_meta = _shapes_cache.autoencoder(config.latent_channels, run.log,
                                                            run.track, **kw)
        self.text, self.text_meta = _shapes_cache.text_encoder(run.log, run.track, **kw)
        self.fid, self.fid_meta = _shapes_cache.shapes_fid(
            run.log, run.track, n_reference=config.fid_reference, **kw)
        self.scorer = self.fid.net

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled, _ = self.text.encode_captions(captions)
        return hidden.float(), pooled.float()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.cat([self.vae.encode_latents(chunk.to(self.device), generator=generator)
                          for chunk in images.split(256)])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.vae.decode_latents(chunk).clamp(-1, 1)
                          for chunk in latents.split(256)])


def encode_pool(parts: Parts, world: ShapesWorld, n: int, seed: int) -> Pool:
    """Images and captions of ``world`` batches ``0, 1, ...`` encoded by the frozen parts."""
    gen = torch.Generator(device=parts.device).manual_seed(seed)
    latents, tokens, pooled, captions = [], [], [], []
    for step in range(math.ceil(n / 256)):
        batch = world.batch(step, min(256, n - 256 * step))
        latents.append(parts.encode_images(batch.images, gen))
        hidden, pool = parts.encode_text(batch.captions)
        tokens.append(hidden)
        pooled.append(pool)
        captions += batch.captions
    null_tokens, null_pooled = parts.encode_text([""])
    return Pool(torch.cat(latents), torch.cat(tokens), torch.cat(pooled), captions,
                null_tokens, null_pooled)


# --- the models ----------------------------------------------------------------------------------
def make_mmdit(config: Config, pool: Pool) -> MMDiT:
    c = pool.latents.shape[1]
    side = pool.latents.shape[-1]
    return MMDiT(MMDiTConfig(
        sample_size=side, patch_size=2, in_channels=c, out_channels=c, num_layers=config.depth,
        attention_head_dim=HEAD_DIM, num_attention_heads=config.width // HEAD_DIM,
        joint_attention_dim=pool.tokens.shape[-1], caption_projection_dim=config.width,
        pooled_projection_dim=pool.pooled.shape[-1], pos_embed_max_size=side // 2,
        qk_norm="rms_norm" if config.qk_norm else None))


def make_unet(config: Config, pool: Pool) -> UNetConditional:
    c = pool.latents.shape[1]
    levels = len(config.unet_channels)
    return UNetConditional(UNetConditionalConfig(
        in_channels=c, out_channels=c, block_out_channels=tuple(config.unet_channels),
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        layers_per_block=1, num_attention_heads=tuple(ch // HEAD_DIM or 1
                                                      for ch in config.unet_channels),
        cross_attention_dim=pool.tokens.shape[-1], norm_num_groups=8))


def ddpm_process() -> DiscreteVP:
    """SD1's ``scaled_linear`` chain: ``β`` from 0.00085 to 0.012, linear in ``sqrt β``."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, DDPM_STEPS, dtype=torch.float64) ** 2
    return DiscreteVP(torch.cumprod(1 - betas, 0))


def _text(pool: Pool, idx: torch.Tensor, drop: torch.Tensor):
    tokens = torch.where(drop[:, None, None], pool.null_tokens, pool.tokens[idx])
    pooled = torch.where(drop[:, None], pool.null_pooled, pool.pooled[idx])
    return tokens, pooled


def batch_source(pool: Pool, config: Config, seed: int, t_kind: str):
    """``batches(step)``: pool indices, noise, times and caption drops drawn from a generator
    seeded by ``(seed, step)`` on the CPU (the same batches on every device and on resume)."""
    n, dev = pool.latents.shape[0], pool.latents.device

    def batches(step: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        b = config.batch
        out = {"idx": torch.randint(0, n, (b,), generator=gen),
               "noise": torch.randn((b,) + tuple(pool.latents.shape[1:]), generator=gen),
               "drop": torch.rand(b, generator=gen) < config.caption_dropout}
        if t_kind == "ddpm":
            out["t"] = torch.randint(0, DDPM_STEPS, (b,), generator=gen).float()
        else:
            out["t"] = sample_timesteps(b, t_kind, config.logit_mean, config.logit_std,
                                        generator=gen)
        return {k: v.to(dev) for k, v in out.items()}

    return batches


def rf_loss(pool: Pool):
    """Flow-matching loss of an MM-DiT velocity on a batch (post Eq. 2)."""

    def loss_fn(model: MMDiT, batch) -> torch.Tensor:
        tokens, pooled = _text(pool, batch["idx"], batch["drop"])
        return rectified_flow_loss(lambda x, t: model(x, tokens, pooled, 1000 * t),
                                   pool.latents[batch["idx"]], batch["noise"], t=batch["t"])

    return loss_fn


def ddpm_loss(pool: Pool, process: DiscreteVP):
    """ε-prediction loss ``||ε − ε_θ(z_t, t, τ(y))||²`` on DDPM's chain (Ho et al. 2020)."""

    def loss_fn(model: UNetConditional, batch) -> torch.Tensor:
        tokens, _ = _text(pool, batch["idx"], batch["drop"])
        x0, noise, t = pool.latents[batch["idx"]], batch["noise"], batch["t"]
        x_t = process.q_sample(x0, t, noise)
        return ((model(x_t, t, tokens) - noise) ** 2).flatten(1).sum(1).mean()

    return loss_fn


def train_flops(model, loss_fn, batch) -> int:
    """FLOPs of one forward + backward on ``batch`` (``torch.utils.flop_counter``)."""
    with FlopCounterMode(display=False) as counter:
        loss_fn(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


# --- sampling and evaluation ---------------------------------------------------------------------
def rf_sampler(model: MMDiT, pool: Pool, config: Config, guidance: float):
    ts = shift_timesteps(torch.linspace(1.0, 0.0, config.sample_steps + 1), config.shift)

    def sample(noise, tokens, pooled):
        null_t = pool.null_tokens.expand_as(tokens)
        null_p = pool.null_pooled.expand_as(pooled)
        cond = lambda x, t: model(x, tokens, pooled, 1000 * t)            # noqa: E731
        uncond = lambda x, t: model(x, null_t, null_p, 1000 * t)          # noqa: E731
        velocity = cond if guidance == 1 else classifier_free_guidance(cond, uncond,
                                                                       guidance - 1)
        return sample_rf_euler(velocity, noise, ts)

    return sample


def ddim_sampler(model: UNetConditional, pool: Pool, config: Config, guidance: float):
    process = ddpm_process()
    steps = torch.linspace(DDPM_STEPS - 1, 0, config.sample_steps).round()
    sigmas = torch.cat([process.sigma_of_t(steps), torch.zeros(1, dtype=torch.float64)])

    def sample(noise, tokens, pooled):
        null_t = pool.null_tokens.expand_as(tokens)
        cond = as_denoiser(lambda x, t: model(x, t, tokens), process, "eps")
        uncond = as_denoiser(lambda x, t: model(x, t, null_t), process, "eps")
        den = cond if guidance == 1 else classifier_free_guidance(cond, uncond, guidance - 1)
        x = noise * math.sqrt(1 + float(sigmas[0]) ** 2)   # x_σ of unit-variance data
        return sample_ddim(den, x, sigmas.to(noise))

    return sample


@dataclass
class EvalSet:
    captions: list[str]
    tokens: torch.Tensor
    pooled: torch.Tensor
    noise: torch.Tensor


def make_eval_set(parts: Parts, world: ShapesWorld, n: int, latent_shape, seed: int) -> EvalSet:
    batch = world.batch(0, n)
    tokens, pooled = parts.encode_text(batch.captions)
    noise = torch.randn((n,) + tuple(latent_shape),
                        generator=torch.Generator().manual_seed(seed)).to(parts.device)
    return EvalSet(batch.captions, tokens, pooled, noise)


@torch.no_grad()
def evaluate(sample, parts: Parts, ev: EvalSet, n: int, with_fid: bool) -> dict[str, float]:
    """Caption-score details (and FID) of ``n`` samples for the first ``n`` eval captions."""
    chunks = [slice(i, min(i + 64, n)) for i in range(0, n, 64)]
    latents = torch.cat([sample(ev.noise[c], ev.tokens[c], ev.pooled[c]) for c in chunks])
    images = parts.decode(latents)
    out = caption_score_details(predict_scenes(parts.scorer, images), ev.captions[:n])
    if with_fid:
        out["fid"] = parts.fid.fid(images)
    out["images"] = images.cpu()
    return out


@torch.no_grad()
def held_out_loss(model: MMDiT, pool: Pool, held: dict[str, torch.Tensor]) -> float:
    """Flow-matching loss averaged over the fixed grid ``HELD_OUT_TS`` (comparable between
    training-time densities)."""
    losses = []
    for t in HELD_OUT_TS.tolist():
        tt = torch.full((held["latents"].shape[0],), t, device=held["latents"].device)
        losses.append(float(rectified_flow_loss(
            lambda x, s: model(x, held["tokens"], held["pooled"], 1000 * s),
            held["latents"], held["noise"], t=tt)))
    return float(np.mean(losses))


# --- one training run ----------------------------------------------------------------------------
def train_model(run, name: str, model, loss_fn, batches, steps: int, config: Config, evaluate_at,
                flops_per_step: int) -> dict:
    """Train with ``fit`` (AdamW, warm-up + cosine), evaluating at the steps ``evaluate_at``."""
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, i / max(1, steps))))))
    curve: dict[str, list[float]] = {"step": [], "caption_score": [], "held_out_loss": []}
    train_time = [0.0]
    t0 = [time.perf_counter()]

    def callback(step: int, metrics: dict[str, float]) -> None:
        if step + 1 in evaluate_at:
            train_time[0] += time.perf_counter() - t0[0]
            model.eval()
            for key, value in evaluate_at[step + 1](model).items():
                curve.setdefault(key, []).append(value)
            curve["step"].append(step + 1)
            model.train()
            t0[0] = time.perf_counter()

    result = fit(model, loss_fn, batches, opt, steps, scheduler=sched, progress=run.track,
                 description=name, callback=callback)
    train_time[0] += time.perf_counter() - t0[0]
    model.eval()
    curve["flops"] = [s * flops_per_step for s in curve["step"]]
    return {"history": result.history["loss"], "curve": curve, "train_time_s": train_time[0]}


# --- figures -------------------------------------------------------------------------------------
def _to_rgb(img: torch.Tensor) -> np.ndarray:
    return ((img.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)


def plot_samples(grids: dict[str, torch.Tensor], captions: list[str], n_cols: int):
    """One row per caption (its text above the row), one block of ``n_cols`` seeds per model."""
    n_rows = len(captions)
    fig, axes = new_figure(n_rows, 2 * n_cols + 1, size=(7.0, 0.5 + 0.98 * n_rows),
                           gridspec_kw={"width_ratios": [1] * n_cols + [0.15] + [1] * n_cols})
    axes = np.atleast_2d(axes)
    for col_block, (name, images) in enumerate(grids.items()):
        for r in range(n_rows):
            for c in range(n_cols):
                ax = axes[r, c + col_block * (n_cols + 1)]
                ax.imshow(_to_rgb(images[r * n_cols + c]))
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
        # the model's name above its block, clear of the first caption line
        axes[0, col_block * (n_cols + 1)].set_title(MODELS[name], loc="left", fontsize=10,
                                                     pad=16, weight="bold")
    for r in range(n_rows):
        axes[r, n_cols].axis("off")
        axes[r, 0].text(0.0, 1.04, f"“{captions[r]}”", transform=axes[r, 0].transAxes,
                        fontsize=9, ha="left", va="bottom")
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.45 / (0.5 + 0.98 * n_rows),
                        bottom=0.01, wspace=0.05, hspace=0.3)
    return fig


def plot_t_sampling(curves: dict[str, dict], config: Config):
    fig, axes = new_figure(1, 3, size="column", layout="constrained")
    t = torch.linspace(0.001, 0.999, 400)
    axes[0].plot(t, logit_normal_density(t, config.logit_mean, config.logit_std),
                 color=PALETTE[0])
    axes[0].plot(t, torch.ones_like(t), color=PALETTE[1])
    axes[0].set_xlabel("$t$")
    axes[0].set_ylabel(r"density $\pi(t)$")
    axes[0].set_title("Training times")
    for i, name in enumerate(("mmdit_ln", "mmdit_uniform")):
        cur = curves[name]
        axes[1].plot(cur["step"], cur["held_out_loss"], "o-", color=PALETTE[i], ms=3)
        axes[2].plot(cur["step"], cur["caption_score"], "o-", color=PALETTE[i], ms=3,
                     label=MODELS[name].split(", ")[1] + " (MM-DiT + RF)")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("held-out flow loss")
    axes[1].set_title("Held-out loss")
    axes[2].set_xlabel("training step")
    axes[2].set_ylabel("caption score")
    axes[2].set_title("Caption score")
    # one legend for the three panels (same colours throughout), below them
    fig.legend(*axes[2].get_legend_handles_labels(), loc="outside lower center", ncol=2,
               fontsize=9)
    return fig


def plot_equal_compute(curves: dict[str, dict], finals: dict[str, dict]):
    fig, axes = new_figure(1, 2, size="column_tall", layout="constrained")
    colors = {"mmdit_ln": PALETTE[0], "mmdit_uniform": PALETTE[1], "unet_ddpm": PALETTE[2]}
    for name in ("mmdit_ln", "unet_ddpm"):
        cur = curves[name]
        tflops = np.asarray(cur["flops"]) / 1e12
        axes[0].plot(tflops, cur["caption_score"], "o-", ms=3, color=colors[name],
                     label=MODELS[name])
    axes[0].set_xlabel("training compute (TFLOP)")
    axes[0].set_ylabel("caption score")
    axes[0].set_title("During training")
    names = list(finals)
    x = np.arange(len(names))
    axes[1].bar(x, [finals[n]["fid"] for n in names],
                color=[colors.get(n, PALETTE[3]) for n in names])
    axes[1].set_xticks(x, [MODELS[n].replace(", ", ",\n").replace(" + ", "\n+ ")
                           for n in names], fontsize=9)
    axes[1].set_ylabel("shapes FID (lower is better)")
    axes[1].set_title("Final models")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2,
               fontsize=9)
    return fig


#: Checks of :func:`deepnotes.diffusion.caption_score.match_caption`, as a legend names them.
CHECKS = {"full": "full caption (the caption score)", "kinds": "shape kinds right",
          "colours": "colours right", "objects": "objects right (no relations)"}


def plot_guidance(sweep: dict[float, dict]):
    fig, axes = new_figure(1, 2, size="column_tall", layout="constrained")
    gs = sorted(sweep)
    axes[0].plot(gs, [sweep[g]["full"] for g in gs], "o-", label=CHECKS["full"])
    for key, j in (("kinds", 1), ("colours", 2), ("objects", 3)):
        axes[0].plot(gs, [sweep[g][key] for g in gs], "o--", color=PALETTE[j], ms=3,
                     label=CHECKS[key])
    axes[0].set_xlabel(r"guidance scale $\gamma$")
    axes[0].set_ylabel("fraction of images correct")
    axes[0].set_title("Caption checks")
    axes[1].plot(gs, [sweep[g]["fid"] for g in gs], "o-", color=PALETTE[4])
    axes[1].set_xlabel(r"guidance scale $\gamma$")
    axes[1].set_ylabel("shapes FID (lower is better)")
    axes[1].set_title("Distance to real images")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2,
               fontsize=9)
    return fig


# --- the experiment ------------------------------------------------------------------------------
def run(config: Config) -> Result:
    with start_run(__name__, config) as run, one_thread():
        t_start = time.perf_counter()
        parts = Parts(config, run)
        pool = encode_pool(parts, ShapesWorld(config.seed, "train"), config.n_pool,
                           config.seed)
        latent_shape = tuple(pool.latents.shape[1:])
        n_eval = max(config.n_final_images, config.n_eval_images)
        ev = make_eval_set(parts, ShapesWorld(config.seed, "val"), n_eval, latent_shape,
                           config.seed + 1)
        held_world = ShapesWorld(config.seed, "test").batch(0, config.n_held_out)
        gen = torch.Generator(device=parts.device).manual_seed(config.seed + 2)
        h_tokens, h_pooled = parts.encode_text(held_world.captions)
        held = {"latents": parts.encode_images(held_world.images, gen), "tokens": h_tokens,
                "pooled": h_pooled, "noise": torch.randn(
                    (config.n_held_out,) + latent_shape,
                    generator=torch.Generator().manual_seed(config.seed + 3)).to(parts.device)}
        real_images = ShapesWorld(config.seed, "val").batch(0, n_eval).images
        decoded = parts.decode(parts.encode_images(real_images[:config.n_final_images], gen))
        real = caption_score_details(predict_scenes(parts.scorer, decoded),
                                     ev.captions[:config.n_final_images])
        run.log_metrics({
            "data/real_caption_score": parts.fid_meta["classifier"]["caption_score"],
            "data/reconstruction_caption_score": real["full"],
            "data/fid_floor": parts.fid.fid(real_images[:config.n_final_images]),
            "data/reconstruction_fid": parts.fid.fid(decoded),
            "data/autoencoder_psnr_db": parts.vae_meta["psnr_db"],
            "data/text_retrieval": float(np.mean(list(
                parts.text_meta["retrieval"].values()))),
            "data/pool_size": float(config.n_pool),
            "data/latent_channels": float(latent_shape[0])})
        run.log(f"pool: {tuple(pool.latents.shape)} latents, text {tuple(pool.tokens.shape)}; "
                f"caption score of decoded real images {real['full']:.3f}")

        eval_steps = sorted({round(config.steps * (k + 1) / config.n_evals)
                             for k in range(config.n_evals)})
        probe = batch_source(pool, config, config.seed, "uniform")(0)
        curves, finals, nets, flops = {}, {}, {}, {}

        def make_evaluator(name, sampler_fn, is_flow):
            def ev_fn(model):
                got = evaluate(sampler_fn(model, pool, config, config.guidance), parts, ev,
                               config.n_eval_images, with_fid=False)
                out = {"caption_score": got["full"]}
                if is_flow:
                    out["held_out_loss"] = held_out_loss(model, pool, held)
                return out
            return ev_fn

        specs = {"mmdit_ln": "logit_normal", "mmdit_uniform": "uniform"}
        for name, kind in specs.items():
            torch.manual_seed(config.seed)
            model = make_mmdit(config, pool).to(parts.device)
            flops[name] = train_flops(model, rf_loss(pool), probe)
            ev_fn = make_evaluator(name, rf_sampler, True)
            out = train_model(run, name, model, rf_loss(pool),
                              batch_source(pool, config, config.seed, kind), config.steps,
                              config, {s: ev_fn for s in eval_steps}, flops[name])
            curves[name], nets[name] = out["curve"], model
            run.log_metrics({f"{name}/train_time_s": out["train_time_s"],
                             f"{name}/final_train_loss": float(np.mean(out["history"][-20:])),
                             f"{name}/params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                             f"{name}/gflop_per_step": flops[name] / 1e9,
                             f"{name}/steps": float(config.steps)})

        torch.manual_seed(config.seed)
        unet = make_unet(config, pool).to(parts.device)
        process = ddpm_process()
        flops["unet_ddpm"] = train_flops(unet, ddpm_loss(pool, process), probe)
        unet_steps = max(1, round(config.steps * flops["mmdit_ln"] / flops["unet_ddpm"]))
        unet_evals = {round(s * unet_steps / config.steps) or 1: make_evaluator(
            "unet_ddpm", ddim_sampler, False) for s in eval_steps}
        out = train_model(run, "unet_ddpm", unet, ddpm_loss(pool, process),
                          batch_source(pool, config, config.seed, "ddpm"), unet_steps, config,
                          unet_evals, flops["unet_ddpm"])
        curves["unet_ddpm"], nets["unet_ddpm"] = out["curve"], unet
        run.log_metrics({"unet_ddpm/train_time_s": out["train_time_s"],
                         "unet_ddpm/final_train_loss": float(np.mean(out["history"][-20:])),
                         "unet_ddpm/params_M": sum(p.numel() for p in unet.parameters()) / 1e6,
                         "unet_ddpm/gflop_per_step": flops["unet_ddpm"] / 1e9,
                         "unet_ddpm/steps": float(unet_steps)})

        samplers = {"mmdit_ln": rf_sampler, "mmdit_uniform": rf_sampler,
                    "unet_ddpm": ddim_sampler}
        for name, sampler_fn in samplers.items():
            got = evaluate(sampler_fn(nets[name], pool, config, config.guidance), parts, ev,
                           config.n_final_images, with_fid=True)
            finals[name] = got
            run.log_metrics({f"{name}/caption_score": got["full"], f"{name}/fid": got["fid"],
                             **{f"{name}/{k}_correct": got[k]
                                for k in ("count", "kinds", "colours", "sizes", "objects")},
                             f"{name}/train_tflop": curves[name]["flops"][-1] / 1e12})
            if curves[name]["held_out_loss"]:
                run.log_metrics({f"{name}/held_out_loss": curves[name]["held_out_loss"][-1]})
            run.log(f"{name}: caption score {got['full']:.3f}, FID {got['fid']:.2f}")

        sweep = {}
        for g in config.guidance_sweep:
            got = (finals["mmdit_ln"] if g == config.guidance else
                   evaluate(rf_sampler(nets["mmdit_ln"], pool, config, g), parts, ev,
                            config.n_final_images, with_fid=True))
            sweep[g] = got
            run.log_metrics({f"guidance/caption_score_g{g:g}": got["full"],
                             f"guidance/fid_g{g:g}": got["fid"]})

        n_cap, n_cols = min(config.grid_captions, n_eval), 4
        pick = list(range(n_cap))
        grid_ev = EvalSet([ev.captions[i] for i in pick for _ in range(n_cols)],
                          ev.tokens[pick].repeat_interleave(n_cols, 0),
                          ev.pooled[pick].repeat_interleave(n_cols, 0),
                          torch.randn((n_cap * n_cols,) + latent_shape,
                                      generator=torch.Generator().manual_seed(config.seed + 4)
                                      ).to(parts.device))
        grids = {name: evaluate(samplers[name](nets[name], pool, config, config.guidance),
                                parts, grid_ev, n_cap * n_cols, with_fid=False)["images"]
                 for name in ("mmdit_ln", "unet_ddpm")}
        run.save_figure(plot_samples(grids, [ev.captions[i] for i in pick], n_cols), "samples")
        run.save_figure(plot_t_sampling(curves, config), "t_sampling")
        run.save_figure(plot_equal_compute(curves, finals), "equal_compute")
        run.save_figure(plot_guidance(sweep), "guidance")
        run.log_metrics({"time/total_s": time.perf_counter() - t_start})
    return run.result
