"""Reparameterised and score-function gradients, Gumbel-max / Gumbel-softmax, the discrete VAE.

Monte Carlo checks use fixed seeds and compare a sample mean with its exact value in units of the
estimated standard error (SE = sample std / sqrt(n)). With ``Z_TOL = 4.5`` a correct estimator
fails a single comparison with probability ~7e-6 (two-sided normal tail); the checks are
deterministic under the fixed seeds, and each has a negative control showing the check can fail.
Chi-square / KS tests use ``ALPHA = 1e-3``.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from deepnotes.data import load_digits
from deepnotes.generative.discrete_vae import CategoricalVAE, anneal_temperature
from deepnotes.generative.gumbel import (
    concrete_log_density,
    gumbel_max_sample,
    gumbel_softmax,
    sample_gumbel,
    straight_through,
)
from deepnotes.generative.reparam import (
    categorical_exact_grad,
    categorical_score_grad,
    gaussian_reparam_grad,
    gaussian_score_grad,
    gumbel_softmax_grad,
)

torch.set_num_threads(1)
Z_TOL = 4.5
ALPHA = 1e-3
D64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def z_scores(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|mean - exact| / SE, per coordinate, for per-sample estimates of shape (S, ...)."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return (samples.mean(0) - exact).abs() / se


# ---- Gumbel-max -------------------------------------------------------------------------------
def test_gumbel_noise_has_the_gumbel_moments():
    g = sample_gumbel((200_000,), generator=gen(0), dtype=D64)
    assert torch.isfinite(g).all()
    # mean γ (Euler-Mascheroni), variance π²/6; SE of the mean sqrt(π²/6 / n)
    assert abs(g.mean().item() - 0.5772156649) < Z_TOL * math.sqrt(math.pi**2 / 6 / g.numel())
    # KS against the exact Gumbel CDF exp(-exp(-x))
    assert stats.kstest(g[:20_000].numpy(), stats.gumbel_r.cdf).pvalue > ALPHA


@pytest.mark.parametrize("seed", [0, 1])
def test_gumbel_max_frequencies_pass_chi_square(seed):
    logits = torch.tensor([[1.0, 0.2, -0.5, 2.0, 0.0, -3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    n = 30_000
    idx = gumbel_max_sample(logits, n, generator=gen(seed))  # (n, 2)
    assert idx.shape == (n, 2) and idx.dtype == torch.int64
    for row in range(2):
        counts = np.bincount(idx[:, row].numpy(), minlength=6)
        p = torch.softmax(logits[row].double(), 0).numpy()
        assert stats.chisquare(counts, n * p).pvalue > ALPHA
        # negative control: the same counts reject a slightly wrong distribution
        q = torch.softmax(logits[row].double() + torch.tensor([0.1, 0, 0, 0, 0, 0]), 0).numpy()
        assert stats.chisquare(counts, n * q).pvalue < ALPHA


def test_gumbel_max_never_picks_a_minus_inf_class():
    logits = torch.tensor([0.0, -math.inf, 1.0])
    assert (gumbel_max_sample(logits, 5000, generator=gen(0)) != 1).all()


# ---- Gaussian: pathwise vs score function ------------------------------------------------------
MU = torch.tensor([1.0, -0.5], dtype=D64)
SIGMA = torch.tensor([0.7, 2.0], dtype=D64)


def square(z):
    return z.square().sum(-1)


@pytest.mark.parametrize("estimator", ["reparam", "score", "score_const", "score_loo"])
def test_gaussian_gradients_are_unbiased_for_z_squared(estimator):
    # ∇_{μ,σ} E[Σ z²] = ∇ Σ (μ² + σ²) = (2μ, 2σ)
    n = 40_000
    if estimator == "reparam":
        g_mu, g_sigma = gaussian_reparam_grad(square, MU, SIGMA, n, generator=gen(1))
    else:
        baseline = {"score": None, "score_const": 4.0, "score_loo": "loo"}[estimator]
        g_mu, g_sigma = gaussian_score_grad(square, MU, SIGMA, n, baseline=baseline,
                                            generator=gen(1))
    assert g_mu.shape == g_sigma.shape == (n, 2)
    assert (z_scores(g_mu, 2 * MU) < Z_TOL).all()
    assert (z_scores(g_sigma, 2 * SIGMA) < Z_TOL).all()
    # negative control: the check rejects an exact gradient that is off by 10 %
    assert (z_scores(g_sigma, 2.2 * SIGMA) > Z_TOL).any()


def test_gaussian_gradients_are_unbiased_for_an_exponential():
    # E[exp(a·z)] = exp(a·μ + |a|²σ²/2) ⇒ ∇_μ = a E, ∇_σ = a² σ E (per coordinate)
    a = torch.tensor([0.5, -0.3], dtype=D64)

    def f(z):
        return torch.exp(z @ a)

    e = torch.exp(a @ MU + (a.square() * SIGMA.square()).sum() / 2)
    for fn in (gaussian_reparam_grad, gaussian_score_grad):
        g_mu, g_sigma = fn(f, MU, SIGMA, 40_000, generator=gen(2))
        assert (z_scores(g_mu, a * e) < Z_TOL).all(), fn.__name__
        assert (z_scores(g_sigma, a.square() * SIGMA * e) < Z_TOL).all(), fn.__name__


def test_per_sample_variances_match_their_closed_forms():
    # f = z² in 1-D: reparam ∇_μ = 2z, Var = 4σ²; score ∇_μ = z² ε/σ with b = 0,
    # Var = E[z⁴ε²]/σ² - 4μ² = (μ⁴ + 18μ²σ² + 15σ⁴)/σ² - 4μ²  (Gaussian moments, z = μ + σε).
    mu, sigma, n = torch.tensor([1.5], dtype=D64), torch.tensor([0.8], dtype=D64), 200_000
    g_rep, _ = gaussian_reparam_grad(square, mu, sigma, n, generator=gen(3))
    g_sf, _ = gaussian_score_grad(square, mu, sigma, n, generator=gen(3))
    m, s = mu.item(), sigma.item()
    exact_rep = 4 * s**2
    exact_sf = (m**4 + 18 * m**2 * s**2 + 15 * s**4) / s**2 - 4 * m**2
    # relative SE of a sample variance is sqrt((κ - 1)/n) for kurtosis κ; 2z is Gaussian (κ = 3)
    assert abs(g_rep.var().item() / exact_rep - 1) < Z_TOL * math.sqrt(2 / n)
    # z²ε has heavy tails (κ in the hundreds here): 5 % is ~3 of its SEs at n = 2e5
    assert abs(g_sf.var().item() / exact_sf - 1) < 0.05
    assert exact_sf > 10 * exact_rep


def test_leave_one_out_baseline_reduces_variance_far_from_zero():
    # f = z², μ = 3, σ = 1: Var[f ε] = 81 + 162 + 15 - 36 = 222 without a baseline; with
    # b = E[f] = 10, (f - b) ε = 6ε² + ε³ - ε has variance 108 + 15 + 1 - 6 - 36 = 82. The
    # leave-one-out mean approaches b = 10 (its own noise adds O(1/n)).
    mu, sigma, n = torch.tensor([3.0], dtype=D64), torch.tensor([1.0], dtype=D64), 100_000
    plain, _ = gaussian_score_grad(square, mu, sigma, n, generator=gen(4))
    loo, _ = gaussian_score_grad(square, mu, sigma, n, baseline="loo", generator=gen(4))
    # ε³-type tails: the relative SE of these sample variances is ~1.5 % at n = 1e5
    assert abs(plain.var().item() / 222 - 1) < 0.05
    assert abs(loo.var().item() / 82 - 1) < 0.05


# ---- categorical: score function vs exact ------------------------------------------------------
THETA = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=D64)
VALUES = torch.tensor([1.0, 3.0, -2.0, 0.5], dtype=D64)


def test_exact_categorical_gradient_matches_autograd():
    # Eq. 7 written as Σ_k ∇p_k f(k), computed here by autograd on Σ softmax(θ)_k f(k)
    theta = THETA.clone().requires_grad_(True)
    (torch.softmax(theta, 0) @ VALUES).backward()
    torch.testing.assert_close(categorical_exact_grad(VALUES, THETA), theta.grad)


@pytest.mark.parametrize("baseline", [None, 1.0, "loo"])
def test_categorical_score_gradient_is_unbiased(baseline):
    def f(y):  # nonlinear in y; on one-hot rows it is VALUES[k]²
        return (y @ VALUES).square()

    exact = categorical_exact_grad(f, THETA)
    torch.testing.assert_close(exact, categorical_exact_grad(VALUES.square(), THETA))
    g = categorical_score_grad(f, THETA, 40_000, baseline=baseline, generator=gen(5))
    assert g.shape == (40_000, 4)
    assert (z_scores(g, exact) < Z_TOL).all()
    assert (z_scores(g, 1.1 * exact) > Z_TOL).any()  # negative control


def test_relaxed_gradient_is_biased_at_high_temperature_and_not_at_low():
    exact = categorical_exact_grad(VALUES, THETA)
    hot = gumbel_softmax_grad(VALUES, THETA, 2.0, 20_000, generator=gen(6))
    cold = gumbel_softmax_grad(VALUES, THETA, 0.05, 20_000, generator=gen(6))
    assert (z_scores(hot, exact) > 20).any()  # clearly biased at τ = 2
    # At τ = 0.05 the bias is below what 2e4 samples resolve in every coordinate
    assert (z_scores(cold, exact) < Z_TOL).all()
    assert cold.var(0).sum() > hot.var(0).sum()  # ... and paid for with variance


# ---- Gumbel-softmax and straight-through ---------------------------------------------------------
def test_gumbel_softmax_samples_lie_on_the_simplex_and_share_the_gumbel_max_argmax():
    y = gumbel_softmax(THETA, 0.7, n_samples=1000, generator=gen(7))
    assert (y > 0).all() and torch.allclose(y.sum(-1), torch.ones(1000, dtype=D64))
    idx = gumbel_max_sample(THETA, 1000, generator=gen(7))  # same noise
    assert torch.equal(y.argmax(-1), idx)


def test_gumbel_softmax_limits_in_temperature():
    cold = gumbel_softmax(THETA, 1e-3, n_samples=5000, generator=gen(8))
    assert cold.max(-1).values.mean() > 0.999  # τ → 0: one-hot
    p = torch.softmax(THETA, 0)
    # ... whose mean is the categorical's probabilities (SE from the Bernoulli variance)
    assert ((cold.mean(0) - p).abs() < Z_TOL * torch.sqrt(p * (1 - p) / 5000)).all()
    hot = gumbel_softmax(THETA, 1e3, n_samples=5000, generator=gen(8))
    assert torch.allclose(hot, torch.full_like(hot, 0.25), atol=0.01)  # τ → ∞: the centre
    # At a moderate τ the mean sample is NOT p (it is pulled to the centre) ...
    mid = gumbel_softmax(THETA, 1.0, n_samples=20_000, generator=gen(8))
    assert (z_scores(mid, p) > 10).any()
    # ... but P(argmax = k) = p_k at every τ (the argmax is the Gumbel-max sample)
    counts = np.bincount(mid.argmax(-1).numpy(), minlength=4)
    assert stats.chisquare(counts, 20_000 * p.numpy()).pvalue > ALPHA


def test_matches_torch_gumbel_softmax_in_distribution():
    logits = THETA.float()
    ours = gumbel_softmax(logits, 0.7, n_samples=5000, generator=gen(9))
    torch.manual_seed(9)
    theirs = F.gumbel_softmax(logits.expand(5000, -1), tau=0.7)
    for k in range(4):
        assert stats.ks_2samp(ours[:, k].numpy(), theirs[:, k].numpy()).pvalue > ALPHA
    # negative control: another temperature is told apart
    other = F.gumbel_softmax(logits.expand(5000, -1), tau=1.4)
    assert stats.ks_2samp(ours[:, 2].numpy(), other[:, 2].numpy()).pvalue < ALPHA


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_concrete_density_integrates_to_one(tau):
    # K = 2: y = (t, 1 - t); the density is w.r.t. dt on (0, 1). Integrate in the logit of t
    # (t = σ(u), dt = t(1-t) du), which removes the endpoint singularities.
    logits = torch.tensor([0.3, -0.4], dtype=D64)
    u = torch.linspace(-60, 60, 200_001, dtype=D64)
    t, one_minus_t = torch.sigmoid(u), torch.sigmoid(-u)  # both without cancellation
    y = torch.stack([t, one_minus_t], -1)
    dens = concrete_log_density(y, logits, tau).exp() * t * one_minus_t
    assert abs(torch.trapezoid(dens, u).item() - 1) < 1e-6


def test_straight_through_is_one_hot_forward_and_soft_backward():
    theta = THETA.clone().requires_grad_(True)
    w = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=D64)
    y_hard = gumbel_softmax(theta, 0.5, hard=True, n_samples=64, generator=gen(10))
    assert set(y_hard.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(y_hard.detach().sum(-1), torch.ones(64, dtype=D64))
    (y_hard @ w).square().sum().backward()
    g_hard = theta.grad.clone()
    theta.grad = None
    y_soft = gumbel_softmax(theta, 0.5, n_samples=64, generator=gen(10))
    assert torch.equal(y_hard.detach().argmax(-1), y_soft.detach().argmax(-1))
    # backward = soft Jacobian applied to ∂f/∂y evaluated at the HARD sample
    grad_y = 2 * (y_hard.detach() @ w).unsqueeze(-1) * w
    (y_soft * grad_y).sum().backward()
    torch.testing.assert_close(g_hard, theta.grad, rtol=1e-12, atol=1e-12)
    y = torch.tensor([[0.2, 0.5, 0.3]], requires_grad=True)
    assert torch.equal(straight_through(y).detach(), torch.tensor([[0.0, 1.0, 0.0]]))


# ---- clear errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: gumbel_softmax(THETA, 0.0), "tau"),
    (lambda: gumbel_softmax(THETA, -1.0), "tau"),
    (lambda: gumbel_softmax(THETA, float("nan")), "tau"),
    (lambda: gumbel_softmax(torch.tensor([0.0, float("nan")]), 1.0), "NaN"),
    (lambda: gumbel_max_sample(torch.tensor([0.0, math.inf])), r"\+inf"),
    (lambda: gumbel_max_sample(torch.tensor([-math.inf, -math.inf])), "all -inf"),
    (lambda: gumbel_max_sample(torch.tensor([1.0])), "K >= 2"),
    (lambda: gumbel_max_sample(THETA, 0), "n_samples"),
    (lambda: gaussian_reparam_grad(square, MU, SIGMA[:1], 4), "differ"),
    (lambda: gaussian_reparam_grad(square, MU, -SIGMA, 4), "sigma must be > 0"),
    (lambda: gaussian_reparam_grad(lambda z: z, MU, SIGMA, 4), "map"),
    (lambda: gaussian_score_grad(square, MU, SIGMA, 1, baseline="loo"), "n_samples >= 2"),
    (lambda: gaussian_score_grad(square, MU, SIGMA, 4, baseline="mean"), "baseline"),
    (lambda: categorical_score_grad(VALUES[:3], THETA, 4), "K=4"),
    (lambda: categorical_score_grad(VALUES, THETA.view(2, 2), 4), r"shape \(K,\)"),
    (lambda: gumbel_softmax_grad(VALUES, THETA, 0.0, 4), "tau"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_type_errors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        gumbel_softmax([0.0, 1.0], 1.0)
    with pytest.raises(TypeError, match="floating"):
        gumbel_max_sample(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="number"):
        gumbel_softmax(THETA, "1")


# ---- discrete VAE -------------------------------------------------------------------------------
def tiny_vae(n_latents: int, n_classes: int, seed: int = 0) -> CategoricalVAE:
    """A random model whose decoder is made decisive (weights × 6), so that p(z|x) is peaked
    and far from the random encoder's q(z|x): the ELBO gaps are then tenths of a nat, not
    hundredths, and the tightening of the importance-weighted bound is measurable."""
    torch.manual_seed(seed)
    model = CategoricalVAE(dim=6, n_latents=n_latents, n_classes=n_classes, hidden=8).double()
    with torch.no_grad():
        model.decoder[0].weight.mul_(6.0)
        model.decoder[-1].weight.mul_(6.0)
    return model


ALL_X = torch.tensor([[(i >> d) & 1 for d in range(6)] for i in range(64)], dtype=D64)


@pytest.mark.parametrize("n_latents, n_classes", [(1, 3), (2, 3)])
def test_elbo_bounds_the_exact_log_likelihood(n_latents, n_classes):
    model = tiny_vae(n_latents, n_classes)
    log_px = model.exact_log_likelihood(ALL_X)
    # p(x) is a distribution over the 64 binary images
    assert abs(torch.logsumexp(log_px, 0).item()) < 1e-12
    exact_elbo = model.exact_elbo(ALL_X)
    gap = log_px - exact_elbo  # = KL(q(z|x) || p(z|x)) ≥ 0
    assert (gap > 0).all() and (gap > 1e-3).any()
    # Monte Carlo ELBO is unbiased for the exact one (2000 independent draws per image)
    reps = 2000
    draws = model.elbo(ALL_X.repeat(reps, 1), 1, generator=gen(11)).view(reps, 64)
    assert (z_scores(draws, exact_elbo) < Z_TOL).all()
    # the importance-weighted bound tightens with S towards log p(x), in expectation. Checked on
    # the 16 images with the widest gap (elsewhere q ≈ p(z|x) and the steps are below the noise):
    # their summed bound must rise by more than Z_TOL standard errors at each step.
    x = ALL_X[gap.topk(16).indices]
    reps = 1000
    iw = {s: model.iwae_bound(x.repeat(reps, 1), s, generator=gen(s)).view(reps, 16)
          for s in (1, 8, 64)}
    totals = [iw[s].sum(1) for s in (1, 8, 64)]  # (reps,) each, independent across S
    for lo, hi in zip(totals, totals[1:], strict=False):
        diff = hi - lo
        assert diff.mean() > Z_TOL * diff.std() / math.sqrt(reps)
    lp, el = log_px[gap.topk(16).indices], exact_elbo[gap.topk(16).indices]
    assert (z_scores(iw[1], el) < Z_TOL).all()  # S = 1 is the ELBO itself
    assert ((iw[64].mean(0) - lp) < Z_TOL * iw[64].std(0) / math.sqrt(reps)).all()
    assert lp.sum() - totals[2].mean() < (lp.sum() - el.sum()) / 4  # S = 64 closes > 3/4


def test_elbo_equals_log_likelihood_when_q_is_the_posterior():
    model = tiny_vae(1, 3)
    x = ALL_X[:5]
    z = model._all_latents(D64)
    with torch.no_grad():
        log_joint = model.log_px_given_z(x.unsqueeze(1), model.decode(z).unsqueeze(0))
        post = torch.log_softmax(log_joint, 1)  # (5, 3): log p(z|x) under a uniform prior
    model.encode = lambda _x: post.unsqueeze(1)  # q(z|x) := p(z|x)
    torch.testing.assert_close(model.exact_elbo(x), model.exact_log_likelihood(x))


def _grads(model, loss) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_reinforce_vae_gradient_is_unbiased_and_relaxed_one_is_not():
    # Reference: the gradient of the exact (enumerated) negative ELBO w.r.t. every parameter.
    model = tiny_vae(2, 3)
    x = ALL_X[::4]  # 16 images
    exact = _grads(model, -model.exact_elbo(x).mean())
    g = gen(15)
    reinforce = torch.stack([_grads(model, model.loss_reinforce(x.repeat(8, 1), 4,
                                                                generator=g)[0])
                             for _ in range(300)])
    # weights of ReLU units that are dead on these inputs get exactly zero from both
    live = reinforce.std(0) > 0
    assert torch.equal(reinforce[:, ~live], exact[~live].expand(300, -1))
    assert live.sum() > 100 and (z_scores(reinforce[:, live], exact[live]) < Z_TOL).all()
    # The Gumbel-softmax objective at τ = 1 is a different function: its gradient is biased,
    # detectably so with the same number of draws.
    relaxed = torch.stack([_grads(model, model.loss(x.repeat(32, 1), 1.0, generator=g)[0])
                           for _ in range(300)])
    assert (z_scores(relaxed, exact) > 10).any()


def test_anneal_temperature():
    assert anneal_temperature(0, tau0=1.0, tau_min=0.5, rate=1e-3) == 1.0
    assert math.isclose(anneal_temperature(100, tau0=1.0, tau_min=0.1, rate=1e-3),
                        math.exp(-0.1))
    assert anneal_temperature(10**6, tau0=1.0, tau_min=0.5, rate=1e-3) == 0.5
    with pytest.raises(ValueError, match="tau"):
        anneal_temperature(0, tau_min=0.0)


def test_vae_errors():
    model = tiny_vae(1, 3)
    with pytest.raises(ValueError, match=r"shape \(B, 6\)"):
        model.elbo(ALL_X[:, :5])
    with pytest.raises(ValueError, match="binary"):
        model.elbo(ALL_X * 0.5)
    with pytest.raises(ValueError, match="NaN"):
        model.elbo(torch.full((2, 6), math.nan, dtype=D64))
    with pytest.raises(ValueError, match="enumerate"):
        CategoricalVAE(dim=6, n_latents=20, n_classes=10).exact_log_likelihood(ALL_X[:1].float())
    with pytest.raises(ValueError, match="n_classes"):
        CategoricalVAE(n_classes=1)
    with pytest.raises(ValueError, match="tau"):
        model.loss(ALL_X, 0.0)
    with pytest.raises(ValueError, match="n_samples"):
        model.loss_reinforce(ALL_X, 1)
    with pytest.raises(ValueError, match="beta"):
        model.loss(ALL_X, 1.0, beta=-1.0)


def test_beta_weighs_only_the_kl():
    model = tiny_vae(2, 3)
    loss1, parts = model.loss(ALL_X, 0.5, generator=gen(16))
    loss0, parts0 = model.loss(ALL_X, 0.5, beta=0.0, generator=gen(16))
    assert parts == parts0
    assert math.isclose(loss1.item(), parts["recon_nats"] + parts["kl_nats"], rel_tol=1e-12)
    assert math.isclose(loss0.item(), parts["recon_nats"], rel_tol=1e-12)


@pytest.mark.parametrize("estimator", ["gumbel_softmax", "straight_through", "reinforce"])
def test_vae_training_lowers_the_negative_elbo(estimator):
    torch.manual_seed(0)
    x_train = torch.from_numpy(load_digits("train", "binarized", flatten=True)[0])
    x_test = torch.from_numpy(load_digits("test", "binarized", flatten=True)[0])
    model = CategoricalVAE(64, n_latents=8, n_classes=10, hidden=128, n_hidden=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def test_neg_elbo():
        return -model.elbo(x_test, 4, generator=gen(12)).mean().item()

    before = test_neg_elbo()
    g = gen(13)
    for step in range(150):
        batch = x_train[torch.randint(len(x_train), (64,), generator=g)]
        if estimator == "reinforce":
            loss, _ = model.loss_reinforce(batch, 4, generator=g)
        else:
            loss, _ = model.loss(batch, anneal_temperature(step, rate=5e-3),
                                 hard=estimator == "straight_through", generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = test_neg_elbo()
    # untrained: ~64 log 2 ≈ 44 nats; 150 steps reach ~30; 25 % is far outside seed noise
    assert after < 0.75 * before, (before, after)
    samples = model.sample(5, generator=gen(14))
    assert samples.shape == (5, 64) and ((samples >= 0) & (samples <= 1)).all()
