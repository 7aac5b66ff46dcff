"""deepnotes.boosting random forests and AdaBoost vs scikit-learn's: fit and predict time, accuracy.

Same hyper-parameters for both, 2 threads (``n_jobs=2``; AdaBoost is sequential in both):

- random forest: 100 trees grown to purity, ``max_features='sqrt'`` (classifiers) or 1.0
  (regression, scikit-learn's default), bootstrap;
- AdaBoost (SAMME): 100 rounds of depth-1 trees (classification only).

Data: the bundled breast_cancer (binary), digits (ten classes) and diabetes (regression), and
``make_classification(n_samples=100_000, n_features=28, n_informative=20, random_state=0)``; all
split 80/20 with ``random_state=0``.

Two comparisons per data set, because the methods differ by default: our trees split on at most
256 quantile bins per feature (``max_bin=256``) while scikit-learn's search every threshold.

- ``random_forest`` / ``adaboost``: both as shipped (ours binned, scikit-learn's exact);
- ``random_forest_like`` / ``adaboost_like``: like with like. On the small sets ours get
  ``max_bin`` = the largest number of distinct values of a feature, so our candidates are every
  midpoint, as scikit-learn's (``"comparison": "exact"``). The 100k-row set has 80,000 distinct
  values per feature (more than ``max_bin`` allows), so there both get the same data quantised to
  256 quantile bins, on which both search the same 255 candidates (``"binned_both"``).

Timing: a warm-up fit and predict of each model (on the first 5,000 training rows at most: loads
our JIT cache and warms scikit-learn's imports), then ``repeat`` fits and ``predict_repeat``
predictions, interleaved ours / theirs (the order alternates between repeats). Every repeat is
recorded (``fit_all_s``, ``predict_all_s``); ``fit_s``/``predict_s`` are the best, ``*_median_s``
the medians, ``*_speedup`` = theirs / ours of the best, ``*_speedup_median`` of the medians; the
load average is recorded before and after each data set (the machine is shared). ``ours_jit_s`` is
the warm-up fit of ours on a tiny set in this process (loading the numba cache),
``ours_cold_jit_s`` the same in a subprocess with an empty cache (full run only). ``--quick`` uses
20 trees / rounds, breast_cancer and a 5,000-row synthetic set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from deepnotes.core.bench import bench_main, time_call

#: The topics whose posts quote this benchmark (`deepnotes bench SLUG` finds it).
TOPICS = ("ensemble-learning",)

N_JOBS = 2
_WARMUP = ("import numpy as np, time; t = time.perf_counter(); "
           "from deepnotes.boosting.forest import RandomForestClassifier as R; "
           "from deepnotes.boosting.ensemble import AdaBoostClassifier as A; "
           "X = np.random.default_rng(0).normal(size=(200, 4)); y = (X[:, 0] > 0).astype(int); "
           "R(n_estimators=4, oob_score=True, n_jobs=2).fit(X, y).predict(X); "
           "A(n_estimators=4).fit(X, y).predict(X); print(time.perf_counter() - t)")


def _dataset(name: str, n_synthetic: int):
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, make_classification
    from sklearn.model_selection import train_test_split

    if name == "synthetic":
        X, y = make_classification(n_samples=n_synthetic, n_features=28, n_informative=20,
                                   random_state=0)
    else:
        X, y = {"breast_cancer": load_breast_cancer, "digits": load_digits,
                "diabetes": load_diabetes}[name](return_X_y=True)
    return train_test_split(X, y, test_size=0.2, random_state=0)


def _models(kind: str, regression: bool, n: int, max_bin: int = 256):
    from sklearn import ensemble as sk

    from deepnotes.boosting.ensemble import AdaBoostClassifier
    from deepnotes.boosting.forest import (
        DecisionTreeClassifier,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    if kind == "random_forest":
        kw = dict(n_estimators=n, n_jobs=N_JOBS, random_state=0)
        if regression:
            return (RandomForestRegressor(max_bin=max_bin, **kw),
                    sk.RandomForestRegressor(**kw))
        return RandomForestClassifier(max_bin=max_bin, **kw), sk.RandomForestClassifier(**kw)
    kw = dict(n_estimators=n, random_state=0)
    return (AdaBoostClassifier(DecisionTreeClassifier(max_depth=1, max_bin=max_bin), **kw),
            sk.AdaBoostClassifier(**kw))


def _quantise(Xtr, Xte, n_bins: int = 256):
    """Both sets as bin indices (floats) of ``n_bins`` quantile bins fitted on ``Xtr``."""
    import numpy as np

    from deepnotes.boosting.binning import BinMapper

    mapper = BinMapper(n_bins, random_state=np.random.default_rng(0)).fit(Xtr)
    return (mapper.transform(Xtr).astype(np.float64),
            mapper.transform(Xte).astype(np.float64))


def _summary(times: list[float], name: str) -> dict:
    import statistics

    return {f"{name}_s": min(times), f"{name}_median_s": statistics.median(times),
            f"{name}_all_s": times}


def _compare(ours, ref, Xtr, ytr, Xte, yte, repeat: int, predict_repeat: int) -> dict:
    """Warm up both, then time fits and predictions interleaved (alternating who goes first)."""
    m = min(len(Xtr), 5_000)
    for est in (ours, ref):
        est.fit(Xtr[:m], ytr[:m]).predict(Xte)
    pair = {"ours": ours, "sklearn": ref}
    fits: dict = {"ours": [], "sklearn": []}
    preds: dict = {"ours": [], "sklearn": []}
    for r in range(repeat):
        for who in (("ours", "sklearn") if r % 2 == 0 else ("sklearn", "ours")):
            fits[who].append(time_call(lambda e=pair[who]: e.fit(Xtr, ytr), repeat=1,
                                       warmup=0)["best_s"])
    for r in range(predict_repeat + 1):  # the first round warms the fitted models: not kept
        for who in (("ours", "sklearn") if r % 2 == 0 else ("sklearn", "ours")):
            t = time_call(lambda e=pair[who]: e.predict(Xte), repeat=1, warmup=0)["best_s"]
            if r:
                preds[who].append(t)
    out = {who: {**_summary(fits[who], "fit"), **_summary(preds[who], "predict"),
                 "score": float(pair[who].score(Xte, yte))} for who in pair}
    o, s = out["ours"], out["sklearn"]
    out.update(fit_speedup=s["fit_s"] / o["fit_s"],
               fit_speedup_median=s["fit_median_s"] / o["fit_median_s"],
               predict_speedup=s["predict_s"] / o["predict_s"],
               predict_speedup_median=s["predict_median_s"] / o["predict_median_s"],
               predict_ratio_all=[a / b for a, b in zip(o["predict_all_s"],
                                                        s["predict_all_s"], strict=True)],
               score_diff=o["score"] - s["score"])
    return out


def _cold_jit_s() -> float:
    """The warm-up in a subprocess with an empty numba cache: compile time from scratch."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", _WARMUP], env=env, capture_output=True,
                             text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    import numpy as np

    t0 = time.perf_counter()
    exec(_WARMUP.replace("print(", "_ = ("), {})  # noqa: S102 - our own constant: load the cache
    figures: dict = {"ours_jit_s": time.perf_counter() - t0, "n_jobs": N_JOBS}
    if not quick:
        figures["ours_cold_jit_s"] = _cold_jit_s()
    n_learners = 20 if quick else 100
    n_synthetic = 5_000 if quick else 100_000
    repeat, predict_repeat = (2, 3) if quick else (3, 5)
    names = ("breast_cancer", "synthetic") if quick else ("breast_cancer", "digits", "diabetes",
                                                          "synthetic")
    figures.update(n_learners=n_learners, n_synthetic=n_synthetic, repeat=repeat,
                   predict_repeat=predict_repeat, results={})
    for name in names:
        Xtr, Xte, ytr, yte = _dataset(name, n_synthetic)
        regression = name == "diabetes"
        n_distinct = max(len(np.unique(col)) for col in Xtr.T)
        rows = {"load_avg_before": os.getloadavg()}
        for kind in ("random_forest", "adaboost"):
            if regression and kind == "adaboost":
                continue
            ours, ref = _models(kind, regression, n_learners)
            rows[kind] = {"metric": "r2" if regression else "accuracy", "comparison": "as_shipped",
                          **_compare(ours, ref, Xtr, ytr, Xte, yte, repeat, predict_repeat)}
            if n_distinct <= 65535 and len(Xtr) <= 10_000:
                ours, ref = _models(kind, regression, n_learners, max_bin=max(n_distinct, 2))
                data, how = (Xtr, Xte), {"comparison": "exact", "ours_max_bin": n_distinct}
            else:
                ours, ref = _models(kind, regression, n_learners)
                data, how = _quantise(Xtr, Xte), {"comparison": "binned_both", "n_bins": 256}
            rows[f"{kind}_like"] = {"metric": rows[kind]["metric"], **how,
                                    **_compare(ours, ref, data[0], ytr, data[1], yte, repeat,
                                               predict_repeat)}
        rows["load_avg_after"] = os.getloadavg()
        figures["results"][name] = {"n_train": len(Xtr), "n_test": len(Xte),
                                    "n_features": Xtr.shape[1], "max_distinct_values": n_distinct,
                                    **rows}
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
