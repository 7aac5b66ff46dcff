"""Tests for deepnotes.data.sensor_streams: the .ts reader, stitching, frames and validation."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from deepnotes.data.sensor_streams import (
    BASIC_MOTIONS_ACTIONS,
    basic_motions_streams,
    channel_stats,
    load_basic_motions,
    read_ts,
    stitch_stream,
    synthetic_stream,
    to_frames,
)

aeon = importlib.import_module("aeon")


def _check_layout(stream):
    seg = stream.segments
    assert seg[0, 0] == 0 and seg[-1, 1] == len(stream.labels) == len(stream.x)
    np.testing.assert_array_equal(seg[1:, 0], seg[:-1, 1])  # segments tile the stream
    for start, end, label in seg:
        assert end > start
        assert (stream.labels[start:end] == label).all()
    # background, action, background, ...: actions never touch
    np.testing.assert_array_equal(seg[::2, 2], 0)
    assert (seg[1::2, 2] > 0).all()


def test_basic_motions_matches_aeon_loader():
    from aeon.datasets import load_basic_motions as aeon_load

    for split in ("train", "test"):
        x, y = load_basic_motions(split)
        x_ref, y_ref = aeon_load(split=split)
        assert x.shape == (40, 6, 100)
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(np.char.lower(y), y_ref)  # aeon lower-cases
        assert sorted(set(y)) == ["Badminton", "Running", "Standing", "Walking"]
        assert all((y == c).sum() == 10 for c in set(y))


def test_read_ts_variable_length_and_missing(tmp_path):
    path = tmp_path / "toy.ts"
    path.write_text("# comment\n@problemName toy\n@classLabel true a b\n@data\n"
                    "1,2,3:4,5,6:a\n7,?:8,9:b\n")
    series, labels, header = read_ts(path)
    assert header["problemname"] == "toy"
    np.testing.assert_array_equal(series[0], [[1, 2, 3], [4, 5, 6]])
    assert series[1].shape == (2, 2) and np.isnan(series[1][0, 1])
    np.testing.assert_array_equal(labels, ["a", "b"])
    (tmp_path / "bad.ts").write_text("@classLabel true x\n@data\n1,2:3:x\n")
    with pytest.raises(ValueError, match="differ in length"):
        read_ts(tmp_path / "bad.ts")
    (tmp_path / "nodata.ts").write_text("@problemName x\n")
    with pytest.raises(ValueError, match="no @data"):
        read_ts(tmp_path / "nodata.ts")


def test_basic_motions_streams_content_comes_from_the_split():
    rng = np.random.default_rng(0)
    streams = basic_motions_streams("test", 3, 5, rng, align=5)
    x_test, y_test = load_basic_motions("test")
    x_train, _ = load_basic_motions("train")
    assert streams[0].class_names == ("background", *(a.lower() for a in BASIC_MOTIONS_ACTIONS))
    names = {0: "Standing", **{i + 1: a for i, a in enumerate(BASIC_MOTIONS_ACTIONS)}}
    for s in streams:
        _check_layout(s)
        assert s.x.shape[1] == 6 and s.rate_hz == 10.0
        assert ((s.segments[:, 1] - s.segments[:, 0]) % 5 == 0).all()
        for start, end, label in s.segments:
            piece = s.x[start:end].T.astype(np.float64)  # (6, L)

            def found(pool, piece=piece):
                return any(np.allclose(rec[:, o:o + piece.shape[1]], piece, atol=1e-6)
                           for rec in pool for o in range(rec.shape[1] - piece.shape[1] + 1))

            # every segment is a crop of a test recording of its class, and of no train one
            assert found(x_test[y_test == names[label]])
            assert not found(x_train)


def test_stitch_stream_lengths_and_determinism():
    rng = np.random.default_rng(1)
    actions = [[rng.standard_normal((2, 50))] for _ in range(3)]
    background = [rng.standard_normal((2, 40))]
    a = stitch_stream(actions, background, 6, np.random.default_rng(5), action_len=(10, 30),
                      background_len=(4, 8), align=2)
    b = stitch_stream(actions, background, 6, np.random.default_rng(5), action_len=(10, 30),
                      background_len=(4, 8), align=2)
    np.testing.assert_array_equal(a.x, b.x)
    _check_layout(a)
    lengths = a.segments[:, 1] - a.segments[:, 0]
    assert ((lengths[1::2] >= 10) & (lengths[1::2] <= 30)).all()
    assert ((lengths[::2] >= 4) & (lengths[::2] <= 8)).all()
    assert (lengths % 2 == 0).all() and len(a.segments) == 13


@pytest.mark.parametrize("kwargs, match", [
    ({"n_actions": 0}, "n_actions"),
    ({"align": 0}, "align"),
    ({"action_len": (5, 3)}, "action_len"),
    ({"action_len": (60, 90)}, "fits"),
    ({"class_names": ("a", "b")}, "class_names"),
])
def test_stitch_stream_errors(kwargs, match):
    rec = [np.zeros((2, 50))]
    args = {"n_actions": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        stitch_stream([rec, rec], rec, rng=np.random.default_rng(0), **args)


def test_stitch_stream_rejects_mixed_dims():
    with pytest.raises(ValueError, match="same D"):
        stitch_stream([[np.zeros((2, 50))]], [np.zeros((3, 50))], 1, np.random.default_rng(0))


def test_synthetic_stream_signal_matches_labels():
    s = synthetic_stream(3, 8, np.random.default_rng(2), dim=3, noise=0.0)
    _check_layout(s)
    for start, end, label in s.segments:
        piece = s.x[start:end]
        if label == 0:
            assert np.abs(piece).max() == 0
        else:  # the class's own channel carries the sinusoid, the others stay silent
            assert np.abs(piece[:, label - 1]).max() > 0.5
            assert np.abs(np.delete(piece, label - 1, axis=1)).max() == 0
    with pytest.raises(ValueError, match="noise"):
        synthetic_stream(2, 2, np.random.default_rng(0), noise=-1.0)


def test_to_frames_and_stats():
    x = np.arange(14, dtype=float).reshape(7, 2)
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    frames, fl = to_frames(x, labels, 3)
    np.testing.assert_array_equal(frames, [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    np.testing.assert_array_equal(fl, [1, 2])  # the label of each frame's last sample
    with pytest.raises(ValueError, match="chunk"):
        to_frames(x, labels, 0)
    with pytest.raises(ValueError, match="labels"):
        to_frames(x, labels[:3], 2)
    s = synthetic_stream(2, 3, np.random.default_rng(0))
    mean, std = channel_stats([s, s])
    np.testing.assert_allclose(mean, s.x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, s.x.std(0), rtol=1e-4)
