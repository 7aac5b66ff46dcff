"""Trust region policy optimisation (Schulman et al., 2015), with GAE (Schulman et al., 2016).

One TRPO iteration (post ``trpo``, Eq. 4-9): collect ``n_steps`` environment steps with the current
policy π_old; estimate advantages by GAE(λ) (Eq. 6) against a learned value baseline; take the
gradient g of the importance-weighted surrogate (Eq. 4); solve F x = g by conjugate gradient
(:func:`conjugate_gradient`), F the Fisher matrix of the policy, touched only through
Fisher-vector products computed by double back-propagation of the mean KL
(:func:`fisher_vector_product`, Eq. 7); scale x to the largest step whose quadratic KL model
equals the radius δ (Eq. 8); backtrack until the exact mean KL is within δ and the surrogate
improves (:func:`line_search`, Eq. 9); finally regress the value network on the λ-returns.

The tabular half (:func:`surrogate_exact`, :func:`improvement_bound`) evaluates the monotonic
improvement bound of Schulman et al.'s Theorem 1 (post Eq. 2-3) exactly on a model with ``P`` and
``R`` (e.g. :class:`deepnotes.rl.envs.GridWorld`).

Pure module: no file I/O, printing or plotting.
"""

from __future__ import annotations

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
from deepnotes.rl.planning import _check_model, evaluate_policy, policy_matrix
from deepnotes.rl.rollouts import evaluate, evaluation_env

# --- tabular: the monotonic improvement bound ---------------------------------------------------


def _tabular(model, pi, d0):
    P, R, gamma = _check_model(model)
    S, A = R.shape
    pi = policy_matrix(pi, S, A)
    d0 = np.full(S, 1.0 / S) if d0 is None else np.asarray(d0, float)
    if d0.shape != (S,) or (d0 < 0).any() or not np.isclose(d0.sum(), 1.0):
        raise ValueError(f"d0 must be a probability vector of shape ({S},)")
    return P, R, gamma, pi, d0


def surrogate_exact(model, pi, pi_new, d0=None) -> dict[str, float]:
    """Exact η(π̃) and the local approximation L_π(π̃) (post Eq. 1-2; paper Eq. 1-3).

    η(π) = d0ᵀ v_π; ρ_π(s) = Σ_t γᵗ P(s_t = s) (unnormalised discounted visitation);
    L_π(π̃) = η(π) + Σ_s ρ_π(s) Σ_a π̃(a|s) A_π(s, a).

    Parameters
    ----------
    model : object with ``P`` (S, A, S), ``R`` (S, A) and ``gamma``
    pi, pi_new : ndarray, shape (S, A)
        The current and the candidate stochastic policies.
    d0 : ndarray, shape (S,), optional
        Start distribution (default uniform).

    Returns
    -------
    dict with ``eta`` (η(π)), ``eta_new`` (η(π̃)), ``surrogate`` (L_π(π̃)).
    """
    P, R, gamma, pi, d0 = _tabular(model, pi, d0)
    pi_new = policy_matrix(pi_new, *R.shape)
    v = evaluate_policy(model, pi)
    q = R + gamma * P @ v  # (S, A)
    adv = q - v[:, None]
    P_pi = np.einsum("sa,sat->st", pi, P)
    rho = np.linalg.solve((np.eye(len(v)) - gamma * P_pi).T, d0)  # d0ᵀ (I - γ P_π)^-1
    eta = float(d0 @ v)
    return {"eta": eta, "eta_new": float(d0 @ evaluate_policy(model, pi_new)),
            "surrogate": eta + float(rho @ (pi_new * adv).sum(axis=1))}


def improvement_bound(model, pi, pi_new, d0=None) -> dict[str, float]:
    """The lower bounds of Theorem 1 of Schulman et al. (2015) on η(π̃) (post Eq. 2-3).

    With ε = max_{s,a} |A_π(s, a)| and C = 4εγ / (1 - γ)²,

    - TV form: η(π̃) ≥ L_π(π̃) - C α², α = max_s D_TV(π(·|s), π̃(·|s));
    - KL form: η(π̃) ≥ L_π(π̃) - C max_s D_KL(π(·|s) ‖ π̃(·|s)), since D_TV² ≤ D_KL.

    Returns
    -------
    dict with the keys of :func:`surrogate_exact` and ``eps``, ``C``, ``tv_max``, ``kl_max``
    (nats), ``bound_tv``, ``bound_kl``.
    """
    P, R, gamma, pi, d0 = _tabular(model, pi, d0)
    pi_new = policy_matrix(pi_new, *R.shape)
    out = surrogate_exact(model, pi, pi_new, d0)
    v = evaluate_policy(model, pi)
    eps = float(np.abs(R + gamma * P @ v - v[:, None]).max())
    C = 4.0 * eps * gamma / (1.0 - gamma) ** 2
    tv = 0.5 * np.abs(pi - pi_new).sum(axis=1).max()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pi > 0, pi * (np.log(pi) - np.log(pi_new)), 0.0)
    kl = float(terms.sum(axis=1).max())
    out.update(eps=eps, C=C, tv_max=float(tv), kl_max=kl,
               bound_tv=out["surrogate"] - C * tv**2, bound_kl=out["surrogate"] - C * kl)
    return out


# --- policies ------------------------------------------------------------------------------------


def mlp(sizes: Iterable[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    sizes = list(sizes)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _orthogonal_init(net: nn.Sequential, last_gain: float) -> None:
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, m in enumerate(linears):
        nn.init.orthogonal_(m.weight, gain=last_gain if i == len(linears) - 1 else math.sqrt(2))
        nn.init.zeros_(m.bias)


class CategoricalPolicy(nn.Module):
    """π(a|s) = softmax(f(s))_a for a Discrete action space; ``forward`` gives the argmax action.

    ``obs`` (B, obs_dim) → logits (B, n_actions)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Iterable[int] = (64, 64)):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, n_actions])
        _orthogonal_init(self.net, 0.01)

    def params(self, obs: torch.Tensor) -> tuple[torch.Tensor]:
        """Distribution parameters: log-probabilities, shape (B, n_actions)."""
        return (torch.log_softmax(self.net(obs), dim=-1),)

    @staticmethod
    def log_prob(dist: tuple[torch.Tensor], act: torch.Tensor) -> torch.Tensor:
        """log π(a|s), shape (B,), of int actions ``act`` (B,)."""
        return dist[0].gather(-1, act.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def kl(old: tuple[torch.Tensor], new: tuple[torch.Tensor]) -> torch.Tensor:
        """D_KL(old ‖ new) per state, shape (B,), in nats."""
        return (old[0].exp() * (old[0] - new[0])).sum(-1)

    @staticmethod
    def entropy(dist: tuple[torch.Tensor]) -> torch.Tensor:
        return -(dist[0].exp() * dist[0]).sum(-1)

    @staticmethod
    def sample(dist: tuple[torch.Tensor], gen: torch.Generator | None = None) -> torch.Tensor:
        return torch.multinomial(dist[0].exp(), 1, generator=gen).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The most probable action, shape (B,)."""
        return self.net(obs).argmax(-1)


class GaussianPolicy(nn.Module):
    """π(a|s) = N(μ(s), diag σ²) for a Box action space, σ a state-independent parameter
    (log σ starts at ``log_std_init``); ``forward`` gives the mean clipped to the bounds.

    ``obs`` (B, obs_dim) → mean (B, act_dim), log σ (act_dim,) broadcast to (B, act_dim)."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray,
                 hidden: Iterable[int] = (64, 64), log_std_init: float = 0.0):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim])
        _orthogonal_init(self.net, 0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.net(obs)
        return mean, self.log_std.expand_as(mean)

    @staticmethod
    def log_prob(dist, act: torch.Tensor) -> torch.Tensor:
        mean, log_std = dist
        z = (act - mean) / log_std.exp()
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @staticmethod
    def kl(old, new) -> torch.Tensor:
        (m0, ls0), (m1, ls1) = old, new
        var0, var1 = (2 * ls0).exp(), (2 * ls1).exp()
        return (ls1 - ls0 + (var0 + (m0 - m1) ** 2) / (2 * var1) - 0.5).sum(-1)

    @staticmethod
    def entropy(dist) -> torch.Tensor:
        return (dist[1] + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)

    @staticmethod
    def sample(dist, gen: torch.Generator | None = None) -> torch.Tensor:
        mean, log_std = dist
        noise = torch.randn(mean.shape, generator=gen, device=mean.device, dtype=mean.dtype)
        return mean + log_std.exp() * noise

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action clipped to the bounds, shape (B, act_dim)."""
        return torch.clamp(self.net(obs), self.low, self.high)


Policy = CategoricalPolicy | GaussianPolicy


def make_policy(env: gym.Env, hidden: Iterable[int] = (64, 64),
                log_std_init: float = 0.0) -> Policy:
    """The policy family for ``env``'s spaces: Discrete → categorical, Box → diagonal Gaussian.

    Raises ``TypeError`` for any other action space (MultiDiscrete, Dict, …) and for
    non-Box or non-flat observations."""
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise TypeError(f"trpo needs a flat Box observation space, got {obs_space!r}")
    obs_dim = obs_space.shape[0]
    if isinstance(act_space, gym.spaces.Discrete):
        return CategoricalPolicy(obs_dim, int(act_space.n), hidden)
    if isinstance(act_space, gym.spaces.Box):
        if len(act_space.shape) != 1:
            raise TypeError(f"trpo needs a flat Box action space, got shape {act_space.shape}")
        if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
            raise ValueError("trpo needs finite Box action bounds (actions are clipped to them)")
        return GaussianPolicy(obs_dim, act_space.shape[0], act_space.low, act_space.high, hidden,
                              log_std_init)
    raise TypeError(f"trpo supports Discrete (categorical policy) or Box (Gaussian policy) "
                    f"action spaces, got {type(act_space).__name__}")


# --- the pieces of one update -------------------------------------------------------------------


def gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
        terminated: np.ndarray, dones: np.ndarray, gamma: float,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al., 2016, Eq. 16; post Eq. 6).

    δ_t = r_t + γ (1 - term_t) V(s_{t+1}) - V(s_t);  Â_t = δ_t + γλ (1 - done_t) Â_{t+1}.

    Truncated episodes (``done`` but not ``terminated``) bootstrap from ``next_values``, the value
    of the observation the episode was cut at; the last step of the rollout is treated as
    truncated unless it terminated.

    Parameters
    ----------
    rewards, values, next_values : ndarray, shape (T,)
        r_t, V(s_t) and V(s_{t+1}) (the latter before any reset).
    terminated, dones : ndarray of bool, shape (T,)
        Whether s_{t+1} is terminal; whether the episode ended at t (terminated or truncated).
    gamma, lam : float
        Discount γ and GAE parameter λ, both in [0, 1].

    Returns
    -------
    (advantages, returns) : ndarray, shape (T,) each; returns = advantages + values (λ-returns).
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got {gamma}, {lam}")
    r = np.asarray(rewards, np.float64)
    T = r.shape[0]
    arrays = [np.asarray(a) for a in (values, next_values, terminated, dones)]
    if r.ndim != 1 or any(a.shape != (T,) for a in arrays):
        raise ValueError("rewards, values, next_values, terminated, dones must all be shape (T,)")
    v, v_next, term, done = arrays
    delta = r + gamma * (1.0 - term.astype(np.float64)) * v_next - v
    adv = np.zeros(T)
    running = 0.0
    for t in range(T - 1, -1, -1):
        running = delta[t] + (0.0 if done[t] else gamma * lam * running)
        adv[t] = running
    return adv, adv + v


def flat_params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def set_flat_params(module: nn.Module, flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p in module.parameters():
            n = p.numel()
            p.copy_(flat[offset:offset + n].view_as(p))
            offset += n


def mean_kl(policy: Policy, obs: torch.Tensor, old: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean over states of D_KL(π_old(·|s) ‖ π_θ(·|s)) in nats (post Eq. 5); ``old`` are the
    detached distribution parameters of π_old on ``obs`` (B, obs_dim)."""
    return policy.kl(old, policy.params(obs)).mean()


def fisher_vector_product_fn(policy: Policy, obs: torch.Tensor,
                             damping: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ (F + damping·I) v at the current parameters, F the Hessian of the mean KL from the
    current policy (post Eq. 7), the first derivative's graph built once and reused.

    Double back-propagation: g(θ') = ∇_θ' D̄_KL(π_θ ‖ π_θ') with π_θ held fixed (its graph kept),
    then F v = ∇_θ' (g(θ')ᵀ v) at θ' = θ. At θ' = θ this Hessian equals the Fisher information
    E_s E_{a~π}[∇ log π ∇ log πᵀ]. ``v`` and the result: flat, shape (n_params,). The returned
    function is valid until the parameters change.
    """
    params = list(policy.parameters())
    with torch.no_grad():
        old = tuple(t.detach() for t in policy.params(obs))
    kl = mean_kl(policy, obs, old)
    grads = torch.autograd.grad(kl, params, create_graph=True)
    g = torch.cat([x.reshape(-1) for x in grads])

    def fvp(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(g @ v, params, retain_graph=True)
        return torch.cat([x.reshape(-1) for x in hv]) + damping * v

    return fvp


def fisher_vector_product(policy: Policy, obs: torch.Tensor, v: torch.Tensor,
                          damping: float = 0.0) -> torch.Tensor:
    """(F + damping·I) v for one vector ``v`` (n_params,); see :func:`fisher_vector_product_fn`."""
    return fisher_vector_product_fn(policy, obs, damping)(v)


def conjugate_gradient(Avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iters: int = 10, tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A given only x ↦ A x (Hestenes-Stiefel).

    Stops after ``iters`` iterations or when the squared residual ‖b - A x‖² < ``tol``; in exact
    arithmetic it is exact after n = dim iterations. ``b``, the result: shape (n,).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < tol:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def line_search(policy: Policy, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor,
                old_logp: torch.Tensor, old: tuple[torch.Tensor, ...], theta0: torch.Tensor,
                full_step: torch.Tensor, max_kl: float, shrink: float = 0.8,
                max_iter: int = 10) -> dict[str, float]:
    """Backtracking along ``full_step`` (post Eq. 9): try θ0 + shrinkᵏ·full_step, k = 0, 1, …,
    and accept the first that keeps the mean KL ≤ ``max_kl`` and raises the surrogate (Eq. 4).
    If none does, the parameters go back to θ0.

    Returns
    -------
    dict with ``accepted`` (0/1), ``step_fraction`` (shrinkᵏ, 0 if rejected), ``kl`` (mean KL
    of the kept parameters), ``surrogate_gain`` (L(θ) - L(θ0) of the kept parameters),
    ``backtracks`` (k tried last).
    """
    with torch.no_grad():
        loss0 = surrogate(policy, obs, act, adv, old_logp)
        frac = 1.0
        for k in range(max_iter):
            set_flat_params(policy, theta0 + frac * full_step)
            dist = policy.params(obs)
            gain = (torch.exp(policy.log_prob(dist, act) - old_logp) * adv).mean() - loss0
            kl = policy.kl(old, dist).mean()
            if kl <= max_kl and gain > 0:
                return {"accepted": 1.0, "step_fraction": frac, "kl": float(kl),
                        "surrogate_gain": float(gain), "backtracks": float(k)}
            frac *= shrink
        set_flat_params(policy, theta0)
    return {"accepted": 0.0, "step_fraction": 0.0, "kl": 0.0, "surrogate_gain": 0.0,
            "backtracks": float(max_iter)}


def surrogate(policy: Policy, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor,
              old_logp: torch.Tensor) -> torch.Tensor:
    """L(θ) = mean_t [π_θ(a_t|s_t) / π_old(a_t|s_t) · Â_t] (post Eq. 4)."""
    return (torch.exp(policy.log_prob(policy.params(obs), act) - old_logp) * adv).mean()


def trpo_step(policy: Policy, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor,
              max_kl: float = 0.01, cg_iters: int = 15, cg_damping: float = 0.1,
              shrink: float = 0.8, line_search_iters: int = 10) -> dict[str, float]:
    """One natural-gradient step with line search on a batch (post Eq. 4-9).

    ``obs`` (B, obs_dim), ``act`` (B,) or (B, act_dim), ``adv`` (B,). Returns the line search's
    dict plus ``expected_gain`` (gᵀs of the full step s), ``step_norm`` and ``entropy``.
    """
    with torch.no_grad():
        old = tuple(t.detach() for t in policy.params(obs))
        old_logp = policy.log_prob(old, act)
    params = list(policy.parameters())
    loss = surrogate(policy, obs, act, adv, old_logp)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, params)])
    # Fisher products on every state of the batch (Schulman et al. subsample 10%; see the post).
    fvp = fisher_vector_product_fn(policy, obs, cg_damping)
    x = conjugate_gradient(fvp, g, cg_iters)
    xFx = float(x @ fvp(x))
    if not math.isfinite(xFx) or xFx <= 0:
        return {"accepted": 0.0, "step_fraction": 0.0, "kl": 0.0, "surrogate_gain": 0.0,
                "backtracks": 0.0, "expected_gain": 0.0, "step_norm": 0.0,
                "entropy": float(policy.entropy(old).mean())}
    beta = math.sqrt(2.0 * max_kl / xFx)  # Eq. 8: ½ (βx)ᵀ F (βx) = δ
    full_step = beta * x
    theta0 = flat_params(policy)
    out = line_search(policy, obs, act, adv, old_logp, old, theta0, full_step, max_kl,
                      shrink, line_search_iters)
    out.update(expected_gain=float(g @ full_step), step_norm=float(full_step.norm()),
               entropy=float(policy.entropy(old).mean()))
    return out


def fit_value(value: nn.Module, optimizer: torch.optim.Optimizer, obs: torch.Tensor,
              returns: torch.Tensor, epochs: int, batch_size: int,
              gen: torch.Generator) -> float:
    """Regress ``value`` (obs (T, obs_dim) → (T, 1)) on the λ-returns (T,) by mean squared error:
    ``epochs`` passes of shuffled mini-batches (the remainder of each pass dropped), through
    :func:`deepnotes.nn.training.fit`. Returns the mean loss of the last pass."""
    n = obs.shape[0]
    bs = min(batch_size, n)
    per_epoch = n // bs
    perm: list[torch.Tensor] = []

    def batches(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i % per_epoch == 0:
            perm[:] = [torch.randperm(n, generator=gen).to(obs.device)]
        idx = perm[0][(i % per_epoch) * bs:(i % per_epoch + 1) * bs]
        return obs[idx], returns[idx]

    fitted = fit(value, lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean(), batches,
                 optimizer, epochs * per_epoch)
    return float(np.mean(fitted.history["loss"][-per_epoch:]))


# --- the training loop -----------------------------------------------------------------------

#: Hyper-parameters of :func:`trpo` and their defaults (those of sb3-contrib's TRPO).
DEFAULTS: dict[str, Any] = {
    "n_steps": 2048,            # env steps per policy update
    "gamma": 0.99,              # discount γ
    "gae_lambda": 0.95,         # GAE λ
    "max_kl": 0.01,             # trust-region radius δ (nats, mean KL)
    "cg_iters": 15,             # conjugate-gradient iterations
    "cg_damping": 0.1,          # damping added to the Fisher matrix
    "line_search_shrink": 0.8,  # backtracking factor
    "line_search_iters": 10,    # backtracking tries
    "normalize_advantage": True,
    "hidden": (64, 64),         # tanh MLP widths for policy and value networks (separate)
    "log_std_init": 0.0,        # initial log σ of the Gaussian policy
    "vf_lr": 1e-3,              # Adam learning rate of the value network
    "vf_epochs": 10,            # passes over each rollout for the value regression
    "vf_batch_size": 128,       # value-regression mini-batch
    "eval_every": 0,            # env steps between evaluations (0: only at the end)
    "eval_episodes": 10,        # episodes per evaluation (deterministic policy)
    "eval_env": None,           # a separate env for evaluation (default: a copy of ``env``)
    "device": "cpu",
}


@dataclass
class TRPOResult:
    """What :func:`trpo` returns.

    Attributes
    ----------
    policy : CategoricalPolicy or GaussianPolicy
        The trained policy; ``policy(obs)``, obs (B, obs_dim), gives its deterministic action
        (argmax / clipped mean); ``policy.params(obs)`` its distribution parameters.
    value : nn.Sequential
        The value network, obs (B, obs_dim) → (B, 1).
    episode_returns : ndarray, shape (E,)
        Undiscounted return of each training episode (stochastic policy): the learning curve.
    episode_end_steps : ndarray, shape (E,)
        Env step count at which each training episode ended.
    eval_steps : ndarray, shape (K,)
    eval_returns : ndarray, shape (K, eval_episodes)
        Returns of the deterministic policy at each evaluation; the last row is the final one.
    history : dict of str to ndarray, each shape (n_updates,)
        Per policy update: ``kl`` (mean KL of the accepted step, nats), ``accepted``,
        ``step_fraction``, ``backtracks``, ``surrogate_gain``, ``expected_gain``, ``entropy``,
        ``value_loss`` (mean squared error of the last value epoch), ``env_steps``.
    hparams : dict
    train_time_s : float
        Wall time of training, evaluations excluded.
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

    @property
    def final_return(self) -> float:
        """Mean return of the last evaluation."""
        return float(self.eval_returns[-1].mean())


def trpo(env: gym.Env | str, total_steps: int, seed: int = 0, *,
         progress: Callable[..., Iterable[int]] | None = None,
         callback: Callable[[int, dict[str, float]], None] | None = None,
         **hparams) -> TRPOResult:
    """Train a policy by TRPO (Schulman et al., 2015, single-path; advantages by GAE).

    Parameters
    ----------
    env : gymnasium.Env or str
        Flat Box observations; Discrete (categorical policy) or bounded Box (diagonal Gaussian)
        actions. A str is passed to ``gymnasium.make``. Gaussian actions are clipped to the
        bounds before ``env.step`` (the unclipped action is what the policy is trained on).
    total_steps : int
        Environment steps; the last rollout may be cut short to fit.
    seed : int
        Seeds the networks, action sampling, value mini-batches and env resets.
    progress : callable, optional
        ``progress(iterable, description)`` wrapping the range of updates (e.g. ``run.track``).
    callback : callable, optional
        ``callback(update_index, stats)`` after every policy update.
    **hparams
        Any key of :data:`DEFAULTS`.
    """
    unknown = set(hparams) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    hp = {**DEFAULTS, **hparams}
    if isinstance(env, str):
        env = gym.make(env)
    if not isinstance(env, gym.Env):
        raise TypeError(f"env must be a gymnasium.Env or an env id, got {type(env).__name__}")
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if hp["max_kl"] <= 0:
        raise ValueError(f"max_kl must be > 0, got {hp['max_kl']}")
    n_steps = int(hp["n_steps"])
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    device = torch.device(hp["device"])
    eval_env = evaluation_env(env, hp["eval_env"])
    discrete = isinstance(env.action_space, gym.spaces.Discrete)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        policy = make_policy(env, hp["hidden"], hp["log_std_init"]).to(device)
        obs_dim = env.observation_space.shape[0]
        value = mlp([obs_dim, *hp["hidden"], 1]).to(device)
        _orthogonal_init(value, 1.0)
        vf_opt = torch.optim.Adam(value.parameters(), lr=hp["vf_lr"])
        gen = torch.Generator(device=device).manual_seed(seed + 1)
        cpu_gen = torch.Generator().manual_seed(seed + 2)
        low = high = None
        if not discrete:
            low, high = env.action_space.low, env.action_space.high

        eval_every = int(hp["eval_every"]) or total_steps
        next_eval = eval_every
        ep_returns, ep_ends, eval_steps, eval_rets = [], [], [], []
        hist: dict[str, list[float]] = {}
        obs, _ = env.reset(seed=seed)
        ep_ret, n_eps, step, train_time = 0.0, 0, 0, 0.0
        n_updates = math.ceil(total_steps / n_steps)
        updates: Iterable[int] = range(n_updates)
        if progress is not None:
            updates = progress(updates, "trpo")
        t0 = time.perf_counter()
        for update in updates:
            T = min(n_steps, total_steps - step)
            b_obs = np.zeros((T, obs_dim), np.float32)
            b_next = np.zeros((T, obs_dim), np.float32)
            b_act = np.zeros((T,) if discrete else (T, env.action_space.shape[0]), np.float32)
            b_rew, b_term, b_done = np.zeros(T), np.zeros(T, bool), np.zeros(T, bool)
            for t in range(T):
                with torch.no_grad():
                    o = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]
                    a = policy.sample(policy.params(o), gen)[0].cpu().numpy()
                a_env = int(a) if discrete else np.clip(a, low, high)
                nxt, r, term, trunc, _ = env.step(a_env)
                b_obs[t], b_act[t], b_rew[t], b_next[t] = obs, a, r, nxt
                b_term[t], b_done[t] = term, term or trunc
                ep_ret += float(r)
                step += 1
                if term or trunc:
                    ep_returns.append(ep_ret)
                    ep_ends.append(step)
                    n_eps += 1
                    ep_ret = 0.0
                    nxt, _ = env.reset(seed=seed + 10_000 * n_eps)
                obs = nxt
            # --- advantages (Eq. 6) ---
            o_t = torch.as_tensor(b_obs, device=device)
            with torch.no_grad():
                v = value(o_t).squeeze(-1).cpu().numpy().astype(np.float64)
                v_next = value(torch.as_tensor(b_next, device=device)).squeeze(-1).cpu().numpy()
            adv, ret = gae(b_rew, v, v_next.astype(np.float64), b_term, b_done,
                           hp["gamma"], hp["gae_lambda"])
            if hp["normalize_advantage"] and T > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            a_t = torch.as_tensor(b_act, device=device)
            adv_t = torch.as_tensor(adv, dtype=torch.float32, device=device)
            # --- policy step (Eq. 4-9) ---
            stats = trpo_step(policy, o_t, a_t, adv_t, hp["max_kl"], int(hp["cg_iters"]),
                              hp["cg_damping"], hp["line_search_shrink"],
                              int(hp["line_search_iters"]))
            # --- value regression on the λ-returns ---
            ret_t = torch.as_tensor(ret, dtype=torch.float32, device=device)
            stats["value_loss"] = fit_value(value, vf_opt, o_t, ret_t, int(hp["vf_epochs"]),
                                            int(hp["vf_batch_size"]), cpu_gen)
            stats["env_steps"] = float(step)
            for k, val in stats.items():
                hist.setdefault(k, []).append(val)
            if callback is not None:
                callback(update, stats)
            if step >= next_eval or step == total_steps:
                train_time += time.perf_counter() - t0
                policy.eval()
                eval_steps.append(step)
                eval_rets.append(evaluate(policy, eval_env, int(hp["eval_episodes"]),
                                          seed=10**6 + seed * 1000))
                policy.train()
                while next_eval <= step:
                    next_eval += eval_every
                t0 = time.perf_counter()
    policy.eval()
    return TRPOResult(
        policy=policy, value=value, episode_returns=np.asarray(ep_returns),
        episode_end_steps=np.asarray(ep_ends, dtype=np.int64),
        eval_steps=np.asarray(eval_steps, dtype=np.int64), eval_returns=np.asarray(eval_rets),
        history={k: np.asarray(v) for k, v in hist.items()},
        hparams={k: v for k, v in hp.items() if k != "eval_env"}, train_time_s=train_time)


__all__ = ["DEFAULTS", "CategoricalPolicy", "GaussianPolicy", "TRPOResult", "conjugate_gradient",
           "evaluate", "fisher_vector_product", "fisher_vector_product_fn", "fit_value",
           "flat_params", "gae", "improvement_bound", "line_search", "make_policy", "mean_kl",
           "mlp", "set_flat_params", "surrogate", "surrogate_exact", "trpo", "trpo_step"]
