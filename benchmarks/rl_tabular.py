"""Tabular RL throughput: env steps per second of the numba TD learners, and the samples they need.

For Q-learning, Sarsa and TD(0) on the textbook 5x5 grid and a 10x10 layout defined here:
steady-state env steps per second on one core (JIT compile excluded and measured separately in a
fresh process with an empty numba cache), wall time per 1e5 env steps, and the episodes / env
steps until the greedy policy is optimal in every state and stays so (median over 5 seeds).
There is no external peer for these kernels; the reference is the exact DP solution.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from deepnotes.core.bench import bench_main, time_call
from deepnotes.rl import td
from deepnotes.rl.envs import GridWorld, textbook_5x5
from deepnotes.rl.planning import value_iteration


def grid_10x10() -> GridWorld:
    """A 10x10 layout: two forbidden walls with gaps and a target in the lower right quarter."""
    forbidden = [(2, c) for c in range(1, 8)] + [(r, 5) for r in range(4, 9) if r != 6]
    forbidden += [(6, 1), (7, 2), (8, 8)]
    return GridWorld(10, 10, forbidden=forbidden, target=(7, 7), rewards=(-1, -1, 1, 0), gamma=0.9)


LAYOUTS = {"5x5": textbook_5x5, "10x10": grid_10x10}

_COMPILE_SNIPPET = """
import time, numpy as np
t0 = time.perf_counter()
from deepnotes.rl import td
from deepnotes.rl.envs import textbook_5x5
env = textbook_5x5()
t1 = time.perf_counter()
td.q_learning(env, 1, episode_length=1)
t2 = time.perf_counter()
td.td0(env, np.zeros(25, dtype=np.int64), 1, episode_length=1)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def _compile_times() -> dict:
    """First-call times in a fresh interpreter with an empty cache (compile) and a warm one."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold_cache", "warm_cache"):
            res = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET], env=env, check=True,
                                 capture_output=True, text=True)
            imp, ctrl, td0 = map(float, res.stdout.split())
            out[label] = {"import_s": imp, "td_control_first_call_s": ctrl,
                          "td0_first_call_s": td0}
    return out


def _throughput(env, name: str, steps: int) -> dict:
    S, A = env.n_states, env.n_actions
    L = 100
    episodes = max(1, steps // L)
    uniform = np.full((S, A), 1 / A)
    calls = {
        "q_learning": lambda: td.q_learning(env, episodes, 0.1, 0.1, 0, episode_length=L),
        "sarsa": lambda: td.sarsa(env, episodes, 0.1, 0.1, 0, episode_length=L),
        "td0": lambda: td.td0(env, uniform, episodes, 0.1, L, 0),
    }
    t = time_call(calls[name], repeat=5, warmup=1)
    n = episodes * L
    return {"env_steps": n, "best_s": t["best_s"], "median_s": t["median_s"],
            "env_steps_per_s": n / t["best_s"], "s_per_1e5_steps": t["best_s"] * 1e5 / n}


def _to_optimal(env, name: str, episodes: int, seeds=range(5)) -> dict:
    exact = value_iteration(env, tol=1e-12)
    fn = {"q_learning": td.q_learning, "sarsa": td.sarsa}[name]
    L = 20
    found = []
    for seed in seeds:
        sol = fn(env, episodes, 0.3, 0.2, seed, episode_length=L, epsilon_final=0.0,
                 decay_fraction=0.5, exploring_starts=True, q_star=exact.q)
        frac = np.asarray(sol.history["optimal_fraction"])
        bad = np.flatnonzero(frac < 1.0)
        found.append(None if frac[-1] < 1.0 else int(0 if bad.size == 0 else bad[-1] + 1) + 1)
    # None: not optimal within the budget (counted as infinitely many episodes in the median)
    med = float(np.median([np.inf if f is None else f for f in found]))
    med = None if np.isinf(med) else med
    return {"episodes_median": med, "env_steps_median": None if med is None else med * L,
            "per_seed": found,
            "budget_episodes": episodes, "episode_length": L,
            "settings": "alpha 0.3, epsilon 0.2 -> 0 over half the budget, exploring starts"}


def run(quick: bool = False) -> dict:
    steps = 20_000 if quick else 2_000_000
    budget = {"5x5": 2000 if quick else 20_000, "10x10": 4000 if quick else 100_000}
    t0 = time.perf_counter()
    figures: dict = {"compile": {} if quick else _compile_times(), "layouts": {}}
    for layout, make in LAYOUTS.items():
        env = make()
        figures["layouts"][layout] = {
            "states": env.n_states,
            "throughput": {n: _throughput(env, n, steps) for n in ("q_learning", "sarsa", "td0")},
            "to_optimal": {n: _to_optimal(env, n, budget[layout]) for n in ("q_learning", "sarsa")},
        }
    figures["target_env_steps_per_s"] = 1e5
    figures["wall_s"] = time.perf_counter() - t0
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
