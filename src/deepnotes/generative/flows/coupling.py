"""Coupling layers (NICE's additive, RealNVP/Glow's affine) and NICE's diagonal scaling.

A binary mask ``m`` picks the features that pass through unchanged (``m = 1``) and condition the
update of the others. Because the updated half depends on the unchanged half only, the Jacobian
is triangular in a suitable order and its determinant is the product of its diagonal
(Eq. 2-3 of the post ``nice``; Eq. 3-4 of ``normalizing-flows``).
"""

from __future__ import annotations

import torch
from torch import nn

from deepnotes.generative.flows.base import FlowLayer

MASKS = ("parity", "half")


def coupling_mask(dim: int, kind: str = "parity", flip: bool = False) -> torch.Tensor:
    """A {0, 1} float mask of length ``dim``; 1 marks the unchanged (conditioning) features.

    ``"parity"`` keeps the even indices (NICE's odd/even partition, the 1-D analogue of
    RealNVP's checkerboard); ``"half"`` keeps the first ``dim // 2`` (the analogue of a channel
    mask). ``flip`` swaps the roles, so alternating layers update every feature.
    """
    if kind not in MASKS:
        raise ValueError(f"mask kind must be one of {MASKS}, got {kind!r}")
    if dim < 2:
        raise ValueError(f"a coupling layer needs dim >= 2, got {dim}")
    idx = torch.arange(dim)
    keep = idx % 2 == 0 if kind == "parity" else idx < dim // 2
    return (keep != flip).to(torch.get_default_dtype())


class MLP(nn.Sequential):
    """``d_in -> hidden (x n_hidden, ReLU) -> d_out``; the last layer zero-initialised if asked.

    A zero last layer makes a coupling start as the identity (Glow, Sec. 3.3), which keeps the
    first steps of deep stacks stable.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int = 64, n_hidden: int = 2,
                 zero_init: bool = True):
        if hidden < 1 or n_hidden < 1:
            raise ValueError(f"hidden and n_hidden must be >= 1, got {hidden}, {n_hidden}")
        layers: list[nn.Module] = []
        width = d_in
        for _ in range(n_hidden):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        last = nn.Linear(width, d_out)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        super().__init__(*layers, last)


def _as_mask(dim: int, mask) -> torch.Tensor:
    if isinstance(mask, str):
        return coupling_mask(dim, mask)
    mask = torch.as_tensor(mask, dtype=torch.get_default_dtype())
    if mask.shape != (dim,) or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"mask must be a {{0, 1}} vector of length {dim}")
    if bool(mask.all()) or not bool(mask.any()):
        raise ValueError("mask must keep some features and update the others")
    return mask


class AdditiveCoupling(FlowLayer):
    """NICE's additive coupling: ``y = x + (1 - m) ⊙ t(m ⊙ x)`` (Eq. 2 of the post ``nice``).

    Volume preserving: log|det| = 0 (Eq. 3). Inverse: ``x = y - (1 - m) ⊙ t(m ⊙ y)``.

    Parameters
    ----------
    dim : int
    mask : {"parity", "half"} or (dim,) {0, 1} tensor
        Features with ``m = 1`` pass unchanged and condition the shift.
    hidden, n_hidden : int
        Width and depth of the shift network ``t``.
    zero_init : bool
        Start as the identity (a deviation from NICE, which initialises randomly).
    """

    def __init__(self, dim: int, mask="parity", hidden: int = 64, n_hidden: int = 2,
                 zero_init: bool = True):
        super().__init__(dim)
        self.register_buffer("mask", _as_mask(dim, mask))
        self.net = MLP(dim, dim, hidden, n_hidden, zero_init)

    def _shift(self, x):
        return self.net(x * self.mask) * (1.0 - self.mask)

    def _forward(self, x):
        return x + self._shift(x), x.new_zeros(x.shape[0])

    def _inverse(self, z):
        return z - self._shift(z), z.new_zeros(z.shape[0])


SCALES = ("tanh", "sigmoid", "inv_sigmoid", "exp")


def bounded_log_scale(a: torch.Tensor, scale: str, tanh_scale: torch.Tensor | None = None):
    """The coupling's log-scale ``s`` from the network's raw output ``a`` (Eq. 5 of the post
    ``normalizing-flows``): ``c tanh(a)``, ``log σ(a + 2)``, ``-log σ(a + 2)`` or ``a`` itself.

    ``tanh_scale`` is ``c``, broadcastable to ``a`` (needed for ``scale="tanh"`` only).
    """
    if scale == "tanh":
        return tanh_scale * torch.tanh(a)
    if scale == "sigmoid":
        return nn.functional.logsigmoid(a + 2.0)
    if scale == "inv_sigmoid":
        # -log σ(a + 2) = softplus(-a - 2) >= 0, computed without dividing by a small σ
        return nn.functional.softplus(-a - 2.0)
    if scale == "exp":
        return a
    raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


class AffineCoupling(FlowLayer):
    """RealNVP's affine coupling: ``y = m ⊙ x + (1 - m) ⊙ (x ⊙ exp(s) + t)``, s, t of ``m ⊙ x``.

    log|det| = ``sum_i (1 - m_i) s_i`` (Eq. 4 of the post ``normalizing-flows``). The log-scale
    ``s`` comes from the network's raw output ``a`` through ``scale`` (Eq. 5):

    - ``"tanh"``: ``s = c ⊙ tanh(a)`` with a learned per-feature ``c`` (init 1), so each layer
      changes the log-scale by at most ``|c|`` (RealNVP's choice);
    - ``"sigmoid"``: ``s = log σ(a + 2)``, Glow's: scales in (0, 1), starting near ``σ(2) = 0.88``,
      so the layer can only contract in the data -> noise direction and never blows up;
    - ``"inv_sigmoid"``: ``s = -log σ(a + 2)``, the reciprocal scale in (1, ∞): the layer can
      only expand in the data -> noise direction (and only contract when sampling). It can give
      near-constant coordinates a large expansion directly, but the expansion is unbounded, so a
      test point far from the data can overflow to an infinite log-density;
    - ``"exp"``: ``s = a``, unbounded (for comparison only: training can diverge).

    Parameters as in :class:`AdditiveCoupling`, plus ``scale``.
    """

    def __init__(self, dim: int, mask="parity", hidden: int = 64, n_hidden: int = 2,
                 scale: str = "tanh", zero_init: bool = True):
        super().__init__(dim)
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.register_buffer("mask", _as_mask(dim, mask))
        self.net = MLP(dim, 2 * dim, hidden, n_hidden, zero_init)
        self.scale = scale
        if scale == "tanh":
            self.tanh_scale = nn.Parameter(torch.ones(dim))

    def _log_scale_shift(self, x):
        a, t = self.net(x * self.mask).chunk(2, dim=1)  # (B, D) each
        s = bounded_log_scale(a, self.scale, getattr(self, "tanh_scale", None))
        keep = 1.0 - self.mask
        return s * keep, t * keep

    def _forward(self, x):
        s, t = self._log_scale_shift(x)
        return x * torch.exp(s) + t, s.sum(1)

    def _inverse(self, z):
        s, t = self._log_scale_shift(z)  # the kept half of z equals that of x
        return (z - t) * torch.exp(-s), -s.sum(1)


class Scaling(FlowLayer):
    """NICE's diagonal scaling ``y = exp(s) ⊙ x`` (Eq. 4 of the post ``nice``).

    log|det| = ``sum_i s_i``: the only non-volume-preserving part of NICE; it lets the model
    spend less volume (larger log-density) on directions of small variance.
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def _forward(self, x):
        return x * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def _inverse(self, z):
        return z * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(z.shape[0])
