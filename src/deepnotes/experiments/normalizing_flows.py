"""RealNVP, Glow, planar and radial flows as density models on 2-D toys and on digits, and
planar flows for variational inference on Rezende & Mohamed's energies U1-U4.

Toys: every model is fitted by maximum likelihood to fresh exact samples of every toy with the
same number of steps; the learned densities are drawn beside the exact ones, with samples and
the data -> noise map of a grid. The test NLL minus the true NLL on the same samples estimates
KL(p_data || p_model) in nats.

Variational inference: a Gaussian pushed through K planar maps is fitted to exp(-U) / Z by
minimising the free energy F = E_q[log q + U] (Eq. 19); F + log Z (log Z by quadrature) is
KL(q || p) in nats. Densities q_K are drawn beside the normalised target for each K.

Digits: RealNVP and Glow in two forms behind the logit transform (Eq. 14): for flat vectors
(alternating parity masks; ActNorm + LU linear map + affine coupling on halves) and for images
(convolutional couplings with checkerboard/channel masks, squeeze, multi-scale split), in
bits/dim of the discrete 17-level images (Eq. 15); samples, and decodings of straight lines
between the codes z of two test digits.

Figures: ``toy_densities``, ``toy_samples``, ``deformed_grids``, ``vi_densities``,
``digits_samples``, ``digits_curves``, ``digits_interpolation``. Headline: Glow's KL estimate
averaged over the toys.
"""

from __future__ import annotations

import dataclasses
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
    model_device,
    plot_density,
    plot_samples,
    train_flow,
)
from deepnotes.generative.flows import (
    Glow,
    PlanarStack,
    RadialStack,
    RealNVP,
    log_normaliser,
    potential,
    reverse_kl,
    vi_flow,
)

LABELS = {"realnvp": "RealNVP", "glow": "Glow", "planar": "planar", "radial": "radial",
          "realnvp_image": "RealNVP (conv)", "glow_image": "Glow (conv)"}
IMAGE_SHAPE = (1, 8, 8)


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
    vi_energies: tuple[str, ...] = ("U1", "U2", "U3", "U4")
    """Target energies for variational inference (Rezende & Mohamed 2015, Table 1)."""
    vi_layers: tuple[int, ...] = (2, 8, 32)
    """Numbers K of planar layers fitted to every energy."""
    vi_steps: int = 1000
    """Adam steps of reverse-KL training per energy and K."""
    vi_batch: int = 128
    """Samples of q per reverse-KL step."""
    vi_lr: float = 2e-2
    """Learning rate of the reverse-KL fits (constant)."""
    vi_clip: float = 10.0
    """Gradient-norm clip of the reverse-KL fits (unclipped, 32 layers on U2 ended anywhere
    between 0.04 and 1.4 nats from -log Z over three seeds)."""
    vi_anneal: int = 400
    """Steps over which the energy's weight β rises linearly from 0.1 to 1 (paper, Sec. 6.1)."""
    vi_eval_samples: int = 20000
    """Samples in the final estimate of F + log Z = KL(q || p)."""
    digits_models: tuple[str, ...] = ("realnvp", "glow", "realnvp_image", "glow_image")
    """Models trained on dequantised digits: realnvp, glow (vectors), realnvp_image, glow_image."""
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
    image_hidden: int = 64
    """Channels of the convolutional coupling networks (image models)."""
    image_couplings: int = 2
    """Image RealNVP: couplings of each mask type per scale (2 scales)."""
    image_steps: int = 3
    """Image Glow: steps of ActNorm, 1x1 convolution and coupling per level (2 levels)."""
    image_epochs: int = 30
    """Passes over the digits for the image models (convolutions cost more per step on CPU)."""
    interp_pairs: int = 3
    """Pairs of test digits whose codes are interpolated, per digits model."""
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
                 toy_planar_layers=4, vi_energies=("U1",), vi_layers=(2,), vi_steps=20,
                 vi_eval_samples=1000, digits_epochs=1, digits_hidden=32, digits_depth=2,
                 image_hidden=8, image_couplings=1, image_steps=1, image_epochs=1,
                 test_noise_draws=1, eval_every=1, grid=40),
    quick=Config(toys=("two-moons", "8-gaussians"), toy_steps=250, toy_planar_layers=16,
                 vi_energies=("U1", "U2"), vi_layers=(2, 8), vi_steps=300, vi_anneal=150,
                 vi_eval_samples=5000, digits_models=("realnvp", "glow_image"),
                 digits_epochs=6, digits_hidden=128, image_hidden=32, image_epochs=4,
                 test_noise_draws=2, eval_every=3, grid=100),
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
    if name == "realnvp_image" and digits:
        return RealNVP(image_shape=IMAGE_SHAPE, n_couplings=cfg.image_couplings,
                       hidden=cfg.image_hidden, logit_alpha=cfg.logit_alpha)
    if name == "glow_image" and digits:
        return Glow(image_shape=IMAGE_SHAPE, n_steps=cfg.image_steps, hidden=cfg.image_hidden,
                    logit_alpha=cfg.logit_alpha)
    if name in ("planar", "radial") and not digits:
        stack = PlanarStack if name == "planar" else RadialStack
        return stack(dim, cfg.toy_planar_layers)
    raise ValueError(f"unknown model {name!r} for {'digits' if digits else 'toys'}")


VI_WINDOW = 4.0  # the paper's plotting window [-4, 4]²


def fit_vi(cfg: Config, run) -> None:
    """Planar flows with K layers fitted to each energy by reverse KL; metrics and figure.

    Each flow is initialised on the CPU from ``gen`` and trains on ``run.device``. On the CPU
    the same ``gen`` then draws the training samples; elsewhere a generator on the device,
    seeded alike, does (a generator draws on its own device only). The target densities of the
    figure are closed-form and stay on the CPU."""
    dev = run.device
    n_e, n_k = len(cfg.vi_energies), len(cfg.vi_layers)
    side = 7.0 / (n_k + 1)  # column width shared by the panels
    fig, axes = new_figure(n_e, n_k + 1, size=(7.0, (side + 0.3) * n_e), squeeze=False)
    c = np.linspace(-VI_WINDOW, VI_WINDOW, cfg.grid)
    grid = torch.from_numpy(np.stack(np.meshgrid(c, c), -1).reshape(-1, 2))  # (G², 2) float64
    extent = (-VI_WINDOW, VI_WINDOW, -VI_WINDOW, VI_WINDOW)
    for row, name in enumerate(cfg.vi_energies):
        energy = potential(name)
        log_z = log_normaliser(energy)
        run.log_metrics({f"vi/{name}_neg_log_z_nats": -log_z})
        truth = torch.exp(-energy(grid) - log_z).reshape(cfg.grid, cfg.grid)
        axes[row, 0].imshow(truth.numpy(), origin="lower", extent=extent, cmap="viridis")
        _vi_title(axes[row, 0], rf"{name}: $e^{{-U}}/Z$")
        for col, k in enumerate(cfg.vi_layers):
            seed = int(run.rng.integers(2**31))
            gen = torch.Generator().manual_seed(seed)
            flow = vi_flow(k, "planar", generator=gen).to(dev)
            if dev.type != "cpu":
                gen = torch.Generator(dev).manual_seed(seed)
            opt = torch.optim.Adam(flow.parameters(), lr=cfg.vi_lr)
            for step in run.track(range(cfg.vi_steps), f"planar K={k} on {name}"):
                beta = min(1.0, 0.1 + 0.9 * step / max(cfg.vi_anneal, 1))
                loss = reverse_kl(flow, energy, cfg.vi_batch, gen, beta=beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(flow.parameters(), cfg.vi_clip)
                opt.step()
            with torch.no_grad():
                kl = float(reverse_kl(flow.double(), energy, cfg.vi_eval_samples, gen)) + log_z
                dens = flow.log_prob(grid.to(dev)).exp().reshape(cfg.grid, cfg.grid).cpu()
            run.log_metrics({f"vi/{name}_K{k}_kl_nats": kl})
            run.log(f"planar K={k} on {name}: KL(q || p) = {kl:.3f} nats")
            axes[row, col + 1].imshow(dens.numpy(), origin="lower", extent=extent,
                                      cmap="viridis")
            _vi_title(axes[row, col + 1], rf"$K = {k}$: KL ${kl:.2f}$")
    fig.tight_layout()
    run.save_figure(fig, "vi_densities")


def _vi_title(ax, title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def interpolations(model, x_a: torch.Tensor, x_b: torch.Tensor, n_steps: int) -> np.ndarray:
    """Decode ``(1 - t) f(x_a) + t f(x_b)`` for ``n_steps`` values of t in [0, 1].

    ``x_a``, ``x_b``: (P, 64) in [0, 1]; returns (P · n_steps, 64), pair by pair. Computed on
    the model's device.
    """
    device = model_device(model)
    with torch.no_grad():
        z_a, _ = model(x_a.to(device))
        z_b, _ = model(x_b.to(device))
        t = torch.linspace(0, 1, n_steps, device=device)[None, :, None]  # (1, T, 1)
        z = ((1 - t) * z_a[:, None] + t * z_b[:, None]).reshape(-1, z_a.shape[1])
        x, _ = model.inverse(z)
    return x.cpu().numpy()


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(config.threads)
        cfg = config
        n_t, n_m = len(cfg.toys), len(cfg.models)
        # column width (7 in) shared by the panels; side = one square panel
        side_d, side_s = 7.0 / (n_m + 1), 7.0 / n_m
        fig_d, ax_d = new_figure(n_t, n_m + 1, size=(7.0, (side_d + 0.3) * n_t), squeeze=False)
        fig_s, ax_s = new_figure(n_t, n_m, size=(7.0, (side_s + 0.5) * n_t), squeeze=False)
        fig_g, ax_g = new_figure(1, n_m, size=(7.0, side_s + 0.5), squeeze=False)
        kls = {m: [] for m in cfg.models}
        for row, toy_name in enumerate(cfg.toys):
            toy = get_toy(toy_name)
            x_test = toy.sample(5000, run.rng)
            plot_density(ax_d[row, 0], toy, None, cfg.grid, f"{toy_name}: truth")
            for col, name in enumerate(cfg.models):
                # built on the CPU (the same initial weights everywhere), trained on
                # run.device; train_flow moves the CPU-drawn batches there
                model = build(name, 2, cfg, digits=False).to(run.device)
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
                plot_samples(ax_s[row, col], toy, model, f"{LABELS[name]}\non {toy_name}")
                if row == 0:
                    deformed_grid(ax_g[0, col], toy, model,
                                  title=rf"{LABELS[name]}: grid $x \to z$")
        run.log_metrics({f"toys/{m}_mean_kl_nats": float(np.mean(v)) for m, v in kls.items()})
        for f in (fig_d, fig_s, fig_g):
            for a in f.axes:
                a.title.set_fontsize(10)
            f.tight_layout()
        run.save_figure(fig_d, "toy_densities")
        run.save_figure(fig_s, "toy_samples")
        run.save_figure(fig_g, "deformed_grids")

        fit_vi(cfg, run)

        results, samples, interps = {}, {}, {}
        x_show, y_show = load_digits("test", "float", flatten=True)
        # pairs of different digits, the same for every model
        pair_idx = [(int(np.flatnonzero(y_show == i)[0]), int(np.flatnonzero(y_show == i + 5)[0]))
                    for i in range(cfg.interp_pairs)]
        x_a = torch.from_numpy(x_show[[a for a, _ in pair_idx]])
        x_b = torch.from_numpy(x_show[[b for _, b in pair_idx]])
        for name in cfg.digits_models:
            model = build(name, 64, cfg, digits=True).to(run.device)
            fit_cfg = (dataclasses.replace(cfg, digits_epochs=cfg.image_epochs)
                       if name.endswith("_image") else cfg)
            res = fit_digits(model, fit_cfg, run, LABELS[name])
            results[name] = res
            run.log_metrics({f"digits/{name}_test_bits_per_dim": res["test_bits_per_dim"],
                             f"digits/{name}_train_bits_per_dim": res["train_bits_per_dim"],
                             f"digits/{name}_step_ms": res["step_ms"]})
            run.log(f"{LABELS[name]} on digits: test {res['test_bits_per_dim']:.3f} bits/dim, "
                    f"train {res['train_bits_per_dim']:.3f}, {res['step_ms']:.2f} ms/step")
            with torch.no_grad():
                samples[name] = model.sample(64).cpu().numpy()
            interps[name] = interpolations(model, x_a, x_b, 9)
        run.log_metrics({"digits/uniform_bits_per_dim": math.log2(N_LEVELS)})

        fig, axes = new_figure(1, 1 + len(results),
                               size=(7.0, 7.0 / (1 + len(results)) + 0.8), squeeze=False)
        digits_mosaic(axes[0, 0], x_show[:64], "test\ndigits")
        for ax, name in zip(axes[0, 1:], results, strict=True):
            digits_mosaic(ax, samples[name], f"{LABELS[name]}\nsamples")
        for a in fig.axes:
            a.title.set_fontsize(10)
        fig.tight_layout()
        run.save_figure(fig, "digits_samples")

        fig, ax = new_figure(size="column_tall")
        for i, (name, res) in enumerate(results.items()):
            ep, bpd = zip(*res["curve"], strict=True)
            ax.plot(ep, bpd, marker="o", color=PALETTE[i], label=LABELS[name])
        ax.axhline(math.log2(N_LEVELS), color=PALETTE[7], ls="--", lw=1,
                   label=r"uniform model, $\log_2 17$")
        ax.set(xlabel="epoch", ylabel="test bits/dim", title="Flows on dequantised digits")
        ax.legend()
        run.save_figure(fig, "digits_curves")

        fig, axes = new_figure(len(interps), 1, size=(6.0, 0.9 * cfg.interp_pairs * len(interps)),
                               squeeze=False)
        for ax, (name, imgs) in zip(axes[:, 0], interps.items(), strict=True):
            digits_mosaic(ax, imgs, rf"{LABELS[name]}: decoded $(1-t)\,z_a + t\,z_b$", cols=9)
        run.save_figure(fig, "digits_interpolation")
    return run.result
