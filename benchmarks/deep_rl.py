"""Deep RL against Stable-Baselines3: DDPG and TD3 on Pendulum-v1 (this file's DDPG/TD3 part).

Ours (:mod:`deepnotes.rl.ddpg`) and SB3's DDPG/TD3 train with the same settings: networks of
two hidden layers of 64 ReLU units, Adam at 1e-3 for actor and critic, batch 128, τ = 0.005,
γ = 0.98, uniformly random actions for the first 1,000 steps, Gaussian exploration noise of
0.1 half-range, one gradient step per env step; TD3 with d = 2, σ̃ = 0.2, c = 0.5 (fractions of
the half-range in both libraries, which act in the squashed [−1, 1] space). Same seeds, same step
budgets, one torch thread each, runs interleaved (for each seed and algorithm: ours, then SB3) so
that load changes on the shared machine hit both alike. The final deterministic policy of each
run is evaluated on the same 10 episode seeds by the same loop. Wall time is that of training
alone (no evaluation inside it), per 1e4 env steps; ``os.getloadavg()`` is recorded before and
after each run.

Missing rows (not measured, to keep the total within ~15 minutes on a loaded two-core machine):
MountainCarContinuous-v0.

    python benchmarks/deep_rl.py [--quick]
"""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np
import torch

from deepnotes.core.bench import bench_main
from deepnotes.rl import ddpg as ours

HIDDEN = 64
COMMON = {"batch_size": 128, "tau": 0.005, "gamma": 0.98, "learning_starts": 1_000}
EVAL_EPISODES = 10
EVAL_SEED = 5_000_000


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


def _ours(algo: str, env_id: str, steps: int, seed: int) -> tuple[float, np.ndarray]:
    fn = ours.td3 if algo == "td3" else ours.ddpg
    res = fn(env_id, steps, seed, hidden=(HIDDEN, HIDDEN), actor_lr=1e-3, critic_lr=1e-3,
             noise="gaussian", noise_sigma=0.1, eval_every=0, eval_episodes=1, **COMMON)
    actor = res.actor

    @torch.no_grad()
    def policy(obs):
        return actor(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()

    return res.train_time_s, _eval(policy, env_id)


def _sb3(algo: str, env_id: str, steps: int, seed: int) -> tuple[float, np.ndarray]:
    from stable_baselines3 import DDPG, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make(env_id)
    n = env.action_space.shape[0]
    # SB3 adds the noise to the action in the squashed [-1, 1] space: sigma 0.1 = 0.1 half-range
    noise = NormalActionNoise(np.zeros(n), 0.1 * np.ones(n))
    kw = dict(learning_rate=1e-3, buffer_size=steps, action_noise=noise, train_freq=1,
              gradient_steps=1, policy_kwargs={"net_arch": [HIDDEN, HIDDEN]}, seed=seed,
              verbose=0, device="cpu", **COMMON)
    if algo == "td3":
        model = TD3("MlpPolicy", env, policy_delay=2, target_policy_noise=0.2,
                    target_noise_clip=0.5, **kw)
    else:
        model = DDPG("MlpPolicy", env, **kw)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    return wall, _eval(lambda obs: model.predict(obs, deterministic=True)[0], env_id)


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    env_id = "Pendulum-v1"
    steps = 1_500 if quick else 5_000
    seeds = (0, 1, 2)
    rows: dict = {}
    loads = []
    for seed in seeds:
        for algo in ("ddpg", "td3"):
            for lib, fn in (("ours", _ours), ("sb3", _sb3)):
                load0 = os.getloadavg()[0]
                wall, rets = fn(algo, env_id, steps, seed)
                loads.append((load0, os.getloadavg()[0]))
                row = rows.setdefault(f"{algo}/{lib}", {"final_return": [], "wall_s": []})
                row["final_return"].append(float(rets.mean()))
                row["wall_s"].append(wall)
                print(f"{env_id} {algo} {lib} seed {seed}: return {rets.mean():.1f}, "
                      f"{wall:.1f} s, load {load0:.1f}", flush=True)
    figures: dict = {"env": env_id, "steps": steps, "seeds": list(seeds), "hidden": HIDDEN,
                     "eval_episodes": EVAL_EPISODES, **COMMON, "rows": {},
                     "loadavg_1min_before_after": loads,
                     "missing_rows": ["MountainCarContinuous-v0 (time budget)"]}
    for key, row in rows.items():
        r, w = np.array(row["final_return"]), np.array(row["wall_s"])
        figures["rows"][key.replace("/", "_")] = {
            "final_return_mean": float(r.mean()), "final_return_sd": float(r.std(ddof=1)),
            "final_return_per_seed": r.tolist(),
            "wall_s_per_1e4_steps": float(1e4 * w.mean() / steps),
            "wall_s_per_seed": w.tolist()}
    R = figures["rows"]
    for algo in ("ddpg", "td3"):
        a, b = R[f"{algo}_ours"], R[f"{algo}_sb3"]
        # paired by seed: both ran back to back under the same load
        ratios = np.array(a["wall_s_per_seed"]) / np.array(b["wall_s_per_seed"])
        figures[f"{algo}_time_ratio_ours_over_sb3"] = float(np.mean(ratios))
        figures[f"{algo}_return_diff_ours_minus_sb3"] = (a["final_return_mean"]
                                                         - b["final_return_mean"])
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
