"""deepnotes.boosting.binning: edges, the NaN bin, and the raw-threshold/bin equivalence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepnotes.boosting.binning import BinMapper, bin_dtype


def test_few_distinct_values_get_one_bin_each_with_midpoint_edges():
    X = np.array([[3.0], [1.0], [2.0], [2.0], [np.nan], [1.0]])
    m = BinMapper(max_bin=8).fit(X)
    assert m.n_edges_[0] == 2
    np.testing.assert_array_equal(m.edges_[0, :2], [1.5, 2.5])
    # NaN's bin follows the largest bin in use (2), not max_bin
    assert m.missing_bin == 3
    np.testing.assert_array_equal(m.transform(X)[:, 0], [2, 0, 1, 1, 3, 0])


def test_quantile_bins_are_balanced_and_bounded():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 3))
    m = BinMapper(max_bin=16, subsample=None).fit(X)
    Xb = m.transform(X)
    assert np.all(m.n_edges_ == 15) and Xb.max() <= 15
    counts = np.bincount(Xb[:, 0], minlength=16)
    # exact quantiles of 20000 distinct values: every bin holds 1250 +- 1 rows
    assert counts.min() >= 1249 and counts.max() <= 1251


def test_weighted_quantiles_follow_sample_weight():
    X = np.arange(1000, dtype=float)[:, None]
    w = np.where(X[:, 0] < 500, 3.0, 1.0)  # 3/4 of the mass below 500
    m = BinMapper(max_bin=4, subsample=None).fit(X, w)
    # the quantile at 1/2 of the weight lies at 1500/3 = rank ~333 of the heavy half
    assert abs(m.edges_[0, 1] - 333) <= 1.5


def test_bin_le_b_iff_x_le_edge():
    rng = np.random.default_rng(1)
    X = np.round(rng.normal(size=(5000, 2)), 2)
    X[rng.random(X.shape) < 0.1] = np.nan
    m = BinMapper(max_bin=32, subsample=None).fit(X)
    Xb = m.transform(X)
    for j in range(2):
        ok = ~np.isnan(X[:, j])
        assert np.all(Xb[~ok, j] == m.missing_bin)
        for b in range(m.n_edges_[j]):
            np.testing.assert_array_equal(Xb[ok, j] <= b, X[ok, j] <= m.threshold(j, b))


def test_dtype_and_bad_max_bin():
    assert bin_dtype(255) == np.uint8 and bin_dtype(256) == np.uint16
    assert bin_dtype(256, has_missing=False) == np.uint8
    assert bin_dtype(257, has_missing=False) == np.uint16
    with pytest.raises(ValueError, match="max_bin"):
        bin_dtype(1)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=40),
       st.lists(st.floats(-2e6, 2e6, allow_nan=False), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_both_searches_count_the_edges_below(edges, xs):
    from deepnotes.boosting.binning import count_below, count_below_256

    e = np.unique(np.array(edges, dtype=np.float64))
    padded = np.concatenate([e, np.full(256 - e.shape[0], np.inf)])  # as transform pads
    for x in xs + [float(v) for v in e] + [np.inf, -np.inf]:  # an edge equal to x is not below
        expected = np.searchsorted(e, x, side="left")
        assert count_below(padded, e.shape[0], x) == expected
        assert count_below_256(padded, x) == expected


def test_unit_weights_give_the_same_edges_as_the_weighted_path():
    rng = np.random.default_rng(5)
    X = np.round(rng.normal(size=(5000, 3)), 2)  # ties, and more distinct values than bins
    X[rng.random(X.shape) < 0.1] = np.nan
    unit = BinMapper(32, subsample=None).fit(X)
    # weight 1 - 1e-16 rounds to 1.0 and so would take the unit path; 0.5 everywhere scales the
    # cumulative weights without changing any quantile and takes the weighted (argsort) path
    halves = BinMapper(32, subsample=None).fit(X, np.full(5000, 0.5))
    np.testing.assert_array_equal(unit.edges_, halves.edges_)
    np.testing.assert_array_equal(unit.n_edges_, halves.n_edges_)
    np.testing.assert_array_equal(unit.transform(X), unit.transform_row_major(X))
    assert unit.transform(X).flags.f_contiguous and unit.transform_row_major(X).flags.c_contiguous


def test_more_than_256_bins_take_the_general_search():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(3000, 2))
    mapper = BinMapper(1000, subsample=None).fit(X)
    assert mapper.edges_.shape[1] > 256
    expected = np.stack([np.searchsorted(mapper.edges_[j, :mapper.n_edges_[j]], X[:, j],
                                         side="left") for j in range(2)], axis=1)
    np.testing.assert_array_equal(mapper.transform(X), expected)


def test_256_bins_use_a_byte_only_without_missing_values_and_give_the_same_trees():
    from deepnotes.boosting import GBDTClassifier

    rng = np.random.default_rng(8)
    X = rng.normal(size=(4000, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int)
    mapper = BinMapper(256, subsample=None).fit(X)
    assert mapper.transform(X).dtype == np.uint8
    X_nan = X.copy()
    X_nan[::7, 2] = np.nan
    assert mapper.transform(X_nan).dtype == np.uint16
    wide = mapper.transform(X).astype(np.uint16)
    np.testing.assert_array_equal(mapper.transform(X), wide)
    # a NaN in a column the trees never use changes the storage, not the model
    X_col = np.hstack([X, np.zeros((4000, 1))])
    X_col_nan = X_col.copy()
    X_col_nan[0, 4] = np.nan
    a = GBDTClassifier(n_estimators=5, max_bin=256, colsample_bytree=1.0).fit(X_col, y)
    b = GBDTClassifier(n_estimators=5, max_bin=256, colsample_bytree=1.0).fit(X_col_nan, y)
    np.testing.assert_array_equal(a.predict_proba(X_col), b.predict_proba(X_col))


def test_missing_bin_follows_the_largest_bin_in_use():
    rng = np.random.default_rng(9)
    X = np.column_stack([rng.integers(0, 5, 1000), rng.normal(size=1000)]).astype(float)
    X[::10, 0] = np.nan
    few = BinMapper(256, subsample=None).fit(X[:, :1])
    assert few.missing_bin == 5 and few.transform(X[:, :1]).max() == 5
    many = BinMapper(256, subsample=None).fit(X)
    assert many.n_edges_[1] == 255 and many.missing_bin == 256
