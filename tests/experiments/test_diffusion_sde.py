"""The diffusion-sde smoke run logs the digits bits/dim through the probability-flow ODE, with
its spread and cost, in a range a barely trained model must land in."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from deepnotes.experiments import _diffusion_digits as H
from deepnotes.experiments import diffusion_sde


def test_smoke_logs_digits_bits_per_dim(tmp_path):
    """Range: the bound is ``−log₂ P(k)/64`` of a (sub-)probability, so ≥ 0; and 10 Adam steps
    start from the zero-output U-Net, which is exactly the denoiser of ``N(0, σ_d² I)``
    (test_diffusion_digits checks this to 1e-3), so the smoke model must not be worse than that
    Gaussian's closed-form bits/dim on the same images (≈ 4.8, above the uniform 17-level
    model's log₂ 17 ≈ 4.09; the smoke run measures ≈ 4.4)."""
    config = dataclasses.replace(diffusion_sde.PRESETS["smoke"], out=str(tmp_path),
                                 device="cpu")
    result = diffusion_sde.run(config)
    m = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
    bpd = m["likelihood/digits_ode_bits_per_dim"]

    rng = np.random.default_rng([config.seed, 17])  # the experiment's fixed test noise
    y = H.dequantized_digits("test", rng)[:config.digits_test].double().flatten(1)
    sd = float(H.dequantized_digits("train", np.random.default_rng(config.seed)).std())
    var = sd ** 2 + config.digits_sigma_min ** 2
    log_py = (-0.5 * y ** 2 / var - 0.5 * math.log(2 * math.pi * var)).sum(1)
    gauss = float((-(log_py + 64 * math.log(2 / 17)) / (64 * math.log(2))).mean())

    assert 0 < bpd < gauss
    assert 0 < m["likelihood/digits_ode_train_bits_per_dim"] < gauss
    for key in ("digits_ode_bits_per_dim_sem", "digits_ode_nfe", "digits_probe_sd_bits_per_dim"):
        assert math.isfinite(m[f"likelihood/{key}"]) and m[f"likelihood/{key}"] > 0, key
    assert m["likelihood/digits_uniform_bits_per_dim"] == math.log2(17)
    assert any(p.name.startswith("digits_likelihood") for p in result.figures)
