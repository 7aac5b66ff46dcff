"""TRPO on CartPole-v1 and Pendulum-v1, the KL of every update against δ, and the bound check.

Part 1 trains :func:`deepnotes.rl.trpo.trpo` on CartPole-v1 (categorical policy) and Pendulum-v1
(diagonal Gaussian policy) for ``seeds`` seeds each, evaluating the deterministic policy every
``eval_every`` steps. Part 2 evaluates Theorem 1 of Schulman et al. (2015) exactly on the 5×5 grid
world of :mod:`deepnotes.rl.envs`: along the tabular natural-gradient path
π̃_α ∝ π·exp(α A_π) (policy iteration's soft step) it compares the true improvement
η(π̃) − η(π) with the surrogate's prediction L_π(π̃) − η(π) and with the two lower bounds; then it
checks the bound on ``bound_pairs`` random pairs of softmax policies.

Figures: ``learning_curves`` (evaluation return against env steps, both envs), ``kl_per_update``
(the accepted step's mean KL divided by δ, per update, and the fraction of the full step kept),
``improvement_bound`` (the α sweep; true improvement against the bound over random pairs).
Headline: CartPole-v1's final evaluation return (mean over seeds); the peer (sb3-contrib TRPO)
is measured in ``benchmarks/trpo.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.rl import trpo as T
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import evaluate_policy

ENVS = {"cartpole": "CartPole-v1", "pendulum": "Pendulum-v1"}


@dataclass
class Config(ExperimentConfig):
    cartpole_steps: int = 50_000
    """Environment steps per CartPole-v1 run."""
    pendulum_steps: int = 80_000
    """Environment steps per Pendulum-v1 run."""
    seeds: int = 3
    """Independent runs per environment (seed, seed + 1, ...); metrics are means over them."""
    max_kl: float = 0.01
    """Trust-region radius δ: the mean KL (nats) allowed per update."""
    cartpole_n_steps: int = 1024
    """Env steps per update on CartPole-v1."""
    pendulum_n_steps: int = 1024
    """Env steps per update on Pendulum-v1."""
    pendulum_gamma: float = 0.9
    """Discount on Pendulum-v1 (RL Zoo's TRPO setting; CartPole uses 0.99)."""
    pendulum_vf_epochs: int = 20
    """Value-regression passes per update on Pendulum-v1 (RL Zoo: 20; CartPole uses 10)."""
    eval_every: int = 10_000
    """Env steps between evaluations of the deterministic policy."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    bound_pairs: int = 500
    """Random policy pairs on which the grid-world bound is checked."""
    bound_alphas: int = 60
    """Points of the α sweep along the natural-gradient path."""
    threads: int = 1
    """Torch threads (the networks are tiny: more threads mostly add synchronisation)."""


PRESETS = make_presets(
    smoke=Config(cartpole_steps=600, pendulum_steps=600, seeds=1, cartpole_n_steps=300,
                 pendulum_n_steps=300, pendulum_vf_epochs=2, eval_every=600, eval_episodes=1,
                 bound_pairs=10, bound_alphas=8),
    quick=Config(cartpole_steps=8_000, pendulum_steps=4_000, seeds=1, eval_every=4_000,
                 eval_episodes=3, bound_pairs=100, bound_alphas=20),
    full=Config(),
)
HEADLINE = "cartpole/final_return"
PEER = None


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def bound_check(config: Config, rng: np.random.Generator) -> dict:
    """The α sweep and the random-pair check of Theorem 1 on the 5×5 grid world (NumPy only)."""
    env = textbook_5x5()
    S, A = env.R.shape
    logits = rng.normal(scale=0.5, size=(S, A))
    pi = _softmax(logits)
    base = T.improvement_bound(env, pi, pi)
    v = base["eta"]
    vs = evaluate_policy(env, pi)
    adv = env.R + env.gamma * env.P @ vs - vs[:, None]
    alphas = np.geomspace(1e-3, 10.0, config.bound_alphas)
    sweep = {k: [] for k in ("true", "surrogate", "bound_tv", "bound_kl", "kl_max")}
    for a in alphas:
        b = T.improvement_bound(env, pi, _softmax(logits + a * adv))
        sweep["true"].append(b["eta_new"] - v)
        sweep["surrogate"].append(b["surrogate"] - v)
        sweep["bound_tv"].append(b["bound_tv"] - v)
        sweep["bound_kl"].append(b["bound_kl"] - v)
        sweep["kl_max"].append(b["kl_max"])
    pairs = {"true": [], "bound_tv": [], "bound_kl": [], "kl_max": []}
    for _ in range(config.bound_pairs):
        lg = rng.normal(size=(S, A))
        p0 = _softmax(lg)
        p1 = _softmax(lg + rng.normal(scale=rng.uniform(0.01, 1.0), size=(S, A)))
        b = T.improvement_bound(env, p0, p1)
        pairs["true"].append(b["eta_new"] - b["eta"])
        pairs["bound_tv"].append(b["bound_tv"] - b["eta"])
        pairs["bound_kl"].append(b["bound_kl"] - b["eta"])
        pairs["kl_max"].append(b["kl_max"])
    return {"alphas": alphas, "C": base["C"], "eps": base["eps"],
            **{f"sweep_{k}": np.asarray(x) for k, x in sweep.items()},
            **{f"pairs_{k}": np.asarray(x) for k, x in pairs.items()}}


def _curves_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]]):
    fig, axes = new_figure(1, 2, size=(7.0, 3.0), layout="constrained")
    for ax, (name, (steps, rets)) in zip(axes, curves.items(), strict=True):
        mean = rets.mean(0)
        for k, r in enumerate(rets):
            ax.plot(steps, r, color=PALETTE[0], alpha=0.35, lw=0.8,
                    label="one seed" if k == 0 else None)
        ax.plot(steps, mean, color=PALETTE[0], lw=2, label=f"mean of {len(rets)} seeds")
        ax.set_title(ENVS[name])
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        ax.legend(loc="lower right", fontsize=9)
    return fig


def _kl_figure(hist: dict[str, list[dict[str, np.ndarray]]], max_kl: float):
    fig, axes = new_figure(1, 2, size="column_tall", layout="constrained")
    for i, (name, runs) in enumerate(hist.items()):
        for k, h in enumerate(runs):
            steps = h["env_steps"]
            axes[0].plot(steps, h["kl"] / max_kl, ".", ms=3, color=PALETTE[i], alpha=0.7,
                         label=ENVS[name] if k == 0 else None)
            axes[1].plot(steps, h["step_fraction"], ".", ms=3, color=PALETTE[i], alpha=0.7,
                         label=ENVS[name] if k == 0 else None)
    axes[0].axhline(1.0, color="k", lw=1, ls="--", label=r"radius $\delta$")
    axes[0].set_ylabel(r"$\bar D_{\mathrm{KL}}(\pi_{\mathrm{old}}\,\|\,\pi_{\mathrm{new}})/\delta$")
    axes[1].set_ylabel("fraction of the full step kept")
    axes[0].set_title("KL of each update")
    axes[1].set_title("Backtracking line search")
    for ax in axes:
        ax.set_xlabel("environment steps")
    # below the panels: the points fill both axes
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3,
               fontsize=9, markerscale=3)
    axes[0].set_ylim(0, 1.15)
    axes[1].set_ylim(0, 1.05)
    return fig


def _bound_figure(b: dict):
    fig, axes = new_figure(1, 2, size="column_tall", layout="constrained")
    ax = axes[0]
    a = b["alphas"]
    ax.plot(a, b["sweep_true"], color=PALETTE[0], lw=2, label=r"true $\eta(\tilde\pi)-\eta(\pi)$")
    ax.plot(a, b["sweep_surrogate"], color=PALETTE[1], ls="--",
            label=r"surrogate $L_\pi(\tilde\pi)-\eta(\pi)$")
    ax.plot(a, b["sweep_bound_tv"], color=PALETTE[2], label="lower bound, TV form")
    ax.plot(a, b["sweep_bound_kl"], color=PALETTE[3], label="lower bound, KL form")
    ax.set_xscale("log")
    top = max(b["sweep_true"].max(), b["sweep_surrogate"].max())
    ax.set_ylim(-1.5 * abs(top), 1.3 * top)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel(r"step size $\alpha$ along $A_\pi$")
    ax.set_ylabel("change in return")
    ax.set_title("One policy pair, growing step")
    # below the panels: in the axes it would hide the bounds as they fall away
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=9)
    ax = axes[1]
    for key, color, label in (("bound_tv", PALETTE[2], "TV form"),
                              ("bound_kl", PALETTE[3], "KL form")):
        ax.plot(b["pairs_kl_max"], b["pairs_true"] - b[f"pairs_{key}"], ".", ms=3, color=color,
                alpha=0.7, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones collide
    ax.set_xlabel(r"$\max_s D_{\mathrm{KL}}(\pi\,\|\,\tilde\pi)$ (nats)")
    ax.set_ylabel("true change minus bound")
    ax.set_title("Random policy pairs")
    ax.legend(fontsize=9, loc="upper left", markerscale=3)
    return fig


def run(config: Config) -> Result:
    if config.seeds < 1 or config.cartpole_steps < 2 or config.pendulum_steps < 2:
        raise ValueError("seeds must be >= 1 and the step budgets >= 2")
    with start_run(__name__, config) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            curves, hists = {}, {}
            for name, env_id in ENVS.items():
                if name == "cartpole":
                    steps, hp = config.cartpole_steps, {"n_steps": config.cartpole_n_steps}
                else:
                    steps = config.pendulum_steps
                    hp = {"n_steps": config.pendulum_n_steps, "gamma": config.pendulum_gamma,
                          "vf_epochs": config.pendulum_vf_epochs}
                rets, finals, times, hs = [], [], [], []
                for k in range(config.seeds):
                    seed = config.seed + k
                    t0 = time.perf_counter()
                    res = T.trpo(env_id, steps, seed, progress=run.track,
                                 max_kl=config.max_kl, eval_every=config.eval_every,
                                 eval_episodes=config.eval_episodes, device=str(run.device),
                                 **hp)
                    times.append(res.train_time_s)
                    rets.append(res.eval_returns.mean(1))
                    finals.append(res.final_return)
                    hs.append(res.history)
                    run.log(f"{env_id} seed {seed}: final return {res.final_return:.1f}, "
                            f"{time.perf_counter() - t0:.1f} s")
                curves[name] = (res.eval_steps, np.stack(rets))
                hists[name] = hs
                acc = np.concatenate([h["accepted"] for h in hs])
                kl = np.concatenate([h["kl"] for h in hs])
                run.log_metrics({
                    f"{name}/final_return": np.mean(finals),
                    f"{name}/final_return_sd": np.std(finals, ddof=1) if len(finals) > 1
                    else 0.0,
                    f"{name}/wall_s_per_1e4_steps": 1e4 * np.mean(times) / steps,
                    f"{name}/accept_rate": acc.mean(),
                    f"{name}/max_kl_over_delta": kl.max() / config.max_kl,
                    f"{name}/mean_kl_over_delta": kl[acc > 0].mean() / config.max_kl
                    if acc.any() else 0.0,
                    f"{name}/mean_step_fraction": np.concatenate(
                        [h["step_fraction"] for h in hs])[acc > 0].mean() if acc.any() else 0.0,
                    f"{name}/updates": float(acc.size),
                })
            run.save_figure(_curves_figure(curves), "learning_curves")
            run.save_figure(_kl_figure(hists, config.max_kl), "kl_per_update")

            b = bound_check(config, run.rng)
            slack_tv = b["pairs_true"] - b["pairs_bound_tv"]
            slack_kl = b["pairs_true"] - b["pairs_bound_kl"]
            pos = b["sweep_bound_tv"] > 0
            run.log_metrics({
                "bound/C": b["C"],
                "bound/eps": b["eps"],
                "bound/pairs": float(config.bound_pairs),
                "bound/violations_tv": float((slack_tv < -1e-9).sum()),
                "bound/violations_kl": float((slack_kl < -1e-9).sum()),
                "bound/min_slack_tv": slack_tv.min(),
                "bound/max_alpha_guaranteed": b["alphas"][pos].max() if pos.any() else 0.0,
                "bound/best_alpha_true": b["alphas"][np.argmax(b["sweep_true"])],
                "bound/kl_at_max_guaranteed": b["sweep_kl_max"][pos].max() if pos.any() else 0.0,
                "bound/true_gain_at_max_guaranteed": b["sweep_true"][pos][-1] if pos.any()
                else 0.0,
                "bound/best_true_gain": b["sweep_true"].max(),
            })
            run.save_figure(_bound_figure(b), "improvement_bound")
        finally:
            torch.set_num_threads(threads)
    return run.result
