"""One image through every upsampling method, and the checkerboard of transposed convolution.

Three parts, all on a grayscale crop of scikit-learn's bundled ``china.jpg`` (no download):

1. *Gallery*: the crop is average-pooled by ``factor`` and brought back with each method of
   ``deepnotes.nn.upsampling`` (nearest, bilinear with both corner conventions, bicubic, a
   transposed convolution with the fixed bilinear kernel, max-unpooling from the max-pool indices
   of the full image). PSNR against the original, and each op's largest difference from its
   ``torch.nn.functional`` counterpart on this image.
2. *Random init*: untrained 2x upsampling layers, many initialisations, on a constant image and on
   the low-resolution crop: a transposed convolution (kernel 3 and kernel 4, stride 2), resize
   (nearest or bilinear) then a 3x3 convolution, and sub-pixel convolution (conv + pixel shuffle)
   with default and ICNR initialisation. The "checkerboard fraction" is the share of an output's
   non-DC spectral power at the three period-2 frequencies (post Eq. 8).
3. *Trained*: a small 2x super-resolution network with each of three upsamplers (transposed conv,
   resize-conv, sub-pixel) trained with ``deepnotes.nn.training.fit`` on patches of the left part
   of the image, evaluated on the right part: PSNR and the checkerboard fraction of the error.

Figures: ``gallery``, ``checkerboard_random`` (outputs on a constant input and their mean power
spectra), ``trained_outputs``. Headline: the random-init checkerboard fraction of the stride-2,
kernel-3 transposed convolution on the image; peer: the same of resize (nearest) + convolution.
Torch work runs on ``run.device``.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import new_figure
from deepnotes.nn import upsampling as U
from deepnotes.nn.training import fit

RANDOM_METHODS = {
    "transposed_k3": "transposed conv, k=3, s=2",
    "transposed_k4": "transposed conv, k=4, s=2",
    "resize_nearest_conv": "nearest resize + 3×3 conv",
    "resize_bilinear_conv": "bilinear resize + 3×3 conv",
    "subpixel": "sub-pixel conv (default init)",
    "subpixel_icnr": "sub-pixel conv (ICNR init)",
}
# the same, in three short lines for the six narrow panels of the random-init figure
RANDOM_TITLES = {
    "transposed_k3": "transposed\nconv\n" + r"$k=3,\ s=2$",
    "transposed_k4": "transposed\nconv\n" + r"$k=4,\ s=2$",
    "resize_nearest_conv": "nearest\nresize +\n" + r"$3\times3$ conv",
    "resize_bilinear_conv": "bilinear\nresize +\n" + r"$3\times3$ conv",
    "subpixel": "sub-pixel\nconv, default\ninit",
    "subpixel_icnr": "sub-pixel\nconv, ICNR\ninit",
}
TRAINED_METHODS = ("transposed_k4", "resize_nearest_conv", "subpixel")


@dataclass
class Config(ExperimentConfig):
    crop: int = 192
    """Side of the square grayscale crop of china.jpg (after 2x area downsampling), pixels."""
    factor: int = 4
    """Down- and upsampling factor of the gallery."""
    n_inits: int = 200
    """Random initialisations per untrained layer in part 2."""
    channels: int = 8
    """Channels of the untrained layers (input image repeated; output channels averaged)."""
    train_steps: int = 1500
    """Optimiser steps of each super-resolution network in part 3 (0 skips part 3)."""
    width: int = 32
    """Feature channels of the super-resolution networks."""
    patch: int = 24
    """Low-resolution training patch side, pixels."""
    batch_size: int = 32
    """Patches per training step."""
    lr: float = 2e-3
    """Adam learning rate of part 3."""
    threads: int = 1
    """Torch CPU threads: the tensors are small, a second thread mostly adds sync cost."""


PRESETS = make_presets(
    smoke=Config(crop=64, n_inits=2, train_steps=3, width=4, patch=8, batch_size=2),
    quick=Config(crop=96, n_inits=16, train_steps=60, width=8, batch_size=16),
    full=Config(train_steps=500, width=16, batch_size=16),
)
HEADLINE = "random/transposed_k3_checkerboard_fraction"
PEER = "random/resize_nearest_conv_checkerboard_fraction"


def load_photo() -> torch.Tensor:
    """scikit-learn's ``china.jpg`` in grayscale, [0, 1], area-downsampled 2x: (1, 1, 212, 320)."""
    # Read the file straight from the installed package: importing sklearn costs seconds.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-learn (which ships china.jpg) is not installed")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "images" / "china.jpg"
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0  # (427, 640, 3)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    x = torch.from_numpy(gray)[None, None].float()
    return F.avg_pool2d(x, 2)[:, :, :212]  # the photo's JPEG blocks average out


def load_image(crop: int) -> torch.Tensor:
    """A square crop of :func:`load_photo` around the pagoda (left edge), (1, 1, crop, crop)."""
    x = load_photo()
    h = x.shape[2]
    if crop > h:
        raise ValueError(f"crop must be <= {h}, got {crop}")
    top = (h - crop) // 2
    return x[:, :, top:top + crop, :crop].contiguous()


def checkerboard_fraction(y: torch.Tensor) -> torch.Tensor:
    """Share of non-DC spectral power at the period-2 frequencies (Eq. 8).

    y : Tensor, shape (..., H, W) with H and W even. Returns shape (...).
    """
    h, w = y.shape[-2:]
    power = torch.fft.fft2(y - y.mean((-2, -1), keepdim=True)).abs().square()
    nyq = power[..., h // 2, 0] + power[..., 0, w // 2] + power[..., h // 2, w // 2]
    return nyq / power.sum((-2, -1)).clamp_min(1e-30)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    return float(10 * math.log10(1.0 / F.mse_loss(a.clamp(0, 1), b).item()))


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The fixed transposed-conv kernel that performs bilinear upsampling, shape (2f, 2f)."""
    centre = (2 * factor - 1) / 2
    ramp = 1 - (torch.arange(2 * factor) - centre).abs() / factor
    return ramp[:, None] * ramp[None, :]


def gallery(img: torch.Tensor, factor: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Upsample the pooled image back with each method; return images and max diffs vs F.*."""
    low = F.avg_pool2d(img, factor)
    size = img.shape[2:]
    outs, diffs = {}, {}
    for name, kw in {"nearest": dict(mode="nearest"),
                     "bilinear": dict(mode="bilinear", align_corners=False),
                     "bilinear_corners": dict(mode="bilinear", align_corners=True),
                     "bicubic": dict(mode="bicubic", align_corners=False)}.items():
        outs[name] = U.interpolate(low, size=tuple(size), **kw)
        diffs[name] = (outs[name] - F.interpolate(low, size=tuple(size), **kw)).abs().max()
    # Transposed conv with the bilinear kernel (FCN's initialisation): the border is replicated
    # first so the edge rows see the same overlap count as the interior.
    k = bilinear_kernel(factor)[None, None].to(img)
    padded = F.pad(low, (1, 1, 1, 1), mode="replicate")
    pad = factor // 2 + factor
    kw = dict(stride=factor, padding=pad)
    outs["transposed_bilinear"] = U.conv_transpose2d(padded, k, **kw)
    diffs["transposed_bilinear"] = (outs["transposed_bilinear"]
                                    - F.conv_transpose2d(padded, k, **kw)).abs().max()
    pooled, idx = F.max_pool2d(img, factor, return_indices=True)
    outs["max_unpool"] = U.max_unpool2d(pooled, idx, factor)
    diffs["max_unpool"] = (outs["max_unpool"] - F.max_unpool2d(pooled, idx, factor)).abs().max()
    outs["low_res"] = low
    # Same map, two routes: the bilinear kernel over the replicated border is bilinear resizing.
    diffs["transposed_bilinear_vs_bilinear"] = (outs["transposed_bilinear"]
                                                - outs["bilinear"]).abs().max()
    return outs, {k: float(v) for k, v in diffs.items()}


def random_layer(name: str, c: int, gen: torch.Generator) -> nn.Module:
    """A freshly initialised 2x upsampling layer, c -> c channels (PyTorch's default init)."""
    if name.startswith("transposed"):
        k = int(name[-1])
        # padding / output_padding chosen so that H -> 2H for both kernels
        layer = TransposedConv(c, c, k, stride=2, padding=1, output_padding=1 if k == 3 else 0)
    elif name.startswith("resize"):
        layer = ResizeConv(c, c, "nearest" if "nearest" in name else "bilinear")
    else:
        layer = SubPixel(c, c, icnr=name.endswith("icnr"))
    with torch.no_grad():
        # Re-draw with the given generator at PyTorch's default scale, U(-1/sqrt(fan_in), ...),
        # where fan_in = weight.shape[1] * kH * kW (for transposed convs too, as torch does).
        weight = next(p for p in layer.parameters() if p.dim() == 4)
        bound = 1 / math.sqrt(weight.shape[1] * weight[0, 0].numel())
        for p in layer.parameters():
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
        if isinstance(layer, SubPixel) and layer.icnr:
            layer.apply_icnr()
    return layer


class TransposedConv(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d``'s parameters, our scatter-add forward (Eqs. 5-6)."""

    def forward(self, x, output_size=None):
        return U.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class ResizeConv(nn.Module):
    """Resize by 2 (nearest or bilinear), then a 3x3 'same' convolution."""

    def __init__(self, c_in: int, c_out: int, mode: str = "nearest"):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x):
        ac = None if self.mode == "nearest" else False
        return self.conv(U.interpolate(x, scale_factor=2, mode=self.mode, align_corners=ac))


class SubPixel(nn.Module):
    """A 3x3 convolution to 4 c_out channels, then ``pixel_shuffle`` by 2 (Shi et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, icnr: bool = False):
        super().__init__()
        self.icnr = icnr
        self.conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1)
        if icnr:
            self.apply_icnr()

    @torch.no_grad()
    def apply_icnr(self):
        """ICNR (Aitken et al. 2017): the four sub-pixel filters of each output channel equal,
        so at initialisation the layer is nearest-resize followed by a convolution."""
        w, b = self.conv.weight, self.conv.bias  # (4 c_out, c_in, 3, 3)
        w.copy_(w[::4].repeat_interleave(4, dim=0))
        b.copy_(b[::4].repeat_interleave(4, dim=0))

    def forward(self, x):
        return U.pixel_shuffle(self.conv(x), 2)


def random_init_study(img, cfg: Config, run) -> tuple[dict, dict, dict]:
    """Checkerboard fractions (per init); example outputs and mean power spectra on the image."""
    c, dev = cfg.channels, run.device
    low = F.avg_pool2d(img, 2).to(dev).expand(1, c, -1, -1)
    const = torch.ones_like(low)
    gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    frac = {m: {"constant": [], "image": []} for m in RANDOM_METHODS}
    example, spectrum = {}, {}
    margin = 4  # drop the zero-padded border: its edge is not the artefact we measure
    for _ in run.track(range(cfg.n_inits), "random upsampling layers"):
        for m in RANDOM_METHODS:
            layer = random_layer(m, c, gen).to(dev)
            with torch.no_grad():
                for key, inp in (("constant", const), ("image", low)):
                    y = layer(inp).mean(1)[0, margin:-margin, margin:-margin]  # (H', W')
                    frac[m][key].append(float(checkerboard_fraction(y)))
                    if key == "image":
                        example.setdefault(m, y.cpu())
                        p = torch.fft.fftshift(torch.fft.fft2(y - y.mean()).abs().square().cpu())
                        spectrum[m] = spectrum.get(m, 0) + p / cfg.n_inits
    return frac, example, spectrum


class SRNet(nn.Module):
    """2x super-resolution: 3x3 conv, ReLU, upsampler, ReLU, 3x3 conv."""

    def __init__(self, kind: str, width: int):
        super().__init__()
        self.head = nn.Conv2d(1, width, 3, padding=1)
        if kind == "transposed_k4":
            self.up = TransposedConv(width, width, 4, stride=2, padding=1)
        elif kind == "resize_nearest_conv":
            self.up = ResizeConv(width, width)
        else:
            self.up = SubPixel(width, width)
        self.tail = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x):
        return self.tail(F.relu(self.up(F.relu(self.head(x)))))


TEST_COLUMNS = 128
"""The left 128 columns of the photo (the pagoda) are the test image; the rest is for training."""


def train_study(cfg: Config, run) -> dict:
    """Train each SR network on patches of the right part of the photo; test on the left part."""
    dev = run.device
    hr = load_photo().to(dev)
    train_hr, test_hr = hr[..., TEST_COLUMNS:], hr[..., :TEST_COLUMNS]
    test_lr = F.avg_pool2d(test_hr, 2)
    p = cfg.patch
    gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    # One fixed stream of patch corners, shared by the three networks.
    n_rows, n_cols = train_hr.shape[2] - 2 * p, train_hr.shape[3] - 2 * p
    corners = torch.stack([torch.randint(0, n_rows // 2 + 1, (cfg.train_steps, cfg.batch_size),
                                         generator=gen) * 2,
                           torch.randint(0, n_cols // 2 + 1, (cfg.train_steps, cfg.batch_size),
                                         generator=gen) * 2], -1)

    def batch(step):
        hr_p = torch.stack([train_hr[0, :, r:r + 2 * p, c:c + 2 * p]
                            for r, c in corners[step].tolist()])  # (B, 1, 2p, 2p)
        return F.avg_pool2d(hr_p, 2), hr_p

    def loss_fn(model, b):
        lr_p, hr_p = b
        return F.mse_loss(model(lr_p), hr_p)

    out = {}
    for kind in TRAINED_METHODS:
        torch.manual_seed(int(run.rng.integers(2**31)))
        model = SRNet(kind, cfg.width).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        res = fit(model, loss_fn, batch, opt, cfg.train_steps, progress=run.track)
        with torch.no_grad():
            pred = model(test_lr)
        crop = pred[0, 0, 4:-4, 4:-4]
        target = test_hr[0, 0, 4:-4, 4:-4]
        h, w = (crop.shape[0] // 2) * 2, (crop.shape[1] // 2) * 2
        out[kind] = {
            "pred": pred.cpu(), "loss": res.history["loss"], "psnr": psnr(pred, test_hr),
            "error_cb": float(checkerboard_fraction((crop - target)[:h, :w])),
            "output_cb": float(checkerboard_fraction(crop[:h, :w])),
        }
    bicubic = U.interpolate(test_lr, scale_factor=2, mode="bicubic", align_corners=False)
    out["bicubic"] = {"pred": bicubic.cpu(), "psnr": psnr(bicubic, test_hr)}
    out["test_hr"] = test_hr.cpu()
    return out


def _show(ax, img, title, vmin=0.0, vmax=1.0):
    ax.imshow(img.squeeze().numpy(), cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _gallery_figure(img, outs, psnrs, factor):
    fig, axes = new_figure(2, 4, size=(7.0, 4.2), constrained_layout=True)
    titles = {"nearest": "nearest", "bilinear": "bilinear", "bilinear_corners":
              "bilinear, corners aligned", "bicubic": r"bicubic ($a=-0.75$)",
              "transposed_bilinear": "transposed conv,\nbilinear kernel",
              "max_unpool": "max-unpool"}
    _show(axes[0, 0], img, "original")
    _show(axes[0, 1], outs["low_res"], f"{factor}× average-pooled")
    panels = list(titles)
    for ax, name in zip(axes.flat[2:], panels, strict=True):
        sub = f"{psnrs[name]:.1f} dB" if name in psnrs else "zeros but the maxima"
        _show(ax, outs[name], f"{titles[name]}\n{sub}")
    return fig


def _random_figure(example, spectrum, frac):
    n = len(RANDOM_METHODS)
    fig, axes = new_figure(2, n, size=(7.0, 3.0), constrained_layout=True)
    for j, (m, label) in enumerate(RANDOM_METHODS.items()):
        y = example[m]
        h0, w0 = y.shape[0] // 2 - 8, y.shape[1] // 2 - 8
        y = y[h0:h0 + 16, w0:w0 + 16]
        lo, hi = float(y.min()), float(y.max())
        _show(axes[0, j], y, RANDOM_TITLES.get(m, label), lo, hi + 1e-12)
        logp = torch.log10(spectrum[m] + 1e-12)
        axes[1, j].imshow(logp.numpy(), cmap="magma", vmin=float(logp.max()) - 6,
                          vmax=float(logp.max()))
        axes[1, j].set_xticks([])
        axes[1, j].set_yticks([])
        axes[1, j].grid(False)
        axes[1, j].set_xlabel(f"{100 * np.mean(frac[m]['image']):.1f}%\nat period 2",
                              fontsize=9)
    axes[0, 0].set_ylabel("output\n" + r"($16\times16$ centre)", fontsize=9)
    axes[1, 0].set_ylabel("mean power\nspectrum (log)", fontsize=9)
    return fig


def _trained_figure(res, cfg):
    fig, axes = new_figure(2, 5, size=(7.0, 3.6), constrained_layout=True,
                           gridspec_kw={"height_ratios": [1, 1]})
    sl = (slice(None), slice(None), slice(70, 118), slice(24, 72))
    _show(axes[0, 0], res["test_hr"][sl], "original")
    _show(axes[0, 1], res["bicubic"]["pred"][sl], f"bicubic\n{res['bicubic']['psnr']:.1f} dB")
    names = {"transposed_k4": "transposed conv", "resize_nearest_conv": "resize-conv",
             "subpixel": "sub-pixel"}
    for ax, kind in zip(axes[0, 2:], TRAINED_METHODS, strict=True):
        _show(ax, res[kind]["pred"][sl], f"{names[kind]}\n{res[kind]['psnr']:.1f} dB")
    gs = axes[1, 0].get_gridspec()
    for ax in axes[1]:
        ax.remove()
    ax = fig.add_subplot(gs[1, :])
    for kind in TRAINED_METHODS:
        loss = np.asarray(res[kind]["loss"])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, label=names[kind])
    ax.set(yscale="log", xlabel="training step", ylabel="train MSE")
    ax.legend(fontsize=9, ncol=3, loc="upper right")
    return fig


def run(config: Config) -> Result:
    if config.factor < 2 or config.crop % (2 * config.factor):
        raise ValueError(f"factor must be >= 2 and crop a multiple of 2*factor, got "
                         f"factor={config.factor}, crop={config.crop}")
    if config.n_inits < 1 or config.channels < 1 or config.train_steps < 0:
        raise ValueError("n_inits and channels must be >= 1 and train_steps >= 0")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run(config)
    finally:
        torch.set_num_threads(threads)


def _run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        img = load_image(config.crop)
        outs, diffs = gallery(img, config.factor)
        psnrs = {k: psnr(v, img) for k, v in outs.items() if k not in ("low_res", "max_unpool")}
        run.log_metrics({f"gallery/psnr_{k}_db": v for k, v in psnrs.items()})
        run.log_metrics({"gallery/max_unpool_nonzero_fraction":
                         float((outs["max_unpool"] != 0).double().mean())})
        bil = diffs.pop("transposed_bilinear_vs_bilinear")
        run.log_metrics({"check/max_abs_diff_vs_torch": max(diffs.values()),
                         "check/transposed_bilinear_vs_bilinear_max_abs_diff": bil})
        run.save_figure(_gallery_figure(img, outs, psnrs, config.factor), "gallery")

        frac, example, spectrum = random_init_study(img, config, run)
        for m, d in frac.items():
            run.log_metrics({f"random/{m}_checkerboard_fraction": float(np.mean(d["image"])),
                             f"random/{m}_constant_checkerboard_fraction":
                                 float(np.mean(d["constant"]))})
        run.save_figure(_random_figure(example, spectrum, frac), "checkerboard_random")

        if config.train_steps > 0:
            res = train_study(config, run)
            for kind in (*TRAINED_METHODS, "bicubic"):
                run.log_metrics({f"trained/{kind}_psnr_db": res[kind]["psnr"]})
            for kind in TRAINED_METHODS:
                run.log_metrics({f"trained/{kind}_error_checkerboard_fraction":
                                 res[kind]["error_cb"],
                                 f"trained/{kind}_output_checkerboard_fraction":
                                 res[kind]["output_cb"]})
            run.save_figure(_trained_figure(res, config), "trained_outputs")
    return run.result
