"""FVSBN, NADE and MADE on binarised 8×8 digits: exact likelihoods and ancestral samples.

Every model is trained by maximum likelihood (Adam on the exact NLL, Eq. 2 of the post) on the
fixed train split of ``load_digits(variant="binarized")`` less a validation slice; the epoch with
the best validation NLL is kept (early stopping: the set has only ~1350 images and NADE/MADE
overfit it) and evaluated on the test split, in nats per image and bits/dim (Eq. 10).

Models: FVSBN (Eq. 3), NADE (Eqs. 4-6), MADE with one ordering and one mask, and MADE trained
order-agnostically over ``made_masks`` mask sets (random ordering and connectivity each), tested as
the equal mixture of its mask sets (Eq. 9) and, for comparison, one mask set at a time. The
independent-pixel model (closed-form MLE with add-``alpha`` smoothing) is the baseline.

Figures: ``samples`` (test digits and ancestral samples), ``curves`` (validation bits/dim per
epoch), ``ensemble`` (order-agnostic MADE: test bits/dim against the number of mask sets
averaged). Headline: NADE's test bits/dim.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import load_digits
from deepnotes.experiments._flows_common import digits_mosaic
from deepnotes.generative.autoregressive import FVSBN, MADE, NADE, AutoregressiveModel
from deepnotes.generative.basics import bernoulli_log_prob, fit_independent_bernoulli

MODELS = ("fvsbn", "nade", "made", "made_oa")
LABELS = {"fvsbn": "FVSBN", "nade": "NADE", "made": "MADE (1 ordering)",
          "made_oa": "MADE (order-agnostic, ensemble)"}


@dataclass
class Config(ExperimentConfig):
    models: tuple[str, ...] = MODELS
    """Models to train: any of fvsbn, nade, made, made_oa."""
    epochs: int = 150
    """Passes over the training images (the best validation epoch is kept)."""
    batch: int = 64
    """Mini-batch size."""
    lr: float = 3e-3
    """Adam learning rate (cosine-annealed to zero)."""
    weight_decay: float = 0.0
    """Adam's L2 penalty on every parameter."""
    nade_hidden: int = 200
    """NADE hidden units H."""
    made_hidden: tuple[int, ...] = (500,)
    """MADE hidden layer widths."""
    made_masks: int = 16
    """Mask sets (random ordering + connectivity) of the order-agnostic MADE."""
    val_fraction: float = 0.15
    """Share of the training split held out for early stopping."""
    alpha: float = 0.5
    """Add-alpha smoothing of the independent-pixel baseline (pixels never on in train)."""
    n_samples: int = 64
    """Samples drawn per model for the sample grid."""
    threads: int = 1
    """Torch threads (small models: a second thread mostly adds sync cost)."""


PRESETS = make_presets(
    smoke=Config(epochs=2, nade_hidden=16, made_hidden=(32,), made_masks=2, n_samples=16),
    quick=Config(epochs=25, nade_hidden=100, made_hidden=(256,), made_masks=8),
    full=Config(),
)
HEADLINE = "test/nade_bits_per_dim"
PEER = None


def build(name: str, cfg: Config, dim: int) -> AutoregressiveModel:
    if name == "fvsbn":
        return FVSBN(dim)
    if name == "nade":
        return NADE(dim, cfg.nade_hidden)
    if name == "made":
        return MADE(dim, cfg.made_hidden)
    if name == "made_oa":
        return MADE(dim, cfg.made_hidden, n_masks=cfg.made_masks, order_agnostic=True)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def nll_nats(model: AutoregressiveModel, x: torch.Tensor) -> float:
    """Mean exact NLL in nats per image; the order-agnostic MADE is scored as its mixture."""
    with torch.no_grad():
        if isinstance(model, MADE) and model.n_masks > 1:
            return float(-model.log_prob_ensemble(x).double().mean())
        return float(-model.log_prob(x).double().mean())


def bits_per_dim(nats: float, dim: int) -> float:
    """Eq. 10: nats per image -> bits per pixel."""
    return nats / (dim * math.log(2.0))


def train(model, x_train, x_val, cfg: Config, run, name: str) -> dict:
    """Adam on the exact NLL; returns the per-epoch curves and keeps the best validation state."""
    n = len(x_train)
    per_epoch = max(1, n // cfg.batch)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * per_epoch)
    order_agnostic = isinstance(model, MADE) and model.n_masks > 1
    curve, best, best_state = [], math.inf, None
    t0 = time.perf_counter()
    for epoch in run.track(range(1, cfg.epochs + 1), f"{LABELS[name]}"):
        perm = torch.from_numpy(run.rng.permutation(n))
        total = 0.0
        for i in range(per_epoch):
            xb = x_train[perm[i * cfg.batch:(i + 1) * cfg.batch]]
            if order_agnostic:
                # one mask set per mini-batch, as in Germain et al. (2015)
                model.select_mask(int(run.rng.integers(model.n_masks)))
            loss = -model.log_prob(xb).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        val = nll_nats(model, x_val)
        curve.append((epoch, bits_per_dim(total / per_epoch, model.dim),
                      bits_per_dim(val, model.dim)))
        if val < best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    if order_agnostic:
        model.select_mask(0)
    best_epoch = min(curve, key=lambda c: c[2])[0]
    return {"curve": curve, "best_epoch": best_epoch,
            "step_ms": 1e3 * seconds / (cfg.epochs * per_epoch)}


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(config.threads)
        cfg = config
        dev = run.device
        x_all, _ = load_digits("train", "binarized", flatten=True)
        x_test_np, _ = load_digits("test", "binarized", flatten=True)
        perm = run.rng.permutation(len(x_all))
        n_val = int(round(cfg.val_fraction * len(x_all)))
        x_val = torch.from_numpy(x_all[perm[:n_val]]).to(dev)
        x_train = torch.from_numpy(x_all[perm[n_val:]]).to(dev)
        x_test = torch.from_numpy(x_test_np).to(dev)
        dim = x_train.shape[1]
        run.log(f"binarised digits: {len(x_train)} train, {len(x_val)} val, {len(x_test)} test, "
                f"D = {dim}")

        # independent pixels: the closed-form MLE, the baseline every model should beat
        probs = fit_independent_bernoulli(x_all, alpha=cfg.alpha)
        ind = float(-bernoulli_log_prob(x_test_np, probs).mean())
        run.log_metrics({"test/independent_nll_nats": ind,
                         "test/independent_bits_per_dim": bits_per_dim(ind, dim)})
        run.log(f"independent pixels: test {bits_per_dim(ind, dim):.4f} bits/dim")

        results, samples = {}, {}
        gen = torch.Generator(device=dev).manual_seed(int(run.rng.integers(2**31)))
        for name in cfg.models:
            model = build(name, cfg, dim).to(dev)
            res = train(model, x_train, x_val, cfg, run, name)
            test, train_nats = nll_nats(model, x_test), nll_nats(model, x_train)
            n_params = sum(p.numel() for p in model.parameters())
            metrics = {f"test/{name}_nll_nats": test,
                       f"test/{name}_bits_per_dim": bits_per_dim(test, dim),
                       f"train/{name}_bits_per_dim": bits_per_dim(train_nats, dim),
                       f"train/{name}_best_epoch": res["best_epoch"],
                       f"train/{name}_step_ms": res["step_ms"],
                       f"model/{name}_stored_parameters": n_params}
            if name == "made_oa":
                singles = []
                for i in range(model.n_masks):
                    model.select_mask(i)
                    with torch.no_grad():
                        singles.append(float(-model.log_prob(x_test).double().mean()))
                model.select_mask(0)
                res["singles"] = singles
                res["ensemble"] = [nll_nats_subset(model, x_test, k)
                                   for k in range(1, model.n_masks + 1)]
                metrics["test/made_oa_single_mask_bits_per_dim"] = bits_per_dim(
                    float(np.mean(singles)), dim)
            run.log_metrics(metrics)
            run.log(f"{LABELS[name]}: test {metrics[f'test/{name}_bits_per_dim']:.4f} bits/dim "
                    f"({test:.2f} nats), train {metrics[f'train/{name}_bits_per_dim']:.4f}, "
                    f"best epoch {res['best_epoch']}, {n_params} parameters, "
                    f"{res['step_ms']:.2f} ms/step")
            results[name] = res
            with torch.no_grad():
                draw = model.sample_ensemble if name == "made_oa" else model.sample
                samples[name] = draw(cfg.n_samples, generator=gen).cpu().numpy()

        _plot_samples(run, cfg, x_test_np, samples)
        _plot_curves(run, cfg, results, bits_per_dim(ind, dim))
        if "made_oa" in results:
            _plot_ensemble(run, results["made_oa"], dim)
    return run.result


def nll_nats_subset(model: MADE, x: torch.Tensor, k: int) -> float:
    """Test NLL (nats) of the mixture of the first ``k`` mask sets (Eq. 9)."""
    with torch.no_grad():
        return float(-model.log_prob_ensemble(x, indices=range(k)).double().mean())


def _plot_samples(run, cfg, x_test, samples) -> None:
    fig, axes = new_figure(1, 1 + len(samples), size=(3.0 * (1 + len(samples)), 3.4))
    cols = int(math.sqrt(cfg.n_samples))
    digits_mosaic(axes[0], x_test[:cols * cols], "test digits", cols=cols)
    for ax, (name, s) in zip(axes[1:], samples.items(), strict=True):
        digits_mosaic(ax, s[:cols * cols], LABELS[name].replace(" (", "\n("), cols=cols)
    run.save_figure(fig, "samples")


def _plot_curves(run, cfg, results, independent_bpd: float) -> None:
    fig, ax = new_figure()
    for i, (name, res) in enumerate(results.items()):
        ep, tr, va = zip(*res["curve"], strict=True)
        ax.plot(ep, va, color=PALETTE[i], label=f"{LABELS[name]} (validation)")
        ax.plot(ep, tr, color=PALETTE[i], ls=":", lw=1)
    ax.axhline(independent_bpd, color=PALETTE[7], ls="--", lw=1, label="independent pixels (test)")
    ax.set(xlabel="epoch", ylabel="bits/dim", title="Exact NLL on binarised digits "
           "(dotted: training mini-batches)")
    ax.legend(fontsize=8)
    run.save_figure(fig, "curves")


def _plot_ensemble(run, res, dim: int) -> None:
    fig, ax = new_figure()
    k = np.arange(1, len(res["ensemble"]) + 1)
    ax.plot(k, [bits_per_dim(v, dim) for v in res["ensemble"]], marker="o", color=PALETTE[0],
            label="mixture of the first k mask sets")
    ax.scatter(k, [bits_per_dim(v, dim) for v in res["singles"]], color=PALETTE[1], s=14,
               label="mask set k alone")
    ax.set(xlabel="number of mask sets k", ylabel="test bits/dim",
           title="Order-agnostic MADE: ensembling orderings at test time")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.35 * (hi - lo))  # head-room so the legend covers no point
    ax.legend(loc="upper right")
    run.save_figure(fig, "ensemble")
