"""NICE: additive coupling flows on 2-D toys and on dequantised 8×8 digits.

Toys: one NICE per toy, trained by maximum likelihood on fresh samples; the learned density is
drawn beside the exact one (``deepnotes.data`` toys have exact log-densities), with samples and
the image of a data-space grid in noise space. The test NLL minus the true NLL on the same
samples estimates KL(p_data || p_model) in nats.

Digits: NICE with the logistic prior (the paper's, for MNIST) and with a Gaussian prior on the
uniformly dequantised digits (fresh noise every epoch), reported in bits/dim of the discrete
17-level images (Eq. 6 of the post; ``Flow.nll_bits_per_dim(x, n_levels=17)``).

Figures: ``toy_densities``, ``digits_samples``, ``digits_curves``.
Headline: test bits/dim of NICE with the logistic prior.

Training, evaluation and plotting helpers live in ``deepnotes.experiments._flows_common``,
shared with the ``normalizing-flows`` experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import N_LEVELS, get_toy, load_digits
from deepnotes.experiments._flows_common import (
    digits_mosaic,
    evaluate_toy,
    fit_digits,
    toy_panels,
    train_flow,
)
from deepnotes.generative.flows import NICE


@dataclass
class Config(ExperimentConfig):
    toys: tuple[str, ...] = ("two-moons", "8-gaussians", "checkerboard")
    """2-D toys (names from deepnotes.data.TOYS) to fit, one model each."""
    toy_steps: int = 3000
    """Adam steps per toy, each on a fresh batch of exact samples."""
    toy_batch: int = 256
    """Samples per toy training step."""
    toy_hidden: int = 64
    """Width of the coupling networks for the toys."""
    toy_couplings: int = 6
    """Additive coupling layers for the toys (partitions alternate)."""
    toy_lr: float = 3e-3
    """Peak learning rate for the toys (cosine-annealed to zero)."""
    digits_epochs: int = 50
    """Passes over the digits training split (fresh dequantisation noise each epoch)."""
    digits_batch: int = 64
    """Mini-batch size on digits."""
    digits_hidden: int = 256
    """Width of the coupling networks on digits."""
    digits_n_hidden: int = 3
    """Hidden layers per coupling network on digits."""
    digits_couplings: int = 4
    """Additive coupling layers on digits (the paper's 4)."""
    digits_lr: float = 1e-3
    """Peak learning rate on digits (cosine-annealed to zero)."""
    priors: tuple[str, ...] = ("logistic", "normal")
    """Base distributions compared on digits; the headline uses the first."""
    test_noise_draws: int = 10
    """Dequantisation noise draws averaged in the test bits/dim."""
    eval_every: int = 10
    """Epochs between test evaluations for the learning curves."""
    grid: int = 200
    """Grid points per axis of the density heatmaps."""
    threads: int = 1
    """Torch threads (small networks: a second thread mostly adds sync cost)."""


PRESETS = make_presets(
    smoke=Config(toys=("two-moons",), toy_steps=30, toy_hidden=16, digits_epochs=1,
                 digits_hidden=32, digits_n_hidden=1, test_noise_draws=1, eval_every=1, grid=40),
    quick=Config(toy_steps=600, digits_epochs=15, digits_hidden=128, test_noise_draws=3,
                 eval_every=5, grid=120),
    full=Config(),
)
HEADLINE = "digits/test_bits_per_dim"
PEER = None


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(config.threads)
        cfg = config

        # ---- 2-D toys -------------------------------------------------------------------
        fig, axes = new_figure(len(cfg.toys), 4, size=(7.0, 0.4 + 1.75 * len(cfg.toys)),
                               squeeze=False, layout="constrained")
        for row, name in enumerate(cfg.toys):
            toy = get_toy(name)
            # built on the CPU (the same initial weights everywhere), trained on run.device;
            # the batches are drawn on the CPU and moved by train_flow
            model = NICE(2, cfg.toy_couplings, cfg.toy_hidden, n_hidden=2).to(run.device)
            train_flow(model, lambda _s, toy=toy: torch.from_numpy(
                toy.sample(cfg.toy_batch, run.rng)).float(), cfg.toy_steps, cfg.toy_lr, run,
                f"NICE on {name}")
            x_test = toy.sample(5000, run.rng)
            metrics = evaluate_toy(model, toy, x_test)
            run.log_metrics({f"toys/{name}_{k}": v for k, v in metrics.items()})
            run.log(f"{name}: test NLL {metrics['test_nll_nats']:.3f} nats "
                    f"(true {metrics['true_nll_nats']:.3f}, KL ~ {metrics['kl_nats']:.3f})")
            toy_panels(axes[row], toy, model, cfg.grid, title="NICE")
            # column titles once (first row), the toy's name as the row label
            for j, title in enumerate(("true density", "NICE density", "NICE samples",
                                       r"data grid $\to$ $z$")):
                axes[row, j].set_title(title if row == 0 else "")
            axes[row, 0].set_ylabel(name)
        run.save_figure(fig, "toy_densities")

        # ---- digits ---------------------------------------------------------------------
        results, samples = {}, {}
        for prior in cfg.priors:
            model = NICE(64, cfg.digits_couplings, cfg.digits_hidden, cfg.digits_n_hidden,
                         prior=prior).to(run.device)
            x0, _ = load_digits("train", "dequantized", flatten=True, rng=run.rng)
            model.initialize_scaling(torch.from_numpy(x0).to(run.device))
            res = fit_digits(model, cfg, run, f"NICE ({prior})")
            results[prior] = res
            run.log_metrics({f"digits/{prior}_test_bits_per_dim": res["test_bits_per_dim"],
                             f"digits/{prior}_train_bits_per_dim": res["train_bits_per_dim"],
                             f"digits/{prior}_step_ms": res["step_ms"]})
            run.log(f"NICE ({prior} prior): test {res['test_bits_per_dim']:.3f} bits/dim, "
                    f"train {res['train_bits_per_dim']:.3f}, {res['step_ms']:.2f} ms/step")
            with torch.no_grad():
                samples[prior] = model.sample(64).cpu().numpy()
        run.log_metrics({"digits/test_bits_per_dim": results[cfg.priors[0]]["test_bits_per_dim"],
                         "digits/uniform_bits_per_dim": math.log2(N_LEVELS)})

        fig, axes = new_figure(1, 1 + len(cfg.priors), size=(7.0, 2.9), layout="constrained")
        x_show, _ = load_digits("test", "float", flatten=True)
        digits_mosaic(axes[0], x_show[:64], "test digits")
        for ax, prior in zip(axes[1:], cfg.priors, strict=True):
            digits_mosaic(ax, samples[prior], f"NICE samples,\n{prior} prior")
        run.save_figure(fig, "digits_samples")

        fig, ax = new_figure()
        for i, prior in enumerate(cfg.priors):
            ep, bpd = zip(*results[prior]["curve"], strict=True)
            ax.plot(ep, bpd, marker="o", color=PALETTE[i], label=f"NICE, {prior} prior")
        ax.axhline(math.log2(N_LEVELS), color=PALETTE[7], ls="--", lw=1,
                   label=r"uniform model, $\log_2 17$")
        ax.set(xlabel="epoch", ylabel="test bits/dim", title="NICE on dequantised digits")
        ax.legend()
        run.save_figure(fig, "digits_curves")
    return run.result
