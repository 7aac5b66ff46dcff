"""deepnotes.boosting random forests and AdaBoost vs scikit-learn's: fit and predict time, accuracy.

Same hyper-parameters for both, 2 threads (``n_jobs=2``; AdaBoost is sequential in both):

- random forest: 100 trees grown to purity, ``max_features='sqrt'`` (classifiers) or 1.0
  (regression, scikit-learn's default), bootstrap;
- AdaBoost (SAMME): 100 rounds of depth-1 trees (classification only).

Data: the bundled breast_cancer (binary), digits (ten classes) and diabetes (regression), and
``make_classification(n_samples=100_000, n_features=28, n_informative=20, random_state=0)``; all
split 80/20 with ``random_state=0``. Times are the best of ``repeat`` runs after a warm-up (JIT
excluded); ``ours_jit_s`` is the warm-up fit of ours on a tiny set in this process (loading the
numba cache), ``ours_cold_jit_s`` the same in a subprocess with an empty cache (full run only).
``--quick`` uses 20 trees / rounds, breast_cancer and a 5,000-row synthetic set.
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


def _models(kind: str, regression: bool, n: int):
    from sklearn import ensemble as sk

    from deepnotes.boosting.ensemble import AdaBoostClassifier
    from deepnotes.boosting.forest import RandomForestClassifier, RandomForestRegressor

    if kind == "random_forest":
        kw = dict(n_estimators=n, n_jobs=N_JOBS, random_state=0)
        if regression:
            return RandomForestRegressor(**kw), sk.RandomForestRegressor(**kw)
        return RandomForestClassifier(**kw), sk.RandomForestClassifier(**kw)
    kw = dict(n_estimators=n, random_state=0)
    return AdaBoostClassifier(**kw), sk.AdaBoostClassifier(**kw)


def _measure(est, Xtr, ytr, Xte, yte, repeat: int) -> dict:
    fit = time_call(lambda: est.fit(Xtr, ytr), repeat=repeat, warmup=0)
    pred = time_call(lambda: est.predict(Xte), repeat=max(repeat, 3), warmup=1)
    return {"fit_s": fit["best_s"], "fit_median_s": fit["median_s"],
            "predict_s": pred["best_s"], "score": float(est.score(Xte, yte))}


def _cold_jit_s() -> float:
    """The warm-up in a subprocess with an empty numba cache: compile time from scratch."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", _WARMUP], env=env, capture_output=True,
                             text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    t0 = time.perf_counter()
    exec(_WARMUP.replace("print(", "_ = ("), {})  # noqa: S102 - our own constant: load the cache
    figures: dict = {"ours_jit_s": time.perf_counter() - t0, "n_jobs": N_JOBS}
    if not quick:
        figures["ours_cold_jit_s"] = _cold_jit_s()
    n_learners = 20 if quick else 100
    n_synthetic = 5_000 if quick else 100_000
    names = ("breast_cancer", "synthetic") if quick else ("breast_cancer", "digits", "diabetes",
                                                          "synthetic")
    figures.update(n_learners=n_learners, n_synthetic=n_synthetic, results={})
    for name in names:
        Xtr, Xte, ytr, yte = _dataset(name, n_synthetic)
        regression = name == "diabetes"
        big = name == "synthetic" and not quick
        repeat = 1 if big or quick else 3
        rows = {}
        for kind in ("random_forest", "adaboost"):
            if regression and kind == "adaboost":
                continue
            ours, ref = _models(kind, regression, n_learners)
            r_ours = _measure(ours, Xtr, ytr, Xte, yte, repeat)
            r_ref = _measure(ref, Xtr, ytr, Xte, yte, repeat)
            rows[kind] = {
                "metric": "r2" if regression else "accuracy",
                "ours": r_ours, "sklearn": r_ref,
                "fit_speedup": r_ref["fit_s"] / r_ours["fit_s"],
                "predict_speedup": r_ref["predict_s"] / r_ours["predict_s"],
                "score_diff": r_ours["score"] - r_ref["score"],
            }
        figures["results"][name] = {"n_train": len(Xtr), "n_test": len(Xte),
                                    "n_features": Xtr.shape[1], **rows}
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
