"""Vector quantisation: VQ-VAE, VQGAN's additions, and an autoregressive prior over the codes.

van den Oord et al. (2017), "Neural Discrete Representation Learning" (VQ-VAE); Razavi et al.
(2019), "Generating Diverse High-Fidelity Images with VQ-VAE-2" (EMA codebook, Appendix A of the
2017 paper); Esser et al. (2021), "Taming Transformers for High-Resolution Image Synthesis"
(VQGAN). Equation numbers are those of the post ``vqgan``.

An encoder maps an image to a grid of vectors ``z_e`` (B, D, H, W); each vector is replaced by its
nearest codebook entry ``e_k`` (Eq. 1), the decoder sees the quantised grid ``z_q``, and gradients
skip the non-differentiable ``argmin`` by the straight-through estimator (Eq. 2). The loss (Eq. 3)
adds to the reconstruction a codebook term that pulls codes towards the encoder outputs and a
commitment term, weighted by ``β``, that pulls the encoder towards its codes.

- :class:`VectorQuantizer`: nearest code, straight-through gradient, codebook and commitment
  losses; the EMA codebook update (:func:`ema_codebook_update`, Eqs. 4-5) as an option;
  dead-code restarts (:func:`restart_dead_codes`); :func:`perplexity` and :func:`codebook_usage`
  (Eq. 6).
- :class:`VQAutoencoder`: encoder, quantizer and decoder for 8×8 images (a 4×4 code grid).
- VQGAN: :class:`PatchDiscriminator` (one logit per 6×6 patch), :func:`feature_maps` and
  :func:`perceptual_distance` (a perceptual-style loss from a classifier's activations, Eq. 7),
  :func:`adaptive_weight` (``λ = ‖∇L_rec‖ / (‖∇L_GAN‖ + δ)`` at the decoder's last layer, Eq. 8).
  The adversarial losses themselves are :mod:`deepnotes.generative.gan`'s.
- :class:`CodePrior`: a small causal transformer over the code grid in raster order
  (``log p(s) = Σ_i log p(s_i | s_<i)``, Eq. 9), its exact :meth:`CodePrior.log_prob` and ancestral
  :meth:`CodePrior.sample` ("compress, then generate"); :func:`code_bits_per_dim` (Eq. 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from deepnotes.nn.attention import causal_mask


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _unit_interval(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _float_tensor(name: str, value, ndim: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    return value


def _indices(name: str, value, n_codes: int) -> torch.Tensor:
    if (not isinstance(value, torch.Tensor) or value.is_floating_point()
            or value.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer torch.Tensor")
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= n_codes):
        raise ValueError(f"{name} must lie in [0, {n_codes}), got [{int(value.min())}, "
                         f"{int(value.max())}]")
    return value.long()


# ------------------------------------------------------------------- quantiser pieces --
def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook entry of each row of ``z`` (Eq. 1), in squared L2.

    Parameters
    ----------
    z : Tensor, shape (N, D)
    codebook : Tensor, shape (K, D)

    Returns
    -------
    Tensor, shape (N,), int64 in [0, K). Ties go to the lowest index.
    """
    z = _float_tensor("z", z, 2)
    codebook = _float_tensor("codebook", codebook, 2)
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z (N, {z.shape[1]}) and codebook (K, {codebook.shape[1]}) must "
                         f"share D")
    # ||z - e||² = ||z||² - 2 z·e + ||e||²; the ||z||² term does not change the argmin
    d2 = (codebook * codebook).sum(1)[None, :] - 2 * z @ codebook.T  # (N, K)
    return d2.argmin(1)


def straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """``z_e + sg(z_q − z_e)`` (Eq. 2): the value of ``z_q``, the gradient of the identity.

    The decoder's gradient with respect to its input passes to ``z_e`` unchanged; no gradient
    reaches ``z_q`` (the codebook learns through Eq. 3's codebook term or the EMA update).
    """
    return z_e + (z_q - z_e).detach()


def perplexity(indices: torch.Tensor, n_codes: int) -> torch.Tensor:
    """``exp(H(p))`` of the empirical code distribution ``p_k = n_k / N`` (Eq. 6), in codes.

    1 when every vector uses one code, ``n_codes`` when all codes are used equally often.
    ``indices``: any shape, integers in [0, n_codes). Returns a float64 scalar tensor.
    """
    n_codes = _positive_int("n_codes", n_codes)
    indices = _indices("indices", indices, n_codes).flatten()
    if indices.numel() == 0:
        raise ValueError("indices must not be empty")
    p = torch.bincount(indices, minlength=n_codes).double() / indices.numel()
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()  # 0·log 0 = 0
    return entropy.exp()


def codebook_usage(indices: torch.Tensor, n_codes: int) -> float:
    """Share of the ``n_codes`` codes that at least one of ``indices`` uses, in [0, 1]."""
    n_codes = _positive_int("n_codes", n_codes)
    indices = _indices("indices", indices, n_codes).flatten()
    return float((torch.bincount(indices, minlength=n_codes) > 0).double().mean())


def ema_codebook_update(cluster_size: torch.Tensor, embed_sum: torch.Tensor, z: torch.Tensor,
                        indices: torch.Tensor, decay: float, eps: float = 1e-5,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EMA step of the codebook (Eqs. 4-5; van den Oord et al. 2017, Appendix A.1).

    With ``n_k`` the number of rows of ``z`` assigned to code ``k`` and ``s_k`` their sum::

        N_k ← γ N_k + (1 − γ) n_k,      m_k ← γ m_k + (1 − γ) s_k,      e_k = m_k / Ñ_k

    where ``Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j`` is Laplace smoothing, which keeps a
    code that received no vector for long from dividing by zero.

    Parameters
    ----------
    cluster_size : Tensor, shape (K,)
        ``N_k`` before the step.
    embed_sum : Tensor, shape (K, D)
        ``m_k`` before the step.
    z : Tensor, shape (N, D)
        Encoder outputs of the batch (detached).
    indices : Tensor, shape (N,)
        Their codes.
    decay : float
        ``γ`` in [0, 1).
    eps : float
        ``ε`` > 0.

    Returns
    -------
    (cluster_size, embed_sum, codebook) after the step: shapes (K,), (K, D), (K, D). New tensors;
    the inputs are not modified.
    """
    cluster_size = _float_tensor("cluster_size", cluster_size, 1)
    embed_sum = _float_tensor("embed_sum", embed_sum, 2)
    z = _float_tensor("z", z, 2)
    decay = _unit_interval("decay", decay)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    k = cluster_size.shape[0]
    if embed_sum.shape[0] != k or embed_sum.shape[1] != z.shape[1]:
        raise ValueError(f"embed_sum must have shape ({k}, {z.shape[1]}), got "
                         f"{tuple(embed_sum.shape)}")
    indices = _indices("indices", indices, k).flatten()
    if indices.numel() != z.shape[0]:
        raise ValueError(f"indices ({indices.numel()}) and z ({z.shape[0]}) must have one entry "
                         f"per row")
    one_hot = F.one_hot(indices, k).to(z.dtype)  # (N, K)
    n = one_hot.sum(0)  # (K,)
    s = one_hot.T @ z  # (K, D)
    new_size = decay * cluster_size + (1 - decay) * n
    new_sum = decay * embed_sum + (1 - decay) * s
    total = new_size.sum()
    smoothed = (new_size + eps) / (total + k * eps) * total
    return new_size, new_sum, new_sum / smoothed[:, None]


def restart_dead_codes(codebook: torch.Tensor, dead: torch.Tensor, z: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Move every dead code onto an encoder output of the batch drawn at random.

    A code nobody picks receives no gradient (codebook loss) and no update (EMA): it stays dead.
    Restarting it on a vector the encoder actually produces puts it where the data are (the
    "random restart" of Dhariwal et al. 2020, Jukebox, Sec. 3.2).

    Parameters
    ----------
    codebook : Tensor, shape (K, D)
    dead : Tensor, shape (K,), bool
        Which codes to restart.
    z : Tensor, shape (N, D)
        Encoder outputs to draw from (with replacement).
    generator : torch.Generator, optional
        For the draw (default torch's global generator); on ``z``'s device.

    Returns
    -------
    Tensor, shape (K, D): a new codebook, equal to ``codebook`` on the live rows.
    """
    codebook = _float_tensor("codebook", codebook, 2)
    z = _float_tensor("z", z, 2)
    if not isinstance(dead, torch.Tensor) or dead.dtype != torch.bool or dead.shape != (
            codebook.shape[0],):
        raise TypeError(f"dead must be a bool tensor of shape ({codebook.shape[0]},)")
    if z.shape[0] == 0 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z must be (N >= 1, {codebook.shape[1]}), got {tuple(z.shape)}")
    out = codebook.clone()
    n_dead = int(dead.sum())
    if n_dead:
        pick = torch.randint(0, z.shape[0], (n_dead,), generator=generator, device=z.device)
        out[dead] = z[pick].to(out.dtype)
    return out


@dataclass
class Quantized:
    """What :class:`VectorQuantizer` returns.

    Attributes
    ----------
    z_q : Tensor, shape (B, D, H, W)
        Quantised grid with the straight-through gradient (Eq. 2).
    indices : Tensor, shape (B, H, W), int64
        The codes.
    loss : Tensor, shape ()
        ``codebook_loss + β · commitment_loss`` (Eq. 3 without the reconstruction); with the EMA
        update the codebook term is left out (the codes move by Eq. 5 instead).
    codebook_loss, commitment_loss : Tensor, shape ()
        ``‖sg(z_e) − e‖²`` and ``‖z_e − sg(e)‖²``, means over all entries.
    perplexity : float
        Of the batch's codes (Eq. 6).
    usage : float
        Share of codes the batch uses.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: float
    usage: float


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with straight-through gradient (van den Oord et al. 2017).

    Parameters
    ----------
    n_codes : int
        Codebook size ``K``.
    dim : int
        Code dimension ``D``.
    beta : float
        Commitment weight ``β`` of Eq. 3 (the paper's 0.25).
    ema : bool
        Update the codebook by exponential moving averages (Eqs. 4-5) instead of the codebook loss;
        the codebook is then not a trainable parameter.
    decay : float
        ``γ`` of the EMA update.
    eps : float
        Laplace smoothing ``ε`` of the EMA update.
    restart_threshold : float, optional
        Enables dead-code restarts: in training, a code whose running count of assigned vectors
        per batch (an EMA with ``usage_decay``) falls below this is moved onto a random encoder
        output of the batch (:func:`restart_dead_codes`) and its count reset to the batch's
        average count per code.
    usage_decay : float
        Decay of that running count.

    The codebook starts uniform in ``[-1/K, 1/K]`` (as the reference implementations), so at the
    start the codes sit near the origin, away from most encoder outputs, and only a few win the
    ``argmin``: without restarts the others may never be picked (the collapse the post shows).
    """

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25, *, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, restart_threshold: float | None = None,
                 usage_decay: float = 0.99):
        super().__init__()
        self.n_codes = _positive_int("n_codes", n_codes)
        self.dim = _positive_int("dim", dim)
        if isinstance(beta, bool) or not isinstance(beta, int | float) or beta < 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        self.beta = float(beta)
        self.ema = bool(ema)
        self.decay = _unit_interval("decay", decay)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        if restart_threshold is not None and not restart_threshold > 0:
            raise ValueError(f"restart_threshold must be > 0 or None, got {restart_threshold!r}")
        self.restart_threshold = restart_threshold
        self.usage_decay = _unit_interval("usage_decay", usage_decay)
        init = torch.empty(n_codes, dim).uniform_(-1 / n_codes, 1 / n_codes)
        self.codebook = nn.Parameter(init, requires_grad=not self.ema)
        # EMA state starts as "each code has seen one vector, equal to itself", so e = m / N
        # holds before the first update
        self.register_buffer("cluster_size", torch.ones(n_codes))
        self.register_buffer("embed_sum", init.clone())
        # running count of vectors per batch assigned to each code (for restarts); starts high
        # enough that no code is declared dead before it had a chance
        self.register_buffer("usage_count", torch.full((n_codes,), float("inf")))
        self.restarts = 0

    def forward(self, z_e: torch.Tensor) -> Quantized:
        """Quantise ``z_e`` (B, D, H, W); in training mode also update the codebook (EMA) and
        restart dead codes."""
        z_e = _float_tensor("z_e", z_e, 4)
        if z_e.shape[1] != self.dim:
            raise ValueError(f"z_e must have {self.dim} channels, got {z_e.shape[1]}")
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B·H·W, D)
        idx = nearest_code(flat.detach(), self.codebook.detach())  # (B·H·W,)
        # the codes of this batch are read before the EMA update / restarts move them
        e = F.embedding(idx, self.codebook.clone())  # (B·H·W, D), gradient to the codebook
        z_q = e.view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, H, W)
        if self.training:
            self._update(flat.detach(), idx)
        codebook_loss = F.mse_loss(z_q, z_e.detach())
        commitment_loss = F.mse_loss(z_e, z_q.detach())
        loss = self.beta * commitment_loss + (0 if self.ema else codebook_loss)
        return Quantized(straight_through(z_e, z_q), idx.view(b, h, w), loss, codebook_loss,
                         commitment_loss, float(perplexity(idx, self.n_codes)),
                         codebook_usage(idx, self.n_codes))

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        if self.ema:
            size, total, book = ema_codebook_update(self.cluster_size, self.embed_sum, flat, idx,
                                                    self.decay, self.eps)
            self.cluster_size.copy_(size)
            self.embed_sum.copy_(total)
            self.codebook.copy_(book)
        if self.restart_threshold is None:
            return
        counts = torch.bincount(idx, minlength=self.n_codes).to(self.usage_count.dtype)
        fresh = torch.isinf(self.usage_count)
        self.usage_count.copy_(torch.where(
            fresh, counts, self.usage_decay * self.usage_count + (1 - self.usage_decay) * counts))
        # a code is dead when its running count is low; the first step only sets the counts
        dead = (self.usage_count < self.restart_threshold) & ~fresh
        if bool(dead.any()):
            new = restart_dead_codes(self.codebook.detach(), dead, flat)
            self.codebook.copy_(new)
            # the restarted code starts as a fresh EMA cluster of one vector, itself
            self.cluster_size[dead] = 1.0
            self.embed_sum[dead] = new[dead]
            # as if it had the average share, so it has a few hundred steps to win vectors
            self.usage_count[dead] = idx.numel() / self.n_codes
            self.restarts += int(dead.sum())

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (B, D, H, W) of an index grid (B, H, W)."""
        indices = _indices("indices", indices, self.n_codes)
        if indices.ndim != 3:
            raise ValueError(f"indices must be (B, H, W), got shape {tuple(indices.shape)}")
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- networks --
class VQAutoencoder(nn.Module):
    """Encoder, :class:`VectorQuantizer` and decoder for 8×8 single-channel images.

    Encoder: 3×3 convolution (C), a stride-2 4×4 convolution to 4×4 (C), a 1×1 convolution to
    ``D``; decoder: the mirror image with a stride-2 transposed convolution, ending in a 3×3
    convolution to one channel (the "last layer" of :func:`adaptive_weight`). Images in [-1, 1];
    the decoder's output is not squashed (clamp it for display).

    Parameters
    ----------
    quantizer : VectorQuantizer
    channels : int
        Hidden width ``C``.
    """

    def __init__(self, quantizer: VectorQuantizer, channels: int = 32):
        super().__init__()
        if not isinstance(quantizer, VectorQuantizer):
            raise TypeError(f"quantizer must be a VectorQuantizer, got {type(quantizer).__name__}")
        c, d = _positive_int("channels", channels), quantizer.dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 4, stride=2, padding=1), nn.SiLU(),  # (B, C, 4, 4)
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, d, 1))  # (B, D, 4, 4)
        self.quantizer = quantizer
        self.decoder = nn.Sequential(
            nn.Conv2d(d, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.SiLU(),  # (B, C, 8, 8)
            nn.Conv2d(c, 1, 3, padding=1))

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight, where VQGAN balances its losses (Eq. 8)."""
        return self.decoder[-1].weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """Reconstruction (B, 1, 8, 8) of ``x`` (B, 1, 8, 8) and the quantiser's output."""
        q = self.quantizer(self.encoder(x))
        return self.decoder(q.z_q), q

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code grid (B, 4, 4) of images ``x`` (B, 1, 8, 8) (no codebook update)."""
        z = self.encoder(x)
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        return nearest_code(flat, self.quantizer.codebook).view(b, h, w)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 8, 8) of code grids ``indices`` (B, 4, 4)."""
        return self.decoder(self.quantizer.lookup(indices))


class PatchDiscriminator(nn.Module):
    """A patch discriminator for 8×8 images (Isola et al. 2017, as VQGAN uses it): one logit per
    patch instead of one per image.

    3×3 convolution (C), stride-2 4×4 convolution (2C) and a 1×1 convolution to one channel, with
    LeakyReLU(0.2): (B, 1, 8, 8) → logits (B, 1, 4, 4), each seeing a 6×6 patch (receptive field
    3, then 3 + 3·1 = 6 with jump 2; the 1×1 layer adds nothing). No normalisation layer.
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        c = _positive_int("channels", channels)
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, 2C, 4, 4)
            nn.Conv2d(2 * c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------- VQGAN losses --
def feature_maps(net: nn.Module, x: torch.Tensor,
                 activations: tuple[type, ...] = (nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.GELU),
                 ) -> list[torch.Tensor]:
    """Activations of a feature network after each of its activation layers.

    ``net`` is an ``nn.Sequential`` or has one as ``net.body`` (as
    :class:`deepnotes.nn.digits_models.FeatureNet`); ``x`` is its input. Returns the output of
    every module in ``activations`` (shapes (B, C_l, H_l, W_l) or (B, C_l)), gradients kept.
    """
    body = getattr(net, "body", net)
    if not isinstance(body, nn.Sequential):
        raise TypeError("net must be an nn.Sequential or have one as .body")
    out, h = [], x
    for layer in body:
        h = layer(h)
        if isinstance(layer, activations):
            out.append(h)
    if not out:
        raise ValueError("net has no activation layer to take features from")
    return out


def perceptual_distance(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor],
                        eps: float = 1e-10) -> torch.Tensor:
    """Per-image perceptual-style distance (Eq. 7; LPIPS of Zhang et al. 2018 without its learned
    per-channel weights): ``Σ_l mean_{h,w} ‖f̂_l(a) − f̂_l(b)‖²`` with ``f̂`` each position's
    feature vector scaled to unit length over channels.

    ``feats_a``, ``feats_b``: lists from :func:`feature_maps`, same shapes. Returns shape (B,).
    """
    if len(feats_a) != len(feats_b) or not feats_a:
        raise ValueError("feats_a and feats_b must be non-empty lists of the same length")
    total = 0
    for fa, fb in zip(feats_a, feats_b, strict=True):
        if fa.shape != fb.shape:
            raise ValueError(f"feature shapes differ: {tuple(fa.shape)} and {tuple(fb.shape)}")
        na = fa / (fa.norm(dim=1, keepdim=True) + eps)
        nb = fb / (fb.norm(dim=1, keepdim=True) + eps)
        sq = ((na - nb) ** 2).sum(1)  # (B, H, W) or (B,)
        total = total + sq.reshape(sq.shape[0], -1).mean(1)
    return total


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    delta: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's balance of the adversarial term (Eq. 8; Esser et al. 2021, Eq. 7)::

        λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_GAN‖ + δ)

    with ``G_L`` the decoder's last layer, so that the adversarial gradient there is about as
    large as the reconstruction's whatever their scales. Clamped to ``[0, max_weight]`` and
    detached (λ is a weight, not something to optimise).

    Parameters
    ----------
    rec_loss, gan_loss : Tensor, shape ()
        Both depend on ``last_layer``; their graphs are kept (``retain_graph``) for the backward
        pass of the total loss.
    last_layer : Tensor
        A leaf parameter.
    delta : float
        ``δ`` > 0, guards the division.
    """
    for name, value in (("rec_loss", rec_loss), ("gan_loss", gan_loss)):
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            raise ValueError(f"{name} must be a scalar tensor")
    if not isinstance(last_layer, torch.Tensor) or not last_layer.requires_grad:
        raise TypeError("last_layer must be a tensor that requires grad")
    if not delta > 0 or not max_weight > 0:
        raise ValueError(f"delta and max_weight must be > 0, got {delta!r}, {max_weight!r}")
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_gan,) = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    return (g_rec.norm() / (g_gan.norm() + delta)).clamp(0, max_weight).detach()


# ---------------------------------------------------------------------------- prior --
class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a GELU MLP, each residual."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.drop = nn.Dropout(dropout)
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)  # (B, T, d) each
        q, k, v = (u.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for u in (q, k, v))  # (B, nh, T, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, T, T)
        scores = scores.masked_fill(~causal_mask(t, t, x.device), -math.inf)
        a = torch.softmax(scores, -1) @ v  # (B, nh, T, hs); row i mixes positions <= i
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class CodePrior(nn.Module):
    """Autoregressive transformer over a code grid in raster order (Eq. 9; VQ-VAE's PixelCNN prior,
    VQGAN's transformer, both scaled down).

    Input position ``i`` holds token ``s_{i-1}`` (position 0 a start token ``K``); the causal mask
    lets output ``i`` see inputs ``≤ i``, i.e. ``s_<i``, so its softmax is ``p(s_i | s_<i)`` and the
    product over ``i`` is a normalised distribution over all ``K^T`` grids.

    Parameters
    ----------
    n_codes : int
        Vocabulary ``K``.
    seq_len : int
        Tokens per grid ``T = H·W``.
    d_model, n_heads, n_layers : int
        Width (divisible by ``n_heads``), heads and blocks.
    dropout : float
        Dropout on the embeddings and on each residual branch in training mode (GPT-2's places);
        :meth:`log_prob` is exact in eval mode.
    """

    def __init__(self, n_codes: int, seq_len: int, d_model: int = 64, n_heads: int = 4,
                 n_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.n_codes = _positive_int("n_codes", n_codes)
        self.seq_len = _positive_int("seq_len", seq_len)
        _positive_int("d_model", d_model)
        _positive_int("n_layers", n_layers)
        if _positive_int("n_heads", n_heads) and d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.tok = nn.Embedding(n_codes + 1, d_model)  # index n_codes: the start token
        self.pos = nn.Parameter(torch.zeros(seq_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        dropout = _unit_interval("dropout", dropout)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_codes)

    def _check(self, s: torch.Tensor) -> torch.Tensor:
        s = _indices("s", s, self.n_codes)
        if s.ndim != 2 or s.shape[1] != self.seq_len:
            raise ValueError(f"s must be (B, {self.seq_len}), got shape {tuple(s.shape)}")
        return s

    def _logits_of_inputs(self, inp: torch.Tensor) -> torch.Tensor:
        t = inp.shape[1]
        h = self.drop(self.tok(inp) + self.pos[:t])  # (B, t, d)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h))  # (B, t, K)

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, K) of ``p(s_i | s_<i)`` for every position of grids ``s`` (B, T)."""
        s = self._check(s)
        start = torch.full((s.shape[0], 1), self.n_codes, dtype=torch.long, device=s.device)
        return self._logits_of_inputs(torch.cat([start, s[:, :-1]], 1))

    def log_prob(self, s: torch.Tensor) -> torch.Tensor:
        """``log p(s) = Σ_i log p(s_i | s_<i)`` (Eq. 9) in nats, shape (B,), exact."""
        s = self._check(s)
        logits = self.logits(s)
        # at least float32 (autocast may hand back half precision)
        logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
        return logp.gather(-1, s[..., None])[..., 0].sum(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               temperature: float = 1.0, device=None) -> torch.Tensor:
        """``n`` grids (n, T) by ancestral sampling, one position at a time (``T`` passes).

        ``temperature`` divides the logits (1: the model's own distribution). ``generator``
        lives on ``device`` (default: the model's).
        """
        n = _positive_int("n", n)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        device = device if device is not None else self.head.weight.device
        inp = torch.full((n, 1), self.n_codes, dtype=torch.long, device=device)
        for _ in range(self.seq_len):
            logits = self._logits_of_inputs(inp)[:, -1]  # (n, K)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
            nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)
            inp = torch.cat([inp, nxt], 1)
        return inp[:, 1:]


def code_bits_per_dim(log_prob_nats: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """``−log₂ p(s) / n_pixels`` (Eq. 10): the prior's code length per image pixel, in bits.

    The rate of a lossy code: the decoder's reconstruction is not the image, so this is not a
    likelihood of the pixels and does not compare with a flow's bits/dim as a better or worse
    model of the same thing.
    """
    n_pixels = _positive_int("n_pixels", n_pixels)
    return -log_prob_nats.double() / (n_pixels * math.log(2))
