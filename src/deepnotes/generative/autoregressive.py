"""Autoregressive models of binary vectors: FVSBN, NADE and MADE.

Each model factorises a distribution over ``x in {0, 1}^D`` with the chain rule along an
``ordering`` ``o`` (a permutation of ``range(D)``; Eq. 1 of the post ``autoregressive-models``)::

    log p(x) = sum_k log Bernoulli(x_{o_k}; sigmoid(logit_{o_k}(x_{o_<k})))          (Eq. 2)

and differs only in how the conditional logit of pixel ``o_k`` is computed from the pixels before
it in the ordering:

- :class:`FVSBN` (Frey 1998): one logistic regression per pixel on all preceding pixels (Eq. 3).
- :class:`NADE` (Larochelle & Murray 2011): a one-hidden-layer network per pixel whose weights are
  shared across pixels, so that all D conditionals cost O(DH) together (Eqs. 4-6).
- :class:`MADE` (Germain et al. 2015): a multilayer perceptron whose weight matrices are masked so
  that output ``d`` sees only inputs that precede ``d`` (Eqs. 7-8); several masks (orderings and
  connectivities) can be trained at once and ensembled at test time (Eq. 9).

Every model has ``logits(x)`` (all D conditional logits in pixel order, one pass, real-valued
``x`` allowed so that autograd can check the autoregressive property), ``log_prob(x)`` (exact, for
binary ``x``) and ``sample(n, generator=...)`` (ancestral sampling along the ordering).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    return dim


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_ordering(ordering, dim: int) -> torch.Tensor:
    """Return ``ordering`` as a long tensor (D,), raising unless it is a permutation of range(D).

    ``None`` means the identity ordering (raster order for images).
    """
    if ordering is None:
        return torch.arange(dim)
    order = torch.as_tensor(ordering)
    if order.is_floating_point() or order.dtype == torch.bool or order.is_complex():
        raise TypeError(f"ordering must hold integers, got dtype {order.dtype}")
    order = order.long().flatten()
    if order.numel() != dim or not torch.equal(torch.sort(order).values, torch.arange(dim)):
        raise ValueError(f"ordering must be a permutation of range({dim}), got "
                         f"{order.tolist() if order.numel() <= 16 else 'a tensor'} "
                         f"of {order.numel()} entries")
    return order


def check_binary(x, dim: int, who: str) -> torch.Tensor:
    """Raise a clear error unless ``x`` is a tensor (B, dim) whose entries are all 0 or 1."""
    x = _check_shape(x, dim, who)
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        raise ValueError(f"{who}: input contains NaN values")
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{who}: expected binary input (every entry 0 or 1); binarise the data "
                         f"first (e.g. load_digits(variant='binarized'))")
    return x


def _check_shape(x, dim: int, who: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who}: expected shape (batch, {dim}), got {tuple(x.shape)}")
    return x


class AutoregressiveModel(nn.Module):
    """Shared machinery: ordering, validation, exact ``log_prob`` (Eq. 2), ancestral sampling.

    Subclasses implement ``_logits(x) -> (B, D)``: the logit of ``p(x_d = 1 | x_{o_<k})`` for every
    pixel ``d = o_k``, computed from one (possibly real-valued) input ``x`` of shape (B, D).
    """

    def __init__(self, dim: int, ordering=None):
        super().__init__()
        self.dim = _check_dim(dim)
        self.register_buffer("_ordering", check_ordering(ordering, self.dim))

    @property
    def ordering(self) -> torch.Tensor:
        """The ordering in use, long tensor (D,): ``ordering[k]`` is the k-th pixel generated."""
        return self._ordering

    @property
    def rank(self) -> torch.Tensor:
        """Inverse of the ordering, long tensor (D,): ``rank[d]`` is pixel d's position."""
        return torch.argsort(self.ordering)

    def _param_like(self) -> torch.Tensor:
        return next(self.parameters())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Conditional logits of all pixels, shape (B, D), from ``x`` (B, D).

        Entry ``d`` depends only on the pixels ranked before ``d`` in the ordering. ``x`` may be
        real-valued (used to check that property by autograd); it must be finite.
        """
        x = _check_shape(x, self.dim, type(self).__name__ + ".logits")
        if not x.is_floating_point():
            x = x.to(self._param_like().dtype)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{type(self).__name__}.logits: input contains NaN or inf values")
        return self._logits(x.to(self._param_like().dtype))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-probability in nats (Eq. 2), shape (B,), of binary ``x`` (B, D)."""
        x = check_binary(x, self.dim, type(self).__name__ + ".log_prob")
        x = x.to(self._param_like().dtype)
        return log_bernoulli(x, self._logits(x))

    def _ancestral(self, n: int, generator, logits_fn) -> torch.Tensor:
        n = _check_n(n)
        ref = self._param_like()
        x = torch.zeros(n, self.dim, dtype=ref.dtype, device=ref.device)
        for d in self.ordering.tolist():
            # pixel d only depends on pixels already drawn, so one full pass per pixel is exact
            p = torch.sigmoid(logits_fn(x)[:, d])
            x[:, d] = torch.bernoulli(p, generator=generator)
        return x

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` binary vectors (n, D) by ancestral sampling along the ordering (Eq. 1).

        ``generator`` (a ``torch.Generator`` on the model's device) makes the draw reproducible.
        """
        return self._ancestral(n, generator, self._logits)


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return n


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``sum_d log Bernoulli(x_d; sigmoid(logits_d))`` (Eq. 2), shape (B,); stable in the logits."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


class FVSBN(AutoregressiveModel):
    """Fully visible sigmoid belief network (Frey 1998, "Graphical models for machine learning
    and digital communication", MIT Press): a logistic regression per pixel (Eq. 3),

        p(x_{o_k} = 1 | x_{o_<k}) = sigmoid(b_{o_k} + sum_{j<k} W[o_k, o_j] x_{o_j}).

    ``D (D + 1) / 2`` effective parameters; ``W`` is stored full and masked, so the entries above
    the diagonal in the ordering never receive gradient.

    Parameters
    ----------
    dim : int
        Number of binary pixels D.
    ordering : sequence of int, optional
        Permutation of ``range(D)``; default identity.
    """

    def __init__(self, dim: int, ordering=None):
        super().__init__(dim, ordering)
        self.weight = nn.Parameter(torch.zeros(self.dim, self.dim))
        self.bias = nn.Parameter(torch.zeros(self.dim))
        rank = self.rank
        self.register_buffer("mask", (rank[None, :] < rank[:, None]).float())  # (D, D)
        # small random weights so that a freshly built model is not the uniform distribution
        nn.init.normal_(self.weight, std=0.1)

    def _logits(self, x):
        return x @ (self.weight * self.mask).T + self.bias  # (B, D)


class NADE(AutoregressiveModel):
    """Neural autoregressive distribution estimator (Larochelle & Murray 2011, "The neural
    autoregressive distribution estimator", AISTATS).

    For ``k = 1..D`` (Eqs. 4-5)::

        h_k = sigmoid(c + W[:, o_<k] x_{o_<k})                            W: (H, D), c: (H,)
        p(x_{o_k} = 1 | x_{o_<k}) = sigmoid(b_{o_k} + V[o_k] . h_k)       V: (D, H), b: (D,)

    The pre-activations obey ``a_1 = c``, ``a_{k+1} = a_k + W[:, o_k] x_{o_k}`` (Eq. 6), so all
    D conditionals cost O(DH) instead of O(D^2 H); :meth:`_logits` evaluates them at once with an
    exclusive cumulative sum and :meth:`sample` walks the same recursion.

    Parameters
    ----------
    dim : int
        Number of binary pixels D.
    hidden : int
        Hidden units H.
    ordering : sequence of int, optional
        Permutation of ``range(D)``; default identity.
    """

    def __init__(self, dim: int, hidden: int = 100, ordering=None):
        super().__init__(dim, ordering)
        self.hidden = _check_positive_int("hidden", hidden)
        bound_w = 1.0 / math.sqrt(self.dim)
        bound_v = 1.0 / math.sqrt(self.hidden)
        self.W = nn.Parameter(torch.empty(self.hidden, self.dim).uniform_(-bound_w, bound_w))
        self.c = nn.Parameter(torch.zeros(self.hidden))
        self.V = nn.Parameter(torch.empty(self.dim, self.hidden).uniform_(-bound_v, bound_v))
        self.b = nn.Parameter(torch.zeros(self.dim))

    def _logits(self, x):
        order = self.ordering
        xo = x[:, order]  # (B, D) pixels in generation order
        contrib = xo[:, :, None] * self.W[:, order].T[None]  # (B, D, H): W[:, o_k] x_{o_k}
        # exclusive cumulative sum: a_k holds the pixels strictly before position k (Eq. 6)
        a = torch.cumsum(contrib, dim=1) - contrib + self.c  # (B, D, H)
        h = torch.sigmoid(a)
        logits_o = (h * self.V[order][None]).sum(-1) + self.b[order]  # (B, D) in order
        out = torch.empty_like(logits_o)
        out[:, order] = logits_o
        return out

    def naive_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Reference: recompute every hidden layer from scratch (Eq. 4), O(D^2 H); shape (B, D)."""
        x = _check_shape(x, self.dim, "NADE.naive_logits").to(self.W.dtype)
        out = torch.empty(x.shape[0], self.dim, dtype=x.dtype, device=x.device)
        order = self.ordering.tolist()
        for k, d in enumerate(order):
            prev = order[:k]
            h = torch.sigmoid(self.c + x[:, prev] @ self.W[:, prev].T)  # (B, H)
            out[:, d] = h @ self.V[d] + self.b[d]
        return out

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling in O(nDH) by carrying the pre-activation ``a_k`` (Eq. 6)."""
        n = _check_n(n)
        x = torch.zeros(n, self.dim, dtype=self.W.dtype, device=self.W.device)
        a = self.c.expand(n, self.hidden).clone()  # (n, H)
        for d in self.ordering.tolist():
            p = torch.sigmoid(torch.sigmoid(a) @ self.V[d] + self.b[d])  # (n,)
            x[:, d] = torch.bernoulli(p, generator=generator)
            a += x[:, d, None] * self.W[:, d]
        return x


class MADE(AutoregressiveModel):
    """Masked autoencoder for distribution estimation (Germain, Gregor, Murray & Larochelle 2015,
    "MADE: Masked Autoencoder for Distribution Estimation", ICML).

    An MLP ``D -> hidden_sizes -> D`` (ReLU) whose weights are multiplied by binary masks built
    from degrees: the inputs get ``m^0(d) = rank(d) + 1`` (1..D), hidden unit ``k`` of layer ``l``
    gets ``m^l(k)`` drawn uniformly from ``[min_k' m^{l-1}(k'), D - 1]``, and (Eqs. 7-8)::

        M^l[k, k'] = 1[m^l(k) >= m^{l-1}(k')]          (hidden layers)
        M^V[d, k]  = 1[m^0(d) >  m^L(k)]               (output layer)

    so output ``d`` depends only on inputs ranked before ``d``.

    ``n_masks`` mask sets are drawn once at construction from ``mask_seed``: with
    ``order_agnostic=False`` they share the given ``ordering`` and differ in connectivity; with
    ``order_agnostic=True`` each also draws its own random ordering. Training cycles through them
    (:meth:`select_mask`); each mask set is an exact model of its own, and
    :meth:`log_prob_ensemble` / :meth:`sample_ensemble` use their equal mixture (Eq. 9), which is
    also exact.

    Parameters
    ----------
    dim : int
        Number of binary pixels D (>= 2).
    hidden_sizes : sequence of int
        Widths of the hidden layers (at least one).
    n_masks : int
        Number of mask sets (connectivity patterns and, if order-agnostic, orderings).
    order_agnostic : bool
        Draw a random ordering per mask set (then ``ordering`` must be None).
    ordering : sequence of int, optional
        The ordering shared by every mask set when not order-agnostic; default identity.
    mask_seed : int
        Seed of the degree and ordering draws (separate from torch's global generator so that the
        masks do not depend on how many parameters were initialised before).
    direct : bool
        Add a masked direct input-to-output linear connection (the paper's optional shortcut).
    """

    def __init__(self, dim: int, hidden_sizes: Sequence[int] = (500,), n_masks: int = 1,
                 order_agnostic: bool = False, ordering=None, mask_seed: int = 0,
                 direct: bool = False):
        if _check_dim(dim) < 2:
            raise ValueError(f"MADE needs dim >= 2 (hidden degrees lie in [1, D-1]), got {dim}")
        if order_agnostic and ordering is not None:
            raise ValueError("pass either order_agnostic=True or an ordering, not both")
        super().__init__(dim, ordering)
        sizes = tuple(hidden_sizes)
        if not sizes:
            raise ValueError("hidden_sizes must hold at least one layer width")
        for s in sizes:
            _check_positive_int("each hidden size", s)
        self.hidden_sizes = sizes
        self.n_masks = _check_positive_int("n_masks", n_masks)
        self.order_agnostic = bool(order_agnostic)
        self.direct = bool(direct)
        widths = (self.dim, *sizes, self.dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:],
                                                                      strict=True))
        self.skip = nn.Linear(self.dim, self.dim, bias=False) if self.direct else None

        # the orderings live in `orderings` (one per mask set); a second buffer holding the
        # selected one could disagree with `mask_index` after load_state_dict
        base_order = self._ordering
        del self._ordering
        gen = torch.Generator().manual_seed(int(mask_seed))
        orderings, masks = [], [[] for _ in self.layers]
        for _ in range(self.n_masks):
            order = (torch.randperm(self.dim, generator=gen) if self.order_agnostic
                     else base_order.clone())
            orderings.append(order)
            for store, mask in zip(masks, made_masks(order, sizes, gen), strict=True):
                store.append(mask)
        self.register_buffer("orderings", torch.stack(orderings))  # (K, D)
        for i, store in enumerate(masks):
            self.register_buffer(f"mask_{i}", torch.stack(store))  # (K, out, in)
        self.mask_index = 0
        self.select_mask(0)

    def select_mask(self, index: int) -> None:
        """Use mask set ``index`` (0 <= index < n_masks) from now on."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.n_masks:
            raise ValueError(f"mask index must be an int in [0, {self.n_masks}), got {index!r}")
        self.mask_index = index

    @property
    def ordering(self) -> torch.Tensor:
        """Ordering of the selected mask set, long tensor (D,)."""
        return self.orderings[self.mask_index]

    def masks(self, index: int | None = None) -> list[torch.Tensor]:
        """Masks (out, in) of every layer for mask set ``index`` (default: the selected one)."""
        i = self.mask_index if index is None else index
        return [getattr(self, f"mask_{j}")[i] for j in range(len(self.layers))]

    def _logits(self, x):
        masks = self.masks()
        h = x
        for j, (layer, mask) in enumerate(zip(self.layers, masks, strict=True)):
            h = F.linear(h, layer.weight * mask, layer.bias)
            if j < len(self.layers) - 1:
                h = torch.relu(h)
        if self.skip is not None:
            rank = self.rank
            direct_mask = (rank[None, :] < rank[:, None]).to(h.dtype)  # (D, D) strictly before
            h = h + F.linear(x, self.skip.weight * direct_mask)
        return h

    def log_prob_ensemble(self, x: torch.Tensor, indices: Sequence[int] | None = None
                          ) -> torch.Tensor:
        """Log of the equal mixture of mask sets ``indices`` (default all), Eq. 9; shape (B,).

        ``log (1/K) sum_i p_i(x)``: averaging probabilities (not log-probabilities) keeps the
        ensemble a normalised distribution. The selected mask is restored afterwards.
        """
        idx = list(range(self.n_masks)) if indices is None else [int(i) for i in indices]
        if not idx:
            raise ValueError("indices must name at least one mask set")
        current = self.mask_index
        try:
            logs = []
            for i in idx:
                self.select_mask(i)
                logs.append(self.log_prob(x))
        finally:
            self.select_mask(current)
        return torch.logsumexp(torch.stack(logs), dim=0) - math.log(len(idx))

    @torch.no_grad()
    def sample_ensemble(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` vectors from the equal mixture of all mask sets (Eq. 9), shape (n, D)."""
        n = _check_n(n)
        ref = self._param_like()
        which = torch.randint(self.n_masks, (n,), generator=generator, device=ref.device)
        out = torch.zeros(n, self.dim, dtype=ref.dtype, device=ref.device)
        current = self.mask_index
        try:
            for i in range(self.n_masks):
                rows = torch.nonzero(which == i).flatten()
                if rows.numel():
                    self.select_mask(i)
                    out[rows] = self.sample(rows.numel(), generator=generator)
        finally:
            self.select_mask(current)
        return out


def made_masks(ordering: torch.Tensor, hidden_sizes: Sequence[int],
               generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """MADE masks for one ordering (Eqs. 7-8): float tensors (out, in), one per layer.

    Input degrees are ``rank + 1``; each hidden layer's degrees are drawn uniformly from
    ``[min previous degree, D - 1]`` (Germain et al. 2015), which keeps every hidden unit
    connected to at least one input and to at least one output.
    """
    dim = ordering.numel()
    deg_in = torch.argsort(ordering) + 1  # (D,) in 1..D
    prev = deg_in
    masks = []
    for size in hidden_sizes:
        low = int(prev.min())
        if low > dim - 1:
            # a layer whose inputs all have degree D can feed no output: not reachable with the
            # lower bound above, but guard against it instead of building an all-zero mask
            raise ValueError("hidden degrees exceed D - 1; cannot build MADE masks")
        deg = torch.randint(low, dim, (size,), generator=generator)  # in [low, D-1]
        masks.append((deg[:, None] >= prev[None, :]).float())  # (size, prev)
        prev = deg
    masks.append((deg_in[:, None] > prev[None, :]).float())  # (D, last hidden)
    return masks
