"""Least-squares SGD: ours (numba per-sample, numpy mini-batch) vs scikit-learn's SGDRegressor.

Same data, same step sizes (``alpha_k = eta0 / k**power_t``, sklearn's ``invscaling``), no
penalty, no intercept (features standardised, target centred), same number of shuffled passes.
Figures per data set: seconds per epoch and final ``||w - w*|| / ||w*||`` against ``lstsq``.
The numba kernel's compile time is reported separately from its steady-state epoch time.
"""

from __future__ import annotations

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


def _compare(X, y, eta0, power_t, epochs, batch_size, repeat):
    n, d = X.shape
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]

    def rel(w):
        return float(np.linalg.norm(w - w_star) / np.linalg.norm(w_star))

    rng = np.random.default_rng(0)
    sched = A.power(eta0, power_t)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    alphas = sched(np.arange(1, order.size + 1))
    w_numba = A.least_squares_sgd_numba(X, y, np.zeros(d), order, alphas)
    epoch_numba = time_call(lambda: A.least_squares_sgd_numba(X, y, np.zeros(d), order[:n],
                                                              alphas[:n]), repeat=repeat)
    obj = A.LeastSquares(X, y)
    mb_steps = max(1, n // batch_size)
    # B-fold less gradient noise allows B-fold larger steps, capped at 1/L for stability
    lipschitz = float(np.linalg.eigvalsh(obj.hessian())[-1])
    mb_sched = A.power(min(eta0 * batch_size, 1.0 / lipschitz), power_t)
    mb = A.sgd(obj, np.zeros(d), epochs * mb_steps, mb_sched, rng, mode="minibatch",
               batch_size=batch_size, sampling="shuffle", record=[epochs * mb_steps])
    epoch_mb = time_call(lambda: A.sgd(obj, np.zeros(d), mb_steps, mb_sched, rng,
                                       mode="minibatch", batch_size=batch_size,
                                       sampling="shuffle", record=[mb_steps]),
                         repeat=repeat)
    w_sk = _sklearn(X, y, eta0, power_t, epochs)
    # per epoch from a full fit, so sklearn's fixed per-fit validation cost is amortised
    fit_sk = time_call(lambda: _sklearn(X, y, eta0, power_t, epochs), repeat=max(1, repeat // 4))
    fit_sk_epoch = fit_sk["best_s"] / epochs
    return {
        "n": n, "d": d, "epochs": epochs, "eta0": eta0, "power_t": power_t,
        "batch_size": batch_size, "condition_number": float(np.linalg.cond(obj.hessian())),
        "ours_numba_sgd_epoch_s": epoch_numba["best_s"],
        "ours_numpy_minibatch_epoch_s": epoch_mb["best_s"],
        "sklearn_sgd_epoch_s": fit_sk_epoch,
        "sklearn_fit_s": fit_sk["best_s"],
        "speedup_numba_vs_sklearn": fit_sk_epoch / epoch_numba["best_s"],
        "ours_numba_sgd_rel_error": rel(w_numba),
        "ours_numpy_minibatch_rel_error": rel(mb.w[-1]),
        "sklearn_sgd_rel_error": rel(w_sk),
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
                                    batch_size=32, repeat=3 if quick else 20)}
    rng = np.random.default_rng(1)
    n, d = (10_000, 20) if quick else (100_000, 50)
    Xs = rng.standard_normal((n, d))
    ys = Xs @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    figures["synthetic"] = _compare(Xs, ys, eta0=0.02, power_t=0.6, epochs=2 if quick else 5,
                                    batch_size=32, repeat=2 if quick else 5)
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
