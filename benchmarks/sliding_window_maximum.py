"""Sliding-window maximum of 1e7 float64 samples: our vHGW and deque against scipy and NumPy.

Peers: ``scipy.ndimage.maximum_filter1d`` (one thread, shifted by ``origin=-(k // 2)`` so that
output i is the window [i, i + k), sliced to the n - k + 1 valid windows) and NumPy's
``sliding_window_view(x, k).max(-1)`` (O(nk)). Every output is checked equal to ours first.
Every contender gets one warm-up call and the same ``repeat`` timed calls, interleaved (one call
of each per round, in turn), all recorded (``all_s``). Ours run twice per round: on all numba
threads (``vhgw``, ``deque``; ``threads`` says how many) and on one thread (``vhgw_1thread``,
``deque_1thread``), the fair row against the one-thread peers. Throughput is input samples per
second at the best call; the first call of each numba method (compilation or cache load) is
reported on its own.

Usage: ``python benchmarks/sliding_window_maximum.py [--quick]``. Set NUMBA_NUM_THREADS before
starting Python to change the thread count (recorded as ``numba_threads``).
"""

from __future__ import annotations

import os
import time

import numpy as np

from deepnotes.core.bench import bench_main


def _first_call_s(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


_FIRST_CALLS = """
import time, numpy as np
from deepnotes.algorithms.sliding_window import sliding_window_max
x = np.random.default_rng(0).standard_normal(1 << 18)  # above PARALLEL_MIN_SIZE: parallel driver
for method in ("vhgw", "deque"):
    t0 = time.perf_counter(); sliding_window_max(x, 10, method=method)
    print(method, time.perf_counter() - t0)
"""


_FIRST_CALLS_LARGE = """
import sys, time, numpy as np
from deepnotes.algorithms.sliding_window import sliding_window_max, warm_up
x = np.random.default_rng(0).standard_normal(10_000_000)
prepared = sys.argv[1] == "prepared"
if prepared:
    t0 = time.perf_counter(); warm_up((np.float64,)); print("warm_up", time.perf_counter() - t0)
    out = np.empty(x.size - 10 + 1)
    out.fill(0.0)  # written once: its pages are faulted in before the timed calls
for i in range(5):
    t0 = time.perf_counter()
    sliding_window_max(x, 10, out=out) if prepared else sliding_window_max(x, 10)
    print("call", time.perf_counter() - t0)
"""


def _first_calls_large() -> dict:
    """A user's first five calls on 1e7 float64 samples (k = 10) in a new process, with the
    repository's numba cache: as they come (``plain``), and after ``warm_up()`` with a reused,
    already-touched ``out=`` array (``prepared``; ``warm_up_s`` is the warm-up's own time)."""
    import subprocess
    import sys

    result = {}
    for mode in ("plain", "prepared"):
        lines = subprocess.run([sys.executable, "-c", _FIRST_CALLS_LARGE, mode], check=True,
                               capture_output=True, text=True).stdout.split("\n")
        result[f"{mode}_calls_s"] = [float(v.split()[1]) for v in lines if v.startswith("call")]
        for v in lines:
            if v.startswith("warm_up"):
                result["warm_up_s"] = float(v.split()[1])
    return result


def _jit_in_fresh_processes() -> dict:
    """First-call times in new processes with an empty numba cache (compilation), then again
    with that cache filled (loading it), for float64 and the parallel driver."""
    import subprocess
    import sys
    import tempfile

    result = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("compile", "cache_load"):
            out = subprocess.run([sys.executable, "-c", _FIRST_CALLS], env=env, check=True,
                                 capture_output=True, text=True).stdout
            for line in out.split("\n"):
                if line:
                    method, seconds = line.split()
                    result[f"{method}_first_call_{label}_s"] = float(seconds)
    return result


def run(quick: bool = False) -> dict:
    import numba
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.ndimage import maximum_filter1d

    from deepnotes.algorithms.sliding_window import sliding_window_max

    n = 200_000 if quick else 10_000_000
    repeat = 3 if quick else 5
    x = np.random.default_rng(0).standard_normal(n)
    figures: dict = {
        "n": n, "dtype": "float64",
        "load_average_1min_before": os.getloadavg()[0],
        "throughput_unit": "million input samples per second (n / best time)",
        "jit": {
            "vhgw_first_call_this_process_s": _first_call_s(
                lambda: sliding_window_max(x, 10, method="vhgw")),
            "deque_first_call_this_process_s": _first_call_s(
                lambda: sliding_window_max(x, 10, method="deque")),
            **({} if quick else _jit_in_fresh_processes()),
            **({} if quick else {"first_calls_1e7": _first_calls_large()}),
            "note": "first call of each method, in this process (with the repository's numba "
                    "cache) and in fresh processes with an empty cache (compile) and then the "
                    "filled one (cache_load). One compiled driver holds both kernels, so the "
                    "first call (vhgw) compiles or loads both; steady-state times are under "
                    "k10/k1000",
        },
    }
    threads = numba.get_num_threads()
    figures["numba_threads"] = threads
    for k in (10, 1000):
        m = n - k + 1
        ours_v = sliding_window_max(x, k, method="vhgw")
        if not (np.array_equal(ours_v, sliding_window_max(x, k, method="deque"))
                and np.array_equal(ours_v, maximum_filter1d(x, k, origin=-(k // 2))[:m])):
            raise RuntimeError(f"outputs differ at k={k}")
        if not np.array_equal(sliding_window_view(x[:5000], k).max(axis=-1), ours_v[:5000 - k + 1]):
            raise RuntimeError(f"numpy differs at k={k}")
        calls = {  # name: (call, numba threads it runs on)
            "vhgw": (lambda k=k: sliding_window_max(x, k, method="vhgw"), threads),
            "vhgw_1thread": (lambda k=k: sliding_window_max(x, k, method="vhgw"), 1),
            "deque": (lambda k=k: sliding_window_max(x, k, method="deque"), threads),
            "deque_1thread": (lambda k=k: sliding_window_max(x, k, method="deque"), 1),
            "scipy": (lambda k=k, m=m: maximum_filter1d(x, k, origin=-(k // 2))[:m], 1),
            "numpy": (lambda k=k: sliding_window_view(x, k).max(axis=-1), 1),
        }
        times: dict = {name: [] for name in calls}
        try:
            for r in range(repeat + 1):  # round 0 is the warm-up
                for name, (fn, n_threads) in calls.items():
                    numba.set_num_threads(n_threads)
                    t0 = time.perf_counter()
                    fn()
                    if r:
                        times[name].append(time.perf_counter() - t0)
        finally:
            numba.set_num_threads(threads)
        entry: dict = {}
        for name, (_, n_threads) in calls.items():
            arr = np.asarray(times[name])
            entry[name] = {"best_s": float(arr.min()), "median_s": float(np.median(arr)),
                           "mean_s": float(arr.mean()), "all_s": times[name],
                           "repeat": repeat, "threads": n_threads,
                           "melems_per_s": n / float(arr.min()) / 1e6}
        scipy_rate = entry["scipy"]["melems_per_s"]
        for name in calls:
            entry[name]["speedup_vs_scipy"] = entry[name]["melems_per_s"] / scipy_rate
        figures[f"k{k}"] = entry
    figures["load_average_1min_after"] = os.getloadavg()[0]
    figures["target"] = "vhgw >= 5x scipy throughput at k=10 and k=1000"
    figures["target_met"] = all(figures[f"k{k}"]["vhgw"]["speedup_vs_scipy"] >= 5
                                for k in (10, 1000))
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
