"""Tests for deepnotes.generative.vq: the straight-through gradient, the two codebook losses, the
EMA update against its formula, perplexity against the entropy, dead-code restarts, VQGAN's
adaptive weight against autograd by hand, and the prior's exact factorisation over the grid."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from deepnotes.generative import vq
from deepnotes.nn.digits_models import FeatureNet


def _quantizer(**kw):
    torch.manual_seed(0)
    q = vq.VectorQuantizer(6, 3, **kw)
    with torch.no_grad():  # codes spread out, so the nearest code is not always code 0
        q.codebook.copy_(torch.randn(6, 3))
    return q


# ----------------------------------------------------------------- nearest code / STE --
def test_nearest_code_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    z, book = torch.randn(200, 5, generator=g), torch.randn(17, 5, generator=g)
    brute = torch.cdist(z.double(), book.double()).argmin(1)
    assert torch.equal(vq.nearest_code(z, book), brute)


def test_straight_through_passes_decoder_gradient_unchanged():
    q = _quantizer(beta=0.0).eval()
    g = torch.Generator().manual_seed(2)
    z_e = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float32).requires_grad_(True)
    decoder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 1))
    out = q(z_e)
    # z_q holds the codes' values (up to the float32 rounding of z_e + (e - z_e)) ...
    expected = q.codebook.detach()[out.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(out.z_q.detach(), expected, rtol=0, atol=4e-7)
    # ... and the encoder receives exactly the decoder's gradient at its input
    z_q_leaf = out.z_q.detach().requires_grad_(True)
    (grad_at_decoder_input,) = torch.autograd.grad(decoder(z_q_leaf).square().sum(), z_q_leaf)
    (grad_at_encoder,) = torch.autograd.grad(decoder(out.z_q).square().sum(), z_e)
    torch.testing.assert_close(grad_at_encoder, grad_at_decoder_input, rtol=0, atol=0)


def test_codebook_and_commitment_terms_move_the_right_tensors():
    q = _quantizer(beta=0.25).eval()
    z_e = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    out = q(z_e)
    out.loss.backward()
    e = q.codebook.detach()[out.indices].permute(0, 3, 1, 2)
    n = z_e.numel()
    # commitment: d/dz_e of β mean (z_e - sg(e))² = 2β (z_e - e) / n; no codebook term reaches z_e
    torch.testing.assert_close(z_e.grad, 2 * 0.25 * (z_e.detach() - e) / n)
    # codebook: d/de_k of mean (sg(z_e) - e)² summed over the vectors assigned to k
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    idx = out.indices.flatten()
    want = torch.zeros_like(q.codebook)
    for i, k in enumerate(idx.tolist()):
        want[k] += 2 * (q.codebook.detach()[k] - flat[i]) / n
    torch.testing.assert_close(q.codebook.grad, want)


def test_ema_quantizer_has_no_codebook_gradient_or_loss():
    q = _quantizer(ema=True)
    assert not q.codebook.requires_grad
    z_e = torch.randn(2, 3, 2, 2, requires_grad=True)
    out = q(z_e)
    torch.testing.assert_close(out.loss, 0.25 * out.commitment_loss)


# ------------------------------------------------------------------------------- EMA --
def test_ema_update_equals_its_formula():
    rng = np.random.default_rng(4)
    k, d, n, gamma, eps = 5, 3, 40, 0.9, 1e-5
    size = rng.uniform(0.5, 3, k)
    total = rng.normal(size=(k, d))
    z = rng.normal(size=(n, d))
    idx = rng.integers(0, k - 1, n)  # code k-1 receives nothing: exercises the smoothing
    new_size, new_sum, book = vq.ema_codebook_update(
        torch.from_numpy(size), torch.from_numpy(total), torch.from_numpy(z),
        torch.from_numpy(idx), gamma, eps)
    want_size, want_sum = size.copy(), total.copy()
    for j in range(k):
        mine = idx == j
        want_size[j] = gamma * size[j] + (1 - gamma) * mine.sum()
        want_sum[j] = gamma * total[j] + (1 - gamma) * z[mine].sum(0)
    big_n = want_size.sum()
    smoothed = (want_size + eps) / (big_n + k * eps) * big_n
    np.testing.assert_allclose(new_size.numpy(), want_size, rtol=1e-13)
    np.testing.assert_allclose(new_sum.numpy(), want_sum, rtol=1e-13)
    np.testing.assert_allclose(book.numpy(), want_sum / smoothed[:, None], rtol=1e-12)


def test_ema_quantizer_training_step_applies_the_update():
    q = _quantizer(ema=True, decay=0.8)
    size0, sum0 = q.cluster_size.clone(), q.embed_sum.clone()
    z_e = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    out = q(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    _, _, book = vq.ema_codebook_update(size0, sum0, flat, out.indices.flatten(), 0.8, q.eps)
    torch.testing.assert_close(q.codebook.detach(), book)
    # and the forward pass used the codes before the update
    with torch.no_grad():
        q.eval()
        assert not torch.equal(q(z_e).z_q, out.z_q)


def test_ema_update_converges_to_cluster_means():
    z = torch.tensor([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.0, 5.4]], dtype=torch.float64)
    idx = torch.tensor([0, 0, 1, 1])
    size, total = torch.ones(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    for _ in range(2000):
        size, total, book = vq.ema_codebook_update(size, total, z, idx, 0.99, 1e-12)
    torch.testing.assert_close(book, torch.tensor([[0.1, 0.0], [5.0, 5.2]], dtype=torch.float64))


# ------------------------------------------------------------------- usage / restarts --
def test_perplexity_is_exp_of_code_usage_entropy():
    idx = torch.tensor([0, 0, 0, 1, 1, 3, 3, 3, 3, 7])
    p = np.bincount(idx.numpy(), minlength=8) / idx.numel()
    entropy = -sum(pi * math.log(pi) for pi in p if pi > 0)
    assert float(vq.perplexity(idx, 8)) == pytest.approx(math.exp(entropy), rel=1e-14)
    assert float(vq.perplexity(torch.arange(8).repeat(3), 8)) == pytest.approx(8.0, rel=1e-14)
    assert float(vq.perplexity(torch.zeros(9, dtype=torch.long), 8)) == 1.0
    assert vq.codebook_usage(idx, 8) == 4 / 8


def test_restart_moves_dead_codes_onto_encoder_outputs_only():
    book = torch.randn(6, 3)
    z = torch.randn(10, 3) + 100
    dead = torch.tensor([False, True, False, False, True, False])
    new = vq.restart_dead_codes(book, dead, z, torch.Generator().manual_seed(0))
    torch.testing.assert_close(new[~dead], book[~dead], rtol=0, atol=0)
    for row in new[dead]:
        assert (row == z).all(1).any()


def test_quantizer_restarts_unused_codes():
    torch.manual_seed(0)
    q = vq.VectorQuantizer(8, 2, restart_threshold=0.5, usage_decay=0.5)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0]] + [[50.0 + i, 50.0] for i in range(7)]))
    z_e = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    q(z_e)  # first step: only sets the running counts
    assert q.restarts == 0
    q(z_e)  # the 7 far codes got nothing twice: 0 < 0.5, restarted onto data
    assert q.restarts == 7
    q.eval()
    assert vq.codebook_usage(q(z_e).indices, 8) > 0.5


# --------------------------------------------------------------------------- VQGAN --
def test_adaptive_weight_equals_its_formula():
    torch.manual_seed(0)
    ae = vq.VQAutoencoder(vq.VectorQuantizer(8, 4), channels=6)
    disc = vq.PatchDiscriminator(4)
    x = torch.randn(3, 1, 8, 8)
    x_hat, _ = ae(x)
    rec = (x_hat - x).abs().mean()
    gan_loss = -disc(x_hat).mean()
    lam = vq.adaptive_weight(rec, gan_loss, ae.last_layer, delta=1e-4)
    # by hand: two separate backward passes into the last layer's weight
    ae.zero_grad()
    rec.backward(retain_graph=True)
    g_rec = ae.last_layer.grad.clone()
    ae.zero_grad()
    gan_loss.backward()
    g_gan = ae.last_layer.grad.clone()
    assert float(lam) == pytest.approx(float(g_rec.norm() / (g_gan.norm() + 1e-4)), rel=1e-6)
    assert not lam.requires_grad


def test_adaptive_weight_balances_gradient_norms():
    w = torch.randn(5, requires_grad=True)
    lam = vq.adaptive_weight((w ** 2).sum(), 1e3 * w.sum(), w, delta=1e-12)
    g_total_gan = lam * 1e3 * torch.ones(5)
    assert float(g_total_gan.norm()) == pytest.approx(float((2 * w).detach().norm()), rel=1e-5)


def test_patch_discriminator_gives_one_logit_per_patch():
    disc = vq.PatchDiscriminator(4)
    x = torch.zeros(1, 1, 8, 8, requires_grad=True)
    out = disc(x)
    assert out.shape == (1, 1, 4, 4)
    # the logit at (0, 0) sees only a 6×6 window, inside the top-left corner of the image
    (g,) = torch.autograd.grad(out[0, 0, 0, 0], x)
    seen = (g[0, 0] != 0).nonzero()
    assert seen[:, 0].max() < 6 and seen[:, 1].max() < 6


def test_perceptual_distance_zero_on_equal_and_positive_otherwise():
    torch.manual_seed(0)
    net = FeatureNet(4, 8)
    x, y = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    fx = vq.feature_maps(net, x)
    assert [f.shape[1] for f in fx] == [4, 8, 8]
    torch.testing.assert_close(vq.perceptual_distance(fx, fx), torch.zeros(3))
    d = vq.perceptual_distance(fx, vq.feature_maps(net, y))
    assert d.shape == (3,) and bool((d > 0).all())
    # scale invariance of the unit-normalised features: 2·f has the same direction as f
    torch.testing.assert_close(vq.perceptual_distance(fx, [2 * f for f in fx]), torch.zeros(3),
                               atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- prior --
def _prior(k=3, t=4, dropout=0.0):
    torch.manual_seed(0)
    return vq.CodePrior(k, t, d_model=16, n_heads=2, n_layers=2, dropout=dropout).double().eval()


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_prior_likelihood_sums_to_one_over_all_grids(dropout):
    prior = _prior(3, 4, dropout)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4)))  # all 81 grids
    with torch.no_grad():
        total = prior.log_prob(grids).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)


def test_prior_factorises_over_the_grid():
    prior = _prior(3, 4)
    s = torch.tensor([[2, 0, 1, 1], [0, 2, 2, 1]])
    # one-pass log p(s) equals the chain rule evaluated one prefix at a time
    chain = torch.zeros(2, dtype=torch.float64)
    start = torch.full((2, 1), 3)
    for i in range(4):
        inp = torch.cat([start, s[:, :i]], 1)
        logp = torch.log_softmax(prior._logits_of_inputs(inp)[:, -1], -1)
        chain += logp.gather(1, s[:, i:i + 1])[:, 0]
    torch.testing.assert_close(prior.log_prob(s), chain, rtol=0, atol=1e-12)
    # causal mask: changing s_j leaves the conditionals of positions <= j untouched
    s2 = s.clone()
    s2[:, 2] = (s2[:, 2] + 1) % 3
    a, b = prior.logits(s), prior.logits(s2)
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=0, atol=0)
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_prior_samples_follow_its_distribution():
    prior = _prior(2, 2)
    grids = torch.tensor(list(itertools.product(range(2), repeat=2)))
    p = prior.log_prob(grids).exp()
    s = prior.sample(20000, torch.Generator().manual_seed(0))
    freq = torch.stack([(s == g).all(1).double().mean() for g in grids])
    # 20000 draws: standard error <= 0.0036 per cell; 5 sigma
    torch.testing.assert_close(freq, p, rtol=0, atol=0.018)


def test_code_bits_per_dim():
    lp = torch.tensor([-16 * math.log(64)])  # a uniform prior over 64 codes, 16 positions
    assert float(vq.code_bits_per_dim(lp, 64)) == pytest.approx(16 * 6 / 64)


# ------------------------------------------------------------------ shapes / checks --
def test_autoencoder_shapes_and_decode_roundtrip():
    torch.manual_seed(0)
    ae = vq.VQAutoencoder(vq.VectorQuantizer(16, 4), channels=8).eval()
    x = torch.randn(5, 1, 8, 8)
    x_hat, q = ae(x)
    assert x_hat.shape == x.shape and q.indices.shape == (5, 4, 4)
    assert torch.equal(ae.encode(x), q.indices)
    torch.testing.assert_close(ae.decode(q.indices), x_hat)


@pytest.mark.parametrize("bad", [
    lambda: vq.VectorQuantizer(0, 3),
    lambda: vq.VectorQuantizer(4, 3, beta=-1.0),
    lambda: vq.VectorQuantizer(4, 3, decay=1.0),
    lambda: vq.VectorQuantizer(4, 3, restart_threshold=0.0),
    lambda: vq.perplexity(torch.tensor([0, 5]), 4),
    lambda: vq.nearest_code(torch.randn(3, 2), torch.randn(4, 3)),
    lambda: vq.CodePrior(4, 16, d_model=10, n_heads=4),
    lambda: vq.VectorQuantizer(4, 3)(torch.randn(2, 5, 2, 2)),
])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError):
        vq.perplexity(torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(TypeError):
        vq.VQAutoencoder(nn.Identity())
