"""ControlNet on the shapes world: edge maps and shape masks steer a frozen latent diffusion model.

The recipe of Zhang et al. (2023) at toy scale:

1. the frozen parts of the ``stable-diffusion`` topic: the KL autoencoder (f = 4, c = 4) and the
   CLIP-style text encoder from ``experiments._shapes_cache``, and a base text-to-image
   :class:`~deepnotes.diffusion.unet_conditional.UNetConditional` trained through the
   stable-diffusion experiment's own code path (:func:`~deepnotes.experiments.stable_diffusion.
   diffusion_loss`, ``fit``, the same architecture and data) and cached on disk;
2. two :class:`~deepnotes.diffusion.controlnet.ControlNet` s copied from the base
   (:meth:`ControlNet.from_unet`), one reading the Sobel edge map of the training image, one its
   shape mask (``caption_score.edge_map`` / ``shape_masks``), each trained on the same
   ε-prediction loss with the base locked and half of the captions replaced by the empty
   caption (the paper's prompt dropout, Sec. 3.3);
3. evaluation: edge agreement (``caption_score.edge_f1`` between the real test image's edge map
   and the edge map of a sample generated under its condition) against the conditioning scale,
   with the test caption (classifier-free guidance) and with the empty caption; the base model's
   agreement (it never sees the condition) and the autoencoder's reconstruction (a ceiling)
   as references; both ControlNets at once (multi-condition); the step-0 equality check.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data.shapes import CaptionTokenizer, ShapesWorld
from deepnotes.diffusion.caption_score import edge_f1, edge_map, shape_masks
from deepnotes.diffusion.controlnet import ControlNet, controlled_unet
from deepnotes.diffusion.unet_conditional import UNetConditional
from deepnotes.experiments import _digits_cache
from deepnotes.experiments import _shapes_cache as cache
from deepnotes.experiments._diffusion_digits import one_thread
from deepnotes.experiments.stable_diffusion import (
    _mosaic,
    diffusion_loss,
    sd_process,
    text_to_image,
)
from deepnotes.nn.training import fit

CONDITIONS = ("edge", "mask")
"""The two spatial conditions: Sobel edge map of the image, foreground mask of its shapes."""


@dataclass
class Config(ExperimentConfig):
    block_out_channels: tuple[int, ...] = (32, 64)
    """Base U-Net channels per level (the stable-diffusion topic's full preset)."""
    num_attention_heads: int = 2
    """Attention heads in every spatial transformer of the base (and so of the copy)."""
    base_steps: int = 600
    """AdamW steps of the base U-Net (cached: trained once per configuration)."""
    base_lr: float = 1e-3
    """Base learning rate (linear warm-up over 5% of the steps)."""
    control_steps: int = 600
    """AdamW steps of each ControlNet (the base is locked)."""
    control_batch_size: int = 16
    """ControlNet training batch size."""
    control_lr: float = 5e-4
    """ControlNet learning rate (constant; the paper uses 1e-5 at 1000× our width)."""
    embedding_channels: tuple[int, ...] = (16, 32, 64)
    """Condition encoder channels; three entries bring 32×32 conditions to the 8×8 latents."""
    batch_size: int = 32
    """Base training batch size."""
    ema_decay: float = 0.999
    """Weight average of the base (sampled); the ControlNets are used as trained."""
    p_uncond: float = 0.1
    """Base caption dropout (classifier-free guidance)."""
    p_no_prompt: float = 0.5
    """ControlNet caption dropout: the paper replaces 50% of prompts by the empty one."""
    n_train: int = 6000
    """Training images (latents, text states and conditions are computed once)."""
    sample_steps: int = 12
    """DPM-Solver++(2M) steps per sample."""
    guidance_scale: float = 3.0
    """Classifier-free guidance scale of the captioned samples."""
    condition_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    """ControlNet conditioning scales evaluated (0: the base model exactly)."""
    n_eval: int = 64
    """Test images (one sample each) per evaluated setting."""
    n_show: int = 8
    """Examples in the samples figure."""
    small_parts: bool = False
    """Use the cache's seconds-long stand-ins for the frozen autoencoder and text encoder."""


PRESETS = make_presets(
    smoke=Config(block_out_channels=(16, 32), base_steps=3, control_steps=3, batch_size=4,
                 control_batch_size=4, n_train=16, sample_steps=2, condition_scales=(0.0, 1.0),
                 n_eval=4, n_show=2, embedding_channels=(4, 8, 16), small_parts=True),
    quick=Config(block_out_channels=(16, 32), base_steps=60, control_steps=60, batch_size=16,
                 n_train=256, sample_steps=6, condition_scales=(0.0, 0.5, 1.0), n_eval=16,
                 n_show=4, small_parts=True),
    full=Config(),
)
HEADLINE = "edge/f1_controlled"
PEER = "edge/f1_reconstruction"


@dataclass(frozen=True)
class BaseSpec:
    """What the cached base U-Net depends on (its cache key)."""

    block_out_channels: tuple[int, ...]
    num_attention_heads: int
    steps: int
    lr: float
    batch_size: int
    ema_decay: float
    p_uncond: float
    n_train: int
    seed: int
    small_parts: bool
    parts_version: str


class _Controlled:
    """A U-Net look-alike (``config``, ``__call__(x, t, text)``) for ``text_to_image``.

    Runs :func:`controlled_unet` with fixed conditions; a batch that is a multiple of the
    conditions' (the doubled batch of classifier-free guidance) repeats them.
    """

    def __init__(self, unet, nets, conds, scales):
        self.unet, self.nets, self.conds, self.scales = unet, nets, conds, scales
        self.config = unet.config

    def __call__(self, x, t, text):
        reps = x.shape[0] // self.conds[0].shape[0]
        conds = [c.repeat(reps, 1, 1, 1) for c in self.conds]
        return controlled_unet(self.unet, self.nets, x, t, text, conds, self.scales)


def _encode(world, n, vae, text_encoder, device, track):
    """Posterior means/stds of the scaled latents, text states and both conditions."""
    means, stds, texts, conds = [], [], [], {k: [] for k in CONDITIONS}
    s, b = vae.scaling_factor, vae.shift_factor
    batch = 256
    for step in track(range(math.ceil(n / batch)), "encode training set"):
        data = world.batch(step, min(batch, n - step * batch))
        post = vae.encode(data.images.to(device))
        means.append((post.mean - b) * s)
        stds.append(post.std * s)
        texts.append(text_encoder(data.tokens.to(device), data.attention_mask.to(device))[0])
        conds["edge"].append(edge_map(data.images).to(device))
        conds["mask"].append(shape_masks(data.instances).to(device))
    return (torch.cat(means), torch.cat(stds), torch.cat(texts),
            {k: torch.cat(v) for k, v in conds.items()})


def _batches(config, z_mean, z_std, text, null_text, cond, p_drop, n_t, device, size):
    def batches(step: int) -> dict:
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        idx = torch.randint(config.n_train, (size,), generator=g)
        drop = torch.rand(size, generator=g) < p_drop
        noise = torch.randn((size,) + tuple(z_mean.shape[1:]), generator=g)
        post_noise = torch.randn(noise.shape, generator=g)
        t = torch.randint(0, n_t, (size,), generator=g)
        idx_d = idx.to(device)
        c = torch.where(drop.to(device)[:, None, None], null_text.expand(len(idx), -1, -1),
                        text[idx_d])
        out = {"z0": z_mean[idx_d] + z_std[idx_d] * post_noise.to(device), "text": c,
               "eps": noise.to(device), "t": t.to(device)}
        if cond is not None:
            out["cond"] = cond[idx_d]
        return out
    return batches


def base_unet(config: Config, run, vae, z_mean, z_std, text, null_text, process
              ) -> tuple[UNetConditional, dict]:
    """The base text-to-image U-Net, trained as the stable-diffusion topic trains it; cached.

    Same architecture (cross-attention on every level), loss (``diffusion_loss``, ε), caption
    dropout, AdamW with warm-up, EMA; the weights are cached under ``_cache/controlnet`` keyed
    by :class:`BaseSpec`.
    """
    levels = len(config.block_out_channels)
    unet = UNetConditional(
        in_channels=z_mean.shape[1], out_channels=z_mean.shape[1],
        block_out_channels=config.block_out_channels,
        down_block_types=("CrossAttnDownBlock2D",) * levels,
        up_block_types=("CrossAttnUpBlock2D",) * levels,
        num_attention_heads=config.num_attention_heads, cross_attention_dim=text.shape[-1],
        norm_num_groups=min(16, config.block_out_channels[0])).to(run.device)
    spec = BaseSpec(tuple(config.block_out_channels), config.num_attention_heads,
                    config.base_steps, config.base_lr, config.batch_size, config.ema_decay,
                    config.p_uncond, config.n_train, config.seed, config.small_parts,
                    _parts_key(config.small_parts))
    path = (_digits_cache.cache_dir(config.out, "controlnet")
            / f"base-unet-{_digits_cache.spec_key(spec, 1)}.pt")

    def train(ckpt) -> dict:
        batches = _batches(config, z_mean, z_std, text, null_text, None, config.p_uncond,
                           process.alphas_cumprod.numel(), run.device, config.batch_size)
        opt = torch.optim.AdamW(unet.parameters(), lr=config.base_lr, weight_decay=0.01)
        warm = max(1, config.base_steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm))
        t0 = time.perf_counter()
        result = fit(unet, lambda m, b: diffusion_loss(m, b, process, "eps"), batches, opt,
                     config.base_steps, scheduler=sched, clip_grad_norm=1.0,
                     ema_decay=config.ema_decay, ema_warmup=True, progress=run.track,
                     description="base U-Net", checkpoint_dir=ckpt,
                     checkpoint_every=_digits_cache.CHECKPOINT_EVERY, resume=True)
        result.ema.copy_to(unet)
        losses = result.history["loss"]
        tail = losses[-max(1, len(losses) // 10):]
        return {"final_loss": sum(tail) / len(tail), "train_s": time.perf_counter() - t0}

    meta = _digits_cache.load_or_train(path, unet, train, run.log)
    unet.eval().requires_grad_(False)
    return unet, meta


def _parts_key(small: bool) -> str:
    """Cache keys of the frozen autoencoder and text encoder the base is trained on."""
    v = cache.CACHE_VERSION
    return (_digits_cache.spec_key(cache.autoencoder_spec(4, small), v["autoencoder"]) + "-"
            + _digits_cache.spec_key(cache.text_encoder_spec(small), v["clip"]))


def _f1(images: torch.Tensor, target: torch.Tensor) -> float:
    return float(edge_f1(edge_map(images.cpu()), target.cpu()).mean())


def run(config: Config) -> Result:
    if not config.condition_scales or min(config.condition_scales) < 0:
        raise ValueError(f"condition_scales must be non-negative and non-empty, got "
                         f"{config.condition_scales}")
    if 1.0 not in config.condition_scales:
        raise ValueError(f"condition_scales must contain 1.0 (the headline setting), got "
                         f"{config.condition_scales}")
    if len(config.embedding_channels) != 3:
        raise ValueError(f"embedding_channels must have 3 entries (32×32 conditions to 8×8 "
                         f"latents), got {config.embedding_channels}")
    with start_run(__name__, config) as run, one_thread():
        device = run.device
        t0 = time.perf_counter()
        kw = dict(small=config.small_parts, out=config.out, device=device)
        vae, _ = cache.autoencoder(4, run.log, run.track, **kw)
        text_encoder, _ = cache.text_encoder(run.log, run.track, **kw)
        with torch.no_grad():
            z_mean, z_std, text, conds = _encode(ShapesWorld(config.seed, "train"),
                                                 config.n_train, vae, text_encoder, device,
                                                 run.track)
            null_tokens, null_mask = CaptionTokenizer()([""])
            null_text = text_encoder(null_tokens.to(device), null_mask.to(device))[0]
        process = sd_process()
        run.log_metrics({"time/frozen_parts_s": time.perf_counter() - t0,
                         "data/edge_pixel_fraction": float(conds["edge"].mean()),
                         "data/mask_pixel_fraction": float(conds["mask"].mean())})

        base, base_meta = base_unet(config, run, vae, z_mean, z_std, text, null_text, process)
        run.log_metrics({"base/final_loss": base_meta["final_loss"],
                         "time/base_train_s": base_meta["train_s"]})

        # -- test set and the step-0 equality check -----------------------------------------
        test = ShapesWorld(config.seed, "test").batch(0, config.n_eval)
        with torch.no_grad():
            test_text = text_encoder(test.tokens.to(device), test.attention_mask.to(device))[0]
        test_conds = {"edge": edge_map(test.images).to(device),
                      "mask": shape_masks(test.instances).to(device)}
        target = edge_map(test.images)                        # what a sample's edges should be
        nets, histories, train_s = {}, {}, 0.0
        for kind in CONDITIONS:
            torch.manual_seed(config.seed + CONDITIONS.index(kind))
            net = ControlNet.from_unet(base, conditioning_channels=1,
                                       conditioning_embedding_out_channels=config.
                                       embedding_channels)
            if kind == "edge":
                _step0_check(run, base, net, test_conds["edge"], test_text, process)
            batches = _batches(config, z_mean, z_std, text, null_text, conds[kind],
                               config.p_no_prompt, process.alphas_cumprod.numel(), device,
                               config.control_batch_size)

            def loss_fn(m, b, base=base):
                loss, _ = diffusion_loss(_Controlled(base, [m], [b["cond"]], [1.0]), b,
                                         process, "eps")
                with torch.no_grad():
                    base_loss, _ = diffusion_loss(base, b, process, "eps")
                return loss, {"base_loss": float(base_loss)}

            opt = torch.optim.AdamW(net.parameters(), lr=config.control_lr, weight_decay=0.0)
            gen = torch.Generator().manual_seed(config.seed + 17)
            t1 = time.perf_counter()
            result = fit(net, loss_fn, batches, opt, config.control_steps, clip_grad_norm=1.0,
                         progress=run.track, description=f"ControlNet ({kind})",
                         **run.fit_checkpoint(gen, every=200))
            train_s += time.perf_counter() - t1
            net.eval().requires_grad_(False)
            nets[kind] = net
            histories[kind] = result.history
            h = result.history
            n = max(1, len(h["loss"]) // 10)
            zero_norm = math.sqrt(sum(float(z.weight.square().sum()) for z in
                                      (*net.controlnet_down_blocks, net.controlnet_mid_block)))
            run.log_metrics({f"train/{kind}_final_loss": float(np.mean(h["loss"][-n:])),
                             f"train/{kind}_final_base_loss":
                                 float(np.mean(h["base_loss"][-n:])),
                             f"train/{kind}_zero_conv_weight_norm": zero_norm})
        run.log_metrics({"time/control_train_s": train_s,
                         "train/control_params": sum(p.numel()
                                                     for p in nets["edge"].parameters()),
                         "train/base_params": sum(p.numel() for p in base.parameters())})

        # -- evaluation: edge agreement vs conditioning scale, with and without the caption ---
        noise = torch.randn(config.n_eval, z_mean.shape[1], 8, 8,
                            generator=torch.Generator().manual_seed(config.seed + 7))
        null = null_text.expand_as(test_text)

        def sample(model, with_caption: bool) -> torch.Tensor:
            txt, g = (test_text, config.guidance_scale) if with_caption else (null, 1.0)
            return text_to_image(model, vae, txt, null, process, scale=g,
                                 steps=config.sample_steps, noise=noise).cpu()

        t0 = time.perf_counter()
        n_images = 0
        with torch.no_grad():
            rec = vae(test.images.to(device)).clamp(-1, 1).cpu()
        run.log_metrics({"edge/f1_reconstruction": _f1(rec, target)})
        shown = {}
        for cap in (True, False):
            word = "caption" if cap else "nocaption"
            shown[("base", cap)] = sample(base, cap)
            n_images += config.n_eval
            run.log_metrics({f"edge/f1_base_{word}": _f1(shown[("base", cap)], target)})
        curves = {}
        for kind in CONDITIONS:
            for cap in (True, False):
                word = "caption" if cap else "nocaption"
                ys = []
                for s in run.track(config.condition_scales, f"{kind} scales ({word})"):
                    imgs = sample(_Controlled(base, [nets[kind]], [test_conds[kind]], [s]), cap)
                    n_images += config.n_eval
                    f1 = _f1(imgs, target)
                    ys.append(f1)
                    key = f"{s:g}".replace(".", "p")
                    run.log_metrics({f"{kind}/f1_s{key}_{word}": f1})
                    if s == 1.0:
                        shown[(kind, cap)] = imgs
                curves[(kind, cap)] = ys
        run.log_metrics({"edge/f1_controlled": run.metrics["edge/f1_s1_caption"],
                         "mask/f1_controlled": run.metrics["mask/f1_s1_caption"]})
        both = sample(_Controlled(base, [nets["edge"], nets["mask"]],
                                  [test_conds["edge"], test_conds["mask"]], [0.5, 0.5]), True)
        n_images += config.n_eval
        run.log_metrics({"multi/f1_edge_mask_half_each": _f1(both, target),
                         "time/sample_images_per_s": n_images / (time.perf_counter() - t0)})

        # -- figures --------------------------------------------------------------------------
        _plot_samples(run, test, test_conds, shown, config.n_show)
        _plot_scales(run, config.condition_scales, curves)
        _plot_training(run, histories)
        run.log_metrics({"time/total_s": run.wall_time_s, "time/total_min": run.wall_time_s / 60})
    return run.result


@torch.no_grad()
def _step0_check(run, base, net, cond, text, process) -> None:
    """Base + freshly copied ControlNet == base, bit for bit (the zero convolutions)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(text.shape[0], base.config.in_channels, 8, 8, generator=g).to(text.device)
    t = torch.randint(0, process.alphas_cumprod.numel(), (text.shape[0],), generator=g)
    t = t.to(text.device)
    ref = base(x, t, text)
    out = controlled_unet(base, net, x, t, text, cond, 1.0)
    run.log_metrics({"check/step0_max_abs_diff": float((out - ref).abs().max()),
                     "check/step0_equal": float(torch.equal(out, ref))})


def _cond_rgb(c: torch.Tensor) -> torch.Tensor:
    """A (B, 1, H, W) {0, 1} condition as a (B, 3, H, W) [-1, 1] image (white on black)."""
    return (c.cpu() * 2 - 1).repeat(1, 3, 1, 1)


def _plot_samples(run, test, conds, shown, n) -> None:
    rows = [("real image", test.images[:n]),
            ("edge condition", _cond_rgb(conds["edge"][:n])),
            ("base model, caption", shown[("base", True)][:n]),
            ("edge ControlNet, caption", shown[("edge", True)][:n]),
            ("edge ControlNet, no caption", shown[("edge", False)][:n]),
            ("mask condition", _cond_rgb(conds["mask"][:n])),
            ("mask ControlNet, caption", shown[("mask", True)][:n])]
    fig, ax = new_figure(size=(7.0, min(9.0, 7.0 * len(rows) / max(n, 1) + 0.6)),
                         layout="constrained")
    ax.imshow(_mosaic(torch.cat([r[1] for r in rows]), n), interpolation="nearest")
    ax.set_yticks([2 + 34 * i + 16 for i in range(len(rows))], [r[0] for r in rows])
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("Test conditions and samples (same noise; conditioning scale $s=1$)",
                 fontsize=10)
    run.save_figure(fig, "samples_following_edges")


def _plot_scales(run, scales, curves) -> None:
    fig, ax = new_figure(size="column_tall", layout="constrained")
    m = run.metrics
    style = {("edge", True): (PALETTE[0], "-", "edge ControlNet, with caption"),
             ("edge", False): (PALETTE[0], "--", "edge ControlNet, empty caption"),
             ("mask", True): (PALETTE[3], "-", "mask ControlNet, with caption"),
             ("mask", False): (PALETTE[3], "--", "mask ControlNet, empty caption")}
    for key, ys in curves.items():
        color, ls, label = style[key]
        ax.plot(scales, ys, marker="o", color=color, ls=ls, label=label)
    ax.axhline(m["edge/f1_reconstruction"], color="k", ls=":", lw=1,
               label="autoencoder reconstruction (ceiling)")
    ax.axhline(m["edge/f1_base_caption"], color="0.5", ls="-.", lw=1,
               label="base model, with caption")
    ax.set(xlabel="conditioning scale $s$", ylabel="edge F1 vs. the condition's image",
           ylim=(0, 1.02), title="Edge agreement against conditioning scale")
    # below the axes: inside, the legend covered the low-scale end of the curves
    fig.legend(*ax.get_legend_handles_labels(), fontsize=9, loc="outside lower center", ncol=2)
    run.save_figure(fig, "edge_f1_vs_scale")


def _plot_training(run, histories) -> None:
    fig, ax = new_figure(size="column", layout="constrained")
    for i, (kind, h) in enumerate(histories.items()):
        ratio = np.asarray(h["loss"]) / np.maximum(np.asarray(h["base_loss"]), 1e-12)
        w = max(1, len(ratio) // 25)
        smooth = np.convolve(ratio, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(smooth)) + w // 2, smooth, color=PALETTE[3 * i],
                label=f"{kind} ControlNet")
    ax.axhline(1.0, color="k", lw=1, ls=":", label="locked base alone")
    ax.set(xlabel="ControlNet training step",
           ylabel=r"$\mathcal{L}_{\mathrm{control}} / \mathcal{L}_{\mathrm{base}}$ (same batch)",
           title="Loss relative to the locked base (moving mean)")
    ax.legend(fontsize=9)
    run.save_figure(fig, "training_loss_ratio")
