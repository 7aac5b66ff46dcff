"""Planar and radial flows (Rezende & Mohamed 2015, "Variational Inference with Normalizing
Flows", ICML), with the paper's reparameterisations that keep them invertible.

Both are written as data -> noise maps here, so as density models their log-density is exact and
differentiable in closed form; ``inverse`` (for sampling) solves a scalar equation: by bisection
for the planar flow (then one Newton step, which makes it differentiable) and as the root of a
quadratic for the radial flow. For variational inference wrap them in
:class:`~deepnotes.generative.flows.base.Inverse` so the closed form generates.
"""

from __future__ import annotations

import torch
from torch import nn

from deepnotes.generative.flows.base import FlowLayer

_BISECTION_STEPS = 80  # halves a bracket of width 2|w·û| below float64 spacing for |w·û| < 1e6


class PlanarFlow(FlowLayer):
    """``f(x) = x + û tanh(wᵀx + b)`` (Eq. 9 of the post ``normalizing-flows``).

    log|det ∂f/∂x| = ``log|1 + (1 - tanh²(wᵀx + b)) wᵀû|`` (Eq. 10). The map is invertible iff
    ``wᵀû >= -1``; with ``constrain=True`` (the paper's fix, Eq. 11)
    ``û = u + (m(wᵀu) - wᵀu) w / |w|²`` with ``m(a) = -1 + softplus(a)``, so ``wᵀû = m(wᵀu) > -1``
    always. With ``constrain=False`` ``û = u`` and a violating configuration raises ValueError.
    """

    def __init__(self, dim: int, constrain: bool = True, init_scale: float = 0.1,
                 generator: torch.Generator | None = None):
        super().__init__(dim)
        self.constrain = constrain
        self.u = nn.Parameter(init_scale * torch.randn(dim, generator=generator))
        self.w = nn.Parameter(init_scale * torch.randn(dim, generator=generator))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> torch.Tensor:
        """The constrained ``û`` (Eq. 11), shape (dim,)."""
        if not self.constrain:
            wu = float((self.w @ self.u).detach())
            if wu < -1:
                raise ValueError(f"PlanarFlow is not invertible: wᵀu = {wu:.4g} < -1 "
                                 "(enable constrain=True, the paper's reparameterisation)")
            return self.u
        wu = self.w @ self.u
        w_sq = (self.w @ self.w).clamp_min(torch.finfo(self.w.dtype).tiny)  # w = 0: û = u
        return self.u + (nn.functional.softplus(wu) - 1.0 - wu) * self.w / w_sq

    def _forward(self, x):
        u = self.u_hat()
        h = torch.tanh(x @ self.w + self.b)  # (B,)
        log_det = torch.log(torch.abs(1.0 + (1.0 - h * h) * (self.w @ u)))
        return x + h[:, None] * u, log_det

    def _inverse(self, z):
        # With a = wᵀx: wᵀz = a + c tanh(a + b), c = wᵀû >= -1, increasing in a and within
        # |c| of wᵀz, so bisection on that bracket finds a; then x = z - û tanh(a + b).
        u = self.u_hat()
        c = self.w @ u
        target = z @ self.w  # (B,)
        with torch.no_grad():
            lo, hi = target - c.abs(), target + c.abs()
            for _ in range(_BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                above = mid + c * torch.tanh(mid + self.b) > target
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            a0 = 0.5 * (lo + hi)
        # One Newton step from the (detached) root: its value is a0 up to rounding, and its
        # derivatives are those of the implicit function a(z, θ), so the inverse is
        # differentiable like a closed form.
        t0 = torch.tanh(a0 + self.b)
        a = a0 - (a0 + c * t0 - target) / (1.0 + c * (1.0 - t0 * t0))
        h = torch.tanh(a + self.b)
        log_det = -torch.log(torch.abs(1.0 + (1.0 - h * h) * c))
        return z - h[:, None] * u, log_det


class RadialFlow(FlowLayer):
    """``f(x) = x + β h(r) (x - x₀)``, ``h(r) = 1 / (α + r)``, ``r = |x - x₀|`` (Eq. 12).

    log|det| = ``(D - 1) log(1 + β h) + log(1 + β h + β h'(r) r)`` (Eq. 12). ``α > 0`` through a
    softplus; the map is invertible iff ``β >= -α``, which ``constrain=True`` enforces as
    ``β = -α + softplus(β̃)`` (Eq. 13). With ``constrain=False`` a violation raises ValueError.
    """

    def __init__(self, dim: int, constrain: bool = True, init_scale: float = 0.1,
                 generator: torch.Generator | None = None):
        super().__init__(dim)
        self.constrain = constrain
        self.x0 = nn.Parameter(init_scale * torch.randn(dim, generator=generator))
        self.alpha_raw = nn.Parameter(torch.zeros(()))
        self.beta_raw = nn.Parameter(init_scale * torch.randn((), generator=generator))

    def alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = nn.functional.softplus(self.alpha_raw)
        if self.constrain:
            return alpha, -alpha + nn.functional.softplus(self.beta_raw)
        beta, a = float(self.beta_raw.detach()), float(alpha.detach())
        if beta < -a:
            raise ValueError(f"RadialFlow is not invertible: β = {beta:.4g} < -α = {-a:.4g} "
                             "(enable constrain=True)")
        return alpha, self.beta_raw

    def _forward(self, x):
        alpha, beta = self.alpha_beta()
        d = x - self.x0
        r = d.norm(dim=1)
        bh = beta / (alpha + r)
        log_det = ((self.dim - 1) * torch.log1p(bh)
                   + torch.log1p(bh - beta * r / (alpha + r) ** 2))
        return x + bh[:, None] * d, log_det

    def _inverse(self, z):
        alpha, beta = self.alpha_beta()
        d = z - self.x0
        rz = d.norm(dim=1)
        # |z - x₀| = r (1 + β / (α + r)) gives r² + (α + β - r_z) r - α r_z = 0; the
        # non-negative root, in the form without cancellation when α + β - r_z > 0
        p = alpha + beta - rz
        disc = torch.sqrt(p * p + 4.0 * alpha * rz)
        r = torch.where(p > 0, 2.0 * alpha * rz / (p + disc), 0.5 * (disc - p))
        bh = beta / (alpha + r)
        x = self.x0 + d / (1.0 + bh)[:, None]
        log_det = -((self.dim - 1) * torch.log1p(bh)
                    + torch.log1p(bh - beta * r / (alpha + r) ** 2))
        return x, log_det
