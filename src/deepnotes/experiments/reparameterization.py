"""Reparameterisation vs score function, Gumbel-softmax, and a discrete VAE on binarised digits.

Three parts, each with its figures:

1. ``gradient_variance``: for ``q = N(μ, σ²I)`` in ``gauss_dim`` dimensions and
   ``f(z) = Σ z²`` (exact gradient ``(2μ, 2σ)``, Eq. 1 of the post) the variance of the
   ``S``-sample gradient estimate versus ``S`` on log-log axes, for the pathwise estimator (Eq. 3)
   and the score-function estimator (Eq. 5) without and with the leave-one-out baseline (Eq. 6).
2. ``gumbel_temperature`` and ``gumbel_simplex``: for a categorical with ``cat_classes`` classes
   and ``f(y) = (y·v)²``, bias² and variance of the relaxed (Eq. 9) and straight-through (Eq. 10)
   gradients across temperatures, beside the unbiased score-function estimator; Gumbel-softmax
   samples of a 3-class categorical on the simplex at several τ.
3. ``vae_curves``, ``vae_reconstructions``, ``vae_samples``: a VAE with ``vae_latents``
   categorical latents of ``vae_classes`` classes on the binarised digits (fixed split), trained
   by Gumbel-softmax with exponential temperature annealing, straight-through Gumbel-softmax and
   REINFORCE with a leave-one-out baseline; test negative ELBO per epoch and the final
   importance-weighted bound (Eq. 15).

Headline: ``vae/test_neg_elbo_nats`` of the Gumbel-softmax VAE (nats per image, lower is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import load_digits
from deepnotes.experiments._flows_common import digits_mosaic
from deepnotes.generative.discrete_vae import CategoricalVAE, anneal_temperature
from deepnotes.generative.gumbel import gumbel_softmax
from deepnotes.generative.reparam import (
    categorical_exact_grad,
    categorical_score_grad,
    gaussian_reparam_grad,
    gaussian_score_grad,
    gumbel_softmax_grad,
)
from deepnotes.nn.training import fit

ESTIMATORS = ("gumbel_softmax", "straight_through", "reinforce")
LABELS = {"gumbel_softmax": "Gumbel-softmax", "straight_through": "straight-through",
          "reinforce": "REINFORCE + LOO"}


@dataclass
class Config(ExperimentConfig):
    gauss_dim: int = 10
    """Dimension D of the Gaussian q = N(mu, sigma^2 I) in the variance study."""
    gauss_mu: float = 1.0
    """Mean mu of every coordinate (the score-function variance grows with |mu|)."""
    gauss_sigma: float = 1.0
    """Standard deviation sigma of every coordinate."""
    sample_sizes: tuple[int, ...] = (2, 4, 16, 64, 256, 1024)
    """Numbers of samples S per gradient estimate (>= 2: the leave-one-out baseline needs two)."""
    repeats: int = 400
    """Independent S-sample estimates per S, across which the variance is measured."""
    cat_classes: int = 5
    """Classes K of the categorical in the temperature sweep."""
    taus: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    """Temperatures of the Gumbel-softmax sweep."""
    cat_samples: int = 100_000
    """Per-sample gradients drawn per estimator and temperature (bias and variance)."""
    simplex_taus: tuple[float, ...] = (0.1, 0.5, 1.0, 5.0)
    """Temperatures of the 3-class simplex figure."""
    simplex_points: int = 1000
    """Samples drawn per simplex panel."""
    vae_latents: int = 20
    """Categorical latents N of the VAE."""
    vae_classes: int = 10
    """Classes K per latent."""
    vae_hidden: int = 256
    """Width of the encoder and decoder MLPs."""
    vae_n_hidden: int = 2
    """Hidden layers per MLP."""
    epochs: int = 120
    """Passes over the 1347 training digits."""
    batch: int = 32
    """Mini-batch size."""
    lr: float = 2e-3
    """Adam learning rate."""
    tau0: float = 1.0
    """Initial Gumbel-softmax temperature."""
    tau_min: float = 0.5
    """Final temperature (Jang et al.'s floor)."""
    anneal_fraction: float = 0.5
    """Share of training after which tau reaches tau_min (exponential decay)."""
    reinforce_samples: int = 4
    """Discrete samples per image for REINFORCE (leave-one-out baseline)."""
    estimators: tuple[str, ...] = ESTIMATORS
    """VAE training estimators; the headline uses the first."""
    eval_every: int = 10
    """Epochs between test evaluations."""
    eval_samples: int = 10
    """Discrete samples per image in the test ELBO (reconstruction term; the KL is exact)."""
    iw_samples: int = 1000
    """Samples of the final importance-weighted bound."""
    threads: int = 1
    """Torch threads (small MLPs: more threads mostly add sync cost on 2 shared cores)."""


PRESETS = make_presets(
    smoke=Config(gauss_dim=4, sample_sizes=(2, 8, 32), repeats=40, taus=(0.1, 1.0),
                 cat_samples=2000, simplex_taus=(0.5, 2.0), simplex_points=200, vae_latents=4,
                 vae_hidden=32, vae_n_hidden=1, epochs=1, eval_every=1, eval_samples=1,
                 iw_samples=4),
    quick=Config(sample_sizes=(2, 8, 32, 128), repeats=200, cat_samples=20_000, epochs=8,
                 vae_hidden=128, eval_every=2, eval_samples=4, iw_samples=64),
    full=Config(),
)
HEADLINE = "vae/test_neg_elbo_nats"
PEER = None


def _torch_gen(run, device=None) -> torch.Generator:
    """A generator on ``device`` (default CPU) seeded from ``run.rng``."""
    return torch.Generator(device or "cpu").manual_seed(int(run.rng.integers(2**62)))


# ---- part 1: gradient variance versus number of samples ------------------------------------------
def gradient_variance(cfg: Config, run) -> dict[str, np.ndarray]:
    """Trace of the covariance of the S-sample mean gradient (w.r.t. μ and σ) per estimator.

    No network: float64 vectors of a few dimensions, kept on the CPU (as in part 2)."""
    d = cfg.gauss_dim
    mu = torch.full((d,), cfg.gauss_mu, dtype=torch.float64)
    sigma = torch.full((d,), cfg.gauss_sigma, dtype=torch.float64)
    exact = (2 * mu, 2 * sigma)

    def f(z):
        return z.square().sum(-1)

    estimators = {
        "pathwise": lambda n, g: gaussian_reparam_grad(f, mu, sigma, n, generator=g),
        "score function": lambda n, g: gaussian_score_grad(f, mu, sigma, n, generator=g),
        "score function + LOO baseline": lambda n, g: gaussian_score_grad(
            f, mu, sigma, n, baseline="loo", generator=g),
    }
    g = _torch_gen(run)
    out = {}
    for name, est in estimators.items():
        var = np.zeros((2, len(cfg.sample_sizes)))
        bias = np.zeros((2, len(cfg.sample_sizes)))
        for j, s in enumerate(run.track(cfg.sample_sizes, f"variance: {name}")):
            means = [torch.stack([gr.mean(0) for gr in est(s, g)]) for _ in range(cfg.repeats)]
            means = torch.stack(means)  # (R, 2, D): S-sample estimates of (∇μ, ∇σ)
            for p in range(2):
                var[p, j] = means[:, p].var(0).sum().item()
                bias[p, j] = (means[:, p].mean(0) - exact[p]).norm().item()
        out[name] = var
        out[name + " bias"] = bias
    return out


# ---- part 2: Gumbel-softmax temperature sweep ----------------------------------------------------
def temperature_sweep(cfg: Config, run) -> dict[str, np.ndarray]:
    """Bias² and variance (trace) of per-sample gradients w.r.t. the logits, per τ."""
    k = cfg.cat_classes
    gen_np = np.random.default_rng(int(run.rng.integers(2**31)))
    theta = torch.from_numpy(gen_np.normal(size=k))
    v = torch.from_numpy(gen_np.normal(size=k) * 2)

    def f(y):
        return (y @ v).square()

    exact = categorical_exact_grad(f, theta)
    g = _torch_gen(run)
    res = {"tau": np.array(cfg.taus)}
    for hard, name in ((False, "relaxed"), (True, "straight-through")):
        b2, var = [], []
        for tau in run.track(cfg.taus, f"temperature sweep: {name}"):
            grads = gumbel_softmax_grad(f, theta, tau, cfg.cat_samples, hard=hard, generator=g)
            b2.append((grads.mean(0) - exact).square().sum().item())
            var.append(grads.var(0).sum().item())
        res[name + " bias2"], res[name + " var"] = np.array(b2), np.array(var)
        # E‖mean - exact‖² = bias² + tr Cov / n: below this floor the bias is not resolved
        res[name + " floor"] = np.array(var) / cfg.cat_samples
    for baseline, name in ((None, "score function"), ("loo", "score function + LOO")):
        grads = categorical_score_grad(f, theta, cfg.cat_samples, baseline=baseline, generator=g)
        res[name + " bias2"] = np.array((grads.mean(0) - exact).square().sum().item())
        res[name + " var"] = np.array(grads.var(0).sum().item())
    return res


def simplex_figure(cfg: Config, run):
    theta = torch.tensor([1.0, 0.0, -0.5], dtype=torch.float64)
    p = torch.softmax(theta, 0).numpy()
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    g = _torch_gen(run)
    n = len(cfg.simplex_taus)
    rows = 2 if n > 2 else 1
    cols = math.ceil(n / rows)
    fig, axes = new_figure(rows, cols, size="column_grid" if rows == 2 else "column")
    axes = np.atleast_1d(axes).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    for ax, tau in zip(axes, cfg.simplex_taus, strict=True):
        y = gumbel_softmax(theta, tau, n_samples=cfg.simplex_points, generator=g).numpy()
        xy = y @ corners  # barycentric -> plane
        ax.plot(*np.vstack([corners, corners[:1]]).T, color=PALETTE[7], lw=1)
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.4, color=PALETTE[0], lw=0)
        m = y.mean(0) @ corners
        ax.scatter(*m, marker="x", s=60, color=PALETTE[3], label="mean sample")
        ax.scatter(*(p @ corners), marker="+", s=80, color=PALETTE[2],
                   label=r"$\mathrm{softmax}(\theta)$")
        for c, name in zip(corners, ("$k=1$", "$k=2$", "$k=3$"), strict=True):
            ax.annotate(name, c, textcoords="offset points", xytext=(0, 4 if c[1] else -12),
                        ha="center", fontsize=9)
        ax.set_title(rf"$\tau = {tau:g}$", pad=14)
        ax.set_aspect("equal")
        ax.axis("off")
    axes[0].legend(loc="upper left", fontsize=9)
    fig.suptitle("Gumbel-softmax samples of a 3-class categorical on the simplex")
    fig.tight_layout()
    return fig


# ---- part 3: discrete VAE on binarised digits ----------------------------------------------------
def train_vae(cfg: Config, run, estimator: str, x_train: torch.Tensor, x_test: torch.Tensor):
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    # built on the CPU (the same initial weights everywhere), trained on the data's device
    # (run.device); the batch order and the noise come from generators on that device
    dev = x_train.device
    model = CategoricalVAE(x_train.shape[1], cfg.vae_latents, cfg.vae_classes, cfg.vae_hidden,
                           cfg.vae_n_hidden).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = _torch_gen(run, dev)
    eval_g = torch.Generator(dev).manual_seed(cfg.seed)  # same eval noise for every estimator
    n = len(x_train)
    steps_per_epoch = math.ceil(n / cfg.batch)
    total = cfg.epochs * steps_per_epoch
    rate = math.log(cfg.tau0 / cfg.tau_min) / max(1.0, cfg.anneal_fraction * total)
    curve = []
    perm = None

    def evaluate(epoch):
        model.eval()
        test = -model.elbo(x_test, cfg.eval_samples, generator=eval_g).mean().item()
        train = -model.elbo(x_train, cfg.eval_samples, generator=eval_g).mean().item()
        model.train()
        curve.append((epoch, test, train))

    def batches(step):  # a new permutation at each epoch's first step; the last batch is short
        nonlocal perm
        b = step % steps_per_epoch
        if b == 0:
            perm = torch.randperm(n, generator=g, device=dev)
        return x_train[perm[b * cfg.batch:(b + 1) * cfg.batch]], step

    def loss_fn(m, batch):
        xb, step = batch
        if estimator == "reinforce":
            return m.loss_reinforce(xb, cfg.reinforce_samples, generator=g)[0]
        tau = anneal_temperature(step, tau0=cfg.tau0, tau_min=cfg.tau_min, rate=rate)
        return m.loss(xb, tau, hard=estimator == "straight_through", generator=g)[0]

    def end_of_epoch(step, _metrics):
        epoch, rest = divmod(step + 1, steps_per_epoch)
        if rest == 0 and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            evaluate(epoch)

    evaluate(0)
    fit(model, loss_fn, batches, opt, total, progress=run.track,
        description=f"VAE ({estimator})", callback=end_of_epoch)
    model.eval()
    with torch.no_grad():
        iw = torch.cat([model.iwae_bound(x_test[i:i + 50], cfg.iw_samples, generator=eval_g)
                        for i in range(0, len(x_test), 50)])
        kl = model.kl_to_prior(model.encode(x_test)).mean().item()
    return model, curve, -iw.mean().item(), kl


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(config.threads)
        cfg = config
        if min(cfg.sample_sizes) < 2:
            raise ValueError("sample_sizes must all be >= 2 (leave-one-out baseline)")

        # ---- 1. variance versus number of samples --------------------------------------------
        var = gradient_variance(cfg, run)
        s = np.array(cfg.sample_sizes)
        fig, axes = new_figure(1, 2, size="column_tall")
        names = ("pathwise", "score function", "score function + LOO baseline")
        for p, (ax, wrt) in enumerate(zip(axes, (r"\mu", r"\sigma"), strict=True)):
            for i, name in enumerate(names):
                ax.loglog(s, var[name][p], marker="o", color=PALETTE[i], label=name)
            ref = var["pathwise"][p][0] * s[0] / s
            ax.loglog(s, ref, ls="--", lw=1, color=PALETTE[7], label=r"$\propto 1/S$")
            ax.set(xlabel=r"samples $S$ per estimate",
                   ylabel=rf"$\mathrm{{tr}}\,\mathrm{{Cov}}[\hat\nabla_{{{wrt}}}]$",
                   title=rf"gradient w.r.t. ${wrt}$")
        fig.suptitle(rf"$f(z) = \sum_i z_i^2$, $D = {cfg.gauss_dim}$")
        axes[0].legend(loc="lower left", fontsize=9)
        fig.tight_layout()
        run.save_figure(fig, "gradient_variance")
        per_sample = {n: var[n] * s for n in names}  # S · Var(mean) = per-sample variance
        j = len(s) - 1
        metrics = {
            "gauss/pathwise_var_mu": per_sample["pathwise"][0, j],
            "gauss/score_var_mu": per_sample["score function"][0, j],
            "gauss/score_loo_var_mu": per_sample["score function + LOO baseline"][0, j],
            "gauss/var_ratio_score_over_pathwise":
                per_sample["score function"][0, j] / per_sample["pathwise"][0, j],
            "gauss/var_ratio_loo_over_pathwise":
                per_sample["score function + LOO baseline"][0, j] / per_sample["pathwise"][0, j],
        }
        run.log_metrics(metrics)
        run.log("per-sample variance (trace, ∇μ) at S = {}: pathwise {:.1f}, score {:.1f}, "
                "score+LOO {:.1f}".format(s[j], *(metrics[k] for k in list(metrics)[:3])))

        # ---- 2. Gumbel-softmax temperature sweep ---------------------------------------------
        sweep = temperature_sweep(cfg, run)
        fig, axes = new_figure(1, 2, size="column_tall")
        for p, (ax, what) in enumerate(zip(axes, ("bias2", "var"), strict=True)):
            for i, name in enumerate(("relaxed", "straight-through")):
                ax.loglog(sweep["tau"], sweep[f"{name} {what}"], marker="o", color=PALETTE[i],
                          label=f"Gumbel-softmax, {name}")
                if what == "bias2":
                    ax.loglog(sweep["tau"], sweep[f"{name} floor"], ls=":", color=PALETTE[i],
                              lw=1, label=f"{name}: Monte Carlo noise floor")
            for i, name in enumerate(("score function", "score function + LOO"), start=2):
                if what == "var":
                    ax.axhline(float(sweep[f"{name} var"]), ls="--", color=PALETTE[i],
                               label=name)
            ax.set(xlabel=r"temperature $\tau$",
                   ylabel=(r"squared bias $\|\mathbb{E}\,\hat g - \nabla\|^2$" if p == 0
                           else r"per-sample variance $\mathrm{tr}\,\mathrm{Cov}\,\hat g$"),
                   title=("bias of the relaxed gradient" if p == 0
                          else "variance of one-sample gradients"))
        axes[0].legend(fontsize=8)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        run.save_figure(fig, "gumbel_temperature")
        for name in ("relaxed", "straight-through"):
            key = name.replace("-", "_")
            for tau, b2, v in zip(sweep["tau"], sweep[f"{name} bias2"], sweep[f"{name} var"],
                                  strict=True):
                run.log(f"{name:16s} τ={tau:<5g} bias² {b2:.3e}  var {v:.3e}")
            run.log_metrics({f"gumbel/{key}_bias2_tau_min": sweep[f"{name} bias2"][0],
                             f"gumbel/{key}_bias2_tau_max": sweep[f"{name} bias2"][-1],
                             f"gumbel/{key}_var_tau_min": sweep[f"{name} var"][0]})
        run.log_metrics({"gumbel/score_var": float(sweep["score function var"]),
                         "gumbel/score_loo_var": float(sweep["score function + LOO var"])})
        run.save_figure(simplex_figure(cfg, run), "gumbel_simplex")

        # ---- 3. discrete VAE -----------------------------------------------------------------
        dev = run.device
        x_train = torch.from_numpy(load_digits("train", "binarized", flatten=True)[0]).to(dev)
        x_test = torch.from_numpy(load_digits("test", "binarized", flatten=True)[0]).to(dev)
        # Reference without latents: independent Bernoulli pixels, Laplace-smoothed frequencies
        p_pix = (x_train.sum(0) + 1) / (len(x_train) + 2)
        indep = -(x_test * p_pix.log() + (1 - x_test) * (-p_pix).log1p()).sum(1).mean().item()
        run.log_metrics({"vae/independent_bernoulli_test_nll_nats": indep})
        run.log(f"independent Bernoulli pixels: test NLL {indep:.2f} nats")
        curves, models = {}, {}
        for est in cfg.estimators:
            model, curve, neg_iw, kl = train_vae(cfg, run, est, x_train, x_test)
            curves[est], models[est] = curve, model
            run.log_metrics({f"vae/{est}_test_neg_elbo_nats": curve[-1][1],
                             f"vae/{est}_train_neg_elbo_nats": curve[-1][2],
                             f"vae/{est}_test_neg_iwae_nats": neg_iw,
                             f"vae/{est}_test_kl_nats": kl})
            run.log(f"VAE {est}: test -ELBO {curve[-1][1]:.2f} nats, train {curve[-1][2]:.2f}, "
                    f"test -IWAE(S={cfg.iw_samples}) {neg_iw:.2f}, test KL {kl:.2f}")
        first = cfg.estimators[0]
        run.log_metrics({"vae/test_neg_elbo_nats": run.metrics[f"vae/{first}_test_neg_elbo_nats"],
                         "vae/test_neg_iwae_nats": run.metrics[f"vae/{first}_test_neg_iwae_nats"],
                         "vae/capacity_nats": cfg.vae_latents * math.log(cfg.vae_classes)})

        fig, ax = new_figure(size="column_tall")
        for i, est in enumerate(cfg.estimators):
            ep, test, train = zip(*curves[est], strict=True)
            ax.plot(ep, test, marker="o", ms=3, color=PALETTE[i], label=f"{LABELS[est]}, test")
            ax.plot(ep, train, ls="--", color=PALETTE[i], lw=1, label=f"{LABELS[est]}, train")
        ax.axhline(indep, color=PALETTE[7], ls=":", lw=1, label="independent pixels, test NLL")
        ax.set(xlabel="epoch", ylabel="negative ELBO (nats per image)",
               title=rf"${cfg.vae_latents}\times{cfg.vae_classes}$ categorical VAE, "
                     "binarised digits")
        lo = min(min(c[1] for c in curves[e]) for e in cfg.estimators)
        ax.set_ylim(lo - 2, lo + 25)
        ax.legend()
        run.save_figure(fig, "vae_curves")

        x_show = x_test[:32]
        n_est = len(cfg.estimators)
        fig, axes = new_figure(1, 1 + n_est, size=(7.0, 2.6))
        digits_mosaic(axes[0], x_show.cpu().numpy(), "test digits")
        for ax, est in zip(axes[1:], cfg.estimators, strict=True):
            digits_mosaic(ax, models[est].reconstruct(x_show).cpu().numpy(), LABELS[est])
        fig.suptitle(r"reconstructions: $p(x\mid z)$ at the mode of $q(z\mid x)$")
        run.save_figure(fig, "vae_reconstructions")

        fig, axes = new_figure(1, n_est, size=(7.0, 2.8), squeeze=False)
        for ax, est in zip(axes[0], cfg.estimators, strict=True):
            probs = models[est].sample(32, generator=torch.Generator(dev).manual_seed(cfg.seed))
            digits_mosaic(ax, probs.cpu().numpy(), LABELS[est])
        fig.suptitle(r"samples: pixel probabilities $p(x\mid z)$, $z$ from the uniform prior")
        run.save_figure(fig, "vae_samples")
    return run.result
