"""deepnotes.boosting.grower: the training-score update equals predicting the grown tree."""

import numpy as np
import pytest

from deepnotes.boosting.binning import BinMapper
from deepnotes.boosting.grower import TreeParams, grow_tree
from deepnotes.boosting.predictor import make_forest, predict_raw


@pytest.mark.parametrize("n", [30000, 3000])  # parallel and one-thread kernels
@pytest.mark.parametrize("policy", ["depthwise", "lossguide"])
@pytest.mark.parametrize("subsample", [False, True])
def test_scores_update_equals_the_trees_prediction(policy, subsample, n):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(n, 5))
    X[rng.random(X.shape) < 0.1] = np.nan
    grad = (rng.normal(size=n) + np.nan_to_num(X[:, 0])).astype(np.float32)
    hess = rng.uniform(0.5, 1.5, size=n).astype(np.float32)
    mapper = BinMapper(64, subsample=None).fit(X)
    Xb_rows = mapper.transform_row_major(X)
    Xb = np.asfortranarray(Xb_rows)
    rows = np.arange(n, dtype=np.int32)
    if subsample:
        rows = np.flatnonzero(rng.random(n) < 0.7).astype(np.int32)
    params = TreeParams(max_depth=4 if policy == "depthwise" else 0, grow_policy=policy,
                        max_leaves=0 if policy == "depthwise" else 12, learning_rate=0.5)
    grown = grow_tree(Xb, Xb_rows, grad, hess, rows, not subsample,
                      np.arange(5, dtype=np.int64), mapper.n_edges_, mapper.edges_,
                      mapper.missing_bin, params, rng)
    assert (grown.routed is not None) == (policy == "depthwise")  # max_depth reached
    scores = np.zeros(n)
    grown.add_to_scores(scores, rows, Xb, mapper.missing_bin)
    expected = predict_raw(make_forest([grown.tree], [0]), X, np.zeros((n, 1)))[:, 0]
    # each training row gets exactly one leaf value: equal bit for bit, others untouched
    np.testing.assert_array_equal(scores[rows], expected[rows])
    untouched = np.setdiff1d(np.arange(n), rows)
    assert np.all(scores[untouched] == 0.0)
