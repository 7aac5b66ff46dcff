"""scikit-learn's bundled 8×8 handwritten digits as float images, with a fixed stratified split.

The data ship inside scikit-learn (``sklearn.datasets.load_digits`` reads a file from the
installed package), so nothing is ever downloaded. Each of the 1797 images has 64 pixels with
integer intensities in ``{0, ..., 16}`` (17 levels: the UCI set counts "on" pixels of a 32×32
bitmap in 4×4 blocks).

Three views of the pixels are offered (``variant``):

``"float"``
    ``pixel / 16`` as float32 in ``[0, 1]``; the view for classifiers and regression losses.
``"dequantized"``
    ``(pixel + u) / 17`` with ``u ~ U[0, 1)`` drawn independently per pixel (uniform
    dequantisation, Theis et al. 2016, "A note on the evaluation of generative models", ICLR;
    Uria et al. 2013). Values lie in ``[0, 1)`` (``0`` only when ``pixel = 0`` and ``u = 0``
    exactly, probability ``2**-53`` per pixel). The view for continuous density models.
``"binarized"``
    ``pixel / 16 > 0.5`` as float32 in ``{0, 1}``: a deterministic threshold (pixel ≥ 9 is on),
    the same for every call, so likelihoods of binary models are comparable across runs.

Bits per dimension for the dequantized view
-------------------------------------------
A continuous density ``p`` on ``x in [0, 1)^D`` (``D = 64``) fitted to dequantized data bounds the
log-probability of the *discrete* image ``k``: with ``y = 17 x`` the cell of ``k`` is
``k + [0, 1)^D`` and has unit volume, so by Jensen
``log P(k) >= E_u[log p_y(k + u)] = E_u[log p(x)] - D log 17``
(the change of variables ``x = y / 17`` contributes ``-log 17`` per dimension). The reported
figure is therefore::

    bits/dim = -(log p(x) - D * log(17)) / (D * log(2))
             = -log p(x) / (D * log(2)) + log2(17)

where ``log p(x)`` is the model's natural-log density in the ``[0, 1)`` units returned here. A
model that ignores the data (uniform on the cube) scores exactly ``log2(17) ≈ 4.09`` bits/dim.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_CLASSES = 10
"""Number of digit classes (0-9)."""

IMAGE_SHAPE = (8, 8)
"""Height and width of one image, in pixels."""

N_LEVELS = 17
"""Number of distinct raw pixel intensities (0..16)."""

N_SAMPLES = 1797
"""Number of images in the bundled set."""

SPLITS = ("train", "test", "all")
VARIANTS = ("float", "dequantized", "binarized")


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """The raw integer pixels (1797, 64) uint8 and labels (1797,) int64, read once per process."""
    from sklearn.datasets import load_digits as _sk_load_digits  # lazy: sklearn is slow to import

    bunch = _sk_load_digits()
    pixels = bunch.data.astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    pixels.flags.writeable = False  # cached and shared: callers get copies
    labels.flags.writeable = False
    return pixels, labels


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """Stratified train/test split of ``range(len(labels))``.

    Each class contributes ``round(test_fraction * n_c)`` of its ``n_c`` examples to the test set,
    chosen by a permutation from ``np.random.default_rng(seed)`` (classes visited in sorted
    order), so the split depends only on ``(labels, test_fraction, seed)``.

    Returns
    -------
    train, test : np.ndarray of int64
        Sorted, disjoint index arrays whose union is ``range(len(labels))``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    gen = np.random.default_rng(seed)
    test_parts = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(round(test_fraction * members.size))
        test_parts.append(gen.permutation(members)[:n_test])
    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    is_test = np.zeros(labels.size, dtype=bool)
    is_test[test] = True
    train = np.flatnonzero(~is_test).astype(np.int64)
    return train, test


def load_digits(split: str = "train", variant: str = "float", *, test_fraction: float = 0.25,
                seed: int = 0, flatten: bool = False,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load the 8×8 digits as float32 images and int64 labels.

    Parameters
    ----------
    split : {"train", "test", "all"}
        Which part of the fixed stratified split (see :func:`split_indices`) to return; "all"
        returns the 1797 images in their original order.
    variant : {"float", "dequantized", "binarized"}
        Pixel view; see the module docstring (and its bits/dim convention for "dequantized").
    test_fraction : float in (0, 1)
        Share of each class held out for the test split.
    seed : int
        Seeds the split; the same seed gives the same split. Also seeds the dequantisation noise
        when ``rng`` is None.
    flatten : bool
        Return X as (n, 64) instead of (n, 8, 8).
    rng : numpy.random.Generator, optional
        Source of the dequantisation noise ``u`` (only used by "dequantized"); defaults to
        ``np.random.default_rng(seed)``. Pass ``run.rng`` to draw fresh noise per epoch.

    Returns
    -------
    X : np.ndarray, float32, shape (n, 8, 8) or (n, 64)
    y : np.ndarray, int64, shape (n,)
        Digit labels in ``0..9``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")

    pixels, labels = _raw()
    if split == "all":
        idx = np.arange(labels.size)
    else:
        train, test = split_indices(labels, float(test_fraction), seed)
        idx = train if split == "train" else test
    raw = pixels[idx]  # (n, 64) uint8 in 0..16
    y = labels[idx].copy()

    if variant == "float":
        X = raw.astype(np.float32) / np.float32(N_LEVELS - 1)
    elif variant == "binarized":
        X = (raw.astype(np.float32) / np.float32(N_LEVELS - 1) > 0.5).astype(np.float32)
    else:
        gen = np.random.default_rng(seed) if rng is None else rng
        u = gen.random(raw.shape)  # float64 in [0, 1): keep float64 until the division
        X = ((raw + u) / N_LEVELS).astype(np.float32)
        # float32 rounding can lift 16.9999.../17 to exactly 1.0; keep the half-open interval
        np.minimum(X, np.nextafter(np.float32(1.0), np.float32(0.0)), out=X)

    if not flatten:
        X = X.reshape(-1, *IMAGE_SHAPE)
    return X, y
