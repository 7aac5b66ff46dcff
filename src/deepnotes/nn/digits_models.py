"""Networks for the 8×8 digits shared by several topics: the FID feature network and its
evaluator, and the digits classifiers (clean, or noise-conditional for classifier guidance).

Pure code: nothing is cached or written here (the experiments' ``_digits_cache`` stores trained
weights on disk). Training goes through :func:`deepnotes.nn.training.fit`.

The digits FID follows Heusel et al. (2017), "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium", with a small classifier's penultimate layer in place of
Inception-v3's pool features: ``FID = ||μ_a − μ_b||² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})``
(the edm post, Eq. 7; :func:`deepnotes.diffusion.metrics.frechet_distance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deepnotes.data import load_digits
from deepnotes.diffusion.metrics import frechet_distance, gaussian_moments
from deepnotes.diffusion.parameterizations import sample_lognormal_sigma
from deepnotes.diffusion.unet import NoisyClassifier
from deepnotes.nn.training import fit

N_CLASSES = 10


def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8×8 digits of ``split`` as (n, 1, 8, 8) float32 in [-1, 1] and (n,) int64 labels."""
    x, y = load_digits(split, "float")
    return torch.from_numpy(2 * x - 1)[:, None], torch.from_numpy(y)


class FeatureNet(nn.Module):
    """Small CNN classifier for 8×8 digits; :meth:`features` is its penultimate layer, the
    feature space of the digits FID.

    Parameters
    ----------
    channels : int
        Width of the first convolution (the second has ``2 * channels``).
    n_features : int
        Dimension of the feature layer.
    """

    def __init__(self, channels: int = 16, n_features: int = 32):
        super().__init__()
        if channels < 1 or n_features < 1:
            raise ValueError(f"channels and n_features must be >= 1, got {channels}, "
                             f"{n_features}")
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.SiLU(),  # 4×4
            nn.Flatten(), nn.Linear(2 * channels * 16, n_features), nn.SiLU())
        self.head = nn.Linear(n_features, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, n_features) of images ``x`` (B, 1, 8, 8) in [-1, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10)."""
        return self.head(self.body(x))


class DigitsFID:
    """Fréchet distance of :class:`FeatureNet` features against reference digits, and accuracy.

    Parameters
    ----------
    net : FeatureNet
        A trained feature network (see :func:`train_digits_classifier`).
    reference : Tensor, shape (n, 1, 8, 8), optional
        Reference images in [-1, 1]; default the digits train split (1347 images).

    ``fid(x)`` compares the Gaussian moments of ``net.features(x)`` (x of shape (n, 1, 8, 8),
    clamped to [-1, 1]) with the reference's; ``accuracy(x, y)`` is the share of ``x`` that the
    network assigns to the labels ``y`` (n,).
    """

    def __init__(self, net: FeatureNet, reference: torch.Tensor | None = None):
        if not hasattr(net, "features"):
            raise TypeError(f"net must have a features() method (a FeatureNet), got "
                            f"{type(net).__name__}")
        self.net = net
        ref = digits("train")[0] if reference is None else reference
        self.ref = gaussian_moments(self._features(ref))

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x.to(self._device()).float().clamp(-1, 1)).cpu()

    def fid(self, x: torch.Tensor) -> float:
        """FID of images ``x`` (n, 1, 8, 8) against the reference (n ≥ 2)."""
        return frechet_distance(*gaussian_moments(self._features(x)), *self.ref)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of ``x`` (n, 1, 8, 8) classified as ``y`` (n,)."""
        logits = self.net(x.to(self._device()).float().clamp(-1, 1)).cpu()
        return float((logits.argmax(1) == y).float().mean())


@dataclass(frozen=True)
class ClassifierSpec:
    """A digits classifier: clean (the FID feature net) or noise-conditional (guidance)."""

    noisy: bool = False
    channels: int = 16
    n_steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    p_mean: float = -1.2
    p_std: float = 1.6
    seed: int = 0


def build_classifier(spec: ClassifierSpec, sigma_data: float = 0.5) -> nn.Module:
    """The untrained network of ``spec``: a :class:`FeatureNet`, or a
    :class:`~deepnotes.diffusion.unet.NoisyClassifier` whose input is EDM-scaled with
    ``sigma_data``. Initialised from torch's global generator."""
    if spec.noisy:
        return NoisyClassifier(N_CLASSES, 1, spec.channels, (1, 2), 32, sigma_data)
    return FeatureNet(spec.channels)


def train_digits_classifier(spec: ClassifierSpec, sigma_data: float = 0.5,
                            model: nn.Module | None = None, *, progress=None,
                            **fit_kwargs: Any) -> tuple[nn.Module, dict[str, float]]:
    """Train a digits classifier with Adam and cross-entropy through :func:`fit`.

    Each step draws ``spec.batch_size`` train images with replacement. The clean classifier
    sees ``x + 0.05 ε`` (samples do not sit exactly on the data's 17 grey levels); the
    noise-conditional one sees ``x + σ ε`` with ``ln σ ~ N(p_mean, p_std²)``.

    Parameters
    ----------
    spec : ClassifierSpec
    sigma_data : float
        Data standard deviation for the noisy classifier's input scaling.
    model : nn.Module, optional
        The network to train (default :func:`build_classifier` under ``torch.manual_seed(
        spec.seed)``, so the result depends on ``spec`` alone).
    progress : callable, optional
        Passed to :func:`fit` (e.g. ``run.track``).
    **fit_kwargs
        More :func:`fit` options (``checkpoint_dir``, ``resume``, ``precision``, ...).

    Returns
    -------
    model : nn.Module
        The trained network, in eval mode with gradients off.
    meta : dict
        ``{"test_accuracy": float}`` on the clean test split (σ = 1e-3 for the noisy one).
    """
    if not isinstance(spec, ClassifierSpec):
        raise TypeError(f"spec must be a ClassifierSpec, got {type(spec).__name__}")
    x, y = digits("train")
    xt, yt = digits("test")
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = build_classifier(spec, sigma_data)
    device = next(model.parameters()).device

    def logits(m, xb, sigma):
        return m(xb, sigma) if spec.noisy else m(xb)

    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed + 1)

    def batches(step):
        idx = torch.randint(0, x.shape[0], (spec.batch_size,), generator=gen)
        xb, yb = x[idx], y[idx]
        if spec.noisy:
            sigma = sample_lognormal_sigma(xb.shape[0], spec.p_mean, spec.p_std, gen)
            xb = xb + sigma[:, None, None, None] * torch.randn(xb.shape, generator=gen)
        else:
            sigma = torch.zeros(xb.shape[0])
            xb = xb + 0.05 * torch.randn(xb.shape, generator=gen)
        return xb.to(device), yb.to(device), sigma.to(device)

    def loss_fn(m, batch):
        xb, yb, sigma = batch
        return F.cross_entropy(logits(m, xb, sigma), yb)

    name = "noise-conditional classifier" if spec.noisy else "FID feature classifier"
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    fit(model, loss_fn, batches, opt, spec.n_steps, progress=progress,
        description=f"train {name}", generators=[gen], **fit_kwargs)
    model.eval()
    with torch.no_grad():
        sigma = torch.full((xt.shape[0],), 1e-3, device=device)
        pred = logits(model, xt.to(device), sigma).argmax(1).cpu()
    return model.requires_grad_(False), {"test_accuracy": float((pred == yt).float().mean())}
