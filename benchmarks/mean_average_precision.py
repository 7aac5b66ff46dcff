"""COCO box evaluation: ours (numba) beside faster-coco-eval (C++) and pycocotools, one data set.

The data are COCO-like and synthetic, generated from a seed by
:func:`deepnotes.data.coco.synthetic_coco`: 5,000 images, 80 categories with Zipf frequencies,
Poisson(7) objects per image (about 35k boxes, COCO's small/medium/large mix, 1 % crowds, segment
areas below box areas) and 100 detections per image (500k), scores and coordinates rounded as in
real result files. Every contender starts from the same Python objects (the ground-truth dict and
the list of detection dicts) and ends with the 12 statistics, so parsing is part of the time.

- Timing: one untimed warm-up call each (ours loads its numba kernels from the cache), then
  ``repeat`` rounds in which ours and faster-coco-eval each run once, in turns, so that load
  on the shared machine hits both alike; the median and best are reported, and their ratios.
  pycocotools (about 15x slower than faster-coco-eval) runs once, for its statistics and a time.
- Statistics: the 12 numbers of each peer must equal ours (the record keeps the largest
  absolute difference).
- Memory: each contender runs once more in a fresh process that builds the same data; the peak
  resident set during the evaluation (VmHWM after resetting it through /proc/self/clear_refs)
  minus the resident set before it is reported.

    python benchmarks/mean_average_precision.py [--quick]
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {"full": dict(n_images=5000, n_categories=80), "quick": dict(n_images=200,
                                                                     n_categories=20)}
SEED = 0


def make_data(quick: bool) -> tuple[dict, list]:
    from deepnotes.data.coco import synthetic_coco

    return synthetic_coco(np.random.default_rng(SEED), **SIZES["quick" if quick else "full"],
                          gt_per_image=7.0, dets_per_image=100)


def _ours(gt: dict, dets: list) -> list[float]:
    from deepnotes.vision import STAT_NAMES, coco_evaluate

    out = coco_evaluate(gt, dets)
    return [out[k] for k in STAT_NAMES]


def _faster_coco_eval(gt: dict, dets: list) -> list[float]:
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        ev = COCOeval_faster(coco_gt, coco_gt.loadRes(dets), "bbox",
                             print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:12]]


def _pycocotools(gt: dict, dets: list) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


CONTENDERS = {"ours": _ours, "faster_coco_eval": _faster_coco_eval, "pycocotools": _pycocotools}


def _fresh(gt: dict, dets: list) -> tuple[dict, list]:
    """Copies for the peers: both write fields into the dicts they are given (``loadRes`` adds
    ``area``, ``id``, ``iscrowd`` and a polygon to every detection; ``evaluate`` marks ground
    truth). Neither changes a box list, so copying each dict suffices."""
    return ({**gt, "images": [dict(i) for i in gt["images"]],
             "annotations": [dict(a) for a in gt["annotations"]],
             "categories": copy.deepcopy(gt["categories"])}, [dict(d) for d in dets])


def _faster_coco_eval_phases(gt: dict, dets: list) -> dict[str, float]:
    """Where faster-coco-eval's time goes: the Python side (index, ``loadRes``) and the rest
    (``evaluate``: Python preparation plus the C++ matching; ``accumulate`` and ``summarize``)."""
    from faster_coco_eval import COCO, COCOeval_faster

    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(dets)
        out["index_and_loadres_s"] = time.perf_counter() - t0
        ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        t0 = time.perf_counter()
        ev.evaluate()
        out["evaluate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ev.accumulate()
        ev.summarize()
        out["accumulate_and_summarize_s"] = time.perf_counter() - t0
    return out


def _our_phases(gt: dict, dets: list) -> dict[str, float]:
    """Our time split into reading the dicts and evaluating the columns."""
    from deepnotes.data.coco import load_coco_detections, load_coco_gt
    from deepnotes.vision import evaluate_arrays

    t0 = time.perf_counter()
    g = load_coco_gt(gt)
    d = load_coco_detections(dets, g)
    t1 = time.perf_counter()
    evaluate_arrays(g, d)
    return {"load_s": t1 - t0, "evaluate_s": time.perf_counter() - t1}


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(name: str, quick: bool) -> None:
    """Run one contender in this (fresh) process and print its peak RSS increase in MB."""
    gt, dets = make_data(quick)
    if name == "ours":  # load the kernels first: their code is not the evaluation's memory
        from deepnotes.data.coco import synthetic_coco

        _ours(*synthetic_coco(np.random.default_rng(1), 3, 2))
    else:
        gt, dets = _fresh(gt, dets)
        __import__(name)
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    CONTENDERS[name](gt, dets)
    wall = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    print(json.dumps({"peak_rss_increase_mb": (peak - base) / 1024, "baseline_rss_mb": base / 1024,
                      "wall_s": wall}))


def _memory(name: str, quick: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    import numba

    gt, dets = make_data(quick)
    repeat = 3 if quick else 5
    figures: dict = {
        "data": {"images": len(gt["images"]), "categories": len(gt["categories"]),
                 "gt_boxes": len(gt["annotations"]), "detections": len(dets),
                 "crowd_boxes": sum(a["iscrowd"] for a in gt["annotations"]), "seed": SEED},
        "numba_threads": numba.get_num_threads(),
        "repeat": repeat,
        "load_average_1min_start": os.getloadavg()[0],
    }
    stats: dict = {}
    t0 = time.perf_counter()
    stats["ours"] = _ours(gt, dets)  # warm-up: kernels from numba's cache (or compiled)
    figures["ours_first_call_s"] = time.perf_counter() - t0
    stats["faster_coco_eval"] = _faster_coco_eval(*_fresh(gt, dets))
    times: dict[str, list[float]] = {"ours": [], "faster_coco_eval": []}
    for _ in range(repeat):
        for name in times:
            args = (gt, dets) if name == "ours" else _fresh(gt, dets)
            t0 = time.perf_counter()
            CONTENDERS[name](*args)
            times[name].append(time.perf_counter() - t0)
            del args
    args = _fresh(gt, dets)
    t0 = time.perf_counter()
    stats["pycocotools"] = _pycocotools(*args)
    times["pycocotools"] = [time.perf_counter() - t0]
    del args
    figures["load_average_1min_end_timing"] = os.getloadavg()[0]
    figures["phases"] = {"ours": _our_phases(gt, dets),
                         "faster_coco_eval": _faster_coco_eval_phases(*_fresh(gt, dets))}
    fce = figures["phases"]["faster_coco_eval"]
    figures["faster_coco_eval_python_side_fraction"] = fce["index_and_loadres_s"] / sum(
        fce.values())

    figures["seconds_median"] = {k: float(np.median(v)) for k, v in times.items()}
    figures["seconds_best"] = {k: float(np.min(v)) for k, v in times.items()}
    figures["seconds_all"] = times
    med, best = figures["seconds_median"], figures["seconds_best"]
    figures["ours_over_faster_coco_eval_median"] = med["ours"] / med["faster_coco_eval"]
    figures["ours_over_faster_coco_eval_best"] = best["ours"] / best["faster_coco_eval"]
    figures["faster_coco_eval_speedup_over_pycocotools"] = (
        med["pycocotools"] / med["faster_coco_eval"])
    figures["ours_speedup_over_faster_coco_eval"] = med["faster_coco_eval"] / med["ours"]
    figures["ours_speedup_over_pycocotools"] = med["pycocotools"] / med["ours"]

    from deepnotes.vision import STAT_NAMES

    figures["stats"] = {name: dict(zip(STAT_NAMES, v, strict=True)) for name, v in stats.items()}
    ours = np.array(stats["ours"])
    figures["max_abs_diff_vs_pycocotools"] = float(np.abs(ours - stats["pycocotools"]).max())
    figures["max_abs_diff_vs_faster_coco_eval"] = float(
        np.abs(ours - stats["faster_coco_eval"]).max())
    figures["identical_to_pycocotools"] = bool(np.array_equal(ours, stats["pycocotools"]))
    if figures["max_abs_diff_vs_pycocotools"] > 1e-12:
        raise RuntimeError(f"statistics differ from pycocotools: {stats}")

    figures["memory"] = {name: _memory(name, quick) for name in CONTENDERS}
    figures["peak_rss_increase_mb"] = {k: v["peak_rss_increase_mb"]
                                       for k, v in figures["memory"].items()}
    mem = figures["peak_rss_increase_mb"]
    figures["ours_over_faster_coco_eval_memory"] = mem["ours"] / mem["faster_coco_eval"]
    figures["load_average_1min_end"] = os.getloadavg()[0]
    return figures


if __name__ == "__main__":
    if "--memory-child" in sys.argv:
        _memory_child(sys.argv[sys.argv.index("--memory-child") + 1], "--quick" in sys.argv)
    else:
        from deepnotes.core.bench import bench_main

        bench_main(__file__, run)
