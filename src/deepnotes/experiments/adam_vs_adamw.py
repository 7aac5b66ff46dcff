"""Adam with L2 weight decay versus AdamW's decoupled decay, over a learning-rate x decay grid.

One small MLP (64 -> hidden -> 10, ReLU) classifies the 8x8 digits. Every cell of the grid
(learning rate x weight decay, for each seed and each method) is its own copy of the network,
and all copies train together as one batched model (``torch.baddbmm`` over stacked weights):
one forward/backward per mini-batch serves the whole grid. Each copy is its own parameter group
of ``deepnotes.nn.optim.Adam`` (L2 in the gradient, Eq. 6) or ``AdamW`` (decoupled, Eq. 7),
with a cosine learning-rate schedule that, as in Loshchilov & Hutter, also scales AdamW's decay.

Figures: ``accuracy_heatmaps`` (final test accuracy over the grid, side by side) and
``best_curves`` (train loss and test accuracy per epoch of each method's best cell).
Headline: the best cell's test accuracy (mean over seeds) of AdamW; peer: the same of Adam+L2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import N_CLASSES, load_digits
from deepnotes.nn.optim import Adam, AdamW
from deepnotes.nn.training import fit

METHODS = {"adam_l2": Adam, "adamw": AdamW}
LABELS = {"adam_l2": "Adam + L2 (Eq. 6)", "adamw": "AdamW, decoupled (Eq. 7)"}


@dataclass
class Config(ExperimentConfig):
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    """Peak learning rates (grid rows)."""
    wds: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    """Weight-decay coefficients (grid columns): L2 coefficient for Adam, lambda for AdamW."""
    epochs: int = 60
    """Passes over the training split."""
    batch_size: int = 64
    """Mini-batch size (the last incomplete batch of each epoch is dropped)."""
    hidden: int = 128
    """Width of the hidden layer."""
    seeds: int = 3
    """Independent initialisations and batch orders per grid cell (trained together)."""
    cosine: bool = True
    """Cosine-anneal the learning rate (and so AdamW's decay) to zero over training."""
    threads: int = 1
    """Torch threads: the grid's tensors are small, so a second thread mostly adds sync cost."""
    fused: bool = False
    """Use the fused numba kernel of the optimisers instead of the plain torch path."""


PRESETS = make_presets(
    smoke=Config(lrs=(1e-3, 1e-2), wds=(1e-4, 1e-1), epochs=2, hidden=32, seeds=1),
    quick=Config(lrs=(1e-3, 1e-2, 3e-2, 1e-1), wds=(0.0, 1e-3, 1e-1, 10.0), epochs=20, seeds=1),
    full=Config(),
)
HEADLINE = "adamw/best_test_accuracy"
PEER = "adam_l2/best_test_accuracy"


class GridMLP:
    """``n_models`` independent MLPs, each stored as one flat parameter vector.

    Parameters are flat so each grid cell is one tensor in one optimiser group; the forward pass
    stacks them, shape (G, P), and slices weight matrices out of the stack.
    """

    def __init__(self, init: torch.Tensor, n_models: int, d_in: int, hidden: int, d_out: int):
        self.shapes = [(d_in, hidden), (1, hidden), (hidden, d_out), (1, d_out)]
        self.params = [torch.nn.Parameter(init.clone()) for _ in range(n_models)]

    @staticmethod
    def init_vector(gen: torch.Generator, d_in: int, hidden: int, d_out: int) -> torch.Tensor:
        """nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as one flat vector."""
        parts = []
        for fan_in, n in ((d_in, d_in * hidden + hidden), (hidden, hidden * d_out + d_out)):
            bound = 1.0 / math.sqrt(fan_in)
            parts.append((torch.rand(n, generator=gen) * 2 - 1) * bound)
        # order in the vector: W1, b1, W2, b2 (W1 and b1 share fan_in, as do W2 and b2)
        w1b1, w2b2 = parts
        return torch.cat([w1b1, w2b2])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (G, B, d_out), of inputs ``x``, shape (G, B, d_in)."""
        theta = torch.stack(self.params)  # (G, P)
        mats, offset = [], 0
        for rows, cols in self.shapes:
            mats.append(theta[:, offset:offset + rows * cols].view(-1, rows, cols))
            offset += rows * cols
        w1, b1, w2, b2 = mats
        h = torch.relu(torch.baddbmm(b1, x, w1))  # (G, B, hidden)
        return torch.baddbmm(b2, h, w2)  # (G, B, d_out)


class _Cells(torch.nn.Module):
    """A :class:`GridMLP` as an ``nn.Module`` (the same Parameter objects), for ``fit``."""

    def __init__(self, grid: GridMLP):
        super().__init__()
        self.grid = grid
        self.cells = torch.nn.ParameterList(grid.params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid(x)


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


def train_grid(cfg: Config, run) -> dict[str, np.ndarray]:
    """Train every (method, seed, lr, wd) cell; per-epoch train loss and test accuracy.

    Returns
    -------
    dict with ``train_loss`` and ``test_accuracy``, each shape (methods, seeds, lrs, wds, epochs).
    """
    x_tr, y_tr = load_digits("train", flatten=True)
    x_te, y_te = load_digits("test", flatten=True)
    dev = run.device
    if cfg.fused and dev.type != "cpu":
        raise ValueError(f"fused=True is a CPU numba kernel; it cannot run on {dev} "
                         "(use fused=False or --device cpu)")
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a).to(dev) for a in (x_tr, y_tr, x_te, y_te))
    n_m, n_s, n_lr, n_wd = len(METHODS), cfg.seeds, len(cfg.lrs), len(cfg.wds)
    per_seed = n_lr * n_wd
    d_in = x_tr.shape[1]

    # The same initialisation for every cell of a seed, in both methods: differences between
    # cells come from the optimiser settings alone (and at wd = 0 the two methods coincide).
    inits = []
    for _ in range(n_s):
        gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
        # drawn on the CPU (the same numbers on every device), then moved
        inits.append(GridMLP.init_vector(gen, d_in, cfg.hidden, N_CLASSES).to(dev))
    models, optims = [], []
    for name, cls in METHODS.items():
        params = [GridMLP(init, per_seed, d_in, cfg.hidden, N_CLASSES) for init in inits]
        models.extend(params)
        settings = [(lr, wd) for lr in cfg.lrs for wd in cfg.wds]
        groups = [{"params": [p], "lr": lr, "weight_decay": wd, "initial_lr": lr}
                  for model in params for p, (lr, wd) in zip(model.params, settings, strict=True)]
        optims.append(cls(groups, fused=cfg.fused))
        run.log(f"{name}: {len(groups)} cells ({n_s} seeds x {n_lr} lrs x {n_wd} wds)")
    # One GridMLP over all cells: method-major, then seed, then lr, then wd.
    net = models[0]
    net.params = [p for m in models for p in m.params]
    n_cells = len(net.params)

    n_batches = len(y_tr) // cfg.batch_size
    total_steps = cfg.epochs * n_batches
    seed_of_cell = (torch.arange(n_m * n_s, device=dev).repeat_interleave(per_seed)
                    % n_s)  # (G,)
    losses = np.zeros((n_cells, cfg.epochs))
    accs = np.zeros((n_cells, cfg.epochs))
    orders = None
    epoch_loss = torch.zeros(n_cells, device=dev)

    def batches(step):
        nonlocal orders
        b = step % n_batches
        if b == 0:
            # One batch order per seed, shared by both methods and all lr/wd cells of that seed.
            orders = torch.from_numpy(np.stack([run.rng.permutation(len(y_tr))
                                                for _ in range(n_s)])).to(dev)
        idx = orders[:, b * cfg.batch_size:(b + 1) * cfg.batch_size][seed_of_cell]  # (G, B)
        return x_tr[idx], y_tr[idx]

    def loss_fn(cells, batch):
        xb, yb = batch
        logits = cells(xb)  # (G, B, 10)
        loss = F.cross_entropy(logits.reshape(-1, N_CLASSES), yb.reshape(-1),
                               reduction="none").view(n_cells, -1).mean(1)  # (G,)
        epoch_loss.add_(loss.detach())
        return loss.sum()  # cells share no parameters: each gets its own gradient

    def end_of_epoch(step, _metrics):
        epoch, rest = divmod(step + 1, n_batches)
        if rest:
            return
        losses[:, epoch - 1] = (epoch_loss / n_batches).cpu().numpy()
        epoch_loss.zero_()
        with torch.no_grad():
            pred = net(x_te.expand(n_cells, -1, -1)).argmax(-1)  # (G, n_test)
            accs[:, epoch - 1] = (pred == y_te).double().mean(1).cpu().numpy()

    # the cosine factor multiplies each group's initial_lr (LambdaLR's base lr)
    scheds = ([torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _cosine(k, total_steps))
               for opt in optims] if cfg.cosine else None)
    fit(_Cells(net), loss_fn, batches, optims, total_steps, scheduler=scheds,
        progress=run.track, description="adam vs adamw grid", callback=end_of_epoch)
    shape = (n_m, n_s, n_lr, n_wd, cfg.epochs)
    return {"train_loss": losses.reshape(shape), "test_accuracy": accs.reshape(shape)}


def _wd_label(wd: float) -> str:
    return "0" if wd == 0 else f"{wd:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _heatmaps(cfg: Config, final_acc: np.ndarray):
    """Stacked heatmaps of final test accuracy, shape (methods, lrs, wds), in percent."""
    fig, axes = new_figure(len(METHODS), 1, size=(7.0, 3.6 * len(METHODS)),
                           constrained_layout=True)
    lo = max(final_acc.min(), final_acc.max() - 0.15)  # a 15-point colour range shows the ridge
    for ax, (m, name) in zip(axes, enumerate(METHODS), strict=True):
        im = ax.imshow(final_acc[m] * 100, vmin=lo * 100, vmax=final_acc.max() * 100,
                       cmap="viridis", origin="lower", aspect="auto")
        best = np.unravel_index(np.argmax(final_acc[m]), final_acc[m].shape)
        for (i, j), val in np.ndenumerate(final_acc[m]):
            ax.text(j, i, f"{100 * val:.1f}", ha="center", va="center", fontsize=9,
                    color="white" if val < (lo + final_acc.max()) / 2 else "black",
                    fontweight="bold" if (i, j) == best else "normal")
        ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, ec=PALETTE[3],
                               lw=2))
        ax.set_xticks(range(len(cfg.wds)), [_wd_label(w) for w in cfg.wds])
        ax.set_yticks(range(len(cfg.lrs)), [f"{lr:g}" for lr in cfg.lrs])
        ax.set(xlabel=(r"L2 coefficient $\lambda$ (added to the loss)" if name == "adam_l2"
                       else r"decoupled weight decay $\lambda$"),
               ylabel="peak learning rate", title=LABELS[name])
        ax.grid(False)
    fig.colorbar(im, ax=axes, label="final test accuracy (%)", shrink=0.9)
    return fig


def _best_curves(curves: dict[str, np.ndarray], best: dict[str, tuple[int, int]], cfg: Config):
    fig, (ax1, ax2) = new_figure(1, 2, size="column_tall", layout="constrained")
    epochs = np.arange(1, cfg.epochs + 1)
    for color, (m, name) in zip(PALETTE, enumerate(METHODS), strict=False):
        i, j = best[name]
        lab = (f"{LABELS[name]}: learning rate {cfg.lrs[i]:g}, "
               rf"$\lambda$ = {_wd_label(cfg.wds[j])}")
        ax1.plot(epochs, curves["train_loss"][m, :, i, j].mean(0), color=color, label=lab)
        ax2.plot(epochs, 100 * curves["test_accuracy"][m, :, i, j].mean(0), color=color, label=lab)
    ax1.set(yscale="log", xlabel="epoch", ylabel="train cross-entropy (mean over seeds)",
            title="Train loss, best cells")
    ax2.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy, same cells")
    ax2.set_ylim(max(80.0, ax2.get_ylim()[0]), 100)
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", fontsize=9)
    return fig


def run(config: Config) -> Result:
    if not config.lrs or not config.wds or min(config.lrs) <= 0 or min(config.wds) < 0:
        raise ValueError(f"need lrs > 0 and wds >= 0, got lrs={config.lrs}, wds={config.wds}")
    if config.epochs < 1 or config.seeds < 1 or config.batch_size < 1 or config.hidden < 1:
        raise ValueError("epochs, seeds, batch_size and hidden must be positive")
    with start_run(__name__, config) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        # Saturated softmax cells square tiny gradients into subnormal v_t, where every sqrt
        # and division runs ~30x slower; flushing them to zero changes values below 1e-38 only.
        torch.set_flush_denormal(True)
        try:
            curves = train_grid(config, run)
        finally:
            torch.set_flush_denormal(False)
            torch.set_num_threads(threads)
        acc = curves["test_accuracy"][..., -1]  # (methods, seeds, lrs, wds)
        final = acc.mean(1)  # mean over seeds
        best = {}
        for m, name in enumerate(METHODS):
            i, j = np.unravel_index(np.argmax(final[m]), final[m].shape)
            best[name] = (int(i), int(j))
            # "Good region": cells within one point of the method's own best accuracy.
            run.log_metrics({
                f"{name}/best_test_accuracy": final[m, i, j],
                f"{name}/best_test_accuracy_seed_std": acc[m, :, i, j].std(),
                f"{name}/best_lr": config.lrs[i],
                f"{name}/best_weight_decay": config.wds[j],
                f"{name}/best_final_train_loss": curves["train_loss"][m, :, i, j, -1].mean(),
                f"{name}/cells_within_1pt_count": int((final[m] >= final[m, i, j] - 0.01).sum()),
            })
            run.log(f"{name}: best {100 * final[m, i, j]:.2f}% at lr={config.lrs[i]:g}, "
                    f"wd={config.wds[j]:g}")
        if 0.0 in config.wds:
            # Without decay Adam and AdamW are the same algorithm: their columns must agree.
            j = list(config.wds).index(0.0)
            diff = np.abs(curves["train_loss"][0, ..., j, :] - curves["train_loss"][1, ..., j, :])
            run.log_metrics({"check/no_decay_train_loss_max_abs_diff": np.nanmax(diff)})
        run.save_figure(_heatmaps(config, final), "accuracy_heatmaps")
        run.save_figure(_best_curves(curves, best, config), "best_curves")
    return run.result
