"""Sliding-window maximum: throughput of the monotonic deque and vHGW against scipy and NumPy.

For each window length ``k`` the experiment times four ways of computing the "valid" sliding
maximum of ``n`` standard-normal float64 samples (Eq. 1 of the post):

- ``deque``: :func:`deepnotes.algorithms.sliding_window.sliding_window_max`, ``method="deque"``;
- ``vhgw``:  the same function with ``method="vhgw"`` (van Herk/Gil-Werman, the default);
- ``scipy``: ``scipy.ndimage.maximum_filter1d`` with ``origin=-(k // 2)``, sliced to the valid
  windows (single-threaded; the peer);
- ``numpy``: ``sliding_window_view(x, k).max(-1)``, O(nk), timed on the first ``numpy_n`` samples.

All four outputs are checked for exact equality before anything is timed. Throughput is input
samples per second (``n / best time``, in millions). The first call of each numba method is
timed separately: it includes JIT compilation, or loading the on-disk cache when warm.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run


@dataclass
class Config(ExperimentConfig):
    n: int = 10_000_000
    """Samples in the signal (float64, standard normal)."""
    ks: tuple[int, ...] = (3, 10, 30, 100, 300, 1000, 3000)
    """Window lengths to time."""
    repeats: int = 5
    """Timed calls per method and k, taken in turns (the best is reported), after a warm-up."""
    numpy_n: int = 1_000_000
    """Samples given to NumPy's O(nk) sliding_window_view(...).max (it is far slower)."""
    demo_n: int = 60
    """Length of the short random walk in the deque illustration."""
    demo_k: int = 8
    """Window length in the deque illustration."""


PRESETS = make_presets(
    smoke=Config(n=100_000, ks=(10, 1000), repeats=2, numpy_n=20_000),
    quick=Config(n=1_000_000, ks=(3, 30, 300, 1000), repeats=5, numpy_n=200_000),
    full=Config(),
)
#: This topic has no torch work: --device does not apply (said once in the run's log).
CPU_ONLY = "its kernels are numba and numpy"
HEADLINE = "k1000/vhgw_melems_per_s"
PEER = "k1000/scipy_melems_per_s"

METHODS = ("vhgw", "deque", "scipy", "numpy")


def _best_times(fns: dict, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` timed calls of each function, taken in turns (one call of each per
    round) so that a busy spell on a shared machine slows every method rather than one."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _callables(x: np.ndarray, x_numpy: np.ndarray, k: int) -> dict:
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.ndimage import maximum_filter1d

    from deepnotes.algorithms.sliding_window import sliding_window_max

    m = x.size - k + 1
    return {
        "vhgw": lambda: sliding_window_max(x, k, method="vhgw"),
        "deque": lambda: sliding_window_max(x, k, method="deque"),
        # origin -(k // 2) moves scipy's centred window to [i, i + k): see the post, Results.
        "scipy": lambda: maximum_filter1d(x, k, origin=-(k // 2))[:m],
        "numpy": lambda: sliding_window_view(x_numpy, k).max(axis=-1),
    }


def _deque_members(x: np.ndarray, k: int, i: int) -> np.ndarray:
    """Indices the deque holds after step ``i``: samples of the window ``(i - k, i]`` greater
    than every later sample in it (the invariant, Eq. 2), found directly rather than by
    running the deque, so the figure checks the invariant rather than repeating the code."""
    lo = max(0, i - k + 1)
    members = []
    later_max = -np.inf
    for j in range(i, lo - 1, -1):
        if x[j] > later_max:
            members.append(j)
            later_max = x[j]
    return np.array(members[::-1])


def _plot_throughput(run, config: Config, table: dict) -> None:
    from deepnotes.core.plotting import PALETTE, new_figure

    fig, ax = new_figure(size="column_tall")
    labels = {"vhgw": "vHGW (ours, numba)", "deque": "monotonic deque (ours, numba)",
              "scipy": "scipy maximum_filter1d", "numpy": "NumPy sliding_window_view.max"}
    for colour, method in zip(PALETTE, METHODS, strict=False):
        ys = [table[k][method] for k in config.ks]
        ax.plot(config.ks, ys, marker="o", color=colour, label=labels[method])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"window length $k$")
    ax.set_ylabel("throughput (million samples / s)")
    n_tex = f"{config.n:,}".replace(",", "{,}")
    ax.set_title(rf"Sliding-window max, $n={n_tex}$ float64 samples")
    ax.legend(loc="best", fontsize=9)
    run.save_figure(fig, "throughput_vs_k")


def _plot_illustration(run, config: Config) -> None:
    from deepnotes.algorithms.sliding_window import sliding_window_max
    from deepnotes.core.plotting import PALETTE, new_figure

    k = config.demo_k
    x = np.cumsum(run.rng.standard_normal(config.demo_n))
    wmax = sliding_window_max(x, k, method="deque")
    t = np.arange(x.size)
    ends = t[k - 1:]  # window [i - k + 1, i] is drawn at its right end i
    sizes = [len(_deque_members(x, k, i)) for i in t]
    step = int(ends[np.argmax(sizes[k - 1:])])  # the window with the longest deque
    members = _deque_members(x, k, step)

    fig, (ax, ax2) = new_figure(2, 1, size="column_tall", sharex=True,
                                gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(t, x, color=PALETTE[0], marker=".", lw=1, label=r"signal $x_t$")
    ax.step(ends, wmax, where="post", color=PALETTE[3], lw=1.8,
            label=rf"max of the last $k={k}$ samples")
    ax.axvspan(step - k + 0.5, step + 0.5, color=PALETTE[1], alpha=0.15,
               label=rf"window ending at $t={step}$")
    ax.scatter(members, x[members], s=70, facecolors="none", edgecolors=PALETTE[2], lw=2,
               zorder=3, label="deque contents (front = window max)")
    ax.set_ylabel("value")
    ax.legend(loc="best", fontsize=9)
    ax.set_title("Monotonic deque: candidates are the decreasing 'record' samples")
    ax2.bar(t, sizes, color=PALETTE[2], width=0.8)
    ax2.set_ylabel("deque size")
    ax2.set_xlabel(r"time step $t$")
    run.save_figure(fig, "deque_illustration")


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        import numba

        from deepnotes.algorithms.sliding_window import sliding_window_max

        if config.n < max(config.ks) or config.numpy_n < max(config.ks):
            raise ValueError(f"n={config.n} and numpy_n={config.numpy_n} must be >= max(ks)="
                             f"{max(config.ks)}")
        x = run.rng.standard_normal(config.n)
        x_numpy = x[: config.numpy_n]
        run.log(f"n={config.n:,} float64, numba threads={numba.get_num_threads()}, "
                f"numpy on the first {x_numpy.size:,} samples")

        # The first call of each numba method compiles (or loads the cache): timed on its own.
        k0 = config.ks[0]
        jit = {}
        for method in ("vhgw", "deque"):
            t0 = time.perf_counter()
            sliding_window_max(x, k0, method=method)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            sliding_window_max(x, k0, method=method)
            jit[method] = (first, time.perf_counter() - t0)
            run.log(f"{method}: first call {first:.3f} s, second {jit[method][1]:.4f} s")
        run.log_metrics({
            "jit/vhgw_first_call_s": jit["vhgw"][0], "jit/vhgw_steady_call_s": jit["vhgw"][1],
            "jit/deque_first_call_s": jit["deque"][0], "jit/deque_steady_call_s": jit["deque"][1],
            "bench/numba_threads": numba.get_num_threads(),
            # Timings on a shared machine are only comparable at a similar load: keep it.
            "bench/load_average_1min_start": os.getloadavg()[0],
        })

        table: dict[int, dict[str, float]] = {}
        for k in run.track(config.ks, "window lengths"):
            fns = _callables(x, x_numpy, k)
            outs = {name: fn() for name, fn in fns.items()}
            short = x_numpy.size - k + 1
            equal = all(np.array_equal(outs[name], outs["vhgw"]) for name in ("deque", "scipy"))
            equal &= np.array_equal(outs["numpy"], outs["vhgw"][:short])
            if not equal:
                raise RuntimeError(f"methods disagree at k={k}")
            del outs  # the calls above were the warm-up
            best = _best_times(fns, config.repeats)
            table[k] = {name: (x_numpy.size if name == "numpy" else x.size) / t / 1e6
                        for name, t in best.items()}
            metrics = {f"k{k}/{name}_melems_per_s": v for name, v in table[k].items()}
            metrics[f"k{k}/vhgw_speedup_vs_scipy"] = table[k]["vhgw"] / table[k]["scipy"]
            metrics[f"k{k}/deque_speedup_vs_scipy"] = table[k]["deque"] / table[k]["scipy"]
            run.log_metrics(metrics)
            run.log(f"k={k}: " + ", ".join(f"{name} {v:.1f}" for name, v in table[k].items())
                    + " M samples/s; outputs identical")
        run.log_metrics({"check/outputs_identical": 1.0,
                         "bench/load_average_1min_end": os.getloadavg()[0]})

        _plot_throughput(run, config, table)
        _plot_illustration(run, config)
    return run.result
