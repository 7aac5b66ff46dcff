"""SimCLR's NT-Xent against a loop over pairs and its closed-form minimum; augmentations, masking
and the linear probe."""

import math

import numpy as np
import pytest
import torch

from deepnotes.generative import ssl


def _nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """Eq. 1-2 written as loops over anchors and candidates, in float64."""
    z = torch.cat([z1, z2]).double()
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        sims = {}
        for k in range(n2):
            if k != i:
                sims[k] = float(z[i] @ z[k] / (z[i].norm() * z[k].norm()))
        denom = sum(math.exp(s / tau) for s in sims.values())
        total += -math.log(math.exp(sims[pos] / tau) / denom)
    return total / n2


def _simplex(n: int, d: int) -> torch.Tensor:
    """``n`` unit vectors in R^d (d >= n - 1) with all pairwise cosines -1/(n-1)."""
    e = torch.eye(n, dtype=torch.float64)
    v = e - e.mean(0)  # centred basis: a regular simplex in an (n-1)-dim subspace of R^n
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(3)))
    basis, _ = torch.linalg.qr(v.T)  # (n, n) orthonormal columns spanning the simplex
    coords = v @ basis[:, : n - 1]  # (n, n-1)
    out = torch.zeros(n, d, dtype=torch.float64)
    out[:, : n - 1] = coords
    return torch.nn.functional.normalize(out @ q.T, dim=1)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.5), (5, 7, 0.1), (8, 4, 1.0), (6, 16, 0.07)])
def test_nt_xent_equals_the_loop_over_pairs(n, d, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    assert ssl.nt_xent(z1, z2, tau).item() == pytest.approx(_nt_xent_loop(z1, z2, tau),
                                                            rel=1e-12)


def test_nt_xent_is_symmetric_in_the_views_and_ignores_norms():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    z2 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    base = ssl.nt_xent(z1, z2, 0.3)
    assert ssl.nt_xent(z2, z1, 0.3).item() == pytest.approx(base.item(), rel=1e-13)
    scale = torch.rand(6, 1, generator=g, dtype=torch.float64) + 0.1
    assert ssl.nt_xent(z1 * scale, z2, 0.3).item() == pytest.approx(base.item(), rel=1e-12)


def test_random_pairs_at_infinite_temperature_are_at_chance():
    # tau -> inf makes every candidate equally likely: loss -> log(2N - 1)
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 9, 4, generator=g, dtype=torch.float64)
    assert ssl.nt_xent(z1, z2, 1e9).item() == pytest.approx(math.log(17), rel=1e-8)


@pytest.mark.parametrize("n", [2, 4, 9])
@pytest.mark.parametrize("tau", [1.0, 0.3, 0.05, 0.01])
def test_identical_simplex_views_reach_the_closed_form_minimum(n, tau):
    z = _simplex(n, d=n + 2)
    cos = z @ z.T
    off = cos[~torch.eye(n, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / (n - 1)), atol=1e-12, rtol=0)
    # the loss is logsumexp(logits) - logit_pos with logits of size 1/tau: its absolute
    # round-off is a few ulps of 1/tau, which hides minima below ~1e-15 at small tau
    abs_tol = 8 * np.finfo(np.float64).eps / tau
    assert ssl.nt_xent(z, z.clone(), tau).item() == pytest.approx(ssl.nt_xent_minimum(n, tau),
                                                                  rel=1e-10, abs=abs_tol)


@pytest.mark.parametrize("tau", [1.0, 0.2, 0.05])
def test_identical_views_never_go_below_the_minimum(tau):
    g = torch.Generator().manual_seed(7)
    for trial in range(20):
        n, d = 3 + trial % 6, 2 + trial % 5
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        assert ssl.nt_xent(z, z, tau).item() >= ssl.nt_xent_minimum(n, tau) - 1e-12


def test_tau_to_zero_drives_identical_views_to_the_minimum_zero():
    # With identical views and distinct directions, every negative has s < 1 = positive: as
    # tau -> 0 the loss and its closed-form minimum both go to 0 (and they agree at the simplex).
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 8, generator=g, dtype=torch.float64)
    losses = [ssl.nt_xent(z, z, tau).item() for tau in (1.0, 0.1, 0.01, 0.001)]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 1e-12
    assert ssl.nt_xent_minimum(6, 0.001) < 1e-300
    assert ssl.nt_xent_minimum(6, 1e6) == pytest.approx(math.log(11), rel=1e-5)


def test_gradient_descent_on_identical_views_finds_the_minimum():
    # Free embeddings z = z1 = z2 trained on Eq. 2 converge to the simplex value of Eq. 3.
    n, tau = 5, 0.5
    z = torch.randn(n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 5x6 tensors: extra threads only wait on each other
    try:
        for _ in range(300):
            opt.zero_grad()
            loss = ssl.nt_xent(z, z, tau)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() == pytest.approx(ssl.nt_xent_minimum(n, tau), rel=1e-6)


def test_nt_xent_rejects_bad_input():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="tau"):
        ssl.nt_xent(z, z, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        ssl.nt_xent(z, z[:3], 0.5)
    with pytest.raises(ValueError, match="N = 2"):
        ssl.nt_xent(z[:1], z[:1], 0.5)
    with pytest.raises(TypeError, match="z1"):
        ssl.nt_xent(z.numpy(), z, 0.5)
    with pytest.raises(ValueError, match="n must"):
        ssl.nt_xent_minimum(1, 0.5)


# --- augmentations ------------------------------------------------------------------------------
def _digits_batch(b=16):
    from deepnotes.data import load_digits

    x, _ = load_digits("train")
    return torch.from_numpy(x[:b])


AUGS = {
    "shift": lambda x, g: ssl.random_shift(x, 2, g),
    "crop": lambda x, g: ssl.random_resized_crop(x, (0.5, 1.0), g),
    "elastic": lambda x, g: ssl.elastic_deform(x, 1.5, 1.0, g),
    "noise": lambda x, g: ssl.add_noise(x, 0.2, g),
    "augment": lambda x, g: ssl.Augment()(x, g),
    "mask": lambda x, g: ssl.mask_patches(x, 2, 0.5, g)[0],
}


@pytest.mark.parametrize("name", AUGS)
def test_augmentations_keep_shape_dtype_range_and_are_deterministic(name):
    x = _digits_batch()
    fn = AUGS[name]
    a = fn(x, torch.Generator().manual_seed(11))
    b = fn(x, torch.Generator().manual_seed(11))
    c = fn(x, torch.Generator().manual_seed(12))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_shift_moves_pixels_exactly():
    x = torch.zeros(1, 8, 8)
    x[0, 3, 4] = 1.0
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    s = torch.randint(-2, 3, (1, 2), generator=g)[0]
    g.set_state(state)
    y = ssl.random_shift(x, 2, g)
    assert y.sum() == 1.0 and y[0, 3 + s[0], 4 + s[1]] == 1.0
    assert torch.equal(ssl.random_shift(x, 0, g), x)


def test_identity_settings_return_the_image():
    x = _digits_batch(8)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(ssl.random_resized_crop(x, (1.0, 1.0), g), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(ssl.elastic_deform(x, 0.0, 1.0, g), x, atol=1e-6, rtol=0)
    assert torch.equal(ssl.add_noise(x, 0.0, g), x)


def test_augmentations_reject_bad_arguments():
    x = _digits_batch(2)
    g = torch.Generator()
    with pytest.raises(ValueError, match="max_shift"):
        ssl.random_shift(x, -1, g)
    with pytest.raises(ValueError, match="scale"):
        ssl.random_resized_crop(x, (0.0, 1.0), g)
    with pytest.raises(ValueError, match="sigma"):
        ssl.elastic_deform(x, 1.0, 0.0, g)
    with pytest.raises(TypeError, match="generator"):
        ssl.add_noise(x, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        ssl.add_noise(x[0], 0.1, g)
    with pytest.raises(ValueError, match="p_crop"):
        ssl.Augment(p_crop=1.5)


# --- masked prediction --------------------------------------------------------------------------
def test_mask_patches_hides_whole_patches_at_the_requested_ratio():
    x = _digits_batch(32)
    masked, mask = ssl.mask_patches(x, 2, 0.25, torch.Generator().manual_seed(0), fill=0.5)
    assert mask.dtype == torch.bool and mask.shape == x.shape
    # 16 patches of 2x2, 4 hidden: 16 pixels per image
    assert (mask.sum(dim=(1, 2)) == 16).all()
    blocks = mask.view(32, 4, 2, 4, 2)
    assert (blocks.all(dim=(2, 4)) == blocks.any(dim=(2, 4))).all()  # patches all-or-nothing
    assert torch.equal(masked[mask], torch.full((32 * 16,), 0.5))
    assert torch.equal(masked[~mask], x[~mask])


def test_masked_mse_counts_only_hidden_pixels():
    g = torch.Generator().manual_seed(5)
    pred, target = torch.rand(2, 4, 8, 8, generator=g)
    mask = torch.rand(4, 8, 8, generator=g) < 0.3
    expected = ((pred - target)[mask] ** 2).mean()
    torch.testing.assert_close(ssl.masked_mse(pred, target, mask), expected)
    changed = torch.where(mask, pred, pred + 5.0)  # visible pixels do not matter
    torch.testing.assert_close(ssl.masked_mse(changed, target, mask), expected)
    with pytest.raises(ValueError, match="no pixel"):
        ssl.masked_mse(pred, target, torch.zeros_like(mask))


# --- networks and probe -------------------------------------------------------------------------
def test_networks_shapes():
    enc = ssl.DigitsEncoder(dim=16)
    x = torch.rand(5, 8, 8)
    assert enc(x).shape == (5, 16)
    assert ssl.SimCLR(enc, proj_dim=8)(x).shape == (5, 8)
    out = ssl.MaskedPredictor(enc)(x)
    assert out.shape == (5, 8, 8) and out.min() >= 0 and out.max() <= 1
    feats = ssl.encode(enc, x, batch_size=2)
    assert feats.shape == (5, 16) and feats.dtype == np.float64 and enc.training


def test_label_subset_is_stratified_with_one_per_class_at_least():
    y = np.repeat(np.arange(10), [30, 31, 29, 35, 30, 30, 28, 33, 30, 31])
    rng = np.random.default_rng(0)
    idx = ssl.label_subset(y, 0.01, rng)
    assert np.array_equal(np.bincount(y[idx]), np.ones(10, int))
    idx = ssl.label_subset(y, 0.1, rng)
    assert np.array_equal(np.bincount(y[idx]), [3, 3, 3, 4, 3, 3, 3, 3, 3, 3])
    assert len(np.unique(idx)) == len(idx)
    assert len(ssl.label_subset(y, 1.0, rng)) == len(y)
    with pytest.raises(ValueError, match="fraction"):
        ssl.label_subset(y, 0.0, rng)


def test_linear_probe_matches_sklearn_on_separable_and_random_features():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 4
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(size=(300, 5))
    acc = ssl.linear_probe(x[:200], y[:200], x[200:], y[200:])
    scaler = StandardScaler().fit(x[:200])
    ref = LogisticRegression(max_iter=2000).fit(scaler.transform(x[:200]), y[:200])
    assert acc == pytest.approx(ref.score(scaler.transform(x[200:]), y[200:]))
    assert acc > 0.95
    noise = rng.normal(size=(300, 5))
    assert ssl.linear_probe(noise[:200], y[:200], noise[200:], y[200:]) < 0.6
