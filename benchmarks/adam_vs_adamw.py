"""AdamW step time: ours (plain and fused numba kernel) beside torch's for-loop, foreach and fused.

Every contender updates its own copy of the same parameters (25 matrices 800x1000 and 25 vectors
of 200,000: 25M float32 values) with the same fixed random gradients, on 2 torch threads and 2
numba threads. Steps are timed round robin (one step of each contender in turn) so that load
changes on a shared machine hit all of them alike. Each makes the same number of steps, so the
final parameters of ours-fused and torch-fused are compared as a sanity check. The first step
of ours-fused (kernel loaded from numba's cache, flat buffers built) and a cold compile of the
kernel are reported apart from the steady state.

    python benchmarks/adam_vs_adamw.py [--quick]
"""

from __future__ import annotations

import time

import numba
import numpy as np
import torch

from deepnotes.core.bench import bench_main, time_call
from deepnotes.nn import optim as ours

THREADS = 2


def _make_params(quick: bool, seed: int = 0) -> list[torch.nn.Parameter]:
    shapes = [(100, 200)] * 5 + [(10_000,)] * 5 if quick else [(800, 1000)] * 25 + [(200_000,)] * 25
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for p in params:
        p.grad = torch.randn(s if (s := p.shape) else (), generator=g)
    return params


CONTENDERS = {
    "torch_forloop": lambda ps: torch.optim.AdamW(ps, foreach=False),
    "torch_foreach": lambda ps: torch.optim.AdamW(ps, foreach=True),
    "torch_fused": lambda ps: torch.optim.AdamW(ps, fused=True),
    "ours_plain": lambda ps: ours.AdamW(ps),
    "ours_fused": lambda ps: ours.AdamW(ps, fused=True),
}


def _cold_compile_s() -> float:
    """Seconds to compile the float32 kernel from scratch (numba's on-disk cache bypassed)."""
    kernel = numba.njit(parallel=True, fastmath=False, cache=False)(ours._adam_kernel.py_func)
    f32, i64 = np.float32, np.int64
    p = np.zeros(4, f32)
    g = np.zeros(4, f32)
    chunks = np.array([[g.ctypes.data, 0, 4, 0]], i64)
    scalars = np.array([[-1e-3, 1.0, 0.1, 0.999, 0.001, 1e-8, 0.0, 1.0, 1.0, 0.0]], f32)
    args = (p, p.copy(), p.copy(), p.copy(), chunks, scalars)
    t0 = time.perf_counter()
    kernel(*args)
    return time.perf_counter() - t0


def run(quick: bool = False) -> dict:
    torch.set_num_threads(THREADS)
    numba.set_num_threads(THREADS)
    # torch's fused CPU kernel needs a few steps before it reaches its steady speed.
    warmup, repeat = (2, 5) if quick else (10, 30)
    params = {name: _make_params(quick) for name in CONTENDERS}
    opts = {name: make(params[name]) for name, make in CONTENDERS.items()}
    figures: dict = {
        "n_params": sum(p.numel() for p in params["ours_fused"]),
        "dtype": "float32", "torch_threads": THREADS, "numba_threads": THREADS,
        "warmup_steps": warmup, "timed_steps": repeat, "ms_per_step_median": {},
        "ms_per_step_best": {},
    }
    t0 = time.perf_counter()
    opts["ours_fused"].step()  # kernel from numba's cache (or compiled) + flat buffers built
    figures["ours_fused_first_step_s"] = time.perf_counter() - t0
    for name, opt in opts.items():
        if name != "ours_fused":
            opt.step()
    for _ in range(warmup):
        for opt in opts.values():
            opt.step()
    # Round robin: on a shared machine, load changes over seconds; interleaving the contenders
    # spreads that noise evenly over them instead of penalising whoever ran at a bad moment.
    times: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(repeat):
        for name, opt in opts.items():
            timing = time_call(opt.step, repeat=1, warmup=0)
            times[name].append(timing["best_s"])
    for name, ts in times.items():
        figures["ms_per_step_median"][name] = 1e3 * float(np.median(ts))
        figures["ms_per_step_best"][name] = 1e3 * float(np.min(ts))
    # Same start, same gradients, same number of steps: the two fused kernels must agree.
    ours_p, ref_p = (torch.cat([p.detach().flatten() for p in params[k]])
                     for k in ("ours_fused", "torch_fused"))
    figures["steps_taken"] = 1 + warmup + repeat
    figures["ours_fused_max_rel_diff_vs_torch_fused"] = float(
        (ours_p - ref_p).abs().max() / ref_p.abs().max())
    del opts, params, ours_p, ref_p
    figures["jit_cold_compile_s"] = _cold_compile_s()
    med = figures["ms_per_step_median"]
    figures["ours_fused_vs_torch_fused"] = med["ours_fused"] / med["torch_fused"]
    figures["speedup_ours_fused_over"] = {k: med[k] / med["ours_fused"] for k in med}
    figures["melems_per_s_median"] = {k: figures["n_params"] / (1e3 * v) for k, v in med.items()}
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
