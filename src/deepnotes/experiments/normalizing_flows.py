"""RealNVP, Glow, planar and radial flows as density models on 2-D toys and on digits.

Toys: every model is fitted by maximum likelihood to fresh exact samples of every toy with the
same number of steps; the learned densities are drawn beside the exact ones, with samples and
the data -> noise map of a grid. The test NLL minus the true NLL on the same samples estimates
KL(p_data || p_model) in nats.

Digits: RealNVP and Glow (vector versions: alternating parity masks; ActNorm + LU 1×1 + affine
coupling on halves) behind the logit transform (Eq. 14), in bits/dim of the discrete 17-level
images (Eq. 15).

Figures: ``toy_densities``, ``toy_samples``, ``deformed_grids``, ``digits_samples``,
``digits_curves``. Headline: Glow's KL estimate averaged over the toys.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import N_LEVELS, get_toy, load_digits
from deepnotes.experiments._flows_common import (
    deformed_grid,
    digits_mosaic,
    evaluate_toy,
    fit_digits,
    plot_density,
    plot_samples,
    train_flow,
)
from deepnotes.generative.flows import Glow, PlanarStack, RadialStack, RealNVP

LABELS = {"realnvp": "RealNVP", "glow": "Glow", "planar": "planar", "radial": "radial"}


@dataclass
class Config(ExperimentConfig):
    toys: tuple[str, ...] = ("two-moons", "8-gaussians", "checkerboard")
    """2-D toys (names from deepnotes.data.TOYS)."""
    models: tuple[str, ...] = ("realnvp", "glow", "planar", "radial")
    """Models fitted to every toy: realnvp, glow, planar, radial."""
    toy_steps: int = 1200
    """Adam steps per model and toy, each on a fresh batch of exact samples."""
    toy_batch: int = 256
    """Samples per toy training step."""
    toy_hidden: int = 64
    """Width of the coupling networks on the toys."""
    toy_depth: int = 6
    """Couplings of RealNVP / steps of Glow on the toys."""
    toy_planar_layers: int = 16
    """Planar or radial layers per stack on the toys."""
    toy_lr: float = 3e-3
    """Peak learning rate of the coupling models on the toys (cosine-annealed)."""
    toy_planar_lr: float = 1e-2
    """Peak learning rate of the planar/radial stacks (few parameters, larger steps)."""
    digits_models: tuple[str, ...] = ("realnvp", "glow")
    """Models trained on dequantised digits."""
    digits_epochs: int = 50
    """Passes over the digits training split (fresh dequantisation noise each epoch)."""
    digits_batch: int = 64
    """Mini-batch size on digits."""
    digits_hidden: int = 256
    """Width of the coupling networks on digits."""
    digits_n_hidden: int = 2
    """Hidden layers per coupling network on digits."""
    digits_depth: int = 6
    """Couplings of RealNVP / steps of Glow on digits."""
    digits_lr: float = 1e-3
    """Peak learning rate on digits (cosine-annealed)."""
    logit_alpha: float = 0.05
    """Squeeze of the logit transform applied to digits (Eq. 14)."""
    test_noise_draws: int = 10
    """Dequantisation noise draws averaged in the test bits/dim."""
    eval_every: int = 10
    """Epochs between test evaluations for the learning curves."""
    grid: int = 200
    """Grid points per axis of the density heatmaps."""
    threads: int = 1
    """Torch threads (small networks: a second thread mostly adds sync cost)."""


PRESETS = make_presets(
    smoke=Config(toys=("two-moons",), toy_steps=20, toy_hidden=16, toy_depth=2,
                 toy_planar_layers=4, digits_epochs=1, digits_hidden=32, digits_depth=2,
                 test_noise_draws=1, eval_every=1, grid=40),
    quick=Config(toys=("two-moons", "8-gaussians"), toy_steps=250, toy_planar_layers=16,
                 digits_epochs=6, digits_hidden=128, test_noise_draws=2, eval_every=3,
                 grid=100),
    full=Config(),
)
HEADLINE = "toys/glow_mean_kl_nats"
PEER = None


def build(name: str, dim: int, cfg: Config, digits: bool):
    """The model ``name`` for vectors of length ``dim`` with the toy or digits settings."""
    if name == "realnvp":
        if digits:
            return RealNVP(dim, cfg.digits_depth, cfg.digits_hidden, cfg.digits_n_hidden,
                           logit_alpha=cfg.logit_alpha)
        return RealNVP(dim, cfg.toy_depth, cfg.toy_hidden)
    if name == "glow":
        if digits:
            return Glow(dim, cfg.digits_depth, cfg.digits_hidden, cfg.digits_n_hidden,
                        logit_alpha=cfg.logit_alpha)
        return Glow(dim, cfg.toy_depth, cfg.toy_hidden)
    if name in ("planar", "radial") and not digits:
        stack = PlanarStack if name == "planar" else RadialStack
        return stack(dim, cfg.toy_planar_layers)
    raise ValueError(f"unknown model {name!r} for {'digits' if digits else 'toys'}")


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(config.threads)
        cfg = config
        n_t, n_m = len(cfg.toys), len(cfg.models)
        fig_d, ax_d = new_figure(n_t, n_m + 1, size=(2.8 * (n_m + 1), 2.8 * n_t), squeeze=False)
        fig_s, ax_s = new_figure(n_t, n_m, size=(2.8 * n_m, 2.8 * n_t), squeeze=False)
        fig_g, ax_g = new_figure(1, n_m, size=(2.8 * n_m, 3.0), squeeze=False)
        kls = {m: [] for m in cfg.models}
        for row, toy_name in enumerate(cfg.toys):
            toy = get_toy(toy_name)
            x_test = toy.sample(5000, run.rng)
            plot_density(ax_d[row, 0], toy, None, cfg.grid, f"{toy_name}: truth")
            for col, name in enumerate(cfg.models):
                model = build(name, 2, cfg, digits=False)
                lr = cfg.toy_planar_lr if name in ("planar", "radial") else cfg.toy_lr
                t0 = time.perf_counter()
                train_flow(model, lambda _s, toy=toy: torch.from_numpy(
                    toy.sample(cfg.toy_batch, run.rng)).float(), cfg.toy_steps, lr, run,
                    f"{LABELS[name]} on {toy_name}")
                step_ms = 1e3 * (time.perf_counter() - t0) / max(cfg.toy_steps, 1)
                m = evaluate_toy(model, toy, x_test)
                kls[name].append(m["kl_nats"])
                run.log_metrics({f"toys/{toy_name}_{name}_test_nll_nats": m["test_nll_nats"],
                                 f"toys/{toy_name}_{name}_kl_nats": m["kl_nats"],
                                 f"toys/{toy_name}_true_nll_nats": m["true_nll_nats"],
                                 f"toys/{toy_name}_{name}_step_ms": step_ms})
                run.log(f"{LABELS[name]} on {toy_name}: test NLL {m['test_nll_nats']:.3f} "
                        f"(true {m['true_nll_nats']:.3f}), {step_ms:.2f} ms/step")
                plot_density(ax_d[row, col + 1], toy, model, cfg.grid, LABELS[name])
                plot_samples(ax_s[row, col], toy, model, f"{LABELS[name]} on {toy_name}")
                if row == 0:
                    deformed_grid(ax_g[0, col], toy, model, title=f"{LABELS[name]}: grid -> z")
        run.log_metrics({f"toys/{m}_mean_kl_nats": float(np.mean(v)) for m, v in kls.items()})
        run.save_figure(fig_d, "toy_densities")
        run.save_figure(fig_s, "toy_samples")
        run.save_figure(fig_g, "deformed_grids")

        results, samples = {}, {}
        for name in cfg.digits_models:
            model = build(name, 64, cfg, digits=True)
            res = fit_digits(model, cfg, run, LABELS[name])
            results[name] = res
            run.log_metrics({f"digits/{name}_test_bits_per_dim": res["test_bits_per_dim"],
                             f"digits/{name}_train_bits_per_dim": res["train_bits_per_dim"],
                             f"digits/{name}_step_ms": res["step_ms"]})
            run.log(f"{LABELS[name]} on digits: test {res['test_bits_per_dim']:.3f} bits/dim, "
                    f"train {res['train_bits_per_dim']:.3f}, {res['step_ms']:.2f} ms/step")
            with torch.no_grad():
                samples[name] = model.sample(64).numpy()
        run.log_metrics({"digits/uniform_bits_per_dim": math.log2(N_LEVELS)})

        fig, axes = new_figure(1, 1 + len(results), size="wide", squeeze=False)
        x_show, _ = load_digits("test", "float", flatten=True)
        digits_mosaic(axes[0, 0], x_show[:64], "test digits")
        for ax, name in zip(axes[0, 1:], results, strict=True):
            digits_mosaic(ax, samples[name], f"{LABELS[name]} samples")
        run.save_figure(fig, "digits_samples")

        fig, ax = new_figure()
        for i, (name, res) in enumerate(results.items()):
            ep, bpd = zip(*res["curve"], strict=True)
            ax.plot(ep, bpd, marker="o", color=PALETTE[i], label=LABELS[name])
        ax.axhline(math.log2(N_LEVELS), color=PALETTE[7], ls="--", lw=1,
                   label="uniform model, log2 17")
        ax.set(xlabel="epoch", ylabel="test bits/dim", title="Flows on dequantised digits")
        ax.legend()
        run.save_figure(fig, "digits_curves")
    return run.result
