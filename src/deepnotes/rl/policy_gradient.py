"""Policy gradient on the grid world: softmax policies, exact objectives and gradients, REINFORCE.

Equation numbers refer to the ``policy-gradient`` post (Zhao (2025), *Mathematical Foundations of
Reinforcement Learning*, Ch. 9; Williams (1992); Sutton et al. (2000)):

- the softmax policy π(a|s) ∝ exp(φ(s)ᵀ θ_a) (Eq. 1), tabular when φ is one-hot;
- the average state value v̄ = Σ_s d₀(s) v_π(s) (Eq. 2) and the average reward
  r̄ = Σ_s d_π(s) r_π(s) (Eq. 3), computed exactly by :func:`average_value` /
  :func:`average_reward`, with exact gradients by automatic differentiation through the linear
  solve v_π = (I − γ P_π)⁻¹ r_π (:func:`exact_gradient`), the references for the policy gradient
  theorems (Eq. 4–5);
- the REINFORCE estimator ĝ = Σ_t γᵗ (G_t − b(s_t)) ∇_θ ln π(a_t|s_t) (Eq. 6) of ∇v̄, with an
  optional baseline b (Eq. 7), sampled by :func:`reinforce_gradients` and followed by
  :func:`reinforce`;
- the average-reward estimator ĝ = (1/T) Σ_t Σ_{k<H} (r_{t+k+1} − r̂) ∇_θ ln π(a_t|s_t) of ∇r̄
  along one continuing trajectory, with r̂ ← r̂ + β (r − r̂) (Eq. 8), sampled by
  :func:`average_reward_gradients` and followed by :func:`reinforce_average_reward`.

Episodes start from d₀ and are truncated after ``episode_length`` steps: the estimator (Eq. 6) is
unbiased for the truncated objective, which differs from v̄ by at most γ^T max|r| / (1 − γ).
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


def stationary_distribution(env, phi, theta) -> np.ndarray:
    """d_π of the softmax policy, shape (S,): d_πᵀ P_π = d_πᵀ, Σ d_π = 1 (assumed unique)."""
    P, R, gamma, phi, theta, d0 = _check(env, phi, theta, None)
    pi = softmax_policy(phi, theta)
    P_pi = np.einsum("sa,sat->st", pi, P)
    S = len(P_pi)
    M = np.vstack([(P_pi - np.eye(S)).T[:-1], np.ones((1, S))])
    rhs = np.zeros(S)
    rhs[-1] = 1.0
    return np.linalg.solve(M, rhs)


def exact_gradient(env, phi, theta, start=None, objective: str = "average_value") -> np.ndarray:
    """∇_θ of v̄ (Eq. 2) or r̄ (Eq. 3), shape (d, A), by autograd through the exact linear
    solves in float64 — the right-hand sides of the policy gradient theorems (Eq. 4–5)."""
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
def _sample_action(phi, theta, s, probs):
    _probs(phi, theta, s, probs)
    u = np.random.random()
    c = 0.0
    for b in range(probs.shape[0]):
        c += probs[b]
        if u < c:
            return b
    return probs.shape[0] - 1


@njit(cache=True)
def _add_score(phi, theta, s, a, w, probs, g):
    """g += w ∇_θ ln π(a|s) = w φ(s) (e_a − π(·|s))ᵀ (the softmax score, Eq. 1)."""
    _probs(phi, theta, s, probs)
    for i in range(phi.shape[1]):
        if phi[s, i] != 0.0:
            for b in range(probs.shape[0]):
                g[i, b] += w * phi[s, i] * ((1.0 if b == a else 0.0) - probs[b])


@njit(cache=True)
def _add_entropy(phi, theta, s, w, probs, g):
    """g += w ∇_θ H(π(·|s)), with ∂H/∂z_b = −π_b (ln π_b + H) for the logits z = φ(s)ᵀθ."""
    _probs(phi, theta, s, probs)
    entropy = 0.0
    for b in range(probs.shape[0]):
        if probs[b] > 0.0:
            entropy -= probs[b] * np.log(probs[b])
    for i in range(phi.shape[1]):
        if phi[s, i] != 0.0:
            for b in range(probs.shape[0]):
                if probs[b] > 0.0:  # π_b ln π_b → 0 as π_b → 0
                    g[i, b] -= w * phi[s, i] * probs[b] * (np.log(probs[b]) + entropy)


@njit(cache=True)
def _draw_state(cdf):
    u = np.random.random()
    for j in range(cdf.shape[0]):
        if u < cdf[j]:
            return j
    return cdf.shape[0] - 1


@njit(cache=True)
def _episode_gradient(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted, baseline,
                      buf_s, buf_a, buf_r, probs, g):
    """One episode under π_θ; writes Σ_t w_t (G_t − b(s_t)) ∇ln π(a_t|s_t) into ``g``
    (Eq. 6–7), w_t = γᵗ if ``discounted`` else 1, ``baseline`` shape (S,). Returns the
    discounted return from the start."""
    s = _draw_state(start_cdf)
    for t in range(T):
        a = _sample_action(phi, theta, s, probs)
        s2, r = K._step(nxt, rew, slip, s, a)
        buf_s[t], buf_a[t], buf_r[t] = s, a, r
        s = s2
    g[:, :] = 0.0
    G = 0.0
    for t in range(T - 1, -1, -1):
        G = buf_r[t] + gamma * G
        s = buf_s[t]
        w = (gamma ** t if discounted else 1.0) * (G - baseline[s])
        _add_score(phi, theta, s, buf_a[t], w, probs, g)
    return G


@njit(cache=True)
def _gradient_samples_kernel(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted,
                             baseline, seed, out):
    np.random.seed(seed)
    A = nxt.shape[1]
    buf_s, buf_a, buf_r = np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T)
    probs = np.zeros(A)
    for n in range(out.shape[0]):
        _episode_gradient(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted, baseline,
                          buf_s, buf_a, buf_r, probs, out[n])


@njit(cache=True)
def _reinforce_kernel(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted, alphas,
                      batch, baseline_decay, seed, state, returns, entropies, state_lr, baseline):
    """``alphas.shape[0]`` REINFORCE updates of ``theta``; ``state[0]`` (the moving-average
    baseline) and ``baseline`` (S,) are carried in and out so that a run split into chunks
    equals an unsplit one (``seed`` < 0 continues numba's random stream instead of reseeding
    it). With ``state_lr`` > 0, ``baseline[s]`` tracks the returns observed from s."""
    if seed >= 0:
        np.random.seed(seed)
    A = nxt.shape[1]
    buf_s, buf_a, buf_r = np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T)
    probs = np.zeros(A)
    g = np.zeros(theta.shape)
    acc = np.zeros(theta.shape)
    for it in range(alphas.shape[0]):
        acc[:, :] = 0.0
        total = 0.0
        for _ in range(batch):
            G = _episode_gradient(nxt, rew, slip, gamma, phi, theta, start_cdf, T, discounted,
                                  baseline, buf_s, buf_a, buf_r, probs, g)
            acc += g
            total += G
            if state_lr > 0.0:  # after the episode's gradient: b never sees its own actions
                G_t = 0.0
                for t in range(T - 1, -1, -1):
                    G_t = buf_r[t] + gamma * G_t
                    baseline[buf_s[t]] += state_lr * (G_t - baseline[buf_s[t]])
            if entropies[it] > 0.0:  # entropy bonus at the episode's states, weighted like v̄
                weight = entropies[it]
                for t in range(T):
                    _add_entropy(phi, theta, buf_s[t], weight, probs, acc)
                    if discounted:
                        weight *= gamma
        theta += alphas[it] / batch * acc
        returns[it] = total / batch
        if baseline_decay < 1.0 and state_lr == 0.0:
            state[0] = baseline_decay * state[0] + (1.0 - baseline_decay) * returns[it]
            baseline[:] = state[0]


@njit(cache=True)
def _segment_gradient(nxt, rew, slip, phi, theta, s, T, H, r_hat, buf_s, buf_a, buf_r, probs,
                      g):
    """T + H steps of the continuing task from ``s``; writes
    (1/T) Σ_{t<T} [Σ_{k<H} (r_{t+k+1} − r̂)] ∇ln π(a_t|s_t) into ``g`` (Eq. 8).
    Returns (the state after the segment, the sum of its T + H rewards)."""
    total = 0.0
    for t in range(T + H):
        a = _sample_action(phi, theta, s, probs)
        s2, r = K._step(nxt, rew, slip, s, a)
        buf_s[t], buf_a[t], buf_r[t] = s, a, r
        total += r
        s = s2
    g[:, :] = 0.0
    window = 0.0  # Σ_{k<H} (r_{t+k+1} − r̂), slid along t
    for k in range(H):
        window += buf_r[k] - r_hat
    for t in range(T):
        _add_score(phi, theta, buf_s[t], buf_a[t], window / T, probs, g)
        window += buf_r[t + H] - buf_r[t]
    return s, total


@njit(cache=True)
def _average_reward_samples_kernel(nxt, rew, slip, phi, theta, start_cdf, T, H, r_hat, seed,
                                   out):
    np.random.seed(seed)
    buf_s, buf_a, buf_r = np.zeros(T + H, np.int64), np.zeros(T + H, np.int64), np.zeros(T + H)
    probs = np.zeros(nxt.shape[1])
    for n in range(out.shape[0]):
        _segment_gradient(nxt, rew, slip, phi, theta, _draw_state(start_cdf), T, H, r_hat,
                          buf_s, buf_a, buf_r, probs, out[n])


@njit(cache=True)
def _average_reward_kernel(nxt, rew, slip, phi, theta, T, H, alphas, beta, seed, state, r_hats):
    """Average-reward policy gradient along one trajectory; ``state`` = (current state, r̂),
    carried across chunks so that the trajectory and the estimate continue (``seed`` < 0: the
    random stream too)."""
    if seed >= 0:
        np.random.seed(seed)
    buf_s, buf_a, buf_r = np.zeros(T + H, np.int64), np.zeros(T + H, np.int64), np.zeros(T + H)
    probs = np.zeros(nxt.shape[1])
    g = np.zeros(theta.shape)
    s, r_hat = int(state[0]), state[1]
    for it in range(alphas.shape[0]):
        s, total = _segment_gradient(nxt, rew, slip, phi, theta, s, T, H, r_hat, buf_s, buf_a,
                                     buf_r, probs, g)
        theta += alphas[it] * g
        # r̂ moves after the gradient, so the r̂ inside it is independent of the segment.
        r_hat += beta * (total / (T + H) - r_hat)
        r_hats[it] = r_hat
    state[0], state[1] = s, r_hat


# --- public API -------------------------------------------------------------------------------
def _start_cdf(d0):
    cdf = np.cumsum(d0)
    cdf[-1] = 1.0
    return np.ascontiguousarray(cdf)


def _baseline_array(baseline, n_states: int) -> np.ndarray:
    b = np.zeros(n_states) if baseline is None else np.asarray(baseline, float)
    if b.ndim == 0:
        b = np.full(n_states, float(b))
    if b.shape != (n_states,) or not np.isfinite(b).all():
        raise ValueError(f"baseline must be a finite scalar or shape ({n_states},), "
                         f"got shape {b.shape}")
    return np.ascontiguousarray(b)


def _chunks(iterations: int, eval_every: int) -> list[int]:
    if eval_every == 0:
        return [iterations]
    return [eval_every] * (iterations // eval_every) + (
        [iterations % eval_every] if iterations % eval_every else [])


def _alphas(alpha, alpha_final, iterations) -> np.ndarray:
    if not alpha > 0 or (alpha_final is not None and not alpha_final > 0):
        raise ValueError(f"alpha and alpha_final must be > 0, got {alpha}, {alpha_final}")
    return (np.full(iterations, float(alpha)) if alpha_final is None
            else np.linspace(alpha, alpha_final, iterations))


def reinforce_gradients(env, phi, theta, n_episodes: int, episode_length: int = 100,
                        seed: int = 0, *, start=None, discounted: bool = True,
                        baseline=None) -> np.ndarray:
    """``n_episodes`` independent REINFORCE estimates of ∇v̄ (Eq. 6) at fixed θ,
    shape (n_episodes, d, A).

    ``baseline``: None, a scalar or per-state values b(s), shape (S,), subtracted from G_t
    (Eq. 7; any b that does not depend on the action keeps the estimator unbiased). With
    ``discounted=False`` the γᵗ weights are dropped (the common practical form, biased for v̄).
    """
    P, R, gamma, phi, theta, d0 = _check(env, phi, theta, start)
    nxt, rew, slip, _, _ = K.env_arrays(env)
    n = K.check_count(n_episodes, "n_episodes")
    T = K.check_count(episode_length, "episode_length")
    out = np.zeros((n,) + theta.shape)
    _gradient_samples_kernel(nxt, rew, slip, gamma, phi, theta, _start_cdf(d0), T,
                             bool(discounted), _baseline_array(baseline, len(d0)),
                             K.check_seed(seed), out)
    return out


def average_reward_gradients(env, phi, theta, n_samples: int, segment_length: int = 1,
                             horizon: int = 100, seed: int = 0, *, r_hat=None,
                             start=None) -> np.ndarray:
    """``n_samples`` independent estimates (Eq. 8) of ∇r̄, shape (n_samples, d, A).

    Each sample starts in a state drawn from ``start`` (default: the exact stationary
    distribution d_π, so every step of the segment is distributed as in Eq. 5) and runs
    ``segment_length + horizon`` steps. ``r_hat`` defaults to the exact r̄; any constant is
    unbiased since it multiplies a zero-mean score. The truncation of the differential return
    after ``horizon`` steps biases the estimate by terms that decay like the chain's mixing.
    """
    P, R, gamma, phi, theta, _ = _check(env, phi, theta, None)
    if start is None:
        start = np.clip(stationary_distribution(env, phi, theta), 0.0, None)
        start /= start.sum()
    P, R, gamma, phi, theta, d0 = _check(env, phi, theta, start)
    nxt, rew, slip, _, _ = K.env_arrays(env)
    n = K.check_count(n_samples, "n_samples")
    T = K.check_count(segment_length, "segment_length")
    H = K.check_count(horizon, "horizon")
    r_hat = average_reward(env, phi, theta) if r_hat is None else float(r_hat)
    if not np.isfinite(r_hat):
        raise ValueError(f"r_hat must be finite, got {r_hat}")
    out = np.zeros((n,) + theta.shape)
    _average_reward_samples_kernel(nxt, rew, slip, phi, theta, _start_cdf(d0), T, H, r_hat,
                                   K.check_seed(seed), out)
    return out


@dataclass
class PolicyGradientResult:
    """Parameters and learning history of a policy-gradient run.

    Attributes
    ----------
    theta : ndarray (d, A)     final policy parameters
    policy : ndarray (S, A)    final softmax policy
    iterations : int           parameter updates
    history : dict             :func:`reinforce`: ``"return"`` (mean discounted return of each
                               batch); :func:`reinforce_average_reward`: ``"r_hat"`` (the running
                               estimate of r̄ after each update); both: ``"iteration"`` /
                               ``"v_bar"`` / ``"r_bar"`` (exact objectives every ``eval_every``
                               updates)
    """

    theta: np.ndarray
    policy: np.ndarray
    iterations: int
    history: dict[str, list] = field(default_factory=dict)


def _record(history, env, phi, theta, d0, done, callback):
    if callback is not None:
        callback(done, theta.copy())
    history["iteration"].append(done)
    history["v_bar"].append(average_value(env, phi, theta, d0))
    history["r_bar"].append(average_reward(env, phi, theta))


def reinforce(env, phi, iterations: int, alpha: float = 0.1, episode_length: int = 50,
              seed: int = 0, *, batch: int = 1, start=None, alpha_final: float | None = None,
              discounted: bool = True, baseline_decay: float = 1.0, theta0=None,
              eval_every: int = 0, callback=None, entropy: float = 0.0,
              state_baseline: float = 0.0) -> PolicyGradientResult:
    """REINFORCE: gradient ascent on v̄ (Eq. 2) with the Monte Carlo estimator (Eq. 6).

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
                                  average of past batch returns from G_t (Eq. 7)
    theta0 : ndarray (d, A), optional  initial parameters (default zeros: uniform policy)
    eval_every : int >= 0         record exact v̄, r̄ every this many updates (0: never); the
                                  run itself (θ, returns) does not depend on it
    callback : callable, optional  ``callback(updates_done, theta_copy)`` at each evaluation point
    entropy : float >= 0          weight β of an entropy bonus β Σ_t γᵗ ∇H(π(·|s_t)) added to
                                  each episode's gradient, decayed linearly to 0 over the run
                                  (0: off, plain REINFORCE); it keeps the softmax policy from
                                  turning deterministic on a detour before better actions are
                                  valued
    state_baseline : float in [0, 1]  step size c of a per-state baseline b(s) ← b(s) +
                                  c (G_t − b(s)) over the returns seen from s, updated after
                                  each episode's gradient (Eq. 9; Eq. 7 with b = v̂_π; 0: off). It
                                  removes most of the return variance that is due to where an
                                  episode is, not to what it did.
    """
    P, R, gamma, phi, theta, d0 = _check(env, phi, np.zeros((np.shape(phi)[1], env.n_actions))
                                         if theta0 is None else theta0, start)
    if not (np.isfinite(entropy) and entropy >= 0):
        raise ValueError(f"entropy must be >= 0, got {entropy}")
    if not (np.isfinite(state_baseline) and 0.0 <= state_baseline <= 1.0):
        raise ValueError(f"state_baseline must be in [0, 1], got {state_baseline}")
    if state_baseline > 0 and baseline_decay < 1.0:
        raise ValueError("use either baseline_decay < 1 (one moving-average baseline) or "
                         "state_baseline > 0 (a baseline per state), not both")
    nxt, rew, slip, _, _ = K.env_arrays(env)
    iterations = K.check_count(iterations, "iterations")
    T = K.check_count(episode_length, "episode_length")
    batch = K.check_count(batch, "batch")
    eval_every = K.check_count(eval_every, "eval_every", 0)
    alphas = _alphas(alpha, alpha_final, iterations)
    if not 0.0 < baseline_decay <= 1.0:
        raise ValueError(f"baseline_decay must be in (0, 1], got {baseline_decay}")
    seed = K.check_seed(seed)
    returns = np.zeros(iterations)
    entropies = entropy * (1.0 - np.arange(iterations) / iterations)
    history: dict[str, list] = {"iteration": [], "v_bar": [], "r_bar": []}
    state = np.zeros(1)  # the moving-average baseline, kept across evaluation chunks
    baseline = np.zeros(len(d0))
    done = 0
    for k, n in enumerate(_chunks(iterations, eval_every)):
        # Only the first chunk seeds numba's generator; later ones continue its stream.
        _reinforce_kernel(nxt, rew, slip, gamma, phi, theta, _start_cdf(d0), T, bool(discounted),
                          alphas[done:done + n], batch, float(baseline_decay),
                          seed if k == 0 else -1, state, returns[done:done + n],
                          entropies[done:done + n], float(state_baseline), baseline)
        done += n
        if eval_every:
            _record(history, env, phi, theta, d0, done, callback)
    history["return"] = returns.tolist()
    return PolicyGradientResult(theta, softmax_policy(phi, theta), iterations, history)


def reinforce_average_reward(env, phi, iterations: int, alpha: float = 0.1,
                             segment_length: int = 50, horizon: int = 30, seed: int = 0, *,
                             beta: float = 0.1, alpha_final: float | None = None, theta0=None,
                             eval_every: int = 0, callback=None) -> PolicyGradientResult:
    """Policy gradient ascent on the average reward r̄ (Eq. 3) along one continuing trajectory.

    Each update runs ``segment_length + horizon`` steps from where the last one stopped, takes
    the estimate (Eq. 8) with truncated differential returns over ``horizon`` steps, and moves
    the running estimate r̂ towards the segment's mean reward with step ``beta``.

    Parameters
    ----------
    env : GridWorld
    phi : ndarray (S, d)          policy features
    iterations : int >= 1         parameter updates
    alpha : float > 0             step size; decays linearly to ``alpha_final`` if given
    segment_length : int >= 1     steps T whose scores enter one update
    horizon : int >= 1            steps H of each differential return
    seed : int
    beta : float in (0, 1]        step size of r̂
    theta0 : ndarray (d, A), optional  initial parameters (default zeros: uniform policy)
    eval_every : int >= 0         record exact v̄ (uniform d₀) and r̄ every this many updates;
                                  the run itself does not depend on it
    callback : callable, optional  ``callback(updates_done, theta_copy)`` at each evaluation point
    """
    P, R, gamma, phi, theta, d0 = _check(env, phi, np.zeros((np.shape(phi)[1], env.n_actions))
                                         if theta0 is None else theta0, None)
    nxt, rew, slip, _, _ = K.env_arrays(env)
    iterations = K.check_count(iterations, "iterations")
    T = K.check_count(segment_length, "segment_length")
    H = K.check_count(horizon, "horizon")
    eval_every = K.check_count(eval_every, "eval_every", 0)
    alphas = _alphas(alpha, alpha_final, iterations)
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    seed = K.check_seed(seed)
    # The trajectory starts in a uniformly random state; r̂ starts at 0.
    state = np.array([float(np.random.RandomState(seed).randint(len(d0))), 0.0])
    r_hats = np.zeros(iterations)
    history: dict[str, list] = {"iteration": [], "v_bar": [], "r_bar": []}
    done = 0
    for k, n in enumerate(_chunks(iterations, eval_every)):
        _average_reward_kernel(nxt, rew, slip, phi, theta, T, H, alphas[done:done + n],
                               float(beta), seed if k == 0 else -1, state,
                               r_hats[done:done + n])
        done += n
        if eval_every:
            _record(history, env, phi, theta, d0, done, callback)
    history["r_hat"] = r_hats.tolist()
    return PolicyGradientResult(theta, softmax_policy(phi, theta), iterations, history)


__all__ = ["PolicyGradientResult", "average_reward", "average_reward_gradients", "average_value",
           "exact_gradient", "reinforce", "reinforce_average_reward", "reinforce_gradients",
           "softmax_policy", "stationary_distribution"]
