"""Receptive fields of convolution/pooling stacks: the exact recurrence and the gradient map.

The *theoretical* receptive field of a unit is the set of input pixels that can influence it.
Along one axis, after layer ``l`` with kernel ``k``, stride ``s``, padding ``p`` and dilation
``d`` (effective kernel ``k_e = d (k - 1) + 1``) the recurrence of the post (Eqs. 1-3) is

    r_l = r_{l-1} + (k_e - 1) j_{l-1}            (size, input pixels)
    j_l = j_{l-1} s                              (jump: input pixels between adjacent units)
    c_l = c_{l-1} + ((k_e - 1) / 2 - p) j_{l-1}  (centre of unit 0, input pixel coordinates)

from ``r_0 = 1, j_0 = 1, c_0 = 0``; input pixel ``i`` has its centre at coordinate ``i``. Unit
``u`` of layer ``l`` then sees ``[c_l + u j_l - (r_l - 1)/2, c_l + u j_l + (r_l - 1)/2]`` (Eq. 4).

The *effective* receptive field (Luo et al. 2016) is the magnitude of the input gradient of one
output unit (Eq. 5): :func:`input_gradient_map` and :func:`field_moments`.

References: Araujo, Norris and Sim (2019), "Computing Receptive Fields of Convolutional Neural
Networks", Distill; Dumoulin and Visin (2016), "A guide to convolution arithmetic for deep
learning"; Luo, Li, Urtasun and Zemel (2016), "Understanding the Effective Receptive Field in
Deep Convolutional Neural Networks", NeurIPS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "Field",
    "Layer",
    "Residual",
    "field_moments",
    "input_gradient_map",
    "read_layers",
    "receptive_fields",
]


@dataclass(frozen=True)
class Layer:
    """Geometry of one convolution or pooling layer along one spatial axis.

    ``padding`` is the padding before the first input pixel (the side that moves the centre);
    ``padding_end`` the padding after the last one (``None``: the same as ``padding``).
    """

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    name: str = ""
    padding_end: int | None = None
    ceil_mode: bool = False

    def __post_init__(self):
        for field, low in (("kernel", 1), ("stride", 1), ("dilation", 1), ("padding", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{field} of layer {self.name or '?'} must be an int, got "
                                f"{value!r}")
            if value < low:
                what = "kernel_size" if field == "kernel" else field
                raise ValueError(f"{what} of layer {self.name or '?'} must be >= {low}, got "
                                 f"{value}")
        if self.padding_end is not None and self.padding_end < 0:
            raise ValueError(f"padding of layer {self.name or '?'} must be >= 0")

    @property
    def effective_kernel(self) -> int:
        """``d (k - 1) + 1``: the span of a dilated kernel, input pixels of this layer."""
        return self.dilation * (self.kernel - 1) + 1

    def output_size(self, n: int) -> int:
        """Units along this axis for ``n`` input units (torch's conv/pool arithmetic)."""
        pad_end = self.padding if self.padding_end is None else self.padding_end
        span = n + self.padding + pad_end - self.effective_kernel
        if span < 0:
            raise ValueError(f"kernel_size of layer {self.name or '?'} (effective "
                             f"{self.effective_kernel}) is larger than its padded input "
                             f"{n + self.padding + pad_end}")
        if not self.ceil_mode:
            return span // self.stride + 1
        out = -(-span // self.stride) + 1
        # torch: the last window must start inside the input or the left padding
        if (out - 1) * self.stride >= n + self.padding:
            out -= 1
        return out


@dataclass(frozen=True)
class Field:
    """Receptive field of the units after one layer, along one axis (Eqs. 1-4)."""

    size: int
    """``r``: input pixels spanned by one unit (holes of dilated kernels included)."""
    jump: int
    """``j``: input pixels between the centres of adjacent units."""
    start: float
    """``c``: centre of unit 0 in input pixel coordinates (may be negative or half-integer)."""
    output_size: int | None = None
    """Units along the axis, when the input size was given."""
    name: str = ""

    def span(self, unit: int = 0) -> tuple[float, float]:
        """First and last input coordinate seen by ``unit`` (Eq. 4); may leave the input."""
        centre = self.start + unit * self.jump
        half = (self.size - 1) / 2
        return centre - half, centre + half


def receptive_fields(layers: Sequence[Layer], input_size: int | None = None) -> list[Field]:
    """Apply the recurrence (Eqs. 1-3) layer by layer.

    Parameters
    ----------
    layers : sequence of Layer
        In forward order, along one axis (see :func:`read_layers`).
    input_size : int, optional
        Input pixels along the axis; when given, every layer's output size is computed too, and a
        kernel larger than its padded input raises ``ValueError``.

    Returns
    -------
    list of Field, one per layer (the field of that layer's output units).
    """
    if input_size is not None and (isinstance(input_size, bool) or input_size < 1):
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    size, jump, start, n = 1, 1, 0.0, input_size
    out = []
    for layer in layers:
        if not isinstance(layer, Layer):
            raise TypeError(f"layers must hold Layer objects, got {type(layer).__name__}")
        k_e = layer.effective_kernel
        start = start + ((k_e - 1) / 2 - layer.padding) * jump  # Eq. 3 (uses j_{l-1})
        size = size + (k_e - 1) * jump  # Eq. 1
        jump = jump * layer.stride  # Eq. 2
        if n is not None:
            n = layer.output_size(n)
        out.append(Field(size=size, jump=jump, start=start, output_size=n, name=layer.name))
    return out


class Residual(nn.Module):
    """``body(x) + shortcut(x)``; the shortcut defaults to the identity.

    :func:`read_layers` reads it as its body, after checking that the shortcut's field sits inside
    the body's with the same jump and centre (true for the usual 3x3 / 1x1-projection blocks).
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


#: Modules that act on each position alone: they leave the receptive field unchanged.
POINTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Sigmoid, nn.Softplus, nn.Hardswish, nn.Hardsigmoid, nn.ReLU6, nn.Identity,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d,
)
CONVS = (nn.Conv1d, nn.Conv2d)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)


def _axis_value(value, axis: int):
    if isinstance(value, tuple | list):
        return value[axis] if len(value) > 1 else value[0]
    return value


def _read_one(module: nn.Module, name: str, axis: int) -> list[Layer]:
    if isinstance(module, POINTWISE):
        return []
    if isinstance(module, nn.Sequential):
        layers = []
        for child_name, child in module.named_children():
            layers += _read_one(child, f"{name}.{child_name}" if name else child_name, axis)
        return layers
    if isinstance(module, Residual):
        body = _read_one(module.body, f"{name}.body", axis)
        short = _read_one(module.shortcut, f"{name}.shortcut", axis)
        fb, fs = receptive_fields(body), receptive_fields(short)
        b = fb[-1] if fb else Field(1, 1, 0.0)
        s = fs[-1] if fs else Field(1, 1, 0.0)
        if b.jump != s.jump or b.start != s.start or s.size > b.size:
            raise ValueError(f"layer {name}: the shortcut's field (size {s.size}, jump {s.jump},"
                             f" centre {s.start}) is not centred inside the body's (size "
                             f"{b.size}, jump {b.jump}, centre {b.start})")
        return body
    if isinstance(module, CONVS + POOLS):
        kernel = int(_axis_value(module.kernel_size, axis))
        stride = module.stride if module.stride is not None else module.kernel_size
        stride = int(_axis_value(stride, axis))
        dilation = int(_axis_value(getattr(module, "dilation", 1), axis))
        padding = module.padding
        pad_end = None
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            else:  # "same" (stride 1 only in torch): total d (k - 1), the extra pixel at the end
                total = dilation * (kernel - 1)
                padding, pad_end = total // 2, total - total // 2
        else:
            padding = int(_axis_value(padding, axis))
        return [Layer(kernel, stride, padding, dilation, name=name, padding_end=pad_end,
                      ceil_mode=bool(getattr(module, "ceil_mode", False)))]
    raise ValueError(f"cannot read the receptive field of layer {name or '?'} "
                     f"({type(module).__name__}): only Conv1d/2d, Max/AvgPool1d/2d, pointwise "
                     f"layers, Residual and nested Sequential are understood")


def read_layers(module: nn.Module, axis: int = 0) -> list[Layer]:
    """The conv/pool geometry of an ``nn.Sequential`` along one axis (0: height, 1: width).

    Pointwise layers (activations, normalisation, dropout) are skipped, nested ``Sequential`` and
    :class:`Residual` blocks are read in order. Anything else (``Linear``, ``Flatten``,
    upsampling, attention) raises ``ValueError`` naming the layer.
    """
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 (height) or 1 (width), got {axis!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    return _read_one(module, "", axis)


def input_gradient_map(model: nn.Module, x: torch.Tensor, unit: Sequence[int]) -> torch.Tensor:
    """``|d y[unit] / d x|`` summed over batch and channels: the effective field (Eq. 5).

    Parameters
    ----------
    model : nn.Module
        Maps (B, C, H, W) to (B, C', H', W').
    x : Tensor, shape (B, C, H, W)
        Inputs at which the gradient is taken.
    unit : (int, int)
        Output position ``(h', w')``; its activations are summed over channels and batch.

    Returns
    -------
    Tensor, shape (H, W), non-negative.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("x must be a tensor of shape (B, C, H, W)")
    x = x.detach().requires_grad_(True)
    y = model(x)
    hu, wu = (int(u) for u in unit)
    if not (0 <= hu < y.shape[2] and 0 <= wu < y.shape[3]):
        raise ValueError(f"unit {tuple(unit)} is outside the output {tuple(y.shape[2:])}")
    (grad,) = torch.autograd.grad(y[:, :, hu, wu].sum(), x)
    return grad.abs().sum((0, 1))


def field_moments(grad_map: torch.Tensor) -> dict[str, float]:
    """Centre and spread of a gradient map read as a distribution over pixels.

    Returns ``centre_h``, ``centre_w`` (pixels), ``std_h``, ``std_w`` (pixels), and
    ``radius_95``: the smallest Chebyshev radius around the centre pixel holding 95 % of the mass.
    """
    if not isinstance(grad_map, torch.Tensor) or grad_map.dim() != 2:
        raise ValueError("grad_map must be a 2-D tensor")
    g = grad_map.double()
    total = g.sum()
    if not total > 0:
        raise ValueError("grad_map has no mass")
    p = g / total
    rows = torch.arange(g.shape[0], dtype=torch.float64)
    cols = torch.arange(g.shape[1], dtype=torch.float64)
    ph, pw = p.sum(1), p.sum(0)
    ch, cw = float((ph * rows).sum()), float((pw * cols).sum())
    sh = math.sqrt(float((ph * (rows - ch) ** 2).sum()))
    sw = math.sqrt(float((pw * (cols - cw) ** 2).sum()))
    dist = torch.maximum((rows[:, None] - round(ch)).abs(), (cols[None, :] - round(cw)).abs())
    mass = torch.zeros(int(dist.max().item()) + 1, dtype=torch.float64)
    mass.index_add_(0, dist.flatten().long(), p.flatten())
    radius = int(torch.searchsorted(mass.cumsum(0), torch.tensor(0.95, dtype=torch.float64)))
    return {"centre_h": ch, "centre_w": cw, "std_h": sh, "std_w": sw, "radius_95": radius}
