"""Gumbel-max sampling, the Gumbel-softmax (Concrete) relaxation and its straight-through variant.

Equation numbers refer to the post ``reparameterization``:

- Gumbel-max (Eq. 8): ``argmax_k (θ_k + g_k)`` with ``g_k ~ Gumbel(0, 1)`` i.i.d. is an exact
  sample of ``Categorical(softmax(θ))``.
- Gumbel-softmax (Eq. 9; Jang et al. 2017, Maddison et al. 2017): replace the argmax by
  ``softmax((θ + g) / τ)``, a point of the simplex that tends to the one-hot sample as ``τ → 0``
  and is a differentiable function of ``θ`` for ``τ > 0``.
- Straight-through (Eq. 10; Bengio et al. 2013): the forward value is the one-hot argmax, the
  backward pass uses the Jacobian of the soft sample.

Every function takes an optional ``torch.Generator`` so that tests and experiments are
reproducible without touching the global seed.
"""

from __future__ import annotations

import math

import torch


def check_logits(logits, who: str) -> torch.Tensor:
    """Raise a clear error unless ``logits`` is a floating tensor (..., K), K ≥ 2, without NaN.

    ``-inf`` is allowed (a class with probability zero) but ``+inf`` is not, and every row needs
    at least one finite entry, otherwise the softmax is undefined.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{who}: logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{who}: logits must be a floating-point tensor, got {logits.dtype}")
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"{who}: logits need shape (..., K) with K >= 2 classes, "
                         f"got {tuple(logits.shape)}")
    if bool(torch.isnan(logits).any()):
        raise ValueError(f"{who}: logits contain NaN")
    if bool((logits == math.inf).any()):
        raise ValueError(f"{who}: logits contain +inf")
    if not bool(torch.isfinite(logits).any(dim=-1).all()):
        raise ValueError(f"{who}: a row of logits is all -inf (no class has positive probability)")
    return logits


def check_tau(tau, who: str) -> float:
    """Raise a clear error unless ``tau`` is a finite number > 0."""
    if isinstance(tau, bool) or not isinstance(tau, int | float):
        raise TypeError(f"{who}: temperature tau must be a number, got {type(tau).__name__}")
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"{who}: temperature tau must be finite and > 0, got {tau!r}")
    return float(tau)


def sample_gumbel(shape, *, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Standard Gumbel noise ``g = -log(-log U)``, ``U ~ Uniform(0, 1)``.

    Parameters
    ----------
    shape : tuple of int
        Shape of the returned tensor.
    generator : torch.Generator, optional
        Source of the uniforms.

    Returns
    -------
    Tensor of ``shape``, ``dtype``: i.i.d. Gumbel(0, 1) draws (mean = Euler's γ ≈ 0.5772).
    """
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    # torch.rand can return exactly 0, and 1 - eps rounds to a finite -log(-log u); clamping to
    # the smallest positive normal keeps g finite without measurably changing the distribution.
    tiny = torch.finfo(dtype).tiny
    e = -torch.log(u.clamp_min(tiny))  # Exponential(1); 0 when u rounds to 1
    return -torch.log(e.clamp_min(tiny))


def _noise_for(logits: torch.Tensor, n_samples: int | None, generator) -> tuple[torch.Tensor,
                                                                                 torch.Tensor]:
    """Broadcast ``logits`` to ``(n_samples, ...)`` (when given) and draw matching Gumbel noise."""
    if n_samples is not None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int or None, got {n_samples!r}")
        logits = logits.expand(n_samples, *logits.shape)
    g = sample_gumbel(logits.shape, generator=generator, dtype=logits.dtype,
                      device=logits.device)
    return logits, g


def gumbel_max_sample(logits: torch.Tensor, n_samples: int | None = None, *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact categorical samples by the Gumbel-max trick (Eq. 8).

    Parameters
    ----------
    logits : Tensor, shape (..., K)
        Unnormalised log-probabilities θ; ``softmax(θ)`` is the target distribution.
    n_samples : int, optional
        Draw this many samples per row; the result gets a leading dimension ``n_samples``.

    Returns
    -------
    Tensor of int64, shape (...) or (n_samples, ...): class indices in ``0..K-1``.
    """
    logits = check_logits(logits, "gumbel_max_sample")
    logits, g = _noise_for(logits.detach(), n_samples, generator)
    return torch.argmax(logits + g, dim=-1)


def gumbel_softmax(logits: torch.Tensor, tau: float, *, hard: bool = False,
                   n_samples: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel-softmax (Concrete) sample ``softmax((θ + g) / τ)`` (Eq. 9), optionally hard.

    Parameters
    ----------
    logits : Tensor, shape (..., K)
        Unnormalised log-probabilities θ (gradients flow back to them).
    tau : float > 0
        Temperature τ. Small τ: samples near the vertices of the simplex, high-variance
        gradients; large τ: samples near the centre, smooth but biased gradients.
    hard : bool
        Straight-through variant (Eq. 10): the returned value is exactly the one-hot vector of
        ``argmax(θ + g)``, the gradient is that of the soft sample.
    n_samples : int, optional
        Leading sample dimension, as in :func:`gumbel_max_sample`.

    Returns
    -------
    Tensor, shape (..., K) or (n_samples, ..., K): points of the probability simplex (one-hot
    if ``hard``). The argmax of a row equals the Gumbel-max sample drawn with the same noise.
    """
    logits = check_logits(logits, "gumbel_softmax")
    tau = check_tau(tau, "gumbel_softmax")
    logits, g = _noise_for(logits, n_samples, generator)
    y_soft = torch.softmax((logits + g) / tau, dim=-1)
    return straight_through(y_soft) if hard else y_soft


def straight_through(y_soft: torch.Tensor) -> torch.Tensor:
    """One-hot of ``argmax(y_soft)`` in the forward pass, identity gradient to ``y_soft`` (Eq. 10).

    Written as ``y_hard + (y_soft - y_soft.detach())``: the bracket is exactly zero in floating
    point (x - x = 0), so the forward value is exactly 0/1, unlike ``y_hard - y_soft.detach() +
    y_soft``, which can be off by one rounding error.
    """
    if not isinstance(y_soft, torch.Tensor) or y_soft.ndim < 1:
        raise TypeError("straight_through: y_soft must be a tensor of shape (..., K)")
    index = y_soft.argmax(dim=-1, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)
    return y_hard + (y_soft - y_soft.detach())


def concrete_log_density(y: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Log-density of the Concrete / Gumbel-softmax distribution on the simplex (Eq. 11).

    With ``α = exp(θ)`` and ``K`` classes (Maddison et al. 2017, Definition 1), w.r.t. the
    Lebesgue measure on the first ``K - 1`` coordinates:

        log p(y) = log (K-1)! + (K-1) log τ + Σ_k (θ_k - (τ+1) log y_k)
                   - K log Σ_k α_k y_k^{-τ}

    Parameters
    ----------
    y : Tensor, shape (..., K)
        Interior points of the simplex (positive, rows summing to one).
    logits : Tensor, shape (..., K) or (K,)
    tau : float > 0

    Returns
    -------
    Tensor, shape (...).
    """
    logits = check_logits(logits, "concrete_log_density")
    tau = check_tau(tau, "concrete_log_density")
    if y.shape[-1] != logits.shape[-1]:
        raise ValueError(f"concrete_log_density: y has {y.shape[-1]} classes, logits "
                         f"{logits.shape[-1]}")
    k = y.shape[-1]
    log_y = torch.log(y)
    return (math.lgamma(k) + (k - 1) * math.log(tau)
            + (logits - (tau + 1.0) * log_y).sum(-1)
            - k * torch.logsumexp(logits - tau * log_y, dim=-1))
