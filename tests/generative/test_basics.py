"""Exact KL, entropy and cross-entropy on tables and grids; parameter counts; MLE fits."""

import math

import numpy as np
import pytest

from deepnotes.generative.basics import (
    bernoulli_log_prob,
    config_index,
    cross_entropy,
    empirical_distribution,
    entropy,
    enumerate_binary,
    fit_gaussian_forward_kl,
    fit_gaussian_kl,
    fit_independent_bernoulli,
    gaussian_kl,
    gaussian_log_pdf,
    kl_divergence,
    kl_on_grid,
    marginals,
    mixture_log_pdf,
    parameter_counts,
    total_correlation,
)

GRID = np.linspace(-30.0, 30.0, 6001)


def random_table(rng, size):
    p = rng.random(size) ** 3
    return p / p.sum()


def test_cross_entropy_minus_entropy_is_kl():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = random_table(rng, 32), random_table(rng, 32)
        # three float64 sums of 32 terms of size O(1): rounding ~1e-15
        assert cross_entropy(p, q) - entropy(p) == pytest.approx(kl_divergence(p, q), abs=1e-12)
        assert kl_divergence(p, q) > 0
    assert kl_divergence(p, p) == 0.0


def test_kl_handles_zeros():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.25, 0.25, 0.5])
    assert kl_divergence(p, q) == pytest.approx(math.log(2.0), abs=1e-15)
    assert kl_divergence(q, p) == math.inf
    assert cross_entropy(q, p) == math.inf
    assert entropy(np.array([1.0, 0.0])) == 0.0


def test_known_entropies():
    assert entropy(np.full(8, 1 / 8)) == pytest.approx(math.log(8), abs=1e-15)


@pytest.mark.parametrize(("mp", "sp", "mq", "sq"), [(0, 1, 0, 1), (0.3, 0.5, -1.2, 2.0),
                                                    (2.0, 1.5, 1.0, 0.7)])
def test_kl_on_grid_matches_closed_form_gaussian_kl(mp, sp, mq, sq):
    got = kl_on_grid(GRID, gaussian_log_pdf(GRID, mp, sp), gaussian_log_pdf(GRID, mq, sq))
    # Riemann sum of a Gaussian-weighted polynomial on a 0.01 grid covering > 14 std: the error is
    # exponentially small, so only float64 rounding of ~6000 terms (~1e-13) remains
    assert got == pytest.approx(gaussian_kl(mp, sp, mq, sq), abs=1e-10)


def test_forward_kl_fit_is_moment_matching():
    w, m, s = [0.3, 0.7], [-2.0, 1.5], [0.5, 0.8]
    log_p = mixture_log_pdf(GRID, w, m, s)
    mean, std = fit_gaussian_forward_kl(GRID, log_p)
    true_mean = 0.3 * -2.0 + 0.7 * 1.5
    true_var = sum(wk * (sk**2 + mk**2) for wk, mk, sk in zip(w, m, s, strict=True)) - true_mean**2
    assert mean == pytest.approx(true_mean, abs=1e-10)  # exponentially accurate quadrature
    assert std == pytest.approx(math.sqrt(true_var), abs=1e-10)
    # the numerical minimiser of the forward KL lands on the same point (Nelder-Mead xatol 1e-9,
    # flat minimum: KL is quadratic near it, so parameters are known to ~1e-5)
    best = fit_gaussian_kl(GRID, log_p, "forward", [0.0])[0]
    assert best[0] == pytest.approx(true_mean, abs=1e-4)
    assert best[1] == pytest.approx(math.sqrt(true_var), abs=1e-4)


def test_reverse_kl_seeks_modes():
    log_p = mixture_log_pdf(GRID, [0.5, 0.5], [-3.0, 3.0], [0.5, 0.5])
    fits = fit_gaussian_kl(GRID, log_p, "reverse", [-3.0, 3.0])
    for mean, std, kl in fits:
        # well-separated modes: q sits on one mode and pays about log 2 for missing the other
        assert abs(abs(mean) - 3.0) < 1e-3 and std == pytest.approx(0.5, abs=1e-3)
        assert kl == pytest.approx(math.log(2.0), abs=1e-3)
    forward_mean, forward_std = fit_gaussian_forward_kl(GRID, log_p)
    assert abs(forward_mean) < 1e-10 and forward_std > 3.0  # covers both modes


def test_enumerate_binary_and_config_index_round_trip():
    x = enumerate_binary(4)
    assert x.shape == (16, 4)
    assert x[5].tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(config_index(x), np.arange(16))


def test_empirical_distribution_and_independent_fit():
    x = np.array([[1, 0], [1, 1], [1, 0], [0, 0]], dtype=float)
    np.testing.assert_allclose(empirical_distribution(x), [0.25, 0.0, 0.5, 0.25])
    np.testing.assert_allclose(fit_independent_bernoulli(x), [0.75, 0.25])
    np.testing.assert_allclose(fit_independent_bernoulli(x, alpha=1.0), [4 / 6, 2 / 6])
    logp = bernoulli_log_prob(x, np.array([0.75, 0.25]))
    np.testing.assert_allclose(logp[1], math.log(0.75 * 0.25))
    assert bernoulli_log_prob(np.array([[1.0]]), np.array([0.0]))[0] == -math.inf


def test_total_correlation_is_kl_to_product_of_marginals():
    rng = np.random.default_rng(1)
    p = random_table(rng, 16)
    m = marginals(p, 4)
    configs = enumerate_binary(4)
    q = np.exp(bernoulli_log_prob(configs, m))
    assert q.sum() == pytest.approx(1.0, abs=1e-14)
    assert total_correlation(p, 4) == pytest.approx(kl_divergence(p, q), abs=1e-12)
    # any other independent model is further away: the marginals are the KL minimiser
    assert kl_divergence(p, np.exp(bernoulli_log_prob(configs, np.clip(m + 0.05, 0, 1)))) > \
        kl_divergence(p, q)


def test_parameter_counts():
    c = parameter_counts(64, nade_hidden=500)
    assert c["full_table"] == c["bayes_net_tables"] == 2**64 - 1
    assert c["fvsbn"] == 2080 and c["independent"] == 64
    assert c["nade"] == 2 * 64 * 500 + 64 + 500


def test_invalid_inputs():
    with pytest.raises(ValueError, match="sum to 1"):
        entropy([0.5, 0.6])
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence([1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="binary"):
        fit_independent_bernoulli(np.array([[0.5]]))
    with pytest.raises(ValueError, match="NaN"):
        empirical_distribution(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="uniformly"):
            kl_on_grid(np.array([0.0, 1.0, 3.0]), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="direction"):
        fit_gaussian_kl(GRID, np.zeros_like(GRID), "sideways", [0.0])
