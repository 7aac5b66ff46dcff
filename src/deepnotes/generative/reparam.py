"""Monte Carlo gradients of an expectation: pathwise (reparameterised) versus score function.

The target is ``∇_θ E_{q_θ(z)}[f(z)]`` (Eq. 1 of the post ``reparameterization``). Every
estimator here returns one gradient estimate **per sample** (shape ``(S, ...)``), so that callers
can average any number of them and measure bias (mean minus the exact gradient) and variance
(spread across samples) directly.

- :func:`gaussian_reparam_grad`: pathwise gradient for ``q = N(μ, diag σ²)`` through
  ``z = μ + σ ε`` (Eqs. 2-3; Kingma & Welling 2014).
- :func:`gaussian_score_grad`: score-function / REINFORCE gradient (Eqs. 4-5; Williams 1992)
  for the same Gaussian, with an optional baseline (Eq. 6).
- :func:`categorical_score_grad`: REINFORCE for a categorical ``q = softmax(θ)``.
- :func:`gumbel_softmax_grad`: the biased pathwise gradient through the Gumbel-softmax relaxation
  (Eq. 9) or its straight-through variant (Eq. 10); see :mod:`deepnotes.generative.gumbel`.
- :func:`categorical_exact_grad`: the exact gradient ``Σ_k f(k) ∇_θ p_k`` (Eq. 7), the reference.

``f`` is a callable mapping a batch ``(S, D)`` to ``(S,)`` **row by row** (row ``s`` of the output
may depend only on row ``s`` of the input): per-sample gradients are read off one backward pass
of ``f(z).sum()``. For categorical estimators ``f`` may also be a tensor of values ``(K,)``,
meaning ``f(y) = y · values`` (the linear extension to the simplex).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from deepnotes.generative.gumbel import (
    check_logits,
    gumbel_max_sample,
    gumbel_softmax,
)

Baseline = float | str | None


def _check_samples(n_samples, who: str) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"{who}: n_samples must be a positive int, got {n_samples!r}")
    return n_samples


def _check_gaussian(mu, sigma, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("mu", mu), ("sigma", sigma)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{who}: {name} must be a floating-point torch.Tensor")
        if t.ndim != 1:
            raise ValueError(f"{who}: {name} must have shape (D,), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{who}: {name} contains NaN or inf")
    if mu.shape != sigma.shape:
        raise ValueError(f"{who}: mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)} differ")
    if not bool((sigma > 0).all()):
        raise ValueError(f"{who}: sigma must be > 0 everywhere")
    return mu.detach(), sigma.detach()


def _evaluate(f: Callable, z: torch.Tensor, who: str) -> torch.Tensor:
    fz = f(z)
    if not isinstance(fz, torch.Tensor) or fz.shape != (z.shape[0],):
        shape = tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__
        raise ValueError(f"{who}: f must map (S, D) to (S,), got {shape} for S={z.shape[0]}")
    return fz


def _baseline(fz: torch.Tensor, baseline: Baseline, who: str) -> torch.Tensor | float:
    """The control variate ``b`` of Eq. 6, per sample.

    ``"loo"`` (leave-one-out) uses the mean of the *other* samples' ``f``, which is independent
    of sample ``s`` and so keeps the estimator unbiased (Kool et al. 2019's REINFORCE with
    baseline, as for RLOO); a constant keeps it unbiased trivially.
    """
    if baseline is None:
        return 0.0
    if isinstance(baseline, str):
        if baseline != "loo":
            raise ValueError(f"{who}: baseline must be None, a number or 'loo', got {baseline!r}")
        n = fz.shape[0]
        if n < 2:
            raise ValueError(f"{who}: the leave-one-out baseline needs n_samples >= 2")
        return (fz.sum() - fz) / (n - 1)
    if isinstance(baseline, bool) or not isinstance(baseline, int | float):
        raise TypeError(f"{who}: baseline must be None, a number or 'loo', "
                        f"got {type(baseline).__name__}")
    return float(baseline)


def gaussian_rsample(mu: torch.Tensor, sigma: torch.Tensor, n_samples: int, *,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """Reparameterised draws ``z = μ + σ ⊙ ε``, ``ε ~ N(0, I)`` (Eq. 2).

    Returns
    -------
    z, eps : Tensor, shape (n_samples, D) each; ``z`` carries gradients to ``mu`` and ``sigma``.
    """
    n = _check_samples(n_samples, "gaussian_rsample")
    eps = torch.randn((n, mu.shape[-1]), generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + sigma * eps, eps


def gaussian_reparam_grad(f: Callable, mu: torch.Tensor, sigma: torch.Tensor, n_samples: int,
                          *, generator: torch.Generator | None = None) -> tuple[torch.Tensor,
                                                                                torch.Tensor]:
    """Per-sample pathwise gradients of ``E_{N(μ, diag σ²)}[f(z)]`` (Eq. 3).

    ``∇_μ = ∇_z f(z)`` and ``∇_σ = ∇_z f(z) ⊙ ε`` at ``z = μ + σ ε``: unbiased whenever ``f`` is
    differentiable (almost everywhere, with an integrable gradient).

    Parameters
    ----------
    f : callable, (S, D) -> (S,), differentiable, row by row
    mu, sigma : Tensor, shape (D,); sigma > 0
    n_samples : int
        Number of independent draws S.

    Returns
    -------
    grad_mu, grad_sigma : Tensor, shape (S, D); their means estimate the exact gradients.
    """
    mu, sigma = _check_gaussian(mu, sigma, "gaussian_reparam_grad")
    n = _check_samples(n_samples, "gaussian_reparam_grad")
    # One leaf per sample: autograd then returns per-sample gradients in a single backward pass.
    mu_s = mu.expand(n, -1).clone().requires_grad_(True)
    sigma_s = sigma.expand(n, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        eps = torch.randn(mu_s.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        fz = _evaluate(f, mu_s + sigma_s * eps, "gaussian_reparam_grad")
        grad_mu, grad_sigma = torch.autograd.grad(fz.sum(), (mu_s, sigma_s))
    return grad_mu, grad_sigma


def gaussian_score_grad(f: Callable, mu: torch.Tensor, sigma: torch.Tensor, n_samples: int, *,
                        baseline: Baseline = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """Per-sample score-function (REINFORCE) gradients of ``E_{N(μ, diag σ²)}[f(z)]`` (Eqs. 5-6).

    ``(f(z) - b) ∇ log q(z)`` with ``∇_μ log q = ε / σ`` and ``∇_σ log q = (ε² - 1) / σ``. Only
    values of ``f`` are needed (it may be non-differentiable or a black box).

    Parameters
    ----------
    f : callable, (S, D) -> (S,), row by row
    mu, sigma : Tensor, shape (D,)
    n_samples : int
    baseline : None, float or "loo"
        Control variate ``b`` (Eq. 6): none, a constant, or the leave-one-out mean of the other
        samples' ``f`` (needs ``n_samples >= 2``). All three are unbiased.

    Returns
    -------
    grad_mu, grad_sigma : Tensor, shape (S, D).
    """
    mu, sigma = _check_gaussian(mu, sigma, "gaussian_score_grad")
    n = _check_samples(n_samples, "gaussian_score_grad")
    with torch.no_grad():
        z, eps = gaussian_rsample(mu, sigma, n, generator=generator)
        fz = _evaluate(f, z, "gaussian_score_grad")
        w = (fz - _baseline(fz, baseline, "gaussian_score_grad")).unsqueeze(-1)  # (S, 1)
        return w * eps / sigma, w * (eps.square() - 1.0) / sigma


def _categorical_f(f, k: int, who: str) -> Callable:
    if isinstance(f, torch.Tensor):
        if f.shape != (k,):
            raise ValueError(f"{who}: a tensor f must hold K={k} values, got {tuple(f.shape)}")
        values = f.detach()
        return lambda y: y @ values.to(y.dtype)
    if not callable(f):
        raise TypeError(f"{who}: f must be callable or a tensor of K values")
    return f


def _check_logits_1d(logits, who: str) -> torch.Tensor:
    logits = check_logits(logits, who)
    if logits.ndim != 1:
        raise ValueError(f"{who}: logits must have shape (K,), got {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{who}: logits must be finite")
    return logits.detach()


def categorical_exact_grad(f, logits: torch.Tensor) -> torch.Tensor:
    """Exact ``∇_θ Σ_k softmax(θ)_k f(k) = p ⊙ (f - p·f)`` (Eq. 7).

    Parameters
    ----------
    f : callable on one-hot rows (K, K) -> (K,), or tensor of K values
    logits : Tensor, shape (K,)

    Returns
    -------
    Tensor, shape (K,).
    """
    logits = _check_logits_1d(logits, "categorical_exact_grad")
    k = logits.shape[0]
    f = _categorical_f(f, k, "categorical_exact_grad")
    with torch.no_grad():
        values = _evaluate(f, torch.eye(k, dtype=logits.dtype, device=logits.device),
                           "categorical_exact_grad")
        p = torch.softmax(logits, dim=0)
        return p * (values - p @ values)


def categorical_score_grad(f, logits: torch.Tensor, n_samples: int, *, baseline: Baseline = None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample REINFORCE gradients for ``q = softmax(θ)`` (Eq. 5): ``(f(k) - b)(e_k - p)``.

    ``∇_θ log softmax(θ)_k = e_k - p`` (one-hot minus probabilities). Samples come from
    :func:`~deepnotes.generative.gumbel.gumbel_max_sample`.

    Parameters
    ----------
    f : callable on one-hot rows (S, K) -> (S,), or tensor of K values
    logits : Tensor, shape (K,)
    n_samples : int
    baseline : None, float or "loo" (Eq. 6)

    Returns
    -------
    Tensor, shape (S, K).
    """
    logits = _check_logits_1d(logits, "categorical_score_grad")
    n = _check_samples(n_samples, "categorical_score_grad")
    k = logits.shape[0]
    f = _categorical_f(f, k, "categorical_score_grad")
    with torch.no_grad():
        idx = gumbel_max_sample(logits, n, generator=generator)
        onehot = torch.nn.functional.one_hot(idx, k).to(logits.dtype)  # (S, K)
        fz = _evaluate(f, onehot, "categorical_score_grad")
        w = fz - _baseline(fz, baseline, "categorical_score_grad")
        return w.unsqueeze(-1) * (onehot - torch.softmax(logits, dim=0))


def gumbel_softmax_grad(f, logits: torch.Tensor, tau: float, n_samples: int, *,
                        hard: bool = False,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample gradients of ``f`` through a Gumbel-softmax sample (Eq. 9) or straight-through.

    The relaxed estimator differentiates ``f(softmax((θ + g)/τ))``: an unbiased gradient of the
    *relaxed* objective, hence a biased one for ``E_{softmax(θ)}[f(onehot)]``; the bias vanishes
    as ``τ → 0`` while the variance grows. ``hard=True`` evaluates ``f`` at the one-hot sample
    and back-propagates through the soft one (Eq. 10), biased at every ``τ``.

    Parameters
    ----------
    f : callable on simplex rows (S, K) -> (S,), differentiable, or tensor of K values
    logits : Tensor, shape (K,)
    tau : float > 0
    n_samples : int
    hard : bool

    Returns
    -------
    Tensor, shape (S, K).
    """
    logits = _check_logits_1d(logits, "gumbel_softmax_grad")
    n = _check_samples(n_samples, "gumbel_softmax_grad")
    f = _categorical_f(f, logits.shape[0], "gumbel_softmax_grad")
    leaf = logits.expand(n, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        y = gumbel_softmax(leaf, tau, hard=hard, generator=generator)
        fz = _evaluate(f, y, "gumbel_softmax_grad")
        (grad,) = torch.autograd.grad(fz.sum(), leaf)
    return grad
