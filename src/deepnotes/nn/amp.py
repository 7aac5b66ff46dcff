"""Mixed-precision training by hand: float facts, FP32 master weights, loss scaling.

* :func:`measure_float_facts` finds machine epsilon, the smallest subnormal and normal numbers
  and the largest finite number of a dtype by doing arithmetic *in* that dtype (post Eqs. 1-3).
* :func:`underflow_fractions`: the share of values that become zero (or subnormal, or infinite)
  when cast to a low-precision dtype.
* :class:`MasterWeights`: the model runs in FP16/BF16; the optimiser updates an FP32 copy of
  every parameter, and the model copy is re-rounded from it after each step (Eq. 4).
* :class:`GradScaler`: dynamic loss scaling with the semantics of ``torch.amp.GradScaler``
  (``init_scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval``; the step is
  skipped on inf/NaN; ``unscale_`` before clipping; Eqs. 5-6). :class:`StaticGradScaler` keeps
  the scale fixed.

Reference: Micikevicius et al. (2018), "Mixed Precision Training", ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

__all__ = [
    "GradScaler",
    "MasterWeights",
    "StaticGradScaler",
    "measure_float_facts",
    "underflow_fractions",
]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_float_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")


def measure_float_facts(dtype: torch.dtype) -> dict[str, float]:
    """Machine epsilon, smallest subnormal, smallest normal and largest finite value of ``dtype``,
    found by halving and doubling in that dtype (every operation rounds to ``dtype``).

    Returns
    -------
    dict with ``eps`` (gap between 1 and the next number, Eq. 1), ``smallest_subnormal`` (the last
    non-zero value when halving 1, Eq. 3), ``smallest_normal`` (the smallest ``x`` for which
    ``x (1 + eps) != x``: below it the spacing stops shrinking, Eq. 2), ``max`` (the largest
    finite value) and ``overflow`` (``max`` times two, which is ``inf``).
    """
    _check_float_dtype(dtype)

    def t(v):
        return torch.tensor(v, dtype=dtype)

    one, two, half = t(1.0), t(2.0), t(0.5)
    eps = t(1.0)
    while one + eps / two != one:  # the sum rounds in dtype
        eps = eps / two
    x = t(1.0)
    while (x * half) != 0:
        x = x * half
    smallest_subnormal = x
    x = t(1.0)
    one_eps = one + eps
    while (x * half) * one_eps != x * half:
        x = x * half
    smallest_normal = x
    big = t(1.0)
    while torch.isfinite(big * two):
        big = big * two
    step, top = big / two, big  # top = 2^emax; add the mantissa bits below it
    while step >= top * eps / two and torch.isfinite(top + step) and (top + step) != top:
        top = top + step
        step = step / two
    return {"eps": float(eps), "smallest_subnormal": float(smallest_subnormal),
            "smallest_normal": float(smallest_normal), "max": float(top),
            "overflow": float(top * two)}


def underflow_fractions(values: torch.Tensor | Iterable[torch.Tensor],
                        dtype: torch.dtype = torch.float16, scale: float = 1.0) -> dict[str, float]:
    """What happens to FP32 values (gradients) multiplied by ``scale`` and cast to ``dtype``.

    Returns
    -------
    dict with ``zero`` (share of the non-zero values that round to 0), ``subnormal`` (share that
    land below the smallest normal number but not at 0: they keep fewer significant bits),
    ``overflow`` (share that become inf) and ``count`` (number of non-zero values).
    """
    _check_float_dtype(dtype)
    if not (isinstance(scale, int | float) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    if isinstance(values, torch.Tensor):
        values = [values]
    flat = torch.cat([v.detach().reshape(-1).float() for v in values])
    flat = flat[flat != 0] * scale
    n = flat.numel()
    if n == 0:
        return {"zero": 0.0, "subnormal": 0.0, "overflow": 0.0, "count": 0}
    low = flat.to(dtype)
    tiny = torch.finfo(dtype).tiny
    zero = float((low == 0).sum()) / n
    sub = float(((low != 0) & (low.abs() < tiny)).sum()) / n
    over = float(torch.isinf(low).sum()) / n
    return {"zero": zero, "subnormal": sub, "overflow": over, "count": n}


class MasterWeights:
    """FP32 master copies of a model whose own parameters are cast to ``dtype`` (Eq. 4).

    Forward and backward run in ``dtype`` through ``model``; the optimiser is built on
    :attr:`params` (FP32). One step is::

        loss = loss_fn(model)                     # low precision inside, FP32 loss
        scaler.scale(loss).backward()             # low-precision gradients, times S
        master.grads_to_master()                  # FP32 copies of the gradients
        scaler.step(optimizer); scaler.update()   # unscale, skip on inf, update S
        master.master_to_model()                  # round the new weights for the next forward

    Parameters
    ----------
    model : nn.Module
        Its floating parameters are cast to ``dtype`` in place; the FP32 values are kept first.
    dtype : torch.dtype
        ``torch.float16`` or ``torch.bfloat16`` (``torch.float32`` gives a plain FP32 run).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float16):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if dtype not in (*LOW_PRECISION, torch.float32):
            raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
        self.model = model
        self.dtype = dtype
        self.model_params = [p for p in model.parameters() if p.is_floating_point()]
        self.params = [nn.Parameter(p.detach().clone().float()) for p in self.model_params]
        model.to(dtype)
        # model.to replaced the parameters' data; keep the (same) Parameter objects
        self.model_params = [p for p in model.parameters() if p.is_floating_point()]

    def grads_to_master(self) -> None:
        """Copy the model's low-precision gradients into FP32 ``.grad`` of the master params."""
        for mp, p in zip(self.model_params, self.params, strict=True):
            p.grad = None if mp.grad is None else mp.grad.detach().float()
            mp.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        """Round the FP32 master weights into the model's parameters."""
        for mp, p in zip(self.model_params, self.params, strict=True):
            mp.copy_(p)


_READY, _UNSCALED, _STEPPED = 0, 1, 2


class GradScaler:
    """Dynamic loss scaling with ``torch.amp.GradScaler``'s semantics (Eqs. 5-6).

    The loss is multiplied by the scale ``S`` before ``backward`` so that small gradients stay
    representable in FP16; the optimiser's gradients are divided by ``S`` again (``unscale_``).
    If any gradient is inf or NaN the optimiser step is skipped and ``S`` is multiplied by
    ``backoff_factor``; after ``growth_interval`` consecutive finite steps ``S`` is multiplied by
    ``growth_factor``. ``S`` is held in float32, as torch holds it, so the two agree exactly.

    Parameters
    ----------
    init_scale : float
        Starting ``S`` (> 0).
    growth_factor : float
        Multiplier after ``growth_interval`` finite steps (> 1).
    backoff_factor : float
        Multiplier after a step with inf/NaN gradients (in (0, 1)).
    growth_interval : int
        Consecutive finite steps before ``S`` grows (>= 1).
    enabled : bool
        False makes every method a pass-through (the same code runs in FP32).
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        if not (isinstance(init_scale, int | float) and init_scale > 0
                and math.isfinite(init_scale)):
            raise ValueError(f"init_scale must be positive and finite, got {init_scale!r}")
        self._check_factors(growth_factor, backoff_factor)
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) \
                or growth_interval < 1:
            raise ValueError(f"growth_interval must be an int >= 1, got {growth_interval!r}")
        self._scale = float(np.float32(init_scale))
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._enabled = bool(enabled)
        self._per_optimizer: dict[int, dict] = {}

    @staticmethod
    def _check_factors(growth_factor, backoff_factor) -> None:
        if not growth_factor > 1.0:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor!r}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"backoff_factor must be in (0, 1), got {backoff_factor!r}")

    # -- the loss ---------------------------------------------------------------------------
    def scale(self, outputs):
        """``outputs * S`` (a tensor, or a list/tuple of tensors)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, torch.Tensor):
            return outputs * torch.tensor(self._scale, dtype=torch.float32, device=outputs.device)
        if isinstance(outputs, list | tuple):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"outputs must be a tensor or a list/tuple of tensors, got "
                        f"{type(outputs).__name__}")

    # -- the gradients ----------------------------------------------------------------------
    def _state(self, optimizer) -> dict:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

    def unscale_(self, optimizer) -> None:
        """Divide the optimiser's gradients by ``S`` in place and record whether any is inf/NaN.

        Call it before clipping gradients; ``step`` then does not unscale again.
        """
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the "
                               "last update().")
        if state["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        # 1/S computed in float64 and rounded to float32, then one multiply per gradient
        inv = float(np.float32(1.0 / self._scale))
        found = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.dtype == torch.float16:
                    raise ValueError("Attempting to unscale FP16 gradients: keep FP32 master "
                                     "weights (MasterWeights) for the optimiser")
                g = p.grad
                found = found or not bool(torch.isfinite(g).all())
                g.mul_(torch.tensor(inv, dtype=torch.float32, device=g.device))
        state["found_inf"] = found
        state["stage"] = _UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Unscale if not done yet, then ``optimizer.step()`` unless an inf/NaN was found.

        Returns what ``optimizer.step`` returns, or ``None`` when the step was skipped.
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        state = self._state(optimizer)
        if state["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        state["stage"] = _STEPPED
        if state["found_inf"]:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | None = None) -> None:
        """Back off after any inf/NaN, grow after ``growth_interval`` clean steps (Eq. 6)."""
        if not self._enabled:
            return
        if new_scale is not None:
            if not (isinstance(new_scale, int | float) and new_scale > 0):
                raise ValueError(f"new_scale must be positive, got {new_scale!r}")
            self._scale = float(np.float32(new_scale))
        else:
            found = [s["found_inf"] for s in self._per_optimizer.values()
                     if s["found_inf"] is not None]
            if not found:
                raise RuntimeError("No inf checks were recorded prior to update().")
            self._update_scale(any(found))
        self._per_optimizer = {}

    def _update_scale(self, found_inf: bool) -> None:
        if found_inf:
            self._scale = float(np.float32(self._scale * self._backoff_factor))
            self._growth_tracker = 0
            return
        successful = self._growth_tracker + 1
        if successful == self._growth_interval:
            with np.errstate(over="ignore"):
                grown = np.float32(self._scale * self._growth_factor)
            if np.isfinite(grown):  # never grow past float32's range to inf
                self._scale = float(grown)
            self._growth_tracker = 0
        else:
            self._growth_tracker = successful

    # -- inspection -------------------------------------------------------------------------
    def get_scale(self) -> float:
        """Current ``S`` (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def get_growth_tracker(self) -> int:
        return self._growth_tracker

    def is_enabled(self) -> bool:
        return self._enabled

    def found_inf(self, optimizer) -> bool:
        """Whether the last ``unscale_`` of ``optimizer`` saw an inf/NaN (False if none yet)."""
        return bool(self._per_optimizer.get(id(optimizer), {}).get("found_inf"))

    def state_dict(self) -> dict:
        return {"scale": self._scale, "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state: dict) -> None:
        self._scale = float(state["scale"])
        self._growth_factor = float(state["growth_factor"])
        self._backoff_factor = float(state["backoff_factor"])
        self._growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])


class StaticGradScaler(GradScaler):
    """A fixed loss scale ``S``: gradients are unscaled and steps with inf/NaN are still skipped,
    but ``S`` never changes (the "static loss scaling" of Micikevicius et al.)."""

    def __init__(self, scale: float = 2.0**10, enabled: bool = True):
        super().__init__(init_scale=scale, growth_factor=2.0, backoff_factor=0.5,
                         growth_interval=1, enabled=enabled)

    def _update_scale(self, found_inf: bool) -> None:
        return None
