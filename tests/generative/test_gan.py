"""Tests for deepnotes.generative.gan: loss gradients against their closed forms, the optimal
discriminator and the Jensen–Shannon identity on exact discrete toys, the shared loop's NaN stop,
the networks' shapes and the mode-coverage metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from deepnotes.data import get_toy
from deepnotes.generative import gan

# D(G(z)) from confidently rejected (1e-4) to confidently accepted (1 - 1e-4)
D_VALUES = torch.tensor([1e-4, 1e-2, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1 - 1e-4], dtype=torch.float64)


def _grads(kind):
    """Autograd gradients of the generator loss w.r.t. the logits and w.r.t. D itself."""
    logits = torch.logit(D_VALUES).requires_grad_(True)
    (g_logit,) = torch.autograd.grad(gan.generator_loss(logits, kind), logits)
    d = D_VALUES.clone().requires_grad_(True)
    (g_d,) = torch.autograd.grad(gan.generator_loss(torch.logit(d), kind), d)
    return g_logit, g_d


def test_minimax_generator_gradient_matches_closed_form():
    n = len(D_VALUES)
    g_logit, g_d = _grads("minimax")
    # L = mean log(1 - D): dL/dD = -1/(n (1 - D)), dL/dℓ = -D/n (Eq. 7)
    torch.testing.assert_close(g_d, -1.0 / (n * (1 - D_VALUES)), rtol=1e-8, atol=0)
    torch.testing.assert_close(g_logit, -D_VALUES / n, rtol=1e-10, atol=0)


def test_non_saturating_generator_gradient_matches_closed_form():
    n = len(D_VALUES)
    g_logit, g_d = _grads("non_saturating")
    # L = -mean log D: dL/dD = -1/(n D), dL/dℓ = -(1 - D)/n (Eq. 7)
    torch.testing.assert_close(g_d, -1.0 / (n * D_VALUES), rtol=1e-8, atol=0)
    torch.testing.assert_close(g_logit, -(1 - D_VALUES) / n, rtol=1e-10, atol=0)


def test_saturation_where_the_discriminator_wins():
    """At D(G(z)) = 1e-4 the minimax gradient is 1e4 times smaller than the non-saturating one."""
    mm, _ = _grads("minimax")
    ns, _ = _grads("non_saturating")
    assert abs(mm[0]) < 2e-4 * abs(ns[0])


def test_discriminator_loss_is_bce_and_its_gradient():
    real = torch.tensor([-3.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    fake = torch.tensor([-1.0, 4.0], dtype=torch.float64, requires_grad=True)
    loss = gan.discriminator_loss(real, fake)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ref = bce(real, torch.ones(3, dtype=real.dtype)) + bce(fake, torch.zeros(2, dtype=real.dtype))
    torch.testing.assert_close(loss, ref)
    loss.backward()
    # d/dℓ_real of -log σ(ℓ)/n = -(1 - σ)/n ; d/dℓ_fake of -log(1 - σ)/n = σ/n
    torch.testing.assert_close(real.grad, -(1 - torch.sigmoid(real.detach())) / 3)
    torch.testing.assert_close(fake.grad, torch.sigmoid(fake.detach()) / 2)
    # huge logits stay finite (softplus form)
    big = gan.discriminator_loss(torch.tensor([-1e4]), torch.tensor([1e4]))
    assert torch.isfinite(big) and big.item() == pytest.approx(2e4)


def _random_pair(k, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k))
    q = rng.dirichlet(np.ones(k))
    return p, q


@pytest.mark.parametrize("seed", range(5))
def test_optimal_discriminator_maximises_value_and_gives_js(seed):
    p, q = _random_pair(7, seed)
    d_star = gan.optimal_discriminator(p, q)
    v_star = gan.value_function(d_star, p, q)
    # Eq. 3: V(D*, G) = 2 JS - log 4, and our JS equals scipy's (jensenshannon is its square root)
    assert v_star == pytest.approx(2 * gan.js_divergence(p, q) - math.log(4), abs=1e-12)
    assert gan.js_divergence(p, q) == pytest.approx(jensenshannon(p, q) ** 2, abs=1e-12)
    # V is strictly concave in each D(x): every perturbation of D* lowers it
    rng = np.random.default_rng(100 + seed)
    for _ in range(200):
        d = np.clip(d_star + rng.normal(0, 0.05, size=d_star.shape), 1e-6, 1 - 1e-6)
        assert gan.value_function(d, p, q) < v_star
    # and its gradient vanishes there: ∂V/∂D(x) = p/D - q/(1 - D) = 0
    grad = p / d_star - q / (1 - d_star)
    np.testing.assert_allclose(grad, 0, atol=1e-12)


def test_trained_table_discriminator_reaches_d_star():
    """A discriminator with one free logit per point, trained on the exact expected loss,
    converges to D* = p/(p+q) (Eq. 2)."""
    p, q = _random_pair(6, 11)
    logits = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    pt, qt = torch.from_numpy(p), torch.from_numpy(q)
    opt = torch.optim.LBFGS([logits], max_iter=500, tolerance_grad=1e-14, tolerance_change=0,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        # the exact expectation of discriminator_loss under p and q
        loss = (pt * torch.nn.functional.softplus(-logits)).sum() + (
            qt * torch.nn.functional.softplus(logits)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(torch.sigmoid(logits).detach().numpy(),
                               gan.optimal_discriminator(p, q), atol=1e-8)


def test_disjoint_supports_saturate_js():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([0.0, 0.0, 0.3, 0.7])
    assert gan.js_divergence(p, q) == pytest.approx(math.log(2), abs=1e-15)
    d = gan.optimal_discriminator(p, q)
    np.testing.assert_array_equal(d, [1, 1, 0, 0])
    assert gan.value_function(d, p, q) == 0.0  # = 2 log 2 - log 4
    assert gan.js_divergence(p, p) == 0.0


def test_optimal_discriminator_of_two_gaussians():
    x = np.linspace(-3, 3, 13)
    pd = np.exp(-0.5 * x**2)
    pg = np.exp(-0.5 * (x - 1) ** 2)
    # log-odds of D* = log p_data - log p_g = (1 - 2x)/2, linear in x
    d = gan.optimal_discriminator(pd, pg)
    np.testing.assert_allclose(np.log(d / (1 - d)), 0.5 - x, atol=1e-12)
    assert np.isnan(gan.optimal_discriminator([0.0], [0.0])[0])


def test_input_validation():
    with pytest.raises(ValueError, match="kind"):
        gan.generator_loss(torch.zeros(3), "hinge")
    with pytest.raises(TypeError, match="fake_logits"):
        gan.generator_loss(np.zeros(3))
    with pytest.raises(ValueError, match="p_data"):
        gan.optimal_discriminator([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="p must be"):
        gan.js_divergence([-1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="std"):
        gan.mode_statistics(np.zeros((3, 2)), np.zeros((1, 2)), std=0.0)
    with pytest.raises(ValueError, match="n_critic"):
        gan.train_adversarial(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), None, None, None,
                              None, None, None, 1, n_critic=0)


def _toy_setup(critic):
    torch.manual_seed(0)
    g = gan.mlp(2, 2, hidden=16, depth=1)
    g_opt = torch.optim.Adam(g.parameters(), 1e-3)
    d_opt = torch.optim.Adam(critic.parameters(), 1e-3)
    return g, g_opt, d_opt


def test_train_adversarial_runs_and_records():
    critic = gan.mlp(2, 1, hidden=16, depth=1)
    g, g_opt, d_opt = _toy_setup(critic)
    steps_seen = []
    hist = gan.train_adversarial(g, critic, lambda: torch.randn(32, 2) + 3,
                                 lambda: torch.randn(32, 2), *gan.gan_objectives("minimax"),
                                 g_opt, d_opt, 20, n_critic=2,
                                 callback=lambda s, m: steps_seen.append(s))
    assert steps_seen == list(range(20))
    assert set(hist) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(len(v) == 20 for v in hist.values())
    # the generator step left no gradient in the critic and every parameter still trains
    assert all(p.requires_grad for p in critic.parameters())


class _NaNAfter(torch.nn.Module):
    """A critic whose output turns NaN from its ``k``-th forward call on."""

    def __init__(self, k):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.calls, self.k = 0, k

    def forward(self, x):
        self.calls += 1
        out = self.lin(x)
        return out * float("nan") if self.calls > self.k else out


def test_nan_critic_stops_with_the_step():
    critic = _NaNAfter(k=3 * 4)  # 3 calls a step (real, fake, generator): step 4's critic update
    g, g_opt, d_opt = _toy_setup(critic)
    seen = []
    with pytest.raises(gan.NonFiniteLossError, match=r"critic \(discriminator\) loss is nan at step"
                                                     r" 4"):
        gan.train_adversarial(g, critic, lambda: torch.randn(8, 2), lambda: torch.randn(8, 2),
                              *gan.gan_objectives(), g_opt, d_opt, 10,
                              callback=lambda s, m: seen.append(s))
    assert seen == [0, 1, 2, 3]  # every step before the failure reached the callback


def test_networks_shapes_and_spectral_norm():
    torch.manual_seed(0)
    g = gan.DCGANGenerator(z_dim=8, channels=4)
    x = g(torch.randn(5, 8))
    assert x.shape == (5, 1, 8, 8) and x.abs().max() <= 1
    for sn in (False, True):
        d = gan.DCGANDiscriminator(channels=4, spectral_norm=sn)
        assert d(x).shape == (5, 1)
    # after enough power iterations every spectrally normalised layer has top singular value 1
    m = gan.mlp(3, 1, hidden=20, depth=2, spectral_norm=True)
    for _ in range(50):
        m(torch.randn(4, 3))
    m.eval()
    for layer in m:
        if isinstance(layer, torch.nn.Linear):
            sigma = torch.linalg.matrix_norm(layer.weight, ord=2).item()
            assert sigma == pytest.approx(1, rel=1e-3)


def test_mode_statistics_known_answers():
    toy = get_toy("gaussian-grid")
    rng = np.random.default_rng(0)
    x = toy.sample(2500, rng)
    full = gan.mode_statistics(x, toy.centers, toy.std)
    assert full["modes_covered"] == 25
    # P(|N(0, I_2)| <= 3) = 1 - exp(-9/2) = 0.98889
    assert full["high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.006)
    assert full["mode_kl_nats"] < 0.02
    # all samples on three modes
    collapsed = toy.centers[[0, 5, 7]][rng.integers(3, size=2500)] + 0.01 * rng.standard_normal(
        (2500, 2))
    stats = gan.mode_statistics(collapsed, toy.centers, toy.std)
    assert stats["modes_covered"] == 3 and stats["high_quality_fraction"] == 1.0
    assert stats["mode_kl_nats"] == pytest.approx(math.log(25 / 3), abs=0.01)
    # points between modes are low quality
    between = np.full((100, 2), 1.0)
    none = gan.mode_statistics(between, toy.centers, toy.std)
    assert none["modes_covered"] == 0 and none["high_quality_fraction"] == 0.0
    assert math.isnan(none["mode_kl_nats"])
