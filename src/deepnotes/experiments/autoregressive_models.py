"""FVSBN, NADE and MADE on binarised 8×8 digits, with NICE, RealNVP and Glow on the same split.

Every model is trained by maximum likelihood (Adam on the exact NLL, Eq. 2 of the post) on the
fixed train split of ``load_digits(variant="binarized")`` less a validation slice; the epoch with
the best validation NLL is kept (early stopping: the set has only ~1350 images and NADE/MADE
overfit it) and evaluated on the test split, in nats per image and bits/dim (Eq. 10).

Models: FVSBN (Eq. 3), NADE (Eqs. 4-6), MADE with one ordering and one mask, and MADE trained
order-agnostically over ``made_masks`` mask sets (random ordering and connectivity each), tested as
the equal mixture of its mask sets (Eq. 9) and, for comparison, one mask set at a time. The
independent-pixel model (closed-form MLE with add-``alpha`` smoothing) is the baseline.

Flows (``flows``): NICE, RealNVP and Glow on the same binary images, uniformly dequantised to
``(x + u) / 2`` with fresh ``u`` every epoch; their test bits/dim (``n_levels=2``, Eq. 11) is a
Monte-Carlo estimate of an upper bound on the binary image's ``-log2 P(x) / D``, so it is
comparable with the exact figures of the autoregressive models. Early stopping as above.

Figures: ``samples`` (test digits and ancestral samples; flow samples binarised at 1/2),
``curves`` (validation bits/dim per epoch), ``ensemble`` (order-agnostic MADE: test bits/dim
against the number of mask sets averaged), ``bits_per_dim`` (test bits/dim of every model).
Headline: NADE's test bits/dim.
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
from deepnotes.data import load_digits
from deepnotes.experiments._flows_common import digits_mosaic, train_flow
from deepnotes.generative.autoregressive import FVSBN, MADE, NADE, AutoregressiveModel
from deepnotes.generative.basics import bernoulli_log_prob, fit_independent_bernoulli
from deepnotes.generative.flows import NICE, Flow, Glow, RealNVP
from deepnotes.nn.training import fit

MODELS = ("fvsbn", "nade", "made", "made_oa")
FLOWS = ("nice", "realnvp", "glow")
LABELS = {"fvsbn": "FVSBN", "nade": "NADE", "made": "MADE (1 ordering)",
          "made_oa": "MADE (order-agnostic, ensemble)", "nice": "NICE", "realnvp": "RealNVP",
          "glow": "Glow"}


@dataclass
class Config(ExperimentConfig):
    models: tuple[str, ...] = MODELS
    """Models to train: any of fvsbn, nade, made, made_oa."""
    epochs: int = 150
    """Passes over the training images (the best validation epoch is kept)."""
    batch: int = 64
    """Mini-batch size."""
    lr: float = 3e-3
    """Adam learning rate (cosine-annealed to zero)."""
    weight_decay: float = 0.0
    """Adam's L2 penalty on every parameter."""
    nade_hidden: int = 200
    """NADE hidden units H."""
    made_hidden: tuple[int, ...] = (500,)
    """MADE hidden layer widths."""
    made_masks: int = 16
    """Mask sets (random ordering + connectivity) of the order-agnostic MADE."""
    val_fraction: float = 0.15
    """Share of the training split held out for early stopping."""
    alpha: float = 0.5
    """Add-alpha smoothing of the independent-pixel baseline (pixels never on in train)."""
    flows: tuple[str, ...] = FLOWS
    """Flows trained on the dequantised binary images: any of nice, realnvp, glow."""
    flow_epochs: int = 150
    """Passes of every flow over the training images (fresh dequantisation noise each)."""
    flow_hidden: int = 256
    """Width of the flows' coupling networks."""
    flow_n_hidden: int = 2
    """Hidden layers per coupling network."""
    flow_depth: int = 6
    """Affine couplings of RealNVP / steps of Glow (NICE keeps the paper's 4 couplings)."""
    flow_lr: float = 1e-3
    """Peak Adam learning rate of the flows (cosine-annealed)."""
    logit_alpha: float = 0.05
    """Squeeze of the logit transform in front of RealNVP and Glow (NICE sees [0, 1] directly)."""
    flow_noise_draws: int = 4
    """Fixed dequantisation draws averaged in the flows' validation and test bits/dim."""
    n_samples: int = 64
    """Samples drawn per model for the sample grid."""
    threads: int = 1
    """Torch threads (small models: a second thread mostly adds sync cost)."""


PRESETS = make_presets(
    smoke=Config(epochs=2, nade_hidden=16, made_hidden=(32,), made_masks=2, n_samples=16,
                 flow_epochs=1, flow_hidden=16, flow_n_hidden=1, flow_depth=2,
                 flow_noise_draws=1),
    quick=Config(epochs=25, nade_hidden=100, made_hidden=(256,), made_masks=8, flow_epochs=15,
                 flow_hidden=128, flow_depth=4, flow_noise_draws=2),
    full=Config(),
)
HEADLINE = "test/nade_bits_per_dim"
PEER = None


def build(name: str, cfg: Config, dim: int) -> AutoregressiveModel:
    if name == "fvsbn":
        return FVSBN(dim)
    if name == "nade":
        return NADE(dim, cfg.nade_hidden)
    if name == "made":
        return MADE(dim, cfg.made_hidden)
    if name == "made_oa":
        return MADE(dim, cfg.made_hidden, n_masks=cfg.made_masks, order_agnostic=True)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def nll_nats(model: AutoregressiveModel, x: torch.Tensor) -> float:
    """Mean exact NLL in nats per image; the order-agnostic MADE is scored as its mixture."""
    with torch.no_grad():
        if isinstance(model, MADE) and model.n_masks > 1:
            return float(-model.log_prob_ensemble(x).double().mean())
        return float(-model.log_prob(x).double().mean())


def bits_per_dim(nats: float, dim: int) -> float:
    """Eq. 10: nats per image -> bits per pixel."""
    return nats / (dim * math.log(2.0))


def train(model, x_train, x_val, cfg: Config, run, name: str) -> dict:
    """Adam on the exact NLL; returns the per-epoch curves and keeps the best validation state."""
    n = len(x_train)
    per_epoch = max(1, n // cfg.batch)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * per_epoch)
    order_agnostic = isinstance(model, MADE) and model.n_masks > 1
    curve, best, best_state = [], math.inf, None
    perm, total = None, 0.0

    def batches(step):  # a new permutation each epoch; the incomplete last batch is dropped
        nonlocal perm
        i = step % per_epoch
        if i == 0:
            perm = torch.from_numpy(run.rng.permutation(n))
        if order_agnostic:
            # one mask set per mini-batch, as in Germain et al. (2015)
            model.select_mask(int(run.rng.integers(model.n_masks)))
        return x_train[perm[i * cfg.batch:(i + 1) * cfg.batch]]

    def end_of_epoch(step, metrics):
        nonlocal total, best, best_state
        total += metrics["loss"]
        epoch, rest = divmod(step + 1, per_epoch)
        if rest:
            return
        val = nll_nats(model, x_val)
        curve.append((epoch, bits_per_dim(total / per_epoch, model.dim),
                      bits_per_dim(val, model.dim)))
        total = 0.0
        if val < best:
            best, best_state = val, copy.deepcopy(model.state_dict())

    t0 = time.perf_counter()
    fit(model, lambda m, xb: -m.log_prob(xb).mean(), batches, opt, cfg.epochs * per_epoch,
        scheduler=sched, progress=run.track, description=LABELS[name], callback=end_of_epoch)
    seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    if order_agnostic:
        model.select_mask(0)
    best_epoch = min(curve, key=lambda c: c[2])[0]
    return {"curve": curve, "best_epoch": best_epoch,
            "step_ms": 1e3 * seconds / (cfg.epochs * per_epoch)}


def build_flow(name: str, cfg: Config, dim: int, generator: torch.Generator) -> Flow:
    if name == "nice":
        # as in the post `nice`: [0, 1] data fed directly, logistic prior, 4 couplings
        return NICE(dim, 4, cfg.flow_hidden, cfg.flow_n_hidden)
    if name == "realnvp":
        return RealNVP(dim, cfg.flow_depth, cfg.flow_hidden, cfg.flow_n_hidden,
                       logit_alpha=cfg.logit_alpha)
    if name == "glow":
        return Glow(dim, cfg.flow_depth, cfg.flow_hidden, cfg.flow_n_hidden,
                    logit_alpha=cfg.logit_alpha, generator=generator)
    raise ValueError(f"unknown flow {name!r}; expected one of {FLOWS}")


def dequantise(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Binary ``x`` (n, D) -> ``(x + u) / 2``, ``u ~ U[0, 1)^D``: a point in the cell of ``x``."""
    u = torch.from_numpy(rng.random(tuple(x.shape), dtype=np.float32)).to(x.device)
    return (x + u) / 2.0


def flow_bits_per_dim(model: Flow, draws: list[torch.Tensor]) -> float:
    """Eq. 11 averaged over fixed dequantisations of the same images: bound on -log2 P(x) / D."""
    with torch.no_grad():
        return float(np.mean([float(model.nll_bits_per_dim(x, n_levels=2).double().mean())
                              for x in draws]))


def fit_flow(model: Flow, x_train, x_val, cfg: Config, run, name: str) -> dict:
    """Maximum likelihood on freshly dequantised training images (``train_flow``), keeping the
    epoch with the best validation bound; returns curves, best epoch and step time."""
    n, dim = x_train.shape
    per_epoch = max(1, n // cfg.batch)
    noise_rng = np.random.default_rng(int(run.rng.integers(2**31)))
    val_draws = [dequantise(x_val, noise_rng) for _ in range(cfg.flow_noise_draws)]
    state = {"epoch": -1, "x": None, "order": None}
    val_curve, best = [], {"bpd": math.inf, "state": None}

    def end_epoch(epoch: int) -> None:
        val = flow_bits_per_dim(model, val_draws)
        val_curve.append(val)
        if val < best["bpd"]:
            best.update(bpd=val, state=copy.deepcopy(model.state_dict()))

    def batches(step: int) -> torch.Tensor:
        epoch, b = divmod(step, per_epoch)
        if epoch != state["epoch"]:
            if epoch > 0:
                end_epoch(epoch)
            state.update(epoch=epoch, x=dequantise(x_train, run.rng),
                         order=torch.from_numpy(run.rng.permutation(n)))
        return state["x"][state["order"][b * cfg.batch:(b + 1) * cfg.batch]]

    t0 = time.perf_counter()
    steps = cfg.flow_epochs * per_epoch
    # not checkpointed: ``batches`` holds the epoch's data and runs the validation
    losses = train_flow(model, batches, steps, cfg.flow_lr, run, LABELS[name], checkpoint=False)
    seconds = time.perf_counter() - t0
    end_epoch(cfg.flow_epochs)
    model.load_state_dict(best["state"])
    # training loss in nats of the continuous density -> the same bound in bits/dim (Eq. 11)
    train_bpd = np.asarray(losses).reshape(cfg.flow_epochs, per_epoch).mean(1) / (
        dim * math.log(2.0)) + 1.0
    curve = [(e + 1, float(t), v) for e, (t, v) in enumerate(zip(train_bpd, val_curve,
                                                                strict=True))]
    return {"curve": curve, "best_epoch": 1 + int(np.argmin(val_curve)),
            "step_ms": 1e3 * seconds / max(steps, 1)}


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        torch.set_num_threads(config.threads)
        cfg = config
        dev = run.device
        x_all, _ = load_digits("train", "binarized", flatten=True)
        x_test_np, _ = load_digits("test", "binarized", flatten=True)
        perm = run.rng.permutation(len(x_all))
        n_val = int(round(cfg.val_fraction * len(x_all)))
        x_val = torch.from_numpy(x_all[perm[:n_val]]).to(dev)
        x_train = torch.from_numpy(x_all[perm[n_val:]]).to(dev)
        x_test = torch.from_numpy(x_test_np).to(dev)
        dim = x_train.shape[1]
        run.log(f"binarised digits: {len(x_train)} train, {len(x_val)} val, {len(x_test)} test, "
                f"D = {dim}")

        # independent pixels: the closed-form MLE, the baseline every model should beat
        probs = fit_independent_bernoulli(x_all, alpha=cfg.alpha)
        ind = float(-bernoulli_log_prob(x_test_np, probs).mean())
        run.log_metrics({"test/independent_nll_nats": ind,
                         "test/independent_bits_per_dim": bits_per_dim(ind, dim)})
        run.log(f"independent pixels: test {bits_per_dim(ind, dim):.4f} bits/dim")

        results, samples = {}, {}
        gen = torch.Generator(device=dev).manual_seed(int(run.rng.integers(2**31)))
        for name in cfg.models:
            model = build(name, cfg, dim).to(dev)
            res = train(model, x_train, x_val, cfg, run, name)
            test, train_nats = nll_nats(model, x_test), nll_nats(model, x_train)
            n_params = sum(p.numel() for p in model.parameters())
            metrics = {f"test/{name}_nll_nats": test,
                       f"test/{name}_bits_per_dim": bits_per_dim(test, dim),
                       f"train/{name}_bits_per_dim": bits_per_dim(train_nats, dim),
                       f"train/{name}_best_epoch": res["best_epoch"],
                       f"train/{name}_step_ms": res["step_ms"],
                       f"model/{name}_stored_parameters": n_params}
            if name == "made_oa":
                singles = []
                for i in range(model.n_masks):
                    model.select_mask(i)
                    with torch.no_grad():
                        singles.append(float(-model.log_prob(x_test).double().mean()))
                model.select_mask(0)
                res["singles"] = singles
                res["ensemble"] = [nll_nats_subset(model, x_test, k)
                                   for k in range(1, model.n_masks + 1)]
                metrics["test/made_oa_single_mask_bits_per_dim"] = bits_per_dim(
                    float(np.mean(singles)), dim)
            run.log_metrics(metrics)
            run.log(f"{LABELS[name]}: test {metrics[f'test/{name}_bits_per_dim']:.4f} bits/dim "
                    f"({test:.2f} nats), train {metrics[f'train/{name}_bits_per_dim']:.4f}, "
                    f"best epoch {res['best_epoch']}, {n_params} parameters, "
                    f"{res['step_ms']:.2f} ms/step")
            results[name] = res
            with torch.no_grad():
                draw = model.sample_ensemble if name == "made_oa" else model.sample
                samples[name] = draw(cfg.n_samples, generator=gen).cpu().numpy()

        noise_rng = np.random.default_rng(int(run.rng.integers(2**31)))
        test_draws = [dequantise(x_test, noise_rng) for _ in range(cfg.flow_noise_draws)]
        train_draw = [dequantise(x_train, noise_rng)]
        glow_gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
        for name in cfg.flows:
            model = build_flow(name, cfg, dim, glow_gen).to(dev)
            if isinstance(model, NICE):
                # data-dependent start of the scaling, as in the nice experiment
                model.initialize_scaling(dequantise(x_train, run.rng))
            res = fit_flow(model, x_train, x_val, cfg, run, name)
            test = flow_bits_per_dim(model, test_draws)
            n_params = sum(p.numel() for p in model.parameters())
            metrics = {f"test/{name}_nll_nats": test * dim * math.log(2.0),
                       f"test/{name}_bits_per_dim": test,
                       f"train/{name}_bits_per_dim": flow_bits_per_dim(model, train_draw),
                       f"train/{name}_best_epoch": res["best_epoch"],
                       f"train/{name}_step_ms": res["step_ms"],
                       f"model/{name}_stored_parameters": n_params}
            run.log_metrics(metrics)
            run.log(f"{LABELS[name]} (dequantised, upper bound): test {test:.4f} bits/dim, "
                    f"train {metrics[f'train/{name}_bits_per_dim']:.4f}, best epoch "
                    f"{res['best_epoch']}, {n_params} parameters, {res['step_ms']:.2f} ms/step")
            results[name] = res
            with torch.no_grad():
                # the cell a continuous sample falls in is a sample of the discrete model
                s = model.sample(cfg.n_samples, generator=gen)
                samples[name] = (s >= 0.5).float().cpu().numpy()

        _plot_samples(run, cfg, x_test_np, samples)
        _plot_curves(run, cfg, results, bits_per_dim(ind, dim))
        _plot_bits(run, cfg, bits_per_dim(ind, dim))
        if "made_oa" in results:
            _plot_ensemble(run, results["made_oa"], dim)
    return run.result


def nll_nats_subset(model: MADE, x: torch.Tensor, k: int) -> float:
    """Test NLL (nats) of the mixture of the first ``k`` mask sets (Eq. 9)."""
    with torch.no_grad():
        return float(-model.log_prob_ensemble(x, indices=range(k)).double().mean())


def _plot_samples(run, cfg, x_test, samples) -> None:
    n_panels = 1 + len(samples)
    rows = 1 if n_panels <= 5 else 2  # autoregressive models on top, flows below
    per_row = math.ceil(n_panels / rows)
    fig, axes = new_figure(rows, per_row, size=(7.0, 2.5 * rows), squeeze=False,
                           layout="constrained")
    axes = axes.ravel()
    cols = int(math.sqrt(cfg.n_samples))
    digits_mosaic(axes[0], x_test[:cols * cols], "test digits", cols=cols)
    for ax, (name, s) in zip(axes[1:], samples.items(), strict=False):
        title = LABELS[name].replace(" (", "\n(")
        if name in FLOWS:
            title += "\n(binarised at 1/2)"
        digits_mosaic(ax, s[:cols * cols], title.replace(", ", ",\n"), cols=cols)
    for ax in axes[:n_panels]:
        ax.title.set_fontsize(9)
    for ax in axes[n_panels:]:
        ax.axis("off")
    run.save_figure(fig, "samples")


def _plot_curves(run, cfg, results, independent_bpd: float) -> None:
    fig, ax = new_figure(size="column_tall", layout="constrained")
    for i, (name, res) in enumerate(results.items()):
        ep, tr, va = zip(*res["curve"], strict=True)
        ls = "--" if name in FLOWS else "-"
        ax.plot(ep, va, color=PALETTE[i % 7], ls=ls, label=LABELS[name])
        ax.plot(ep, tr, color=PALETTE[i % 7], ls=":", lw=1)
    ax.axhline(independent_bpd, color=PALETTE[7], ls="--", lw=1, label="independent pixels (test)")
    ax.set(xlabel="epoch", ylabel="bits/dim", title="NLL on binarised digits")
    # the flows start far above: keep the comparison region readable
    ax.set_ylim(top=min(ax.get_ylim()[1], 1.2))
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5),
              title="validation (dashed: flows'\nupper bound); dotted: training",
              title_fontsize=9)
    run.save_figure(fig, "curves")


def _plot_ensemble(run, res, dim: int) -> None:
    fig, ax = new_figure()
    k = np.arange(1, len(res["ensemble"]) + 1)
    ax.plot(k, [bits_per_dim(v, dim) for v in res["ensemble"]], marker="o", color=PALETTE[0],
            label=r"mixture of the first $k$ mask sets")
    ax.scatter(k, [bits_per_dim(v, dim) for v in res["singles"]], color=PALETTE[1], s=14,
               label=r"mask set $k$ alone")
    ax.set(xlabel=r"number of mask sets $k$", ylabel="test bits/dim",
           title="Order-agnostic MADE: ensembling orderings at test time")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.35 * (hi - lo))  # head-room so the legend covers no point
    ax.legend(loc="upper right")
    run.save_figure(fig, "ensemble")


def _plot_bits(run, cfg, independent_bpd: float) -> None:
    """Bar chart of every model's test bits/dim; the flows' bars are upper bounds (Eq. 11)."""
    metrics = run.metrics
    names = [n for n in (*cfg.models, *cfg.flows) if f"test/{n}_bits_per_dim" in metrics]
    labels = ["independent pixels", *(LABELS[n] for n in names)]
    values = [independent_bpd, *(metrics[f"test/{n}_bits_per_dim"] for n in names)]
    colors = [PALETTE[7], *(PALETTE[1] if n in FLOWS else PALETTE[0] for n in names)]
    fig, ax = new_figure(size=(5.0, 0.45 * len(values) + 1.4))
    y = np.arange(len(values))[::-1]
    bars = ax.barh(y, values, color=colors)
    for bar, name in zip(bars[1:], names, strict=True):
        if name in FLOWS:
            bar.set_hatch("//")
    for yi, v in zip(y, values, strict=True):
        ax.text(v, yi, f" {v:.3f}", va="center", fontsize=9)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 1.2 * max(values))
    ax.set(xlabel="test bits/dim\n(hatched: dequantisation upper bound)",
           title="Binarised digits, same test split")
    run.save_figure(fig, "bits_per_dim")
