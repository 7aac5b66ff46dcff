"""Shared by the ``gan`` and ``wasserstein-gan`` experiments: the four adversarial methods on 2-D
mixtures of Gaussians and on 8×8 digits, their evaluation (mode coverage, exact W1, digits FID)
and their figures.

Not a topic: the registry skips modules whose name starts with an underscore. Training goes
through the one loop :func:`deepnotes.generative.gan.train_adversarial`; this module only picks
the networks, objectives and optimisers of each method and evaluates in the loop's callback, so
the metrics logged before a failure (a NaN critic) stay in the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import get_toy
from deepnotes.generative import gan, wgan

#: method -> label in figures and legends
LABELS = {
    "minimax": "GAN, minimax loss",
    "non_saturating": "GAN, non-saturating loss",
    "ns_sn": "non-saturating + spectral norm",
    "wgan_clip": "WGAN, weight clipping",
    "wgan_gp": "WGAN-GP",
    "wgan_lp": "WGAN, one-sided penalty",
}
COLORS = dict(zip(LABELS, PALETTE, strict=False))
#: method -> short label for narrow panels
SHORT = {"minimax": "minimax", "non_saturating": "non-saturating", "ns_sn": "NS + spectral norm",
         "wgan_clip": "WGAN-clip", "wgan_gp": "WGAN-GP", "wgan_lp": "WGAN, one-sided"}


@dataclass(frozen=True)
class Method:
    """How one method trains: objectives, optimiser and critic steps per generator step.

    ``lr_d != lr_g`` is the two time-scale update rule (Heusel et al. 2017).
    """

    name: str
    lr_g: float
    lr_d: float
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1
    spectral_norm: bool = False
    clip: float | None = None
    penalty: float = 0.0
    one_sided: bool = False
    rmsprop: bool = False

    def objectives(self):
        if self.name in ("minimax", "non_saturating"):
            return gan.gan_objectives(self.name)
        if self.name == "ns_sn":
            return gan.gan_objectives("non_saturating")
        return wgan.wgan_objectives(self.penalty, one_sided=self.one_sided)

    def optimizers(self, generator, critic):
        if self.rmsprop:  # Arjovsky et al. (2017): momentum destabilises the clipped critic
            return (torch.optim.RMSprop(generator.parameters(), lr=self.lr_g),
                    torch.optim.RMSprop(critic.parameters(), lr=self.lr_d))
        return (torch.optim.Adam(generator.parameters(), lr=self.lr_g, betas=self.betas),
                torch.optim.Adam(critic.parameters(), lr=self.lr_d, betas=self.betas))


def make_method(name: str, lr: float, *, ttur: float = 1.0, n_critic: int = 5,
                clip: float = 0.01, penalty: float = 10.0) -> Method:
    """The settings of each method: the GANs with Adam(β₁ = 0.5) at ``lr`` (the discriminator
    at ``ttur · lr`` when spectrally normalised); WGAN-clip with RMSprop and ``n_critic``; WGAN-GP
    (two-sided penalty) and ``wgan_lp`` (one-sided) with Adam(0.5, 0.9), ``n_critic`` and
    λ = ``penalty`` (the papers' defaults)."""
    if name in ("minimax", "non_saturating"):
        return Method(name, lr, lr)
    if name == "ns_sn":
        return Method(name, lr, ttur * lr, spectral_norm=True)
    if name == "wgan_clip":
        return Method(name, lr, lr, n_critic=n_critic, clip=clip, rmsprop=True)
    if name in ("wgan_gp", "wgan_lp"):
        return Method(name, lr, lr, betas=(0.5, 0.9), n_critic=n_critic, penalty=penalty,
                      one_sided=name == "wgan_lp")
    raise ValueError(f"unknown method {name!r}; expected one of {sorted(LABELS)}")


# -------------------------------------------------------------------------------- 2-D --
@dataclass(frozen=True)
class Toy:
    """A mixture of Gaussians with known centres: ``ring`` (8 on a circle) or ``grid`` (25)."""

    name: str
    std: float

    def build(self):
        if self.name == "ring":
            return get_toy("8-gaussians", radius=2.0, std=self.std)
        if self.name == "grid":
            return get_toy("gaussian-grid", side=5, spacing=2.0, std=self.std)
        raise ValueError(f"unknown toy {self.name!r}; expected 'ring' or 'grid'")


def train_2d(method: Method, toy: Toy, steps: int, batch: int, hidden: int, depth: int,
             eval_steps: list[int], n_eval: int, run, *, exact_w1: bool = False,
             prefix: str = "") -> dict:
    """Train ``method`` on the toy; at each of ``eval_steps`` draw ``n_eval`` samples and
    measure mode coverage (and, with ``exact_w1``, the critic's estimate beside the exact W1 of
    ``n_eval`` data points against ``n_eval`` samples, by optimal matching).

    Metrics of each evaluation are logged as they come (``<prefix>/...``), so a failure later
    keeps them. Returns ``{"steps", "samples" (list of (n_eval, 2)), "modes_covered",
    "high_quality_fraction", "mode_kl_nats", "w_estimate", "w_exact"}``.
    """
    mixture = toy.build()
    device = run.device
    gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    data_rng = np.random.default_rng(int(run.rng.integers(2**31)))
    torch.manual_seed(int(run.rng.integers(2**31)))
    generator = gan.mlp(2, 2, hidden, depth).to(device)
    critic = gan.mlp(2, 1, hidden, depth, spectral_norm=method.spectral_norm).to(device)
    g_opt, d_opt = method.optimizers(generator, critic)
    critic_obj, gen_obj = method.objectives()

    def sample_real():
        return torch.from_numpy(mixture.sample(batch, data_rng)).float().to(device)

    def sample_noise():
        return torch.randn(batch, 2, generator=gen).to(device)

    eval_set = set(eval_steps)
    out = {k: [] for k in ("steps", "samples", "modes_covered", "high_quality_fraction",
                           "mode_kl_nats", "w_estimate", "w_exact")}
    eval_z = torch.randn(n_eval, 2, generator=gen).to(device)
    eval_real = mixture.sample(n_eval, data_rng)

    def evaluate(step: int) -> None:
        with torch.no_grad():
            x = generator(eval_z)
        xs = x.cpu().double().numpy()
        stats = gan.mode_statistics(xs, mixture.centers, mixture.std)
        out["steps"].append(step)
        out["samples"].append(xs)
        for key, value in stats.items():
            out[key].append(value)
        metrics = {f"{prefix}/modes_covered_at_{step}": stats["modes_covered"]}
        if exact_w1:
            real_t = torch.from_numpy(eval_real).float().to(device)
            out["w_estimate"].append(wgan.dual_estimate(critic, real_t, x))
            out["w_exact"].append(wgan.wasserstein_matching(eval_real, xs))
        run.log(f"{prefix} step {step}: modes {stats['modes_covered']:.0f}/{len(mixture.centers)}"
                f", high-quality {stats['high_quality_fraction']:.3f}"
                + (f", critic {out['w_estimate'][-1]:.3f} vs exact W1 {out['w_exact'][-1]:.3f}"
                   if exact_w1 else ""))
        run.log_metrics(metrics)

    if 0 in eval_set:
        evaluate(0)

    def callback(step, _metrics):
        if step + 1 in eval_set:
            evaluate(step + 1)

    gan.train_adversarial(generator, critic, sample_real, sample_noise, critic_obj, gen_obj,
                          g_opt, d_opt, steps, n_critic=method.n_critic,
                          after_critic_step=wgan.wgan_critic_step_fn(method.clip),
                          callback=callback)
    return out


def eval_schedule(steps: int, n_evals: int) -> list[int]:
    """``0`` and ``n_evals`` evenly spaced steps ending at ``steps``."""
    return sorted({0, *(round(steps * (i + 1) / n_evals) for i in range(n_evals))})


def _two_lines(label: str) -> str:
    """A legend label broken once (at ", " or " + ") for a narrow row label."""
    for sep, brk in ((", ", ",\n"), (" + ", " +\n")):
        if sep in label:
            return label.replace(sep, brk, 1)
    return label


def plot_clouds(results: dict[str, dict], toy: Toy, columns: list[int], title: str):
    """Rows: methods; columns: the generator's samples at ``columns`` (indices into the
    evaluation steps); the mixture's centres as crosses."""
    mixture = toy.build()
    names = list(results)
    fig, axes = new_figure(len(names), len(columns),
                           size=(min(7.0, 1.6 * len(columns) + 0.6), 1.6 * len(names) + 0.5),
                           squeeze=False, constrained_layout=True)
    lim = (mixture.bounds[0] - 0.3, mixture.bounds[1] + 0.3)
    for r, name in enumerate(names):
        res = results[name]
        for c, idx in enumerate(columns):
            ax = axes[r, c]
            x = res["samples"][idx]
            ax.scatter(mixture.centers[:, 0], mixture.centers[:, 1], marker="+", s=30,
                       color="0.5", lw=0.8)
            ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.35, color=COLORS[name], lw=0)
            ax.set(xlim=lim, ylim=lim, xticks=[], yticks=[], aspect="equal")
            ax.grid(False)
            if r == 0:
                ax.set_title(f"step {res['steps'][idx]}", fontsize=10)
            if c == 0:
                ax.set_ylabel(_two_lines(LABELS[name]), fontsize=9)
            covered = int(res["modes_covered"][idx])
            ax.text(0.03, 0.03, f"{covered} mode" + ("" if covered == 1 else "s"), fontsize=9,
                    transform=ax.transAxes)
    fig.suptitle(title, fontsize=11)
    return fig


def plot_coverage(results_by_toy: dict[str, dict[str, dict]], n_modes: dict[str, int]):
    """Modes covered (top) and high-quality fraction (bottom) against step, one column a toy;
    the legend below the panels."""
    toys = list(results_by_toy)
    fig, axes = new_figure(2, len(toys), size=(min(7.0, 3.5 * len(toys)), 5.6), squeeze=False,
                           constrained_layout=True)
    for c, toy in enumerate(toys):
        for name, res in results_by_toy[toy].items():
            axes[0, c].plot(res["steps"], res["modes_covered"], color=COLORS[name],
                            label=LABELS[name], marker=".")
            axes[1, c].plot(res["steps"], res["high_quality_fraction"], color=COLORS[name],
                            marker=".")
        axes[0, c].axhline(n_modes[toy], color="0.5", ls=":", lw=1)
        axes[0, c].set(title=f"{toy}: {n_modes[toy]} modes", ylabel="modes covered",
                       ylim=(0, n_modes[toy] + 1))
        axes[1, c].set(xlabel="generator step", ylabel="high-quality fraction", ylim=(0, 1))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=9,
               ncol=1 if len(toys) == 1 else min(len(labels), 2))
    return fig


# ----------------------------------------------------------------------------- digits --
@dataclass(frozen=True)
class DigitsSetup:
    """The DCGAN-style digits run: sizes, steps and evaluation."""

    steps: int
    batch: int = 64
    z_dim: int = 32
    channels: int = 32
    n_fid: int = 1000
    n_evals: int = 4


def train_digits(method: Method, setup: DigitsSetup, fid, run, prefix: str) -> dict:
    """Train a DCGAN-style generator/critic pair on the digits train split with ``method``;
    at evenly spaced steps log the FID of ``setup.n_fid`` samples (``<prefix>/fid_at_<step>``).

    Returns ``{"steps", "fid", "samples" (64, 1, 8, 8) at the end, "history"}``.
    """
    from deepnotes.nn.digits_models import digits

    device = run.device
    x_train, _ = digits("train")
    x_train = x_train.to(device)
    gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    torch.manual_seed(int(run.rng.integers(2**31)))
    generator = gan.DCGANGenerator(setup.z_dim, setup.channels).to(device)
    critic = gan.DCGANDiscriminator(setup.channels, spectral_norm=method.spectral_norm).to(device)
    g_opt, d_opt = method.optimizers(generator, critic)
    critic_obj, gen_obj = method.objectives()

    def sample_real():
        idx = torch.randint(0, x_train.shape[0], (setup.batch,), generator=gen)
        return x_train[idx.to(device)]

    def sample_noise():
        return torch.randn(setup.batch, setup.z_dim, generator=gen).to(device)

    eval_z = torch.randn(setup.n_fid, setup.z_dim, generator=gen).to(device)
    checkpoints = set(eval_schedule(setup.steps, setup.n_evals)) - {0}
    out: dict = {"steps": [], "fid": []}

    def samples() -> torch.Tensor:
        generator.eval()  # batch norm in its running statistics
        with torch.no_grad():
            x = generator(eval_z).cpu()
        generator.train()
        return x

    def callback(step, _metrics):
        if step + 1 in checkpoints:
            value = fid.fid(samples())
            out["steps"].append(step + 1)
            out["fid"].append(value)
            run.log_metrics({f"{prefix}/fid_at_{step + 1}": value})
            run.log(f"{prefix} step {step + 1}: FID {value:.3f}")

    out["history"] = gan.train_adversarial(
        generator, critic, sample_real, sample_noise, critic_obj, gen_obj, g_opt, d_opt,
        setup.steps, n_critic=method.n_critic, after_critic_step=wgan.wgan_critic_step_fn(
            method.clip), callback=callback, progress=run.track)
    out["samples"] = samples()[:64]
    return out


def fid_evaluator(clf_steps: int, out: str | None, run):
    """The digits FID of the diffusion topics (their feature classifier, trained ``clf_steps``
    steps and cached under ``out``: the edm topic's full run and ours share it) and the FID of
    the held-out test split, the floor a perfect generator reaches with that many images."""
    from deepnotes.experiments._diffusion_digits import train_classifier
    from deepnotes.nn.digits_models import ClassifierSpec, DigitsFID, digits

    net, meta = train_classifier(ClassifierSpec(n_steps=clf_steps), 0.5, out, run.log,
                                 run.track)
    fid = DigitsFID(net.to(run.device))
    x_test, _ = digits("test")
    run.log_metrics({"digits/fid_classifier_test_accuracy": meta["test_accuracy"],
                     "digits/fid_test_split": fid.fid(x_test)})
    return fid


def plot_digits(results: dict[str, dict], test_fid: float):
    """Left: FID against step of each method (test split as the floor); right: samples."""
    from deepnotes.experiments._diffusion_digits import image_grid

    names = list(results)
    fig, axes = new_figure(1, 1 + len(names), size=(min(7.0, 3.4 + 2.4 * len(names)), 3.4),
                           constrained_layout=True, squeeze=False)
    axes = axes[0]
    ax = axes[0]
    for name, res in results.items():
        ax.plot(res["steps"], res["fid"], marker="o", color=COLORS[name], label=LABELS[name])
    ax.axhline(test_fid, color="0.4", ls=":", label="test split (floor)")
    ax.set(xlabel="generator step", ylabel="digits FID", yscale="log", title="FID over training")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=9,
               ncol=min(len(labels), 2))
    for a, (name, res) in zip(axes[1:], results.items(), strict=True):
        image_grid(a, res["samples"], nrow=8)
        a.set_title(SHORT[name], fontsize=10)
    return fig
