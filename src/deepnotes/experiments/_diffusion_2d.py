"""Training loops, data and plots shared by the 2-D diffusion experiments.

Used by ``diffusion_sde`` (a VP ε-prediction model, Song et al. 2021) and ``rectified_flow``
(velocity models and reflow, Liu et al. 2023). Not a topic: the registry skips modules whose
name starts with an underscore. The algorithms themselves live in :mod:`deepnotes.diffusion`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from deepnotes.core.plotting import PALETTE
from deepnotes.data import get_toy
from deepnotes.data.toy2d import EightGaussians, Toy2D
from deepnotes.diffusion.gmm import GaussianMixture
from deepnotes.diffusion.metrics import sliced_wasserstein
from deepnotes.diffusion.networks import MLPBackbone
from deepnotes.diffusion.parameterizations import prediction_loss
from deepnotes.diffusion.processes import NoiseProcess
from deepnotes.diffusion.rectified_flow import rectified_flow_loss
from deepnotes.nn import training

#: Training times for ε-prediction start here: at t = 0 the noise is not identifiable from x_t
#: and its regression target is pure variance (Song et al. 2021 train on [1e-5, 1]).
T_EPS = 1e-3


def toy_gmm(toy: EightGaussians) -> GaussianMixture:
    """The ``8-gaussians`` toy as an exact :class:`GaussianMixture` (equal weights, std² I)."""
    k = toy.n_modes
    covs = np.broadcast_to(toy.std ** 2 * np.eye(2), (k, 2, 2)).copy()
    return GaussianMixture(np.full(k, 1.0 / k), toy.centers, covs)


def toy_batches(name: str, rng: np.random.Generator) -> tuple[Toy2D, Callable[[int], torch.Tensor]]:
    """The toy ``name`` and a function ``n -> (n, 2) float32`` of fresh exact samples."""
    toy = get_toy(name)

    def draw(n: int) -> torch.Tensor:
        return torch.from_numpy(toy.sample(n, rng)).float()

    return toy, draw


def on_device(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``model(x, t)`` evaluated on the model's device, its output returned to ``x``'s device.

    The 2-D samplers, the exact mixture and the SW metric keep their small tensors (a few
    thousand points) on the CPU, where the exact references live; only the network's
    evaluations cross to the model's device (``run.device``). On the CPU it is ``model``.
    """
    device = next(model.parameters()).device

    def evaluate(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x.to(device), t.to(device)).to(x.device)

    return evaluate


class TimeMLP(nn.Module):
    """``model(x_t, t)``: the MLP backbone conditioned on the process time ``t`` (B,)."""

    def __init__(self, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.net = MLPBackbone(2, hidden=hidden, depth=depth)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t.to(x).reshape(-1))


def fit_batches(model: nn.Module, loss_fn, batches, steps: int, lr: float, run,
                desc: str) -> list[float]:
    """Adam with a cosine learning-rate schedule through :func:`deepnotes.nn.training.fit`
    (``loss_fn(model, batch)``, ``batches(step)``; under ``--nproc`` each rank gets its slice
    of the batch). The draws come from ``run.rng`` and torch's global generator, so the loop is
    checkpointed in the run (``--resume``). Returns the loss per step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    resumable = run.fit_checkpoint(every=max(1, steps // 10)) if hasattr(
        run, "fit_checkpoint") else {}
    result = training.fit(model, loss_fn, batches, opt, steps, scheduler=sched,
                          progress=run.track, description=desc, **resumable)
    model.eval()
    return result.history["loss"]


def fit(model: nn.Module, loss_of_step: Callable[[int], torch.Tensor], steps: int, lr: float,
        run, desc: str) -> list[float]:
    """:func:`fit_batches` where ``loss_of_step(i)`` builds step i's loss, drawing its own
    batch (so every rank computes the whole batch under ``--nproc``)."""
    return fit_batches(model, lambda _model, step: loss_of_step(step), lambda step: step,
                       steps, lr, run, desc)


def train_eps_model(draw, process: NoiseProcess, steps: int, batch: int, lr: float, hidden: int,
                    run, desc: str) -> tuple[TimeMLP, list[float]]:
    """ε-prediction on ``process`` (Ho et al. 2020 Eq. 14 in continuous time; t ~ U[T_EPS, 1]).

    The model is initialised on the CPU and trains on ``run.device``; the batches and times are
    drawn on the CPU (``run.rng`` and torch's global generator, as the checkpoint expects) and
    moved there."""
    device = run.device
    model = TimeMLP(hidden).to(device)

    def batches(_):
        t = T_EPS + (1 - T_EPS) * torch.rand(batch)
        return draw(batch).to(device), t.to(device)

    def loss_fn(m, xt):
        return prediction_loss(m, process, xt[0], "eps", t=xt[1])

    return model, fit_batches(model, loss_fn, batches, steps, lr, run, desc)


def train_velocity(model: TimeMLP, pairs: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                   steps: int, batch: int, lr: float, run, desc: str) -> list[float]:
    """Flow matching on couplings ``pairs(n) -> (x_0, ε)`` (independent: 1-RF; reflow: 2-RF);
    the pairs are moved to the model's device."""
    device = next(model.parameters()).device

    def loss_fn(m, pair):
        return rectified_flow_loss(m, *pair)

    def batches(_):
        return tuple(x.to(device) for x in pairs(batch))

    return fit_batches(model, loss_fn, batches, steps, lr, run, desc)


def sw(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance with a fixed set of 256 directions (comparable numbers),
    computed on the CPU (the directions come from a CPU generator)."""
    gen = torch.Generator().manual_seed(seed)
    return float(sliced_wasserstein(x.detach().cpu().double(), y.detach().cpu().double(), 256,
                                    gen))


def sw_floor(draw: Callable[[int], torch.Tensor], n: int, repeats: int = 5) -> float:
    """Mean SW₂ between independent n-point data sets: what a perfect sampler would score.

    One pair alone is a noisy yardstick (the random mass imbalance between well-separated modes
    dominates it), hence the mean over ``repeats`` pairs.
    """
    return float(np.mean([sw(draw(n).double(), draw(n).double(), seed=i)
                          for i in range(repeats)]))


def grid(bounds: tuple[float, float], n: int) -> tuple[np.ndarray, torch.Tensor]:
    """Axis ticks (n,) and the (n², 2) float64 grid points, row-major with y outer."""
    c = np.linspace(bounds[0], bounds[1], n)
    xx, yy = np.meshgrid(c, c)
    return c, torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))


def scatter(ax, x, bounds, title: str, color=PALETTE[0], n_max: int = 3000) -> None:
    """Equal-aspect scatter of at most ``n_max`` points inside ``bounds``."""
    x = np.asarray(x)[:n_max]
    ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, color=color, rasterized=True)
    ax.set(xlim=bounds, ylim=bounds, title=title, aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])


def heatmap(ax, values: np.ndarray, bounds, title: str, **kw):
    """Square image of grid values (n, n) over ``bounds``; returns the image."""
    im = ax.imshow(values, origin="lower", extent=(*bounds, *bounds), cmap=kw.pop("cmap",
                   "viridis"), **kw)
    ax.set(title=title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    return im
