"""Digits diffusion shared by the edm, classifier-guidance and diffusion-sde experiments and
``benchmarks/diffusion.py``: data, training (cached), the digits FID and the sampler zoo.

Not a topic: the registry skips modules whose name starts with an underscore.

Trained networks are cached under ``<runs root>/_cache/diffusion-digits/<name>-<key>.pt``, with
``key`` a hash of the training spec, so the EDM model behind the edm post is trained once and
reused by classifier guidance and the benchmark (``run.log`` says whether a cache was hit); see
:mod:`deepnotes.experiments._digits_cache`, which also checkpoints an unfinished training.
Every loop runs through :func:`deepnotes.nn.training.fit`. The FID feature network, its
evaluator and the classifiers live in :mod:`deepnotes.nn.digits_models`; their names are
re-exported here for the modules that still import them from this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepnotes.data import N_LEVELS, load_digits
from deepnotes.diffusion import samplers as S
from deepnotes.diffusion.likelihood import bits_per_dim, ode_log_likelihood
from deepnotes.diffusion.parameterizations import EDMPrecond, edm_loss
from deepnotes.diffusion.processes import DiscreteVP
from deepnotes.diffusion.schedules import append_zero, karras_sigmas, vp_sigmas
from deepnotes.diffusion.unet import UNet
from deepnotes.experiments import _digits_cache
from deepnotes.nn.digits_models import (  # noqa: F401  (re-exported: the old import names)
    N_CLASSES,
    ClassifierSpec,
    DigitsFID,
    FeatureNet,
    build_classifier,
    digits,
    train_digits_classifier,
)
from deepnotes.nn.training import fit

# bump when training code changes, so stale networks are not reused. The port of the loops to
# fit left every trained network bit-identical, so the caches stay valid.
CACHE_VERSION = 1


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
    return _digits_cache.cache_dir(out, "diffusion-digits")


def _key(spec) -> str:
    return _digits_cache.spec_key(spec, CACHE_VERSION)


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
    idx = torch.randint(0, x.shape[0], (batch_size,), generator=gen, device=gen.device)
    return x[idx], y[idx]


def _anneal(n_steps: int):
    """LR factor of step ``k``: the last 10 % of steps anneal the learning rate to 0.1×, which
    sharpens the EMA weights."""

    def factor(step: int) -> float:
        frac = max(0.0, (step / max(n_steps, 1) - 0.9) / 0.1)
        return 1 - 0.9 * frac

    return factor


def _fit_edm(model, loss_fn, batches, n_steps: int, spec, track, description: str, ckpt: Path,
             generators) -> list[float]:
    """Adam with the :func:`_anneal` schedule and the warmed-up EMA (copied into ``model`` at
    the end); checkpointed under ``ckpt``. Returns the loss per step."""
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _anneal(n_steps))
    result = fit(model, loss_fn, batches, opt, n_steps, scheduler=sched, ema_decay=spec.ema,
                 ema_warmup=True, progress=track, description=description,
                 checkpoint_dir=ckpt, checkpoint_every=_digits_cache.CHECKPOINT_EVERY,
                 resume=True, generators=generators)
    result.ema.copy_to(model)
    return result.history["loss"]


def train_denoiser(spec: DenoiserSpec, out: str | None, log, track,
                   device=None) -> tuple[EDMPrecond, dict]:
    """The class-conditional EDM U-Net (EMA weights) and ``meta`` (sigma_data, loss curve).

    Training: Adam, log-normal σ (Karras et al. 2022, Table 1), labels dropped to ``∅`` with
    probability ``p_uncond`` (Ho & Salimans 2022, Algorithm 1). The network is built on the CPU
    (the same initial weights everywhere) and trains and lives on ``device`` (default CPU); the
    training noise comes from a generator on that device.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    x, y = digits("train")
    sigma_data = float(x.std())
    x, y = x.to(device), y.to(device)
    net = UNet(1, spec.channels, spec.channel_mult, N_CLASSES, spec.emb_dim)
    model = EDMPrecond(net, sigma_data).to(device)

    def train(ckpt: Path) -> dict:
        torch.manual_seed(spec.seed)
        gen = torch.Generator(device).manual_seed(spec.seed)

        def batches(step):
            xb, yb = _batches(x, y, spec.batch_size, gen)
            drop = torch.rand(yb.shape, generator=gen, device=device) < spec.p_uncond
            return xb, torch.where(drop, torch.full_like(yb, net.null_label), yb)

        def loss_fn(m, batch):
            xb, yb = batch
            return edm_loss(m, xb, spec.p_mean, spec.p_std, gen, class_labels=yb)

        losses = _fit_edm(model, loss_fn, batches, spec.n_steps, spec, track,
                          "train EDM U-Net", ckpt, [gen])
        return {"sigma_data": sigma_data, "losses": losses}

    meta = _digits_cache.load_or_train(cache_dir(out) / f"edm-unet-{_key(spec)}.pt", model,
                                       train, log)
    model.sigma_data = meta["sigma_data"]
    return model.eval().requires_grad_(False), meta


class _DequantEpochs:
    """``step -> batch`` of :func:`train_dequantized_denoiser`: at each epoch's first step,
    fresh dequantisation noise for the whole train split and a new order; the last incomplete
    batch is dropped. The epoch's data are its state, so a checkpoint resumes mid-epoch."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator, gen: torch.Generator):
        self.n, self.batch_size, self.rng, self.gen = n, batch_size, rng, gen
        self.per_epoch = n // batch_size
        self.x = self.order = None

    def __call__(self, step: int) -> torch.Tensor:
        b = step % self.per_epoch
        if b == 0:  # the noise u from numpy on the CPU, moved to the generator's device
            self.x = dequantized_digits("train", self.rng).to(self.gen.device)
            self.order = torch.randperm(self.n, generator=self.gen, device=self.gen.device)
        return self.x[self.order[b * self.batch_size:(b + 1) * self.batch_size]]

    def state_dict(self) -> dict:
        return {"x": self.x, "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        self.x, self.order = state["x"], state["order"]


def train_dequantized_denoiser(spec: DequantSpec, out: str | None, log, track,
                               device=None) -> tuple[EDMPrecond, dict]:
    """The unconditional EDM U-Net (EMA weights) fitted to :func:`dequantized_digits`, and
    ``meta`` (sigma_data, loss per step).

    Every epoch draws fresh dequantisation noise ``u`` for the whole train split and visits it
    in a random order (the last incomplete batch is dropped), as the flows' digits training
    does; otherwise the training is :func:`train_denoiser`'s without labels (and on ``device``
    in the same way).
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    rng = np.random.default_rng(spec.seed)
    sigma_data = float(dequantized_digits("train", rng).std())
    net = UNet(1, spec.channels, spec.channel_mult, 0, spec.emb_dim)
    model = EDMPrecond(net, sigma_data).to(device)

    def train(ckpt: Path) -> dict:
        torch.manual_seed(spec.seed)
        gen = torch.Generator(device).manual_seed(spec.seed)
        n = load_digits("train")[0].shape[0]
        batches = _DequantEpochs(n, spec.batch_size, rng, gen)

        def loss_fn(m, xb):
            return edm_loss(m, xb, spec.p_mean, spec.p_std, gen)

        losses = _fit_edm(model, loss_fn, batches, spec.epochs * batches.per_epoch, spec, track,
                          "train EDM U-Net on dequantised digits", ckpt, [gen, rng])
        return {"sigma_data": sigma_data, "losses": losses}

    meta = _digits_cache.load_or_train(cache_dir(out) / f"edm-dequant-{_key(spec)}.pt", model,
                                       train, log)
    model.sigma_data = meta["sigma_data"]
    return model.eval().requires_grad_(False), meta


def train_classifier(spec: ClassifierSpec, sigma_data: float, out: str | None, log,
                     track, device=None) -> tuple[nn.Module, dict]:
    """A :class:`FeatureNet` (``noisy=False``) or a :class:`NoisyClassifier` trained on
    ``x_0 + σε`` with ``ln σ ~ N(p_mean, p_std²)`` (:func:`train_digits_classifier`), cached;
    meta holds the clean test accuracy.

    The network is initialised on the CPU from torch's global generator as it stands at the
    call (as before the move to the library), so cached networks stay valid, then moved to
    ``device`` (default CPU), where it trains (the library moves each batch to it)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    model = build_classifier(spec, sigma_data).to(device)

    def train(ckpt: Path) -> dict:
        _, meta = train_digits_classifier(
            spec, sigma_data, model, progress=track, checkpoint_dir=ckpt,
            checkpoint_every=_digits_cache.CHECKPOINT_EVERY, resume=True)
        return meta

    prefix = "noisy-clf" if spec.noisy else "fid-clf"
    meta = _digits_cache.load_or_train(cache_dir(out) / f"{prefix}-{_key(spec)}.pt", model,
                                       train, log)
    return model.eval().requires_grad_(False), meta


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
           sigmas: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """``n`` samples (n, 1, 8, 8) on ``device`` (default CPU) from ``denoiser(x, σ)`` with
    sampler ``name``; the initial noise and the sampler's noise come from ``seed`` (the same
    start for every sampler) through a generator on ``device``."""
    device = torch.device("cpu") if device is None else torch.device(device)
    sigmas = sigmas_for(name, n_steps) if sigmas is None else sigmas
    gen = torch.Generator(device).manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=gen, device=device) * float(sigmas[0])
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


def balanced_labels(n: int, device=None) -> torch.Tensor:
    """``0, 1, …, 9, 0, 1, …``: ``n`` labels (on ``device``, default CPU) with every class
    equally often (±1)."""
    return torch.arange(n, device=device) % N_CLASSES


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
