"""TRPO against sb3-contrib's TRPO on CartPole-v1 and Pendulum-v1: final return and wall time.

Ours (:func:`deepnotes.rl.trpo.trpo`) and sb3-contrib's ``TRPO`` train with the same settings:
separate policy and value MLPs of two hidden layers of 64 tanh units (orthogonal init in both),
one environment, 1,024 env steps per update, δ = 0.01, 15 conjugate-gradient iterations with
damping 0.1, backtracking by 0.8 for at most 10 tries, GAE λ = 0.95, normalised advantages,
Fisher products on the whole batch (sb3's ``sub_sampling_factor=1``), value net by Adam at 1e-3 on
mini-batches of 128 (10 passes per update on CartPole-v1, γ = 0.99; 20 passes on Pendulum-v1,
γ = 0.9, RL Zoo's TRPO setting without gSDE). Same seeds and step budgets, one torch thread each;
runs are interleaved (for each seed and env: ours, then sb3) so load changes on the shared
machine hit both alike, and ``os.getloadavg()`` is recorded around each run. The final
deterministic policy of each run is evaluated by the same loop on the same 10 episode seeds. Wall
time is that of training alone, per 1e4 env steps.

    python benchmarks/trpo.py [--quick]
"""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np
import torch

from deepnotes.core.bench import bench_main
from deepnotes.rl import trpo as ours

EVAL_EPISODES = 10
EVAL_SEED = 5_000_000
SETTINGS = {
    "CartPole-v1": {"gamma": 0.99, "vf_epochs": 10},
    "Pendulum-v1": {"gamma": 0.9, "vf_epochs": 20},
}
COMMON = {"n_steps": 1024, "max_kl": 0.01, "gae_lambda": 0.95, "cg_iters": 15,
          "cg_damping": 0.1, "vf_lr": 1e-3, "vf_batch_size": 128}


def _eval(policy, env_id: str) -> np.ndarray:
    """Returns of ``policy(obs) -> action`` on EVAL_EPISODES fixed-seed episodes."""
    env = gym.make(env_id)
    out = np.zeros(EVAL_EPISODES)
    for i in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=EVAL_SEED + i)
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs))
            out[i] += float(r)
            done = term or trunc
    return out


def _ours(env_id: str, steps: int, seed: int) -> tuple[float, np.ndarray]:
    res = ours.trpo(env_id, steps, seed, eval_episodes=1, **COMMON, **SETTINGS[env_id])
    pol = res.policy

    @torch.no_grad()
    def policy(obs):
        a = pol(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
        return int(a) if a.ndim == 0 else a

    return res.train_time_s, _eval(policy, env_id)


def _sb3(env_id: str, steps: int, seed: int) -> tuple[float, np.ndarray]:
    from sb3_contrib import TRPO

    s = SETTINGS[env_id]
    model = TRPO("MlpPolicy", gym.make(env_id), learning_rate=COMMON["vf_lr"],
                 n_steps=COMMON["n_steps"], batch_size=COMMON["vf_batch_size"],
                 gamma=s["gamma"], cg_max_steps=COMMON["cg_iters"],
                 cg_damping=COMMON["cg_damping"], line_search_shrinking_factor=0.8,
                 line_search_max_iter=10, n_critic_updates=s["vf_epochs"],
                 gae_lambda=COMMON["gae_lambda"], normalize_advantage=True,
                 target_kl=COMMON["max_kl"], sub_sampling_factor=1,
                 policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]},
                                "activation_fn": torch.nn.Tanh},
                 seed=seed, verbose=0, device="cpu")
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    return wall, _eval(lambda obs: model.predict(obs, deterministic=True)[0], env_id)


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    # Whole multiples of n_steps: sb3 always finishes its last rollout (it would overshoot a
    # budget that is not a multiple), ours would cut its last one short; this way both do the
    # same updates on the same number of steps.
    n = COMMON["n_steps"]
    budgets = ({"CartPole-v1": 4 * n, "Pendulum-v1": 2 * n} if quick
               else {"CartPole-v1": 49 * n, "Pendulum-v1": 30 * n})
    seeds = (0, 1, 2)
    rows: dict = {}
    loads = []
    for seed in seeds:
        for env_id, steps in budgets.items():
            for lib, fn in (("ours", _ours), ("sb3", _sb3)):
                load0 = os.getloadavg()[0]
                wall, rets = fn(env_id, steps, seed)
                loads.append((load0, os.getloadavg()[0]))
                row = rows.setdefault((env_id, lib), {"final_return": [], "wall_s": []})
                row["final_return"].append(float(rets.mean()))
                row["wall_s"].append(wall)
                print(f"{env_id} {lib} seed {seed}: return {rets.mean():.1f}, {wall:.1f} s, "
                      f"load {load0:.1f}", flush=True)
    figures: dict = {"budgets": budgets, "seeds": list(seeds), "eval_episodes": EVAL_EPISODES,
                     "common": COMMON, "settings": SETTINGS, "rows": {},
                     "loadavg_1min_before_after": loads}
    for (env_id, lib), row in rows.items():
        r, w = np.array(row["final_return"]), np.array(row["wall_s"])
        key = env_id.split("-")[0].lower()
        figures["rows"].setdefault(key, {})[lib] = {
            "final_return_mean": float(r.mean()), "final_return_sd": float(r.std(ddof=1)),
            "final_return_per_seed": r.tolist(),
            "wall_s_per_1e4_steps": float(1e4 * w.mean() / budgets[env_id]),
            "wall_s_per_seed": w.tolist()}
    for pair in figures["rows"].values():
        a, b = pair["ours"], pair["sb3"]
        # paired by seed: both ran back to back under the same load
        ratios = np.array(a["wall_s_per_seed"]) / np.array(b["wall_s_per_seed"])
        pair["time_ratio_ours_over_sb3"] = float(np.mean(ratios))
        pair["return_diff_ours_minus_sb3"] = a["final_return_mean"] - b["final_return_mean"]
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
