"""Wasserstein GANs and exact Wasserstein-1 distances to check them against.

The Kantorovich–Rubinstein duality (post ``wasserstein-gan``, Eq. 2) turns the earth mover's
distance into a maximisation over 1-Lipschitz functions::

    W1(p, q) = inf_{γ ∈ Π(p, q)} E_{(x,y)~γ} |x - y| = sup_{‖f‖_L ≤ 1} E_p f(x) - E_q f(x)

A WGAN's critic is that ``f``; its value ``E_real f - E_fake f`` is the dual estimate of W1.

- :func:`critic_loss`, :func:`generator_loss` (Eqs. 4-5), :func:`clip_weights_` (Arjovsky et
  al. 2017, "Wasserstein GAN", ICML), :func:`gradient_penalty` (Gulrajani et al. 2017,
  "Improved Training of Wasserstein GANs", NeurIPS; Eq. 6, on random interpolates),
  :func:`wgan_objectives` for :func:`deepnotes.generative.gan.train_adversarial`;
- :func:`dual_estimate`: the critic's estimate of W1 on two batches;
- exact primal values: :func:`wasserstein_1d` (closed form from the two CDFs, Eq. 7),
  :func:`wasserstein_discrete` (the transport linear programme between weighted point sets,
  Eq. 8, solved by HiGHS through ``scipy.optimize.linprog``) and :func:`wasserstein_matching`
  (equal-size uniform sets: the LP's optimum is a permutation, found by the Hungarian method).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import optimize, sparse
from torch import nn

from deepnotes.generative.gan import CriticObjective, GeneratorObjective


# ------------------------------------------------------------------------ WGAN losses --
def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``mean f(G(z)) - mean f(x)`` (Eq. 4): minimising it maximises the dual objective.

    ``real_scores`` (B,) or (B, 1), ``fake_scores`` (B',) or (B', 1): unbounded critic outputs,
    in the data's distance units when the critic is 1-Lipschitz.
    """
    for name, t in (("real_scores", real_scores), ("fake_scores", fake_scores)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
            raise TypeError(f"{name} must be a non-empty floating-point torch.Tensor")
    return fake_scores.mean() - real_scores.mean()


def generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-mean f(G(z))`` (Eq. 5): the part of the dual objective that depends on ``G``."""
    if not isinstance(fake_scores, torch.Tensor) or not fake_scores.is_floating_point():
        raise TypeError("fake_scores must be a floating-point torch.Tensor")
    return -fake_scores.mean()


@torch.no_grad()
def clip_weights_(critic: nn.Module, clip: float) -> None:
    """Clamp every parameter of ``critic`` into ``[-clip, clip]`` in place (Arjovsky et al.
    2017, Algorithm 1, ``c = 0.01``). Bounded weights make the critic K-Lipschitz for some
    unknown K, so its estimate is ``K · W1`` at best, not W1."""
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip!r}")
    for p in critic.parameters():
        p.clamp_(-clip, clip)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None, *,
                     one_sided: bool = False) -> torch.Tensor:
    """``mean (‖∇_x̂ f(x̂)‖₂ - 1)²`` at random interpolates (Eq. 6; Gulrajani et al. 2017, Alg. 1).

    ``x̂ = ε x + (1 - ε) x̃`` with one ``ε ~ U[0, 1]`` per pair (drawn from ``generator``):
    the optimal critic has unit gradient norm almost everywhere on the lines joining coupled
    points (their Prop. 1), so the penalty is applied there.

    ``one_sided=True`` penalises only norms above 1, ``mean max(0, ‖∇f‖ - 1)²`` (Eq. 9; the
    Lipschitz penalty of Petzka et al. 2018, "On the regularization of Wasserstein GANs",
    ICLR). In 1-D the two-sided penalty has a barrier: a slope must pass through 0, where the
    penalty is largest, to change sign, so a critic that starts with the wrong sign can stay
    there (the wasserstein-gan post shows it); the one-sided penalty has no such barrier.

    Parameters
    ----------
    critic : nn.Module
        ``(B, *shape) → (B, 1)``; must treat samples independently (no batch norm).
    real, fake : Tensor, shape (B, *shape)

    Returns
    -------
    Tensor, shape (); differentiable in the critic's parameters (``create_graph=True``).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), generator=generator,
                     dtype=real.dtype, device=real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    excess = grad.flatten(1).norm(dim=1) - 1.0
    if one_sided:
        excess = excess.clamp(min=0.0)
    return (excess**2).mean()


def wgan_objectives(penalty: float = 0.0, *,
                    one_sided: bool = False) -> tuple[CriticObjective, GeneratorObjective]:
    """``(critic_objective, generator_objective)`` for
    :func:`deepnotes.generative.gan.train_adversarial`.

    ``penalty = λ > 0``: WGAN-GP, critic loss ``Eq. 4 + λ · Eq. 6`` (λ = 10 in the paper).
    ``penalty = 0``: the plain WGAN critic; pair it with ``after_critic_step`` =
    ``lambda c: clip_weights_(c, 0.01)``. ``one_sided``: the one-sided penalty (see
    :func:`gradient_penalty`). The critic objective reports ``w_estimate``, the dual
    estimate of the batch before the update, and ``gp`` (the penalty, 0 without it).
    """
    if not penalty >= 0:
        raise ValueError(f"penalty must be >= 0, got {penalty!r}")

    def critic_objective(critic, real, fake):
        loss = critic_loss(critic(real), critic(fake))
        gp = (gradient_penalty(critic, real, fake, one_sided=one_sided) if penalty > 0
              else loss.new_zeros(()))
        return loss + penalty * gp, {"w_estimate": -float(loss.detach()), "gp": float(gp.detach())}

    def generator_objective(critic, fake):
        return generator_loss(critic(fake))

    return critic_objective, generator_objective


@torch.no_grad()
def dual_estimate(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    """``mean f(real) - mean f(fake)`` (Eq. 2's dual objective), a lower bound on W1 between the
    two empirical distributions when ``f`` is 1-Lipschitz."""
    return float(critic(real).mean() - critic(fake).mean())


# ----------------------------------------------------------------- exact W1 distances --
def _weights(values: np.ndarray, weights, name: str) -> np.ndarray:
    if weights is None:
        return np.full(len(values), 1.0 / len(values))
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != values.shape[:1]:
        raise ValueError(f"{name} must have shape ({len(values)},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return w / w.sum()


def _values(x, name: str, ndim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim or x.shape[0] == 0:
        shape = "(n,)" if ndim == 1 else "(n, d)"
        raise ValueError(f"{name} must have shape {shape} with n >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    return x


def wasserstein_1d(u, v, u_weights=None, v_weights=None) -> float:
    """Exact W1 between two weighted empirical distributions on the line (Eq. 7).

    ``W1 = ∫ |F_u(t) - F_v(t)| dt``: both CDFs are step functions that change only at the
    pooled sample values, so the integral is a finite sum over the gaps between consecutive
    pooled values of ``|F_u - F_v|`` on the gap times its length.

    Parameters
    ----------
    u, v : array_like, shape (n,) and (m,)
    u_weights, v_weights : array_like, shape (n,) and (m,), optional
        Non-negative masses (normalised here); uniform when omitted.

    Returns
    -------
    float, in the units of ``u``. Equals ``scipy.stats.wasserstein_distance`` (tested to 1e-12).
    """
    u, v = _values(u, "u", 1), _values(v, "v", 1)
    uw, vw = _weights(u, u_weights, "u_weights"), _weights(v, v_weights, "v_weights")
    iu, iv = np.argsort(u, kind="mergesort"), np.argsort(v, kind="mergesort")
    u, uw, v, vw = u[iu], uw[iu], v[iv], vw[iv]
    pooled = np.sort(np.concatenate([u, v]), kind="mergesort")
    gaps = np.diff(pooled)  # (n + m - 1,)
    # F(t) on the gap [pooled_i, pooled_{i+1}): the mass at values <= pooled_i
    cu = np.concatenate([[0.0], np.cumsum(uw)])
    cv = np.concatenate([[0.0], np.cumsum(vw)])
    fu = cu[np.searchsorted(u, pooled[:-1], side="right")]
    fv = cv[np.searchsorted(v, pooled[:-1], side="right")]
    return float(np.sum(np.abs(fu - fv) * gaps))


def _cost(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances (n, m), computed from differences (no cancellation)."""
    return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))


def wasserstein_discrete(x, y, x_weights=None, y_weights=None, *,
                         return_plan: bool = False):
    """Exact W1 between weighted point sets by the transport linear programme (Eq. 8).

    ``min_P Σ_ij P_ij ‖x_i - y_j‖₂`` over ``P ≥ 0`` with row sums ``a`` and column sums ``b``:
    ``n·m`` variables, ``n + m`` equality constraints (one redundant), solved by HiGHS's dual
    simplex (``scipy.optimize.linprog(method="highs")``). Cost ``O((n m)^{~1.5})`` in practice:
    fine up to a few hundred points per side.

    Parameters
    ----------
    x, y : array_like, shape (n, d) and (m, d)
    x_weights, y_weights : array_like, shape (n,) and (m,), optional
        Masses, normalised here (uniform when omitted).
    return_plan : bool
        Also return the optimal coupling ``P``, shape (n, m).

    Returns
    -------
    float (in the units of ``x``), or ``(float, ndarray)`` with ``return_plan``.
    """
    x, y = _values(x, "x", 2), _values(y, "y", 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and "
                         f"{y.shape[1]}")
    a, b = _weights(x, x_weights, "x_weights"), _weights(y, y_weights, "y_weights")
    n, m = len(x), len(y)
    cost = _cost(x, y)
    # P is flattened row-major: variable i*m + j. Row i sums P[i, :]; column j sums P[:, j].
    rows = sparse.kron(sparse.eye(n), np.ones((1, m)))
    cols = sparse.kron(np.ones((1, n)), sparse.eye(m))
    a_eq = sparse.vstack([rows, cols]).tocsr()
    res = optimize.linprog(cost.ravel(), A_eq=a_eq, b_eq=np.concatenate([a, b]),
                           bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"the transport LP failed: {res.message}")
    plan = res.x.reshape(n, m)
    value = float(np.sum(plan * cost))
    return (value, plan) if return_plan else value


def wasserstein_matching(x, y) -> float:
    """Exact W1 between two uniform point sets of the same size n, shape (n, d) each.

    The transport polytope with ``a = b = 1/n`` has permutation matrices as vertices
    (Birkhoff–von Neumann), so the LP of :func:`wasserstein_discrete` is solved by the optimal
    assignment (``scipy.optimize.linear_sum_assignment``): W1 is the mean matched distance.
    Exact and much faster than the LP (a few thousand points are fine).
    """
    x, y = _values(x, "x", 2), _values(y, "y", 2)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    cost = _cost(x, y)
    r, c = optimize.linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def wgan_critic_step_fn(clip: float | None) -> Callable[[nn.Module], None] | None:
    """``after_critic_step`` for :func:`deepnotes.generative.gan.train_adversarial`: weight
    clipping at ``clip``, or ``None`` (no clipping)."""
    if clip is None:
        return None
    if not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")
    return lambda critic: clip_weights_(critic, clip)
