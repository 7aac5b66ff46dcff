"""Advantage actor-critic (A2C) with neural networks on gymnasium environments.

The synchronous, single-learner form of A3C (Mnih et al. (2016), *Asynchronous Methods for Deep
Reinforcement Learning*) as Stable-Baselines3 and OpenAI Baselines run it: ``n_envs`` copies of
the environment step in lock-step for ``n_steps`` steps with the current stochastic policy, each
step of that rollout gets an advantage by GAE(λ) (Schulman et al. (2016)), and one gradient step
is taken on the combined loss. Equation numbers refer to the ``actor-critic`` post, section "from
the grid to CartPole":

- the λ-return advantage over a rollout cut at episode ends and at the rollout's end (Eq. 9),
  :func:`rollout_targets`; λ = 1 gives the n-step return minus V(s_t), the A2C of Mnih et al.
  (λ = 0 the one-step TD error of Eq. 2). One implementation of GAE serves both A2C and TRPO:
  :func:`deepnotes.rl.trpo.gae`, applied to each environment's column;
- the loss L = −mean Â log π(a|s) + c_v mean (R − V(s))² − c_H mean H(π(·|s)) (Eq. 10),
  :func:`a2c_loss`, minimised with RMSprop (or Adam) after clipping the global gradient norm.

Policies and value networks are those of :mod:`deepnotes.rl.trpo` (tanh MLPs, orthogonal
initialisation, separate networks): categorical for ``Discrete`` actions, diagonal Gaussian with a
state-independent log σ for bounded ``Box`` actions (the sampled action is clipped to the bounds
before ``env.step``; the unclipped one is what the loss sees).

Pure module: no file I/O, printing or plotting.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from deepnotes.nn.training import fit
from deepnotes.rl.rollouts import evaluate, evaluation_env
from deepnotes.rl.trpo import Policy, _orthogonal_init, gae, make_policy, mlp


def check_env(env: gym.Env) -> None:
    """Raise a clear error unless ``env`` has a flat Box observation space and a Discrete or
    bounded flat Box action space.

    Raises
    ------
    TypeError
        ``env`` is not a gymnasium.Env; the observation space is not a 1-D Box; the action space is
        neither ``Discrete`` nor a 1-D ``Box`` (e.g. ``MultiDiscrete``, ``Dict``, ``Tuple``).
    ValueError
        a Box action space with an infinite bound (sampled Gaussian actions are clipped to it).
    """
    if not isinstance(env, gym.Env):
        raise TypeError(f"env must be a gymnasium.Env or an env id, got {type(env).__name__}")
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        raise TypeError(f"a2c needs a flat Box observation space, got env.observation_space "
                        f"{obs!r}")
    if isinstance(act, gym.spaces.Discrete):
        return
    if isinstance(act, gym.spaces.Box):
        if len(act.shape) != 1:
            raise TypeError(f"a2c needs a flat Box action space, got env.action_space {act!r}")
        if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
            raise ValueError(f"env.action_space {act!r} is unbounded; a2c clips its Gaussian "
                             "actions to the bounds, so every bound must be finite")
        return
    raise TypeError(f"a2c supports Discrete (categorical policy) or Box (Gaussian policy) action "
                    f"spaces; env.action_space is {type(act).__name__}: {act!r}")


class ActorCritic(nn.Module):
    """The policy π_θ and the value network V_φ, separate networks in one module (one optimiser
    over both, as SB3's A2C).

    Attributes
    ----------
    policy : CategoricalPolicy or GaussianPolicy
        ``policy(obs)``, obs (B, obs_dim), is the deterministic action (argmax / clipped mean).
    value : nn.Sequential
        obs (B, obs_dim) → V(s), shape (B, 1).
    """

    def __init__(self, env: gym.Env, hidden: Iterable[int] = (64, 64),
                 log_std_init: float = 0.0):
        super().__init__()
        hidden = tuple(hidden)
        self.policy = make_policy(env, hidden, log_std_init)
        self.value = mlp([env.observation_space.shape[0], *hidden, 1])
        _orthogonal_init(self.value, 1.0)


# --- the targets and the loss ------------------------------------------------------------------


def rollout_targets(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                    terminated: np.ndarray, dones: np.ndarray, gamma: float,
                    lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and value targets of a synchronous rollout (Eq. 9), column by column.

    For each environment e, :func:`deepnotes.rl.trpo.gae` on its column: δ_t = r_t + γ (1 −
    term_t) V(s_{t+1}) − V(s_t), Â_t = δ_t + γλ (1 − done_t) Â_{t+1}, the last row bootstrapping
    from ``next_values`` (the rollout is cut there). With λ = 1, Â_t + V(s_t) is the n-step return
    Σ_k γ^k r_{t+k} + γ^n V(s_{t+n}) up to the rollout's end or the episode's end (no bootstrap
    after a termination, V of the final observation after a truncation).

    Parameters
    ----------
    rewards, values, next_values : ndarray, shape (T, N)
        r_t, V(s_t), and V(s_{t+1}) of the observation the step returned (before any reset) for
        T steps of N environments.
    terminated, dones : ndarray of bool, shape (T, N)
        s_{t+1} is terminal; the episode ended at t (terminated or truncated).
    gamma, lam : float
        Discount γ and GAE λ in [0, 1].

    Returns
    -------
    (advantages, returns) : ndarray, shape (T, N) each; returns = advantages + values.
    """
    arrays = [np.asarray(a) for a in (rewards, values, next_values, terminated, dones)]
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ValueError(f"rewards, values, next_values, terminated, dones must all have one "
                         f"shape (T, N); got {[a.shape for a in arrays]}")
    adv, ret = np.zeros(shape), np.zeros(shape)
    for e in range(shape[1]):
        adv[:, e], ret[:, e] = gae(*(a[:, e] for a in arrays), gamma, lam)
    return adv, ret


def a2c_loss(model: ActorCritic, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor,
             returns: torch.Tensor, vf_coef: float = 0.5,
             ent_coef: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The A2C loss (Eq. 10) on a flattened rollout of B = T·N steps.

    L = −mean_b Â_b log π_θ(a_b|s_b) + c_v mean_b (R_b − V_φ(s_b))² − c_H mean_b H(π_θ(·|s_b)).

    Parameters
    ----------
    obs : Tensor, shape (B, obs_dim)
    act : Tensor, shape (B,) (Discrete, integer-valued) or (B, act_dim) (Box, unclipped)
    adv, returns : Tensor, shape (B,)
        Â (treated as constants) and the value targets R = Â + V_old(s).
    vf_coef, ent_coef : float
        c_v and c_H.

    Returns
    -------
    (loss, parts) : the scalar loss and floats ``policy_loss``, ``value_loss``, ``entropy``.
    """
    dist = model.policy.params(obs)
    logp = model.policy.log_prob(dist, act)  # (B,)
    entropy = model.policy.entropy(dist).mean()
    values = model.value(obs).squeeze(-1)  # (B,)
    policy_loss = -(adv.detach() * logp).mean()
    value_loss = ((returns - values) ** 2).mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return loss, {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                  "entropy": entropy.item()}


# --- training ------------------------------------------------------------------------------------

#: Hyper-parameters of :func:`a2c` and their defaults (those of Stable-Baselines3's A2C).
DEFAULTS: dict[str, Any] = {
    "n_envs": 8,                # synchronous environment copies
    "n_steps": 5,               # steps per environment per update (rollout length)
    "gamma": 0.99,              # discount γ
    "gae_lambda": 1.0,          # GAE λ (1: n-step returns)
    "ent_coef": 0.0,            # entropy bonus c_H
    "vf_coef": 0.5,             # value-loss weight c_v
    "max_grad_norm": 0.5,       # clip of the global gradient 2-norm (None: no clipping)
    "learning_rate": 7e-4,
    "optimizer": "rmsprop",     # "rmsprop" (α = 0.99, ε = rms_prop_eps) | "adam"
    "rms_prop_eps": 1e-5,
    "normalize_advantage": False,
    "hidden": (64, 64),         # tanh MLP widths of the policy and the value network (separate)
    "log_std_init": 0.0,        # initial log σ of the Gaussian policy
    "eval_every": 0,            # env steps between evaluations (0: only at the end)
    "eval_episodes": 10,        # episodes per evaluation (deterministic policy)
    "eval_env": None,           # a separate env for evaluation (default: a copy of ``env``)
    "device": "cpu",
}


@dataclass
class A2CResult:
    """What :func:`a2c` returns.

    Attributes
    ----------
    policy : CategoricalPolicy or GaussianPolicy
        The trained policy, in eval mode; ``policy(obs)``, obs (B, obs_dim), is its deterministic
        action (argmax / clipped mean), ``policy.params(obs)`` its distribution parameters.
    value : nn.Sequential
        The value network, obs (B, obs_dim) → (B, 1).
    episode_returns : ndarray, shape (E,)
        Undiscounted return of each training episode (stochastic policy), in order of ending:
        the learning curve.
    episode_end_steps : ndarray, shape (E,)
        Total env steps (over all copies) when each training episode ended.
    eval_steps : ndarray, shape (K,)
    eval_returns : ndarray, shape (K, eval_episodes)
        Returns of the deterministic policy at each evaluation; the last row is the final one.
    history : dict of str to ndarray, each shape (n_updates,)
        Per update: ``loss``, ``policy_loss``, ``value_loss``, ``entropy``, ``grad_norm`` (before
        clipping; only with ``max_grad_norm``).
    hparams : dict
    train_time_s : float
        Wall time of training, evaluations excluded.
    env_steps : int
        Environment steps taken: ``n_updates · n_envs · n_steps`` ≥ ``total_steps``.
    """

    policy: Policy
    value: nn.Module
    episode_returns: np.ndarray
    episode_end_steps: np.ndarray
    eval_steps: np.ndarray
    eval_returns: np.ndarray
    history: dict[str, np.ndarray] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    train_time_s: float = 0.0
    env_steps: int = 0

    @property
    def final_return(self) -> float:
        """Mean return of the last evaluation."""
        return float(self.eval_returns[-1].mean())


def _copies(env: gym.Env, n: int) -> list[gym.Env]:
    """``env`` and n − 1 fresh copies of it (from its spec when it has one)."""
    out = [env]
    for _ in range(n - 1):
        out.append(gym.make(env.spec) if env.spec is not None else copy.deepcopy(env))
    return out


def a2c(env: gym.Env | str, total_steps: int, seed: int = 0, *,
        progress: Callable[..., Iterable[int]] | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None,
        **hparams) -> A2CResult:
    """Train a policy by synchronous advantage actor-critic (A2C; Mnih et al., 2016).

    Each update: the N = ``n_envs`` environments step T = ``n_steps`` times with actions sampled
    from π_θ (one batched forward per step); advantages and value targets by :func:`rollout_targets`
    (Eq. 9), bootstrapping through truncations, not terminations; one step of the optimiser on
    :func:`a2c_loss` (Eq. 10) with the gradient norm clipped, through
    :func:`deepnotes.nn.training.fit` (its batch source collects the rollout with the current
    weights). Episodes that end are reset in place; the next rollout continues where this one
    stopped.

    Parameters
    ----------
    env : gymnasium.Env or str
        Flat Box observations; Discrete or bounded Box actions (:func:`check_env`). A str is
        passed to ``gymnasium.make``; the other N − 1 copies are made from ``env.spec`` (or by
        deep copy for an env without a spec).
    total_steps : int
        Environment steps over all copies; rounded up to a multiple of N·T.
    seed : int
        Seeds the networks and action sampling; copy i is first reset with ``seed + i``.
    progress : callable, optional
        ``progress(iterable, description)`` wrapping the range of updates (e.g. ``run.track``).
    callback : callable, optional
        ``callback(update_index, metrics)`` after every update.
    **hparams
        Any key of :data:`DEFAULTS`.
    """
    unknown = set(hparams) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    hp = {**DEFAULTS, **hparams}
    if isinstance(env, str):
        env = gym.make(env)
    check_env(env)
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    n_envs, n_steps = int(hp["n_envs"]), int(hp["n_steps"])
    if n_envs < 1 or n_steps < 1:
        raise ValueError(f"n_envs and n_steps must be >= 1, got {n_envs}, {n_steps}")
    if hp["optimizer"] not in ("rmsprop", "adam"):
        raise ValueError(f"optimizer must be 'rmsprop' or 'adam', got {hp['optimizer']!r}")
    if not hp["learning_rate"] > 0:
        raise ValueError(f"learning_rate must be > 0, got {hp['learning_rate']}")
    device = torch.device(hp["device"])
    eval_env = evaluation_env(env, hp["eval_env"])
    envs = _copies(env, n_envs)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    obs_dim = env.observation_space.shape[0]
    act_shape = () if discrete else env.action_space.shape
    low, high = (None, None) if discrete else (env.action_space.low, env.action_space.high)
    per_update = n_envs * n_steps
    n_updates = math.ceil(total_steps / per_update)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = ActorCritic(env, hp["hidden"], hp["log_std_init"]).to(device)
        policy, value = model.policy, model.value
        if hp["optimizer"] == "rmsprop":
            opt = torch.optim.RMSprop(model.parameters(), lr=hp["learning_rate"], alpha=0.99,
                                      eps=hp["rms_prop_eps"], weight_decay=0.0)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=hp["learning_rate"])
        gen = torch.Generator(device=device).manual_seed(seed + 1)

        obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]).astype(np.float32)
        ep_ret = np.zeros(n_envs)
        ep_returns: list[float] = []
        ep_ends: list[int] = []
        eval_steps: list[int] = []
        eval_rets: list[np.ndarray] = []
        state = {"steps": 0, "eval_time": 0.0, "next_eval": int(hp["eval_every"]) or None}
        b_obs = np.zeros((n_steps, n_envs, obs_dim), np.float32)
        b_act = np.zeros((n_steps, n_envs, *act_shape), np.float32)
        b_rew, b_val, b_next_val = (np.zeros((n_steps, n_envs)) for _ in range(3))
        b_term = np.zeros((n_steps, n_envs), bool)
        b_done = np.zeros((n_steps, n_envs), bool)

        @torch.no_grad()
        def values_of(x: np.ndarray) -> np.ndarray:
            return value(torch.as_tensor(x, device=device)).squeeze(-1).cpu().numpy()

        def collect(_: int) -> tuple[torch.Tensor, ...]:
            """One rollout of T steps of the N envs with the current π_θ; the batch of Eq. 10."""
            nonlocal obs
            b_next_val[:] = 0.0
            for t in range(n_steps):
                with torch.no_grad():
                    o = torch.as_tensor(obs, device=device)  # (N, obs_dim)
                    a = policy.sample(policy.params(o), gen).cpu().numpy()
                    v = value(o).squeeze(-1).cpu().numpy()
                b_obs[t], b_act[t], b_val[t] = obs, a, v
                finals: list[tuple[int, np.ndarray]] = []
                nxt = np.empty_like(obs)
                for i, e in enumerate(envs):
                    a_env = int(a[i]) if discrete else np.clip(a[i], low, high)
                    o2, r, term, trunc, _ = e.step(a_env)
                    b_rew[t, i], b_term[t, i], b_done[t, i] = r, term, term or trunc
                    ep_ret[i] += float(r)
                    if term or trunc:
                        ep_returns.append(float(ep_ret[i]))
                        ep_ends.append(state["steps"] + (t + 1) * n_envs)
                        ep_ret[i] = 0.0
                        if trunc and not term:  # bootstrap from the observation it was cut at
                            finals.append((i, o2))
                        o2, _ = e.reset()
                    nxt[i] = o2
                obs = nxt
                if finals:
                    idx = [i for i, _ in finals]
                    b_next_val[t, idx] = values_of(np.stack([o for _, o in finals])
                                                   .astype(np.float32))
            last_v = values_of(obs)
            # V(s_{t+1}) is the next row's V(s) except where the episode ended at t; a terminated
            # step's V is multiplied by 0 in Eq. 9 and a truncated one was set above
            going = ~b_done
            b_next_val[:-1][going[:-1]] = b_val[1:][going[:-1]]
            b_next_val[-1][going[-1]] = last_v[going[-1]]
            adv, ret = rollout_targets(b_rew, b_val, b_next_val, b_term, b_done,
                                       hp["gamma"], hp["gae_lambda"])
            state["steps"] += per_update
            adv = adv.reshape(-1)
            if hp["normalize_advantage"] and adv.size > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            return (torch.as_tensor(b_obs.reshape(per_update, obs_dim), device=device),
                    torch.as_tensor(b_act.reshape(per_update, *act_shape), device=device),
                    torch.as_tensor(adv, dtype=torch.float32, device=device),
                    torch.as_tensor(ret.reshape(-1), dtype=torch.float32, device=device))

        def loss_fn(m: ActorCritic, batch):
            return a2c_loss(m, *batch, vf_coef=hp["vf_coef"], ent_coef=hp["ent_coef"])

        def after_update(update: int, metrics: dict[str, float]) -> None:
            step, nxt_eval = state["steps"], state["next_eval"]
            if nxt_eval is not None and step >= nxt_eval and update < n_updates - 1:
                t_eval = time.perf_counter()
                policy.eval()
                eval_steps.append(step)
                eval_rets.append(evaluate(policy, eval_env, int(hp["eval_episodes"]),
                                          seed=10**6 + seed * 1000))
                policy.train()
                while state["next_eval"] <= step:
                    state["next_eval"] += int(hp["eval_every"])
                state["eval_time"] += time.perf_counter() - t_eval
            if callback is not None:
                callback(update, metrics)

        t0 = time.perf_counter()
        fitted = fit(model, loss_fn, collect, opt, n_updates, clip_grad_norm=hp["max_grad_norm"],
                     progress=progress, description="a2c", callback=after_update)
        train_time = time.perf_counter() - t0 - state["eval_time"]
        model.eval()
        eval_steps.append(state["steps"])
        eval_rets.append(evaluate(policy, eval_env, int(hp["eval_episodes"]),
                                  seed=10**6 + seed * 1000))
    return A2CResult(
        policy=policy, value=value, episode_returns=np.asarray(ep_returns),
        episode_end_steps=np.asarray(ep_ends, dtype=np.int64),
        eval_steps=np.asarray(eval_steps, dtype=np.int64), eval_returns=np.asarray(eval_rets),
        history={k: np.asarray(v) for k, v in fitted.history.items()},
        hparams={k: v for k, v in hp.items() if k != "eval_env"}, train_time_s=train_time,
        env_steps=int(state["steps"]))


__all__ = ["DEFAULTS", "A2CResult", "ActorCritic", "a2c", "a2c_loss", "check_env",
           "rollout_targets"]
