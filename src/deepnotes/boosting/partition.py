"""The stable, branch-free row partition that both growers split nodes with.

A node's rows are a slice ``rows[start:stop]`` in ascending order; splitting the node moves the
rows that go left to the front of the slice and the others after them, each side keeping its
order, so every child's slice is ascending too (the histogram kernels gather front to back).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from deepnotes.boosting.histogram import PREFETCH_DISTANCE
from deepnotes.boosting.prefetch import prefetch


@njit(cache=True, nogil=True, inline="always")
def goes_left(b, bin_threshold, missing_bin, default_left):  # pragma: no cover - numba
    """Whether a row in bin ``b`` goes left of the split ``bin <= bin_threshold``: missing values
    (bin ``missing_bin``) go left when ``default_left``. Branch-free: the side is data-dependent
    and unpredictable."""
    missing = b == missing_bin
    return ((b <= bin_threshold) & ~missing) | (missing & default_left)


@njit(cache=True, nogil=True)
def stable_partition(rows, start, stop, col, bin_threshold, missing_bin, default_left,
                     buf):  # pragma: no cover - numba
    """Partition ``rows[start:stop]`` in place, stably: the rows whose ``col[r]`` goes left
    (:func:`goes_left`) first. ``col``: one feature's bins for every row (any stride); ``buf``:
    scratch of at least ``stop - start`` ints. Returns the number of left rows.

    Every row is written to both candidate places and only the counter of its side advances: no
    branch to mispredict. ``rows[start + nl]`` is safe to overwrite, as ``start + nl <= i``."""
    nl = 0
    nr = 0
    for i in range(start, stop):
        if i + PREFETCH_DISTANCE < stop:
            prefetch(col, rows[i + PREFETCH_DISTANCE])
        r = rows[i]
        left = np.int64(goes_left(col[r], bin_threshold, missing_bin, default_left))
        rows[start + nl] = r
        buf[nr] = r
        nl += left
        nr += 1 - left
    for i in range(nr):
        rows[start + nl + i] = buf[i]
    return nl
