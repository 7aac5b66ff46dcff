"""Value-function approximation on the 5x5 grid world, every learner checked against exact answers.

Figures: ``approximation_error`` (TD-linear evaluation of the uniform policy: ‖Φw − v_π‖∞ of the
learned weights and of the exact TD fixed point against the number of features, per feature
type), ``td_linear_values`` (v_π beside TD-linear's estimates with three feature sets),
``td_linear_curves`` (distance to the exact fixed point against episodes), ``values`` (exact v*
and π* beside linear Sarsa, linear Q-learning and DQN), ``control_curves`` (‖max_a q − v*‖∞ and the
fraction of optimal greedy actions for linear Sarsa / Q-learning) and ``dqn`` (loss and error
against gradient steps). Headline: DQN's ‖q − q*‖∞, median over seeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.experiments._gridworld_plots import Q_ERROR, curves, values_figure
from deepnotes.rl import vfa
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import evaluate_policy, value_iteration


@dataclass
class Config(ExperimentConfig):
    td_episodes: int = 20_000
    """Episodes (of ``episode_length`` steps, uniform policy) per TD-linear run."""
    episode_length: int = 100
    """Steps per TD-linear episode."""
    alpha: float = 0.2
    """TD-linear step size at the start, divided by max_s ‖φ(s)‖²; decays linearly."""
    alpha_final: float = 0.0005
    """TD-linear step size at the end (also divided by max_s ‖φ(s)‖²)."""
    polynomial_orders: tuple[int, ...] = (1, 2, 3, 4, 5)
    """Degrees of the polynomial features."""
    fourier_orders: tuple[int, ...] = (1, 2, 3, 4)
    """Orders of the Fourier features (order 4 spans every function on the 5x5 grid)."""
    tile_sizes: tuple[int, ...] = (1, 2, 3, 4)
    """Tiles per dimension of the tile coding (4 tilings each)."""
    seeds: int = 5
    """Independent runs per learner; metrics are medians."""
    control_features: tuple[str, ...] = ("fourier:3", "tile:4")
    """Feature sets (kind:order) for linear Sarsa and Q-learning."""
    control_episodes: int = 20_000
    """Episodes of 20 steps per linear control run (exploring starts, ε 0.2 → 0 over half)."""
    control_alpha: float = 0.3
    """Linear control step size at the start, divided by max_s ‖φ(s)‖²; decays to 1/30 of it."""
    dqn_iterations: int = 4000
    """DQN gradient steps."""
    dqn_transitions: int = 2000
    """Replay buffer size: transitions of the uniformly random behaviour."""


PRESETS = make_presets(
    smoke=Config(td_episodes=300, polynomial_orders=(1, 2), fourier_orders=(1, 2),
                 tile_sizes=(1, 2), seeds=1, control_episodes=300, dqn_iterations=100),
    quick=Config(td_episodes=5000, seeds=2, control_episodes=5000, dqn_iterations=2000),
    full=Config(),
)
HEADLINE = "dqn/q_max_abs_error"
PEER = None  # the exact DP solution and the exact TD fixed point are the references


def _features_words(kind: str, order) -> str:
    """A feature set as a reader should see it in a legend or title."""
    return {"polynomial": f"polynomial, degree {order}", "fourier": f"Fourier, order {order}",
            "tile": f"tile coding, {order}×{order} tiles"}.get(kind, f"{kind} {order}")


def _feature_sets(config: Config):
    yield from (("polynomial", o) for o in config.polynomial_orders)
    yield from (("fourier", o) for o in config.fourier_orders)
    yield from (("tile", o) for o in config.tile_sizes)


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(1)
        env = textbook_5x5()
        S, A = env.n_states, env.n_actions
        exact = value_iteration(env, tol=1e-12)
        uniform = np.full((S, A), 1 / A)
        v_pi = evaluate_policy(env, uniform)
        D = vfa.visitation_distribution(env, uniform, config.episode_length)
        seeds = [int(s) for s in run.rng.integers(0, 2**31, size=config.seeds)]
        run.log(f"v_uniform range [{v_pi.min():.2f}, {v_pi.max():.2f}], seeds {seeds}")

        # --- TD-linear evaluation of the uniform policy ----------------------------------------
        by_kind: dict[str, list] = {}
        estimates, fp_curves, fp_styles = {}, {}, {}
        for kind, order in run.track(list(_feature_sets(config)), "TD-linear"):
            phi = vfa.make_features(env, kind, order)
            n2 = (phi ** 2).sum(axis=1).max()
            v_fp = phi @ vfa.td_fixed_point(env, uniform, phi, D)
            ests = [vfa.td_linear(env, uniform, phi, config.td_episodes, config.alpha / n2,
                                  config.episode_length, seed,
                                  alpha_final=config.alpha_final / n2, v_true=v_fp)[1]
                    for seed in seeds]
            learned = float(np.median([np.abs(e.v - v_pi).max() for e in ests]))
            gap = float(np.median([np.abs(e.v - v_fp).max() for e in ests]))
            fp_err = float(np.abs(v_fp - v_pi).max())
            by_kind.setdefault(kind, []).append((phi.shape[1], learned, fp_err))
            key = f"{kind}{order}"
            estimates[key] = ests[0].v
            words = f"{_features_words(kind, order)} ($d = {phi.shape[1]}$)"
            fp_curves[words] = np.median([e.history["v_error"] for e in ests], axis=0)
            # one line style per feature family, one colour per size within it
            fp_styles[words] = (PALETTE[len(by_kind[kind]) - 1],
                                {"polynomial": "-", "fourier": "--"}.get(kind, ":"))
            run.log_metrics({f"td_linear/{key}_v_max_abs_error": learned,
                             f"td_linear/{key}_fixed_point_v_max_abs_error": fp_err,
                             f"td_linear/{key}_gap_to_fixed_point": gap})
            run.log(f"{key}: d={phi.shape[1]} learned {learned:.3f}, fixed point {fp_err:.3f}, "
                    f"gap {gap:.3f}")

        fig, ax = new_figure()
        for i, (kind, rows) in enumerate(by_kind.items()):
            d, learned, fp = np.array(rows).T
            # Complete feature sets have an exact zero error: draw it at 1e-3 to keep the scale.
            words = {"polynomial": "polynomial", "fourier": "Fourier", "tile": "tile coding"}
            name = words.get(kind, kind)
            ax.plot(d, np.maximum(fp, 1e-3), "-", color=PALETTE[i],
                    label=f"{name}: TD fixed point")
            ax.plot(d, learned, "o", color=PALETTE[i], label=f"{name}: TD-linear (median)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of features $d$")
        ax.set_ylabel(r"$\|\hat v - v_\pi\|_\infty$ (0 drawn at $10^{-3}$)")
        ax.set_title("Evaluating the uniform policy")
        ax.legend(fontsize=9)
        run.save_figure(fig, "approximation_error")

        panels = [(r"exact $v_\pi$ (uniform policy)", v_pi, None)]
        for kind, order in (("polynomial", 1), ("fourier", 2), ("tile", config.tile_sizes[-1])):
            if f"{kind}{order}" in estimates:
                panels.append(("TD-linear,\n" + _features_words(kind, order),
                               estimates[f"{kind}{order}"], None))
        run.save_figure(values_figure(env, panels), "td_linear_values")

        fig, ax = new_figure(size="column_tall", layout="constrained")
        for words, y in fp_curves.items():
            color, ls = fp_styles[words]
            ax.plot(np.arange(1, len(y) + 1), y, color=color, ls=ls, lw=1.0, label=words)
        ax.set_yscale("log")
        ax.set_xlabel(f"episodes ({config.episode_length} steps)")
        ax.set_ylabel(r"$\|\Phi w - \Phi w^*\|_\infty$ (median)")
        ax.set_title("TD-linear: distance to the exact fixed point")
        ax.xaxis.set_major_locator(MaxNLocator(5))  # 7-in column: five-digit ticks collide
        fig.legend(loc="outside right center", fontsize=9)
        run.save_figure(fig, "td_linear_curves")

        # --- linear Sarsa and Q-learning ---------------------------------------------------------
        ref = dict(v_star=exact.v, q_star=exact.q)
        panels = [(r"exact $v^*$, $\pi^*$", exact.v, exact.policy)]
        err_curves, frac_curves, legend_words = {}, {}, {}
        for spec in config.control_features:
            kind, order = spec.split(":")
            phi = vfa.make_features(env, kind, int(order))
            n2 = (phi ** 2).sum(axis=1).max()
            for name, fn in (("linear_sarsa", vfa.linear_sarsa),
                             ("linear_q_learning", vfa.linear_q_learning)):
                sols = [fn(env, phi, config.control_episodes, config.control_alpha / n2, 0.2,
                           seed, episode_length=20, epsilon_final=0.0, decay_fraction=0.5,
                           exploring_starts=True, alpha_final=config.control_alpha / 30 / n2,
                           **ref) for seed in seeds]
                key = f"{name}_{kind}{order}"
                err_curves[key] = np.median([s.history["v_error"] for s in sols], axis=0)
                frac_curves[key] = np.median([s.history["optimal_fraction"] for s in sols],
                                             axis=0)
                run.log_metrics({
                    f"{key}/v_max_abs_error": float(err_curves[key][-1]),
                    f"{key}/optimal_fraction": float(frac_curves[key][-1])})
                learner = {"linear_sarsa": "linear Sarsa",
                           "linear_q_learning": "linear Q-learning"}[name]
                words = f"{learner},\n{_features_words(kind, order)}"
                legend_words[key] = words.replace("\n", " ")
                panels.append((words, sols[0].v, sols[0].policy))
        fig, axes = new_figure(1, 2, size="column_tall", layout="constrained")
        x = np.arange(1, config.control_episodes + 1)
        curves(axes[0], x, {legend_words[k]: np.maximum(v, 1e-12) for k, v in err_curves.items()},
               xlabel="episodes (20 steps)", ylabel=Q_ERROR + " (median)", log=True,
               legend=False)
        curves(axes[1], x, {legend_words[k]: v for k, v in frac_curves.items()},
               xlabel="episodes (20 steps)",
               ylabel="states with an optimal greedy action (fraction)", legend=False)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2,
                   fontsize=9)
        run.save_figure(fig, "control_curves")

        # --- DQN ---------------------------------------------------------------------------------
        t0 = time.perf_counter()
        # TD-linear and linear control above are numba kernels on the CPU; DQN's MLP runs on
        # run.device
        dqns = [vfa.dqn(env, config.dqn_iterations, n_transitions=config.dqn_transitions,
                        seed=seed, eval_every=max(1, config.dqn_iterations // 40),
                        device=run.device, **ref)
                for seed in run.track(seeds, "DQN")]
        elapsed = time.perf_counter() - t0
        run.log_metrics({
            "dqn/q_max_abs_error": float(np.median([np.abs(d.q - exact.q).max() for d in dqns])),
            "dqn/v_max_abs_error": float(np.median([d.history["v_error"][-1] for d in dqns])),
            "dqn/optimal_fraction": float(np.median([d.history["optimal_fraction"][-1]
                                                     for d in dqns])),
            "dqn/seconds_per_run": elapsed / len(dqns)})
        panels.append(("DQN", dqns[0].v, dqns[0].policy))
        run.save_figure(values_figure(env, panels), "values")
        fig, axes = new_figure(1, 3, size=(7.0, 2.8), layout="constrained")
        it = dqns[0].history["iteration"]
        curves(axes[0], it, {"loss": np.median([d.history["loss"] for d in dqns], axis=0)},
               xlabel="gradient steps", ylabel="TD loss (median)", log=True, legend=False)
        curves(axes[1], it, {"error": np.median([d.history["v_error"] for d in dqns], axis=0)},
               xlabel="gradient steps", ylabel=Q_ERROR + " (median)", log=True, legend=False)
        curves(axes[2], it, {"optimal fraction": np.median(
            [d.history["optimal_fraction"] for d in dqns], axis=0)},
               xlabel="gradient steps", ylabel="optimal greedy actions (fraction)",
               legend=False)
        run.save_figure(fig, "dqn")
    return run.result
