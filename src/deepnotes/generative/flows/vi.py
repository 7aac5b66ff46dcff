"""Variational inference with normalizing flows on the four 2-D energies of Rezende & Mohamed
(2015), "Variational Inference with Normalizing Flows", ICML, Table 1 and Fig. 3.

The target is known only up to its normaliser: ``p(z) = exp(-U(z)) / Z``. A flow ``q`` (a base
Gaussian pushed through K planar or radial maps in their closed-form direction) is fitted by
minimising the reverse KL up to the constant ``log Z`` (Eq. 18-19 of the post
``normalizing-flows``; the energies are its Eq. 20):

    F(q) = E_q[log q(z) + U(z)] = KL(q || p) - log Z >= -log Z.
"""

from __future__ import annotations

import math

import torch

from deepnotes.generative.flows.base import Flow, Inverse
from deepnotes.generative.flows.planar import PlanarFlow, RadialFlow

#: Half-width of the box the confinement term (see :func:`potential`) keeps the mass in.
BOX = 5.0


def _check(z) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise TypeError(f"z must be a floating-point torch.Tensor, got {type(z).__name__}")
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"the energies are 2-D: z must have shape (batch, 2), "
                         f"got {tuple(z.shape)}")
    return z


def _w1(z1):
    return torch.sin(0.5 * math.pi * z1)  # sin(2π z1 / 4)


def _w2(z1):
    return 3.0 * torch.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)


def _w3(z1):
    return 3.0 * torch.sigmoid((z1 - 1.0) / 0.3)


def _neg_logaddexp(a, b):
    """``-log(exp(a) + exp(b))`` without overflow."""
    return -torch.logaddexp(a, b)


def U1(z: torch.Tensor) -> torch.Tensor:
    """Ring with two lobes: ``½((|z| - 2)/0.4)² - log(e^{-½((z₁-2)/0.6)²} + e^{-½((z₁+2)/0.6)²})``.

    ``z`` (B, 2) -> energies (B,). Integrable as it stands.
    """
    z = _check(z)
    z1 = z[:, 0]
    ring = 0.5 * ((z.norm(dim=1) - 2.0) / 0.4) ** 2
    return ring + _neg_logaddexp(-0.5 * ((z1 - 2.0) / 0.6) ** 2, -0.5 * ((z1 + 2.0) / 0.6) ** 2)


def U2(z: torch.Tensor) -> torch.Tensor:
    """Sine wave: ``½((z₂ - w₁(z))/0.4)²``, ``w₁ = sin(2π z₁/4)``; (B, 2) -> (B,)."""
    z = _check(z)
    return 0.5 * ((z[:, 1] - _w1(z[:, 0])) / 0.4) ** 2


def U3(z: torch.Tensor) -> torch.Tensor:
    """Two sine waves joined where ``w₂`` bumps: ``-log(e^{-½((z₂-w₁)/0.35)²} +
    e^{-½((z₂-w₁+w₂)/0.35)²})``, ``w₂ = 3 exp(-½((z₁-1)/0.6)²)``; (B, 2) -> (B,)."""
    z = _check(z)
    d = z[:, 1] - _w1(z[:, 0])
    return _neg_logaddexp(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + _w2(z[:, 0])) / 0.35) ** 2)


def U4(z: torch.Tensor) -> torch.Tensor:
    """Two sine waves split by a step: ``-log(e^{-½((z₂-w₁)/0.4)²} + e^{-½((z₂-w₁+w₃)/0.35)²})``,
    ``w₃ = 3 σ((z₁-1)/0.3)``; (B, 2) -> (B,)."""
    z = _check(z)
    d = z[:, 1] - _w1(z[:, 0])
    return _neg_logaddexp(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + _w3(z[:, 0])) / 0.35) ** 2)


ENERGIES = {"U1": U1, "U2": U2, "U3": U3, "U4": U4}


def confinement(z: torch.Tensor) -> torch.Tensor:
    """``(z₁ / BOX)^10``: below 0.11 on the paper's window |z₁| <= 4, steep beyond ``BOX``.

    U2-U4 do not depend on z₁ far from the origin, so ``exp(-U)`` has infinite mass along z₁;
    this term makes them normalisable (a deviation: the paper only plots them on [-4, 4]²).
    """
    return (z[:, 0] / BOX) ** 10


def potential(name: str):
    """The energy ``name`` in {"U1", ..., "U4"} as fitted: U1 as is, U2-U4 plus
    :func:`confinement`. Returns a function (B, 2) -> (B,)."""
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; expected one of {sorted(ENERGIES)}")
    energy = ENERGIES[name]
    if name == "U1":
        return energy
    return lambda z: energy(z) + confinement(z)


def log_normaliser(energy, half: float = 7.0, n: int = 1400) -> float:
    """``log Z = log ∫ exp(-U(z)) dz`` by the midpoint rule on [-half, half]² with n² cells.

    In float64, through a log-sum-exp, so deep wells do not overflow. The defaults put every
    energy above 50 outside the box (mass < e^-45 there) and resolve the narrowest feature (the
    0.35-wide waves) with 7 cells per standard deviation.
    """
    h = 2.0 * half / n
    c = torch.linspace(-half + h / 2, half - h / 2, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        u = energy(grid)
    return float(torch.logsumexp(-u, 0)) + 2.0 * math.log(h)


def vi_flow(n_layers: int, kind: str = "planar", generator: torch.Generator | None = None) -> Flow:
    """A Gaussian pushed through ``n_layers`` planar or radial maps in their closed-form direction.

    Each layer is :class:`Inverse` of a data -> noise layer, so ``Flow.sample`` runs the paper's
    maps ``z_k = f_k(z_{k-1})`` (Eq. 9, 12) and returns ``log q_K`` by (Eq. 18) without solving
    anything.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    layer = {"planar": PlanarFlow, "radial": RadialFlow}.get(kind)
    if layer is None:
        raise ValueError(f"kind must be 'planar' or 'radial', got {kind!r}")
    return Flow([Inverse(layer(2, generator=generator)) for _ in range(n_layers)], base="normal")


def reverse_kl(flow: Flow, energy, n: int, generator: torch.Generator | None = None,
               beta: float = 1.0) -> torch.Tensor:
    """Monte-Carlo free energy ``mean(log q(z) + β U(z))`` over ``n`` samples of ``flow`` (Eq. 19).

    With ``β = 1`` it estimates ``KL(q || p) - log Z`` (the negative ELBO) without bias, and is
    differentiable in the flow's parameters through the reparameterised samples. ``β < 1``
    anneals the energy as in the paper's training (Sec. 6.1).
    """
    z, log_q = flow.sample(n, generator=generator, return_log_prob=True)
    return (log_q + beta * energy(z)).mean()
