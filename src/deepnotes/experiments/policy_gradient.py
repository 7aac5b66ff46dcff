"""REINFORCE on the 5x5 grid world, judged by the exact v̄ and r̄ of every policy it visits.

Figures: ``v_bar_curves`` (the gap v̄* − v̄ of exact values against updates for the tabular
softmax and linear-feature softmax policies, every seed), ``policies`` (exact v* and π*
beside v_π and the most probable action of the learned policies), ``gradient_variance`` (total
variance of the REINFORCE estimator along the tabular run: no baseline, the constant v̄ and the
state value v_π(s)) and ``average_reward`` (exact r̄ and v̄ of the average-reward learner beside
REINFORCE, against environment steps) and ``greedy_optimality`` (states whose greedy action is
suboptimal, per seed, with the moving-average baseline, with an entropy bonus, and with a
per-state baseline and the bonus). Headline: optimal v̄ minus the learned tabular v̄, median.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.experiments._gridworld_plots import (
    curves,
    suboptimal_counts_figure,
    values_figure,
)
from deepnotes.rl import policy_gradient as pg
from deepnotes.rl import vfa
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import evaluate_policy, suboptimal_states, value_iteration


@dataclass
class Config(ExperimentConfig):
    iterations: int = 10_000
    """REINFORCE updates per run."""
    batch: int = 4
    """Episodes averaged per update."""
    episode_length: int = 50
    """Steps per episode (truncation changes v̄ by at most 0.9^50 / 0.1 ≈ 0.05)."""
    alpha: float = 1.0
    """Step size, divided by max_s ‖φ(s)‖² of each feature set."""
    baseline_decay: float = 0.9
    """Decay of the moving-average baseline (1: none)."""
    features: tuple[str, ...] = ("one_hot:0", "tile:3", "fourier:2", "fourier:3")
    """Policy feature sets (kind:order, deepnotes.rl.vfa.make_features); the first is tabular."""
    seeds: int = 5
    """Independent runs per feature set; metrics are medians."""
    evaluations: int = 50
    """Exact evaluations of v̄ and r̄ per run."""
    variance_episodes: int = 4000
    """Episodes per variance estimate of the gradient estimator."""
    variance_points: int = 6
    """Policies along the tabular run at which the estimator's variance is measured."""
    ar_iterations: int = 10_000
    """Updates of the average-reward learner."""
    ar_segment: int = 50
    """Steps T whose scores enter one average-reward update."""
    ar_horizon: int = 30
    """Steps H of each differential return."""
    greedy_iterations: int = 8000
    """Updates of the greedy-optimality comparison (tabular; plain vs per-state baseline and
    entropy bonus)."""
    greedy_seeds: int = 8
    """Seeds of the greedy-optimality comparison."""
    greedy_entropy: float = 1.0
    """Initial weight β of the entropy bonus (decayed to 0) in that comparison."""
    greedy_state_baseline: float = 0.2
    """Step size c of the per-state baseline in that comparison."""


PRESETS = make_presets(
    smoke=Config(iterations=200, features=("one_hot:0", "fourier:2"), seeds=1, evaluations=4,
                 variance_episodes=200, variance_points=2, ar_iterations=200,
                 greedy_iterations=100, greedy_seeds=2),
    quick=Config(iterations=3000, seeds=2, evaluations=20, variance_episodes=1000,
                 variance_points=4, ar_iterations=2000, greedy_iterations=2000, greedy_seeds=3),
    full=Config(),
)
#: No networks: REINFORCE and its variants are numba kernels over a softmax-linear policy, and
#: the exact gradients are float64 solves on 25 states (torch autograd on the CPU).
CPU_ONLY = "its learners are numba kernels and its exact gradients small float64 solves"
HEADLINE = "reinforce/v_bar_gap"
PEER = None  # the exact optimum of value iteration is the reference


def _stationary_reward(env, policy) -> float:
    """r̄ of a deterministic policy: its stationary distribution times its rewards."""
    d = vfa.stationary_distribution(env, policy)
    return float(d @ env.R[np.arange(env.n_states), policy])


def _feature_label(kind: str, order: int, dim: int) -> str:
    """Legend text for a linear-feature policy (``kind``/``order`` as in ``make_features``)."""
    words = {"tile": f"tile coding, {order} tiles per axis",
             "fourier": f"Fourier basis, order {order}",
             "polynomial": f"polynomial, degree {order}"}.get(kind, f"{kind} {order}")
    return rf"{words} ($d={dim}$)"


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(1)
        env = textbook_5x5()
        S = env.n_states
        exact = value_iteration(env, tol=1e-12)
        vbar_star, rbar_star = float(exact.v.mean()), _stationary_reward(env, exact.policy)
        seeds = [int(s) for s in run.rng.integers(0, 2**31, size=config.seeds)]
        every = max(1, config.iterations // config.evaluations)
        steps_per_update = config.batch * config.episode_length
        run.log(f"v̄* = {vbar_star:.4f}, r̄* = {rbar_star:.4f}, seeds {seeds}")
        run.log_metrics({"optimum/v_bar": vbar_star, "optimum/r_bar": rbar_star})

        # --- REINFORCE, tabular and linear features ---------------------------------------------
        v_curves, x_curves, panels = {}, {}, [(r"exact $v^*$, $\pi^*$", exact.v, exact.policy)]
        snapshots: list[tuple[int, np.ndarray]] = [(0, np.zeros((S, env.n_actions)))]
        tabular_run = None
        for j, spec in enumerate(run.track(config.features, "REINFORCE")):
            kind, order = spec.split(":")
            phi = vfa.make_features(env, kind, int(order))
            n2 = float((phi ** 2).sum(axis=1).max())
            results = []
            for i, seed in enumerate(seeds):
                keep = (lambda k, th: snapshots.append((k, th))) if j == 0 and i == 0 else None
                results.append(pg.reinforce(
                    env, phi, config.iterations, config.alpha / n2, config.episode_length, seed,
                    batch=config.batch, baseline_decay=config.baseline_decay, eval_every=every,
                    callback=keep))
            gaps = [vbar_star - r.history["v_bar"][-1] for r in results]
            name = "tabular" if kind == "one_hot" else _feature_label(kind, order, phi.shape[1])
            group = "reinforce" if j == 0 else f"reinforce_{kind}{order}"
            v_curves[name] = [r.history["v_bar"] for r in results]
            x_curves[name] = results[0].history["iteration"]
            best = results[int(np.argmin(gaps))]
            title = name.replace(", ", ",\n") + f"\ngap {min(gaps):.3f}"
            panels.append((title, evaluate_policy(env, best.policy), best.policy.argmax(axis=1)))
            run.log_metrics({f"{group}/v_bar_gap": float(np.median(gaps)),
                             f"{group}/v_bar_gap_max": float(np.max(gaps)),
                             f"{group}/r_bar": float(np.median([r.history["r_bar"][-1]
                                                                for r in results]))})
            run.log(f"{name}: v̄ gaps {np.round(gaps, 4).tolist()}")
            if j == 0:
                tabular_run = results[0]

        fig, ax = new_figure()
        for j, (name, runs) in enumerate(v_curves.items()):
            for i, y in enumerate(runs):  # every seed: the runs split between optima
                ax.plot(x_curves[name], vbar_star - np.asarray(y), color=PALETTE[j], lw=1.2,
                        alpha=0.7, label=name if i == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel(f"updates ({config.batch} episodes of {config.episode_length} steps)")
        ax.set_ylabel(r"$\bar v^* - \bar v$ (exact, one line per seed)")
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
        run.save_figure(fig, "v_bar_curves")
        run.save_figure(values_figure(env, panels[:4]), "policies")

        # --- variance of the gradient estimator with and without a baseline ---------------------
        phi = np.eye(S)
        picks = np.unique(np.linspace(0, len(snapshots) - 1, config.variance_points).round())
        var = {"no baseline": [], "constant b = v̄": [], "b(s) = v_π(s)": []}
        at = []
        for k in run.track(picks.astype(int), "variance"):
            it, theta = snapshots[k]
            v_pi = evaluate_policy(env, pg.softmax_policy(phi, theta))
            for label, b in zip(var, (None, float(v_pi.mean()), v_pi), strict=True):
                g = pg.reinforce_gradients(env, phi, theta, config.variance_episodes,
                                           config.episode_length, seeds[0] + k, baseline=b)
                var[label].append(float(g.var(axis=0).sum()))
            at.append(it)
        fig, ax = new_figure()
        shown = {"no baseline": "no baseline", "constant b = v̄": r"constant baseline $b=\bar v$",
                 "b(s) = v_π(s)": r"per-state baseline $b(s)=v_\pi(s)$"}
        curves(ax, at, {shown[k]: v for k, v in var.items()}, xlabel="updates of the tabular run",
               ylabel=r"$\mathrm{tr}\,\mathrm{Cov}[\hat g]$ (Eq. 6)", log=True)
        for line in ax.lines:
            line.set_marker("o")
        run.save_figure(fig, "gradient_variance")
        run.log_metrics({
            "variance/no_baseline_at_start": var["no baseline"][0],
            "variance/state_baseline_at_start": var["b(s) = v_π(s)"][0],
            "variance/reduction_at_start": var["no baseline"][0] / var["b(s) = v_π(s)"][0],
            "variance/reduction_at_end": var["no baseline"][-1] / var["b(s) = v_π(s)"][-1]})

        # --- average-reward learner ---------------------------------------------------------------
        ar_every = max(1, config.ar_iterations // config.evaluations)
        ars = [pg.reinforce_average_reward(env, phi, config.ar_iterations, config.alpha,
                                           config.ar_segment, config.ar_horizon, seed,
                                           eval_every=ar_every)
               for seed in run.track(seeds, "average reward")]
        ar_steps = config.ar_segment + config.ar_horizon
        r_final = [r.history["r_bar"][-1] for r in ars]
        run.log_metrics({
            "average_reward/r_bar_gap": float(np.median([rbar_star - r for r in r_final])),
            "average_reward/v_bar_gap": float(np.median([vbar_star - r.history["v_bar"][-1]
                                                         for r in ars])),
            "average_reward/r_hat_error": float(np.median([abs(r.history["r_hat"][-1] - rb)
                                                           for r, rb in zip(ars, r_final,
                                                                            strict=True)]))})
        fig, axes = new_figure(2, 1, size="column_grid", sharex=True)
        xs = {"average-reward learner (Eq. 8)": np.array(ars[0].history["iteration"]) * ar_steps,
              r"REINFORCE on $\bar v$, tabular": np.array(tabular_run.history["iteration"])
              * steps_per_update}
        for ax, key, star in ((axes[0], "r_bar", rbar_star), (axes[1], "v_bar", vbar_star)):
            ys = {"average-reward learner (Eq. 8)": np.median([r.history[key] for r in ars],
                                                              axis=0),
                  r"REINFORCE on $\bar v$, tabular": tabular_run.history[key]}
            curves(ax, xs, ys, xlabel="environment steps" if key == "v_bar" else "",
                   ylabel=r"exact $\bar r$ of the policy" if key == "r_bar"
                   else r"exact $\bar v$ of the policy")
            ax.axhline(star, color=PALETTE[7], ls="--", lw=1, label="optimum")
            ax.set_xscale("log")
            ax.legend(fontsize=9)
        run.save_figure(fig, "average_reward")

        # --- is the greedy policy optimal in every state? ---------------------------------------
        counts = {}
        beta, c = config.greedy_entropy, config.greedy_state_baseline
        variants = {"moving-average b": {"baseline_decay": config.baseline_decay},
                    "moving-average b + entropy": {"baseline_decay": config.baseline_decay,
                                                   "entropy": beta},
                    "per-state b + entropy": {"state_baseline": c, "entropy": beta}}
        for label, extra in run.track(list(variants.items()), "greedy optimality"):
            counts[label] = [len(suboptimal_states(exact.q, pg.reinforce(
                env, phi, config.greedy_iterations, config.alpha, config.episode_length, seed,
                batch=config.batch, **extra).policy)) for seed in range(config.greedy_seeds)]
            run.log(f"{label}: suboptimal greedy states per seed {counts[label]}")
        run.save_figure(suboptimal_counts_figure(
            counts, f"tabular REINFORCE, {config.greedy_iterations} updates"),
            "greedy_optimality")
        run.log_metrics({
            "greedy/plain_seeds_optimal": sum(n == 0 for n in counts["moving-average b"]),
            "greedy/state_baseline_entropy_seeds_optimal":
                sum(n == 0 for n in counts["per-state b + entropy"]),
            "greedy/seeds": config.greedy_seeds})
    return run.result
