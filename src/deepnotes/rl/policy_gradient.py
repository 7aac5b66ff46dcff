"""Policy gradient on the grid world: softmax policies, exact objectives and gradients, REINFORCE.

Equation numbers refer to the ``policy-gradient`` post (Zhao (2025), *Mathematical Foundations of
Reinforcement Learning*, Ch. 9; Williams (1992)):

- the softmax policy π(a|s) ∝ exp(φ(s)ᵀ θ_a) (Eq. 1), tabular when φ is one-hot;
- the average state value v̄ = Σ_s d₀(s) v_π(s) (Eq. 2) and the average reward
  r̄ = Σ_s d_π(s) r_π(s) (Eq. 3), computed exactly by :func:`average_value` /
  :func:`average_reward`, with exact gradients by automatic differentiation through the linear
  solve v_π = (I − γ P_π)⁻¹ r_π (:func:`exact_gradient`);
- the REINFORCE estimator ĝ = Σ_t γᵗ G_t ∇_θ ln π(a_t|s_t) (Eq. 4) of ∇v̄, sampled by
  :func:`reinforce_gradients` and followed by :func:`reinforce` (with an optional constant
  baseline, Eq. 5).

Episodes start from d₀ and are truncated after ``episode_length`` steps: the estimator is unbiased
for the truncated objective, which differs from v̄ by at most γ^T max|r| / (1 − γ).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from deepnotes.rl import _kernels as K
from deepnotes.rl.planning import _check_model


def softmax_policy(phi, theta) -> np.ndarray:
    """π(a|s) = softmax_a(φ(s)ᵀ θ[:, a]) (Eq. 1), shape (S, A); ``phi`` (S, d), ``theta`` (d, A)."""
    logits = np.asarray(phi, float) @ np.asarray(theta, float)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _check(env, phi, theta, start):
    P, R, gamma = _check_model(env)
    S, A = R.shape
    phi = np.ascontiguousarray(phi, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != S:
        raise ValueError(f"phi must have shape ({S}, d), got {phi.shape}")
    theta = np.array(theta, dtype=np.float64)
    if theta.shape != (phi.shape[1], A):
        raise ValueError(f"theta must have shape ({phi.shape[1]}, {A}), got {theta.shape}")
    d0 = np.full(S, 1.0 / S) if start is None else np.asarray(start, float)
    if d0.shape != (S,) or (d0 < 0).any() or not np.isclose(d0.sum(), 1.0):
        raise ValueError(f"start must be a probability vector of shape ({S},)")
    return P, R, gamma, phi, theta, d0


def _torch_objectives(P, R, gamma, phi, theta_t, d0):
    import torch

    pi = torch.softmax(torch.as_tensor(phi) @ theta_t, dim=1)  # (S, A)
    P_pi = torch.einsum("sa,sat->st", pi, torch.as_tensor(P))  # (S, S)
    r_pi = (pi * torch.as_tensor(R)).sum(dim=1)  # (S,)
    S = P_pi.shape[0]
    v = torch.linalg.solve(torch.eye(S, dtype=P_pi.dtype) - gamma * P_pi, r_pi)  # (S,)
    # Stationary distribution: d_πᵀ (P_π − I) = 0 with Σ d = 1, as one square system.
    M = torch.cat([(P_pi - torch.eye(S, dtype=P_pi.dtype)).T[:-1], torch.ones(1, S,
                                                                                dtype=P_pi.dtype)])
    rhs = torch.zeros(S, dtype=P_pi.dtype)
    rhs[-1] = 1.0
    d_pi = torch.linalg.solve(M, rhs)
    return torch.as_tensor(d0) @ v, d_pi @ r_pi, v


def average_value(env, phi, theta, start=None) -> float:
    """v̄ = Σ_s d₀(s) v_π(s) (Eq. 2), exact; ``start`` d₀ defaults to uniform."""
    P, R, gamma, phi, theta, d0 = _check(env, phi, theta, start)
    pi = softmax_policy(phi, theta)
    P_pi, r_pi = np.einsum("sa,sat->st", pi, P), (pi * R).sum(axis=1)
    return float(d0 @ np.linalg.solve(np.eye(len(r_pi)) - gamma * P_pi, r_pi))


def average_reward(env, phi, theta) -> float:
    """r̄ = Σ_s d_π(s) r_π(s) (Eq. 3) with d_π the stationary distribution (assumed unique)."""
    import torch

    P, R, gamma, phi, theta, d0 = _check(env, phi, theta, None)
    _, rbar, _ = _torch_objectives(P, R, gamma, phi, torch.as_tensor(theta), d0)
    return float(rbar)


def exact_gradient(env, phi, theta, start=None, objective: str = "average_value") -> np.ndarray:
    """∇_θ of v̄ (Eq. 2) or r̄ (Eq. 3), shape (d, A), by autograd through the exact linear
    solves in float64."""
    import torch

    if objective not in ("average_value", "average_reward"):
        raise ValueError(f"objective must be average_value or average_reward, got {objective!r}")
    P, R, gamma, phi, theta, d0 = _check(env, phi, theta, start)
    theta_t = torch.tensor(theta, requires_grad=True)
    vbar, rbar, _ = _torch_objectives(P, R, gamma, phi, theta_t, d0)
    (vbar if objective == "average_value" else rbar).backward()
    return theta_t.grad.numpy().copy()


# --- numba kernels ----------------------------------------------------------------------------
@njit(cache=True)
def _probs(phi, theta, s, out):
    m = -1e300
    for a in range(theta.shape[1]):
        acc = 0.0
        for i in range(phi.shape[1]):
            acc += phi[s, i] * theta[i, a]
        out[a] = acc
        m = max(m, acc)
    z = 0.0
    for a in range(theta.shape[1]):
        out[a] = np.exp(out[a] - m)
        z += out[a]
    for a in range(theta.shape[1]):
        out[a] /= z


@njit(cache=True)
def _episode_gradient(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted, baseline,
                      buf_s, buf_a, buf_r, probs, g):
    """One episode under π_θ; writes Σ_t w_t (G_t − b) ∇ln π(a_t|s_t) into ``g`` (Eq. 4–5),
    w_t = γᵗ if ``discounted`` else 1. Returns the discounted return from the start."""
    S, A = nxt.shape
    u = np.random.random()
    s = S - 1
    for j in range(S):
        if u < start_cdf[j]:
            s = j
            break
    for t in range(T):
        _probs(phi, theta, s, probs)
        u = np.random.random()
        a = A - 1
        c = 0.0
        for b in range(A):
            c += probs[b]
            if u < c:
                a = b
                break
        s2, r = K._step(nxt, rew, slip, s, a)
        buf_s[t], buf_a[t], buf_r[t] = s, a, r
        s = s2
    g[:, :] = 0.0
    G = 0.0
    for t in range(T - 1, -1, -1):
        G = buf_r[t] + gamma * G
        w = (gamma ** t if discounted else 1.0) * (G - baseline)
        s, a = buf_s[t], buf_a[t]
        _probs(phi, theta, s, probs)
        for i in range(phi.shape[1]):
            if phi[s, i] != 0.0:
                for b in range(A):
                    g[i, b] += w * phi[s, i] * ((1.0 if b == a else 0.0) - probs[b])
    return G


@njit(cache=True)
def _gradient_samples_kernel(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted, seed,
                             out):
    np.random.seed(seed)
    A = nxt.shape[1]
    buf_s, buf_a, buf_r = np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T)
    probs = np.zeros(A)
    for n in range(out.shape[0]):
        _episode_gradient(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted, 0.0,
                          buf_s, buf_a, buf_r, probs, out[n])


@njit(cache=True)
def _reinforce_kernel(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted, alphas,
                      batch, baseline_decay, seed, returns):
    np.random.seed(seed)
    A = nxt.shape[1]
    buf_s, buf_a, buf_r = np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T)
    probs = np.zeros(A)
    g = np.zeros(theta.shape)
    acc = np.zeros(theta.shape)
    baseline = 0.0
    for it in range(alphas.shape[0]):
        acc[:, :] = 0.0
        total = 0.0
        for _ in range(batch):
            G = _episode_gradient(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted,
                                  baseline, buf_s, buf_a, buf_r, probs, g)
            acc += g
            total += G
        theta += alphas[it] / batch * acc
        returns[it] = total / batch
        if baseline_decay < 1.0:
            baseline = baseline_decay * baseline + (1.0 - baseline_decay) * returns[it]


# --- public API -------------------------------------------------------------------------------
def _start_cdf(d0):
    cdf = np.cumsum(d0)
    cdf[-1] = 1.0
    return np.ascontiguousarray(cdf)


def reinforce_gradients(env, phi, theta, n_episodes: int, episode_length: int = 100,
                        seed: int = 0, *, start=None, discounted: bool = True) -> np.ndarray:
    """``n_episodes`` independent REINFORCE estimates of ∇v̄ (Eq. 4) at fixed θ,
    shape (n_episodes, d, A). With ``discounted=False`` the γᵗ weights are dropped (the common
    practical form, biased for v̄)."""
    P, R, gamma, phi, theta, d0 = _check(env, phi, theta, start)
    nxt, rew, slip, _, _ = K.env_arrays(env)
    n = K.check_count(n_episodes, "n_episodes")
    T = K.check_count(episode_length, "episode_length")
    out = np.zeros((n,) + theta.shape)
    _gradient_samples_kernel(nxt, rew, slip, gamma, phi, theta, _start_cdf(d0), T,
                             bool(discounted), K.check_seed(seed), out)
    return out


@dataclass
class PolicyGradientResult:
    """Parameters and learning history of a policy-gradient run.

    Attributes
    ----------
    theta : ndarray (d, A)     final policy parameters
    policy : ndarray (S, A)    final softmax policy
    iterations : int           parameter updates
    history : dict             ``"return"`` (mean discounted return of each batch), and
                               ``"iteration"`` / ``"v_bar"`` / ``"r_bar"`` (exact objectives every
                               ``eval_every`` updates)
    """

    theta: np.ndarray
    policy: np.ndarray
    iterations: int
    history: dict[str, list] = field(default_factory=dict)


def reinforce(env, phi, iterations: int, alpha: float = 0.1, episode_length: int = 50,
              seed: int = 0, *, batch: int = 1, start=None, alpha_final: float | None = None,
              discounted: bool = True, baseline_decay: float = 1.0, theta0=None,
              eval_every: int = 0) -> PolicyGradientResult:
    """REINFORCE: gradient ascent on v̄ (Eq. 2) with the Monte Carlo estimator (Eq. 4).

    Parameters
    ----------
    env : GridWorld
    phi : ndarray (S, d)          policy features (one-hot: tabular softmax)
    iterations : int >= 1         parameter updates
    alpha : float > 0             step size (default 0.1); decays linearly to ``alpha_final``
    episode_length : int >= 1     steps per episode (default 50; truncation bias ≤ γ^T·max|r|/(1−γ))
    seed : int
    batch : int >= 1              episodes averaged per update (default 1)
    start : ndarray (S,), optional  start distribution d₀ (default uniform)
    discounted : bool             weight step t by γᵗ (unbiased for v̄) or not (textbook practice)
    baseline_decay : float in (0, 1]  1: no baseline; below 1: subtract an exponential moving
                                  average of past returns from G_t (Eq. 5)
    theta0 : ndarray (d, A), optional  initial parameters (default zeros: uniform policy)
    eval_every : int >= 0         record exact v̄, r̄ every this many updates (0: never)
    """
    P, R, gamma, phi, theta, d0 = _check(env, phi, np.zeros((np.shape(phi)[1], env.n_actions))
                                         if theta0 is None else theta0, start)
    nxt, rew, slip, _, _ = K.env_arrays(env)
    iterations = K.check_count(iterations, "iterations")
    T = K.check_count(episode_length, "episode_length")
    batch = K.check_count(batch, "batch")
    eval_every = K.check_count(eval_every, "eval_every", 0)
    if not alpha > 0 or (alpha_final is not None and not alpha_final > 0):
        raise ValueError(f"alpha and alpha_final must be > 0, got {alpha}, {alpha_final}")
    if not 0.0 < baseline_decay <= 1.0:
        raise ValueError(f"baseline_decay must be in (0, 1], got {baseline_decay}")
    alphas = (np.full(iterations, float(alpha)) if alpha_final is None
              else np.linspace(alpha, alpha_final, iterations))
    seed = K.check_seed(seed)
    returns = np.zeros(iterations)
    history: dict[str, list] = {"iteration": [], "v_bar": [], "r_bar": []}
    chunks = [iterations] if eval_every == 0 else [eval_every] * (iterations // eval_every) + (
        [iterations % eval_every] if iterations % eval_every else [])
    done = 0
    for k, n in enumerate(chunks):
        # Each chunk reseeds numba's generator with a derived seed so that chunks differ.
        _reinforce_kernel(nxt, rew, slip, gamma, phi, theta, _start_cdf(d0), T, bool(discounted),
                          alphas[done:done + n], batch, float(baseline_decay),
                          (seed + 7919 * k) % 2**32, returns[done:done + n])
        done += n
        if eval_every:
            history["iteration"].append(done)
            history["v_bar"].append(average_value(env, phi, theta, d0))
            history["r_bar"].append(average_reward(env, phi, theta))
    history["return"] = returns.tolist()
    return PolicyGradientResult(theta, softmax_policy(phi, theta), iterations, history)


__all__ = ["PolicyGradientResult", "average_reward", "average_value", "exact_gradient",
           "reinforce", "reinforce_gradients", "softmax_policy"]
