"""Every upsampling op equals its torch.nn.functional counterpart over a grid of shapes and
parameters (hypothesis), odd sizes included.

Tolerances: nearest, pixel (un)shuffle and max-unpooling only move values, so they must be
bit-identical. Interpolation and transposed convolution add the same products in a different
order than torch's kernels; in float64 that costs a few ulps of the largest term, hence 1e-12.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from deepnotes.nn import upsampling as U

SETTINGS = settings(max_examples=60, deadline=None)
TOL = 1e-12
sizes = st.integers(1, 9)


def _image(seed, b, c, h, w, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=gen, dtype=dtype)


@st.composite
def resize_args(draw):
    h, w = draw(sizes), draw(sizes)
    if draw(st.booleans()):
        kw = {"size": (draw(st.integers(1, 23)), draw(st.integers(1, 23)))}
    else:
        # non-integer and downscaling factors too, keeping at least one output pixel
        sh = draw(st.floats(max(0.3, 1.0 / h), 4.0))
        sw = draw(st.floats(max(0.3, 1.0 / w), 4.0))
        single = draw(st.booleans()) and int(w * sh) >= 1
        kw = {"scale_factor": sh if single else (sh, sw)}
    return h, w, kw


@SETTINGS
@given(resize_args(), st.sampled_from(["nearest", "bilinear", "bicubic"]), st.booleans(),
       st.integers(0, 2**16))
def test_interpolate_matches_torch(args, mode, align, seed):
    h, w, kw = args
    x = _image(seed, 2, 3, h, w)
    ac = None if mode == "nearest" else align
    ours = U.interpolate(x, mode=mode, align_corners=ac, **kw)
    ref = F.interpolate(x, mode=mode, align_corners=ac, **kw)
    assert ours.shape == ref.shape
    if mode == "nearest":
        assert torch.equal(ours, ref)
    else:
        torch.testing.assert_close(ours, ref, rtol=0, atol=TOL)


@SETTINGS
@given(resize_args(), st.integers(0, 2**16))
def test_nearest_float32_bit_exact(args, seed):
    h, w, kw = args
    x = _image(seed, 1, 2, h, w, torch.float32)
    assert torch.equal(U.interpolate(x, **kw), F.interpolate(x, **kw))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), sizes, sizes, st.integers(0, 2**16))
def test_pixel_shuffle_and_unshuffle(r, c, h, w, seed):
    x = _image(seed, 2, c * r * r, h, w)
    y = U.pixel_shuffle(x, r)
    assert torch.equal(y, F.pixel_shuffle(x, r))
    assert torch.equal(U.pixel_unshuffle(y, r), F.pixel_unshuffle(y, r))
    assert torch.equal(U.pixel_unshuffle(y, r), x)


@st.composite
def conv_t_args(draw):
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out_g = draw(st.integers(1, 2))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    op = tuple(draw(st.integers(0, max(si, di) - 1)) for si, di in zip(s, d, strict=True))
    h, w = draw(sizes), draw(sizes)
    # padding small enough to leave an output pixel
    p = tuple(draw(st.integers(0, max(0, ((n - 1) * si + di * (ki - 1) + oi) // 2)))
              for n, si, di, ki, oi in zip((h, w), s, d, k, op, strict=True))
    return dict(groups=groups, c_in=c_in, c_out_g=c_out_g, k=k, s=s, d=d, op=op, p=p, h=h, w=w,
                bias=draw(st.booleans()))


@SETTINGS
@given(conv_t_args(), st.integers(0, 2**16))
def test_conv_transpose2d_matches_torch(a, seed):
    x = _image(seed, 2, a["c_in"], a["h"], a["w"])
    gen = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(a["c_in"], a["c_out_g"], *a["k"], generator=gen, dtype=torch.float64)
    bias = torch.randn(a["c_out_g"] * a["groups"], generator=gen, dtype=torch.float64) \
        if a["bias"] else None
    kw = dict(stride=a["s"], padding=a["p"], output_padding=a["op"], groups=a["groups"],
              dilation=a["d"])
    ours = U.conv_transpose2d(x, weight, bias, **kw)
    ref = F.conv_transpose2d(x, weight, bias, **kw)
    assert ours.shape == ref.shape
    assert ours.shape[2:] == U.conv_transpose2d_output_size(x.shape[2:], a["k"], a["s"], a["p"],
                                                            a["op"], a["d"])
    torch.testing.assert_close(ours, ref, rtol=0, atol=TOL * 10)


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv2d(y), x> = <y, conv_transpose2d(x)>: the transpose in the name, exactly (Eq. 6)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)  # conv2d: 3 -> 4 channels
    y = torch.randn(2, 3, 9, 9, generator=gen, dtype=torch.float64)
    kw = dict(stride=2, padding=1, dilation=1)
    conv = F.conv2d(y, w, **kw)  # (2, 4, 5, 5)
    x = torch.randn(conv.shape, generator=gen, dtype=torch.float64)
    lhs = (conv * x).sum()
    rhs = (y * U.conv_transpose2d(x, w, **kw)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=0)


def test_conv_transpose2d_gradients_match_torch():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 3, 9, 11, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (U.conv_transpose2d, F.conv_transpose2d):
        out = fn(x, w, stride=2, padding=0, output_padding=0)
        grads.append(torch.autograd.grad((out * g).sum(), (x, w)))
    for ours, ref in zip(*grads, strict=True):
        torch.testing.assert_close(ours, ref, rtol=0, atol=TOL)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), sizes, sizes,
       st.integers(0, 2**16))
def test_max_unpool2d_matches_torch(k, s, p, h, w, seed):
    p = min(p, k // 2)  # torch's max_pool2d needs padding <= kernel / 2
    if h + 2 * p < k or w + 2 * p < k:
        return
    x = _image(seed, 2, 3, h, w)
    pooled, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    ours = U.max_unpool2d(pooled, idx, k, s, p, output_size=(h, w))
    assert torch.equal(ours, F.max_unpool2d(pooled, idx, k, s, p, output_size=(h, w)))
    if (h + 2 * p - k) % s == 0 and (w + 2 * p - k) % s == 0:  # the default size is exact
        assert torch.equal(U.max_unpool2d(pooled, idx, k, s, p),
                           F.max_unpool2d(pooled, idx, k, s, p))


def test_bilinear_align_corners_keeps_the_corners():
    x = _image(0, 1, 1, 3, 4)
    y = U.interpolate(x, size=(7, 9), mode="bilinear", align_corners=True)
    for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert y[0, 0, i, j] == x[0, 0, i, j]


@pytest.mark.parametrize("call, name", [
    (lambda x: U.interpolate(x, scale_factor=0.0), "scale_factor"),
    (lambda x: U.interpolate(x, scale_factor=-2.0), "scale_factor"),
    (lambda x: U.interpolate(x, size=(0, 3)), "size"),
    (lambda x: U.interpolate(x, mode="area", size=2), "mode"),
    (lambda x: U.interpolate(x, size=4, align_corners=True), "align_corners"),
    (lambda x: U.interpolate(x), "size and scale_factor"),
    (lambda x: U.pixel_shuffle(x, 0), "upscale_factor"),
    (lambda x: U.pixel_shuffle(x, 2), "upscale_factor"),
    (lambda x: U.pixel_unshuffle(x, 2), "downscale_factor"),
    (lambda x: U.conv_transpose2d(x, torch.ones(3, 1, 3, 3), stride=0), "stride"),
    (lambda x: U.conv_transpose2d(x, torch.ones(3, 1, 3, 3), stride=2, output_padding=2),
     "output_padding"),
    (lambda x: U.conv_transpose2d(x, torch.ones(3, 1, 3, 3), padding=9), "padding"),
    (lambda x: U.conv_transpose2d(x, torch.ones(3, 1, 3, 3), groups=2), "groups"),
    (lambda x: U.conv_transpose2d(x, torch.ones(2, 1, 3, 3)), "channels"),
    (lambda x: U.max_unpool2d(x, torch.full(x.shape, 999, dtype=torch.int64), 2),
     "indices"),
])
def test_bad_arguments_raise_value_error(call, name):
    x = _image(0, 1, 3, 5, 5)
    with pytest.raises(ValueError, match=name):
        call(x)


def test_type_errors():
    with pytest.raises(TypeError, match="x"):
        U.interpolate([[1.0]], size=2)
    with pytest.raises(TypeError, match="indices"):
        U.max_unpool2d(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int32), 2)


@pytest.mark.parametrize("shape, scale", [((2, 1), (1.25, 1.0)), ((2, 3), (1.25, 2.0)),
                                          ((3, 3), (1.25, 1.25)), ((5, 4), (1.0, 1.3))])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_a_scale_that_keeps_an_axis_length_follows_torch(shape, scale, mode):
    """Found by hypothesis: 1.25 keeps a length-2 axis at 2; torch's linear kernel then leaves that
    axis alone while its cubic kernel still resamples it with the 1/scale step."""
    x = torch.randn(1, 2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = U.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)
    ref = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
