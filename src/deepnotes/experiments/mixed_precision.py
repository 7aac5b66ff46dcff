"""FP32 versus BF16 versus FP16 (with and without loss scaling) on the 8x8 digits.

One MLP (64 -> hidden x depth -> 10, ReLU) is trained from the same initialisation and the same
batch order in six ways, each step driven by hand so every piece is visible:

* ``fp32``: the reference;
* ``bf16``: BF16 model copy, FP32 master weights (``deepnotes.nn.amp.MasterWeights``), no scaling;
* ``fp16_pure``: FP16 weights updated in FP16, no master copy, no scaling;
* ``fp16_noscale``: FP16 model copy, FP32 master weights, no loss scaling;
* ``fp16_static``: the same with a fixed loss scale (``StaticGradScaler``);
* ``fp16_dynamic``: the same with dynamic loss scaling (``GradScaler``, torch's semantics).

The logits are cast to FP32 before the cross-entropy (as autocast does). Besides the curves, the
FP32 run's parameter gradients are recorded at the first and last steps and cast to FP16 to
measure how many would underflow, with and without the static scale; the float facts of each
dtype are measured by arithmetic in that dtype.

Figures: ``loss_curves``, ``loss_scale_trace``, ``underflow_histogram``. Headline: the final test
accuracy of ``fp16_dynamic``; peer: that of ``fp32``. Torch work runs on ``run.device`` (FP16
matrix products on a CPU are emulated and slow: the model is kept small).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import N_CLASSES, load_digits
from deepnotes.nn.amp import (
    GradScaler,
    MasterWeights,
    StaticGradScaler,
    measure_float_facts,
    underflow_fractions,
)

RUNS = {
    "fp32": "FP32",
    "bf16": "BF16 + FP32 master",
    "fp16_pure": "FP16 weights, no scaling",
    "fp16_noscale": "FP16 + FP32 master, no scaling",
    "fp16_static": "FP16 + master, static scale",
    "fp16_dynamic": "FP16 + master, dynamic scale",
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Config(ExperimentConfig):
    hidden: int = 128
    """Width of the hidden layers."""
    depth: int = 4
    """Number of hidden layers."""
    steps: int = 2000
    """SGD steps of every run."""
    batch_size: int = 64
    """Digits per step."""
    lr: float = 0.05
    """SGD learning rate (momentum 0.9)."""
    static_scale: float = 1024.0
    """Loss scale of ``fp16_static``."""
    init_scale: float = 65536.0
    """Initial scale of ``fp16_dynamic`` (torch's default)."""
    growth_interval: int = 200
    """Clean steps before the dynamic scale doubles (torch's default is 2000)."""
    eval_every: int = 50
    """Steps between test-accuracy evaluations."""
    threads: int = 1
    """Torch CPU threads (small tensors: a second thread mostly adds sync cost)."""


PRESETS = make_presets(
    smoke=Config(hidden=16, depth=1, steps=12, eval_every=6, growth_interval=4),
    quick=Config(hidden=64, depth=3, steps=400, growth_interval=50),
    full=Config(hidden=64, depth=4, steps=1200, growth_interval=100),
)
HEADLINE = "fp16_dynamic/test_accuracy"
PEER = "fp32/test_accuracy"


def make_mlp(cfg: Config) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = 64
    for _ in range(cfg.depth):
        layers += [nn.Linear(d, cfg.hidden), nn.ReLU()]
        d = cfg.hidden
    layers.append(nn.Linear(d, N_CLASSES))
    return nn.Sequential(*layers)


def train_one(name: str, cfg: Config, init_state: dict, data, order: torch.Tensor, run,
              record_grads: bool = False) -> dict:
    """One run; returns per-step loss, scale and skip flags, periodic test accuracy."""
    dev = run.device
    x_tr, y_tr, x_te, y_te = data
    model = make_mlp(cfg)
    model.load_state_dict(init_state)
    model.to(dev)
    dtype = DTYPES[name.split("_")[0]]
    if name == "fp16_pure":
        model.to(torch.float16)
        params, master = list(model.parameters()), None
    else:
        master = MasterWeights(model, dtype)
        params = master.params
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    if name == "fp16_static":
        scaler = StaticGradScaler(cfg.static_scale)
    elif name == "fp16_dynamic":
        scaler = GradScaler(init_scale=cfg.init_scale, growth_interval=cfg.growth_interval)
    else:
        scaler = GradScaler(enabled=False)
    hist = {"loss": [], "scale": [], "skipped": [], "eval_step": [], "test_accuracy": [],
            "grad_zero_fraction": []}
    grads = {}
    for step in run.track(range(cfg.steps), name):
        idx = order[step]
        logits = model(x_tr[idx].to(dtype)).float()  # FP32 loss, as autocast computes it
        loss = F.cross_entropy(logits, y_tr[idx])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if master is not None:
            master.grads_to_master()
        if record_grads and step in (0, cfg.steps - 1):
            grads["first" if step == 0 else "last"] = [p.grad.detach().cpu().clone()
                                                       for p in params]
        g = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
        hist["grad_zero_fraction"].append(float((g == 0).double().mean()))
        scaler.step(opt)
        hist["skipped"].append(scaler.found_inf(opt))  # read before update() clears it
        scaler.update()
        if master is not None:
            master.master_to_model()
        hist["loss"].append(float(loss.detach()))
        hist["scale"].append(scaler.get_scale())
        if (step + 1) % cfg.eval_every == 0 or step == cfg.steps - 1:
            with torch.no_grad():
                pred = model(x_te.to(dtype)).float().argmax(1)
            hist["eval_step"].append(step + 1)
            hist["test_accuracy"].append(float((pred == y_te).double().mean()))
    hist["grads"] = grads
    hist["nonfinite_weights"] = not all(bool(torch.isfinite(p).all()) for p in params)
    return hist


def _smooth(v, k=25):
    v = np.asarray(v, dtype=float)
    k = max(1, min(k, len(v) // 4 or 1))
    return np.convolve(v, np.ones(k) / k, mode="valid"), k


def _loss_figure(res, cfg):
    fig, (ax1, ax2) = new_figure(1, 2, size="column_tall", constrained_layout=True)
    styles = {"fp32": "-", "bf16": "-", "fp16_pure": ":", "fp16_noscale": "--",
              "fp16_static": "-.", "fp16_dynamic": "-"}
    for color, (name, label) in zip(PALETTE, RUNS.items(), strict=False):
        loss = np.asarray(res[name]["loss"])
        loss = np.where(np.isfinite(loss), loss, np.nan)
        s, k = _smooth(loss)
        ax1.plot(np.arange(len(s)) + k, s, styles[name], color=color, label=label, lw=1.2)
        ax2.plot(res[name]["eval_step"], 100 * np.asarray(res[name]["test_accuracy"]),
                 styles[name], color=color, lw=1.2)
    ax1.set(yscale="log", xlabel="step", ylabel="train cross-entropy (smoothed)")
    ax2.set(xlabel="step", ylabel="test accuracy (%)")
    lo = min(min(res[n]["test_accuracy"][-3:]) for n in RUNS) * 100
    ax2.set_ylim(max(0.0, min(85.0, lo - 2)), 100)
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=9)
    return fig


def _scale_figure(res, cfg):
    fig, ax = new_figure(1, 1, size="column_tall", layout="constrained")
    steps = np.arange(1, cfg.steps + 1)
    dyn = res["fp16_dynamic"]
    ax.step(steps, dyn["scale"], where="post", color=PALETTE[5], label="dynamic scale $S_t$")
    ax.step(steps, res["fp16_static"]["scale"], where="post", color=PALETTE[4], ls="-.",
            label=f"static scale $S = {cfg.static_scale:g}$")
    skipped = np.flatnonzero(dyn["skipped"])
    if len(skipped):
        ax.plot(steps[skipped], np.asarray(dyn["scale"])[skipped] * 2, "v", color=PALETTE[3],
                ms=4, label="skipped step (inf/NaN gradient)")
    ax.set(yscale="log", xlabel="step", ylabel="loss scale", title="Loss scale per step")
    ax.set_yscale("log", base=2)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=9)
    return fig


def _hist_figure(grads, cfg, facts16):
    fig, ax = new_figure(1, 1, size="column_tall", layout="constrained")
    bins = np.arange(-60, 20, 1.0)
    for color, key, label in ((PALETTE[0], "first", "step 1"),
                              (PALETTE[3], "last", f"step {cfg.steps}")):
        g = torch.cat([t.reshape(-1) for t in grads[key]]).double().abs()
        g = g[g > 0].log2().numpy()
        ax.hist(g, bins=bins, histtype="step", color=color, lw=1.4,
                label=f"FP32 gradients, {label}", density=True)
        ax.hist(g + np.log2(cfg.static_scale), bins=bins + 0, histtype="step", color=color,
                lw=0.8, ls="--", density=True, label=f"same times static scale $S$, {label}")
    ax.axvspan(-60, np.log2(facts16["smallest_subnormal"]) - 1, color="gray", alpha=0.25,
               label="rounds to 0 in FP16")
    ax.axvspan(np.log2(facts16["smallest_subnormal"]) - 1, np.log2(facts16["smallest_normal"]),
               color="gray", alpha=0.1, label="FP16 subnormal")
    ax.axvspan(np.log2(facts16["max"]), 20, color=PALETTE[3], alpha=0.15,
               label="overflows to inf in FP16")
    ax.set(xlabel=r"$\log_2 |g|$", ylabel="density", xlim=(-50, 20))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=9)
    return fig


def run(config: Config) -> Result:
    if config.steps < 2 or config.hidden < 1 or config.depth < 1 or config.batch_size < 1:
        raise ValueError("steps must be >= 2; hidden, depth and batch_size >= 1")
    if config.static_scale <= 0 or config.init_scale <= 0:
        raise ValueError("static_scale and init_scale must be > 0")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with start_run(__name__, config) as run:
            facts = {k: measure_float_facts(dt) for k, dt in DTYPES.items()}
            for k, f in facts.items():
                run.log_metrics({f"facts/{k}_{name}": v for name, v in f.items()
                                 if name != "overflow"})
            dev = run.device
            x_tr, y_tr = (torch.from_numpy(a).to(dev) for a in load_digits("train",
                                                                             flatten=True))
            x_te, y_te = (torch.from_numpy(a).to(dev) for a in load_digits("test", flatten=True))
            torch.manual_seed(int(run.rng.integers(2**31)))
            init_state = {k: v.clone() for k, v in make_mlp(config).state_dict().items()}
            order = torch.from_numpy(run.rng.integers(0, len(y_tr),
                                                      (config.steps, config.batch_size))).to(dev)
            data = (x_tr, y_tr, x_te, y_te)
            res = {name: train_one(name, config, init_state, data, order, run,
                                   record_grads=(name == "fp32")) for name in RUNS}
            for name, h in res.items():
                tail = max(1, config.steps // 20)
                loss = np.asarray(h["loss"][-tail:])
                run.log_metrics({
                    f"{name}/test_accuracy": h["test_accuracy"][-1],
                    f"{name}/final_train_loss": float(np.mean(loss)),
                    f"{name}/skipped_steps": int(np.sum(h["skipped"])),
                    f"{name}/final_scale": h["scale"][-1],
                    f"{name}/final_grad_zero_fraction": float(np.mean(
                        h["grad_zero_fraction"][-tail:])),
                    f"{name}/nonfinite_weights": float(h["nonfinite_weights"]),
                })
            for key in ("first", "last"):
                g = res["fp32"]["grads"][key]
                for scale, tag in ((1.0, ""), (config.static_scale, "_scaled")):
                    u = underflow_fractions(g, torch.float16, scale=scale)
                    run.log_metrics({f"underflow/{key}_step_zero_fraction{tag}": u["zero"],
                                     f"underflow/{key}_step_subnormal_fraction{tag}":
                                         u["subnormal"],
                                     f"underflow/{key}_step_overflow_fraction{tag}":
                                         u["overflow"]})
                run.log_metrics({f"underflow/{key}_step_bf16_zero_fraction":
                                 underflow_fractions(g, torch.bfloat16)["zero"]})
            run.save_figure(_loss_figure(res, config), "loss_curves")
            run.save_figure(_scale_figure(res, config), "loss_scale_trace")
            run.save_figure(_hist_figure(res["fp32"]["grads"], config, facts["fp16"]),
                            "underflow_histogram")
    finally:
        torch.set_num_threads(threads)
    return run.result
