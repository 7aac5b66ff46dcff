"""Policy-gradient, actor-critic and DQN learners: samples until the greedy policy is optimal.

For REINFORCE (tabular softmax, per-state baseline and decaying entropy bonus), QAC (baseline
and entropy), A2C and off-policy actor-critic (entropy), and DQN, on the textbook 5x5 grid and
the 10x10 layout of ``rl_tabular.py``: the episodes and env steps until the greedy policy is
q*-optimal in every state and stays so at every later evaluation point (40 per run; median over
5 seeds; ``None`` where a seed was still suboptimal at the end of its budget), and the wall time
per 1e5 env steps of each learner (JIT compile excluded: one warm-up call first).
There is no external peer; the reference is the exact DP solution (value iteration).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepnotes.core.bench import bench_main
from deepnotes.rl import actor_critic as ac
from deepnotes.rl import policy_gradient as pg
from deepnotes.rl import vfa
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import suboptimal_states, value_iteration

#: The topics whose posts quote this benchmark (`deepnotes bench SLUG` finds it).
TOPICS = ("policy-gradient", "actor-critic")

sys.path.insert(0, str(Path(__file__).parent))
from rl_tabular import grid_10x10  # noqa: E402  (the benchmarks share one 10x10 layout)

LAYOUTS = {"5x5": textbook_5x5, "10x10": grid_10x10}
EVALUATIONS = 40

# name: (budget in updates on 5x5, env steps per update, runner(env, budget, seed, every, cb))
LEARNERS = {
    "reinforce": (8000, 4 * 50, lambda env, n, seed, every, cb: pg.reinforce(
        env, np.eye(env.n_states), n, 1.0, 50, seed, batch=4, entropy=1.0, state_baseline=0.2,
        eval_every=every, callback=cb)),
    "qac": (60_000, 30, lambda env, n, seed, every, cb: ac.actor_critic(
        env, "qac", n, 0.1, 0.05, 30, seed, entropy=1.0, baseline=True, eval_every=every,
        callback=cb)),
    "a2c": (10_000, 30, lambda env, n, seed, every, cb: ac.actor_critic(
        env, "a2c", n, 0.5, 0.1, 30, seed, entropy=1.0, eval_every=every, callback=cb)),
    "off_policy_ac": (10_000, 30, lambda env, n, seed, every, cb: ac.actor_critic(
        env, "off_policy", n, 0.5, 0.1, 30, seed, entropy=1.0, eval_every=every, callback=cb)),
}


def _first_always_optimal(points: list[tuple[int, int]]) -> int | None:
    """``points``: (updates done, number of suboptimal states). The first update count from
    which every later point is optimal, or None if the last one is not."""
    if not points or points[-1][1] > 0:
        return None
    first = points[-1][0]
    for k, bad in reversed(points):
        if bad > 0:
            break
        first = k
    return first


def _median(values):
    m = float(np.median([np.inf if v is None else v for v in values]))
    return None if np.isinf(m) else m


def _softmax_to_optimal(env, name: str, budget: int, seeds) -> dict:
    _, steps_per_update, runner = LEARNERS[name]
    exact = value_iteration(env, tol=1e-12)
    phi = np.eye(env.n_states)
    found, walls, final = [], [], []
    for seed in seeds:
        points: list[tuple[int, int]] = []

        def record(k, theta, points=points):
            points.append((k, len(suboptimal_states(exact.q, pg.softmax_policy(phi, theta)))))

        t0 = time.perf_counter()
        runner(env, budget, seed, budget // EVALUATIONS, record)
        walls.append(time.perf_counter() - t0)
        found.append(_first_always_optimal(points))
        final.append(points[-1][1])
    per_update_s = np.median(walls) / budget  # includes the 40 exact evaluations (small)
    batch = 4 if name == "reinforce" else 1
    return {
        "updates_median": _median(found),
        "episodes_median": None if _median(found) is None else _median(found) * batch,
        "env_steps_median": None if _median(found) is None
        else _median(found) * steps_per_update,
        "per_seed_updates": found, "budget_updates": budget,
        "per_seed_final_suboptimal_states": final,
        "s_per_1e5_env_steps": float(per_update_s / steps_per_update * 1e5),
    }


def _dqn_to_optimal(env, seeds, iterations: int) -> dict:
    exact = value_iteration(env, tol=1e-12)
    found, walls, final = [], [], []
    for seed in seeds:
        t0 = time.perf_counter()
        sol = vfa.dqn(env, iterations, seed=seed, eval_every=max(1, iterations // EVALUATIONS),
                      v_star=exact.v, q_star=exact.q)
        walls.append(time.perf_counter() - t0)
        frac = sol.history["optimal_fraction"]
        points = [(k, 0 if f == 1.0 else 1)
                  for k, f in zip(sol.history["iteration"], frac, strict=True)]
        found.append(_first_always_optimal(points))
        final.append(len(suboptimal_states(exact.q, sol.policy)))
    return {"gradient_steps_median": _median(found), "per_seed_gradient_steps": found,
            "per_seed_final_suboptimal_states": final,
            "budget_gradient_steps": iterations, "wall_s_median": float(np.median(walls)),
            "note": "learns from 2,000 fixed transitions of a uniform behaviour policy"}


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    seeds = range(1) if quick else range(5)
    t0 = time.perf_counter()
    for name in LEARNERS:  # JIT warm-up, excluded from the timings
        LEARNERS[name][2](textbook_5x5(), 8, 0, 4, None)
    figures: dict = {"layouts": {}}
    for layout, make in LAYOUTS.items():
        if quick and layout != "5x5":
            continue
        env = make()
        scale = 1 if layout == "5x5" else 4
        # quick: 1/20 of the budget, a check that the script runs, not a result
        rows = {name: _softmax_to_optimal(env, name, budget * scale // (20 if quick else 1),
                                          seeds)
                for name, (budget, _, _) in LEARNERS.items()}
        rows["dqn"] = _dqn_to_optimal(env, seeds, 200 if quick else 4000)
        figures["layouts"][layout] = {"states": env.n_states, "learners": rows}
    figures["settings"] = (
        "REINFORCE: tabular softmax, alpha 1, 4 episodes of 50 steps per update, per-state "
        "baseline c=0.2, entropy 1 decayed to 0; QAC: alpha_theta 0.1, alpha_w 0.05, baseline, "
        "entropy 1; A2C / off-policy AC (uniform behaviour): 0.5 / 0.1, entropy 1; episodes of "
        "30 steps from uniform starts; budgets 4x larger on 10x10; DQN: vfa.dqn defaults")
    figures["wall_s"] = time.perf_counter() - t0
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
