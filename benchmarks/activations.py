"""Forward + backward throughput of our activations against torch.nn.functional, side by side.

Every activation runs on the same 1e7 float32 elements (gated units: 1e7 in, 5e6 out) with a fixed
upstream gradient: one timed call is ``y = f(x); y.backward(g)``. Ours (formulas in tensor
arithmetic plus a hand-derived backward, ``deepnotes.nn.activations``) and torch's (one fused
kernel each way, or a composition of ``F`` calls for ReGLU/GeGLU/SwiGLU, which torch lacks) are
timed round robin, one call of each in turn, so load changes on a shared machine hit both alike.
The figure per activation is ``ours_over_torch``: the ratio of median times (above 1: ours is
slower). The step unit is left out: torch's step (``heaviside``) has no backward to time.

    python benchmarks/activations.py [--quick]
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from deepnotes.core.bench import bench_main, time_call
from deepnotes.nn import activations as A

THREADS = 1


def _gate(f):
    def g(x):
        a, b = x.chunk(2, -1)
        return a * f(b)
    return g


def contenders(weight: torch.Tensor) -> dict[str, tuple]:
    """name -> (ours, torch's), both one-argument callables."""
    return {
        "sigmoid": (A.sigmoid, torch.sigmoid),
        "tanh": (A.tanh, torch.tanh),
        "softplus": (A.softplus, F.softplus),
        "relu": (A.relu, F.relu),
        "leaky_relu": (A.leaky_relu, F.leaky_relu),
        "prelu": (lambda x: A.prelu(x, weight), lambda x: F.prelu(x, weight)),
        "elu": (A.elu, F.elu),
        "selu": (A.selu, F.selu),
        "gelu": (A.gelu, F.gelu),
        "gelu_tanh": (lambda x: A.gelu(x, approximate="tanh"),
                      lambda x: F.gelu(x, approximate="tanh")),
        "silu": (A.silu, F.silu),
        "mish": (A.mish, F.mish),
        "hardsigmoid": (A.hardsigmoid, F.hardsigmoid),
        "hardswish": (A.hardswish, F.hardswish),
        "glu": (A.glu, F.glu),
        "reglu": (A.reglu, _gate(F.relu)),
        "geglu": (A.geglu, _gate(F.gelu)),
        "swiglu": (A.swiglu, _gate(F.silu)),
    }


def run(quick: bool = False) -> dict:
    torch.set_num_threads(THREADS)
    n = 100_000 if quick else 10_000_000
    repeat = 3 if quick else 7
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, generator=gen) * 3
    weight = torch.full((1,), 0.25, requires_grad=True)
    figures: dict = {"n_elements": n, "dtype": "float32", "torch_threads": THREADS,
                     "timed_calls": repeat, "loadavg_before": list(os.getloadavg()), "rows": {}}
    for name, pair in contenders(weight).items():
        x = base.clone().requires_grad_(True)
        with torch.no_grad():
            g = torch.ones_like(pair[1](x))

        def call(fn, x=x, g=g):
            x.grad = None
            fn(x).backward(g)

        times: dict[str, list[float]] = {"ours": [], "torch": []}
        for fn in pair:  # one warm-up call each
            call(fn)
        for _ in range(repeat):
            for who, fn in zip(("ours", "torch"), pair, strict=True):
                times[who].append(time_call(lambda fn=fn: call(fn), repeat=1, warmup=0)["best_s"])
        med = {who: float(np.median(t)) for who, t in times.items()}
        figures["rows"][name] = {
            "ours_ms": 1e3 * med["ours"], "torch_ms": 1e3 * med["torch"],
            "ours_over_torch": med["ours"] / med["torch"],
            "ours_melems_per_s": n / med["ours"] / 1e6,
            "torch_melems_per_s": n / med["torch"] / 1e6,
        }
    ratios = np.array([r["ours_over_torch"] for r in figures["rows"].values()])
    figures["ratio_median"] = float(np.median(ratios))
    figures["ratio_min"] = float(ratios.min())
    figures["ratio_max"] = float(ratios.max())
    figures["within_2x_count"] = int((ratios <= 2.0).sum())
    figures["n_activations"] = int(ratios.size)
    figures["loadavg_after"] = list(os.getloadavg())
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
