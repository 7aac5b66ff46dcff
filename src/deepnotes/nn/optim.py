"""Adam and AdamW written from their update equations, with a single-pass numba kernel.

``Adam`` follows Kingma & Ba (2015), Algorithm 1, with the AMSGrad variant of Reddi, Kale & Kumar
(2018); ``AdamW`` follows Loshchilov & Hutter (2019), Algorithm 2. Both take the arguments of
``torch.optim.Adam`` / ``torch.optim.AdamW`` and keep the same per-parameter state (``step``,
``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``), so state dicts move between them and torch.

The two share every line but one: ``Adam`` adds the weight decay to the gradient (an L2 term in the
loss, Eq. 6) while ``AdamW`` shrinks the parameter directly (Eq. 7). ``AdamW`` is therefore ``Adam``
with one class attribute flipped.

``fused=True`` runs the update of every fused parameter, across all parameter groups, as one
numba kernel over flat buffers: at the first step each parameter's ``.data`` is re-pointed to a
slice of one contiguous buffer (the moments live in buffers of the same layout), so one parallel
pass reads p, g, m, v and writes p, m, v with no temporaries. Gradients are read in place through
their addresses, so ``zero_grad(set_to_none=True)`` costs no copy. Hyperparameters travel per
parameter, so groups with different learning rates still share the single call. The fused path
handles CPU float32/float64 tensors (one dtype per optimiser) and raises ``TypeError`` for
anything else (CUDA, half precision, complex): use ``fused=False`` there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numba
import numpy as np
import torch
from numba import prange, types
from numba.extending import intrinsic

__all__ = ["Adam", "AdamW"]

#: Elements per work item of the fused kernel: large enough that the per-chunk overhead vanishes,
#: small enough that two threads get an even share of a model with a few big matrices.
CHUNK = 1 << 16

_FUSED_DTYPES = (torch.float32, torch.float64)


class Adam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015, Alg. 1) with L2 weight decay added to the gradient (Eq. 6).

    Parameters
    ----------
    params : iterable of Tensor or of dict
        Parameters, or parameter groups (dicts with ``params`` and any of the options below).
    lr : float
        Step size :math:`\\alpha` (Eq. 5).
    betas : tuple of float
        :math:`(\\beta_1, \\beta_2)`, decay rates of the first and second moments (Eqs. 1-2),
        each in [0, 1).
    eps : float
        :math:`\\epsilon`, added to :math:`\\sqrt{v_t}/\\sqrt{1-\\beta_2^t}` (Eq. 5), as torch does.
    weight_decay : float
        Coefficient :math:`\\lambda` of the L2 term :math:`\\tfrac{\\lambda}{2}\\|\\theta\\|^2`
        whose gradient :math:`\\lambda\\theta` is added to the loss gradient (Eq. 6).
    amsgrad : bool
        Normalise by the running maximum of the raw :math:`v_t` (AMSGrad, Eq. 8).
    maximize : bool
        Ascend instead of descend (the gradient's sign is flipped).
    foreach : bool or None
        Accepted for torch compatibility. The plain path always updates one tensor at a time
        (torch's ``foreach=False`` order); torch's multi-tensor path gives the same values to float
        rounding.
    capturable : bool
        Accepted for torch compatibility; ``True`` (CUDA-graph capture) is refused, as torch
        refuses it for CPU tensors.
    differentiable : bool
        Accepted for torch compatibility; ``True`` (autograd through the step) is refused.
    fused : bool
        Update all fused parameters with one numba kernel over flat buffers (CPU float32/float64
        only). Meant for large tensors; for hundreds of tiny ones the plain path is as fast.

    Complex parameters are updated as torch does: as real tensors of twice the size
    (``torch.view_as_real``), with the moments kept complex in the state. ``lr`` may be a
    one-element tensor, read at each step (so it can be changed in place).
    """

    #: Decoupled decay (AdamW, Eq. 7) instead of L2 in the gradient (Eq. 6).
    decoupled_weight_decay = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        _check_hyperparameters(lr, betas, eps, weight_decay)
        if capturable:
            raise ValueError("capturable=True (CUDA-graph capture) is not supported: deepnotes' "
                             "Adam runs eagerly; use torch.optim for graph capture")
        if differentiable:
            raise ValueError("differentiable=True is not supported: the step runs under no_grad")
        fused = bool(fused)
        if fused and isinstance(lr, torch.Tensor):
            raise ValueError("fused=True takes a float lr, not a tensor")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=False, differentiable=False, fused=fused)
        super().__init__(params, defaults)
        for group in self.param_groups:
            _check_hyperparameters(group["lr"], group["betas"], group["eps"],
                                   group["weight_decay"])
            if group["fused"]:
                for p in group["params"]:
                    _check_fusable(p)
        # Flat buffers of the fused parameters: built at the first fused step, rebuilt if stale.
        self._layout: _FlatLayout | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._layout = None
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("fused", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient (Eqs. 1-5, plus Eq. 6 or 7).

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; called with gradients enabled.

        Returns
        -------
        The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        fused = [group for group in self.param_groups if group["fused"]]
        if fused:
            self._fused_step(fused)
        for group in self.param_groups:
            if not group["fused"]:
                self._plain_group_step(group)
        return loss

    # ------------------------------------------------------------------ plain reference path
    def _init_state(self, p: torch.Tensor, amsgrad: bool) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            # A float32 tensor like torch's, so state dicts are interchangeable.
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _plain_group_step(self, group: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps = _float_lr(group["lr"]), group["betas"], group["eps"]
        wd, amsgrad = group["weight_decay"], group["amsgrad"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = _checked_grad(p)
            if group["maximize"]:
                grad = -grad
            state = self._init_state(p, amsgrad)
            state["step"] += 1
            t = state["step"].item()
            if torch.is_complex(p):  # as torch: update the real and imaginary parts as reals
                self._real_step(p, grad, state, lr, beta1, beta2, eps, wd, amsgrad, t)
                continue
            if wd != 0:
                if self.decoupled_weight_decay:
                    p.mul_(1 - lr * wd)  # Eq. 7: shrink theta, outside the adaptive scaling
                else:
                    grad = grad.add(p, alpha=wd)  # Eq. 6: L2 gradient, inside it
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(grad, 1 - beta1)  # Eq. 1 written as m + (1 - beta1)(g - m)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # Eq. 2
            if amsgrad:
                # Eq. 8: the max is taken of the raw v_t (torch does the same), not of v-hat.
                torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                v = state["max_exp_avg_sq"]
            step_size = lr / (1 - beta1**t)  # Eq. 3 folded into the step
            denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)  # Eqs. 4-5: eps after sqrt
            p.addcdiv_(m, denom, value=-step_size)

    def _real_step(self, p, grad, state, lr, beta1, beta2, eps, wd, amsgrad, t) -> None:
        """The same update on ``torch.view_as_real`` views of a complex parameter."""
        real = torch.view_as_real(p)
        grad = torch.view_as_real(grad)
        if wd != 0:
            if self.decoupled_weight_decay:
                real.mul_(1 - lr * wd)
            else:
                grad = grad.add(real, alpha=wd)
        m, v = torch.view_as_real(state["exp_avg"]), torch.view_as_real(state["exp_avg_sq"])
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if amsgrad:
            vmax = torch.view_as_real(state["max_exp_avg_sq"])
            torch.maximum(vmax, v, out=vmax)
            v = vmax
        denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
        real.addcdiv_(m, denom, value=-lr / (1 - beta1**t))

    # ------------------------------------------------------------------ fused path
    def _fused_step(self, groups: list[dict[str, Any]]) -> None:
        """All fused groups in one kernel call; hyperparameters travel per parameter."""
        params, hyper = [], []
        for g in groups:
            row = (_float_lr(g["lr"]), *g["betas"], g["eps"], g["weight_decay"], g["maximize"],
                   g["amsgrad"])
            for p in g["params"]:
                _check_fusable(p)
                if p.grad is not None:
                    _checked_grad(p)
                params.append(p)
                hyper.append(row)
        amsgrad = [row[-1] for row in hyper]
        if self._layout is None or not self._layout.is_current(params, self.state, amsgrad):
            self._layout = _FlatLayout(params, self, amsgrad)
        layout = self._layout
        active = np.array([p.grad is not None for p in params])
        if not active.any():
            return
        layout.steps[active] += 1  # the state's "step" tensors are views of this buffer
        t = layout.steps[active].astype(np.float64)
        lr, beta1, beta2, eps, wd, maximize, ams = np.array(hyper, dtype=np.float64)[active].T
        decoupled = self.decoupled_weight_decay
        scalars = np.stack([
            -lr / (1 - beta1**t), np.sqrt(1 - beta2**t),  # Eqs. 3-5
            1 - beta1, beta2, 1 - beta2, eps,
            np.zeros_like(wd) if decoupled else wd,  # Eq. 6 coefficient
            1 - lr * wd if decoupled else np.ones_like(wd),  # Eq. 7 factor
            1 - 2 * maximize, ams,
        ], axis=1).astype(layout.p.dtype)
        # Contiguous copies (rare) must stay alive while the kernel reads them.
        grads = [p.grad if p.grad.is_contiguous() else p.grad.contiguous()
                 for p, a in zip(params, active, strict=True) if a]
        bases = np.array([g.data_ptr() for g in grads], dtype=np.int64)
        chunks = layout.chunk_template(active)
        chunks[:, 0] += bases[chunks[:, 3]]
        _adam_kernel(layout.p, layout.m, layout.v, layout.vmax, chunks, scalars)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019, Alg. 2): Adam with decoupled weight decay (Eq. 7).

    Takes the arguments of :class:`Adam`; ``weight_decay`` (default 1e-2) multiplies the parameter
    by :math:`1 - \\alpha\\lambda` before the Adam step instead of entering the gradient, so the
    decay is not rescaled by :math:`1/\\sqrt{\\hat v_t}`. As in torch, the decay is scaled by the
    current learning rate (the paper's schedule multiplier :math:`\\eta_t` times
    :math:`\\lambda`).
    """

    decoupled_weight_decay = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable, differentiable=differentiable,
                         fused=fused)


# ---------------------------------------------------------------------- helpers
def _check_hyperparameters(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> None:
    """Reject what torch rejects, with torch's messages."""
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= _float_lr(lr):
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if len(betas) != 2:
        raise ValueError(f"Invalid betas: expected a pair, got {betas!r}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


def _float_lr(lr: float | torch.Tensor) -> float:
    """The learning rate as a float (a one-element tensor is read at each step)."""
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


def _checked_grad(p: torch.Tensor) -> torch.Tensor:
    grad = p.grad
    if grad.is_sparse:
        raise RuntimeError("Adam does not support sparse gradients; use torch.optim.SparseAdam")
    return grad


def _check_fusable(p: torch.Tensor) -> None:
    if p.device.type != "cpu" or p.dtype not in _FUSED_DTYPES:
        raise TypeError("fused=True supports CPU float32/float64 parameters only, got "
                        f"{p.dtype} on {p.device}; use fused=False")


class _FlatLayout:
    """Flat buffers of the fused parameters: params, exp_avg, exp_avg_sq, max_exp_avg_sq, step.

    Building it copies each parameter (and any existing state) into its slice and re-points
    ``p.data`` and the state tensors to views of those slices, so the kernel updates the model
    in place. It goes stale when something replaces a tensor (``load_state_dict``,
    ``model.to(...)``, a new parameter group), which :meth:`is_current` detects by address.
    """

    KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: list[torch.Tensor], opt: Adam, amsgrad: list[bool]):
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise TypeError(f"fused=True needs one dtype for all fused parameters, got {dtypes}")
        (dtype,) = dtypes
        total = sum(p.numel() for p in params)
        self.amsgrad = any(amsgrad)
        flat = {key: torch.zeros(total if key != "max_exp_avg_sq" or self.amsgrad else 1,
                                 dtype=dtype) for key in ("param", *self.KEYS)}
        flat["step"] = torch.zeros(len(params), dtype=torch.float32)  # torch's step dtype
        self.sizes: list[tuple[int, int]] = []
        # What the views' addresses were at build time; a replaced tensor shows up as a change.
        self.addresses: list[tuple[torch.Tensor, dict[str, int]]] = []
        offset = 0
        for k, (p, ams) in enumerate(zip(params, amsgrad, strict=True)):
            n = p.numel()
            self.sizes.append((offset, n))
            view = flat["param"][offset:offset + n].view_as(p)
            view.copy_(p.data)
            p.data = view
            state = opt._init_state(p, ams)
            for key in self.KEYS:
                if key in state:
                    slot = flat[key][offset:offset + n].view_as(p)
                    slot.copy_(state[key])
                    state[key] = slot
            flat["step"][k] = state["step"]
            state["step"] = flat["step"][k]  # a 0-d view: state_dict sees the live count
            self.addresses.append((p, {"param": p.data_ptr(), **{
                key: t.data_ptr() for key, t in state.items()}}))
            offset += n
        self.flat = flat
        self.itemsize = flat["param"].element_size()
        self._templates: dict[bytes, np.ndarray] = {}
        # numpy views share memory with the torch buffers: what numba writes, torch sees.
        self.p, self.m, self.v, self.vmax, self.steps = (
            flat[k].numpy() for k in ("param", *self.KEYS, "step"))

    def is_current(self, params: list[torch.Tensor], states: dict, amsgrad: list[bool]) -> bool:
        if len(params) != len(self.addresses):
            return False
        for p, ams, (q, expected) in zip(params, amsgrad, self.addresses, strict=True):
            state = states.get(p, {})
            if p is not q or p.data_ptr() != expected["param"]:
                return False
            if ams and "max_exp_avg_sq" not in state:  # AMSGrad switched on since the build
                return False
            for key, address in expected.items():
                if key != "param" and (key not in state or state[key].data_ptr() != address):
                    return False
        return True

    def chunk_template(self, active: np.ndarray) -> np.ndarray:
        """Chunk table for the parameters with gradients, shape (C, 4), as a fresh copy.

        Columns: byte offset of the chunk inside its gradient (the caller adds the gradient's
        address), offset into the flat buffers, element count, row among the active parameters.
        Cached per pattern of active parameters, so a step builds no Python lists per chunk.
        """
        key = active.tobytes()
        table = self._templates.get(key)
        if table is None:
            rows = []
            for row, k in enumerate(np.flatnonzero(active)):
                offset, n = self.sizes[k]
                rows.extend((c * self.itemsize, offset + c, min(CHUNK, n - c), row)
                            for c in range(0, n, CHUNK))
            table = np.array(rows, dtype=np.int64).reshape(-1, 4)
            if len(self._templates) > 16:
                self._templates.clear()
            self._templates[key] = table
        return table.copy()


@intrinsic
def _pointer_like(typingctx, address, like):
    """Reinterpret an int64 address as a pointer to ``like``'s dtype (for numba.carray)."""
    sig = types.CPointer(like.dtype)(types.int64, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@numba.njit(parallel=True, fastmath=False, cache=True)
def _adam_kernel(p, m, v, vmax, chunks, scalars):
    """Adam/AdamW update of every chunk in one pass (Eqs. 1-8).

    Parameters
    ----------
    p, m, v, vmax : ndarray, shape (N,)
        Flat parameters and moments, updated in place (vmax unused without AMSGrad).
    chunks : ndarray of int64, shape (C, 4)
        Per chunk: address of its first gradient element, offset into the flat buffers,
        element count, and row of its parameter in ``scalars``.
    scalars : ndarray, shape (P, 10), the buffers' dtype
        Per parameter: :math:`-\\alpha/(1-\\beta_1^t)`, :math:`\\sqrt{1-\\beta_2^t}`,
        :math:`1-\\beta_1`, :math:`\\beta_2`, :math:`1-\\beta_2`, :math:`\\epsilon`, the L2
        coefficient (Eq. 6, else 0), the decoupled factor :math:`1-\\alpha\\lambda` (Eq. 7,
        else 1), the sign (-1 to maximise) and 1 for AMSGrad (Eq. 8), else 0.
    """
    for c in prange(chunks.shape[0]):
        s, n = chunks[c, 1], chunks[c, 2]
        g = numba.carray(_pointer_like(chunks[c, 0], p), n)
        pc, mc, vc = p[s:s + n], m[s:s + n], v[s:s + n]
        row = scalars[chunks[c, 3]]
        step, bc, one_minus_beta1, beta2 = row[0], row[1], row[2], row[3]
        one_minus_beta2, eps, l2, decay, sign = row[4], row[5], row[6], row[7], row[8]
        # Two copies of the loop so the common case carries no branch and no max.
        if row[9] != 0:
            wc = vmax[s:s + n]
            for i in range(n):
                x = pc[i] * decay
                gi = sign * g[i] + l2 * x
                mi = mc[i] + one_minus_beta1 * (gi - mc[i])
                vi = vc[i] * beta2 + one_minus_beta2 * gi * gi
                wi = max(wc[i], vi)
                mc[i] = mi
                vc[i] = vi
                wc[i] = wi
                pc[i] = x + step * (mi / (np.sqrt(wi) / bc + eps))
        else:
            for i in range(n):
                x = pc[i] * decay
                gi = sign * g[i] + l2 * x
                mi = mc[i] + one_minus_beta1 * (gi - mc[i])
                vi = vc[i] * beta2 + one_minus_beta2 * gi * gi
                mc[i] = mi
                vc[i] = vi
                pc[i] = x + step * (mi / (np.sqrt(vi) / bc + eps))
