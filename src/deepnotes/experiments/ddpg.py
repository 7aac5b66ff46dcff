"""DDPG against TD3 on Pendulum-v1, and TD3 with each of its three fixes switched off.

Every variant (:data:`VARIANTS`) trains with :func:`deepnotes.rl.ddpg.train` on the same seeds,
step budget and networks; only the switches differ. The deterministic actor is evaluated every
``eval_every`` steps on fresh episodes without noise.

Figures: ``learning_curves`` (evaluation return against env steps: DDPG beside TD3, and TD3 beside
TD3 minus one fix), ``q_bias`` (critic estimate Q₁(s₀, μ(s₀)) minus the discounted return actually
collected from s₀, per variant: the overestimation TD3 was built to remove) and ``filmstrip``
(TD3's final policy swinging the pendulum up, drawn from the state: no rendering library).
Headline: TD3's final evaluation return (mean over seeds); peer: DDPG's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.rl.ddpg import TD3_SWITCHES, train

#: The TD3 switches of each variant (the others keep DDPG's setting).
VARIANTS = {
    "ddpg": {},
    "td3": dict(TD3_SWITCHES),
    "td3_no_twin": {**TD3_SWITCHES, "twin_critics": False},
    "td3_no_delay": {**TD3_SWITCHES, "policy_delay": 1},
    "td3_no_smoothing": {**TD3_SWITCHES, "target_noise": 0.0},
}
LABELS = {
    "ddpg": "DDPG", "td3": "TD3 (all three fixes)", "td3_no_twin": "TD3 without twin critics",
    "td3_no_delay": "TD3 without delayed actor", "td3_no_smoothing": "TD3 without smoothing",
}


@dataclass
class Config(ExperimentConfig):
    env_id: str = "Pendulum-v1"
    """gymnasium environment id (Box observations, bounded Box actions)."""
    total_steps: int = 7_000
    """Environment steps per run."""
    seeds: int = 2
    """Independent runs per variant (seed, seed + 1, ...); metrics are means over them."""
    variants: tuple[str, ...] = tuple(VARIANTS)
    """Variants to train (keys of VARIANTS)."""
    hidden: int = 64
    """Width of both hidden layers of actor and critics."""
    batch_size: int = 128
    """Replayed transitions per update."""
    learning_starts: int = 1_000
    """Steps of uniformly random actions before the first update."""
    gamma: float = 0.98
    """Discount factor."""
    noise_sigma: float = 0.1
    """Gaussian exploration noise, as a fraction of the action half-range."""
    eval_every: int = 1_000
    """Steps between evaluations of the noise-free actor."""
    eval_episodes: int = 5
    """Episodes per evaluation."""
    frames: int = 10
    """Frames of the policy filmstrip."""
    frame_every: int = 10
    """Env steps between filmstrip frames."""
    threads: int = 1
    """Torch threads (the networks are small: one thread avoids synchronisation cost)."""


PRESETS = make_presets(
    smoke=Config(total_steps=600, seeds=1, learning_starts=200, hidden=16, batch_size=32,
                 eval_every=300, eval_episodes=1, variants=("ddpg", "td3")),
    quick=Config(total_steps=2_500, seeds=1, learning_starts=500, hidden=32, batch_size=64,
                 eval_every=500, eval_episodes=2, variants=("ddpg", "td3")),
    full=Config(),
)
HEADLINE = "td3/final_return"
PEER = "ddpg/final_return"


@torch.no_grad()
def q_bias(result, env_id: str, gamma: float, episodes: int, seed: int) -> np.ndarray:
    """Q₁(s₀, μ(s₀)) − Σ_t γ^t r_t over ``episodes`` noise-free episodes, shape (episodes,).

    The return is truncated at the episode's end (200 steps on Pendulum: γ^200 is below 2 %
    at γ = 0.98); the critic bootstraps through that cut, so a small positive gap is expected.
    """
    env = gym.make(env_id)
    actor, critic = result.actor, result.critics.qs[0]
    dev = next(actor.parameters()).device
    out = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        s0 = torch.as_tensor(obs, dtype=torch.float32, device=dev)[None]
        q0 = float(critic(torch.cat([s0, actor(s0)], -1)))
        ret, disc, done = 0.0, 1.0, False
        while not done:
            a = actor(torch.as_tensor(obs, dtype=torch.float32, device=dev)[None])[0]
            obs, r, term, trunc, _ = env.step(a.cpu().numpy())
            ret += disc * float(r)
            disc *= gamma
            done = term or trunc
        out[i] = q0 - ret
    return out


@torch.no_grad()
def rollout_angles(actor, env_id: str, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pendulum angle θ (rad, 0 = upright) and torque along ``steps`` noise-free steps."""
    env = gym.make(env_id)
    dev = next(actor.parameters()).device
    obs, _ = env.reset(seed=seed)
    thetas, torques = [], []
    for _ in range(steps):
        a = actor(torch.as_tensor(obs, dtype=torch.float32, device=dev)[None])[0].cpu().numpy()
        thetas.append(float(np.arctan2(obs[1], obs[0])))  # obs = (cos θ, sin θ, θ̇)
        torques.append(float(a[0]))
        obs, *_ = env.step(a)
    return np.array(thetas), np.array(torques)


def _curves_figure(evals: dict[str, tuple[np.ndarray, np.ndarray]], groups: list[list[str]]):
    fig, axes = new_figure(1, len(groups), size="column_tall", sharey=True, squeeze=False,
                           layout="constrained")
    titles = ["DDPG and TD3", "TD3 minus one fix"]
    handles = {}
    for ax, group, title in zip(axes[0], groups, titles, strict=False):
        for name in group:
            color = _color(name)  # one colour per variant in both panels
            steps, rets = evals[name]  # (K,), (seeds, K)
            m = rets.mean(0)
            (handles[LABELS[name]],) = ax.plot(steps, m, color=color, label=LABELS[name])
            if rets.shape[0] > 1:
                ax.fill_between(steps, rets.min(0), rets.max(0), color=color, alpha=0.15)
        ax.set(xlabel="environment steps", title=title)
    axes[0][0].set_ylabel("evaluation return (seed range shaded)")
    # one legend below both panels: inside, it hid the curves where they converge
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, fontsize=9)
    return fig


def _color(name: str) -> str:
    return PALETTE[list(VARIANTS).index(name) % len(PALETTE)]


def _bias_figure(bias: dict[str, np.ndarray]):
    fig, ax = new_figure(size="column", layout="constrained")
    names = list(bias)
    ys = [bias[n].mean() for n in names]
    ax.bar(range(len(names)), ys, color=[_color(n) for n in names])
    for i, n in enumerate(names):
        ax.plot(np.full(len(bias[n]), i), bias[n], "k.", ms=3, alpha=0.5)
    ax.axhline(0, color="k", lw=0.8)
    short = {"ddpg": "DDPG", "td3": "TD3", "td3_no_twin": "TD3\nno twin",
             "td3_no_delay": "TD3\nno delay", "td3_no_smoothing": "TD3\nno smoothing"}
    ax.set_xticks(range(len(names)), [short[n] for n in names], fontsize=9)
    ax.set_ylabel(r"$Q_1(s_0,\mu(s_0)) - \sum_t \gamma^t r_t$")
    ax.set_title("Critic estimate minus the return it predicts (start states; dots: episodes)")
    return fig


def _filmstrip(thetas: np.ndarray, torques: np.ndarray, every: int, frames: int, bound: float):
    fig, axes = new_figure(1, frames, size=(7.0, 1.6), layout="constrained")
    for j, ax in enumerate(np.atleast_1d(axes)):
        t = min(j * every, len(thetas) - 1)
        th = thetas[t]
        x, y = np.sin(th), np.cos(th)  # θ = 0 points up
        ax.plot([0, x], [0, y], color=PALETTE[0], lw=4, solid_capstyle="round")
        ax.plot([x], [y], "o", color=PALETTE[3], ms=7)
        ax.plot([0], [0], "ko", ms=3)
        # torque as an arc-length arrow under the pivot (sign: counter-clockwise positive)
        ax.annotate("", xy=(0.9 * torques[t] / bound, -1.25), xytext=(0, -1.25),
                    arrowprops={"arrowstyle": "->", "color": PALETTE[1], "lw": 1.5})
        ax.set(xlim=(-1.3, 1.3), ylim=(-1.45, 1.3), aspect="equal", xticks=[], yticks=[])
        ax.set_title(rf"$t={t}$", fontsize=9)
        ax.grid(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
    return fig


def run(config: Config) -> Result:
    unknown = set(config.variants) - set(VARIANTS)
    if unknown or not config.variants:
        raise ValueError(f"variants must be a non-empty subset of {list(VARIANTS)}, got "
                         f"{config.variants}")
    if config.seeds < 1 or config.total_steps < 1 or config.hidden < 1:
        raise ValueError("seeds, total_steps and hidden must be positive")
    with start_run(__name__, config) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            evals, bias, finals, best = {}, {}, {}, None
            for name in config.variants:
                rets, times, qb = [], [], []
                for k in range(config.seeds):
                    seed = config.seed + k
                    t0 = time.perf_counter()
                    res = train(config.env_id, config.total_steps, seed,
                                progress=run.track, description=f"{name} seed {seed}",
                                hidden=(config.hidden, config.hidden),
                                batch_size=config.batch_size, gamma=config.gamma,
                                learning_starts=config.learning_starts,
                                noise_sigma=config.noise_sigma, eval_every=config.eval_every,
                                eval_episodes=config.eval_episodes, device=str(run.device),
                                **VARIANTS[name])
                    times.append(time.perf_counter() - t0)
                    rets.append(res.eval_returns.mean(1))  # (K,)
                    qb.append(q_bias(res, config.env_id, config.gamma, config.eval_episodes,
                                     seed=2_000_000 + seed))
                    if name == "td3" and k == 0:
                        best = res
                    run.log(f"{name} seed {seed}: final return {res.final_return:.1f}, "
                            f"{times[-1]:.1f} s")
                evals[name] = (res.eval_steps, np.stack(rets))
                bias[name] = np.concatenate(qb)
                finals[name] = np.array([r[-1] for r in rets])
                run.log_metrics({
                    f"{name}/final_return": finals[name].mean(),
                    f"{name}/final_return_sd": finals[name].std(ddof=1) if config.seeds > 1
                    else 0.0,
                    f"{name}/q_bias": bias[name].mean(),
                    f"{name}/wall_s_per_1e4_steps": 1e4 * np.mean(times) / config.total_steps,
                })
            groups = [[n for n in ("ddpg", "td3") if n in evals]]
            ablations = [n for n in evals if n.startswith("td3_")]
            if ablations:
                groups.append(["td3", *ablations] if "td3" in evals else ablations)
            run.save_figure(_curves_figure(evals, groups), "learning_curves")
            run.save_figure(_bias_figure(bias), "q_bias")
            actor = (best or res).actor
            thetas, torques = rollout_angles(actor, config.env_id,
                                             config.frames * config.frame_every, seed=123)
            bound = float(gym.make(config.env_id).action_space.high[0])
            run.save_figure(_filmstrip(thetas, torques, config.frame_every, config.frames,
                                       bound), "filmstrip")
            run.log_metrics({"filmstrip/final_abs_angle_rad": abs(thetas[-1])})
        finally:
            torch.set_num_threads(threads)
    return run.result
