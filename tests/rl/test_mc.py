"""Monte Carlo learners against the exact answers of dynamic programming.

A learned greedy action a at s counts as optimal when q*(s, a) >= max_b q*(s, b) - 1e-6: q* can
have ties, which the learner may break differently than planning does.
"""

import numpy as np
import pytest

from deepnotes.rl import mc
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import evaluate_policy, value_iteration

LAYOUTS = {"forbidden-1": (-1.0, -1.0, 1.0, 0.0), "forbidden-10": (-1.0, -10.0, 1.0, 0.0)}
OPT_TOL = 1e-6


def _exact(rewards):
    env = textbook_5x5(rewards=rewards)
    return env, value_iteration(env, tol=1e-12)


def _assert_optimal(policy, q_star, tol=OPT_TOL):
    chosen = q_star[np.arange(len(policy)), policy]
    bad = np.flatnonzero(chosen < q_star.max(axis=1) - tol)
    assert bad.size == 0, f"suboptimal greedy actions at states {bad.tolist()}"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_mc_basic_is_policy_iteration(layout):
    env, exact = _exact(LAYOUTS[layout])
    sol = mc.mc_basic(env, episodes_per_pair=1, episode_length=100, iterations=12,
                      v_star=exact.v, q_star=exact.q)
    _assert_optimal(sol.policy, exact.q)
    # Deterministic moves: the only error is truncation, γ^100 · max|r| / (1 − γ) ≈ 2.7e-4 (the
    # forbidden -10 reward does not recur along an optimal path, whose rewards are in [-1, 1]).
    bound = env.gamma ** 100 * 1.0 / (1 - env.gamma)
    np.testing.assert_allclose(sol.v, exact.v, atol=bound + 1e-12)
    assert sol.history["policy_changes"][-1] == 0


def test_mc_basic_short_episodes_only_see_nearby_rewards():
    # With L = 1 the estimate is the immediate reward: only cells next to the target (or the
    # target itself) find positive values, the rest are at most 0.
    env, exact = _exact(LAYOUTS["forbidden-1"])
    sol = mc.mc_basic(env, episode_length=1, iterations=3)
    np.testing.assert_allclose(sol.q, env.R)


@pytest.mark.parametrize("first_visit", [True, False])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_exploring_starts_reaches_the_optimal_policy_and_values(layout, first_visit):
    env, exact = _exact(LAYOUTS[layout])
    sol = mc.mc_exploring_starts(env, 10_000, 30, first_visit, seed=2, alpha=0.1,
                                 v_star=exact.v, q_star=exact.q)
    _assert_optimal(sol.policy, exact.q)
    # Returns are cut after 30 + tail(=66) steps: bias <= γ^66 · 10 ≈ 0.01 on the early visits;
    # with a greedy deterministic policy the returns are otherwise exact (observed error < 2e-3).
    np.testing.assert_allclose(sol.v, exact.v, atol=0.011)
    assert sol.iterations == 10_000 and len(sol.history["v_error"]) == 10_000


def test_epsilon_greedy_converges_to_the_best_epsilon_greedy_policy():
    env = textbook_5x5()
    eps = 0.5
    best = mc.best_epsilon_greedy(env, eps)
    sol = mc.mc_epsilon_greedy(env, 50_000, 30, eps, seed=0)
    # Sample averages over every visit: noise plus the bias of early policies. Observed
    # |q - q_eps| <= 0.25 over five seeds; 0.3 is the bound tested ...
    err = np.abs(sol.q - best.q).max()
    assert err < 0.3
    # ... and it implies the greedy action is 2 * 0.3-optimal for q_eps.
    _assert_optimal(sol.policy, best.q, tol=2 * 0.3)


def test_epsilon_greedy_with_a_forgetting_step_finds_the_optimal_policy():
    # With ε = 0.1 the greedy policy of q_ε is optimal (next test), so MC ε-greedy should find
    # π*. Sample averages (step 1/n) do not within seconds: they keep the returns of early,
    # poor policies for ever (greedy actions optimal in 88-96 % of states after 1e6 episodes,
    # seeds 0-2). A step 1/n^0.7 still meets the Robbins-Monro conditions and forgets them:
    # every state's greedy action is optimal after 4e5 episodes for each of seeds 0-4.
    env, exact = _exact(LAYOUTS["forbidden-1"])
    sol = mc.mc_epsilon_greedy(env, 400_000, 30, 0.1, seed=0, step_power=0.7, q_star=exact.q)
    _assert_optimal(sol.policy, exact.q)
    best = mc.best_epsilon_greedy(env, 0.1)
    # The values estimated are those of the ε-greedy policy, not q*. Rarely tried actions are
    # the noisiest: max |q - q_ε| was 0.17-0.23 over seeds 0-4 (mean 0.04-0.05); 0.3 is tested.
    assert np.abs(sol.q - best.q).max() < 0.3
    with pytest.raises(ValueError, match="step_power"):
        mc.mc_epsilon_greedy(env, 5, step_power=0.5)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_small_epsilon_keeps_the_optimal_greedy_core_but_large_epsilon_does_not(layout):
    env, exact = _exact(LAYOUTS[layout])
    _assert_optimal(mc.best_epsilon_greedy(env, 0.1).policy, exact.q)
    # ε = 0.5 makes cells next to forbidden ones costly: the best ε-greedy policy walks around
    # them (the textbook's observation that ε-greedy optimality is not optimality).
    core = mc.best_epsilon_greedy(env, 0.5).policy
    chosen = exact.q[np.arange(env.n_states), core]
    assert (chosen < exact.q.max(axis=1) - OPT_TOL).any()


@pytest.mark.parametrize("first_visit", [True, False])
def test_mc_evaluation_matches_the_linear_solve(first_visit):
    env = textbook_5x5(slip=0.1)
    pi = np.random.default_rng(1).dirichlet(np.ones(5), size=env.n_states)
    exact = evaluate_policy(env, pi)
    est = mc.mc_evaluate(env, pi, 4000, 30, seed=0, first_visit=first_visit, v_true=exact)
    # Each state gets >= ~4000 returns with std ~ 2-3: standard error ~0.05; 0.2 is 4 sigma
    # plus the truncation bias (<= 0.01).
    assert np.abs(est.v - exact).max() < 0.2


def test_determinism_and_seed_dependence():
    env = textbook_5x5()
    runs = [mc.mc_epsilon_greedy(env, 200, 20, 0.3, seed).q for seed in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_default_tail_bounds_the_truncation_bias():
    assert 0.9 ** mc.default_tail(0.9) <= 1e-3 < 0.9 ** (mc.default_tail(0.9) - 1)
    assert mc.default_tail(0.0) == 0


@pytest.mark.parametrize("call, match", [
    (lambda env: mc.mc_basic(env, episodes_per_pair=0), "episodes_per_pair must be >= 1"),
    (lambda env: mc.mc_basic(env, iterations=0), "iterations must be >= 1"),
    (lambda env: mc.mc_basic(env, policy0=np.full(25, 9)), "policy0"),
    (lambda env: mc.mc_exploring_starts(env, 0), "episodes must be >= 1"),
    (lambda env: mc.mc_exploring_starts(env, 5, 0), "episode_length must be >= 1"),
    (lambda env: mc.mc_exploring_starts(env, 5, alpha=2.0), "alpha must be in"),
    (lambda env: mc.mc_epsilon_greedy(env, 5, epsilon=1.5), "epsilon must be in"),
    (lambda env: mc.mc_epsilon_greedy(env, 5, tail=-1), "tail must be >= 0"),
    (lambda env: mc.mc_evaluate(env, np.zeros((25, 4)), 5), "shape"),
    (lambda env: mc.mc_evaluate(env, np.zeros(25, dtype=int), 5, v_true=np.zeros(2)), "v_star"),
])
def test_bad_parameters_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(textbook_5x5())
