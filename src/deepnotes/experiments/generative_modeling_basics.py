"""Learning p_theta close to p_data: maximum likelihood as KL minimisation, forward vs reverse KL,
and the Bayes-net (chain-rule) view of a binary image model.

1. **MLE = min KL, exactly.** ``p_data`` is a distribution we can enumerate: the empirical
   distribution of a small binary patch (``patch_rows`` × ``patch_cols`` pixels, 2^D outcomes) of
   all 1797 binarised digits. Training sets of ``n`` images are drawn from it and three models are
   fitted by (penalised) maximum likelihood: the full table, independent pixels and an FVSBN. For
   each, the exact expected test NLL ``H(p_data, p_theta)`` minus the data entropy is compared
   with ``KL(p_data || p_theta)`` computed directly (Eqs. 1-3), and the KL is traced against ``n``
   with each model's floor at ``n = inf`` (for independent pixels the total correlation, Eq. 10).
2. **Forward vs reverse KL.** A Gaussian is fitted to a bimodal mixture by minimising each KL
   direction on a grid (Eqs. 5-6): moment matching covers both modes, the reverse KL picks one.
3. **Bayes-net view.** Parameter counts of the full table, the chain rule with full conditional
   tables, FVSBN, NADE and independent pixels for D binary pixels (Eq. 9), and the test bits/dim
   of the independent-pixel model on the binarised digits (the baseline of the post
   ``autoregressive-models``).

Figures: ``mle_kl``, ``kl_directions``, ``parameter_counts``, ``independent_pixels``.
Headline: test bits/dim of independent pixels on binarised digits.
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
from deepnotes.generative.autoregressive import FVSBN
from deepnotes.generative.basics import (
    bernoulli_log_prob,
    cross_entropy,
    empirical_distribution,
    entropy,
    enumerate_binary,
    fit_gaussian_forward_kl,
    fit_gaussian_kl,
    fit_independent_bernoulli,
    gaussian_log_pdf,
    kl_divergence,
    kl_on_grid,
    mixture_log_pdf,
    parameter_counts,
    total_correlation,
)

MODEL_LABELS = {"table": "full table", "independent": "independent pixels", "fvsbn": "FVSBN"}


@dataclass
class Config(ExperimentConfig):
    patch_rows: tuple[int, ...] = (2, 4)
    """Rows [start, stop) of the digit patch whose pixel distribution is p_data."""
    patch_cols: tuple[int, ...] = (2, 5)
    """Columns [start, stop) of that patch (D = rows x cols, at most 12)."""
    train_sizes: tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 20000)
    """Training-set sizes n drawn from p_data."""
    repeats: int = 20
    """Independent training sets per size (the KL curves show their mean)."""
    alpha: float = 0.5
    """Add-alpha smoothing of the table and independent fits (keeps the KL finite)."""
    fvsbn_l2: float = 1.0
    """Gaussian-prior strength on FVSBN weights, divided by n (MAP; vanishes as n grows)."""
    test_size: int = 2000
    """Monte Carlo test set drawn from p_data for the sampled NLL - H estimate."""
    mixture_weights: tuple[float, ...] = (0.4, 0.6)
    """Weights of the bimodal 1-D target of the forward/reverse KL fits."""
    mixture_means: tuple[float, ...] = (-2.5, 2.0)
    """Component means of the target."""
    mixture_stds: tuple[float, ...] = (0.6, 1.0)
    """Component standard deviations of the target."""
    grid_points: int = 4801
    """Points of the uniform grid on [-12, 12] the KLs are integrated on."""
    landscape: int = 80
    """Points per axis of the KL landscapes over (mean, log std)."""
    nade_hidden: int = 200
    """Hidden units of the NADE whose parameter count is shown."""
    digits_alpha: float = 0.5
    """Add-alpha smoothing of the independent-pixel model on digits."""


PRESETS = make_presets(
    smoke=Config(train_sizes=(20, 200), repeats=1, test_size=200, grid_points=1201, landscape=12),
    quick=Config(train_sizes=(10, 50, 200, 1000, 5000), repeats=4, landscape=40),
    full=Config(),
)
HEADLINE = "digits/independent_test_bits_per_dim"
PEER = None


def fit_fvsbn(dim: int, weights: np.ndarray, l2: float, device=None) -> np.ndarray:
    """MAP FVSBN on a weighted table of all 2^D configurations; returns its table (2^D,).

    The loss ``-sum_x w(x) log p_theta(x) + l2 |W|^2`` is convex (one logistic regression per
    pixel), so L-BFGS reaches the unique optimum; ``w = p_hat`` makes it the MLE on the sample.
    The fit runs in float64 on ``device`` (default CPU); the table comes back as numpy.
    """
    configs = torch.from_numpy(enumerate_binary(dim)).to(device)
    w = torch.from_numpy(weights).to(device)
    model = FVSBN(dim).double().to(device)
    with torch.no_grad():
        model.weight.zero_()
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(w * model.log_prob(configs)).sum() + l2 * (model.weight * model.mask).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        q = model.log_prob(configs).exp().cpu().numpy()
    return q / q.sum()  # renormalise float64 rounding (the sum is 1 to ~1e-15)


def fit_models(p_hat: np.ndarray, n: int, dim: int, cfg: Config,
               device=None) -> dict[str, np.ndarray]:
    """The three fitted tables from the empirical distribution ``p_hat`` of n samples (the
    FVSBN fitted on ``device``; the closed-form tables in numpy)."""
    table = (p_hat * n + cfg.alpha) / (n + cfg.alpha * p_hat.size)
    configs = enumerate_binary(dim)
    probs = (p_hat @ configs * n + cfg.alpha) / (n + 2 * cfg.alpha)
    independent = np.exp(bernoulli_log_prob(configs, probs))
    return {"table": table, "independent": independent / independent.sum(),
            "fvsbn": fit_fvsbn(dim, p_hat, cfg.fvsbn_l2 / n, device)}


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        cfg = config
        torch.set_num_threads(1)
        _mle_is_min_kl(run, cfg)
        _kl_directions(run, cfg)
        _bayes_net_view(run, cfg)
    return run.result


def _mle_is_min_kl(run, cfg: Config) -> None:
    (r0, r1), (c0, c1) = cfg.patch_rows, cfg.patch_cols
    images, _ = load_digits("all", "binarized")
    patch = images[:, r0:r1, c0:c1].reshape(len(images), -1)
    dim = patch.shape[1]
    if not 1 <= dim <= 12:
        raise ValueError(f"the patch must hold 1..12 pixels, got {dim}")
    p_data = empirical_distribution(patch)
    h = entropy(p_data)
    tc = total_correlation(p_data, dim)
    floor = {"table": 0.0, "independent": tc,
             "fvsbn": kl_divergence(p_data, fit_fvsbn(dim, p_data, 0.0, run.device))}
    run.log(f"p_data: {dim}-pixel patch, {int((p_data > 0).sum())}/{2**dim} outcomes seen, "
            f"H = {h:.4f} nats, total correlation = {tc:.4f} nats")

    kl = {m: np.zeros((len(cfg.train_sizes), cfg.repeats)) for m in MODEL_LABELS}
    gap, mc = 0.0, {}
    # one Monte Carlo test set, shared by every model: the sampled counterpart of Eq. 1
    test = run.rng.choice(p_data.size, size=cfg.test_size, p=p_data)
    for i, n in enumerate(run.track(cfg.train_sizes, "MLE fits")):
        for r in range(cfg.repeats):
            sample = run.rng.choice(p_data.size, size=n, p=p_data)
            p_hat = np.bincount(sample, minlength=p_data.size) / n
            for name, q in fit_models(p_hat, n, dim, cfg, run.device).items():
                kl[name][i, r] = kl_divergence(p_data, q)
                # Eq. 3: the expected test NLL minus the entropy is the KL (computed separately)
                gap = max(gap, abs(cross_entropy(p_data, q) - h - kl[name][i, r]))
                if i == len(cfg.train_sizes) - 1 and r == 0:
                    nll = -np.log(q[test])
                    mc[name] = (float(nll.mean() - h), float(nll.std(ddof=1) / math.sqrt(nll.size)))
        run.log_metrics({f"kl/{m}_n{n}_nats": float(kl[m][i].mean()) for m in MODEL_LABELS})

    n_last = cfg.train_sizes[-1]
    metrics = {"exact/patch_pixels": dim, "exact/entropy_nats": h,
               "exact/total_correlation_nats": tc, "exact/fvsbn_floor_kl_nats": floor["fvsbn"],
               "exact/max_identity_gap_nats": gap}
    for name in MODEL_LABELS:
        metrics[f"mc/{name}_n{n_last}_test_nll_minus_entropy_nats"] = mc[name][0]
        metrics[f"mc/{name}_n{n_last}_standard_error_nats"] = mc[name][1]
        metrics[f"mc/{name}_n{n_last}_exact_kl_nats"] = float(kl[name][-1, 0])
    run.log_metrics(metrics)
    run.log(f"max |H(p,q) - H(p) - KL(p||q)| over {len(cfg.train_sizes) * cfg.repeats * 3} fits: "
            f"{gap:.2e} nats; FVSBN floor KL = {floor['fvsbn']:.4f} nats")

    fig, ax = new_figure()
    ns = np.asarray(cfg.train_sizes)
    for j, name in enumerate(MODEL_LABELS):
        mean = kl[name].mean(axis=1)
        ax.plot(ns, mean, marker="o", color=PALETTE[j], label=MODEL_LABELS[name])
        if floor[name] > 0:
            ax.axhline(floor[name], color=PALETTE[j], ls="--", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="training images $n$",
           ylabel=r"$\mathrm{KL}(p_\mathrm{data}\,\|\,p_\theta)$ (nats)",
           title=f"MLE on a {dim}-pixel patch " + r"(dashed: $n = \infty$)")
    ax.legend(title="model")
    run.save_figure(fig, "mle_kl")


def _kl_directions(run, cfg: Config) -> None:
    grid = np.linspace(-12.0, 12.0, cfg.grid_points)
    log_p = mixture_log_pdf(grid, cfg.mixture_weights, cfg.mixture_means, cfg.mixture_stds)
    fm, fs = fit_gaussian_forward_kl(grid, log_p)
    inits = sorted({*cfg.mixture_means, float(np.mean(cfg.mixture_means))})
    reverse = fit_gaussian_kl(grid, log_p, "reverse", inits)
    rm, rs, rkl = reverse[0]

    def both(m, s):
        log_q = gaussian_log_pdf(grid, m, s)
        return kl_on_grid(grid, log_p, log_q), kl_on_grid(grid, log_q, log_p)

    f_fwd, f_rev = both(fm, fs)
    r_fwd, r_rev = both(rm, rs)
    minima = {round(m, 3) for m, _, _ in reverse}
    run.log_metrics({"kl/forward_fit_mean": fm, "kl/forward_fit_std": fs,
                     "kl/forward_fit_forward_kl_nats": f_fwd,
                     "kl/forward_fit_reverse_kl_nats": f_rev,
                     "kl/reverse_fit_mean": rm, "kl/reverse_fit_std": rs,
                     "kl/reverse_fit_reverse_kl_nats": r_rev,
                     "kl/reverse_fit_forward_kl_nats": r_fwd,
                     "kl/reverse_local_minima": len(minima),
                     "kl/reverse_worst_minimum_mean": reverse[-1][0],
                     "kl/reverse_worst_minimum_reverse_kl_nats": reverse[-1][2]})
    run.log(f"forward KL fit N({fm:.3f}, {fs:.3f}^2): KL(p||q) = {f_fwd:.4f}, KL(q||p) = "
            f"{f_rev:.4f}; reverse KL fit N({rm:.3f}, {rs:.3f}^2): KL(q||p) = {rkl:.4f}, "
            f"KL(p||q) = {r_fwd:.4f}; reverse-KL local minima at means {sorted(minima)}")

    # top: the fits, across the column; bottom: the two KL landscapes side by side
    fig, axes = new_figure(2, 2, size=(7.0, 6.4), layout="constrained")
    gs = axes[0, 0].get_gridspec()
    for a in axes[0]:
        a.remove()
    ax = fig.add_subplot(gs[0, :])
    ax.fill_between(grid, np.exp(log_p), color=PALETTE[7], alpha=0.15, label="$p$ (target)")
    ax.plot(grid, np.exp(gaussian_log_pdf(grid, fm, fs)), color=PALETTE[0],
            label=r"minimiser of $\mathrm{KL}(p\,\|\,q)$: covers both modes")
    for k, (m, s, _) in enumerate(reverse):
        ax.plot(grid, np.exp(gaussian_log_pdf(grid, m, s)), color=PALETTE[3],
                ls="-" if k == 0 else ":",
                label=r"minimiser of $\mathrm{KL}(q\,\|\,p)$: seeks one mode" if k == 0 else
                "reverse KL, other local minimum" if k == 1 else None)
    ax.set(xlim=(-7, 7), xlabel="$x$", ylabel="density",
           title="Gaussian fits $q$ to a bimodal $p$")
    ax.legend(fontsize=9)

    means = np.linspace(-5.0, 5.0, cfg.landscape)
    log_stds = np.linspace(math.log(0.2), math.log(6.0), cfg.landscape)
    surf = np.array([[both(m, math.exp(ls)) for m in means] for ls in log_stds])  # (S, M, 2)
    for ax, k, title, best in ((axes[1, 0], 0, r"forward $\mathrm{KL}(p\,\|\,q)$", (fm, fs)),
                               (axes[1, 1], 1, r"reverse $\mathrm{KL}(q\,\|\,p)$", (rm, rs))):
        cs = ax.contourf(means, np.exp(log_stds), np.log10(surf[..., k]), levels=20,
                         cmap="viridis")
        fig.colorbar(cs, ax=ax, label=r"$\log_{10} \mathrm{KL}$ (KL in nats)")
        ax.plot(*best, marker="*", color="white", ms=12, mec="black")
        ax.set(yscale="log", xlabel="mean of $q$", ylabel="std of $q$ (log scale)", title=title)
        ax.set_yticks([0.25, 0.5, 1.0, 2.0, 4.0], labels=["0.25", "0.5", "1", "2", "4"])
        ax.minorticks_off()
    run.save_figure(fig, "kl_directions")


def _bayes_net_view(run, cfg: Config) -> None:
    dims = np.arange(1, 65)
    counts = [parameter_counts(int(d), nade_hidden=cfg.nade_hidden) for d in dims]
    c64 = counts[-1]
    run.log_metrics({"params/d64_full_table_log10": math.log10(c64["full_table"]),
                     "params/d64_fvsbn": c64["fvsbn"], "params/d64_nade": c64["nade"],
                     "params/d64_independent": c64["independent"]})
    fig, ax = new_figure()
    series = (("full_table", "full joint table (chain rule, full tables), $2^D - 1$"),
              ("nade", f"NADE, $H = {cfg.nade_hidden}$ hidden units"),
              ("fvsbn", "FVSBN, $D(D+1)/2$"), ("independent", "independent pixels, $D$"))
    for j, (key, label) in enumerate(series):
        ax.plot(dims, [float(c[key]) for c in counts], color=PALETTE[j], label=label)
    ax.set(yscale="log", xlabel="binary pixels $D$", ylabel="free parameters",
           title="Parameter counts of models of $D$ binary pixels")
    ax.legend(fontsize=9)
    run.save_figure(fig, "parameter_counts")

    x_train, _ = load_digits("train", "binarized", flatten=True)
    x_test, _ = load_digits("test", "binarized", flatten=True)
    probs = fit_independent_bernoulli(x_train, alpha=cfg.digits_alpha)
    dim = x_train.shape[1]
    to_bpd = 1.0 / (dim * math.log(2.0))
    test_bpd = float(-bernoulli_log_prob(x_test, probs).mean()) * to_bpd
    train_bpd = float(-bernoulli_log_prob(x_train, probs).mean()) * to_bpd
    mle = fit_independent_bernoulli(x_train)
    with np.errstate(divide="ignore"):
        mle_test = float(-bernoulli_log_prob(x_test, mle).mean()) * to_bpd
    run.log_metrics({"digits/independent_test_bits_per_dim": test_bpd,
                     "digits/independent_train_bits_per_dim": train_bpd,
                     "digits/unsmoothed_mle_test_bits_per_dim": mle_test,
                     "digits/pixels_never_on_in_train": int((mle == 0).sum())})
    run.log(f"independent pixels on binarised digits: test {test_bpd:.4f} bits/dim, train "
            f"{train_bpd:.4f} (alpha = {cfg.digits_alpha}); unsmoothed MLE test {mle_test:.4f}")

    fig, axes = new_figure(1, 3, size=(7.0, 2.8), layout="constrained")
    axes[0].imshow(probs.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
    axes[0].set_title("fitted $P(x_i = 1)$")
    axes[0].axis("off")
    samples = (run.rng.random((64, dim)) < probs).astype(np.float64)
    digits_mosaic(axes[1], samples, "samples of the model")
    digits_mosaic(axes[2], x_test[:64], "test digits")
    run.save_figure(fig, "independent_pixels")
