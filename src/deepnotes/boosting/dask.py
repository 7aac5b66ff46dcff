"""Gradient-boosted trees on a Dask cluster: the single-machine trees, grown where the data live.

:class:`DaskGBDTClassifier` / :class:`DaskGBDTRegressor` take the parameters of
``GBDTClassifier`` / ``GBDTRegressor`` and fit on ``dask.array`` / ``dask.dataframe`` partitions
held by the workers of a ``distributed.Client`` (the current client unless one is set on
``.client``, as ``xgboost.dask`` does). Rows of ``X`` never travel to the client; what travels,
per tree level, is the level's gradient histograms, from worker to worker. The
scheme is the data-parallel histogram method of XGBoost (Chen & Guestrin, 2016, Sec. 4) and
LightGBM's "data parallel" mode. Each worker concatenates row blocks into one *shard*: the
blocks it holds (as ``xgboost.dask`` does) when the cluster holds about equal rows per worker.
Otherwise, since every level waits for the slowest worker, whole blocks are first binned where
they live and the binned blocks (1-2 bytes a value) move to the workers with the fewest rows
(:func:`_balance`); labels and weights join the worker that bins the matching block of ``X``.

1. **Bins.** Every shard summarises each feature (over its share of a 200 000-row sample when
   there are more rows: deviation 1 below) as its sorted distinct values with their summed
   sample weights; summaries are merged pairwise on the workers, and a merged summary longer
   than ``SUMMARY_SIZE`` points is pruned to ``SUMMARY_SIZE`` points spaced evenly in cumulative
   weight (each kept point carries the weight of the values since the previous one). The client
   runs ``binning._find_edges_serial`` on the merged summary. While no summary was pruned this
   is an *exact* pass: the edges are those ``BinMapper`` finds on all rows (midpoints of distinct
   values, or the same weighted quantiles). After pruning, a quantile is off by at most
   ``W / SUMMARY_SIZE`` of the total weight ``W`` (a mergeable weighted-quantile summary in the
   spirit of the paper's Sec. 3.3 sketch, without its error-bounded prune). The same pass
   collects the shards' distinct labels (the classes).
2. **One long-running actor per worker.** Each shard is binned once where it lives
   (``BinMapper.transform_row_major``) and handed to a Dask actor (``client.submit(...,
   actor=True)``) on the same worker, one *rank* per shard. The client calls every rank's
   ``fit`` once; the ranks then boost on their own without the scheduler or the client: per
   round the gradients of their rows, per level a partition of their rows by the level's splits
   (``grower.partition_level``, as on one machine) and the histograms of the smaller children
   (``histogram.build_histograms``, Eq. 8 of the post), the root's with
   ``histogram.build_histogram_root``; the larger child comes by subtraction from the summed
   parent. The histograms are summed by an allreduce over direct worker-to-worker actor calls
   (a rank's ``put`` receives its peers' arrays). A rank's ``fit`` is a coroutine on its
   worker's event loop that computes in place between awaits, so a histogram goes from one
   rank's loop to the other's without waking any other thread (on a loaded machine each
   wake-up waits for the operating system's scheduler; boosting in an actor thread would pay
   three per level: thread to loop, loop to loop, loop to thread). The price: the worker's
   event loop is busy during each level's kernels. Every
   rank adds the shards' histograms in rank order, so all ranks hold bit-identical sums, run
   ``splitting.find_best_split`` on them with the same seeded random draws, and grow the same
   trees (rank 0's trees are returned after the client checks all ranks agree). A finished
   tree updates each rank's training scores through its leaves' row slices
   (``grower.add_leaf_values`` / ``add_routed_values``), as on one machine.

A level therefore costs one histogram exchange between the workers, not a round trip through
the scheduler and the client. If a rank's worker dies, the client aborts the other ranks and
fits once more from the start (Dask recomputes the lost blocks from their lineage into the same
values, so the model is the same); if the blocks cannot be recomputed, or the second attempt
loses a worker too, :meth:`fit` raises :class:`WorkerLostError` and leaves the estimator
unfitted; it never returns a model grown on partial data. Growth follows ``grower.grow_tree``
node for node (same node ids, the same order of random draws), so on the same data and bins the
trees equal the single-machine model's up to the summation order of the histograms (fixed within
a fit: by shard, in the order of the workers' addresses).

Deviations from ``GBDTClassifier`` / ``GBDTRegressor``:

1. Bin edges come from all rows while there are at most ``BIN_SUBSAMPLE`` (200 000, as on one
   machine); beyond, from that many rows drawn uniformly across the shards, each shard drawing
   its share in proportion to its rows (on one machine: one draw over all rows; both give the
   same quantile error, of order ``1/sqrt(200 000)``, but not the same rows). The edges are
   identical when there are at most 200 000 rows and no feature has more than
   ``SUMMARY_SIZE`` distinct values in a shard.
2. The child whose histogram is built (the other comes by subtraction) is the one with the
   smaller hessian sum, which every rank knows from the summed parent histogram, instead of the
   one with fewer rows (which would need the ranks' row counts first). Only the rounding of the
   larger child's sums changes.
3. ``tree_method='exact'``, ``eval_set``, early stopping, callbacks, monotone and interaction
   constraints and categorical features are not supported (exact split search needs globally
   sorted columns; evaluation would need predictions on the client).
"""

from __future__ import annotations

import heapq
import time

import numpy as np
from sklearn.utils.validation import check_is_fitted

from deepnotes.boosting.binning import BinMapper, _find_edges_serial
from deepnotes.boosting.gbdt import GBDTClassifier, GBDTRegressor, _threads
from deepnotes.boosting.grower import (
    NodeTable,
    add_leaf_values,
    add_routed_values,
    can_split,
    node_features,
    partition_level,
    partition_rows,
)
from deepnotes.boosting.histogram import build_histogram, build_histogram_root, build_histograms
from deepnotes.boosting.predictor import predict_binned_rows, tree_from_lists
from deepnotes.boosting.splitting import find_best_split

#: Points per feature a merged bin summary keeps; below this many distinct values (in all
#: partitions together) the bin edges are exact.
SUMMARY_SIZE = 16384
#: Rows (all shards together, each in proportion to its size) whose values give the bin edges
#: when there are more; ``BinMapper``'s subsample on one machine.
BIN_SUBSAMPLE = 200_000
#: Up to this many ranks the histogram allreduce is an all-gather (one hop, every rank sends its
#: whole histogram to every other); beyond, a reduce-scatter and an all-gather (two hops, each
#: rank sends ``2 (W - 1) / W`` of a histogram). Both give bit-identical sums.
ALLGATHER_MAX_RANKS = 4
#: Seconds a rank waits for a peer's histogram before it gives up (the client aborts the ranks
#: long before when a worker leaves the cluster).
PEER_TIMEOUT = 600.0
#: Seconds the client waits for the ranks' actors to start on their workers.
ACTOR_START_TIMEOUT = 120.0
#: The client's polling interval for the ranks' progress, and for worker liveness.
POLL_S, LIVENESS_S = 0.2, 1.0
#: Collective fits tried when workers die (each from the start, on recomputed blocks).
FIT_ATTEMPTS = 2


class WorkerLostError(RuntimeError):
    """A Dask worker died during :meth:`fit` and Dask could not recompute what it held."""


# --- worker side: pure functions of their arguments ------------------------------------------

def _worker_threads(n_jobs):
    """numba threads for a task: ``n_jobs``, or the worker's thread count when None."""
    if n_jobs is None or n_jobs == -1:
        try:
            from distributed import get_worker
            return get_worker().state.nthreads
        except ValueError:  # not on a worker (e.g. a synchronous scheduler)
            return None
    return n_jobs


def _prune(values, weights, size):
    """Keep at most ``size`` of the sorted ``values``, evenly spaced in cumulative weight; each
    kept point carries the weight of the values since the previous kept point."""
    if values.shape[0] <= size:
        return values, weights
    cum = np.cumsum(weights)
    targets = cum[-1] * np.arange(1, size + 1) / size
    keep = np.unique(np.minimum(np.searchsorted(cum, targets, side="left"), len(cum) - 1))
    keep[-1] = len(cum) - 1
    kept_cum = cum[keep]
    return values[keep], np.diff(np.concatenate([[0.0], kept_cum]))


def _distinct(col, w):
    """Sorted distinct values of ``col`` (NaN and zero-weight rows left out) and the summed
    weight of each; ``w`` None means unit weights."""
    keep = ~np.isnan(col) if w is None else ~np.isnan(col) & (w > 0)
    if w is None:
        v = np.sort(col[keep])
        cum = np.arange(1, v.shape[0] + 1, dtype=np.float64)
    else:
        order = np.argsort(col[keep], kind="stable")
        v = col[keep][order]
        cum = np.cumsum(w[keep][order])
    last = np.flatnonzero(np.r_[v[1:] != v[:-1], True]) if v.shape[0] else np.empty(0, int)
    return v[last], np.diff(np.r_[0.0, cum[last]])


def _summarize(X, w, size):
    """Per feature of the rows ``X`` (weights ``w`` or None): :func:`_distinct`, pruned to
    ``size`` points."""
    X = np.asarray(X, dtype=np.float64)
    return _summarize_columns(np.ascontiguousarray(X.T), w, size)


def _summarize_columns(XT, w, size):
    """:func:`_summarize` of the transposed rows ``XT`` (n_features, n), C order: every
    feature's values lie contiguous, so each is read once rather than by a strided pass over
    the whole matrix."""
    if np.isinf(XT).any():
        raise ValueError("X contains infinity; use NaN for missing values")
    w = None if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    return [_prune(*_distinct(col, w), size) for col in XT]


def _shard_stats(xs, ys, ws, size, classify, take=None, seed=0):
    """:func:`_summarize` of a worker's blocks together (of ``take`` of their rows drawn
    uniformly without replacement, when ``take`` is smaller than their row count), and
    (``classify``) the distinct labels of all their rows."""
    n = [len(x) for x in xs]
    w = None if ws[0] is None else np.concatenate([np.asarray(v, np.float64) for v in ws])
    if take is not None and take < sum(n):
        rows = np.sort(np.random.default_rng(seed).choice(sum(n), size=take, replace=False))
        w = None if w is None else w[rows]
        bounds = np.searchsorted(rows, np.cumsum([0] + n))  # the drawn rows of each block
        starts = np.cumsum([0] + n)
        xs = [np.asarray(x)[rows[bounds[b]:bounds[b + 1]] - starts[b]]
              for b, x in enumerate(xs)]
    XT = np.concatenate([np.asarray(x, dtype=np.float64).T for x in xs], axis=1)
    labels = np.unique(np.concatenate([np.asarray(y).reshape(-1) for y in ys])) if classify \
        else None
    return _summarize_columns(XT, w, size), labels


def _merge_shard_stats(a, b, size):
    """Merge two :func:`_shard_stats`: the summaries (:func:`_merge_summaries`) and the labels
    (their union)."""
    labels = None if a[1] is None else np.union1d(a[1], b[1])
    return _merge_summaries(a[0], b[0], size), labels


def _merge_summaries(a, b, size):
    """Merge two summaries (lists over features): union of values, weights of equal values
    added, pruned to ``size`` points."""
    out = []
    for (va, ca), (vb, cb) in zip(a, b, strict=True):
        v, inverse = np.unique(np.concatenate([va, vb]), return_inverse=True)
        c = np.bincount(inverse, weights=np.concatenate([ca, cb]), minlength=v.shape[0])
        out.append(_prune(v, c, size))
    return out


def _label_stats(part, n_classes, classify):
    """Sufficient statistics of a binned partition's labels for the base score: weight per
    class, or ``(sum w y, sum w)``."""
    y, w = part["y"], part["w"]
    if classify:
        return np.bincount(y.astype(np.int64), weights=w, minlength=n_classes)
    return np.array([np.sum(w * y), np.sum(w)])


def _encode_labels(y, classes):
    """Class labels -> 0..K-1 (float64); raises on a label outside ``classes``."""
    y = np.asarray(y)
    idx = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    if not np.all(classes[idx] == y):
        raise ValueError("y contains a label that is not in classes_")
    return idx.astype(np.float64)


def _bin_blocks(xs, ys, ws, edges, n_edges, max_bin, classes, n_jobs):
    """Bin row blocks held by one worker: ``{"Xr": C-order bins (uint8/uint16), "y", "w",
    "sizes": rows per block}``, blocks concatenated in the order given."""
    mapper = BinMapper(max_bin)
    mapper.edges_, mapper.n_edges_ = edges, n_edges
    binned, labels, weights = [], [], []
    for X, y, w in zip(xs, ys, ws, strict=True):
        X = np.asarray(X, dtype=np.float64)
        if np.isinf(X).any():
            raise ValueError("X contains infinity; use NaN for missing values")
        with _threads(_worker_threads(n_jobs)):
            binned.append(mapper.transform_row_major(X))
        labels.append(_encode_labels(y, classes) if classes is not None
                      else np.asarray(y, dtype=np.float64).reshape(-1))
        weights.append(np.ones(X.shape[0]) if w is None
                       else np.asarray(w, dtype=np.float64).reshape(-1))
    return {"Xr": np.concatenate(binned), "y": np.concatenate(labels),
            "w": np.concatenate(weights), "sizes": [len(b) for b in binned]}


def _join_shard(pieces):
    """One rank's shard from binned pieces (:func:`_bin_blocks` results, in shard order): adds
    the Fortran-order copy of the bins the histogram kernels read."""
    if len(pieces) == 1:
        shard = dict(pieces[0])
    else:
        shard = {key: np.concatenate([p[key] for p in pieces]) for key in ("Xr", "y", "w")}
        shard["sizes"] = [s for p in pieces for s in p["sizes"]]
    shard["Xr"] = np.ascontiguousarray(shard["Xr"])
    shard["Xf"] = np.asfortranarray(shard["Xr"])
    return shard


def _balance(rows, holder, workers):
    """Assign row blocks to ranks so that every rank gets about ``sum(rows) / len(workers)``
    rows, moving as few blocks as it can: each worker keeps the blocks it holds (in block order)
    while keeping one brings it nearer that share; the rest go, largest first, to the rank with
    the fewest rows. A level waits for its slowest rank, so an uneven placement (Dask put 5 of
    8 blocks on one of 2 workers in the benchmark) costs the whole fit its ratio.

    Returns ``{worker: [block indices]}`` with every worker present (possibly empty lists)."""
    share = sum(rows) / len(workers)
    keep = {wk: [] for wk in workers}
    load = dict.fromkeys(workers, 0)
    spare = []
    for i, wk in enumerate(holder):
        if abs(load[wk] + rows[i] - share) <= abs(load[wk] - share):
            keep[wk].append(i)
            load[wk] += rows[i]
        else:
            spare.append(i)
    for i in sorted(spare, key=lambda i: -rows[i]):
        wk = min(workers, key=lambda w: (load[w], w))
        keep[wk].append(i)
        load[wk] += rows[i]
    return {wk: sorted(idx) for wk, idx in keep.items()}


# --- the collective fit: one Dask actor per worker, histograms exchanged between the workers ---

class _PeerLost(RuntimeError):
    """A peer's histograms did not arrive, a send failed, or the client aborted the fit."""


def _segments(n, n_ranks):
    """Bounds of ``n_ranks`` about-equal segments of ``range(n)``."""
    return [r * n // n_ranks for r in range(n_ranks + 1)]


_PHASES = ("gradients", "histogram", "partition", "allreduce", "split_search", "update")


def _now():
    """(wall seconds, this thread's CPU seconds)."""
    return time.perf_counter(), time.thread_time()


class _Rank:
    """One worker's part of a fit: a Dask actor created where its shard lives.

    The client calls :meth:`fit` on every rank at once; each rank boosts on its own rows and,
    wherever the single-machine grower builds a histogram, builds the histogram of its rows and
    takes part in an allreduce (:meth:`_allreduce`). Every rank adds the shards' histograms in
    rank order, so all ranks hold bit-identical sums, find the same splits with the same
    (identically seeded) random draws, and grow the same trees; no tree level waits for the
    client. Peers deliver their histograms by calling :meth:`put` on this actor.

    :meth:`fit` is a coroutine: it runs on the worker's event loop, computing in place between
    its awaits (the numba kernels take a level at a time), so that a histogram travels from one
    rank's loop to the other's with no hand-over between threads. On a busy machine every such
    hand-over waits for the operating system to schedule the woken thread; a level with an
    actor thread took three of them, this takes one."""

    #: Boosting rounds finished (read by the client as an actor attribute, so declared here).
    rounds = 0

    def __init__(self, part, rank, n_ranks):
        from distributed import get_client

        # The worker's client (created here, in a task thread, if the worker has none yet):
        # the peers' actor handles look it up on first use, on the event loop.
        get_client()
        self.part, self.rank, self.n_ranks = part, rank, n_ranks
        self.rounds = 0
        self._inbox = {}
        self._arrived = None
        self._aborted = None
        self._in_flight = set()
        self._send_error = None
        self._peers = None
        self.bytes_sent = 0

    def _notify(self):
        if self._arrived is None:
            import asyncio

            self._arrived = asyncio.Event()
        self._arrived.set()

    async def put(self, tag, src, payload):
        """A peer's histogram (or segment) ``payload`` for exchange ``tag``."""
        self._inbox[(tag, src)] = payload
        self._notify()

    async def abort(self, reason):
        """Make a running :meth:`fit` raise instead of waiting for its peers."""
        self._aborted = str(reason)
        self._notify()

    def _lap(self, phase, t):
        """Add the wall and CPU seconds (of the event loop's thread) since ``t = _now()`` to
        ``phase``."""
        wall, cpu = _now()
        self.profile[f"{phase}_s"] = self.profile.get(f"{phase}_s", 0.0) + wall - t[0]
        self.profile[f"{phase}_cpu_s"] = self.profile.get(f"{phase}_cpu_s", 0.0) + cpu - t[1]

    # -- point to point ---------------------------------------------------------------------
    def _send(self, dst, tag, payload):
        """Deliver ``payload`` to rank ``dst`` without waiting (it goes out at the next await);
        a failure is raised by the next :meth:`_recv`. ``payload`` must not change afterwards."""
        import asyncio

        task = asyncio.ensure_future(self._deliver(self._peers[dst], tag, payload))
        self._in_flight.add(task)
        task.add_done_callback(self._sent)
        self.bytes_sent += payload.nbytes

    def _sent(self, task):
        """A send finished: wakes :meth:`_until` (the end of :meth:`fit` waits for the last
        sends; without this wake-up it slept out its one-second poll)."""
        self._in_flight.discard(task)
        self._notify()

    async def _deliver(self, peer, tag, payload):
        try:
            await peer.put(tag, self.rank, payload)
        except Exception as exc:  # noqa: BLE001 - any failed delivery ends the fit
            self._send_error = f"a send to a peer failed: {exc!r}"
            self._notify()

    def _raise_if_failed(self):
        if self._aborted is not None:
            raise _PeerLost(f"rank {self.rank}: aborted ({self._aborted})")
        if self._send_error is not None:
            raise _PeerLost(f"rank {self.rank}: {self._send_error}")

    async def _until(self, ready, what):
        """Await until ``ready()`` (re-checked whenever a message arrives) or raise."""
        import asyncio

        deadline = time.monotonic() + PEER_TIMEOUT
        while True:
            self._raise_if_failed()
            if ready():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise _PeerLost(f"rank {self.rank}: {what} in {PEER_TIMEOUT} s")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(left, 1.0))
            except TimeoutError:
                pass

    async def _recv(self, tag, sources):
        out = {}

        def ready():
            for s in sources:
                if s not in out and (tag, s) in self._inbox:
                    out[s] = self._inbox.pop((tag, s))
            return len(out) == len(sources)

        await self._until(ready, f"no histogram {tag} from ranks {sources}")
        return out

    async def _allreduce(self, tag, local):
        """Sum of every rank's ``local`` (same shape on all ranks), added in rank order.

        Up to ``allgather_max`` ranks every rank sends its whole array to every other (one hop).
        Beyond, a reduce-scatter and an all-gather: rank ``r`` receives segment ``r`` of every
        rank's array, sums it, and sends the sum to all (two hops, ``2 (W - 1) / W`` of the
        array out of each rank). Both add ``local_0 + local_1 + ...`` element by element in the
        same order, so their sums are bit-identical to each other and across ranks."""
        t0 = _now()
        W, r = self.n_ranks, self.rank
        others = [j for j in range(W) if j != r]
        if W == 1:
            return local
        if W <= self._allgather_max:
            for j in others:
                self._send(j, f"{tag}.0", local)
            got = await self._recv(f"{tag}.0", others)
            got[r] = local
            total = got[0] + got[1]
            for j in range(2, W):
                total += got[j]
        else:
            flat = local.reshape(-1)
            b = _segments(flat.shape[0], W)
            for j in others:
                self._send(j, f"{tag}.1", flat[b[j]:b[j + 1]])
            got = await self._recv(f"{tag}.1", others)
            got[r] = flat[b[r]:b[r + 1]]
            mine = got[0] + got[1]
            for j in range(2, W):
                mine += got[j]
            for j in others:
                self._send(j, f"{tag}.2", mine)
            seg = await self._recv(f"{tag}.2", others)
            seg[r] = mine
            total = np.concatenate([seg[j] for j in range(W)]).reshape(local.shape)
        self._lap("allreduce", t0)
        self.profile["allreduces"] += 1
        return total

    # -- boosting -----------------------------------------------------------------------------
    async def fit(self, peers, spec):
        """Boost ``spec["n_estimators"]`` rounds with the ranks ``peers`` (actor handles, in rank
        order; this rank among them). Returns the trees and this rank's time profile."""
        self._notify()  # creates the event on this loop
        self._peers = peers
        self._allgather_max = spec["allgather_max"]
        self.profile = {f"{phase}_{kind}": 0.0 for phase in _PHASES for kind in ("s", "cpu_s")}
        self.profile["allreduces"] = 0
        t0, c0 = _now(), time.process_time()
        with _threads(_worker_threads(spec["n_jobs"])):
            trees, tree_class = await self._boost(spec)
        await self._until(lambda: not self._in_flight, "sends undelivered")
        self._lap("fit", t0)
        self.profile["process_cpu_s"] = time.process_time() - c0
        return {"trees": trees, "tree_class": tree_class, "profile": self.profile,
                "bytes_sent": self.bytes_sent}

    async def _boost(self, spec):
        part = self.part
        obj, K = spec["objective"], spec["objective"].n_outputs
        y, w, Xf = part["y"], part["w"], part["Xf"]
        n, n_features = Xf.shape
        missing_bin = spec["missing_bin"]
        raw = np.repeat(np.asarray(spec["base"], dtype=np.float64)[:, None], n, axis=1)
        grad = np.empty((K, n), dtype=np.float32)
        hess = np.empty((K, n), dtype=np.float32)
        rng = np.random.default_rng(spec["seed"])
        n_cols = max(1, int(spec["colsample_bytree"] * n_features))
        subsample = spec["subsample"]
        trees, tree_class = [], []
        for m in range(spec["n_estimators"]):
            t = _now()
            obj.gradients(y, raw, w, grad, hess)
            if subsample < 1.0:
                # this shard's slices of the single-machine draw ``rng.random(n_total)``
                state = rng.bit_generator.state
                draws = []
                for offset, size in zip(spec["offsets"], part["sizes"], strict=True):
                    bits = np.random.PCG64()
                    bits.state = state
                    bits.advance(offset)
                    draws.append(np.random.Generator(bits).random(size))
                rng.bit_generator.advance(spec["n_total"])
                mask = np.concatenate(draws) < subsample
                sampled = np.flatnonzero(mask).astype(np.int32)
                rest = np.flatnonzero(~mask).astype(np.int32)
            else:
                sampled, rest = np.arange(n, dtype=np.int32), None
            features = (np.arange(n_features, dtype=np.int64) if n_cols == n_features
                        else np.sort(rng.choice(n_features, n_cols, replace=False)))
            self._lap("gradients", t)
            last_round = m == spec["n_estimators"] - 1
            for k in range(K):
                rows = sampled.copy()
                tree, leaves, routed = await self._grow(f"{m}.{k}", grad[k], hess[k], rows,
                                                        rest is None, features, rng, spec)
                trees.append(tree)
                tree_class.append(k)
                if last_round:  # the last round's scores are never used
                    continue
                t = _now()
                add_leaf_values(raw[k], rows, *leaves)
                if routed is not None:
                    starts, stops, feat, thr, dl, left_v, right_v = routed
                    add_routed_values(raw[k], rows, starts, stops, Xf, feat, thr, missing_bin, dl,
                                      left_v, right_v)
                if rest is not None and len(rest):
                    predict_binned_rows(Xf, rest, tree.feature, tree.bin_threshold,
                                        tree.default_left, tree.left, tree.right, tree.value,
                                        missing_bin, raw[k])
                self._lap("update", t)
            self.rounds = m + 1
        return trees, tree_class

    async def _grow(self, tag, grad, hess, rows, all_rows, features, rng, spec):
        """One tree, node for node as ``grower.grow_tree`` (same node ids, same order of random
        draws), every histogram summed over the ranks. Returns ``(tree, (leaf_start,
        leaf_stop, leaf_value), routed)`` as ``grower.GrownTree`` holds them."""
        p = spec["params"]
        Xf, Xr = self.part["Xf"], self.part["Xr"]
        edges, n_edges, missing_bin = spec["edges"], spec["n_edges"], spec["missing_bin"]
        n_features, n_bins = Xf.shape[1], missing_bin + 1
        buf = np.empty(rows.shape[0], dtype=rows.dtype)
        table = NodeTable(p)
        cols, new_node = table.cols, table.new_node
        hists = {}  # node id -> its histogram summed over the ranks
        seq = iter(range(1 << 30))

        def evaluate(node):
            t = _now()
            node.split = find_best_split(hists[node.id],
                                         node_features(features, p.colsample_bynode, rng),
                                         n_edges, missing_bin,
                                         node.g, node.h, p.reg_lambda, p.reg_alpha, p.gamma,
                                         p.min_child_weight)
            self._lap("split_search", t)
            if node.split[1] < 0:
                del hists[node.id]
            return node.split[1] >= 0

        def record_split(node, n_left):
            """Children of ``node``; ``n_left = -1``: rows not partitioned (no slices)."""
            gain, f, b, dl, gl, hl = node.split
            mid = node.start + n_left if n_left >= 0 else -1
            left = new_node(node.start, mid, node.depth + 1, gl, hl)
            right = new_node(mid, node.stop, node.depth + 1, node.g - gl, node.h - hl)
            i = node.id
            cols["feature"][i] = f
            cols["threshold"][i] = float(edges[f, b]) if b < edges.shape[1] else np.inf
            cols["bin_threshold"][i] = b
            cols["default_left"][i] = int(dl)
            cols["left"][i], cols["right"][i] = left.id, right.id
            cols["gain"][i] = gain
            del leaves[i]
            if n_left >= 0:
                leaves[left.id], leaves[right.id] = left, right
            return left, right

        async def children_hists(nodes, pairs):
            """The children's summed histograms: the smaller child's (by the global hessian
            sum, the same on every rank) built and summed, the larger's by subtraction."""
            t = _now()
            small = [lt if lt.h <= rt.h else rt for lt, rt in pairs]
            local = np.zeros((len(nodes), n_features, n_bins, 2))
            build_histograms(Xr, rows, np.array([s.start for s in small], dtype=np.int64),
                             np.array([s.stop for s in small], dtype=np.int64), grad, hess,
                             features, local)
            self._lap("histogram", t)
            total = await self._allreduce(f"{tag}.{next(seq)}", local)
            for q, (nd, (lt, rt)) in enumerate(zip(nodes, pairs, strict=True)):
                large = rt if small[q] is lt else lt
                hists[small[q].id] = total[q]
                hists[large.id] = hists.pop(nd.id) - total[q]

        t = _now()
        local = np.zeros((n_features, n_bins, 2))
        if all_rows:
            build_histogram_root(Xf, grad, hess, features, local)
        else:
            build_histogram(Xr, rows, grad, hess, features, local)
        self._lap("histogram", t)
        root_hist = await self._allreduce(f"{tag}.{next(seq)}", local)
        g0, h0 = root_hist[features[0]].sum(axis=0)
        root = new_node(0, rows.shape[0], 0, float(g0), float(h0))
        hists[root.id] = root_hist
        leaves = {root.id: root}
        routed = None
        if p.grow_policy == "depthwise" and p.max_leaves <= 0:
            frontier = [root] if can_split(p, 0, 1) and evaluate(root) else []
            while frontier:
                starts = np.array([nd.start for nd in frontier], dtype=np.int64)
                stops = np.array([nd.stop for nd in frontier], dtype=np.int64)
                feat = np.array([nd.split[1] for nd in frontier], dtype=np.int64)
                thr = np.array([nd.split[2] for nd in frontier], dtype=np.int64)
                dl = np.array([nd.split[3] for nd in frontier], dtype=np.bool_)
                if not can_split(p, frontier[0].depth + 1, 0):
                    # the children are leaves: their rows are routed when scores are updated
                    pairs = [record_split(nd, -1) for nd in frontier]
                    routed = (starts, stops, feat, thr, dl,
                              np.array([cols["value"][lt.id] for lt, _ in pairs]),
                              np.array([cols["value"][rt.id] for _, rt in pairs]))
                    break
                t = _now()
                n_left = np.empty(len(frontier), dtype=np.int64)
                partition_level(rows, starts, stops, Xf, feat, thr, missing_bin, dl, buf, n_left)
                self._lap("partition", t)
                pairs = [record_split(nd, int(c)) for nd, c in zip(frontier, n_left, strict=True)]
                await children_hists(frontier, pairs)
                frontier = [c for pair in pairs for c in pair if evaluate(c)]
        else:
            heap, counter = [], 0

            def push(node):
                nonlocal counter
                if evaluate(node):
                    key = node.depth if p.grow_policy == "depthwise" else -node.split[0]
                    heapq.heappush(heap, (key, counter, node))
                    counter += 1

            if can_split(p, 0, 1):
                push(root)
            while heap:
                if p.max_leaves > 0 and len(leaves) >= p.max_leaves:
                    break
                _, _, node = heapq.heappop(heap)
                t = _now()
                n_left = partition_rows(rows, node.start, node.stop, Xf[:, node.split[1]],
                                        node.split[2], missing_bin, node.split[3], buf)
                self._lap("partition", t)
                pair = record_split(node, n_left)
                if can_split(p, node.depth + 1, len(leaves)):
                    await children_hists([node], [pair])
                    push(pair[0])
                    push(pair[1])
                hists.pop(node.id, None)
        tree = tree_from_lists(**cols)
        ids = sorted(leaves)
        leaf_slices = (np.array([leaves[i].start for i in ids], dtype=np.int64),
                       np.array([leaves[i].stop for i in ids], dtype=np.int64),
                       tree.value[ids].copy())
        return tree, leaf_slices, routed


# --- client side -----------------------------------------------------------------------------

def _current_client(client):
    from distributed import default_client
    return client if client is not None else default_client()


def _as_dask_array(obj, name, ndim):
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(obj, (dd.DataFrame, dd.Series)):
        obj = obj.to_dask_array(lengths=True)
    if not isinstance(obj, da.Array):
        raise TypeError(f"{name} must be a dask.array.Array or a dask.dataframe collection, "
                        f"got {type(obj).__name__}")
    if ndim == 1 and obj.ndim == 2 and obj.shape[1] == 1:
        obj = obj[:, 0]
    if obj.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {obj.shape}")
    if any(np.isnan(c) for c in obj.chunks[0]):
        obj = obj.compute_chunk_sizes()
    return obj


def _add(a, b):
    return a + b


def _tree_reduce(client, futures, func, workers, *args):
    """Sum-like pairwise reduction on the workers, in a fixed order (deterministic result)."""
    return _reduce_to(client, futures, func, workers, 1, *args)[0]


def _reduce_to(client, futures, func, workers, fanin, *args):
    """Pairwise reduction on the workers, in a fixed order, down to at most ``fanin`` futures
    (which the client then gathers and combines in the same order)."""
    level = list(futures)
    where = list(workers)
    while len(level) > fanin:
        nxt, nwhere = [], []
        for i in range(0, len(level) - 1, 2):
            nxt.append(client.submit(func, level[i], level[i + 1], *args, pure=False,
                                     workers=[where[i]], allow_other_workers=True))
            nwhere.append(where[i])
        if len(level) % 2:
            nxt.append(level[-1])
            nwhere.append(where[-1])
        level, where = nxt, nwhere
    return level


def _lost_worker_errors():
    from distributed.client import FutureCancelledError, FuturesCancelledError
    from distributed.scheduler import KilledWorker
    from distributed.utils import CancelledError

    return (KilledWorker, CancelledError, FutureCancelledError, FuturesCancelledError)


def _is_lost(exc):
    """Whether ``exc`` (raised by a rank or by an actor call) means a worker or peer is gone."""
    from distributed.comm.core import CommClosedError

    if isinstance(exc, (_PeerLost, OSError, CommClosedError) + _lost_worker_errors()):
        return True
    return isinstance(exc, RuntimeError) and "Actor was lost" in str(exc)


class _CollectiveLost(RuntimeError):
    """A rank's worker died (or a peer stopped answering) during the collective fit."""


def _collective_fit(est, client, parts, spec, offsets):
    """Create one :class:`_Rank` actor per shard, on the worker holding it, run :meth:`_Rank.fit`
    on all of them and return rank 0's result (after checking every rank grew the same trees).

    Raises :class:`_CollectiveLost` when a rank's worker leaves the cluster or a rank loses
    its peers; the other ranks are aborted first, so no rank is left waiting."""
    from distributed import wait

    W = len(parts)
    wait(parts)
    who = client.who_has(parts)
    places = [who[p.key][0] if who.get(p.key) else None for p in parts]
    if None in places or len(set(places)) < W:
        raise _CollectiveLost("the shards are not on distinct live workers")
    rank_futs = [client.submit(_Rank, part, r, W, actor=True, workers=[wk],
                               allow_other_workers=False, pure=False)
                 for r, (part, wk) in enumerate(zip(parts, places, strict=True))]
    actors, calls = [], []
    try:
        try:
            wait(rank_futs, timeout=ACTOR_START_TIMEOUT)
        except TimeoutError as exc:
            raise _CollectiveLost("a rank's actor did not start (its worker left?)") from exc
        actors = [f.result() for f in rank_futs]
        calls = [a.fit(actors, dict(spec, offsets=offs))
                 for a, offs in zip(actors, offsets, strict=True)]
        last_check = time.monotonic()
        while not all(c.done() for c in calls):
            for c in calls:
                if c.done():
                    c.result()  # raises the rank's error, if it failed
            now = time.monotonic()
            if now - last_check >= LIVENESS_S:
                last_check = now
                alive = set(client.scheduler_info()["workers"])
                gone = [wk for wk in places if wk not in alive]
                if gone:
                    raise _CollectiveLost(f"worker(s) {gone} left the cluster during fit")
            est._rounds_done = int(actors[0].rounds)
            time.sleep(POLL_S)
        results = [c.result() for c in calls]
    except BaseException as exc:
        for a, c in zip(actors, calls, strict=False):
            if not c.done():
                try:
                    a.abort(repr(exc)).result(timeout=10)
                except Exception:  # noqa: BLE001 - a dead rank cannot be aborted
                    pass
        for c in calls:  # wait for the aborted ranks to stop
            try:
                c.result(timeout=30)
            except Exception:  # noqa: BLE001
                pass
        client.cancel(rank_futs)
        if isinstance(exc, Exception) and _is_lost(exc):
            raise _CollectiveLost(f"{type(exc).__name__}: {exc}") from exc
        raise
    client.cancel(rank_futs)
    ref = results[0]
    for r, res in enumerate(results[1:], start=1):
        if not _same_trees(ref["trees"], res["trees"]):
            raise RuntimeError(f"rank {r} grew different trees from rank 0; this is a bug")
    return ref["trees"], ref["tree_class"], results


def _same_trees(a, b):
    """Bitwise equality of two tree lists."""
    if len(a) != len(b):
        return False
    for ta, tb in zip(a, b, strict=True):
        for field in ("feature", "bin_threshold", "default_left", "left", "right", "value",
                      "gain", "cover"):
            if not np.array_equal(getattr(ta, field), getattr(tb, field)):
                return False
    return True


class _DaskMixin:
    """Fitting on a Dask cluster; prediction to dask collections; :meth:`to_local`.

    Fitted attributes beyond the single-machine estimator's: ``bin_mapper_`` (the global bin
    edges), ``histogram_bytes_`` (bytes of histograms the workers sent each other during fit,
    all ranks together), ``fit_profile_``: ``"client"``, the wall seconds of the fit's phases
    (persisting, bin edges and classes, binning the shards, boosting), and
    ``"ranks"``, per rank the wall seconds (``*_s``) and the CPU seconds of the thread it runs
    on, the worker's event loop (``*_cpu_s``), in gradients, histogram kernels, row
    partitions, the allreduce (sending, waiting for peers, adding), split search, score updates
    and the whole boosting loop (``fit``); the worker process's CPU seconds meanwhile, all its
    threads (``process_cpu_s``); and the number of allreduces.
    """

    #: The ``distributed.Client`` to use; None: the current one (``distributed.default_client``).
    client = None
    _local_class: type = GBDTRegressor

    def fit(self, X, y, sample_weight=None, eval_set=None, early_stopping_rounds=None):
        """Boost ``n_estimators`` rounds on the workers holding ``X``'s partitions.

        Parameters
        ----------
        X : dask.array.Array or dask.dataframe.DataFrame, shape (n_samples, n_features)
            Float features, NaN = missing; partitioned by rows (column chunks are merged).
        y : dask.array.Array or dask.dataframe.Series, shape (n_samples,)
            Row partitions are aligned to ``X``'s.
        sample_weight : like ``y``, optional; non-negative
        eval_set, early_stopping_rounds : not supported (raise ``NotImplementedError``)
        """
        if eval_set is not None or early_stopping_rounds is not None:
            raise NotImplementedError("eval_set and early_stopping_rounds are not supported "
                                      "on Dask; evaluate with predict() on a dask collection")
        for name in ("early_stopping_rounds", "callbacks", "monotone_constraints",
                     "interaction_constraints", "categorical_features"):
            if getattr(self, name, None) is not None:
                raise NotImplementedError(f"{name} is not supported on Dask")
        self._validate_params()
        if self.tree_method != "hist":
            raise ValueError("DaskGBDT supports tree_method='hist' only, "
                             f"got {self.tree_method!r}")
        client = _current_client(self.client)
        names = list(X.columns) if hasattr(X, "columns") else None
        X = _as_dask_array(X, "X", 2)
        y = _as_dask_array(y, "y", 1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
        X = X.rechunk({1: -1})
        y = y.rechunk((X.chunks[0],))
        w = None
        if sample_weight is not None:
            w = _as_dask_array(sample_weight, "sample_weight", 1)
            if w.shape[0] != X.shape[0]:
                raise ValueError(f"sample_weight has {w.shape[0]} rows, X has {X.shape[0]}")
            w = w.rechunk((X.chunks[0],))
        n_features = int(X.shape[1])
        classify = isinstance(self, GBDTClassifier)
        lost = None
        for _ in range(FIT_ATTEMPTS):
            try:
                return self._fit(client, X, y, w, names, n_features, classify)
            except _CollectiveLost as exc:  # a rank's worker died: fit again from the start
                lost = exc
            except _lost_worker_errors() as exc:
                raise WorkerLostError(
                    f"a Dask worker was lost during fit and Dask could not recompute its data "
                    f"({type(exc).__name__}: {exc}); no model was produced, fit again") from exc
        raise WorkerLostError(
            f"a Dask worker was lost during fit in each of {FIT_ATTEMPTS} attempts ({lost}); "
            f"no model was produced, fit again") from lost

    def _fit(self, client, X, y, w, names, n_features, classify):
        import dask
        from distributed import futures_of, wait
        from sklearn.utils import check_random_state

        if X.shape[0] == 0:
            raise ValueError("X has no rows")
        if hasattr(self, "_forest"):  # a failed refit must not leave the old model behind
            del self._forest
        clock = {"start": time.perf_counter()}
        # Persist (a no-op for data already on the cluster) and take each row block's future
        # in block order; the blocks stay where they are.
        arrays = [X, y] + ([w] if w is not None else [])
        futs = []
        for a in client.persist(arrays):
            by_key = {f.key: f for f in futures_of(a)}
            futs.append([by_key[key] for key in dask.core.flatten(a.__dask_keys__())])
        x_parts, y_parts = futs[0], futs[1]
        w_parts = futs[2] if w is not None else [None] * len(x_parts)
        wait(x_parts)  # computed: who_has then tells where each block lives
        who = client.who_has(x_parts)
        alive = sorted(client.scheduler_info()["workers"])
        if not alive:
            raise WorkerLostError("the Dask cluster has no workers")
        # Where each block lives (blocks with no known place are dealt round-robin), and one
        # shard per rank: about equal row counts, moving as few blocks as that needs. The
        # shard's reduction order is fixed for the fit.
        holder = [who[f.key][0] if who.get(f.key) else alive[i % len(alive)]
                  for i, f in enumerate(x_parts)]
        held: dict = {}
        for i, wk in enumerate(holder):
            held.setdefault(wk, []).append(i)
        sizes = np.array(X.chunks[0], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        shards = {wk: idx for wk, idx in _balance(sizes.tolist(), holder, alive).items()
                  if sizes[idx].sum() > 0}
        workers = sorted(shards)

        def sub(func, *args, worker):
            return client.submit(func, *args, pure=False, workers=[worker],
                                 allow_other_workers=True)
        clock["persist"] = time.perf_counter()

        # 1. bin edges from merged per-shard summaries (exact below SUMMARY_SIZE values), and
        #    the classes, in the same pass
        def blocks(parts, idx):
            return [parts[i] for i in idx]

        n_total = int(sizes.sum())
        seed = 0 if self.random_state is None else self.random_state
        draws = check_random_state(seed).randint(2**31 - 1, size=2)

        def take(idx):  # the shard's part of BIN_SUBSAMPLE rows, or None for all its rows
            if n_total <= BIN_SUBSAMPLE:
                return None
            return max(1, round(BIN_SUBSAMPLE * int(sizes[idx].sum()) / n_total))

        stats = [sub(_shard_stats, blocks(x_parts, idx), blocks(y_parts, idx),
                     blocks(w_parts, idx), SUMMARY_SIZE, classify, take(idx),
                     int(draws[1]) + k, worker=wk)
                 for k, (wk, idx) in enumerate(sorted(held.items()))]
        summary, classes = _tree_reduce(client, stats, _merge_shard_stats, sorted(held),
                                        SUMMARY_SIZE).result()
        obj, _ = self._make_objective(classes if classify else np.zeros(1))
        if obj.name not in ("reg:squarederror", "binary:logistic", "multi:softprob", "custom"):
            # absolute/quantile re-fit leaves after growth; Poisson & co. need their links here
            raise NotImplementedError(f"objective {obj.name!r} is not supported on Dask")
        self._objective = obj
        K = obj.n_outputs
        edges = np.full((n_features, max(self.max_bin - 1, 1)), np.inf)
        n_edges = np.zeros(n_features, dtype=np.int64)
        for j, (v, c) in enumerate(summary):  # one feature per call: the serial kernel
            _find_edges_serial(np.ascontiguousarray(v[:, None]), np.ascontiguousarray(c), False,
                               self.max_bin, edges[j:j + 1], n_edges[j:j + 1])
        mapper = BinMapper(self.max_bin)
        mapper.edges_, mapper.n_edges_ = edges, n_edges
        missing_bin = mapper.missing_bin
        clock["bin_edges"] = time.perf_counter()

        # 2. bin every block where it lives (a block given to another rank travels binned, at
        #    1-2 bytes a value); the base score from label statistics
        def binned(idx, wk):
            return sub(_bin_blocks, blocks(x_parts, idx), blocks(y_parts, idx),
                       blocks(w_parts, idx), edges, n_edges, self.max_bin, classes, self.n_jobs,
                       worker=wk)

        parts = []
        for wk in workers:
            runs = []  # consecutive blocks of the shard with the same holder: one binning task
            for i in shards[wk]:
                if runs and holder[runs[-1][-1]] == holder[i]:
                    runs[-1].append(i)
                else:
                    runs.append([i])
            parts.append(sub(_join_shard, [binned(run, holder[run[0]]) for run in runs],
                             worker=wk))
        n_labels = len(classes) if classify else 0
        stats = [sub(_label_stats, pp, n_labels, classify, worker=wk)
                 for pp, wk in zip(parts, workers, strict=True)]
        total = _tree_reduce(client, stats, _add, workers).result()
        if classify:
            if not total.sum() > 0:
                raise ValueError("sample_weight sums to zero")
            y_small, w_small = np.arange(n_labels, dtype=np.float64), total
        else:
            if not total[1] > 0:
                raise ValueError("sample_weight sums to zero")
            y_small, w_small = np.array([total[0] / total[1]]), np.ones(1)
        base = (obj.init_score(y_small, w_small) if self.base_score is None
                else np.full(K, self._raw_base_score(float(self.base_score))))
        clock["binning"] = time.perf_counter()

        # 3. boosting: one rank per shard, on its worker (the same seed on every rank)
        spec = {"objective": obj, "base": np.asarray(base, dtype=np.float64),
                "params": self._tree_params(), "n_estimators": int(self.n_estimators),
                "colsample_bytree": float(self.colsample_bytree),
                "subsample": float(self.subsample),
                "seed": int(draws[0]),  # the first draw, as GBDTClassifier's
                "n_total": int(sizes.sum()), "edges": edges, "n_edges": n_edges,
                "missing_bin": missing_bin, "n_jobs": self.n_jobs,
                "allgather_max": ALLGATHER_MAX_RANKS}
        offsets = [[int(starts[i]) for i in shards[wk]] for wk in workers]
        self._rounds_done = 0
        trees, tree_class, results = _collective_fit(self, client, parts, spec, offsets)
        clock["boosting"] = time.perf_counter()
        self._rounds_done = int(self.n_estimators)

        self._base_score = np.asarray(base, dtype=np.float64)
        self._trees, self._tree_class = trees, tree_class
        self.n_features_in_ = n_features
        if names is not None:
            self.feature_names_in_ = np.asarray([str(c) for c in names], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.bin_mapper_ = mapper
        self.histogram_bytes_ = int(sum(r["bytes_sent"] for r in results))
        marks = list(clock.items())
        self.fit_profile_ = {
            "client": {f"{name}_s": t - marks[i][1] for i, (name, t) in enumerate(marks[1:])},
            "ranks": [r["profile"] for r in results]}
        self.evals_result_ = {}
        self._finish()
        return self

    # --- prediction: dask collections in, dask arrays out ----------------------------------
    def to_local(self):
        """The fitted model as a single-machine ``GBDTClassifier`` / ``GBDTRegressor`` (same
        parameters, trees and base score; predicts the same numbers)."""
        check_is_fitted(self, "_forest")
        est = self._local_class(**self.get_params())
        for name in ("_objective", "_base_score", "n_features_in_", "feature_names_in_",
                     "classes_", "n_classes_", "evals_result_"):
            if hasattr(self, name):
                setattr(est, name, getattr(self, name))
        est._trees, est._tree_class = list(self._trees), list(self._tree_class)
        est._finish()
        return est

    def save_model(self, path) -> None:
        """Write the model as the single-machine estimator's JSON (load it with
        ``deepnotes.boosting.load_model``)."""
        self.to_local().save_model(path)

    def _dask_predict(self, X, method, n_outputs):
        """``method`` of the local model on every row block of ``X``, as a dask array."""
        import dask.array as da
        import dask.dataframe as dd

        if not isinstance(X, (da.Array, dd.DataFrame)):
            return None
        check_is_fitted(self, "_forest")
        X = _as_dask_array(X, "X", 2)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        X = X.rechunk({1: -1})
        local = self.to_local()
        dtype = self.classes_.dtype if method == "predict" and hasattr(self, "classes_") \
            else np.float64
        if n_outputs is None:
            return X.map_blocks(_predict_block, local, method, dtype=dtype, drop_axis=1)
        return X.map_blocks(_predict_block, local, method, dtype=dtype,
                            chunks=(X.chunks[0], (n_outputs,)))

    def decision_function_raw(self, X):
        """Raw scores, shape (n_samples, K): a dask array for a dask input, else numpy."""
        out = self._dask_predict(X, "decision_function_raw", self.n_trees_per_round_
                                 if hasattr(self, "n_trees_per_round_") else 1)
        return super().decision_function_raw(X) if out is None else out

    def predict(self, X):
        """Predictions, shape (n_samples,): a dask array for a dask input, else numpy."""
        out = self._dask_predict(X, "predict", None)
        return super().predict(X) if out is None else out


def _predict_block(block, local, method):
    names = getattr(local, "feature_names_in_", None)
    if names is not None:
        import pandas as pd

        block = pd.DataFrame(block, columns=names)
    return getattr(local, method)(block)


class DaskGBDTRegressor(_DaskMixin, GBDTRegressor):
    """``GBDTRegressor`` fitted on a Dask cluster (parameters: see ``GBDTRegressor``).

    Set ``.client`` to use a given ``distributed.Client`` (default: the current one)."""

    _local_class = GBDTRegressor


class DaskGBDTClassifier(_DaskMixin, GBDTClassifier):
    """``GBDTClassifier`` fitted on a Dask cluster (parameters: see ``GBDTClassifier``).

    Set ``.client`` to use a given ``distributed.Client`` (default: the current one)."""

    _local_class = GBDTClassifier

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes): a dask array for a dask input."""
        out = self._dask_predict(X, "predict_proba", len(getattr(self, "classes_", [0, 1])))
        return super().predict_proba(X) if out is None else out


__all__ = ["DaskGBDTClassifier", "DaskGBDTRegressor", "SUMMARY_SIZE", "WorkerLostError"]
