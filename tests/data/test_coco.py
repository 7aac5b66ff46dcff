"""The COCO loader: columns in file order, and a clear error naming each malformed record."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from deepnotes.data.coco import load_coco_detections, load_coco_gt, synthetic_coco
from deepnotes.vision import coco_evaluate


def _gt():
    return {
        "images": [{"id": 3}, {"id": 1}],
        "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4], "area": 9.5,
             "iscrowd": 0},
            {"id": 11, "image_id": 3, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 80,
             "iscrowd": 1},
            {"id": 12, "image_id": 3, "category_id": 5, "bbox": [5, 5, 0, 2], "area": 0},
        ],
    }


def _dets():
    return [{"image_id": 3, "category_id": 2, "bbox": [0, 0, 9, 9], "score": 0.5},
            {"image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4], "score": 1}]


def test_columns_sorted_ids_and_file_order(tmp_path):
    gt = load_coco_gt(_gt())
    assert gt.image_ids.tolist() == [1, 3] and gt.category_ids.tolist() == [2, 5]
    assert gt.category_names == ("dog", "cat")
    assert gt.ann_ids.tolist() == [10, 11, 12]
    assert gt.image_index.tolist() == [0, 1, 1] and gt.category_index.tolist() == [1, 0, 1]
    assert gt.iscrowd.tolist() == [False, True, False]  # missing iscrowd reads as 0
    np.testing.assert_array_equal(gt.boxes[0], [1, 2, 3, 4])
    assert gt.areas.tolist() == [9.5, 80.0, 0.0]
    assert (gt.n_images, gt.n_categories, len(gt)) == (2, 2, 3)
    dets = load_coco_detections(_dets(), gt)
    assert dets.image_index.tolist() == [1, 0] and dets.category_index.tolist() == [0, 1]
    assert dets.scores.tolist() == [0.5, 1.0] and len(dets) == 2
    # from files
    (tmp_path / "gt.json").write_text(json.dumps(_gt()))
    (tmp_path / "dt.json").write_text(json.dumps(_dets()))
    gt2 = load_coco_gt(tmp_path / "gt.json")
    np.testing.assert_array_equal(gt2.boxes, gt.boxes)
    np.testing.assert_array_equal(load_coco_detections(str(tmp_path / "dt.json"), gt2).boxes,
                                  dets.boxes)


def test_inputs_are_not_modified():
    gt, dets = _gt(), _dets()
    before = (copy.deepcopy(gt), copy.deepcopy(dets))
    coco_evaluate(gt, dets)
    assert (gt, dets) == before


def _set(obj, path, value):
    *head, last = path
    for key in head:
        obj = obj[key]
    if value is KeyError:
        del obj[last]
    else:
        obj[last] = value


GT_CASES = [
    (("images",), KeyError, "no 'images'"),
    (("annotations",), "x", "'annotations' must be a list"),
    (("images", 1, "id"), KeyError, r"images\[1\] has no 'id'"),
    (("images", 1, "id"), 3, r"images\[1\]: duplicate id 3"),
    (("categories", 0, "id"), "5", r"categories\[0\].*must be an integer"),
    (("annotations", 2, "bbox"), KeyError, r"annotations\[2\] \(id 12\) has no 'bbox'"),
    (("annotations", 1, "area"), KeyError, r"annotations\[1\] \(id 11\) has no 'area'"),
    (("annotations", 0, "bbox"), [1, 2, -3, 4], r"annotations\[0\] \(id 10\).*negative width"),
    (("annotations", 0, "bbox"), [1, 2, 3], r"annotations\[0\].*\[x, y, w, h\]"),
    (("annotations", 0, "bbox"), [1, 2, 3, float("nan")], r"annotations\[0\].*finite"),
    (("annotations", 0, "bbox"), [1, 2, "3", 4], r"annotations\[0\].*numbers"),
    (("annotations", 1, "area"), -1.0, r"annotations\[1\] \(id 11\).*'area' is negative"),
    (("annotations", 1, "iscrowd"), 2, r"annotations\[1\].*'iscrowd' must be 0 or 1"),
    (("annotations", 1, "id"), 10, r"annotations\[1\]: duplicate id 10"),
    (("annotations", 0, "id"), 0, r"annotations\[0\]: id 0 is not allowed"),
    (("annotations", 0, "id"), 1.5, r"annotations\[0\].*'id' must be an integer"),
    (("annotations", 2, "image_id"), 7, r"annotations\[2\] \(id 12\): image_id 7 is not"),
    (("annotations", 2, "category_id"), 9, r"annotations\[2\].*category_id 9 is not"),
]


@pytest.mark.parametrize(("path", "value", "message"), GT_CASES)
def test_malformed_ground_truth_names_the_record(path, value, message):
    gt = _gt()
    _set(gt, path, value)
    with pytest.raises(ValueError, match=message):
        load_coco_gt(gt)


DET_CASES = [
    ((1, "score"), KeyError, r"detections\[1\] has no 'score'"),
    ((0, "bbox"), KeyError, r"detections\[0\] has no 'bbox'"),
    ((0, "image_id"), 42, r"detections\[0\]: image_id 42 is not in the ground truth's images"),
    ((1, "category_id"), 99, r"detections\[1\]: category_id 99 is not in the ground truth"),
    ((1, "bbox"), [0, 0, 1, -0.5], r"detections\[1\].*negative width or height"),
    ((0, "score"), float("inf"), r"detections\[0\].*'score' must be finite"),
    ((0, "score"), None, r"detections\[0\].*'score' must be a number"),
    ((1, "image_id"), True, r"detections\[1\].*'image_id' must be an integer"),
]


@pytest.mark.parametrize(("path", "value", "message"), DET_CASES)
def test_malformed_detections_name_the_record(path, value, message):
    gt = load_coco_gt(_gt())
    dets = _dets()
    _set(dets, path, value)
    with pytest.raises(ValueError, match=message):
        load_coco_detections(dets, gt)
    with pytest.raises(ValueError, match=message):  # and through the public entry point
        coco_evaluate(_gt(), dets)


def test_wrong_containers_and_bad_json(tmp_path):
    with pytest.raises(TypeError, match="ground truth"):
        load_coco_gt([1, 2])
    gt = load_coco_gt(_gt())
    with pytest.raises(TypeError, match="detections"):
        load_coco_detections({"image_id": 1}, gt)
    with pytest.raises(ValueError, match=r"detections\[0\] must be a JSON object"):
        load_coco_detections([[1, 2]], gt)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_coco_gt(bad)
    assert len(load_coco_detections([], gt)) == 0


def test_synthetic_coco_is_seeded_and_coco_like():
    gt1, dt1 = synthetic_coco(np.random.default_rng(7), n_images=200, n_categories=8)
    gt2, dt2 = synthetic_coco(np.random.default_rng(7), n_images=200, n_categories=8)
    assert gt1 == gt2 and dt1 == dt2
    g = load_coco_gt(gt1)  # valid by our own rules
    d = load_coco_detections(dt1, g)
    assert len(d) == 200 * 100  # dets_per_image, padded with false positives
    assert abs(len(g) / 200 - 7.0) < 0.5  # Poisson(7) objects per image
    side = np.sqrt(g.boxes[:, 2] * g.boxes[:, 3])
    small, large = np.mean(side < 32), np.mean(side > 96)
    assert 0.3 < small < 0.5 and 0.15 < large < 0.33  # COCO: 41 % small, 24 % large
    assert np.all(g.areas <= g.boxes[:, 2] * g.boxes[:, 3])
    with pytest.raises(ValueError, match="n_categories"):
        synthetic_coco(np.random.default_rng(0), 1, 0)


def test_detector_quality_moves_ap():
    """The generator's knobs do what they say: a sharper detector scores higher."""
    rng = np.random.default_rng
    good = coco_evaluate(*synthetic_coco(rng(1), 60, 4, loc_noise=0.02, score_gap=4.0))
    bad = coco_evaluate(*synthetic_coco(rng(1), 60, 4, loc_noise=0.25, score_gap=0.5))
    assert good["AP"] > bad["AP"] + 0.2 and good["AP75"] > bad["AP75"]
