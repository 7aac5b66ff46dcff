"""Activation functions written from their formulas, each with a hand-derived backward.

Every elementwise activation is a pair of plain tensor formulas, its value :math:`f(x)` and its
derivative :math:`f'(x)`, run by one ``torch.autograd.Function`` (:class:`_Elementwise`) whose
backward multiplies the incoming gradient by the hand-derived :math:`f'` (post, Eqs. 1-11). The
gated units (GLU, ReGLU, GeGLU, SwiGLU; Eq. 12) split their input in two halves ``a, b`` and
return ``a * f(b)``; their Function (:class:`_Gated`) applies the product rule with the same
:math:`f'`. Nothing here calls ``torch.nn.functional``'s version of the function it implements.

Names, keyword arguments and defaults follow ``torch.nn.functional`` (``relu(input,
inplace=False)``, ``softplus(input, beta=1.0, threshold=20.0)``, ``gelu(input,
approximate="none")``, ``glu(input, dim=-1)`` ...). Functions torch does not have: :func:`step`
(the perceptron's Heaviside unit, whose gradient is zero everywhere), :func:`reglu`,
:func:`geglu` and :func:`swiglu`.

Numerical stability. Every exponential is taken of a non-positive argument (``exp(-|x|)``), so
nothing overflows: ``sigmoid(-1000) == 0``, ``softplus(1000) == 1000``, and no value or gradient
is NaN or infinite for ``|x| <= 1e4`` in float32 or float64 (tested).

Papers: Rosenblatt (1958) perceptron; Nair & Hinton (2010) ReLU; Maas et al. (2013) leaky ReLU;
He et al. (2015) PReLU; Clevert et al. (2016) ELU; Klambauer et al. (2017) SELU; Hendrycks &
Gimpel (2016) GELU; Ramachandran et al. (2017) / Elfwing et al. (2018) SiLU/Swish; Misra (2019)
Mish; Howard et al. (2019) hard-swish; Dauphin et al. (2017) GLU; Shazeer (2020) GLU variants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "ACTIVATIONS",
    "GATED",
    "elu",
    "geglu",
    "gelu",
    "glu",
    "hardsigmoid",
    "hardswish",
    "leaky_relu",
    "mish",
    "prelu",
    "reglu",
    "relu",
    "selu",
    "sigmoid",
    "silu",
    "softplus",
    "step",
    "swiglu",
    "tanh",
]

#: SELU's constants (Klambauer et al. 2017, Eq. 14), the values torch uses.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_K = math.sqrt(2.0 / math.pi)  # Eq. 8: the tanh approximation's sqrt(2/pi)
_GELU_KAPPA = 0.044715


# --------------------------------------------------------------------------- validation helpers
def _check_input(input) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype {input.dtype}")


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_approximate(approximate) -> str:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate


# --------------------------------------------------------------------------- value/derivative pairs
# Each pair works on plain tensors (no autograd): ``value(x, *p)`` and ``derivative(x, y, *p)``
# where ``y = value(x, *p)`` is handed back so derivatives that are cheap in terms of the output
# (sigmoid, tanh) reuse it.

def _sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Eq. 2 from exp(-|x|) only: 1/(1+e) for x >= 0, e/(1+e) for x < 0 (no overflow)."""
    e = torch.exp(-x.abs())
    return torch.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _tanh(x: torch.Tensor) -> torch.Tensor:
    """Eq. 3: tanh|x| = (1 - e^{-2|x|}) / (1 + e^{-2|x|}), with expm1 for small |x|."""
    a2 = -2.0 * x.abs()
    return torch.copysign(-torch.expm1(a2) / (1.0 + torch.exp(a2)), x)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """Eq. 4 in the stable form max(x, 0) + log1p(exp(-|x|))."""
    return x.clamp_min(0.0) + torch.log1p(torch.exp(-x.abs()))


def _step_value(x, value_at_zero):
    out = (x > 0).to(x.dtype)
    return torch.where(x == 0, torch.full_like(x, value_at_zero), out)


def _step_derivative(x, y, value_at_zero):
    # Zero almost everywhere (and undefined at 0, where we also return 0): nothing reaches the
    # weights below a step unit, which is why the perceptron needs its own learning rule.
    return torch.zeros_like(x)


def _sigmoid_derivative(x, y):
    return y * (1.0 - y)


def _tanh_derivative(x, y):
    return 1.0 - y * y


def _softplus_value(x, beta, threshold):
    bx = x * beta
    # torch's convention: the identity where beta * x > threshold (it is exact there to ~e^-20).
    return torch.where(bx > threshold, x, _softplus(bx) / beta)


def _softplus_derivative(x, y, beta, threshold):
    bx = x * beta
    return torch.where(bx > threshold, torch.ones_like(x), _sigmoid(bx))


def _relu_value(x):
    return x.clamp_min(0.0)  # keeps NaN as NaN, as torch does


def _relu_derivative(x, y):
    return (x > 0).to(x.dtype)  # 0 at x = 0, torch's choice of subgradient


def _leaky_value(x, slope):
    return torch.where(x > 0, x, x * slope)


def _leaky_derivative(x, y, slope):
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope))


def _elu_value(x, alpha, scale, input_scale):
    # exp of min(x, 0) only: the positive branch is never exponentiated (no inf to discard).
    neg = torch.expm1(x.clamp_max(0.0) * input_scale) * (alpha * scale)
    return torch.where(x > 0, x * scale, neg)


def _elu_derivative(x, y, alpha, scale, input_scale):
    neg = torch.exp(x.clamp_max(0.0) * input_scale) * (alpha * scale * input_scale)
    return torch.where(x > 0, torch.full_like(x, scale), neg)


def _gelu_value(x, approximate):
    if approximate == "none":
        # x * Phi(x) with Phi = erfc(-x/sqrt 2)/2: erfc keeps Phi's relative accuracy for x << 0
        return x * (0.5 * torch.erfc(-_SQRT_HALF * x))
    # Eq. 8 with 0.5 (1 + tanh u) = sigmoid(2u): no cancellation of 1 + tanh for x << 0.
    u = _GELU_K * (x + _GELU_KAPPA * x * x * x)
    return x * _sigmoid(2.0 * u)


def _gelu_derivative(x, y, approximate):
    if approximate == "none":
        cdf = 0.5 * torch.erfc(-_SQRT_HALF * x)
        pdf = torch.exp(-0.5 * x * x) * _INV_SQRT_2PI
        return cdf + x * pdf  # Eq. 7
    x2 = x * x
    s = _sigmoid(2.0 * _GELU_K * (x + _GELU_KAPPA * x2 * x))
    return s + 2.0 * x * s * (1.0 - s) * (_GELU_K * (1.0 + 3.0 * _GELU_KAPPA * x2))


def _silu_value(x):
    return x * _sigmoid(x)


def _silu_derivative(x, y):
    s = _sigmoid(x)
    return s * (1.0 + x * (1.0 - s))  # Eq. 9


def _mish_tanh_softplus(x):
    """tanh(softplus(x)) = w(w+2)/(w(w+2)+2) with w = e^x: one exp of -|x|, no overflow."""
    e = torch.exp(-x.abs())
    # x > 0: divide numerator and denominator by e^{2x}; x <= 0: w = e directly.
    pos = (1.0 + 2.0 * e) / (1.0 + 2.0 * e + 2.0 * e * e)
    w = e * (e + 2.0)
    neg = w / (w + 2.0)
    return torch.where(x > 0, pos, neg), e


def _mish_value(x):
    t, _ = _mish_tanh_softplus(x)
    return x * t


def _mish_derivative(x, y):
    t, e = _mish_tanh_softplus(x)
    s = torch.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # sigmoid(x) from the same exp
    return t + x * s * (1.0 - t * t)  # Eq. 10


def _hardsigmoid_value(x):
    return (x + 3.0).clamp(0.0, 6.0) / 6.0


def _hardsigmoid_derivative(x, y):
    inside = (x > -3.0) & (x < 3.0)
    return inside.to(x.dtype) / 6.0


def _hardswish_value(x):
    return x * (x + 3.0).clamp(0.0, 6.0) / 6.0


def _hardswish_derivative(x, y):
    # torch's subgradients at the kinks: x/3 + 1/2 on (-3, 3), 0 at and below -3, 1 at and
    # above 3 (Eq. 11)
    mid = x / 3.0 + 0.5
    return torch.where(x <= -3.0, torch.zeros_like(x), torch.where(x < 3.0, mid,
                                                                     torch.ones_like(x)))


@dataclass(frozen=True)
class _Spec:
    """One activation as a pair of tensor formulas: value(x, *p) and derivative(x, y, *p)."""

    name: str
    value: Callable[..., torch.Tensor]
    derivative: Callable[..., torch.Tensor]


_STEP = _Spec("step", _step_value, _step_derivative)
_SIGMOID = _Spec("sigmoid", lambda x: _sigmoid(x), _sigmoid_derivative)
_TANH = _Spec("tanh", lambda x: _tanh(x), _tanh_derivative)
_SOFTPLUS = _Spec("softplus", _softplus_value, _softplus_derivative)
_RELU = _Spec("relu", _relu_value, _relu_derivative)
_LEAKY = _Spec("leaky_relu", _leaky_value, _leaky_derivative)
_ELU = _Spec("elu", _elu_value, _elu_derivative)
_GELU = _Spec("gelu", _gelu_value, _gelu_derivative)
_SILU = _Spec("silu", _silu_value, _silu_derivative)
_MISH = _Spec("mish", _mish_value, _mish_derivative)
_HARDSIGMOID = _Spec("hardsigmoid", _hardsigmoid_value, _hardsigmoid_derivative)
_HARDSWISH = _Spec("hardswish", _hardswish_value, _hardswish_derivative)


# --------------------------------------------------------------------------- autograd Functions
class _Elementwise(torch.autograd.Function):
    """y = f(x) elementwise; backward: grad_x = grad_y * f'(x) with the spec's derivative."""

    @staticmethod
    def forward(ctx, x, spec, *params):
        y = spec.value(x, *params)
        ctx.spec, ctx.params = spec, params
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, y = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y * ctx.spec.derivative(x, y, *ctx.params)
        return (grad_x, None, *([None] * len(ctx.params)))


class _Gated(torch.autograd.Function):
    """Eq. 12: (a, b) = split(x, dim), y = a * f(b); grad_a = g f(b), grad_b = g a f'(b)."""

    @staticmethod
    def forward(ctx, x, dim, spec, *params):
        a, b = x.chunk(2, dim)
        fb = spec.value(b, *params)
        ctx.spec, ctx.params, ctx.dim = spec, params, dim
        ctx.save_for_backward(a, b, fb)
        return a * fb

    @staticmethod
    def backward(ctx, grad_y):
        a, b, fb = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_b = grad_y * a * ctx.spec.derivative(b, fb, *ctx.params)
            grad_x = torch.cat([grad_y * fb, grad_b], dim=ctx.dim)
        return (grad_x, None, None, *([None] * len(ctx.params)))


class _PReLU(torch.autograd.Function):
    """Eq. 5 with a learnable slope per channel (dimension 1), or one shared slope."""

    @staticmethod
    def forward(ctx, x, weight):
        w = _prelu_broadcast(weight, x)
        ctx.save_for_backward(x, weight)
        return torch.where(x > 0, x, w * x)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        w = _prelu_broadcast(weight, x)
        positive = x > 0
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.where(positive, grad_y, w * grad_y)
        if ctx.needs_input_grad[1]:
            # d y / d w = x where x <= 0: summed over every position sharing the slope
            contrib = torch.where(positive, torch.zeros_like(x), grad_y * x)
            if weight.numel() == 1:
                grad_w = contrib.sum().reshape(weight.shape)
            else:
                dims = [d for d in range(x.dim()) if d != 1]
                grad_w = contrib.sum(dim=dims).reshape(weight.shape)
        return grad_x, grad_w


def _prelu_broadcast(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if weight.numel() == 1:
        return weight.reshape(())
    shape = [1] * x.dim()
    shape[1] = weight.numel()
    return weight.reshape(shape)


# --------------------------------------------------------------------------- public functions
def _run(spec: _Spec, input, inplace: bool, *params) -> torch.Tensor:
    _check_input(input)
    if not _check_bool("inplace", inplace):
        return _Elementwise.apply(input, spec, *params)
    # In place, as torch: the result is written into ``input`` (a leaf that requires grad raises
    # torch's RuntimeError). The backward needs the original values, so they are kept in a copy.
    source = input.clone() if (input.requires_grad and torch.is_grad_enabled()) else input
    return input.copy_(_Elementwise.apply(source, spec, *params))


def step(input: torch.Tensor, value_at_zero: float = 1.0) -> torch.Tensor:
    """Heaviside step, the perceptron's unit (post, Eq. 1): 1 for x > 0, 0 for x < 0.

    Parameters
    ----------
    input : Tensor, any shape, floating point
    value_at_zero : float
        Output at exactly 0 (``torch.heaviside``'s ``values``); 1 means "fires at threshold".

    Returns
    -------
    Tensor, same shape. Its gradient is zero everywhere (0 is returned at the jump too).
    """
    return _run(_STEP, input, False, _check_real("value_at_zero", value_at_zero))


def sigmoid(input: torch.Tensor) -> torch.Tensor:
    """Logistic sigmoid 1/(1+e^{-x}) (Eq. 2); derivative sigma (1 - sigma). Same shape."""
    return _run(_SIGMOID, input, False)


def tanh(input: torch.Tensor) -> torch.Tensor:
    """Hyperbolic tangent (Eq. 3) from exp(-2|x|); derivative 1 - tanh^2. Same shape."""
    return _run(_TANH, input, False)


def softplus(input: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
    """Softplus log(1 + e^{beta x}) / beta (Eq. 4); derivative sigmoid(beta x).

    Parameters
    ----------
    input : Tensor, any shape
    beta : float > 0
        Sharpness; softplus tends to ReLU as beta grows.
    threshold : float
        Where ``beta * x > threshold`` the result is ``x`` itself (torch's convention).
    """
    beta = _check_real("beta", beta)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return _run(_SOFTPLUS, input, False, beta, _check_real("threshold", threshold))


def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """max(x, 0) (Eq. 5); derivative 1 for x > 0, else 0 (0 at x = 0, as torch)."""
    return _run(_RELU, input, inplace)


def leaky_relu(input: torch.Tensor, negative_slope: float = 0.01,
               inplace: bool = False) -> torch.Tensor:
    """x for x > 0, ``negative_slope * x`` otherwise (Eq. 5); derivative 1 or the slope."""
    return _run(_LEAKY, input, inplace, _check_real("negative_slope", negative_slope))


def prelu(input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with a learnable slope (Eq. 5); gradients for both input and weight.

    Parameters
    ----------
    input : Tensor, shape (N, C, ...) or any shape when ``weight`` has one element
    weight : Tensor, shape (C,) or (1,) (or 0-d)
        Slope per channel (dimension 1 of ``input``) or one shared slope.
    """
    _check_input(input)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise TypeError("weight must be a floating-point torch.Tensor")
    if weight.dim() > 1:
        raise ValueError(f"weight must be 0-d or 1-d, got shape {tuple(weight.shape)}")
    if weight.numel() != 1 and (input.dim() < 2 or input.shape[1] != weight.numel()):
        raise ValueError(f"weight has {weight.numel()} slopes but input has "
                         f"{input.shape[1] if input.dim() >= 2 else 1} channels (dimension 1)")
    return _PReLU.apply(input, weight)


def elu(input: torch.Tensor, alpha: float = 1.0, inplace: bool = False) -> torch.Tensor:
    """x for x > 0, alpha (e^x - 1) otherwise (Eq. 6); derivative 1 or alpha e^x."""
    return _run(_ELU, input, inplace, _check_real("alpha", alpha), 1.0, 1.0)


def selu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """scale * elu(x, alpha) with Klambauer et al.'s fixed alpha and scale (Eq. 6)."""
    return _run(_ELU, input, inplace, SELU_ALPHA, SELU_SCALE, 1.0)


def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """x Phi(x) (Eq. 7), or its tanh approximation with ``approximate="tanh"`` (Eq. 8)."""
    return _run(_GELU, input, False, _check_approximate(approximate))


def silu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """SiLU / Swish-1: x sigmoid(x) (Eq. 9); derivative sigma (1 + x (1 - sigma))."""
    return _run(_SILU, input, inplace)


def mish(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """x tanh(softplus(x)) (Eq. 10), computed from one exp(-|x|)."""
    return _run(_MISH, input, inplace)


def hardsigmoid(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """clamp(x + 3, 0, 6) / 6 (Eq. 11); derivative 1/6 on (-3, 3), else 0."""
    return _run(_HARDSIGMOID, input, inplace)


def hardswish(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """x * hardsigmoid(x) (Eq. 11); derivative x/3 + 1/2 on (-3, 3), 0 below, 1 above."""
    return _run(_HARDSWISH, input, inplace)


def _gated(spec: _Spec, input, dim, *params) -> torch.Tensor:
    _check_input(input)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -input.dim() <= dim < input.dim():
        raise ValueError(f"dim={dim} is out of range for an input with {input.dim()} dims")
    if input.shape[dim] % 2:
        raise ValueError(f"input's size along dim={dim} must be even, got {input.shape[dim]}")
    return _Gated.apply(input, dim % input.dim(), spec, *params)


def glu(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Gated linear unit a * sigmoid(b), (a, b) the halves of ``input`` along ``dim`` (Eq. 12).

    Shape: (..., 2H, ...) -> (..., H, ...). Same convention as ``torch.nn.functional.glu``: the
    first half is the value, the second the gate.
    """
    return _gated(_SIGMOID, input, dim)


def reglu(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """a * relu(b) (Shazeer 2020; Eq. 12). Shape (..., 2H, ...) -> (..., H, ...)."""
    return _gated(_RELU, input, dim)


def geglu(input: torch.Tensor, dim: int = -1, approximate: str = "none") -> torch.Tensor:
    """a * gelu(b, approximate) (Shazeer 2020; Eq. 12). Shape (..., 2H, ...) -> (..., H, ...)."""
    return _gated(_GELU, input, dim, _check_approximate(approximate))


def swiglu(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """a * silu(b) (Shazeer 2020; Eq. 12). Shape (..., 2H, ...) -> (..., H, ...)."""
    return _gated(_SILU, input, dim)


#: Elementwise activations with their default arguments, by name (PReLU needs a weight: absent).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "step": step,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softplus": softplus,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "selu": selu,
    "gelu": gelu,
    "gelu_tanh": lambda x: gelu(x, approximate="tanh"),
    "silu": silu,
    "mish": mish,
    "hardsigmoid": hardsigmoid,
    "hardswish": hardswish,
}

#: Gated units by name: each maps (..., 2H) to (..., H) along the last dimension.
GATED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "glu": glu,
    "reglu": reglu,
    "geglu": geglu,
    "swiglu": swiglu,
}
