"""Actor-critic methods: QAC, advantage actor-critic, off-policy actor-critic, deterministic PG.

Equation numbers refer to the ``actor-critic`` post (Zhao (2025), *Mathematical Foundations of
Reinforcement Learning*, Ch. 10; Degris et al. (2012); Silver et al. (2014)):

- QAC (Eq. 1): critic q(s,a) ← q(s,a) + α_w [r + γ q(s',a') − q(s,a)] (Sarsa), actor
  θ ← θ + α_θ q(s,a) ∇ln π(a|s);
- A2C (Eq. 2): TD error δ = r + γ v(s') − v(s) as the advantage, v(s) ← v(s) + α_w δ,
  θ ← θ + α_θ δ ∇ln π(a|s);
- off-policy actor-critic (Eq. 3): actions from a behaviour policy β, both updates weighted by
  ρ = π(a|s)/β(a|s); :func:`importance_sampling_gradient` samples the importance-weighted
  policy gradient (Eq. 4) whose expectation is exact;
- deterministic policy gradient on a scalar discounted LQR (Eq. 5–7): :func:`lqr_optimal_gain`
  solves the scalar Riccati equation, :func:`dpg_lqr` learns a linear gain with a quadratic
  critic.

The softmax actor is that of :mod:`deepnotes.rl.policy_gradient` (Eq. 1 of that post); the
grid-world critic is tabular.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from deepnotes.rl import _kernels as K
from deepnotes.rl.policy_gradient import (
    _add_entropy,
    _add_score,
    _check,
    _probs,
    _sample_action,
    average_value,
    softmax_policy,
)

QAC, A2C, OFF_POLICY = 0, 1, 2
_METHODS = {"qac": QAC, "a2c": A2C, "off_policy": OFF_POLICY}


@dataclass
class ActorCriticResult:
    """Actor, critic and learning history.

    Attributes
    ----------
    theta : ndarray (d, A)     actor parameters
    policy : ndarray (S, A)    softmax policy
    critic : ndarray           q (S, A) for QAC, v (S,) for A2C and off-policy actor-critic
    history : dict             ``"episode"`` / ``"v_bar"`` (exact v̄ of the policy every
                               ``eval_every`` episodes)
    """

    theta: np.ndarray
    policy: np.ndarray
    critic: np.ndarray
    history: dict[str, list] = field(default_factory=dict)


@njit(cache=True)
def _ac_kernel(nxt, rew, slip, gamma, phi, theta, v, q, method, behaviour_cdf, alpha_theta,
               alpha_w, episodes, T, seed, entropy, done, total, qac_baseline):
    """``episodes`` episodes of ``T`` steps from uniform starts (Eq. 1–3); ``seed`` < 0
    continues numba's random stream. The entropy weight decays linearly from ``entropy`` to 0
    over the ``total`` episodes of the run, of which ``done`` came before this call."""
    if seed >= 0:
        np.random.seed(seed)
    S, A = nxt.shape
    probs = np.zeros(A)
    g = np.zeros(theta.shape)
    for ep in range(episodes):
        beta = entropy * (1.0 - (done + ep) / total)
        s = K._draw_int(S)
        a = _sample_action(phi, theta, s, probs)
        for _t in range(T):
            if method == OFF_POLICY:
                a = K._from_cdf(behaviour_cdf, s)
            s2, r = K._step(nxt, rew, slip, s, a)
            g[:, :] = 0.0
            if method == QAC:
                a2 = _sample_action(phi, theta, s2, probs)
                q[s, a] += alpha_w * (r + gamma * q[s2, a2] - q[s, a])
                weight = q[s, a]
                if qac_baseline:
                    _probs(phi, theta, s, probs)
                    weight -= probs @ q[s]
                _add_score(phi, theta, s, a, alpha_theta * weight, probs, g)
            else:
                delta = r + gamma * v[s2] - v[s]
                rho = 1.0
                if method == OFF_POLICY:
                    _probs(phi, theta, s, probs)
                    b = behaviour_cdf[s, a] - (behaviour_cdf[s, a - 1] if a > 0 else 0.0)
                    rho = probs[a] / b
                _add_score(phi, theta, s, a, alpha_theta * rho * delta, probs, g)
                v[s] += alpha_w * rho * delta
                a2 = _sample_action(phi, theta, s2, probs) if method == A2C else 0
            if beta > 0.0:
                _add_entropy(phi, theta, s, alpha_theta * beta, probs, g)
            theta += g
            s, a = s2, a2


def actor_critic(env, method: str, episodes: int, alpha_theta: float = 0.5,
                 alpha_w: float = 0.1, episode_length: int = 30, seed: int = 0, *, phi=None,
                 behaviour=None, eval_every: int = 0, callback=None, entropy: float = 0.0,
                 baseline: bool = False) -> ActorCriticResult:
    """QAC (Eq. 1), A2C (Eq. 2) or off-policy actor-critic (Eq. 3) on a grid world.

    Parameters
    ----------
    env : GridWorld
    method : "qac", "a2c" or "off_policy"
    episodes : int >= 1           episodes of ``episode_length`` steps, uniformly random starts
    alpha_theta, alpha_w : float > 0  actor and critic step sizes (constant)
    seed : int
    phi : ndarray (S, d), optional  actor features (default one-hot: tabular softmax)
    behaviour : ndarray (S, A), optional  behaviour policy of ``off_policy`` (default uniform);
                                  every probability must be positive
    eval_every : int >= 0         record the exact v̄ every this many episodes (0: never); the
                                  run itself does not depend on it
    callback : callable, optional  ``callback(episodes_done, theta_copy)`` at each evaluation point
    entropy : float >= 0          weight β of an entropy bonus β ∇H(π(·|s)) added to each actor
                                  step, decayed linearly to 0 over the run (0: off, the plain
                                  algorithms). Without it the softmax actor can turn
                                  deterministic on a detour before the critic has valued the
                                  better action (on the 5×5 layout: around the forbidden cells);
                                  the decay makes the limit the unregularised optimum again.
    baseline : bool               QAC only: weight the score by q(s,a) − Σ_b π(b|s) q(s,b)
                                  instead of q(s,a) (Eq. 8). The subtracted term does not depend
                                  on the sampled action, so the expected update is unchanged;
                                  without it every sampled action is pushed up in proportion to
                                  its (mostly positive) value, so the most-sampled action wins.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    S, A = env.n_states, env.n_actions
    phi = np.eye(S) if phi is None else phi
    _, _, gamma, phi, theta, d0 = _check(env, phi, np.zeros((np.shape(phi)[1], A)), None)
    nxt, rew, slip, _, _ = K.env_arrays(env)
    episodes = K.check_count(episodes, "episodes")
    T = K.check_count(episode_length, "episode_length")
    eval_every = K.check_count(eval_every, "eval_every", 0)
    seed = K.check_seed(seed)
    for name, val in (("alpha_theta", alpha_theta), ("alpha_w", alpha_w)):
        if not (np.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be > 0, got {val}")
    if baseline and method != "qac":
        raise ValueError("baseline applies to method='qac' only (A2C and off-policy actor-critic "
                         "already use the TD error, a state-value-baselined advantage)")
    if not (np.isfinite(entropy) and entropy >= 0):
        raise ValueError(f"entropy must be >= 0, got {entropy}")
    beh = np.full((S, A), 1.0 / A) if behaviour is None else np.asarray(behaviour, float)
    if beh.shape != (S, A) or (beh <= 0).any() or not np.allclose(beh.sum(axis=1), 1.0):
        raise ValueError(f"behaviour must be ({S}, {A}) with positive rows summing to 1")
    cdf = K.policy_cdf(beh, S, A)
    v, q = np.zeros(S), np.zeros((S, A))
    history: dict[str, list] = {"episode": [], "v_bar": []}
    chunks = [episodes] if eval_every == 0 else [eval_every] * (episodes // eval_every) + (
        [episodes % eval_every] if episodes % eval_every else [])
    done = 0
    for k, n in enumerate(chunks):
        _ac_kernel(nxt, rew, slip, gamma, phi, theta, v, q, _METHODS[method], cdf,
                   float(alpha_theta), float(alpha_w), n, T, seed if k == 0 else -1,
                   float(entropy), done, episodes, bool(baseline))
        done += n
        if eval_every:
            history["episode"].append(done)
            history["v_bar"].append(average_value(env, phi, theta))
            if callback is not None:
                callback(done, theta.copy())
    critic = q if method == "qac" else v
    return ActorCriticResult(theta, softmax_policy(phi, theta), critic, history)


def importance_sampling_gradient(phi, theta, q, behaviour, n_samples: int,
                                 seed: int = 0) -> np.ndarray:
    """Samples of ρ q(s, a) ∇_θ ln π(a|s) with s uniform and a ~ β(·|s), ρ = π(a|s)/β(a|s)
    (Eq. 4), shape (n_samples, d, A). Their mean is Σ_s (1/S) Σ_a ∇π(a|s) q(s, a) for any β
    with full support."""
    phi = np.asarray(phi, float)
    theta = np.asarray(theta, float)
    q = np.asarray(q, float)
    S, A = q.shape
    if phi.shape[0] != S or theta.shape != (phi.shape[1], A):
        raise ValueError(f"phi (S, d), theta (d, A), q (S, A) disagree: {phi.shape}, "
                         f"{theta.shape}, {q.shape}")
    beh = np.asarray(behaviour, float)
    if beh.shape != (S, A) or (beh <= 0).any() or not np.allclose(beh.sum(axis=1), 1.0):
        raise ValueError(f"behaviour must be ({S}, {A}) with positive rows summing to 1")
    n = K.check_count(n_samples, "n_samples")
    rng = np.random.default_rng(K.check_seed(seed))
    pi = softmax_policy(phi, theta)
    s = rng.integers(S, size=n)
    u = rng.random(n)
    a = np.minimum((np.cumsum(beh, axis=1)[s] < u[:, None]).sum(axis=1), A - 1)
    rho = pi[s, a] / beh[s, a]
    score = np.eye(A)[a] - pi[s]  # (n, A): ∇ ln π wrt the logits
    return (rho * q[s, a])[:, None, None] * phi[s][:, :, None] * score[:, None, :]


# --- deterministic policy gradient on a scalar LQR ----------------------------------------------
def _check_lqr(gamma, c):
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")
    if not c > 0:
        raise ValueError(f"c (action cost) must be > 0, got {c}")


def lqr_cost_coefficient(k: float, gamma: float, c: float) -> float:
    """P(k) = (1 + c k²) / (1 − γ (1 + k)²): v_k(s) = −P(k) s² − const under a = k s (Eq. 6);
    inf when the closed loop is not stable in the discounted sense."""
    _check_lqr(gamma, c)
    denom = 1.0 - gamma * (1.0 + k) ** 2
    return (1.0 + c * k * k) / denom if denom > 0 else np.inf


def lqr_optimal_gain(gamma: float, c: float) -> tuple[float, float]:
    """(k*, P*) of s' = s + a + noise, r = −(s² + c a²): the positive root of the scalar
    discounted Riccati equation γP² + (c − γ − γc)P − c = 0 and k* = −γP/(c + γP) (Eq. 7)."""
    _check_lqr(gamma, c)
    b = c - gamma - gamma * c
    P = (-b + np.sqrt(b * b + 4.0 * gamma * c)) / (2.0 * gamma)
    return float(-gamma * P / (c + gamma * P)), float(P)


@njit(cache=True)
def _dpg_kernel(k, w, gamma, c, sigma, explore, alpha_k, alpha_w, iterations, T, seed, gains):
    np.random.seed(seed)
    x = np.zeros(4)
    x2 = np.zeros(4)
    for it in range(iterations):
        s = np.random.standard_normal()
        for _t in range(T):
            a = k * s + explore * np.random.standard_normal()
            r = -(s * s + c * a * a)
            s2 = s + a + sigma * np.random.standard_normal()
            a2 = k * s2
            x[0], x[1], x[2], x[3] = s * s, s * a, a * a, 1.0
            x2[0], x2[1], x2[2], x2[3] = s2 * s2, s2 * a2, a2 * a2, 1.0
            delta = r + gamma * (w @ x2) - w @ x
            # Normalised step: the quadratic features span orders of magnitude.
            w += alpha_w * delta * x / (1.0 + x @ x)
            # ∇_k J ≈ ∂μ/∂k · ∂q/∂a at a = μ(s) (Eq. 5), normalised like the critic step.
            k += alpha_k * s * (w[1] * s + 2.0 * w[2] * k * s) / (1.0 + s * s)
            s = s2
            if abs(s) > 1e3:  # a diverging episode restarts instead of overflowing
                break
        gains[it] = k
    return k


def dpg_lqr(iterations: int, gamma: float = 0.9, c: float = 1.0, *, sigma: float = 0.1,
            explore: float = 0.3, alpha_k: float = 0.01, alpha_w: float = 0.05,
            episode_length: int = 20, k0: float = 0.0, seed: int = 0) -> dict:
    """Off-policy deterministic policy gradient for the gain of a = k s (Eq. 5) with the
    quadratic critic q(s, a) = w·(s², s a, a², 1) learned by TD with target action μ(s').

    Returns ``{"k": final gain, "gains": ndarray (iterations,) gain after each episode,
    "w": critic weights (4,)}``.
    """
    _check_lqr(gamma, c)
    iterations = K.check_count(iterations, "iterations")
    T = K.check_count(episode_length, "episode_length")
    for name, val in (("sigma", sigma), ("explore", explore)):
        if not (np.isfinite(val) and val >= 0):
            raise ValueError(f"{name} must be >= 0, got {val}")
    for name, val in (("alpha_k", alpha_k), ("alpha_w", alpha_w)):
        if not (np.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be > 0, got {val}")
    w = np.zeros(4)
    gains = np.zeros(iterations)
    k = _dpg_kernel(float(k0), w, float(gamma), float(c), float(sigma), float(explore),
                    float(alpha_k), float(alpha_w), iterations, T, K.check_seed(seed), gains)
    return {"k": float(k), "gains": gains, "w": w}


__all__ = ["ActorCriticResult", "actor_critic", "dpg_lqr", "importance_sampling_gradient",
           "lqr_cost_coefficient", "lqr_optimal_gain"]
