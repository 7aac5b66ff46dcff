"""The shapes-world cache: small variants train, are cached, reload equal; corrupt files fail."""

from __future__ import annotations

import math

import pytest
import torch

from deepnotes.data.shapes import ShapesWorld
from deepnotes.diffusion.caption_score import AttributeClassifier, ShapesFID, predict_scenes
from deepnotes.diffusion.text_encoder import TextEncoder
from deepnotes.experiments import _shapes_cache as SC


def _track(it, description=""):
    return it


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("c", [4, 16])
def test_autoencoder_small_trains_caches_and_reloads(out, c):
    logs: list[str] = []
    model, meta = SC.autoencoder(c, logs.append, _track, small=True, out=out)
    assert model.config.latent_channels == c and not model.training
    assert meta["scaling_factor"] == pytest.approx(float(model.scaling_factor))
    assert (meta["shift_factor"] != 0.0) == (c == 16)          # SD3 shifts, SD1 does not
    x = ShapesWorld(0, "val").batch(0, 64).images
    z = model.encode_latents(x, generator=torch.Generator().manual_seed(5))
    assert z.shape == (64, c, 8, 8)
    # the scale is 1/std of posterior draws of these very images (other draws), so std ≈ 1
    assert 0.9 < float(z.std()) < 1.1
    if c == 16:
        assert abs(float(z.mean())) < 0.1
    assert math.isfinite(meta["psnr_db"]) and meta["mse"] > 0
    again, meta2 = SC.autoencoder(c, logs.append, _track, small=True, out=out)
    assert logs[-1].startswith("loaded cached autoencoder-c")
    assert meta2["psnr_db"] == meta["psnr_db"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="c must be 4 or 16"):
        SC.autoencoder(8, logs.append, _track, small=True, out=out)


def test_classifier_fid_and_text_encoder_small(out):
    net, meta = SC.caption_scorer(lambda m: None, _track, small=True, out=out)
    assert isinstance(net, AttributeClassifier)
    assert 0.0 <= meta["caption_score"] <= 1.0 and set(meta["details"]) >= {"full", "count"}
    b = ShapesWorld(0, "val").batch(0, 8)
    assert len(predict_scenes(net, b.images)) == 8
    fid, fmeta = SC.shapes_fid(lambda m: None, _track, small=True, n_reference=100, out=out)
    assert isinstance(fid, ShapesFID) and fmeta["floor_fid"] >= 0
    assert fid.fid(ShapesWorld(0, "val").batch(1, 100).images) == pytest.approx(
        fmeta["floor_fid"])
    enc, tmeta = SC.text_encoder(lambda m: None, _track, small=True, out=out)
    assert isinstance(enc, TextEncoder)
    hidden, pooled = enc(b.tokens, b.attention_mask)
    assert hidden.shape == (8, b.tokens.shape[1], enc.hidden_size)
    assert pooled.shape == (8, enc.hidden_size)
    assert set(tmeta["retrieval"]) == {"text_to_image", "image_to_text"}
    assert not any(p.requires_grad for p in enc.parameters())


def test_corrupt_cache_file_is_named(tmp_path):
    spec = SC.autoencoder_spec(4, small=True)
    path = SC._path(str(tmp_path), "autoencoder-c4", spec)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=f"cached network {path} is corrupt"):
        SC.autoencoder(4, lambda m: None, _track, small=True, out=str(tmp_path))


def test_classifier_augmentation():
    x = ShapesWorld(0, "val").batch(0, 16).images
    none = SC.ClassifierSpec(noise=0.0, blur=0.0, gain=0.0, offset=0.0)
    torch.testing.assert_close(SC.augment(x, none, torch.Generator().manual_seed(0)), x)
    spec = SC.classifier_spec()
    a = SC.augment(x, spec, torch.Generator().manual_seed(0))
    b = SC.augment(x, spec, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= -1 and a.max() <= 1 and not torch.equal(a, x)
    # the background is lifted by at most the offset plus the noise
    bg = (x == -1).all(1, keepdim=True).expand_as(x)
    assert 0 < float((a[bg] + 1).mean()) < spec.offset
