"""Human-activity sensor recordings stitched into long streams with per-frame labels.

Online action detection needs *untrimmed* streams: long recordings in which actions start and end
at unknown times between stretches of background, with a label for every frame. No such stream
ships with a Python package, but short, trimmed activity recordings do, and concatenating trimmed
clips of known class gives a stream whose frame labels are known exactly.

Real data: BasicMotions
-----------------------
aeon (``pip install aeon``) bundles the BasicMotions set of the UEA multivariate archive inside
its wheel (``aeon/datasets/data/BasicMotions/*.ts``): four students wore a smart watch and each
recorded four activities -- standing, walking, running, playing badminton -- five times; every
recording is 10 s of a 3-axis accelerometer and a 3-axis gyroscope sampled at 10 Hz, so one
recording is an array of shape (6, 100). The archive splits the 80 recordings into 40 train and
40 test recordings (10 per class in each). We read the ``.ts`` file ourselves (:func:`read_ts`)
and never call aeon's loaders, so no code path can download anything; aeon is only the carrier
of the files. The same wheel carries ``Daphnet_S06R02E0`` (freezing of gait), but the bundled
excerpt contains no freezing episode (every ``is_anomaly`` label is 0), so it cannot serve as
detection data.

:func:`basic_motions_streams` treats *standing* as the background (the wearer at rest) and
walking, running and badminton as the three action classes. A stream alternates a background
segment (a random crop of a standing recording) and an action segment (a random crop of a
recording of a random action class); train streams use only train recordings and test streams
only test recordings, so no sample of a test recording is ever seen in training.

Synthetic data
--------------
:func:`synthetic_stream` draws a stream with the same layout from a known generator (each class is
a sinusoid of its own frequency on its own channel, background is noise), for tests.

Frames
------
:func:`to_frames` groups ``chunk`` consecutive samples into one frame (the feature of a frame is
its samples, concatenated), as video OAD groups video frames into chunks; a frame's label is that
of its last sample. Streams built with ``align=chunk`` have label-pure frames.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

BASIC_MOTIONS_RATE_HZ = 10.0
"""Sampling rate of BasicMotions recordings, in Hz."""

BASIC_MOTIONS_CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
"""The six channels of a BasicMotions recording, in file order."""

BASIC_MOTIONS_BACKGROUND = "Standing"
"""The BasicMotions class used as background in :func:`basic_motions_streams`."""

BASIC_MOTIONS_ACTIONS = ("Walking", "Running", "Badminton")
"""The BasicMotions classes used as actions, in label order 1, 2, 3 (0 is background)."""

BACKGROUND = 0
"""Label of background frames in every stream."""


@dataclass(frozen=True)
class Stream:
    """One untrimmed stream with per-sample labels.

    Attributes
    ----------
    x : ndarray, shape (T, D), float32
        The signal, one row per sample (time step).
    labels : ndarray, shape (T,), int64
        Class of every sample: ``0`` is background, ``1..C`` are actions.
    segments : ndarray, shape (S, 3), int64
        One row ``(start, end, label)`` per segment, ``end`` exclusive, in time order; the segments
        tile ``[0, T)``.
    class_names : tuple of str
        Name of every label, ``class_names[0]`` is ``"background"``.
    rate_hz : float
        Samples per second.
    """

    x: np.ndarray
    labels: np.ndarray
    segments: np.ndarray
    class_names: tuple[str, ...]
    rate_hz: float

    @property
    def n_classes(self) -> int:
        """Number of labels, background included (``C + 1``)."""
        return len(self.class_names)


# --------------------------------------------------------------------------------------------
# Reading the bundled files


def aeon_data_dir() -> Path:
    """The folder of datasets bundled in the installed aeon wheel (aeon is not imported).

    Raises
    ------
    ModuleNotFoundError
        If aeon is not installed (``pip install aeon``; it belongs to the ``bench`` extra).
    """
    spec = importlib.util.find_spec("aeon")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the sensor recordings ship inside the aeon package: pip install aeon")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def read_ts(path: str | Path) -> tuple[list[np.ndarray], np.ndarray, dict[str, str]]:
    """Read a classification file in the ``.ts`` format of the UCR/UEA archives.

    The format: ``#`` comment lines, ``@key value`` header lines up to ``@data``, then one line per
    series, ``dim_1:dim_2:...:dim_D:label``, each dimension a comma-separated list of values
    (``?`` for a missing value). Series may have different lengths.

    Returns
    -------
    series : list of ndarray, each shape (D, L_i), float64
    labels : ndarray, shape (N,), str (empty strings when the file has no class label)
    header : dict mapping each ``@key`` (lower case, without ``@``) to the rest of its line
    """
    path = Path(path)
    header: dict[str, str] = {}
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise ValueError(f"{path}:{lineno}: expected a @header line, got {line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                if key.lower() == "data":
                    in_data = True
                else:
                    header[key.lower()] = value.strip()
                continue
            has_label = header.get("classlabel", "false").split(" ")[0].lower() == "true"
            fields = line.split(":")
            if has_label:
                fields, label = fields[:-1], fields[-1].strip()
            else:
                label = ""
            try:
                dims = [np.array([np.nan if v == "?" else float(v) for v in f.split(",")])
                        for f in fields]
            except ValueError as err:
                raise ValueError(f"{path}:{lineno}: bad value ({err})") from None
            if len({len(d) for d in dims}) != 1:
                raise ValueError(f"{path}:{lineno}: dimensions of one series differ in length")
            series.append(np.stack(dims))
            labels.append(label)
    if not in_data:
        raise ValueError(f"{path}: no @data line")
    return series, np.array(labels), header


@lru_cache(maxsize=4)
def _basic_motions(split: str) -> tuple[np.ndarray, np.ndarray]:
    path = aeon_data_dir() / "BasicMotions" / f"BasicMotions_{split.upper()}.ts"
    series, labels, _ = read_ts(path)
    x = np.stack(series)
    x.flags.writeable = False
    labels.flags.writeable = False
    return x, labels


def load_basic_motions(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The BasicMotions recordings bundled with aeon.

    Parameters
    ----------
    split : {"train", "test"}
        The archive's own split (40 recordings each, 10 per class).

    Returns
    -------
    x : ndarray, shape (40, 6, 100), float64
        Accelerometer (channels 0-2) and gyroscope (3-5) at 10 Hz, 10 s per recording.
    labels : ndarray, shape (40,), str
        ``"Standing"``, ``"Walking"``, ``"Running"`` or ``"Badminton"``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, labels = _basic_motions(split)
    return x.copy(), labels.copy()


# --------------------------------------------------------------------------------------------
# Stitching


def _check_range(name: str, value: tuple[int, int]) -> tuple[int, int]:
    if len(value) != 2 or not 1 <= value[0] <= value[1]:
        raise ValueError(f"{name} must be (min, max) with 1 <= min <= max, got {value}")
    return int(value[0]), int(value[1])


def _draw_length(rng: np.random.Generator, bounds: tuple[int, int], align: int, cap: int) -> int:
    lo = -(-bounds[0] // align) * align  # round the bounds inwards to multiples of align
    hi = min(bounds[1], cap) // align * align
    if hi < lo:
        raise ValueError(f"no length in {bounds} that is a multiple of align={align} fits a "
                         f"recording of {cap} samples")
    return int(rng.integers(lo // align, hi // align + 1)) * align


def stitch_stream(actions: Sequence[Sequence[np.ndarray]], background: Sequence[np.ndarray],
                  n_actions: int, rng: np.random.Generator, *,
                  action_len: tuple[int, int] = (30, 100),
                  background_len: tuple[int, int] = (20, 60), align: int = 1,
                  class_names: Sequence[str] | None = None, rate_hz: float = 1.0) -> Stream:
    """Concatenate crops of trimmed recordings into one untrimmed stream.

    The stream is ``background, action, background, action, ..., background``: ``n_actions``
    action segments, each a random crop of a random recording of a uniformly drawn class, with a
    background crop before, between and after them. Every crop length is drawn uniformly from its
    range among the multiples of ``align`` (so frames of ``align`` samples never straddle two
    segments) and never exceeds its recording.

    Parameters
    ----------
    actions : sequence of C sequences of arrays, each shape (D, L)
        ``actions[c]`` are the recordings of action class ``c + 1``.
    background : sequence of arrays, each shape (D, L)
        Background recordings.
    n_actions : int
        Number of action segments, >= 1.
    rng : numpy Generator
    action_len, background_len : (int, int)
        Inclusive ranges of segment lengths, in samples.
    align : int
        Every segment length is a multiple of ``align``.
    class_names : sequence of C + 1 str, optional
        Names of labels 0..C (default ``background, action_1, ...``).
    rate_hz : float
        Samples per second, stored in the stream.

    Returns
    -------
    Stream
    """
    if n_actions < 1:
        raise ValueError(f"n_actions must be >= 1, got {n_actions}")
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    if not actions or any(len(rec) == 0 for rec in actions):
        raise ValueError("actions must hold at least one recording for every class")
    if len(background) == 0:
        raise ValueError("background must hold at least one recording")
    action_len = _check_range("action_len", action_len)
    background_len = _check_range("background_len", background_len)
    dims = {np.shape(r)[0] for rec in (*actions, background) for r in rec}
    if len(dims) != 1 or any(np.ndim(r) != 2 for rec in (*actions, background) for r in rec):
        raise ValueError("every recording must be an array of shape (D, L) with the same D")
    n_classes = len(actions) + 1
    if class_names is None:
        class_names = ("background", *(f"action_{c}" for c in range(1, n_classes)))
    if len(class_names) != n_classes:
        raise ValueError(f"class_names needs {n_classes} names, got {len(class_names)}")

    def crop(recordings, bounds):
        rec = np.asarray(recordings[int(rng.integers(len(recordings)))], dtype=np.float64)
        length = _draw_length(rng, bounds, align, rec.shape[1])
        start = int(rng.integers(rec.shape[1] - length + 1))
        return rec[:, start:start + length]

    pieces, segments, t = [], [], 0
    for i in range(2 * n_actions + 1):
        label = 0 if i % 2 == 0 else int(rng.integers(1, n_classes))
        piece = crop(background, background_len) if label == 0 else crop(actions[label - 1],
                                                                          action_len)
        pieces.append(piece)
        segments.append((t, t + piece.shape[1], label))
        t += piece.shape[1]
    x = np.concatenate(pieces, axis=1).T.astype(np.float32)  # (T, D)
    seg = np.array(segments, dtype=np.int64)
    labels = np.repeat(seg[:, 2], seg[:, 1] - seg[:, 0])
    return Stream(x, labels, seg, tuple(class_names), float(rate_hz))


def basic_motions_streams(split: str, n_streams: int, n_actions: int, rng: np.random.Generator,
                          *, action_len: tuple[int, int] = (30, 100),
                          background_len: tuple[int, int] = (20, 60),
                          align: int = 1) -> list[Stream]:
    """Untrimmed streams stitched from the BasicMotions recordings of one split.

    Background is :data:`BASIC_MOTIONS_BACKGROUND` (standing); labels 1, 2, 3 are
    :data:`BASIC_MOTIONS_ACTIONS` (walking, running, badminton). See :func:`stitch_stream` for the
    layout and the length ranges (in samples of 0.1 s).

    Returns
    -------
    list of Stream, each with ``x`` of shape (T_i, 6) and ``rate_hz = 10``
    """
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, got {n_streams}")
    x, names = load_basic_motions(split)
    actions = [list(x[names == a]) for a in BASIC_MOTIONS_ACTIONS]
    background = list(x[names == BASIC_MOTIONS_BACKGROUND])
    class_names = ("background", *(a.lower() for a in BASIC_MOTIONS_ACTIONS))
    return [stitch_stream(actions, background, n_actions, rng, action_len=action_len,
                          background_len=background_len, align=align, class_names=class_names,
                          rate_hz=BASIC_MOTIONS_RATE_HZ)
            for _ in range(n_streams)]


def synthetic_stream(n_classes: int, n_actions: int, rng: np.random.Generator, *, dim: int = 4,
                     noise: float = 0.3, action_len: tuple[int, int] = (20, 40),
                     background_len: tuple[int, int] = (10, 30), align: int = 1) -> Stream:
    """A stream with known segments from a simple generator, for tests.

    Action class ``c`` (1..``n_classes``) is ``sin(2 pi f_c t + phase)`` on channel
    ``(c - 1) % dim`` with ``f_c = 0.05 c`` cycles per sample and a random phase per segment;
    every sample of every channel adds ``noise * N(0, 1)``. Background is noise only.

    Returns
    -------
    Stream with ``x`` of shape (T, dim), ``rate_hz = 1``
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if n_actions < 1:
        raise ValueError(f"n_actions must be >= 1, got {n_actions}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    action_len = _check_range("action_len", action_len)
    background_len = _check_range("background_len", background_len)
    pieces, segments, t = [], [], 0
    for i in range(2 * n_actions + 1):
        label = 0 if i % 2 == 0 else int(rng.integers(1, n_classes + 1))
        bounds = background_len if label == 0 else action_len
        length = _draw_length(rng, bounds, align, bounds[1])
        piece = noise * rng.standard_normal((length, dim))
        if label:
            phase = rng.uniform(0, 2 * np.pi)
            piece[:, (label - 1) % dim] += np.sin(2 * np.pi * 0.05 * label * np.arange(length)
                                                  + phase)
        pieces.append(piece)
        segments.append((t, t + length, label))
        t += length
    seg = np.array(segments, dtype=np.int64)
    labels = np.repeat(seg[:, 2], seg[:, 1] - seg[:, 0])
    names = ("background", *(f"class_{c}" for c in range(1, n_classes + 1)))
    return Stream(np.concatenate(pieces).astype(np.float32), labels, seg, names, 1.0)


# --------------------------------------------------------------------------------------------
# Frames and normalisation


def to_frames(x: np.ndarray, labels: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Group ``chunk`` consecutive samples into one frame.

    Parameters
    ----------
    x : ndarray, shape (T, D)
    labels : ndarray, shape (T,)
    chunk : int
        Samples per frame; a trailing partial frame is dropped.

    Returns
    -------
    frames : ndarray, shape (T // chunk, chunk * D)
        Frame ``i`` holds samples ``i*chunk .. i*chunk + chunk - 1``, time-major.
    frame_labels : ndarray, shape (T // chunk,)
        The label of each frame's last sample (the state when the frame is complete).
    """
    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (T, D), got {x.shape}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {labels.shape}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n = x.shape[0] // chunk
    frames = x[:n * chunk].reshape(n, chunk * x.shape[1])
    return frames, labels[chunk - 1:n * chunk:chunk]


def channel_stats(streams: Sequence[Stream]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over all samples of ``streams``, each (D,)."""
    if not streams:
        raise ValueError("streams must not be empty")
    x = np.concatenate([s.x for s in streams]).astype(np.float64)
    return x.mean(0), np.maximum(x.std(0), 1e-8)  # guard: a constant channel stays finite
