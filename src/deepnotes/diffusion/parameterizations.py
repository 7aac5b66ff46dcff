"""What the network predicts, and how any prediction becomes the denoiser ``D(x_σ, σ)``.

For ``x_t = α x_0 + σ_t ε`` a network may predict

- ``"eps"``: the noise ``ε`` (Ho et al. 2020),
- ``"x0"``: the clean data ``x_0``,
- ``"v"``: ``v = α ε - σ_t x_0`` (Salimans & Ho 2022; defined here for any ``α, σ_t``),
- ``"velocity"``: ``u = dx_t/dt = α̇ x_0 + σ̇_t ε`` (flow matching / rectified flow; for
  ``x_t = (1 - t) x_0 + t ε`` this is ``ε - x_0``, Liu et al. 2022).

Each is an invertible linear map of ``(x_0, ε)`` given ``x_t``, so :func:`to_x0` and
:func:`from_x0` are exact inverses (tested). :func:`as_denoiser` is the adapter that turns a
network in any process's time convention into the σ-space denoiser every sampler expects;
:class:`EDMPrecond` is Karras et al.'s preconditioning (Table 1) around any backbone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deepnotes.diffusion.processes import NoiseProcess, _as_tensor

PREDICTIONS = ("eps", "x0", "v", "velocity")


def _check_kind(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {kind!r}")
    return kind


def _coeffs(kind, alpha, sigma, d_alpha, d_sigma):
    """Rows of the 2×2 map ``pred = a·x_0 + b·ε`` for each prediction kind."""
    if kind == "eps":
        return 0 * alpha, 1 + 0 * alpha
    if kind == "x0":
        return 1 + 0 * alpha, 0 * alpha
    if kind == "v":
        return -sigma, alpha
    if d_alpha is None or d_sigma is None:
        raise ValueError("prediction='velocity' needs d_alpha and d_sigma (the process's "
                         "time derivatives; NoiseProcess.derivatives gives them)")
    return d_alpha, d_sigma


def x0_loss_weight(kind: str, alpha, sigma, d_alpha=None, d_sigma=None):
    """``w`` with ``||pred − target||² = w ||x̂_0 − x_0||²`` at fixed ``x_t``: ``(a − b α/σ)²``.

    Since ``ε̂ − ε = −(α/σ)(x̂_0 − x_0)``, a prediction ``a x_0 + b ε`` errs by ``(a − bα/σ)``
    times the x_0 error: 1 for x0, ``(α/σ)²`` for ε, ``((α² + σ²)/σ)²`` for v.
    """
    a, b = _coeffs(_check_kind(kind), alpha, sigma, d_alpha, d_sigma)
    return (a - b * alpha / sigma) ** 2


def to_x0(pred: torch.Tensor, kind: str, x_t: torch.Tensor, alpha, sigma, d_alpha=None,
          d_sigma=None) -> torch.Tensor:
    """Clean-data estimate from a prediction of type ``kind`` at ``x_t = α x_0 + σ_t ε``.

    ``alpha``, ``sigma`` (and for ``"velocity"`` the derivatives) broadcast against ``x_t``.
    Solves ``[x_t, pred] = [[α, σ], [a, b]] [x_0, ε]``: ``x_0 = (b x_t − σ pred)/(αb − σa)``.
    """
    a, b = _coeffs(_check_kind(kind), alpha, sigma, d_alpha, d_sigma)
    return (b * x_t - sigma * pred) / (alpha * b - sigma * a)


def to_eps(pred: torch.Tensor, kind: str, x_t: torch.Tensor, alpha, sigma, d_alpha=None,
           d_sigma=None) -> torch.Tensor:
    """Noise estimate from a prediction of type ``kind`` (same linear system as :func:`to_x0`)."""
    a, b = _coeffs(_check_kind(kind), alpha, sigma, d_alpha, d_sigma)
    return (alpha * pred - a * x_t) / (alpha * b - sigma * a)


def from_x0(x0: torch.Tensor, kind: str, x_t: torch.Tensor, alpha, sigma, d_alpha=None,
            d_sigma=None) -> torch.Tensor:
    """The prediction of type ``kind`` implied by a clean-data estimate ``x0`` at ``x_t``."""
    a, b = _coeffs(_check_kind(kind), alpha, sigma, d_alpha, d_sigma)
    eps = (x_t - alpha * x0) / sigma
    return a * x0 + b * eps


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bshape(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x).view((-1,) + (1,) * (x.ndim - 1))


def as_denoiser(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                process: NoiseProcess, prediction: str = "eps") -> Denoiser:
    """Adapt ``model(x_t, t) -> prediction`` of ``process`` into ``D(x_σ, σ) -> x_0`` estimate.

    The one adapter between time conventions: ``t = process.t_of_sigma(σ)``,
    ``x_t = α_t x_σ``, then :func:`to_x0`. ``σ`` has shape (B,).
    """
    _check_kind(prediction)

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x_t, t = process.from_sigma_space(x, sigma)
        alpha, sig_t = _bshape(process.alpha(t), x), _bshape(process.sigma(t), x)
        d_alpha = d_sigma = None
        if prediction == "velocity":
            d_alpha, d_sigma = (_bshape(d, x) for d in process.derivatives(t))
        return to_x0(model(x_t, t), prediction, x_t, alpha, sig_t, d_alpha, d_sigma)

    return denoiser


def velocity_from_denoiser(denoiser: Denoiser) -> Callable:
    """Rectified-flow velocity ``v(x_t, t) = E[ε - x_0 | x_t]`` from a σ-space denoiser, t < 1."""

    def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _as_tensor(t).to(x_t)
        one_minus = _bshape(1 - t, x_t)
        sigma = t / (1 - t)
        x0 = denoiser(x_t / one_minus, sigma)
        return (x_t - one_minus * x0) / _bshape(t, x_t) - x0

    return velocity


class EDMPrecond(nn.Module):
    """Karras et al. (2022), Table 1 / Eq. 7: ``D(x; σ) = c_skip x + c_out F(c_in x; c_noise)``.

    ``c_skip = σ_d²/(σ² + σ_d²)``, ``c_out = σ σ_d / sqrt(σ² + σ_d²)``,
    ``c_in = 1/sqrt(σ² + σ_d²)``, ``c_noise = ln(σ)/4``; the backbone ``F(x, c_noise)`` sees
    unit-variance inputs and targets at every σ. ``sigma_data`` is the data's standard deviation.
    """

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.backbone = backbone
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(c_skip, c_out, c_in, c_noise)``, each of ``sigma``'s shape."""
        sd2 = self.sigma_data ** 2
        total = sigma ** 2 + sd2
        return sd2 / total, sigma * self.sigma_data / total.sqrt(), total.rsqrt(), \
            sigma.log() / 4

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """``λ(σ) = (σ² + σ_d²)/(σ σ_d)² = 1/c_out²`` (Eq. 8): unit effective weight on ``F``."""
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

    def forward(self, x: torch.Tensor, sigma: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``D(x; σ)``, or ``D(x; σ, y)`` when ``class_labels`` (B,) is given: the labels are
        passed on as ``F(c_in x, c_noise, class_labels)`` (conditional backbones only)."""
        sigma = _as_tensor(sigma).to(x)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (_bshape(c, x) for c in self.coefficients(sigma))
        if class_labels is None:
            f = self.backbone(c_in * x, c_noise.view(-1))
        else:
            f = self.backbone(c_in * x, c_noise.view(-1), class_labels)
        return c_skip * x + c_out * f


def sample_lognormal_sigma(n: int, p_mean: float = -1.2, p_std: float = 1.2,
                           generator: torch.Generator | None = None,
                           dtype=torch.float32, device=None) -> torch.Tensor:
    """EDM training noise levels ``ln σ ~ N(P_mean, P_std²)`` (Karras et al. 2022, Table 1)."""
    z = torch.randn(n, generator=generator, dtype=dtype, device=device)
    return (p_mean + p_std * z).exp()


def sample_logit_normal_t(n: int, mean: float = 0.0, std: float = 1.0,
                          generator: torch.Generator | None = None,
                          dtype=torch.float32, device=None) -> torch.Tensor:
    """SD3 training times ``t = sigmoid(u)``, ``u ~ N(mean, std²)`` (Esser et al. 2024)."""
    z = torch.randn(n, generator=generator, dtype=dtype, device=device)
    return torch.sigmoid(mean + std * z)


def edm_loss(denoiser: EDMPrecond, x0: torch.Tensor, p_mean: float = -1.2, p_std: float = 1.2,
             generator: torch.Generator | None = None,
             class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """EDM training loss (Karras et al. 2022, Eq. 2 and 8): ``E λ(σ) ||D(x_0 + σε; σ) − x_0||²``.

    ``class_labels`` (B,), optional, are passed to a conditional denoiser (already dropped to
    the null label where classifier-free guidance needs it). Returns the scalar mean over the
    batch of the per-example sum over dimensions.
    """
    if not isinstance(denoiser, EDMPrecond):
        raise TypeError("edm_loss expects an EDMPrecond (its λ(σ) matches the preconditioning)")
    sigma = sample_lognormal_sigma(x0.shape[0], p_mean, p_std, generator, x0.dtype, x0.device)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x = x0 + _bshape(sigma, x0) * noise
    err = (denoiser(x, sigma, class_labels) - x0) ** 2
    return (denoiser.loss_weight(sigma) * err.flatten(1).sum(1)).mean()



def prediction_loss(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    process: NoiseProcess, x0: torch.Tensor, prediction: str = "eps",
                    t: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising loss for ``model(x_t, t)`` predicting ``prediction`` under ``process``.

    ``E_t E_ε ||model(x_t, t) − target||²`` with ``x_t = α_t x_0 + σ_t ε`` and the target of
    :func:`from_x0` at the true ``(x_0, ε)``: ε (Ho et al. 2020, Eq. 14), x_0, v (Salimans & Ho
    2022) or the velocity ``α̇ x_0 + σ̇ ε`` (flow matching; Liu et al. 2022). In terms of
    the implied ``x̂_0`` each is the x_0-error weighted by :func:`x0_loss_weight`, e.g.
    ``(α/σ)²`` (the SNR) for ε. ``t`` defaults to uniform on ``[process.t_min, process.t_max]``;
    pass :func:`sample_logit_normal_t` draws for SD3-style training. Mean over the batch of the
    per-example sum over dimensions.
    """
    _check_kind(prediction)
    b = x0.shape[0]
    if t is None:
        lo, hi = process.t_min, process.t_max
        if not (torch.isfinite(torch.tensor(hi)) and hi > lo):
            raise ValueError(f"{type(process).__name__} has no finite time range; pass t")
        t = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=x0.dtype,
                                        device=x0.device)
    t = _as_tensor(t).to(x0)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_t = process.q_sample(x0, t, noise)
    alpha, sigma = _bshape(process.alpha(t), x0), _bshape(process.sigma(t), x0)
    d_alpha = d_sigma = None
    if prediction == "velocity":
        d_alpha, d_sigma = (_bshape(d, x0) for d in process.derivatives(t))
    target = from_x0(x0, prediction, x_t, alpha, sigma, d_alpha, d_sigma)
    return ((model(x_t, t) - target) ** 2).flatten(1).sum(1).mean()
