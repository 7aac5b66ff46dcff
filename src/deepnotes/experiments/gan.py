"""GANs with the minimax and the non-saturating generator loss: the optimal discriminator, the
vanishing gradient, mode collapse on 2-D mixtures, and a DCGAN-style model on 8×8 digits.

1. ``saturation``: the generator's gradient with respect to the discriminator's logit against
   ``D(G(z))`` for both losses (autograd through :func:`deepnotes.generative.gan.generator_loss`).
2. ``optimal_discriminator``: on the line, ``p_data`` (two Gaussians) against a fixed ``p_g``;
   ``D* = p_data/(p_data + p_g)`` (Eq. 2) beside a discriminator MLP trained on samples; the value
   ``V(D*, G)`` by quadrature against ``2 JS - log 4`` (Eq. 3).
3. ``clouds_ring``, ``clouds_grid``, ``mode_coverage``: the minimax GAN, the non-saturating GAN
   and the non-saturating GAN with a spectrally normalised discriminator and two time-scales, on
   8 Gaussians on a ring and 25 on a grid; modes covered and the high-quality fraction against
   the generator step.
4. ``digits``: a DCGAN-style generator on the 8×8 digits (non-saturating loss, with and without
   spectral normalisation), its samples and its FID over training (the diffusion topics' FID
   network), beside the FID of the held-out test split.

Headline: the digits FID of the non-saturating GAN (the test split's FID is its floor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.experiments import _gan_common as C
from deepnotes.generative import gan


@dataclass
class Config(ExperimentConfig):
    methods_2d: tuple[str, ...] = ("minimax", "non_saturating", "ns_sn")
    """2-D methods: minimax, non_saturating, ns_sn (non-saturating, spectral norm, TTUR)."""
    toys: tuple[str, ...] = ("ring", "grid")
    """2-D targets: ring (8 Gaussians, radius 2) and grid (25 Gaussians, spacing 2)."""
    toy_std: float = 0.05
    """Standard deviation of every mixture component (data units)."""
    steps_2d: int = 2000
    """Generator steps on each 2-D toy."""
    batch_2d: int = 256
    """Batch size of the 2-D runs (data and noise)."""
    hidden: int = 64
    """Width of the 2-D MLPs (generator and discriminator)."""
    depth: int = 3
    """Hidden layers of the 2-D MLPs."""
    lr: float = 1e-3
    """Generator learning rate (Adam, β = (0.5, 0.999)); the discriminator's too, except ns_sn."""
    ttur: float = 2.0
    """ns_sn only: discriminator learning rate = ttur · lr (two time-scale update rule)."""
    n_evals: int = 10
    """Evaluations (mode coverage) along each 2-D run, besides step 0."""
    n_eval_samples: int = 2500
    """Generator samples per 2-D evaluation (PacGAN's 2500: a mode needs 20 to count)."""
    digits_methods: tuple[str, ...] = ("non_saturating", "ns_sn")
    """Methods trained on the digits (empty: skip the digits part)."""
    digits_steps: int = 800
    """Generator steps on the digits."""
    digits_lr: float = 2e-4
    """Digits learning rate (DCGAN's Adam 2e-4, β₁ = 0.5)."""
    digits_channels: int = 16
    """Base channel count C of the DCGAN networks (C, 2C, 4C)."""
    n_fid: int = 1000
    """Generated digits per FID evaluation."""
    clf_steps: int = 800
    """Training steps of the FID feature classifier (800: the diffusion topics' network)."""
    dstar_steps: int = 500
    """Adam steps (batches of 256 per side) of the 1-D discriminator compared with D*."""


PRESETS = make_presets(
    smoke=Config(toys=("ring",), methods_2d=("minimax", "non_saturating"), steps_2d=30,
                 batch_2d=64, hidden=32, depth=2, n_evals=2, n_eval_samples=400,
                 digits_methods=("non_saturating",), digits_steps=4, digits_channels=4,
                 n_fid=200, dstar_steps=30, clf_steps=10),
    quick=Config(steps_2d=400, hidden=64, n_evals=4, n_eval_samples=1000,
                 digits_methods=("non_saturating",), digits_steps=100, digits_channels=8,
                 n_fid=400, dstar_steps=300),
    full=Config(),
)
HEADLINE = "digits/fid_non_saturating"
PEER = None


def _saturation_figure():
    d = torch.linspace(1e-3, 1 - 1e-3, 400, dtype=torch.float64)
    fig, ax = new_figure(size=(5.0, 3.4))
    for kind, color, label in (("minimax", C.COLORS["minimax"], r"minimax: $\log(1-D)$"),
                               ("non_saturating", C.COLORS["non_saturating"],
                                r"non-saturating: $-\log D$")):
        logits = torch.logit(d).requires_grad_(True)
        (grad,) = torch.autograd.grad(gan.generator_loss(logits, kind) * len(d), logits)
        ax.plot(d.numpy(), grad.abs().numpy(), color=color, label=label)
    ax.set(xlabel=r"$D(G(z))$", ylabel=r"$|\partial L_G / \partial \ell|$ per sample",
           title="Generator gradient at the discriminator's logit")
    ax.axvspan(0, 0.1, color="0.9", zorder=0)
    ax.text(0.02, 0.5, "early training:\n$D$ rejects fakes", fontsize=9)
    ax.legend(fontsize=9)
    return fig


def _mixture_pdf(x, weights, means, stds):
    return sum(w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
               for w, m, s in zip(weights, means, stds, strict=True))


def _optimal_discriminator(config: Config, run):
    """1-D: D* in closed form, a trained discriminator beside it, and Eq. 3 by quadrature."""
    data = ((0.5, 0.5), (-1.5, 1.5), (0.4, 0.4))
    model = ((1.0,), (0.5,), (1.0,))
    grid = np.linspace(-5, 5, 4001)
    pd, pg = _mixture_pdf(grid, *data), _mixture_pdf(grid, *model)
    d_star = gan.optimal_discriminator(pd, pg)
    h = grid[1] - grid[0]
    # Riemann sums of V(D*, G) and of JS on [-5, 5]: Eq. 3 assumes unit masses, and p_g's
    # tails beyond the grid hold ~3e-6, which is the size of the identity's error here
    with np.errstate(divide="ignore", invalid="ignore"):
        v_star = float(np.nansum(pd * np.log(d_star) + pg * np.log1p(-d_star)) * h)
        m = 0.5 * (pd + pg)
        js = float(0.5 * np.nansum(pd * np.log(pd / m) + pg * np.log(pg / m)) * h)

    gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    torch.manual_seed(int(run.rng.integers(2**31)))

    def sample(params, n):
        w, mu, sd = (torch.tensor(p, dtype=torch.float32) for p in params)
        k = torch.multinomial(w, n, replacement=True, generator=gen)
        return (mu[k] + sd[k] * torch.randn(n, generator=gen))[:, None]

    disc = gan.mlp(1, 1, hidden=64, depth=2).to(run.device)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    for _ in range(config.dstar_steps):
        loss = gan.discriminator_loss(disc(sample(data, 256).to(run.device)),
                                      disc(sample(model, 256).to(run.device)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        trained = torch.sigmoid(disc(torch.from_numpy(grid).float()[:, None].to(run.device)))
    trained = trained.cpu().double().numpy().ravel()
    support = (pd + pg) > 0.02  # where samples taught the network something
    err = np.abs(trained - d_star)[support]
    with np.errstate(divide="ignore"):
        v_trained = float((pd * np.log(trained) + pg * np.log1p(-trained)).sum() * h)
    run.log_metrics({
        "dstar/value_at_d_star_nats": v_star,
        "dstar/two_js_minus_log4_nats": 2 * js - math.log(4),
        "dstar/identity_abs_error_nats": abs(v_star - (2 * js - math.log(4))),
        "dstar/js_nats": js,
        "dstar/value_trained_nats": v_trained,
        "dstar/trained_max_abs_error": float(err.max()),
        "dstar/trained_mean_abs_error": float(err.mean()),
    })
    fig, (ax1, ax2) = new_figure(2, 1, size=(6.0, 4.6), sharex=True, constrained_layout=True)
    ax1.plot(grid, pd, color=PALETTE[0], label=r"$p_{\mathrm{data}}$")
    ax1.plot(grid, pg, color=PALETTE[1], label=r"$p_g$")
    ax1.set(ylabel="density")
    ax1.legend(fontsize=9)
    ax2.plot(grid, d_star, color="k", label=r"$D^*$, Eq. 2")
    ax2.plot(grid, trained, color=PALETTE[3], ls="--", label="trained discriminator")
    ax2.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax2.set(xlabel="$x$", ylabel=r"$D(x)$", ylim=(-0.02, 1.02))
    ax2.legend(fontsize=9)
    run.save_figure(fig, "optimal_discriminator")


def run(config: Config) -> Result:
    if config.steps_2d < 1 or config.digits_steps < 1 or config.n_evals < 1:
        raise ValueError("steps_2d, digits_steps and n_evals must be >= 1")
    for name in config.methods_2d + config.digits_methods:
        if name not in ("minimax", "non_saturating", "ns_sn"):
            raise ValueError(f"unknown GAN method {name!r}; expected minimax, non_saturating "
                             "or ns_sn (the WGANs are in the wasserstein-gan topic)")
    from deepnotes.experiments._diffusion_digits import one_thread

    with start_run(__name__, config) as run, one_thread():
        run.save_figure(_saturation_figure(), "saturation")
        _optimal_discriminator(config, run)

        eval_steps = C.eval_schedule(config.steps_2d, config.n_evals)
        by_toy: dict[str, dict[str, dict]] = {}
        n_modes = {}
        for toy_name in config.toys:
            toy = C.Toy(toy_name, config.toy_std)
            n_modes[toy_name] = len(toy.build().centers)
            by_toy[toy_name] = {}
            for name in config.methods_2d:
                method = C.make_method(name, config.lr, ttur=config.ttur)
                res = C.train_2d(method, toy, config.steps_2d, config.batch_2d, config.hidden,
                                 config.depth, eval_steps, config.n_eval_samples, run,
                                 prefix=f"{toy_name}_{name}")
                by_toy[toy_name][name] = res
                run.log_metrics({
                    f"{toy_name}/modes_covered_{name}": res["modes_covered"][-1],
                    f"{toy_name}/high_quality_fraction_{name}": res["high_quality_fraction"][-1],
                    f"{toy_name}/mode_kl_{name}_nats": res["mode_kl_nats"][-1],
                    # the least coverage after the first quarter: collapse that comes and goes
                    f"{toy_name}/min_modes_covered_late_{name}": min(
                        m for s, m in zip(res["steps"], res["modes_covered"], strict=True)
                        if s >= config.steps_2d // 4),
                })
            columns = sorted({0, len(eval_steps) // 4, len(eval_steps) // 2,
                              len(eval_steps) - 1})
            title = (f"{n_modes[toy_name]} Gaussians ({toy_name}): generator samples over "
                     "training")
            run.save_figure(C.plot_clouds(by_toy[toy_name], toy, columns, title),
                            f"clouds_{toy_name}")
        run.save_figure(C.plot_coverage(by_toy, n_modes), "mode_coverage")

        if config.digits_methods:
            fid = C.fid_evaluator(config.clf_steps, config.out, run)
            setup = C.DigitsSetup(config.digits_steps, channels=config.digits_channels,
                                  n_fid=config.n_fid)
            digits = {}
            for name in config.digits_methods:
                method = C.make_method(name, config.digits_lr, ttur=config.ttur)
                digits[name] = C.train_digits(method, setup, fid, run, f"digits_{name}")
                run.log_metrics({f"digits/fid_{name}": digits[name]["fid"][-1]})
            run.save_figure(C.plot_digits(digits, run.metrics["digits/fid_test_split"]),
                            "digits")
    return run.result
