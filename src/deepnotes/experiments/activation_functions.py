"""Activation functions: their curves, what they do to gradients through depth, and a digits MLP.

Three parts, all with ``deepnotes.nn.activations`` (our formulas and hand-derived backwards):

1. **Curves** (``curves``): every elementwise activation and its derivative, the derivative taken
   by our backward; the largest difference from ``torch.nn.functional`` over the plotted grid is
   logged (``check/*``).
2. **Depth** (``depth``): a deep, narrow MLP on the digits, initialised N(0, g^2/fan_in) with
   each activation's gain g (``gains``: g^2 E[f(z)^2] = 1 for z ~ N(0, 1), so the forward signal
   keeps its scale). At initialisation, the 2-norm of the loss gradient of each layer's weights
   (does it vanish towards the input?); after SGD training (gradient norm clipped to 1), the
   fraction of dead units per layer (zero activation derivative on every training image).
3. **MLP** (``mlp``): a small MLP trained on the digits with each activation, once with ours and
   once with its ``torch.nn.functional`` twin from the same initialisation and batches: test
   accuracy, seconds per epoch, and the largest difference between the two loss curves.

Headline: test accuracy of the ReLU MLP (ours); peer: the same network with ``F.relu``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import N_CLASSES, load_digits
from deepnotes.nn import activations as A
from deepnotes.nn.training import fit

ELEMENTWISE = tuple(A.ACTIVATIONS) + ("prelu",)
ALL = ELEMENTWISE + tuple(A.GATED)
LABELS = {"leaky_relu": "leaky ReLU", "gelu": "GELU (erf)", "gelu_tanh": "GELU (tanh)",
          "silu": "SiLU / Swish", "hardsigmoid": "hard sigmoid", "hardswish": "hard swish",
          "relu": "ReLU", "prelu": "PReLU", "elu": "ELU", "selu": "SELU", "glu": "GLU",
          "reglu": "ReGLU", "geglu": "GeGLU", "swiglu": "SwiGLU", "mish": "Mish"}
PRELU_INIT = 0.25  # He et al.'s initial slope


def _torch_twin(name: str):
    """``torch.nn.functional``'s version of activation ``name`` (composed where torch has none)."""
    def gate(f):
        def g(x):
            a, b = x.chunk(2, -1)
            return a * f(b)
        return g
    return {
        # torch.heaviside has no backward: a comparison (which cuts the graph) is torch's step
        "step": lambda x: (x >= 0).to(x.dtype),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": F.softplus, "relu": F.relu,
        "leaky_relu": F.leaky_relu, "elu": F.elu, "selu": F.selu, "gelu": F.gelu,
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "mish": F.mish,
        "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish, "glu": F.glu,
        "reglu": gate(F.relu), "geglu": gate(F.gelu), "swiglu": gate(F.silu),
    }[name]


def _label(name: str) -> str:
    return LABELS.get(name, name)


@dataclass
class Config(ExperimentConfig):
    activations: tuple[str, ...] = ALL
    """Activations to run (names of ``ACTIVATIONS`` and ``GATED``, plus ``prelu``)."""
    curve_points: int = 1001
    """Points of the x grid on [-5, 5] for the curves figure."""
    depth_layers: int = 12
    """Hidden layers of the deep MLP (depth part)."""
    depth_width: int = 64
    """Width of each hidden layer of the deep MLP."""
    depth_steps: int = 300
    """SGD steps (batch ``batch_size``) before the dead units are counted."""
    depth_lr: float = 0.05
    """SGD learning rate of the deep MLP (momentum 0.9)."""
    hidden: int = 128
    """Hidden width of the small MLP (gated units: 2/3 of it, so parameter counts match)."""
    hidden_layers: int = 2
    """Hidden layers of the small MLP."""
    epochs: int = 30
    """Passes over the training digits for the small MLP."""
    batch_size: int = 64
    """Mini-batch size (the last incomplete batch of an epoch is dropped)."""
    lr: float = 1e-3
    """Adam learning rate of the small MLP."""
    seeds: int = 1
    """Seeds per activation for the small MLP (accuracy is averaged over them)."""
    threads: int = 1
    """Torch threads (tiny matrices: a second thread mostly adds synchronisation)."""


PRESETS = make_presets(
    smoke=Config(activations=("step", "relu", "prelu", "swiglu"), curve_points=101,
                 depth_layers=4, depth_width=16, depth_steps=5, hidden=16, epochs=1),
    quick=Config(depth_layers=6, depth_width=32, depth_steps=30, hidden=64, epochs=3),
    full=Config(seeds=2),
)
HEADLINE = "mlp/relu_test_accuracy"
PEER = "mlp/relu_torch_test_accuracy"


class ActivationMLP(nn.Module):
    """Linear -> activation blocks -> linear classifier, with any activation of ``ALL``.

    A gated unit maps a pre-activation of width 2h to h; PReLU has one learnable slope per layer.
    ``forward(x, keep=list)`` appends each hidden pre-activation, shape (B, h or 2h), to ``keep``.
    """

    def __init__(self, name: str, d_in: int, width: int, layers: int, d_out: int,
                 use_torch: bool = False):
        super().__init__()
        self.name, self.gated = name, name in A.GATED
        widths = [d_in] + [width] * layers
        self.hidden = nn.ModuleList(
            nn.Linear(a, 2 * b if self.gated else b) for a, b in zip(widths, widths[1:],
                                                                    strict=False))
        self.out = nn.Linear(width, d_out)
        if name == "prelu":
            self.slopes = nn.Parameter(torch.full((layers, 1), PRELU_INIT))
            fn = F.prelu if use_torch else A.prelu
            self.acts = [(lambda z, i=i: fn(z, self.slopes[i])) for i in range(layers)]
        else:
            fn = _torch_twin(name) if use_torch else {**A.ACTIVATIONS, **A.GATED}[name]
            self.acts = [fn] * layers

    def forward(self, x: torch.Tensor, keep: list | None = None) -> torch.Tensor:
        for layer, act in zip(self.hidden, self.acts, strict=True):
            z = layer(x)  # (B, h) or (B, 2h)
            if keep is not None:
                keep.append(z.detach())
            x = act(z)
        return self.out(x)  # (B, classes)


def _lecun_init(model: nn.Module, gen: torch.Generator, gain: float = 1.0) -> None:
    """N(0, gain^2/fan_in) hidden weights, N(0, 1/fan_in) output weights, zero biases."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                g = 1.0 if m is getattr(model, "out", None) else gain
                w = torch.randn(m.weight.shape, generator=gen) * (g / math.sqrt(m.in_features))
                m.weight.copy_(w)
                m.bias.zero_()


def _gauss(fn, n: int = 200_001) -> float:
    """E[fn(z)] for z ~ N(0, 1) by the trapezoid rule on [-12, 12] (the kinks of ReLU-like
    units and the step's jump defeat Gauss-Hermite; a fine uniform grid does not care)."""
    z = torch.linspace(-12.0, 12.0, n, dtype=torch.float64)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return float(torch.trapezoid(fn(z) * density, z))


def gains(name: str) -> tuple[float, float]:
    """(g, g^2 E[f'(z)^2]): the gain with g^2 E[f(z)^2] = 1 for z ~ N(0, 1) (Eq. 13), and the
    per-layer factor it leaves on the squared gradient. PReLU at its initial slope."""
    if name == "prelu":
        w = torch.full((1,), PRELU_INIT, dtype=torch.float64)
        f = lambda z: A.prelu(z, w)  # noqa: E731
    else:
        f = {**A.ACTIVATIONS, **A.GATED}[name]
    elementwise = f
    if name in A.GATED:  # E[(a f(b))^2] = E[a^2] E[f(b)^2] = E[f(b)^2] for independent a, b
        elementwise = {"glu": A.sigmoid, "reglu": A.relu, "geglu": A.gelu, "swiglu": A.silu}[name]

    def slope(z):
        z = z.clone().requires_grad_(True)
        (d,) = torch.autograd.grad(elementwise(z).sum(), z)
        return d

    g2 = 1.0 / _gauss(lambda z: elementwise(z) ** 2)
    back = _gauss(lambda z: slope(z) ** 2)
    if name in A.GATED:  # the gate half: d/db = a f'(b); the value half: d/da = f(b)
        back = 0.5 * (back + 1.0 / g2)
    return math.sqrt(g2), g2 * back


def _local_derivative(model: ActivationMLP, i: int, z: torch.Tensor) -> torch.Tensor:
    """d act(z) / dz elementwise, shape of z (gated: both halves), by our backward."""
    z = z.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model.acts[i](z).sum(), z)
    return g


def _data(device):
    x_tr, y_tr = load_digits("train", flatten=True)
    x_te, y_te = load_digits("test", flatten=True)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 0.1  # standardise; +0.1 for the constant border pixels
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    return [torch.as_tensor(a, device=device) for a in (x_tr, y_tr, x_te, y_te)]


def _batcher(x, y, batch_size, gen):
    """batches(step) -> (x, y): a fresh permutation each epoch, from ``gen`` (reproducible)."""
    n_batches = len(y) // batch_size
    state = {"epoch": -1, "perm": None}

    def batches(step):
        epoch, b = divmod(step, n_batches)
        if epoch != state["epoch"]:
            state["epoch"], state["perm"] = epoch, torch.randperm(len(y), generator=gen)
        idx = state["perm"][b * batch_size:(b + 1) * batch_size].to(x.device)
        return x[idx], y[idx]
    return batches, n_batches


def _ce(model, batch):
    xb, yb = batch
    return F.cross_entropy(model(xb), yb)


def _curves(cfg: Config, run):
    """Value and derivative (our backward) on a grid, and the largest gap to torch's."""
    x = torch.linspace(-5, 5, cfg.curve_points, dtype=torch.float64)
    curves = {}
    for name in (n for n in cfg.activations if n in ELEMENTWISE):
        t = x.clone().requires_grad_(True)
        w = torch.full((1,), PRELU_INIT, dtype=torch.float64)
        fn = (lambda z, w=w: A.prelu(z, w)) if name == "prelu" else A.ACTIVATIONS[name]
        ref = (lambda z, w=w: F.prelu(z, w)) if name == "prelu" else _torch_twin(name)
        y = fn(t)
        (dy,) = torch.autograd.grad(y.sum(), t)
        y = y.detach()
        t2 = x.clone().requires_grad_(True)
        y_ref = ref(t2)
        dy_ref = (torch.zeros_like(x) if name == "step"
                  else torch.autograd.grad(y_ref.sum(), t2)[0])
        y_ref = y_ref.detach()
        curves[name] = (y.numpy(), dy.numpy())
        run.log_metrics({
            f"check/{name}_value_max_abs_diff": float((y - y_ref).abs().max()),
            f"check/{name}_grad_max_abs_diff": float((dy - dy_ref).abs().max()),
        })
    n = len(curves)
    cols = 4
    rows = math.ceil((n + 1) / cols)
    fig, axes = new_figure(rows, cols, size=(7.0, 1.55 * rows + 0.4),
                           constrained_layout=True)
    axes = np.atleast_1d(axes).ravel()
    xs = x.numpy()
    for ax, (name, (y, dy)) in zip(axes, curves.items(), strict=False):
        ax.axhline(0, color="0.6", lw=0.6)
        ax.plot(xs, y, color=PALETTE[0], lw=1.6)
        ax.plot(xs, dy, color=PALETTE[3], lw=1.3, ls="--")
        ax.set_title(_label(name), fontsize=10)
        ax.set(xlim=(-5, 5), ylim=(-1.5, 3.2), xticks=[-4, -2, 0, 2, 4])
        ax.tick_params(labelsize=9)
    for ax in axes[n:]:
        ax.axis("off")
    axes[n].plot([], [], color=PALETTE[0], lw=1.6, label=r"$f(x)$")
    axes[n].plot([], [], color=PALETTE[3], lw=1.3, ls="--", label=r"$f'(x)$, our backward pass")
    axes[n].legend(loc="center", fontsize=9)
    return fig


def _depth(cfg: Config, run, data):
    """Gradient norm per layer at initialisation; dead fraction per layer after training."""
    x_tr, y_tr, _, _ = data
    names = list(cfg.activations)
    grad_norms = np.zeros((len(names), cfg.depth_layers))
    dead = np.zeros((len(names), cfg.depth_layers))
    for r, name in enumerate(run.track(names, "depth")):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + 17)  # same draws for every row
        model = ActivationMLP(name, x_tr.shape[1], cfg.depth_width, cfg.depth_layers, N_CLASSES)
        gain, backward_factor = gains(name)
        _lecun_init(model, gen, gain)
        model.to(run.device)
        model.zero_grad()
        F.cross_entropy(model(x_tr), y_tr).backward()
        grad_norms[r] = [float(layer.weight.grad.norm()) for layer in model.hidden]
        model.zero_grad()
        opt = torch.optim.SGD(model.parameters(), lr=cfg.depth_lr, momentum=0.9)
        batches, _ = _batcher(x_tr, y_tr, cfg.batch_size, gen)
        fit(model, _ce, batches, opt, cfg.depth_steps, clip_grad_norm=1.0)
        keep: list = []
        with torch.no_grad():
            acc = float((model(x_tr, keep=keep).argmax(1) == y_tr).double().mean())
        for i, z in enumerate(keep):
            d = _local_derivative(model, i, z)  # (N, h) or (N, 2h)
            alive = (d != 0).any(0)
            if model.gated:  # a gated unit j is dead when both its value and its gate are
                alive = alive.view(2, -1).any(0)
            dead[r, i] = 1.0 - float(alive.double().mean())
        first, last = grad_norms[r, 0], grad_norms[r, -1]
        run.log_metrics({
            f"depth/{name}_gain": gain,
            f"depth/{name}_backward_factor": backward_factor,
            f"depth/{name}_grad_norm_first": first,
            f"depth/{name}_grad_norm_first_over_last": first / last if last > 0 else math.nan,
            f"depth/{name}_dead_fraction": float(dead[r].mean()),
            f"depth/{name}_train_accuracy": acc,
        })
    return names, grad_norms, dead


def _depth_figure(cfg: Config, names, grad_norms, dead):
    fig, (ax1, ax2) = new_figure(1, 2, size=(7.0, 0.27 * len(names) + 1.6),
                                 constrained_layout=True, sharey=True)
    layers = np.arange(1, cfg.depth_layers + 1)
    with np.errstate(divide="ignore"):
        logg = np.log10(grad_norms)
    finite = logg[np.isfinite(logg)]
    im1 = ax1.imshow(np.where(np.isfinite(logg), logg, np.nan), aspect="auto", cmap="viridis",
                     vmin=finite.min() if finite.size else None,
                     vmax=finite.max() if finite.size else None)
    im2 = ax2.imshow(dead, aspect="auto", cmap="magma_r", vmin=0, vmax=1)
    for r in np.flatnonzero((grad_norms == 0).any(1) | ~np.isfinite(grad_norms).all(1)):
        text = ("0: the step has no slope" if names[r] == "step"
                else "inf/NaN: the signal blew up" if not np.isfinite(grad_norms[r]).all()
                else "0 somewhere: the signal underflowed")
        ax1.text((cfg.depth_layers - 1) / 2, r, text, ha="center", va="center", fontsize=9)
    for ax, title in ((ax1, "gradient norm at initialisation"), (ax2, "dead units after training")):
        ax.set_xticks(range(len(layers))[::2], layers[::2])
        ax.set_xlabel("hidden layer (1 = next to input)")
        ax.set_title(title)
        ax.grid(False)
    ax1.set_yticks(range(len(names)), [_label(n) for n in names], fontsize=9)
    fig.colorbar(im1, ax=ax1, label=r"$\log_{10}\,\|\partial L/\partial W_\ell\|$", shrink=0.8)
    fig.colorbar(im2, ax=ax2, label="fraction of units", shrink=0.8)
    return fig


def _mlp(cfg: Config, run, data):
    """Small MLP per activation, ours and torch's twin from the same init and batches."""
    x_tr, y_tr, x_te, y_te = data
    out = {}
    for name in run.track(list(cfg.activations), "mlp"):
        width = max(1, round(2 * cfg.hidden / 3)) if name in A.GATED else cfg.hidden
        rec = {"acc": [], "acc_torch": [], "s": [], "s_torch": [], "diff": 0.0, "w1_change": 0.0}
        for s in range(cfg.seeds):
            seed = cfg.seed * 1000 + s
            histories = {}
            # Ours and torch's twin alternate seed by seed so machine load hits both alike.
            for use_torch in (False, True):
                gen = torch.Generator().manual_seed(seed)
                model = ActivationMLP(name, x_tr.shape[1], width, cfg.hidden_layers, N_CLASSES,
                                      use_torch=use_torch)
                _lecun_init(model, gen)
                model.to(run.device)
                w1 = model.hidden[0].weight.detach().clone()
                batches, n_batches = _batcher(x_tr, y_tr, cfg.batch_size, gen)
                opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
                t0 = time.perf_counter()
                res = fit(model, _ce, batches, opt, cfg.epochs * n_batches)
                sec = (time.perf_counter() - t0) / cfg.epochs
                with torch.no_grad():
                    acc = float((model(x_te).argmax(1) == y_te).double().mean())
                key = "_torch" if use_torch else ""
                rec["acc" + key].append(acc)
                rec["s" + key].append(sec)
                histories[use_torch] = np.asarray(res.history["loss"])
                if not use_torch:
                    change = float((model.hidden[0].weight.detach() - w1).abs().max())
                    rec["w1_change"] = max(rec["w1_change"], change)
            rec["diff"] = max(rec["diff"], float(np.abs(histories[0] - histories[1]).max()))
        out[name] = rec
        run.log_metrics({
            f"mlp/{name}_test_accuracy": float(np.mean(rec["acc"])),
            f"mlp/{name}_torch_test_accuracy": float(np.mean(rec["acc_torch"])),
            f"mlp/{name}_epoch_s": float(np.median(rec["s"])),
            f"mlp/{name}_torch_epoch_s": float(np.median(rec["s_torch"])),
            f"mlp/{name}_epoch_time_ratio": float(np.median(rec["s"]) / np.median(rec["s_torch"])),
            f"mlp/{name}_loss_curve_max_abs_diff": rec["diff"],
            f"mlp/{name}_first_layer_max_weight_change": rec["w1_change"],
        })
        run.log(f"{name}: test acc {np.mean(rec['acc']):.4f} "
                f"(torch {np.mean(rec['acc_torch']):.4f}), "
                f"{np.median(rec['s']) * 1e3:.1f} ms/epoch (torch "
                f"{np.median(rec['s_torch']) * 1e3:.1f}), "
                f"loss curves differ by <= {rec['diff']:.2g}")
    return out


def _mlp_figure(out: dict):
    names = list(out)
    fig, (ax1, ax2) = new_figure(1, 2, size=(7.0, 0.28 * len(names) + 1.5),
                                 constrained_layout=True, sharey=True)
    ypos = np.arange(len(names))
    acc = np.array([np.mean(out[n]["acc"]) for n in names]) * 100
    acc_t = np.array([np.mean(out[n]["acc_torch"]) for n in names]) * 100
    ms = np.array([np.median(out[n]["s"]) for n in names]) * 1e3
    ms_t = np.array([np.median(out[n]["s_torch"]) for n in names]) * 1e3
    ax1.scatter(acc, ypos, color=PALETTE[0], s=28, label="our implementation", zorder=3)
    ax1.scatter(acc_t, ypos, color=PALETTE[1], s=28, marker="x", label="torch built-in",
                zorder=3)
    ax1.set_xlabel("test accuracy (%)")
    ax1.set_yticks(ypos, [_label(n) for n in names], fontsize=9)
    ax1.invert_yaxis()
    h = 0.38
    ax2.barh(ypos - h / 2, ms, height=h, color=PALETTE[0])
    ax2.barh(ypos + h / 2, ms_t, height=h, color=PALETTE[1])
    ax2.set_xlabel("training time per epoch (ms)")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside upper center", ncol=2, fontsize=9)
    return fig


def run(config: Config) -> Result:
    unknown = [n for n in config.activations if n not in ALL]
    if unknown or not config.activations:
        raise ValueError(f"activations must be non-empty names from {ALL}, got {unknown}")
    for field_name in ("curve_points", "depth_layers", "depth_width", "depth_steps", "hidden",
                       "hidden_layers", "epochs", "batch_size", "seeds", "threads"):
        if getattr(config, field_name) < 1:
            raise ValueError(f"{field_name} must be >= 1, got {getattr(config, field_name)}")
    if config.lr <= 0 or config.depth_lr <= 0:
        raise ValueError("lr and depth_lr must be > 0")
    with start_run(__name__, config) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            run.save_figure(_curves(config, run), "curves")
            data = _data(run.device)
            run.save_figure(_depth_figure(config, *_depth(config, run, data)), "depth")
            run.save_figure(_mlp_figure(_mlp(config, run, data)), "mlp")
        finally:
            torch.set_num_threads(threads)
        diffs = [v for k, v in run.metrics.items() if k.startswith("check/")]
        run.log_metrics({"check/max_abs_diff_vs_torch": max(diffs) if diffs else math.nan})
    return run.result
