"""Mean average precision: PR curves per convention, interpolation, AP against the IoU threshold.

All data are synthetic detections of a known quality (:func:`deepnotes.data.coco.synthetic_coco`:
COCO-like objects; a simulated detector that finds each with probability ``p_detect``, shifts
its box by ``loc_noise`` times its size, and scores true objects ``score_gap`` standard
deviations above false alarms). No network is trained: this topic has no torch work, and
``device`` is unused.

1. The main detector is evaluated by :func:`deepnotes.vision.coco_evaluate` and by pycocotools
   (the peer): the 12 statistics, the largest difference between them and both times.
2. One category's precision/recall curve at IoU 0.5, its monotone envelope and the points the
   VOC2007 11-point and COCO 101-point rules read off it, built with the readable functions of
   :mod:`deepnotes.vision.detection_metrics`; its COCO AP must equal the evaluator's.
3. How the interpolation alone changes AP: each category of growing subsets of the images is
   scored at IoU 0.5 with the same (COCO) matching by all three conventions.
4. AP at every IoU threshold 0.50:0.05:0.95 for detectors that differ only in box noise: one
   seed, so the same objects, hits and scores, with the same random shifts scaled up.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from dataclasses import dataclass

import numpy as np

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run


@dataclass
class Config(ExperimentConfig):
    n_images: int = 2000
    """Images in the main synthetic set."""
    n_categories: int = 10
    """Categories (Zipf frequencies: category 1 is the most common)."""
    gt_per_image: float = 7.0
    """Mean objects per image (Poisson)."""
    dets_per_image: int = 30
    """Detections per image; false alarms fill up to this number."""
    p_detect: float = 0.85
    """Probability that the simulated detector finds an object."""
    loc_noise: float = 0.08
    """Box noise of the main detector: centre shift and log-size change, in units of the size."""
    score_gap: float = 2.5
    """Logit gap between the scores of true objects and of false alarms (standard deviations)."""
    noise_levels: tuple[float, ...] = (0.02, 0.05, 0.1, 0.15, 0.25)
    """Box noise of the detectors compared in the AP-versus-IoU figure."""
    subset_sizes: tuple[int, ...] = (5, 20, 80, 320, 2000)
    """Image counts of the subsets scored by each convention (smaller: fewer positives)."""
    example_category: int = 3
    """Category id whose precision/recall curve is drawn."""


PRESETS = make_presets(
    smoke=Config(n_images=40, n_categories=3, dets_per_image=15, noise_levels=(0.05, 0.2),
                 subset_sizes=(10, 40), example_category=1),
    quick=Config(n_images=300, n_categories=5, noise_levels=(0.02, 0.1, 0.25),
                 subset_sizes=(10, 50, 300)),
    full=Config(),
)
#: This topic has no torch work: --device does not apply (said once in the run's log).
CPU_ONLY = "the evaluator is numba kernels"
HEADLINE = "coco/AP"
PEER = "peer/pycocotools_AP"


def _pycocotools_stats(gt: dict, dets: list) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)


def class_curve(gt, dets, category: int, iou_threshold: float = 0.5,
                image_limit: int | None = None, max_dets: int = 100):
    """Flags of one category's detections, in the order COCO accumulates them.

    Uses the readable functions (:func:`box_iou`, :func:`match_coco`) image by image, area range
    "all". Returns ``(tp, fp, n_positives)``: bool arrays in descending score order (ties by
    image, then input order) and the count of non-crowd ground-truth boxes.
    """
    from deepnotes.vision.detection_metrics import box_iou, match_coco

    k = int(np.searchsorted(gt.category_ids, category))
    g_sel = gt.category_index == k
    d_sel = dets.category_index == k
    if image_limit is not None:
        g_sel &= gt.image_index < image_limit
        d_sel &= dets.image_index < image_limit
    g_idx, d_idx = np.flatnonzero(g_sel), np.flatnonzero(d_sel)
    n_pos = int((~gt.iscrowd[g_idx]).sum())
    scores, tps, fps = [], [], []
    for im in np.union1d(gt.image_index[g_idx], dets.image_index[d_idx]):
        gi = g_idx[gt.image_index[g_idx] == im]
        di = d_idx[dets.image_index[d_idx] == im]
        di = di[np.argsort(-dets.scores[di], kind="stable")][:max_dets]
        if di.size == 0:
            continue
        ious = box_iou(dets.boxes[di], gt.boxes[gi], gt.iscrowd[gi])
        match, ignored = match_coco(ious, iou_threshold, gt.iscrowd[gi], gt.iscrowd[gi])
        scores.append(dets.scores[di])
        tps.append((match >= 0) & ~ignored)
        fps.append(match < 0)
    if not scores:
        return np.zeros(0, bool), np.zeros(0, bool), n_pos
    s = np.concatenate(scores)
    order = np.argsort(-s, kind="stable")
    return np.concatenate(tps)[order], np.concatenate(fps)[order], n_pos


def _plot_pr(run, rec, prec, aps, category: int) -> None:
    from deepnotes.core.plotting import PALETTE, new_figure
    from deepnotes.vision.detection_metrics import COCO_RECALL_GRID

    env = np.maximum.accumulate(prec[::-1])[::-1]
    fig, ax = new_figure(size=(7.0, 4.2))
    ax.plot(rec, prec, color=PALETTE[5], lw=1.0, label="precision after each detection")
    ax.step(np.r_[0.0, rec, rec[-1]], np.r_[env[0], env, 0.0], where="post", color=PALETTE[0],
            lw=1.8, label=f"monotone envelope: all-point AP = {aps['voc10']:.3f}")
    grid11 = np.arange(0.0, 1.1, 0.1)
    p11 = [prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in grid11]
    ax.plot(grid11, p11, "o", color=PALETTE[3], ms=6,
            label=f"11 points (VOC2007): AP = {aps['voc07']:.3f}")
    idx = np.searchsorted(rec, COCO_RECALL_GRID, side="left")
    p101 = np.where(idx < rec.size, env[np.minimum(idx, rec.size - 1)], 0.0)
    ax.plot(COCO_RECALL_GRID, p101, ".", color=PALETTE[2], ms=3,
            label=f"101 points (COCO): AP = {aps['coco101']:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0.0, 1.05)
    ax.set_title(f"Category {category}, IoU 0.5: one curve, three readings")
    ax.legend(loc="lower left", fontsize=9)
    run.save_figure(fig, "pr_curves")


def _plot_gaps(run, rows) -> None:
    from deepnotes.core.plotting import PALETTE, new_figure

    fig, ax = new_figure(size=(7.0, 4.0))
    n_pos = np.array([r[0] for r in rows])
    for col, name, colour in ((2, "11-point (VOC2007) minus all-point", PALETTE[3]),
                              (3, "101-point (COCO) minus all-point", PALETTE[2])):
        gap = np.array([r[col] - r[1] for r in rows])
        ax.scatter(n_pos, gap, s=14, alpha=0.7, color=colour, label=name)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("positives in the category (ground-truth boxes)")
    ax.set_ylabel(r"$\Delta$AP at IoU 0.5")
    ax.set_title("Interpolation alone: same detections, same matches")
    ax.legend(loc="best", fontsize=9)
    run.save_figure(fig, "interpolation_gap")


def _plot_iou(run, levels, curves) -> None:
    from deepnotes.core.plotting import PALETTE, new_figure
    from deepnotes.vision.coco_eval import IOU_THRESHOLDS

    fig, ax = new_figure(size=(7.0, 4.0), layout="constrained")
    for colour, noise, ap in zip(PALETTE, levels, curves, strict=False):
        ax.plot(IOU_THRESHOLDS, ap, marker="o", color=colour,
                label=f"{noise:g} (AP = {np.mean(ap):.3f})")
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP (mean over categories)")
    ax.set_title("COCO AP is the mean of each curve over the 10 thresholds")
    # outside the axes: inside it covers the curves wherever it goes
    fig.legend(loc="outside right center", fontsize=9, title="box noise\n(× object size)")
    run.save_figure(fig, "ap_vs_iou")


def _plot_parity(run, ours, ref) -> None:
    from deepnotes.core.plotting import PALETTE, new_figure
    from deepnotes.vision import STAT_NAMES

    fig, ax = new_figure(size=(7.0, 3.6))
    x = np.arange(len(STAT_NAMES))
    ax.bar(x, ours, color=PALETTE[0], width=0.6, label="ours")
    ax.plot(x, ref, "_", color=PALETTE[3], ms=22, mew=2.5, label="pycocotools")
    ax.set_xticks(x, STAT_NAMES, rotation=45)
    ax.set_ylabel("value of the statistic")
    ax.set_title(f"The 12 COCO statistics; largest difference {np.abs(ours - ref).max():.1e}")
    ax.legend(loc="upper left", fontsize=9)
    run.save_figure(fig, "stats_vs_pycocotools")


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        from deepnotes.data.coco import load_coco_detections, load_coco_gt, synthetic_coco
        from deepnotes.vision import STAT_NAMES, coco_evaluate, evaluate_arrays
        from deepnotes.vision.detection_metrics import average_precision, precision_recall

        def make(noise: float, seed_offset: int):
            rng = np.random.default_rng([config.seed, seed_offset])
            return synthetic_coco(rng, config.n_images, config.n_categories,
                                  gt_per_image=config.gt_per_image,
                                  dets_per_image=config.dets_per_image,
                                  p_detect=config.p_detect, loc_noise=noise,
                                  score_gap=config.score_gap)

        # 1. the main detector, ours beside pycocotools
        gt_dict, det_list = make(config.loc_noise, 0)
        coco_evaluate(*synthetic_coco(np.random.default_rng(0), 3, 2))  # load the kernels
        t0 = time.perf_counter()
        ours = coco_evaluate(gt_dict, det_list)
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = _pycocotools_stats(gt_dict, det_list)
        ref_s = time.perf_counter() - t0
        ours_v = np.array([ours[k] for k in STAT_NAMES])
        diff = float(np.abs(ours_v - ref).max())
        if diff > 1e-12:
            raise RuntimeError(f"coco_evaluate differs from pycocotools by {diff}")
        run.log(f"{len(gt_dict['annotations'])} boxes, {len(det_list)} detections on "
                f"{config.n_images} images: AP {ours['AP']:.4f}; max |ours - pycocotools| = "
                f"{diff:.1e}; ours {ours_s:.3f} s, pycocotools {ref_s:.3f} s")
        run.log_metrics({f"coco/{k}": float(v) for k, v in zip(STAT_NAMES, ours_v, strict=True)})
        run.log_metrics({f"peer/pycocotools_{k}": float(v)
                         for k, v in zip(STAT_NAMES, ref, strict=True)})
        run.log_metrics({"check/max_abs_diff_vs_pycocotools": diff,
                         "data/gt_boxes": len(gt_dict["annotations"]),
                         "data/detections": len(det_list), "data/images": config.n_images,
                         "timing/ours_s": ours_s, "timing/pycocotools_s": ref_s,
                         "timing/pycocotools_over_ours": ref_s / ours_s})
        _plot_parity(run, ours_v, ref)

        # 2. one category's curve read three ways, with the readable functions
        gt = load_coco_gt(gt_dict)
        dets = load_coco_detections(det_list, gt)
        full = evaluate_arrays(gt, dets)
        tp, fp, n_pos = class_curve(gt, dets, config.example_category)
        prec, rec = precision_recall(tp, fp, n_pos)
        aps = {c: average_precision(rec, prec, c) for c in ("voc07", "voc10", "coco101")}
        k = int(np.searchsorted(gt.category_ids, config.example_category))
        kernel_ap50 = float(np.mean(full.precision[0, :, k, 0, -1]))
        run.log_metrics({f"example/{c}_AP50": v for c, v in aps.items()})
        run.log_metrics({"example/positives": n_pos, "example/detections": int(tp.size),
                         "check/readable_vs_kernel_AP50_diff": abs(aps["coco101"] - kernel_ap50)})
        run.log(f"category {config.example_category}: AP50 voc07 {aps['voc07']:.4f}, voc10 "
                f"{aps['voc10']:.4f}, coco101 {aps['coco101']:.4f} (evaluator {kernel_ap50:.4f})")
        _plot_pr(run, rec, prec, aps, config.example_category)

        # 3. interpolation alone, on subsets of growing size
        rows = []
        for size in run.track(config.subset_sizes, "subsets"):
            for cid in gt.category_ids.tolist():
                tp, fp, n_pos = class_curve(gt, dets, cid, image_limit=size)
                if n_pos == 0:
                    continue
                p, r = precision_recall(tp, fp, n_pos)
                rows.append((n_pos, average_precision(r, p, "voc10"),
                             average_precision(r, p, "voc07"),
                             average_precision(r, p, "coco101")))
        arr = np.array(rows)
        run.log_metrics({
            "conventions/mean_voc10_AP50": float(arr[:, 1].mean()),
            "conventions/mean_voc07_AP50": float(arr[:, 2].mean()),
            "conventions/mean_coco101_AP50": float(arr[:, 3].mean()),
            "conventions/max_abs_gap_voc07": float(np.abs(arr[:, 2] - arr[:, 1]).max()),
            "conventions/max_abs_gap_coco101": float(np.abs(arr[:, 3] - arr[:, 1]).max()),
            "conventions/curves": len(rows),
        })
        big = arr[:, 0] >= np.median(arr[:, 0])
        for name, col in (("voc07", 2), ("coco101", 3)):
            gap = arr[:, col] - arr[:, 1]
            run.log_metrics({
                f"conventions/mean_gap_{name}_small_classes": float(gap[~big].mean()),
                f"conventions/mean_gap_{name}_large_classes": float(gap[big].mean()),
                f"conventions/sd_gap_{name}_small_classes": float(gap[~big].std()),
                f"conventions/sd_gap_{name}_large_classes": float(gap[big].std()),
            })
        run.log_metrics({"conventions/median_positives": float(np.median(arr[:, 0]))})
        _plot_gaps(run, rows)

        # 4. AP against the IoU threshold, detectors of growing box noise
        curves = []
        for noise in run.track(config.noise_levels, "box noise"):
            # One seed for all: the same objects, hits, scores and noise directions, scaled.
            g_d, d_l = make(noise, 1)
            g = load_coco_gt(g_d)
            res = evaluate_arrays(g, load_coco_detections(d_l, g))
            p = res.precision[:, :, :, 0, -1]  # (T, R, K) at area all, 100 detections
            ap_t = np.array([np.mean(p[t][p[t] > -1]) for t in range(p.shape[0])])
            curves.append(ap_t)
            run.log_metrics({f"noise_{noise:g}/AP": res.stats["AP"],
                             f"noise_{noise:g}/AP50": res.stats["AP50"],
                             f"noise_{noise:g}/AP75": res.stats["AP75"],
                             f"noise_{noise:g}/AP95": float(ap_t[-1])})
        _plot_iou(run, config.noise_levels, curves)
    return run.result
