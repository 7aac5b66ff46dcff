"""Training for accuracy: smooth surrogates of the 0-1 loss against hinge and cross-entropy.

The same MLP (64 -> hidden -> hidden -> 10, ReLU), the same initialisation and the same batches
on the digits, trained with each loss of ``deepnotes.nn.surrogates``: cross-entropy, hinge,
squared hinge, and the softmax- and sigmoid-relaxed 0-1 losses at temperature ``temperature``.

Figures:

- ``surrogates``: each loss as a function of the (binary) margin, and the size of its derivative;
- ``training``: train accuracy (the quantity we want) per epoch for each loss, clean labels;
- ``noise``: test accuracy (clean test labels) when a fraction of the training labels is flipped;
- ``temperature``: the relaxed 0-1 losses over a range of temperatures: final train accuracy, and
  the fraction of training examples that are misclassified yet whose logit gradient is below 1e-6
  of the largest at the end ("stuck": the flat gradients of a cold surrogate).

Headline: train accuracy with the softmax-relaxed 0-1 loss; peer: the same with cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import N_CLASSES, load_digits
from deepnotes.nn import surrogates as S
from deepnotes.nn.training import fit

LOSS_NAMES = ("cross_entropy", "hinge", "squared_hinge", "softmax_01", "sigmoid_01")
LABELS = {"cross_entropy": "cross-entropy", "hinge": "hinge", "squared_hinge": "squared hinge",
          "softmax_01": "softmax 0-1", "sigmoid_01": "sigmoid 0-1"}


@dataclass
class Config(ExperimentConfig):
    losses: tuple[str, ...] = LOSS_NAMES
    """Surrogates to train with (names of ``deepnotes.nn.surrogates.LOSSES``)."""
    temperature: float = 1.0
    """Temperature of the relaxed 0-1 losses in the loss comparison."""
    temperatures: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    """Temperatures of the relaxed 0-1 losses in the temperature sweep (clean labels)."""
    noise_rates: tuple[float, ...] = (0.0, 0.2, 0.4)
    """Fractions of training labels replaced by a different, uniformly drawn class."""
    hidden: int = 64
    """Width of the two hidden layers."""
    epochs: int = 30
    """Passes over the training digits."""
    batch_size: int = 64
    """Mini-batch size (the last incomplete batch of an epoch is dropped)."""
    lr: float = 1e-3
    """Adam learning rate (the same for every loss)."""
    seeds: int = 1
    """Independent initialisations / batch orders / label flips per setting (averaged)."""
    threads: int = 1
    """Torch threads (small matrices)."""


PRESETS = make_presets(
    smoke=Config(temperatures=(0.1,), noise_rates=(0.0,), hidden=16, epochs=1),
    quick=Config(temperatures=(0.01, 1.0), noise_rates=(0.0, 0.4), epochs=5),
    full=Config(seeds=2),
)
HEADLINE = "clean/softmax_01_train_accuracy"
PEER = "clean/cross_entropy_train_accuracy"


def _loss(name: str, temperature: float):
    fn = S.LOSSES[name]
    if name in ("softmax_01", "sigmoid_01"):
        return lambda logits, y, reduction="mean": fn(logits, y, temperature=temperature,
                                                      reduction=reduction)
    return fn


def _flip(y: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Replace a fraction ``rate`` of labels by a different class drawn uniformly."""
    y = y.copy()
    idx = rng.choice(len(y), size=int(round(rate * len(y))), replace=False)
    y[idx] = (y[idx] + rng.integers(1, N_CLASSES, size=len(idx))) % N_CLASSES
    return y


def _model(d_in: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, N_CLASSES))


def _train(cfg: Config, data, loss_name: str, temperature: float, y_train: torch.Tensor,
           seed: int, device):
    """One training run; per-epoch accuracy on the clean training labels, final test accuracy."""
    x_tr, y_clean, x_te, y_te = data
    torch.manual_seed(seed)
    model = _model(x_tr.shape[1], cfg.hidden).to(device)
    gen = torch.Generator().manual_seed(seed)
    n_batches = len(y_train) // cfg.batch_size
    perms: dict[int, torch.Tensor] = {}
    loss_fn = _loss(loss_name, temperature)

    def batches(step):
        epoch, b = divmod(step, n_batches)
        if epoch not in perms:
            perms.clear()
            perms[epoch] = torch.randperm(len(y_train), generator=gen).to(device)
        idx = perms[epoch][b * cfg.batch_size:(b + 1) * cfg.batch_size]
        return x_tr[idx], y_train[idx]

    train_acc = []

    def callback(step, metrics):
        if (step + 1) % n_batches == 0:
            with torch.no_grad():
                train_acc.append(float(S.accuracy(model(x_tr), y_clean)))

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    fit(model, lambda m, batch: loss_fn(m(batch[0]), batch[1]), batches, opt,
        cfg.epochs * n_batches, callback=callback)
    # per-example gradient size wrt the logits at the end: which examples still pull?
    logits = model(x_tr).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(logits, y_train, reduction="sum"), logits)
    gnorm = g.norm(dim=1)
    # "stuck": misclassified (by the labels trained on) yet left with ~no gradient
    wrong = logits.detach().argmax(1) != y_train
    tiny = gnorm < 1e-6 * gnorm.max() if gnorm.max() > 0 else torch.ones_like(wrong)
    stuck = float((wrong & tiny).double().mean())
    with torch.no_grad():
        test_acc = float(S.accuracy(model(x_te), y_te))
        fit_noisy = float(S.accuracy(model(x_tr), y_train))
    return {"train_acc": np.asarray(train_acc), "test_acc": test_acc, "stuck": stuck,
            "fit_noisy": fit_noisy}


def _surrogate_figure(temperature: float):
    """Binary view: each loss as a function of the margin m, and |dL/dm| (log scale)."""
    m = torch.linspace(-4, 4, 801, dtype=torch.float64, requires_grad=True)
    # two logits (m, 0) with target 0: the binary margin is m
    logits = torch.stack([m, torch.zeros_like(m)], 1)
    target = torch.zeros(len(m), dtype=torch.long)
    curves = {"0-1 (accuracy's loss)": S.zero_one_loss(logits, target, reduction="none")}
    for name in LOSS_NAMES:
        curves[LABELS[name]] = _loss(name, temperature)(logits, target, reduction="none")
    curves[f"sigmoid 0-1, $T = {temperature / 10:g}$"] = S.sigmoid_zero_one_loss(
        logits, target, temperature=temperature / 10, reduction="none")
    fig, (ax1, ax2) = new_figure(1, 2, size="column_tall", layout="constrained")
    colors = ("black",) + PALETTE
    for color, (label, values) in zip(colors, curves.items(), strict=False):
        if values.requires_grad:
            (d,) = torch.autograd.grad(values.sum(), m)
            d = d.abs().numpy()
        else:
            d = np.zeros(len(m))  # the 0-1 loss: zero derivative wherever it has one
        style = ":" if label.startswith("sigmoid 0-1, $T") else "-"
        ax1.plot(m.detach().numpy(), values.detach().numpy(), color=color, ls=style, lw=1.5,
                 label=label)
        ax2.plot(m.detach().numpy(), np.maximum(d, 1e-12), color=color, ls=style, lw=1.5)
    ax1.set(xlabel=r"margin $m = f_y - \max_{k\neq y} f_k$", ylabel="loss", ylim=(-0.1, 3.2),
            title="losses of the margin (two classes)")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9)
    ax2.set(xlabel=r"margin $m$", ylabel=r"$|\partial L/\partial m|$", yscale="log",
            ylim=(1e-12, 10), title="slopes (0-1 loss: zero, at the floor)")
    return fig


def run(config: Config) -> Result:
    bad = [n for n in config.losses if n not in S.LOSSES]
    if bad or not config.losses:
        raise ValueError(f"losses must be non-empty names from {sorted(S.LOSSES)}, got {bad}")
    if config.temperature <= 0 or any(t <= 0 for t in config.temperatures):
        raise ValueError("temperature and temperatures must be > 0")
    if any(not 0 <= r < 1 for r in config.noise_rates) or not config.noise_rates:
        raise ValueError(f"noise_rates must lie in [0, 1), got {config.noise_rates}")
    for name in ("hidden", "epochs", "batch_size", "seeds", "threads"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.lr <= 0:
        raise ValueError(f"lr must be > 0, got {config.lr}")
    with start_run(__name__, config) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            _body(config, run)
        finally:
            torch.set_num_threads(threads)
    return run.result


def _body(cfg: Config, run) -> None:
    x_tr, y_tr = load_digits("train", flatten=True)
    x_te, y_te = load_digits("test", flatten=True)
    dev = run.device
    data = [torch.as_tensor(a, device=dev) for a in (x_tr, y_tr, x_te, y_te)]
    run.save_figure(_surrogate_figure(cfg.temperature), "surrogates")
    seeds = [cfg.seed * 1000 + s for s in range(cfg.seeds)]
    flips = {(rate, s): _flip(y_tr, rate, np.random.default_rng(s + 7))
             for rate in cfg.noise_rates for s in seeds}

    # loss comparison over label-noise rates
    results: dict[tuple[str, float], list[dict]] = {}
    jobs = [(name, rate) for rate in cfg.noise_rates for name in cfg.losses]
    for name, rate in run.track(jobs, "losses x noise"):
        results[(name, rate)] = [
            _train(cfg, data, name, cfg.temperature,
                   torch.as_tensor(flips[(rate, s)], device=dev), s, dev) for s in seeds]
        rs = results[(name, rate)]
        group = "clean" if rate == 0 else f"noise{round(100 * rate)}"
        run.log_metrics({
            f"{group}/{name}_train_accuracy": float(np.mean([r["train_acc"][-1] for r in rs])),
            f"{group}/{name}_test_accuracy": float(np.mean([r["test_acc"] for r in rs])),
            f"{group}/{name}_noisy_label_fit": float(np.mean([r["fit_noisy"] for r in rs])),
            f"{group}/{name}_stuck_fraction": float(np.mean([r["stuck"] for r in rs])),
        })

    fig, ax = new_figure(1, 1, size=(7.0, 3.6), constrained_layout=True)
    clean = min(cfg.noise_rates)
    for color, name in zip(PALETTE, cfg.losses, strict=False):
        curves = np.stack([r["train_acc"] for r in results[(name, clean)]])
        ax.plot(np.arange(1, cfg.epochs + 1), 100 * curves.mean(0), color=color, lw=1.8,
                label=LABELS[name])
    ax.set(xlabel="epoch", ylabel="train accuracy (%)",
           title=f"training digits, label noise {100 * clean:g}%, mean over seeds")
    ax.legend(fontsize=9)
    run.save_figure(fig, "training")

    fig, (ax1, ax2) = new_figure(1, 2, size="column_tall", layout="constrained")
    rates = np.asarray(cfg.noise_rates) * 100
    for color, name in zip(PALETTE, cfg.losses, strict=False):
        test = [np.mean([r["test_acc"] for r in results[(name, rate)]])
                for rate in cfg.noise_rates]
        fitn = [np.mean([r["fit_noisy"] for r in results[(name, rate)]])
                for rate in cfg.noise_rates]
        ax1.plot(rates, 100 * np.asarray(test), color=color, marker="o", label=LABELS[name])
        ax2.plot(rates, 100 * np.asarray(fitn), color=color, marker="o", label=LABELS[name])
    ax1.set(xlabel="training labels flipped (%)", ylabel="test accuracy (%)",
            title="clean test labels")
    ax2.set(xlabel="training labels flipped (%)", ylabel="agreement with noisy labels (%)",
            title="how much noise is memorised")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9)
    run.save_figure(fig, "noise")

    # temperature sweep (clean labels)
    relaxed = [n for n in ("softmax_01", "sigmoid_01") if n in cfg.losses]
    if relaxed:
        fig, (ax1, ax2) = new_figure(1, 2, size=(7.0, 3.4), constrained_layout=True)
        for color, name in zip(PALETTE[3:], relaxed, strict=False):
            acc, given = [], []
            for t in run.track(list(cfg.temperatures), f"temperature {name}"):
                rs = [_train(cfg, data, name, t, torch.as_tensor(flips[(clean, s)], device=dev),
                             s, dev) for s in seeds]
                acc.append(float(np.mean([r["train_acc"][-1] for r in rs])))
                given.append(float(np.mean([r["stuck"] for r in rs])))
                run.log_metrics({f"temperature/{name}_T{t:g}_train_accuracy": acc[-1],
                                 f"temperature/{name}_T{t:g}_stuck_fraction": given[-1]})
            ax1.plot(cfg.temperatures, 100 * np.asarray(acc), color=color, marker="o",
                     label=LABELS[name])
            ax2.plot(cfg.temperatures, 100 * np.asarray(given), color=color, marker="o",
                     label=LABELS[name])
        ce = results.get(("cross_entropy", clean))
        if ce:
            ax1.axhline(100 * np.mean([r["train_acc"][-1] for r in ce]), color=PALETTE[0],
                        ls="--", label="cross-entropy")
        ax1.set(xscale="log", xlabel=r"temperature $T$", ylabel="final train accuracy (%)",
                title="relaxed 0-1 losses")
        ax2.set(xscale="log", xlabel=r"temperature $T$",
                ylabel="wrong, with near-zero gradient (%)", title="flat gradients when cold")
        ax1.legend(fontsize=9, loc="lower right")
        run.save_figure(fig, "temperature")
