"""deepnotes.boosting.dask on a LocalCluster of 2 worker processes (1 thread each): the trees equal
the single-machine model's on the same data and bins; the workers exchange exactly the
histograms depth-wise growth needs (one allreduce per level, both allreduce schemes summing
bit-identically); rows of X never leave their workers (an uneven placement moves binned
blocks); a worker killed mid-fit yields the same model (a refit on blocks Dask recomputes from
lineage) or a clear error, never a different model."""

import importlib
import os
import signal
import threading
import time

import numpy as np
import pytest

importlib.import_module("distributed")
dask = importlib.import_module("dask")
da = importlib.import_module("dask.array")
from dask.utils import key_split  # noqa: E402
from distributed import Client, LocalCluster, futures_of, wait  # noqa: E402

from deepnotes.boosting import BinMapper, GBDTClassifier, GBDTRegressor  # noqa: E402
from deepnotes.boosting import dask as dask_gbdt  # noqa: E402
from deepnotes.boosting.dask import (  # noqa: E402
    DaskGBDTClassifier,
    DaskGBDTRegressor,
    WorkerLostError,
    _merge_summaries,
    _prune,
    _summarize,
)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _data(n=3000, nf=6, seed=0, missing=0.05):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, nf))
    X[rng.random(X.shape) < missing] = np.nan
    z = np.nansum(X[:, :3], axis=1) + 0.5 * rng.normal(size=n)
    return X, z, rng


def _assert_same_trees(dask_model, local_model):
    a, b = dask_model.trees_, local_model.trees_
    assert len(a) == len(b)
    for ta, tb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ta.feature, tb.feature)
        np.testing.assert_array_equal(ta.threshold, tb.threshold)
        np.testing.assert_array_equal(ta.default_left, tb.default_left)
        np.testing.assert_array_equal(ta.left, tb.left)
        # only the summation order of the histograms differs
        np.testing.assert_allclose(ta.value, tb.value, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ta.gain, tb.gain, rtol=1e-7, atol=1e-9)


KW = dict(n_estimators=4, max_depth=4, max_bin=32)


@pytest.mark.parametrize("extra", [
    {},
    dict(subsample=0.7, colsample_bytree=0.7, colsample_bynode=0.8, random_state=3),
    dict(grow_policy="lossguide", max_leaves=7, max_depth=0),
])
def test_binary_trees_equal_single_machine(client, extra):
    X, z, _ = _data()
    y = (z > 0).astype(int)
    # uneven row blocks, more blocks than workers
    Xd, yd = da.from_array(X, chunks=(700, 3)), da.from_array(y, chunks=900)
    params = {**KW, **extra}
    model = DaskGBDTClassifier(**params).fit(Xd, yd)
    local = GBDTClassifier(**params).fit(X, y)
    _assert_same_trees(model, local)
    np.testing.assert_array_equal(model.bin_mapper_.edges_,
                                  BinMapper(32).fit(X).edges_)  # the exact pass
    proba = model.predict_proba(Xd)
    assert isinstance(proba, da.Array)
    np.testing.assert_allclose(proba.compute(), local.predict_proba(X), rtol=1e-9)
    np.testing.assert_array_equal(model.predict(Xd).compute(), model.to_local().predict(X))


def test_multiclass_weighted_regression_and_dataframe(client):
    dd = importlib.import_module("dask.dataframe")
    pd = importlib.import_module("pandas")
    X, z, rng = _data(seed=1)
    y3 = np.digitize(z, [-1.0, 1.0])
    Xd = da.from_array(X, chunks=1000)
    model = DaskGBDTClassifier(**KW).fit(Xd, da.from_array(y3, chunks=1000))
    _assert_same_trees(model, GBDTClassifier(**KW).fit(X, y3))

    w = rng.random(len(z))
    df = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    ddf = dd.from_pandas(df, npartitions=3)
    ys = dd.from_pandas(pd.Series(z), npartitions=3)
    ws = dd.from_pandas(pd.Series(w), npartitions=3)
    model = DaskGBDTRegressor(**KW).fit(ddf, ys, sample_weight=ws)
    local = GBDTRegressor(**KW).fit(df, z, sample_weight=w)
    _assert_same_trees(model, local)
    assert list(model.feature_names_in_) == list(df.columns)
    np.testing.assert_allclose(model.predict(ddf).compute(), local.predict(df), rtol=1e-9)


def _node_depths(tree):
    depth = np.zeros(len(tree.left), dtype=int)
    for i in range(len(tree.left)):  # children always come after their parent
        if tree.left[i] >= 0:
            depth[tree.left[i]] = depth[tree.right[i]] = depth[i] + 1
    return depth


def _expected_exchange(model, max_depth, n_ranks):
    """(allreduces, histogram bytes sent by all ranks) that depth-wise growth needs: per tree
    one for the root and one per level whose split nodes' children may split again, each
    carrying one histogram per split node, sent by every rank to every other (all-gather)."""
    n_features = model.n_features_in_
    node_bytes = n_features * (model.bin_mapper_.missing_bin + 1) * 2 * 8
    calls = nodes = 0
    for tree in model.trees_:
        depth = _node_depths(tree)
        calls += 1
        nodes += 1
        for d in range(max_depth - 1):
            m = int(np.sum((depth == d) & (tree.left >= 0)))
            if m:
                calls += 1
                nodes += m
    return calls, nodes * node_bytes * n_ranks * (n_ranks - 1)


def test_levels_exchange_only_histograms_and_shards_stay_put(client, monkeypatch):
    X, z, _ = _data(seed=4)
    y = (z > 0).astype(int)
    Xd = client.persist(da.from_array(X, chunks=(500, -1)))
    yd = client.persist(da.from_array(y, chunks=500))
    wait([Xd, yd])
    start = client.run(lambda dask_worker: len(dask_worker.transfer_incoming_log))
    model = DaskGBDTClassifier(**KW).fit(Xd, yd)
    _assert_same_trees(model, GBDTClassifier(**KW).fit(X, y))
    calls, nbytes = _expected_exchange(model, KW["max_depth"], 2)
    ranks = model.fit_profile_["ranks"]
    assert len(ranks) == 2 and all(r["allreduces"] == calls for r in ranks)
    assert model.histogram_bytes_ == nbytes
    # Dask moved no block of X: besides labels (y's blocks need not sit with X's), only the bin
    # summaries, label statistics and, where the placement was uneven, the binned blocks that
    # _balance hands to the other worker
    x_keys = list(dask.core.flatten(Xd.__dask_keys__()))
    who = client.who_has(futures_of(Xd))
    holder = [who[k][0] for k in x_keys]
    sizes = list(Xd.chunks[0])
    plan = dask_gbdt._balance(sizes, holder, sorted(client.scheduler_info()["workers"]))
    given = [i for wk, idx in plan.items() for i in idx if holder[i] != wk]
    logs = client.run(lambda dask_worker: [list(e["keys"])
                                           for e in dask_worker.transfer_incoming_log])
    moved = {k for w, log in logs.items() for keys in log[start[w]:] for k in keys}
    assert not moved & set(x_keys)
    names = [key_split(k) for k in moved - {f.key for f in futures_of(yd)}]
    assert set(names) <= {"shard_stats", "label_stats", "bin_blocks"}, names
    assert (0 < names.count("bin_blocks") <= len(given)) if given else "bin_blocks" not in names
    # the reduce-scatter + all-gather scheme (used beyond ALLGATHER_MAX_RANKS workers) adds the
    # ranks' histograms in the same order: bit-identical trees, the same bytes for 2 workers
    monkeypatch.setattr(dask_gbdt, "ALLGATHER_MAX_RANKS", 1)
    other = DaskGBDTClassifier(**KW).fit(Xd, yd)
    assert dask_gbdt._same_trees(model.trees_, other.trees_)
    assert other.histogram_bytes_ == nbytes
    assert all(r["allreduces"] == calls for r in other.fit_profile_["ranks"])


def test_balance_moves_few_blocks_to_even_out_rows():
    def rows(plan, sizes):
        return sorted(sum(sizes[i] for i in idx) for idx in plan.values())

    a, b = "tcp://a", "tcp://b"
    sizes = [100] * 8
    # Dask's placement in the benchmark: 3 blocks on one worker, 5 on the other -> one block moves
    plan = dask_gbdt._balance(sizes, [a, b, b, a, b, b, a, b], [a, b])
    assert rows(plan, sizes) == [400, 400]
    assert sum(i not in plan[a] for i in (0, 3, 6)) == 0 and len(plan[b]) == 4
    # already even: nothing moves; all on one worker of three: two thirds move away
    even = [a, b] * 4
    assert dask_gbdt._balance(sizes, even, [a, b]) == {a: [0, 2, 4, 6], b: [1, 3, 5, 7]}
    c = "tcp://c"
    plan = dask_gbdt._balance([100] * 9, [a] * 9, [a, b, c])
    assert rows(plan, [100] * 9) == [300, 300, 300] and plan[a] == [0, 1, 2]
    # uneven blocks: the ranks differ by less than the largest block
    sizes = [500, 10, 10, 300, 200, 20, 400]
    plan = dask_gbdt._balance(sizes, [a] * 7, [a, b])
    got = rows(plan, sizes)
    assert got[1] - got[0] < max(sizes) and sorted(i for v in plan.values() for i in v) == list(
        range(7))


def test_summary_is_exact_when_small_and_bounded_when_pruned():
    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(500, 2)), 2)
    a, b = _summarize(X[:250], None, 10_000), _summarize(X[250:], None, 10_000)
    v, c = _merge_summaries(a, b, 10_000)[0]
    ref_v, ref_c = np.unique(X[:, 0], return_counts=True)
    np.testing.assert_array_equal(v, ref_v)
    np.testing.assert_array_equal(c, ref_c)
    # pruned: total weight kept, every kept point's cumulative weight within W / size of exact
    x = rng.normal(size=20_000)
    vals, wts = _prune(np.sort(x), np.ones_like(x), 100)
    assert len(vals) <= 100 and wts.sum() == pytest.approx(20_000)
    exact_rank = np.searchsorted(np.sort(x), vals, side="right")
    assert np.max(np.abs(np.cumsum(wts) - exact_rank)) <= 20_000 / 100 + 1


def test_bad_input_is_rejected(client):
    X, z, _ = _data(n=200)
    with pytest.raises(TypeError, match="X must be a dask"):
        DaskGBDTRegressor().fit(X, z)
    Xd, zd = da.from_array(X, chunks=100), da.from_array(z, chunks=100)
    with pytest.raises(ValueError, match="tree_method"):
        DaskGBDTRegressor(tree_method="exact").fit(Xd, zd)
    with pytest.raises(NotImplementedError, match="eval_set"):
        DaskGBDTRegressor().fit(Xd, zd, eval_set=[(Xd, zd)])
    with pytest.raises(ValueError, match="rows"):
        DaskGBDTRegressor().fit(Xd, zd[:150])
    # single-machine-only options the estimator has (constraints, categorical features, ...)
    unsupported = {"monotone_constraints": [1] + [0] * 5, "interaction_constraints": [[0, 1]],
                   "categorical_features": [0], "callbacks": [], "early_stopping_rounds": 3}
    for name, value in unsupported.items():
        if name in DaskGBDTRegressor().get_params():
            with pytest.raises(NotImplementedError, match=name):
                DaskGBDTRegressor(**{name: value}).fit(Xd, zd)


def _fit_and_kill(client, X, y, kw):
    """Fit in a thread and SIGKILL one worker process after the third round."""
    model, out = DaskGBDTClassifier(**kw), {}

    def run():
        try:
            model.fit(X, y)
        except Exception as exc:  # noqa: BLE001 - the test inspects what fit raised
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while getattr(model, "_rounds_done", 0) < 3 and thread.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert thread.is_alive() and model._rounds_done < kw["n_estimators"]  # really mid-fit
    pids = client.run(os.getpid)
    os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    return model, out.get("error")


def test_killed_worker_gives_same_model_or_clear_error(client):
    X, z, _ = _data(seed=2, missing=0.0)
    y = (z > 0).astype(int)
    # enough rounds that the fit is still running when the third one is seen, even when the
    # machine is idle (a level costs one exchange between the workers)
    kw = dict(n_estimators=100, max_depth=3, max_bin=32)
    local = GBDTClassifier(**kw).fit(X, y)
    # 1. data with lineage: the ranks are stopped and the fit runs again on the blocks Dask
    #    recomputes from lineage; the model is the same
    model, error = _fit_and_kill(client, da.from_array(X, chunks=600),
                                 da.from_array(y, chunks=600), kw)
    if error is None:
        _assert_same_trees(model, local)
    else:
        assert isinstance(error, WorkerLostError), repr(error)
    client.wait_for_workers(2, timeout=60)
    # 2. scattered data (no lineage): the lost blocks cannot be recomputed -> a clear error,
    #    and the estimator is left unfitted
    import dask

    blocks = [(X[i:i + 600], y[i:i + 600]) for i in range(0, len(y), 600)]
    xs = client.scatter([b[0] for b in blocks])
    ys = client.scatter([b[1] for b in blocks])
    Xd = da.concatenate([da.from_delayed(dask.delayed(f), shape=(600, X.shape[1]), dtype=float)
                         for f in xs])
    yd = da.concatenate([da.from_delayed(dask.delayed(f), shape=(600,), dtype=y.dtype)
                         for f in ys])
    model, error = _fit_and_kill(client, Xd, yd, kw)
    assert isinstance(error, WorkerLostError), repr(error)
    assert "worker was lost" in str(error)
    assert not hasattr(model, "_forest")
    client.wait_for_workers(2, timeout=60)
