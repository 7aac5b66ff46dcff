"""Digits diffusion shared by the edm, classifier-guidance and diffusion-sde experiments and
``benchmarks/diffusion.py``: data, training (cached), the digits FID and the sampler zoo.

Not a topic: the registry skips modules whose name starts with an underscore.

Trained networks are cached under ``<runs root>/_cache/diffusion-digits/<name>-<key>.pt``, with
``key`` a hash of the training spec, so the EDM model behind the edm post is trained once and
reused by classifier guidance and the benchmark (``run.log`` says whether a cache was hit).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepnotes.core import paths
from deepnotes.data import N_LEVELS, load_digits
from deepnotes.diffusion import samplers as S
from deepnotes.diffusion.likelihood import bits_per_dim, ode_log_likelihood
from deepnotes.diffusion.metrics import frechet_distance, gaussian_moments
from deepnotes.diffusion.parameterizations import EDMPrecond, edm_loss, sample_lognormal_sigma
from deepnotes.diffusion.processes import DiscreteVP
from deepnotes.diffusion.schedules import append_zero, karras_sigmas, vp_sigmas
from deepnotes.diffusion.unet import NoisyClassifier, UNet

N_CLASSES = 10
CACHE_VERSION = 1  # bump when training code changes, so stale networks are not reused


def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8×8 digits as (n, 1, 8, 8) float32 in [-1, 1] and (n,) int64 labels."""
    x, y = load_digits(split, "float")
    return torch.from_numpy(2 * x - 1)[:, None], torch.from_numpy(y)


def dequantized_digits(split: str, rng: np.random.Generator) -> torch.Tensor:
    """Uniformly dequantised digits (n, 1, 8, 8) float32 in [-1, 1): ``y = 2 (k + u)/17 − 1``.

    ``x = (k + u)/17`` with ``u ~ U[0, 1)`` drawn from ``rng`` is the flows' view
    (``load_digits(split, "dequantized")``); the affine map to the denoisers' range [-1, 1)
    has log-Jacobian ``ln 2`` per pixel, which :func:`ode_bits_per_dim` accounts for.
    """
    x, _ = load_digits(split, "dequantized", rng=rng)
    return torch.from_numpy(2 * x - 1)[:, None]


def ode_bits_per_dim(model, y: torch.Tensor, sigma_min: float, sigma_max: float, tol: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Per-image bits/dim (n,) float64 of dequantised digits ``y`` (n, 1, 8, 8) in [-1, 1)
    through ``model``'s probability-flow ODE (Hutchinson trace, one Rademacher probe per image
    from ``generator``; RK45 with rtol = atol = ``tol``), and the solver's NFE.

    The flows' 17-level convention: with ``x = (y + 1)/2 = (k + u)/17``,
    ``log p_x = log p_y + D ln 2`` and the figure is ``−(log p_x(x) − D ln 17)/(D ln 2)``, an
    upper bound on ``−log₂ P(k)/D`` of the discrete image (``deepnotes.data.digits``).
    """
    ll, info = ode_log_likelihood(model, y, sigma_min, sigma_max, hutchinson=True,
                                  generator=generator, rtol=tol, atol=tol, return_info=True)
    dim = y[0].numel()
    return bits_per_dim(ll.double(), dim, dim * math.log(2 / N_LEVELS)), info["nfe"]


def cache_dir(out: str | None) -> Path:
    """``<out or runs/>/_cache/diffusion-digits`` (created)."""
    root = Path(out) if out else paths.runs_dir()
    path = root / "_cache" / "diffusion-digits"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(spec) -> str:
    text = json.dumps({"v": CACHE_VERSION, **dataclasses.asdict(spec)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DenoiserSpec:
    """Architecture and training of the class-conditional EDM U-Net (the cache key)."""

    channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2)
    emb_dim: int = 32
    n_steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    p_uncond: float = 0.1
    p_mean: float = -1.2
    p_std: float = 1.2
    ema: float = 0.999
    seed: int = 0


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


class FeatureNet(nn.Module):
    """Small CNN for 8×8 digits; :meth:`features` is the 32-d penultimate layer used by FID."""

    def __init__(self, channels: int = 16, n_features: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.SiLU(),  # 4×4
            nn.Flatten(), nn.Linear(2 * channels * 16, n_features), nn.SiLU())
        self.head = nn.Linear(n_features, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _load_or_train(path: Path, module: nn.Module, train: Callable[[], dict], log) -> dict:
    if path.is_file():
        blob = torch.load(path, weights_only=True)
        module.load_state_dict(blob["state"])
        log(f"loaded cached {path.name}")
        return json.loads(blob["meta"])
    meta = train()
    tmp = path.with_suffix(".tmp")
    torch.save({"state": module.state_dict(), "meta": json.dumps(meta)}, tmp)
    tmp.replace(path)
    log(f"trained and cached {path.name}")
    return meta


@dataclass(frozen=True)
class DequantSpec:
    """The unconditional EDM U-Net on dequantised digits behind the ODE bits/dim (cache key)."""

    channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2)
    emb_dim: int = 32
    epochs: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    p_mean: float = -1.2
    p_std: float = 1.2
    ema: float = 0.999
    seed: int = 0


def _batches(x, y, batch_size, gen):
    idx = torch.randint(0, x.shape[0], (batch_size,), generator=gen)
    return x[idx], y[idx]


def _edm_step(model, ema, opt, loss, step: int, n_steps: int, spec) -> float:
    """One Adam step on ``loss`` and the EMA update; returns the loss."""
    # the last 10 % of steps anneal the learning rate, which sharpens the EMA weights
    frac = max(0.0, (step / max(n_steps, 1) - 0.9) / 0.1)
    for g in opt.param_groups:
        g["lr"] = spec.lr * (1 - 0.9 * frac)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    # EMA warm-up (shorter runs would otherwise average in the untrained start)
    decay = min(spec.ema, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(p, 1 - decay)
    return loss.item()


def train_denoiser(spec: DenoiserSpec, out: str | None, log, track) -> tuple[EDMPrecond, dict]:
    """The class-conditional EDM U-Net (EMA weights) and ``meta`` (sigma_data, loss curve).

    Training: Adam, log-normal σ (Karras et al. 2022, Table 1), labels dropped to ``∅`` with
    probability ``p_uncond`` (Ho & Salimans 2022, Algorithm 1).
    """
    x, y = digits("train")
    sigma_data = float(x.std())
    net = UNet(1, spec.channels, spec.channel_mult, N_CLASSES, spec.emb_dim)
    model = EDMPrecond(net, sigma_data)
    ema = copy.deepcopy(model).requires_grad_(False)

    def train() -> dict:
        torch.manual_seed(spec.seed)
        gen = torch.Generator().manual_seed(spec.seed)
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
        losses = []
        for step in track(range(spec.n_steps), "train EDM U-Net"):
            xb, yb = _batches(x, y, spec.batch_size, gen)
            drop = torch.rand(yb.shape, generator=gen) < spec.p_uncond
            yb = torch.where(drop, torch.full_like(yb, net.null_label), yb)
            loss = edm_loss(model, xb, spec.p_mean, spec.p_std, gen, class_labels=yb)
            losses.append(_edm_step(model, ema, opt, loss, step, spec.n_steps, spec))
        model.load_state_dict(ema.state_dict())
        return {"sigma_data": sigma_data, "losses": losses}

    meta = _load_or_train(cache_dir(out) / f"edm-unet-{_key(spec)}.pt", model, train, log)
    model.sigma_data = meta["sigma_data"]
    return model.eval().requires_grad_(False), meta


def train_dequantized_denoiser(spec: DequantSpec, out: str | None, log,
                               track) -> tuple[EDMPrecond, dict]:
    """The unconditional EDM U-Net (EMA weights) fitted to :func:`dequantized_digits`, and
    ``meta`` (sigma_data, loss per step).

    Every epoch draws fresh dequantisation noise ``u`` for the whole train split and visits it
    in a random order (the last incomplete batch is dropped), as the flows' digits training
    does; otherwise the training is :func:`train_denoiser`'s without labels.
    """
    rng = np.random.default_rng(spec.seed)
    sigma_data = float(dequantized_digits("train", rng).std())
    net = UNet(1, spec.channels, spec.channel_mult, 0, spec.emb_dim)
    model = EDMPrecond(net, sigma_data)
    ema = copy.deepcopy(model).requires_grad_(False)

    def train() -> dict:
        torch.manual_seed(spec.seed)
        gen = torch.Generator().manual_seed(spec.seed)
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
        n = load_digits("train")[0].shape[0]
        per_epoch = n // spec.batch_size
        n_steps = spec.epochs * per_epoch
        losses: list[float] = []
        x = order = None
        for step in track(range(n_steps), "train EDM U-Net on dequantised digits"):
            b = step % per_epoch
            if b == 0:
                x, order = dequantized_digits("train", rng), torch.randperm(n, generator=gen)
            xb = x[order[b * spec.batch_size:(b + 1) * spec.batch_size]]
            loss = edm_loss(model, xb, spec.p_mean, spec.p_std, gen)
            losses.append(_edm_step(model, ema, opt, loss, step, n_steps, spec))
        model.load_state_dict(ema.state_dict())
        return {"sigma_data": sigma_data, "losses": losses}

    meta = _load_or_train(cache_dir(out) / f"edm-dequant-{_key(spec)}.pt", model, train, log)
    model.sigma_data = meta["sigma_data"]
    return model.eval().requires_grad_(False), meta


def train_classifier(spec: ClassifierSpec, sigma_data: float, out: str | None, log,
                     track) -> tuple[nn.Module, dict]:
    """A :class:`FeatureNet` (``noisy=False``) or a :class:`NoisyClassifier` trained on
    ``x_0 + σε`` with ``ln σ ~ N(p_mean, p_std²)``; meta holds the clean test accuracy."""
    x, y = digits("train")
    xt, yt = digits("test")
    if spec.noisy:
        model: nn.Module = NoisyClassifier(N_CLASSES, 1, spec.channels, (1, 2), 32, sigma_data)
    else:
        model = FeatureNet(spec.channels)

    def logits(xb, sigma):
        return model(xb, sigma) if spec.noisy else model(xb)

    def train() -> dict:
        torch.manual_seed(spec.seed)
        gen = torch.Generator().manual_seed(spec.seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
        name = "noise-conditional classifier" if spec.noisy else "FID feature classifier"
        for _ in track(range(spec.n_steps), f"train {name}"):
            xb, yb = _batches(x, y, spec.batch_size, gen)
            if spec.noisy:
                sigma = sample_lognormal_sigma(xb.shape[0], spec.p_mean, spec.p_std, gen)
                xb = xb + sigma[:, None, None, None] * torch.randn(xb.shape, generator=gen)
            else:
                # small pixel noise: samples are not exactly on the data's 17 grey levels
                sigma = torch.zeros(xb.shape[0])
                xb = xb + 0.05 * torch.randn(xb.shape, generator=gen)
            loss = F.cross_entropy(logits(xb, sigma), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float((logits(xt, torch.full((xt.shape[0],), 1e-3)).argmax(1) == yt)
                        .float().mean())
        return {"test_accuracy": acc}

    prefix = "noisy-clf" if spec.noisy else "fid-clf"
    meta = _load_or_train(cache_dir(out) / f"{prefix}-{_key(spec)}.pt", model, train, log)
    return model.eval().requires_grad_(False), meta


class DigitsFID:
    """Fréchet distance of classifier features against the digits train split, and accuracy.

    ``fid(x)`` (n, 1, 8, 8) compares the Gaussian moments of ``features(x)`` with those of the
    train split (1347 images); ``accuracy(x, y)`` is the classifier's agreement with ``y``.
    """

    def __init__(self, net: FeatureNet):
        self.net = net
        ref, _ = digits("train")
        self.ref = gaussian_moments(self._features(ref))

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x.float().clamp(-1, 1))

    def fid(self, x: torch.Tensor) -> float:
        return frechet_distance(*gaussian_moments(self._features(x)), *self.ref)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.net(x.float().clamp(-1, 1)).argmax(1) == y).float().mean())


# ---------------------------------------------------------------------------- samplers --
#: Sampler name -> (label for figures, its native σ schedule).
SAMPLERS = {
    "euler": ("Euler (ODE)", "karras"),
    "heun": ("Heun / EDM deterministic", "karras"),
    "edm_churn": ("EDM stochastic (churn)", "karras"),
    "dpmpp_2m": ("DPM-Solver++(2M)", "karras"),
    "ddim": ("DDIM (η = 0)", "ddpm"),
    "ddpm": ("DDPM ancestral", "ddpm"),
    "euler_maruyama": ("Euler–Maruyama (SDE)", "vp"),
    "pc": ("Predictor–corrector", "vp"),
}
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
_DDPM = DiscreteVP.linear(1000)


def steps_for_nfe(name: str, nfe: int) -> int:
    """Number of steps whose cost is closest to (and at most one above) ``nfe`` evaluations."""
    if name in ("heun", "edm_churn"):
        return max(1, (nfe + 1) // 2)       # 2 per step, 1 on the last step to 0
    if name == "pc":
        return max(1, nfe // 2)             # one corrector and one predictor evaluation
    return max(1, nfe)


def nfe_of(name: str, n_steps: int) -> int:
    """Denoiser evaluations of ``n_steps`` steps of sampler ``name``."""
    if name in ("heun", "edm_churn"):
        return 2 * n_steps - 1
    if name == "pc":
        return 2 * n_steps
    return n_steps


def sigmas_for(name: str, n_steps: int) -> torch.Tensor:
    """The sampler's native grid: Karras (EDM Eq. 5), DDPM's integer timesteps of the
    linear-β table evenly spaced from 999 to 0, or the continuous linear VP SDE in t."""
    kind = SAMPLERS[name][1]
    if kind == "karras":
        return karras_sigmas(n_steps, SIGMA_MIN, SIGMA_MAX, RHO)
    if kind == "ddpm":
        ts = torch.linspace(999, 0, n_steps, dtype=torch.float64).round()
        return append_zero(_DDPM.sigma_of_t(ts))
    return vp_sigmas(n_steps)


def sample(denoiser, name: str, n_steps: int, n: int, seed: int,
           sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` samples (n, 1, 8, 8) from ``denoiser(x, σ)`` with sampler ``name``; the initial
    noise and the sampler's noise come from ``seed`` (the same start for every sampler)."""
    sigmas = sigmas_for(name, n_steps) if sigmas is None else sigmas
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=gen) * float(sigmas[0])
    sigmas = sigmas.float()
    if name == "euler":
        return S.sample_euler(denoiser, x, sigmas)
    if name == "heun":
        return S.sample_heun(denoiser, x, sigmas)
    if name == "edm_churn":
        # churn over the middle of the range, as EDM's tuned CIFAR-10 VP settings do (Table 5)
        return S.sample_edm(denoiser, x, sigmas, s_churn=min(40.0, 2.0 * n_steps),
                            s_tmin=0.05, s_tmax=50.0, s_noise=1.003, generator=gen)
    if name == "dpmpp_2m":
        return S.sample_dpmpp_2m(denoiser, x, sigmas)
    if name == "ddim":
        return S.sample_ddim(denoiser, x, sigmas, eta=0.0)
    if name == "ddpm":
        return S.sample_ddpm_ancestral(denoiser, x, sigmas, generator=gen)
    if name == "euler_maruyama":
        return S.sample_euler_maruyama(denoiser, x, sigmas, generator=gen)
    if name == "pc":
        return S.sample_pc(denoiser, x, sigmas, snr=0.16, generator=gen)
    raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")


def conditional(model: EDMPrecond, labels: torch.Tensor):
    """``D(x, σ)`` of the conditional model with ``labels`` (n,) bound (``None``: ``∅``)."""

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return model(x, sigma, labels)

    return denoiser


def balanced_labels(n: int) -> torch.Tensor:
    """``0, 1, …, 9, 0, 1, …``: ``n`` labels with every class equally often (±1)."""
    return torch.arange(n) % N_CLASSES


def image_grid(ax, images: torch.Tensor, nrow: int, title: str = "") -> None:
    """Show (n, 1, 8, 8) images in [-1, 1] as a grid with ``nrow`` images per row."""
    imgs = images.detach().float().clamp(-1, 1)[:, 0].cpu().numpy()
    n = imgs.shape[0]
    ncol_rows = math.ceil(n / nrow)
    h, w = imgs.shape[1:]
    canvas = np.ones((ncol_rows * (h + 1) + 1, nrow * (w + 1) + 1))
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = \
            (1 - imgs[i]) / 2                       # white background, dark ink
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


class one_thread:
    """Run torch on one thread inside the block (restoring the old count after).

    Why: these 8×8 convolutions are too small to gain from a second thread, and on a machine
    shared with other jobs OpenMP's spin-waiting made a two-thread training step ~40× slower
    than a one-thread step (measured: 7 s vs 0.16 s per step at load 10 on 2 cores).
    """

    def __enter__(self):
        self.previous = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)
        return False
