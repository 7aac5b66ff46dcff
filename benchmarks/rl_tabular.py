"""Tabular RL throughput: env steps per second of the numba TD learners, and the samples they need.

For every tabular learner (TD control, off-policy Q-learning, MC; TD(0) for throughput) on the
textbook 5x5 grid and a 10x10 layout defined here:
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
from deepnotes.rl import mc, td
from deepnotes.rl.envs import GridWorld, textbook_5x5
from deepnotes.rl.planning import value_iteration

#: The topics whose posts quote this benchmark (`deepnotes bench SLUG` finds it).
TOPICS = ("monte-carlo-rl", "temporal-difference")

def grid_10x10() -> GridWorld:
    """A 10x10 layout: two forbidden walls with gaps and a target in the lower right quarter."""
    forbidden = [(2, c) for c in range(1, 8)] + [(r, 5) for r in range(4, 9) if r != 6]
    forbidden += [(6, 1), (7, 2), (8, 8)]
    return GridWorld(10, 10, forbidden=forbidden, target=(7, 7), rewards=(-1, -1, 1, 0), gamma=0.9)


LAYOUTS = {"5x5": textbook_5x5, "10x10": grid_10x10}

_COMPILE_SNIPPET = """
import time, numpy as np
t0 = time.perf_counter()
from deepnotes.rl import mc, td
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


def _learners(env) -> dict:
    """Every tabular control learner, with the settings used to count samples to optimality.

    Each entry maps (episodes, seed, q_star) to a Solution. TD learners: alpha 0.3, epsilon
    0.2 -> 0 over half the budget, exploring starts; off-policy Q-learning learns from uniformly
    random behaviour; MC Exploring Starts updates with a constant step 0.1 (sample averages keep
    the returns of early, poor policies for ever); MC epsilon-greedy keeps epsilon 0.1 (whose best
    epsilon-greedy policy has an optimal greedy core) with the step 1/n^0.7, and gets
    BUDGET_SCALE times the episode budget of the others.
    """
    S, A = env.n_states, env.n_actions
    uniform = np.full((S, A), 1 / A)
    td_kw = dict(epsilon_final=0.0, decay_fraction=0.5, exploring_starts=True)
    return {
        "q_learning": lambda n, seed, q: td.q_learning(
            env, n, 0.3, 0.2, seed, episode_length=TD_LENGTH, q_star=q, **td_kw),
        "sarsa": lambda n, seed, q: td.sarsa(
            env, n, 0.3, 0.2, seed, episode_length=TD_LENGTH, q_star=q, **td_kw),
        "expected_sarsa": lambda n, seed, q: td.expected_sarsa(
            env, n, 0.3, 0.2, seed, episode_length=TD_LENGTH, q_star=q, **td_kw),
        "n_step_sarsa_3": lambda n, seed, q: td.n_step_sarsa(
            env, n, 0.3, 0.2, seed, n=3, episode_length=TD_LENGTH, q_star=q, **td_kw),
        "q_learning_offpolicy": lambda n, seed, q: td.q_learning_offpolicy(
            env, uniform, n, 0.3, seed, episode_length=TD_LENGTH, q_star=q),
        "mc_exploring_starts": lambda n, seed, q: mc.mc_exploring_starts(
            env, n, TD_LENGTH, True, seed, alpha=0.1, q_star=q),
        "mc_epsilon_greedy": lambda n, seed, q: mc.mc_epsilon_greedy(
            env, n, TD_LENGTH, 0.1, seed, step_power=0.7, q_star=q),
    }


TD_LENGTH = 20
#: MC epsilon-greedy needs far more episodes than the TD learners (see the monte-carlo-rl post).
BUDGET_SCALE = {"mc_epsilon_greedy": 20}
THROUGHPUT = ("q_learning", "sarsa", "expected_sarsa", "n_step_sarsa_3", "mc_exploring_starts")


def _throughput(env, name: str, steps: int) -> dict:
    S, A = env.n_states, env.n_actions
    L = 100
    episodes = max(1, steps // L)
    if name == "td0":
        uniform = np.full((S, A), 1 / A)
        call = lambda: td.td0(env, uniform, episodes, 0.1, L, 0)  # noqa: E731
        n = episodes * L
    else:
        learner = _learners(env)[name]
        sol = learner(1, 0, None)  # one episode: how many env steps an episode costs
        per_episode = int(sol.history["env_steps"][-1])
        episodes = max(1, steps // per_episode)
        call = lambda: learner(episodes, 0, None)  # noqa: E731
        n = episodes * per_episode
    t = time_call(call, repeat=5, warmup=1)
    return {"env_steps": n, "best_s": t["best_s"], "median_s": t["median_s"],
            "env_steps_per_s": n / t["best_s"], "s_per_1e5_steps": t["best_s"] * 1e5 / n}


def _to_optimal(env, name: str, episodes: int, seeds=range(5)) -> dict:
    """Episodes and env steps until the greedy policy is optimal in every state and stays so."""
    exact = value_iteration(env, tol=1e-12)
    learner = _learners(env)[name]
    found, steps = [], []
    for seed in seeds:
        sol = learner(episodes, seed, exact.q)
        frac = np.asarray(sol.history["optimal_fraction"])
        bad = np.flatnonzero(frac < 1.0)
        if frac[-1] < 1.0:
            found.append(None)
            steps.append(None)
            continue
        first = int(0 if bad.size == 0 else bad[-1] + 1)  # index of the first always-optimal one
        found.append(first + 1)
        steps.append(int(sol.history["env_steps"][first]))
    # None: not optimal within the budget (counted as infinitely many in the median)
    def median(values):
        m = float(np.median([np.inf if v is None else v for v in values]))
        return None if np.isinf(m) else m
    return {"episodes_median": median(found), "env_steps_median": median(steps),
            "per_seed_episodes": found, "per_seed_env_steps": steps,
            "budget_episodes": episodes, "episode_length": TD_LENGTH}


def run(quick: bool = False) -> dict:
    steps = 20_000 if quick else 2_000_000
    budget = {"5x5": 2000 if quick else 20_000, "10x10": 4000 if quick else 100_000}
    t0 = time.perf_counter()
    figures: dict = {"compile": {} if quick else _compile_times(), "layouts": {}}
    for layout, make in LAYOUTS.items():
        env = make()
        figures["layouts"][layout] = {
            "states": env.n_states,
            "throughput": {n: _throughput(env, n, steps) for n in (*THROUGHPUT, "td0")},
            "to_optimal": {n: _to_optimal(env, n, budget[layout] * BUDGET_SCALE.get(n, 1))
                           for n in _learners(env)},
        }
    figures["settings"] = " ".join(_learners.__doc__.split("\n\n")[1].split())
    figures["target_env_steps_per_s"] = 1e5
    figures["wall_s"] = time.perf_counter() - t0
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
