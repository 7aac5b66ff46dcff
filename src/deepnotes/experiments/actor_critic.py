"""Actor-critic methods on the 5x5 grid world and deterministic policy gradient on a scalar LQR.

Figures: ``learning_curves`` (exact v̄* − v̄ of QAC, A2C and off-policy actor-critic against
episodes, median over seeds), ``policies`` (exact v* and π* beside v_π and the most probable
action of each learner) and ``dpg_gain`` (the gain learned by DPG against episodes, converging to
the Riccati gain k*) and ``greedy_optimality`` (states whose greedy action is suboptimal, per
seed, for QAC plain, with an entropy bonus, and with a baseline and the bonus). Headline: A2C's
v̄ gap, median over seeds.
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
from deepnotes.rl import actor_critic as ac
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import evaluate_policy, suboptimal_states, value_iteration


@dataclass
class Config(ExperimentConfig):
    episodes: int = 20_000
    """Episodes per grid-world run (uniformly random starts)."""
    episode_length: int = 30
    """Steps per episode."""
    alpha_theta: float = 0.5
    """Actor step size."""
    alpha_w: float = 0.1
    """Critic step size."""
    seeds: int = 5
    """Independent runs per method; metrics are medians."""
    evaluations: int = 50
    """Exact evaluations of v̄ per run."""
    dpg_episodes: int = 20_000
    """DPG episodes (of 20 steps) on the LQR."""
    lqr_gamma: float = 0.9
    """Discount of the LQR."""
    lqr_c: float = 1.0
    """Action cost c in r = −(s² + c a²)."""
    greedy_episodes: int = 60_000
    """Episodes of the greedy-optimality comparison (QAC plain vs with baseline and entropy)."""
    greedy_seeds: int = 8
    """Seeds of the greedy-optimality comparison."""
    greedy_entropy: float = 1.0
    """Initial weight β of the entropy bonus (decayed to 0) in that comparison."""


PRESETS = make_presets(
    smoke=Config(episodes=300, seeds=1, evaluations=3, dpg_episodes=300, greedy_episodes=300,
                 greedy_seeds=2),
    quick=Config(episodes=4000, seeds=2, evaluations=20, dpg_episodes=5000,
                 greedy_episodes=20_000, greedy_seeds=3),
    full=Config(),
)
#: No networks: the actor-critic learners and DPG are numba kernels over tabular/linear
#: parameters (torch only sets the thread count), so --device does not apply.
CPU_ONLY = "its learners are numba kernels"
HEADLINE = "a2c/v_bar_gap"
PEER = None  # the exact optimum of value iteration and the Riccati gain are the references

_METHODS = {"qac": "QAC", "a2c": "A2C", "off_policy": r"off-policy AC (uniform $\beta$)"}


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(1)
        env = textbook_5x5()
        exact = value_iteration(env, tol=1e-12)
        vbar_star = float(exact.v.mean())
        seeds = [int(s) for s in run.rng.integers(0, 2**31, size=config.seeds)]
        every = max(1, config.episodes // config.evaluations)
        run.log(f"v̄* = {vbar_star:.4f}, seeds {seeds}")

        gaps, xs, panels = {}, {}, [(r"exact $v^*$, $\pi^*$", exact.v, exact.policy)]
        for method, label in run.track(list(_METHODS.items()), "actor-critic"):
            results = [ac.actor_critic(env, method, config.episodes, config.alpha_theta,
                                       config.alpha_w, config.episode_length, seed,
                                       eval_every=every) for seed in seeds]
            final = [vbar_star - r.history["v_bar"][-1] for r in results]
            gaps[label] = np.median([vbar_star - np.asarray(r.history["v_bar"])
                                     for r in results], axis=0)
            xs[label] = results[0].history["episode"]
            panels.append((f"{label}: gap {final[0]:.3f}", evaluate_policy(env, results[0].policy),
                           results[0].policy.argmax(axis=1)))
            run.log_metrics({f"{method}/v_bar_gap": float(np.median(final)),
                             f"{method}/v_bar_gap_max": float(np.max(final))})
            run.log(f"{label}: v̄ gaps {np.round(final, 4).tolist()}")
        fig, ax = new_figure()
        curves(ax, xs, gaps, xlabel=f"episodes ({config.episode_length} steps)",
               ylabel=r"$\bar v^* - \bar v$ (exact, median over seeds)", log=True)
        run.save_figure(fig, "learning_curves")
        run.save_figure(values_figure(env, panels), "policies")

        # --- is the greedy policy optimal in every state? ---------------------------------------
        # QAC weights each score by q(s,a) > 0, so the most-sampled action wins; the baseline
        # Σ_b π(b|s) q(s,b) and a decaying entropy bonus remove that (Eq. 4).
        counts = {}
        variants = {"QAC": {}, "QAC + entropy": {"entropy": config.greedy_entropy},
                    "QAC + baseline + entropy": {"entropy": config.greedy_entropy,
                                                 "baseline": True}}
        for label, extra in run.track(list(variants.items()), "greedy optimality"):
            counts[label] = [len(suboptimal_states(exact.q, ac.actor_critic(
                env, "qac", config.greedy_episodes, 0.1, 0.05, config.episode_length, seed,
                **extra).policy)) for seed in range(config.greedy_seeds)]
            run.log(f"{label}: suboptimal greedy states per seed {counts[label]}")
        run.save_figure(suboptimal_counts_figure(
            counts, f"QAC, {config.greedy_episodes} episodes"), "greedy_optimality")
        run.log_metrics({
            "greedy/qac_plain_seeds_optimal": sum(c == 0 for c in counts["QAC"]),
            "greedy/qac_baseline_entropy_seeds_optimal":
                sum(c == 0 for c in counts["QAC + baseline + entropy"]),
            "greedy/seeds": config.greedy_seeds})

        k_star, P_star = ac.lqr_optimal_gain(config.lqr_gamma, config.lqr_c)
        fig, ax = new_figure()
        finals = []
        for i, seed in enumerate(seeds):
            out = ac.dpg_lqr(config.dpg_episodes, config.lqr_gamma, config.lqr_c, seed=seed)
            finals.append(out["k"])
            ax.plot(np.arange(1, config.dpg_episodes + 1), out["gains"], color=PALETTE[0],
                    lw=1, alpha=0.7, label=r"DPG gain $k$ (one line per seed)" if i == 0 else None)
        ax.axhline(k_star, color=PALETTE[3], ls="--", label=rf"Riccati optimum $k^*={k_star:.4f}$")
        ax.set_xlabel("episodes (20 steps)")
        ax.set_ylabel(r"gain $k$ of the policy $a = ks$")
        ax.legend(fontsize=9)
        run.save_figure(fig, "dpg_gain")
        run.log_metrics({"dpg/k_star": k_star, "dpg/P_star": P_star,
                         "dpg/k_abs_error": float(np.median(np.abs(np.array(finals) - k_star)))})
    return run.result
