"""Shared pieces of the tabular learners: numba kernels, argument checks and per-episode tracking.

The kernels run whole learning runs (episode generation and updates) over the grid world's
deterministic tables ``next_state_table`` / ``reward_table`` (shape (S, A)) and its ``slip``.
Randomness comes from numba's own Mersenne Twister, seeded with ``np.random.seed(seed)`` inside
each kernel, and every draw is a single ``np.random.random()``: numba's stream is then the same as
``np.random.RandomState(seed).random_sample()``, which the tests use to replay the kernels in
plain Python and compare the results bit for bit.

Draw order (the contract the reference implementations follow):

- start of an episode: one draw for the start state (``floor(u * S)``), then, for exploring
  starts, one draw for the start action;
- choosing an action: one draw ``u``; ε-greedy explores when ``u < ε`` and then takes action
  ``floor(u / ε * A)`` (uniform over all ``A`` actions, the greedy one included), else the greedy
  action (lowest index among ties); a fixed policy takes the first action whose cumulative
  probability exceeds ``u``;
- a step of the environment: when ``slip > 0`` one draw ``u``; if ``u < slip`` the executed action
  is ``floor(u / slip * A)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from deepnotes.rl.planning import policy_matrix

SARSA, EXPECTED_SARSA, Q_LEARNING = 0, 1, 2


@dataclass
class ValueEstimate:
    """State values of a given policy, estimated from samples (TD(0), Monte Carlo evaluation).

    Attributes
    ----------
    v : ndarray, shape (S,)      estimated v_π
    iterations : int             episodes used
    history : dict[str, list]    per-episode diagnostics (``"v_error"`` when ``v_true`` is given)
    """

    v: np.ndarray
    iterations: int = 0
    history: dict[str, list] = field(default_factory=dict)


# --- argument checks ---------------------------------------------------------------------------
def env_arrays(env) -> tuple[np.ndarray, np.ndarray, float, float, int]:
    """``(next_state_table, reward_table, slip, gamma, target_state)`` of a grid world."""
    try:
        nxt = np.ascontiguousarray(env.next_state_table, dtype=np.int64)
        rew = np.ascontiguousarray(env.reward_table, dtype=np.float64)
        slip, gamma, target = float(env.slip), float(env.gamma), int(env.target_state)
    except AttributeError as exc:
        raise TypeError(f"env must be a GridWorld-like object with next_state_table, reward_table, "
                        f"slip, gamma and target_state: {exc}") from None
    if nxt.ndim != 2 or rew.shape != nxt.shape:
        raise ValueError(f"next_state_table and reward_table must share shape (S, A), "
                         f"got {nxt.shape} and {rew.shape}")
    return nxt, rew, slip, gamma, target


def check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return int(seed)


def schedule(start: float, final: float | None, episodes: int, name: str, *,
             open_low: bool, decay_fraction: float = 1.0) -> np.ndarray:
    """Per-episode values going linearly from ``start`` to ``final`` over the first
    ``decay_fraction`` of the episodes, then staying at ``final`` (constant if ``final`` is None).

    ``open_low``: the range is (0, 1] (step sizes) rather than [0, 1] (exploration rates).
    """
    if not 0.0 < decay_fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
    interval = "(0, 1]" if open_low else "[0, 1]"
    for label, value in ((name, start), (f"{name}_final", final)):
        if value is None:
            continue
        value = float(value)
        bad = not (0.0 < value <= 1.0) if open_low else not (0.0 <= value <= 1.0)
        if bad or math.isnan(value):
            raise ValueError(f"{label} must be in {interval}, got {value}")
    if final is None:
        return np.full(episodes, float(start))
    ramp = max(1, int(round(decay_fraction * episodes)))
    values = np.full(episodes, float(final))
    values[:ramp] = np.linspace(float(start), float(final), ramp)
    return values


def policy_cdf(policy, n_states: int, n_actions: int) -> np.ndarray:
    """Cumulative probabilities of a policy, shape (S, A); the last column is forced to 1."""
    cdf = np.cumsum(policy_matrix(policy, n_states, n_actions), axis=1)
    cdf[:, -1] = 1.0  # rounding must never leave u in [cdf[-1], 1) without an action
    return np.ascontiguousarray(cdf)


def reference_arrays(v_star, q_star, n_states: int, n_actions: int,
                     tie_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """``v_star`` (shape (S,) or (0,)) and the mask of q*-optimal actions ((S, A) or (0, 0))."""
    if q_star is not None:
        q_star = np.asarray(q_star, float)
        if q_star.shape != (n_states, n_actions):
            raise ValueError(f"q_star must have shape ({n_states}, {n_actions}), "
                             f"got {q_star.shape}")
        mask = q_star >= q_star.max(axis=1, keepdims=True) - tie_tol
        if v_star is None:
            v_star = q_star.max(axis=1)
    else:
        mask = np.zeros((0, 0), dtype=np.bool_)
    if v_star is None:
        return np.zeros(0), mask
    v_star = np.asarray(v_star, float)
    if v_star.shape != (n_states,):
        raise ValueError(f"v_star must have shape ({n_states},), got {v_star.shape}")
    return np.ascontiguousarray(v_star), np.ascontiguousarray(mask)


def control_history(returns, steps_to_target, v_error, opt_frac, tracked_v: bool,
                    tracked_q: bool, episode_steps: int) -> dict[str, list]:
    history = {"return": returns.tolist(), "steps_to_target": steps_to_target.tolist(),
               "env_steps": (np.arange(1, len(returns) + 1) * episode_steps).tolist()}
    if tracked_v:
        history["v_error"] = v_error.tolist()
    if tracked_q:
        history["optimal_fraction"] = opt_frac.tolist()
    return history


# --- numba building blocks -----------------------------------------------------------------------
@njit(cache=True)
def _draw_int(n):
    return min(int(np.random.random() * n), n - 1)


@njit(cache=True)
def _greedy(q, s):
    best, a_best = q[s, 0], 0
    for a in range(1, q.shape[1]):
        if q[s, a] > best:
            best, a_best = q[s, a], a
    return a_best


@njit(cache=True)
def _eps_greedy(q, s, eps):
    u = np.random.random()
    if u < eps:
        return min(int(u / eps * q.shape[1]), q.shape[1] - 1)
    return _greedy(q, s)


@njit(cache=True)
def _from_cdf(cdf, s):
    u = np.random.random()
    for a in range(cdf.shape[1]):
        if u < cdf[s, a]:
            return a
    return cdf.shape[1] - 1


@njit(cache=True)
def _step(nxt, rew, slip, s, a):
    if slip > 0.0:
        u = np.random.random()
        if u < slip:
            a = min(int(u / slip * nxt.shape[1]), nxt.shape[1] - 1)
    return nxt[s, a], rew[s, a]


@njit(cache=True)
def _track(q, v_star, opt_mask, ep, v_error, opt_frac):
    """Record ‖max_a q − v*‖_∞ and the fraction of states whose greedy action is q*-optimal."""
    S = q.shape[0]
    if v_star.shape[0] == S:
        err = 0.0
        for s in range(S):
            err = max(err, abs(q[s, _greedy(q, s)] - v_star[s]))
        v_error[ep] = err
    if opt_mask.shape[0] == S:
        good = 0
        for s in range(S):
            if opt_mask[s, _greedy(q, s)]:
                good += 1
        opt_frac[ep] = good / S


# --- temporal difference -------------------------------------------------------------------------
@njit(cache=True)
def td0_kernel(nxt, rew, slip, gamma, cdf, v, alphas, episode_length, seed, v_true, v_error,
               returns):
    """TD(0) evaluation of the fixed policy with cumulative probabilities ``cdf``; updates ``v``."""
    np.random.seed(seed)
    S = v.shape[0]
    for ep in range(alphas.shape[0]):
        alpha = alphas[ep]
        s = _draw_int(S)
        total = 0.0
        for _ in range(episode_length):
            a = _from_cdf(cdf, s)
            s2, r = _step(nxt, rew, slip, s, a)
            v[s] += alpha * (r + gamma * v[s2] - v[s])
            total += r
            s = s2
        returns[ep] = total
        if v_true.shape[0] == S:
            err = 0.0
            for i in range(S):
                err = max(err, abs(v[i] - v_true[i]))
            v_error[ep] = err


@njit(cache=True)
def _bootstrap(q, s, a, method, eps):
    """Value of the next pair in the TD target: q(s, a) (Sarsa), E_π q(s, ·) or max q(s, ·)."""
    if method == SARSA:
        return q[s, a]
    best = q[s, _greedy(q, s)]
    if method == Q_LEARNING:
        return best
    mean = 0.0
    for b in range(q.shape[1]):
        mean += q[s, b]
    return (1.0 - eps) * best + eps * mean / q.shape[1]


@njit(cache=True)
def _n_step_update(q, buf_s, buf_a, buf_r, tau, end, gamma, alpha, method, eps):
    """q(S_τ, A_τ) += α (Σ_{i=τ+1}^{end} γ^{i-τ-1} R_i + γ^{end-τ} boot(S_end) − q(S_τ, A_τ))."""
    m = buf_s.shape[0]
    g = 0.0
    disc = 1.0
    for i in range(tau + 1, end + 1):
        g += disc * buf_r[i % m]
        disc *= gamma
    g += disc * _bootstrap(q, buf_s[end % m], buf_a[end % m], method, eps)
    s, a = buf_s[tau % m], buf_a[tau % m]
    q[s, a] += alpha * (g - q[s, a])


@njit(cache=True)
def td_control_kernel(nxt, rew, slip, gamma, q, alphas, epsilons, episode_length, n, method,
                      behaviour_cdf, exploring_starts, seed, target, v_star, opt_mask, returns,
                      steps_to_target, v_error, opt_frac):
    """n-step Sarsa / Expected Sarsa / Q-learning, on-policy (ε-greedy on ``q``) or off-policy.

    Off-policy when ``behaviour_cdf`` has shape (S, A): actions then come from that fixed policy
    and ``epsilons`` only enters Expected Sarsa's target. Episodes start in a uniformly random
    state (with ``exploring_starts``, the first action is uniform too) and last ``episode_length``
    steps; the task is continuing, so the last ``n`` pairs are
    updated with shorter returns that bootstrap at the final pair rather than at a terminal state.
    """
    np.random.seed(seed)
    S = q.shape[0]
    off_policy = behaviour_cdf.shape[0] == S
    m = n + 1
    buf_s = np.zeros(m, np.int64)
    buf_a = np.zeros(m, np.int64)
    buf_r = np.zeros(m)
    for ep in range(alphas.shape[0]):
        alpha, eps = alphas[ep], epsilons[ep]
        s = _draw_int(S)
        if exploring_starts:
            a = _draw_int(q.shape[1])
        else:
            a = _from_cdf(behaviour_cdf, s) if off_policy else _eps_greedy(q, s, eps)
        buf_s[0], buf_a[0] = s, a
        total = 0.0
        hit = episode_length
        for t in range(episode_length):
            s2, r = _step(nxt, rew, slip, s, a)
            total += r
            if s2 == target and hit == episode_length:
                hit = t + 1
            k = (t + 1) % m
            buf_s[k], buf_r[k] = s2, r
            # Sarsa's target needs A_{t+1} before the update; the others choose it afterwards,
            # from the updated q, as in the textbook Q-learning loop.
            if method == SARSA:
                a = _from_cdf(behaviour_cdf, s2) if off_policy else _eps_greedy(q, s2, eps)
                buf_a[k] = a
            if t + 1 >= n:
                _n_step_update(q, buf_s, buf_a, buf_r, t + 1 - n, t + 1, gamma, alpha, method,
                               eps)
            if method != SARSA:
                a = _from_cdf(behaviour_cdf, s2) if off_policy else _eps_greedy(q, s2, eps)
                buf_a[k] = a
            s = s2
        for tau in range(max(0, episode_length - n + 1), episode_length):
            _n_step_update(q, buf_s, buf_a, buf_r, tau, episode_length, gamma, alpha, method, eps)
        returns[ep] = total
        steps_to_target[ep] = hit
        _track(q, v_star, opt_mask, ep, v_error, opt_frac)


# --- Monte Carlo ----------------------------------------------------------------------------------
@njit(cache=True)
def mc_basic_kernel(nxt, rew, slip, gamma, policy, episodes_per_pair, episode_length, iterations,
                    seed, v_star, opt_mask, q, v_error, opt_frac, changes):
    """MC Basic: per iteration, estimate q_π(s, a) for every pair from episodes that start at
    (s, a) and then follow ``policy`` (modified in place), then make ``policy`` greedy."""
    np.random.seed(seed)
    S, A = q.shape
    for it in range(iterations):
        for s0 in range(S):
            for a0 in range(A):
                acc = 0.0
                for _ in range(episodes_per_pair):
                    s, a = s0, a0
                    g, disc = 0.0, 1.0
                    for _t in range(episode_length):
                        s2, r = _step(nxt, rew, slip, s, a)
                        g += disc * r
                        disc *= gamma
                        s = s2
                        a = policy[s]
                    acc += g
                q[s0, a0] = acc / episodes_per_pair
        n_changed = 0
        for s in range(S):
            a = _greedy(q, s)
            if a != policy[s]:
                n_changed += 1
            policy[s] = a
        changes[it] = n_changed
        _track(q, v_star, opt_mask, it, v_error, opt_frac)


@njit(cache=True)
def mc_control_kernel(nxt, rew, slip, gamma, q, counts, epsilons, exploring_starts, first_visit,
                      alpha, step_power, episode_length, tail, seed, target, v_star, opt_mask,
                      returns, steps_to_target, v_error, opt_frac):
    """MC control with exploring starts or ε-greedy exploration; q is improved after each episode.

    Each episode records ``episode_length`` visits and then runs ``tail`` more steps whose rewards
    only lengthen the returns of the recorded visits. ``alpha <= 0`` uses the step
    1/N(s, a)**step_power (``step_power=1`` averages returns); otherwise a constant ``alpha``.
    """
    np.random.seed(seed)
    S, A = q.shape
    T = episode_length + tail
    st = np.zeros(T, np.int64)
    ac = np.zeros(T, np.int64)
    rw = np.zeros(T)
    first = np.full((S, A), -1, np.int64)
    for ep in range(epsilons.shape[0]):
        eps = epsilons[ep]
        s = _draw_int(S)
        a = _draw_int(A) if exploring_starts else _eps_greedy(q, s, eps)
        total = 0.0
        hit = episode_length
        for t in range(T):
            st[t], ac[t] = s, a
            s2, r = _step(nxt, rew, slip, s, a)
            rw[t] = r
            if t < episode_length:
                total += r
                if s2 == target and hit == episode_length:
                    hit = t + 1
            s = s2
            a = _eps_greedy(q, s, eps)
        if first_visit:
            first[:, :] = -1
            for t in range(episode_length):
                if first[st[t], ac[t]] < 0:
                    first[st[t], ac[t]] = t
        g = 0.0
        for t in range(T - 1, -1, -1):
            g = gamma * g + rw[t]
            if t >= episode_length:
                continue
            s, a = st[t], ac[t]
            if first_visit and first[s, a] != t:
                continue
            counts[s, a] += 1
            if alpha > 0.0:
                step = alpha
            elif step_power == 1.0:
                step = 1.0 / counts[s, a]  # exact sample average
            else:
                step = counts[s, a] ** (-step_power)
            q[s, a] += step * (g - q[s, a])
        returns[ep] = total
        steps_to_target[ep] = hit
        _track(q, v_star, opt_mask, ep, v_error, opt_frac)


@njit(cache=True)
def mc_evaluate_kernel(nxt, rew, slip, gamma, cdf, v, counts, episodes, episode_length, tail,
                       first_visit, seed, v_true, v_error):
    """Monte Carlo evaluation of a fixed policy: average the (first- or every-visit) returns."""
    np.random.seed(seed)
    S = v.shape[0]
    T = episode_length + tail
    st = np.zeros(T, np.int64)
    rw = np.zeros(T)
    first = np.full(S, -1, np.int64)
    for ep in range(episodes):
        s = _draw_int(S)
        for t in range(T):
            st[t] = s
            s2, r = _step(nxt, rew, slip, s, _from_cdf(cdf, s))
            rw[t] = r
            s = s2
        if first_visit:
            first[:] = -1
            for t in range(episode_length):
                if first[st[t]] < 0:
                    first[st[t]] = t
        g = 0.0
        for t in range(T - 1, -1, -1):
            g = gamma * g + rw[t]
            if t >= episode_length or (first_visit and first[st[t]] != t):
                continue
            counts[st[t]] += 1
            v[st[t]] += (g - v[st[t]]) / counts[st[t]]
        if v_true.shape[0] == S:
            err = 0.0
            for i in range(S):
                err = max(err, abs(v[i] - v_true[i]))
            v_error[ep] = err
