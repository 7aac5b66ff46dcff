"""The digits-diffusion helpers: NFE bookkeeping matches the calls each sampler makes, every
sampler's native grid is valid, and the network cache is hit on the second call."""

from __future__ import annotations

import pytest
import torch

from deepnotes.experiments import _diffusion_digits as H


@pytest.mark.parametrize("name", sorted(H.SAMPLERS))
@pytest.mark.parametrize("budget", [1, 4, 5, 20])
def test_nfe_bookkeeping_counts_real_calls(name, budget):
    calls = []

    def den(x, sigma):
        calls.append(1)
        return torch.zeros_like(x)

    n_steps = H.steps_for_nfe(name, budget)
    x = H.sample(den, name, n_steps, 3, seed=0)
    assert x.shape == (3, 1, 8, 8) and bool(torch.isfinite(x).all())
    assert len(calls) == H.nfe_of(name, n_steps)
    assert len(calls) <= max(budget, 2) + 1  # at most one evaluation over the budget


def test_native_grids_and_unknown_sampler():
    for name in H.SAMPLERS:
        sig = H.sigmas_for(name, 10)
        assert sig.shape == (11,) and float(sig[-1]) == 0 and bool((sig[1:] < sig[:-1]).all())
    # the DDPM grid with 1000 steps is the whole linear-β table, 0.01 up to ~157
    full = H.sigmas_for("ddpm", 1000)
    assert float(full[-2]) == pytest.approx(0.01, rel=1e-3) and 150 < float(full[0]) < 160
    with pytest.raises(ValueError, match="unknown sampler"):
        H.sample(lambda x, s: x, "nope", 3, 2, 0, sigmas=H.sigmas_for("euler", 3))


def test_classifier_cache_is_reused(tmp_path):
    spec = H.ClassifierSpec(n_steps=3, channels=4)
    logs = []
    with H.one_thread():
        a, meta_a = H.train_classifier(spec, 0.75, str(tmp_path), logs.append, lambda it, d: it)
        b, meta_b = H.train_classifier(spec, 0.75, str(tmp_path), logs.append, lambda it, d: it)
    assert logs[0].startswith("trained") and logs[1].startswith("loaded")
    assert meta_a == meta_b
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_dequantized_digits_are_the_flows_view_on_minus_one_one():
    import numpy as np

    from deepnotes.data import N_LEVELS, load_digits

    y = H.dequantized_digits("test", np.random.default_rng(3))
    x, _ = load_digits("test", "dequantized", rng=np.random.default_rng(3))
    assert y.shape == (x.shape[0], 1, 8, 8)
    torch.testing.assert_close(y[:, 0], torch.from_numpy(2 * x - 1))
    assert float(y.min()) >= -1 and float(y.max()) < 1
    # every pixel lies in the cell of its grey level k: floor(17 (y + 1)/2) recovers k
    k = torch.floor(N_LEVELS * (y.double() + 1) / 2)
    raw, _ = load_digits("test", "float")
    torch.testing.assert_close(k[:, 0], torch.from_numpy(raw * (N_LEVELS - 1)).double().round())


def test_untrained_denoiser_bits_per_dim_is_the_gaussian_closed_form():
    """The U-Net's output layer starts at zero, so the untrained EDM denoiser is
    ``D(y; σ) = c_skip y = σ_d² y/(σ² + σ_d²)``: the exact denoiser of ``N(0, σ_d² I)``. Its ODE
    density at σ_min is ``N(0, (σ_d² + σ_min²) I)``, whose 17-level bits/dim we compute here in
    the flows' [0, 1) coordinates (``x = (y + 1)/2``), independently of the experiment's
    log-Jacobian. The field's Jacobian is a multiple of I, so a Rademacher probe gives the exact
    trace and only the solver (rtol 1e-5) and the N(0, σ_max²) prior (≈ 6e-5 bits/dim at
    σ_max = 80) separate the two: 1e-3 bits/dim covers both; a missing ``ln 2`` per pixel
    would be off by 1."""
    import math

    import numpy as np

    from deepnotes.diffusion.parameterizations import EDMPrecond
    from deepnotes.diffusion.unet import UNet

    sd, s_min = 0.7, 0.002
    model = EDMPrecond(UNet(1, 4, (1, 2), 0, 8), sd).requires_grad_(False)
    y = H.dequantized_digits("test", np.random.default_rng(4))[:8]
    with H.one_thread():
        bpd, nfe = H.ode_bits_per_dim(model, y, s_min, 80.0, 1e-5,
                                      torch.Generator().manual_seed(0))
    x = (y.double().flatten(1) + 1) / 2
    var = (sd ** 2 + s_min ** 2) / 4
    log_px = (-0.5 * (x - 0.5) ** 2 / var - 0.5 * math.log(2 * math.pi * var)).sum(1)
    expected = -(log_px - 64 * math.log(17)) / (64 * math.log(2))
    assert nfe > 10
    torch.testing.assert_close(bpd, expected, rtol=0, atol=1e-3)


def test_dequantized_denoiser_cache_is_reused(tmp_path):
    spec = H.DequantSpec(channels=4, emb_dim=8, epochs=1)
    logs = []
    with H.one_thread():
        a, meta_a = H.train_dequantized_denoiser(spec, str(tmp_path), logs.append,
                                                 lambda it, d: it)
        b, meta_b = H.train_dequantized_denoiser(spec, str(tmp_path), logs.append,
                                                 lambda it, d: it)
    assert logs[0].startswith("trained") and logs[1].startswith("loaded")
    # one epoch of 1347 images in batches of 128 is 10 full batches (the rest is dropped)
    assert meta_a == meta_b and len(meta_a["losses"]) == 10
    # σ_d is the std of dequantised digits on [-1, 1) (0.709; on [0, 1) it would be half)
    assert b.backbone.n_classes == 0 and 0.6 < meta_a["sigma_data"] < 0.8
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
