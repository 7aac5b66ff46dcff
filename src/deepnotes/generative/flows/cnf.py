"""A continuous normalizing flow (CNF): a neural ODE whose flow map is the bijection.

Data ``x`` at ``t = 0`` is carried to noise ``z`` at ``t = 1`` by ``dx/dt = f(x, t)``, the same
time convention as :class:`deepnotes.diffusion.processes.RectifiedFlow` (``x_t = (1 − t) x_0 +
t ε``), so a velocity trained by flow matching, or the exact Gaussian-mixture velocity
:meth:`deepnotes.diffusion.gmm.GaussianMixture.velocity`, plugs in unchanged. The log-density
follows the instantaneous change of variables (Chen et al. 2018, Thm. 1; Eq. 2 of the post
``flows-vs-diffusion``)

    d log p_t(x(t)) / dt = −tr(∂f/∂x),   so   log p_0(x) = log N(z; 0, I) + ∫_0^1 tr(∂f/∂x) dt,

with the trace exact (one backward pass per dimension; cheap for small ``dim``) or Hutchinson's
estimate ``εᵀ (∂f/∂x) ε`` with a Rademacher or Gaussian probe held fixed along the path
(Grathwohl et al. 2019, FFJORD; Eq. 3). The augmented ODE of ``(x, ∫ tr)`` and the trace are
shared with the probability-flow likelihood of the diffusion models
(:func:`deepnotes.diffusion.likelihood.augmented_dynamics`): the probability-flow ODE of a
diffusion *is* a CNF.

Solvers, and why two:

- **Training by maximum likelihood** (:meth:`CNF.nll_loss`, Eq. 4) back-propagates through a
  fixed-step RK4 (our :func:`rk4`, Kutta's 3/8 rule, ``rk4_steps`` steps). A fixed grid keeps
  the cost per step constant and the graph deterministic; back-propagating through an adaptive
  solver would differentiate its step-size control too, and the adjoint method (Chen et al.
  2018) would need a second, backward solve. The price: the model trained is the RK4
  discretisation, so the dynamics must stay smooth on the scale of one step (hence the raw,
  smooth time input of :class:`TimeMLP` rather than a high-frequency Fourier embedding).
- **Evaluation** (``log_prob``, ``forward``, ``inverse``, ``sample``; ``solver="dopri5"``) uses
  our adaptive Dormand–Prince RK5(4) (:func:`deepnotes.diffusion.ode.dormand_prince`) under
  ``rtol``/``atol``, so reported densities are those of the continuous model, not of the
  training discretisation. No gradients flow through this path.

Training by **flow matching** (:meth:`CNF.flow_matching_loss`, Eq. 6; Lipman et al. 2023, Liu
et al. 2023) regresses the same dynamics on the straight-path velocity ``ε − x_0`` with
:func:`deepnotes.diffusion.parameterizations.prediction_loss`: no ODE is solved in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from deepnotes.diffusion.likelihood import augmented_dynamics, divergence
from deepnotes.diffusion.ode import dormand_prince
from deepnotes.diffusion.parameterizations import prediction_loss
from deepnotes.diffusion.processes import RectifiedFlow
from deepnotes.generative.flows.base import FlowLayer, StandardNormal

TRACES = ("auto", "exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
SOLVERS = ("dopri5", "rk4")
#: ``trace="auto"`` is exact up to this dimension: D backward passes are then cheaper than the
#: extra variance (and the extra training steps it costs) of a one-probe estimate.
EXACT_MAX_DIM = 8


class TimeMLP(nn.Module):
    """``f(x, t)``: SiLU layers of width ``hidden``, with ``t`` appended to every layer's input.

    ``t`` enters raw (FFJORD's concatenation layers), not through a Fourier embedding, so
    ``f`` varies slowly in time and a coarse fixed RK4 grid resolves it. The output layer starts
    at zero: the untrained CNF is the identity map and its density the base ``N(0, I)``.
    """

    def __init__(self, dim: int, hidden: int = 64, depth: int = 3):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"dim, hidden and depth must be >= 1, got {dim}, {hidden}, {depth}")
        widths = [dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(w + 1, h) for w, h in zip(widths, widths[1:],
                                                                          strict=False))
        self.out = nn.Linear(hidden + 1, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x).reshape(-1, 1).expand(x.shape[0], 1)                  # (B, 1)
        h = x
        for layer in self.layers:
            h = nn.functional.silu(layer(torch.cat([h, t], dim=1)))      # (B, hidden)
        return self.out(torch.cat([h, t], dim=1))                        # (B, dim)


def rk4(f: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor,
        ts: Sequence[float] | torch.Tensor, return_all: bool = False) -> torch.Tensor:
    """Fixed-grid fourth-order Runge–Kutta (Kutta's 3/8 rule) for ``dy/dt = f(t, y)``.

    ``ts`` is the grid (increasing or decreasing), ``y0 = y(ts[0])``. Returns ``y(ts[-1])``, or
    all states stacked, shape (len(ts), ...), with ``return_all``. Differentiable: gradients
    flow through every stage. The 3/8 rule has a smaller error constant than the classical
    rule at the same 4 evaluations per step (and is ``torchdiffeq``'s ``rk4``, tested equal).
    """
    ts = [float(t) for t in ts]
    if len(ts) < 2:
        raise ValueError(f"ts needs at least 2 times, got {len(ts)}")
    y, out = y0, [y0]
    for t, t_next in zip(ts, ts[1:], strict=False):
        h = t_next - t
        k1 = f(t, y)
        k2 = f(t + h / 3, y + h * k1 / 3)
        k3 = f(t + 2 * h / 3, y + h * (k2 - k1 / 3))
        k4 = f(t_next, y + h * (k1 - k2 + k3))
        y = y + h * (k1 + 3 * (k2 + k3) + k4) / 8
        if return_all:
            out.append(y)
    return torch.stack(out) if return_all else y


def _check_choice(value, choices, what: str):
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {choices}")
    return value


class CNF(FlowLayer):
    """Continuous normalizing flow ``dx/dt = f(x, t)``, data at ``t = 0``, ``N(0, I)`` at 1.

    Parameters
    ----------
    dim : int
        Dimension D of the data.
    dynamics : callable ``f(x, t) -> (B, D)``, optional
        ``x`` of shape (B, D), ``t`` of shape (B,). A module's parameters are trained; a plain
        function (e.g. an exact velocity) is used as is. Default: :class:`TimeMLP`.
    hidden, depth : int
        Width and number of hidden layers of the default dynamics.
    trace : {"auto", "exact", "hutchinson"}
        Divergence estimator (Eq. 3); ``auto`` is exact for ``dim <= EXACT_MAX_DIM``.
    probe : {"rademacher", "gaussian"}
        Hutchinson probe distribution (Rademacher has the smaller variance, Eq. 5).
    rk4_steps : int
        Steps of the fixed RK4 grid used in maximum-likelihood training.
    rtol, atol : float
        Tolerances of the adaptive Dormand–Prince solver used in evaluation.
    """

    def __init__(self, dim: int, dynamics: Callable | None = None, hidden: int = 64,
                 depth: int = 3, trace: str = "auto", probe: str = "rademacher",
                 rk4_steps: int = 8, rtol: float = 1e-5, atol: float = 1e-5):
        super().__init__(dim)
        self.trace = _check_choice(trace, TRACES, "trace estimator")
        self.probe = _check_choice(probe, PROBES, "Hutchinson probe")
        if isinstance(rk4_steps, bool) or not isinstance(rk4_steps, int) or rk4_steps < 1:
            raise ValueError(f"rk4_steps must be a positive int, got {rk4_steps!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got {rtol}, {atol}")
        if dynamics is not None and not callable(dynamics):
            raise TypeError(f"dynamics must be callable f(x, t), got {type(dynamics).__name__}")
        self.dynamics = TimeMLP(dim, hidden, depth) if dynamics is None else dynamics
        self.rk4_steps, self.rtol, self.atol = rk4_steps, float(rtol), float(atol)
        self.base = StandardNormal(dim)

    # --- the vector field and its divergence --------------------------------------------
    def velocity(self, x: torch.Tensor, t) -> torch.Tensor:
        """``f(x, t)``, shape (B, D); ``t`` a float or a tensor of shape (B,)."""
        t = x.new_full((x.shape[0],), float(t)) if not torch.is_tensor(t) else t.to(x)
        v = self.dynamics(x, t)
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            raise ValueError(f"dynamics must return a tensor of shape {tuple(x.shape)}, got "
                             f"{getattr(v, 'shape', type(v).__name__)}")
        if not bool(torch.isfinite(v).all()):
            where = f"t={float(t.flatten()[0]):.6g}" if t.numel() else "t=?"
            raise ValueError(f"CNF dynamics returned NaN or inf at {where}")
        return v

    def _resolve(self, trace: str | None, probe: str | None) -> tuple[bool, str]:
        trace = _check_choice(self.trace if trace is None else trace, TRACES, "trace estimator")
        probe = _check_choice(self.probe if probe is None else probe, PROBES, "Hutchinson probe")
        exact = trace == "exact" or (trace == "auto" and self.dim <= EXACT_MAX_DIM)
        return exact, probe

    @staticmethod
    def draw_probe(like: torch.Tensor, kind: str,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """A Hutchinson probe of ``like``'s shape with ``E[ε εᵀ] = I`` (Rademacher or normal)."""
        _check_choice(kind, PROBES, "Hutchinson probe")
        if kind == "gaussian":
            return torch.randn(like.shape, generator=generator, dtype=like.dtype,
                               device=like.device)
        bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2 - 1

    def divergence(self, x: torch.Tensor, t, trace: str | None = None, probe: str | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """``tr(∂f/∂x)`` at ``(x, t)``, exact or one Hutchinson probe per example; shape (B,)."""
        x = self._checked(x, "divergence")
        exact, kind = self._resolve(trace, probe)
        eps = None if exact else self.draw_probe(x, kind, generator)
        with torch.enable_grad():
            y = x.detach().requires_grad_(True)
            return divergence(self.velocity(y, t), y, eps).detach()

    # --- solving the ODE -----------------------------------------------------------------
    def _solve(self, x, t0: float, t1: float, *, logdet: bool, solver: str, trace=None,
               probe=None, generator=None, create_graph: bool = False):
        """``(x(t1), ∫_{t0}^{t1} tr(∂f/∂x) dt or None, nfe)`` from ``x = x(t0)``."""
        _check_choice(solver, SOLVERS, "solver")
        if create_graph and solver != "rk4":
            raise ValueError("gradients flow only through the fixed-step solver='rk4'")
        if len(x) == 0:  # an empty batch maps to an empty batch, with no function evaluation
            return x.clone(), (x.new_zeros(0) if logdet else None), 0
        if logdet:
            exact, kind = self._resolve(trace, probe)
            eps = None if exact else self.draw_probe(x, kind, generator)
            f = augmented_dynamics(self.velocity, tuple(x.shape), eps, create_graph)
            state = torch.cat([x if create_graph else x.detach(), x.new_zeros(len(x), 1)], 1)
        else:
            def f(t, y):
                with torch.set_grad_enabled(create_graph):
                    return self.velocity(y, t)
            state = x if create_graph else x.detach()
        if solver == "rk4":
            n = self.rk4_steps
            state = rk4(f, state, torch.linspace(t0, t1, n + 1, dtype=torch.float64))
            nfe = 4 * n
        else:
            state, stats = dormand_prince(f, state, t0, t1, rtol=self.rtol, atol=self.atol)
            nfe = stats.nfe
        if logdet:
            return state[:, :self.dim], state[:, self.dim], nfe
        return state, None, nfe

    def forward(self, x: torch.Tensor, solver: str = "dopri5", trace: str | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> noise: ``(z, log|det ∂z/∂x|)`` with ``log det = ∫_0^1 tr(∂f/∂x) dt``."""
        x = self._checked(x, "forward")
        return self._forward(x, solver, trace, generator)

    def _forward(self, x, solver: str = "dopri5", trace: str | None = None, generator=None):
        z, ld, _ = self._solve(x, 0.0, 1.0, logdet=True, solver=solver, trace=trace,
                               generator=generator)
        return z, ld

    def inverse(self, z: torch.Tensor, solver: str = "dopri5", trace: str | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise -> data: ``(x, log|det ∂x/∂z|)``, the ODE integrated from ``t = 1`` to 0."""
        z = self._checked(z, "inverse")
        return self._inverse(z, solver, trace, generator)

    def _inverse(self, z, solver: str = "dopri5", trace: str | None = None, generator=None):
        x, ld, _ = self._solve(z, 1.0, 0.0, logdet=True, solver=solver, trace=trace,
                               generator=generator)
        return x, ld

    def log_prob(self, x: torch.Tensor, solver: str = "dopri5", trace: str | None = None,
                 probe: str | None = None, generator: torch.Generator | None = None,
                 return_info: bool = False):
        """``log p(x) = log N(z; 0, I) + ∫_0^1 tr(∂f/∂x) dt`` in nats (Eq. 2), shape (B,).

        With a Hutchinson trace the result is an unbiased estimate of the integral's value
        (not of ``log p``'s exponent). ``return_info`` also returns ``{"nfe", "z"}``.
        """
        x = self._checked(x, "log_prob")
        z, ld, nfe = self._solve(x, 0.0, 1.0, logdet=True, solver=solver, trace=trace,
                                 probe=probe, generator=generator)
        log_p = self.base.log_prob(z) + ld
        return (log_p, {"nfe": nfe, "z": z}) if return_info else log_p

    def sample(self, n: int, generator: torch.Generator | None = None,
               return_log_prob: bool = False, solver: str = "dopri5"):
        """``n`` samples (n, D) by integrating base draws from ``t = 1`` to 0 (and their
        log-density, ``log N(z) − log|det ∂x/∂z|``, with ``return_log_prob``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        z = self.base.sample(n, generator)
        x, ld, _ = self._solve(z, 1.0, 0.0, logdet=return_log_prob, solver=solver)
        return (x, self.base.log_prob(z) - ld) if return_log_prob else x

    def trajectory(self, x: torch.Tensor, ts: Sequence[float], logdet: bool = False):
        """States at the times ``ts`` (from ``x = x(ts[0])``), shape (T, B, D), by the adaptive
        solver between consecutive times; with ``logdet`` also ``∫_{ts[0]}^{t} tr`` (T, B)."""
        x = self._checked(x, "trajectory")
        ts = [float(t) for t in ts]
        if len(ts) < 2:
            raise ValueError(f"ts needs at least 2 times, got {len(ts)}")
        xs, lds = [x.detach()], [x.new_zeros(len(x))]
        for t, t_next in zip(ts, ts[1:], strict=False):
            y, ld, _ = self._solve(xs[-1], t, t_next, logdet=logdet, solver="dopri5")
            xs.append(y)
            lds.append(lds[-1] + ld if logdet else lds[-1])
        return (torch.stack(xs), torch.stack(lds)) if logdet else torch.stack(xs)

    # --- training objectives ---------------------------------------------------------------
    def nll_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Maximum-likelihood loss ``−mean log p(x)`` in nats (Eq. 4), differentiable.

        The augmented ODE is solved with :func:`rk4` on ``rk4_steps`` steps and back-propagated
        through (FFJORD without the adjoint); the Hutchinson probe, if used, is fresh per call.
        """
        x = self._checked(x, "nll_loss")
        z, ld, _ = self._solve(x, 0.0, 1.0, logdet=True, solver="rk4", generator=generator,
                               create_graph=True)
        return -(self.base.log_prob(z) + ld).mean()

    def flow_matching_loss(self, x: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Conditional flow matching / rectified flow (Eq. 6): ``E ||f(x_t, t) − (ε − x)||²``.

        ``x_t = (1 − t) x + t ε``, ``t ~ U[0, 1]``, ``ε ~ N(0, I)``; mean over the batch of the
        per-example sum over dimensions. No ODE solve: one evaluation of ``f`` per example.
        """
        x = self._checked(x, "flow_matching_loss")
        return prediction_loss(self.velocity, RectifiedFlow(), x, "velocity",
                               generator=generator)

    @property
    def nfe_per_train_step(self) -> int:
        """Dynamics evaluations per maximum-likelihood step (4 per RK4 step)."""
        return 4 * self.rk4_steps

