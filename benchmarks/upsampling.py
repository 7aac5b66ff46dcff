"""Upsampling ops: ours (``deepnotes.nn.upsampling``) beside ``torch.nn.functional``, forward only.

Each op runs on the same float32 NCHW batch on one torch thread; ours and torch's are timed
alternately (ours, torch, torch, ours, ...) so that load changes on a shared machine hit both
alike. Reported: median milliseconds per call of each, and the ratio ours / torch (above one:
ours is slower), with the load average before and after. The outputs are compared as a check.

    python benchmarks/upsampling.py [--quick]
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from deepnotes.core.bench import bench_main, time_call
from deepnotes.nn import upsampling as U

THREADS = 1


def _cases(quick: bool) -> dict:
    b, c, h = (2, 8, 32) if quick else (8, 32, 64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, h, generator=gen)
    x_ps = torch.randn(b, 4 * c, h, h, generator=gen)
    w = torch.randn(c, c, 4, 4, generator=gen) * 0.1
    big = torch.randn(b, c, 2 * h, 2 * h, generator=gen)
    pooled, idx = F.max_pool2d(big, 2, return_indices=True)
    size = (2 * h, 2 * h)
    return {
        "nearest": (lambda: U.interpolate(x, size=size),
                    lambda: F.interpolate(x, size=size)),
        "bilinear": (lambda: U.interpolate(x, size=size, mode="bilinear", align_corners=False),
                     lambda: F.interpolate(x, size=size, mode="bilinear", align_corners=False)),
        "bilinear_align_corners": (
            lambda: U.interpolate(x, size=size, mode="bilinear", align_corners=True),
            lambda: F.interpolate(x, size=size, mode="bilinear", align_corners=True)),
        "bicubic": (lambda: U.interpolate(x, size=size, mode="bicubic", align_corners=False),
                    lambda: F.interpolate(x, size=size, mode="bicubic", align_corners=False)),
        "pixel_shuffle": (lambda: U.pixel_shuffle(x_ps, 2), lambda: F.pixel_shuffle(x_ps, 2)),
        "conv_transpose2d": (lambda: U.conv_transpose2d(x, w, stride=2, padding=1),
                             lambda: F.conv_transpose2d(x, w, stride=2, padding=1)),
        "max_unpool2d": (lambda: U.max_unpool2d(pooled, idx, 2),
                         lambda: F.max_unpool2d(pooled, idx, 2)),
    }, {"batch": b, "channels": c, "input_side": h, "output_side": 2 * h}


def run(quick: bool = False) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        cases, shape = _cases(quick)
        rounds = 5 if quick else 15
        load_start = os.getloadavg()
        times: dict[str, dict[str, list[float]]] = {k: {"ours": [], "torch": []} for k in cases}
        for r in range(rounds):
            for name, (ours, ref) in cases.items():
                pair = (("ours", ours), ("torch", ref)) if r % 2 == 0 else \
                    (("torch", ref), ("ours", ours))
                for who, fn in pair:
                    times[name][who].append(time_call(fn, repeat=3, warmup=1)["median_s"])
        load_end = os.getloadavg()
        ops = {}
        for name, (ours, ref) in cases.items():
            o, t = np.median(times[name]["ours"]), np.median(times[name]["torch"])
            with torch.no_grad():
                diff = float((ours() - ref()).abs().max())
            ops[name] = {"ours_ms": 1e3 * float(o), "torch_ms": 1e3 * float(t),
                         "ours_over_torch": float(o / t), "max_abs_diff": diff}
        return {"dtype": "float32", "torch_threads": THREADS, "rounds": rounds, "shape": shape,
                "loadavg_start": list(load_start), "loadavg_end": list(load_end), "ops": ops}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    bench_main(__file__, run)
