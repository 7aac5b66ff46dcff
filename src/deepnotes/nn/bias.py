"""The bias term: the perceptron's learnable threshold, and where a bias is wasted.

- :func:`perceptron_fit`: Rosenblatt's perceptron rule with the threshold learned as a bias
  (post, Eqs. 1-3). With ``bias=False`` the boundary is forced through the origin; on data that
  only a shifted line separates, the rule then never stops making mistakes.
- :func:`augment`: the "bias trick": a constant-1 input whose weight is the bias (Eq. 2).
- :func:`make_mlp`: an MLP with or without biases. Without them a ReLU network is positively
  homogeneous, ``f(a x) = a f(x)`` for ``a >= 0`` (Eq. 4), so its decision regions are cones from
  the origin; with an odd activation (tanh) it is odd, ``f(-x) = -f(x)``.
- :func:`wasted_biases`: the biases of a ``nn.Sequential`` that a following normalisation removes
  (Eq. 5): all of a bias before batch norm (its gradient is zero), and the mean over features of a
  bias before layer norm (its gradient sums to zero).

Paper: Rosenblatt, F. (1958). The perceptron: a probabilistic model for information storage and
organization in the brain. Psychological Review 65(6). Ioffe & Szegedy (2015), batch norm, Sec. 3.2
(the bias before a normalisation "can be ignored").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["PerceptronResult", "augment", "bias_gradient_parts", "make_mlp", "perceptron_fit",
           "perceptron_predict", "wasted_biases"]


def _check_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n, d) with n >= 1, got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {y.shape}")
    if not np.isin(y, (-1, 1)).all():
        raise ValueError("y must hold labels -1 and +1 only")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite")
    return x, y.astype(np.float64)


def augment(x) -> np.ndarray:
    """Append a constant-1 column: ``w . x + b == [w, b] . [x, 1]`` (Eq. 2).

    x : array, shape (n, d) -> array, shape (n, d + 1)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, d), got {x.shape}")
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)


@dataclass
class PerceptronResult:
    """Weights, threshold and the mistakes made in each epoch.

    Attributes
    ----------
    weight : array, shape (d,)
    bias : float
        The learned threshold, negated: the unit fires when ``weight . x + bias >= 0``. Always 0
        when trained with ``bias=False``.
    mistakes : array of int, shape (epochs_run,)
        Updates made in each pass over the data.
    converged : bool
        An epoch passed without a mistake (the data are separated).
    """

    weight: np.ndarray
    bias: float
    mistakes: np.ndarray
    converged: bool


def perceptron_predict(x, weight, bias: float = 0.0) -> np.ndarray:
    """Eq. 1: ``+1`` where ``weight . x + bias >= 0``, else ``-1``. x: (n, d) -> (n,)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x @ np.asarray(weight, dtype=np.float64) + bias >= 0, 1, -1)


def perceptron_fit(x, y, *, epochs: int = 100, lr: float = 1.0, bias: bool = True,
                   rng: np.random.Generator | None = None) -> PerceptronResult:
    """Rosenblatt's rule (Eq. 3): on a mistake, ``w += lr y x`` and ``b += lr y``.

    Parameters
    ----------
    x : array, shape (n, d)
    y : array, shape (n,), labels in {-1, +1}
    epochs : int >= 1
        Passes over the data at most; training stops after a pass without mistakes.
    lr : float > 0
        Step size. With zero initial weights it only rescales ``w`` and ``b`` together, so the
        boundary and the mistakes do not depend on it (tested).
    bias : bool
        Learn the threshold; ``False`` keeps ``b = 0`` (boundary through the origin).
    rng : numpy Generator, optional
        Shuffles the order of each pass; ``None`` visits the points in order.

    A point exactly on the boundary (``w . x + b == 0``) counts as a mistake, so training starts
    from ``w = 0`` by updating on the first point.
    """
    x, y = _check_xy(x, y)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not isinstance(lr, (int, float)) or not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    w = np.zeros(x.shape[1])
    b = 0.0
    mistakes = []
    for _ in range(epochs):
        order = rng.permutation(len(y)) if rng is not None else range(len(y))
        count = 0
        for i in order:
            if y[i] * (x[i] @ w + b) <= 0:
                w += lr * y[i] * x[i]
                if bias:
                    b += lr * y[i]
                count += 1
        mistakes.append(count)
        if count == 0:
            break
    return PerceptronResult(w, float(b), np.asarray(mistakes, dtype=np.int64), mistakes[-1] == 0)


def make_mlp(d_in: int, widths: tuple[int, ...] | list[int], d_out: int, *, bias: bool = True,
             activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Linear -> activation`` per hidden width, then a ``Linear`` head; biases on or off.

    Without biases every layer is linear through the origin, so ``f(0) = 0``; with ReLU (or any
    positively homogeneous activation) ``f(a x) = a f(x)`` for ``a >= 0`` (Eq. 4).
    """
    for name, value in (("d_in", d_in), ("d_out", d_out)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be ints >= 1, got {widths!r}")
    layers: list[nn.Module] = []
    prev = d_in
    for w in widths:
        layers += [nn.Linear(prev, w, bias=bias), activation()]
        prev = w
    layers.append(nn.Linear(prev, d_out, bias=bias))
    return nn.Sequential(*layers)


_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def wasted_biases(model: nn.Sequential) -> list[tuple[str, str]]:
    """Biases that the normalisation right after their layer removes (Eq. 5).

    Returns
    -------
    list of ``(parameter name, "all" or "mean")``: ``"all"`` for a Linear/Conv bias followed by
    batch norm (in training mode the batch mean absorbs it entirely: its gradient is zero);
    ``"mean"`` for one followed by layer norm over the features (only the bias's mean over the
    normalised features is removed: its gradient sums to zero over them).
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
    found = []
    names = list(model._modules)
    for i, (layer, after) in enumerate(zip(model, list(model)[1:], strict=False)):
        if not isinstance(layer, _AFFINE) or layer.bias is None:
            continue
        if isinstance(after, _BATCH):
            found.append((f"{names[i]}.bias", "all"))
        elif isinstance(after, nn.LayerNorm):
            found.append((f"{names[i]}.bias", "mean"))
    return found


def bias_gradient_parts(grad: torch.Tensor) -> tuple[float, float]:
    """Split a bias gradient, shape (k,), into its mean part and the rest: (|mean|, |rest|_2).

    Before layer norm the first is rounding error; before batch norm both are.
    """
    if not isinstance(grad, torch.Tensor) or grad.dim() != 1:
        raise ValueError("grad must be a 1-d tensor")
    mean = grad.mean()
    return float(mean.abs()), float((grad - mean).norm())
