"""Planning on the grid world against hand-computed and published exact answers."""

import numpy as np
import pytest

from deepnotes.rl import planning
from deepnotes.rl.envs import GridWorld, textbook_5x5
from deepnotes.rl.planning import (
    evaluate_policy,
    evaluate_policy_iterative,
    greedy_policy,
    policy_iteration,
    truncated_policy_iteration,
    value_iteration,
)

RIGHT, STAY = 1, 4

# Optimal state values of the 5x5 layout, as printed (rounded to 0.1) in Zhao, "Mathematical
# Foundations of RL", Ch. 3: r_boundary = -1, r_target = 1, gamma = 0.9, two forbidden rewards.
BOOK_V = {
    -1.0: [[5.8, 5.6, 6.2, 6.5, 5.8], [6.5, 7.2, 8.0, 7.2, 6.5], [7.2, 8.0, 10.0, 8.0, 7.2],
           [8.0, 10.0, 10.0, 10.0, 8.0], [7.2, 9.0, 10.0, 9.0, 8.1]],
    -10.0: [[3.5, 3.9, 4.3, 4.8, 5.3], [3.1, 3.5, 4.8, 5.3, 5.9], [2.8, 2.5, 10.0, 5.9, 6.6],
            [2.5, 10.0, 10.0, 10.0, 7.3], [2.3, 9.0, 10.0, 9.0, 8.1]],
}


def corridor():
    return GridWorld(1, 3, target=(0, 2), rewards=(-1, -1, 1, 0), gamma=0.9)


def test_corridor_by_hand():
    # At the target, staying earns 1 forever: 1 / (1 - 0.9) = 10. The middle cell steps right
    # (reward 1, then 10 discounted: 1 + 9 = 10); the left cell reaches it one step later: 0.9 * 10.
    sol = value_iteration(corridor())
    np.testing.assert_allclose(sol.v, [9.0, 10.0, 10.0], atol=1e-8)
    assert sol.policy.tolist() == [RIGHT, RIGHT, STAY]


@pytest.mark.parametrize("r_forbidden", sorted(BOOK_V))
def test_textbook_values_match_the_book(r_forbidden):
    env = textbook_5x5(rewards=(-1.0, r_forbidden, 1.0, 0.0))
    sol = value_iteration(env)
    # The book prints one decimal: agreement within half a unit of the last digit.
    np.testing.assert_allclose(sol.v.reshape(5, 5), BOOK_V[r_forbidden], atol=0.05 + 1e-9)


@pytest.mark.parametrize("r_forbidden", [-1.0, -10.0])
def test_all_planners_agree(r_forbidden):
    env = textbook_5x5(rewards=(-1.0, r_forbidden, 1.0, 0.0))
    vi = value_iteration(env, tol=1e-12)
    for other in (policy_iteration(env), truncated_policy_iteration(env, 5, tol=1e-12)):
        # value iteration stops within tol * gamma / (1 - gamma) of v*; 1e-12 * 9 << 1e-9
        np.testing.assert_allclose(other.v, vi.v, atol=1e-9)
        assert np.array_equal(other.policy, vi.policy)
    # v* is the value of the greedy policy: the Bellman optimality fixed point
    np.testing.assert_allclose(evaluate_policy(env, vi.policy), vi.v, atol=1e-9)


def test_closed_form_and_iterative_evaluation_agree_for_a_stochastic_policy():
    env = textbook_5x5(slip=0.2)
    rng = np.random.default_rng(0)
    pi = rng.dirichlet(np.ones(5), size=env.n_states)
    exact = evaluate_policy(env, pi)
    iterative, sweeps = evaluate_policy_iterative(env, pi, tol=1e-12)
    np.testing.assert_allclose(iterative, exact, atol=1e-10)
    assert sweeps > 10
    # Bellman equation (Eq. 1) holds for the exact solution
    P_pi = np.einsum("sa,sat->st", pi, env.P)
    np.testing.assert_allclose(exact, (pi * env.R).sum(1) + env.gamma * P_pi @ exact, atol=1e-10)


def test_value_iteration_contracts_at_rate_gamma():
    sol = value_iteration(textbook_5x5(), tol=1e-12)
    deltas = np.array(sol.history["delta"])
    # |v| <= 10, so each sweep's rounding error is ~1e-15; allow 1e-13 of slack per comparison
    assert np.all(deltas[1:] <= 0.9 * deltas[:-1] + 1e-13)


def test_greedy_ties_break_to_lowest_action():
    q = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0 + 1e-12]])
    assert greedy_policy(q).tolist() == [0, 1]


def test_bad_policy_and_model_raise():
    env = corridor()
    with pytest.raises(ValueError, match="shape"):
        evaluate_policy(env, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="actions must be"):
        evaluate_policy(env, np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="summing to 1"):
        evaluate_policy(env, np.full((3, 5), 0.5))
    with pytest.raises(ValueError, match="eval_sweeps"):
        truncated_policy_iteration(env, 0)


def test_suboptimal_states_counts_only_non_optimal_greedy_actions():
    q = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert planning.suboptimal_states(q, np.array([1, 2, 0])).tolist() == [1]
    # probabilities: argmax taken; a tie between optimal actions is optimal
    probs = np.array([[0.5, 0.5, 0.0], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    assert planning.suboptimal_states(q, probs).tolist() == [2]
    with pytest.raises(ValueError, match="one action per state"):
        planning.suboptimal_states(q, np.array([0, 1]))
