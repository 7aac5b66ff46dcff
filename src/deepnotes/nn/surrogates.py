"""Accuracy and its differentiable surrogates for multi-class logits.

Accuracy (one minus the 0-1 loss, post Eq. 1) is piecewise constant in the logits: its gradient is
zero wherever it exists, so gradient descent cannot optimise it directly. The surrogates here are
smooth or piecewise-linear functions of the logits that a gradient can follow:

- :func:`sigmoid_zero_one_loss`: ``sigmoid(-m / T)`` of the multi-class margin ``m`` (Eqs. 2-3),
- :func:`softmax_zero_one_loss`: ``1 - softmax(f / T)_y``, the expected 0-1 loss of a softmax
  classifier (Eq. 4); both tend to the 0-1 loss as the temperature ``T -> 0``,
- :func:`hinge_loss` and :func:`squared_hinge_loss`: Weston-Watkins multi-class hinge, the
  convention of ``torch.nn.functional.multi_margin_loss`` with ``p = 1`` and ``p = 2`` (Eq. 5),
- :func:`cross_entropy`: ``logsumexp(f) - f_y`` (Eq. 6).

Every function takes logits of shape (B, C) and integer targets of shape (B,) and returns the
mean over the batch (``reduction="mean"``), the sum, or the per-example values (``"none"``).
The gradients are autograd's; the tests hold them to the closed forms of the post (Eqs. 7-10).

References: Weston & Watkins (1999) multi-class SVMs; Crammer & Singer (2001); Bartlett, Jordan &
McAuliffe (2006) convexity, classification and risk bounds; Ghosh, Kumar & Sastry (2017) robust
loss functions under label noise (bounded, symmetric losses).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "LOSSES",
    "accuracy",
    "cross_entropy",
    "hinge_loss",
    "margin",
    "sigmoid_zero_one_loss",
    "softmax_zero_one_loss",
    "squared_hinge_loss",
    "zero_one_loss",
]

REDUCTIONS = ("mean", "sum", "none")


def _check(logits, target, reduction: str = "mean") -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (B, C) with C >= 2, got {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor) or target.dtype not in (torch.int64, torch.int32):
        raise TypeError("target must be an integer torch.Tensor of class indices")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"target must hold class indices in [0, {logits.shape[1]})")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose argmax is the target (ties go to the lowest index). No gradient."""
    _check(logits, target)
    return (logits.detach().argmax(1) == target).to(logits.dtype).mean()


def zero_one_loss(logits: torch.Tensor, target: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Eq. 1: 1 where the argmax is not the target, else 0. Shape () or (B,). No gradient."""
    _check(logits, target, reduction)
    return _reduce((logits.detach().argmax(1) != target).to(logits.dtype), reduction)


def margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ``m = f_y - max_{k != y} f_k``, shape (B,); positive exactly when correct.

    Its gradient is ``+1`` at the target and ``-1`` at the strongest other class (Eq. 7).
    """
    _check(logits, target)
    f_y = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf"))
    return f_y - others.max(1).values


def sigmoid_zero_one_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0,
                          reduction: str = "mean") -> torch.Tensor:
    """Eq. 3: ``sigmoid(-m / T)``, a smooth step of the margin; -> 0-1 loss as ``T -> 0``.

    Bounded in (0, 1): a point far on the wrong side costs at most 1 and has a gradient of
    about ``exp(-|m| / T) / T`` (Eq. 8), so it is given up on, the source of its robustness to
    label noise and of its flat gradients.
    """
    t = _check_positive("temperature", temperature)
    _check(logits, target, reduction)
    return _reduce(torch.sigmoid(-margin(logits, target) / t), reduction)


def softmax_zero_one_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0,
                          reduction: str = "mean") -> torch.Tensor:
    """Eq. 4: ``1 - softmax(f / T)_y``, the probability of an error when sampling the class.

    Tends to the 0-1 loss as ``T -> 0`` (for untied logits); gradient in Eq. 9.
    """
    t = _check_positive("temperature", temperature)
    _check(logits, target, reduction)
    p_y = torch.softmax(logits / t, dim=1).gather(1, target[:, None])[:, 0]
    return _reduce(1.0 - p_y, reduction)


def _hinge_terms(logits, target, margin_value):
    f_y = logits.gather(1, target[:, None])  # (B, 1)
    terms = (margin_value - f_y + logits).clamp_min(0.0)  # (B, C)
    # the k = y term would be max(0, margin) = margin: it is excluded from the sum
    return terms.scatter(1, target[:, None], 0.0)


def hinge_loss(logits: torch.Tensor, target: torch.Tensor, margin: float = 1.0,
               reduction: str = "mean") -> torch.Tensor:
    """Eq. 5 with p = 1: ``sum_{k != y} max(0, margin - f_y + f_k) / C``.

    Equal to ``torch.nn.functional.multi_margin_loss(logits, target, p=1, margin=margin)``.
    """
    margin_value = _check_positive("margin", margin)
    _check(logits, target, reduction)
    return _reduce(_hinge_terms(logits, target, margin_value).sum(1) / logits.shape[1],
                   reduction)


def squared_hinge_loss(logits: torch.Tensor, target: torch.Tensor, margin: float = 1.0,
                       reduction: str = "mean") -> torch.Tensor:
    """Eq. 5 with p = 2: ``sum_{k != y} max(0, margin - f_y + f_k)^2 / C`` (``p=2`` in torch)."""
    margin_value = _check_positive("margin", margin)
    _check(logits, target, reduction)
    return _reduce(_hinge_terms(logits, target, margin_value).square().sum(1) /
                   logits.shape[1], reduction)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Eq. 6: ``logsumexp(f) - f_y``, with the row maximum taken out first (no overflow)."""
    _check(logits, target, reduction)
    top = logits.detach().max(1, keepdim=True).values
    lse = (logits - top).exp().sum(1).log() + top[:, 0]
    return _reduce(lse - logits.gather(1, target[:, None])[:, 0], reduction)


#: Surrogates by name with their default arguments: ``loss(logits, target) -> scalar``.
LOSSES = {
    "cross_entropy": cross_entropy,
    "hinge": hinge_loss,
    "squared_hinge": squared_hinge_loss,
    "softmax_01": softmax_zero_one_loss,
    "sigmoid_01": sigmoid_zero_one_loss,
}
