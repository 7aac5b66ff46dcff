"""Upsampling layers written from their index arithmetic: interpolation, pixel shuffle,
transposed convolution as a scatter-add, and max-unpooling.

Every function takes and returns NCHW tensors, ``(B, C, H, W)``, and follows the conventions of
the ``torch.nn.functional`` function of the same name (``interpolate``, ``pixel_shuffle``,
``pixel_unshuffle``, ``conv_transpose2d``, ``max_unpool2d``), so that the tests can compare them
element for element. Equation numbers refer to the post ``upsampling``.

References: Odena, Dumoulin and Olah (2016), "Deconvolution and Checkerboard Artifacts", Distill;
Shi et al. (2016), "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network", CVPR; Keys (1981), "Cubic convolution interpolation for
digital image processing", IEEE TASSP; Dumoulin and Visin (2016), "A guide to convolution
arithmetic for deep learning".
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "conv_transpose2d",
    "conv_transpose2d_output_size",
    "interpolate",
    "max_unpool2d",
    "pixel_shuffle",
    "pixel_unshuffle",
    "resize_output_size",
]

#: Keys' cubic-convolution parameter; torch (and OpenCV) use -0.75, Keys proposed -0.5.
CUBIC_A = -0.75


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(a), int(b)


def _check_image(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------
# Interpolation
# --------------------------------------------------------------------------------------------

def resize_output_size(in_size: tuple[int, int], size=None, scale_factor=None) -> tuple[int, int]:
    """Output (H, W) of a resize given either ``size`` or ``scale_factor`` (not both).

    As ``F.interpolate``: ``floor(in * scale_factor)`` per axis, computed in float64.
    """
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    if size is not None:
        out = _pair(size, "size")
        if min(out) < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        return out
    scales = _scales(scale_factor)
    out = tuple(int(math.floor(float(n) * s)) for n, s in zip(in_size, scales, strict=True))
    if min(out) < 1:
        raise ValueError(f"scale_factor {scale_factor!r} gives an empty output from {in_size}")
    return out


def _scales(scale_factor) -> tuple[float, float]:
    if isinstance(scale_factor, int | float) and not isinstance(scale_factor, bool):
        scale_factor = (scale_factor, scale_factor)
    try:
        sh, sw = (float(s) for s in scale_factor)
    except (TypeError, ValueError):
        raise TypeError(f"scale_factor must be a number or a pair, got {scale_factor!r}") from None
    if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
        raise ValueError(f"scale_factor must be positive and finite, got {scale_factor!r}")
    return sh, sw


def _src_step(n_in: int, n_out: int, scale: float | None, align_corners: bool, dtype):
    """Input pixels per output pixel along one axis (the slope of Eqs. 1-2).

    With a user ``scale_factor`` torch uses ``1/scale_factor`` rather than ``n_in/n_out``; the two
    differ when ``n_in * scale_factor`` is not an integer, so we keep torch's choice.
    """
    if align_corners:
        return dtype((n_in - 1) / (n_out - 1)) if n_out > 1 else dtype(0.0)
    return dtype(1.0 / scale) if scale is not None else dtype(n_in) / dtype(n_out)


def _nearest_index(n_in: int, n_out: int, scale: float | None) -> torch.Tensor:
    """Source index of each output index for mode ``nearest`` (Eq. 1): ``floor(i * step)``.

    torch evaluates the product in float32 whatever the tensor's dtype (and special-cases equal
    and doubled sizes); rounding in float32 decides ties such as ``floor(3 * (1/3))``, so we do
    the same to land on the same pixel.
    """
    if n_out == n_in:
        return torch.arange(n_out)
    if n_out == 2 * n_in:
        return torch.arange(n_out) // 2
    step = _src_step(n_in, n_out, scale, False, np.float32)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * step).astype(np.int64)
    return torch.from_numpy(np.minimum(idx, n_in - 1))


def _linear_weights(n_in, n_out, scale, align_corners, dtype):
    """Left index, right index and right weight of each output pixel (Eq. 2)."""
    step = _src_step(n_in, n_out, scale, align_corners, np.float64)
    i = torch.arange(n_out, dtype=torch.float64)
    src = step * i if align_corners else (step * (i + 0.5) - 0.5).clamp_min(0.0)
    left = src.floor().long().clamp_max(n_in - 1)
    lam = (src - left).clamp(0.0, 1.0).to(dtype)
    right = (left + 1).clamp_max(n_in - 1)
    return left, right, lam


def _cubic_weights(n_in, n_out, scale, align_corners, dtype):
    """Four source indices (clamped at the border) and Keys' weights (Eq. 3), shape (n_out, 4)."""
    step = _src_step(n_in, n_out, scale, align_corners, np.float64)
    i = torch.arange(n_out, dtype=torch.float64)
    src = step * i if align_corners else step * (i + 0.5) - 0.5  # no clamp at 0 for cubic
    base = src.floor()
    t = (src - base).to(dtype)
    idx = (base.long()[:, None] + torch.arange(-1, 3)[None, :]).clamp(0, n_in - 1)
    a = CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    w = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)
    return idx, w


def _interp_matrix(n_in: int, n_out: int, scale, mode: str, align_corners: bool,
                   dtype) -> torch.Tensor:
    """The (n_out, n_in) matrix of a linear resize along one axis: row i holds the weights of
    Eq. 2 or Eq. 3 at the source indices (border indices repeat, so their weights add up)."""
    if mode == "bilinear":
        left, right, lam = _linear_weights(n_in, n_out, scale, align_corners, dtype)
        idx, w = torch.stack([left, right], 1), torch.stack([1 - lam, lam], 1)
    else:
        idx, w = _cubic_weights(n_in, n_out, scale, align_corners, dtype)
    m = torch.zeros(n_out * n_in, dtype=dtype)
    rows = torch.arange(n_out)[:, None].expand_as(idx)
    m.index_add_(0, (rows * n_in + idx).reshape(-1), w.reshape(-1))
    return m.view(n_out, n_in)


def _resample_axis(x: torch.Tensor, axis: int, n_out: int, scale, mode: str,
                   align_corners: bool) -> torch.Tensor:
    """Resample ``x`` along ``axis`` (2 = H or 3 = W) with one small matrix product; the 2-D
    linear resizes are separable."""
    n_in = x.shape[axis]
    m = _interp_matrix(n_in, n_out, scale, mode, align_corners, x.dtype).to(x.device)
    return torch.matmul(m, x) if axis == 2 else torch.matmul(x, m.T)


def interpolate(x: torch.Tensor, size=None, scale_factor=None, mode: str = "nearest",
                align_corners: bool | None = None) -> torch.Tensor:
    """Resize images by nearest, bilinear or bicubic interpolation (post Eqs. 1-3).

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W)
        Images, any floating dtype.
    size : int or (int, int), optional
        Output (H', W'). Give this or ``scale_factor``.
    scale_factor : float or (float, float), optional
        ``H' = floor(H * scale_factor)``; the source step is then ``1 / scale_factor`` (torch's
        convention with ``recompute_scale_factor=None``).
    mode : {"nearest", "bilinear", "bicubic"}
        ``nearest`` copies pixel ``floor(i * H / H')`` (Eq. 1); ``bilinear`` mixes the two nearest
        pixels (Eq. 2); ``bicubic`` mixes four with Keys' kernel, ``a = -0.75`` (Eq. 3).
    align_corners : bool, optional
        Linear modes only (default False). True maps the centres of the corner pixels onto each
        other, ``src = i (H-1)/(H'-1)``; False maps pixel edges, ``src = (i + 1/2) H/H' - 1/2``.

    Returns
    -------
    Tensor, shape (B, C, H', W'), the dtype of ``x``.
    """
    _check_image(x)
    if mode not in ("nearest", "bilinear", "bicubic"):
        raise ValueError(f"mode must be nearest, bilinear or bicubic, got {mode!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners is only defined for the bilinear and bicubic modes")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {x.dtype}")
    out_h, out_w = resize_output_size(tuple(x.shape[2:]), size, scale_factor)
    scales = (None, None) if scale_factor is None else _scales(scale_factor)
    if mode == "nearest":  # a pure copy: one gather of (row, column) pairs
        rows = _nearest_index(x.shape[2], out_h, scales[0]).to(x.device)
        cols = _nearest_index(x.shape[3], out_w, scales[1]).to(x.device)
        return x[:, :, rows[:, None], cols[None, :]]
    align = bool(align_corners)
    if mode == "bilinear":
        # torch's separable linear kernel leaves an axis alone when its length does not change,
        # whatever scale_factor says (1.25 keeps a length-2 axis at 2, but its 1/scale step would
        # still resample it); its bicubic kernel has no such shortcut
        scales = tuple(None if n_out == n_in else s for n_out, n_in, s in
                       zip((out_h, out_w), x.shape[2:], scales, strict=True))
    y = _resample_axis(x, 2, out_h, scales[0], mode, align)
    return _resample_axis(y, 3, out_w, scales[1], mode, align)


# --------------------------------------------------------------------------------------------
# Pixel shuffle (sub-pixel convolution)
# --------------------------------------------------------------------------------------------

def pixel_shuffle(x: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    """Rearrange (B, C r^2, H, W) into (B, C, H r, W r) (Eq. 4).

    Output pixel ``(c, h r + i, w r + j)`` is input channel ``c r^2 + i r + j`` at ``(h, w)``.
    """
    _check_image(x)
    r = _factor(upscale_factor, "upscale_factor")
    b, cr2, h, w = x.shape
    if cr2 % (r * r):
        raise ValueError(f"x has {cr2} channels, not divisible by upscale_factor^2 = {r * r}")
    c = cr2 // (r * r)
    return (x.reshape(b, c, r, r, h, w)
            .permute(0, 1, 4, 2, 5, 3)  # (B, C, H, r, W, r)
            .reshape(b, c, h * r, w * r))


def pixel_unshuffle(x: torch.Tensor, downscale_factor: int) -> torch.Tensor:
    """Inverse of :func:`pixel_shuffle`: (B, C, H r, W r) into (B, C r^2, H, W)."""
    _check_image(x)
    r = _factor(downscale_factor, "downscale_factor")
    b, c, hr, wr = x.shape
    if hr % r or wr % r:
        raise ValueError(f"x spatial size {(hr, wr)} is not divisible by downscale_factor {r}")
    h, w = hr // r, wr // r
    return (x.reshape(b, c, h, r, w, r)
            .permute(0, 1, 3, 5, 2, 4)  # (B, C, r, r, H, W)
            .reshape(b, c * r * r, h, w))


def _factor(r, name: str) -> int:
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"{name} must be an int, got {r!r}")
    if r < 1:
        raise ValueError(f"{name} must be >= 1, got {r}")
    return r


# --------------------------------------------------------------------------------------------
# Transposed convolution
# --------------------------------------------------------------------------------------------

def conv_transpose2d_output_size(in_size, kernel_size, stride=1, padding=0, output_padding=0,
                                 dilation=1) -> tuple[int, int]:
    """Output (H', W') of a transposed convolution (Eq. 5), per axis:

    ``H' = (H - 1) s - 2 p + d (k - 1) + output_padding + 1``.
    """
    h, w = _pair(tuple(in_size), "in_size")
    k, s, p, op, d = (_pair(v, n) for v, n in ((kernel_size, "kernel_size"), (stride, "stride"),
                                               (padding, "padding"),
                                               (output_padding, "output_padding"),
                                               (dilation, "dilation")))
    if min(s) < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    if min(d) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation!r}")
    if min(k) < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size!r}")
    if min(p) < 0 or min(op) < 0:
        raise ValueError(f"padding and output_padding must be >= 0, got {padding!r}, "
                         f"{output_padding!r}")
    for o, si, di in zip(op, s, d, strict=True):
        # A larger output_padding would add rows that no input pixel reaches.
        if o >= max(si, di):
            raise ValueError(f"output_padding {output_padding!r} must be smaller than stride or "
                             f"dilation ({stride!r}, {dilation!r})")
    out = tuple((n - 1) * si - 2 * pi + di * (ki - 1) + oi + 1
                for n, ki, si, pi, oi, di in zip((h, w), k, s, p, op, d, strict=True))
    if min(out) < 1:
        raise ValueError(f"padding {padding!r} leaves no output from input {(h, w)}")
    return out


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride=1, padding=0, output_padding=0, groups: int = 1,
                     dilation=1) -> torch.Tensor:
    """Transposed ("fractionally strided") convolution as a scatter-add (Eqs. 5-6).

    Each input pixel ``(h, w)`` stamps its kernel, scaled by its value, onto the output at
    ``(h s + a d - p, w s + b d - p)`` for kernel taps ``(a, b)``; overlapping stamps add. We
    mix channels for every tap in one batched matrix product, then add each tap's plane, shape
    (B, C_out, H, W), into the output at a strided slice. The ``padding``
    crops the stamped canvas on both sides, ``output_padding`` extends it on the far side.

    Parameters
    ----------
    x : Tensor, shape (B, C_in, H, W)
    weight : Tensor, shape (C_in, C_out / groups, kH, kW)
        The same layout as ``nn.ConvTranspose2d.weight``.
    bias : Tensor, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int)
    groups : int
        ``C_in`` and ``C_out`` split into ``groups`` independent blocks.

    Returns
    -------
    Tensor, shape (B, C_out, H', W') with H' from :func:`conv_transpose2d_output_size`.
    """
    _check_image(x)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError("weight must be a tensor of shape (C_in, C_out/groups, kH, kW)")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    b, c_in, h, w = x.shape
    if weight.shape[0] != c_in:
        raise ValueError(f"weight has {weight.shape[0]} input channels, x has {c_in}")
    if c_in % groups:
        raise ValueError(f"groups={groups} does not divide the {c_in} input channels")
    kh, kw = weight.shape[2:]
    out_h, out_w = conv_transpose2d_output_size((h, w), (kh, kw), stride, padding,
                                                output_padding, dilation)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride, "stride"), _pair(padding, "padding"), \
        _pair(dilation, "dilation")
    c_out_g = weight.shape[1]
    c_out = c_out_g * groups
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")
    # The canvas before cropping: every stamp lands in [0, (H-1) s + d (k-1)] (+ output padding).
    canvas = x.new_zeros(b, c_out, ph + out_h + ph, pw + out_w + pw)
    # All taps' channel mixing in one batched product: (B, G, C_out/G * kH * kW, H * W).
    xg = x.reshape(b, groups, c_in // groups, h * w)
    wg = weight.reshape(groups, c_in // groups, c_out_g * kh * kw).transpose(1, 2)
    stamps = torch.matmul(wg, xg).reshape(b, groups, c_out_g, kh, kw, h, w)
    stamps = stamps.reshape(b, c_out, kh, kw, h, w)
    for a in range(kh):
        for bb in range(kw):
            r0, c0 = a * dh, bb * dw
            # Tap (a, b) of input pixel (i, j) lands at (i s + a d, j s + b d) on the canvas.
            canvas[:, :, r0:r0 + (h - 1) * sh + 1:sh, c0:c0 + (w - 1) * sw + 1:sw] += \
                stamps[:, :, a, bb]
    out = canvas[:, :, ph:ph + out_h, pw:pw + out_w]
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


# --------------------------------------------------------------------------------------------
# Max-unpooling
# --------------------------------------------------------------------------------------------

def max_unpool2d(x: torch.Tensor, indices: torch.Tensor, kernel_size, stride=None, padding=0,
                 output_size=None) -> torch.Tensor:
    """Put each pooled value back where its maximum came from; zeros elsewhere (Eq. 7).

    Parameters
    ----------
    x : Tensor, shape (B, C, h, w)
        Pooled values.
    indices : LongTensor, shape (B, C, h, w)
        Flat positions ``row * W + col`` in each (H, W) plane, as returned by
        ``F.max_pool2d(..., return_indices=True)``.
    kernel_size, stride, padding : int or (int, int)
        Of the pooling that produced ``indices``; they fix the default output size
        ``H = (h - 1) s - 2 p + k``. ``stride`` defaults to ``kernel_size``.
    output_size : (int, int) or sequence ending in (H, W), optional
        Overrides the default, for pooled inputs whose size was not a multiple of the stride.

    Returns
    -------
    Tensor, shape (B, C, H, W).
    """
    _check_image(x)
    if not isinstance(indices, torch.Tensor) or indices.shape != x.shape:
        raise ValueError("indices must be a tensor with the shape of x")
    if indices.dtype != torch.int64:
        raise TypeError(f"indices must be int64, got {indices.dtype}")
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    p = _pair(padding, "padding")
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise ValueError(f"need kernel_size, stride >= 1 and padding >= 0, got {kernel_size!r}, "
                         f"{stride!r}, {padding!r}")
    b, c, h, w = x.shape
    if output_size is None:
        out_h, out_w = ((n - 1) * si - 2 * pi + ki for n, ki, si, pi in zip((h, w), k, s, p,
                                                                              strict=True))
    else:
        out_h, out_w = _pair(tuple(output_size)[-2:], "output_size")
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size {(out_h, out_w)} is empty")
    flat_idx = indices.reshape(b, c, h * w)
    if flat_idx.numel() and (flat_idx.min() < 0 or flat_idx.max() >= out_h * out_w):
        raise ValueError(f"indices must lie in [0, {out_h * out_w}) for output {(out_h, out_w)}")
    out = x.new_zeros(b, c, out_h * out_w)
    # Overlapping windows can name the same position twice, always with the same value.
    out.scatter_(2, flat_idx, x.reshape(b, c, h * w))
    return out.view(b, c, out_h, out_w)
