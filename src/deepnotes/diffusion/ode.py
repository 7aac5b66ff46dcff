"""An adaptive Dormand–Prince RK5(4) integrator for torch tensors (our own, no scipy).

Used by the probability-flow ODE sampler and the exact likelihood. The error norm is the RMS of
``err / (atol + rtol · max(|y|, |y_new|))`` (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4,
Eq. 4.11) taken per example (first axis) and then the worst example — so a batch gets one
shared step size but each example the accuracy it would get alone; a 1-D state is one system,
as in ``scipy.integrate.solve_ivp``. The step factor is ``0.9 · norm^(-1/5)`` clipped to
``[0.2, 10]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Dormand & Prince (1980) tableau: nodes c, stages a, 5th-order weights b, embedded 4th-order b̂.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B = _A[6] + (0.0,)
_B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b - bh for b, bh in zip(_B, _B_HAT, strict=True))


@dataclass
class ODEStats:
    """Work done by :func:`dormand_prince`: function evaluations and accepted/rejected steps."""

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0


def _rms_norm(err, y, y_new, rtol, atol) -> float:
    scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
    ratio = (err / scale) ** 2
    if ratio.ndim < 2:
        return float(torch.sqrt(ratio.mean()))
    # worst example's RMS: a batch of independent ODEs is then solved as accurately as each
    # alone (a plain RMS over the batch would let one stiff example's error be averaged away)
    return float(torch.sqrt(ratio.flatten(1).mean(1)).max())


def dormand_prince(f: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor,
                   t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
                   h0: float | None = None, max_steps: int = 100_000
                   ) -> tuple[torch.Tensor, ODEStats]:
    """Integrate ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` (either direction): ``(y(t1), stats)``.

    First-same-as-last: the 7th stage of an accepted step is the next step's first stage, so an
    accepted step costs 6 evaluations. The initial step follows Hairer et al. (II.4, "starting
    step size") unless ``h0`` is given.
    """
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got {rtol}, {atol}")
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"t0 and t1 must be finite, got {t0}, {t1}")
    stats = ODEStats()
    y = y0
    if t0 == t1:
        return y, stats
    direction = 1.0 if t1 > t0 else -1.0
    k1 = f(t0, y)
    stats.nfe += 1
    if h0 is None:
        scale = atol + rtol * y.abs()
        d0 = float(torch.sqrt(torch.mean((y / scale) ** 2)))
        d1 = float(torch.sqrt(torch.mean((k1 / scale) ** 2)))
        h = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h = min(h, abs(t1 - t0))
        y_probe = y + direction * h * k1
        k_probe = f(t0 + direction * h, y_probe)
        stats.nfe += 1
        d2 = float(torch.sqrt(torch.mean(((k_probe - k1) / scale) ** 2))) / h
        h1 = max(1e-6, h * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
        h = min(100 * h, h1, abs(t1 - t0))
    else:
        h = abs(float(h0))
    t = t0
    while direction * (t1 - t) > 0:
        if stats.n_accepted + stats.n_rejected >= max_steps:
            raise RuntimeError(f"dormand_prince: no convergence in {max_steps} steps at t={t:.6g}")
        h = min(h, abs(t1 - t))
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            yi = y + hs * sum(a * k for a, k in zip(_A[i], ks, strict=False) if a != 0.0)
            ks.append(f(t + _C[i] * hs, yi))
        stats.nfe += 6
        y_new = yi  # stage 7 is evaluated at the 5th-order solution (FSAL)
        err = hs * sum(e * k for e, k in zip(_E, ks, strict=True) if e != 0.0)
        norm = _rms_norm(err, y, y_new, rtol, atol)
        if not math.isfinite(norm):
            raise FloatingPointError(f"dormand_prince: non-finite state at t={t:.6g}")
        if norm <= 1.0:
            t = t1 if h == abs(t1 - t) else t + hs
            y, k1 = y_new, ks[6]
            stats.n_accepted += 1
            factor = 10.0 if norm == 0 else min(10.0, 0.9 * norm ** -0.2)
        else:
            stats.n_rejected += 1
            factor = max(0.2, 0.9 * norm ** -0.2)
        h *= factor
    return y, stats
