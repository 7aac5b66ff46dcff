"""deepnotes.nn.digits_models: the FID feature network, its evaluator, the digits classifiers;
and the cached, checkpointed trainings of the experiments helper built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepnotes.nn.digits_models import (
    ClassifierSpec,
    DigitsFID,
    FeatureNet,
    build_classifier,
    digits,
    train_digits_classifier,
)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_digits_and_feature_net_shapes():
    x, y = digits("test")
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.shape == (x.shape[0],)
    assert float(x.min()) == -1 and float(x.max()) == 1
    net = FeatureNet(4, n_features=7)
    assert net.features(x[:5]).shape == (5, 7) and net(x[:5]).shape == (5, 10)
    with pytest.raises(ValueError, match="channels"):
        FeatureNet(0)
    noisy = build_classifier(ClassifierSpec(noisy=True, channels=4), sigma_data=0.6)
    assert noisy(x[:3], torch.full((3,), 0.5)).shape == (3, 10) and noisy.sigma_data == 0.6


def test_classifier_training_depends_on_the_spec_alone_and_learns():
    spec = ClassifierSpec(channels=4, n_steps=60, batch_size=64, lr=5e-3, seed=3)
    torch.manual_seed(1)
    a, meta_a = train_digits_classifier(spec)
    torch.manual_seed(2)  # a different global state: same network (init seeded from spec.seed)
    b, meta_b = train_digits_classifier(spec)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert meta_a == meta_b
    assert meta_a["test_accuracy"] > 0.5  # chance is 0.1; 60 steps of 64 images
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    with pytest.raises(TypeError, match="ClassifierSpec"):
        train_digits_classifier({"noisy": False})


def test_digits_fid_separates_digits_from_noise():
    torch.manual_seed(0)
    net = FeatureNet(4)  # even untrained features tell digits from noise
    x, y = digits("test")
    scorer = DigitsFID(net)
    self_fid = DigitsFID(net, reference=x).fid(x)
    assert self_fid == pytest.approx(0.0, abs=1e-6)
    real, noise = scorer.fid(x), scorer.fid(torch.rand_like(x) * 2 - 1)
    assert 0 <= real < noise
    # accuracy is the share of matching argmax labels
    pred = net(x).argmax(1)
    assert scorer.accuracy(x, pred) == 1.0
    assert scorer.accuracy(x, (pred + 1) % 10) == 0.0
    with pytest.raises(TypeError, match="features"):
        DigitsFID(torch.nn.Linear(2, 2))


class _Stop(Exception):
    pass


def _stop_after(k):
    def track(iterable, description=""):
        for i, item in enumerate(iterable):
            if i == k:
                raise _Stop
            yield item
    return track


def test_cached_dequantized_training_resumes_mid_epoch_bit_identically(tmp_path, monkeypatch):
    """The dequantised-digits U-Net draws new data every epoch: the checkpoint carries the
    epoch's data, so a training cut mid-epoch and continued ends with the same weights."""
    from deepnotes.experiments import _diffusion_digits as H
    from deepnotes.experiments import _digits_cache

    monkeypatch.setattr(_digits_cache, "CHECKPOINT_EVERY", 3)
    spec = H.DequantSpec(channels=4, emb_dim=8, epochs=2, batch_size=256)  # 5 steps an epoch
    logs: list[str] = []
    torch.manual_seed(0)
    full, meta_full = H.train_dequantized_denoiser(spec, str(tmp_path / "a"), logs.append,
                                                   lambda it, d: it)
    torch.manual_seed(0)
    with pytest.raises(_Stop):  # cut at step 7: the last checkpoint is step 6, mid-epoch 2
        H.train_dequantized_denoiser(spec, str(tmp_path / "b"), logs.append, _stop_after(7))
    ckpt = H.cache_dir(str(tmp_path / "b"))
    assert [p.name for p in ckpt.glob("*.ckpt")]
    torch.manual_seed(0)
    resumed, meta = H.train_dequantized_denoiser(spec, str(tmp_path / "b"), logs.append,
                                                 lambda it, d: it)
    assert any(line.startswith("continuing") for line in logs)
    assert not list(ckpt.glob("*.ckpt"))  # removed once the network is cached
    for (name, pa), pb in zip(full.state_dict().items(), resumed.state_dict().values(),
                              strict=True):
        assert torch.equal(pa, pb), name
    np.testing.assert_array_equal(meta["losses"], meta_full["losses"])
