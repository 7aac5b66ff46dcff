"""Detection metrics, the readable way: IoU, greedy matching, precision/recall and AP conventions.

The pieces every detection benchmark is built from, each as a small NumPy function that the post
walks through (equation numbers refer to ``posts/mean-average-precision.md``):

- :func:`box_iou` — intersection over union of two sets of boxes (Eq. 1), with COCO's crowd rule
  (Eq. 2) and the VOC devkit's inclusive-pixel ``+1`` convention as options;
- :func:`match_coco` and :func:`match_voc` — greedy matching of score-sorted detections to ground
  truth at one IoU threshold, by the COCO rules (best still-free box, crowd and ignored regions)
  and by the VOC devkit's rules (best box overall; a second hit on it is a false positive);
- :func:`precision_recall` — the cumulative curve (Eq. 3);
- :func:`average_precision` — AP by each convention: VOC2007 11-point (Eq. 5), VOC2010+
  all-point, the area under the monotone envelope (Eq. 6), and COCO's 101-point (Eq. 7).

The fast COCO evaluator in :mod:`deepnotes.vision.coco_eval` runs the same rules in numba; its
tests check it against pycocotools, and these functions against the devkit's formulas.

References: Everingham et al. (2010), "The PASCAL Visual Object Classes (VOC) Challenge", IJCV;
Lin et al. (2014), "Microsoft COCO: Common Objects in Context", ECCV.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "AP_CONVENTIONS",
    "average_precision",
    "box_iou",
    "match_coco",
    "match_voc",
    "precision_recall",
    "voc_average_precision",
]

#: The AP conventions :func:`average_precision` knows.
AP_CONVENTIONS = ("voc07", "voc10", "coco101")

#: COCO's recall grid: 0, 0.01, ..., 1 (built as pycocotools builds it, so the floats are equal).
COCO_RECALL_GRID = np.linspace(0.0, 1.0, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def _boxes(name: str, boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (n, 4), got {arr.shape}")
    return arr


def box_iou(dets, gts, iscrowd=None, *, fmt: str = "xywh", offset: float = 0.0) -> np.ndarray:
    """Intersection over union of every detection with every ground-truth box (Eq. 1-2).

    Parameters
    ----------
    dets : array_like, shape (N, 4)
    gts : array_like, shape (M, 4)
        Boxes as ``[x, y, w, h]`` (``fmt="xywh"``, COCO) or ``[x1, y1, x2, y2]``
        (``fmt="xyxy"``, VOC), in pixels.
    iscrowd : array_like of bool, shape (M,), optional
        For a crowd region the union is the detection's own area (Eq. 2): a detection lying
        inside a crowd has IoU 1 with it, however large the crowd is.
    offset : float
        Added to every width and height computed from corners: 1 for the VOC devkit, which
        counts pixels inclusively (a box from x1 = 0 to x2 = 9 is 10 pixels wide); 0 otherwise.

    Returns
    -------
    ndarray, shape (N, M), float64
        In [0, 1]; 0 where the boxes do not overlap (touching edges included). The arithmetic
        follows pycocotools' ``bbIou`` operation for operation, so the floats are identical.
    """
    d, g = _boxes("dets", dets), _boxes("gts", gts)
    if fmt == "xywh":
        dx1, dy1, dw, dh = d.T
        gx1, gy1, gw, gh = g.T
        dx2, dy2, gx2, gy2 = dw + dx1, dh + dy1, gw + gx1, gh + gy1
    elif fmt == "xyxy":
        dx1, dy1, dx2, dy2 = d.T
        gx1, gy1, gx2, gy2 = g.T
        dw, dh = dx2 - dx1 + offset, dy2 - dy1 + offset
        gw, gh = gx2 - gx1 + offset, gy2 - gy1 + offset
    else:
        raise ValueError(f"fmt must be 'xywh' or 'xyxy', got {fmt!r}")
    crowd = np.zeros(g.shape[0], bool) if iscrowd is None else np.asarray(iscrowd, bool)
    if crowd.shape != (g.shape[0],):
        raise ValueError(f"iscrowd must have shape ({g.shape[0]},), got {crowd.shape}")
    w = np.minimum(dx2[:, None], gx2[None, :]) - np.maximum(dx1[:, None], gx1[None, :]) + offset
    h = np.minimum(dy2[:, None], gy2[None, :]) - np.maximum(dy1[:, None], gy1[None, :]) + offset
    inter = w * h
    da, ga = (dw * dh)[:, None], (gw * gh)[None, :]
    union = np.where(crowd[None, :], da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def match_coco(ious, iou_threshold: float, gt_ignore=None, gt_crowd=None) -> tuple[
        np.ndarray, np.ndarray]:
    """Greedy COCO matching at one threshold; detections must already be sorted by score.

    Each detection, best score first, takes the still-free ground-truth box with the highest
    IoU of at least ``iou_threshold`` (ties go to the later box). A crowd box is never used up.
    Ignored boxes (crowd, or outside the evaluated area range) come after the others: a
    detection takes an ignored box only if no regular one is good enough.

    Parameters
    ----------
    ious : array_like, shape (D, G)
        From :func:`box_iou`, rows in descending score order.
    iou_threshold : float
    gt_ignore, gt_crowd : array_like of bool, shape (G,), optional

    Returns
    -------
    match : ndarray, shape (D,), int64
        Column of the matched box, -1 when unmatched.
    ignored : ndarray, shape (D,), bool
        True when the match is an ignored box: the detection counts neither as true nor as
        false positive. (Unmatched detections outside the area range are also ignored; that
        rule needs the detection's area and is applied by the caller.)
    """
    iou = np.asarray(ious, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"ious must have shape (D, G), got {iou.shape}")
    n_det, n_gt = iou.shape
    ign = np.zeros(n_gt, bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    crowd = np.zeros(n_gt, bool) if gt_crowd is None else np.asarray(gt_crowd, bool)
    order = np.argsort(ign, kind="stable")  # regular boxes first
    taken = np.zeros(n_gt, bool)
    match = np.full(n_det, -1, np.int64)
    ignored = np.zeros(n_det, bool)
    for d in range(n_det):
        best, m = min(iou_threshold, 1 - 1e-10), -1
        for g in order:
            if taken[g] and not crowd[g]:
                continue
            if m > -1 and not ign[m] and ign[g]:
                break  # a regular box matched: ignored boxes cannot take the detection
            if iou[d, g] < best:
                continue
            best, m = iou[d, g], g
        if m > -1:
            taken[m], match[d], ignored[d] = True, m, ign[m]
    return match, ignored


def match_voc(ious, iou_threshold: float = 0.5, difficult=None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy VOC devkit matching; detections must already be sorted by score.

    Each detection looks at its highest-IoU box among all (used or not; the first on a tie). At
    or above the threshold it
    is a true positive if the box is free, a false positive if it was already taken (a
    duplicate), and ignored if the box is "difficult". Below it is a false positive.

    Returns
    -------
    tp, fp : ndarray, shape (D,), bool
        Difficult matches are neither.
    """
    iou = np.asarray(ious, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"ious must have shape (D, G), got {iou.shape}")
    n_det, n_gt = iou.shape
    diff = np.zeros(n_gt, bool) if difficult is None else np.asarray(difficult, bool)
    taken = np.zeros(n_gt, bool)
    tp = np.zeros(n_det, bool)
    fp = np.zeros(n_det, bool)
    for d in range(n_det):
        if n_gt == 0:
            fp[d] = True
            continue
        g = int(np.argmax(iou[d]))
        if iou[d, g] >= iou_threshold:  # VOCevaldet.m: ovmax >= minoverlap
            if diff[g]:
                continue
            if taken[g]:
                fp[d] = True
            else:
                tp[d] = taken[g] = True
        else:
            fp[d] = True
    return tp, fp


def precision_recall(tp, fp, n_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall down a score-sorted detection list (Eq. 3).

    Parameters
    ----------
    tp, fp : array_like of bool, shape (D,)
        In descending score order; a detection with neither flag (ignored) keeps the curve
        where it was.
    n_positives : int
        Ground-truth objects that count (crowd, difficult and out-of-range ones excluded).

    Returns
    -------
    precision, recall : ndarray, shape (D,), float64
        ``precision = TP / (TP + FP + eps)`` with ``eps = np.spacing(1)`` (pycocotools'
        guard against 0/0) and ``recall = TP / n_positives``.
    """
    if n_positives <= 0:
        raise ValueError(f"n_positives must be positive, got {n_positives}")
    tps = np.cumsum(np.asarray(tp, bool), dtype=np.float64)
    fps = np.cumsum(np.asarray(fp, bool), dtype=np.float64)
    return tps / (fps + tps + np.spacing(1)), tps / n_positives


def _envelope(precision: np.ndarray) -> np.ndarray:
    """``max(precision[i:])`` for every i: the monotone (non-increasing) envelope (Eq. 4)."""
    return np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision


def average_precision(recall, precision, convention: str = "coco101") -> float:
    """Average precision of one precision/recall curve by the named convention.

    Parameters
    ----------
    recall, precision : array_like, shape (D,)
        From :func:`precision_recall` (recall non-decreasing).
    convention : {"voc07", "voc10", "coco101"}
        - ``voc07``: mean over r in {0, 0.1, ..., 1} of the best precision at recall >= r,
          0 where the curve never reaches r (Eq. 5; VOC2007 devkit).
        - ``voc10``: exact area under the envelope, summed over the recall steps, with the curve
          closed at recall 0 and 1 by precision 0 (Eq. 6; VOC2010-2012 devkit).
        - ``coco101``: mean over r in {0, 0.01, ..., 1} of the envelope at the first point with
          recall >= r, 0 beyond the curve's last recall (Eq. 7; pycocotools' ``accumulate``).

    Returns
    -------
    float in [0, 1].
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if rec.shape != prec.shape or rec.ndim != 1:
        raise ValueError(f"recall and precision must be 1-D of one length, got {rec.shape} "
                         f"and {prec.shape}")
    if convention == "voc07":
        total = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = prec[rec >= t]
            total += (above.max() if above.size else 0.0) / 11.0
        return float(total)
    if convention == "voc10":
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = _envelope(np.concatenate([[0.0], prec, [0.0]]))
        steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
        return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))
    if convention == "coco101":
        env = _envelope(prec)
        idx = np.searchsorted(rec, COCO_RECALL_GRID, side="left")
        q = np.where(idx < rec.size, env[np.minimum(idx, rec.size - 1)] if rec.size else 0.0,
                     0.0)
        return float(np.mean(q))
    raise ValueError(f"convention must be one of {AP_CONVENTIONS}, got {convention!r}")


def voc_average_precision(gt_boxes: dict, detections: list, *, iou_threshold: float = 0.5,
                          convention: str = "voc10", difficult: dict | None = None,
                          offset: float = 1.0) -> float:
    """AP of one class on a VOC-style set, as the devkit computes it.

    Parameters
    ----------
    gt_boxes : dict image key -> array_like, shape (G, 4)
        Ground-truth ``[x1, y1, x2, y2]`` boxes of the class, per image.
    detections : list of (image key, score, [x1, y1, x2, y2])
    difficult : dict image key -> array_like of bool, shape (G,), optional
    offset : float
        1 for the devkit's inclusive pixels (see :func:`box_iou`).

    Returns
    -------
    float: AP by ``convention`` ("voc07" or "voc10"); detections are sorted by score with ties
    kept in input order.
    """
    if convention not in ("voc07", "voc10"):
        raise ValueError(f"convention must be 'voc07' or 'voc10', got {convention!r}")
    difficult = difficult or {}
    gts = {k: _boxes(f"gt_boxes[{k!r}]", v) for k, v in gt_boxes.items()}
    diffs = {k: np.asarray(difficult.get(k, np.zeros(len(v), bool)), bool)
             for k, v in gts.items()}
    n_pos = int(sum((~d).sum() for d in diffs.values()))
    if n_pos == 0:
        raise ValueError("no non-difficult ground-truth box: AP is undefined")
    order = np.argsort([-float(s) for _, s, _ in detections], kind="stable")
    taken = {k: np.zeros(len(v), bool) for k, v in gts.items()}
    tp = np.zeros(len(detections), bool)
    fp = np.zeros(len(detections), bool)
    for rank, i in enumerate(order):
        key, _, box = detections[i]
        g = gts.get(key, np.zeros((0, 4)))
        if g.shape[0] == 0:
            fp[rank] = True
            continue
        ov = box_iou([box], g, fmt="xyxy", offset=offset)[0]
        j = int(np.argmax(ov))
        if ov[j] >= iou_threshold:
            if diffs[key][j]:
                continue
            if taken[key][j]:
                fp[rank] = True
            else:
                tp[rank] = taken[key][j] = True
        else:
            fp[rank] = True
    keep = tp | fp  # a difficult match is dropped from the list, as if never reported
    tps = np.cumsum(tp[keep], dtype=np.float64)
    fps = np.cumsum(fp[keep], dtype=np.float64)
    prec = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
    return average_precision(tps / n_pos, prec, convention)
