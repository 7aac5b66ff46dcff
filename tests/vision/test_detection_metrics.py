"""The COCO evaluator against pycocotools (to 1e-12; in practice bit for bit) and the VOC
conventions against hand-checked cases of the devkit's formulas."""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json

import numpy as np
import pytest

from deepnotes.data.coco import synthetic_coco
from deepnotes.vision import coco_evaluate
from deepnotes.vision.coco_eval import STAT_NAMES, evaluate_arrays
from deepnotes.vision.detection_metrics import (
    average_precision,
    box_iou,
    match_coco,
    match_voc,
    precision_recall,
    voc_average_precision,
)

pycocotools = importlib.import_module("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

# Our arithmetic repeats pycocotools' operation for operation; 1e-12 is the issue's bound, and
# the tests also check the full precision/recall arrays for exact equality.
TOL = 1e-12


def _pycocotools(gt: dict, dets: list) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)  # pycocotools writes into the dicts it is given
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _assert_same(gt: dict, dets: list, tmp_path=None) -> dict:
    ref = _pycocotools(gt, dets)
    if tmp_path is not None:  # through files, as a user would pass them
        (tmp_path / "gt.json").write_text(json.dumps(gt))
        (tmp_path / "dt.json").write_text(json.dumps(dets))
        ours = coco_evaluate(tmp_path / "gt.json", str(tmp_path / "dt.json"))
    else:
        ours = coco_evaluate(gt, dets)
    assert list(ours)[:12] == list(STAT_NAMES)
    got = np.array([ours[k] for k in STAT_NAMES])
    np.testing.assert_allclose(got, ref.stats, rtol=0, atol=TOL)
    from deepnotes.data.coco import load_coco_detections, load_coco_gt

    g = load_coco_gt(gt)
    full = evaluate_arrays(g, load_coco_detections(dets, g))
    np.testing.assert_array_equal(full.precision, ref.eval["precision"])
    np.testing.assert_array_equal(full.recall, ref.eval["recall"])
    prec = ref.eval["precision"][:, :, :, 0, -1]
    for k, cid in enumerate(ref.params.catIds):
        s = prec[:, :, k]
        want = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
        assert ours["per_class_AP"][cid] == pytest.approx(want, abs=TOL)
    return ours


@pytest.mark.parametrize("seed", range(4))
def test_random_sets_equal_pycocotools(seed):
    rng = np.random.default_rng(seed)
    gt, dets = synthetic_coco(rng, n_images=25, n_categories=6, gt_per_image=5,
                              dets_per_image=40, p_crowd=0.15, loc_noise=0.15)
    _assert_same(gt, dets)


def test_ties_everywhere_equal_pycocotools():
    """Whole-pixel boxes and one-decimal scores: IoU ties between boxes, score ties within and
    across images (the order of ties decides which detection takes a box)."""
    rng = np.random.default_rng(10)
    gt, dets = synthetic_coco(rng, n_images=20, n_categories=3, gt_per_image=6,
                              dets_per_image=30, decimals=0, score_decimals=1, p_crowd=0.1,
                              p_duplicate=0.5, loc_noise=0.05, image_size=(60, 50))
    _assert_same(gt, dets)


def test_more_than_100_detections_per_image_and_class(tmp_path):
    """Groups are cut to the 100 best; maxDets 1 and 10 cut further. Read from files."""
    rng = np.random.default_rng(11)
    gt, dets = synthetic_coco(rng, n_images=6, n_categories=2, gt_per_image=12,
                              dets_per_image=260, score_decimals=2)
    counts = np.unique([(d["image_id"], d["category_id"]) for d in dets], axis=0,
                       return_counts=True)[1]
    assert counts.max() > 100
    _assert_same(gt, dets, tmp_path)


def test_missing_images_and_categories_equal_pycocotools():
    """Images without ground truth or without detections; a category with no ground truth (but
    detections), one with ground truth but no detections, one with neither."""
    rng = np.random.default_rng(12)
    gt, dets = synthetic_coco(rng, n_images=30, n_categories=5, gt_per_image=2,
                              dets_per_image=15)
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] != 2]
    dets = [d for d in dets if d["category_id"] != 3 and d["image_id"] % 4 != 0]
    gt["images"].append({"id": 1000})
    gt["categories"].append({"id": 77, "name": "never seen"})
    assert any(a["image_id"] % 4 == 0 for a in gt["annotations"])
    _assert_same(gt, dets)


def _ann(i, img, box, area=None, crowd=0, cat=1):
    return {"id": i, "image_id": img, "category_id": cat, "bbox": box,
            "area": box[2] * box[3] if area is None else area, "iscrowd": crowd}


def _det(img, box, score, cat=1):
    return {"image_id": img, "category_id": cat, "bbox": box, "score": score}


def test_adversarial_hand_built_equal_pycocotools():
    """IoU exactly 0.5 and 0.75 (the >= rule), crowd regions that absorb many detections,
    zero-size and touching boxes, areas on the 32² and 96² boundaries (inclusive ranges), a
    detection whose best box is ignored while a regular one also qualifies, ground-truth area
    differing from w*h, and equal scores across images."""
    anns = [
        _ann(1, 1, [0, 0, 20, 10]),                 # det [0,0,10,10]: IoU exactly 0.5
        _ann(2, 1, [100, 0, 40, 10]),               # det [100,0,30,10]: IoU exactly 0.75
        _ann(3, 1, [0, 100, 200, 200], crowd=1),    # a crowd region
        _ann(4, 2, [0, 0, 32, 32], area=1024.0),    # area exactly 32²
        _ann(5, 2, [50, 50, 96, 96], area=9216.0),  # area exactly 96²
        _ann(6, 2, [300, 300, 10, 10], area=5000.0),  # small box, medium area field
        _ann(7, 3, [0, 0, 10, 10]),
        _ann(8, 3, [0, 0, 10, 10]),                 # identical boxes: the IoU tie
        _ann(9, 3, [10, 0, 10, 10]),                # touches box 7: IoU 0
        _ann(10, 4, [5, 5, 0, 7]),                  # zero width
        _ann(11, 5, [0, 0, 50, 50], area=20000.0),  # large by area, medium by box
        _ann(12, 5, [0, 0, 50, 49], crowd=1),
    ]
    dets = [
        _det(1, [0, 0, 10, 10], 0.9),
        _det(1, [100, 0, 30, 10], 0.9),
        *[_det(1, [10 * i, 110, 15, 15], 0.5) for i in range(8)],   # inside the crowd
        _det(1, [0, 100, 200, 200], 0.95),
        _det(2, [0, 0, 32, 32], 0.8),
        _det(2, [50, 50, 96, 96], 0.8),
        _det(2, [300, 300, 10, 10], 0.8),
        _det(2, [0.5, 0.5, 32, 32], 0.7),
        _det(3, [0, 0, 10, 10], 0.6),
        _det(3, [0, 0, 10, 10], 0.6),
        _det(3, [0, 0, 10, 10], 0.6),
        _det(3, [10, 0, 10, 10], 0.9),
        _det(4, [5, 5, 0, 7], 0.3),
        _det(4, [5, 5, 3, 7], 0.3),
        _det(5, [0, 0, 50, 49], 0.99),
        _det(5, [0, 0, 50, 50], 0.2),
        _det(5, [1, 1, 48, 48], 0.2, cat=2),
    ]
    gt = {"images": [{"id": i} for i in range(1, 7)],
          "categories": [{"id": 1}, {"id": 2}], "annotations": anns}
    _assert_same(gt, dets)


def test_empty_detections_score_zero():
    """pycocotools cannot load an empty result list; ours scores it 0 (categories with ground
    truth) as faster-coco-eval does."""
    gt, _ = synthetic_coco(np.random.default_rng(3), n_images=5, n_categories=2)
    out = coco_evaluate(gt, [])
    assert all(out[k] == 0.0 for k in STAT_NAMES if k not in ("APs", "APm", "APl", "ARs",
                                                                   "ARm", "ARl"))
    assert all(out[k] in (0.0, -1.0) for k in STAT_NAMES)


def test_agrees_with_faster_coco_eval():
    fce = importlib.import_module("faster_coco_eval")
    gt, dets = synthetic_coco(np.random.default_rng(5), n_images=20, n_categories=4,
                              p_crowd=0.1)
    with contextlib.redirect_stdout(io.StringIO()):
        cg = fce.COCO(copy.deepcopy(gt))
        ev = fce.COCOeval_faster(cg, cg.loadRes(copy.deepcopy(dets)), "bbox",
                                 print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = coco_evaluate(gt, dets)
    np.testing.assert_allclose([ours[k] for k in STAT_NAMES], ev.stats[:12], rtol=0, atol=TOL)


# --------------------------------------------------------------------------- readable pieces


def test_box_iou_equals_pycocotools_mask_iou():
    rng = np.random.default_rng(0)
    d = np.round(rng.uniform(0, 50, (40, 4)), 1)
    g = np.round(rng.uniform(0, 50, (30, 4)), 1)
    g[::7, 2] = 0.0
    crowd = rng.uniform(size=30) < 0.3
    ours = box_iou(d, g, crowd)
    ref = mask_utils.iou(d.tolist(), g.tolist(), crowd.astype(np.uint8).tolist())
    np.testing.assert_array_equal(ours, ref)


def test_box_iou_by_hand_and_errors():
    assert box_iou([[0, 0, 10, 10]], [[0, 0, 20, 10]])[0, 0] == 0.5
    assert box_iou([[0, 0, 10, 10]], [[0, 0, 20, 10]], [True])[0, 0] == 1.0  # inside a crowd
    assert box_iou([[0, 0, 10, 10]], [[10, 0, 10, 10]])[0, 0] == 0.0  # touching
    # VOC inclusive pixels: [0, 9] is 10 pixels wide
    assert box_iou([[0, 0, 9, 4]], [[0, 0, 9, 9]], fmt="xyxy", offset=1.0)[0, 0] == 0.5
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    with pytest.raises(ValueError, match="dets"):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="fmt"):
        box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]], fmt="cxcywh")
    with pytest.raises(ValueError, match="iscrowd"):
        box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]], [True, False])


def test_match_coco_equals_pycocotools_per_image():
    """The readable matcher gives pycocotools' dtMatches/dtIgnore for every image, category,
    area range and threshold of a random set with crowds and ties."""
    rng = np.random.default_rng(21)
    gt, dets = synthetic_coco(rng, n_images=12, n_categories=3, gt_per_image=6,
                              dets_per_image=20, decimals=0, score_decimals=1, p_crowd=0.2,
                              image_size=(80, 60))
    ref = _pycocotools(gt, dets)
    checked = 0
    for e in ref.evalImgs:
        if e is None or not e["dtIds"]:
            continue
        lo, hi = e["aRng"]
        gt_anns = [ref.cocoGt.anns[i] for i in ref.cocoGt.getAnnIds(
            imgIds=[e["image_id"]], catIds=[e["category_id"]])]
        dt_anns = [ref.cocoDt.anns[i] for i in e["dtIds"]]  # already score-sorted
        ious = box_iou([d["bbox"] for d in dt_anns], np.array([g["bbox"] for g in gt_anns]
                                                             ).reshape(-1, 4),
                       [g["iscrowd"] for g in gt_anns])
        ignore = np.array([g["iscrowd"] or not lo <= g["area"] <= hi for g in gt_anns], bool)
        crowd = np.array([g["iscrowd"] for g in gt_anns], bool)
        for t, thr in enumerate(ref.params.iouThrs):
            match, ignored = match_coco(ious, thr, ignore, crowd)
            ids = np.array([gt_anns[m]["id"] if m >= 0 else 0 for m in match])
            np.testing.assert_array_equal(ids, e["dtMatches"][t])
            out = np.array([m < 0 and not lo <= d["area"] <= hi
                            for m, d in zip(match, dt_anns, strict=True)])
            np.testing.assert_array_equal(ignored | out, e["dtIgnore"][t].astype(bool))
            checked += 1
    assert checked > 50


# --------------------------------------------------------------------------- VOC conventions


def test_ap_conventions_hand_checked():
    """Four positives; detections TP, FP, TP, TP, FP, FP (worked out in the post's table).

    precision 1, 1/2, 2/3, 3/4, 3/5, 1/2 at recall 1/4, 1/4, 1/2, 3/4, 3/4, 3/4; envelope
    1, 3/4, 3/4, 3/4, 3/5, 1/2.
    - all-point (VOC2010+): 1/4 * 1 + 1/4 * 3/4 + 1/4 * 3/4 = 0.625;
    - 11-point (VOC2007): r = 0, .1, .2 -> 1; r = .3 ... .7 -> 3/4; r = .8, .9, 1 -> 0:
      (3 + 5 * 0.75) / 11;
    - 101-point (COCO): r = 0 ... .25 (26 points) -> 1; r = .26 ... .75 (50 points) -> 3/4;
      beyond -> 0: (26 + 37.5) / 101.
    """
    tp = np.array([1, 0, 1, 1, 0, 0], bool)
    prec, rec = precision_recall(tp, ~tp, 4)
    assert average_precision(rec, prec, "voc10") == pytest.approx(0.625, abs=1e-15)
    assert average_precision(rec, prec, "voc07") == pytest.approx(6.75 / 11, abs=1e-15)
    assert average_precision(rec, prec, "coco101") == pytest.approx(63.5 / 101, abs=1e-15)
    with pytest.raises(ValueError, match="convention"):
        average_precision(rec, prec, "voc12")


def test_ap_conventions_extremes():
    one = np.array([1.0])
    assert average_precision(one, one, "voc10") == 1.0
    assert average_precision(one, one, "voc07") == pytest.approx(1.0)
    assert average_precision(one, one, "coco101") == pytest.approx(1.0)
    empty = np.zeros(0)
    for conv in ("voc07", "voc10", "coco101"):
        assert average_precision(empty, empty, conv) == 0.0
    # recall stops at 1/2 with precision 1: all-point gives exactly 1/2, 11-point 6/11 (the
    # grid's r = 0.5 is reached), 101-point 51/101
    half = np.array([0.5])
    assert average_precision(half, one, "voc10") == 0.5
    assert average_precision(half, one, "voc07") == pytest.approx(6 / 11)
    assert average_precision(half, one, "coco101") == pytest.approx(51 / 101)


def test_voc_devkit_matching_hand_checked():
    """Inclusive pixels (+1), the >= threshold, difficult boxes ignored, duplicates false.

    Image a: box A [0,0,9,9] (100 px), box B [20,20,29,29] difficult.
    Image b: box C [0,0,19,19] (400 px).
    Detections by score: a [0,0,9,4] IoU 50/100 = 0.5 -> TP (not with 0 offset: 36/81);
    a [0,0,9,9] same box again -> FP (duplicate); a [20,20,29,29] on the difficult box ->
    ignored; b [0,0,9,19] IoU 200/400 = 0.5 -> TP; b [50,50,60,60] -> FP.
    Positives 2 (B is difficult). Kept list TP, FP, TP, FP: precision 1, 1/2, 2/3, 1/2 at
    recall 1/2, 1/2, 1, 1. all-point: 1/2 * 1 + 1/2 * 2/3 = 5/6; 11-point: r <= .5 -> 1 (6
    points), r = .6 ... 1 -> 2/3 (5 points): (6 + 10/3) / 11.
    """
    gt = {"a": [[0, 0, 9, 9], [20, 20, 29, 29]], "b": [[0, 0, 19, 19]]}
    difficult = {"a": [False, True]}
    dets = [("a", 0.9, [0, 0, 9, 4]), ("a", 0.8, [0, 0, 9, 9]), ("a", 0.7, [20, 20, 29, 29]),
            ("b", 0.6, [0, 0, 9, 19]), ("b", 0.5, [50, 50, 60, 60])]
    assert voc_average_precision(gt, dets, difficult=difficult) == pytest.approx(5 / 6)
    assert voc_average_precision(gt, dets, difficult=difficult, convention="voc07") == \
        pytest.approx((6 + 10 / 3) / 11)
    # without the +1 convention the first detection misses (IoU 36/81 < 0.5)
    ap0 = voc_average_precision(gt, dets, difficult=difficult, offset=0.0)
    assert ap0 < 5 / 6
    tp, fp = match_voc(box_iou([[0, 0, 9, 4], [0, 0, 9, 9]], [[0, 0, 9, 9]], fmt="xyxy",
                               offset=1.0), 0.5)
    assert tp.tolist() == [True, False] and fp.tolist() == [False, True]
    with pytest.raises(ValueError, match="difficult"):
        voc_average_precision({"a": [[0, 0, 1, 1]]}, [], difficult={"a": [True]})


def test_degenerate_sets_equal_pycocotools():
    """One perfect box (AP is 1/(1+eps), not 1: pycocotools' guard), detections without any
    ground truth (every statistic -1), and nothing at all."""
    box = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    one = {"images": [{"id": 1}], "categories": [{"id": 1}],
           "annotations": [_ann(1, 1, [0, 0, 1, 1])]}
    out = _assert_same(one, [box])
    assert out["AP"] == 1.0 / (1.0 + np.spacing(1)) and out["APm"] == -1.0
    _assert_same({**one, "annotations": []}, [box])
    empty = coco_evaluate({"images": [], "annotations": [], "categories": []}, [])
    assert all(empty[k] == -1.0 for k in STAT_NAMES) and empty["per_class_AP"] == {}
