"""Offline datasets shared by every family (nothing is ever downloaded).

- :func:`load_digits`: scikit-learn's bundled 8×8 digits as float, dequantised or binarised
  images with a fixed stratified split (:mod:`deepnotes.data.digits`).
- :data:`TOYS`, :func:`get_toy`, :func:`sample_toy`: 2-D toy distributions with exact samplers
  and exact log-densities (:mod:`deepnotes.data.toy2d`).
- :func:`read_idx`, :func:`write_idx`, :func:`load_mnist`: the IDX (MNIST) file format and a
  loader for MNIST files placed in a local folder (:mod:`deepnotes.data.idx`).
- :func:`load_basic_motions`, :func:`basic_motions_streams`, :func:`stitch_stream`,
  :func:`synthetic_stream`: wrist-worn sensor recordings bundled in the aeon package, stitched
  into long labelled streams (:mod:`deepnotes.data.sensor_streams`).
- :class:`ShapesWorld`, :class:`CaptionTokenizer`: 32×32 images of one to three coloured shapes
  with captions, a word-level tokenizer, the attributes and instance maps kept
  (:mod:`deepnotes.data.shapes`; it uses torch, so it is imported from there and not here:
  ``import deepnotes.data`` stays free of torch).
"""

from deepnotes.data.digits import IMAGE_SHAPE, N_CLASSES, N_LEVELS, load_digits
from deepnotes.data.idx import load_mnist, read_idx, write_idx
from deepnotes.data.sensor_streams import (
    Stream,
    basic_motions_streams,
    load_basic_motions,
    stitch_stream,
    synthetic_stream,
    to_frames,
)
from deepnotes.data.toy2d import TOYS, Toy2D, get_toy, sample_toy

__all__ = [
    "Stream",
    "basic_motions_streams",
    "load_basic_motions",
    "stitch_stream",
    "synthetic_stream",
    "to_frames",
    "IMAGE_SHAPE",
    "N_CLASSES",
    "N_LEVELS",
    "TOYS",
    "Toy2D",
    "get_toy",
    "load_digits",
    "load_mnist",
    "read_idx",
    "sample_toy",
    "write_idx",
]
