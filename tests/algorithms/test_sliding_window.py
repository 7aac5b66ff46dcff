"""Sliding-window max/min: the deque and vHGW kernels against NumPy's O(nk) reference.

Every comparison is exact (``assert_array_equal``): a window maximum selects one of the inputs,
so no rounding can occur. ``assert_array_equal`` treats NaNs in the same places as equal.
"""

from unittest import mock

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import maximum_filter1d, minimum_filter1d

from deepnotes.algorithms import sliding_window as sw
from deepnotes.algorithms.sliding_window import (
    PARALLEL_MIN_SIZE,
    sliding_window_max,
    sliding_window_min,
    warm_up,
)

FAST = ("vhgw", "deque")
FUNCS = (sliding_window_max, sliding_window_min)
SETTINGS = settings(max_examples=60, deadline=None)


def _check_all_methods(a, k, axis=-1):
    """Both fast methods equal the naive reference, for max and for min, with dtype kept."""
    for func in FUNCS:
        ref = func(a, k, axis, method="naive")
        for method in FAST:
            got = func(a, k, axis, method=method)
            assert got.dtype == a.dtype and got.shape == ref.shape
            np.testing.assert_array_equal(got, ref, err_msg=f"{func.__name__} {method} k={k}")


@st.composite
def row_and_k(draw, elements, dtype=np.int64, max_n=80):
    n = draw(st.integers(1, max_n))
    a = draw(hnp.arrays(dtype, n, elements=elements))
    return a, draw(st.integers(1, n))


@SETTINGS
@given(row_and_k(st.integers(-3, 3)), st.sampled_from([4, 16, 1 << 16]))
def test_ties_and_negatives_match_naive(case, chunk_target):
    # A tiny value range forces ties, which the deque must pop (<=) and vHGW must merge; a small
    # CHUNK_TARGET with no size floor for threads splits even short rows into parallel chunks.
    a, k = case
    with (mock.patch.object(sw, "CHUNK_TARGET", chunk_target),
          mock.patch.object(sw, "PARALLEL_MIN_SIZE", 0)):
        _check_all_methods(a, k)


@SETTINGS
@given(row_and_k(st.floats(-1e6, 1e6, width=32), dtype=np.float32, max_n=120))
def test_float32_rows_match_naive(case):
    _check_all_methods(*case)


@SETTINGS
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9),
                  elements=st.sampled_from([np.nan, -np.inf, np.inf, -1.0, 0.0, 2.5])),
       st.data())
def test_nd_any_axis_with_nan_and_inf(a, data):
    axis = data.draw(st.integers(-a.ndim, a.ndim - 1))
    n = a.shape[axis]
    if n == 0:
        return
    k = data.draw(st.integers(1, n))
    # Both drivers: one thread a row per task, or prange over (row, chunk) tasks of 4 samples.
    parallel = data.draw(st.booleans())
    with (mock.patch.object(sw, "CHUNK_TARGET", 4 if parallel else sw.CHUNK_TARGET),
          mock.patch.object(sw, "PARALLEL_MIN_SIZE", 0 if parallel else sw.PARALLEL_MIN_SIZE)):
        _check_all_methods(a, k, axis)


@pytest.mark.parametrize("k", [1, 7, 40])
def test_known_answer_and_edge_windows(k):
    x = np.array([1, 3, -1, -3, 5, 3, 6, 7])
    assert sliding_window_max(x, 3).tolist() == [3, 3, 5, 5, 6, 7]
    assert sliding_window_min(x, 3).tolist() == [-1, -3, -3, -3, 3, 3]
    a = np.random.default_rng(k).standard_normal(40)
    for method in FAST:
        out = sliding_window_max(a, k, method=method)
        assert out.shape == (40 - k + 1,)
        if k == 1:
            np.testing.assert_array_equal(out, a)  # a window of one is the identity
        if k == 40:
            assert out.tolist() == [a.max()]


def test_nan_policy_propagates_identically():
    x = np.array([1.0, np.nan, 3.0, 2.0, -np.inf, 0.5])
    expected = [np.nan, np.nan, 3.0, 2.0, 0.5]
    for method in FAST:
        np.testing.assert_array_equal(sliding_window_max(x, 2, method=method), expected)
        np.testing.assert_array_equal(sliding_window_min(x, 2, method=method),
                                      [np.nan, np.nan, 2.0, -np.inf, -np.inf])


def test_long_row_several_chunks_with_a_nan_in_one():
    # Real CHUNK_TARGET: a 1-D row of 3 chunks (k=37 does not divide 2**16) with one NaN near a
    # chunk border, so the NaN path, the halo and the fast path all run in one call.
    rng = np.random.default_rng(0)
    x = rng.integers(-50, 50, size=3 * sw.CHUNK_TARGET + 11).astype(np.float64)
    x[sw.CHUNK_TARGET - 36 * 5] = np.nan
    _check_all_methods(x, 37)


def test_matches_scipy_filters_with_origin_shift():
    # The peer of the experiment: scipy's centred filter shifted by -(k // 2) puts window
    # [i, i + k) at output i; its first n - k + 1 outputs are the valid windows.
    x = np.random.default_rng(1).standard_normal(5000)
    for k in (1, 2, 10, 301):
        m = x.size - k + 1
        np.testing.assert_array_equal(sliding_window_max(x, k),
                                      maximum_filter1d(x, k, origin=-(k // 2))[:m])
        np.testing.assert_array_equal(sliding_window_min(x, k),
                                      minimum_filter1d(x, k, origin=-(k // 2))[:m])


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float16, bool])
def test_dtypes_kept_and_integer_extremes_exact(dtype):
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        x = np.array([info.min, info.max, 0, info.min, 1, info.max, info.min], dtype=dtype)
    else:
        x = np.array([0, 1, 1, 0, 0, 1, 0], dtype=dtype)
    _check_all_methods(x, 2)
    _check_all_methods(x, 3)


def test_non_contiguous_input_and_empty_other_dims():
    a = np.arange(60.0).reshape(3, 20)[:, ::2]  # strided view
    _check_all_methods(a, 4, axis=1)
    _check_all_methods(a, 2, axis=0)
    for shape, axis in (((0, 5), 1), ((3, 0, 5), -1), ((4, 0), 0)):
        empty = np.zeros(shape)
        out = sliding_window_max(empty, 2, axis)
        expected = list(shape)
        expected[axis] -= 1
        assert out.shape == tuple(expected)


@pytest.mark.parametrize("func", FUNCS)
def test_errors(func):
    x = np.arange(5.0)
    for k in (0, -1, 6):
        with pytest.raises(ValueError, match=rf"k={k}.*n=5"):
            func(x, k)
    with pytest.raises(TypeError, match="complex"):
        func(x + 1j, 2)
    with pytest.raises(TypeError, match="numeric"):
        func(np.array(["a", "b"]), 1)
    for bad_k in (2.5, True, "2"):
        with pytest.raises(TypeError, match="integer"):
            func(x, bad_k)
    with pytest.raises(ValueError, match="unknown method"):
        func(x, 2, method="heap")
    with pytest.raises(np.exceptions.AxisError):
        func(x, 2, axis=1)
    with pytest.raises(ValueError, match="at least one dimension"):
        func(np.float64(1.0), 1)


@pytest.mark.parametrize("fn, reduce", [(sliding_window_max, np.ma.max),
                                        (sliding_window_min, np.ma.min)])
@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.bool_])
def test_masked_arrays_ignore_masked_samples(fn, reduce, dtype):
    rng = np.random.default_rng(5)
    data = rng.integers(-50, 50, size=(3, 40)).astype(dtype)
    mask = rng.random((3, 40)) < 0.4
    mask[1, 10:25] = True  # windows with nothing unmasked
    a = np.ma.masked_array(data, mask=mask)
    k = 6
    out = fn(a, k, axis=1)
    assert isinstance(out, np.ma.MaskedArray) and out.dtype == data.dtype
    for r in range(3):
        for i in range(40 - k + 1):
            expect = reduce(a[r, i:i + k])
            if expect is np.ma.masked:
                assert out.mask[r, i]
            else:
                assert not out.mask[r, i] and out[r, i] == expect


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.float16, np.bool_])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("fn, ref", [(sliding_window_max, np.max), (sliding_window_min, np.min)])
def test_out_receives_the_result_in_place(dtype, axis, fn, ref):
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(40, 50)) * 10).astype(dtype)
    k = 7
    expected = ref(sliding_window_view(a, k, axis=axis), axis=-1)
    out = np.full(expected.shape, 1, dtype=dtype)
    got = fn(a, k, axis=axis, out=out)
    assert got is out
    np.testing.assert_array_equal(out, expected)
    # a second call into the same buffer gives the same result (nothing left from the first)
    assert fn(a, k, axis=axis, out=out) is out
    np.testing.assert_array_equal(out, expected)
    # method="naive" honours out as well
    assert fn(a, k, axis=axis, method="naive", out=np.empty_like(out)).tolist() == \
        expected.tolist()


def test_a_large_input_writes_straight_into_out():
    a = np.random.default_rng(0).normal(size=PARALLEL_MIN_SIZE + 1001)
    out = np.empty(a.size - 100 + 1)
    assert sliding_window_max(a, 100, out=out) is out
    np.testing.assert_array_equal(out, sliding_window_view(a, 100).max(-1))


def test_a_wrong_out_is_refused_by_name():
    a = np.arange(20.0)
    with pytest.raises(ValueError, match="out has shape"):
        sliding_window_max(a, 5, out=np.empty(15))
    with pytest.raises(ValueError, match="dtype"):
        sliding_window_max(a, 5, out=np.empty(16, dtype=np.float32))
    frozen = np.empty(16)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        sliding_window_max(a, 5, out=frozen)
    with pytest.raises(TypeError, match="out must be"):
        sliding_window_max(a, 5, out=[0.0] * 16)
    with pytest.raises(TypeError, match="masked"):
        sliding_window_max(np.ma.masked_array(a), 5, out=np.empty(16))


def test_warm_up_runs_every_kernel_and_leaves_results_unchanged():
    warm_up()
    warm_up(dtypes=(np.int32, np.float16, np.bool_))  # the widened dtypes too
    a = np.arange(10.0)
    np.testing.assert_array_equal(sliding_window_max(a, 3), np.arange(2.0, 10.0))
