"""The features xgboost and LightGBM users reach for: ours against both, same data, same run.

Sections (each a function ``section(quick) -> dict`` registered in ``SECTIONS``; the record holds
one entry per section under ``figures``):

- ``ranking``: a generated ranking set with known relevance (``gbdt_to_xgboost.ranking_data``:
  8 features, relevance 0..4 from a known score plus noise), 500 training queries of 30
  documents (125 held out). Ours (``GBDTRanker``, LambdaMART ``rank:ndcg``), xgboost's
  ``XGBRanker`` (``rank:ndcg``) and LightGBM's ``LGBMRanker`` (``lambdarank``), 100 rounds of
  depth-6 trees (LightGBM: ``num_leaves=63``, ``max_depth=6``), learning rate 0.1, 256 bins:
  held-out NDCG@10 and fit seconds.
- ``objectives``: each regression objective (Poisson, Gamma, Tweedie, pseudo-Huber, absolute,
  quantile 0.9) on its generated target (``gbdt_to_xgboost.objective_data``, 20 000 rows, 75 %
  train), ours against xgboost (hist, same parameters, 100 depth-6 rounds): fit seconds and
  held-out loss (the objective's own metric).

- ``categorical`` (gbdt-b): ``gbdt_to_xgboost.categorical_data``, a binary task whose strongest
  feature is one categorical of 200 Zipf-distributed categories, plus four numeric features;
  20 000 rows (75 % train). Ours with native categorical splits, with one-hot columns and with
  the integer codes read as numbers; xgboost with ``enable_categorical`` and with one-hot columns;
  LightGBM with ``categorical_feature`` (its own categorical smoothing kept); 100 depth-6 rounds
  (LightGBM: ``num_leaves=64``), learning rate 0.1, 256 bins: fit seconds, held-out log loss and
  accuracy; ``ratio_to_ours_native`` = a contender's best fit / our native best (above 1: ours
  native is faster).

Fit times: one warm-up fit, then ``repeat`` timed fits per contender, interleaved (one fit of
each per round, in turn); ``best_s`` is the best, all are recorded; ``ratio_to_xgboost`` = our
best / xgboost's (below 1: ours is faster). Two threads for everyone. The machine is shared: the
1-minute load average before and after each section is recorded; compare ratios, not seconds.

Usage: ``python benchmarks/gbdt_features.py [--quick]``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from deepnotes.core.bench import bench_main

#: The topics whose posts quote this benchmark.
TOPICS = ("gbdt-to-xgboost",)

THREADS = 2


def _interleaved(fits: dict, repeat: int) -> dict:
    """``fits``: name -> zero-argument callable that fits and returns the fitted model. Returns
    name -> {best_s, median_s, all_s, model} (the model of the last timed fit)."""
    models = {k: fn() for k, fn in fits.items()}  # warm-up: numba cache load, first allocations
    times = {k: [] for k in fits}
    for _ in range(repeat):
        for k, fn in fits.items():
            t0 = time.perf_counter()
            models[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: {"best_s": min(v), "median_s": float(np.median(v)), "all_s": v,
                "model": models[k]} for k, v in times.items()}


# --- gbdt-a: ranking ------------------------------------------------------------------------------
def ranking(quick: bool) -> dict:
    import lightgbm as lgb
    import xgboost as xgb

    from deepnotes.boosting.metrics import group_pointer, ndcg
    from deepnotes.boosting.ranking import GBDTRanker
    from deepnotes.experiments.gbdt_to_xgboost import ranking_data

    n_q, docs, rounds, repeat = (40, 10, 10, 1) if quick else (500, 30, 100, 2)
    X, rel, qid, _ = ranking_data(n_q, docs, seed=0)
    Xt, relt, qidt, st = ranking_data(n_q // 4, docs, seed=1)
    ptr_t = group_pointer(qid=qidt)
    common = dict(n_estimators=rounds, learning_rate=0.1, n_jobs=THREADS)
    fits = {
        "ours": lambda: GBDTRanker(max_depth=6, max_bin=256, **common).fit(X, rel, qid=qid),
        "xgboost": lambda: xgb.XGBRanker(objective="rank:ndcg", tree_method="hist",
                                         max_depth=6, max_bin=256, **common).fit(X, rel,
                                                                                 qid=qid),
        "lightgbm": lambda: lgb.LGBMRanker(objective="lambdarank", num_leaves=63, max_depth=6,
                                           max_bin=255, min_child_samples=1, verbose=-1,
                                           **common).fit(X, rel, group=np.diff(
                                               group_pointer(qid=qid))),
    }
    out: dict = {"train_queries": n_q, "docs_per_query": docs, "rounds": rounds,
                 "repeat": repeat, "load_average_1min_before": os.getloadavg()[0]}
    timed = _interleaved(fits, repeat)
    for who, t in timed.items():
        model = t.pop("model")
        t["test_ndcg10"] = ndcg(relt, model.predict(Xt), ptr_t, 10)
        out[who] = t
    out["oracle_test_ndcg10"] = ndcg(relt, st, ptr_t, 10)
    for who in ("ours", "lightgbm"):
        out[who]["ratio_to_xgboost"] = out[who]["best_s"] / out["xgboost"]["best_s"]
    out["ours"]["ratio_to_lightgbm"] = out["ours"]["best_s"] / out["lightgbm"]["best_s"]
    out["ours"]["ndcg10_minus_xgboost"] = out["ours"]["test_ndcg10"] - out["xgboost"][
        "test_ndcg10"]
    out["ours"]["ndcg10_minus_lightgbm"] = out["ours"]["test_ndcg10"] - out["lightgbm"][
        "test_ndcg10"]
    out["load_average_1min_after"] = os.getloadavg()[0]
    return out


# --- gbdt-a: regression objectives ----------------------------------------------------------------
def objectives(quick: bool) -> dict:
    import xgboost as xgb
    from sklearn.model_selection import train_test_split

    from deepnotes.boosting import GBDTRegressor
    from deepnotes.boosting.metrics import resolve
    from deepnotes.experiments.gbdt_to_xgboost import OBJECTIVES, objective_data

    n, rounds, repeat = (2_000, 10, 1) if quick else (20_000, 100, 2)
    out: dict = {"rows": n, "rounds": rounds, "repeat": repeat,
                 "load_average_1min_before": os.getloadavg()[0]}
    for name, metric_name in OBJECTIVES.items():
        X, y = objective_data(name, n, seed=0)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
        params = dict(objective=name, n_estimators=rounds, learning_rate=0.1, max_depth=6,
                      max_bin=256, n_jobs=THREADS)
        if name == "reg:quantileerror":
            params["quantile_alpha"] = 0.9
        metric = resolve(metric_name, alpha=0.9)
        timed = _interleaved({
            "ours": lambda p=params, a=Xtr, b=ytr: GBDTRegressor(**p).fit(a, b),
            "xgboost": lambda p=params, a=Xtr, b=ytr: xgb.XGBRegressor(
                tree_method="hist", **p).fit(a, b),
        }, repeat)
        row = {"metric": metric_name}
        for who, t in timed.items():
            row[who] = {"best_s": t["best_s"], "all_s": t["all_s"],
                        "test_loss": metric(yte, t["model"].predict(Xte))}
        row["ratio_to_xgboost"] = row["ours"]["best_s"] / row["xgboost"]["best_s"]
        row["loss_ratio_to_xgboost"] = row["ours"]["test_loss"] / row["xgboost"]["test_loss"]
        out[name.split(":")[1]] = row
    ratios = [out[k.split(":")[1]]["ratio_to_xgboost"] for k in OBJECTIVES]
    out["max_ratio_to_xgboost"] = max(ratios)
    out["min_ratio_to_xgboost"] = min(ratios)
    out["load_average_1min_after"] = os.getloadavg()[0]
    return out


# --- gbdt-b: native categorical splits ------------------------------------------------------------
def categorical(quick: bool) -> dict:
    from deepnotes.boosting.metrics import logloss
    from deepnotes.experiments.gbdt_to_xgboost import (
        CATEGORICAL_METHODS,
        categorical_data,
        categorical_inputs,
        categorical_model,
        fit_categorical,
    )

    n, levels, rounds, repeat = (4_000, 50, 20, 2) if quick else (20_000, 200, 100, 3)
    params = dict(n_estimators=rounds, learning_rate=0.1, max_depth=6, reg_lambda=1.0, gamma=0.0,
                  min_child_weight=1.0, max_bin=256, tree_method="hist", n_jobs=THREADS,
                  random_state=0)
    c, x, y = categorical_data(n, levels, seed=0)
    n_train = int(0.75 * n)
    inputs = {m: categorical_inputs(m, c, x, levels) for m in CATEGORICAL_METHODS}
    out: dict = {"n_train": n_train, "n_test": n - n_train, "levels": levels, "rounds": rounds,
                 "max_depth": params["max_depth"], "repeat": repeat,
                 "load_average_1min_before": os.getloadavg()[0]}
    timed = _interleaved({
        m: lambda m=m: fit_categorical(m, categorical_model(m, params), inputs[m][:n_train],
                                       y[:n_train])
        for m in CATEGORICAL_METHODS}, repeat)
    for m, t in timed.items():
        proba = t.pop("model").predict_proba(inputs[m][n_train:])[:, 1]
        t["columns"] = int(inputs[m].shape[1])
        t["test_logloss"] = logloss(y[n_train:], proba)
        t["test_accuracy"] = float(np.mean((proba > 0.5) == y[n_train:]))
        out[m.replace(" ", "_").replace("-", "")] = t
    base = out["ours_native"]["best_s"]
    for m in CATEGORICAL_METHODS:
        row = out[m.replace(" ", "_").replace("-", "")]
        row["ratio_to_ours_native"] = row["best_s"] / base
    out["ours_native"]["ratio_to_xgboost_native"] = base / out["xgboost_native"]["best_s"]
    out["ours_native"]["ratio_to_lightgbm_native"] = base / out["lightgbm_native"]["best_s"]
    out["load_average_1min_after"] = os.getloadavg()[0]
    return out


#: Section name -> function(quick) -> dict. Other sections register here.
SECTIONS = {"ranking": ranking, "objectives": objectives}
SECTIONS["categorical"] = categorical  # gbdt-b


def run(quick: bool = False) -> dict:
    import numba

    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    figures: dict = {"threads": THREADS, "load_average_1min_before": os.getloadavg()[0]}
    for name, section in SECTIONS.items():
        figures[name] = section(quick)
    figures["load_average_1min_after"] = os.getloadavg()[0]
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
