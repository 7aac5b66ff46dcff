"""Policy gradient against exact objectives and exact gradients of small grid worlds."""

import numpy as np
import pytest
import torch

from deepnotes.rl import policy_gradient as pg
from deepnotes.rl.envs import GridWorld, textbook_5x5
from deepnotes.rl.planning import evaluate_policy, value_iteration

torch.set_num_threads(1)
# A 2x2 world: truncation after 100 steps changes v̄ by at most 0.8^100 / 0.2 < 1e-9, far below
# the Monte Carlo tolerance, so the truncated estimator targets ∇v̄ itself.
TINY = GridWorld(2, 2, forbidden=[(0, 1)], target=(1, 1), gamma=0.8)
THETA = np.random.default_rng(0).normal(size=(4, 5))


def test_exact_objective_and_gradient_match_planning_and_finite_differences():
    phi = np.eye(4)
    pi = pg.softmax_policy(phi, THETA)
    assert pg.average_value(TINY, phi, THETA) == pytest.approx(evaluate_policy(TINY, pi).mean())
    grad = pg.exact_gradient(TINY, phi, THETA)
    eps = 1e-6
    for i, a in [(0, 0), (1, 2), (3, 4)]:
        e = np.zeros_like(THETA)
        e[i, a] = eps
        fd = (pg.average_value(TINY, phi, THETA + e) - pg.average_value(TINY, phi, THETA - e))
        assert grad[i, a] == pytest.approx(fd / (2 * eps), abs=1e-7)  # central-difference error
    # average reward: finite differences of the exact r̄ too
    g_r = pg.exact_gradient(TINY, phi, THETA, objective="average_reward")
    e = np.zeros_like(THETA)
    e[2, 1] = eps
    fd = pg.average_reward(TINY, phi, THETA + e) - pg.average_reward(TINY, phi, THETA - e)
    assert g_r[2, 1] == pytest.approx(fd / (2 * eps), abs=1e-7)


@pytest.mark.parametrize("features", ["tabular", "linear"])
def test_reinforce_estimator_is_unbiased(features):
    phi = np.eye(4) if features == "tabular" else np.c_[np.ones(4), [0, 1, 0, 1], [0, 0, 1, 1]]
    theta = THETA[:phi.shape[1]]
    samples = pg.reinforce_gradients(TINY, phi, theta, 20_000, 100, seed=1)
    exact = pg.exact_gradient(TINY, phi, theta)
    sem = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    # 4.5 standard errors per component: false-alarm probability < 1e-4 for the 20 components.
    assert np.all(np.abs(samples.mean(axis=0) - exact) <= 4.5 * sem + 1e-12)
    assert sem.max() < 0.05 * np.abs(exact).max()  # the tolerance is tight against ∇ itself
    # Dropping the γᵗ weights (textbook practice) gives a biased estimator the test would reject.
    biased = pg.reinforce_gradients(TINY, phi, theta, 20_000, 100, seed=1, discounted=False)
    assert np.any(np.abs(biased.mean(axis=0) - exact) > 4.5 * sem)


def test_reinforce_reaches_near_optimal_average_value_on_the_textbook_grid():
    env = textbook_5x5()
    vbar_star = value_iteration(env, tol=1e-12).v.mean()
    res = pg.reinforce(env, np.eye(25), 2000, 1.0, 50, seed=0, batch=4, baseline_decay=0.9,
                       eval_every=500)
    # A softmax policy only approaches the deterministic optimum; observed gap 0.026 of
    # v̄* = 7.80 after 8,000 episodes. 0.1 is about 1 % of the gap of the uniform start
    # (v̄ = −3.52).
    assert vbar_star - res.history["v_bar"][-1] < 0.1
    assert res.history["v_bar"][-1] <= vbar_star + 1e-9  # no policy beats the optimum


def test_state_value_baseline_keeps_the_estimator_unbiased_and_lowers_its_variance():
    phi = np.eye(4)
    v_pi = evaluate_policy(TINY, pg.softmax_policy(phi, THETA))
    exact = pg.exact_gradient(TINY, phi, THETA)
    plain = pg.reinforce_gradients(TINY, phi, THETA, 20_000, 100, seed=2)
    based = pg.reinforce_gradients(TINY, phi, THETA, 20_000, 100, seed=2, baseline=v_pi)
    sem = based.std(axis=0, ddof=1) / np.sqrt(len(based))
    assert np.all(np.abs(based.mean(axis=0) - exact) <= 4.5 * sem + 1e-12)  # as above
    # Same seed, same episodes: the baseline alone changes the total variance (6.95 -> 5.67
    # observed); 0.9 leaves room for the sampling error of a variance from 20,000 draws (~2 %).
    assert based.var(axis=0).sum() < 0.9 * plain.var(axis=0).sum()


def test_average_reward_estimator_is_unbiased():
    phi = np.eye(4)
    pi = pg.softmax_policy(phi, THETA)
    P_pi = np.einsum("sa,sat->st", pi, TINY.P)
    slem = np.sort(np.abs(np.linalg.eigvals(P_pi)))[-2]
    # The differential return is cut after H = 60 steps; what it misses decays like slem^H.
    assert slem ** 60 < 1e-9
    samples = pg.average_reward_gradients(TINY, phi, THETA, 20_000, 10, 60, seed=1)
    exact = pg.exact_gradient(TINY, phi, THETA, objective="average_reward")
    sem = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    assert np.all(np.abs(samples.mean(axis=0) - exact) <= 4.5 * sem + 1e-12)
    assert sem.max() < 0.05 * np.abs(exact).max()
    # A wrong constant r̂ only adds a zero-mean term (Eq. 8): still unbiased.
    shifted = pg.average_reward_gradients(TINY, phi, THETA, 20_000, 10, 60, seed=3, r_hat=0.0)
    sem = shifted.std(axis=0, ddof=1) / np.sqrt(len(shifted))
    assert np.all(np.abs(shifted.mean(axis=0) - exact) <= 4.5 * sem + 1e-12)


def test_average_reward_learner_reaches_the_optimal_average_reward():
    env = textbook_5x5()
    # r̄* = 1: the target pays the largest reward and "stay" keeps the agent on it forever.
    res = pg.reinforce_average_reward(env, np.eye(25), 1000, 1.0, 50, 30, seed=0,
                                      eval_every=250)
    # Observed r̄ = 0.9991 after 1,000 updates; uniform policy: r̄ = −0.35.
    assert res.history["r_bar"][-1] > 0.99
    assert abs(res.history["r_hat"][-1] - res.history["r_bar"][-1]) < 0.02  # r̂ tracks r̄


def test_evaluation_points_do_not_change_the_run():
    # The moving-average baseline and the random stream carry over between evaluation chunks.
    env = textbook_5x5()
    kw = dict(alpha=1.0, episode_length=30, seed=4, batch=2, baseline_decay=0.9)
    a = pg.reinforce(env, np.eye(25), 60, **kw)
    b = pg.reinforce(env, np.eye(25), 60, eval_every=25, **kw)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.history["return"] == b.history["return"]
    assert len(b.history["v_bar"]) == 3  # after 25, 50 and 60 updates
    c = pg.reinforce_average_reward(env, np.eye(25), 40, 1.0, 20, 10, seed=4)
    d = pg.reinforce_average_reward(env, np.eye(25), 40, 1.0, 20, 10, seed=4, eval_every=15)
    np.testing.assert_array_equal(c.theta, d.theta)
    # the per-state baseline is carried over too
    kw = dict(alpha=1.0, episode_length=30, seed=4, batch=2, state_baseline=0.2, entropy=0.5)
    e = pg.reinforce(env, np.eye(25), 60, **kw)
    seen = []
    f = pg.reinforce(env, np.eye(25), 60, eval_every=25, callback=lambda k, th: seen.append(k),
                     **kw)
    np.testing.assert_array_equal(e.theta, f.theta)
    assert seen == [25, 50, 60]


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="theta"):
        pg.reinforce_gradients(TINY, np.eye(4), np.zeros((3, 5)), 10)
    with pytest.raises(ValueError, match="alpha"):
        pg.reinforce(TINY, np.eye(4), 10, alpha=0.0)
    with pytest.raises(ValueError, match="baseline_decay"):
        pg.reinforce(TINY, np.eye(4), 10, baseline_decay=0.0)
    with pytest.raises(ValueError, match="start"):
        pg.reinforce(TINY, np.eye(4), 10, start=np.ones(4))
    with pytest.raises(ValueError, match="baseline"):
        pg.reinforce_gradients(TINY, np.eye(4), THETA, 10, baseline=np.zeros(3))
    with pytest.raises(ValueError, match="beta"):
        pg.reinforce_average_reward(TINY, np.eye(4), 10, beta=0.0)
    with pytest.raises(ValueError, match="horizon"):
        pg.reinforce_average_reward(TINY, np.eye(4), 10, horizon=0)
    with pytest.raises(ValueError, match="r_hat"):
        pg.average_reward_gradients(TINY, np.eye(4), THETA, 10, r_hat=np.nan)
    with pytest.raises(ValueError, match="objective"):
        pg.exact_gradient(TINY, np.eye(4), THETA, objective="max")


def test_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    phi, theta = rng.normal(size=(4, 3)), rng.normal(size=(3, 5))

    def entropy(th, s):
        z = phi[s] @ th
        p = np.exp(z - z.max())
        p /= p.sum()
        return -(p * np.log(p)).sum()

    for s in range(4):
        g = np.zeros_like(theta)
        pg._add_entropy(phi, theta, s, 1.0, np.zeros(5), g)
        fd = np.zeros_like(theta)
        for idx in np.ndindex(theta.shape):
            e = np.zeros_like(theta)
            e[idx] = 1e-6
            fd[idx] = (entropy(theta + e, s) - entropy(theta - e, s)) / 2e-6
        # central differences with step 1e-6: truncation ~1e-12, rounding ~1e-10
        np.testing.assert_allclose(g, fd, atol=1e-8)


def test_entropy_bonus_is_off_by_default_and_validated():
    env = textbook_5x5()
    kw = dict(alpha=1.0, episode_length=20, seed=4, batch=2)
    plain = pg.reinforce(env, np.eye(25), 30, **kw)
    zero = pg.reinforce(env, np.eye(25), 30, entropy=0.0, **kw)
    bonus = pg.reinforce(env, np.eye(25), 30, entropy=1.0, **kw)
    np.testing.assert_array_equal(plain.theta, zero.theta)
    assert not np.array_equal(plain.theta, bonus.theta)
    with pytest.raises(ValueError, match="entropy"):
        pg.reinforce(env, np.eye(25), 10, entropy=-0.5)


def test_state_baseline_and_entropy_make_the_greedy_policy_optimal_everywhere():
    # Without them the tabular softmax turns deterministic on "down" at state 1 (q* 5.48 vs
    # 5.58 for "right") for seeds 0 and 3; with a per-state baseline (c = 0.2) and β = 1 decayed
    # to 0 every greedy action was q*-optimal for seeds 0-9 (v̄ gaps 0.016-0.019).
    env = textbook_5x5()
    exact = value_iteration(env, tol=1e-12)
    res = pg.reinforce(env, np.eye(25), 8000, 1.0, 50, seed=0, batch=4, eval_every=8000,
                       entropy=1.0, state_baseline=0.2)
    chosen = exact.q[np.arange(env.n_states), res.policy.argmax(axis=1)]
    assert np.all(chosen >= exact.q.max(axis=1) - 1e-6)
    assert 0.0 <= exact.v.mean() - res.history["v_bar"][-1] < 0.05


def test_state_baseline_is_validated_and_exclusive_with_the_moving_average():
    env = textbook_5x5()
    with pytest.raises(ValueError, match="state_baseline"):
        pg.reinforce(env, np.eye(25), 10, state_baseline=1.5)
    with pytest.raises(ValueError, match="not both"):
        pg.reinforce(env, np.eye(25), 10, baseline_decay=0.9, state_baseline=0.1)
    # the per-state baseline changes the run (it is actually subtracted)
    kw = dict(alpha=1.0, episode_length=20, seed=4, batch=2)
    assert not np.array_equal(pg.reinforce(env, np.eye(25), 30, **kw).theta,
                              pg.reinforce(env, np.eye(25), 30, state_baseline=0.2, **kw).theta)
