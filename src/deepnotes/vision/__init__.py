"""Detection and video: metrics and online action detection.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI.

- :mod:`deepnotes.vision.detection_metrics`: IoU, greedy matching (COCO and VOC rules),
  precision/recall curves and AP by the VOC2007, VOC2010+ and COCO conventions, readable NumPy.
- :mod:`deepnotes.vision.coco_eval`: :func:`coco_evaluate`, pycocotools' 12 box statistics and
  per-class AP, computed by numba kernels (equal to pycocotools to the last bit).
- :mod:`deepnotes.vision.online_action`: online (causal) action detection on feature streams:
  LSTM/GRU baselines, TRN, IDN, OadTR, and per-frame mAP, calibrated AP, latency, anticipation.
"""

from deepnotes.vision.coco_eval import STAT_NAMES, CocoEvaluation, coco_evaluate, evaluate_arrays
from deepnotes.vision.detection_metrics import (
    average_precision,
    box_iou,
    match_coco,
    match_voc,
    precision_recall,
    voc_average_precision,
)
from deepnotes.vision.online_action import (
    IDN,
    TRN,
    OadTR,
    OnlineOutput,
    RecurrentDetector,
    anticipation_accuracy,
    build_model,
    calibrated_average_precision,
    detection_latency,
    detection_loss,
    frame_map,
)

__all__ = [
    "IDN",
    "TRN",
    "OadTR",
    "OnlineOutput",
    "RecurrentDetector",
    "anticipation_accuracy",
    "build_model",
    "calibrated_average_precision",
    "detection_latency",
    "detection_loss",
    "frame_map",
    "STAT_NAMES",
    "CocoEvaluation",
    "average_precision",
    "box_iou",
    "coco_evaluate",
    "evaluate_arrays",
    "match_coco",
    "match_voc",
    "precision_recall",
    "voc_average_precision",
]
