"""Timing and recording helpers for peer benchmarks (``benchmarks/<name>.py``).

A benchmark module defines ``run(quick: bool = False) -> dict`` returning JSON-able figures and
ends with ``if __name__ == "__main__": bench_main(__file__, run)``. ``deepnotes bench NAME`` and
``python benchmarks/NAME.py`` both end in :func:`record`, which writes
``benchmarks/results/<name>.json`` with the figures, the command, the machine and the versions.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Packages whose versions every benchmark record carries (when installed).
TRACKED_PACKAGES = (
    "numpy", "numba", "scipy", "torch", "scikit-learn", "xgboost-cpu", "xgboost", "lightgbm",
    "pycocotools", "faster-coco-eval", "stable-baselines3", "triton",
)


def time_call(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1) -> dict[str, float]:
    """Time ``fn()`` ``repeat`` times after ``warmup`` untimed calls.

    Returns
    -------
    dict with ``best_s``, ``median_s`` and ``mean_s`` (seconds). The best time is the least noisy
    estimate of the cost on an otherwise idle machine; the median is reported beside it.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    arr = np.asarray(times)
    return {"best_s": float(arr.min()), "median_s": float(np.median(arr)),
            "mean_s": float(arr.mean())}


def machine_info() -> dict[str, Any]:
    """CPU, core count, Python and package versions: what a reader needs to compare figures."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for pkg in TRACKED_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def results_dir() -> Path:
    """``benchmarks/results`` of the repository."""
    from deepnotes.core.paths import benchmarks_dir

    return benchmarks_dir() / "results"


#: Where ``--quick`` records go by default: never over the committed full records.
QUICK_DIR = "quick"


def record(name: str, figures: dict[str, Any], command: str, out_dir: Path | None = None, *,
           quick: bool = False) -> Path:
    """Write ``<out_dir>/<name>.json``: the figures, the command that made them, the machine.

    A ``quick`` run goes to ``benchmarks/results/quick/`` unless ``out_dir`` says otherwise, so
    it never replaces the committed record of a full run.
    """
    if out_dir is not None:
        out_dir = Path(out_dir)
    else:
        out_dir = results_dir() / QUICK_DIR if quick else results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": command,
        "quick": quick,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "figures": figures,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def benchmark_for(name: str, bench_dir: Path) -> Path | None:
    """The benchmark file for ``name``: a benchmark name (``gbdt``) or a topic slug whose
    benchmark declares it in a ``TOPICS = ("gbdt-to-xgboost", ...)`` line."""
    stem = name.replace("-", "_").removesuffix(".py")
    path = Path(bench_dir) / f"{stem}.py"
    if path.is_file():
        return path
    for candidate in sorted(Path(bench_dir).glob("*.py")):
        match = re.search(r"^TOPICS\s*=\s*\(([^)]*)\)", candidate.read_text(encoding="utf-8"),
                          re.MULTILINE)
        if match and name in re.findall(r"[\"']([^\"']+)[\"']", match.group(1)):
            return candidate
    return None


def bench_main(file: str, run: Callable[..., dict[str, Any]]) -> None:
    """Command-line entry of a benchmark: ``python benchmarks/NAME.py [--quick] [--out DIR]``."""
    name = Path(file).stem
    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast check")
    parser.add_argument("--out", type=Path, default=None, help="where the JSON goes")
    args = parser.parse_args()
    figures = run(quick=args.quick)
    command = "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{name}.py", *sys.argv[1:]])
    path = record(name, figures, command, args.out, quick=args.quick)
    print(json.dumps(figures, indent=2, default=_jsonable))
    print(f"recorded {path}")
