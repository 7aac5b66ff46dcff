"""Stochastic approximation against closed-form answers (deepnotes.rl.approx).

Statistical tolerances are stated as multiples of a standard error computed from the number of
replicates; the generators are seeded, so each test is deterministic, and the multiples (4-6)
make a false failure under a reseed astronomically unlikely (< 1e-4 each).
"""

import numpy as np
import pytest

from deepnotes.rl import approx as A


def test_incremental_mean_equals_cumulative_mean():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(2000, 3))
    expected = np.cumsum(x, axis=0) / np.arange(1, 2001)[:, None]
    # w_k is a convex combination of O(1) numbers: rounding grows like k * eps ~ 1e-13 at worst
    np.testing.assert_allclose(A.incremental_mean(x), expected, rtol=0, atol=1e-12)


def test_schedules_state_robbins_monro_conditions():
    assert A.harmonic(1.0).satisfies_robbins_monro
    assert A.power(1.0, 0.6).satisfies_robbins_monro and A.power(1.0, 1.0).satisfies_robbins_monro
    assert not A.power(1.0, 0.5).square_summable       # sum 1/k diverges
    assert not A.power(1.0, 2.0).sum_diverges          # sum 1/k^2 = pi^2/6
    assert not A.constant(0.1).satisfies_robbins_monro and A.constant(0.1).sum_diverges
    assert not A.geometric(0.5, 0.9).sum_diverges
    np.testing.assert_allclose(A.harmonic(2.0, 1.0)(np.arange(1, 4)), [1.0, 2 / 3, 0.5])
    np.testing.assert_allclose(A.geometric(0.5, 0.5).partial_sum(60), 1.0, rtol=1e-15)
    with pytest.raises(ValueError, match="k start at 1"):
        A.harmonic()(0)
    with pytest.raises(ValueError, match="0 < r < 1"):
        A.geometric(0.5, 1.0)


def _tanh_root(noise="normal", sigma=1.0):
    def g(w, rng):
        eta = (rng.standard_normal(w.shape) if noise == "normal"
               else rng.uniform(-1.0, 1.0, w.shape))
        return np.tanh(w - 1.0) + sigma * eta
    return g


def test_robbins_monro_harmonic_finds_root_at_sqrt_k_rate():
    R, K, sigma = 200, 5000, 1.0
    traj = A.robbins_monro(_tanh_root(sigma=sigma), np.full(R, 3.0), K, A.harmonic(),
                           np.random.default_rng(1), record=[K])
    err = traj.w[-1] - 1.0
    # Linearised at the root (g' = 1, a = 1): w_K - 1 ~ -(1/K) sum eta_k, so each replicate has
    # sd sigma/sqrt(K) and the replicate mean sd sigma/sqrt(K R) = 1e-3; 5 sd bound.
    assert abs(err.mean()) < 5 * sigma / np.sqrt(K * R)
    # RMS * sqrt(K) / sigma -> 1 (the O(1/sqrt k) rate); with R = 200 the sample RMS has relative
    # sd ~ 1/sqrt(2R) = 0.05, so +-0.25 is 5 sd.
    assert abs(np.sqrt(np.mean(err**2)) * np.sqrt(K) / sigma - 1.0) < 0.25


def test_summable_steps_stop_short_of_the_root():
    # |g~| <= |tanh| + |eta| <= 2 with uniform noise on [-1, 1], so |w_K - w_0| <= 2 sum alpha_k
    # (Eq. 6) holds surely; starting 5 away, every replicate stays at least 5 - 2 * pi^2/6 away.
    schedule, K, start = A.power(1.0, 2.0), 2000, 6.0
    traj = A.robbins_monro(_tanh_root(noise="uniform"), np.full(100, start), K, schedule,
                           np.random.default_rng(2), record=[K])
    bound = (start - 1.0) - 2.0 * schedule.partial_sum(K)
    assert bound > 1.7
    assert np.all(np.abs(traj.w[-1] - 1.0) >= bound)
    good = A.robbins_monro(_tanh_root(noise="uniform"), np.full(100, start), K, A.harmonic(),
                           np.random.default_rng(2), record=[K])
    # sum 1/k diverges, so the harmonic run is not confined: it crosses the gap the summable run
    # cannot. Saturated tanh makes it arrive only after ~e^5 steps, leaving an O(k0/K) transient on
    # top of the 1/sqrt(3K) = 0.013 noise, so we ask for an order of magnitude below the gap.
    assert np.sqrt(np.mean((good.w[-1] - 1.0) ** 2)) < bound / 10


def test_sgd_mean_estimation_converges_to_sample_mean():
    data = np.random.default_rng(3).uniform(-10, 10, size=(400, 2))
    obj = A.MeanEstimation(data)
    R, K = 300, 2000
    traj = A.sgd(obj, np.tile([50.0, 50.0], (R, 1)), K, A.harmonic(), np.random.default_rng(4),
                 record=[K])
    # With alpha_k = 1/k, w_K is the mean of K draws with replacement: unbiased, E||e||^2 = tr S/K.
    err = traj.w[-1] - obj.solution()
    var = np.trace(obj.noise_covariance()) / K
    se_mean = np.sqrt(var / 2 / R)               # per-coordinate sd of the replicate mean
    assert np.all(np.abs(err.mean(axis=0)) < 5 * se_mean)
    ratio = np.mean(np.sum(err**2, axis=1)) / var
    assert abs(ratio - 1.0) < 5 * np.sqrt(2 / (2 * R))  # chi-square, 2 dof per replicate


def test_full_batch_gd_reaches_lstsq():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 5))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.3 * rng.normal(size=200)
    obj = A.LeastSquares(X, y)
    lam = np.linalg.eigvalsh(obj.hessian())
    # constant step 1/L contracts by (1 - mu/L) per step; 300 steps gives (1 - mu/L)^300 < 1e-12
    assert (1 - lam[0] / lam[-1]) ** 300 < 1e-12
    traj = A.sgd(obj, np.zeros(5), 300, A.constant(1.0 / lam[-1]), rng, mode="full")
    np.testing.assert_allclose(traj.w[-1], obj.solution(), rtol=0, atol=1e-6)
    assert traj.samples[-1] == 300 * 200
    assert np.all(np.diff(traj.loss) <= 1e-15)  # full-batch GD with step 1/L is monotone


def test_minibatch_sgd_harmonic_near_lstsq_with_predicted_spread():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(500, 4))
    y = X @ np.array([2.0, -1.0, 0.5, 1.5]) + rng.normal(size=500)
    obj = A.LeastSquares(X, y)
    B, K, R, a, b = 8, 3000, 200, 1.5, 10.0
    traj = A.sgd(obj, np.zeros((R, 4)), K, A.harmonic(a, b), rng, mode="minibatch",
                 batch_size=B, record=[K])
    err = traj.w[-1] - obj.solution()
    sigma = A.asymptotic_covariance(obj.hessian(), obj.noise_covariance(), a, B)
    predicted = np.trace(sigma) / (K + b)  # alpha_k = a/(k+b): the clock is k + b
    ratio = np.mean(np.sum(err**2, axis=1)) / predicted
    # E||e||^2 -> tr(Sigma)/k: the sample mean over R replicates of a sum of 4 squared
    # approximately Gaussian coordinates has relative sd <= sqrt(2/R) = 0.1; 0.35 allows 3.5 sd
    # plus the O(1/k) transient.
    assert abs(ratio - 1.0) < 0.35


@pytest.mark.parametrize("a", [0.1, 0.5, 1.0])
def test_constant_step_noise_floor_matches_stationary_variance(a):
    data = np.random.default_rng(7).normal(2.0, 3.0, size=(5000, 1))
    obj = A.MeanEstimation(data)
    R, K = 20000, 300
    # (1 - a)^(2K) <= 0.9^600 ~ 1e-28: the start is forgotten, w_K is stationary
    traj = A.sgd(obj, np.full((R, 1), 10.0), K, A.constant(a), np.random.default_rng(8),
                 record=[K])
    s2 = float(obj.noise_covariance()[0, 0])
    v = A.constant_step_variance(a, s2)
    empirical = np.var(traj.w[-1, :, 0])
    # sample variance of R ~Gaussian draws: relative sd sqrt(2/R) = 0.01; 5 sd
    assert abs(empirical / v - 1.0) < 5 * np.sqrt(2 / R)


def test_numba_per_sample_sgd_matches_reference():
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    order = np.concatenate([rng.permutation(60) for _ in range(3)])
    alphas = A.power(0.1, 0.6)(np.arange(1, order.size + 1))
    w = np.zeros(3)
    for t, i in enumerate(order):  # the plain loop the compiled kernel must reproduce
        w = w - alphas[t] * (X[i] @ w - y[i]) * X[i]
    # same operations in a different summation order: rounding differences only
    np.testing.assert_allclose(A.least_squares_sgd_numba(X, y, np.zeros(3), order, alphas), w,
                               rtol=1e-12, atol=1e-14)


def test_shuffle_sampling_visits_every_sample_once_per_epoch():
    obj = A.MeanEstimation(np.arange(10.0)[:, None])
    # with alpha_k = 1/k, w_k is the mean of the visited samples; after one epoch all 10 were seen
    traj = A.sgd(obj, np.zeros((5, 1)), 10, A.harmonic(), np.random.default_rng(0),
                 sampling="shuffle", record=[10])
    np.testing.assert_allclose(traj.w[-1], 4.5, rtol=0, atol=1e-12)


def test_errors_name_the_problem():
    obj = A.LeastSquares(np.ones((5, 2)), np.ones(5))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        A.sgd(obj, np.zeros(2), 0, A.harmonic(), rng)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, n=5\]"):
        A.sgd(obj, np.zeros(2), 3, A.harmonic(), rng, mode="minibatch", batch_size=6)
    with pytest.raises(ValueError, match="mode must be one of"):
        A.sgd(obj, np.zeros(2), 3, A.harmonic(), rng, mode="adam")
    with pytest.raises(ValueError, match="needs batch_size"):
        A.sgd(obj, np.zeros(2), 3, A.harmonic(), rng, mode="minibatch")
    with pytest.raises(ValueError, match="w0 must have shape"):
        A.sgd(obj, np.zeros(3), 3, A.harmonic(), rng)
    with pytest.raises(ValueError, match="y must have shape"):
        A.LeastSquares(np.ones((5, 2)), np.ones(4))
    with pytest.raises(ValueError, match="g_noisy returned shape"):
        A.robbins_monro(lambda w, r: np.zeros(3), np.zeros(2), 3, A.harmonic(), rng)
    with pytest.raises(TypeError, match="schedule must be a Schedule"):
        A.robbins_monro(lambda w, r: w, np.zeros(2), 3, lambda k: 1 / k, rng)
    with pytest.raises(ValueError, match="must exceed 1/2"):
        A.asymptotic_covariance(np.eye(2), np.eye(2), 0.4)
