"""Sliding-window maximum and minimum in O(n): monotonic deque and van Herk/Gil-Werman (numba).

For an array ``a`` whose axis ``axis`` has length ``n`` and a window of ``k`` samples, the "valid"
sliding maximum is

    out[i] = max(a[i], a[i + 1], ..., a[i + k - 1]),    i = 0, ..., n - k        (Eq. 1)

along that axis, the same as ``sliding_window_view(a, k, axis).max(-1)`` in NumPy but in O(n)
instead of O(nk) work. Three methods compute it:

- ``"deque"``: the monotonic deque (ascending-minima / Harter's MINLIST idea), amortised O(n),
  Eq. 2-3 of the post;
- ``"vhgw"`` (and ``"auto"``): van Herk (1992) and Gil & Werman (1993): block prefix and suffix
  maxima, about three comparisons per element and no data-dependent branch, Eq. 4-6;
- ``"naive"``: the O(nk) NumPy reference the tests compare against.

NaN policy (Eq. 7): a window containing a NaN gives NaN, like ``np.max``. The kernels never see a
NaN: a chunk that holds one is recomputed with NaN read as the lowest value, and the windows
whose NaN count is positive are then set to NaN. Signed zeros compare equal, so a window whose
maximum is zero may return either ``0.0`` or ``-0.0``.

Both fast methods run the same driver: each row is cut into chunks of whole ``k``-blocks (about
``2**16`` samples, so a chunk stays in L2) and ``prange`` runs over all (row, chunk) pairs. One long
row is therefore spread over the threads as well as many short rows. Inputs under
``PARALLEL_MIN_SIZE`` samples run on one thread, a row per task.

References
----------
M. van Herk (1992). A fast algorithm for local minimum and maximum filters on rectangular and
octagonal kernels. Pattern Recognition Letters 13(7).
J. Gil and M. Werman (1993). Computing 2-D min, median, and max filters. IEEE TPAMI 15(5).
"""

from __future__ import annotations

import operator

import numpy as np
from numba import njit, prange
from numpy.lib.array_utils import normalize_axis_index
from numpy.lib.stride_tricks import sliding_window_view

METHODS = ("auto", "vhgw", "deque", "naive")

#: Samples per parallel task (rounded down to whole k-blocks): 512 KiB of float64 fits in L2.
CHUNK_TARGET = 1 << 16
#: Below this many samples in all, one thread does everything: waking the thread pool would cost
#: more than the ~0.1 ms of work.
PARALLEL_MIN_SIZE = 1 << 17


@njit(cache=True, boundscheck=False, inline="always")
def _suffix_block(x, out, b0, k):
    """Suffix maxima of the block starting at ``b0`` (Eq. 4), stored into ``out`` where an output
    exists: the prefix pass then folds into them without a scratch array."""
    oend = min(b0 + k, out.size)
    bend = min(b0 + k, x.size)
    run = x[bend - 1]
    for i in range(bend - 1, oend - 1, -1):
        v = x[i]
        run = v if v > run else run
    for i in range(oend - 1, b0 - 1, -1):
        v = x[i]
        run = v if v > run else run
        out[i] = run


@njit(cache=True, boundscheck=False, inline="always")
def _prefix_block(x, out, b0, k):
    """Prefix maxima of the block after ``b0`` (Eq. 5) folded into its outputs (Eq. 6)."""
    oend = min(b0 + k, out.size)
    if oend - b0 > 1:
        base = b0 + k - 1
        run = x[base + 1]
        for j in range(1, oend - b0):
            v = x[base + j]
            run = v if v > run else run
            o = out[b0 + j]
            out[b0 + j] = run if run > o else o


@njit(cache=True, boundscheck=False)
def _vhgw_span(x, k, out):
    """vHGW sliding maximum of one contiguous span, blocks aligned at ``x[0]`` (Eq. 4-6).

    Each running maximum is a serial chain of max instructions, so a plain loop is bound by
    their latency. Where two whole blocks fit, one loop walks block b+1 forwards (its prefix,
    completing the outputs of block b) and backwards (its suffix) at once: two independent
    chains per iteration. The ragged end takes the plain loops.

    Parameters
    ----------
    x : ndarray, shape (L,)
        Samples without NaN.
    k : int
        Window length, ``1 <= k <= L``.
    out : ndarray, shape (L - k + 1,)
        Written in place.
    """
    m = out.size
    _suffix_block(x, out, 0, k)
    b0 = 0
    while b0 + 2 * k <= m:
        nb = b0 + k  # block b+1: x[nb:nb + k] and out[nb:nb + k] are all in range
        pre = x[nb]
        suf = x[nb + k - 1]
        for j in range(k - 1):
            v = x[nb + j]
            pre = v if v > pre else pre
            o = out[b0 + j + 1]
            out[b0 + j + 1] = pre if pre > o else o
            w = x[nb + k - 1 - j]
            suf = w if w > suf else suf
            out[nb + k - 1 - j] = suf
        v = x[nb]
        out[nb] = v if v > suf else suf
        b0 = nb
    _prefix_block(x, out, b0, k)
    b0 += k
    while b0 < m:
        _suffix_block(x, out, b0, k)
        _prefix_block(x, out, b0, k)
        b0 += k


@njit(cache=True, boundscheck=False)
def _deque_span(x, k, out):
    """Monotonic-deque sliding maximum of one contiguous span (Eq. 2-3).

    The deque holds indices into the current window whose values strictly decrease from front to
    back (Eq. 2); the front is the window maximum. It lives in a ring buffer whose size is a
    power of two at least ``k``, so wrapping is a mask rather than a division.

    Parameters
    ----------
    x : ndarray, shape (L,)
        Samples without NaN.
    k : int
        Window length, ``1 <= k <= L``.
    out : ndarray, shape (L - k + 1,)
        Written in place.
    """
    cap = 1
    while cap < k:
        cap <<= 1
    mask = cap - 1
    dq = np.empty(cap, np.intp)
    head = 0  # dq[head & mask] is the front; head and tail only grow
    tail = 0
    for i in range(x.size):
        # Expire first, so the deque never holds more than k indices after the push.
        if tail > head and dq[head & mask] <= i - k:
            head += 1
        v = x[i]
        # Dominated entries can never be a maximum again: the new sample outlives them (Eq. 3).
        while tail > head and x[dq[(tail - 1) & mask]] <= v:
            tail -= 1
        dq[tail & mask] = i
        tail += 1
        if i >= k - 1:
            out[i - k + 1] = x[dq[head & mask]]


@njit(cache=True)
def _span(x, k, out, use_deque, low):
    """One task: the kernel on a NaN-free span, or the NaN policy of Eq. 7 around it."""
    n_nan = 0
    for i in range(x.size):
        n_nan += x[i] != x[i]  # always 0 for integers (folded away by LLVM)
    if n_nan == 0:
        if use_deque:
            _deque_span(x, k, out)
        else:
            _vhgw_span(x, k, out)
        return
    clean = x.copy()
    nan_value = x[0]
    for i in range(x.size):
        if x[i] != x[i]:
            nan_value = x[i]
            clean[i] = low
    if use_deque:
        _deque_span(clean, k, out)
    else:
        _vhgw_span(clean, k, out)
    # Sliding NaN count c[i] over window i; c[i] > 0 -> NaN (Eq. 7).
    count = 0
    for i in range(k - 1):
        count += x[i] != x[i]
    for i in range(out.size):
        count += x[i + k - 1] != x[i + k - 1]
        if count > 0:
            out[i] = nan_value
        count -= x[i] != x[i]


@njit(cache=True, parallel=True)
def _apply(x, k, out, use_deque, low, chunk):
    """Run ``_span`` over every (row, chunk) pair in parallel.

    Parameters
    ----------
    x : ndarray, shape (R, n), C-contiguous
    k : int
    out : ndarray, shape (R, n - k + 1)
    use_deque : bool
        Deque kernel instead of vHGW.
    low : scalar of x's dtype
        Value a NaN is read as (-inf for max).
    chunk : int
        Outputs per task, a multiple of ``k`` so vHGW blocks stay aligned.
    """
    rows, m = out.shape
    per_row = (m + chunk - 1) // chunk
    for t in prange(rows * per_row):
        r = t // per_row
        s = (t - r * per_row) * chunk
        e = min(s + chunk, m)
        _span(x[r][s:e + k - 1], k, out[r][s:e], use_deque, low)


@njit(cache=True)
def _apply_serial(x, k, out, use_deque, low):
    """``_apply`` on one thread, one task per row (small inputs)."""
    for r in range(out.shape[0]):
        _span(x[r], k, out[r], use_deque, low)


def _check_args(a, k, axis, method):
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"sliding window max/min needs a real numeric array, got dtype {a.dtype}")
    if isinstance(k, bool | np.bool_):
        raise TypeError(f"window length k must be an integer, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"window length k must be an integer, got {k!r}") from None
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if a.ndim == 0:
        raise ValueError("sliding window max/min needs an array with at least one dimension")
    axis = normalize_axis_index(axis, a.ndim)
    n = a.shape[axis]
    if not 1 <= k <= n:
        raise ValueError(f"window length k={k} must satisfy 1 <= k <= n, where n={n} is the "
                         f"length of axis {axis}")
    return a, k, axis


def _extreme(dtype: np.dtype, want_max: bool):
    """The value that never wins a window: the dtype's lowest for a max, highest for a min."""
    if dtype.kind == "b":
        return not want_max
    if dtype.kind == "f":
        return -np.inf if want_max else np.inf
    info = np.iinfo(dtype)
    return info.min if want_max else info.max


def _sliding_masked(a, k, axis, method, want_max):
    """Masked input: masked samples never win; a window with no unmasked sample is masked."""
    mask = np.ma.getmaskarray(a)
    data = np.ma.getdata(a)
    filled = np.where(mask, _extreme(data.dtype, want_max), data).astype(data.dtype, copy=False)
    out = _sliding(filled, k, axis, method, want_max)
    _, k, axis = _check_args(data, k, axis, method)
    counts = np.cumsum(np.moveaxis(mask, axis, -1), axis=-1, dtype=np.int64)
    counts = np.concatenate([np.zeros(counts.shape[:-1] + (1,), np.int64), counts], axis=-1)
    masked_in_window = counts[..., k:] - counts[..., :-k]
    return np.ma.masked_array(out, mask=np.moveaxis(masked_in_window == k, -1, axis))


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the kernels run on: numba has no float16 or bool kernels, so those widen
    (exactly) to float32 / uint8 and narrow back at the end."""
    widen = {"b": np.dtype(np.uint8), "f": np.promote_types(dtype, np.float32)}
    return widen.get(dtype.kind, dtype)


def _lowest(work: np.dtype):
    """The value below every sample of dtype ``work``: -inf, or the integer minimum."""
    return work.type(-np.inf) if work.kind == "f" else work.type(np.iinfo(work).min)


def _check_out(out, a, k, axis):
    """``out`` must be an ndarray of the result's shape and of ``a``'s dtype."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray) or isinstance(out, np.ma.MaskedArray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    shape = list(a.shape)
    shape[axis] = a.shape[axis] - k + 1
    if out.shape != tuple(shape) or out.dtype != a.dtype:
        raise ValueError(f"out has shape {out.shape} and dtype {out.dtype}; the result needs "
                         f"shape {tuple(shape)} and dtype {a.dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _sliding(a, k, axis, method, want_max, out=None):
    if np.ma.isMaskedArray(a):
        if out is not None:
            raise TypeError("out is not supported for a masked array (the result is masked)")
        return _sliding_masked(a, k, axis, method, want_max)
    a, k, axis = _check_args(a, k, axis, method)
    target = _check_out(out, a, k, axis)
    if method == "naive":
        view = sliding_window_view(a, k, axis=axis)
        return (view.max(axis=-1, out=target) if want_max
                else view.min(axis=-1, out=target))
    dtype = a.dtype
    work = _work_dtype(dtype)
    x = np.ascontiguousarray(np.moveaxis(a, axis, -1), dtype=work)
    n = x.shape[-1]
    if not want_max:
        # min(x) = -max(-x) for floats and ~max(~x) for integers (Eq. 8): both maps are exact
        # order reversals (~x = -x - 1 never overflows), so one max kernel serves both.
        x = -x if work.kind == "f" else ~x
    rows = x.reshape(-1, n)
    direct = (target is not None and work == dtype and target.flags.c_contiguous
              and np.moveaxis(target, axis, -1).flags.c_contiguous)
    # the kernels write straight into the caller's array when its layout allows (no new pages
    # to fault in: see ``warm_up``); otherwise into a fresh one, copied into ``out`` below
    out = (np.moveaxis(target, axis, -1).reshape(rows.shape[0], n - k + 1) if direct
           else np.empty((rows.shape[0], n - k + 1), dtype=work))
    if rows.shape[0] > 0:
        low = _lowest(work)
        if rows.size < PARALLEL_MIN_SIZE:
            _apply_serial(rows, k, out, method == "deque", low)
        else:
            chunk = max(1, CHUNK_TARGET // k) * k
            _apply(rows, k, out, method == "deque", low, chunk)
    if not want_max:
        out = np.negative(out, out=out) if work.kind == "f" else np.invert(out, out=out)
    if direct:
        return target
    out = np.moveaxis(out.reshape(*x.shape[:-1], n - k + 1), -1, axis)
    if target is not None:
        np.copyto(target, out, casting="unsafe")  # a narrowing back from the widened dtype
        return target
    return out.astype(dtype, copy=False)


def warm_up(dtypes=(np.float64, np.float32, np.int64)) -> None:
    """Pay the first-call costs now: load (or compile) the numba kernels for ``dtypes`` and
    start numba's thread pool.

    A process's first :func:`sliding_window_max` call otherwise pays, besides the work, the
    kernel load from numba's cache (or its compilation right after an install), the thread
    pool's start on the first parallel call, and the page faults of a fresh output array (the
    operating system maps a new array's memory on first write; pass a reused ``out=`` to avoid
    them: ``np.zeros`` does not touch its pages, write it once). Call this once at start-up in
    a latency-sensitive service. ``benchmarks/sliding_window_maximum.py`` records a new
    process's first calls with and without these two steps (``jit.first_calls_1e7``)."""
    for dtype in dtypes:
        work = _work_dtype(np.dtype(dtype))
        x = np.zeros((2, 8), dtype=work)
        out = np.empty((2, 6), dtype=work)
        low = _lowest(work)
        for use_deque in (False, True):
            _apply_serial(x, 3, out, use_deque, low)
            _apply(x, 3, out, use_deque, low, 3)


def sliding_window_max(a, k, axis=-1, method="auto", *, out=None):
    """Maximum of every length-``k`` window along ``axis`` (Eq. 1), NaN-propagating (Eq. 7).

    Parameters
    ----------
    a : array_like, shape (..., n, ...)
        Real numbers (bool, integer or float; the dtype is kept). Complex and non-numeric dtypes
        raise ``TypeError``.
    k : int
        Window length, ``1 <= k <= n`` (else ``ValueError``).
    axis : int
        Axis the window slides along.
    method : {"auto", "vhgw", "deque", "naive"}
        ``"auto"`` is ``"vhgw"`` (van Herk/Gil-Werman, Eq. 4-6); ``"deque"`` is the monotonic
        deque (Eq. 2-3); ``"naive"`` is NumPy's O(nk) ``sliding_window_view(...).max``.
    out : ndarray, optional
        Where to put the result: shape (..., n - k + 1, ...), ``a``'s dtype (else
        ``ValueError``); not for masked arrays. Reusing one across calls skips the page faults
        of a fresh result array (see :func:`warm_up` for the other first-call costs).

    Returns
    -------
    ndarray, shape (..., n - k + 1, ...)
        ``out[..., i, ...] = max(a[..., i:i + k, ...])`` along ``axis``; NaN where the window
        holds a NaN. Identical across methods. For a ``numpy.ma.MaskedArray`` the masked
        samples are ignored and the result is masked where a window holds no unmasked sample.
        ``out`` itself when given.
    """
    return _sliding(a, k, axis, method, want_max=True, out=out)


def sliding_window_min(a, k, axis=-1, method="auto", *, out=None):
    """Minimum of every length-``k`` window along ``axis``; see :func:`sliding_window_max`.

    Computed as the maximum of the order-reversed samples (Eq. 8): ``-a`` for floats and
    ``~a = -a - 1`` for integers, both exact.

    Returns
    -------
    ndarray, shape (..., n - k + 1, ...)
        ``out[..., i, ...] = min(a[..., i:i + k, ...])`` along ``axis``; NaN where the window
        holds a NaN. ``out`` itself when given (as for :func:`sliding_window_max`).
    """
    return _sliding(a, k, axis, method, want_max=False, out=out)
