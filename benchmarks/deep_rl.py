"""Deep RL against Stable-Baselines3: DDPG/TD3 on Pendulum-v1 and MountainCarContinuous-v0, A2C on
CartPole-v1 (TRPO is in ``benchmarks/trpo.py``).

Every part trains ours and SB3's with the same settings, the same seeds and step budgets, one
torch thread each, runs interleaved (for each seed and algorithm: ours, then SB3) so that load
changes on the shared machine hit both alike; ``os.getloadavg()`` is recorded before and after
each run. The final deterministic policy of each run is evaluated by the same loop on the same 10
episode seeds. Wall time is that of training alone (no evaluation inside it), per 1e4 env steps;
time ratios are paired by seed (both runs back to back).

Parts (``--part NAME[,NAME]`` re-runs only those and keeps the other parts' figures from the
existing record, so a part can be re-measured alone):

``pendulum`` — DDPG and TD3 on Pendulum-v1, 5,000 steps, seeds 0-2. Both libraries: networks of
two hidden layers of 64 ReLU units, Adam at 1e-3 for actor and critic, batch 128, τ = 0.005,
γ = 0.98, uniformly random actions for the first 1,000 steps, Gaussian exploration noise of
0.1 half-range, one gradient step per env step; TD3 with d = 2, σ̃ = 0.2, c = 0.5 (fractions of
the half-range in both libraries, which act in the squashed [−1, 1] space). Its figures stay at
the top level of the record (``figures.rows``, ``figures.steps``, ...).

``td3_seeds`` — TD3 only, the ``pendulum`` settings on seeds 3-7: more seeds for the gap between
our TD3 and SB3's at 5,000 steps; with the ``pendulum`` seeds it gives eight per library
(``figures.td3_seeds.combined``) and Welch's t statistic of the difference of means.

``td3_action_scale`` — our TD3 alone on seeds 0-7 with the ``pendulum`` settings on
Pendulum-v1 wrapped in ``RescaleAction(-1, 1)``, so that our critic sees actions in SB3's units
(the difference in the update that reading the two TD3s side by side turned up; the other one,
SB3's noise on the warm-up actions, is described under ``mountaincar``).

``mountaincar`` — DDPG and TD3 on MountainCarContinuous-v0, 5,000 steps, seeds 0-2: the
``pendulum`` settings except γ = 0.99 and the exploration, which here must be temporally
correlated: RL Zoo's Ornstein–Uhlenbeck noise of σ = 0.5 with SB3's θ = 0.15 and Δt = 0.01 (the
same process in ours: our OU steps with Δt = 1, so θΔt = 0.0015 and σ√Δt = 0.05). The zoo trains
for 300,000 steps; 5,000 is what fits the time budget of a shared two-core machine here (a first
attempt at 10,000 took over six minutes per run at load 20 and was stopped). One difference
remains in both continuous parts: SB3 adds its exploration noise to the uniform warm-up actions
too (then clips), ours keeps them uniform and starts the noise process with the first actor
action.

``a2c`` — A2C on CartPole-v1, 50,000 steps, seeds 0-2, SB3's A2C defaults on both sides: 8
synchronous envs (copy i reset first with seed + i), 5 steps per env per update, γ = 0.99,
λ = 1 (n-step returns), value-loss weight 0.5, no entropy bonus, gradient norm clipped at 0.5,
RMSprop (lr 7e-4, α = 0.99, ε = 1e-5), separate policy and value networks of two hidden layers of
64 tanh units with orthogonal initialisation (gains √2, 0.01 for the policy's output, 1 for the
value's). SB3 runs on its ``DummyVecEnv`` (``make_vec_env``); ours steps a list of envs.

    python benchmarks/deep_rl.py [--quick] [--part NAME[,NAME...]]
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from deepnotes.core.bench import QUICK_DIR, bench_main, results_dir
from deepnotes.rl import a2c as ours_a2c
from deepnotes.rl import ddpg as ours

HIDDEN = 64
COMMON = {"batch_size": 128, "tau": 0.005, "gamma": 0.98, "learning_starts": 1_000}
EVAL_EPISODES = 10
EVAL_SEED = 5_000_000
PARTS = ("pendulum", "td3_seeds", "td3_action_scale", "mountaincar", "a2c")
#: Exploration on MountainCarContinuous-v0: SB3's OU process (σ = 0.5, θ = 0.15, Δt = 0.01) and
#: the same process in ours, which steps with Δt = 1.
MCC_OU = {"sigma": 0.5, "theta": 0.15, "dt": 0.01}
A2C_SETTINGS = {"n_envs": 8, "n_steps": 5, "gamma": 0.99, "gae_lambda": 1.0, "ent_coef": 0.0,
                "vf_coef": 0.5, "max_grad_norm": 0.5, "learning_rate": 7e-4,
                "rms_prop_eps": 1e-5, "hidden": [64, 64]}


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


def _torch_policy(module):
    @torch.no_grad()
    def policy(obs):
        a = module(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
        return int(a) if a.ndim == 0 else a

    return policy


# --- DDPG / TD3 ----------------------------------------------------------------------------------


def _ours_ddpg(algo: str, env_id: str, steps: int, seed: int) -> tuple[float, np.ndarray]:
    fn = ours.td3 if algo == "td3" else ours.ddpg
    kw = dict(COMMON)
    if env_id == "MountainCarContinuous-v0":
        kw.update(gamma=0.99, noise="ou", noise_sigma=MCC_OU["sigma"] * MCC_OU["dt"] ** 0.5,
                  ou_theta=MCC_OU["theta"] * MCC_OU["dt"])
    else:
        kw.update(noise="gaussian", noise_sigma=0.1)
    res = fn(env_id, steps, seed, hidden=(HIDDEN, HIDDEN), actor_lr=1e-3, critic_lr=1e-3,
             eval_every=0, eval_episodes=1, **kw)
    return res.train_time_s, _eval(_torch_policy(res.actor), env_id)


def _sb3_ddpg(algo: str, env_id: str, steps: int, seed: int) -> tuple[float, np.ndarray]:
    from stable_baselines3 import DDPG, TD3
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    env = gym.make(env_id)
    n = env.action_space.shape[0]
    kw = dict(COMMON)
    # SB3 adds the noise to the action in the squashed [-1, 1] space: sigma = fraction of range
    if env_id == "MountainCarContinuous-v0":
        kw["gamma"] = 0.99
        noise = OrnsteinUhlenbeckActionNoise(np.zeros(n), MCC_OU["sigma"] * np.ones(n),
                                             theta=MCC_OU["theta"], dt=MCC_OU["dt"])
    else:
        noise = NormalActionNoise(np.zeros(n), 0.1 * np.ones(n))
    kw.update(learning_rate=1e-3, buffer_size=steps, action_noise=noise, train_freq=1,
              gradient_steps=1, policy_kwargs={"net_arch": [HIDDEN, HIDDEN]}, seed=seed,
              verbose=0, device="cpu")
    if algo == "td3":
        model = TD3("MlpPolicy", env, policy_delay=2, target_policy_noise=0.2,
                    target_noise_clip=0.5, **kw)
    else:
        model = DDPG("MlpPolicy", env, **kw)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    return wall, _eval(lambda obs: model.predict(obs, deterministic=True)[0], env_id)


# --- A2C -----------------------------------------------------------------------------------------


def _ours_a2c(env_id: str, steps: int, seed: int) -> tuple[float, np.ndarray]:
    s = {**A2C_SETTINGS, "hidden": tuple(A2C_SETTINGS["hidden"])}
    res = ours_a2c.a2c(env_id, steps, seed, optimizer="rmsprop", eval_episodes=1, **s)
    return res.train_time_s, _eval(_torch_policy(res.policy), env_id)


def _sb3_a2c(env_id: str, steps: int, seed: int) -> tuple[float, np.ndarray]:
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    s = A2C_SETTINGS
    venv = make_vec_env(env_id, n_envs=s["n_envs"], seed=seed)
    model = A2C("MlpPolicy", venv, learning_rate=s["learning_rate"], n_steps=s["n_steps"],
                gamma=s["gamma"], gae_lambda=s["gae_lambda"], ent_coef=s["ent_coef"],
                vf_coef=s["vf_coef"], max_grad_norm=s["max_grad_norm"],
                rms_prop_eps=s["rms_prop_eps"], use_rms_prop=True, normalize_advantage=False,
                policy_kwargs={"net_arch": {"pi": s["hidden"], "vf": s["hidden"]},
                               "activation_fn": torch.nn.Tanh, "ortho_init": True},
                seed=seed, verbose=0, device="cpu")
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    return wall, _eval(lambda obs: int(model.predict(obs, deterministic=True)[0]), env_id)


# --- the runs ------------------------------------------------------------------------------------


def _interleaved(env_id: str, steps: int, seeds, algos, ours_fn, sb3_fn) -> tuple[dict, list]:
    """For each seed and algorithm: ours, then SB3. Returns raw rows and the load averages."""
    rows: dict = {}
    loads = []
    for seed in seeds:
        for algo in algos:
            for lib, fn in (("ours", ours_fn), ("sb3", sb3_fn)):
                load0 = os.getloadavg()[0]
                wall, rets = fn(algo, env_id, steps, seed)
                loads.append((load0, os.getloadavg()[0]))
                row = rows.setdefault(f"{algo}_{lib}", {"final_return": [], "wall_s": []})
                row["final_return"].append(float(rets.mean()))
                row["wall_s"].append(wall)
                print(f"{env_id} {algo} {lib} seed {seed}: return {rets.mean():.1f}, "
                      f"{wall:.1f} s, load {load0:.1f}", flush=True)
    return rows, loads


def _summary(raw: dict, steps: int) -> dict:
    out = {}
    for key, row in raw.items():
        r, w = np.array(row["final_return"]), np.array(row["wall_s"])
        out[key] = {"final_return_mean": float(r.mean()),
                    "final_return_sd": float(r.std(ddof=1)) if r.size > 1 else 0.0,
                    "final_return_per_seed": r.tolist(),
                    "wall_s_per_1e4_steps": float(1e4 * w.mean() / steps),
                    "wall_s_per_seed": w.tolist()}
    return out


def _comparisons(rows: dict, algos) -> dict:
    out = {}
    for algo in algos:
        a, b = rows[f"{algo}_ours"], rows[f"{algo}_sb3"]
        # paired by seed: both ran back to back under the same load
        ratios = np.array(a["wall_s_per_seed"]) / np.array(b["wall_s_per_seed"])
        out[f"{algo}_time_ratio_ours_over_sb3"] = float(np.mean(ratios))
        out[f"{algo}_return_diff_ours_minus_sb3"] = (a["final_return_mean"]
                                                     - b["final_return_mean"])
    return out


def _part_pendulum(quick: bool) -> dict:
    env_id, steps, seeds = "Pendulum-v1", (1_500 if quick else 5_000), (0, 1, 2)
    raw, loads = _interleaved(env_id, steps, seeds, ("ddpg", "td3"), _ours_ddpg, _sb3_ddpg)
    rows = _summary(raw, steps)
    return {"env": env_id, "steps": steps, "seeds": list(seeds), "hidden": HIDDEN,
            "eval_episodes": EVAL_EPISODES, **COMMON, "rows": rows,
            "loadavg_1min_before_after": loads, **_comparisons(rows, ("ddpg", "td3"))}


def _welch_t(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))


def _part_td3_seeds(quick: bool, pendulum: dict | None) -> dict:
    env_id, steps, seeds = "Pendulum-v1", (1_500 if quick else 5_000), (3, 4, 5, 6, 7)
    raw, loads = _interleaved(env_id, steps, seeds, ("td3",), _ours_ddpg, _sb3_ddpg)
    rows = _summary(raw, steps)
    out = {"env": env_id, "steps": steps, "seeds": list(seeds), "rows": rows,
           "loadavg_1min_before_after": loads, **_comparisons(rows, ("td3",))}
    if pendulum and pendulum.get("steps") == steps:
        comb_raw = {lib: {"final_return": (pendulum["rows"][f"td3_{lib}"]["final_return_per_seed"]
                                           + rows[f"td3_{lib}"]["final_return_per_seed"]),
                          "wall_s": (pendulum["rows"][f"td3_{lib}"]["wall_s_per_seed"]
                                     + rows[f"td3_{lib}"]["wall_s_per_seed"])}
                    for lib in ("ours", "sb3")}
        comb = _summary({f"td3_{k}": v for k, v in comb_raw.items()}, steps)
        a = np.array(comb["td3_ours"]["final_return_per_seed"])
        b = np.array(comb["td3_sb3"]["final_return_per_seed"])
        out["combined"] = {"seeds": list(pendulum["seeds"]) + list(seeds), "rows": comb,
                           **_comparisons(comb, ("td3",)), "welch_t": _welch_t(a, b)}
    return out


def _part_td3_action_scale(quick: bool, figures: dict) -> dict:
    """Our TD3 on Pendulum-v1 rescaled to actions in [−1, 1] (``RescaleAction``), seeds 0-7: the
    actor and critic then work in SB3's squashed units (SB3's critic sees actions in [−1, 1], ours
    in the env's [−2, 2]); everything else as in ``pendulum``. Compared per seed with the recorded
    ``pendulum`` and ``td3_seeds`` runs."""
    env_id, steps, seeds = "Pendulum-v1", (1_500 if quick else 5_000), tuple(range(8))
    returns, walls, loads = [], [], []
    for seed in seeds:
        load0 = os.getloadavg()[0]
        env = gym.wrappers.RescaleAction(gym.make(env_id), -1.0, 1.0)
        res = ours.td3(env, steps, seed, hidden=(HIDDEN, HIDDEN), actor_lr=1e-3, critic_lr=1e-3,
                       eval_every=0, eval_episodes=1, noise="gaussian", noise_sigma=0.1, **COMMON)
        inner = _torch_policy(res.actor)
        space = gym.make(env_id).action_space
        rets = _eval(lambda obs, inner=inner, space=space: space.low + (inner(obs) + 1.0) / 2.0
                     * (space.high - space.low), env_id)
        loads.append((load0, os.getloadavg()[0]))
        returns.append(float(rets.mean()))
        walls.append(res.train_time_s)
        print(f"{env_id} td3 ours rescaled seed {seed}: return {rets.mean():.1f}, "
              f"{res.train_time_s:.1f} s, load {load0:.1f}", flush=True)
    out = {"env": env_id, "steps": steps, "seeds": list(seeds),
           "rows": _summary({"td3_ours_rescaled": {"final_return": returns, "wall_s": walls}},
                            steps),
           "loadavg_1min_before_after": loads}
    comb = figures.get("td3_seeds", {}).get("combined")
    if comb is not None and comb["seeds"] == list(seeds) and comb["rows"]["td3_ours"]:
        a = np.array(returns)
        for lib in ("ours", "sb3"):
            b = np.array(comb["rows"][f"td3_{lib}"]["final_return_per_seed"])
            out[f"welch_t_rescaled_vs_{lib}"] = _welch_t(a, b)
            out[f"return_diff_rescaled_minus_{lib}"] = float(a.mean() - b.mean())
    return out


def _part_mountaincar(quick: bool) -> dict:
    env_id, steps, seeds = "MountainCarContinuous-v0", (2_000 if quick else 5_000), (0, 1, 2)
    raw, loads = _interleaved(env_id, steps, seeds, ("ddpg", "td3"), _ours_ddpg, _sb3_ddpg)
    rows = _summary(raw, steps)
    return {"env": env_id, "steps": steps, "seeds": list(seeds), "hidden": HIDDEN,
            "eval_episodes": EVAL_EPISODES, **COMMON, "gamma": 0.99,
            "exploration": {"kind": "ornstein-uhlenbeck", **MCC_OU}, "rows": rows,
            "loadavg_1min_before_after": loads, **_comparisons(rows, ("ddpg", "td3"))}


def _part_a2c(quick: bool) -> dict:
    env_id, steps, seeds = "CartPole-v1", (8_000 if quick else 50_000), (0, 1, 2)
    raw, loads = _interleaved(env_id, steps, seeds, ("a2c",),
                              lambda _a, e, n, s: _ours_a2c(e, n, s),
                              lambda _a, e, n, s: _sb3_a2c(e, n, s))
    rows = _summary(raw, steps)
    return {"env": env_id, "steps": steps, "seeds": list(seeds), "eval_episodes": EVAL_EPISODES,
            "settings": A2C_SETTINGS, "rows": rows, "loadavg_1min_before_after": loads,
            **_comparisons(rows, ("a2c",))}


def _previous(quick: bool) -> dict:
    """The figures of the existing record; a part recorded before parts existed (the first
    ``pendulum`` run) gets the record's date and command as its ``parts`` entry."""
    path = (results_dir() / QUICK_DIR if quick else results_dir()) / "deep_rl.json"
    if not path.is_file():
        return {}
    payload = json.loads(path.read_text(encoding="utf-8"))
    figures = payload.get("figures", {})
    if "rows" in figures and "pendulum" not in figures.get("parts", {}):
        figures.setdefault("parts", {})["pendulum"] = {"date": payload.get("date"),
                                                       "command": payload.get("command")}
    return figures


def _merge(figures: dict, part: str, out: dict) -> None:
    """Put one part's figures into the record's figures (``pendulum`` at the top level)."""
    if part == "pendulum":
        for key in [k for k in figures if k not in ("parts", *PARTS[1:])]:
            del figures[key]
        figures.update(out)
    else:
        figures[part] = out


def run(quick: bool = False, parts: tuple[str, ...] | None = None) -> dict:
    """All parts, or only ``parts`` (the others' figures are kept from the existing record, read
    again just before returning so that a part recorded meanwhile by another run is kept)."""
    torch.set_num_threads(1)
    todo = PARTS if parts is None else tuple(parts)
    bad = set(todo) - set(PARTS)
    if bad:
        raise ValueError(f"unknown part(s) {sorted(bad)}; known: {PARTS}")
    done: dict = {}
    meta: dict = {}

    def current() -> dict:
        figures = _previous(quick) if parts is not None else {}
        for name, out in done.items():
            _merge(figures, name, out)
        return figures

    for part in PARTS:
        if part not in todo:
            continue
        t0 = time.perf_counter()
        load0 = os.getloadavg()
        if part == "pendulum":
            done[part] = _part_pendulum(quick)
        elif part == "td3_seeds":
            now = current()
            done[part] = _part_td3_seeds(quick, now if "rows" in now else None)
        elif part == "td3_action_scale":
            done[part] = _part_td3_action_scale(quick, current())
        elif part == "mountaincar":
            done[part] = _part_mountaincar(quick)
        else:
            done[part] = _part_a2c(quick)
        cmd = ["python", "benchmarks/deep_rl.py", *sys.argv[1:]]
        meta[part] = {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                      "command": " ".join(cmd + (["--part", part] if parts is not None else [])),
                      "wall_s": time.perf_counter() - t0, "loadavg_before": list(load0),
                      "loadavg_after": list(os.getloadavg())}
    figures = current()
    figures.pop("missing_rows", None)
    figures.setdefault("parts", {}).update(meta)
    return figures


def _main() -> None:
    parts = None
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--part" and i + 1 < len(argv):
            parts = tuple(p for p in argv[i + 1].split(",") if p)
            del sys.argv[i + 1:i + 3]
            break
        if arg.startswith("--part="):
            parts = tuple(p for p in arg.split("=", 1)[1].split(",") if p)
            del sys.argv[i + 1]
            break

    def run_parts(quick: bool = False) -> dict:
        figures = run(quick, parts)
        if parts is not None:  # bench_main records sys.argv as the command: put --part back
            sys.argv[1:1] = ["--part", ",".join(parts)]
        return figures

    bench_main(__file__, run_parts)


if __name__ == "__main__":
    _main()
