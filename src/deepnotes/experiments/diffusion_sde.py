"""Score SDEs in 2-D: forward noising, reverse SDE vs probability-flow ODE, PC sampling, likelihood.

Data: the ``8-gaussians`` toy, which is a Gaussian mixture, so every noised marginal, its score
and the denoiser are exact (:class:`deepnotes.diffusion.gmm.GaussianMixture`); optionally more
toys from :mod:`deepnotes.data` (exact densities, no exact score). One VP ε-prediction MLP per
data set (Song et al. 2021's VP SDE, linear β) is trained on fresh samples; every sampler runs
the same model, and also the exact score, through the σ-space denoiser interface.

Figures: ``forward_noising`` (VP, sub-VP, VE marginals), ``score_fields`` (exact vs learned),
``trajectories`` (reverse SDE vs probability-flow ODE from the same noise), ``quality_vs_nfe``
(sliced Wasserstein of Euler–Maruyama, predictor–corrector, ODE Euler and Heun vs function
evaluations, plus adaptive RK45), ``likelihood`` (exact-score ODE density vs the true one, and
the learned model's), ``toys`` (extra toys' samples and ODE densities), ``digits_likelihood``
(bits/dim of uniformly dequantised 8×8 digits through the ODE of an EDM U-Net, with the
Hutchinson trace: per-image histogram, spread over probes, convergence in the solver tolerance).
Headline: SW₂ of the learned model's RK45 ODE samples to data; peer: the same with the exact score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.diffusion.likelihood import ode_log_likelihood
from deepnotes.diffusion.parameterizations import as_denoiser
from deepnotes.diffusion.processes import VE, SubVP, VPLinear
from deepnotes.diffusion.samplers import (
    sample_euler,
    sample_euler_maruyama,
    sample_heun,
    sample_pc,
    sample_rk45,
)
from deepnotes.diffusion.schedules import process_sigmas
from deepnotes.experiments import _diffusion_digits as H
from deepnotes.experiments._diffusion_2d import (
    T_EPS,
    grid,
    heatmap,
    scatter,
    sw,
    sw_floor,
    toy_batches,
    toy_gmm,
    train_eps_model,
)


@dataclass
class Config(ExperimentConfig):
    steps: int = 5000
    """Adam steps per model (fresh exact samples every step)."""
    batch: int = 512
    """Training batch size."""
    lr: float = 3e-3
    """Peak learning rate (cosine-annealed to zero)."""
    hidden: int = 128
    """Width of the 3-layer MLP."""
    n_eval: int = 6000
    """Samples per sampler for the sliced-Wasserstein distance (and data points it is taken to)."""
    nfes: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    """Function-evaluation budgets of the quality-vs-NFE sweep."""
    snr: float = 0.16
    """Signal-to-noise ratio of the Langevin corrector (Song et al. 2021, Alg. 4)."""
    rk45_tol: float = 1e-4
    """rtol = atol of the adaptive RK45 probability-flow sampler."""
    field_sigmas: tuple[float, ...] = (0.1, 0.5, 2.0)
    """σ-space noise levels of the score-field panels and the score-error metrics."""
    n_paths: int = 10
    """Reverse trajectories drawn per panel."""
    traj_steps: int = 200
    """Steps of the reverse SDE and ODE in the trajectory figure."""
    grid_n: int = 48
    """Likelihood heatmaps are grid_n × grid_n points."""
    ll_points: int = 1000
    """Held-out data points whose ODE log-likelihood gives the test NLL."""
    extra_toys: tuple[str, ...] = ("two-moons", "checkerboard")
    """Further deepnotes.data toys to fit (samples, SW, ODE density); empty to skip."""
    digits: bool = True
    """Also measure digits bits/dim through the ODE (an unconditional EDM U-Net, cached)."""
    digits_epochs: int = 300
    """Training epochs of the digits U-Net (fresh dequantisation noise every epoch)."""
    digits_channels: int = 16
    """U-Net width at 8×8 (twice that at 4×4)."""
    digits_sigma_min: float = 0.002
    """Lower end σ_min of the likelihood ODE, in units of the [-1, 1) pixel range (EDM's)."""
    digits_sigma_max: float = 80.0
    """Upper end σ_max; p_σmax is replaced by N(0, σ_max² I)."""
    digits_tol: float = 1e-5
    """rtol = atol of the RK45 likelihood solve."""
    digits_test: int = 450
    """Test images evaluated (450 = the whole test split); as many train images for the gap."""
    digits_probe_images: int = 6
    """Test images whose bits/dim is re-estimated with digits_probes independent probes."""
    digits_probes: int = 16
    """Hutchinson probes per image in the probe-spread panel."""
    digits_tols: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    """Solver tolerances of the convergence panel (on the first 64 test images)."""


PRESETS = make_presets(
    smoke=Config(steps=100, batch=256, n_eval=300, nfes=(8,), rk45_tol=1e-2, n_paths=6,
                 traj_steps=20, grid_n=6, ll_points=16, extra_toys=(), digits_epochs=1,
                 digits_channels=8, digits_tol=1e-3, digits_test=16, digits_probe_images=2,
                 digits_probes=4, digits_tols=(1e-2,)),
    quick=Config(steps=1000, batch=256, n_eval=1500, nfes=(16, 64), rk45_tol=1e-3,
                 traj_steps=100, grid_n=16, ll_points=64, extra_toys=(), digits_epochs=15,
                 digits_tol=1e-3, digits_test=128, digits_probe_images=4, digits_probes=8,
                 digits_tols=(1e-2, 1e-3)),
    full=Config(),
)
HEADLINE = "gmm/sw_ode"
PEER = "gmm/sw_exact_ode"

BOUNDS = (-3.5, 3.5)


def _eps_denoiser(model, process):
    """σ-space denoiser of a VP ε-model; the network runs in float32 on its own device
    (``run.device``) whatever the sampler's dtype, and the result comes back to ``x``'s device
    and dtype: the 2-D samplers and the exact mixture keep their float64 points on the CPU."""
    learned = as_denoiser(model, process, "eps")
    device = next(model.parameters()).device

    def denoiser(x, sigma):
        return learned(x.to(device, torch.float32), sigma.to(device, torch.float32)).to(x)

    return denoiser


def _recorder(path: list, process, n: int):
    """Sampler callback appending the state in the process's own coordinates x_t = α_t x_σ
    (bounded, unlike x_σ, whose spread is σ_max ≈ 150 at the start)."""

    def record(info):
        if info["sigma_next"] > 0:
            s = torch.full((n,), info["sigma_next"], dtype=torch.float64)
            path.append(process.from_sigma_space(info["x"], s)[0].numpy())
        else:
            path.append(info["x"].numpy())

    return record


def _sample(kind: str, den, nfe: int, n: int, sigmas_of, gen, snr: float):
    """``kind`` sampler with ``nfe`` evaluations from fresh noise; returns (x0, actual nfe)."""
    if kind == "pc":   # one corrector + one predictor evaluation per level
        steps, cost = max(nfe // 2, 1), 2 * max(nfe // 2, 1)
    elif kind == "heun":  # 2 per step but the last (to σ = 0) is an Euler step
        steps = max((nfe + 1) // 2, 1)
        cost = 2 * steps - 1
    else:
        steps, cost = nfe, nfe
    sigmas = sigmas_of(steps)
    x = float(sigmas[0]) * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    if kind == "em":
        out = sample_euler_maruyama(den, x, sigmas, generator=gen)
    elif kind == "pc":
        out = sample_pc(den, x, sigmas, snr=snr, generator=gen)
    elif kind == "euler":
        out = sample_euler(den, x, sigmas)
    else:
        out = sample_heun(den, x, sigmas)
    return out, cost


SAMPLERS = {"em": "reverse SDE (Euler–Maruyama)", "pc": "predictor–corrector",
            "euler": "ODE Euler", "heun": "ODE Heun"}


def _forward_figure(run, x0: torch.Tensor):
    times = (0.0, 0.1, 0.3, 0.6, 1.0)
    procs = {"VP": VPLinear(), "sub-VP": SubVP(), "VE": VE(0.01, 10.0)}
    fig, axes = new_figure(len(procs), len(times), size=(7.0, 5.6), layout="constrained")
    gen = torch.Generator().manual_seed(0)
    for r, (name, proc) in enumerate(procs.items()):
        for c, t in enumerate(times):
            tt = torch.full((x0.shape[0],), t, dtype=torch.float64)
            noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            xt = proc.q_sample(x0, tt, noise).numpy()
            a, s = float(proc.alpha(tt[:1])), float(proc.sigma(tt[:1]))
            half = max(3.5, 3.0 * s + 3.0 * a)
            head = rf"$t={t:g}$" + "\n" if r == 0 else ""
            scatter(axes[r, c], xt, (-half, half), head + rf"$\alpha={a:.2f},\ \sigma={s:.2f}$",
                    color=PALETTE[r])
            axes[r, c].title.set_fontsize(9)
        axes[r, 0].set_ylabel(name)
    fig.suptitle(r"Forward noising $x_t = \alpha_t x_0 + \sigma_t \varepsilon$"
                 " (VE panels zoom out)")
    run.save_figure(fig, "forward_noising")


def _score_figure(run, dens, x_data, sigmas):
    ticks, pts = grid(BOUNDS, 17)
    fig, axes = new_figure(2, len(sigmas), size=(7.0, 5.4), squeeze=False,
                           layout="constrained")
    for r, name in enumerate(("exact", "learned")):
        for c, s in enumerate(sigmas):
            sig = torch.full((pts.shape[0],), s, dtype=torch.float64)
            with torch.no_grad():
                # σ² ∇log p_σ(x) = D(x; σ) − x (Eq. 7): the arrow ends at the denoised point
                field = (dens[name](pts, sig) - pts).numpy()
            ax = axes[r, c]
            scatter(ax, x_data, BOUNDS, rf"{name} score, $\sigma = {s:g}$", color=PALETTE[7])
            ax.quiver(pts[:, 0], pts[:, 1], field[:, 0], field[:, 1], color=PALETTE[r],
                      angles="xy", scale_units="xy", scale=1.0, width=0.004, alpha=0.8)
    fig.suptitle(r"$\sigma^2 \nabla_x \log p_\sigma(x) = D(x; \sigma) - x$:"
                 "\nexact mixture (top), trained VP model (bottom)")
    run.save_figure(fig, "score_fields")


def _trajectory_figure(run, dens, process, data, n_paths: int, n_steps: int):
    sigmas = process_sigmas(process, n_steps, T_EPS, 1.0)
    fig, axes = new_figure(2, 2, size=(7.0, 7.0), layout="constrained")
    for r, name in enumerate(("exact", "learned")):
        start = float(sigmas[0]) * torch.randn(
            n_paths, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for c, (label, sampler) in enumerate((("reverse SDE", sample_euler_maruyama),
                                              ("probability-flow ODE", sample_euler))):
            path = [float(process.alpha(torch.tensor(1.0))) * start.numpy()]  # x_1 = α_1 x_σ
            kw = {"generator": torch.Generator().manual_seed(2)} if c == 0 else {}
            sampler(dens[name], start.clone(), sigmas, callback=_recorder(path, process, n_paths),
                    **kw)
            traj = np.stack(path)                                   # (steps, n_paths, 2)
            ax = axes[r, c]
            scatter(ax, data, BOUNDS, "", color=PALETTE[7], n_max=1500)
            for j in range(n_paths):
                ax.plot(traj[:, j, 0], traj[:, j, 1], lw=0.7, alpha=0.7,
                        color=PALETTE[j % 6])
            ax.scatter(traj[0, :, 0], traj[0, :, 1], s=8, color=PALETTE[7], label="start")
            ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=14, marker="x", color=PALETTE[3],
                       label="end")
            ax.set(title=f"{name} score: {label}")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=2,
               fontsize=9, markerscale=1.5)
    fig.suptitle(f"Reverse-time paths from the same noise (VP, {n_steps} steps, shown as $x_t$)")
    run.save_figure(fig, "trajectories")


def _log_likelihood(den, x, sigma_min, sigma_max, prior, tol):
    return ode_log_likelihood(den, x, sigma_min, sigma_max, prior_log_prob=prior,
                              rtol=tol, atol=tol, return_info=True)


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        toy, draw = toy_batches("8-gaussians", run.rng)
        gmm = toy_gmm(toy)
        process = VPLinear()
        sig_min = float(process.sigma_of_t(T_EPS))
        sig_max = float(process.sigma_of_t(1.0))

        def vp_sigmas(n):
            return process_sigmas(process, n, T_EPS, 1.0)

        data = draw(config.n_eval).double()
        _forward_figure(run, data[:2000])

        model, losses = train_eps_model(draw, process, config.steps, config.batch, config.lr,
                                        config.hidden, run, "VP ε-model on 8-gaussians")
        run.log_metrics({"gmm/final_loss": float(np.mean(losses[-100:]))})
        dens = {"exact": gmm.as_denoiser(), "learned": _eps_denoiser(model, process)}

        # score error of the model relative to the exact score's own size, per noise level
        gen = torch.Generator().manual_seed(config.seed)
        for s in config.field_sigmas:
            x = data + s * torch.randn(data.shape, generator=gen, dtype=torch.float64)
            sig = torch.full((x.shape[0],), s, dtype=torch.float64)
            with torch.no_grad():
                exact, learned = dens["exact"](x, sig), dens["learned"](x, sig)
            rel = float(((learned - exact) ** 2).sum(1).mean() / ((x - exact) ** 2).sum(1).mean())
            run.log_metrics({f"gmm/score_rel_err_sigma_{s:g}": rel})
        _score_figure(run, dens, data[:2000].numpy(), config.field_sigmas)
        _trajectory_figure(run, dens, process, data.numpy(), config.n_paths,
                          config.traj_steps)

        run.log("figures: forward, score fields, trajectories done")
        # quality vs NFE: the same model (and the exact score) through every sampler
        floor = sw_floor(draw, config.n_eval)
        run.log_metrics({"gmm/sw_data_floor": floor})
        curves = {}
        for who in ("exact", "learned"):
            prefix = "gmm/exact_sw" if who == "exact" else "gmm/sw"
            for kind in SAMPLERS:
                pts = []
                for nfe in run.track(config.nfes, f"{who} {kind}"):
                    gen = torch.Generator().manual_seed(config.seed + nfe)
                    out, cost = _sample(kind, dens[who], nfe, config.n_eval, vp_sigmas, gen,
                                        config.snr)
                    pts.append((cost, sw(out, data)))
                    run.log_metrics({f"{prefix}_{kind}_nfe{nfe}": pts[-1][1]})
                curves[who, kind] = pts
            x = sig_max * torch.randn(config.n_eval, 2, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(config.seed))
            out, info = sample_rk45(dens[who], x, vp_sigmas(2), rtol=config.rk45_tol,
                                    atol=config.rk45_tol, return_info=True)
            key = "gmm/sw_exact_ode" if who == "exact" else "gmm/sw_ode"
            run.log_metrics({key: sw(out, data), key.replace("sw_", "nfe_"): info["nfe"]})
            curves[who, "rk45"] = [(info["nfe"], run.metrics[key])]

        fig, ax = new_figure(size="column_tall", layout="constrained")
        for i, kind in enumerate(SAMPLERS):
            for who, ls in (("learned", "-"), ("exact", "--")):
                c, v = zip(*curves[who, kind], strict=True)
                ax.plot(c, v, ls, marker="o", ms=3, color=PALETTE[i],
                        label=f"{SAMPLERS[kind]}" if who == "learned" else None)
        for who, m in (("learned", "*"), ("exact", "P")):
            (c, v), = curves[who, "rk45"]
            ax.plot([c], [v], m, ms=10, color=PALETTE[4], label=f"RK45 ODE ({who})")
        ax.axhline(floor, color=PALETTE[7], lw=1, ls=":", label="data vs data (floor)")
        ax.set(xscale="log", yscale="log", xlabel="function evaluations (NFE)",
               ylabel=r"sliced $W_2$ to data", title="VP model (solid) and exact score (dashed)")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=9)
        run.save_figure(fig, "quality_vs_nfe")

        run.log(f"RK45 ODE: SW {run.metrics['gmm/sw_ode']:.4f} with {info['nfe']} NFE")
        # likelihood through the probability-flow ODE on a grid and on held-out points
        ticks, pts = grid(BOUNDS, config.grid_n)
        held = draw(config.ll_points).double()
        held = held + sig_min * torch.randn(held.shape, dtype=torch.float64,
                                            generator=torch.Generator().manual_seed(3))
        both = torch.cat([pts, held])
        true = gmm.log_prob(both, sig_min)
        ll_exact, _ = _log_likelihood(dens["exact"], both, sig_min, sig_max,
                                      lambda z: gmm.log_prob(z, sig_max), 1e-6)
        ll_learned, _ = _log_likelihood(dens["learned"], both, sig_min, sig_max, None, 1e-5)
        m = pts.shape[0]
        mass = true[:m] > true[:m].max() - 12  # where the heatmap shows anything
        run.log_metrics({
            "gmm/ll_exact_ode_max_err_nats": float((ll_exact - true)[:m][mass].abs().max()),
            "gmm/ll_exact_ode_heldout_max_err_nats": float((ll_exact - true)[m:].abs().max()),
            "gmm/nll_true_nats": -float(true[m:].mean()),
            "gmm/nll_exact_ode_nats": -float(ll_exact[m:].mean()),
            "gmm/nll_learned_nats": -float(ll_learned[m:].mean()),
        })
        n = config.grid_n
        fig, axes = new_figure(2, 2, size=(7.0, 6.4), layout="constrained")
        axes = axes.ravel()
        vmax = float(true.max())
        for ax, vals, title in zip(axes[:3], (true, ll_exact, ll_learned), (
                r"true $\log p$ (mixture)", r"exact-score ODE $\log p$",
                r"learned-model ODE $\log p$"), strict=True):
            im = heatmap(ax, vals[:m].reshape(n, n).numpy(), BOUNDS, title, vmin=vmax - 12,
                         vmax=vmax)
        fig.colorbar(im, ax=axes[2], fraction=0.046)
        err = (ll_exact - true)[:m].abs().clamp_min(1e-12).log10().reshape(n, n).numpy()
        im = heatmap(axes[3], err, BOUNDS, r"$\log_{10}|$exact-score ODE $-$ true$|$",
                     cmap="magma")
        fig.colorbar(im, ax=axes[3], fraction=0.046)
        run.save_figure(fig, "likelihood")
        run.log(f"likelihood: test NLL {run.metrics['gmm/nll_learned_nats']:.3f} nats (true "
                f"{run.metrics['gmm/nll_true_nats']:.3f})")

        if config.extra_toys:
            _extra_toys(run, config, process, vp_sigmas)
        if config.digits:
            with H.one_thread():
                _digits_likelihood(run, config)
    return run.result


def _digits_likelihood(run, config: Config):
    """Bits/dim of dequantised test digits through the probability-flow ODE (Hutchinson)."""
    spec = H.DequantSpec(channels=config.digits_channels, epochs=config.digits_epochs,
                         seed=config.seed)
    dev = run.device
    model, meta = H.train_dequantized_denoiser(spec, config.out, run.log, run.track, dev)
    # fixed dequantisation noise and probes: every run with this seed scores the same points
    # (the noise from numpy on the CPU; the images, the probes and the ODE on run.device)
    rng = np.random.default_rng([config.seed, 17])
    test = H.dequantized_digits("test", rng)[:config.digits_test].to(dev)
    train = H.dequantized_digits("train", rng)[:config.digits_test].to(dev)
    lims = (config.digits_sigma_min, config.digits_sigma_max)

    def bpd(y, tol, seed):
        b, nfe = H.ode_bits_per_dim(model, y, *lims, tol, torch.Generator(dev).manual_seed(seed))
        return b.cpu(), nfe

    test_bpd, nfe = bpd(test, config.digits_tol, config.seed)
    train_bpd, _ = bpd(train, config.digits_tol, config.seed + 1)
    n = test_bpd.numel()
    # one probe per image: the spread over images already contains the probe noise
    run.log_metrics({
        "likelihood/digits_ode_bits_per_dim": float(test_bpd.mean()),
        "likelihood/digits_ode_bits_per_dim_sem": float(test_bpd.std() / math.sqrt(n)),
        "likelihood/digits_ode_train_bits_per_dim": float(train_bpd.mean()),
        "likelihood/digits_ode_nfe": nfe,
        "likelihood/digits_uniform_bits_per_dim": math.log2(H.N_LEVELS),
        "likelihood/digits_train_loss": float(np.mean(meta["losses"][-50:])),
    })
    k, m = min(config.digits_probe_images, n), config.digits_probes
    rep = test[:k].repeat_interleave(m, 0)
    per_probe = bpd(rep, config.digits_tol, config.seed + 2)[0].reshape(k, m)
    probe_sd = float(per_probe.std(1).mean())
    run.log_metrics({"likelihood/digits_probe_sd_bits_per_dim": probe_sd,
                     "likelihood/digits_image_sd_bits_per_dim": float(test_bpd.std())})
    sub = test[:64]
    sweep = [(tol, *bpd(sub, tol, config.seed)) for tol in config.digits_tols]
    for tol, b, cost in sweep:
        run.log_metrics({f"likelihood/digits_ode_bits_per_dim_tol{tol:g}": float(b.mean()),
                         f"likelihood/digits_ode_nfe_tol{tol:g}": cost})
    run.log(f"digits: {float(test_bpd.mean()):.4f} ± {float(test_bpd.std()) / math.sqrt(n):.4f} "
            f"bits/dim on {n} test images ({nfe} NFE); train {float(train_bpd.mean()):.4f}")

    fig, grid_axes = new_figure(2, 2, size=(7.0, 6.8), layout="constrained")
    spec = grid_axes[1, 0].get_gridspec()
    for a in grid_axes[1]:
        a.remove()
    axes = [grid_axes[0, 0], grid_axes[0, 1], fig.add_subplot(spec[1, :])]
    ax = axes[0]
    bins = np.linspace(float(min(test_bpd.min(), train_bpd.min())),
                       float(max(test_bpd.max(), train_bpd.max())), 30)
    for i, (vals, name) in enumerate(((test_bpd, "test"), (train_bpd, "train"))):
        ax.hist(vals.numpy(), bins=bins, alpha=0.55, color=PALETTE[i],
                label=f"{name}: mean {float(vals.mean()):.3f}")
        ax.axvline(float(vals.mean()), color=PALETTE[i], lw=1.5)
    ax.set(xlabel="bits/dim (17-level convention)", ylabel="images",
           title="ODE bits/dim per image,\n" + rf"$\sigma$ from {lims[0]:g} to {lims[1]:g}")
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    ax = axes[1]
    for i in range(k):
        ax.scatter(np.full(m, i), per_probe[i].numpy(), s=10, color=PALETTE[0], alpha=0.6)
        ax.errorbar(i + 0.25, float(per_probe[i].mean()), yerr=float(per_probe[i].std()),
                    fmt="o", color=PALETTE[3], ms=4, capsize=3)
    ax.set(xlabel=f"test image ({m} probes each;\n" + r"mean $\pm$ sd)", ylabel="bits/dim",
           xticks=range(k), title=f"Hutchinson probe sd {probe_sd:.3f}\n(sd over images "
                                  f"{float(test_bpd.std()):.3f})")
    ax = axes[2]
    costs = [c for _, _, c in sweep]
    means = [float(b.mean()) for _, b, _ in sweep]
    ax.plot(costs, means, "o-", color=PALETTE[1])
    for (tol, _, _), c, v in zip(sweep, costs, means, strict=True):
        ax.annotate(f"tol {tol:g}", (c, v), textcoords="offset points", xytext=(4, 4),
                    fontsize=9)
    ax.set(xlabel="RK45 function evaluations (NFE)",
           ylabel=f"mean bits/dim ({sub.shape[0]} test images)",
           title="Convergence in the solver tolerance")
    run.save_figure(fig, "digits_likelihood")


def _extra_toys(run, config: Config, process, vp_sigmas):
    names = config.extra_toys
    fig, axes = new_figure(len(names), 4, size=(7.0, 2.3 * len(names)), squeeze=False,
                           layout="constrained")
    sig_min = float(process.sigma_of_t(T_EPS))
    sig_max = float(process.sigma_of_t(1.0))
    for r, name in enumerate(names):
        toy, draw = toy_batches(name, run.rng)
        group = name.replace("-", "_")
        model, _ = train_eps_model(draw, process, config.steps, config.batch, config.lr,
                                   config.hidden, run, f"VP ε-model on {name}")
        den = _eps_denoiser(model, process)
        data = draw(config.n_eval).double()
        x = float(sig_max) * torch.randn(config.n_eval, 2, dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(config.seed))
        ode, info = sample_rk45(den, x,
                                vp_sigmas(2), rtol=config.rk45_tol, atol=config.rk45_tol,
                                return_info=True)
        held = draw(config.ll_points).double()
        bounds = toy.bounds
        _, pts = grid(bounds, config.grid_n)
        ll, _ = _log_likelihood(den, torch.cat([pts, held]), sig_min, sig_max, None, 1e-5)
        m = pts.shape[0]
        true_grid = toy.log_prob(pts.numpy())
        run.log_metrics({
            f"{group}/sw_ode": sw(ode, data),
            f"{group}/sw_data_floor": sw_floor(draw, config.n_eval),
            f"{group}/nll_learned_nats": -float(ll[m:].mean()),
            f"{group}/nll_true_nats": -float(np.mean(toy.log_prob(held.numpy()))),
        })
        n = config.grid_n
        vmax = float(np.max(true_grid))
        scatter(axes[r, 0], data.numpy(), bounds, f"{name}: data")
        scatter(axes[r, 1], ode.numpy(), bounds, f"RK45 ODE samples\n({info['nfe']} NFE)",
                color=PALETTE[1])
        heatmap(axes[r, 2], np.maximum(true_grid, vmax - 12).reshape(n, n), bounds,
                r"true $\log p$", vmin=vmax - 12, vmax=vmax)
        heatmap(axes[r, 3], ll[:m].reshape(n, n).numpy(), bounds, "learned ODE\n" + r"$\log p$",
                vmin=vmax - 12, vmax=vmax)
        for ax in axes[r]:
            ax.title.set_fontsize(10)
    run.save_figure(fig, "toys")
