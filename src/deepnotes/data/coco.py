"""COCO detection files: a validating loader for ground truth and results, and a generator.

The COCO object-detection format (Lin et al. 2014, "Microsoft COCO: Common Objects in Context")
is a JSON object with ``images``, ``annotations`` and ``categories``; a detector's results are a
JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``. The loaders turn
either into flat NumPy columns (one row per record, in file order), which is what the evaluator in
:mod:`deepnotes.vision.coco_eval` works on, and reject malformed input with a ``ValueError`` that
names the record (``annotations[17] (id 4242)``) and what is wrong with it.

What counts as malformed (pycocotools would crash later, silently drop the record, or count it
wrongly):

- a missing top-level key or field, a field of the wrong type, a ``bbox`` that is not four
  finite numbers, a negative width, height or area, a non-finite score;
- duplicate image, category or annotation ids; annotation id 0 (pycocotools stores matches as
  ids with 0 meaning "unmatched", so a ground-truth box with id 0 can never count as matched);
- an annotation or a detection whose ``image_id`` or ``category_id`` is not in the ground truth.

``iscrowd`` may be omitted (read as 0); a ground-truth ``ignore`` field is not read, as in
pycocotools, which overwrites it with ``iscrowd``. :func:`synthetic_coco` generates COCO-like
ground truth and detections of a known quality from a seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path

import numpy as np

__all__ = [
    "CocoDetections",
    "CocoGroundTruth",
    "load_coco_detections",
    "load_coco_gt",
    "synthetic_coco",
]


@dataclass(frozen=True)
class CocoGroundTruth:
    """Ground truth of a COCO detection set as columns (annotations in file order).

    Attributes
    ----------
    image_ids : ndarray, shape (I,), int64
        Image ids, sorted ascending (the order pycocotools evaluates images in).
    category_ids : ndarray, shape (K,), int64
        Category ids, sorted ascending.
    category_names : tuple of str, length K
        Names of the categories in the order of ``category_ids`` ("" when absent).
    ann_ids : ndarray, shape (G,), int64
        Annotation ids (unique, non-zero).
    image_index, category_index : ndarray, shape (G,), int64
        Position of each annotation's image in ``image_ids`` and category in ``category_ids``.
    boxes : ndarray, shape (G, 4), float64
        ``[x, y, w, h]`` in pixels.
    areas : ndarray, shape (G,), float64
        The ``area`` field (the segment's area in COCO, not ``w * h``), in pixels²; it decides
        the small/medium/large range of a ground-truth object.
    iscrowd : ndarray, shape (G,), bool
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    ann_ids: np.ndarray
    image_index: np.ndarray
    category_index: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    iscrowd: np.ndarray

    @property
    def n_images(self) -> int:
        return int(self.image_ids.size)

    @property
    def n_categories(self) -> int:
        return int(self.category_ids.size)

    def __len__(self) -> int:
        return int(self.ann_ids.size)


@dataclass(frozen=True)
class CocoDetections:
    """Detections (a COCO results list) as columns, indexed against one :class:`CocoGroundTruth`.

    Attributes
    ----------
    image_index, category_index : ndarray, shape (N,), int64
        Positions in the ground truth's ``image_ids`` / ``category_ids``.
    boxes : ndarray, shape (N, 4), float64
        ``[x, y, w, h]`` in pixels.
    scores : ndarray, shape (N,), float64
        Confidences; only their order matters.
    """

    image_index: np.ndarray
    category_index: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.size)


def _describe(what: str, records: list, i: int) -> str:
    rec = records[i]
    rid = rec.get("id") if isinstance(rec, dict) else None
    return f"{what}[{i}]" + (f" (id {rid!r})" if rid is not None else "")


def _column(records: list, key: str, what: str) -> list:
    """``[r[key] for r in records]``, with an error naming the first record that lacks it."""
    try:
        return list(map(itemgetter(key), records))
    except (KeyError, TypeError, IndexError):
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f"{what}[{i}] must be a JSON object (dict), got "
                                 f"{type(rec).__name__}") from None
            if key not in rec:
                raise ValueError(f"{_describe(what, records, i)} has no '{key}' field") from None
        raise


def _int_column(values: list, records: list, key: str, what: str) -> np.ndarray:
    types = set(map(type, values))
    if not all(issubclass(t, (int, np.integer)) and not issubclass(t, (bool, np.bool_))
               for t in types):
        for i, v in enumerate(values):
            if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{_describe(what, records, i)}: '{key}' must be an integer, "
                                 f"got {v!r}")
    return np.array(values, dtype=np.int64) if values else np.zeros(0, np.int64)


def _numbers_ok(values: list) -> bool:
    """Whether every value is an int or float (bools and numeric strings are not numbers)."""
    return all(t in (float, int) or (issubclass(t, (np.floating, np.integer))
                                     and not issubclass(t, np.bool_))
               for t in set(map(type, values)))


def _is_number(v) -> bool:
    return _numbers_ok([v])


def _float_column(values: list, records: list, key: str, what: str) -> np.ndarray:
    if not _numbers_ok(values):
        i = next(i for i, v in enumerate(values) if not _is_number(v))
        raise ValueError(f"{_describe(what, records, i)}: '{key}' must be a number, "
                         f"got {values[i]!r}")
    arr = np.array(values, dtype=np.float64) if values else np.zeros(0)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{_describe(what, records, i)}: '{key}' must be finite, "
                         f"got {values[i]!r}")
    return arr


def _box_column(records: list, what: str) -> np.ndarray:
    boxes = _column(records, "bbox", what)
    n = len(boxes)
    try:
        lengths = np.fromiter(map(len, boxes), dtype=np.int64, count=n)
    except TypeError:
        lengths = np.array([len(b) if isinstance(b, (list, tuple)) else -1 for b in boxes])
    if (lengths != 4).any():
        i = int(np.argmax(lengths != 4))
        raise ValueError(f"{_describe(what, records, i)}: 'bbox' must be [x, y, w, h], "
                         f"got {boxes[i]!r}")
    # NumPy's type inference doubles as the check: strings or None make a non-numeric array.
    flat = np.array(list(chain.from_iterable(boxes))) if n else np.zeros(0)
    if flat.dtype.kind not in "fiu":
        i = next((i for i, b in enumerate(boxes) if not all(map(_is_number, b))), 0)
        raise ValueError(f"{_describe(what, records, i)}: 'bbox' must hold numbers, "
                         f"got {boxes[i]!r}")
    flat = flat.astype(np.float64, copy=False)
    arr = flat.reshape(n, 4)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{_describe(what, records, i)}: 'bbox' must be finite, got {boxes[i]!r}")
    neg = (arr[:, 2] < 0) | (arr[:, 3] < 0)
    if neg.any():
        i = int(np.argmax(neg))
        raise ValueError(f"{_describe(what, records, i)}: 'bbox' has a negative width or height: "
                         f"{boxes[i]!r}")
    return arr


def _unique_ids(records: list, what: str) -> np.ndarray:
    ids = _int_column(_column(records, "id", what), records, "id", what)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        i = int(order[dup[0] + 1])
        raise ValueError(f"{what}[{i}]: duplicate id {int(ids[i])}")
    return ids


def _index_of(values: np.ndarray, table: np.ndarray, records: list, key: str, what: str,
              table_name: str) -> np.ndarray:
    """Positions of ``values`` in the sorted ``table``; an unknown value names its record."""
    pos = np.searchsorted(table, values)
    found = pos < table.size
    found[found] = table[pos[found]] == values[found]
    if not found.all():
        i = int(np.argmax(~found))
        raise ValueError(f"{_describe(what, records, i)}: {key} {int(values[i])} is not in the "
                         f"ground truth's {table_name}")
    return pos.astype(np.int64)


def _read_json(source, what: str):
    if isinstance(source, (str, Path)):
        try:
            with open(source, encoding="utf-8") as fh:
                return json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} file {source} is not valid JSON: {err}") from None
    return source


def load_coco_gt(source) -> CocoGroundTruth:
    """Read and validate COCO ground truth.

    Parameters
    ----------
    source : dict, str or Path
        The parsed COCO dict or the path of its JSON file. Needs ``images`` (each with ``id``),
        ``categories`` (``id``; ``name`` optional) and ``annotations`` (``id``, ``image_id``,
        ``category_id``, ``bbox``, ``area``; ``iscrowd`` optional, 0 when absent).

    Returns
    -------
    CocoGroundTruth

    Raises
    ------
    ValueError
        Naming the first malformed record (see the module docstring for the rules).
    TypeError
        If ``source`` is neither a dict nor a path.
    """
    if isinstance(source, CocoGroundTruth):
        return source
    data = _read_json(source, "ground truth")
    if not isinstance(data, dict):
        raise TypeError(f"ground truth must be a COCO dict or a path to its JSON, got "
                        f"{type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"ground truth has no '{key}' list")
        if not isinstance(data[key], list):
            raise ValueError(f"ground truth '{key}' must be a list, got {type(data[key]).__name__}")
    images, anns, cats = data["images"], data["annotations"], data["categories"]
    image_ids = np.sort(_unique_ids(images, "images"))
    cat_raw = _unique_ids(cats, "categories")
    cat_order = np.argsort(cat_raw, kind="stable")
    category_ids = cat_raw[cat_order]
    names = tuple(str(cats[i].get("name", "")) for i in cat_order)

    ann_ids = _unique_ids(anns, "annotations")
    zero = ann_ids == 0
    if zero.any():
        i = int(np.argmax(zero))
        raise ValueError(f"annotations[{i}]: id 0 is not allowed (pycocotools reads a match "
                         "with id 0 as no match); number annotations from 1")
    img = _int_column(_column(anns, "image_id", "annotations"), anns, "image_id", "annotations")
    cat = _int_column(_column(anns, "category_id", "annotations"), anns, "category_id",
                      "annotations")
    boxes = _box_column(anns, "annotations")
    areas = _float_column(_column(anns, "area", "annotations"), anns, "area", "annotations")
    if (areas < 0).any():
        i = int(np.argmax(areas < 0))
        raise ValueError(f"{_describe('annotations', anns, i)}: 'area' is negative ({areas[i]})")
    crowd_raw = [a.get("iscrowd", 0) for a in anns]
    crowd_ok = {0, 1}  # False and True are equal to these
    if not set(crowd_raw) <= crowd_ok:
        i = next(i for i, c in enumerate(crowd_raw) if c not in crowd_ok)
        raise ValueError(f"{_describe('annotations', anns, i)}: 'iscrowd' must be 0 or 1, got "
                         f"{crowd_raw[i]!r}")
    return CocoGroundTruth(
        image_ids=image_ids,
        category_ids=category_ids,
        category_names=names,
        ann_ids=ann_ids,
        image_index=_index_of(img, image_ids, anns, "image_id", "annotations", "images"),
        category_index=_index_of(cat, category_ids, anns, "category_id", "annotations",
                                 "categories"),
        boxes=boxes,
        areas=areas,
        iscrowd=np.array(crowd_raw, dtype=bool) if crowd_raw else np.zeros(0, bool),
    )


def load_coco_detections(source, gt: CocoGroundTruth) -> CocoDetections:
    """Read and validate a COCO results list against its ground truth.

    Parameters
    ----------
    source : list of dict, str or Path
        Detections ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (other
        fields are ignored) or the path of such a JSON list. An empty list is allowed.
    gt : CocoGroundTruth
        The ground truth the ids refer to.

    Raises
    ------
    ValueError
        Naming the first malformed detection, including one whose ``image_id`` or
        ``category_id`` is not in ``gt``.
    """
    if isinstance(source, CocoDetections):
        return source
    dets = _read_json(source, "detections")
    if not isinstance(dets, list):
        raise TypeError(f"detections must be a list of dicts or a path to a JSON list, got "
                        f"{type(dets).__name__}")
    what = "detections"
    img = _int_column(_column(dets, "image_id", what), dets, "image_id", what)
    cat = _int_column(_column(dets, "category_id", what), dets, "category_id", what)
    boxes = _box_column(dets, what)
    scores = _float_column(_column(dets, "score", what), dets, "score", what)
    return CocoDetections(
        image_index=_index_of(img, gt.image_ids, dets, "image_id", what, "images"),
        category_index=_index_of(cat, gt.category_ids, dets, "category_id", what, "categories"),
        boxes=boxes,
        scores=scores,
    )


# --------------------------------------------------------------------------- generator

# Log of the square root of a box's area ~ N(mu, sigma): with these values about 41 % of the
# boxes are small (< 32²), 35 % medium and 24 % large (> 96²), COCO's proportions.
_LOG_SIDE_MU, _LOG_SIDE_SIGMA = 3.736, 1.167


def synthetic_coco(rng: np.random.Generator, n_images: int = 100, n_categories: int = 10, *,
                   gt_per_image: float = 7.0, dets_per_image: int = 100,
                   p_detect: float = 0.8, loc_noise: float = 0.1, p_duplicate: float = 0.1,
                   p_confuse: float = 0.05, score_gap: float = 2.0, p_crowd: float = 0.01,
                   image_size: tuple[int, int] = (640, 480), decimals: int | None = 2,
                   score_decimals: int | None = 3) -> tuple[dict, list[dict]]:
    """COCO-like ground truth and detections of a known quality.

    Each image gets Poisson(``gt_per_image``) objects with Zipf-distributed categories and
    log-normal sizes (COCO's small/medium/large mix); an object's ``area`` is 45-85 % of its box,
    as a segment fills part of its box. The simulated detector finds each object with
    probability ``p_detect``, shifts the box by ``loc_noise`` times its size (centre and log
    side lengths, Gaussian), adds a lower-scored duplicate with probability ``p_duplicate`` and
    uses a wrong category with probability ``p_confuse``; the remaining detections, up to
    ``dets_per_image``, are random boxes of random categories. Scores are the logistic of a
    Gaussian, ``score_gap`` standard deviations higher for true objects. Rounding the
    coordinates and scores (``decimals``, ``score_decimals``; None keeps full precision) creates
    the ties of real result files.

    Returns
    -------
    gt : dict
        A COCO ground-truth dict (annotation ids from 1; image ids from 1; category ids from 1).
    detections : list of dict
        The results list.
    """
    if n_images < 0 or n_categories < 1:
        raise ValueError(f"need n_images >= 0 and n_categories >= 1, got {n_images}, "
                         f"{n_categories}")
    width, height = image_size
    ranks = np.arange(1, n_categories + 1, dtype=np.float64)
    cat_p = ranks ** -0.8 / (ranks ** -0.8).sum()
    n_gt = rng.poisson(gt_per_image, size=n_images)
    total = int(n_gt.sum())
    img_of = np.repeat(np.arange(n_images), n_gt)
    cats = rng.choice(n_categories, size=total, p=cat_p)
    side = np.exp(rng.normal(_LOG_SIDE_MU, _LOG_SIDE_SIGMA, total))
    aspect = np.exp(rng.normal(0.0, 0.5, total))
    w = np.clip(side * np.sqrt(aspect), 1.0, width)
    h = np.clip(side / np.sqrt(aspect), 1.0, height)
    x = rng.uniform(0, 1, total) * (width - w)
    y = rng.uniform(0, 1, total) * (height - h)
    crowd = rng.uniform(size=total) < p_crowd
    fill = rng.uniform(0.45, 0.85, total)

    def rnd(v, d):
        return np.round(v, d) if d is not None else v

    gt_boxes = rnd(np.stack([x, y, w, h], axis=1), decimals)
    gt_boxes[:, 2:] = np.maximum(gt_boxes[:, 2:], 0.0)
    areas = rnd(gt_boxes[:, 2] * gt_boxes[:, 3] * fill, decimals)
    gt = {
        "images": [{"id": i + 1, "width": width, "height": height} for i in range(n_images)],
        "categories": [{"id": k + 1, "name": f"class{k + 1}"} for k in range(n_categories)],
        "annotations": [
            {"id": j + 1, "image_id": int(img_of[j]) + 1, "category_id": int(cats[j]) + 1,
             "bbox": gt_boxes[j].tolist(), "area": float(areas[j]), "iscrowd": int(crowd[j])}
            for j in range(total)
        ],
    }

    # Detections of true objects: found ones, plus duplicates of some of them.
    found = rng.uniform(size=total) < p_detect
    dup = found & (rng.uniform(size=total) < p_duplicate)
    src = np.concatenate([np.flatnonzero(found), np.flatnonzero(dup)])
    m = src.size
    cx = x[src] + w[src] / 2 + rng.normal(0, loc_noise, m) * w[src]
    cy = y[src] + h[src] / 2 + rng.normal(0, loc_noise, m) * h[src]
    dw = w[src] * np.exp(rng.normal(0, loc_noise, m))
    dh = h[src] * np.exp(rng.normal(0, loc_noise, m))
    t_cat = cats[src].copy()
    confuse = rng.uniform(size=m) < p_confuse
    t_cat[confuse] = rng.integers(0, n_categories, int(confuse.sum()))
    t_logit = rng.normal(score_gap, 1.0, m) - np.r_[np.zeros(found.sum()), np.ones(dup.sum())]
    t_img = img_of[src]

    per_image = np.bincount(t_img, minlength=n_images)
    n_fp = np.maximum(dets_per_image - per_image, 0)
    f_img = np.repeat(np.arange(n_images), n_fp)
    nf = f_img.size
    f_side = np.exp(rng.normal(_LOG_SIDE_MU, _LOG_SIDE_SIGMA, nf))
    f_aspect = np.exp(rng.normal(0.0, 0.5, nf))
    fw = np.clip(f_side * np.sqrt(f_aspect), 1.0, width)
    fh = np.clip(f_side / np.sqrt(f_aspect), 1.0, height)
    fx = rng.uniform(0, 1, nf) * (width - fw)
    fy = rng.uniform(0, 1, nf) * (height - fh)
    f_cat = rng.choice(n_categories, size=nf, p=cat_p)
    f_logit = rng.normal(0.0, 1.0, nf)

    d_img = np.concatenate([t_img, f_img])
    d_cat = np.concatenate([t_cat, f_cat])
    bw = np.concatenate([dw, fw])
    bh = np.concatenate([dh, fh])
    bx = np.concatenate([cx - dw / 2, fx])
    by = np.concatenate([cy - dh / 2, fy])
    boxes = rnd(np.stack([bx, by, bw, bh], axis=1), decimals)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], 0.0)
    logit = np.concatenate([t_logit, f_logit])
    scores = rnd(1.0 / (1.0 + np.exp(-logit)), score_decimals)
    order = np.lexsort((rng.uniform(size=d_img.size), d_img))  # grouped by image, shuffled
    box_list = boxes[order].tolist()
    dets = [
        {"image_id": i + 1, "category_id": c + 1, "bbox": b, "score": s}
        for i, c, b, s in zip(d_img[order].tolist(), d_cat[order].tolist(), box_list,
                              scores[order].tolist(), strict=True)
    ]
    return gt, dets
