"""Least-squares SGD: ours (numba per-sample, numpy mini-batch) vs scikit-learn's SGDRegressor.

Same data, same step sizes (``alpha_k = eta0 / k**power_t``, sklearn's ``invscaling``), no
penalty, no intercept (features standardised, target centred), same number of shuffled passes.

The timed unit is the same for every contender: one whole fit of ``epochs`` passes, including
drawing the shuffles and the step sizes (ours: :func:`_ours_fit`; scikit-learn: ``fit``, which
also validates its input; the mini-batch variant: :func:`deepnotes.rl.approx.sgd`). After one
warm-up fit each, ``repeat`` fits of each are timed interleaved (the order alternates) and every
repeat is recorded (``*_fit_all_s``); ``*_epoch_s`` is the best whole fit divided by ``epochs``,
``speedup_numba_vs_sklearn`` the ratio of the best fits (``*_median`` of the medians).
``ours_numba_kernel_epoch_s`` is the numba kernel alone on one precomputed epoch (the figure this
benchmark reported before, kept for reference: not comparable with scikit-learn's fit).
Accuracy: final ``||w - w*|| / ||w*||`` against ``lstsq``. The numba kernel's compile time is
reported separately.
"""

from __future__ import annotations

import os
import time
import warnings

import numba
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDRegressor

from deepnotes.core.bench import bench_main, time_call
from deepnotes.rl import approx as A


def _standardise(X, y):
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = y - y.mean()
    return X, y / y.std()


def _sklearn(X, y, eta0, power_t, epochs, seed=0):
    model = SGDRegressor(loss="squared_error", penalty=None, alpha=0.0, fit_intercept=False,
                         learning_rate="invscaling", eta0=eta0, power_t=power_t, max_iter=epochs,
                         tol=None, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fixed passes, by design
        model.fit(X, y)
    return model.coef_


def _ours_fit(X, y, eta0, power_t, epochs, seed=0):
    """A whole fit, as scikit-learn's: shuffles, step sizes, then the numba kernel."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    alphas = A.power(eta0, power_t)(np.arange(1, order.size + 1))
    return A.least_squares_sgd_numba(X, y, np.zeros(d), order, alphas)


def _interleaved(fns: dict, repeat: int) -> dict:
    """One warm-up call each, then ``repeat`` timed calls each, alternating the order."""
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        for k in (names if r % 2 == 0 else names[::-1]):
            times[k].append(time_call(fns[k], repeat=1, warmup=0)["best_s"])
    return times


def _compare(X, y, eta0, power_t, epochs, batch_size, repeat):
    n, d = X.shape
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]

    def rel(w):
        return float(np.linalg.norm(w - w_star) / np.linalg.norm(w_star))

    obj = A.LeastSquares(X, y)
    mb_steps = max(1, n // batch_size)
    # B-fold less gradient noise allows B-fold larger steps, capped at 1/L for stability
    lipschitz = float(np.linalg.eigvalsh(obj.hessian())[-1])
    mb_sched = A.power(min(eta0 * batch_size, 1.0 / lipschitz), power_t)

    def minibatch():
        return A.sgd(obj, np.zeros(d), epochs * mb_steps, mb_sched, np.random.default_rng(0),
                     mode="minibatch", batch_size=batch_size, sampling="shuffle",
                     record=[epochs * mb_steps]).w[-1]

    fns = {"numba": lambda: _ours_fit(X, y, eta0, power_t, epochs),
           "sklearn": lambda: _sklearn(X, y, eta0, power_t, epochs),
           "minibatch": minibatch}
    times = _interleaved(fns, repeat)
    best = {k: min(v) for k, v in times.items()}
    median = {k: float(np.median(v)) for k, v in times.items()}
    # the kernel alone on one precomputed epoch (the old, narrower figure)
    order = np.random.default_rng(0).permutation(n)
    alphas = A.power(eta0, power_t)(np.arange(1, n + 1))
    kernel = time_call(lambda: A.least_squares_sgd_numba(X, y, np.zeros(d), order, alphas),
                       repeat=repeat)
    return {
        "n": n, "d": d, "epochs": epochs, "eta0": eta0, "power_t": power_t,
        "batch_size": batch_size, "condition_number": float(np.linalg.cond(obj.hessian())),
        "repeat": repeat, "timed_unit": "whole fit of `epochs` passes incl. shuffles",
        "ours_numba_sgd_epoch_s": best["numba"] / epochs,
        "ours_numpy_minibatch_epoch_s": best["minibatch"] / epochs,
        "sklearn_sgd_epoch_s": best["sklearn"] / epochs,
        "ours_numba_fit_s": best["numba"], "ours_numpy_minibatch_fit_s": best["minibatch"],
        "sklearn_fit_s": best["sklearn"],
        "ours_numba_fit_all_s": times["numba"], "ours_numpy_minibatch_fit_all_s":
            times["minibatch"], "sklearn_fit_all_s": times["sklearn"],
        "speedup_numba_vs_sklearn": best["sklearn"] / best["numba"],
        "speedup_numba_vs_sklearn_median": median["sklearn"] / median["numba"],
        "ours_numba_kernel_epoch_s": kernel["best_s"],
        "ours_numba_sgd_rel_error": rel(fns["numba"]()),
        "ours_numpy_minibatch_rel_error": rel(fns["minibatch"]()),
        "sklearn_sgd_rel_error": rel(fns["sklearn"]()),
    }


def run(quick: bool = False) -> dict:
    # compile time: a fresh, uncached dispatcher of the same kernel, first call on tiny inputs
    fresh = numba.njit(cache=False)(A._ls_sgd_kernel.py_func)
    t0 = time.perf_counter()
    fresh(np.ones((2, 2)), np.ones(2), np.zeros(2), np.zeros(1, np.int64), np.ones(1))
    compile_s = time.perf_counter() - t0

    X, y = _standardise(*load_diabetes(return_X_y=True))
    figures = {"jit_compile_s": compile_s,
               "diabetes": _compare(X, y, eta0=0.1, power_t=0.6, epochs=50 if quick else 300,
                                    batch_size=32, repeat=3 if quick else 15)}
    rng = np.random.default_rng(1)
    n, d = (10_000, 20) if quick else (100_000, 50)
    Xs = rng.standard_normal((n, d))
    ys = Xs @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    figures["synthetic"] = _compare(Xs, ys, eta0=0.02, power_t=0.6, epochs=2 if quick else 5,
                                    batch_size=32, repeat=2 if quick else 5)
    figures["load_avg"] = os.getloadavg()
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
