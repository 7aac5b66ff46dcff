"""Stochastic approximation: incremental mean, Robbins–Monro step-size schedules, SGD/MBGD/BGD.

Figures: ``incremental_mean``, ``rm_schedules``, ``mean_estimation`` (2-D iterates and distance to
the mean), ``linreg`` (diabetes and synthetic rows: relative error to ``lstsq`` against
iterations and against samples touched)). Headline: our per-sample SGD on standardised diabetes
versus scikit-learn's ``SGDRegressor`` with the same step sizes and number of passes.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.rl import approx as A


@dataclass
class Config(ExperimentConfig):
    mean_samples: int = 10_000
    """Samples per sequence in the incremental-mean figure."""
    replicates: int = 200
    """Independent runs behind every mean and band (incremental mean, Robbins–Monro, SGD)."""
    rm_steps: int = 50_000
    """Robbins–Monro iterations on g(w) = tanh(w - 1) + noise."""
    rm_noise: float = 1.0
    """Standard deviation of the observation noise eta."""
    rm_start: float = 4.0
    """Initial guess w_0 (the root is 1)."""
    mean_points: int = 400
    """Points of the 2-D mean-estimation data set (uniform on [-10, 10]^2)."""
    mean_steps: int = 1000
    """Iterations of SGD / MBGD / BGD on mean estimation."""
    linreg_epochs: int = 300
    """Passes over the data for linear regression (ours and scikit-learn's)."""
    linreg_replicates: int = 20
    """Replicates for the linear-regression bands."""
    eta0: float = 0.1
    """Step scale a of alpha_k = a / k^p (per sample step; scikit-learn's eta0)."""
    power_t: float = 0.6
    """Exponent p of alpha_k = a / k^p (scikit-learn's power_t); Robbins–Monro for p in (0.5, 1]."""
    batch_size: int = 32
    """Mini-batch size B for MBGD."""
    synth_n: int = 4000
    """Rows of the synthetic regression problem."""
    synth_d: int = 20
    """Features of the synthetic regression problem."""


PRESETS = make_presets(
    smoke=Config(mean_samples=200, replicates=20, rm_steps=300, mean_points=100, mean_steps=50,
                 linreg_epochs=2, linreg_replicates=3, synth_n=300, synth_d=5),
    quick=Config(mean_samples=2000, replicates=100, rm_steps=5000, mean_steps=300,
                 linreg_epochs=30, linreg_replicates=8, synth_n=2000),
    full=Config(),
)
#: This topic has no torch work: --device does not apply (said once in the run's log).
CPU_ONLY = "it is numpy and scikit-learn"
HEADLINE = "linreg/sgd_rel_error"
PEER = "linreg/sklearn_sgd_rel_error"

RM_SCHEDULES = {
    "harmonic 1/k": A.harmonic(1.0),
    "power 1/k^0.6": A.power(1.0, 0.6),
    "constant 0.1": A.constant(0.1),
    "power 1/k^2": A.power(1.0, 2.0),
    "geometric 0.5*0.9^k": A.geometric(0.5, 0.9),
}


#: Legend text of the step-size schedules (the dict keys name them in the metrics and log).
_RM_WORDS = {"harmonic 1/k": r"$\alpha_k = 1/k$", "power 1/k^0.6": r"$\alpha_k = 1/k^{0.6}$",
             "constant 0.1": r"$\alpha_k = 0.1$", "power 1/k^2": r"$\alpha_k = 1/k^2$",
             "geometric 0.5*0.9^k": r"$\alpha_k = 0.5 \cdot 0.9^k$"}


def _gd_words(label: str) -> str:
    """Legend text of a gradient-descent variant named ``label`` in the code and log."""
    if label.startswith("MBGD (B=") and label.endswith(")"):
        return f"mini-batch GD, batch of {label[len('MBGD (B='):-1]}"
    return {"SGD (B=1)": "SGD, batch of 1", "BGD": "full-batch GD",
            "BGD (step 1/L)": "full-batch GD, step $1/L$"}.get(label, label)


def _log_grid(steps: int, points: int = 60) -> np.ndarray:
    return np.unique(np.concatenate([[0], np.geomspace(1, steps, points).astype(int)]))


def _band(ax, x, err, color, label):
    """RMS over replicates as a line, the 10-90 % quantiles of |err| as a band."""
    ax.plot(x, np.sqrt(np.mean(err**2, axis=1)), color=color, label=label)
    lo, hi = np.quantile(np.abs(err), [0.1, 0.9], axis=1)
    ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)


def _incremental_mean(run, cfg: Config) -> None:
    x = run.rng.exponential(1.0, size=(cfg.mean_samples, cfg.replicates))  # mean 1, sd 1
    w = A.incremental_mean(x)
    k = np.arange(1, cfg.mean_samples + 1)
    fig, (ax1, ax2) = new_figure(1, 2, size="column", layout="constrained")
    for r in range(min(5, cfg.replicates)):
        ax1.plot(k, w[:, r], lw=1)
    ax1.axhline(1.0, color="k", ls="--", lw=1, label=r"$\mathbb{E}[X] = 1$")
    ax1.set(xscale="log", xlabel="samples $k$", ylabel="$w_k$",
            title=r"Running mean, $X \sim \mathrm{Exp}(1)$")
    ax1.legend()
    _band(ax2, k, w - 1.0, PALETTE[0], "RMS over runs")
    ax2.plot(k, 1 / np.sqrt(k), "k--", lw=1, label=r"$\sigma/\sqrt{k}$")
    ax2.set(xscale="log", yscale="log", xlabel="samples $k$", ylabel=r"$|w_k - 1|$",
            title=r"Error decays as $1/\sqrt{k}$")
    ax2.legend()
    run.save_figure(fig, "incremental_mean")
    run.log_metrics({"mean/final_rms_error": float(np.sqrt(np.mean((w[-1] - 1.0) ** 2))),
                     "mean/final_rms_error_times_sqrt_k": float(
                         np.sqrt(np.mean((w[-1] - 1.0) ** 2) * cfg.mean_samples))})


def _rm_schedules(run, cfg: Config) -> None:
    def g_noisy(w, rng):
        return np.tanh(w - 1.0) + cfg.rm_noise * rng.standard_normal(w.shape)

    ks = _log_grid(cfg.rm_steps)
    fig, ax = new_figure()
    for color, (name, sched) in zip(PALETTE, run.track(RM_SCHEDULES.items(), "robbins-monro"),
                                    strict=False):
        traj = A.robbins_monro(g_noisy, np.full(cfg.replicates, cfg.rm_start), cfg.rm_steps,
                               sched, run.rng, record=ks)
        err = traj.w[1:] - 1.0
        tag = "meets" if sched.satisfies_robbins_monro else "fails"
        _band(ax, traj.k[1:], err, color, f"{_RM_WORDS.get(name, name)} ({tag} RM conditions)")
        key = name.split()[0] + ("_p2" if name == "power 1/k^2" else "")
        rms = float(np.sqrt(np.mean(err[-1] ** 2)))
        run.log_metrics({f"rm/{key}_final_rms_error": rms})
        run.log(f"RM {name}: final RMS error {rms:.4g}")
    ax.plot(ks[1:], cfg.rm_noise / np.sqrt(ks[1:]), "k--", lw=1, label=r"$\sigma/\sqrt{k}$")
    ax.set(xscale="log", yscale="log", xlabel="iteration $k$", ylabel=r"$|w_k - w^*|$",
           title=r"Robbins–Monro on $\tanh(w - 1)$ + noise")
    ax.legend(fontsize=9)
    run.save_figure(fig, "rm_schedules")


def _mean_estimation(run, cfg: Config) -> None:
    data = run.rng.uniform(-10, 10, size=(cfg.mean_points, 2))
    obj = A.MeanEstimation(data)
    mean = obj.solution()
    start = np.array([30.0, 30.0])
    variants = {"SGD (B=1)": ("sgd", None), "MBGD (B=5)": ("minibatch", 5),
                "MBGD (B=50)": ("minibatch", min(50, cfg.mean_points)), "BGD": ("full", None)}
    fig, (ax1, ax2) = new_figure(1, 2, size="column_tall", layout="constrained")
    ax1.scatter(data[:, 0], data[:, 1], s=4, color="0.75", label="samples")
    ks = _log_grid(cfg.mean_steps)
    for color, (name, (mode, b)) in zip(PALETTE, variants.items(), strict=False):
        traj = A.sgd(obj, np.tile(start, (cfg.replicates, 1)), cfg.mean_steps, A.harmonic(),
                     run.rng, mode=mode, batch_size=b, record=ks)
        path = traj.w[: min(40, len(ks)), 0]
        ax1.plot(path[:, 0], path[:, 1], "o-", ms=2.5, lw=0.8, color=color,
                 label=_gd_words(name))
        dist = np.linalg.norm(traj.w[1:] - mean, axis=-1)
        _band(ax2, traj.k[1:], dist, color, name)
        run.log_metrics({f"mean_est/{mode}{b or ''}_final_distance": float(np.mean(dist[-1]))})
    ax1.plot(*mean, "k*", ms=12, label="sample mean")
    ax1.set(xlabel="$w_1$", ylabel="$w_2$", title=r"Iterates with $\alpha_k = 1/k$",
            aspect="equal")
    ax2.set(xscale="log", yscale="log", xlabel="iteration $k$", ylabel=r"$\|w_k - \bar x\|$",
            title="Distance to the mean")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9)
    run.save_figure(fig, "mean_estimation")


def _sklearn_sgd(X, y, cfg: Config, seed: int) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDRegressor

    model = SGDRegressor(loss="squared_error", penalty=None, alpha=0.0, fit_intercept=False,
                         learning_rate="invscaling", eta0=cfg.eta0, power_t=cfg.power_t,
                         max_iter=cfg.linreg_epochs, tol=None, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=None: fixed passes by design
        model.fit(X, y)
    return model.coef_


def _linreg(run, cfg: Config, name: str, X: np.ndarray, y: np.ndarray, ax1, ax2) -> None:
    obj = A.LeastSquares(X, y)
    w_star = obj.solution()
    n, d = X.shape
    rel = np.linalg.norm(w_star)
    sched = A.power(cfg.eta0, cfg.power_t)
    bsz = min(cfg.batch_size, n)
    lipschitz = float(np.linalg.eigvalsh(obj.hessian())[-1])
    # Steps per mode so that every mode touches epochs * n samples. A batch of B averages the
    # noise down B-fold, so MBGD takes B-fold larger steps (linear scaling), capped at 1/L.
    mb_sched = A.power(min(cfg.eta0 * bsz, 1.0 / lipschitz), cfg.power_t)
    variants = {
        "SGD (B=1)": ("sgd", None, sched, cfg.linreg_epochs * n),
        f"MBGD (B={bsz})": ("minibatch", bsz, mb_sched, cfg.linreg_epochs * n // bsz),
        "BGD (step 1/L)": ("full", None, A.constant(1.0 / lipschitz), cfg.linreg_epochs),
    }
    w0 = np.zeros((cfg.linreg_replicates, d))
    for color, (label, (mode, b, schedule, steps)) in zip(PALETTE, variants.items(),
                                                          strict=False):
        t0 = time.perf_counter()
        traj = A.sgd(obj, w0, steps, schedule, run.rng, mode=mode, batch_size=b,
                     sampling="shuffle", record=_log_grid(steps))
        err = np.linalg.norm(traj.w - w_star, axis=-1) / rel  # (T, R)
        _band(ax1, np.maximum(traj.k, 1), err, color, _gd_words(label))
        _band(ax2, np.maximum(traj.samples, 1), err, color, _gd_words(label))
        run.log_metrics({f"linreg/{name}_{mode}_numpy_rel_error": float(np.mean(err[-1]))})
        run.log(f"{name} {label}: {steps} steps in {time.perf_counter() - t0:.2f} s, "
                f"mean rel error {np.mean(err[-1]):.4g}")
    # headline pair: compiled per-sample SGD vs scikit-learn, same schedule, passes, shuffling
    order = np.concatenate([run.rng.permutation(n) for _ in range(cfg.linreg_epochs)])
    alphas = sched(np.arange(1, order.size + 1))
    w_ours = A.least_squares_sgd_numba(X, y, np.zeros(d), order, alphas)
    w_sk = _sklearn_sgd(X, y, cfg, seed=int(run.rng.integers(2**31)))
    ours, peer = np.linalg.norm(w_ours - w_star) / rel, np.linalg.norm(w_sk - w_star) / rel
    prefix = "linreg/" if name == "diabetes" else f"linreg/{name}_"
    run.log_metrics({f"{prefix}sgd_rel_error": ours, f"{prefix}sklearn_sgd_rel_error": peer,
                     f"linreg/{name}_condition_number": float(np.linalg.cond(obj.hessian()))})
    run.log(f"{name}: ours (numba SGD) {ours:.4g}, sklearn SGDRegressor {peer:.4g}")
    ax2.plot([order.size], [peer], "k*", ms=10, label="sklearn SGDRegressor")
    ax2.plot([order.size], [ours], "kx", ms=8, label="our compiled SGD (1 run)")
    ax1.set(xscale="log", yscale="log", xlabel="iteration $k$",
            ylabel=r"$\|w-w^*\|\,/\,\|w^*\|$", title=f"{name}: error vs iterations")
    ax2.set(xscale="log", yscale="log", xlabel="samples touched",
            title=f"{name} ($n={n}$, $d={d}$): vs samples")


def _standardise(X, y):
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = y - y.mean()
    return X, y / y.std()


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        _incremental_mean(run, config)
        _rm_schedules(run, config)
        _mean_estimation(run, config)
        from sklearn.datasets import load_diabetes

        fig, axes = new_figure(2, 2, size=(7.0, 6.4), layout="constrained")
        _linreg(run, config, "diabetes", *_standardise(*load_diabetes(return_X_y=True)), *axes[0])
        X = run.rng.standard_normal((config.synth_n, config.synth_d))
        w_true = run.rng.standard_normal(config.synth_d)
        y = X @ w_true + 0.5 * run.rng.standard_normal(config.synth_n)
        _linreg(run, config, "synthetic", X, y, *axes[1])
        fig.legend(*axes[1, 1].get_legend_handles_labels(), loc="outside lower center", ncol=2,
                   fontsize=9)
        run.save_figure(fig, "linreg")
    return run.result
