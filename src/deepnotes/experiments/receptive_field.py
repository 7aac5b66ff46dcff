"""Theoretical versus effective receptive field of untrained convolutional stacks.

Two parts, no training (Luo et al. 2016 study the field at initialisation first):

1. *ResNet-like stack*: a 3x3 stem and three stages of basic residual blocks (two 3x3 convs and a
   ReLU, identity or strided 1x1 shortcut), read with ``deepnotes.nn.receptive_field.read_layers``.
   The mean input-gradient magnitude of the centre output unit, over random initialisations and
   random inputs, is drawn with the theoretical square on top. The support of the gradient (its
   bounding box) is compared with the computed size, and the map's spread with a Gaussian.
2. *Depth*: plain stacks of ``n`` 3x3 convs (linear, and with ReLU) for growing ``n``: the
   theoretical size grows like ``2n + 1`` and the effective field's standard deviation like
   ``sqrt(n)`` (post Eq. 6); we fit both slopes in log-log.

Figures: ``resnet_field`` (gradient map with the theoretical square, and its centre profile
against a Gaussian) and ``depth_scaling``. Headline: the theoretical size of the ResNet-like
stack (pixels); peer: the size of the gradient's support. Torch work runs on ``run.device``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import nn

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.nn.receptive_field import (
    Residual,
    field_moments,
    input_gradient_map,
    read_layers,
    receptive_fields,
)


@dataclass
class Config(ExperimentConfig):
    input_size: int = 96
    """Side of the square input, pixels."""
    width: int = 16
    """Channels of every convolution."""
    blocks: tuple[int, ...] = (2, 2, 2)
    """Residual blocks per stage; every stage after the first starts with stride 2."""
    n_samples: int = 32
    """Random (initialisation, input) pairs averaged into each gradient map."""
    depths: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    """Numbers of 3x3 convolutions in the plain stacks of part 2."""
    threads: int = 1
    """Torch CPU threads (small tensors: a second thread mostly adds sync cost)."""


PRESETS = make_presets(
    smoke=Config(input_size=40, width=4, blocks=(1, 1), n_samples=2, depths=(1, 2, 4)),
    quick=Config(input_size=64, width=8, blocks=(1, 1, 1), n_samples=8, depths=(1, 2, 4, 8, 16)),
    full=Config(),
)
HEADLINE = "resnet/theoretical_size_px"
PEER = "resnet/gradient_support_size_px"


def basic_block(c: int, stride: int) -> Residual:
    """Two 3x3 convs with a ReLU between; a strided 1x1 projection when ``stride > 1``."""
    body = nn.Sequential(nn.Conv2d(c, c, 3, stride=stride, padding=1), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1))
    return Residual(body, nn.Conv2d(c, c, 1, stride=stride) if stride > 1 else None)


def resnet_like(width: int, blocks: tuple[int, ...]) -> nn.Sequential:
    """Stem (3x3 conv, ReLU) and stages of :func:`basic_block`, each followed by a ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
    for stage, n in enumerate(blocks):
        for b in range(n):
            layers += [basic_block(width, 2 if stage > 0 and b == 0 else 1), nn.ReLU()]
    return nn.Sequential(*layers)


def plain_stack(depth: int, width: int, relu: bool) -> nn.Sequential:
    """``depth`` 3x3 'same' convolutions, 1 -> width -> ... -> width channels."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Conv2d(1 if i == 0 else width, width, 3, padding=1))
        if relu and i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mean_gradient_map(make_model, cfg: Config, run) -> tuple[torch.Tensor, tuple[int, int]]:
    """Average of :func:`input_gradient_map` of the centre unit over fresh models and inputs."""
    size = cfg.input_size
    acc, unit = None, None
    for _ in range(cfg.n_samples):
        torch.manual_seed(int(run.rng.integers(2**31)))
        model = make_model().to(run.device)
        x = torch.randn(1, 1, size, size, device=run.device)
        if unit is None:
            with torch.no_grad():
                out_h, out_w = model(x).shape[2:]
            unit = (out_h // 2, out_w // 2)
        g = input_gradient_map(model, x, unit).cpu().double()
        g = g / g.sum()  # each sample weighs the same
        acc = g if acc is None else acc + g
    return acc / cfg.n_samples, unit


def _support(g: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    rows = torch.nonzero(g.sum(1) > 0).flatten()
    cols = torch.nonzero(g.sum(0) > 0).flatten()
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))


def _gaussian_r2(profile: np.ndarray, centre: float, std: float) -> float:
    """R^2 of a Gaussian with the profile's own centre and std against the profile."""
    x = np.arange(len(profile))
    gauss = np.exp(-0.5 * ((x - centre) / std) ** 2)
    gauss *= profile.sum() / gauss.sum()
    return float(1 - ((profile - gauss) ** 2).sum() / ((profile - profile.mean()) ** 2).sum())


def resnet_study(cfg: Config, run):
    model_fn = lambda: resnet_like(cfg.width, cfg.blocks)  # noqa: E731
    layers = read_layers(model_fn())
    field = receptive_fields(layers, cfg.input_size)[-1]
    g, unit = mean_gradient_map(model_fn, cfg, run)
    (r0, r1), (c0, c1) = _support(g)
    lo, hi = field.span(unit[0])
    mom = field_moments(g)
    profile = g.sum(1).numpy()  # marginal over columns, shape (H,)
    metrics = {
        "resnet/theoretical_size_px": field.size,
        "resnet/gradient_support_size_px": r1 - r0 + 1,
        "resnet/gradient_support_width_px": c1 - c0 + 1,
        "resnet/jump_px": field.jump,
        "resnet/layers_read": len(layers),
        "resnet/support_matches_span": float((r0, r1) == (max(lo, 0), min(hi, cfg.input_size - 1))
                                             and (c0, c1) == (r0, r1)),
        "resnet/erf_std_px": 0.5 * (mom["std_h"] + mom["std_w"]),
        "resnet/erf_radius95_px": mom["radius_95"],
        "resnet/erf_std_over_theoretical_size": 0.5 * (mom["std_h"] + mom["std_w"]) / field.size,
        "resnet/gaussian_profile_r2": _gaussian_r2(profile, mom["centre_h"], mom["std_h"]),
    }
    return g, field, unit, mom, metrics


def depth_study(cfg: Config, run):
    rows = []
    for depth in run.track(cfg.depths, "plain stacks"):
        size = 2 * depth + 1
        for relu in (False, True):
            g, _ = mean_gradient_map(lambda d=depth, r=relu: plain_stack(d, cfg.width, r), cfg,
                                     run)
            mom = field_moments(g)
            rows.append({"depth": depth, "relu": relu, "theoretical": size,
                         "std": 0.5 * (mom["std_h"] + mom["std_w"]),
                         "radius95": mom["radius_95"]})
    return rows


def _slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _resnet_figure(g, field, unit, mom, cfg):
    fig, (ax1, ax2) = new_figure(1, 2, size="column_tall", constrained_layout=True)
    im = ax1.imshow(g.numpy() / g.max().item(), cmap="viridis")
    lo, hi = field.span(unit[0])
    ax1.add_patch(Rectangle((lo - 0.5, lo - 0.5), field.size, field.size, fill=False,
                            ec=PALETTE[1], lw=1.5, label="theoretical field"))
    r = mom["radius_95"]
    ax1.add_patch(Rectangle((round(mom["centre_w"]) - r - 0.5, round(mom["centre_h"]) - r - 0.5),
                            2 * r + 1, 2 * r + 1, fill=False, ec=PALETTE[3], lw=1.2, ls="--",
                            label="95% of gradient mass"))
    ax1.set(xlim=(-0.5, cfg.input_size - 0.5), ylim=(cfg.input_size - 0.5, -0.5),
            title=r"mean $|\partial y_{\mathrm{centre}} / \partial x|$")
    ax1.grid(False)
    ax1.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1)
    fig.colorbar(im, ax=ax1, shrink=0.8)
    profile = g.sum(1).numpy()
    x = np.arange(len(profile))
    gauss = np.exp(-0.5 * ((x - mom["centre_h"]) / mom["std_h"]) ** 2)
    gauss *= profile.sum() / gauss.sum()
    ax2.plot(x, profile, color=PALETTE[0], label="gradient map, summed over columns")
    ax2.plot(x, gauss, color=PALETTE[3], ls="--", label="Gaussian, same mean and std")
    ax2.axvspan(lo, hi, color=PALETTE[1], alpha=0.15, label="theoretical field")
    ax2.set(xlabel="input row", ylabel="share of gradient mass", title="profile")
    ax2.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    return fig


def _depth_figure(rows):
    fig, ax = new_figure(1, 1, size="column_tall")
    depths = np.array(sorted({r["depth"] for r in rows}))
    ax.plot(depths, 2 * depths + 1, "o-", color=PALETTE[1], label="theoretical size $2n+1$")
    for relu, color in ((False, PALETTE[0]), (True, PALETTE[2])):
        std = [r["std"] for r in rows if r["relu"] == relu]
        # the two curves nearly coincide: draw linear as large open squares, ReLU small filled
        style = dict(ms=5) if relu else dict(ms=10, mfc="none", mew=1.5)
        ax.plot(depths, std, "s-", color=color, **style,
                label=f"effective field std ({'ReLU' if relu else 'linear'})")
    last = [r["std"] for r in rows if not r["relu"]][-1]
    ref = [last * math.sqrt(d / depths[-1]) for d in depths]
    ax.plot(depths, ref, ":", color="gray", label=r"$\propto\sqrt{n}$")
    ax.set(xscale="log", yscale="log", xlabel=r"number of $3\times3$ conv layers $n$",
           ylabel="pixels")
    ax.legend(fontsize=9)
    return fig


def run(config: Config) -> Result:
    if config.input_size < 8 or config.width < 1 or config.n_samples < 1:
        raise ValueError("input_size must be >= 8, width and n_samples >= 1")
    if not config.depths or min(config.depths) < 1 or 2 * max(config.depths) + 1 > \
            config.input_size:
        raise ValueError(f"depths must be >= 1 with 2 max(depths) + 1 <= input_size, got "
                         f"{config.depths}")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with start_run(__name__, config) as run:
            g, field, unit, mom, metrics = resnet_study(config, run)
            run.log_metrics(metrics)
            run.log(f"resnet-like: theoretical {field.size} px, gradient support "
                    f"{metrics['resnet/gradient_support_size_px']} px, ERF std "
                    f"{metrics['resnet/erf_std_px']:.2f} px")
            run.save_figure(_resnet_figure(g, field, unit, mom, config), "resnet_field")
            rows = depth_study(config, run)
            # Slopes over the deeper half of the stacks: both laws are asymptotic in n.
            deep = [r for r in rows if r["depth"] >= 4] if max(config.depths) >= 8 else rows
            d = [r["depth"] for r in deep if not r["relu"]]
            run.log_metrics({
                "depth/theoretical_size_slope": _slope(d, [2 * x + 1 for x in d]),
                "depth/erf_std_slope_linear": _slope(d, [r["std"] for r in deep if not r["relu"]]),
                "depth/erf_std_slope_relu": _slope(d, [r["std"] for r in deep if r["relu"]]),
                "depth/slope_fit_min_depth": min(d),
            })
            for r in rows:
                kind = "relu" if r["relu"] else "linear"
                run.log_metrics({f"depth/erf_std_{kind}_n{r['depth']}_px": r["std"]})
            run.save_figure(_depth_figure(rows), "depth_scaling")
    finally:
        torch.set_num_threads(threads)
    return run.result
