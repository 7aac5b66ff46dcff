"""Self-supervised pretraining on 8×8 digits: SimCLR and masked prediction, judged by linear probes.

One encoder architecture (``deepnotes.generative.ssl.DigitsEncoder``) is trained four ways on the
training split: SimCLR's NT-Xent on two augmented views (no labels), masked-patch reconstruction
(no labels), supervised cross-entropy on the labelled subset, and not at all (random weights).
Each frozen encoder then feeds a logistic regression fitted on 1%, 10% and 100% of the training
labels (several random labelled subsets below 100%); the test split scores it. Raw pixels are
probed as well, as the floor a useful representation must beat.

Figures: ``views`` (augmented views, a masked input and its reconstruction), ``loss_curves``
(NT-Xent with its identical-view minimum, Eq. 3, and the masked MSE), ``label_efficiency``
(probe accuracy against the number of labels) and ``embeddings`` (t-SNE or PCA of the test
representations). Headline: SimCLR's probe accuracy at 10% of the labels; peer: the supervised
encoder's at the same labels.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import N_CLASSES, load_digits
from deepnotes.generative import ssl
from deepnotes.nn.training import fit

METHODS = ("simclr", "masked", "supervised", "random", "pixels")
LABELS = {"simclr": "SimCLR (NT-Xent)", "masked": "masked prediction",
          "supervised": "supervised on the same labels", "random": "random encoder",
          "pixels": "raw pixels"}
COLORS = dict(zip(METHODS, (PALETTE[0], PALETTE[2], PALETTE[3], PALETTE[7], PALETTE[1]),
                  strict=True))


@dataclass
class Config(ExperimentConfig):
    width: int = 16
    """Channels of the encoder's first convolution (the second has twice as many)."""
    dim: int = 128
    """Width of the representation the probe reads."""
    proj_dim: int = 64
    """Output width of SimCLR's projection head."""
    tau: float = 0.5
    """NT-Xent temperature."""
    batch_size: int = 128
    """Images per pretraining step (SimCLR sees twice as many views)."""
    lr: float = 2e-3
    """Peak Adam learning rate of every training loop (cosine-annealed to zero)."""
    simclr_steps: int = 1500
    """SimCLR optimiser steps."""
    mask_steps: int = 1500
    """Masked-prediction optimiser steps."""
    mask_ratio: float = 0.5
    """Fraction of the 2×2 patches hidden per image."""
    patch: int = 2
    """Side of a masked patch, pixels."""
    sup_steps: int = 500
    """Optimiser steps of each supervised encoder (trained once per labelled subset)."""
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    """Fractions of the training labels the probe (and the supervised encoder) may use."""
    draws: int = 3
    """Random labelled subsets per fraction below 1 (the 100% subset is drawn once)."""
    probe_c: float = 1.0
    """Inverse L2 strength of the logistic-regression probe (standardised features)."""
    crop_scale: tuple[float, float] = (0.6, 1.0)
    """Augment: area fraction range of the random resized crop."""
    p_crop: float = 0.8
    """Augment: probability that a view is cropped."""
    elastic_alpha: float = 1.0
    """Augment: largest elastic displacement, pixels."""
    elastic_sigma: float = 1.5
    """Augment: smoothing width of the elastic displacement field, pixels."""
    p_elastic: float = 0.5
    """Augment: probability of the elastic distortion."""
    max_shift: int = 1
    """Augment: largest translation, pixels."""
    noise_std: float = 0.1
    """Augment: standard deviation of the additive pixel noise."""
    embedding: str = "tsne"
    """2-D map of the test representations in the embeddings figure: tsne or pca."""
    threads: int = 1
    """Torch threads: the networks are small, so extra threads mostly add sync cost."""

    @property
    def augment(self) -> ssl.Augment:
        """SimCLR's view generator, also used by supervised training."""
        return ssl.Augment(crop_scale=tuple(self.crop_scale), p_crop=self.p_crop,
                           elastic_alpha=self.elastic_alpha, elastic_sigma=self.elastic_sigma,
                           p_elastic=self.p_elastic, max_shift=self.max_shift,
                           noise_std=self.noise_std)


PRESETS = make_presets(
    smoke=Config(width=8, dim=32, batch_size=32, simclr_steps=6, mask_steps=6, sup_steps=4,
                 draws=1, embedding="pca"),
    quick=Config(simclr_steps=200, mask_steps=200, sup_steps=100, draws=1, embedding="pca"),
    full=Config(),
)
HEADLINE = "simclr/probe_accuracy_10pct"
PEER = "supervised/probe_accuracy_10pct"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}pct"


def _check(cfg: Config) -> None:
    if cfg.embedding not in ("tsne", "pca"):
        raise ValueError(f"embedding must be tsne or pca, got {cfg.embedding!r}")
    if not cfg.fractions or not all(0 < f <= 1 for f in cfg.fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {cfg.fractions!r}")
    for name in ("simclr_steps", "mask_steps", "sup_steps", "draws", "batch_size", "threads"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)!r}")
    if cfg.batch_size < 2:
        raise ValueError("batch_size must be >= 2 (NT-Xent needs a negative pair)")


def _cosine(opt: torch.optim.Optimizer, steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / steps)))


def _train(run, model: nn.Module, loss_fn, batches, steps: int, cfg: Config, name: str):
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()
    result = fit(model, loss_fn, batches, opt, steps, scheduler=_cosine(opt, steps),
                 progress=run.track, description=name)
    loss = np.asarray(result.history["loss"])
    if not np.isfinite(loss).all():
        bad = int(np.flatnonzero(~np.isfinite(loss))[0])
        raise FloatingPointError(f"{name}: loss is not finite at step {bad}")
    return loss, time.perf_counter() - t0


def pretrain_simclr(run, cfg: Config, x_tr: torch.Tensor, seed: int):
    """SimCLR on unlabelled training images; returns the model and its per-step NT-Xent."""
    torch.manual_seed(seed)
    model = ssl.SimCLR(ssl.DigitsEncoder(cfg.dim, cfg.width), cfg.proj_dim).to(run.device)
    gen = torch.Generator().manual_seed(seed)
    bs = min(cfg.batch_size, len(x_tr))

    def batches(step):
        xb = x_tr[torch.randperm(len(x_tr), generator=gen)[:bs]]  # N distinct images
        return cfg.augment(xb, gen).to(run.device), cfg.augment(xb, gen).to(run.device)

    def loss_fn(m, batch):
        v1, v2 = batch
        return ssl.nt_xent(m(v1), m(v2), cfg.tau)

    loss, secs = _train(run, model, loss_fn, batches, cfg.simclr_steps, cfg, "simclr")
    return model, loss, secs


def pretrain_masked(run, cfg: Config, x_tr: torch.Tensor, seed: int):
    """Masked-patch prediction on unlabelled training images; returns the model and its MSE."""
    torch.manual_seed(seed)
    model = ssl.MaskedPredictor(ssl.DigitsEncoder(cfg.dim, cfg.width)).to(run.device)
    gen = torch.Generator().manual_seed(seed)
    bs = min(cfg.batch_size, len(x_tr))

    def batches(step):
        xb = ssl.random_shift(x_tr[torch.randint(len(x_tr), (bs,), generator=gen)], 1, gen)
        masked, mask = ssl.mask_patches(xb, cfg.patch, cfg.mask_ratio, gen)
        return masked.to(run.device), mask.to(run.device), xb.to(run.device)

    def loss_fn(m, batch):
        masked, mask, target = batch
        return ssl.masked_mse(m(masked), target, mask)

    loss, secs = _train(run, model, loss_fn, batches, cfg.mask_steps, cfg, "masked")
    return model, loss, secs


def train_supervised(run, cfg: Config, x: torch.Tensor, y: torch.Tensor, seed: int, name: str):
    """Encoder + linear head trained by cross-entropy on the labelled ``(x, y)`` (augmented)."""
    torch.manual_seed(seed)
    encoder = ssl.DigitsEncoder(cfg.dim, cfg.width)
    model = nn.Sequential(encoder, nn.Linear(cfg.dim, N_CLASSES)).to(run.device)
    gen = torch.Generator().manual_seed(seed)
    bs = min(cfg.batch_size, len(x))

    def batches(step):
        idx = torch.randint(len(x), (bs,), generator=gen)
        return cfg.augment(x[idx], gen).to(run.device), y[idx].to(run.device)

    def loss_fn(m, batch):
        xb, yb = batch
        return F.cross_entropy(m(xb), yb)

    loss, _ = _train(run, model, loss_fn, batches, cfg.sup_steps, cfg, name)
    return model, loss


# --- figures -------------------------------------------------------------------------------------
def _views_figure(cfg: Config, x: torch.Tensor, masked_model: nn.Module, seed: int):
    gen = torch.Generator().manual_seed(seed)
    n_views = 4
    rows = x[:6]
    views = [cfg.augment(rows, gen) for _ in range(n_views)]
    masked, mask = ssl.mask_patches(rows, cfg.patch, cfg.mask_ratio, gen)
    masked_model.eval()
    with torch.no_grad():
        device = next(masked_model.parameters()).device
        recon = masked_model(masked.to(device)).cpu()
    recon = torch.where(mask, recon, rows)  # visible pixels as given, hidden ones predicted
    cols = [("original", rows)] + [(f"view {i + 1}", v) for i, v in enumerate(views)]
    cols += [("masked", masked), ("predicted", recon)]
    fig, axes = new_figure(len(rows), len(cols), size=(7.0, 6.4))
    for j, (title, imgs) in enumerate(cols):
        for i in range(len(rows)):
            ax = axes[i, j]
            ax.imshow(imgs[i].numpy(), cmap="gray_r", vmin=0, vmax=1)
            if title == "masked":
                ax.imshow(np.ma.masked_where(~mask[i].numpy(), np.ones((8, 8))), cmap="autumn",
                          alpha=0.35, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(title, fontsize=10)
    fig.suptitle("SimCLR views (Augment) and masked prediction (hidden patches tinted)",
                 fontsize=11)
    return fig


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, len(y)))
    return np.convolve(y, np.ones(k) / k, mode="valid")


def _loss_figure(cfg: Config, simclr_loss: np.ndarray, mask_loss: np.ndarray, n: int):
    fig, (ax1, ax2) = new_figure(1, 2, size="column_tall", constrained_layout=True)
    k = max(1, len(simclr_loss) // 50)
    steps = np.arange(len(simclr_loss))
    ax1.plot(steps, simclr_loss, color=PALETTE[0], alpha=0.25, lw=0.8)
    ax1.plot(steps[k - 1:], _smooth(simclr_loss, k), color=PALETTE[0], label="NT-Xent (Eq. 2)")
    ax1.axhline(math.log(2 * n - 1), color=PALETTE[7], ls=":", label=r"chance, $\log(2N-1)$")
    ax1.axhline(ssl.nt_xent_minimum(n, cfg.tau), color=PALETTE[3], ls="--",
                label="identical-view minimum (Eq. 3)")
    ax1.set(xlabel="step", ylabel="loss (nats)", title=rf"SimCLR, $N={n}$, $\tau={cfg.tau:g}$")
    k = max(1, len(mask_loss) // 50)
    steps = np.arange(len(mask_loss))
    ax2.plot(steps, mask_loss, color=PALETTE[2], alpha=0.25, lw=0.8)
    ax2.plot(steps[k - 1:], _smooth(mask_loss, k), color=PALETTE[2],
             label="MSE on hidden pixels (Eq. 4)")
    ax2.set(xlabel="step", ylabel="mean squared error", yscale="log",
            title=f"masked prediction, {100 * cfg.mask_ratio:g}% of patches hidden")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="outside lower center", fontsize=9, ncol=2)
    return fig


def _efficiency_figure(cfg: Config, acc: dict, n_labels: dict):
    fig, ax = new_figure(size=(6.0, 4.0), constrained_layout=True)
    xs = [n_labels[f] for f in cfg.fractions]
    for m in METHODS:
        mean = [100 * np.mean(acc[m][f]) for f in cfg.fractions]
        std = [100 * np.std(acc[m][f]) for f in cfg.fractions]
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, color=COLORS[m], label=LABELS[m],
                    ls="--" if m in ("random", "pixels") else "-")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{n}\n({100 * f:g}%)" for n, f in zip(xs, cfg.fractions, strict=True)])
    ax.minorticks_off()
    ax.set(xlabel="labelled training images (share of the training split)",
           ylabel="linear-probe test accuracy (%)",
           title="Label efficiency of frozen encoders")
    ax.legend(fontsize=9, loc="lower right")
    return fig


def _embedding_figure(cfg: Config, feats: dict, y: np.ndarray, seed: int):
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    fig, axes = new_figure(2, 2, size=(7.0, 6.6), constrained_layout=True)
    for ax, name in zip(axes.ravel(), ("random", "masked", "simclr", "supervised"), strict=True):
        f = feats[name]
        f = (f - f.mean(0)) / np.maximum(f.std(0), 1e-12)
        if cfg.embedding == "tsne":
            xy = TSNE(2, perplexity=30, init="pca", random_state=seed).fit_transform(f)
        else:
            xy = PCA(2, random_state=seed).fit_transform(f)
        for c in range(N_CLASSES):
            sel = y == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=plt.cm.tab10(c), label=str(c))
            cx, cy = np.median(xy[sel], axis=0)
            ax.text(cx, cy, str(c), fontsize=10, fontweight="bold", ha="center", va="center")
        ax.set_title(LABELS[name] + (" (100% labels)" if name == "supervised" else ""),
                     fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    method = "t-SNE" if cfg.embedding == "tsne" else "PCA"
    fig.suptitle(f"{method} of the test-set representations, coloured by digit", fontsize=11)
    return fig


# --- run ---------------------------------------------------------------------------------------
def run(config: Config) -> Result:
    _check(config)
    with start_run(__name__, config) as run:
        from threadpoolctl import threadpool_limits  # ships with scikit-learn

        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            # the probe's BLAS calls are small too: extra threads only contend on a busy machine
            with threadpool_limits(config.threads):
                _run(run, config)
        finally:
            torch.set_num_threads(threads)
    return run.result


def _run(run, cfg: Config) -> None:
    x_tr_np, y_tr = load_digits("train")
    x_te_np, y_te = load_digits("test")
    x_tr, x_te = torch.from_numpy(x_tr_np), torch.from_numpy(x_te_np)
    seeds = [int(s) for s in run.rng.integers(2**31, size=3)]

    simclr, simclr_loss, t_simclr = pretrain_simclr(run, cfg, x_tr, seeds[0])
    run.log(f"simclr: {cfg.simclr_steps} steps in {t_simclr:.1f} s, "
            f"final loss {simclr_loss[-20:].mean():.3f} nats")
    masked, mask_loss, t_mask = pretrain_masked(run, cfg, x_tr, seeds[1])
    run.log(f"masked: {cfg.mask_steps} steps in {t_mask:.1f} s, "
            f"final MSE {mask_loss[-20:].mean():.4f}")
    torch.manual_seed(seeds[2])
    random_enc = ssl.DigitsEncoder(cfg.dim, cfg.width).to(run.device)

    frozen = {"simclr": simclr.encoder, "masked": masked.encoder, "random": random_enc}
    feats_tr = {m: ssl.encode(e, x_tr) for m, e in frozen.items()}
    feats_te = {m: ssl.encode(e, x_te) for m, e in frozen.items()}
    feats_tr["pixels"] = x_tr_np.reshape(len(x_tr_np), -1).astype(float)
    feats_te["pixels"] = x_te_np.reshape(len(x_te_np), -1).astype(float)

    acc = {m: {f: [] for f in cfg.fractions} for m in METHODS}
    head_acc = {f: [] for f in cfg.fractions}
    n_labels = {}
    sup_full = None
    for f in cfg.fractions:
        for d in range(cfg.draws if f < 1 else 1):
            idx = ssl.label_subset(y_tr, f, run.rng)
            n_labels[f] = len(idx)
            for m in ("simclr", "masked", "random", "pixels"):
                acc[m][f].append(ssl.linear_probe(feats_tr[m][idx], y_tr[idx], feats_te[m], y_te,
                                                  c=cfg.probe_c))
            # a distinct, reproducible seed per (fraction, draw)
            sup_seed = seeds[2] + 1 + 101 * d + int(1000 * f)
            sup, _ = train_supervised(run, cfg, x_tr[idx], torch.from_numpy(y_tr[idx]), sup_seed,
                                      f"supervised {_pct(f)} #{d + 1}")
            enc = sup[0]
            acc["supervised"][f].append(ssl.linear_probe(
                ssl.encode(enc, x_tr[idx]), y_tr[idx], ssl.encode(enc, x_te), y_te,
                c=cfg.probe_c))
            sup.eval()
            with torch.no_grad():
                pred = sup(x_te.to(run.device)).argmax(1).cpu().numpy()
            head_acc[f].append(float((pred == y_te).mean()))
            if f == max(cfg.fractions) and d == 0:
                sup_full = enc
        line = ", ".join(f"{m} {100 * np.mean(acc[m][f]):.1f}%" for m in METHODS)
        run.log(f"probe at {_pct(f)} ({n_labels[f]} labels): {line}")

    metrics = {
        "simclr/final_loss_nats": simclr_loss[-max(1, len(simclr_loss) // 20):].mean(),
        "simclr/identical_view_minimum_nats": ssl.nt_xent_minimum(
            min(cfg.batch_size, len(x_tr)), cfg.tau),
        "simclr/chance_loss_nats": math.log(2 * min(cfg.batch_size, len(x_tr)) - 1),
        "simclr/train_time_s": t_simclr,
        "masked/final_mse": mask_loss[-max(1, len(mask_loss) // 20):].mean(),
        "masked/train_time_s": t_mask,
        "data/train_images_count": len(y_tr),
        "data/test_images_count": len(y_te),
    }
    for f in cfg.fractions:
        metrics[f"data/labels_{_pct(f)}_count"] = n_labels[f]
        metrics[f"supervised/head_accuracy_{_pct(f)}"] = np.mean(head_acc[f])
        for m in METHODS:
            metrics[f"{m}/probe_accuracy_{_pct(f)}"] = np.mean(acc[m][f])
            metrics[f"{m}/probe_accuracy_{_pct(f)}_std"] = np.std(acc[m][f])
    run.log_metrics(metrics)

    run.save_figure(_views_figure(cfg, x_te, masked, seeds[0]), "views")
    run.save_figure(_loss_figure(cfg, simclr_loss, mask_loss, min(cfg.batch_size, len(x_tr))),
                    "loss_curves")
    run.save_figure(_efficiency_figure(cfg, acc, n_labels), "label_efficiency")
    feats_te["supervised"] = ssl.encode(sup_full, x_te)
    run.save_figure(_embedding_figure(cfg, feats_te, y_te, seeds[0] % 2**31), "embeddings")
