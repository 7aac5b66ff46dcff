"""TD learners against the exact answers of dynamic programming (deepnotes.rl.planning).

Optimality of a learned policy is checked action by action: the learned greedy action a at s
must satisfy q*(s, a) >= max_b q*(s, b) - 1e-6, because several actions can be optimal (ties in
q*) and the learner may break them differently than planning does.
"""

import numpy as np
import pytest

from deepnotes.rl import td
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import action_values, evaluate_policy, value_iteration

LAYOUTS = {"forbidden-1": (-1.0, -1.0, 1.0, 0.0), "forbidden-10": (-1.0, -10.0, 1.0, 0.0)}
OPT_TOL = 1e-6  # value iteration at tol 1e-12 is exact far below this; real q* gaps are >= 0.1


def _exact(rewards):
    env = textbook_5x5(rewards=rewards)
    return env, value_iteration(env, tol=1e-12)


def _assert_optimal(policy, q_star):
    chosen = q_star[np.arange(len(policy)), policy]
    bad = np.flatnonzero(chosen < q_star.max(axis=1) - OPT_TOL)
    assert bad.size == 0, f"suboptimal greedy actions at states {bad.tolist()}"


# Exploring starts keep every (s, a) updated while ε decays to 0 over the first half, so each
# on-policy learner's fixed point is q* (not q of an ε-greedy policy). 20,000 episodes of 20
# steps (4e5 env steps) run in well under a second.
CONTROL = {
    "sarsa": lambda env, **kw: td.sarsa(env, 20_000, 0.3, 0.2, 1, **kw),
    "expected_sarsa": lambda env, **kw: td.expected_sarsa(env, 20_000, 0.3, 0.2, 1, **kw),
    "n_step_sarsa": lambda env, **kw: td.n_step_sarsa(env, 20_000, 0.3, 0.2, 1, n=3, **kw),
    "q_learning": lambda env, **kw: td.q_learning(env, 20_000, 0.3, 0.2, 1, **kw),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(CONTROL))
def test_control_reaches_the_optimal_policy_and_values(name, layout):
    env, exact = _exact(LAYOUTS[layout])
    sol = CONTROL[name](env, episode_length=20, epsilon_final=0.0, decay_fraction=0.5,
                        exploring_starts=True, v_star=exact.v, q_star=exact.q)
    _assert_optimal(sol.policy, exact.q)
    # Deterministic moves and ε = 0 in the second half: every target is noise-free and the
    # iteration contracts at rate 1 - α(1 - γ) per visit; 1e-3 of |v*| <= 10 is far from reached
    # limits (observed < 1e-6) yet fails on any wrong fixed point (the smallest q* gap is 0.37).
    np.testing.assert_allclose(sol.v, exact.v, atol=1e-2)
    assert sol.history["v_error"][-1] == pytest.approx(np.abs(sol.v - exact.v).max())
    assert sol.history["optimal_fraction"][-1] == 1.0
    assert sol.iterations == 20_000 and len(sol.history["return"]) == 20_000


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_off_policy_q_learning_from_uniform_behaviour_recovers_q_star(layout):
    env, exact = _exact(LAYOUTS[layout])
    uniform = np.full((env.n_states, env.n_actions), 1 / env.n_actions)
    sol = td.q_learning_offpolicy(env, uniform, 3000, alpha=0.5, seed=3, episode_length=50)
    # Noise-free targets (deterministic moves, max over q): q converges geometrically to q*.
    np.testing.assert_allclose(sol.q, exact.q, atol=1e-6)
    _assert_optimal(sol.policy, exact.q)


def test_on_policy_sarsa_with_constant_epsilon_learns_the_epsilon_greedy_values():
    # Expected Sarsa with ε = 1 evaluates the uniform policy: its target is noise-free, so q
    # converges to q_uniform = R + γ P v_uniform.
    env = textbook_5x5()
    uniform = np.full((env.n_states, env.n_actions), 1 / env.n_actions)
    q_uniform = action_values(env, evaluate_policy(env, uniform))
    sol = td.expected_sarsa(env, 5000, 0.05, 1.0, 0, alpha_final=0.002)
    np.testing.assert_allclose(sol.q, q_uniform, atol=1e-3)
    # Sarsa and n-step Sarsa sample the next action: their error is noise ~ sqrt(α_final) that
    # 0.15 covers (observed 0.06 and 0.08 on this seed).
    for fn in (td.sarsa, lambda *a, **k: td.n_step_sarsa(*a, n=3, **k)):
        sol = fn(env, 5000, 0.05, 1.0, 0, alpha_final=0.002)
        assert np.abs(sol.q - q_uniform).max() < 0.15


def test_td0_evaluates_a_stochastic_policy():
    env = textbook_5x5(slip=0.1)
    rng = np.random.default_rng(0)
    pi = rng.dirichlet(np.ones(5), size=env.n_states)
    exact = evaluate_policy(env, pi)
    est = td.td0(env, pi, 4000, alpha=0.05, episode_length=100, seed=0, alpha_final=0.002,
                 v_true=exact)
    # Residual noise ~ sqrt(α_final · Var(target)) ≈ 0.05 with |v| ≈ 5; 0.2 is 4 sigma.
    assert np.abs(est.v - exact).max() < 0.2
    assert est.history["v_error"][-1] < est.history["v_error"][0]


def _reference_q_learning(env, episodes, alpha, epsilon, seed, episode_length):
    """Plain-Python Q-learning with the kernels' draw order (see deepnotes.rl._kernels)."""
    rs = np.random.RandomState(seed)
    S, A = env.next_state_table.shape
    q = np.zeros((S, A))

    def act(s):
        u = rs.random_sample()
        return min(int(u / epsilon * A), A - 1) if u < epsilon else int(np.argmax(q[s]))

    for _ in range(episodes):
        s = min(int(rs.random_sample() * S), S - 1)
        a = act(s)
        for _ in range(episode_length):
            u = rs.random_sample()
            executed = min(int(u / env.slip * A), A - 1) if u < env.slip else a
            s2, r = env.next_state_table[s, executed], env.reward_table[s, executed]
            q[s, a] += alpha * (r + env.gamma * q[s2].max() - q[s, a])
            s, a = s2, act(s2)
    return q


def test_kernel_matches_a_plain_python_reference_bit_for_bit():
    env = textbook_5x5(slip=0.2)
    sol = td.q_learning(env, 30, 0.1, 0.3, 7, episode_length=40)
    np.testing.assert_array_equal(sol.q, _reference_q_learning(env, 30, 0.1, 0.3, 7, 40))


def test_n_step_sarsa_with_n_1_is_sarsa():
    env = textbook_5x5(slip=0.1)
    a = td.sarsa(env, 200, 0.2, 0.3, 5, episode_length=30)
    b = td.n_step_sarsa(env, 200, 0.2, 0.3, 5, n=1, episode_length=30)
    np.testing.assert_array_equal(a.q, b.q)


def test_determinism_and_seed_dependence():
    env = textbook_5x5(slip=0.1)
    runs = [td.sarsa(env, 100, 0.1, 0.2, seed, episode_length=30).q for seed in (4, 4, 5)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_schedules_decay_as_documented():
    from deepnotes.rl._kernels import schedule

    eps = schedule(0.5, 0.0, 5, "epsilon", open_low=False)
    np.testing.assert_allclose(eps, np.linspace(0.5, 0.0, 5))
    eps = schedule(0.4, 0.0, 6, "epsilon", open_low=False, decay_fraction=0.5)
    np.testing.assert_allclose(eps, [0.4, 0.2, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(schedule(0.3, None, 3, "alpha", open_low=True), [0.3] * 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 0.0}, "alpha must be in"), ({"alpha": 1.5}, "alpha must be in"),
    ({"alpha_final": 0.0}, "alpha_final must be in"), ({"epsilon": -0.1}, "epsilon must be in"),
    ({"epsilon": 1.1}, "epsilon must be in"), ({"episodes": 0}, "episodes must be >= 1"),
    ({"episode_length": 0}, "episode_length must be >= 1"), ({"n": 0}, "n must be >= 1"),
    ({"decay_fraction": 0.0}, "decay_fraction"), ({"q0": np.zeros(3)}, "q0 must have shape"),
    ({"v_star": np.zeros(3)}, "v_star must have shape"),
])
def test_bad_parameters_raise(kwargs, match):
    args = {"episodes": 10, "alpha": 0.1, "epsilon": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        td.n_step_sarsa(textbook_5x5(), **args)


def test_bad_policies_raise():
    env = textbook_5x5()
    with pytest.raises(ValueError, match="shape"):
        td.td0(env, np.zeros(3, dtype=int), 10)
    with pytest.raises(ValueError, match="summing to 1"):
        td.q_learning_offpolicy(env, np.full((25, 5), 0.5), 10)
    with pytest.raises(TypeError, match="seed"):
        td.q_learning(env, 10, seed=1.5)
