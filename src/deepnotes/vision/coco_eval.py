"""The COCO box evaluator: pycocotools' 12 statistics, bit for bit, in numba.

``coco_evaluate(gt, detections)`` computes what ``COCOeval(..., "bbox")`` followed by
``evaluate()``, ``accumulate()`` and ``summarize()`` computes, with the same floating-point
operations in the same order, so the statistics are equal to the last bit (the tests hold them to
1e-12 against pycocotools on random and adversarial sets). It is organised differently:

1. **Group** (NumPy). Detections are sorted once by (image, category, score descending, input
   order) and cut to the ``max_dets[-1]`` best per image and category; ground truth is grouped by
   (image, category). A second stable sort by (category, score descending) gives the order in
   which pycocotools' ``accumulate`` concatenates and merge-sorts the detections of a category.
2. **Match** (:func:`_match_groups`, numba, parallel over image-category groups). For each group:
   the IoU matrix (Eq. 1-2 of the post, pycocotools' ``bbIou`` arithmetic), then for each area
   range and IoU threshold the greedy matching of :func:`deepnotes.vision.detection_metrics.
   match_coco`. The result is one byte per detection, range and threshold: false positive, true
   positive, or ignored.
3. **Accumulate** (:func:`_accumulate`, numba, parallel over category-range pairs). Down each
   category's sorted list: cumulative TP/FP counts, precision (Eq. 3), its monotone envelope
   (Eq. 4) and its value at the 101 recall points (Eq. 7), for every threshold and ``maxDets``.
   Only true positives are stored: the first point with recall >= r is always one, and the
   envelope there never comes from a false positive or an ignored detection (whose precision is
   at most that of the point before it), so the sampled precision is the same value.
4. **Summarise** (NumPy): the means over the valid (``> -1``) entries of the same slices as
   ``COCOeval.summarize``, taken over arrays laid out as pycocotools' ``precision[T, R, K, A, M]``
   and ``recall[T, K, A, M]``, so even the summation order matches.

Where it differs from pycocotools on purpose (malformed input raises instead of being dropped or
crashing later; an empty detection list is allowed) is in :mod:`deepnotes.data.coco` and the post's
"Deviations".
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from deepnotes.data.coco import (
    CocoDetections,
    CocoGroundTruth,
    load_coco_detections,
    load_coco_gt,
)

__all__ = [
    "AREA_RANGES",
    "AREA_RANGE_NAMES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "STAT_NAMES",
    "CocoEvaluation",
    "coco_evaluate",
    "evaluate_arrays",
]

#: IoU thresholds 0.50:0.05:0.95, built as pycocotools builds them (``np.arange`` would give
#: 0.6000000000000001 and friends).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: Recall points 0:0.01:1 of the 101-point interpolation (Eq. 7).
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: Maximum detections per image and category.
MAX_DETS = (1, 10, 100)
#: Object area ranges in pixels² (bounds inclusive): all, small, medium, large.
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
AREA_RANGE_NAMES = ("all", "small", "medium", "large")
#: The 12 statistics in pycocotools' order (``COCOeval.stats``).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

_FP, _TP, _IGNORED = 0, 1, 2
_EPS = float(np.spacing(1))


@dataclass(frozen=True)
class CocoEvaluation:
    """Everything :func:`evaluate_arrays` measures.

    Attributes
    ----------
    stats : dict str -> float
        The 12 statistics under :data:`STAT_NAMES` (``-1.0`` where nothing could be measured,
        as pycocotools reports it).
    precision : ndarray, shape (T, R, K, A, M)
        Interpolated precision at each IoU threshold, recall point, category, area range and
        ``maxDets``; -1 for a category without (non-ignored) ground truth in that range.
    recall : ndarray, shape (T, K, A, M)
        Final recall; -1 likewise.
    category_ids : ndarray, shape (K,)
    per_class_ap : dict int -> float
        AP@[.50:.95] (area all, 100 detections) per category id; -1 without ground truth.
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    category_ids: np.ndarray
    per_class_ap: dict[int, float]


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True, nogil=True)
def _counting_sort(keys, n_keys):
    """Stable order of ``keys`` (ints in [0, n_keys)) and the start of each key: O(n + n_keys)."""
    start = np.zeros(n_keys + 1, np.int64)
    for i in range(keys.size):
        start[keys[i] + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    order = np.empty(keys.size, np.int64)
    for i in range(keys.size):
        k = keys[i]
        order[fill[k]] = i
        fill[k] += 1
    return order, start


@numba.njit(cache=True, parallel=True)
def _group_order(image_index, category_index, scores, n_images, n_cats):
    """Detections ordered by (image, category, score descending, input order).

    A counting sort by image, then inside each image two stable merge sorts: by score, then by
    category. This is the order of pycocotools' ``evaluateImg`` (a stable descending sort of each
    image-category list, which holds the detections in input order)."""
    order, start = _counting_sort(image_index, n_images)
    for im in numba.prange(n_images):
        lo, hi = start[im], start[im + 1]
        if hi - lo < 2:
            continue
        seg = order[lo:hi]
        by_score = seg[np.argsort(-scores[seg], kind="mergesort")]
        order[lo:hi] = by_score[np.argsort(category_index[by_score], kind="mergesort")]
    return order


@numba.njit(cache=True, parallel=True)
def _category_order(category_index, scores, n_cats):
    """Positions of the (group-ordered) detections by (category, score descending); ties keep
    their (image, input) order, as pycocotools' concatenation then merge sort does."""
    order, start = _counting_sort(category_index, n_cats)
    for k in numba.prange(n_cats):
        lo, hi = start[k], start[k + 1]
        if hi - lo < 2:
            continue
        seg = order[lo:hi].copy()
        order[lo:hi] = seg[np.argsort(-scores[seg], kind="mergesort")]
    return order, start


@numba.njit(cache=True, nogil=True)
def _iou_block(d_box, d0, n_det, g_box, g_sel, g_crowd, out):
    """IoU of detections ``d0 .. d0+n_det`` with ground truth ``g_sel`` (Eq. 1-2).

    Operation for operation pycocotools' ``bbIou`` (``maskApi.c``): the same sums, the same
    products and one division, so every IoU is the same double."""
    for j in range(g_sel.size):
        g = g_sel[j]
        gx, gy, gw, gh = g_box[g, 0], g_box[g, 1], g_box[g, 2], g_box[g, 3]
        ga = gw * gh
        crowd = g_crowd[g]
        for i in range(n_det):
            d = d0 + i
            dx, dy, dw, dh = d_box[d, 0], d_box[d, 1], d_box[d, 2], d_box[d, 3]
            out[i, j] = 0.0
            w = min(dw + dx, gw + gx) - max(dx, gx)
            if w <= 0:
                continue
            h = min(dh + dy, gh + gy) - max(dy, gy)
            if h <= 0:
                continue
            inter = w * h
            da = dw * dh
            u = da if crowd else da + ga - inter
            out[i, j] = inter / u


@numba.njit(cache=True, parallel=True)
def _match_groups(d_box, d_area, grp_start, gt_lo, gt_hi, g_box, g_area, g_crowd,
                  area_lo, area_hi, thresholds, state):
    """COCO greedy matching of every image-category group (see ``match_coco``).

    Parameters
    ----------
    d_box : (N, 4) detections in group order (score descending inside a group)
    d_area : (N,) ``w * h`` of each detection
    grp_start : (P + 1,) group pointers into the detections
    gt_lo, gt_hi : (P,) the group's ground truth ``g_*[gt_lo:gt_hi]`` (in file order)
    area_lo, area_hi : (A,), thresholds : (T,)
    state : (N, A, T) uint8, out: 0 false positive, 1 true positive, 2 ignored
    """
    n_groups = grp_start.size - 1
    n_area = area_lo.size
    n_thr = thresholds.size
    for p in numba.prange(n_groups):
        d0 = grp_start[p]
        n_det = grp_start[p + 1] - d0
        n_gt = gt_hi[p] - gt_lo[p]
        if n_gt == 0:
            for a in range(n_area):
                for i in range(n_det):
                    out_of_range = d_area[d0 + i] < area_lo[a] or d_area[d0 + i] > area_hi[a]
                    s = _IGNORED if out_of_range else _FP
                    for t in range(n_thr):
                        state[d0 + i, a, t] = s
            continue
        g_all = np.arange(gt_lo[p], gt_hi[p])
        iou = np.empty((n_det, n_gt))
        _iou_block(d_box, d0, n_det, g_box, g_all, g_crowd, iou)
        ignore = np.empty(n_gt, np.bool_)
        order = np.empty(n_gt, np.int64)
        taken = np.empty(n_gt, np.bool_)
        for a in range(n_area):
            # ground truth: regular boxes first, then ignored ones, each in file order
            n_reg = 0
            for j in range(n_gt):
                g = g_all[j]
                ignore[j] = g_crowd[g] or g_area[g] < area_lo[a] or g_area[g] > area_hi[a]
                if not ignore[j]:
                    order[n_reg] = j
                    n_reg += 1
            k = n_reg
            for j in range(n_gt):
                if ignore[j]:
                    order[k] = j
                    k += 1
            for t in range(n_thr):
                taken[:] = False
                for i in range(n_det):
                    best = min(thresholds[t], 1 - 1e-10)
                    m = -1
                    for jj in range(n_gt):
                        j = order[jj]
                        if taken[j] and not g_crowd[g_all[j]]:
                            continue
                        if m > -1 and not ignore[m] and ignore[j]:
                            break
                        if iou[i, j] < best:
                            continue
                        best = iou[i, j]
                        m = j
                    if m == -1:
                        d = d0 + i
                        out_of_range = d_area[d] < area_lo[a] or d_area[d] > area_hi[a]
                        state[d, a, t] = _IGNORED if out_of_range else _FP
                    else:
                        taken[m] = True
                        state[d0 + i, a, t] = _IGNORED if ignore[m] else _TP


@numba.njit(cache=True, parallel=True)
def _gather_states(state, acc):
    """``out[a, t, j] = state[acc[j], a, t]``: the states in accumulation order, one
    contiguous row per (area range, threshold), read in sequence by ``_accumulate``."""
    n_area, n_thr = state.shape[1], state.shape[2]
    out = np.empty((n_area, n_thr, acc.size), np.uint8)
    for j in numba.prange(acc.size):
        d = acc[j]
        for a in range(n_area):
            for t in range(n_thr):
                out[a, t, j] = state[d, a, t]
    return out


@numba.njit(cache=True, parallel=True)
def _accumulate(cat_start, rank, state, npig, max_group, max_dets, rec_thr, precision,
                recall):
    """Precision at the recall points and final recall of every category (Eq. 3, 4, 7).

    ``state[a, t]`` and ``rank`` list the detections category by category (``cat_start``
    pointers), each category sorted by score descending with ties in (image, input) order;
    ``rank`` is a detection's place in its image-category group; ``max_group[k]`` the largest
    group of category k. Fills ``precision[T, R, K, A, M]`` and ``recall[T, K, A, M]``
    (pre-set to -1) wherever ``npig[k, a]`` (non-ignored ground truth) is positive.
    """
    n_cat, n_area = npig.shape
    n_thr = state.shape[1]
    n_rec = rec_thr.size
    n_m = max_dets.size
    for job in numba.prange(n_cat * n_area):
        k = job // n_area
        a = job % n_area
        n_pos = npig[k, a]
        if n_pos == 0:
            continue
        lo, hi = cat_start[k], cat_start[k + 1]
        tp_c = np.empty(hi - lo)
        pr = np.empty(hi - lo)
        for m in range(n_m):
            if m > 0 and max_group[k] <= max_dets[m - 1]:
                # no group is cut by either limit: the curves equal the previous ones
                for t in range(n_thr):
                    recall[t, k, a, m] = recall[t, k, a, m - 1]
                    for r in range(n_rec):
                        precision[t, r, k, a, m] = precision[t, r, k, a, m - 1]
                continue
            limit = max_dets[m]
            for t in range(n_thr):
                st = state[a, t]
                tp = 0.0
                fp = 0.0
                n_tp = 0
                for d in range(lo, hi):
                    if rank[d] >= limit:
                        continue
                    s = st[d]
                    if s == _TP:
                        tp += 1.0
                        tp_c[n_tp] = tp
                        pr[n_tp] = tp / (fp + tp + _EPS)
                        n_tp += 1
                    elif s == _FP:
                        fp += 1.0
                recall[t, k, a, m] = tp / n_pos
                # Only true positives are kept: recall rises only there, so the first point with
                # recall >= r is one of them, and a false positive's precision is below the
                # point before it, so it never sets the envelope at a true positive.
                for i in range(n_tp - 1, 0, -1):
                    if pr[i] > pr[i - 1]:
                        pr[i - 1] = pr[i]
                i = 0
                for r in range(n_rec):
                    while i < n_tp and tp_c[i] / n_pos < rec_thr[r]:
                        i += 1
                    precision[t, r, k, a, m] = pr[i] if i < n_tp else 0.0


# --------------------------------------------------------------------------- driver


def _group_pointers(sorted_keys: np.ndarray) -> np.ndarray:
    """Start of every run of equal keys, plus the end: shape (P + 1,)."""
    n = sorted_keys.size
    if n == 0:
        return np.zeros(1, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return np.r_[starts, n].astype(np.int64)


def evaluate_arrays(gt: CocoGroundTruth, dets: CocoDetections, *,
                    max_dets: tuple[int, ...] = MAX_DETS) -> CocoEvaluation:
    """COCO box evaluation of parsed columns (see :func:`coco_evaluate`).

    Parameters
    ----------
    gt : CocoGroundTruth
    dets : CocoDetections
        Indexed against ``gt``.
    max_dets : tuple of int
        Increasing limits on detections per image and category; the statistics use
        ``max_dets[0]``, ``[1]`` and ``[2]`` where pycocotools uses 1, 10 and 100 (the defaults).

    Returns
    -------
    CocoEvaluation
    """
    max_dets = tuple(sorted(int(m) for m in max_dets))
    if len(max_dets) != 3 or max_dets[0] < 1:
        raise ValueError(f"max_dets must be three positive limits, got {max_dets}")
    n_cat = gt.n_categories
    n_thr, n_rec = IOU_THRESHOLDS.size, RECALL_THRESHOLDS.size
    area_lo = np.array([r[0] for r in AREA_RANGES])
    area_hi = np.array([r[1] for r in AREA_RANGES])
    n_area, n_m = area_lo.size, len(max_dets)

    # 1. group: detections by (image, category, -score, input order), cut to max_dets[-1]
    order = _group_order(dets.image_index, dets.category_index, dets.scores, gt.n_images,
                         n_cat)
    keys = dets.image_index[order] * n_cat + dets.category_index[order]
    ptr = _group_pointers(keys)
    sizes = np.diff(ptr)
    rank = np.arange(keys.size) - np.repeat(ptr[:-1], sizes)
    keep = rank < max_dets[-1]
    if not keep.all():
        order, keys, rank = order[keep], keys[keep], rank[keep]
        ptr = _group_pointers(keys)
        sizes = np.diff(ptr)
    d_box = dets.boxes[order]
    d_area = d_box[:, 2] * d_box[:, 3]
    d_cat = dets.category_index[order]

    g_key = gt.image_index * n_cat + gt.category_index
    g_order = np.argsort(g_key, kind="stable")
    g_keys = g_key[g_order]
    grp_keys = keys[ptr[:-1]]
    gt_lo = np.searchsorted(g_keys, grp_keys, side="left").astype(np.int64)
    gt_hi = np.searchsorted(g_keys, grp_keys, side="right").astype(np.int64)
    g_box = np.ascontiguousarray(gt.boxes[g_order])
    g_area = gt.areas[g_order]
    g_crowd = gt.iscrowd[g_order]

    # accumulation order: each category's detections by score, ties in (image, input) order
    acc, cat_start = _category_order(d_cat, dets.scores[order], n_cat)

    # 2. match
    state = np.empty((keys.size, n_area, n_thr), np.uint8)
    if keys.size:
        _match_groups(d_box, d_area, ptr, gt_lo, gt_hi, g_box, g_area, g_crowd,
                      area_lo, area_hi, IOU_THRESHOLDS, state)

    # non-ignored ground truth per category and area range (pycocotools' npig)
    npig = np.zeros((n_cat, n_area), np.int64)
    for a in range(n_area):
        counted = ~gt.iscrowd & (gt.areas >= area_lo[a]) & (gt.areas <= area_hi[a])
        npig[:, a] = np.bincount(gt.category_index[counted], minlength=n_cat)

    # 3. accumulate
    max_group = np.zeros(n_cat, np.int64)
    if sizes.size:
        np.maximum.at(max_group, d_cat[ptr[:-1]], sizes)
    precision = -np.ones((n_thr, n_rec, n_cat, n_area, n_m))
    recall = -np.ones((n_thr, n_cat, n_area, n_m))
    if n_cat:
        _accumulate(cat_start, rank[acc], _gather_states(state, acc), npig, max_group,
                    np.array(max_dets, np.int64), RECALL_THRESHOLDS, precision, recall)

    # 4. summarise, as COCOeval.summarize slices and averages
    stats = _summarize(precision, recall)
    ap = precision[:, :, :, 0, n_m - 1]
    per_class = {}
    for k, cid in enumerate(gt.category_ids.tolist()):
        s = ap[:, :, k]
        per_class[cid] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
    return CocoEvaluation(stats=stats, precision=precision, recall=recall,
                          category_ids=gt.category_ids, per_class_ap=per_class)


def _mean_valid(s: np.ndarray) -> float:
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    def ap(thr=None, area=0, m=2):
        s = precision
        if thr is not None:
            s = s[np.where(thr == IOU_THRESHOLDS)[0]]
        return _mean_valid(s[:, :, :, [area], [m]])

    def ar(area=0, m=2):
        return _mean_valid(recall[:, :, [area], [m]])

    values = (ap(), ap(0.5), ap(0.75), ap(area=1), ap(area=2), ap(area=3),
              ar(m=0), ar(m=1), ar(m=2), ar(area=1), ar(area=2), ar(area=3))
    return dict(zip(STAT_NAMES, values, strict=True))


def coco_evaluate(gt, detections) -> dict:
    """COCO box AP/AR: pycocotools' 12 statistics and the AP of every class.

    Parameters
    ----------
    gt : dict, str or Path
        COCO ground truth (see :func:`deepnotes.data.coco.load_coco_gt`), or its JSON file.
    detections : list of dict, str or Path
        The results list ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` or its
        JSON file.

    Returns
    -------
    dict
        ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100``,
        ``ARs``, ``ARm``, ``ARl`` (floats, in this order, equal to ``COCOeval.stats``; -1 where
        undefined) and ``per_class_AP``: a dict category id -> AP@[.50:.95].

    Raises
    ------
    ValueError
        Malformed input, naming the record (for instance a detection whose ``image_id`` is not
        in the ground truth).
    """
    g = load_coco_gt(gt)
    result = evaluate_arrays(g, load_coco_detections(detections, g))
    return {**result.stats, "per_class_AP": result.per_class_ap}
