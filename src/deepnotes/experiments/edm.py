"""EDM on 8×8 digits: one preconditioned class-conditional U-Net, every sampler, FID vs NFE.

Trains (or loads from the cache of ``_diffusion_digits``) an EDM-preconditioned U-Net with
log-normal σ and label dropout, then samples class-conditionally with each sampler of
``deepnotes.diffusion.samplers`` at several numbers of function evaluations (NFE) from the same
initial noise, and scores each batch with the digits FID (Fréchet distance of a small digits
classifier's penultimate features to the train split) and the classifier's accuracy on the
requested labels. DDPM ancestral sampling with the full linear-β chain is the reference line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from matplotlib.ticker import ScalarFormatter

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.experiments import _diffusion_digits as H


@dataclass
class Config(ExperimentConfig):
    channels: int = 16
    """U-Net width at 8×8 (twice that at 4×4)."""
    emb_dim: int = 32
    """Width of the noise/class embedding."""
    train_steps: int = 1500
    """Adam steps of the denoiser (batch ``batch_size``)."""
    batch_size: int = 128
    """Training batch size."""
    lr: float = 2e-3
    """Adam learning rate."""
    p_uncond: float = 0.1
    """Label dropout probability (classifier-free guidance needs the null class)."""
    clf_steps: int = 800
    """Training steps of the FID feature classifier."""
    n_fid: int = 300
    """Generated images per FID / accuracy evaluation (balanced over the 10 classes); the
    noise floor uses as many real test images (at most 450)."""
    nfe_grid: tuple[int, ...] = (5, 10, 20, 35, 70)
    """Budgets of denoiser evaluations tried for each sampler (rounded to whole steps)."""
    samplers: tuple[str, ...] = tuple(H.SAMPLERS)
    """Samplers to compare (names in _diffusion_digits.SAMPLERS)."""
    ref_steps: int = 1000
    """Steps of the DDPM ancestral reference (1000 = the full linear-β chain)."""

    @property
    def spec(self) -> H.DenoiserSpec:
        return H.DenoiserSpec(channels=self.channels, emb_dim=self.emb_dim,
                              n_steps=self.train_steps, batch_size=self.batch_size, lr=self.lr,
                              p_uncond=self.p_uncond, seed=self.seed)

    @property
    def clf_spec(self) -> H.ClassifierSpec:
        return H.ClassifierSpec(n_steps=self.clf_steps, seed=self.seed)


PRESETS = make_presets(
    smoke=Config(channels=8, emb_dim=16, train_steps=10, clf_steps=10, n_fid=20, nfe_grid=(5,),
                 samplers=("heun", "dpmpp_2m"), ref_steps=20),
    quick=Config(train_steps=250, clf_steps=200, n_fid=100, nfe_grid=(10, 35),
                 samplers=("euler", "heun", "dpmpp_2m", "ddpm"), ref_steps=100),
    full=Config(),
)
HEADLINE = "fid/heun_35nfe"
PEER = "fid/ddpm_reference"


def load_models(config: Config, run):
    """The denoiser, the FID scorer and their training metadata (cached across topics)."""
    model, meta = H.train_denoiser(config.spec, config.out, run.log, run.track, run.device)
    fnet, fmeta = H.train_classifier(config.clf_spec, model.sigma_data, config.out, run.log,
                                     run.track, run.device)
    return model, H.DigitsFID(fnet), meta, fmeta


def _first_within(points: list[tuple[int, float]], target: float) -> float:
    """Smallest NFE whose FID is within ``target``; NaN when none on the grid is."""
    ok = [nfe for nfe, fid in sorted(points) if fid <= target]
    return float(ok[0]) if ok else math.nan


def run(config: Config) -> Result:
    unknown = set(config.samplers) - set(H.SAMPLERS)
    if unknown:
        raise ValueError(f"unknown samplers {sorted(unknown)}; expected {sorted(H.SAMPLERS)}")
    with start_run(__name__, config) as run, H.one_thread():
        model, scorer, meta, fmeta = load_models(config, run)
        x_test, y_test = H.digits("test")
        # FID is biased upwards at small n: the floor uses as many real images as a sample has
        pick = torch.randperm(x_test.shape[0], generator=torch.Generator().manual_seed(0))
        floor = scorer.fid(x_test[pick[:config.n_fid]])
        tail = meta["losses"][-50:]
        run.log_metrics({"train/final_loss": sum(tail) / len(tail),
                         "clf/test_accuracy": fmeta["test_accuracy"],
                         "fid/noise_floor_test": floor,
                         "acc/real_test": scorer.accuracy(x_test, y_test)})
        run.log(f"FID of the real test split vs train (noise floor) = {floor:.3f}")

        # x_test, y_test stay on the CPU (the scorer moves images to its network and compares
        # labels on the CPU); the denoiser's labels and every sample live on run.device.
        labels = H.balanced_labels(config.n_fid, run.device)
        labels_cpu = labels.cpu()
        denoiser = H.conditional(model, labels)
        seed = config.seed + 1000  # the same initial noise for every sampler
        ref = H.sample(denoiser, "ddpm", config.ref_steps, config.n_fid, seed, device=run.device)
        ref_fid = scorer.fid(ref)
        run.log_metrics({"fid/ddpm_reference": ref_fid,
                         "acc/ddpm_reference": scorer.accuracy(ref, labels_cpu),
                         "nfe/ddpm_reference": config.ref_steps})
        run.log(f"DDPM {config.ref_steps} steps: FID {ref_fid:.3f}")

        curves: dict[str, list[tuple[int, float, float]]] = {}
        jobs = [(name, nfe) for name in config.samplers for nfe in config.nfe_grid]
        if "heun" not in config.samplers or 35 not in config.nfe_grid:
            jobs.append(("heun", 35))  # the headline is always measured
        samples = {}
        for name, budget in run.track(jobs, "samplers x NFE"):
            n_steps = H.steps_for_nfe(name, budget)
            nfe = H.nfe_of(name, n_steps)
            x = H.sample(denoiser, name, n_steps, config.n_fid, seed, device=run.device)
            fid, acc = scorer.fid(x), scorer.accuracy(x, labels_cpu)
            curves.setdefault(name, []).append((nfe, fid, acc))
            samples[(name, nfe)] = x
            run.log_metrics({f"fid/{name}_{nfe}nfe": fid})
            run.log(f"{name:15s} {n_steps:4d} steps {nfe:4d} NFE  FID {fid:8.3f}  acc {acc:.3f}")
        run.log_metrics({"acc/heun_35nfe": scorer.accuracy(samples[("heun", 35)], labels_cpu)})
        for name, pts in curves.items():
            n5 = _first_within([(n, f) for n, f, _ in pts], 1.05 * ref_fid)
            if not math.isnan(n5):
                run.log_metrics({f"nfe/{name}_to_5pct": n5})
            run.log(f"{name}: NFE to within 5% of DDPM-{config.ref_steps} FID: "
                    f"{'not reached on the grid' if math.isnan(n5) else int(n5)}")

        _plot_curves(run, curves, ref_fid, floor, config.ref_steps)
        _plot_samples(run, x_test, y_test, samples[("heun", 35)], ref, config.ref_steps)
        _plot_loss(run, meta["losses"])
    return run.result


def _plot_loss(run, losses: list[float]) -> None:
    fig, ax = new_figure(size="column")
    ax.plot(losses, color=PALETTE[0], lw=0.5, alpha=0.5, label="per step")
    k = max(1, len(losses) // 50)
    smooth = torch.tensor(losses).unfold(0, k, k).mean(1)
    ax.plot([k * (i + 0.5) for i in range(len(smooth))], smooth, color=PALETTE[3],
            label=f"mean of {k} steps")
    ax.set(xlabel="training step", ylabel="EDM loss (Eq. 5) per image", yscale="log",
           title="Training loss (the EMA weights are sampled)")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.legend(fontsize=9)
    run.save_figure(fig, "training_loss")


#: Legend names where the shared sampler table's plain-text name holds math.
_LEGEND = {"ddim": r"DDIM ($\eta = 0$)"}


def _plot_curves(run, curves, ref_fid, floor, ref_steps) -> None:
    fig, (ax, ax2) = new_figure(1, 2, size="column_tall", layout="constrained")
    markers = "os^vDPX*"
    for i, (name, pts) in enumerate(curves.items()):
        pts = sorted(pts)
        kw = {"color": PALETTE[i % len(PALETTE)], "marker": markers[i % len(markers)],
              "label": _LEGEND.get(name, H.SAMPLERS[name][0]), "ms": 4}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], **kw)
        ax2.plot([p[0] for p in pts], [p[2] for p in pts], **kw)
    ax.axhline(ref_fid, color="k", ls="--", lw=1, label=f"DDPM, {ref_steps} steps (reference)")
    ax.axhspan(ref_fid, 1.05 * ref_fid, color="k", alpha=0.1, label="within 5% of the reference")
    ax.axhline(floor, color="grey", ls=":", lw=1, label="real test split (noise floor)")
    ax.set(xscale="log", yscale="log", xlabel="denoiser evaluations (NFE)",
           ylabel="digits FID (lower is better)", title="Quality vs cost")
    ax2.set(xscale="log", xlabel="denoiser evaluations (NFE)", ylabel="classifier accuracy",
            title="Classified as their label")
    ticks = sorted({p[0] for pts in curves.values() for p in pts if p[0] % 5 == 0})
    for a in (ax, ax2):
        a.set_xticks(ticks, [str(t) for t in ticks])
        a.minorticks_off()
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9)
    run.save_figure(fig, "fid_vs_nfe")


def _plot_samples(run, x_test, y_test, heun, ref, ref_steps) -> None:
    fig, axes = new_figure(1, 3, size="column", layout="constrained")
    n = min(100, heun.shape[0])
    # balanced labels 0..9 repeat, so column c holds class c in every panel
    real = torch.stack([x_test[y_test == c][j] for j in range(10) for c in range(10)])
    H.image_grid(axes[0], real, 10, "real (test split)")
    H.image_grid(axes[1], heun[:n], 10, "Heun, 35 NFE")
    H.image_grid(axes[2], ref[:n], 10, f"DDPM, {ref_steps} steps")
    run.save_figure(fig, "samples")
