"""The gan and wasserstein-gan experiments stop on a NaN critic with the step named and keep what
they had written (config, log, the metrics logged before the failure)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from deepnotes.experiments import gan as gan_exp
from deepnotes.experiments import wasserstein_gan as wgan_exp
from deepnotes.generative import gan


class _NaNCritic(torch.nn.Module):
    """A 2-D critic whose output turns NaN after ``k`` forward calls."""

    def __init__(self, k):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.calls, self.k = 0, k

    def forward(self, x):
        self.calls += 1
        out = self.lin(x)
        return out * float("nan") if self.calls > self.k else out


@pytest.mark.parametrize("module", [gan_exp, wgan_exp])
def test_nan_critic_stops_the_run_and_keeps_what_was_written(module, tmp_path, monkeypatch):
    real_mlp = gan.mlp

    def mlp(d_in, d_out, *args, **kwargs):
        if d_in == 2 and d_out == 1:  # the 2-D critic: NaN from its 40th call on
            return _NaNCritic(40)
        return real_mlp(d_in, d_out, *args, **kwargs)

    monkeypatch.setattr(gan, "mlp", mlp)
    config = dataclasses.replace(module.PRESETS["smoke"], out=str(tmp_path), device="cpu")
    with pytest.raises(gan.NonFiniteLossError, match=r"critic \(discriminator\) loss is nan at "
                                                     r"step \d+"):
        module.run(config)
    (run_dir,) = (tmp_path / module.__name__.rsplit(".", 1)[1].replace("_", "-")).iterdir()
    meta = json.loads((run_dir / "metrics.json").read_text())
    assert meta["status"] == "failed"
    # the evaluation at step 0 of the first 2-D run was logged before the failure
    assert any(k.endswith("modes_covered_at_0") for k in meta["metrics"]), meta["metrics"]
    log = (run_dir / "log.txt").read_text()
    assert "loss is nan at step" in log
    assert (run_dir / "config.json").is_file()
