"""Wasserstein GANs with weight clipping and with a gradient penalty, checked against exact W1.

1. ``critic_vs_exact_1d``: a 1-D generator learns a two-component mixture; along training the
   critic's dual estimate ``E_data f - E_G f`` is plotted beside the exact W1 between the same
   samples (:func:`deepnotes.generative.wgan.wasserstein_1d`), for WGAN-clip and WGAN-GP.
2. ``clouds_grid``, ``mode_coverage``, ``critic_vs_exact_2d``: both WGANs on 25 Gaussians on a
   grid (and 8 on a ring): samples over training, modes covered, and the critic estimate beside
   the exact W1 between evaluation sets (optimal matching, checked once against the LP).
3. ``digits``: WGAN-GP with the DCGAN-style networks of the gan topic on 8×8 digits: samples and
   FID over training.

Headline: the WGAN-GP critic's estimate of W1 at the end of the 1-D run; peer: the exact W1
between the same samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import new_figure
from deepnotes.experiments import _gan_common as C
from deepnotes.generative import gan, wgan

WGANS = ("wgan_clip", "wgan_gp", "wgan_lp")


@dataclass
class Config(ExperimentConfig):
    methods_1d: tuple[str, ...] = WGANS
    """1-D methods: wgan_clip (RMSprop, clipping at clip), wgan_gp (Adam(0.5, 0.9), two-sided
    penalty λ = penalty) and wgan_lp (the same with the one-sided penalty)."""
    methods_2d: tuple[str, ...] = ("wgan_clip", "wgan_gp")
    """2-D methods (same names)."""
    n_critic: int = 5
    """Critic updates per generator update (the papers' 5)."""
    clip: float = 0.01
    """Weight-clipping bound c of WGAN-clip."""
    penalty: float = 10.0
    """Gradient-penalty weight λ of WGAN-GP."""
    lr_clip: float = 5e-5
    """RMSprop learning rate of WGAN-clip (the paper's 5e-5)."""
    lr_gp: float = 1e-4
    """Adam learning rate of WGAN-GP and of the one-sided variant (the paper's 1e-4)."""
    steps_1d: int = 400
    """Generator steps of the 1-D runs."""
    n_exact_1d: int = 20000
    """Samples per side for the exact 1-D W1 and the critic estimate beside it."""
    toys: tuple[str, ...] = ("grid",)
    """2-D targets: grid (25 Gaussians, spacing 2) and ring (8 Gaussians, radius 2)."""
    toy_std: float = 0.05
    """Standard deviation of every mixture component (data units)."""
    steps_2d: int = 600
    """Generator steps on each 2-D toy."""
    batch: int = 256
    """Batch size of the 1-D and 2-D runs."""
    hidden_1d: int = 32
    """Width of the 1-D MLPs."""
    hidden: int = 64
    """Width of the 2-D MLPs."""
    depth: int = 3
    """Hidden layers of the 1-D and 2-D MLPs."""
    n_evals: int = 10
    """Evaluations along each 1-D and 2-D run, besides step 0."""
    n_eval_samples: int = 1000
    """Generator and data samples per 2-D evaluation (W1 by optimal matching of this many)."""
    n_lp_check: int = 150
    """Points per side of the LP-versus-matching check on the final 2-D samples."""
    digits_steps: int = 200
    """Generator steps of WGAN-GP on the digits (0: skip the digits part)."""
    digits_channels: int = 16
    """Base channel count C of the DCGAN networks."""
    n_fid: int = 1000
    """Generated digits per FID evaluation."""
    clf_steps: int = 800
    """Training steps of the FID feature classifier (800: the diffusion topics' network)."""


PRESETS = make_presets(
    smoke=Config(steps_1d=20, n_exact_1d=500, steps_2d=10, batch=64, hidden_1d=8, hidden=16,
                 depth=2, n_evals=2, n_eval_samples=200, n_lp_check=30, digits_steps=2,
                 digits_channels=4, n_fid=100, clf_steps=10),
    quick=Config(steps_1d=200, n_exact_1d=5000, steps_2d=200, n_evals=4,
                 n_eval_samples=500, n_lp_check=80, digits_steps=30, digits_channels=8,
                 n_fid=300),
    full=Config(),
)
HEADLINE = "one_d/wgan_lp_critic_estimate"
PEER = "one_d/wgan_lp_exact_w1"


def _method(config: Config, name: str) -> C.Method:
    lr = config.lr_clip if name == "wgan_clip" else config.lr_gp
    return C.make_method(name, lr, n_critic=config.n_critic, clip=config.clip,
                         penalty=config.penalty)


def _sample_1d(n: int, gen: torch.Generator) -> torch.Tensor:
    """The 1-D target: ½ N(-1.5, 0.4²) + ½ N(1.5, 0.4²), shape (n, 1)."""
    side = torch.randint(0, 2, (n, 1), generator=gen) * 3.0 - 1.5
    return side + 0.4 * torch.randn(n, 1, generator=gen)


def _train_1d(config: Config, name: str, run) -> dict:
    """One 1-D WGAN; the critic estimate and the exact W1 at each evaluation step."""
    device = run.device
    method = _method(config, name)
    gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    torch.manual_seed(int(run.rng.integers(2**31)))
    generator = gan.mlp(1, 1, config.hidden_1d, config.depth).to(device)
    critic = gan.mlp(1, 1, config.hidden_1d, config.depth).to(device)
    g_opt, d_opt = method.optimizers(generator, critic)
    eval_real = _sample_1d(config.n_exact_1d, gen).to(device)
    eval_z = torch.randn(config.n_exact_1d, 1, generator=gen).to(device)
    out: dict[str, list] = {"steps": [], "estimate": [], "exact": []}

    def evaluate(step):
        with torch.no_grad():
            fake = generator(eval_z)
        exact = wgan.wasserstein_1d(eval_real.cpu().double().numpy().ravel(),
                                    fake.cpu().double().numpy().ravel())
        estimate = wgan.dual_estimate(critic, eval_real, fake)
        out["steps"].append(step)
        out["estimate"].append(estimate)
        out["exact"].append(exact)
        run.log_metrics({f"one_d_{name}/critic_estimate_at_{step}": estimate,
                         f"one_d_{name}/exact_w1_at_{step}": exact})
        run.log(f"1-D {name} step {step}: critic {estimate:.4f}, exact W1 {exact:.4f}")

    eval_steps = set(C.eval_schedule(config.steps_1d, config.n_evals)) - {0}

    def callback(step, _metrics):
        if step + 1 in eval_steps:
            evaluate(step + 1)

    objectives = method.objectives()
    gan.train_adversarial(
        generator, critic, lambda: _sample_1d(config.batch, gen).to(device),
        lambda: torch.randn(config.batch, 1, generator=gen).to(device), *objectives, g_opt,
        d_opt, config.steps_1d, n_critic=method.n_critic,
        after_critic_step=wgan.wgan_critic_step_fn(method.clip), callback=callback)
    with torch.no_grad():
        out["final_samples"] = generator(eval_z).cpu().numpy().ravel()
    out["data"] = eval_real.cpu().numpy().ravel()
    return out


def _late(steps, values, total: int) -> np.ndarray:
    """The values at evaluations from a quarter of training on (the critic has caught up)."""
    return np.asarray([v for s, v in zip(steps, values, strict=True) if s >= total / 4], float)


def _agreement(steps, estimate, exact, total: int) -> dict[str, float]:
    """Pearson correlation of estimate and exact W1 and the mean relative error, both over the
    evaluations from a quarter of training on; ``nan`` when undefined."""
    a, b = _late(steps, estimate, total), _late(steps, exact, total)
    corr = math.nan
    if len(a) >= 3 and a.std() > 0 and b.std() > 0:
        corr = float(np.corrcoef(a, b)[0, 1])
    rel = float(np.mean(np.abs(a - b) / b)) if len(a) else math.nan
    return {"corr_late": corr, "rel_error_late": rel}


def _scaled(values) -> tuple[np.ndarray, int]:
    """``values / 10**e`` and ``e``, the exponent of the largest finite magnitude (0 if none):
    the axis then reads "×10^e" in its label instead of an offset above the panel."""
    v = np.asarray(values, dtype=float)
    finite = np.abs(v[np.isfinite(v)])
    if finite.size == 0 or finite.max() == 0:
        return v, 0
    e = int(np.floor(np.log10(finite.max())))
    return v / 10.0**e, e


def _estimate_on_twin(ax, steps, estimate, color):
    """The clipped critic's estimate (``K · W1`` with an unknown, tiny ``K``) on a right axis."""
    twin = ax.twinx()
    scaled, e = _scaled(estimate)
    twin.plot(steps, scaled, color=color, marker=".", ls="--")
    twin.set_ylabel("critic estimate" + (rf" ($\times 10^{{{e}}}$)" if e else ""), color=color)
    twin.grid(False)
    twin.spines["right"].set_visible(True)


def _legend_below(fig, exact_label: str, extra=()):
    """One legend for every panel: ``extra`` handles, then the line styles (exact in black, the
    critic's estimate dashed in the method's colour)."""
    from matplotlib.lines import Line2D

    handles = [*extra,
               Line2D([], [], color="k", marker=".", label=exact_label),
               Line2D([], [], color="0.45", marker=".", ls="--",
                      label="critic estimate (dashed)")]
    fig.legend(handles=handles, loc="outside lower center", fontsize=9,
               ncol=3 if len(handles) > 4 else 2)


def _plot_1d(results: dict[str, dict]):
    """Final samples (first panel), then the critic estimate beside the exact W1 per method."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(results) + 1
    ncol = 2
    nrow = (n + 1) // 2
    fig, axes = new_figure(nrow, ncol, size=(7.0, 2.8 * nrow + 0.6), squeeze=False,
                           constrained_layout=True)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    any_res = next(iter(results.values()))
    bins = np.linspace(-3.5, 3.5, 70)
    axes[0].hist(any_res["data"], bins=bins, density=True, color="0.75", label="data")
    for name, res in results.items():
        axes[0].hist(res["final_samples"], bins=bins, density=True, histtype="step",
                     color=C.COLORS[name], lw=1.4, label=C.LABELS[name])
    axes[0].set(xlabel="$x$", ylabel="density", title="Final generator samples")
    for ax, (name, res) in zip(axes[1:], results.items(), strict=False):
        ax.plot(res["steps"], res["exact"], color="k", marker=".")
        if name == "wgan_clip":
            _estimate_on_twin(ax, res["steps"], res["estimate"], C.COLORS[name])
        else:
            ax.plot(res["steps"], res["estimate"], color=C.COLORS[name], marker=".", ls="--")
            ax.axhline(0, color="0.6", lw=0.8)
        ax.set(xlabel="generator step", ylabel="$W_1$", title=C.LABELS[name])
    _legend_below(fig, "exact $W_1$ (Eq. 7)",
                  [Patch(color="0.75", label="data"),
                   *(Line2D([], [], color=C.COLORS[name], label=C.LABELS[name])
                     for name in results)])
    return fig


def _plot_2d_w1(results: dict[str, dict], floor: float, toy: str):
    from matplotlib.lines import Line2D

    fig, axes = new_figure(1, len(results), size=(min(7.0, 3.5 * len(results)), 3.6),
                           squeeze=False, constrained_layout=True)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        ax.plot(res["steps"], res["w_exact"], color="k", marker=".")
        ax.axhline(floor, color="0.5", ls=":")
        if name == "wgan_clip":
            _estimate_on_twin(ax, res["steps"], res["w_estimate"], C.COLORS[name])
        else:
            ax.plot(res["steps"], res["w_estimate"], color=C.COLORS[name], marker=".", ls="--")
        ax.set(xlabel="generator step", ylabel="$W_1$", title=f"{C.LABELS[name]} ({toy})")
    _legend_below(fig, "exact $W_1$ (matching)",
                  [Line2D([], [], color="0.5", ls=":", label="$W_1$ between two data samples")])
    return fig


def run(config: Config) -> Result:
    if config.n_critic < 1 or config.steps_1d < 1 or config.steps_2d < 1 or config.n_evals < 1:
        raise ValueError("n_critic, steps_1d, steps_2d and n_evals must be >= 1")
    for name in config.methods_1d + config.methods_2d:
        if name not in WGANS:
            raise ValueError(f"unknown method {name!r}; expected one of {WGANS}")
    if "wgan_lp" not in config.methods_1d:
        raise ValueError("methods_1d must include wgan_lp (the headline)")
    from deepnotes.experiments._diffusion_digits import one_thread

    with start_run(__name__, config) as run, one_thread():
        one_d = {}
        for name in config.methods_1d:
            res = _train_1d(config, name, run)
            one_d[name] = res
            run.log_metrics({
                f"one_d/{name}_critic_estimate": res["estimate"][-1],
                f"one_d/{name}_exact_w1": res["exact"][-1],
                f"one_d/{name}_estimate_over_exact": res["estimate"][-1] / res["exact"][-1],
            })
            agree = _agreement(res["steps"], res["estimate"], res["exact"], config.steps_1d)
            run.log_metrics({f"one_d/{name}_{k}": v for k, v in agree.items()})
        run.save_figure(_plot_1d(one_d), "critic_vs_exact_1d")

        eval_steps = C.eval_schedule(config.steps_2d, config.n_evals)
        by_toy: dict[str, dict[str, dict]] = {}
        n_modes = {}
        for toy_name in config.toys:
            toy = C.Toy(toy_name, config.toy_std)
            mixture = toy.build()
            n_modes[toy_name] = len(mixture.centers)
            floor_rng = np.random.default_rng(int(run.rng.integers(2**31)))
            floor = wgan.wasserstein_matching(mixture.sample(config.n_eval_samples, floor_rng),
                                              mixture.sample(config.n_eval_samples, floor_rng))
            run.log_metrics({f"{toy_name}/w1_data_vs_data": floor})
            by_toy[toy_name] = {}
            for name in config.methods_2d:
                res = C.train_2d(_method(config, name), toy, config.steps_2d, config.batch,
                                 config.hidden, config.depth, eval_steps,
                                 config.n_eval_samples, run, exact_w1=True,
                                 prefix=f"{toy_name}_{name}")
                by_toy[toy_name][name] = res
                run.log_metrics({
                    f"{toy_name}/modes_covered_{name}": res["modes_covered"][-1],
                    f"{toy_name}/high_quality_fraction_{name}": res["high_quality_fraction"][-1],
                    f"{toy_name}/mode_kl_{name}_nats": res["mode_kl_nats"][-1],
                    f"{toy_name}/critic_estimate_{name}": res["w_estimate"][-1],
                    f"{toy_name}/exact_w1_{name}": res["w_exact"][-1],
                })
                agree = _agreement(res["steps"], res["w_estimate"], res["w_exact"],
                                   config.steps_2d)
                run.log_metrics({f"{toy_name}/{k}_{name}": v for k, v in agree.items()})
            columns = sorted({0, len(eval_steps) // 4, len(eval_steps) // 2,
                              len(eval_steps) - 1})
            title = (f"{n_modes[toy_name]} Gaussians ({toy_name}): WGAN samples over training")
            run.save_figure(C.plot_clouds(by_toy[toy_name], toy, columns, title),
                            f"clouds_{toy_name}")
            run.save_figure(_plot_2d_w1(by_toy[toy_name], floor, toy_name),
                            f"critic_vs_exact_{toy_name}")
        run.save_figure(C.plot_coverage(by_toy, n_modes), "mode_coverage")

        # the exact W1 two ways on the final samples of the first toy: LP against matching
        first = by_toy[config.toys[0]][config.methods_2d[-1]]["samples"][-1][:config.n_lp_check]
        ref = C.Toy(config.toys[0], config.toy_std).build().sample(
            config.n_lp_check, np.random.default_rng(int(run.rng.integers(2**31))))
        lp, matching = wgan.wasserstein_discrete(first, ref), wgan.wasserstein_matching(first, ref)
        run.log_metrics({"check/lp_w1": lp, "check/matching_w1": matching,
                         "check/lp_minus_matching_abs": abs(lp - matching)})

        if config.digits_steps > 0:
            fid = C.fid_evaluator(config.clf_steps, config.out, run)
            setup = C.DigitsSetup(config.digits_steps, channels=config.digits_channels,
                                  n_fid=config.n_fid)
            res = C.train_digits(_method(config, "wgan_gp"), setup, fid, run, "digits_wgan_gp")
            run.log_metrics({"digits/fid_wgan_gp": res["fid"][-1]})
            run.save_figure(C.plot_digits({"wgan_gp": res}, run.metrics["digits/fid_test_split"]),
                            "digits")
    return run.result
