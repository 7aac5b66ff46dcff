"""Dynamic programming on a known tabular model: the exact answers every learner is judged by.

All functions take a model with ``P[s, a, s']`` (shape (S, A, S)), ``R[s, a]`` (expected immediate
reward, shape (S, A)) and ``gamma`` — a :class:`deepnotes.rl.envs.GridWorld` or anything with those
attributes. Equation numbers refer to the ``value-function-methods`` post's planning section:

- Bellman equation for a policy (Eq. 1):   v_π = r_π + γ P_π v_π, solved exactly as
  v_π = (I − γ P_π)^{-1} r_π, or iteratively v ← r_π + γ P_π v;
- action values (Eq. 2):                   q(s, a) = R(s, a) + γ Σ_s' P(s'|s, a) v(s');
- Bellman optimality (Eq. 3):              v* = max_a q*(·, a), solved by value iteration,
  policy iteration and truncated policy iteration.

Policies are either deterministic (int array of actions, shape (S,)) or stochastic
(row-stochastic matrix, shape (S, A)). Greedy policies break ties towards the lowest action index
among actions whose value is within ``tie_tol`` of the best, so that results are reproducible
across algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Solution:
    """Values and a greedy policy, as returned by every planning and control algorithm.

    Attributes
    ----------
    v : ndarray, shape (S,)      state values
    q : ndarray, shape (S, A)    action values
    policy : ndarray, shape (S,) greedy action per state (ints)
    iterations : int             sweeps (planning) or episodes (learning) used
    history : dict[str, list]    per-iteration diagnostics (e.g. ``"delta"``, ``"v_error"``)
    """

    v: np.ndarray
    q: np.ndarray
    policy: np.ndarray
    iterations: int = 0
    history: dict[str, list] = field(default_factory=dict)


def _check_model(model) -> tuple[np.ndarray, np.ndarray, float]:
    P, R, gamma = np.asarray(model.P, float), np.asarray(model.R, float), float(model.gamma)
    if P.ndim != 3 or P.shape[0] != P.shape[2] or R.shape != P.shape[:2]:
        raise ValueError(f"model must have P of shape (S, A, S) and R of shape (S, A), "
                         f"got {P.shape} and {R.shape}")
    if not np.allclose(P.sum(axis=2), 1.0):
        raise ValueError("each P[s, a, :] must sum to 1")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    return P, R, gamma


def policy_matrix(policy, n_states: int, n_actions: int) -> np.ndarray:
    """A policy as a row-stochastic matrix π[s, a], shape (S, A).

    ``policy`` is either int actions of shape (S,) or probabilities of shape (S, A).
    """
    policy = np.asarray(policy)
    if policy.shape == (n_states,) and np.issubdtype(policy.dtype, np.integer):
        if policy.min() < 0 or policy.max() >= n_actions:
            raise ValueError(f"policy actions must be in 0..{n_actions - 1}")
        pi = np.zeros((n_states, n_actions))
        pi[np.arange(n_states), policy] = 1.0
        return pi
    if policy.shape == (n_states, n_actions):
        if (policy < 0).any() or not np.allclose(policy.sum(axis=1), 1.0):
            raise ValueError("a stochastic policy's rows must be probabilities summing to 1")
        return policy.astype(float)
    raise ValueError(f"policy must have shape ({n_states},) of ints or ({n_states}, {n_actions}), "
                     f"got {policy.shape} of {policy.dtype}")


def action_values(model, v: np.ndarray) -> np.ndarray:
    """q(s, a) = R(s, a) + γ Σ_s' P(s'|s, a) v(s')  (Eq. 2). Returns shape (S, A)."""
    P, R, gamma = _check_model(model)
    return R + gamma * P @ np.asarray(v, float)


def greedy_policy(q: np.ndarray, tie_tol: float = 1e-9) -> np.ndarray:
    """argmax_a q(s, a), ties (within ``tie_tol``) broken towards the lowest action index."""
    q = np.asarray(q, float)
    best = q.max(axis=1, keepdims=True)
    return np.argmax(q >= best - tie_tol, axis=1)


def suboptimal_states(q_star: np.ndarray, policy, tol: float = 1e-6) -> np.ndarray:
    """States whose greedy action under ``policy`` is not q*-optimal (within ``tol``).

    ``policy``: int actions (S,) or action probabilities (S, A) (its argmax is taken; a tie
    between optimal actions counts as optimal). Returns the sorted state indices, shape (k,)."""
    q_star = np.asarray(q_star, float)
    policy = np.asarray(policy)
    actions = policy.argmax(axis=1) if policy.ndim == 2 else policy.astype(int)
    if actions.shape != (q_star.shape[0],):
        raise ValueError(f"policy must give one action per state ({q_star.shape[0]}), "
                         f"got shape {policy.shape}")
    chosen = q_star[np.arange(q_star.shape[0]), actions]
    return np.flatnonzero(chosen < q_star.max(axis=1) - tol)


def evaluate_policy(model, policy) -> np.ndarray:
    """Exact v_π = (I − γ P_π)^{-1} r_π (Eq. 1), by a linear solve. Returns shape (S,)."""
    P, R, gamma = _check_model(model)
    pi = policy_matrix(policy, *R.shape)
    P_pi = np.einsum("sa,sat->st", pi, P)
    r_pi = (pi * R).sum(axis=1)
    return np.linalg.solve(np.eye(len(r_pi)) - gamma * P_pi, r_pi)


def evaluate_policy_iterative(model, policy, *, tol: float = 1e-10, max_iter: int = 100_000,
                              v0: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Iterative policy evaluation v ← r_π + γ P_π v until ‖Δv‖_∞ < tol.

    Returns ``(v, sweeps)``. Converges geometrically at rate γ (a contraction in ‖·‖_∞).
    """
    P, R, gamma = _check_model(model)
    pi = policy_matrix(policy, *R.shape)
    P_pi = np.einsum("sa,sat->st", pi, P)
    r_pi = (pi * R).sum(axis=1)
    v = np.zeros(len(r_pi)) if v0 is None else np.asarray(v0, float).copy()
    for sweep in range(1, max_iter + 1):
        v_new = r_pi + gamma * P_pi @ v
        delta = np.abs(v_new - v).max()
        v = v_new
        if delta < tol:
            return v, sweep
    raise RuntimeError(f"policy evaluation did not reach tol={tol} in {max_iter} sweeps")


def value_iteration(model, tol: float = 1e-10, *, max_iter: int = 100_000,
                    v0: np.ndarray | None = None) -> Solution:
    """Value iteration v ← max_a [R + γ P v] (Eq. 3) until ‖Δv‖_∞ < tol.

    ``history["delta"]`` records ‖v_{k+1} − v_k‖_∞ per sweep.
    """
    P, R, gamma = _check_model(model)
    v = np.zeros(R.shape[0]) if v0 is None else np.asarray(v0, float).copy()
    deltas = []
    for sweep in range(1, max_iter + 1):
        v_new = (R + gamma * P @ v).max(axis=1)
        deltas.append(float(np.abs(v_new - v).max()))
        v = v_new
        if deltas[-1] < tol:
            q = R + gamma * P @ v
            return Solution(v, q, greedy_policy(q), sweep, {"delta": deltas})
    raise RuntimeError(f"value iteration did not reach tol={tol} in {max_iter} sweeps")


def truncated_policy_iteration(model, eval_sweeps: int, tol: float = 1e-10, *,
                               max_iter: int = 100_000) -> Solution:
    """Truncated policy iteration: ``eval_sweeps`` evaluation sweeps per improvement.

    ``eval_sweeps=1`` is value iteration; ``eval_sweeps → ∞`` is policy iteration. Stops when an
    improvement step changes v by less than ``tol``.
    """
    if eval_sweeps < 1:
        raise ValueError(f"eval_sweeps must be >= 1, got {eval_sweeps}")
    P, R, gamma = _check_model(model)
    S = R.shape[0]
    v = np.zeros(S)
    deltas = []
    for it in range(1, max_iter + 1):
        policy = greedy_policy(R + gamma * P @ v)
        P_pi, r_pi = P[np.arange(S), policy], R[np.arange(S), policy]
        v_old = v
        for _ in range(eval_sweeps):
            v = r_pi + gamma * P_pi @ v
        deltas.append(float(np.abs(v - v_old).max()))
        if deltas[-1] < tol:
            q = R + gamma * P @ v
            return Solution(v, q, greedy_policy(q), it, {"delta": deltas})
    raise RuntimeError(f"truncated policy iteration did not reach tol={tol} in {max_iter} steps")


def policy_iteration(model, *, max_iter: int = 10_000, policy0=None) -> Solution:
    """Policy iteration: exact evaluation (Eq. 1) then greedy improvement, until stable.

    Terminates in finitely many steps (finitely many deterministic policies, each improvement
    strict until the fixed point). ``history["v"]`` holds v_{π_k} per iteration.
    """
    P, R, gamma = _check_model(model)
    S = R.shape[0]
    policy = np.zeros(S, dtype=np.int64) if policy0 is None else np.asarray(policy0, np.int64)
    values = []
    for it in range(1, max_iter + 1):
        v = evaluate_policy(model, policy)
        values.append(v)
        q = R + gamma * P @ v
        improved = greedy_policy(q)
        # Keep the current action when it is (within tolerance) as good as the greedy one:
        # this guarantees termination despite floating-point ties.
        keep = q[np.arange(S), policy] >= q[np.arange(S), improved] - 1e-9
        improved = np.where(keep, policy, improved)
        if np.array_equal(improved, policy):
            return Solution(v, q, greedy_policy(q), it, {"v": values})
        policy = improved
    raise RuntimeError(f"policy iteration did not converge in {max_iter} iterations")


__all__ = [
    "Solution", "action_values", "evaluate_policy", "evaluate_policy_iterative", "greedy_policy",
    "policy_iteration", "policy_matrix", "truncated_policy_iteration", "value_iteration",
]
