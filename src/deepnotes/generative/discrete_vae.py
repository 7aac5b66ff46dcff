"""A VAE with categorical latents trained through the Gumbel-softmax relaxation.

Model (post ``reparameterization``, Eqs. 12-15): ``N`` independent categorical latents with ``K``
classes each, a uniform prior ``p(z) = Π_n 1/K``, a Bernoulli decoder ``p(x | z)`` over ``D``
binary pixels and an amortised mean-field posterior ``q(z | x) = Π_n Categorical(softmax(θ_n(x)))``.

Training (Jang et al. 2017, §3): the decoder sees a relaxed sample ``y = softmax((θ + g)/τ)``
(or its straight-through one-hot, ``hard=True``); the KL term is the exact categorical
``KL(q(z|x) || p(z))``. :meth:`CategoricalVAE.loss_reinforce` trains the same model with the
score-function estimator instead (discrete samples, leave-one-out baseline), for comparison.

Evaluation uses only discrete samples, so the reported ELBO (Eq. 13) and importance-weighted
bound (Eq. 15; Burda et al. 2016) are true lower bounds on ``log p(x)`` of the discrete model;
for small ``K^N`` :meth:`CategoricalVAE.exact_log_likelihood` sums over every latent
configuration.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F

from deepnotes.generative.gumbel import check_tau, gumbel_max_sample, gumbel_softmax

MAX_ENUMERATION = 1 << 16
"""Largest number of latent configurations K**N that the exact methods will enumerate."""


def _mlp(d_in: int, hidden: int, n_hidden: int, d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_hidden):
        layers += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden if n_hidden else d_in, d_out))
    return nn.Sequential(*layers)


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < math.inf:
        raise ValueError(f"beta (KL weight) must be a finite number >= 0, got {beta!r}")
    return float(beta)


def anneal_temperature(step: int, *, tau0: float = 1.0, tau_min: float = 0.5,
                       rate: float = 1e-4) -> float:
    """Exponential temperature schedule ``τ = max(τ_min, τ0 exp(-r t))`` (Jang et al. 2017, §4)."""
    check_tau(tau0, "anneal_temperature")
    check_tau(tau_min, "anneal_temperature")
    if step < 0 or rate < 0:
        raise ValueError(f"anneal_temperature: step and rate must be >= 0, got {step}, {rate}")
    return max(tau_min, tau0 * math.exp(-rate * step))


class CategoricalVAE(nn.Module):
    """Bernoulli-decoder VAE with ``n_latents`` categorical latents of ``n_classes`` each.

    Parameters
    ----------
    dim : int
        Number of binary pixels D (64 for the 8×8 digits).
    n_latents, n_classes : int
        N latents with K classes (K ≥ 2): ``N log K`` nats of capacity (20 × 10 → 46 nats).
    hidden : int
        Width of the encoder and decoder MLPs.
    n_hidden : int
        Hidden layers of each MLP.
    """

    def __init__(self, dim: int = 64, n_latents: int = 20, n_classes: int = 10, hidden: int = 256,
                 n_hidden: int = 2):
        super().__init__()
        for name, v, lo in (("dim", dim, 1), ("n_latents", n_latents, 1),
                            ("n_classes", n_classes, 2), ("hidden", hidden, 1),
                            ("n_hidden", n_hidden, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"CategoricalVAE: {name} must be an int >= {lo}, got {v!r}")
        self.dim, self.n_latents, self.n_classes = dim, n_latents, n_classes
        self.encoder = _mlp(dim, hidden, n_hidden, n_latents * n_classes)
        self.decoder = _mlp(n_latents * n_classes, hidden, n_hidden, dim)

    # ---- pieces -----------------------------------------------------------------------------
    def _check_x(self, x, who: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{who}: x must be a floating-point torch.Tensor")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{who}: x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if bool(torch.isnan(x).any()):
            raise ValueError(f"{who}: x contains NaN")
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(f"{who}: x must be binary (0/1) for the Bernoulli decoder")
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior logits θ(x), shape (B, N, K)."""
        x = self._check_x(x, "CategoricalVAE.encode")
        return self.encoder(2.0 * x - 1.0).view(-1, self.n_latents, self.n_classes)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of ``p(x | z)``, shape (..., D), for ``z`` of shape (..., N, K).

        ``z`` may be one-hot (the model) or relaxed (training): the decoder is the same network.
        """
        if z.shape[-2:] != (self.n_latents, self.n_classes):
            raise ValueError(f"CategoricalVAE.decode: z must end in ({self.n_latents}, "
                             f"{self.n_classes}), got {tuple(z.shape)}")
        return self.decoder(z.flatten(-2))

    @staticmethod
    def log_px_given_z(x: torch.Tensor, x_logits: torch.Tensor) -> torch.Tensor:
        """``log p(x | z) = Σ_d [x_d log σ(l_d) + (1 - x_d) log σ(-l_d)]``, shape (...)."""
        x, x_logits = torch.broadcast_tensors(x, x_logits)
        return -F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").sum(-1)

    def kl_to_prior(self, logits: torch.Tensor) -> torch.Tensor:
        """Exact ``KL(q(z|x) || uniform) = Σ_n [Σ_k q_nk log q_nk + log K]``, (B,) (Eq. 14)."""
        log_q = torch.log_softmax(logits, dim=-1)
        return (log_q.exp() * log_q).sum((-1, -2)) + self.n_latents * math.log(self.n_classes)

    # ---- training objective -------------------------------------------------------------------
    def loss(self, x: torch.Tensor, tau: float, *, hard: bool = False, beta: float = 1.0,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean relaxed negative ELBO over the batch (Eq. 16), to minimise.

        ``-log p(x | y) + β KL(q(z|x) || p(z))`` with ``y`` a Gumbel-softmax sample at
        temperature ``tau`` (straight-through one-hot if ``hard``). ``beta < 1`` is KL warm-up
        (Bowman et al. 2016; Sønderby et al. 2016): the objective is the ELBO only at ``β = 1``.
        Returns the scalar loss and its parts (floats, nats per example; KL without ``β``).
        """
        beta = _check_beta(beta)
        logits = self.encode(x)
        y = gumbel_softmax(logits, tau, hard=hard, generator=generator)  # (B, N, K)
        rec = self.log_px_given_z(x, self.decode(y))
        kl = self.kl_to_prior(logits)
        loss = (beta * kl - rec).mean()
        parts = {"recon_nats": -rec.detach().mean().item(), "kl_nats": kl.detach().mean().item()}
        return loss, parts

    def loss_reinforce(self, x: torch.Tensor, n_samples: int = 2, *, beta: float = 1.0,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor,
                                                                          dict[str, float]]:
        """Negative ELBO surrogate whose encoder gradient is the score-function estimator (Eq. 17).

        Draws ``n_samples ≥ 2`` discrete ``z ~ q(z|x)`` per example. The decoder gets the exact
        gradient of ``log p(x|z)`` at those ``z``; the encoder gets
        ``(log p(x|z_s) - b_s) ∇ log q(z_s|x)`` with the leave-one-out baseline ``b_s`` (mean of
        the other samples' ``log p(x|z)``), plus the exact gradient of the analytic KL. The
        returned loss has the value of the Monte Carlo negative ELBO (at ``beta = 1``; ``beta``
        weighs the KL as in :meth:`loss`).
        """
        beta = _check_beta(beta)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
            raise ValueError(f"loss_reinforce: n_samples must be an int >= 2 (leave-one-out "
                             f"baseline), got {n_samples!r}")
        logits = self.encode(x)  # (B, N, K)
        idx = gumbel_max_sample(logits, n_samples, generator=generator)  # (S, B, N)
        z = F.one_hot(idx, self.n_classes).to(x.dtype)
        log_q = torch.log_softmax(logits, dim=-1)
        log_qz = (z * log_q).sum((-1, -2))  # (S, B), differentiable in the encoder
        rec = self.log_px_given_z(x, self.decode(z))  # (S, B), differentiable in the decoder
        with torch.no_grad():
            signal = rec - (rec.sum(0) - rec) / (n_samples - 1)
        kl = self.kl_to_prior(logits)
        # value: mean of -rec + kl; gradient: decoder pathwise, encoder score function + KL
        surrogate = -(rec + signal * (log_qz - log_qz.detach())).mean(0) + beta * kl
        parts = {"recon_nats": -rec.detach().mean().item(), "kl_nats": kl.detach().mean().item()}
        return surrogate.mean(), parts

    # ---- evaluation: bounds on log p(x) of the discrete model ---------------------------------
    def _log_weights(self, x: torch.Tensor, n_samples: int,
                     generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Discrete samples z ~ q(z|x): ``log p(x|z)`` and ``log p(z) - log q(z|x)``, (S, B)."""
        logits = self.encode(x)  # (B, N, K)
        idx = gumbel_max_sample(logits, n_samples, generator=generator)  # (S, B, N)
        z = F.one_hot(idx, self.n_classes).to(x.dtype)
        log_q = torch.log_softmax(logits, dim=-1)
        log_qz = torch.gather(log_q.expand(n_samples, -1, -1, -1), -1,
                              idx.unsqueeze(-1)).squeeze(-1).sum(-1)  # (S, B)
        log_pz = -self.n_latents * math.log(self.n_classes)
        return self.log_px_given_z(x, self.decode(z)), log_pz - log_qz

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, n_samples: int = 1, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Monte Carlo ELBO ``E_q[log p(x|z)] - KL(q||p)`` per example, shape (B,) (Eq. 13).

        The reconstruction term is averaged over ``n_samples`` discrete draws; the KL is exact.
        """
        x = self._check_x(x, "CategoricalVAE.elbo")
        rec, _ = self._log_weights(x, n_samples, generator)
        return rec.mean(0) - self.kl_to_prior(self.encode(x))

    @torch.no_grad()
    def iwae_bound(self, x: torch.Tensor, n_samples: int, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Importance-weighted bound ``log (1/S) Σ_s p(x, z_s) / q(z_s|x)``, shape (B,) (Eq. 15).

        Its expectation increases with ``S`` towards ``log p(x)`` (Burda et al. 2016).
        """
        x = self._check_x(x, "CategoricalVAE.iwae_bound")
        rec, log_ratio = self._log_weights(x, n_samples, generator)
        return torch.logsumexp(rec + log_ratio, dim=0) - math.log(n_samples)

    def _all_latents(self, dtype) -> torch.Tensor:
        n_conf = self.n_classes ** self.n_latents
        if n_conf > MAX_ENUMERATION:
            raise ValueError(f"exact methods enumerate K**N = {n_conf} latent configurations; "
                             f"the limit is {MAX_ENUMERATION}")
        idx = torch.tensor(list(itertools.product(range(self.n_classes), repeat=self.n_latents)))
        return F.one_hot(idx, self.n_classes).to(dtype)  # (K**N, N, K)

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x) = log Σ_z p(z) p(x|z)`` by enumeration (needs K**N ≤ 65536), shape (B,)."""
        x = self._check_x(x, "CategoricalVAE.exact_log_likelihood")
        z = self._all_latents(x.dtype)
        log_px_z = self.log_px_given_z(x.unsqueeze(1), self.decode(z).unsqueeze(0))  # (B, K^N)
        return torch.logsumexp(log_px_z, dim=1) - self.n_latents * math.log(self.n_classes)

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """ELBO with the expectation over ``q`` summed exactly (Eq. 13), shape (B,).

        Differentiable (no sampling): the reference gradient for the estimators in tests."""
        x = self._check_x(x, "CategoricalVAE.exact_elbo")
        z = self._all_latents(x.dtype)  # (C, N, K)
        log_q = torch.log_softmax(self.encode(x), dim=-1)  # (B, N, K)
        log_qz = torch.einsum("bnk,cnk->bc", log_q, z)
        log_px_z = self.log_px_given_z(x.unsqueeze(1), self.decode(z).unsqueeze(0))
        log_pz = -self.n_latents * math.log(self.n_classes)
        return (log_qz.exp() * (log_px_z + log_pz - log_qz)).sum(1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixel probabilities ``σ(decoder(z))`` for ``z`` drawn from the uniform prior, (n, D)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"CategoricalVAE.sample: n must be a positive int, got {n!r}")
        param = next(self.parameters())
        idx = torch.randint(self.n_classes, (n, self.n_latents), generator=generator,
                            device=param.device)
        return torch.sigmoid(self.decode(F.one_hot(idx, self.n_classes).to(param.dtype)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities decoded from the posterior mode ``argmax θ(x)``, shape (B, D)."""
        idx = self.encode(x).argmax(-1)
        return torch.sigmoid(self.decode(F.one_hot(idx, self.n_classes).to(x.dtype)))
