"""Monte Carlo control on the 5x5 grid world: MC Basic, Exploring Starts, ε-greedy, against DP.

Figures: ``values`` (exact v*, π* beside MC Exploring Starts and MC ε-greedy), ``mc_basic``
(‖v − v*‖_∞ per policy iteration for several episode lengths, and heatmaps for short lengths),
``learning_curves`` (Exploring Starts first/every visit, sample averages vs constant α, and
ε-greedy: error against episodes), ``epsilon`` (the exact best ε-greedy policies for several ε
and how far the MC estimates are from them). Headline: MC Exploring Starts' final
‖max_a q − v*‖_∞ (first visit, constant α), median over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import new_figure
from deepnotes.experiments._gridworld_plots import Q_ERROR, curves, draw_values, values_figure
from deepnotes.rl import mc
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import value_iteration


@dataclass
class Config(ExperimentConfig):
    r_forbidden: float = -1.0
    """Reward for entering a forbidden cell (the textbook uses -1 and -10)."""
    basic_lengths: tuple[int, ...] = (1, 2, 3, 5, 8, 15, 30, 100)
    """Episode lengths (return horizons) for MC Basic."""
    basic_iterations: int = 12
    """Policy-iteration steps of MC Basic."""
    es_episodes: int = 10_000
    """Episodes of MC Exploring Starts."""
    episode_length: int = 30
    """Recorded steps per episode (plus a tail of 66 steps that only lengthens the returns)."""
    alpha: float = 0.1
    """Constant step size of the constant-α variants (the others average returns)."""
    eps_episodes: int = 50_000
    """Episodes of MC ε-greedy."""
    epsilons: tuple[float, ...] = (0.1, 0.2, 0.5)
    """Exploration rates for the ε study (the last one is also used in the comparison)."""
    seeds: int = 3
    """Independent runs per learner; curves show the median, metrics the median final value."""


PRESETS = make_presets(
    smoke=Config(basic_lengths=(1, 30), basic_iterations=3, es_episodes=200, eps_episodes=300,
                 epsilons=(0.5,), seeds=1),
    quick=Config(es_episodes=4000, eps_episodes=15_000, seeds=2),
    full=Config(),
)
#: This topic has no torch work: --device does not apply (said once in the run's log).
CPU_ONLY = "its learners are numba kernels"
HEADLINE = "mc_exploring_starts/v_max_abs_error"
PEER = None  # tabular RL has no external peer: the exact DP solution is the reference


#: Legend text of the learning-curve variants (the dict keys name them in the code and log).
_LEGEND = {"ES first-visit, α": r"exploring starts, first visit, constant $\alpha$",
           "ES every-visit, α": r"exploring starts, every visit, constant $\alpha$",
           "ES first-visit, average": "exploring starts, first visit, averaged returns"}


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        env = textbook_5x5(rewards=(-1.0, config.r_forbidden, 1.0, 0.0))
        exact = value_iteration(env, tol=1e-12)
        ref = dict(v_star=exact.v, q_star=exact.q)
        seeds = [int(s) for s in run.rng.integers(0, 2**31, size=config.seeds)]

        # --- MC Basic: the return horizon decides what the greedy policy can see -------------
        fig, axes = new_figure(1, 2, size="column_tall", layout="constrained")
        basic = {}
        for L in run.track(config.basic_lengths, "MC Basic"):
            sol = mc.mc_basic(env, 1, L, config.basic_iterations, seed=seeds[0], **ref)
            basic[L] = sol
            run.log_metrics({f"mc_basic/L{L}_v_max_abs_error": sol.history["v_error"][-1],
                             f"mc_basic/L{L}_optimal_fraction":
                                 sol.history["optimal_fraction"][-1]})
        its = np.arange(1, config.basic_iterations + 1)
        curves(axes[0], its, {f"$L = {L}$": np.maximum(s.history["v_error"], 1e-12)
                              for L, s in basic.items()},
               xlabel="policy-iteration step", ylabel=Q_ERROR, log=True, legend=False)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4,
                   title="episode length", fontsize=9)
        axes[1].plot(config.basic_lengths, [s.history["optimal_fraction"][-1]
                                            for s in basic.values()], "o-")
        axes[1].set_xscale("log")
        axes[1].set_xlabel("episode length $L$")
        axes[1].set_ylabel("states with an optimal greedy action (fraction)")
        run.save_figure(fig, "mc_basic")
        short = [L for L in config.basic_lengths if L <= 15][:4] or list(basic)[:1]
        run.save_figure(values_figure(env, [(f"MC Basic, $L = {L}$", basic[L].v, basic[L].policy)
                                            for L in short]), "mc_basic_lengths")

        # --- Exploring starts and ε-greedy: learning curves ------------------------------------
        variants = {
            "ES first-visit, α": lambda s: mc.mc_exploring_starts(
                env, config.es_episodes, config.episode_length, True, s, alpha=config.alpha, **ref),
            "ES every-visit, α": lambda s: mc.mc_exploring_starts(
                env, config.es_episodes, config.episode_length, False, s, alpha=config.alpha,
                **ref),
            "ES first-visit, average": lambda s: mc.mc_exploring_starts(
                env, config.es_episodes, config.episode_length, True, s, **ref),
        }
        err, finals = {}, {}
        for label, fn in run.track(variants.items(), "exploring starts"):
            sols = [fn(s) for s in seeds]
            finals[label] = sols[0]
            err[label] = np.median([s.history["v_error"] for s in sols], axis=0)
            key = {"ES first-visit, α": "mc_exploring_starts",
                   "ES every-visit, α": "mc_exploring_starts_every_visit",
                   "ES first-visit, average": "mc_exploring_starts_average"}[label]
            run.log_metrics({
                f"{key}/v_max_abs_error": float(err[label][-1]),
                f"{key}/optimal_fraction": float(np.median(
                    [s.history["optimal_fraction"][-1] for s in sols])),
            })

        eps_main = config.epsilons[-1]
        best = {eps: mc.best_epsilon_greedy(env, eps) for eps in config.epsilons}
        eps_runs = {}
        for eps in run.track(config.epsilons, "ε-greedy"):
            sols = [mc.mc_epsilon_greedy(env, config.eps_episodes, config.episode_length, eps, s,
                                         **ref) for s in seeds]
            eps_runs[eps] = sols
            q_eps = best[eps].q
            opt_eps = q_eps >= q_eps.max(axis=1, keepdims=True) - 1e-6
            run.log_metrics({
                f"mc_eps_greedy/eps{eps}_q_eps_max_abs_error": float(np.median(
                    [np.abs(s.q - q_eps).max() for s in sols])),
                f"mc_eps_greedy/eps{eps}_eps_optimal_fraction": float(np.median(
                    [opt_eps[np.arange(env.n_states), s.policy].mean() for s in sols])),
                f"mc_eps_greedy/eps{eps}_optimal_fraction": float(np.median(
                    [s.history["optimal_fraction"][-1] for s in sols])),
                f"exact_eps_greedy/eps{eps}_v_max_abs_gap": float(np.abs(
                    best[eps].v - exact.v).max()),
            })
        main = eps_runs[eps_main]
        run.log_metrics({"mc_eps_greedy/v_max_abs_error": float(np.median(
            [s.history["v_error"][-1] for s in main]))})
        eps_label = rf"$\varepsilon$-greedy, $\varepsilon = {eps_main}$"
        err[eps_label] = np.median([s.history["v_error"] for s in main], axis=0)

        fig, ax = new_figure(size="column")
        err = {_LEGEND.get(k, k): v for k, v in err.items()}
        xs = {k: np.arange(1, len(v) + 1) for k, v in err.items()}
        curves(ax, xs, err, xlabel="episodes", ylabel=Q_ERROR + " (median)", log=True)
        ax.set_xscale("log")
        run.save_figure(fig, "learning_curves")

        es = finals["ES first-visit, α"]
        run.save_figure(values_figure(env, [
            (r"exact $v^*$, $\pi^*$", exact.v, exact.policy),
            ("MC Exploring Starts", es.v, es.policy),
            ("MC " + eps_label + "\n" + r"($\mathrm{max}_a\, q$)", main[0].v, main[0].policy)]),
            "values")

        # --- what ε-greedy converges to: the best ε-greedy policy, exactly ----------------------
        fig, axes = new_figure(2, len(config.epsilons),
                               size=(min(7.0, 0.5 + 2.3 * len(config.epsilons)), 5.4),
                               squeeze=False)
        lo = min(min(b.v.min() for b in best.values()), exact.v.min())
        for j, eps in enumerate(config.epsilons):
            draw_values(axes[0, j], env, best[eps].v, best[eps].policy, vmin=lo,
                        vmax=exact.v.max(), title=rf"$\varepsilon = {eps}$")
            s = eps_runs[eps][0]
            v_eps = (mc.epsilon_greedy_matrix(s.policy, eps, env.n_actions) * s.q).sum(axis=1)
            draw_values(axes[1, j], env, v_eps, s.policy, vmin=lo, vmax=exact.v.max(),
                        title=rf"$\varepsilon = {eps}$")
        axes[0, 0].set_ylabel("exact best\n" + r"$\varepsilon$-greedy policy")
        axes[1, 0].set_ylabel(r"MC $\varepsilon$-greedy")
        run.save_figure(fig, "epsilon")
    return run.result
