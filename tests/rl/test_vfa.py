"""Value-function approximation against exact linear algebra and exact q*.

TD-linear is checked against its projected fixed point (Eq. 4), solved exactly from the features
and the state weighting D under which the updates sample states; the linear control kernels are
checked bit for bit against the tabular learners of deepnotes.rl.td with one-hot features.
"""

import numpy as np
import pytest
import torch

from deepnotes.rl import td, vfa
from deepnotes.rl.envs import textbook_5x5
from deepnotes.rl.planning import evaluate_policy, value_iteration

torch.set_num_threads(1)
ENV = textbook_5x5()
S, A = ENV.n_states, ENV.n_actions
UNIFORM = np.full((S, A), 1 / A)
OPT_TOL = 1e-6  # as in test_td: real q* gaps are >= 0.1, value iteration is exact far below


def _assert_optimal(policy, q_star):
    chosen = q_star[np.arange(len(policy)), policy]
    bad = np.flatnonzero(chosen < q_star.max(axis=1) - OPT_TOL)
    assert bad.size == 0, f"suboptimal greedy actions at states {bad.tolist()}"


def test_feature_shapes_and_values():
    assert vfa.polynomial_features(ENV, 1).shape == (S, 3)
    assert vfa.polynomial_features(ENV, 3).shape == (S, 10)
    assert vfa.fourier_features(ENV, 2).shape == (S, 9)
    tiles = vfa.tile_features(ENV, 4, 2)
    assert tiles.shape == (S, 4 * 9)
    # one active tile per tiling
    np.testing.assert_array_equal(tiles.reshape(S, 4, 9).sum(axis=2), 1.0)
    xy = vfa.cell_coordinates(ENV)
    assert xy.min() == 0.0 and xy.max() == 1.0
    np.testing.assert_allclose(vfa.polynomial_features(ENV, 1), np.c_[np.ones(S), 2 * xy[:, 1] - 1,
                                                                     2 * xy[:, 0] - 1])
    with pytest.raises(ValueError, match="feature kind"):
        vfa.make_features(ENV, "wavelet", 2)
    with pytest.raises(ValueError, match="n_tilings"):
        vfa.tile_features(ENV, 0, 2)


def test_distributions_are_exact():
    d = vfa.stationary_distribution(ENV, UNIFORM)
    P_pi = np.einsum("sa,sat->st", UNIFORM, ENV.P)
    np.testing.assert_allclose(d @ P_pi, d, atol=1e-12)
    # L = 1: only the start distribution is visited.
    np.testing.assert_allclose(vfa.visitation_distribution(ENV, UNIFORM, 1), np.full(S, 1 / S))
    # A deterministic policy walking to the target concentrates visitation there.
    pi_star = value_iteration(ENV, tol=1e-12).policy
    d_long = vfa.visitation_distribution(ENV, pi_star, 200)
    assert d_long[ENV.target_state] > 0.9


def test_one_hot_td_linear_is_td0_bit_for_bit():
    phi = vfa.one_hot_features(ENV)
    _, est = vfa.td_linear(ENV, UNIFORM, phi, 300, 0.1, 50, 3)
    ref = td.td0(ENV, UNIFORM, 300, 0.1, 50, 3)
    np.testing.assert_array_equal(est.v, ref.v)


def test_one_hot_td_linear_equals_v_pi_for_a_deterministic_policy():
    # Deterministic policy and moves: every TD target is noise-free given w, so with one-hot
    # features (full-support D, tabular) the iteration contracts geometrically to v_π itself.
    pi_star = value_iteration(ENV, tol=1e-12).policy
    v_pi = evaluate_policy(ENV, pi_star)
    _, est = vfa.td_linear(ENV, pi_star, vfa.one_hot_features(ENV), 3000, 0.5, 20, 0)
    np.testing.assert_allclose(est.v, v_pi, atol=1e-6)


# distinct: the least-squares fit of v_π differs from the TD fixed point by more than the test's
# tolerance (for cubic polynomials the two nearly coincide, ~0.03 apart).
@pytest.mark.parametrize("kind,order,distinct", [("polynomial", 1, True), ("polynomial", 3, False),
                                                 ("fourier", 2, True), ("tile", 2, True)])
def test_td_linear_converges_to_the_projected_fixed_point(kind, order, distinct):
    phi = vfa.make_features(ENV, kind, order)
    n2 = (phi ** 2).sum(axis=1).max()
    L = 100
    w_star = vfa.td_fixed_point(ENV, UNIFORM, phi, vfa.visitation_distribution(ENV, UNIFORM, L))
    v_fp = phi @ w_star
    # The fixed point is not the D-weighted least-squares fit of v_π (what Monte Carlo would give):
    # that fit is the alternative the test must be able to reject.
    v_pi = evaluate_policy(ENV, UNIFORM)
    v_ls = phi @ np.linalg.lstsq(phi, v_pi, rcond=None)[0]  # D is uniform for this policy
    runs = np.array([vfa.td_linear(ENV, UNIFORM, phi, 20_000, 0.2 / n2, L, seed,
                                   alpha_final=0.0005 / n2)[1].v for seed in range(12)])
    mean = runs.mean(axis=0)
    sem = runs.std(axis=0, ddof=1) / np.sqrt(len(runs))
    # 4.5 standard errors per state: a false alarm has probability < 1e-4 over the 25 states if
    # the runs scatter around the fixed point; the floor 1e-3 covers states with ~zero spread.
    tol = 4.5 * sem + 1e-3
    assert np.all(np.abs(mean - v_fp) <= tol), np.abs(mean - v_fp).max()
    # ...and the same tolerance is tight enough to tell it from the least-squares fit.
    assert np.any(np.abs(v_ls - v_fp) > tol) == distinct
    assert tol.max() < 0.1


def test_td_fixed_point_of_complete_features_is_v_pi():
    # Fourier order 4 on a 5x5 grid spans all functions of the 25 cells.
    phi = vfa.fourier_features(ENV, 4)
    w = vfa.td_fixed_point(ENV, UNIFORM, phi, np.full(S, 1 / S))
    np.testing.assert_allclose(phi @ w, evaluate_policy(ENV, UNIFORM), atol=1e-9)


@pytest.mark.parametrize("tabular,linear", [(td.sarsa, vfa.linear_sarsa),
                                            (td.q_learning, vfa.linear_q_learning)])
def test_one_hot_linear_control_is_tabular_bit_for_bit(tabular, linear):
    kw = dict(episode_length=20, epsilon_final=0.0, decay_fraction=0.5, exploring_starts=True)
    a = tabular(ENV, 2000, 0.3, 0.2, 1, **kw)
    b = linear(ENV, vfa.one_hot_features(ENV), 2000, 0.3, 0.2, 1, **kw)
    np.testing.assert_array_equal(a.q, b.q)
    assert b.weights.shape == (S, A)


def test_off_policy_linear_q_learning_with_one_hot_features_recovers_q_star():
    exact = value_iteration(ENV, tol=1e-12)
    sol = vfa.linear_q_learning(ENV, vfa.one_hot_features(ENV), 3000, 0.5, 0.0, 3,
                                behaviour_policy=UNIFORM, episode_length=50,
                                v_star=exact.v, q_star=exact.q)
    ref = td.q_learning_offpolicy(ENV, UNIFORM, 3000, 0.5, 3, episode_length=50)
    np.testing.assert_array_equal(sol.q, ref.q)
    np.testing.assert_allclose(sol.q, exact.q, atol=1e-6)
    assert sol.history["optimal_fraction"][-1] == 1.0


def test_dqn_greedy_policy_is_optimal_after_4000_updates():
    exact = value_iteration(ENV, tol=1e-12)
    sol = vfa.dqn(ENV, seed=0, v_star=exact.v, q_star=exact.q)
    _assert_optimal(sol.policy, exact.q)
    # The network fits q* from 2,000 random transitions: observed ‖q − q*‖∞ ≈ 0.12 against
    # values up to 10; 0.5 is well below the smallest q* gap between actions (0.37).
    assert np.abs(sol.q - exact.q).max() < 0.5
    assert sol.history["iteration"][-1] == 4000


def test_bad_parameters_raise():
    phi = vfa.one_hot_features(ENV)
    with pytest.raises(ValueError, match="alpha"):
        vfa.td_linear(ENV, UNIFORM, phi, 10, 0.0)
    with pytest.raises(ValueError, match="features"):
        vfa.td_linear(ENV, UNIFORM, phi[:3], 10)
    with pytest.raises(ValueError, match="epsilon"):
        vfa.linear_sarsa(ENV, phi, 10, 0.1, 1.5)
    with pytest.raises(ValueError, match="episodes"):
        vfa.linear_q_learning(ENV, phi, 0)
    with pytest.raises(ValueError, match="lr"):
        vfa.dqn(ENV, 10, lr=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        vfa.dqn(ENV, 10, batch_size=0)
