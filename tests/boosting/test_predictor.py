"""The numeric prediction kernel (``deepnotes.boosting.predictor``) against a plain per-row walk,
bit for bit: unbalanced trees, NaN sent left and right, thresholds at +/-inf and NaN, values tied
with thresholds, several outputs, single-leaf trees, node ids in any order, both the one-thread
and the parallel kernel; then a fitted model's raw scores, and clear errors on broken trees."""

import numpy as np
import pytest

from deepnotes.boosting import GBDTClassifier
from deepnotes.boosting import predictor as P
from deepnotes.boosting.predictor import (
    BLOCK,
    kernel_arrays,
    make_forest,
    predict_raw,
    tree_from_lists,
)

#: Feature values and thresholds come from one small pool, so that values equal to a threshold,
#: one ulp either side of it, signed zeros and infinities all occur.
POOL = np.array([-np.inf, -2.5, -1.0, -0.0, 0.0, np.nextafter(0.5, -1), 0.5,
                 np.nextafter(0.5, 2), 1.0, 3.0, np.finfo(np.float64).max, np.inf])


def _reference(trees, tree_class, X, out):
    """The walk the kernel must reproduce: per row, tree by tree, ``x <= threshold`` goes left
    and a missing x follows ``default_left``; the leaf value is added to ``out[row, class]``."""
    for i in range(X.shape[0]):
        for tree, c in zip(trees, tree_class, strict=True):
            node = 0
            while tree.left[node] != -1:
                x = X[i, tree.feature[node]]
                go_left = x <= tree.threshold[node] or (np.isnan(x) and tree.default_left[node])
                node = tree.left[node] if go_left else tree.right[node]
            out[i, c] += tree.value[node]
    return out


def _random_tree(rng, n_features, max_depth, p_leaf=0.3, shuffle=False):
    """An unbalanced tree: below the root each node is a leaf with probability ``p_leaf`` (always
    at ``max_depth``). Ids in breadth-first order with right = left + 1, as the growers number
    them, or (``shuffle``) every id but the root's permuted."""
    feature, threshold, default_left, left, right, value = [], [], [], [], [], []
    queue, depth = [0], {0: 0}
    while queue:
        node = queue.pop(0)
        for col in (feature, threshold, default_left, left, right, value):
            col.append(0)
        value[node] = rng.normal()
        leaf = depth[node] == max_depth or (node > 0 and rng.random() < p_leaf)
        if leaf:
            feature[node], threshold[node], left[node], right[node] = -1, 0.0, -1, -1
            continue
        feature[node] = int(rng.integers(n_features))
        u = rng.random()
        threshold[node] = np.nan if u < 0.05 else float(rng.choice(POOL))
        default_left[node] = int(rng.integers(2))
        n = len(feature) + len(queue)
        left[node], right[node] = n, n + 1
        depth[n] = depth[n + 1] = depth[node] + 1
        queue += [n, n + 1]
    cols = dict(feature=feature, threshold=threshold, default_left=default_left, left=left,
                right=right, value=value)
    if shuffle and len(feature) > 2:
        perm = np.r_[0, 1 + rng.permutation(len(feature) - 1)]  # old id -> new id; root stays 0
        inv = np.argsort(perm)
        for k in ("left", "right"):
            cols[k] = [perm[c] if c >= 0 else -1 for c in cols[k]]
        cols = {k: [v[j] for j in inv] for k, v in cols.items()}
    n = len(cols["feature"])
    return tree_from_lists(**cols, bin_threshold=[0] * n, gain=[0.0] * n, cover=[1.0] * n)


def _depth(tree, node=0):
    if tree.left[node] == -1:
        return 0
    return 1 + max(_depth(tree, tree.left[node]), _depth(tree, tree.right[node]))


def _single_leaf(value):
    return tree_from_lists(feature=[-1], threshold=[0.0], bin_threshold=[0], default_left=[0],
                           left=[-1], right=[-1], value=[value], gain=[0.0], cover=[1.0])


def _data(rng, n, n_features, nan_rows):
    X = rng.choice(POOL, size=(n, n_features))
    X += np.where(rng.random(X.shape) < 0.3, rng.normal(size=X.shape), 0.0)  # off-pool values
    rows = rng.random(n) < nan_rows
    X[rows[:, None] & (rng.random(X.shape) < 0.4)] = np.nan
    return X


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_kernel_equals_reference_walk_bit_for_bit(seed, shuffle, parallel, monkeypatch):
    rng = np.random.default_rng(seed)
    n_features, n_classes = 5, 3
    trees = [_random_tree(rng, n_features, int(rng.integers(1, 9)), shuffle=shuffle)
             for _ in range(24)]
    trees.insert(7, _single_leaf(rng.normal()))  # a tree that is one leaf (depth 0)
    tree_class = rng.integers(n_classes, size=len(trees))
    assert len({_depth(t) for t in trees}) > 3  # trees of many depths
    # 4 blocks and a part block: rows without NaN in some blocks (the step without the NaN
    # test), NaN in others; 3 tail rows after the groups of eight
    n = 4 * BLOCK + 19
    X = _data(rng, n, n_features, nan_rows=0.0)
    X[BLOCK + 5:2 * BLOCK + 30] = _data(rng, BLOCK + 25, n_features, nan_rows=0.5)
    base = rng.normal(size=(n, n_classes))
    monkeypatch.setattr(P, "PARALLEL_MIN_WORK", 0 if parallel else 10**12)
    got = predict_raw(make_forest(trees, tree_class), X, base.copy())
    want = _reference(trees, tree_class, X, base.copy())
    np.testing.assert_array_equal(got, want)
    assert got.tobytes() == want.tobytes()  # bit for bit, signed zeros included


def test_kernel_layout_leaves_are_self_loops_and_right_follows_left():
    rng = np.random.default_rng(5)
    trees = [_random_tree(rng, 4, 6, shuffle=True) for _ in range(5)] + [_single_leaf(2.0)]
    forest = make_forest(trees, [0] * len(trees))
    ka = kernel_arrays(forest)
    assert list(ka.start) == list(forest.roots)
    assert list(ka.depth) == [_depth(t) for t in trees]
    leaf = ka.left == np.arange(ka.left.shape[0])  # self-loops
    assert leaf.sum() == forest.left.tolist().count(-1)
    assert np.all(np.isposinf(ka.threshold[leaf])) and np.all(ka.default_left[leaf] == 1)
    assert sorted(ka.value[leaf]) == sorted(forest.value[forest.left == -1])
    # every internal slot's two children lie in its own tree, after it
    tree_of = np.searchsorted(forest.roots, np.arange(ka.left.shape[0]), side="right") - 1
    inner = np.flatnonzero(~leaf)
    assert np.all(ka.left[inner] > inner)
    assert np.all(tree_of[ka.left[inner]] == tree_of[inner])
    assert np.all(tree_of[ka.left[inner] + 1] == tree_of[inner])


def test_edge_sizes():
    tree = _random_tree(np.random.default_rng(1), 3, 4)
    forest = make_forest([tree, _single_leaf(0.25)], [0, 0])
    assert predict_raw(forest, np.empty((0, 3)), np.empty((0, 1))).shape == (0, 1)
    for n in (1, 7, 8, 9):  # fewer rows than a group of eight, exactly one, one more
        X = _data(np.random.default_rng(n), n, 3, nan_rows=0.5)
        got = predict_raw(forest, X, np.zeros((n, 1)))
        np.testing.assert_array_equal(got, _reference([tree, _single_leaf(0.25)], [0, 0], X,
                                                      np.zeros((n, 1))))
    only_leaf = make_forest([_single_leaf(-1.5)], [0])
    np.testing.assert_array_equal(predict_raw(only_leaf, np.ones((3, 2)), np.ones((3, 1))),
                                  np.full((3, 1), -0.5))
    stale = make_forest([tree], [0])
    stale._kernel = (np.zeros(3), np.zeros(1))  # a cached layout of an older version (a pickle)
    X = _data(np.random.default_rng(0), 20, 3, nan_rows=0.5)
    np.testing.assert_array_equal(predict_raw(stale, X, np.zeros((20, 1))),
                                  _reference([tree], [0], X, np.zeros((20, 1))))
    empty = make_forest([], [])
    assert np.all(predict_raw(empty, np.ones((3, 2)), np.ones((3, 1))) == 1.0)


def test_fitted_model_raw_scores_equal_reference_walk():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 6))
    y = np.digitize(X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=600), [-1.0, 0.5])  # 3 classes
    X[rng.random(X.shape) < 0.15] = np.nan
    model = GBDTClassifier(n_estimators=8, max_depth=4, learning_rate=0.3).fit(X, y)
    raw = model.decision_function_raw(X)
    base = np.repeat(model._base_score[None, :], X.shape[0], axis=0)
    want = _reference(model.trees_, model._tree_class, X, base)
    np.testing.assert_array_equal(raw, want)


def test_broken_trees_raise():
    tree = _random_tree(np.random.default_rng(2), 3, 3, p_leaf=0.0)
    bad = make_forest([tree], [0])
    bad.left[0] = 100  # a child outside the forest
    with pytest.raises(ValueError, match="outside its nodes"):
        kernel_arrays(bad)
    cyc = make_forest([tree], [0])
    cyc.left[1], cyc.right[1] = 0, 2  # node 1's children include the root: not a tree
    with pytest.raises(ValueError, match="do not form a binary tree"):
        kernel_arrays(cyc)
