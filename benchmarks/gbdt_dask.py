"""deepnotes.boosting.dask vs xgboost.dask on one LocalCluster (2 worker processes x 1 thread).

Data: benchmarks/gbdt.py's synthetic set (make_classification, 1M rows x 28 features,
random_state=0, 80/20 split), the training rows as a dask array of 8 row blocks persisted on the
workers before any fit, block i (of X and of y) on worker i mod 2, so every contender starts from
the same blocks in the same, even places. (A plain ``client.persist`` put 3 blocks on one worker
and 5 on the other in some runs: every level then waits for the busier worker. Ours moves binned
blocks to even that out, xgboost.dask does not; the record compares both on the even placement.)
Hyper-parameters: 100 trees, depth 6, learning rate 0.1, 256 bins (as benchmarks/gbdt.py).

Each contender is warmed up (numba cache / xgboost's first DMatrix) on a 2-tree fit, then the
contenders fit alternately, ``REPEATS`` times each; ``train_s`` is the fastest fit, all are kept,
with the load average before each fit and the ratio of each interleaved pair
(``ratio_ours_to_xgboost.train_s_per_repeat``). Communication, per tree:

- ``loopback_bytes_per_tree``: bytes sent over the loopback interface during fit
  (``/proc/net/dev``: every socket of the cluster, Dask's or xgboost's own collective, and any
  other process's loopback traffic at that time), for both;
- ``histogram_bytes_per_tree`` (ours): histogram bytes the workers sent each other (the
  allreduce payloads, all workers together); ``dask_peer_bytes_per_tree``: bytes Dask itself
  moved from worker to worker as task data (the worker transfer logs).

Where our time goes: ``profile`` is the fastest fit's per-worker breakdown (seconds in the
gradients, histogram kernels, row partitions, the histogram allreduce -- sending, waiting for the
peer, adding --, split search and score updates; ``fit_s`` is a worker's whole boosting loop) and
``setup_s`` the rest of the fit's wall time (bin summaries, binning, starting the actors).

Two cores cannot show scaling: both workers share the machine's two cores (with other jobs;
``load_average`` records how busy it was), so adding workers only divides the same cores. What
they do show: the per-level overhead of the scheme (histogram exchange, task round trips) beside
xgboost's allreduce on identical data. ``paper_estimate`` scales the measured histogram sizes to
64 workers. ``--quick``: 100k rows, 10 trees.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# worker transfer logs long enough for a whole fit (inherited by the worker processes)
os.environ.setdefault("DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH", "1000000")

from deepnotes.boosting.dask import ALLGATHER_MAX_RANKS  # noqa: E402
from deepnotes.core.bench import bench_main  # noqa: E402
from gbdt import _make_dataset  # noqa: E402  (benchmarks/gbdt.py: the same synthetic set)

#: The topics whose posts quote this benchmark.
TOPICS = ("gbdt-to-xgboost",)

PARAMS = dict(n_estimators=100, learning_rate=0.1, max_depth=6, max_bin=256)
N_WORKERS, THREADS = 2, 1
REPEATS = 3
BLOCKS = 8



def _place_evenly(client, X, y, chunk):
    """X, y as dask arrays of ``chunk``-row blocks, block i persisted on worker i mod W."""
    import dask.array as da

    workers = sorted(client.scheduler_info()["workers"])
    starts = range(0, len(X), chunk)
    xs = [client.persist(da.from_array(X[a:a + chunk], chunks=(chunk, -1)),
                         workers=[workers[i % len(workers)]]) for i, a in enumerate(starts)]
    ys = [client.persist(da.from_array(y[a:a + chunk], chunks=chunk),
                         workers=[workers[i % len(workers)]]) for i, a in enumerate(starts)]
    return client.persist(da.concatenate(xs)), client.persist(da.concatenate(ys))

def _loopback_bytes() -> int:
    """Bytes sent over the loopback interface so far (``/proc/net/dev``)."""
    with open("/proc/net/dev", encoding="ascii") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    return 0


def _worker_io(client) -> dict:
    def probe(dask_worker):
        return sum(e["total"] for e in dask_worker.transfer_incoming_log)

    def cpu():
        return time.process_time()  # the worker process's CPU seconds, all its threads

    return {"peer": client.run(probe), "cpu": client.run(cpu), "lo": _loopback_bytes(),
            "client_cpu": time.process_time()}


def _io_delta(before, after) -> dict:
    """Bytes moved and CPU seconds spent between two :func:`_worker_io` probes."""
    return {"peer": sum(after["peer"][w] - before["peer"][w] for w in after["peer"]
                        if w in before["peer"]),
            "lo": after["lo"] - before["lo"],
            "worker_cpu_s": sum(after["cpu"][w] - before["cpu"][w] for w in after["cpu"]
                                if w in before["cpu"]),
            "client_cpu_s": after["client_cpu"] - before["client_cpu"]}


def _model(contender, client, n_estimators):
    p = dict(PARAMS, n_estimators=n_estimators)
    if contender == "ours":
        from deepnotes.boosting.dask import DaskGBDTClassifier

        model = DaskGBDTClassifier(**p)
        model.client = client
        return model
    from xgboost.dask import DaskXGBClassifier

    model = DaskXGBClassifier(tree_method="hist", n_jobs=THREADS, **p)
    model.client = client
    return model


def _fit(contender, client, Xd, yd, n_estimators):
    model = _model(contender, client, n_estimators)
    before = _worker_io(client)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    model.fit(Xd, yd)
    seconds = time.perf_counter() - t0
    io = _io_delta(before, _worker_io(client))
    io["load_average_before"] = load
    return model, seconds, io


def _histogram_bytes(n_features: int, n_bins: int) -> int:
    """One node's histogram: (G, H) in float64 per feature and bin."""
    return n_features * n_bins * 2 * 8


def _paper_estimate(n_features, n_bins, depth, workers) -> dict:
    """Histogram bytes per level and tree when every level sums the smaller children's
    histograms (root: one node; level d >= 1: 2^(d-1) nodes) over ``workers`` workers."""
    node = _histogram_bytes(n_features, n_bins)
    per_level = [node * (1 if d == 0 else 2 ** (d - 1)) for d in range(depth)]
    tree = sum(per_level)
    return {
        "workers": workers, "histogram_bytes_per_node": node,
        "histogram_bytes_per_level": per_level, "histogram_bytes_per_tree": tree,
        # pairwise tree reduction: every worker but one sends its partial sum once, and the
        # root sends the total to the client; log2(W) sequential hops per level
        "tree_reduce_bytes_per_tree": (workers - 1) * tree + tree,
        "tree_reduce_hops_per_level": int(np.ceil(np.log2(workers))),
        # ring allreduce (xgboost's collective): each worker sends 2 (W - 1) / W of the data
        "ring_allreduce_bytes_per_worker_per_tree": 2 * (workers - 1) / workers * tree,
        "ring_allreduce_bytes_total_per_tree": 2 * (workers - 1) * tree,
        # ours (deepnotes.boosting.dask): an all-gather up to ALLGATHER_MAX_RANKS workers (one
        # hop, W - 1 histograms out of each worker), else a direct reduce-scatter + all-gather
        # (two hops, the ring's bytes)
        "ours_scheme": "allgather" if workers <= ALLGATHER_MAX_RANKS else "reduce_scatter",
        "ours_bytes_per_worker_per_tree": ((workers - 1) * tree if workers <= ALLGATHER_MAX_RANKS
                                           else 2 * (workers - 1) / workers * tree),
        "ours_hops_per_level": 1 if workers <= ALLGATHER_MAX_RANKS else 2,
    }


def run(quick: bool = False) -> dict:
    import dask.array as da
    from distributed import Client, LocalCluster

    from deepnotes.boosting.metrics import auc

    n = 100_000 if quick else 1_000_000
    n_estimators = 10 if quick else PARAMS["n_estimators"]
    load_start = os.getloadavg()
    _, Xtr, Xte, ytr, yte = _make_dataset("synthetic", n)
    chunk = int(np.ceil(len(Xtr) / BLOCKS))
    results: dict = {"ours": {"train_s_all": [], "io": []},
                     "xgboost": {"train_s_all": [], "io": []}}
    with LocalCluster(n_workers=N_WORKERS, threads_per_worker=THREADS, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(N_WORKERS, timeout=120)
        Xd, yd = _place_evenly(client, Xtr, ytr, chunk)
        Xte_d = da.from_array(Xte, chunks=(int(np.ceil(len(Xte) / BLOCKS)), -1))
        for contender in results:  # warm-up: numba cache, xgboost's first fit
            _fit(contender, client, Xd, yd, 2)
        models, profiles = {}, []
        for _ in range(REPEATS):
            for contender, res in results.items():
                model, seconds, io = _fit(contender, client, Xd, yd, n_estimators)
                res["train_s_all"].append(seconds)
                res["io"].append(io)
                models[contender] = model
                if contender == "ours":
                    profiles.append(model.fit_profile_)
        for contender, res in results.items():
            proba = models[contender].predict_proba(Xte_d).compute()
            res["auc"] = float(auc(yte, proba[:, 1]))
            res["train_s"] = min(res["train_s_all"])
            res["loopback_bytes_per_tree"] = float(
                np.median([io["lo"] for io in res["io"]]) / n_estimators)
            # CPU seconds of the worker processes (all workers) and of the client, per fit:
            # unlike wall time, barely inflated by other jobs on the machine
            res["worker_cpu_s"] = min(io["worker_cpu_s"] for io in res["io"])
            res["client_cpu_s"] = min(io["client_cpu_s"] for io in res["io"])
        ours = results["ours"]
        ours["dask_peer_bytes_per_tree"] = float(
            np.median([io["peer"] for io in ours["io"]]) / n_estimators)
        missing_bin = models["ours"].bin_mapper_.missing_bin
        ours["histogram_bytes_per_tree"] = models["ours"].histogram_bytes_ / n_estimators
        fastest = int(np.argmin(ours["train_s_all"]))
        ours["profile"] = profiles[fastest]
        ours["setup_s"] = ours["train_s"] - max(p["fit_s"] for p in profiles[fastest]["ranks"])
        local = models["ours"].to_local()
        t0 = time.perf_counter()
        local_proba = local.predict_proba(Xte)
        ours["to_local_predict_s"] = time.perf_counter() - t0
        ours["to_local_auc"] = float(auc(yte, local_proba[:, 1]))
    n_bins = missing_bin + 1
    per_repeat = [a / b for a, b in zip(results["ours"]["train_s_all"],
                                        results["xgboost"]["train_s_all"], strict=True)]
    return {
        "params": dict(PARAMS, n_estimators=n_estimators),
        "n_train": len(Xtr), "n_test": len(Xte), "n_features": Xtr.shape[1],
        "blocks": BLOCKS, "workers": N_WORKERS, "threads_per_worker": THREADS,
        "load_average_at_start": load_start[0], "load_average_at_end": os.getloadavg()[0],
        "results": results,
        "ratio_ours_to_xgboost": {
            "train_s": results["ours"]["train_s"] / results["xgboost"]["train_s"],
            "train_s_per_repeat": per_repeat,
            "train_s_median_of_repeats": float(np.median(per_repeat)),
            "worker_cpu_s": (results["ours"]["worker_cpu_s"]
                             / results["xgboost"]["worker_cpu_s"]),
            "auc_diff": results["ours"]["auc"] - results["xgboost"]["auc"],
            "loopback_bytes_per_tree": (results["ours"]["loopback_bytes_per_tree"]
                                        / results["xgboost"]["loopback_bytes_per_tree"]),
        },
        "paper_estimate": _paper_estimate(Xtr.shape[1], n_bins, PARAMS["max_depth"], 64),
    }


if __name__ == "__main__":
    bench_main(__file__, run)
