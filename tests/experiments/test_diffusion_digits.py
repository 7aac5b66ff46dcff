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
