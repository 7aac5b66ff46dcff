"""What the bias does: a learnable threshold, functions through the origin, and wasted biases.

Three parts:

1. **Perceptron** (``perceptron``): two classes on the same rays from the origin, separated by the
   line x1 + x2 = 4. Rosenblatt's rule (``deepnotes.nn.bias.perceptron_fit``) with a learned
   threshold converges; without it (the boundary through the origin) it makes mistakes forever.
2. **Disk versus ring** (``regions``): inner disk against a surrounding ring, learned by small
   MLPs (ReLU and tanh) with and without biases. A bias-free ReLU network is positively homogeneous
   (one class per ray from the origin) and a bias-free tanh network is odd (opposite classes at x
   and -x); on this radially symmetric task both are held to 1/2 accuracy in the population.
3. **Bias before a normalisation** (``norm``): a digits MLP ``Linear -> norm -> ReLU -> Linear``.
   Before batch norm the first bias's gradient is zero (what is left is rounding, relative to the
   weight gradient); before layer norm only its mean over the features has zero gradient. With SGD
   the wasted bias stays put; with Adam, which divides by the gradient's own scale, rounding-level
   gradients still move it (it drifts without changing the output).

Headline: test accuracy of the ReLU MLP with biases on the ring task; no peer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import N_CLASSES, load_digits
from deepnotes.nn.bias import bias_gradient_parts, make_mlp, perceptron_fit, perceptron_predict
from deepnotes.nn.training import fit

INNER_RADIUS, RING = 1.0, (1.4, 2.2)  # class 0: r < 1; class 1: 1.4 < r < 2.2
ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass
class Config(ExperimentConfig):
    n_points: int = 400
    """Points per data set (perceptron data; ring train and test sets each)."""
    perceptron_epochs: int = 100
    """Passes of the perceptron rule at most."""
    hidden: int = 32
    """Width of the two hidden layers of the ring MLPs."""
    steps: int = 1500
    """Full-batch Adam steps for each ring MLP."""
    lr: float = 1e-2
    """Adam learning rate of the ring MLPs."""
    norm_steps: int = 300
    """Steps (mini-batches of 128 digits) for each normalisation run."""
    norm_width: int = 64
    """Width of the normalised hidden layer of the digits MLP."""
    threads: int = 1
    """Torch threads (small matrices)."""


PRESETS = make_presets(
    smoke=Config(n_points=100, perceptron_epochs=20, hidden=8, steps=30, norm_steps=5,
                 norm_width=16),
    quick=Config(n_points=300, steps=400, norm_steps=80),
    full=Config(),
)
HEADLINE = "ring/relu_with_bias_test_accuracy"
PEER = None


def _offset_data(n: int, rng: np.random.Generator):
    """Uniform points in [0, 4]^2 off a band of half-width 0.5 around x1 + x2 = 4; +-1 labels."""
    x = rng.uniform(0.0, 4.0, size=(6 * n, 2))
    x = x[np.abs(x.sum(1) - 4.0) > 0.5][:n]
    return x, np.where(x.sum(1) > 4.0, 1, -1)


def _ring_data(n: int, rng: np.random.Generator):
    """Half the points uniform in the unit disk (label 0), half uniform in the ring (label 1)."""
    n0 = n // 2
    r0 = INNER_RADIUS * np.sqrt(rng.uniform(size=n0))
    lo, hi = RING
    r1 = np.sqrt(rng.uniform(lo**2, hi**2, size=n - n0))
    r = np.concatenate([r0, r1])
    theta = rng.uniform(0, 2 * np.pi, size=n)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], 1).astype(np.float32)
    y = np.concatenate([np.zeros(n0), np.ones(n - n0)]).astype(np.int64)
    return x, y


def _perceptron(cfg: Config, run):
    x, y = _offset_data(cfg.n_points, run.rng)
    fits = {}
    for bias in (True, False):
        res = perceptron_fit(x, y, epochs=cfg.perceptron_epochs, bias=bias,
                             rng=np.random.default_rng(cfg.seed))
        key = "with_bias" if bias else "no_bias"
        fits[key] = res
        acc = float((perceptron_predict(x, res.weight, res.bias) == y).mean())
        run.log_metrics({
            f"perceptron/{key}_converged": float(res.converged),
            f"perceptron/{key}_epochs": len(res.mistakes),
            f"perceptron/{key}_total_mistakes": int(res.mistakes.sum()),
            f"perceptron/{key}_last_epoch_mistakes": int(res.mistakes[-1]),
            f"perceptron/{key}_train_accuracy": acc,
        })
        if bias:
            run.log_metrics({"perceptron/with_bias_threshold": -res.bias / np.linalg.norm(
                res.weight)})
    fig, (ax1, ax2) = new_figure(1, 2, size=(7.0, 3.9), constrained_layout=True)
    for label, color, marker in ((1, PALETTE[0], "o"), (-1, PALETTE[1], "s")):
        pts = x[y == label]
        ax1.scatter(pts[:, 0], pts[:, 1], s=8, color=color, marker=marker,
                    label=f"class ${label:+d}$")
    grid = np.linspace(-0.5, 4.5, 2)
    for (key, res), color, style in zip(fits.items(), (PALETTE[2], PALETTE[3]), ("-", "--"),
                                        strict=True):
        w, b = res.weight, res.bias
        text = "learned threshold" if key == "with_bias" else "threshold fixed at 0"
        if abs(w[1]) > 1e-12:
            ax1.plot(grid, -(w[0] * grid + b) / w[1], color=color, ls=style, lw=2, label=text)
        else:
            ax1.axvline(-b / w[0], color=color, ls=style, lw=2, label=text)
    ax1.scatter([0], [0], color="black", marker="+", s=60, zorder=5)
    ax1.set(xlim=(-0.5, 4.5), ylim=(-0.5, 4.5), xlabel=r"$x_1$", ylabel=r"$x_2$",
            title="boundaries (+ marks the origin)", aspect="equal")
    ax1.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    for (key, res), color, style in zip(fits.items(), (PALETTE[2], PALETTE[3]), ("-", "--"),
                                        strict=True):
        epochs = np.arange(1, len(res.mistakes) + 1)
        text = "learned threshold" if key == "with_bias" else "threshold fixed at 0"
        ax2.plot(epochs, res.mistakes, color=color, ls=style, marker=".", label=text)
    ax2.set(xlabel="epoch", ylabel="mistakes (updates) in the epoch", title="perceptron rule")
    ax2.legend(fontsize=9)
    return fig


def _ring(cfg: Config, run):
    x_tr, y_tr = _ring_data(cfg.n_points, run.rng)
    x_te, y_te = _ring_data(cfg.n_points, run.rng)
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(a, device=run.device)
                              for a in (x_tr, y_tr, x_te, y_te))
    lim = RING[1] * 1.1
    g = np.linspace(-lim, lim, 161)
    gx, gy = np.meshgrid(g, g)
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32,
                           device=run.device)
    fig, axes = new_figure(2, 2, size=(7.0, 6.6), constrained_layout=True)
    for row, (act_name, act) in enumerate(ACTS.items()):
        for col, bias in enumerate((True, False)):
            torch.manual_seed(cfg.seed * 100 + row)
            model = make_mlp(2, (cfg.hidden, cfg.hidden), 2, bias=bias, activation=act)
            model.to(run.device)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

            def loss_fn(m, batch):
                return F.cross_entropy(m(batch[0]), batch[1])
            fit(model, loss_fn, lambda step: (x_tr, y_tr), opt, cfg.steps)
            with torch.no_grad():
                train_acc = float((model(x_tr).argmax(1) == y_tr).double().mean())
                test_acc = float((model(x_te).argmax(1) == y_te).double().mean())
                z = model(grid).argmax(1).cpu().numpy().reshape(gx.shape)
                at_zero = model(torch.zeros(1, 2, device=run.device))
            key = f"{act_name}_{'with' if bias else 'no'}_bias"
            run.log_metrics({f"ring/{key}_train_accuracy": train_acc,
                             f"ring/{key}_test_accuracy": test_acc,
                             f"ring/{key}_output_at_origin_abs": float(at_zero.abs().max())})
            ax = axes[row, col]
            ax.contourf(gx, gy, z, levels=[-0.5, 0.5, 1.5], colors=[PALETTE[5], PALETTE[6]],
                        alpha=0.35)
            xs, ys = x_te.cpu().numpy(), y_te.cpu().numpy()
            for label, color, marker in ((0, PALETTE[0], "o"), (1, PALETTE[1], "s")):
                ax.scatter(xs[ys == label, 0], xs[ys == label, 1], s=5, color=color,
                           marker=marker)
            ax.set(aspect="equal", xlim=(-lim, lim), ylim=(-lim, lim),
                   title=f"{'ReLU' if act_name == 'relu' else 'tanh'}, "
                         f"{'with' if bias else 'without'} bias: {100 * test_acc:.0f}% test")
            ax.tick_params(labelsize=9)
            ax.grid(False)
    run.log_metrics({"ring/no_bias_population_accuracy_bound": 0.5})
    return fig


def _norm_model(kind: str, width: int, dtype) -> nn.Sequential:
    norm = {"batch": nn.BatchNorm1d(width), "layer": nn.LayerNorm(width),
            "none": nn.Identity()}[kind]
    return nn.Sequential(nn.Linear(64, width), norm, nn.ReLU(), nn.Linear(width, N_CLASSES)).to(
        dtype)


NORM_RUNS = {  # name -> (norm kind, dtype, optimiser)
    "batch_f64_sgd": ("batch", torch.float64, "sgd"),
    "batch_f32_sgd": ("batch", torch.float32, "sgd"),
    "batch_f32_adam": ("batch", torch.float32, "adam"),
    "layer_f64_sgd": ("layer", torch.float64, "sgd"),
    "none_f64_sgd": ("none", torch.float64, "sgd"),
}
NORM_LABELS = {"batch_f64_sgd": "batch norm, float64, SGD",
               "batch_f32_sgd": "batch norm, float32, SGD",
               "batch_f32_adam": "batch norm, float32, Adam",
               "layer_f64_sgd": "layer norm (mean part), float64, SGD",
               "none_f64_sgd": "no norm (mean part), float64, SGD"}


def _norm(cfg: Config, run):
    x_all, y_all = load_digits("train", flatten=True)
    traces = {}
    for name, (kind, dtype, opt_name) in NORM_RUNS.items():
        torch.manual_seed(cfg.seed)
        model = _norm_model(kind, cfg.norm_width, dtype).to(run.device)
        x = torch.as_tensor(x_all, dtype=dtype, device=run.device)
        y = torch.as_tensor(y_all, device=run.device)
        b0 = model[0].bias.detach().clone()
        opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "sgd"
               else torch.optim.Adam(model.parameters(), lr=1e-3))
        gen = torch.Generator().manual_seed(cfg.seed)
        ratio, drift = [], []

        def batches(step, x=x, y=y, gen=gen):
            idx = torch.randint(0, len(y), (128,), generator=gen).to(x.device)
            return x[idx], y[idx]

        def loss_fn(m, batch):
            return F.cross_entropy(m(batch[0]), batch[1])

        def callback(step, metrics, model=model, b0=b0, ratio=ratio, drift=drift, kind=kind):
            gb, gw = model[0].bias.grad, model[0].weight.grad
            scale = float(gw.abs().max())
            # batch norm: all of the bias gradient is wasted; layer/no norm: its mean part
            wasted = float(gb.abs().max()) if kind == "batch" else bias_gradient_parts(gb)[0]
            ratio.append(wasted / scale)
            drift.append(float((model[0].bias.detach() - b0).abs().max()))
        fit(model, loss_fn, batches, opt, cfg.norm_steps, callback=callback)
        traces[name] = (np.asarray(ratio), np.asarray(drift))
        run.log_metrics({f"norm/{name}_max_wasted_grad_ratio": float(np.max(ratio)),
                         f"norm/{name}_bias_drift": drift[-1]})
    fig, (ax1, ax2) = new_figure(1, 2, size=(7.0, 4.4), constrained_layout=True)
    steps = np.arange(1, cfg.norm_steps + 1)
    for color, (name, (ratio, drift)) in zip(PALETTE, traces.items(), strict=False):
        ax1.plot(steps, np.maximum(ratio, 1e-20), color=color, lw=1.2, label=NORM_LABELS[name])
        if name.startswith("batch"):
            ax2.plot(steps, drift, color=color, lw=1.5, label=NORM_LABELS[name])
    ax1.set(yscale="log", xlabel="step", ylabel="wasted bias gradient / weight gradient",
            title="gradient of the removed bias part")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=9)
    ax2.set(xlabel="step", ylabel=r"$\max_j |b_j - b_j^{(0)}|$",
            title="bias before batch norm: drift")
    return fig


def run(config: Config) -> Result:
    for name in ("n_points", "perceptron_epochs", "hidden", "steps", "norm_steps", "norm_width",
                 "threads"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise ValueError(f"lr must be > 0, got {config.lr}")
    with start_run(__name__, config) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            run.save_figure(_perceptron(config, run), "perceptron")
            run.save_figure(_ring(config, run), "regions")
            run.save_figure(_norm(config, run), "norm")
        finally:
            torch.set_num_threads(threads)
    return run.result
