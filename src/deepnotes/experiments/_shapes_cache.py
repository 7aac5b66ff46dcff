"""Networks trained once on the shapes world and cached, shared by the text-to-image topics.

Not a topic: the registry skips modules whose name starts with an underscore.

The stable-diffusion, controlnet and sd3 experiments (and ``benchmarks/latent_diffusion.py``)
need the same frozen parts, as the real systems download them:

- :func:`autoencoder` — the KL autoencoder (f = 4, ``c = 4`` as SD1 or ``c = 16`` as SD3;
  32×32 → 8×8 latents) with its latent scale ``s = 1 / std(z)`` (and SD3's shift) computed from
  data; meta holds the held-out reconstruction MSE and PSNR;
- :func:`text_encoder` — the CLIP text transformer, trained contrastively with an image encoder
  (:func:`contrastive_model`) and frozen; meta holds the held-out retrieval accuracy;
- :func:`caption_scorer` — the attribute classifier behind the caption score; meta holds its
  held-out caption score on real images (close to 1, else the score means nothing) and its
  per-check rates;
- :func:`shapes_fid` — a :class:`~deepnotes.diffusion.caption_score.ShapesFID` on the
  classifier's features with a held-out reference set, and the floor (real vs reference).

Each function takes ``small=True`` for a seconds-long training of a narrow network (the smoke
presets use it: untrained-quality stand-ins with the real interfaces), or an explicit spec.
A network lives at ``<out or runs/>/_cache/shapes/<name>-<key>.pt`` with ``key`` a hash of its
spec and its :data:`CACHE_VERSION` (see :mod:`deepnotes.experiments._digits_cache`, whose machinery
this reuses: an interrupted training continues from its ``.ckpt/`` directory), and trains on
``device`` (an experiment passes ``run.device``). A cached file that cannot be read raises
``ValueError`` naming it. Every loop runs through :func:`deepnotes.nn.training.fit`.

Data: training draws batches ``0, 1, …`` of ``ShapesWorld(seed, "train")``; evaluations use the
``"val"`` split; the FID reference uses the ``"test"`` split.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from deepnotes.data.shapes import ShapesWorld
from deepnotes.diffusion import caption_score as CS
from deepnotes.diffusion.autoencoder import KLAutoencoder, latent_scale_from_data, vae_loss
from deepnotes.diffusion.text_encoder import (
    ContrastiveModel,
    TextEncoder,
    TextEncoderConfig,
    clip_loss,
    retrieval_accuracy,
    same_caption,
)
from deepnotes.experiments import _digits_cache
from deepnotes.nn.training import fit

CACHE_VERSION = {"autoencoder": 1, "attribute-classifier": 3, "clip": 2}
"""Per artefact: bump when its training (or its network's code) changes, so a stale network is
not reused. The classifier's 2: attribute targets on the 3×3 cells around each centre, 3: the
augmentations of :func:`augment`; CLIP's 2:
a linear warm-up (at 2e-3 without one its embeddings collapsed to a constant, loss ln B)."""

GROUP = "shapes"


def cache_dir(out: str | None) -> Path:
    """``<out or runs/>/_cache/shapes`` (created)."""
    return _digits_cache.cache_dir(out, GROUP)


def _path(out: str | None, name: str, spec) -> Path:
    version = CACHE_VERSION[name.split("-c")[0] if name.startswith("autoencoder") else name]
    return cache_dir(out) / f"{name}-{_digits_cache.spec_key(spec, version)}.pt"


def _load_or_train(path: Path, module: nn.Module, train, log) -> dict:
    """:func:`~deepnotes.experiments._digits_cache.load_or_train`, with a clear error for a
    cached file that is truncated, not a torch file, or not of this network."""
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True, map_location="cpu")
            module.load_state_dict(blob["state"])
        except Exception as exc:  # noqa: BLE001  (any unreadable file gets the same advice)
            raise ValueError(f"cached network {path} is corrupt or stale ({type(exc).__name__}: "
                             f"{exc}); delete it to train it again") from exc
    return _digits_cache.load_or_train(path, module, train, log)


def _device(device) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def _fit(model, loss_fn, batches, spec, track, description: str, ckpt: Path) -> list[float]:
    """Adam at ``spec.lr`` with a cosine decay to 0.1× over ``spec.n_steps`` (after a linear
    warm-up over ``spec.warmup_steps`` when the spec has one), checkpointed."""
    warmup = getattr(spec, "warmup_steps", 0)

    def factor(k: int) -> float:
        ramp = min(1.0, (k + 1) / warmup) if warmup else 1.0
        return ramp * (0.1 + 0.45 * (1 + math.cos(math.pi * min(k / spec.n_steps, 1.0))))

    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    result = fit(model, loss_fn, batches, opt, spec.n_steps, scheduler=sched,
                 clip_grad_norm=spec.clip_grad_norm, progress=track, description=description,
                 checkpoint_dir=ckpt, checkpoint_every=_digits_cache.CHECKPOINT_EVERY,
                 resume=True)
    return result.history["loss"]


# --- autoencoder -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AutoencoderSpec:
    """Architecture and training of a shapes KL autoencoder (the cache key).

    Attributes
    ----------
    latent_channels : int
        ``c``: 4 (SD1) or 16 (SD3).
    block_out_channels : tuple of int
        Channels per level; three levels give f = 4 (32×32 → 8×8).
    norm_num_groups : int
    n_steps, batch_size, lr : training length, images per step, Adam's peak rate
    reconstruction : {"l1", "l2"}
        Pixel loss of :func:`~deepnotes.diffusion.autoencoder.vae_loss`.
    kl_weight : float
        ``β`` (LDM: 1e-6).
    shift : bool
        Also subtract the latent mean (SD3's ``shift_factor``) — set for ``c = 16``.
    n_eval : int
        Held-out images for the PSNR and the latent statistics.
    clip_grad_norm : float
    seed : int
    """

    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (8, 16, 32)
    norm_num_groups: int = 8
    n_steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-3
    reconstruction: str = "l2"
    kl_weight: float = 1e-6
    shift: bool = False
    n_eval: int = 512
    clip_grad_norm: float = 1e4
    seed: int = 0


def autoencoder_spec(c: int = 4, small: bool = False) -> AutoencoderSpec:
    """The spec :func:`autoencoder` uses for ``c`` latent channels (SD3's shift when c = 16)."""
    if c not in (4, 16):
        raise ValueError(f"c must be 4 or 16, got {c!r}")
    if small:
        return AutoencoderSpec(latent_channels=c, block_out_channels=(8, 8, 8), n_steps=15,
                               batch_size=16, shift=c == 16, n_eval=64)
    return AutoencoderSpec(latent_channels=c, shift=c == 16)


def _build_autoencoder(spec: AutoencoderSpec) -> KLAutoencoder:
    torch.manual_seed(spec.seed)
    return KLAutoencoder(latent_channels=spec.latent_channels,
                         block_out_channels=spec.block_out_channels,
                         norm_num_groups=spec.norm_num_groups)


@torch.no_grad()
def reconstruction_error(model: KLAutoencoder, images: torch.Tensor) -> dict[str, float]:
    """MSE per pixel (images in [0, 1] units) and PSNR in dB (peak 1) of the posterior-mode
    reconstructions, clamped to [-1, 1]; ``images`` (n, 3, 32, 32) in [-1, 1]."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        rec = torch.cat([model(x.to(device)).clamp(-1, 1).cpu() for x in images.split(256)])
    finally:
        model.train(was_training)
    mse = float(((rec - images) / 2).pow(2).mean())
    return {"mse": mse, "psnr_db": 10 * math.log10(1 / max(mse, 1e-12))}


def autoencoder(c: int = 4, log=print, track=None, *, small: bool = False,
                spec: AutoencoderSpec | None = None, out: str | None = None,
                device=None) -> tuple[KLAutoencoder, dict]:
    """The shapes autoencoder with ``c`` latent channels, frozen, and its meta.

    Training: :func:`~deepnotes.diffusion.autoencoder.vae_loss` with ``β`` = 1e-6 and squared
    error by default (LDM uses L1 + LPIPS + a GAN; on images that are mostly black background,
    L1 drives uncertain pixels to the median, black: in a development run, after 100 steps of
    32 images, 14.0 dB held-out PSNR against 15.7 dB for squared error), Adam with a cosine
    decay. Then ``s = 1 / std(z)`` (and ``b = mean(z)`` when
    ``spec.shift``) over ``n_eval`` held-out images (:func:`latent_scale_from_data`), set on the
    returned model, so ``encode_latents``/``decode_latents`` work in the diffusion's units.

    Returns
    -------
    model : KLAutoencoder
        On ``device``, eval mode, no gradients.
    meta : dict
        ``mse`` and ``psnr_db`` (held-out, posterior mode), ``scaling_factor``, ``shift_factor``,
        ``train_s`` (wall seconds of the training when it ran, kept in the cache),
        ``losses`` (per step), ``spec``.
    """
    spec = spec or autoencoder_spec(c, small)
    device = _device(device)
    model = _build_autoencoder(spec).to(device)
    world = ShapesWorld(spec.seed, "train")

    def train(ckpt: Path) -> dict:
        t0 = time.perf_counter()
        gen = torch.Generator(device).manual_seed(spec.seed)

        def batches(step):
            return world.batch(step, spec.batch_size).images.to(device)

        def loss_fn(m, x):
            return vae_loss(m, x, kl_weight=spec.kl_weight, reconstruction=spec.reconstruction,
                            generator=gen)

        losses = _fit(model, loss_fn, batches, spec, track, f"train autoencoder c={c}", ckpt)
        held_out = ShapesWorld(spec.seed, "val").batch(0, spec.n_eval).images
        scale, shift = latent_scale_from_data(model, held_out.to(device), shift=spec.shift,
                                              generator=gen)
        model.set_latent_scale(scale, shift)
        return {**reconstruction_error(model, held_out), "scaling_factor": scale,
                "shift_factor": shift, "train_s": time.perf_counter() - t0, "losses": losses,
                "spec": asdict(spec)}

    meta = _load_or_train(_path(out, f"autoencoder-c{spec.latent_channels}", spec), model,
                          train, log)
    model.set_latent_scale(meta["scaling_factor"], meta["shift_factor"])
    return model.eval().requires_grad_(False), meta


# --- attribute classifier and FID --------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierSpec:
    """The attribute classifier behind the caption score and the shapes FID (the cache key).

    Training images are perturbed (:func:`augment`) so that generated images, which always pass
    through a decoder, are read by what they show rather than by their decoding artefacts: a
    clean-trained classifier read red and green shapes of the c = 4 autoencoder's
    reconstructions as blue (a background lifted by a few percent confused it). Per image:
    Gaussian blur of standard deviation uniform in ``[0, blur]`` pixels; per-channel gain
    uniform in ``[1 - gain, 1]`` and offset uniform in ``[0, offset]`` (of the [-1, 1] range);
    Gaussian noise of standard deviation uniform in ``[0, noise]``."""

    channels: int = 16
    n_steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    noise: float = 0.1
    blur: float = 1.0
    gain: float = 0.25
    offset: float = 0.15
    n_eval: int = 1000
    clip_grad_norm: float = 10.0
    seed: int = 0


def augment(images: torch.Tensor, spec: ClassifierSpec, gen: torch.Generator) -> torch.Tensor:
    """The training perturbations of :class:`ClassifierSpec` on ``images`` (B, 3, H, W) in
    [-1, 1] (CPU), clamped back to [-1, 1]."""
    b = images.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    sigma = u(b) * spec.blur
    r = torch.arange(-2, 3, dtype=torch.float32)
    k1 = torch.exp(-r[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)                                       # (B, 5)
    k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(3, 0)[:, None]  # (3B, 1, 5, 5)
    x = torch.nn.functional.conv2d(
        torch.nn.functional.pad(images.reshape(1, 3 * b, *images.shape[2:]), (2, 2, 2, 2),
                                mode="replicate"), k2, groups=3 * b).reshape(images.shape)
    gain = 1 - u(b, 3, 1, 1) * spec.gain
    x = (x + 1) * gain - 1 + u(b, 3, 1, 1) * spec.offset
    x = x + u(b, 1, 1, 1) * spec.noise * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def classifier_spec(small: bool = False) -> ClassifierSpec:
    """The spec :func:`caption_scorer` uses."""
    return ClassifierSpec(channels=4, n_steps=15, batch_size=16, n_eval=64) if small \
        else ClassifierSpec()


def caption_scorer(log=print, track=None, *, small: bool = False,
                   spec: ClassifierSpec | None = None, out: str | None = None,
                   device=None) -> tuple[CS.AttributeClassifier, dict]:
    """The trained :class:`~deepnotes.diffusion.caption_score.AttributeClassifier`, frozen.

    Trained with :func:`~deepnotes.diffusion.caption_score.attribute_loss` on train-split
    scenes. ``meta``: ``caption_score`` of ``n_eval`` real held-out images (and ``details``,
    :func:`~deepnotes.diffusion.caption_score.caption_score_details`), ``train_s``, ``losses``.
    Score generated images with ``caption_score(predict_scenes(model, images), captions)``.
    """
    spec = spec or classifier_spec(small)
    device = _device(device)
    torch.manual_seed(spec.seed)
    model = CS.AttributeClassifier(spec.channels).to(device)
    world = ShapesWorld(spec.seed, "train")

    def train(ckpt: Path) -> dict:
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(spec.seed)

        def batches(step):
            b = world.batch(step, spec.batch_size)
            return augment(b.images, spec, gen).to(device), CS.scene_targets(b.scenes, device)

        def loss_fn(m, batch):
            return CS.attribute_loss(m, *batch)

        losses = _fit(model, loss_fn, batches, spec, track, "train attribute classifier", ckpt)
        held = ShapesWorld(spec.seed, "val").batch(0, spec.n_eval)
        details = CS.caption_score_details(CS.predict_scenes(model, held.images), held.captions)
        return {"caption_score": details["full"], "details": details, "n_eval": spec.n_eval,
                "train_s": time.perf_counter() - t0, "losses": losses, "spec": asdict(spec)}

    meta = _load_or_train(_path(out, "attribute-classifier", spec), model, train, log)
    return model.eval().requires_grad_(False), meta


def shapes_fid(log=print, track=None, *, small: bool = False, n_reference: int = 2000,
               out: str | None = None, device=None) -> tuple[CS.ShapesFID, dict]:
    """A :class:`~deepnotes.diffusion.caption_score.ShapesFID` on the :func:`caption_scorer`
    network with ``n_reference`` test-split images as the reference, and ``meta``:
    ``floor_fid`` — the FID of ``min(n_reference, 500)`` val-split real images against the
    reference (what a perfect generator scores with that many samples), ``floor_n``, and the
    classifier's meta under ``classifier``."""
    net, meta = caption_scorer(log, track, small=small, out=out, device=device)
    fid = CS.ShapesFID(net, ShapesWorld(0, "test").batch(0, n_reference).images)
    n = min(n_reference, 500)
    floor = fid.fid(ShapesWorld(0, "val").batch(1, n).images)
    return fid, {"floor_fid": floor, "floor_n": n, "classifier": meta}


# --- text encoder ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextEncoderSpec:
    """The CLIP-style pair trained contrastively on the shapes world (the cache key).

    ``hidden_size``/``num_hidden_layers``/``num_attention_heads``/``intermediate_size``/``causal``
    shape the :class:`~deepnotes.diffusion.text_encoder.TextEncoder`; ``image_channels`` and
    ``image_width`` the image encoder; ``projection_dim`` the shared space. Adam at ``lr`` after
    a linear warm-up of ``warmup_steps`` (at 1e-3 and above the loss spikes or the embeddings
    collapse)."""

    hidden_size: int = 64
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 256
    causal: bool = True
    image_channels: int = 16
    image_width: int = 128
    projection_dim: int = 64
    n_steps: int = 800
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 50
    n_eval: int = 500
    clip_grad_norm: float = 1.0
    seed: int = 0

    def text_config(self) -> TextEncoderConfig:
        return TextEncoderConfig(hidden_size=self.hidden_size,
                                 num_hidden_layers=self.num_hidden_layers,
                                 num_attention_heads=self.num_attention_heads,
                                 intermediate_size=self.intermediate_size, causal=self.causal)


def text_encoder_spec(small: bool = False) -> TextEncoderSpec:
    """The spec :func:`text_encoder` uses."""
    if small:
        return TextEncoderSpec(hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                               image_channels=4, image_width=32, projection_dim=16, n_steps=15,
                               batch_size=32, n_eval=64)
    return TextEncoderSpec()


def contrastive_model(log=print, track=None, *, small: bool = False,
                      spec: TextEncoderSpec | None = None, out: str | None = None,
                      device=None) -> tuple[ContrastiveModel, dict]:
    """The trained text-image pair (:class:`~deepnotes.diffusion.text_encoder.ContrastiveModel`),
    frozen. Training: :func:`~deepnotes.diffusion.text_encoder.clip_loss` with duplicate
    captions of a batch counted as positives, Adam with a cosine decay. ``meta``:
    ``retrieval`` (top-1 text→image and image→text among ``n_eval`` held-out pairs, chance
    ≈ 1/n_eval), ``logit_scale`` (the learned ``exp(t)``), ``train_s``, ``losses``."""
    spec = spec or text_encoder_spec(small)
    device = _device(device)
    torch.manual_seed(spec.seed)
    model = ContrastiveModel(spec.text_config(), spec.image_channels, spec.image_width,
                             spec.projection_dim).to(device)
    world = ShapesWorld(spec.seed, "train")

    def train(ckpt: Path) -> dict:
        t0 = time.perf_counter()

        def batches(step):
            b = world.batch(step, spec.batch_size)
            return (b.tokens.to(device), b.attention_mask.to(device), b.images.to(device),
                    same_caption(b.captions).to(device))

        def loss_fn(m, batch):
            tokens, mask, images, pos = batch
            return clip_loss(m(tokens, images, mask), pos)

        losses = _fit(model, loss_fn, batches, spec, track, "train CLIP text encoder", ckpt)
        held = ShapesWorld(spec.seed, "val").batch(0, spec.n_eval)
        acc = retrieval_accuracy(model, held.tokens.to(device), held.images.to(device),
                                 held.captions, held.attention_mask.to(device))
        return {"retrieval": acc, "n_eval": spec.n_eval,
                "logit_scale": float(model.logit_scale.detach().exp().clamp(max=100)),
                "train_s": time.perf_counter() - t0, "losses": losses, "spec": asdict(spec)}

    meta = _load_or_train(_path(out, "clip", spec), model, train, log)
    return model.eval().requires_grad_(False), meta


def text_encoder(log=print, track=None, *, small: bool = False,
                 spec: TextEncoderSpec | None = None, out: str | None = None,
                 device=None) -> tuple[TextEncoder, dict]:
    """The frozen text transformer of :func:`contrastive_model` and its meta.

    ``encoder(tokens, attention_mask) -> (last_hidden_state (B, T, d), pooled (B, d))`` with
    ``d = spec.hidden_size`` (64); ``encoder.encode_captions(captions)`` tokenizes first.
    """
    model, meta = contrastive_model(log, track, small=small, spec=spec, out=out, device=device)
    return model.text_model, meta
