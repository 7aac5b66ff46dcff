"""Tests for deepnotes.data.digits: split, variants, shapes and validation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits as sk_load_digits

from deepnotes.data import IMAGE_SHAPE, N_CLASSES, N_LEVELS, load_digits

SK = sk_load_digits()
RAW = SK.data.reshape(-1, 8, 8)  # integer intensities 0..16 stored as float64


def test_constants():
    assert N_CLASSES == 10
    assert IMAGE_SHAPE == (8, 8)
    assert N_LEVELS == 17
    assert RAW.max() == N_LEVELS - 1


@pytest.mark.parametrize("variant", ["float", "dequantized", "binarized"])
@pytest.mark.parametrize("split, n", [("train", 1347), ("test", 450), ("all", 1797)])
def test_shapes_and_dtypes(split, n, variant):
    X, y = load_digits(split, variant)
    assert X.shape == (n, 8, 8) and X.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    Xf, yf = load_digits(split, variant, flatten=True)
    assert Xf.shape == (n, 64)
    np.testing.assert_array_equal(Xf.reshape(-1, 8, 8), X)
    np.testing.assert_array_equal(yf, y)


def _index_of(X_split, y_split):
    """Recover each split image's row in the original set (images can repeat: match pairs)."""
    keys = {}
    for i, (img, lab) in enumerate(zip(RAW, SK.target, strict=True)):
        keys.setdefault((img.tobytes(), lab), []).append(i)
    out = []
    for img, lab in zip(X_split, y_split, strict=True):
        out.append(keys[((img * 16).astype(np.float64).tobytes(), lab)].pop(0))
    return np.array(out)


def test_split_is_disjoint_covering_stratified_and_seeded():
    Xtr, ytr = load_digits("train")
    Xte, yte = load_digits("test")
    idx = np.concatenate([_index_of(Xtr, ytr), _index_of(Xte, yte)])
    # every original image appears exactly once across train and test
    np.testing.assert_array_equal(np.sort(idx), np.arange(1797))
    # stratified: each class gives round(0.25 n_c) images to the test split
    counts = np.bincount(SK.target, minlength=10)
    np.testing.assert_array_equal(np.bincount(yte, minlength=10), np.round(0.25 * counts))
    # same seed -> same split; another seed -> another split
    np.testing.assert_array_equal(load_digits("test", seed=0)[0], Xte)
    assert not np.array_equal(load_digits("test", seed=1)[0], Xte)
    assert len(load_digits("test", test_fraction=0.5)[1]) == np.round(0.5 * counts).sum()


def test_all_keeps_original_order_and_float_is_pixel_over_16():
    X, y = load_digits("all", "float")
    np.testing.assert_array_equal(y, SK.target)
    np.testing.assert_array_equal(X, (RAW / 16).astype(np.float32))
    assert X.min() == 0.0 and X.max() == 1.0


def test_binarized_is_threshold_at_half():
    X, _ = load_digits("all", "binarized")
    np.testing.assert_array_equal(X, (RAW >= 9).astype(np.float32))  # 9/16 > 0.5 >= 8/16
    assert set(np.unique(X)) == {0.0, 1.0}


def test_dequantized_stays_in_its_cell_and_noise_is_uniform():
    X, _ = load_digits("all", "dequantized")
    assert X.min() >= 0.0 and X.max() < 1.0
    u = X.astype(np.float64) * 17 - RAW  # the dequantisation noise, should be U[0, 1)
    # float32 storage rounds x in [0, 1) by at most 2**-25, i.e. u by 17 * 2**-25 < 1e-6
    assert u.min() > -1e-6 and u.max() < 1 + 1e-6
    # 115008 U[0,1) draws: mean 1/2 with std 1/sqrt(12 n) = 8.5e-4 -> 5 std = 4.3e-3
    assert abs(u.mean() - 0.5) < 4.3e-3
    # and fraction below 1/4: 1/4 with std sqrt(3/16/n) = 1.3e-3 -> 5 std = 6.4e-3
    assert abs((u < 0.25).mean() - 0.25) < 6.4e-3


def test_dequantized_noise_comes_from_rng():
    a, _ = load_digits("train", "dequantized", seed=3)
    b, _ = load_digits("train", "dequantized", seed=3, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)  # default rng is default_rng(seed)
    c, _ = load_digits("train", "dequantized", seed=3, rng=np.random.default_rng(4))
    assert not np.array_equal(a, c)
    # different noise, same discrete image underneath: x * 17 - 1/2 lies within 1/2 of the
    # pixel (plus the float32 rounding bound 1e-6 of the test above)
    pixels = load_digits("train", "float", seed=3)[0].astype(np.float64) * 16
    for x in (a, c):
        assert np.abs(x.astype(np.float64) * 17 - 0.5 - pixels).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "valid"}, "split"),
    ({"variant": "binary"}, "variant"),
    ({"test_fraction": 0.0}, "test_fraction"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"test_fraction": -0.2}, "test_fraction"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digits(**kwargs)


def test_bad_rng_raises():
    with pytest.raises(TypeError, match="rng"):
        load_digits(variant="dequantized", rng=0)
