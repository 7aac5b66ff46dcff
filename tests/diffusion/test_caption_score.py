"""Caption score, attribute-classifier plumbing, Sobel edges and masks on the shapes world."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.nn import functional as F

from deepnotes.data.shapes import COLOURS, KINDS, SIZES, Scene, ShapesWorld
from deepnotes.diffusion import caption_score as C


def _outline_band(instances: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3×3 window (zero = background padding) holds more than one instance label:
    the pixels on both sides of every shape's outline, (B, 1, H, W) bool."""
    pad = F.pad(instances.float()[:, None], (1, 1, 1, 1))
    hi = F.max_pool2d(pad, 3, 1)
    lo = -F.max_pool2d(-pad, 3, 1)
    return hi != lo


@pytest.fixture(scope="module")
def batch():
    return ShapesWorld(3, "val").batch(0, 400)


def test_sobel_equals_scipy(batch):
    x = (batch.images[:6].double().numpy() + 1) / 2
    ref = np.stack([np.sqrt(sum(ndimage.sobel(x[i, c], axis=a, mode="constant") ** 2
                                for c in range(3) for a in (0, 1))) / 4 for i in range(6)])
    np.testing.assert_allclose(C.sobel_magnitude(batch.images[:6])[:, 0].numpy(), ref, atol=1e-5)


def test_edges_of_single_shapes_are_their_outlines():
    b = ShapesWorld(4, "val", n_shapes=1).batch(0, 500)
    edges = C.edge_map(b.images)
    assert edges.shape == (500, 1, 32, 32)
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(edges.bool(), _outline_band(b.instances))


def test_edges_of_scenes_lie_on_outlines(batch):
    edges = C.edge_map(batch.images).bool()
    band = _outline_band(batch.instances)
    assert not (edges & ~band).any()                       # no edge away from an outline
    # an outline pixel is missed only where the Sobel window is symmetric (a 1-pixel gap between
    # two shapes of one colour); that is rare
    assert (edges & band).sum() >= 0.995 * band.sum()
    assert C.edge_f1(edges.float(), band.float()).min() > 0.98


def test_edge_f1_known_values():
    a = torch.zeros(1, 1, 8, 8)
    a[0, 0, 2, 1:7] = 1                                    # a horizontal line of 6 pixels
    b = torch.zeros_like(a)
    b[0, 0, 3, 1:7] = 1                                    # the same line 1 pixel lower
    assert C.edge_f1(a, b, tolerance=1).item() == pytest.approx(1.0)
    assert C.edge_f1(a, b, tolerance=0).item() == pytest.approx(0.0)
    c = torch.zeros_like(a)
    c[0, 0, 2, 1:4] = 1                                    # half of the line: P = 1, R = 1/2
    assert C.edge_f1(c, a, tolerance=0).item() == pytest.approx(2 / 3)
    empty = torch.zeros_like(a)
    assert C.edge_f1(empty, empty).item() == 1.0
    assert C.edge_f1(empty, a).item() == 0.0
    with pytest.raises(ValueError, match="tolerance"):
        C.edge_f1(a, b, tolerance=-1)


def test_shape_masks(batch):
    m = C.shape_masks(batch.instances)
    assert m.shape == (400, 1, 32, 32)
    fg = (batch.images > -1).any(1, keepdim=True).float()  # coloured pixels
    assert torch.equal(m, fg)
    with pytest.raises(TypeError, match="integer"):
        C.shape_masks(batch.instances.float())


def test_ground_truth_scenes_score_one(batch):
    assert C.caption_score(batch.scenes, batch.captions) == 1.0
    details = C.caption_score_details([s.shapes[::-1] for s in batch.scenes], batch.captions)
    assert all(v == 1.0 for v in details.values())         # the order of the shapes is free


def _other(value, choices):
    return next(c for c in choices if c != value)


@pytest.mark.parametrize("field,choices", [("kind", KINDS), ("colour", tuple(COLOURS)),
                                           ("size", tuple(SIZES))])
def test_perturbed_attribute_scores_zero(batch, field, choices):
    perturbed = []
    for i, scene in enumerate(batch.scenes):
        k = i % len(scene.shapes)
        shapes = list(scene.shapes)
        shapes[k] = dataclasses.replace(shapes[k], **{field: _other(getattr(shapes[k], field),
                                                                    choices)})
        perturbed.append(tuple(shapes))
    details = C.caption_score_details(perturbed, batch.captions)
    assert details["full"] == 0.0 and details["objects"] == 0.0
    assert details[field + "s"] == 0.0 and details["count"] == 1.0


def test_swapped_positions_break_the_relation(batch):
    multi = [s for s in batch.scenes if len(s.shapes) > 1]
    swapped = []
    for s in multi:
        a, b = s.shapes[0], s.shapes[1]
        a2 = dataclasses.replace(a, cx=b.cx, cy=b.cy)
        b2 = dataclasses.replace(b, cx=a.cx, cy=a.cy)
        swapped.append((a2, b2, *s.shapes[2:]))
    details = C.caption_score_details(swapped, [s.caption for s in multi])
    assert details["objects"] == 1.0 and details["full"] == 0.0


def test_missing_or_extra_shape_scores_zero(batch):
    multi = [s for s in batch.scenes if len(s.shapes) > 1]
    caps = [s.caption for s in multi]
    assert C.caption_score([s.shapes[:-1] for s in multi], caps) == 0.0
    assert C.caption_score([s.shapes + s.shapes[:1] for s in multi], caps) == 0.0


def test_relation_holds_and_bad_input():
    s = ShapesWorld(0).scenes(0, 1)[0]
    a = dataclasses.replace(s.shapes[0], cx=5, cy=10)
    b = dataclasses.replace(s.shapes[0], cx=20, cy=12)
    assert C.relation_holds("left of", a, b) and C.relation_holds("right of", b, a)
    assert not C.relation_holds("above", a, b) and not C.relation_holds("below", a, b)
    with pytest.raises(ValueError, match="rel"):
        C.relation_holds("near", a, b)
    with pytest.raises(ValueError, match="unknown word 'hexagon'"):
        C.match_caption((a,), "a small red hexagon")
    with pytest.raises(ValueError, match="same length"):
        C.caption_score([(a,)], [])
    with pytest.raises(TypeError, match="scene"):
        C.match_caption("a small red circle", "a small red circle")


def test_targets_round_trip_through_decoding(batch):
    """Logits equal to the targets (objectness: logit of the soft target) decode to the scenes'
    shapes, and the loss is then the entropy of the soft objectness targets."""
    t = C.scene_targets(batch.scenes)
    obj = t["object"]
    assert set(obj.unique().tolist()) == {0.0, C.NEIGHBOUR_OBJECTNESS, 1.0}
    assert (obj == 1).sum() == sum(len(s.shapes) for s in batch.scenes)
    assert C.NEIGHBOUR_OBJECTNESS == 0.5          # logit 0 below
    parts = [torch.where(obj == 1, 30.0, torch.where(obj == 0, -30.0, 0.0))[:, None]]
    for k in ("kind", "colour", "size", "dx", "dy"):
        onehot = F.one_hot(t[k].clamp(min=0), C.HEADS[k]).permute(0, 3, 1, 2).float()
        parts.append(onehot * 30)
    logits = torch.cat(parts, 1)
    decoded = C.predict_shapes(logits)
    for scene, shapes in zip(batch.scenes, decoded, strict=True):
        assert sorted(shapes, key=lambda s: (s.cy, s.cx)) == sorted(scene.shapes,
                                                                   key=lambda s: (s.cy, s.cx))
    assert C.caption_score(decoded, batch.captions) == 1.0
    # every neighbour cell names the centre too: move the peak to a neighbour, same scenes
    shifted = logits.clone()
    own = obj == 1
    near = F.max_pool2d(own.float()[:, None], 3, 1, 1)[:, 0].bool() & ~own
    first_near = torch.zeros_like(near)
    for i in range(len(batch.scenes)):       # one neighbour per image becomes the only peak
        cells = near[i].nonzero()
        if len(cells) and len(batch.scenes[i].shapes) == 1:
            y, x = cells[0].tolist()
            first_near[i, y, x] = True
    shifted[:, 0] = torch.where(first_near, 30.0, torch.where(own & first_near.flatten(1).any(1)
                                                              [:, None, None], -30.0,
                                                              logits[:, 0]))
    assert C.caption_score(C.predict_shapes(shifted), batch.captions) == 1.0

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits[: x.shape[0]]

    loss, metrics = C.attribute_loss(Fixed(), batch.images, t)
    entropy = math.log(2) * float((obj == 0.5).float().mean())  # H(½) = ln 2 per soft cell
    assert loss.item() == pytest.approx(entropy, abs=1e-5)
    assert set(metrics) == {"object_bce", "attr_ce"}


def test_classifier_shapes_and_checks():
    net = C.AttributeClassifier(channels=8)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert net(x).shape == (3, sum(C.HEADS.values()), C.GRID, C.GRID)
    assert net.features(x).shape == (3, 16) and net.feature_dim == 16
    assert len(C.predict_scenes(net, x)) == 3
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 32, 32\)"):
        net(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        C.AttributeClassifier(channels=0)
    bad = Scene((dataclasses.replace(ShapesWorld(0).scenes(0, 1)[0].shapes[0], cx=40),), ())
    with pytest.raises(ValueError, match="outside the image"):
        C.scene_targets([bad])


def test_shapes_fid_is_zero_on_its_reference_and_grows_with_noise(batch):
    torch.manual_seed(0)
    fid = C.ShapesFID(C.AttributeClassifier(channels=4), batch.images[:200])
    assert fid.fid(batch.images[:200]) == pytest.approx(0.0, abs=1e-6)
    real = fid.fid(batch.images[200:])
    noisy = fid.fid((batch.images[200:] + 0.5 * torch.randn(200, 3, 32, 32)).clamp(-1, 1))
    assert 0 < real < noisy
    with pytest.raises(TypeError, match="features"):
        C.ShapesFID(torch.nn.Linear(2, 2), batch.images[:10])
