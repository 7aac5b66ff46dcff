"""Monte Carlo reinforcement learning on the grid world: MC Basic, exploring starts, ε-greedy.

Monte Carlo methods estimate action values by averaging sampled discounted returns (Eq. 2 of the
``monte-carlo-rl`` post) and improve the policy greedily in between, following Zhao (2025),
*Mathematical Foundations of Reinforcement Learning*, Ch. 5:

- :func:`mc_basic` — policy iteration whose evaluation step estimates q_π(s, a) for every pair
  from episodes started at that pair (Eq. 3);
- :func:`mc_exploring_starts` — one episode per update, started at a random (s, a), the returns of
  every (or only the first) visit update q, the policy is greedy (Eq. 4);
- :func:`mc_epsilon_greedy` — no exploring starts: the behaviour is ε-greedy on q (Eq. 5);
- :func:`mc_evaluate` — first- or every-visit MC evaluation of a fixed policy.

The grid world is a continuing task, so episodes are truncated. To keep the truncation bias of
the recorded returns small, the exploring-starts / ε-greedy / evaluation learners run ``tail``
extra steps after the ``episode_length`` recorded ones (default: the smallest tail with
γ^tail ≤ 1e-3); MC Basic, like the book, uses its ``episode_length``-step return as it is.
All loops run in numba kernels (:mod:`deepnotes.rl._kernels`).
"""

from __future__ import annotations

import math

import numpy as np

from deepnotes.rl import _kernels as K
from deepnotes.rl._kernels import ValueEstimate
from deepnotes.rl.planning import Solution, greedy_policy


def default_tail(gamma: float, bias: float = 1e-3) -> int:
    """Smallest ``k`` with γ^k ≤ ``bias``: returns cut after ``k`` more steps lose at most
    ``bias · max|r| / (1 − γ)``."""
    if gamma <= 0.0:
        return 0
    return int(math.ceil(math.log(bias) / math.log(gamma)))


def _tail(tail, gamma: float) -> int:
    return default_tail(gamma) if tail is None else K.check_count(tail, "tail", minimum=0)


def _solution(q, iterations, history) -> Solution:
    return Solution(q.max(axis=1), q, greedy_policy(q), iterations, history)


def mc_basic(env, episodes_per_pair: int = 1, episode_length: int = 100, iterations: int = 20, *,
             seed: int = 0, policy0=None, v_star=None, q_star=None,
             tie_tol: float = 1e-6) -> Solution:
    """MC Basic: policy iteration with Monte Carlo action-value estimates (Eq. 3).

    Each iteration runs ``episodes_per_pair`` episodes of ``episode_length`` steps from every
    (s, a), following the current deterministic policy after the first step; q(s, a) is the mean
    discounted return and the new policy is greedy in q. With deterministic moves (``slip = 0``)
    one episode per pair gives q_π up to the truncation error γ^L · max|r| / (1 − γ).

    Parameters
    ----------
    env : GridWorld
    episodes_per_pair : int        episodes averaged per (s, a) and iteration, >= 1
    episode_length : int           L, steps per episode (the return's horizon), >= 1
    iterations : int               policy-iteration steps, >= 1
    seed : int                     seed of the kernel's random stream (only used when slip > 0)
    policy0 : int array (S,)       initial policy (default: all actions 0, "up")
    v_star, q_star : ndarray       optional exact answers, shapes (S,) and (S, A), for history
    tie_tol : float                q*-gap under which an action counts as optimal

    Returns
    -------
    Solution
        ``iterations`` is the number of policy-iteration steps; ``history`` holds per iteration
        ``"episodes"`` (cumulative), ``"policy_changes"``, and ``"v_error"`` /
        ``"optimal_fraction"`` when ``v_star`` / ``q_star`` are given.
    """
    nxt, rew, slip, gamma, _ = K.env_arrays(env)
    S, A = nxt.shape
    episodes_per_pair = K.check_count(episodes_per_pair, "episodes_per_pair")
    episode_length = K.check_count(episode_length, "episode_length")
    iterations = K.check_count(iterations, "iterations")
    policy = np.zeros(S, np.int64) if policy0 is None else np.array(policy0, dtype=np.int64)
    if policy.shape != (S,) or policy.min() < 0 or policy.max() >= A:
        raise ValueError(f"policy0 must be {S} actions in 0..{A - 1}")
    v_ref, mask = K.reference_arrays(v_star, q_star, S, A, tie_tol)
    q = np.zeros((S, A))
    v_error, opt_frac = np.zeros(iterations), np.zeros(iterations)
    changes = np.zeros(iterations, np.int64)
    K.mc_basic_kernel(nxt, rew, slip, gamma, policy, episodes_per_pair, episode_length,
                      iterations, K.check_seed(seed), v_ref, mask, q, v_error, opt_frac, changes)
    history = {"episodes": (np.arange(1, iterations + 1) * S * A * episodes_per_pair).tolist(),
               "policy_changes": changes.tolist()}
    if len(v_ref):
        history["v_error"] = v_error.tolist()
    if mask.size:
        history["optimal_fraction"] = opt_frac.tolist()
    return _solution(q, iterations, history)


def _mc_control(env, episodes, episode_length, epsilons, exploring_starts, first_visit, alpha,
                tail, seed, v_star, q_star, tie_tol, step_power: float = 1.0) -> Solution:
    nxt, rew, slip, gamma, target = K.env_arrays(env)
    S, A = nxt.shape
    episode_length = K.check_count(episode_length, "episode_length")
    tail = _tail(tail, gamma)
    if alpha is None:
        step = 0.0
        if not 0.5 < step_power <= 1.0:
            raise ValueError(f"step_power must be in (0.5, 1] (the Robbins-Monro conditions), "
                             f"got {step_power}")
    else:
        step = float(alpha)
        if not 0.0 < step <= 1.0:
            raise ValueError(f"alpha must be in (0, 1] or None (sample averages), got {alpha}")
    v_ref, mask = K.reference_arrays(v_star, q_star, S, A, tie_tol)
    q, counts = np.zeros((S, A)), np.zeros((S, A), np.int64)
    returns, v_error, opt_frac = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes)
    steps_to_target = np.zeros(episodes, np.int64)
    K.mc_control_kernel(nxt, rew, slip, gamma, q, counts, epsilons, exploring_starts,
                        bool(first_visit), step, float(step_power), episode_length, tail,
                        K.check_seed(seed), target, v_ref, mask, returns, steps_to_target,
                        v_error, opt_frac)
    history = K.control_history(returns, steps_to_target, v_error, opt_frac, len(v_ref) > 0,
                                mask.size > 0, episode_length + tail)
    history["visits"] = counts.tolist()
    return _solution(q, episodes, history)


def mc_exploring_starts(env, episodes: int, episode_length: int = 50, first_visit: bool = True,
                        seed: int = 0, *, alpha: float | None = None, tail: int | None = None,
                        v_star=None, q_star=None, tie_tol: float = 1e-6) -> Solution:
    """MC Exploring Starts (Eq. 4): each episode starts at a uniformly random (s, a), then follows
    the policy greedy in the current q; after the episode every (first-visit: the first) visit's
    return updates q(s, a), by sample averaging (``alpha=None``) or a constant step ``alpha``.

    Parameters
    ----------
    env : GridWorld
    episodes : int                 number of episodes, >= 1
    episode_length : int           recorded steps per episode, >= 1
    first_visit : bool             use only the first visit of each pair in an episode
    seed : int
    alpha : float in (0, 1] or None
    tail : int or None             extra unrecorded steps that lengthen the returns (default:
                                   :func:`default_tail`); each episode costs episode_length + tail
                                   environment steps
    v_star, q_star, tie_tol        as in :func:`mc_basic`

    Returns
    -------
    Solution
        ``iterations`` = episodes; ``history`` per episode: ``"return"`` (undiscounted reward of
        the recorded steps), ``"steps_to_target"``, ``"env_steps"`` (cumulative), ``"v_error"``
        and ``"optimal_fraction"`` when references are given; ``"visits"`` (S, A) counts.
    """
    episodes = K.check_count(episodes, "episodes")
    epsilons = np.zeros(episodes)  # greedy within the episode: exploration comes from the start
    return _mc_control(env, episodes, episode_length, epsilons, True, first_visit, alpha, tail,
                       seed, v_star, q_star, tie_tol)


def mc_epsilon_greedy(env, episodes: int, episode_length: int = 50, epsilon: float = 0.1,
                      seed: int = 0, first_visit: bool = False, *,
                      epsilon_final: float | None = None, decay_fraction: float = 1.0,
                      alpha: float | None = None, step_power: float = 1.0,
                      tail: int | None = None, v_star=None, q_star=None,
                      tie_tol: float = 1e-6) -> Solution:
    """MC ε-greedy (Eq. 5): episodes start in a uniformly random state and follow the ε-greedy
    policy of the current q (Eq. 6); returns update q as in :func:`mc_exploring_starts`.

    With a constant ε the estimates approach q of the best ε-greedy policy, not q*; a schedule
    decaying ε to 0 (``epsilon_final=0``, linear over the episodes) and a constant ``alpha`` that
    forgets the returns of early, more exploratory policies bring max_a q close to v*.

    Parameters
    ----------
    epsilon : float in [0, 1]       exploration rate of the first episode
    epsilon_final : float or None   final exploration rate (None: constant)
    step_power : float in (0.5, 1]  with ``alpha=None``, the step of the n-th update of q(s, a)
                                    is 1/n**step_power: 1 averages every return ever seen (so
                                    returns of early, poorer policies are never forgotten);
                                    smaller powers forget them faster and still satisfy the
                                    Robbins–Monro conditions (see the stochastic-approximation
                                    post)
    decay_fraction : float in (0, 1]  ε decays linearly over this fraction of the episodes
    other parameters as in :func:`mc_exploring_starts`
    """
    episodes = K.check_count(episodes, "episodes")
    epsilons = K.schedule(epsilon, epsilon_final, episodes, "epsilon", open_low=False,
                          decay_fraction=decay_fraction)
    return _mc_control(env, episodes, episode_length, epsilons, False, first_visit, alpha, tail,
                       seed, v_star, q_star, tie_tol, step_power)


def mc_evaluate(env, policy, episodes: int, episode_length: int = 50, seed: int = 0, *,
                first_visit: bool = False, tail: int | None = None,
                v_true=None) -> ValueEstimate:
    """Monte Carlo evaluation of a fixed policy: v(s) is the mean return of the visits of s (Eq. 2).

    Parameters
    ----------
    policy : int array (S,) or probabilities (S, A)
    episodes, episode_length, seed, first_visit, tail : as in :func:`mc_exploring_starts`
    v_true : ndarray (S,), optional   exact v_π, to record ``history["v_error"]`` per episode
    """
    nxt, rew, slip, gamma, _ = K.env_arrays(env)
    S, A = nxt.shape
    episodes = K.check_count(episodes, "episodes")
    episode_length = K.check_count(episode_length, "episode_length")
    cdf = K.policy_cdf(policy, S, A)
    v_ref, _ = K.reference_arrays(v_true, None, S, A, 0.0)
    v, counts, v_error = np.zeros(S), np.zeros(S, np.int64), np.zeros(episodes)
    K.mc_evaluate_kernel(nxt, rew, slip, gamma, cdf, v, counts, episodes, episode_length,
                         _tail(tail, gamma), bool(first_visit), K.check_seed(seed), v_ref, v_error)
    history = {"visits": counts.tolist()}
    if len(v_ref):
        history["v_error"] = v_error.tolist()
    return ValueEstimate(v, episodes, history)




def epsilon_greedy_matrix(policy, epsilon: float, n_actions: int) -> np.ndarray:
    """The ε-greedy policy around deterministic ``policy`` (int (S,)): probabilities (S, A) with
    1 − ε + ε/A on ``policy[s]`` and ε/A elsewhere (Eq. 6)."""
    policy = np.asarray(policy, dtype=np.int64)
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    pi = np.full((len(policy), n_actions), epsilon / n_actions)
    pi[np.arange(len(policy)), policy] += 1.0 - epsilon
    return pi


def best_epsilon_greedy(env, epsilon: float, *, max_iter: int = 1000) -> Solution:
    """Exact best ε-greedy policy, by policy iteration restricted to ε-greedy policies.

    Evaluate the ε-greedy policy exactly (:func:`deepnotes.rl.planning.evaluate_policy`), make its
    greedy core greedy in the resulting q, repeat until stable. This is the fixed point MC
    ε-greedy (and on-policy TD with a constant ε) converge to; for ε > 0 it can differ from the
    optimal policy. Returns ``Solution(v_ε, q_ε, greedy core, iterations)``.
    """
    from deepnotes.rl.planning import action_values, evaluate_policy

    A = env.n_actions
    policy = np.zeros(env.n_states, np.int64)
    for it in range(1, max_iter + 1):
        v = evaluate_policy(env, epsilon_greedy_matrix(policy, epsilon, A))
        q = action_values(env, v)
        improved = greedy_policy(q)
        keep = q[np.arange(len(policy)), policy] >= q[np.arange(len(policy)), improved] - 1e-9
        improved = np.where(keep, policy, improved)  # ties keep the current action: terminates
        if np.array_equal(improved, policy):
            return Solution(v, q, policy, it, {})
        policy = improved
    raise RuntimeError(f"ε-greedy policy iteration did not converge in {max_iter} iterations")


__all__ = ["ValueEstimate", "best_epsilon_greedy", "default_tail", "epsilon_greedy_matrix",
           "mc_basic", "mc_epsilon_greedy", "mc_evaluate", "mc_exploring_starts"]
