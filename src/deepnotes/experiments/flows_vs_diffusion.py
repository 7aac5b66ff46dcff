"""A continuous normalizing flow trained two ways: maximum likelihood vs flow matching.

The same dynamics network ``f(x, t)`` (:class:`deepnotes.generative.flows.cnf.TimeMLP`) is fitted
to each 2-D toy twice: by maximum likelihood through the instantaneous change of variables
(Eq. 4, FFJORD-style, back-propagating through a fixed RK4 grid) and by conditional flow
matching on the straight path ``x_t = (1 − t) x + t ε`` (Eq. 6, no ODE solve in training). Both
are then the same kind of object — a CNF — and are evaluated identically: exact log-density by
the adaptive Dormand–Prince solver with the exact trace (Eq. 2), samples, trajectories and the
data → noise map. On 8-gaussians, a Gaussian mixture, the exact mixture velocity (the
probability-flow ODE of the rectified-flow diffusion) gives the oracle CNF whose test NLL is
the true one. A last part measures the Hutchinson estimator (Eq. 3, 5): its per-point spread
for Rademacher and Gaussian probes and its cost per training step.

Figures: ``densities``, ``samples``, ``trajectories``, ``data_to_noise``, ``learning_curves``,
``trace_variance``. Headline: the flow-matching CNF's test NLL (mean over the toys); peer: the
maximum-likelihood CNF's.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import get_toy
from deepnotes.data.toy2d import EightGaussians
from deepnotes.diffusion.gmm import GaussianMixture
from deepnotes.diffusion.rectified_flow import straightness
from deepnotes.experiments._flows_common import model_device, plot_density, plot_samples
from deepnotes.generative.flows.cnf import CNF
from deepnotes.nn.training import fit

METHODS = {"ml": "max. likelihood", "fm": "flow matching"}


@dataclass
class Config(ExperimentConfig):
    toys: tuple[str, ...] = ("8-gaussians", "two-moons")
    """2-D toys (names from deepnotes.data.TOYS)."""
    hidden: int = 64
    """Width of the dynamics MLP (the same network for both trainings)."""
    depth: int = 3
    """Hidden layers of the dynamics MLP."""
    ml_steps: int = 600
    """Adam steps of maximum-likelihood training (each solves the ODE with RK4)."""
    fm_steps: int = 3000
    """Adam steps of flow-matching training (each one network evaluation per example)."""
    batch: int = 256
    """Fresh exact toy samples per training step."""
    lr: float = 3e-3
    """Peak Adam learning rate (cosine-annealed), both trainings."""
    rk4_steps: int = 6
    """RK4 steps over t in [0, 1] in maximum-likelihood training."""
    rtol: float = 1e-5
    """Relative tolerance of the adaptive solver in every evaluation."""
    atol: float = 1e-5
    """Absolute tolerance of the adaptive solver in every evaluation."""
    n_test: int = 4000
    """Test samples per toy for the final NLL."""
    n_evals: int = 6
    """Test-NLL checkpoints per training run (learning curves)."""
    n_curve_test: int = 1000
    """Test samples per learning-curve checkpoint."""
    grid: int = 100
    """Grid points per axis of the density heatmaps."""
    n_probe_points: int = 256
    """Test points of the Hutchinson study (first toy, ML-trained CNF)."""
    n_probes: int = 16
    """Independent Hutchinson probes per point."""
    trace_timing_steps: int = 10
    """Maximum-likelihood steps timed with each trace estimator."""
    threads: int = 1
    """Torch threads (small networks: a second thread mostly adds sync cost)."""


PRESETS = make_presets(
    smoke=Config(toys=("8-gaussians",), hidden=16, depth=2, ml_steps=4, fm_steps=20,
                 rk4_steps=2, n_test=200, n_evals=1, n_curve_test=100, grid=20,
                 n_probe_points=16, n_probes=4, trace_timing_steps=2),
    quick=Config(toys=("8-gaussians",), hidden=32, depth=2, ml_steps=60, fm_steps=500,
                 rk4_steps=4, n_test=1000, n_evals=2, n_curve_test=300, grid=50,
                 n_probe_points=64, n_probes=8, trace_timing_steps=4),
    full=Config(),
)
HEADLINE = "toy/fm_test_nll_nats"
PEER = "toy/ml_test_nll_nats"


def _nll(model: CNF, x: torch.Tensor) -> tuple[float, int]:
    """Mean test NLL (nats) by the adaptive solver with the exact trace, and its NFE (on the
    model's device)."""
    with torch.no_grad():
        lp, info = model.log_prob(x.to(model_device(model)), trace="exact", return_info=True)
    return -float(lp.double().mean()), info["nfe"]


def train(model: CNF, method: str, toy, cfg: Config, run, x_curve: torch.Tensor):
    """Fit ``model`` by ``method`` (ml or fm); returns (ms per step, [(train s, test NLL)])."""
    steps = cfg.ml_steps if method == "ml" else cfg.fm_steps
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    checkpoints = set(np.linspace(0, steps, cfg.n_evals + 1)[1:].round().astype(int).tolist())
    device = model_device(model)
    # the loss's noise (times, probes) is drawn on the model's device
    gen = torch.Generator(device).manual_seed(int(run.rng.integers(2**31)))
    curve, train_s, t0 = [(0.0, _nll(model, x_curve)[0])], 0.0, 0.0

    def batches(step):
        nonlocal t0
        t0 = time.perf_counter()  # a step's time runs from its batch to its callback
        return torch.from_numpy(toy.sample(cfg.batch, run.rng)).float().to(device)

    def loss_fn(m, x):
        return m.nll_loss(x, gen) if method == "ml" else m.flow_matching_loss(x, gen)

    def after_step(step, _metrics):
        nonlocal train_s
        train_s += time.perf_counter() - t0
        if step + 1 in checkpoints:
            curve.append((train_s, _nll(model, x_curve)[0]))

    # clipping: one stiff batch must not undo the fit (its gradient through the RK4 graph can
    # spike)
    fit(model, loss_fn, batches, opt, steps, scheduler=sched, clip_grad_norm=10.0,
        progress=run.track, description=f"{METHODS[method]} on {toy.name}", callback=after_step)
    return 1e3 * train_s / max(steps, 1), curve


def path_straightness(model: CNF, n: int, rng) -> float:
    """Liu et al.'s straightness ``∫ E||(ε − x_0) − f(x_t, t)||² dt`` of the sampling paths from
    ``n`` base draws (0 for straight paths at constant speed), on a 32-step Euler grid."""
    gen = torch.Generator(model_device(model)).manual_seed(int(rng.integers(2**31)))
    z = model.base.sample(n, gen)
    return float(straightness(model.velocity, z, torch.linspace(1.0, 0.0, 33)))


def oracle(toy) -> CNF | None:
    """The CNF driven by the exact rectified-flow velocity of an 8-gaussians toy, else None.

    No network: a closed-form float64 mixture, kept on the CPU."""
    if not isinstance(toy, EightGaussians):
        return None
    k = toy.n_modes
    covs = np.tile(np.eye(2) * toy.std ** 2, (k, 1, 1))                 # (K, 2, 2)
    gmm = GaussianMixture([1.0 / k] * k, toy.centers, covs)
    return CNF(2, dynamics=gmm.velocity).double()


def plot_trajectories(ax, toy, model: CNF, title: str, rng, n: int = 300, n_t: int = 16):
    """Paths from base draws at t = 1 (grey dots) to samples at t = 0 (coloured dots)."""
    z = torch.from_numpy(rng.standard_normal((n, 2))).float().to(model_device(model))
    with torch.no_grad():
        xs = model.trajectory(z, np.linspace(1.0, 0.0, n_t)).cpu().numpy()      # (T, n, 2)
    ax.plot(xs[:, :, 0], xs[:, :, 1], color=PALETTE[0], lw=0.4, alpha=0.35)
    ax.scatter(xs[0, :, 0], xs[0, :, 1], s=2, color=PALETTE[7], alpha=0.5)
    ax.scatter(xs[-1, :, 0], xs[-1, :, 1], s=2, color=PALETTE[1])
    _frame(ax, toy.bounds, title)


def plot_data_to_noise(ax, toy, model: CNF, title: str, n_lines: int = 15, n_pts: int = 200):
    """Image at t = 1 of a square grid of lines in data space (all lines in one ODE solve)."""
    lo, hi = toy.bounds
    s = np.linspace(lo, hi, n_pts)
    lines = [np.stack(p, 1) for v in np.linspace(lo, hi, n_lines)
             for p in ((s, np.full_like(s, v)), (np.full_like(s, v), s))]
    with torch.no_grad():
        x = torch.from_numpy(np.concatenate(lines)).float().to(model_device(model))
        z = model.trajectory(x, [0.0, 1.0])[-1].cpu()
    for i, zi in enumerate(z.view(len(lines), n_pts, 2).numpy()):
        ax.plot(zi[:, 0], zi[:, 1], lw=0.6, color=PALETTE[(i // 2) % 2])
    _frame(ax, (-4.0, 4.0), title)


def _frame(ax, bounds, title: str) -> None:
    ax.set(xlim=bounds, ylim=bounds, xticks=[], yticks=[], title=title)
    ax.set_aspect("equal")


def trace_study(model: CNF, toy, cfg: Config, run) -> dict:
    """Hutchinson log-density errors per probe, and ML step times per trace estimator."""
    device = model_device(model)
    x = torch.from_numpy(toy.sample(cfg.n_probe_points, run.rng)).float().to(device)
    with torch.no_grad():
        exact = model.log_prob(x, trace="exact")
    gen = torch.Generator(device).manual_seed(int(run.rng.integers(2**31)))
    out = {"errors": {}}
    reps = x.repeat(cfg.n_probes, 1)                     # (n_probes · n, 2): one solve for all
    for probe in ("rademacher", "gaussian"):
        with torch.no_grad():
            est = model.log_prob(reps, trace="hutchinson", probe=probe, generator=gen)
        err = (est.view(cfg.n_probes, -1) - exact).double()                 # (n_probes, n)
        out["errors"][probe] = err.cpu().numpy().ravel()
        # per-point spread, pooled: sqrt of the mean per-point variance over probes
        out[f"trace/{probe}_logp_std_nats"] = float(err.var(0).mean().sqrt())
        out[f"trace/{probe}_logp_bias_nats"] = float(err.mean())
        out[f"trace/{probe}_logp_bias_se_nats"] = float(err.std() / math.sqrt(err.numel()))
    xb = torch.from_numpy(toy.sample(cfg.batch, run.rng)).float().to(device)
    for trace in ("exact", "hutchinson"):
        m = copy.deepcopy(model)
        m.trace = trace
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        t0 = time.perf_counter()
        for _ in range(cfg.trace_timing_steps):
            loss = m.nll_loss(xb, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out[f"trace/{trace}_ml_step_ms"] = 1e3 * (time.perf_counter() - t0) / cfg.trace_timing_steps
    return out


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(config.threads)
        cfg = config
        n_t = len(cfg.toys)
        fig_d, ax_d = new_figure(n_t, 3, size=(7.0, 2.45 * n_t), squeeze=False)
        fig_s, ax_s = new_figure(n_t, 3, size=(7.0, 2.45 * n_t), squeeze=False)
        fig_t, ax_t = new_figure(n_t, 2, size=(5.6, 2.8 * n_t), squeeze=False)
        fig_g, ax_g = new_figure(1, 2, size=(5.6, 3.0), squeeze=False)
        fig_c, ax_c = new_figure(1, n_t, size=(min(7.0, 3.5 * n_t), 3.4), squeeze=False,
                                 layout="constrained")
        totals = {"ml": [], "fm": [], "true": []}
        first_ml = None
        for row, toy_name in enumerate(cfg.toys):
            toy = get_toy(toy_name)
            x_test = toy.sample(cfg.n_test, run.rng)
            x_t = torch.from_numpy(x_test).float()
            x_curve = torch.from_numpy(toy.sample(cfg.n_curve_test, run.rng)).float()
            true_nll = -float(np.mean(toy.log_prob(x_test)))
            totals["true"].append(true_nll)
            metrics = {f"toy/{toy_name}_true_test_nll_nats": true_nll}
            plot_density(ax_d[row, 0], toy, None, cfg.grid, f"{toy_name}: truth")
            ax_s[row, 0].scatter(x_test[:2000, 0], x_test[:2000, 1], s=1, alpha=0.4,
                                 color=PALETTE[7])
            _frame(ax_s[row, 0], toy.bounds, f"{toy_name}: data")
            for col, method in enumerate(METHODS, start=1):
                torch.manual_seed(int(run.rng.integers(2**31)))
                # built on the CPU (the same initial weights everywhere), run on run.device
                model = CNF(2, hidden=cfg.hidden, depth=cfg.depth, trace="exact",
                            rk4_steps=cfg.rk4_steps, rtol=cfg.rtol,
                            atol=cfg.atol).to(run.device)
                step_ms, curve = train(model, method, toy, cfg, run, x_curve)
                nll, nfe = _nll(model, x_t)
                straight = path_straightness(model, 1000, run.rng)
                totals[method].append(nll)
                metrics.update({f"toy/{toy_name}_{method}_test_nll_nats": nll,
                                f"toy/{toy_name}_{method}_step_ms": step_ms,
                                f"toy/{toy_name}_{method}_eval_nfe": nfe,
                                f"toy/{toy_name}_{method}_straightness": straight})
                run.log(f"{METHODS[method]} on {toy_name}: test NLL {nll:.3f} nats (true "
                        f"{true_nll:.3f}), {step_ms:.1f} ms/step, {nfe} NFE per density eval, "
                        f"straightness {straight:.3f}")
                label = METHODS[method]
                plot_density(ax_d[row, col], toy, model, cfg.grid, f"CNF, {label}")
                plot_samples(ax_s[row, col], toy, model, f"CNF, {label}")
                plot_trajectories(ax_t[row, col - 1], toy, model, f"{toy_name}: {label}",
                                  run.rng)
                secs, nlls = zip(*curve, strict=True)
                ax_c[0, row].plot(secs, nlls, marker="o", color=PALETTE[col - 1], label=label)
                if row == 0:
                    plot_data_to_noise(ax_g[0, col - 1], toy, model,
                                       rf"{label}: data $\to z$")
                    if method == "ml":
                        first_ml = (model, toy)
            ax_c[0, row].axhline(true_nll, color=PALETTE[7], ls="--", lw=1, label="true NLL")
            ax_c[0, row].set(xlabel="training time (s)", ylabel="test NLL (nats)",
                             title=toy_name)
            exact_cnf = oracle(toy)
            if exact_cnf is not None:
                n_or = min(cfg.n_test, 1000)
                nll_or, nfe_or = _nll(exact_cnf, x_t[:n_or].double())
                true_sub = -float(np.mean(toy.log_prob(x_test[:n_or])))
                metrics.update({f"toy/{toy_name}_oracle_test_nll_nats": nll_or,
                                f"toy/{toy_name}_oracle_straightness": path_straightness(
                                    exact_cnf, 1000, run.rng),
                                f"toy/{toy_name}_oracle_minus_true_nats": nll_or - true_sub,
                                f"toy/{toy_name}_oracle_eval_nfe": nfe_or})
                run.log(f"exact mixture velocity on {toy_name}: NLL {nll_or:.4f} vs true "
                        f"{true_sub:.4f} on the same {n_or} points ({nfe_or} NFE)")
            run.log_metrics(metrics)
        run.log_metrics({"toy/fm_test_nll_nats": float(np.mean(totals["fm"])),
                         "toy/ml_test_nll_nats": float(np.mean(totals["ml"])),
                         "toy/true_test_nll_nats": float(np.mean(totals["true"])),
                         "toy/ml_train_nfe_per_step": 4 * cfg.rk4_steps,
                         "toy/fm_train_nfe_per_step": 1})
        fig_c.legend(*ax_c[0, 0].get_legend_handles_labels(), loc="outside lower center",
                     ncol=3, fontsize=9)
        for fig, name in ((fig_d, "densities"), (fig_s, "samples"), (fig_t, "trajectories"),
                          (fig_g, "data_to_noise"), (fig_c, "learning_curves")):
            run.save_figure(fig, name)

        model, toy = first_ml
        study = trace_study(model, toy, cfg, run)
        errors = study.pop("errors")
        run.log_metrics(study)
        run.log("Hutchinson on " + toy.name + ": " + ", ".join(
            f"{p} std {study[f'trace/{p}_logp_std_nats']:.3f} nats" for p in errors)
            + f"; ML step exact {study['trace/exact_ml_step_ms']:.1f} ms, Hutchinson "
            f"{study['trace/hutchinson_ml_step_ms']:.1f} ms")
        fig, axes = new_figure(1, 2, size="column_tall", layout="constrained")
        hi = max(float(np.abs(e).max()) for e in errors.values())
        bins = np.linspace(-hi, hi, 50)
        for i, (probe, err) in enumerate(errors.items()):
            axes[0].hist(err, bins=bins, alpha=0.5, color=PALETTE[i],
                         label=f"{probe.capitalize()} probe")
        axes[0].set(xlabel=r"Hutchinson $\log p$ $-$ exact $\log p$ (nats)", ylabel="count",
                    yscale="log", title=f"One-probe log-density error\n({toy.name}, ML CNF)")
        axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)
        names = ["ML,\nexact trace", "ML,\nHutchinson", "flow\nmatching"]
        times = [study["trace/exact_ml_step_ms"], study["trace/hutchinson_ml_step_ms"],
                 run.metrics[f"toy/{toy.name}_fm_step_ms"]]
        axes[1].bar(names, times, color=PALETTE[:3])
        axes[1].set(ylabel="ms per training step", title="Cost of a training step")
        run.save_figure(fig, "trace_variance")
    return run.result
