"""Tests for deepnotes.data.toy2d: each toy's density is normalised, matches its sampler, and the
registry validates names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepnotes.data import TOYS, get_toy, sample_toy
from deepnotes.data.toy2d import Pinwheel, SwissRoll, TwoMoons

N_BINS = 16  # histogram bins per axis for the sampler-vs-density test
N_SAMPLES = 200_000

# Finest length scale of each default toy: the grid step is at most a quarter of it. For a density
# that is a Gaussian blur of width s, the midpoint rule with step h errs by ~exp(-2π² s²/h²)
# (Poisson summation), below 1e-100 at h = s/4, so normalisation errors below come from the
# tails outside `bounds` (< 1e-9 by construction) and from the density's own quadrature.
LENGTH_SCALE = {"two-moons": 0.1, "8-gaussians": 0.2, "gaussian-grid": 0.1, "circles": 0.1,
                "swiss-roll": 0.2,
                "pinwheel": 0.2, "checkerboard": 2.0}
# Normalisation tolerance per toy, see the reasons above and in each class docstring.
NORM_TOL = {"two-moons": 1e-9, "8-gaussians": 1e-9, "gaussian-grid": 1e-9, "circles": 1e-9,
            "swiss-roll": 1e-9,
            # grid cells align with the squares: the midpoint rule is exact up to rounding
            "checkerboard": 1e-12,
            # the far radial tail is sheared into thin folds the grid cannot resolve (the region
            # with Jacobian determinant < 1/2 holds 1e-5 of the mass): measured 3.7e-8
            "pinwheel": 1e-7}
DENSITY_TOYS = [name for name in TOYS if TOYS[name].has_density]


def density_grid(name):
    """Cell-centre grid over the toy's bounds, aligned with N_BINS histogram bins.

    Returns (edges of the bins, cell step h, density on cells reshaped (bins, sub, bins, sub)).
    """
    toy = get_toy(name)
    lo, hi = toy.bounds
    sub = math.ceil((hi - lo) / (N_BINS * LENGTH_SCALE[name] / 4))
    n = N_BINS * sub
    h = (hi - lo) / n
    centres = lo + h * (np.arange(n) + 0.5)
    gx, gy = np.meshgrid(centres, centres, indexing="ij")
    p = toy.prob(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(N_BINS, sub, N_BINS, sub)
    return np.linspace(lo, hi, N_BINS + 1), h, p


@pytest.fixture(scope="module")
def grids():
    return {name: density_grid(name) for name in DENSITY_TOYS}


@pytest.mark.parametrize("name", DENSITY_TOYS)
def test_density_integrates_to_one(name, grids):
    _, h, p = grids[name]
    total = p.sum() * h * h
    assert abs(total - 1.0) < NORM_TOL[name], total


@pytest.mark.parametrize("name", DENSITY_TOYS)
def test_samples_match_density(name, grids):
    """Binned sample counts against the density's mass per bin (Pearson chi-square).

    Bins expecting fewer than 5 samples are pooled into one cell. Under the null the statistic has
    mean df and std sqrt(2 df); we allow df + 6 sqrt(2 df), a false alarm rate below 1e-6, while a
    wrong width, centre or arm angle puts thousands of samples in the wrong bins and fails it.
    """
    edges, h, p = grids[name]
    expected = N_SAMPLES * p.sum(axis=(1, 3)) * h * h  # (bins, bins)
    x = sample_toy(name, N_SAMPLES, np.random.default_rng(12345))
    observed, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    big = expected >= 5
    obs, exp = observed[big], expected[big]
    pooled_obs, pooled_exp = N_SAMPLES - obs.sum(), N_SAMPLES - exp.sum()
    if pooled_exp >= 5:
        obs, exp = np.append(obs, pooled_obs), np.append(exp, pooled_exp)
    else:  # nearly empty remainder (e.g. the checkerboard's light squares): Poisson(5) tail 1e-6
        assert pooled_obs <= 20, pooled_obs
    chi2 = ((obs - exp) ** 2 / exp).sum()
    df = len(obs) - 1
    assert df > 20  # the test has bins to work with
    assert chi2 < df + 6 * math.sqrt(2 * df), (chi2, df)


@pytest.mark.parametrize("name", list(TOYS))
def test_sampler_shapes_and_determinism(name):
    toy = get_toy(name)
    a = toy.sample(500, np.random.default_rng(7))
    b = sample_toy(name, 500, np.random.default_rng(7))
    c = toy.sample(500, np.random.default_rng(8))
    assert a.shape == (500, 2) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert toy.sample(0, np.random.default_rng(0)).shape == (0, 2)
    lo, hi = toy.bounds
    assert np.all((a >= lo) & (a <= hi))
    if toy.has_density:
        lp = toy.log_prob(a)
        assert lp.shape == (500,) and np.all(np.isfinite(lp))  # samples lie in the support


def test_checkerboard_density_values():
    toy = get_toy("checkerboard")
    # 8 dark 2x2 squares: density 1/32 on them; (0.5, 0.5) is in square (2, 2) (dark),
    # (-0.5, 0.5) in (1, 2) (light), (5, 0) is off the board
    lp = toy.log_prob(np.array([[0.5, 0.5], [-0.5, 0.5], [5.0, 0.0], [-3.0, -3.0]]))
    np.testing.assert_allclose(lp[[0, 3]], -math.log(32.0), rtol=1e-15)
    assert np.all(np.isneginf(lp[[1, 2]]))


def test_eight_gaussians_far_from_other_modes_is_one_gaussian():
    toy = get_toy("8-gaussians", radius=10.0, std=0.5)
    x = np.array([[10.3, 0.4]])
    # the nearest mode's term alone: the other modes are > 7 away, e^{-98} smaller
    one = -math.log(2 * math.pi * 0.25) - (0.3**2 + 0.4**2) / (2 * 0.25) - math.log(8)
    np.testing.assert_allclose(toy.log_prob(x), one, rtol=1e-12)


def test_circles_density_is_rice_over_2pi_r():
    """Small noise: the Rice radius density tends to N(r; ρ, s²), so p ≈ N / (2 π r K)."""
    toy = get_toy("circles", radii=(1.0, 3.0), noise=0.01)
    r = 1.004
    x = np.array([[r * math.cos(0.7), r * math.sin(0.7)]])
    gauss = math.exp(-(r - 1.0) ** 2 / (2e-4)) / math.sqrt(2 * math.pi * 1e-4)
    # the Rice-vs-Gaussian correction is O(s/ρ) = 1e-2 relative
    np.testing.assert_allclose(toy.prob(x), gauss / (2 * math.pi * r * 2), rtol=1e-2)


@pytest.mark.parametrize("toy", [TwoMoons(), SwissRoll(), TwoMoons(noise=0.03)])
def test_curve_quadrature_is_converged(toy):
    """Doubling the panels changes the density by < 1e-9 relative (the class docstring's claim)."""
    x = toy.sample(2000, np.random.default_rng(0))
    x = np.concatenate([x, x * 1.5])  # and points in the tails
    a, b = toy.log_prob(x), toy.log_prob(x, refine=2)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_pinwheel_density_matches_change_of_variables():
    """For typical samples one preimage exists: log p equals the docstring's single term."""
    toy = Pinwheel()
    gen = np.random.default_rng(3)
    n = 2000
    f0 = 1.0 + toy.radial_std * gen.standard_normal(n)
    f1 = toy.tangential_std * gen.standard_normal(n)
    k = gen.integers(toy.n_arms, size=n)
    theta = 2 * np.pi * k / toy.n_arms + toy.rate * np.exp(f0)
    c, s = np.cos(theta), np.sin(theta)
    y = toy.scale * np.stack([c * f0 + s * f1, -s * f0 + c * f1], axis=1)  # scale R(-θ) f
    term = (-0.5 * ((f0 - 1) / toy.radial_std) ** 2 - 0.5 * (f1 / toy.tangential_std) ** 2
            - math.log(2 * math.pi * toy.radial_std * toy.tangential_std)
            - np.log(np.abs(1 + toy.rate * np.exp(f0) * f1))
            - math.log(toy.n_arms) - 2 * math.log(toy.scale))
    lp = toy.log_prob(y)
    assert np.all(lp >= term - 1e-9)  # other arms/roots only add mass
    # away from the centre (f0 > 0.85), where the arms meet, and within 3 std the other terms
    # are negligible: measured 2e-8 (arms 2π/5 apart in angle, 0.1 wide)
    core = ((f0 > 0.85) & (np.abs(f0 - 1) < 3 * toy.radial_std)
            & (np.abs(f1) < 3 * toy.tangential_std))
    assert core.sum() > 1000
    np.testing.assert_allclose(lp[core], term[core], atol=1e-6)


def test_registry_and_errors():
    assert set(TOYS) == {"two-moons", "8-gaussians", "gaussian-grid", "checkerboard", "pinwheel",
                         "swiss-roll", "circles"}
    with pytest.raises(ValueError,
                       match="known toys: 8-gaussians, checkerboard, circles, gaussian-grid"):
        get_toy("moons")
    with pytest.raises(ValueError, match="unknown toy"):
        sample_toy("spiral", 10, np.random.default_rng(0))
    with pytest.raises(TypeError):
        get_toy("two-moons", radius=1.0)  # not a parameter of two-moons
    with pytest.raises(ValueError, match="noise"):
        get_toy("two-moons", noise=0.0)
    with pytest.raises(ValueError, match="shape"):
        get_toy("8-gaussians").log_prob(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="n must be"):
        get_toy("circles").sample(-1, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        get_toy("circles").sample(3, 0)
    assert get_toy("8-gaussians", radius=4.0).radius == 4.0
