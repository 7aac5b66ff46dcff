"""The captioned shapes world: attributes agree with pixels, captions round-trip, seeds decide."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepnotes.data.shapes import (
    COLOURS,
    CONTEXT_LENGTH,
    IMAGE_SIZE,
    KINDS,
    MAX_SHAPES,
    RELATION_MARGIN,
    RELATIONS,
    SIZES,
    CaptionTokenizer,
    Scene,
    Shape,
    ShapesWorld,
    parse_caption,
    relation,
    render,
    sample_scene,
    shape_mask,
)


@pytest.fixture(scope="module")
def batch():
    return ShapesWorld(seed=0).batch(0, 384)


def _pixels(batch, b):
    """Image ``b`` back in uint8 RGB, shape (H, W, 3)."""
    return ((batch.images[b].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


def test_shapes_and_ranges(batch):
    assert batch.images.shape == (384, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch.images.dtype == torch.float32
    assert float(batch.images.min()) == -1.0 and float(batch.images.max()) <= 1.0
    assert batch.tokens.shape == batch.attention_mask.shape == (384, CONTEXT_LENGTH)
    assert batch.instances.shape == (384, IMAGE_SIZE, IMAGE_SIZE)
    assert set(batch.tensors()) == {"images", "tokens", "attention_mask", "instances"}


def test_attributes_match_pixels(batch):
    for b, scene in enumerate(batch.scenes):
        img, inst = _pixels(batch, b), batch.instances[b].numpy()
        assert set(np.unique(inst)) == set(range(len(scene.shapes) + 1))
        for k, shape in enumerate(scene.shapes):
            colour = COLOURS[shape.colour]
            assert tuple(img[shape.cy, shape.cx]) == colour          # colour at the centre
            ys, xs = np.nonzero(inst == k + 1)
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == shape.bbox
            assert (img[inst == k + 1] == colour).all()
            assert xs.max() - xs.min() == 2 * SIZES[shape.size]
        assert (img[inst == 0] == 0).all()                            # black background


def test_relations_hold_for_every_pixel(batch):
    seen = set()
    for b, scene in enumerate(batch.scenes):
        inst = batch.instances[b].numpy()
        ys0, xs0 = np.nonzero(inst == 1)
        for k, rel in enumerate(scene.relations):
            ys, xs = np.nonzero(inst == k + 2)
            holds = {"left of": xs0.max() < xs.min(), "right of": xs0.min() > xs.max(),
                     "above": ys0.max() < ys.min(), "below": ys0.min() > ys.max()}[rel]
            assert holds, (scene.caption, rel)
            seen.add(rel)
    assert seen == set(RELATIONS)


def test_every_attribute_occurs(batch):
    shapes = [s for scene in batch.scenes for s in scene.shapes]
    assert {s.kind for s in shapes} == set(KINDS)
    assert {s.colour for s in shapes} == set(COLOURS)
    assert {s.size for s in shapes} == set(SIZES)
    counts = np.bincount([len(s.shapes) for s in batch.scenes], minlength=MAX_SHAPES + 1)
    assert counts[0] == 0 and (counts[1:] > 384 / MAX_SHAPES * 0.7).all()   # ~uniform counts
    for scene in batch.scenes:
        pairs = [(s.kind, s.colour) for s in scene.shapes]
        assert len(set(pairs)) == len(pairs)


def test_relation_rule():
    a = Shape("circle", "red", "small", 5, 10)
    assert relation(a, Shape("square", "blue", "small", 20, 12)) == "left of"
    assert relation(a, Shape("square", "blue", "small", 5, 25)) == "above"
    assert relation(a, Shape("square", "blue", "small", 5 + 10, 10 + 10 - RELATION_MARGIN + 1)) \
        is None


def test_shape_masks_touch_their_box_and_hold_the_centre():
    for kind in KINDS:
        for size in SIZES:
            s = Shape(kind, "red", size, 15, 16)
            m = shape_mask(s)
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == s.bbox
            assert m[s.cy, s.cx]
    # Different kinds draw different pixels.
    masks = {k: shape_mask(Shape(k, "red", "large", 15, 15)).tobytes() for k in KINDS}
    assert len(set(masks.values())) == len(KINDS)
    with pytest.raises(ValueError, match="leaves"):
        shape_mask(Shape("circle", "red", "large", 2, 15))


def test_tokenizer_round_trips(batch):
    tok = CaptionTokenizer()
    for caption, row, mask in zip(batch.captions, batch.tokens, batch.attention_mask,
                                  strict=True):
        ids = tok.encode(caption)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert row[:len(ids)].tolist() == ids and (row[len(ids):] == tok.pad_id).all()
        assert int(mask.sum()) == len(ids)
        assert tok.decode(row) == caption == tok.decode(ids)
    assert max(len(c.split()) for c in batch.captions) + 2 == CONTEXT_LENGTH


def test_caption_parses_back_to_attributes(batch):
    for scene in batch.scenes:
        objects, relations = parse_caption(scene.caption)
        assert objects == [(s.size, s.colour, s.kind) for s in scene.shapes]
        assert relations == list(scene.relations)
    assert Scene((Shape("cross", "green", "large", 20, 20),), ()).caption == "a large green cross"


def test_unknown_word_is_named():
    tok = CaptionTokenizer()
    with pytest.raises(ValueError, match="unknown word 'dog'"):
        tok.encode("a small red dog")
    with pytest.raises(ValueError, match="unknown word 'Red'"):
        tok(["a small blue circle", "a small Red circle"])
    with pytest.raises(ValueError, match="unknown word '<eos>'"):
        tok.encode("a small red circle <eos>")
    with pytest.raises(ValueError, match="unknown word 'hexagon'"):
        parse_caption("a small red hexagon")
    with pytest.raises(ValueError, match="max_length=5"):
        tok("a small red circle", max_length=5)


def test_determinism_given_the_seed():
    w = ShapesWorld(seed=3)
    a, b = w.batch(7, 16), ShapesWorld(seed=3).batch(7, 16)
    assert torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)
    assert a.captions == b.captions and a.scenes == b.scenes
    # Order of calls does not matter; the stream is the sequence of batches.
    stream = w.stream(16, start=5)
    assert [next(stream).captions for _ in range(3)] == [w.batch(s, 16).captions
                                                        for s in (5, 6, 7)]
    # Another seed, step or split gives other images.
    for other in (ShapesWorld(seed=4).batch(7, 16), w.batch(8, 16),
                  ShapesWorld(seed=3, split="val").batch(7, 16)):
        assert not torch.equal(other.images, a.images)


def test_render_is_the_batch(batch):
    image, inst = render(batch.scenes[0])
    assert (image == _pixels(batch, 0)).all()
    assert (inst == batch.instances[0].numpy()).all()


def test_fixed_shape_count_and_bad_arguments():
    assert {len(s.shapes) for s in ShapesWorld(seed=1, n_shapes=3).scenes(0, 64)} == {3}
    with pytest.raises(ValueError, match="split"):
        ShapesWorld(split="dev")
    with pytest.raises(ValueError, match="n_shapes"):
        ShapesWorld(n_shapes=4)
    with pytest.raises(ValueError, match="step"):
        ShapesWorld().batch(-1, 4)
    with pytest.raises(TypeError, match="rng"):
        sample_scene(0)
