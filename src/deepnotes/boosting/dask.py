"""Gradient-boosted trees on a Dask cluster: the single-machine trees, grown where the data live.

:class:`DaskGBDTClassifier` / :class:`DaskGBDTRegressor` take the parameters of
``GBDTClassifier`` / ``GBDTRegressor`` and fit on ``dask.array`` / ``dask.dataframe`` partitions
held by the workers of a ``distributed.Client`` (the current client unless one is set on
``.client``, as ``xgboost.dask`` does). Rows never travel to the client; what does, per tree level,
is the level's gradient histograms, summed on the workers. The scheme is the data-parallel
histogram method of XGBoost (Chen & Guestrin, 2016, Sec. 4) and LightGBM's "data parallel" mode.
Each worker concatenates the row blocks it holds into one *shard* (as ``xgboost.dask`` does), so a
tree level costs one task per worker, not one per block.

1. **Bins.** Every shard summarises each feature as its sorted distinct values with their summed
   sample weights; summaries are merged pairwise on the workers, and a merged summary longer
   than ``SUMMARY_SIZE`` points is pruned to ``SUMMARY_SIZE`` points spaced evenly in cumulative
   weight (each kept point carries the weight of the values since the previous one). The client
   runs ``binning._find_edges`` on the merged summary. While no summary was pruned this is an
   *exact* pass: the edges are those ``BinMapper`` finds on all rows (midpoints of distinct
   values, or the same weighted quantiles). After pruning, a quantile is off by at most
   ``W / SUMMARY_SIZE`` of the total weight ``W`` (a mergeable weighted-quantile summary in the
   spirit of the paper's Sec. 3.3 sketch, without its error-bounded prune).
2. **Histograms.** Each shard bins its rows once (``BinMapper.transform_row_major``) and, per
   tree level, splits its rows by the chosen splits (``grower.partition_level``) and builds the
   histograms of the *smaller* children (``histogram.build_histograms``, Eq. 8 of the post).
   The shards' histograms are summed pairwise on the workers down to ``GATHER_FANIN`` partial
   sums, which the client gathers and adds in a fixed order; it gets each larger child as parent
   minus smaller child (the subtraction trick) and runs ``splitting.find_best_split`` once per
   node. The histogram task splits the rows on a copy by itself, and a second task carries the
   split rows to the next level, so that the level's critical path is one task and one gather.
3. **Splits back.** The chosen ``(feature, bin, default direction)`` of a level go to the workers
   as arguments of the next level's tasks; at the end of a round the finished trees update every
   shard's raw scores (``predictor.predict_binned_rows``).

Every worker-side task is a pure function (it copies what it changes), so a future lost with a
worker is recomputed by Dask from its lineage into the same value. If Dask cannot recompute it,
:meth:`fit` raises :class:`WorkerLostError` and leaves the estimator unfitted; it never returns
a model grown on partial data. Growth follows ``grower.grow_tree`` node for node (same node ids,
the same order of random draws), so on the same data and bins the trees equal the single-machine
model's up to the summation order of the histograms (fixed within a fit: by shard, in the order
of the workers' addresses).

Deviations from ``GBDTClassifier`` / ``GBDTRegressor``:

1. Bin edges come from all rows (exact, or the pruned summary above), not from the
   ``BinMapper`` row subsample of 200 000. The edges are identical when there are at most
   200 000 rows and no feature has more than ``SUMMARY_SIZE`` distinct values in a shard.
2. The child whose histogram is built (the other comes by subtraction) is the one with the
   smaller hessian sum, known on the client before the rows move, instead of the one with fewer
   rows: one round trip per level less. Only the rounding of the larger child's sums changes.
3. ``tree_method='exact'``, ``eval_set`` and early stopping are not supported (exact split
   search needs globally sorted columns; evaluation would need predictions on the client).
"""

from __future__ import annotations

import heapq

import numpy as np
from sklearn.utils.validation import check_is_fitted

from deepnotes.boosting.binning import BinMapper, _find_edges
from deepnotes.boosting.gbdt import GBDTClassifier, GBDTRegressor, _threads
from deepnotes.boosting.grower import partition_level
from deepnotes.boosting.histogram import build_histogram, build_histogram_root, build_histograms
from deepnotes.boosting.predictor import predict_binned_rows, tree_from_lists
from deepnotes.boosting.splitting import find_best_split, leaf_weight

#: Points per feature a merged bin summary keeps; below this many distinct values (in all
#: partitions together) the bin edges are exact.
SUMMARY_SIZE = 16384
#: Per level, the shards' histograms are summed pairwise on the workers down to at most this
#: many partial sums, which the client gathers and adds: with few workers the round trip of a
#: reduction task costs more than the bytes it saves.
GATHER_FANIN = 4


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
    if np.isinf(X).any():
        raise ValueError("X contains infinity; use NaN for missing values")
    w = None if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    return [_prune(*_distinct(X[:, j], w), size) for j in range(X.shape[1])]


def _summarize_shard(xs, ws, size):
    """:func:`_summarize` of a worker's blocks together."""
    X = np.concatenate([np.asarray(x, dtype=np.float64) for x in xs])
    w = None if ws[0] is None else np.concatenate([np.asarray(v, np.float64) for v in ws])
    return _summarize(X, w, size)


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


def _bin_shard(xs, ys, ws, edges, n_edges, max_bin, classes, n_jobs):
    """Bin a worker's row blocks (in block order) into one shard: ``{"Xr": C-order bins,
    "Xf": Fortran-order bins, "y", "w", "sizes": rows per block}``."""
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
    Xr = np.ascontiguousarray(np.concatenate(binned))
    return {"Xr": Xr, "Xf": np.asfortranarray(Xr), "y": np.concatenate(labels),
            "w": np.concatenate(weights), "sizes": [len(b) for b in binned]}


def _init_raw(part, base):
    return np.repeat(np.asarray(base, dtype=np.float64)[:, None], part["y"].shape[0], axis=1)


def _gradients(part, raw, objective, sample, n_jobs):
    """Gradients, hessians (float32, shape (K, n)) and the rows this round samples.

    ``sample``: None (all rows) or ``(rng_state, offsets, rate)``: each block's slice (it
    starts at row ``offsets[b]`` of the data) of the client generator's ``random(n_total)``
    draw, so rows are sampled as on one machine."""
    n = part["y"].shape[0]
    K = raw.shape[0]
    grad = np.empty((K, n), dtype=np.float32)
    hess = np.empty((K, n), dtype=np.float32)
    with _threads(_worker_threads(n_jobs)):
        objective.gradients(part["y"], raw, part["w"], grad, hess)
    if sample is None:
        rows = None
    else:
        state, offsets, rate = sample
        draws = []
        for offset, size in zip(offsets, part["sizes"], strict=True):
            bits = np.random.PCG64()
            bits.state = state
            bits.advance(offset)
            draws.append(np.random.Generator(bits).random(size))
        rows = np.flatnonzero(np.concatenate(draws) < rate).astype(np.int32)
    return {"grad": grad, "hess": hess, "rows": rows}


def _root_state(part, gh):
    """Row state of a tree's root: the rows this round samples, one slice."""
    rows = (np.arange(part["y"].shape[0], dtype=np.int32) if gh["rows"] is None
            else gh["rows"])
    return {"rows": rows, "slices": {0: (0, rows.shape[0])}}


def _root_hist(part, gh, k, features, missing_bin, n_jobs):
    """The root's shard-local histogram, shape (1, n_features, n_bins, 2)."""
    hist = np.zeros((part["Xr"].shape[1], missing_bin + 1, 2))
    grad, hess = gh["grad"][k], gh["hess"][k]
    with _threads(_worker_threads(n_jobs)):
        if gh["rows"] is None:
            build_histogram_root(part["Xf"], grad, hess, features, hist)
        else:
            build_histogram(part["Xr"], gh["rows"], grad, hess, features, hist)
    return hist[None]


def _partition_nodes(part, state, spec, missing_bin):
    """Split the rows of the nodes in ``spec`` (a copy of ``state``'s rows; ``state`` is not
    modified). Returns ``(new_state, starts, n_left)``.

    ``spec``: arrays ``node, feature, bin, default_left, left, right, small_is_left``."""
    node, feat, bins, dl, left, right, _ = spec
    rows = state["rows"].copy()
    slices = dict(state["slices"])
    starts = np.array([slices[i][0] for i in node], dtype=np.int64)
    stops = np.array([slices[i][1] for i in node], dtype=np.int64)
    n_left = np.empty(len(node), dtype=np.int64)
    partition_level(rows, starts, stops, part["Xf"], feat, bins, missing_bin, dl,
                    np.empty(rows.shape[0], dtype=rows.dtype), n_left)
    for s in range(len(node)):
        del slices[int(node[s])]
        mid = int(starts[s] + n_left[s])
        slices[int(left[s])] = (int(starts[s]), mid)
        slices[int(right[s])] = (mid, int(stops[s]))
    return {"rows": rows, "slices": slices}, starts, stops, n_left


def _level_state(part, state, spec, missing_bin, n_jobs):
    """The row state after splitting the nodes in ``spec``."""
    with _threads(_worker_threads(n_jobs)):
        return _partition_nodes(part, state, spec, missing_bin)[0]


def _level_hist(part, gh, k, state, spec, features, missing_bin, n_jobs):
    """Shard-local histograms of the smaller children of the nodes in ``spec``, shape
    (n_nodes, n_features, n_bins, 2). Partitions the rows itself (as :func:`_level_state`
    does, on a copy) so that the histogram waits for no other task."""
    small_left = spec[6]
    hist = np.zeros((len(spec[0]), part["Xr"].shape[1], missing_bin + 1, 2))
    with _threads(_worker_threads(n_jobs)):
        new, starts, stops, n_left = _partition_nodes(part, state, spec, missing_bin)
        s_start = np.where(small_left, starts, starts + n_left)
        s_stop = np.where(small_left, starts + n_left, stops)
        build_histograms(part["Xr"], new["rows"], s_start, s_stop, gh["grad"][k],
                         gh["hess"][k], features, hist)
    return hist


def _add(a, b):
    return a + b


def _apply_trees(part, raw, trees, missing_bin, n_jobs):
    """New raw scores: ``raw[k] +`` the leaf each row reaches in tree ``(k, tree)``."""
    raw = raw.copy()
    rows = np.arange(raw.shape[1], dtype=np.int32)
    with _threads(_worker_threads(n_jobs)):
        for k, t in trees:
            predict_binned_rows(part["Xr"], rows, t.feature, t.bin_threshold, t.default_left,
                                t.left, t.right, t.value, missing_bin, raw[k])
    return raw


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


class _Node:
    __slots__ = ("id", "depth", "g", "h", "hist", "split")

    def __init__(self, node_id, depth, g, h):
        self.id, self.depth, self.g, self.h = node_id, depth, g, h
        self.hist = None
        self.split = None


class _DaskFit:
    """One fit: the partitions' futures and the client-side tree growth."""

    def __init__(self, est, client, parts, workers, missing_bin, edges, n_edges, rng):
        self.est, self.client, self.parts, self.workers = est, client, parts, workers
        self.missing_bin, self.edges, self.n_edges, self.rng = missing_bin, edges, n_edges, rng
        self.params = est._tree_params()
        self.n_jobs = est.n_jobs
        self.histogram_bytes = 0

    def submit(self, func, *args, worker):
        return self.client.submit(func, *args, pure=False, workers=[worker],
                                  allow_other_workers=True)

    def summed(self, hists):
        """Sum of the shards' histogram futures, in shard order."""
        partial = _reduce_to(self.client, hists, _add, self.workers, GATHER_FANIN)
        parts = self.client.gather(partial)
        total = parts[0]
        for h in parts[1:]:
            total = total + h
        self.histogram_bytes += sum(h.nbytes for h in parts)
        return total

    def grow(self, gh, k, features):
        """One tree on the gradients ``gh`` (futures per partition), mirroring
        ``grower.grow_tree``: the same node ids and the same order of random draws."""
        p, rng, edges, n_edges = self.params, self.rng, self.edges, self.n_edges
        missing_bin = self.missing_bin
        cols = {c: [] for c in ("feature", "threshold", "bin_threshold", "default_left", "left",
                                "right", "value", "gain", "cover")}

        def node_features():
            if p.colsample_bynode >= 1.0:
                return features
            m = max(1, int(p.colsample_bynode * len(features) + 0.5))
            return np.sort(rng.choice(features, size=m, replace=False))

        def evaluate(node):
            node.split = find_best_split(node.hist, node_features(), n_edges, missing_bin,
                                         node.g, node.h, p.reg_lambda, p.reg_alpha, p.gamma,
                                         p.min_child_weight)
            return node.split[1] >= 0

        def can_split(depth, n_leaves):
            return ((p.max_depth <= 0 or depth < p.max_depth)
                    and (p.max_leaves <= 0 or n_leaves < p.max_leaves))

        def new_node(depth, g, h):
            node = _Node(len(cols["value"]), depth, g, h)
            for c, v in (("feature", -1), ("threshold", 0.0), ("bin_threshold", -1),
                         ("default_left", 0), ("left", -1), ("right", -1), ("gain", 0.0)):
                cols[c].append(v)
            cols["value"].append(leaf_weight(g, h, p.reg_lambda, p.reg_alpha) * p.learning_rate)
            cols["cover"].append(h)
            return node

        def record_split(node):
            gain, f, b, dl, gl, hl = node.split
            left = new_node(node.depth + 1, gl, hl)
            right = new_node(node.depth + 1, node.g - gl, node.h - hl)
            i = node.id
            cols["feature"][i] = f
            cols["threshold"][i] = float(edges[f, b]) if b < edges.shape[1] else np.inf
            cols["bin_threshold"][i] = b
            cols["default_left"][i] = int(dl)
            cols["left"][i], cols["right"][i] = left.id, right.id
            cols["gain"][i] = gain
            del leaves[i]
            leaves[left.id], leaves[right.id] = left, right
            return left, right

        def split_on_workers(nodes, children):
            """Partition ``nodes`` on every partition; set the children's global histograms."""
            small_left = np.array([lt.h <= rt.h for lt, rt in children], dtype=np.bool_)
            spec = (np.array([nd.id for nd in nodes], dtype=np.int64),
                    np.array([nd.split[1] for nd in nodes], dtype=np.int64),
                    np.array([nd.split[2] for nd in nodes], dtype=np.int64),
                    np.array([nd.split[3] for nd in nodes], dtype=np.bool_),
                    np.array([lt.id for lt, _ in children], dtype=np.int64),
                    np.array([rt.id for _, rt in children], dtype=np.int64), small_left)
            zipped = list(zip(self.parts, gh, states, self.workers, strict=True))
            hists = [self.submit(_level_hist, part, g, k, s, spec, features, missing_bin,
                                 self.n_jobs, worker=w) for part, g, s, w in zipped]
            states[:] = [self.submit(_level_state, part, s, spec, missing_bin, self.n_jobs,
                                     worker=w) for part, _, s, w in zipped]
            small = self.summed(hists)
            for q, (nd, (lt, rt)) in enumerate(zip(nodes, children, strict=True)):
                sm, lg = (lt, rt) if small_left[q] else (rt, lt)
                sm.hist = small[q]
                lg.hist = nd.hist - small[q]
                nd.hist = None

        hists = [self.submit(_root_hist, part, g, k, features, missing_bin, self.n_jobs,
                             worker=w) for part, g, w in zip(self.parts, gh, self.workers,
                                                             strict=True)]
        states = [self.submit(_root_state, part, g, worker=w)
                  for part, g, w in zip(self.parts, gh, self.workers, strict=True)]
        root_hist = self.summed(hists)[0]
        g0, h0 = root_hist[features[0]].sum(axis=0)
        root = new_node(0, float(g0), float(h0))
        root.hist = root_hist
        leaves = {root.id: root}
        if p.grow_policy == "depthwise" and p.max_leaves <= 0:
            frontier = [root] if can_split(0, 1) and evaluate(root) else []
            while frontier:
                depth = frontier[0].depth + 1
                children = [record_split(nd) for nd in frontier]
                if not can_split(depth, 0):
                    break  # the children are leaves: no rows to move, no histograms
                split_on_workers(frontier, children)
                frontier = [c for pair in children for c in pair if evaluate(c)]
        else:
            heap, counter = [], 0

            def push(node):
                nonlocal counter
                if evaluate(node):
                    key = node.depth if p.grow_policy == "depthwise" else -node.split[0]
                    heapq.heappush(heap, (key, counter, node))
                    counter += 1

            if can_split(0, 1):
                push(root)
            while heap:
                if p.max_leaves > 0 and len(leaves) >= p.max_leaves:
                    break
                _, _, node = heapq.heappop(heap)
                left, right = record_split(node)
                if can_split(node.depth + 1, len(leaves)):
                    split_on_workers([node], [(left, right)])
                    push(left)
                    push(right)
                node.hist = None
        return tree_from_lists(**cols)

    def boost(self, raw):
        est, rng = self.est, self.rng
        n_total = self.n_total
        K = est._objective.n_outputs
        n_features = self.edges.shape[0]
        n_cols = max(1, int(est.colsample_bytree * n_features))
        trees, tree_class = [], []
        for _ in range(est.n_estimators):
            if est.subsample < 1.0:
                state = rng.bit_generator.state
                samples = [(state, offs, float(est.subsample)) for offs in self.offsets]
                rng.bit_generator.advance(n_total)
            else:
                samples = [None] * len(self.parts)
            gh = [self.submit(_gradients, part, r, est._objective, s, self.n_jobs, worker=w)
                  for part, r, s, w in zip(self.parts, raw, samples, self.workers, strict=True)]
            features = (np.arange(n_features, dtype=np.int64) if n_cols == n_features
                        else np.sort(rng.choice(n_features, n_cols, replace=False)))
            new = []
            for k in range(K):
                tree = self.grow(gh, k, features)
                new.append((k, tree))
                trees.append(tree)
                tree_class.append(k)
            if len(trees) < est.n_estimators * K:  # the last round's scores are never used
                raw = [self.submit(_apply_trees, part, r, new, self.missing_bin, self.n_jobs,
                                   worker=w)
                       for part, r, w in zip(self.parts, raw, self.workers, strict=True)]
            est._rounds_done = len(trees) // K
        return trees, tree_class


class _DaskMixin:
    """Fitting on a Dask cluster; prediction to dask collections; :meth:`to_local`.

    Fitted attributes beyond the single-machine estimator's: ``bin_mapper_`` (the global bin
    edges), ``histogram_bytes_`` (bytes of summed histograms the client received during fit).
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
        try:
            return self._fit(client, X, y, w, names, n_features, classify)
        except _lost_worker_errors() as exc:
            raise WorkerLostError(
                f"a Dask worker was lost during fit and Dask could not recompute its data "
                f"({type(exc).__name__}: {exc}); no model was produced, fit again") from exc

    def _fit(self, client, X, y, w, names, n_features, classify):
        import dask
        from distributed import futures_of
        from sklearn.utils import check_random_state

        if X.shape[0] == 0:
            raise ValueError("X has no rows")
        if hasattr(self, "_forest"):  # a failed refit must not leave the old model behind
            del self._forest
        # Persist (a no-op for data already on the cluster) and take each row block's future
        # in block order; the blocks stay where they are.
        arrays = [X, y] + ([w] if w is not None else [])
        futs = []
        for a in client.persist(arrays):
            by_key = {f.key: f for f in futures_of(a)}
            futs.append([by_key[key] for key in dask.core.flatten(a.__dask_keys__())])
        x_parts, y_parts = futs[0], futs[1]
        w_parts = futs[2] if w is not None else [None] * len(x_parts)
        who = client.who_has(x_parts)
        alive = sorted(client.scheduler_info()["workers"])
        if not alive:
            raise WorkerLostError("the Dask cluster has no workers")
        # One shard per worker: the blocks it holds, in block order (blocks with no known
        # place are dealt round-robin). The shard's reduction order is fixed for the fit.
        shards: dict = {}
        for i, f in enumerate(x_parts):
            wk = who[f.key][0] if who.get(f.key) else alive[i % len(alive)]
            shards.setdefault(wk, []).append(i)
        workers = sorted(shards)
        sizes = np.array(X.chunks[0], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

        def sub(func, *args, worker):
            return client.submit(func, *args, pure=False, workers=[worker],
                                 allow_other_workers=True)

        if classify:
            import dask.array as da

            classes = np.asarray(da.unique(y).compute())
        else:
            classes = None
        obj, _ = self._make_objective(classes if classify else np.zeros(1))
        self._objective = obj
        K = obj.n_outputs

        # 1. bin edges from merged per-partition summaries (exact below SUMMARY_SIZE values)
        def blocks(parts, wk):
            return [parts[i] for i in shards[wk]]

        summaries = [sub(_summarize_shard, blocks(x_parts, wk), blocks(w_parts, wk),
                         SUMMARY_SIZE, worker=wk) for wk in workers]
        summary = _tree_reduce(client, summaries, _merge_summaries, workers,
                               SUMMARY_SIZE).result()
        edges = np.full((n_features, max(self.max_bin - 1, 1)), np.inf)
        n_edges = np.zeros(n_features, dtype=np.int64)
        for j, (v, c) in enumerate(summary):
            _find_edges(np.ascontiguousarray(v[:, None]), np.ascontiguousarray(c), False,
                        self.max_bin, edges[j:j + 1], n_edges[j:j + 1])
        mapper = BinMapper(self.max_bin)
        mapper.edges_, mapper.n_edges_ = edges, n_edges
        missing_bin = mapper.missing_bin

        # 2. bin every partition where it lives; the base score from label statistics
        parts = [sub(_bin_shard, blocks(x_parts, wk), blocks(y_parts, wk), blocks(w_parts, wk),
                     edges, n_edges, self.max_bin, classes, self.n_jobs, worker=wk)
                 for wk in workers]
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
        raw = [sub(_init_raw, pp, base, worker=wk) for pp, wk in zip(parts, workers, strict=True)]

        # 3. boosting
        seed = 0 if self.random_state is None else self.random_state
        rng = np.random.default_rng(check_random_state(seed).randint(2**31 - 1))
        fit = _DaskFit(self, client, parts, workers, missing_bin, edges, n_edges, rng)
        fit.n_total = int(sizes.sum())
        fit.offsets = [[int(starts[i]) for i in shards[wk]] for wk in workers]
        self._rounds_done = 0
        trees, tree_class = fit.boost(raw)

        self._base_score = np.asarray(base, dtype=np.float64)
        self._trees, self._tree_class = trees, tree_class
        self.n_features_in_ = n_features
        if names is not None:
            self.feature_names_in_ = np.asarray([str(c) for c in names], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.bin_mapper_ = mapper
        self.histogram_bytes_ = fit.histogram_bytes
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
