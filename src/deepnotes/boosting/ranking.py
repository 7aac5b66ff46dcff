"""Learning to rank: LambdaMART (``rank:ndcg``) and RankNet pairs (``rank:pairwise``), xgboost's.

Rows come in query groups (``group`` sizes or one ``qid`` per row, as xgboost's ``XGBRanker``);
only documents of the same query are compared. For a pair ``(i, j)`` of one query with
``y_i > y_j`` and scores ``s_i, s_j``, RankNet's loss is ``log(1 + exp(-(s_i - s_j)))`` and its
gradient ``lambda_ij = sigmoid(s_i - s_j) - 1`` (Burges, 2010, "From RankNet to LambdaRank to
LambdaMART: An Overview", Eq. 3). LambdaMART scales each pair by ``|Delta NDCG_ij|``, the change in
the query's NDCG when ``i`` and ``j`` swap places in the current ranking (Eq. 11 of the post):

    g_i += lambda_ij |dZ_ij|,   g_j -= lambda_ij |dZ_ij|,
    h_i, h_j += 2 max(sigmoid (1 - sigmoid), 1e-16) |dZ_ij|                   (Eq. 12)

with xgboost's (>= 2.0) refinements and defaults, which we follow so that the trees agree:

- pairs: every pair of documents whose labels differ, the higher-ranked one among the first ``k``
  positions of the current ranking (``lambdarank_pair_method='topk'``; ``k`` =
  ``lambdarank_num_pair_per_sample``, None: all positions, xgboost's default);
- ``|dZ|`` is divided by ``|s_i - s_j| + 0.01`` unless all the query's scores are equal
  (``lambdarank_score_normalization``; LightGBM's idea);
- a query's gradients and hessians are multiplied by ``log2(1 + S) / S``, ``S = sum 2|lambda|``
  (``lambdarank_normalization``), then by the query's weight over the mean query weight;
- gain ``2^y - 1`` (``ndcg_exp_gain``) or ``y``, discount ``1 / log2(position + 2)``, ideal DCG
  over the first ``k`` positions of the label order; ties in the score keep input order.

``rank:pairwise`` is the same with ``|dZ| = 1``. The ranker starts from raw score 0.
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np
from numba import njit, prange

from deepnotes.boosting.gbdt import _BaseGBDT, _check
from deepnotes.boosting.metrics import dcg_discount, group_pointer, ndcg
from deepnotes.boosting.objectives import Objective


@njit(cache=True, nogil=True)
def _group_lambdas(y, s, w, lo, hi, k, use_ndcg, exp_gain, discount, grad, hess):
    # pragma: no cover - numba
    n = hi - lo
    order = np.argsort(-s[lo:hi], kind="mergesort")  # stable: ties keep input order
    inv_idcg = 0.0
    if use_ndcg:
        labels = np.sort(y[lo:hi])[::-1]
        idcg = 0.0
        for p in range(min(n, k)):
            gain = (2.0 ** labels[p] - 1.0) if exp_gain else labels[p]
            idcg += gain * discount[p]
        inv_idcg = 1.0 / idcg if idcg > 0.0 else 0.0
    best, worst = s[lo + order[0]], s[lo + order[n - 1]]
    doc_gain = np.empty(n)  # each document's gain, once (the pair loop reads it per pair)
    for i in range(n):
        doc_gain[i] = (2.0 ** y[lo + i] - 1.0) if exp_gain else y[lo + i]
    g = np.zeros(n)
    h = np.zeros(n)
    sum_lambda = 0.0
    for a in range(min(n, k)):
        for b in range(a + 1, n):
            ia, ib = order[a], order[b]
            if y[lo + ia] == y[lo + ib]:
                continue
            # high: the document with the larger label; rank_*: positions in the current ranking
            if y[lo + ia] > y[lo + ib]:
                hi_i, lo_i, rank_hi, rank_lo = ia, ib, a, b
            else:
                hi_i, lo_i, rank_hi, rank_lo = ib, ia, b, a
            s_hi, s_lo = s[lo + hi_i], s[lo + lo_i]
            delta = 1.0
            if use_ndcg:
                g_hi, g_lo = doc_gain[hi_i], doc_gain[lo_i]
                d_hi, d_lo = discount[rank_hi], discount[rank_lo]
                delta = abs((g_hi * d_hi + g_lo * d_lo - g_lo * d_hi - g_hi * d_lo) * inv_idcg)
            if best != worst:
                delta /= abs(s_hi - s_lo) + 0.01
            sig = 1.0 / (1.0 + np.exp(-(s_hi - s_lo)))
            lam = (sig - 1.0) * delta
            hs = max(sig * (1.0 - sig), 1e-16) * delta * 2.0
            g[hi_i] += lam
            g[lo_i] -= lam
            h[hi_i] += hs
            h[lo_i] += hs
            sum_lambda += -2.0 * lam
    norm = w
    if sum_lambda > 0.0:
        norm *= np.log2(1.0 + sum_lambda) / sum_lambda
    for i in range(n):
        grad[0, lo + i] = g[i] * norm
        hess[0, lo + i] = h[i] * norm


@njit(parallel=True, cache=True, nogil=True)
def _lambdas(y, s, group_w, ptr, k, use_ndcg, exp_gain, discount, grad, hess):
    # pragma: no cover - numba
    for q in prange(ptr.shape[0] - 1):
        _group_lambdas(y, s, group_w[q], ptr[q], ptr[q + 1], k, use_ndcg, exp_gain, discount,
                       grad, hess)


class LambdaRank(Objective):
    """``rank:ndcg`` (LambdaMART) or ``rank:pairwise`` (RankNet pairs) over query groups
    ``ptr`` (group ``q`` = rows ``ptr[q]:ptr[q+1]``); see the module docstring for Eq. 12."""

    default_metric = "ndcg"

    def __init__(self, name: str = "rank:ndcg", ptr=None, k: int | None = None,
                 exp_gain: bool = True):
        super().__init__(1)
        self.name = name
        self.ptr = None if ptr is None else np.asarray(ptr, dtype=np.int64)
        self.k = k
        self.exp_gain = bool(exp_gain)
        if k is not None:
            self.default_metric = f"ndcg@{k}"

    def init_score(self, y, w):
        return np.zeros(1)

    def gradients(self, y, raw, w, grad, hess):
        ptr = self.ptr
        group_w = w[ptr[:-1]]  # one weight per query: that of its first row
        group_w = group_w * (len(group_w) / group_w.sum())
        longest = int(np.max(np.diff(ptr)))
        k = longest if self.k is None else int(self.k)
        _lambdas(y, np.ascontiguousarray(raw[0]), group_w, ptr, k, self.name == "rank:ndcg",
                 self.exp_gain, dcg_discount(longest), grad, hess)


RANKING = {"rank:ndcg": LambdaRank, "rank:pairwise": lambda: LambdaRank("rank:pairwise")}


def _merged_signature(base, extra: dict):
    """``base``'s ``__init__`` signature with ``extra`` (name -> default) added first."""
    params = list(inspect.signature(base.__init__).parameters.values())
    new = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
           for n, d in extra.items()]
    names = set(extra)
    rest = [p for p in params[1:] if p.name not in names]
    return inspect.Signature([params[0], *new, *rest])


class GBDTRanker(_BaseGBDT):
    """Gradient-boosted trees for learning to rank (xgboost's ``XGBRanker``).

    ``fit(X, y, group=... | qid=...)``: ``y`` holds graded relevance (non-negative numbers; the
    gain is ``2^y - 1``), rows of a query are contiguous. ``predict`` returns scores; sort a
    query's documents by them, highest first. Besides the shared parameters (see ``gbdt``):

    objective : 'rank:ndcg' (LambdaMART, default) or 'rank:pairwise'
    lambdarank_pair_method : 'topk' (the only one: xgboost's default)
    lambdarank_num_pair_per_sample : int or None   top-k truncation of the pairs (None: all)
    ndcg_exp_gain : bool                           gain ``2^y - 1`` (True) or ``y``
    eval_metric defaults to ``ndcg`` (``ndcg@k`` with truncation); eval sets need
    ``eval_group`` or ``eval_qid``. ``sample_weight`` holds one weight per query, as xgboost's.
    """

    _RANK_PARAMS = {"objective": "rank:ndcg", "lambdarank_pair_method": "topk",
                    "lambdarank_num_pair_per_sample": None, "ndcg_exp_gain": True}

    def __init__(self, objective="rank:ndcg", lambdarank_pair_method="topk",
                 lambdarank_num_pair_per_sample=None, ndcg_exp_gain=True, **params):
        super().__init__(objective=objective, **params)
        self.lambdarank_pair_method = lambdarank_pair_method
        self.lambdarank_num_pair_per_sample = lambdarank_num_pair_per_sample
        self.ndcg_exp_gain = ndcg_exp_gain

    def _validate_params(self):
        super()._validate_params()
        if self.objective not in RANKING:
            raise ValueError(f"objective must be one of {sorted(RANKING)}, got "
                             f"{self.objective!r}")
        if self.lambdarank_pair_method != "topk":
            raise ValueError(f"lambdarank_pair_method: only 'topk' is implemented, got "
                             f"{self.lambdarank_pair_method!r}")
        if self.lambdarank_num_pair_per_sample is not None:
            _check("lambdarank_num_pair_per_sample", self.lambdarank_num_pair_per_sample,
                   numbers.Integral, 1)
        if not isinstance(self.ndcg_exp_gain, (bool, np.bool_)):
            raise TypeError(f"ndcg_exp_gain must be a bool, got {self.ndcg_exp_gain!r}")

    def fit(self, X, y, group=None, qid=None, sample_weight=None, eval_set=None,
            eval_group=None, eval_qid=None, early_stopping_rounds=None):
        """Boost on query groups.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features); y : relevance, shape (n_samples,), >= 0
        group : sizes of consecutive queries (summing to n_samples), or
        qid : query id per row (each query's rows contiguous)
        sample_weight : shape (n_queries,), one weight per query (xgboost's convention)
        eval_set : list of (X, y); eval_group / eval_qid : one entry per eval set
        """
        n = len(y) if hasattr(y, "__len__") else None
        ptr = group_pointer(group, qid, n)
        y_arr = np.asarray(y, dtype=np.float64) if n is not None else y
        if n is not None and (not np.all(np.isfinite(y_arr)) or np.any(y_arr < 0)):
            raise ValueError("y (relevance) must be finite and >= 0")
        self._ptr = ptr
        w_rows = None
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64)
            if sw.shape != (len(ptr) - 1,):
                raise ValueError(f"sample_weight must hold one weight per query "
                                 f"({len(ptr) - 1}), got shape {sw.shape}")
            w_rows = np.repeat(sw, np.diff(ptr))
        eval_set = list(eval_set or [])
        groups = eval_group if eval_group is not None else eval_qid
        if eval_set and (groups is None or len(groups) != len(eval_set)):
            raise ValueError("eval_set needs one eval_group (or eval_qid) entry per eval set")
        self._eval_ptrs = [
            group_pointer(g, None, len(ye)) if eval_group is not None
            else group_pointer(None, g, len(ye))
            for (_, ye), g in zip(eval_set, groups or [], strict=True)]
        return super().fit(X, y, sample_weight=w_rows, eval_set=eval_set or None,
                           early_stopping_rounds=early_stopping_rounds)

    def _make_objective(self, y):
        k = self.lambdarank_num_pair_per_sample
        obj = LambdaRank(self.objective, self._ptr, k, self.ndcg_exp_gain)
        return obj, np.asarray(y, dtype=np.float64)

    def _eval_group_ptr(self, e):
        return self._eval_ptrs[e]

    def predict(self, X) -> np.ndarray:
        """Ranking scores, shape (n_samples,): higher ranks first."""
        return self.decision_function_raw(X)[:, 0]

    def score(self, X, y, group=None, qid=None, k: int | None = None) -> float:
        """Mean NDCG@k of the predicted ranking over the query groups."""
        pred = self.predict(X)
        return ndcg(np.asarray(y, dtype=np.float64), pred, group_pointer(group, qid, len(y)), k,
                    exp_gain=self.ndcg_exp_gain)


GBDTRanker.__init__.__signature__ = _merged_signature(_BaseGBDT, GBDTRanker._RANK_PARAMS)

__all__ = ["GBDTRanker", "LambdaRank", "RANKING"]
