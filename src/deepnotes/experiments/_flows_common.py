"""Training, evaluation and figures shared by the flow experiments (nice, normalizing-flows).

Not a topic: the registry skips modules whose name starts with an underscore.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from deepnotes.core.plotting import PALETTE
from deepnotes.data import N_LEVELS, load_digits
from deepnotes.generative.flows import Flow
from deepnotes.nn.training import fit


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (or buffers); the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def train_flow(model: Flow, batches: Callable[[int], torch.Tensor], steps: int, lr: float,
               run, desc: str, checkpoint: bool = True) -> list[float]:
    """Maximum likelihood with Adam and a cosine schedule (:func:`deepnotes.nn.training.fit`);
    returns the loss (nats) per step.

    ``batches(step)`` returns the training batch of that step, shape (B, dim), drawn from
    ``run.rng`` (or torch's global generator). With ``checkpoint`` the loop is checkpointed in
    the run (``--resume``); pass False when ``batches`` keeps state of its own. The model
    trains where it is (``run.device``); each batch is moved there.
    """
    device = model_device(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    resumable = (run.fit_checkpoint(every=max(1, steps // 10))
                 if checkpoint and hasattr(run, "fit_checkpoint") else {})
    # clipping: a rare huge gradient (a point deep in a tail) should not undo the fit
    result = fit(model, lambda m, xb: -m.log_prob(xb.to(device)).mean(), batches, opt, steps,
                 scheduler=sched, clip_grad_norm=100.0, progress=run.track, description=desc,
                 **resumable)
    model.eval()
    return result.history["loss"]


def evaluate_toy(model: Flow, toy, x_test: np.ndarray) -> dict[str, float]:
    """Test NLL of the model and of the true density on the same samples (nats)."""
    with torch.no_grad():
        x = torch.from_numpy(x_test).float().to(model_device(model))
        nll = -float(model.log_prob(x).double().mean())
    true_nll = -float(np.mean(toy.log_prob(x_test)))
    return {"test_nll_nats": nll, "true_nll_nats": true_nll, "kl_nats": nll - true_nll}


def _grid(toy, n: int):
    lo, hi = toy.bounds
    lo, hi = lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)
    c = np.linspace(lo, hi, n)
    xx, yy = np.meshgrid(c, c)
    return (lo, hi), np.stack([xx.ravel(), yy.ravel()], 1)


def plot_density(ax, toy, model: Flow | None, n_grid: int, title: str) -> None:
    """Heatmap of the model's density (or the toy's exact one when ``model`` is None)."""
    (lo, hi), pts = _grid(toy, n_grid)
    if model is None:
        dens = toy.prob(pts)
    else:
        with torch.no_grad():
            x = torch.from_numpy(pts).float().to(model_device(model))
            dens = model.log_prob(x).exp().cpu().numpy()
    ax.imshow(dens.reshape(n_grid, n_grid), origin="lower", extent=(lo, hi, lo, hi),
              cmap="viridis")
    _square(ax, title)


def plot_samples(ax, toy, model: Flow, title: str, n: int = 2000) -> None:
    """Scatter of ``n`` model samples on the toy's plotting window."""
    (lo, hi), _ = _grid(toy, 2)
    with torch.no_grad():
        x = model.sample(n).cpu().numpy()
    ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, color=PALETTE[0])
    ax.set(xlim=(lo, hi), ylim=(lo, hi))
    _square(ax, title)


def _square(ax, title: str) -> None:
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)


def toy_panels(axes, toy, model: Flow, n_grid: int, title: str) -> None:
    """One row: true density, model density, model samples, data -> noise grid."""
    plot_density(axes[0], toy, None, n_grid, f"{toy.name}: true density")
    plot_density(axes[1], toy, model, n_grid, f"{title} density")
    plot_samples(axes[2], toy, model, f"{title} samples")
    deformed_grid(axes[3], toy, model, title=f"{title}: data grid -> z")


def deformed_grid(ax, toy, model: Flow, n_lines: int = 15, title: str = "") -> None:
    """Image under ``model.forward`` (data -> noise) of a square grid of lines in data space."""
    (lo, hi), _ = _grid(toy, 2)
    t = np.linspace(lo, hi, 300)
    for i, v in enumerate(np.linspace(lo, hi, n_lines)):
        for line in (np.stack([t, np.full_like(t, v)], 1), np.stack([np.full_like(t, v), t], 1)):
            with torch.no_grad():
                z, _ = model(torch.from_numpy(line).float().to(model_device(model)))
                z = z.cpu()
            ax.plot(z[:, 0], z[:, 1], lw=0.6, color=PALETTE[i % 2])
    ax.set(xlim=(-4, 4), ylim=(-4, 4))
    _square(ax, title)


def digits_mosaic(ax, images: np.ndarray, title: str, cols: int = 8) -> None:
    """Tile ``images`` (n, 64) in [0, 1] into one grayscale picture."""
    n = len(images) // cols * cols
    tiles = np.clip(images[:n], 0, 1).reshape(-1, cols, 8, 8)
    rows = [np.concatenate(list(np.pad(r, ((0, 0), (1, 1), (1, 1)), constant_values=0)), 1)
            for r in tiles]
    ax.imshow(np.concatenate(rows, 0), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")


def digits_bits_per_dim(model: Flow, x: torch.Tensor) -> float:
    """Mean bits/dim of dequantised digits ``x`` (n, 64) in the 17-level convention."""
    with torch.no_grad():
        x = x.to(model_device(model))
        return float(model.nll_bits_per_dim(x, n_levels=N_LEVELS).double().mean())


def fit_digits(model: Flow, cfg, run, name: str) -> dict:
    """Train ``model`` on dequantised digits; returns curves, final metrics and step time."""
    x_train, _ = load_digits("train", "float", flatten=True)
    n = len(x_train)
    # fixed test noise, drawn once, so every model and epoch sees the same test points
    noise_rng = np.random.default_rng(int(run.rng.integers(2**31)))
    x_test = [torch.from_numpy(load_digits("test", "dequantized", flatten=True,
                                           rng=noise_rng)[0]) for _ in range(cfg.test_noise_draws)]
    per_epoch = n // cfg.digits_batch
    state = {"epoch": -1, "x": None, "order": None}
    curve = []

    def batches(step: int) -> torch.Tensor:
        epoch, b = divmod(step, per_epoch)
        if epoch != state["epoch"]:
            if epoch % cfg.eval_every == 0 and epoch > 0:
                curve.append((epoch, float(np.mean([digits_bits_per_dim(model, x)
                                                    for x in x_test]))))
                model.train()
            x, _ = load_digits("train", "dequantized", flatten=True, rng=run.rng)
            state.update(epoch=epoch, x=torch.from_numpy(x), order=run.rng.permutation(n))
        idx = state["order"][b * cfg.digits_batch:(b + 1) * cfg.digits_batch]
        return state["x"][idx]

    t0 = time.perf_counter()
    steps = cfg.digits_epochs * per_epoch
    # not checkpointed: ``batches`` holds the epoch's data and evaluates the curve
    train_flow(model, batches, steps, cfg.digits_lr, run, f"{name} on digits", checkpoint=False)
    step_ms = 1e3 * (time.perf_counter() - t0) / max(steps, 1)
    test_bpd = float(np.mean([digits_bits_per_dim(model, x) for x in x_test]))
    curve.append((cfg.digits_epochs, test_bpd))
    x_tr = torch.from_numpy(load_digits("train", "dequantized", flatten=True, rng=noise_rng)[0])
    return {"curve": curve, "test_bits_per_dim": test_bpd,
            "train_bits_per_dim": digits_bits_per_dim(model, x_tr), "step_ms": step_ms}
