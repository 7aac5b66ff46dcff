"""Classifier guidance and classifier-free guidance on 8×8 digits, and an exact 2-D picture.

Both guidance methods reuse the class-conditional EDM U-Net of the edm topic (cached by
``_diffusion_digits``; the null class gives the unconditional model). Classifier guidance adds
``s σ² ∇_x log p_σ(y | x)`` from a noise-conditional classifier trained on noised digits to the
unconditional denoiser; classifier-free guidance mixes ``(1 + w) D(x; σ, y) − w D(x; σ, ∅)``.
For each scale the experiment samples balanced labels with Heun (35 NFE) from the same noise and
reports the digits FID and the fraction of samples the clean classifier assigns to their label.
The 2-D panel guides the exact denoiser of a Gaussian mixture with its exact class posterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.diffusion.gmm import GaussianMixture
from deepnotes.diffusion.guidance import classifier_free_guidance, classifier_guidance
from deepnotes.diffusion.samplers import sample_heun
from deepnotes.diffusion.schedules import karras_sigmas
from deepnotes.experiments import _diffusion_digits as H


@dataclass
class Config(ExperimentConfig):
    channels: int = 16
    """U-Net width at 8×8 (as in the edm topic, so its cached model is reused)."""
    emb_dim: int = 32
    """Width of the noise/class embedding."""
    train_steps: int = 1500
    """Adam steps of the denoiser."""
    clf_steps: int = 800
    """Training steps of the clean FID feature classifier."""
    noisy_clf_steps: int = 1500
    """Training steps of the noise-conditional classifier used for guidance."""
    n_fid: int = 300
    """Generated images per scale (balanced labels)."""
    heun_steps: int = 18
    """Heun steps per sample (2·steps − 1 denoiser evaluations)."""
    cfg_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    """Classifier-free guidance weights w (0 = the conditional model)."""
    cg_scales: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)
    """Classifier guidance scales s (0 = the unconditional model)."""
    n_toy: int = 2000
    """Samples per scale in the exact 2-D illustration."""

    @property
    def spec(self) -> H.DenoiserSpec:
        return H.DenoiserSpec(channels=self.channels, emb_dim=self.emb_dim,
                              n_steps=self.train_steps, seed=self.seed)


PRESETS = make_presets(
    smoke=Config(channels=8, emb_dim=16, train_steps=10, clf_steps=10, noisy_clf_steps=10,
                 n_fid=20, heun_steps=3, cfg_scales=(0.0, 2.0), cg_scales=(0.0, 2.0), n_toy=200),
    quick=Config(train_steps=250, clf_steps=200, noisy_clf_steps=200, n_fid=100, heun_steps=8,
                 cfg_scales=(0.0, 1.0, 4.0), cg_scales=(0.0, 2.0, 8.0), n_toy=500),
    full=Config(),
)
HEADLINE = "acc/cfg_w1"
PEER = None


def _fmt(v: float) -> str:
    return f"{v:g}".replace(".", "p")


def run(config: Config) -> Result:
    with start_run(__name__, config) as run, H.one_thread():
        dev = run.device
        model, meta = H.train_denoiser(config.spec, config.out, run.log, run.track, dev)
        fnet, fmeta = H.train_classifier(H.ClassifierSpec(n_steps=config.clf_steps,
                                                          seed=config.seed),
                                         model.sigma_data, config.out, run.log, run.track, dev)
        cspec = H.ClassifierSpec(noisy=True, n_steps=config.noisy_clf_steps, seed=config.seed)
        clf, cmeta = H.train_classifier(cspec, model.sigma_data, config.out, run.log, run.track,
                                        dev)
        scorer = H.DigitsFID(fnet)
        run.log_metrics({"clf/fid_net_test_accuracy": fmeta["test_accuracy"],
                         "clf/noisy_test_accuracy": cmeta["test_accuracy"]})
        _noisy_accuracy(run, clf, model.sigma_data)

        # the denoisers' labels live on the device; the scorer compares labels on the CPU
        labels = H.balanced_labels(config.n_fid, dev)
        labels_cpu = labels.cpu()
        cond = H.conditional(model, labels)
        uncond = H.conditional(model, None)

        def log_p_y(x, sigma):
            return clf(x, sigma).log_softmax(1).gather(1, labels[:, None])[:, 0]

        sigmas = karras_sigmas(config.heun_steps, H.SIGMA_MIN, H.SIGMA_MAX, H.RHO)
        seed = config.seed + 2000
        results = {"cfg": [], "cg": []}
        grids = {}
        jobs = [("cfg", w) for w in config.cfg_scales] + [("cg", s) for s in config.cg_scales]
        for kind, scale in run.track(jobs, "guidance scales"):
            if kind == "cfg":
                den = classifier_free_guidance(cond, uncond, scale)
            else:
                den = classifier_guidance(uncond, log_p_y, scale)
            x = H.sample(den, "heun", config.heun_steps, config.n_fid, seed, sigmas=sigmas,
                         device=dev)
            fid, acc = scorer.fid(x), scorer.accuracy(x, labels_cpu)
            results[kind].append((scale, fid, acc))
            grids[(kind, scale)] = x
            tag = "w" if kind == "cfg" else "s"
            run.log_metrics({f"fid/{kind}_{tag}{_fmt(scale)}": fid,
                             f"acc/{kind}_{tag}{_fmt(scale)}": acc})
            run.log(f"{kind} scale {scale:g}: FID {fid:.3f}, accuracy {acc:.3f}")
        if "acc/cfg_w1" not in run.metrics:
            x = H.sample(classifier_free_guidance(cond, uncond, 1.0), "heun", config.heun_steps,
                         config.n_fid, seed, sigmas=sigmas, device=dev)
            run.log_metrics({"acc/cfg_w1": scorer.accuracy(x, labels_cpu),
                             "fid/cfg_w1": scorer.fid(x)})
        for kind, rows in results.items():
            best = min(rows, key=lambda r: r[1])
            run.log_metrics({f"fid/{kind}_best": best[1], f"scale/{kind}_best_fid": best[0]})

        _plot_tradeoff(run, results)
        _plot_grids(run, grids, config)
        _toy(run, config)
    return run.result


@torch.no_grad()
def _noisy_accuracy(run, clf, sigma_data) -> None:
    """Accuracy of the noise-conditional classifier on noised test digits, by σ (the noise is
    drawn on the CPU, the same on every device; the classifier runs on ``run.device``)."""
    x, y = H.digits("test")
    gen = torch.Generator().manual_seed(0)
    dev = run.device
    for s in (0.1, 0.5, 1.0, 2.0):
        xs = (x + s * torch.randn(x.shape, generator=gen)).to(dev)
        pred = clf(xs, torch.full((x.shape[0],), s, device=dev)).argmax(1).cpu()
        acc = float((pred == y).float().mean())
        run.log_metrics({f"clf/noisy_acc_sigma{_fmt(s)}": acc})


def _plot_tradeoff(run, results) -> None:
    fig, (ax, ax2) = new_figure(1, 2, size="column_tall", layout="constrained")
    names = {"cfg": r"classifier-free guidance, scale $w$",
             "cg": r"classifier guidance, scale $s$"}
    for i, (kind, rows) in enumerate(results.items()):
        rows = sorted(rows)
        kw = {"color": PALETTE[i], "marker": "os"[i], "label": names[kind]}
        ax.plot([r[0] for r in rows], [r[1] for r in rows], **kw)
        ax2.plot([r[0] for r in rows], [r[2] for r in rows], **kw)
    ax.set(xlabel=r"guidance scale $w$ or $s$", ylabel="digits FID (lower is better)",
           yscale="log", title="Sample quality")
    ax2.set(xlabel=r"guidance scale $w$ or $s$",
            ylabel="classifier accuracy\non the requested label",
            title="Class fidelity", ylim=(0, 1.02))
    ax.legend(fontsize=9)
    run.save_figure(fig, "guidance_tradeoff")


def _plot_grids(run, grids, config) -> None:
    for kind, scales in (("cfg", config.cfg_scales), ("cg", config.cg_scales)):
        ncols = min(3, len(scales))
        nrows = -(-len(scales) // ncols)
        fig, axes = new_figure(nrows, ncols, size=(7.0, 1.6 * nrows), squeeze=False)
        axes = list(axes.ravel())
        for ax in axes[len(scales):]:
            ax.set_visible(False)
        sym = "w" if kind == "cfg" else "s"
        for ax, scale in zip(axes, scales, strict=False):
            x = grids[(kind, scale)][:min(50, config.n_fid)]
            H.image_grid(ax, x, 10, f"${sym}={scale:g}$")
        run.save_figure(fig, f"samples_{kind}")


def _toy(run, config) -> None:
    """Exact denoiser and exact ``log p_σ(y | x)`` of a 2-D mixture: guidance towards class 0.

    No network: closed-form float64 densities of 500 points, kept on the CPU on purpose."""
    gmm = GaussianMixture(weights=[0.5, 0.3, 0.2],
                          means=[[-1.5, 0.0], [1.5, 0.5], [0.0, -1.8]],
                          covs=[[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.3]],
                                [[0.35, 0.0], [0.0, 0.1]]])
    den = gmm.as_denoiser()
    target = 0
    sigmas = karras_sigmas(32, 0.002, 20.0, 7.0)
    scales = (0.0, 1.0, 3.0)
    fig, axes = new_figure(1, len(scales), size=(7.0, 3.0), sharex=True, sharey=True,
                           layout="constrained")
    for ax, s in zip(axes, scales, strict=True):
        guided = classifier_guidance(den, lambda x, sg: gmm.class_log_prob(x, sg, target), s)
        gen = torch.Generator().manual_seed(config.seed)
        x = sample_heun(guided, 20.0 * torch.randn(config.n_toy, 2, generator=gen,
                                                   dtype=torch.float64), sigmas)
        resp = gmm.responsibilities(x)
        frac = float((resp.argmax(1) == target).double().mean())
        run.log_metrics({f"toy/frac_class0_s{_fmt(s)}": frac})
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=PALETTE[0])
        for k in range(gmm.n_components):
            ax.plot(*gmm.means[k].tolist(), "x", color=PALETTE[3] if k == target else "k")
        ax.set(title=f"$s={s:g}$: {100 * frac:.1f}% in class 0", xlabel="$x_1$")
    axes[0].set_ylabel("$x_2$")
    run.save_figure(fig, "toy_guidance")
