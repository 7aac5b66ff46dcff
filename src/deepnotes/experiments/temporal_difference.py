"""Temporal-difference learning on the 5x5 grid world, every learner checked against exact v*, q*.

Figures: ``values`` (exact v* and policy beside Sarsa's and Q-learning's), ``learning_curves``
(‖max_a q − v*‖_∞, fraction of optimal greedy actions and episode reward against episodes for
Sarsa, Expected Sarsa, n-step Sarsa, Q-learning on- and off-policy), ``td0_step_size`` (TD(0)
evaluation of the uniform policy for several α), ``n_step`` (error after a fixed budget against
n), ``step_size`` (error against α for Sarsa and Q-learning), ``offpolicy`` (Q-learning from a
uniformly random behaviour: q error against episodes). Headline: Q-learning's final
‖max_a q − v*‖_∞, median over seeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import new_figure
from deepnotes.experiments._gridworld_plots import Q_ERROR, curves, learner_label, values_figure
from deepnotes.rl import td
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import evaluate_policy, value_iteration


@dataclass
class Config(ExperimentConfig):
    r_forbidden: float = -1.0
    """Reward for entering a forbidden cell (the textbook uses -1 and -10)."""
    episodes: int = 20_000
    """Episodes per on-policy control run (each from a random state, exploring starts)."""
    episode_length: int = 20
    """Steps per episode."""
    alpha: float = 0.3
    """Constant step size of the control runs."""
    epsilon: float = 0.2
    """Initial exploration rate, decayed linearly to 0 over the first half of the episodes."""
    n: int = 3
    """n of the n-step Sarsa in the comparison."""
    seeds: int = 5
    """Independent runs per learner; curves show the median, metrics the median final value."""
    offpolicy_episodes: int = 2000
    """Episodes of 50 steps from the uniformly random behaviour for off-policy Q-learning."""
    td0_episodes: int = 2000
    """Episodes of 100 steps for TD(0) evaluation of the uniform policy."""
    td0_alphas: tuple[float, ...] = (0.01, 0.05, 0.2)
    """Constant step sizes compared for TD(0)."""
    sweep_episodes: int = 3000
    """Episodes per run in the n and step-size sweeps (a fixed, deliberately small budget)."""
    n_values: tuple[int, ...] = (1, 2, 4, 8, 16)
    """n of n-step Sarsa in the n sweep."""
    sweep_alphas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)
    """Step sizes in the step-size sweep."""


PRESETS = make_presets(
    smoke=Config(episodes=300, seeds=1, offpolicy_episodes=100, td0_episodes=100,
                 sweep_episodes=100, n_values=(1, 4), sweep_alphas=(0.1, 0.4)),
    quick=Config(episodes=5000, seeds=3, offpolicy_episodes=800, td0_episodes=800,
                 sweep_episodes=1500),
    full=Config(),
)
#: This topic has no torch work: --device does not apply (said once in the run's log).
CPU_ONLY = "its learners are numba kernels"
HEADLINE = "q_learning/v_max_abs_error"
PEER = None  # tabular RL has no external peer: the exact DP solution is the reference

ON_POLICY = {
    "sarsa": lambda env, cfg, seed, **kw: td.sarsa(env, cfg.episodes, cfg.alpha, cfg.epsilon,
                                                   seed, **kw),
    "expected_sarsa": lambda env, cfg, seed, **kw: td.expected_sarsa(
        env, cfg.episodes, cfg.alpha, cfg.epsilon, seed, **kw),
    "n_step_sarsa": lambda env, cfg, seed, **kw: td.n_step_sarsa(
        env, cfg.episodes, cfg.alpha, cfg.epsilon, seed, n=cfg.n, **kw),
    "q_learning": lambda env, cfg, seed, **kw: td.q_learning(
        env, cfg.episodes, cfg.alpha, cfg.epsilon, seed, **kw),
}


def _episodes_to_optimal(fraction) -> int:
    """First episode after which every greedy action stays optimal (len + 1 if never)."""
    fraction = np.asarray(fraction)
    bad = np.flatnonzero(fraction < 1.0)
    return 1 if bad.size == 0 else int(bad[-1] + 2)


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        env = textbook_5x5(rewards=(-1.0, config.r_forbidden, 1.0, 0.0))
        exact = value_iteration(env, tol=1e-12)
        ref = dict(v_star=exact.v, q_star=exact.q)
        schedule = dict(episode_length=config.episode_length, epsilon_final=0.0,
                        decay_fraction=0.5, exploring_starts=True)
        seeds = [int(s) for s in run.rng.integers(0, 2**31, size=config.seeds)]
        run.log(f"v* range [{exact.v.min():.2f}, {exact.v.max():.2f}], seeds {seeds}")

        # --- on-policy control, side by side --------------------------------------------------
        finals, curves_err, curves_frac, curves_ret = {}, {}, {}, {}
        for name, fn in run.track(ON_POLICY.items(), "on-policy control"):
            sols, t0 = [], time.perf_counter()
            for seed in seeds:
                sols.append(fn(env, config, seed, **schedule, **ref))
            elapsed = time.perf_counter() - t0
            steps = len(seeds) * config.episodes * config.episode_length
            finals[name] = sols[0]
            err = np.median([s.history["v_error"] for s in sols], axis=0)
            curves_err[name] = err
            curves_frac[name] = np.median([s.history["optimal_fraction"] for s in sols], axis=0)
            curves_ret[name] = np.median([s.history["return"] for s in sols], axis=0)
            to_opt = [_episodes_to_optimal(s.history["optimal_fraction"]) for s in sols]
            run.log_metrics({
                f"{name}/v_max_abs_error": float(np.median([s.history["v_error"][-1]
                                                            for s in sols])),
                f"{name}/optimal_fraction": float(np.median([s.history["optimal_fraction"][-1]
                                                             for s in sols])),
                f"{name}/episodes_to_optimal": float(np.median(to_opt)),
                f"{name}/env_steps_per_s": steps / elapsed,
            })
            run.log(f"{name}: error {err[-1]:.2e}, optimal from episode {np.median(to_opt):.0f}")

        # --- off-policy Q-learning from a uniformly random behaviour ------------------------------
        uniform = np.full((env.n_states, env.n_actions), 1 / env.n_actions)
        off = [td.q_learning_offpolicy(env, uniform, config.offpolicy_episodes, 0.5, seed,
                                       episode_length=50, **ref) for seed in seeds]
        curves_err["q_learning_offpolicy"] = np.median([s.history["v_error"] for s in off], axis=0)
        q_err = float(np.median([np.abs(s.q - exact.q).max() for s in off]))
        run.log_metrics({
            "q_learning_offpolicy/q_max_abs_error": q_err,
            "q_learning_offpolicy/v_max_abs_error": float(np.median(
                [s.history["v_error"][-1] for s in off])),
            "q_learning_offpolicy/optimal_fraction": float(np.median(
                [s.history["optimal_fraction"][-1] for s in off])),
        })

        fig = values_figure(env, [(r"exact $v^*$, $\pi^*$ (value iteration)", exact.v,
                                   exact.policy),
                                  ("Sarsa", finals["sarsa"].v, finals["sarsa"].policy),
                                  ("Q-learning", finals["q_learning"].v,
                                   finals["q_learning"].policy),
                                  ("Q-learning, off-policy", off[0].v, off[0].policy)])
        run.save_figure(fig, "values")

        fig, axes = new_figure(2, 2, size="column_grid")
        axes = axes.ravel()
        on_x = np.arange(1, config.episodes + 1)
        xs = {k: on_x for k in ON_POLICY} | {
            "q_learning_offpolicy": np.arange(1, config.offpolicy_episodes + 1) * 50
            / config.episode_length}
        curves(axes[0], xs, {k: np.maximum(v, 1e-12) for k, v in curves_err.items()},
               xlabel="episodes (off-policy: 20-step equivalents)",
               ylabel=Q_ERROR + " (median)", log=True, legend=False)
        curves(axes[1], on_x, curves_frac, xlabel="episodes",
               ylabel="states with an optimal\ngreedy action (fraction)", legend=False)
        curves(axes[2], on_x, curves_ret, xlabel="episodes",
               ylabel="reward per episode (median)", smooth=max(1, config.episodes // 100),
               legend=False)
        axes[3].set_axis_off()
        axes[3].legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=10)
        fig.tight_layout()
        run.save_figure(fig, "learning_curves")

        # --- TD(0) evaluation of the uniform policy --------------------------------------------
        v_uniform = evaluate_policy(env, uniform)
        td0_curves = {}
        for alpha in config.td0_alphas:
            est = [td.td0(env, uniform, config.td0_episodes, alpha, 100, seed, v_true=v_uniform)
                   for seed in seeds]
            td0_curves[rf"$\alpha = {alpha}$"] = np.median([e.history["v_error"] for e in est],
                                                           axis=0)
        est = [td.td0(env, uniform, config.td0_episodes, 0.2, 100, seed, alpha_final=0.002,
                      v_true=v_uniform) for seed in seeds]
        decayed = r"$\alpha$ decayed 0.2 $\to$ 0.002"
        td0_curves[decayed] = np.median([e.history["v_error"] for e in est], axis=0)
        run.log_metrics({"td0/v_max_abs_error": float(td0_curves[decayed][-1])})
        fig, ax = new_figure()
        curves(ax, np.arange(1, config.td0_episodes + 1), td0_curves, xlabel="episodes (100 steps)",
               ylabel=r"$\|v - v_\pi\|_\infty$ (median)", log=True)
        ax.set_title("TD(0) evaluation of the uniform policy")
        run.save_figure(fig, "td0_step_size")

        # --- sweeps: n and α under a fixed small budget ----------------------------------------
        sweep = dict(schedule, **ref)
        n_err = []
        for n in run.track(config.n_values, "n sweep"):
            n_err.append(np.median([td.n_step_sarsa(env, config.sweep_episodes, config.alpha,
                                                    config.epsilon, seed, n=n, **sweep)
                                    .history["v_error"][-1] for seed in seeds]))
        fig, ax = new_figure()
        ax.plot(config.n_values, np.maximum(n_err, 1e-12), "o-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("$n$ (steps in the return)")
        ax.set_ylabel(f"{Q_ERROR} after {config.sweep_episodes} episodes")
        ax.set_title("$n$-step Sarsa")
        run.save_figure(fig, "n_step")
        for n, e in zip(config.n_values, n_err, strict=True):
            run.log_metrics({f"n_step_sweep/n{n}_v_max_abs_error": e})

        fig, ax = new_figure()
        for name in ("sarsa", "q_learning"):
            errs = [np.median([ON_POLICY[name](env, _with(config, config.sweep_episodes, a), seed,
                                               **sweep).history["v_error"][-1]
                               for seed in seeds]) for a in config.sweep_alphas]
            ax.plot(config.sweep_alphas, np.maximum(errs, 1e-12), "o-",
                    label=learner_label(name))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"step size $\alpha$")
        ax.set_ylabel(f"{Q_ERROR} after {config.sweep_episodes} episodes")
        ax.legend()
        run.save_figure(fig, "step_size")
    return run.result


def _with(config: Config, episodes: int, alpha: float) -> Config:
    import dataclasses

    return dataclasses.replace(config, episodes=episodes, alpha=alpha)
