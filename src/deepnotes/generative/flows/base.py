"""The flow contract, base distributions, the :class:`Flow` container and simple bijections.

Direction convention (as in NICE, RealNVP and Glow): a layer's ``forward`` maps data ``x`` towards
noise ``z`` and returns ``log|det ∂z/∂x|`` per example; ``inverse`` maps ``z`` back to ``x`` and
returns ``log|det ∂x/∂z|`` (the negative of the forward term at the same point). With a base
density ``p_Z`` the change of variables (Eq. 1 of the post ``normalizing-flows``) gives

    log p_X(x) = log p_Z(f(x)) + sum_k log|det ∂h_k/∂h_{k-1}|.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

_LOG_2PI = math.log(2.0 * math.pi)


def check_input(x, dim: int, who: str) -> torch.Tensor:
    """Raise a clear error unless ``x`` is a finite floating tensor of shape (B, dim)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{who}: expected a floating-point tensor, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who}: expected shape (batch, {dim}), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "inf"
        raise ValueError(f"{who}: input contains {bad} values")
    return x


class FlowLayer(nn.Module):
    """An invertible map of ``dim``-vectors with a tractable log-determinant.

    Subclasses implement ``_forward(x)`` and ``_inverse(z)``, each returning the mapped tensor
    (B, dim) and the log|det| of that direction's Jacobian, shape (B,). The public ``forward`` and
    ``inverse`` validate shapes and finiteness first.
    """

    def __init__(self, dim: int):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> noise: ``(z, log|det ∂z/∂x|)``, shapes (B, dim) and (B,)."""
        return self._forward(self._checked(x, "forward"))

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise -> data: ``(x, log|det ∂x/∂z|)``, shapes (B, dim) and (B,)."""
        return self._inverse(self._checked(z, "inverse"))

    def _checked(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """``x`` checked by :func:`check_input`, and its dtype against the layer's parameters."""
        who = f"{type(self).__name__}.{direction}"
        x = check_input(x, self.dim, who)
        param = next(self.parameters(), None)
        if param is not None and param.dtype != x.dtype:
            raise TypeError(f"{who}: the input is {x.dtype} but the flow's parameters are "
                            f"{param.dtype}; convert one side (x.to({param.dtype}) or "
                            f"flow.to({x.dtype}))")
        return x

    def _forward(self, x):
        raise NotImplementedError

    def _inverse(self, z):
        raise NotImplementedError


class Inverse(FlowLayer):
    """Swap a layer's directions: ``Inverse(f).forward == f.inverse``.

    Useful when the cheap, differentiable direction of a layer should be the sampling direction
    (planar/radial flows for variational inference: their closed-form map then generates).
    """

    def __init__(self, layer: FlowLayer):
        super().__init__(layer.dim)
        self.layer = layer

    def _forward(self, x):
        return self.layer._inverse(x)

    def _inverse(self, z):
        return self.layer._forward(z)


class Reverse(FlowLayer):
    """Reverse the order of the features (RealNVP/Glow's fixed permutation); log|det| = 0."""

    def _forward(self, x):
        return x.flip(1), x.new_zeros(x.shape[0])

    def _inverse(self, z):
        return z.flip(1), z.new_zeros(z.shape[0])


class Permute(FlowLayer):
    """A fixed random permutation of the features; log|det| = 0.

    ``generator`` (a ``torch.Generator``) makes the permutation reproducible.
    """

    def __init__(self, dim: int, generator: torch.Generator | None = None):
        super().__init__(dim)
        perm = torch.randperm(dim, generator=generator)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def _forward(self, x):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def _inverse(self, z):
        return z[:, self.inv_perm], z.new_zeros(z.shape[0])


class LogitTransform(FlowLayer):
    """Map data in [0, 1] to the real line: ``z = logit(α + (1 - 2α) x)`` (RealNVP, Sec. 4.1).

    The squeeze by ``α`` keeps the logit finite at 0 and 1; the domain is the slightly wider
    interval ``(-α / (1 - 2α), (1 - α) / (1 - 2α))``, so samples may fall just outside [0, 1]
    (the model's mass on [0, 1]^D is below 1, as in RealNVP). Its log-determinant (Eq. 14 of the
    post ``normalizing-flows``) is part of the model's density, so ``Flow.log_prob`` stays a
    density on [0, 1]^D and bits/dim keep the literature's definition.
    """

    def __init__(self, dim: int, alpha: float = 0.05):
        super().__init__(dim)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha!r}")
        self.alpha = float(alpha)

    def _forward(self, x):
        s = self.alpha + (1.0 - 2.0 * self.alpha) * x
        if bool((s <= 0).any()) or bool((s >= 1).any()):
            lo, hi = -self.alpha / (1 - 2 * self.alpha), (1 - self.alpha) / (1 - 2 * self.alpha)
            raise ValueError(f"LogitTransform.forward: inputs must lie in ({lo:.4g}, {hi:.4g}), "
                             "the domain of the squeezed logit")
        z = torch.log(s) - torch.log1p(-s)
        log_det = (math.log1p(-2.0 * self.alpha) - torch.log(s) - torch.log1p(-s)).sum(1)
        return z, log_det

    def _inverse(self, z):
        s = torch.sigmoid(z)
        x = (s - self.alpha) / (1.0 - 2.0 * self.alpha)
        # log s + log(1 - s) = -softplus(-z) - softplus(z): no cancellation for large |z|
        log_det = (-nn.functional.softplus(-z) - nn.functional.softplus(z)
                   - math.log1p(-2.0 * self.alpha)).sum(1)
        return x, log_det


class StandardNormal(nn.Module):
    """``N(0, I_dim)``: ``log p(z) = -1/2 sum_i (z_i² + log 2π)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("_ref", torch.zeros(()))  # follows .to()/.double() for sampling

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density, shape (B,), of ``z``, shape (B, dim)."""
        return -0.5 * (z.pow(2) + _LOG_2PI).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.dim, generator=generator, dtype=self._ref.dtype,
                           device=self._ref.device)


class StandardLogistic(nn.Module):
    """Independent standard logistics, NICE's prior: ``log p(z) = -sum_i (sp(z_i) + sp(-z_i))``.

    ``sp`` is softplus; the heavier tails than a Gaussian give larger gradients to outliers
    (Dinh et al. 2015, Sec. 3.4).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("_ref", torch.zeros(()))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -(nn.functional.softplus(z) + nn.functional.softplus(-z)).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, self.dim, generator=generator, dtype=self._ref.dtype,
                       device=self._ref.device)
        tiny = torch.finfo(u.dtype).tiny  # rand can return exactly 0
        return torch.log(u.clamp_min(tiny)) - torch.log1p(-u)


BASES = {"normal": StandardNormal, "logistic": StandardLogistic}


class Chain(FlowLayer):
    """Layers of one dimension applied in order (data -> noise); ``inverse`` runs them backwards.
    The log-determinants add up (chain rule). A :class:`Flow` is a Chain with a base density."""

    def __init__(self, layers: Sequence[FlowLayer]):
        layers = list(layers)
        if not layers:
            raise ValueError(f"a {type(self).__name__} needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, FlowLayer):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not a FlowLayer")
        dims = {layer.dim for layer in layers}
        if len(dims) != 1:
            raise ValueError(f"all layers must share one dim, got dims {sorted(dims)}")
        super().__init__(layers[0].dim)
        self.layers = nn.ModuleList(layers)

    def _forward(self, x):
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer._forward(x)
            log_det = log_det + ld
        return x, log_det

    def _inverse(self, z):
        log_det = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, ld = layer._inverse(z)
            log_det = log_det + ld
        return z, log_det


class Flow(Chain):
    """Layers ``f_1, ..., f_K`` (data -> noise) composed with a base distribution.

    Parameters
    ----------
    layers : sequence of FlowLayer
        Applied in order by ``forward`` (data -> noise) and in reverse by ``inverse``.
    base : {"normal", "logistic"} or nn.Module
        The base density ``p_Z``; a module needs ``log_prob(z) -> (B,)`` and
        ``sample(n, generator)``.
    """

    def __init__(self, layers: Sequence[FlowLayer], base="normal"):
        super().__init__(layers)
        if isinstance(base, str):
            if base not in BASES:
                raise ValueError(f"base must be one of {sorted(BASES)} or a module, got {base!r}")
            base = BASES[base](self.dim)
        self.base = base

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density ``log p_X(x)`` in nats (Eq. 1), shape (B,), of ``x`` (B, dim)."""
        z, log_det = self.forward(x)
        return self.base.log_prob(z) + log_det

    def sample(self, n: int, generator: torch.Generator | None = None,
               return_log_prob: bool = False):
        """``n`` samples (n, dim), and optionally their log-density ``log p_X`` (n,).

        The log-density comes from the same pass: ``log p_Z(z) - log|det ∂x/∂z|``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        z = self.base.sample(n, generator)
        x, log_det = self._inverse(z)
        if return_log_prob:
            return x, self.base.log_prob(z) - log_det
        return x

    def nll_bits_per_dim(self, x: torch.Tensor, n_levels: int | None = None) -> torch.Tensor:
        """Negative log-likelihood in bits per dimension, shape (B,).

        With ``n_levels`` the inputs are uniformly dequantised discrete data rescaled to [0, 1),
        ``x = (k + u) / n_levels``; undoing the rescaling adds ``log n_levels`` per dimension, so
        the figure bounds ``-log2 P(k) / D`` of the discrete data (Theis et al. 2016) — the
        definition used by the literature (Eq. 15 of the post ``normalizing-flows``). Without
        ``n_levels`` it is ``-log p(x) / (D log 2)``.
        """
        log_p = self.log_prob(x)
        if n_levels is not None:
            if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 2:
                raise ValueError(f"n_levels must be an int >= 2, got {n_levels!r}")
            log_p = log_p - self.dim * math.log(n_levels)
        return -log_p / (self.dim * math.log(2.0))
