"""The Fréchet distance against closed forms: equal Gaussians, diagonal and 1-D cases, and a
full-covariance case computed through an eigendecomposition instead of ``scipy.linalg.sqrtm``."""

from __future__ import annotations

import numpy as np
import pytest

from deepnotes.diffusion.metrics import frechet_distance, gaussian_moments


def _random_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_equal_gaussians_are_at_distance_zero():
    rng = np.random.default_rng(0)
    mu, cov = rng.standard_normal(6), _random_cov(rng, 6)
    # sqrtm of cov² returns cov up to ~1e-12 relative round-off on this conditioning
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-8


def test_diagonal_and_one_dimensional_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # commuting covariances: tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) = Σ_i (√v1_i − √v2_i)²
    expected = 1.0 + 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0.0
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-12)
    # 1-D: W2² between N(0, 1) and N(3, 4) is 3² + (1 − 2)²
    assert frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0, rel=1e-12)


def test_full_covariances_match_the_symmetric_form():
    # tr((Σ1Σ2)^½) = tr((Σ1^½ Σ2 Σ1^½)^½), whose root is symmetric: computed by eigh
    rng = np.random.default_rng(1)
    d = 5
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    w, v = np.linalg.eigh(c1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(r1 @ c2 @ r1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(inner).sum()
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-9)
    # symmetric in its arguments
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances_stay_finite():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))  # 3 points in 4-D: covariance of rank 2
    mu, cov = gaussian_moments(x)
    d = frechet_distance(mu, cov, mu + 1.0, cov)
    assert np.isfinite(d) and d == pytest.approx(4.0, abs=1e-4)  # the ridge shifts it by ~1e-6


def test_moments_and_errors():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 3))
    mu, cov = gaussian_moments(x)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.T), rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        gaussian_moments(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_moments(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance([np.nan], [[1.0]], [0.0], [[1.0]])
