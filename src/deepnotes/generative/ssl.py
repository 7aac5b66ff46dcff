"""Self-supervised representation learning on 8×8 digits: SimCLR, masked prediction, linear probe.

Two pretext tasks train the same small convolutional encoder (:class:`DigitsEncoder`) without
labels, and one protocol measures what they learned:

* **SimCLR** (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML): two random augmentations of each of ``N`` images give ``2N`` views;
  each view must pick its partner out of the other ``2N - 1`` views by cosine similarity of the
  projected embeddings. :func:`nt_xent` is that loss (NT-Xent, an InfoNCE loss; post Eq. 1-2),
  :func:`nt_xent_minimum` its closed-form minimum when the two views are identical (Eq. 3), and
  :class:`Augment` the view generator, written here for 8×8 digits (:func:`random_shift`,
  :func:`random_resized_crop`, :func:`elastic_deform`, :func:`add_noise`).
* **Masked prediction** (the SimMIM / MAE family: Xie et al. 2022; He et al. 2022): hide random
  2×2 patches (:func:`mask_patches`) and reconstruct the pixels from the encoder's representation;
  the loss counts only the hidden pixels (:func:`masked_mse`, Eq. 4).
* **Linear probe** (Eq. 5): freeze the encoder, fit multinomial logistic regression on its
  features of a labelled subset (:func:`label_subset`), report test accuracy
  (:func:`linear_probe`).

Images are tensors of shape ``(B, 8, 8)`` with values in ``[0, 1]``; every random draw comes from
an explicit ``torch.Generator``, so a seeded generator reproduces the same views exactly. The
module is pure: no I/O, no printing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Augment", "DigitsEncoder", "MaskedPredictor", "SimCLR", "add_noise", "elastic_deform",
    "encode", "label_subset", "linear_probe", "mask_patches", "masked_mse", "nt_xent",
    "nt_xent_minimum", "random_resized_crop", "random_shift",
]


# --- validation helpers ------------------------------------------------------------------------
def _check_images(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor of shape (B, H, W), got "
                         f"{tuple(x.shape)} {x.dtype}")
    return x


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _uniform(shape, lo: float, hi: float, generator: torch.Generator, like: torch.Tensor):
    """U[lo, hi) draws on the generator's device, moved to ``like``'s device and dtype."""
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)
    return (lo + (hi - lo) * u).to(device=like.device, dtype=like.dtype)


# --- NT-Xent -----------------------------------------------------------------------------------
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy) loss of SimCLR, post Eq. 1-2.

    The ``2N`` views are ``z = [z1; z2]``; view ``i``'s positive is its partner ``p(i) = i ± N``,
    and its negatives are the other ``2N - 2`` views. With cosine similarity
    ``s_ij = z_i . z_j / (|z_i| |z_j|)``,

    ``l_i = -log( exp(s_{i p(i)} / tau) / sum_{k != i} exp(s_ik / tau) )``   (Eq. 1)

    and the loss is the mean of ``l_i`` over all ``2N`` views (Eq. 2; Chen et al. 2020, Alg. 1).

    Parameters
    ----------
    z1, z2 : Tensor, shape (N, D)
        Embeddings of the two views of the same ``N`` images (row ``n`` of each is a pair);
        ``N >= 2``. They need not be normalised.
    tau : float
        Temperature ``> 0``.

    Returns
    -------
    Tensor, shape ()
        The mean loss, in nats.
    """
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
        if z.ndim != 2:
            raise ValueError(f"{name} must have shape (N, D), got {tuple(z.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"need at least N = 2 pairs (one negative pair), got N = {z1.shape[0]}")
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not tau > 0:
        raise ValueError(f"tau must be a positive number, got {tau!r}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D), unit rows
    logits = z @ z.T / tau  # (2N, 2N)
    # a view is never its own negative: -inf on the diagonal drops exp(s_ii / tau) from Eq. 1
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return F.cross_entropy(logits, partner)


def nt_xent_minimum(n: int, tau: float) -> float:
    """Closed-form minimum of :func:`nt_xent` over embeddings with identical views, post Eq. 3.

    With ``z1 = z2`` every positive similarity is 1, and the mean similarity between the ``N``
    distinct unit vectors is at least ``-1 / (N - 1)`` (since ``|sum_n z_n|^2 >= 0``). The loss is
    a convex increasing function of each anchor's mean negative similarity (Jensen twice), so

    ``L >= log(1 + (2N - 2) exp(-N / ((N - 1) tau)))``,

    with equality when the ``N`` embeddings form a regular simplex (possible when ``D >= N - 1``).
    It tends to 0 as ``tau -> 0`` and to ``log(2N - 1)`` (chance) as ``tau -> inf``.

    Parameters
    ----------
    n : int
        Number of pairs ``N >= 2``.
    tau : float
        Temperature ``> 0``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not tau > 0:
        raise ValueError(f"tau must be a positive number, got {tau!r}")
    return math.log1p((2 * n - 2) * math.exp(-n / ((n - 1) * tau)))


# --- augmentations -----------------------------------------------------------------------------
def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by a whole number of pixels in ``[-max_shift, max_shift]`` per axis.

    Pixels moved in from outside are 0 (the digits' background); values stay in the input range.

    Parameters
    ----------
    x : Tensor, shape (B, H, W)
    max_shift : int >= 0
    generator : torch.Generator
    """
    x = _check_images(x)
    _check_generator(generator)
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be a non-negative integer, got {max_shift!r}")
    b, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator,
                           device=generator.device).to(x.device)
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))  # (B, H + 2m, W + 2m)
    rows = torch.arange(h, device=x.device) + max_shift - shifts[:, :1]  # (B, H)
    cols = torch.arange(w, device=x.device) + max_shift - shifts[:, 1:]  # (B, W)
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    return padded[idx_b, rows[:, :, None], cols[:, None, :]]


def _resample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of ``x`` (B, H, W) at ``grid`` (B, H, W, 2) in [-1, 1] coordinates.

    Outside the image the value is 0; every output is a convex combination of input pixels and
    zeros, so ``[0, 1]`` inputs give ``[0, 1]`` outputs.
    """
    out = F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[:, 0]


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float],
                        generator: torch.Generator) -> torch.Tensor:
    """Crop a random square covering a fraction ``s ~ U[scale]`` of the image area, resize back.

    The crop's side is ``sqrt(s)`` of the image's and its centre is uniform among positions that
    keep it inside the image; resampling is bilinear (:func:`_resample`). ``scale = (1, 1)``
    returns the image (up to interpolation round-off).

    Parameters
    ----------
    x : Tensor, shape (B, H, W)
    scale : (float, float)
        Range of the crop's area fraction, ``0 < lo <= hi <= 1``.
    generator : torch.Generator
    """
    x = _check_images(x)
    _check_generator(generator)
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale!r}")
    b = x.shape[0]
    side = _uniform((b,), lo, hi, generator, x).sqrt()  # (B,) in units of the image side
    # centre offset, in [-1, 1] coordinates, that keeps the crop inside the image
    off = _uniform((b, 2), -1.0, 1.0, generator, x) * (1 - side)[:, None]  # (B, 2)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, :, 2] = off
    grid = F.affine_grid(theta, (b, 1, *x.shape[1:]), align_corners=False)
    return _resample(x, grid)


def _gaussian_kernel(sigma: float, dtype, device) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def elastic_deform(x: torch.Tensor, alpha: float, sigma: float,
                   generator: torch.Generator) -> torch.Tensor:
    """Elastic distortion (Simard et al. 2003): displace pixels by a smoothed random field.

    A field of i.i.d. ``U[-1, 1]`` displacements per pixel and axis is smoothed by a Gaussian of
    width ``sigma`` pixels, rescaled to a maximum of ``alpha`` pixels per image, and the image is
    resampled bilinearly at the displaced positions (zeros outside).

    Parameters
    ----------
    x : Tensor, shape (B, H, W)
    alpha : float >= 0
        Largest displacement, in pixels (0 returns ``x`` up to interpolation round-off).
    sigma : float > 0
        Smoothing width of the field, in pixels.
    generator : torch.Generator
    """
    x = _check_images(x)
    _check_generator(generator)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    b, h, w = x.shape
    field = _uniform((b * 2, 1, h, w), -1.0, 1.0, generator, x)  # (2B, 1, H, W)
    k = _gaussian_kernel(sigma, x.dtype, x.device)
    r = k.numel() // 2
    field = F.conv2d(F.pad(field, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    field = field.view(b, 2, h, w)
    peak = field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    field = field * (alpha / peak)  # (B, 2, H, W) in pixels; channel 0 = x (columns), 1 = y
    # identity grid in [-1, 1]; one pixel is 2 / W (or 2 / H) in those units
    ys = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) * 2 / h - 1
    xs = (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) * 2 / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx + field[:, 0] * 2 / w, gy + field[:, 1] * 2 / h], dim=-1)
    return _resample(x, grid)


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Add i.i.d. Gaussian noise of standard deviation ``std`` and clip back to ``[0, 1]``."""
    x = _check_images(x)
    _check_generator(generator)
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    noise = torch.randn(x.shape, generator=generator, device=generator.device,
                        dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Augment:
    """SimCLR's view generator for 8×8 digits: crop → elastic → shift → noise, each with a chance.

    Colour jitter and blur, SimCLR's strongest augmentations on photographs, have no meaning on
    one-channel 8×8 digits; small geometric distortions and pixel noise take their place.
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    """Area fraction range of :func:`random_resized_crop`."""
    p_crop: float = 0.8
    """Probability that an image is cropped."""
    elastic_alpha: float = 1.0
    """Largest elastic displacement, pixels."""
    elastic_sigma: float = 1.5
    """Smoothing width of the elastic field, pixels."""
    p_elastic: float = 0.5
    """Probability of the elastic distortion."""
    max_shift: int = 1
    """Largest translation, pixels."""
    noise_std: float = 0.1
    """Standard deviation of the additive noise (pixel values in [0, 1])."""

    def __post_init__(self):
        for name in ("p_crop", "p_elastic"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random view of each image, shape (B, H, W), values in [0, 1]."""
        x = _check_images(x)
        _check_generator(generator)
        b = x.shape[0]

        def apply(prob: float, y: torch.Tensor, fn) -> torch.Tensor:
            # draw the coin flips before the transform so the number of draws never depends on them
            keep = _uniform((b,), 0.0, 1.0, generator, y) < prob
            return torch.where(keep[:, None, None], fn(y), y)

        x = apply(self.p_crop, x, lambda y: random_resized_crop(y, self.crop_scale, generator))
        x = apply(self.p_elastic, x,
                  lambda y: elastic_deform(y, self.elastic_alpha, self.elastic_sigma, generator))
        x = random_shift(x, self.max_shift, generator)
        return add_noise(x, self.noise_std, generator)


# --- masked prediction -------------------------------------------------------------------------
def mask_patches(x: torch.Tensor, patch: int, ratio: float, generator: torch.Generator,
                 fill: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide a random ``ratio`` of the ``patch × patch`` patches of each image.

    Exactly ``round(ratio * P)`` of the ``P = (H / patch) (W / patch)`` patches are hidden per
    image (a uniformly random subset, as in MAE), and their pixels are set to ``fill``.

    Parameters
    ----------
    x : Tensor, shape (B, H, W)
        ``H`` and ``W`` divisible by ``patch``.
    patch : int >= 1
    ratio : float in (0, 1)
    generator : torch.Generator
    fill : float
        Value written into hidden pixels (0.5: neither background 0 nor full ink 1).

    Returns
    -------
    masked : Tensor, shape (B, H, W)
    mask : Tensor of bool, shape (B, H, W)
        True on hidden pixels.
    """
    x = _check_images(x)
    _check_generator(generator)
    b, h, w = x.shape
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch must be a positive integer dividing H={h} and W={w}, got "
                         f"{patch!r}")
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must lie in (0, 1), got {ratio!r}")
    gh, gw = h // patch, w // patch
    n_hide = int(round(ratio * gh * gw))
    scores = torch.rand(b, gh * gw, generator=generator, device=generator.device)
    hidden = scores.argsort(dim=1)[:, :n_hide].to(x.device)  # (B, n_hide) patch ids
    grid = torch.zeros(b, gh * gw, dtype=torch.bool, device=x.device)
    grid.scatter_(1, hidden, True)
    mask = grid.view(b, gh, gw).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return x.masked_fill(mask, fill), mask


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden pixels only, post Eq. 4 (SimMIM's loss).

    Parameters
    ----------
    pred, target : Tensor, shape (B, H, W)
    mask : Tensor of bool, shape (B, H, W)
        True where the pixel was hidden; at least one must be.
    """
    if pred.shape != target.shape or mask.shape != target.shape:
        raise ValueError(f"pred, target and mask must share a shape, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}, {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    n = mask.sum()
    if n == 0:
        raise ValueError("mask hides no pixel")
    return ((pred - target) ** 2 * mask).sum() / n


# --- networks ----------------------------------------------------------------------------------
class DigitsEncoder(nn.Module):
    """The encoder every method shares: three 3×3 convolutions and global average pooling.

    ``(B, 8, 8) -> conv w -> conv 2w -> max-pool 2 -> conv dim -> mean over 4×4 -> (B, dim)``,
    ReLU after each convolution, batch normalisation after the first two. The representation a
    linear probe reads is the pooled ``(B, dim)`` vector.

    Parameters
    ----------
    dim : int
        Width of the representation.
    width : int
        Channels ``w`` of the first convolution (the second has ``2w``).
    """

    def __init__(self, dim: int = 128, width: int = 32):
        super().__init__()
        for name, value in (("dim", dim), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.dim = dim
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, dim, 3, padding=1), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Representations, shape (B, dim), of images ``x``, shape (B, 8, 8)."""
        return self.net(x[:, None]).mean(dim=(2, 3))  # (B, dim)


class SimCLR(nn.Module):
    """Encoder plus SimCLR's projection head ``g`` (Linear-ReLU-Linear); the loss uses ``g(h)``,
    the probe uses ``h`` (Chen et al. 2020, Sec. 4.2: ``h`` transfers better than ``g(h)``)."""

    def __init__(self, encoder: DigitsEncoder, proj_dim: int = 64):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(encoder.dim, encoder.dim), nn.ReLU(),
                                  nn.Linear(encoder.dim, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projected embeddings ``z = g(f(x))``, shape (B, proj_dim)."""
        return self.head(self.encoder(x))


class MaskedPredictor(nn.Module):
    """Encoder plus an MLP decoder from the pooled representation back to all ``H·W`` pixels.

    The decoder sees only the ``(B, dim)`` vector, so whatever the masked pixels need must pass
    through the representation the probe later reads.
    """

    def __init__(self, encoder: DigitsEncoder, hw: tuple[int, int] = (8, 8), hidden: int = 256):
        super().__init__()
        self.encoder = encoder
        self.hw = tuple(hw)
        self.decoder = nn.Sequential(nn.Linear(encoder.dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hw[0] * hw[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructed images, shape (B, H, W), in [0, 1] (a sigmoid output)."""
        return torch.sigmoid(self.decoder(self.encoder(x))).view(-1, *self.hw)


# --- linear probe ------------------------------------------------------------------------------
@torch.no_grad()
def encode(encoder: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Frozen features of ``x`` (B, H, W) as a float64 array (B, dim), in eval mode.

    The encoder's train/eval mode is restored afterwards; ``x`` moves to the encoder's device.
    """
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        parts = [encoder(x[i:i + batch_size].to(device)).double().cpu()
                 for i in range(0, len(x), batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(parts).numpy()


def label_subset(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a stratified random ``fraction`` of ``labels``, at least one per class.

    Class ``c`` with ``n_c`` examples contributes ``max(1, round(fraction * n_c))`` of them.

    Returns
    -------
    np.ndarray of int64, sorted.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    parts = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * members.size)))
        parts.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(parts)).astype(np.int64)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, c: float = 1.0, max_iter: int = 2000) -> float:
    """Test accuracy of multinomial logistic regression on frozen features, post Eq. 5.

    Features are standardised with the training subset's mean and standard deviation (a feature
    constant on that subset is only centred), then scikit-learn's ``LogisticRegression`` (L2
    penalty of inverse strength ``c``, lbfgs) is fitted.

    Parameters
    ----------
    train_x : array, shape (n, d);  train_y : array of int, shape (n,)
    test_x : array, shape (m, d);   test_y : array of int, shape (m,)
    c : float > 0
        Inverse L2 strength.

    Returns
    -------
    float
        Fraction of ``test_y`` predicted correctly.
    """
    from sklearn.linear_model import LogisticRegression  # lazy: sklearn is slow to import

    train_x, test_x = np.asarray(train_x, float), np.asarray(test_x, float)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_x and test_x must be (n, d) with the same d, got "
                         f"{train_x.shape} and {test_x.shape}")
    if len(train_y) != len(train_x) or len(test_y) != len(test_x):
        raise ValueError("train_y / test_y must have one label per row of train_x / test_x")
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c!r}")
    mean = train_x.mean(0)
    std = train_x.std(0)
    std[std < 1e-12] = 1.0
    if np.unique(train_y).size < 2:
        # one class only: logistic regression is undefined; predict that class
        return float(np.mean(np.asarray(test_y) == np.asarray(train_y)[0]))
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit((train_x - mean) / std, train_y)
    return float(clf.score((test_x - mean) / std, test_y))
