"""DDPG and TD3: deterministic actor-critic with deep networks, replay and target networks.

Equation numbers refer to the ``ddpg`` post (Lillicrap et al. (2016), *Continuous control with
deep reinforcement learning*; Fujimoto, van Hoof & Meger (2018), *Addressing Function
Approximation Error in Actor-Critic Methods*):

- the deterministic policy gradient ∇_θ J = E_s[∇_a Q(s, a)|_{a=μ_θ(s)} ∇_θ μ_θ(s)] (Eq. 1), the
  same theorem as Eq. 5 of the ``actor-critic`` post (:func:`deepnotes.rl.actor_critic.dpg_lqr`
  applies it to a linear gain with a quadratic critic); here autograd forms the product by
  back-propagating −Q(s, μ_θ(s)) through the critic into the actor (:func:`actor_loss`);
- the critic's regression target y = r + γ (1 − d) Q'(s', μ'(s')) from target networks (Eq. 2),
  TD3's clipped double-Q target with the minimum of two critics and target policy smoothing
  (Eq. 3) in :func:`critic_target`;
- Polyak averaging of the target networks θ' ← τ θ + (1 − τ) θ' (Eq. 4), :func:`polyak_update`,
  shared by every network;
- exploration μ(s) + noise, Gaussian or Ornstein–Uhlenbeck (Eq. 5), :class:`GaussianNoise`,
  :class:`OrnsteinUhlenbeckNoise`.

TD3 is DDPG with its three fixes switched on (``twin_critics``, ``policy_delay`` > 1,
``target_noise`` > 0): :func:`ddpg` and :func:`td3` are one :func:`train` with different defaults,
as "TD3 minus its tricks" in Stable-Baselines3.

:class:`LinearQuadraticEnv` is the scalar discounted LQR of the ``actor-critic`` post as a
``gymnasium.Env``: its optimal gain (:func:`deepnotes.rl.actor_critic.lqr_optimal_gain`) is the
known answer the tests hold a learned actor to.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepnotes.rl.actor_critic import lqr_optimal_gain
from deepnotes.rl.rollouts import evaluate, evaluation_env

# ---------------------------------------------------------------------------------------------
# environments


def check_box_env(env: gym.Env) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Validate ``env`` for DDPG/TD3; return (obs_dim, act_dim, action low, action high).

    Raises
    ------
    TypeError
        when the observation or action space is not a ``gymnasium.spaces.Box`` (a ``Discrete``
        action space has no gradient ∂Q/∂a: use DQN or a stochastic policy gradient instead).
    ValueError
        when the action bounds are not finite (the actor squashes into [low, high]) or a space is
        not one-dimensional.
    """
    if not isinstance(env, gym.Env):
        raise TypeError(f"env must be a gymnasium.Env, got {type(env).__name__}")
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(act_space, gym.spaces.Box):
        raise TypeError(f"DDPG/TD3 need a continuous Box action space; env.action_space is "
                        f"{act_space!r} (a deterministic actor has no gradient through a discrete "
                        "action)")
    if not isinstance(obs_space, gym.spaces.Box):
        raise TypeError(f"env.observation_space must be a Box, got {obs_space!r}")
    if len(act_space.shape) != 1 or len(obs_space.shape) != 1:
        raise ValueError(f"observation and action spaces must be 1-D Boxes, got shapes "
                         f"{obs_space.shape} and {act_space.shape}")
    low, high = act_space.low.astype(np.float64), act_space.high.astype(np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"env.action_space {act_space!r} is unbounded; the actor squashes its "
                         "output into [low, high], so every bound must be finite (wrap the env in "
                         "gymnasium.wrappers.ClipAction with a Box of finite bounds)")
    if np.any(high <= low):
        raise ValueError(f"env.action_space {act_space!r} has high <= low")
    return obs_space.shape[0], act_space.shape[0], low, high


class LinearQuadraticEnv(gym.Env):
    """Scalar linear-quadratic control: s' = s + a + σ ε, r = −(s² + c a²), ε ~ N(0, 1).

    The discounted infinite-horizon problem of the ``actor-critic`` post (Eq. 6–7 there): with
    discount γ its optimal policy is a = k* s, ``optimal_gain(gamma)``. Episodes are cut
    (``truncated``, never ``terminated``) after ``horizon`` steps so that a learner bootstraps
    through the cut and solves the infinite-horizon problem; s₀ ~ U(−``init_scale``,
    ``init_scale``). ``horizon=1`` makes every transition start afresh from that uniform law: the
    replayed states then stay O(1), which keeps the quadratic regression of a critic well
    conditioned, and bootstrapping still makes the problem the infinite-horizon one.
    Observations are clipped to ±``obs_bound`` (a diverging policy ends its episode there).
    """

    metadata = {"render_modes": []}

    def __init__(self, c: float = 1.0, sigma: float = 0.1, horizon: int = 20,
                 action_bound: float = 4.0, init_scale: float = 1.0, obs_bound: float = 100.0):
        if not c > 0:
            raise ValueError(f"c (action cost) must be > 0, got {c}")
        if not (sigma >= 0 and init_scale >= 0):
            raise ValueError(f"sigma and init_scale must be >= 0, got {sigma}, {init_scale}")
        if horizon < 1 or not action_bound > 0 or not obs_bound > 0:
            raise ValueError("horizon, action_bound and obs_bound must be positive")
        self.c, self.sigma, self.horizon = float(c), float(sigma), int(horizon)
        self.init_scale, self.obs_bound = float(init_scale), float(obs_bound)
        self.action_space = gym.spaces.Box(-action_bound, action_bound, (1,), np.float32)
        self.observation_space = gym.spaces.Box(-obs_bound, obs_bound, (1,), np.float32)
        self._s, self._t = 0.0, 0

    def optimal_gain(self, gamma: float) -> float:
        """k* of the discounted problem (the scalar Riccati equation, solved by
        :func:`~deepnotes.rl.actor_critic.lqr_optimal_gain`)."""
        return lqr_optimal_gain(gamma, self.c)[0]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._s, self._t = float(self.np_random.uniform(-self.init_scale, self.init_scale)), 0
        return np.array([self._s], np.float32), {}

    def step(self, action):
        a = float(np.clip(np.asarray(action, np.float64).reshape(-1)[0],
                          self.action_space.low[0], self.action_space.high[0]))
        r = -(self._s ** 2 + self.c * a * a)
        self._s = self._s + a + self.sigma * float(self.np_random.standard_normal())
        self._t += 1
        out = abs(self._s) >= self.obs_bound
        self._s = float(np.clip(self._s, -self.obs_bound, self.obs_bound))
        return (np.array([self._s], np.float32), r, bool(out), self._t >= self.horizon, {})


# ---------------------------------------------------------------------------------------------
# networks


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of widths ``sizes`` with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Deterministic policy μ_θ(s) = m + h · tanh(f_θ(s)), inside the box [low, high].

    m = (high + low)/2 and h = (high − low)/2 per action dimension; ``hidden=()`` makes f_θ
    linear (the LQ test's tanh-squashed linear gain).

    Parameters
    ----------
    obs_dim, act_dim : int
    low, high : array, shape (act_dim,)
        Finite action bounds.
    hidden : tuple of int
        Hidden widths of f_θ (ReLU).
    """

    def __init__(self, obs_dim: int, act_dim: int, low, high, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim])
        low, high = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in (low, high))
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_range", (high - low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions, shape (B, act_dim), of observations, shape (B, obs_dim)."""
        return self.center + self.half_range * torch.tanh(self.net(obs))


class Critics(nn.Module):
    """``n`` independent Q networks Q_i(s, a) on the concatenation [s, a].

    ``forward`` returns shape (n, B): one row per critic (n = 2 for TD3's twin critics).
    ``factory(obs_dim, act_dim)``, when given, builds each critic instead of an MLP: any module
    mapping [s, a], shape (B, obs_dim + act_dim), to Q, shape (B, 1).
    """

    def __init__(self, obs_dim: int, act_dim: int, n: int = 1, hidden: Sequence[int] = (256, 256),
                 factory: Callable[[int, int], nn.Module] | None = None):
        super().__init__()
        if n < 1:
            raise ValueError(f"number of critics must be >= 1, got {n}")
        make = (lambda: factory(obs_dim, act_dim)) if factory is not None else (
            lambda: mlp([obs_dim + act_dim, *hidden, 1]))
        self.qs = nn.ModuleList(make() for _ in range(n))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)  # (B, obs_dim + act_dim)
        return torch.stack([q(x).squeeze(-1) for q in self.qs])  # (n, B)


# ---------------------------------------------------------------------------------------------
# replay buffer and exploration noise


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions (s, a, r, s', terminated), float32.

    Once full, each new transition overwrites the oldest one. ``sample`` draws indices uniformly
    with replacement from the stored transitions.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.act = np.zeros((self.capacity, act_dim), np.float32)
        self.rew = np.zeros(self.capacity, np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.terminated = np.zeros(self.capacity, np.float32)
        self.pos = 0  # next slot to write
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, act, rew: float, next_obs, terminated: bool) -> None:
        """Store one transition (overwrites the oldest once full)."""
        i = self.pos
        self.obs[i], self.act[i], self.rew[i] = obs, act, rew
        self.next_obs[i], self.terminated[i] = next_obs, float(terminated)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def get(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Transitions at slots ``idx``, shape (B,): arrays obs (B, obs_dim), act (B, act_dim),
        rew (B,), next_obs (B, obs_dim), terminated (B,)."""
        return {"obs": self.obs[idx], "act": self.act[idx], "rew": self.rew[idx],
                "next_obs": self.next_obs[idx], "terminated": self.terminated[idx]}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` stored transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self.get(rng.integers(self.size, size=batch_size))


class GaussianNoise:
    """Independent N(0, σ²) per step and action dimension (TD3's exploration, Eq. 5)."""

    def __init__(self, act_dim: int, sigma: float | np.ndarray, rng: np.random.Generator):
        self.act_dim, self.sigma, self.rng = act_dim, np.asarray(sigma, np.float64), rng

    def reset(self) -> None:
        """Nothing to reset: the noise has no state."""

    def __call__(self) -> np.ndarray:
        return self.sigma * self.rng.standard_normal(self.act_dim)


class OrnsteinUhlenbeckNoise:
    """Temporally correlated noise x ← x + θ(μ − x)Δt + σ√Δt ε (Euler–Maruyama), DDPG's (Eq. 5).

    Its stationary standard deviation is σ/√(2θ); ``reset`` returns x to μ (called at each
    episode start).
    """

    def __init__(self, act_dim: int, sigma: float | np.ndarray, rng: np.random.Generator,
                 theta: float = 0.15, dt: float = 1.0, mu: float = 0.0):
        if not (theta > 0 and dt > 0):
            raise ValueError(f"theta and dt must be > 0, got {theta}, {dt}")
        self.act_dim, self.sigma, self.rng = act_dim, np.asarray(sigma, np.float64), rng
        self.theta, self.dt, self.mu = theta, dt, mu
        self.x = np.full(act_dim, mu, np.float64)

    def reset(self) -> None:
        self.x = np.full(self.act_dim, self.mu, np.float64)

    def __call__(self) -> np.ndarray:
        self.x = (self.x + self.theta * (self.mu - self.x) * self.dt
                  + self.sigma * math.sqrt(self.dt) * self.rng.standard_normal(self.act_dim))
        return self.x.copy()


# ---------------------------------------------------------------------------------------------
# the updates


@torch.no_grad()
def polyak_update(params: Iterable[torch.Tensor], target_params: Iterable[torch.Tensor],
                  tau: float) -> None:
    """θ' ← τ θ + (1 − τ) θ' in place, for each pair (Eq. 4). τ = 1 copies θ into θ'."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    params, target_params = list(params), list(target_params)
    if len(params) != len(target_params):
        raise ValueError(f"params and target_params differ in length: {len(params)} vs "
                         f"{len(target_params)}")
    for p, tp in zip(params, target_params, strict=True):
        tp.mul_(1.0 - tau).add_(p, alpha=tau)


@torch.no_grad()
def critic_target(actor_target: Actor, critics_target: Critics, rew: torch.Tensor,
                  next_obs: torch.Tensor, terminated: torch.Tensor, gamma: float,
                  target_noise: float = 0.0, noise_clip: float = 0.5,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """y = r + γ (1 − d) min_i Q'_i(s', ã'), ã' = clip(μ'(s') + clip(ε, −c, c), low, high) (Eq. 3).

    With one critic and ``target_noise = 0`` this is DDPG's target (Eq. 2). ε ~ N(0, σ̃²) with
    σ̃ = ``target_noise`` · half-range and c = ``noise_clip`` · half-range per action dimension.

    Parameters
    ----------
    rew, terminated : Tensor, shape (B,)
    next_obs : Tensor, shape (B, obs_dim)

    Returns
    -------
    Tensor, shape (B,)
    """
    a2 = actor_target(next_obs)  # (B, act_dim)
    if target_noise > 0:
        h = actor_target.half_range
        eps = torch.randn(a2.shape, generator=generator, device=a2.device) * (target_noise * h)
        eps = torch.maximum(torch.minimum(eps, noise_clip * h), -noise_clip * h)
        lo, hi = actor_target.center - h, actor_target.center + h
        a2 = torch.maximum(torch.minimum(a2 + eps, hi), lo)
    q2 = critics_target(next_obs, a2).min(dim=0).values  # (B,): min over critics (twin: Eq. 3)
    return rew + gamma * (1.0 - terminated) * q2


def actor_loss(actor: Actor, critics: Critics, obs: torch.Tensor) -> torch.Tensor:
    """−mean Q_1(s, μ_θ(s)): its gradient in θ is minus the deterministic policy gradient (Eq. 1).

    Back-propagation through Q_1 gives ∇_a Q_1 at a = μ_θ(s), and through μ_θ the product with
    ∇_θ μ_θ(s), the chain rule of Eq. 1. Only the first critic is used, as in TD3.
    """
    a = actor(obs)
    x = torch.cat([obs, a], dim=-1)
    return -critics.qs[0](x).mean()


# ---------------------------------------------------------------------------------------------
# training


DEFAULTS: dict[str, Any] = {
    "hidden": (256, 256),       # actor and critic hidden widths (ReLU)
    "actor_hidden": None,       # overrides ``hidden`` for the actor (() = tanh of a linear map)
    "critic_hidden": None,      # overrides ``hidden`` for the critics
    "critic_factory": None,     # (obs_dim, act_dim) -> module [s, a] (B, ·) -> Q (B, 1)
    "actor_lr": 1e-3,
    "critic_lr": 1e-3,
    "gamma": 0.99,
    "tau": 0.005,
    "batch_size": 256,
    "buffer_size": 1_000_000,
    "learning_starts": 10_000,  # uniformly random actions (and no updates) before this step
    "noise": "gaussian",        # "gaussian" | "ou" | "none"
    "noise_sigma": 0.1,         # exploration σ as a fraction of the action half-range
    "ou_theta": 0.15,
    "twin_critics": False,      # TD3 fix 1: two critics, the minimum in the target
    "policy_delay": 1,          # TD3 fix 2: actor and targets updated every d-th critic update
    "target_noise": 0.0,        # TD3 fix 3: target policy smoothing σ̃ (fraction of half-range)
    "noise_clip": 0.5,          # clip of the smoothing noise (fraction of half-range)
    "eval_every": 5_000,        # env steps between evaluations (0: only at the end)
    "eval_episodes": 5,
    "eval_env": None,           # a separate env for evaluation (default: a copy of ``env``)
    "device": "cpu",
}
TD3_SWITCHES = {"twin_critics": True, "policy_delay": 2, "target_noise": 0.2}


@dataclass
class DDPGResult:
    """What :func:`ddpg` / :func:`td3` return.

    Attributes
    ----------
    actor : Actor
        The trained deterministic policy (observation (B, obs_dim) → action (B, act_dim) within
        the action bounds), in eval mode, on the training device.
    critics : Critics
        The trained critic(s).
    episode_returns : ndarray, shape (E,)
        Undiscounted return of each training episode (with exploration noise): the learning curve.
    episode_end_steps : ndarray, shape (E,)
        Env step count at which each training episode ended.
    eval_steps : ndarray, shape (K,)
        Env step count of each evaluation.
    eval_returns : ndarray, shape (K, eval_episodes)
        Returns of the noise-free actor at each evaluation; the last row is the final evaluation.
    history : dict of str to ndarray
        Per update: ``critic_loss``, ``q_mean`` (mean Q_1 on the batch); per actor update:
        ``actor_loss``.
    hparams : dict
        Every hyper-parameter in effect.
    train_time_s : float
        Wall time of the training loop, evaluations excluded.
    """

    actor: Actor
    critics: Critics
    episode_returns: np.ndarray
    episode_end_steps: np.ndarray
    eval_steps: np.ndarray
    eval_returns: np.ndarray
    history: dict[str, np.ndarray] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    train_time_s: float = 0.0

    @property
    def final_return(self) -> float:
        """Mean return of the last evaluation."""
        return float(self.eval_returns[-1].mean())


def train(env: gym.Env | str, total_steps: int, seed: int = 0, *,
          progress: Callable[..., Iterable[int]] | None = None, description: str = "ddpg",
          **hparams) -> DDPGResult:
    """Off-policy deterministic actor-critic: DDPG, TD3 or anything between (Algorithm 1 of
    Fujimoto et al. with each fix a switch).

    Each env step: act with μ(s) + noise clipped to the bounds (uniform random actions before
    ``learning_starts``), store the transition, then one critic update on a replayed batch toward
    Eq. 2/3; every ``policy_delay``-th update also one actor step along Eq. 1 and a Polyak update
    of all target networks (Eq. 4). Bootstraps through truncation, not termination.

    Parameters
    ----------
    env : gymnasium.Env or str
        Box observations and bounded Box actions (:func:`check_box_env`); a str is passed to
        ``gymnasium.make``.
    total_steps : int
        Environment steps.
    seed : int
        Seeds the networks, the replay sampling, the noise and the env resets.
    progress : callable, optional
        ``progress(iterable, description)`` wrapping the step range (e.g. ``run.track``).
    **hparams
        Any key of :data:`DEFAULTS`.
    """
    unknown = set(hparams) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    hp = {**DEFAULTS, **hparams}
    if isinstance(env, str):
        env = gym.make(env)
    obs_dim, act_dim, low, high = check_box_env(env)
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if hp["noise"] not in ("gaussian", "ou", "none"):
        raise ValueError(f"noise must be 'gaussian', 'ou' or 'none', got {hp['noise']!r}")
    if int(hp["policy_delay"]) < 1 or int(hp["batch_size"]) < 1:
        raise ValueError("policy_delay and batch_size must be >= 1")
    if not 0.0 < hp["gamma"] <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {hp['gamma']}")
    device = torch.device(hp["device"])
    eval_env = evaluation_env(env, hp["eval_env"])
    rng = np.random.default_rng(seed)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator(device=device).manual_seed(seed + 1)
        a_hidden = hp["actor_hidden"] if hp["actor_hidden"] is not None else hp["hidden"]
        c_hidden = hp["critic_hidden"] if hp["critic_hidden"] is not None else hp["hidden"]
        actor = Actor(obs_dim, act_dim, low, high, a_hidden).to(device)
        critics = Critics(obs_dim, act_dim, 2 if hp["twin_critics"] else 1, c_hidden,
                          hp["critic_factory"]).to(device)
        actor_t, critics_t = copy.deepcopy(actor), copy.deepcopy(critics)
        for p in (*actor_t.parameters(), *critics_t.parameters()):
            p.requires_grad_(False)
        opt_a = torch.optim.Adam(actor.parameters(), lr=hp["actor_lr"])
        opt_c = torch.optim.Adam(critics.parameters(), lr=hp["critic_lr"])
        buffer = ReplayBuffer(min(int(hp["buffer_size"]), total_steps), obs_dim, act_dim)
        half = (high - low) / 2
        sigma = hp["noise_sigma"] * half
        noise = (OrnsteinUhlenbeckNoise(act_dim, sigma, rng, theta=hp["ou_theta"])
                 if hp["noise"] == "ou" else GaussianNoise(act_dim, sigma, rng)
                 if hp["noise"] == "gaussian" else None)
        env.action_space.seed(seed)
        train_params = (list(actor.parameters()) + list(critics.parameters()))
        target_params = (list(actor_t.parameters()) + list(critics_t.parameters()))

        ep_returns, ep_ends, eval_steps, eval_rets = [], [], [], []
        hist: dict[str, list[float]] = {"critic_loss": [], "q_mean": [], "actor_loss": []}
        obs, _ = env.reset(seed=seed)
        if noise is not None:
            noise.reset()
        ep_ret, n_updates, train_time, n_eps = 0.0, 0, 0.0, 0
        eval_every = int(hp["eval_every"]) or total_steps
        steps: Iterable[int] = range(1, total_steps + 1)
        if progress is not None:
            steps = progress(steps, description)
        t0 = time.perf_counter()
        for step in steps:
            # --- act (Eq. 5) ---
            if step <= hp["learning_starts"]:
                a = env.action_space.sample()
            else:
                with torch.no_grad():
                    a = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])
                a = a[0].cpu().numpy().astype(np.float64)
                if noise is not None:
                    a = np.clip(a + noise(), low, high)
            next_obs, r, term, trunc, _ = env.step(a.astype(env.action_space.dtype))
            buffer.add(obs, a, r, next_obs, term)
            ep_ret += float(r)
            obs = next_obs
            if term or trunc:
                ep_returns.append(ep_ret)
                ep_ends.append(step)
                n_eps += 1
                ep_ret = 0.0
                obs, _ = env.reset(seed=seed + 10_000 * n_eps)
                if noise is not None:
                    noise.reset()
            # --- learn (Eq. 1-4) ---
            if step > hp["learning_starts"] and len(buffer) >= hp["batch_size"]:
                b = buffer.sample(int(hp["batch_size"]), rng)
                s, act, rew, s2, d = (torch.as_tensor(b[k], device=device) for k in
                                      ("obs", "act", "rew", "next_obs", "terminated"))
                y = critic_target(actor_t, critics_t, rew, s2, d, hp["gamma"],
                                  hp["target_noise"], hp["noise_clip"], gen)
                q = critics(s, act)  # (n_critics, B)
                loss_c = F.mse_loss(q, y.expand_as(q), reduction="none").mean(1).sum()
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
                n_updates += 1
                hist["critic_loss"].append(loss_c.item())
                hist["q_mean"].append(q[0].mean().item())
                if n_updates % int(hp["policy_delay"]) == 0:
                    loss_a = actor_loss(actor, critics, s)
                    opt_a.zero_grad(set_to_none=True)
                    loss_a.backward()
                    opt_a.step()
                    hist["actor_loss"].append(loss_a.item())
                    polyak_update(train_params, target_params, hp["tau"])
            if step % eval_every == 0 or step == total_steps:
                train_time += time.perf_counter() - t0
                if not eval_steps or eval_steps[-1] != step:
                    eval_steps.append(step)
                    eval_rets.append(evaluate(actor, eval_env, int(hp["eval_episodes"]),
                                              seed=10**6 + seed * 1000))
                t0 = time.perf_counter()
    actor.eval()
    return DDPGResult(
        actor=actor, critics=critics, episode_returns=np.asarray(ep_returns),
        episode_end_steps=np.asarray(ep_ends, dtype=np.int64),
        eval_steps=np.asarray(eval_steps, dtype=np.int64), eval_returns=np.asarray(eval_rets),
        history={k: np.asarray(v) for k, v in hist.items()},
        hparams={k: v for k, v in hp.items() if k != "eval_env"}, train_time_s=train_time)


def ddpg(env: gym.Env | str, total_steps: int, seed: int = 0, **hparams) -> DDPGResult:
    """DDPG (Lillicrap et al., 2016, Algorithm 1) with TD3's architecture and settings ("our
    DDPG" of Fujimoto et al.): one critic, actor updated every step, no target smoothing.
    See :func:`train` for the arguments; any TD3 switch may be turned on by keyword."""
    return train(env, total_steps, seed, **{"description": "ddpg", **hparams})


def td3(env: gym.Env | str, total_steps: int, seed: int = 0, **hparams) -> DDPGResult:
    """TD3 (Fujimoto et al., 2018, Algorithm 1): DDPG with twin critics (minimum in the target),
    delayed actor updates (d = 2) and target policy smoothing (σ̃ = 0.2, c = 0.5). Each may be
    switched off by keyword (``twin_critics=False``, ``policy_delay=1``, ``target_noise=0``)."""
    return train(env, total_steps, seed, **{"description": "td3", **TD3_SWITCHES, **hparams})


__all__ = ["DEFAULTS", "TD3_SWITCHES", "Actor", "Critics", "DDPGResult", "GaussianNoise",
           "LinearQuadraticEnv", "OrnsteinUhlenbeckNoise", "ReplayBuffer", "actor_loss",
           "check_box_env", "critic_target", "ddpg", "evaluate", "mlp", "polyak_update",
           "td3", "train"]
