"""One training step of an MLP: FP32, our master-weights BF16/FP16 step, torch.autocast.

Contenders (all SGD with momentum on the same MLP, the same batch, one torch thread on CPU):

* ``fp32``: FP32 model, plain step;
* ``ours_bf16`` / ``ours_fp16``: ``deepnotes.nn.amp.MasterWeights`` (BF16 or FP16 model copy,
  FP32 master weights), FP16 with our ``GradScaler``;
* ``autocast_bf16`` / ``autocast_fp16``: FP32 parameters, the forward under
  ``torch.autocast("cpu", dtype=...)``, FP16 with ``torch.amp.GradScaler``.

Steps are timed round robin so that load changes hit every contender alike; the load average is
recorded before and after. The GPU section repeats the contenders on CUDA when a GPU is present;
otherwise each of its rows says "not measured: no GPU available".

    python benchmarks/mixed_precision.py [--quick]
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepnotes.core.bench import bench_main
from deepnotes.nn.amp import GradScaler, MasterWeights

THREADS = 1
CONTENDERS = ("fp32", "ours_bf16", "autocast_bf16", "ours_fp16", "autocast_fp16")


def _mlp(width: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def _make_step(name: str, width: int, x: torch.Tensor, y: torch.Tensor):
    dev = x.device
    model = _mlp(width).to(dev)
    if name.startswith("ours"):
        dtype = torch.bfloat16 if name.endswith("bf16") else torch.float16
        master = MasterWeights(model, dtype)
        opt = torch.optim.SGD(master.params, lr=1e-3, momentum=0.9)
        scaler = GradScaler(enabled=dtype == torch.float16)
        xin = x.to(dtype)

        def step():
            loss = F.cross_entropy(model(xin).float(), y)
            scaler.scale(loss).backward()
            master.grads_to_master()
            scaler.step(opt)
            scaler.update()
            master.master_to_model()
            opt.zero_grad(set_to_none=True)
        return step
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if name == "fp32":
        def step():
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step
    dtype = torch.bfloat16 if name.endswith("bf16") else torch.float16
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)

    def step():
        with torch.autocast(dev.type, dtype=dtype):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    return step


def _time_all(device: torch.device, width: int, batch: int, warmup: int, rounds: int) -> dict:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 256, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    steps = {name: _make_step(name, width, x, y) for name in CONTENDERS}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            t0 = time.perf_counter()
            steps[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    return {
        "ms_per_step_median": ms,
        "ours_bf16_over_autocast_bf16": ms["ours_bf16"] / ms["autocast_bf16"],
        "ours_fp16_over_autocast_fp16": ms["ours_fp16"] / ms["autocast_fp16"],
        "ours_bf16_over_fp32": ms["ours_bf16"] / ms["fp32"],
        "autocast_bf16_over_fp32": ms["autocast_bf16"] / ms["fp32"],
        "ours_fp16_over_fp32": ms["ours_fp16"] / ms["fp32"],
        "autocast_fp16_over_fp32": ms["autocast_fp16"] / ms["fp32"],
    }


def run(quick: bool = False) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        width, batch = (128, 64) if quick else (512, 256)
        warmup, rounds = (2, 5) if quick else (5, 40)
        load_start = os.getloadavg()
        cpu = _time_all(torch.device("cpu"), width, batch, warmup, rounds)
        load_end = os.getloadavg()
        if torch.cuda.is_available():
            gpu = _time_all(torch.device("cuda"), 4 * width, 4 * batch, warmup, rounds)
            gpu["device"] = torch.cuda.get_device_name()
        else:
            gpu = {name: "not measured: no GPU available" for name in CONTENDERS}
        return {"model": f"MLP 256-{width}-{width}-10", "batch": batch, "torch_threads": THREADS,
                "rounds": rounds, "loadavg_start": list(load_start),
                "loadavg_end": list(load_end), "cpu": cpu, "gpu": gpu}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    bench_main(__file__, run)
