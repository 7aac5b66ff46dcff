"""Rectified-flow tools on top of the velocity interface ``v(x_t, t)`` (Liu et al. 2022).

``x_t = (1 − t) x_0 + t ε`` with ``t = 1`` noise; the samplers live in
:func:`deepnotes.diffusion.samplers.sample_rf_euler`. Reflow trains a new velocity on the pairs
``(x_0, ε)`` *coupled by the current flow* instead of independent draws, which straightens the
paths so that few (even one) Euler steps suffice. :func:`rectified_flow_loss` is the training
objective for any coupling: independent draws give 1-rectified flow (flow matching), pairs from
:func:`reflow_pairs` give the next rectification.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from deepnotes.diffusion.samplers import sample_rf_euler

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def reflow_pairs(velocity: Velocity, noise: torch.Tensor, ts: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled pairs ``(x_0, ε)`` for k-rectified flow: ``x_0`` = the flow's image of ``ε``.

    (Liu et al. 2022, Algorithm 1, "Reflow".) ``ts`` is the Euler grid from 1 to 0 used to
    simulate the current flow; returns ``(x_0, noise)``, each (B, ...).
    """
    if float(ts[0]) != 1.0:
        raise ValueError(f"reflow starts from pure noise: ts[0] must be 1, got {float(ts[0])}")
    return sample_rf_euler(velocity, noise, ts), noise


@torch.no_grad()
def straightness(velocity: Velocity, noise: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """``S = ∫_0^1 E ||(ε − x_0) − v(x_t, t)||² dt`` along the simulated paths (Liu et al. 2022).

    ``ε − x_0`` is the straight-line velocity between the path's endpoints; S = 0 exactly when
    every path is a straight line traversed at constant speed. The integral is the left Riemann
    sum on the Euler grid ``ts`` (1 → 0), the same grid that produces the paths. Scalar tensor.
    """
    v_list: list[torch.Tensor] = []

    def tracked(x, t):
        v_list.append(velocity(x, t))
        return v_list[-1]

    x0 = sample_rf_euler(tracked, noise, ts)
    vs = torch.stack(v_list)                                           # (N, B, ...)
    chord = noise - x0                                                 # (B, ...)
    dt = (ts[:-1] - ts[1:]).to(vs)                                     # (N,)
    err = ((vs - chord) ** 2).flatten(2).sum(2).mean(1)                # (N,)
    return (dt * err).sum()


def rectified_flow_loss(velocity: Velocity, x0: torch.Tensor, noise: torch.Tensor,
                        t: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Flow-matching loss ``E_t ||v(x_t, t) − (ε − x_0)||²`` on a coupling (Liu et al. 2022, Eq. 1).

    ``x_t = (1 − t) x_0 + t ε`` with the *given* pairs ``(x_0, ε)``: independent draws train
    1-rectified flow (Lipman et al. 2023's conditional flow matching with σ_min = 0), pairs
    from :func:`reflow_pairs` train the reflowed field. Its minimiser is ``v(x, t) =
    E[ε − x_0 | x_t = x]``. ``t`` (B,) defaults to uniform on [0, 1]. Returns the scalar mean
    over the batch of the per-example sum over dimensions.
    """
    if not isinstance(x0, torch.Tensor) or not isinstance(noise, torch.Tensor):
        raise TypeError("x0 and noise must be torch tensors")
    if x0.shape != noise.shape or x0.ndim < 2:
        raise ValueError(f"x0 and noise must have the same shape (B, ...), got "
                         f"{tuple(x0.shape)} and {tuple(noise.shape)}")
    b = x0.shape[0]
    if t is None:
        t = torch.rand(b, generator=generator, dtype=x0.dtype, device=x0.device)
    elif t.shape != (b,):
        raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
    tb = t.to(x0).view((-1,) + (1,) * (x0.ndim - 1))
    x_t = (1 - tb) * x0 + tb * noise
    return ((velocity(x_t, t) - (noise - x0)) ** 2).flatten(1).sum(1).mean()
