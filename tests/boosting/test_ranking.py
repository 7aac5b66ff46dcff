"""LambdaMART / RankNet pairs: trees and scores equal to xgboost's XGBRanker, NDCG@k against a
hand-computed value and xgboost's metric, gradients of rank:pairwise against finite differences
of the RankNet loss, query-group handling and bad input."""

import json

import numpy as np
import pytest
import xgboost as xgb
from sklearn.base import clone
from test_objectives import _walk

from deepnotes.boosting.metrics import group_pointer, ndcg
from deepnotes.boosting.ranking import GBDTRanker, LambdaRank


def _ranking_set(n_queries=40, m=12, seed=0):
    """Relevance 0..4 from a known score of the features, plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_queries * m, 5)).astype(np.float32).astype(np.float64)
    rel = np.clip(np.round(1.2 * X[:, 0] + 0.6 * X[:, 1] + rng.normal(scale=0.5, size=len(X))
                           + 1), 0, 4)
    return X, rel, np.repeat(np.arange(n_queries), m)


@pytest.mark.parametrize("objective", ["rank:ndcg", "rank:pairwise"])
def test_trees_and_scores_equal_xgboost_ranker(objective):
    X, rel, qid = _ranking_set()
    kw = dict(learning_rate=0.5, max_depth=3, base_score=0.0, min_child_weight=0.1,
              objective=objective, tree_method="exact")
    ours = GBDTRanker(n_estimators=1, **kw).fit(X, rel, qid=qid)
    theirs = xgb.XGBRanker(n_estimators=1, n_jobs=1, **kw).fit(X, rel, qid=qid)
    dump = json.loads(theirs.get_booster().get_dump(dump_format="json", with_stats=True)[0])
    assert _walk(ours.trees_[0], 0, dump) == ours.trees_[0].n_nodes >= 11
    # 20 rounds: each round's lambdas depend on the previous scores' ranking
    ours = GBDTRanker(n_estimators=20, **kw).fit(X, rel, qid=qid)
    theirs = xgb.XGBRanker(n_estimators=20, n_jobs=1, **kw).fit(X, rel, qid=qid)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=1e-5)


def test_truncation_and_linear_gain_equal_xgboost():
    X, rel, qid = _ranking_set(seed=1)
    kw = dict(n_estimators=10, learning_rate=0.3, max_depth=3, base_score=0.0,
              tree_method="exact", lambdarank_num_pair_per_sample=3, ndcg_exp_gain=False)
    ours = GBDTRanker(**kw).fit(X, rel, qid=qid)
    theirs = xgb.XGBRanker(n_jobs=1, lambdarank_pair_method="topk", **kw).fit(X, rel, qid=qid)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=1e-5)


def test_ndcg_by_hand_and_against_xgboost_metric():
    # one query: labels 3, 2, 0, 1 with scores 0.1, 0.9, 0.5, 0.3 -> ranked labels 2, 0, 1, 3
    # (gains 3, 0, 1, 7); the ideal order 3, 2, 1, 0 has gains 7, 3, 1, 0
    y, s = np.array([3.0, 2.0, 0.0, 1.0]), np.array([0.1, 0.9, 0.5, 0.3])
    d = 1 / np.log2(np.arange(4) + 2)
    dcg = 3 * d[0] + 0 * d[1] + 1 * d[2] + 7 * d[3]
    idcg = 7 * d[0] + 3 * d[1] + 1 * d[2] + 0 * d[3]
    assert ndcg(y, s, [0, 4]) == pytest.approx(dcg / idcg)
    assert ndcg(y, s, [0, 4], k=2) == pytest.approx((3 * d[0]) / (7 * d[0] + 3 * d[1]))
    assert ndcg(np.zeros(3), np.arange(3.0), [0, 3]) == 1.0  # no relevant document
    # the per-round eval metric equals xgboost's ndcg@5 on the same eval set
    X, rel, qid = _ranking_set(seed=2)
    Xv, relv, qidv = _ranking_set(n_queries=15, seed=3)
    kw = dict(n_estimators=8, learning_rate=0.3, max_depth=3, base_score=0.0,
              tree_method="exact", eval_metric="ndcg@5")
    ours = GBDTRanker(**kw).fit(X, rel, qid=qid, eval_set=[(Xv, relv)], eval_qid=[qidv])
    theirs = xgb.XGBRanker(n_jobs=1, **kw).fit(X, rel, qid=qid, eval_set=[(Xv, relv)],
                                               eval_qid=[qidv], verbose=False)
    np.testing.assert_allclose(ours.evals_result()["validation_0"]["ndcg@5"],
                               theirs.evals_result()["validation_0"]["ndcg@5"], atol=1e-6)
    assert ours.score(Xv, relv, qid=qidv, k=5) == pytest.approx(
        ours.evals_result()["validation_0"]["ndcg@5"][-1])


def test_pairwise_gradients_are_the_ranknet_loss_derivative():
    """With every score distinct and unnormalised, rank:pairwise's g is d/ds of
    sum over pairs log(1 + exp(-(s_hi - s_lo))) / (|s_hi - s_lo| + 0.01), times the
    per-query factor log2(1 + S)/S; here we check the direction and the pair structure on a
    two-document query, where the factor is known in closed form."""
    y = np.array([1.0, 0.0])
    s = np.array([0.3, -0.2])
    obj = LambdaRank("rank:pairwise", [0, 2])
    g = np.empty((1, 2), np.float32)
    h = np.empty((1, 2), np.float32)
    obj.gradients(y, s[None, :].copy(), np.ones(2), g, h)
    sig = 1 / (1 + np.exp(-(s[0] - s[1])))
    lam = (sig - 1) / (abs(s[0] - s[1]) + 0.01)
    total = -2 * lam
    norm = np.log2(1 + total) / total
    np.testing.assert_allclose(g[0], [lam * norm, -lam * norm], rtol=1e-6)
    np.testing.assert_allclose(h[0], [2 * sig * (1 - sig) / (abs(s[0] - s[1]) + 0.01) * norm] * 2,
                               rtol=1e-6)
    # and lam is the derivative of the RankNet loss log(1 + e^-(s0 - s1)), scaled
    eps = 1e-6
    loss = lambda a: np.log1p(np.exp(-(a - s[1])))  # noqa: E731
    fd = (loss(s[0] + eps) - loss(s[0] - eps)) / (2 * eps)
    assert lam * (abs(s[0] - s[1]) + 0.01) == pytest.approx(fd, rel=1e-6)


def test_lambdamart_learns_the_known_relevance():
    X, rel, qid = _ranking_set(n_queries=60, seed=4)
    Xt, relt, qidt = _ranking_set(n_queries=30, seed=5)
    est = GBDTRanker(n_estimators=40, learning_rate=0.2, max_depth=3).fit(X, rel, qid=qid)
    random_score = np.random.default_rng(0).random(len(relt))
    true_score = 1.2 * Xt[:, 0] + 0.6 * Xt[:, 1]
    ours = est.score(Xt, relt, qid=qidt, k=10)
    assert ours > ndcg(relt, random_score, group_pointer(qid=qidt), 10) + 0.15
    assert ours > ndcg(relt, true_score, group_pointer(qid=qidt), 10) - 0.05


def test_group_sizes_query_ids_weights_and_clone():
    X, rel, qid = _ranking_set(n_queries=10, m=6)
    a = GBDTRanker(n_estimators=5).fit(X, rel, qid=qid)
    b = GBDTRanker(n_estimators=5).fit(X, rel, group=[6] * 10)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    # a query weight of 2 equals... the same model when every weight is 2 (normalised)
    c = GBDTRanker(n_estimators=5).fit(X, rel, group=[6] * 10, sample_weight=np.full(10, 2.0))
    np.testing.assert_allclose(a.predict(X), c.predict(X), rtol=1e-6)
    est = GBDTRanker(n_estimators=3, max_depth=2, lambdarank_num_pair_per_sample=4)
    assert clone(est).get_params() == est.get_params()
    assert {"max_depth", "lambdarank_num_pair_per_sample", "objective"} <= set(est.get_params())


@pytest.mark.parametrize("kw,match", [
    (dict(group=[6] * 9), r"group sizes sum to 54 but there are 60 rows"),
    (dict(group=[6] * 9 + [5.5]), r"group must be"),
    (dict(), r"exactly one of group"),
    (dict(qid=np.tile(np.arange(10), 6)),
     r"qid: the rows of each query must be contiguous"),
    (dict(qid=np.arange(59)), r"qid must have one entry per row"),
    (dict(group=[6] * 10, sample_weight=np.ones(60)), r"one weight per query"),
])
def test_bad_query_groups(kw, match):
    X, rel, _ = _ranking_set(n_queries=10, m=6)
    with pytest.raises(ValueError, match=match):
        GBDTRanker(n_estimators=2).fit(X, rel, **kw)


def test_bad_ranker_parameters():
    X, rel, qid = _ranking_set(n_queries=10, m=6)
    with pytest.raises(ValueError, match="objective"):
        GBDTRanker(objective="reg:squarederror").fit(X, rel, qid=qid)
    with pytest.raises(ValueError, match="lambdarank_pair_method"):
        GBDTRanker(lambdarank_pair_method="mean").fit(X, rel, qid=qid)
    with pytest.raises(ValueError, match="relevance"):
        GBDTRanker().fit(X, -rel - 1, qid=qid)
    with pytest.raises(ValueError, match="eval_group"):
        GBDTRanker().fit(X, rel, qid=qid, eval_set=[(X, rel)])
