"""TreeSHAP: our ``predict_contributions`` against xgboost's ``pred_contribs`` on the same trees.

Data: ``make_classification(n=12_500, 28 features, 20 informative, random_state=0)`` with 10 %
of the values set to NaN (so the default directions are exercised), first 10 000 rows. xgboost
fits 100 depth-6 trees (hist, learning rate 0.1, L2 = 1, min_child_weight = 1, base_score 0.5);
our estimator then holds the very same trees (``_ours_from_xgboost``: thresholds, default
directions, leaf values and covers copied), so both explain one model: the agreement of margins
and contributions is recorded (``margin_max_abs_diff``, ``contributions_max_abs_diff``,
``rows_equal_fraction``). Each explains the 10 000 training rows, as in a SHAP summary plot.
Interaction values (``pred_interactions``, about ``n_features`` times the work) are timed on the
first 100 rows, three calls each.

Both run on 2 threads. Every contender gets one warm-up call and ``repeat`` timed calls,
interleaved (one call of each per round, in turn); the best is ``best_s``, all are recorded.
``ratio`` = our best time / xgboost's (below 1: ours is faster). The load average before and
after is recorded: the machine is shared, so compare the ratio, not the seconds.

Usage: ``python benchmarks/gbdt_shap.py [--quick]``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from deepnotes.core.bench import bench_main

#: The topics whose posts quote this benchmark.
TOPICS = ("gbdt-to-xgboost",)

THREADS = 2
PARAMS = dict(learning_rate=0.1, max_depth=6, reg_lambda=1.0, min_child_weight=1.0,
              base_score=0.5, tree_method="hist", n_jobs=THREADS)


def _interleaved(fns: dict, repeat: int) -> dict:
    for fn in fns.values():
        fn()  # warm-up (numba cache load / first allocation)
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: {"best_s": min(v), "median_s": float(np.median(v)), "all_s": v}
            for k, v in times.items()}


def _ours_from_xgboost(booster, X, y):
    """Our classifier holding xgboost's trees, node for node: ``x < t`` (float32 ``t``) becomes
    ``x <= nextafter(t, -inf)``, which is the same test for every float64 ``x``; leaf values,
    covers and default directions are copied. Nodes are renumbered breadth-first so that each
    right child directly follows its left one (our predictor's layout)."""
    import json

    from deepnotes.boosting import GBDTClassifier
    from deepnotes.boosting.predictor import tree_from_lists

    model = GBDTClassifier(n_estimators=1, max_depth=1, n_jobs=THREADS).fit(X[:50], y[:50])
    trees = []
    for dump in booster.get_dump(dump_format="json", with_stats=True):
        cols = {k: [] for k in ("feature", "threshold", "bin_threshold", "default_left", "left",
                                "right", "value", "gain", "cover")}
        queue = [json.loads(dump)]
        for node in queue:  # grows while we walk it: breadth-first
            leaf = "leaf" in node
            kids = {} if leaf else {c["nodeid"]: c for c in node["children"]}
            cols["feature"].append(-1 if leaf else int(node["split"][1:]))
            # the dump prints float32 thresholds in decimal: round back to float32 first
            cols["threshold"].append(0.0 if leaf else float(
                np.nextafter(np.float64(np.float32(node["split_condition"])), -np.inf)))
            cols["bin_threshold"].append(-1)
            cols["default_left"].append(0 if leaf else int(node["missing"] == node["yes"]))
            cols["left"].append(-1 if leaf else len(queue))
            cols["right"].append(-1 if leaf else len(queue) + 1)
            cols["value"].append(node["leaf"] if leaf else 0.0)
            cols["gain"].append(0.0 if leaf else node["gain"])
            cols["cover"].append(node["cover"])
            if not leaf:
                queue += [kids[node["yes"]], kids[node["no"]]]
        trees.append(tree_from_lists(**cols))
    model._trees, model._tree_class = trees, [0] * len(trees)
    model._base_score = np.zeros(1)  # base_score 0.5 is a margin of 0
    model._finish()
    return model


def run(quick: bool = False) -> dict:
    import numba
    import xgboost as xgb
    from sklearn.datasets import make_classification

    from deepnotes.boosting.shap import contributions_method

    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    n, n_trees, repeat = (1_000, 10, 2) if quick else (10_000, 100, 5)
    n_inter = 20 if quick else 100
    X, y = make_classification(n_samples=n + n // 4, n_features=28, n_informative=20,
                               random_state=0)
    X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    X = X.astype(np.float32).astype(np.float64)  # xgboost works in float32: same data for both
    X, y = X[:n], y[:n]
    figures: dict = {"n_rows": n, "n_features": X.shape[1], "n_trees": n_trees,
                     "max_depth": PARAMS["max_depth"], "threads": THREADS,
                     "interaction_rows": n_inter,
                     "load_average_1min_before": os.getloadavg()[0]}

    theirs = xgb.XGBClassifier(n_estimators=n_trees, **PARAMS).fit(X, y)
    booster = theirs.get_booster()
    ours = _ours_from_xgboost(booster, X, y)
    dm = xgb.DMatrix(X, nthread=THREADS)
    dm_inter = xgb.DMatrix(X[:n_inter], nthread=THREADS)
    figures["leaves"] = int(sum(t.n_leaves for t in ours.trees_))
    figures["margin_max_abs_diff"] = float(np.abs(
        ours.decision_function_raw(X)[:, 0] - booster.predict(xgb.DMatrix(X),
                                                              output_margin=True)).max())
    t0 = time.perf_counter()
    c_ours = ours.predict_contributions(X)
    figures["ours_first_call_s"] = time.perf_counter() - t0  # numba cache load (or compile)
    c_theirs = booster.predict(dm, pred_contribs=True)
    figures["contributions_max_abs_diff"] = float(np.abs(c_ours - c_theirs).max())
    figures["contributions_max_abs"] = float(np.abs(c_theirs).max())
    figures["rows_equal_fraction"] = float(np.mean(
        np.abs(c_ours - c_theirs).max(axis=1) <= 1e-4 + 1e-5 * np.abs(c_theirs).max(axis=1)))
    figures["ours_contributions_method"] = contributions_method(ours.trees_, len(X))
    i_ours = ours.predict_interactions(X[:n_inter])
    i_theirs = booster.predict(dm_inter, pred_interactions=True)
    figures["interactions_max_abs_diff"] = float(np.abs(i_ours - i_theirs).max())

    contrib = _interleaved({
        "ours": lambda: ours.predict_contributions(X),
        "xgboost": lambda: booster.predict(dm, pred_contribs=True),
    }, repeat)
    inter = _interleaved({
        "ours": lambda: ours.predict_interactions(X[:n_inter]),
        "xgboost": lambda: booster.predict(dm_inter, pred_interactions=True),
    }, min(repeat, 3))
    figures["contributions"] = {**contrib, "ratio": contrib["ours"]["best_s"]
                                / contrib["xgboost"]["best_s"]}
    figures["interactions"] = {**inter, "ratio": inter["ours"]["best_s"]
                               / inter["xgboost"]["best_s"]}
    figures["load_average_1min_after"] = os.getloadavg()[0]
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
