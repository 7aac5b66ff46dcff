"""Generative adversarial networks: the losses, the optimal discriminator, the shared training loop.

Goodfellow et al. (2014), "Generative Adversarial Nets", NeurIPS. A generator ``G`` maps noise
``z ~ p_z`` to samples; a discriminator ``D(x) = σ(ℓ(x))`` (``ℓ`` its logit) tells data from
samples. The two play (post ``gan``, Eq. 1)::

    min_G max_D V(D, G) = E_{x~p_data}[log D(x)] + E_{z~p_z}[log(1 - D(G(z)))]

- :func:`discriminator_loss`: ``-V`` estimated on a batch, written with logits (Eq. 1);
- :func:`generator_loss`: the minimax loss ``E log(1 - D(G(z)))`` (Eq. 5) or the
  non-saturating ``-E log D(G(z))`` (Eq. 6); their gradients with respect to the logit are
  ``-D`` and ``-(1 - D)`` (Eq. 7), which is why the first stalls when ``D(G(z)) ≈ 0``;
- :func:`optimal_discriminator`, :func:`value_function`, :func:`js_divergence`: for a fixed
  ``G`` the best ``D`` is ``p_data / (p_data + p_g)`` (Eq. 2) and at that ``D`` the value is
  ``2 JS(p_data ‖ p_g) - log 4`` (Eq. 3), on discrete distributions where all of it is exact;
- :func:`mlp`, :class:`DCGANGenerator`, :class:`DCGANDiscriminator`: the networks of the
  experiments (2-D toys, 8×8 digits), spectral normalisation (Miyato et al. 2018) as an option;
- :func:`train_adversarial`: the alternating loop shared with :mod:`deepnotes.generative.wgan`
  (``n_critic`` critic steps per generator step; the two optimisers may have different learning
  rates, the two-time-scale rule of Heusel et al. 2017); a non-finite loss stops it with
  :class:`NonFiniteLossError` naming the step;
- :func:`mode_statistics`: modes covered and the high-quality sample fraction on a mixture of
  Gaussians (the protocol of Srivastava et al. 2017, "VEEGAN").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

GENERATOR_LOSSES = ("minimax", "non_saturating")

#: ``(critic, real, fake) -> (loss, metrics)``: the critic's (discriminator's) objective.
CriticObjective = Callable[[nn.Module, torch.Tensor, torch.Tensor],
                           tuple[torch.Tensor, dict[str, float]]]
#: ``(critic, fake) -> loss``: the generator's objective (``fake`` carries the graph to G).
GeneratorObjective = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class NonFiniteLossError(FloatingPointError):
    """A critic/discriminator or generator loss became NaN or inf; the message names the step."""


# ----------------------------------------------------------------------------------- losses --
def _logits(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    return value


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-V(D, G)`` on a batch (Eq. 1): ``-mean log D(x) - mean log(1 - D(G(z)))``.

    Parameters
    ----------
    real_logits : Tensor, shape (B,) or (B, 1)
        ``ℓ(x)`` on data, with ``D = sigmoid(ℓ)``.
    fake_logits : Tensor, shape (B',) or (B', 1)
        ``ℓ(G(z))`` on generated samples.

    Returns
    -------
    Tensor, shape ()
        In nats. ``log D = -softplus(-ℓ)`` and ``log(1 - D) = -softplus(ℓ)`` keep it finite for
        any logit (binary cross-entropy with targets 1 and 0).
    """
    real_logits = _logits(real_logits, "real_logits")
    fake_logits = _logits(fake_logits, "fake_logits")
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """The generator's loss on ``ℓ(G(z))``, shape (B,) or (B, 1); returns a scalar in nats.

    ``kind="minimax"``: ``mean log(1 - D(G(z))) = -mean softplus(ℓ)`` (Eq. 5), the term of
    ``V`` that depends on ``G``. Its gradient is ``∂/∂ℓ = -D / B`` (Eq. 7): it vanishes where
    the discriminator confidently rejects the samples, early in training.

    ``kind="non_saturating"``: ``-mean log D(G(z)) = mean softplus(-ℓ)`` (Eq. 6, the
    heuristic of Goodfellow et al. 2014, Sec. 3), with ``∂/∂ℓ = -(1 - D) / B``: largest where
    the samples are worst. Both have the same fixed point ``p_g = p_data``.
    """
    fake_logits = _logits(fake_logits, "fake_logits")
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"kind must be one of {GENERATOR_LOSSES}, got {kind!r}")


def gan_objectives(kind: str = "non_saturating") -> tuple[CriticObjective, GeneratorObjective]:
    """``(critic_objective, generator_objective)`` of the original GAN for
    :func:`train_adversarial`; ``kind`` as in :func:`generator_loss`.

    The critic objective also reports ``d_real`` and ``d_fake``, the batch means of ``D``.
    """
    if kind not in GENERATOR_LOSSES:
        raise ValueError(f"kind must be one of {GENERATOR_LOSSES}, got {kind!r}")

    def critic_objective(critic, real, fake):
        lr, lf = critic(real), critic(fake)
        loss = discriminator_loss(lr, lf)
        with torch.no_grad():
            metrics = {"d_real": float(torch.sigmoid(lr).mean()),
                       "d_fake": float(torch.sigmoid(lf).mean())}
        return loss, metrics

    def generator_objective(critic, fake):
        return generator_loss(critic(fake), kind)

    return critic_objective, generator_objective


# ------------------------------------------------------------- discrete theory (exact) --
def _distribution(p, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not p.sum() > 0:
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return p / p.sum()


def optimal_discriminator(p_data, p_g) -> np.ndarray:
    """``D*(x) = p_data(x) / (p_data(x) + p_g(x))`` (Eq. 2; Goodfellow et al. 2014, Prop. 1).

    Parameters
    ----------
    p_data, p_g : array_like, shape (K,)
        Probabilities (or densities at the same K points; only the ratio matters, so unnormalised
        densities are fine here). Non-negative.

    Returns
    -------
    ndarray, shape (K,)
        In [0, 1]; ``nan`` where both are zero (outside both supports D does not matter).
    """
    p_data = np.asarray(p_data, dtype=np.float64)
    p_g = np.asarray(p_g, dtype=np.float64)
    if p_data.shape != p_g.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {p_data.shape} and "
                         f"{p_g.shape}")
    if np.any(p_data < 0) or np.any(p_g < 0):
        raise ValueError("p_data and p_g must be non-negative")
    total = p_data + p_g
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, p_data / total, np.nan)


def value_function(d, p_data, p_g) -> float:
    """``V(D, G) = Σ_x p_data(x) log D(x) + p_g(x) log(1 - D(x))`` (Eq. 1) on K points, in nats.

    ``d``, ``p_data``, ``p_g``: shape (K,); ``p_data`` and ``p_g`` are normalised here. Terms
    with zero probability count as 0 (``0 · log 0 = 0``), so ``D* ∈ {0, 1}`` off the overlap is
    allowed.
    """
    p_data, p_g = _distribution(p_data, "p_data"), _distribution(p_g, "p_g")
    d = np.asarray(d, dtype=np.float64)
    if d.shape != p_data.shape or p_g.shape != p_data.shape:
        raise ValueError(f"d, p_data and p_g must have the same shape, got {d.shape}, "
                         f"{p_data.shape}, {p_g.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        real = np.where(p_data > 0, p_data * np.log(d), 0.0)
        fake = np.where(p_g > 0, p_g * np.log1p(-d), 0.0)
    return float(real.sum() + fake.sum())


def js_divergence(p, q) -> float:
    """Jensen–Shannon divergence ``½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = (p + q)/2``, in nats.

    ``p``, ``q``: shape (K,), normalised here. In [0, log 2]. ``max_D V(D, G) = 2 JS(p_data ‖
    p_g) - log 4`` (Eq. 3; Goodfellow et al. 2014, Thm. 1).
    """
    p, q = _distribution(p, "p"), _distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(0.5 * (kl_p + kl_q))


# --------------------------------------------------------------------------- networks --
def _maybe_sn(layer: nn.Module, spectral_norm: bool) -> nn.Module:
    # one power iteration per forward pass, as Miyato et al. (2018), Algorithm 1
    return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer


def mlp(d_in: int, d_out: int, hidden: int = 128, depth: int = 3, *,
        spectral_norm: bool = False, slope: float = 0.2) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` with LeakyReLU(``slope``), then a linear
    output; maps (B, d_in) to (B, d_out). ``spectral_norm`` wraps every linear layer (critic
    use: each layer then has spectral norm ≈ 1, so the network is ≈ 1-Lipschitz)."""
    if min(d_in, d_out, hidden, depth) < 1:
        raise ValueError("d_in, d_out, hidden and depth must be >= 1")
    layers: list[nn.Module] = []
    width = d_in
    for _ in range(depth):
        layers += [_maybe_sn(nn.Linear(width, hidden), spectral_norm), nn.LeakyReLU(slope)]
        width = hidden
    layers.append(_maybe_sn(nn.Linear(width, d_out), spectral_norm))
    return nn.Sequential(*layers)


class DCGANGenerator(nn.Module):
    """DCGAN-style generator for 8×8 images (Radford et al. 2016, scaled down).

    ``z`` (B, z_dim) → linear to (4C, 2, 2) → two stride-2 transposed convolutions (2→4→8) with
    batch norm and ReLU → 3×3 convolution → tanh: (B, 1, 8, 8) in [-1, 1].
    """

    def __init__(self, z_dim: int = 32, channels: int = 32):
        super().__init__()
        if z_dim < 1 or channels < 1:
            raise ValueError("z_dim and channels must be >= 1")
        c = channels
        self.z_dim = z_dim
        self.project = nn.Linear(z_dim, 4 * c * 2 * 2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(4 * c), nn.ReLU(),
            nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1),  # (B, 2C, 4, 4)
            nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1),  # (B, C, 8, 8)
            nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 1, 3, padding=1), nn.Tanh())
        self.channels = c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], 4 * self.channels, 2, 2)  # (B, 4C, 2, 2)
        return self.body(h)


class DCGANDiscriminator(nn.Module):
    """DCGAN-style discriminator / critic for 8×8 images: (B, 1, 8, 8) → (B, 1) logits/scores.

    3×3 convolution, then two stride-2 convolutions (8→4→2) with LeakyReLU(0.2) and a linear
    head. No batch norm: it couples the samples of a batch, which breaks the per-sample
    gradient penalty of WGAN-GP (Gulrajani et al. 2017, Sec. 4), so every critic here goes
    without. ``spectral_norm`` wraps every layer.
    """

    def __init__(self, channels: int = 32, spectral_norm: bool = False):
        super().__init__()
        if channels < 1:
            raise ValueError("channels must be >= 1")
        c, sn = channels, spectral_norm
        self.net = nn.Sequential(
            _maybe_sn(nn.Conv2d(1, c, 3, padding=1), sn), nn.LeakyReLU(0.2),
            _maybe_sn(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), sn), nn.LeakyReLU(0.2),
            _maybe_sn(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1), sn), nn.LeakyReLU(0.2),
            nn.Flatten(), _maybe_sn(nn.Linear(4 * c * 2 * 2, 1), sn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ----------------------------------------------------------------------- training loop --
def _check_finite(loss: torch.Tensor, who: str, step: int) -> None:
    if not bool(torch.isfinite(loss.detach()).all()):
        raise NonFiniteLossError(
            f"{who} loss is {float(loss.detach())} at step {step}: training stopped (lower the "
            f"learning rate, or use spectral normalisation or a gradient penalty)")


def train_adversarial(generator: nn.Module, critic: nn.Module,
                      sample_real: Callable[[], torch.Tensor],
                      sample_noise: Callable[[], torch.Tensor],
                      critic_objective: CriticObjective, generator_objective: GeneratorObjective,
                      g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer,
                      steps: int, *, n_critic: int = 1,
                      after_critic_step: Callable[[nn.Module], None] | None = None,
                      callback: Callable[[int, dict[str, float]], None] | None = None,
                      progress: Callable[[Iterable, str], Iterable] | None = None,
                      ) -> dict[str, list[float]]:
    """Alternate ``n_critic`` critic steps and one generator step, ``steps`` times.

    The loop of Goodfellow et al. (2014, Algorithm 1) and of Arjovsky et al. (2017,
    Algorithm 1) / Gulrajani et al. (2017, Algorithm 1), which differ only in the objectives
    and in ``n_critic``/``after_critic_step`` (weight clipping).

    Parameters
    ----------
    generator, critic : nn.Module
        ``G: (B, z_dim) → (B, *x_shape)`` and ``D: (B, *x_shape) → (B, 1)``.
    sample_real, sample_noise : callables with no argument
        A fresh data batch (B, *x_shape) and a fresh noise batch (B, z_dim) per call, on the
        networks' device.
    critic_objective, generator_objective
        See :func:`gan_objectives` and :func:`deepnotes.generative.wgan.wgan_objectives`.
    g_optimizer, d_optimizer : torch.optim.Optimizer
        Their learning rates may differ (two time-scale update rule, TTUR).
    steps : int
        Generator updates.
    n_critic : int
        Critic updates per generator update (5 for WGAN, 1 for the GANs here).
    after_critic_step : callable(critic), optional
        Run after every critic update (WGAN's weight clipping).
    callback : callable(step, metrics), optional
        Called after every generator step with that step's ``d_loss``, ``g_loss`` and the
        critic objective's metrics (of its last update); experiments evaluate and log here, so
        what they wrote survives a later failure.
    progress : callable(iterable, description), optional
        Wraps the step range (e.g. ``run.track``).

    Returns
    -------
    dict name → list of per-step floats (``d_loss``, ``g_loss`` and the critic's metrics).

    Raises
    ------
    NonFiniteLossError
        When a critic or generator loss is NaN or inf; the message names the step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
        raise ValueError(f"n_critic must be an int >= 1, got {n_critic!r}")
    history: dict[str, list[float]] = {}
    d_params = [p for p in critic.parameters() if p.requires_grad]
    steps_iter: Iterable[int] = range(steps)
    if progress is not None:
        steps_iter = progress(steps_iter, "adversarial training")
    generator.train()
    critic.train()
    for step in steps_iter:
        for _ in range(n_critic):
            real = sample_real()
            with torch.no_grad():
                fake = generator(sample_noise())
            d_loss, metrics = critic_objective(critic, real, fake)
            _check_finite(d_loss, "critic (discriminator)", step)
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
            if after_critic_step is not None:
                after_critic_step(critic)
        # the generator step must not accumulate gradients in the critic
        for p in d_params:
            p.requires_grad_(False)
        try:
            g_loss = generator_objective(critic, generator(sample_noise()))
            _check_finite(g_loss, "generator", step)
            g_optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
            g_optimizer.step()
        finally:
            for p in d_params:
                p.requires_grad_(True)
        record = {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()), **metrics}
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        if callback is not None:
            callback(step, record)
    return history


# ----------------------------------------------------------------- mode-collapse metrics --
def mode_statistics(samples, centers, std: float, *, n_std: float = 3.0,
                    min_count: int | None = None) -> dict[str, float]:
    """Mode coverage of ``samples`` on a mixture of isotropic Gaussians (VEEGAN's protocol).

    A sample is *high quality* when it lies within ``n_std · std`` of its nearest centre; a
    mode is *covered* when at least ``min_count`` high-quality samples are nearest to it
    (default: a fifth of the ``n / K`` a perfect generator puts there, at least 1 — PacGAN's
    20 of 2500 samples for K = 25).

    Parameters
    ----------
    samples : array_like, shape (n, 2)
    centers : array_like, shape (K, 2)
    std : float
        The components' standard deviation (data units).

    Returns
    -------
    dict with ``modes_covered`` (count), ``high_quality_fraction`` (in [0, 1]) and
    ``mode_kl_nats``: ``KL(q ‖ uniform)`` of the distribution ``q`` of high-quality samples over
    modes (0 when they are spread evenly, ``log K`` when all sit in one mode; ``nan`` when no
    sample is high quality).
    """
    x = np.asarray(samples, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1] or len(x) == 0 or len(c) == 0:
        raise ValueError(f"samples (n, d) and centers (K, d) must be non-empty with the same d, "
                         f"got {x.shape} and {c.shape}")
    if not std > 0 or not n_std > 0:
        raise ValueError(f"std and n_std must be > 0, got {std!r}, {n_std!r}")
    k = len(c)
    if min_count is None:
        min_count = max(1, math.ceil(0.2 * len(x) / k))
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)  # (n, K)
    nearest = d2.argmin(1)
    good = np.sqrt(d2[np.arange(len(x)), nearest]) <= n_std * std
    counts = np.bincount(nearest[good], minlength=k)
    total = counts.sum()
    if total > 0:
        q = counts / total
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = float(np.where(q > 0, q * np.log(q * k), 0.0).sum())
    else:
        kl = float("nan")
    return {"modes_covered": float((counts >= min_count).sum()),
            "high_quality_fraction": float(good.mean()), "mode_kl_nats": kl}
