"""Temporal-difference learning on the grid world: TD(0), Sarsa, Expected Sarsa, n-step Sarsa,
Q-learning on- and off-policy.

Each method is a Robbins–Monro iteration that solves a Bellman equation from samples (the
``temporal-difference`` post, following Zhao (2025), *Mathematical Foundations of Reinforcement
Learning*, Ch. 7):

- :func:`td0` — v(s_t) += α [r_{t+1} + γ v(s_{t+1}) − v(s_t)]  (Eq. 3), evaluation of a policy;
- :func:`sarsa` — target r + γ q(s', a') with a' from the ε-greedy behaviour (Eq. 4);
- :func:`expected_sarsa` — target r + γ Σ_a π(a|s') q(s', a) (Eq. 5);
- :func:`n_step_sarsa` — target Σ_{i<n} γ^i r_{t+i+1} + γ^n q(s_{t+n}, a_{t+n}) (Eq. 6);
- :func:`q_learning` / :func:`q_learning_offpolicy` — target r + γ max_a q(s', a) (Eq. 7), with an
  ε-greedy behaviour on q or with any fixed behaviour policy.

Episodes start in a uniformly random state and last ``episode_length`` steps. The grid world is a
continuing task: the last state of an episode is not terminal, so the final updates bootstrap on
its current estimate. Step size α and exploration ε can decay linearly over the episodes
(``alpha_final``, ``epsilon_final``). All loops run in numba kernels
(:mod:`deepnotes.rl._kernels`).
"""

from __future__ import annotations

import numpy as np

from deepnotes.rl import _kernels as K
from deepnotes.rl._kernels import ValueEstimate
from deepnotes.rl.planning import Solution, greedy_policy


def td0(env, policy, episodes: int, alpha: float = 0.1, episode_length: int = 100, seed: int = 0,
        *, alpha_final: float | None = None, v0=None, v_true=None) -> ValueEstimate:
    """TD(0) evaluation of a fixed policy (Eq. 3).

    Parameters
    ----------
    env : GridWorld
    policy : int array (S,) or probabilities (S, A)
    episodes : int                    episodes, each from a uniformly random state, >= 1
    alpha : float in (0, 1]           step size of the first episode
    episode_length : int              steps per episode, >= 1
    seed : int
    alpha_final : float or None       step size of the last episode (linear decay; None: constant)
    v0 : ndarray (S,), optional       initial estimate (default zeros)
    v_true : ndarray (S,), optional   exact v_π, to record ``history["v_error"]`` per episode

    Returns
    -------
    ValueEstimate
        ``v`` (S,), ``iterations`` = episodes, ``history``: ``"return"`` per episode (undiscounted
        reward sum), ``"env_steps"`` (cumulative), ``"v_error"`` when ``v_true`` is given.
    """
    nxt, rew, slip, gamma, _ = K.env_arrays(env)
    S, A = nxt.shape
    episodes = K.check_count(episodes, "episodes")
    episode_length = K.check_count(episode_length, "episode_length")
    alphas = K.schedule(alpha, alpha_final, episodes, "alpha", open_low=True)
    cdf = K.policy_cdf(policy, S, A)
    v = np.zeros(S) if v0 is None else np.array(v0, dtype=float)
    if v.shape != (S,):
        raise ValueError(f"v0 must have shape ({S},), got {v.shape}")
    v_ref, _ = K.reference_arrays(v_true, None, S, A, 0.0)
    v_error, returns = np.zeros(episodes), np.zeros(episodes)
    K.td0_kernel(nxt, rew, slip, gamma, cdf, v, alphas, episode_length, K.check_seed(seed),
                 v_ref, v_error, returns)
    history = {"return": returns.tolist(),
               "env_steps": (np.arange(1, episodes + 1) * episode_length).tolist()}
    if len(v_ref):
        history["v_error"] = v_error.tolist()
    return ValueEstimate(v, episodes, history)


def _control(env, episodes, alpha, epsilon, seed, episode_length, alpha_final, epsilon_final,
             decay_fraction, n, method, behaviour, exploring_starts, q0, v_star, q_star,
             tie_tol) -> Solution:
    nxt, rew, slip, gamma, target = K.env_arrays(env)
    S, A = nxt.shape
    episodes = K.check_count(episodes, "episodes")
    episode_length = K.check_count(episode_length, "episode_length")
    n = K.check_count(n, "n")
    alphas = K.schedule(alpha, alpha_final, episodes, "alpha", open_low=True,
                        decay_fraction=decay_fraction)
    epsilons = K.schedule(epsilon, epsilon_final, episodes, "epsilon", open_low=False,
                          decay_fraction=decay_fraction)
    cdf = np.zeros((0, A)) if behaviour is None else K.policy_cdf(behaviour, S, A)
    q = np.zeros((S, A)) if q0 is None else np.array(q0, dtype=float)
    if q.shape != (S, A):
        raise ValueError(f"q0 must have shape ({S}, {A}), got {q.shape}")
    v_ref, mask = K.reference_arrays(v_star, q_star, S, A, tie_tol)
    returns, v_error, opt_frac = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes)
    steps_to_target = np.zeros(episodes, np.int64)
    K.td_control_kernel(nxt, rew, slip, gamma, q, alphas, epsilons, episode_length, n, method, cdf,
                        bool(exploring_starts), K.check_seed(seed), target, v_ref, mask, returns,
                        steps_to_target, v_error, opt_frac)
    history = K.control_history(returns, steps_to_target, v_error, opt_frac, len(v_ref) > 0,
                                mask.size > 0, episode_length)
    return Solution(q.max(axis=1), q, greedy_policy(q), episodes, history)


_CONTROL_DOC = """
    Parameters
    ----------
    env : GridWorld
    episodes : int                  episodes, each from a uniformly random state, >= 1
    alpha : float in (0, 1]         step size of the first episode
    epsilon : float in [0, 1]       exploration rate of the first episode: with probability ε the
                                    action is uniform over all actions, else greedy in q (Eq. 8)
    seed : int
    episode_length : int            steps per episode, >= 1
    alpha_final, epsilon_final      final values, reached by linear decay (None: constant)
    decay_fraction : float in (0, 1]  fraction of the episodes over which α and ε decay; they
                                    stay at their final values afterwards
    exploring_starts : bool         draw each episode's first action uniformly (as in MC
                                    Exploring Starts): every pair keeps being updated when ε → 0
    q0 : ndarray (S, A), optional   initial estimate (default zeros)
    v_star, q_star : optional       exact v* (S,) / q* (S, A) for the history's error curves
    tie_tol : float                 q*-gap under which an action counts as optimal

    Returns
    -------
    Solution
        ``v = max_a q``, ``q``, greedy ``policy``, ``iterations`` = episodes; ``history`` per
        episode: ``"return"`` (undiscounted reward sum), ``"steps_to_target"`` (steps until the
        target is first reached, ``episode_length`` if never), ``"env_steps"`` (cumulative), and
        ``"v_error"`` (‖max_a q − v*‖_∞) / ``"optimal_fraction"`` (states whose greedy action is
        q*-optimal) when ``v_star`` / ``q_star`` are given.
"""


def sarsa(env, episodes: int, alpha: float = 0.1, epsilon: float = 0.1, seed: int = 0, *,
          episode_length: int = 100, alpha_final: float | None = None,
          epsilon_final: float | None = None, decay_fraction: float = 1.0,
          exploring_starts: bool = False, q0=None, v_star=None, q_star=None,
          tie_tol: float = 1e-6) -> Solution:
    return _control(env, episodes, alpha, epsilon, seed, episode_length, alpha_final,
                    epsilon_final, decay_fraction, 1, K.SARSA, None, exploring_starts, q0,
                    v_star, q_star, tie_tol)


def expected_sarsa(env, episodes: int, alpha: float = 0.1, epsilon: float = 0.1, seed: int = 0,
                   *, episode_length: int = 100, alpha_final: float | None = None,
                   epsilon_final: float | None = None, decay_fraction: float = 1.0,
                   exploring_starts: bool = False, q0=None, v_star=None, q_star=None,
                   tie_tol: float = 1e-6) -> Solution:
    return _control(env, episodes, alpha, epsilon, seed, episode_length, alpha_final,
                    epsilon_final, decay_fraction, 1, K.EXPECTED_SARSA, None, exploring_starts,
                    q0, v_star, q_star, tie_tol)


def n_step_sarsa(env, episodes: int, alpha: float = 0.1, epsilon: float = 0.1, seed: int = 0, *,
                 n: int = 3, episode_length: int = 100, alpha_final: float | None = None,
                 epsilon_final: float | None = None, decay_fraction: float = 1.0,
                 exploring_starts: bool = False, q0=None, v_star=None, q_star=None,
                 tie_tol: float = 1e-6) -> Solution:
    return _control(env, episodes, alpha, epsilon, seed, episode_length, alpha_final,
                    epsilon_final, decay_fraction, n, K.SARSA, None, exploring_starts, q0,
                    v_star, q_star, tie_tol)


def q_learning(env, episodes: int, alpha: float = 0.1, epsilon: float = 0.1, seed: int = 0, *,
               episode_length: int = 100, alpha_final: float | None = None,
               epsilon_final: float | None = None, decay_fraction: float = 1.0,
               exploring_starts: bool = False, q0=None, v_star=None, q_star=None,
               tie_tol: float = 1e-6) -> Solution:
    return _control(env, episodes, alpha, epsilon, seed, episode_length, alpha_final,
                    epsilon_final, decay_fraction, 1, K.Q_LEARNING, None, exploring_starts, q0,
                    v_star, q_star, tie_tol)


def q_learning_offpolicy(env, behaviour_policy, episodes: int, alpha: float = 0.1, seed: int = 0,
                         *, episode_length: int = 100, alpha_final: float | None = None,
                         decay_fraction: float = 1.0, q0=None, v_star=None, q_star=None,
                         tie_tol: float = 1e-6) -> Solution:
    """Off-policy Q-learning (Eq. 7): actions come from the fixed ``behaviour_policy`` (int (S,)
    or probabilities (S, A), e.g. uniform ``np.full((S, A), 1 / A)``); the target is greedy.

    Converges to q* when the behaviour tries every action in every state infinitely often and
    the step sizes satisfy the Robbins–Monro conditions; with deterministic moves the target has
    no noise, so a constant α converges too. Parameters and result as in :func:`q_learning`
    (without ε and exploring starts).
    """
    return _control(env, episodes, alpha, 0.0, seed, episode_length, alpha_final, None,
                    decay_fraction, 1, K.Q_LEARNING, behaviour_policy, False, q0, v_star, q_star,
                    tie_tol)


sarsa.__doc__ = ("Sarsa (Eq. 4): on-policy TD control with ε-greedy behaviour; the target uses "
                 "the next action actually taken.\n" + _CONTROL_DOC)
expected_sarsa.__doc__ = ("Expected Sarsa (Eq. 5): the target averages q(s', ·) over the "
                          "ε-greedy policy instead of sampling a'.\n" + _CONTROL_DOC)
n_step_sarsa.__doc__ = ("n-step Sarsa (Eq. 6): the target sums n rewards and bootstraps on "
                        "q(s_{t+n}, a_{t+n}); n = 1 is Sarsa, n → ∞ approaches Monte Carlo.\n"
                        "    n : int >= 1, the number of rewards in the target.\n"
                        + _CONTROL_DOC)
q_learning.__doc__ = ("Q-learning (Eq. 7) with an ε-greedy behaviour on the current q: the target "
                      "is r + γ max_a q(s', a), whatever the next action.\n" + _CONTROL_DOC)

__all__ = ["ValueEstimate", "expected_sarsa", "n_step_sarsa", "q_learning",
           "q_learning_offpolicy", "sarsa", "td0"]
