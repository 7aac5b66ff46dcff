"""Medusa decoding: extra heads guess several future tokens, one tree-attention pass verifies them.

Cai, T., Li, Y., Geng, Z., Peng, H., Lee, J. D., Chen, D. and Dao, T. (2024). "Medusa: Simple LLM
Inference Acceleration Framework with Multiple Decoding Heads". ICML.

The pieces, with the post's equation numbers:

- :class:`MedusaHeads`: head k maps the backbone's last hidden state at position t to a
  distribution over the token at t + k + 1 through a residual SiLU block and a projection (Eq. 1);
  :func:`medusa_loss` is the Medusa-1 objective on a frozen backbone (Eq. 2).
- Trees: a tree is a set of *paths*, each a tuple of top-k ranks, one per head. :func:`chain_tree`,
  :func:`topk_tree` (a Cartesian product) and :func:`sparse_tree` (greedy in the expected accepted
  length under the heads' measured accuracies, Eq. 4) build them; :func:`tree_buffers` turns one
  into the attention mask, position offsets and parent pointers of Eqs. 5-6.
- :func:`medusa_generate`: candidates from the heads' top-k (Eq. 3), one verification pass of the
  backbone over the whole tree, greedy acceptance or typical acceptance (Eq. 7), and the KV-cache
  update that keeps the accepted path only (Eq. 8).

With greedy acceptance the output equals plain greedy decoding token for token (up to ties in
floating point, which the tests rule out in float64).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepnotes.decoding.gpt import GPT, _check_prompt

ACCEPTANCE = ("greedy", "typical")


class ResBlock(nn.Module):
    """``h + SiLU(W h + b)``, with ``W`` and ``b`` zero at initialisation (an identity map)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + F.silu(self.linear(h))


class MedusaHeads(nn.Module):
    """K Medusa heads over a backbone's final hidden states (post, Eq. 1).

    Head k (1-based) reads the hidden state at position t and predicts the token at t + k + 1; the
    backbone's own LM head predicts t + 1.

    Parameters
    ----------
    n_embd, vocab_size : int
        Width of the backbone's hidden state and number of token ids.
    n_heads : int
        Number of heads K.
    n_layers : int
        Residual blocks per head (the paper uses one).
    lm_head_weight : Tensor, shape (vocab_size, n_embd), optional
        Initial projection of every head: the backbone's LM head, so that at initialisation each
        head predicts what the backbone predicts for the next token (the paper's initialisation).
    """

    def __init__(self, n_embd: int, vocab_size: int, n_heads: int, n_layers: int = 1,
                 lm_head_weight: torch.Tensor | None = None):
        super().__init__()
        if n_heads < 1 or n_layers < 0:
            raise ValueError(f"need n_heads >= 1 and n_layers >= 0, got {n_heads}, {n_layers}")
        self.heads = nn.ModuleList()
        for _ in range(n_heads):
            proj = nn.Linear(n_embd, vocab_size, bias=False)
            if lm_head_weight is not None:
                if lm_head_weight.shape != (vocab_size, n_embd):
                    raise ValueError(f"lm_head_weight must have shape ({vocab_size}, {n_embd})")
                with torch.no_grad():
                    proj.weight.copy_(lm_head_weight)
            self.heads.append(nn.Sequential(*[ResBlock(n_embd) for _ in range(n_layers)], proj))

    @classmethod
    def for_model(cls, model: GPT, n_heads: int, n_layers: int = 1) -> MedusaHeads:
        """Heads sized for ``model``, projections copied from its LM head, on its device/dtype."""
        c = model.config
        heads = cls(c.n_embd, c.vocab_size, n_heads, n_layers, model.lm_head_weight.detach())
        return heads.to(model.lm_head_weight.device, model.lm_head_weight.dtype)

    @property
    def n_heads(self) -> int:
        return len(self.heads)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of every head, shape (K, *hidden.shape[:-1], vocab_size), from ``hidden``
        of shape (..., n_embd)."""
        return torch.stack([head(hidden) for head in self.heads])


def head_weights(n_heads: int, decay: float = 0.8) -> torch.Tensor:
    """Loss weights ``lambda_k = decay**k``, k = 1..K (post, Eq. 2)."""
    return decay ** torch.arange(1, n_heads + 1, dtype=torch.float64)


def medusa_loss(heads: MedusaHeads, hidden: torch.Tensor, tokens: torch.Tensor,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Medusa-1 loss: weighted cross-entropy of each head on its future token (post, Eq. 2).

    Parameters
    ----------
    heads : MedusaHeads
    hidden : Tensor, shape (B, T, n_embd)
        Backbone hidden states of ``tokens[:, :T]`` (computed without gradient: the backbone is
        frozen).
    tokens : LongTensor, shape (B, T + K + 1)
        The sequence; head k at position t is scored on ``tokens[:, t + k + 1]``.
    weights : Tensor, shape (K,), optional
        ``lambda_k`` (default :func:`head_weights`).

    Returns
    -------
    loss : scalar Tensor, ``sum_k lambda_k CE_k``
    per_head : Tensor, shape (K,), each head's mean cross-entropy in nats (detached).
    """
    K = heads.n_heads
    B, T, _ = hidden.shape
    if tokens.shape != (B, T + K + 1):
        raise ValueError(f"tokens must have shape ({B}, {T + K + 1}), got {tuple(tokens.shape)}")
    if weights is None:
        weights = head_weights(K)
    logits = heads(hidden)  # (K, B, T, V)
    ce = torch.stack([
        F.cross_entropy(logits[k].reshape(B * T, -1), tokens[:, k + 2:k + 2 + T].reshape(-1))
        for k in range(K)])  # (K,)
    loss = (weights.to(ce) * ce).sum()
    return loss, ce.detach()


@torch.no_grad()
def head_topk_hits(heads: MedusaHeads, hidden: torch.Tensor, tokens: torch.Tensor,
                   max_rank: int) -> torch.Tensor:
    """How often the right token is each head's rank-r guess, r = 0..max_rank-1.

    Same ``hidden``/``tokens`` layout as :func:`medusa_loss`. Returns a Tensor of shape
    (K, max_rank): entry (k, r) is the fraction of positions where head k's (r+1)-th most likely
    token is the target. The cumulative sum over r is the top-r accuracy, and these per-rank
    rates are the ``a_{k,r}`` of Eq. 4.
    """
    K = heads.n_heads
    B, T, _ = hidden.shape
    logits = heads(hidden)  # (K, B, T, V)
    top = logits.topk(max_rank, dim=-1).indices  # (K, B, T, R)
    hits = torch.stack([(top[k] == tokens[:, k + 2:k + 2 + T, None]).double().mean((0, 1))
                        for k in range(K)])  # (K, R)
    return hits


# ---------------------------------------------------------------------------------------- trees

Tree = tuple[tuple[int, ...], ...]


def _check_tree(paths: Sequence[Sequence[int]]) -> Tree:
    tree = tuple(sorted({tuple(int(r) for r in p) for p in paths}, key=lambda p: (len(p), p)))
    if not tree:
        raise ValueError("a tree needs at least one path")
    present = set(tree)
    for p in tree:
        if not p or min(p) < 0:
            raise ValueError(f"paths must be non-empty tuples of ranks >= 0, got {p}")
        if len(p) > 1 and p[:-1] not in present:
            raise ValueError(f"path {p} has no parent {p[:-1]} in the tree")
    return tree


def chain_tree(depth: int) -> Tree:
    """Each head's top-1 guess only: one candidate of ``depth`` tokens."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return tuple((0,) * d for d in range(1, depth + 1))


def topk_tree(topks: Sequence[int]) -> Tree:
    """Cartesian product of head k's top-``topks[k]`` guesses: every node at every depth.

    ``topk_tree((3, 2))`` has 3 nodes at depth 1 and 3 x 2 at depth 2 (the paper's Figure 2 shape).
    """
    if not topks or min(topks) < 1:
        raise ValueError(f"topks must be a non-empty sequence of positive ints, got {topks}")
    paths = []
    for d in range(1, len(topks) + 1):
        paths.extend(itertools.product(*[range(k) for k in topks[:d]]))
    return _check_tree(paths)


def sparse_tree(rank_accuracy: torch.Tensor, n_nodes: int) -> Tree:
    """The ``n_nodes``-node tree of largest expected accepted length (post, Eq. 4).

    Assuming head k's rank-r guess is right with probability ``a[k, r]`` independently of the other
    heads, a node at path ``(r_1, ..., r_d)`` is accepted with probability ``prod_k a[k, r_k]``,
    and the expected number of accepted tree tokens is the sum of that over the nodes (at most one
    node per depth can be accepted, so the events along a depth are disjoint). Adding nodes in
    decreasing order of that probability, each after its parent, maximises the sum; a heap over the
    frontier does it in O(n_nodes * R log).

    Parameters
    ----------
    rank_accuracy : Tensor, shape (K, R)
        ``a[k, r]``, e.g. from :func:`head_topk_hits` on held-out text.
    n_nodes : int
        Number of nodes (root excluded).
    """
    acc = torch.as_tensor(rank_accuracy, dtype=torch.float64)
    if acc.ndim != 2 or (acc < 0).any() or (acc > 1).any():
        raise ValueError("rank_accuracy must be a (K, R) tensor of probabilities")
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    K, R = acc.shape
    # Heap of (-probability, path); ties broken by the path so the result is deterministic.
    frontier = [(-float(acc[0, r]), (r,)) for r in range(R)]
    heapq.heapify(frontier)
    chosen: list[tuple[int, ...]] = []
    while frontier and len(chosen) < n_nodes:
        neg_p, path = heapq.heappop(frontier)
        chosen.append(path)
        if len(path) < K:
            for r in range(R):
                heapq.heappush(frontier, (neg_p * float(acc[len(path), r]), path + (r,)))
    return _check_tree(chosen)


def expected_accept_length(tree: Sequence[Sequence[int]], rank_accuracy: torch.Tensor) -> float:
    """``1 + sum over nodes of prod_k a[k, r_k]``: predicted tokens per step (post, Eq. 4)."""
    acc = torch.as_tensor(rank_accuracy, dtype=torch.float64)
    total = 1.0
    for path in _check_tree(tree):
        if len(path) > acc.shape[0] or max(path) >= acc.shape[1]:
            raise ValueError(f"path {path} needs more heads or ranks than rank_accuracy has")
        total += math.prod(float(acc[k, r]) for k, r in enumerate(path))
    return total


@dataclass(frozen=True)
class TreeBuffers:
    """Index tensors of a tree with its root (node 0: the token the backbone already chose).

    Nodes are ordered by depth, then by path, so every parent precedes its children.

    Attributes
    ----------
    paths : tuple of tuples
        The non-root nodes' rank paths, node i + 1 is ``paths[i]``.
    mask : BoolTensor, shape (N + 1, N + 1)
        ``mask[i, j]``: node j is node i or one of its ancestors (Eq. 5).
    depth : LongTensor, shape (N + 1,)
        Distance from the root; node i sits at position ``cache.length + depth[i]`` (Eq. 6).
    parent : LongTensor, shape (N + 1,)
        Parent's index (-1 for the root).
    head : LongTensor, shape (N,)
        Which head proposes node i + 1 (its depth minus one).
    rank : LongTensor, shape (N,)
        Its rank in that head's top-k.
    """

    paths: Tree
    mask: torch.Tensor
    depth: torch.Tensor
    parent: torch.Tensor
    head: torch.Tensor
    rank: torch.Tensor

    @property
    def size(self) -> int:
        """Number of nodes, root included."""
        return len(self.paths) + 1

    @property
    def max_depth(self) -> int:
        return max(len(p) for p in self.paths)

    @property
    def max_rank(self) -> int:
        return max(max(p) for p in self.paths) + 1

    def to(self, device) -> TreeBuffers:
        return TreeBuffers(self.paths, *(t.to(device) for t in (
            self.mask, self.depth, self.parent, self.head, self.rank)))


def tree_buffers(paths: Sequence[Sequence[int]]) -> TreeBuffers:
    """Attention mask, depths, parents, heads and ranks of the tree ``paths`` (see TreeBuffers)."""
    tree = _check_tree(paths)
    index = {(): 0} | {p: i + 1 for i, p in enumerate(tree)}
    n = len(tree) + 1
    mask = torch.zeros(n, n, dtype=torch.bool)
    parent = torch.full((n,), -1, dtype=torch.long)
    for p, i in index.items():
        for d in range(len(p) + 1):
            mask[i, index[p[:d]]] = True  # every ancestor, the root and the node itself
        if p:
            parent[i] = index[p[:-1]]
    depth = torch.tensor([0] + [len(p) for p in tree])
    head = torch.tensor([len(p) - 1 for p in tree])
    rank = torch.tensor([p[-1] for p in tree])
    return TreeBuffers(tree, mask, depth, parent, head, rank)


# ------------------------------------------------------------------------------------ decoding

def typical_accept(logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float,
                   epsilon: float, delta: float) -> torch.Tensor:
    """Typical acceptance (post, Eq. 7): ``p(x) > min(epsilon, delta * exp(-H(p)))``.

    Parameters
    ----------
    logits : Tensor, shape (N, V)
        Backbone logits at each candidate's parent.
    tokens : LongTensor, shape (N,)
        The candidates.
    temperature : float
        ``p = softmax(logits / temperature)``.

    Returns
    -------
    BoolTensor, shape (N,)
    """
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)  # (N, V)
    entropy = -(logp.exp() * logp).sum(-1)  # (N,) nats
    threshold = torch.clamp(delta * torch.exp(-entropy), max=epsilon)
    return logp.gather(-1, tokens[:, None])[:, 0].exp() > threshold


@dataclass
class MedusaOutput:
    """Result of :func:`medusa_generate`."""

    tokens: torch.Tensor
    """LongTensor, shape (1, T + max_new_tokens): prompt and new tokens."""
    accept_lengths: list[int]
    """Tokens committed by each verification pass (1 + accepted tree tokens)."""

    @property
    def mean_accept_length(self) -> float:
        return sum(self.accept_lengths) / len(self.accept_lengths)


@torch.no_grad()
def medusa_generate(model: GPT, heads: MedusaHeads, prompt: torch.Tensor, max_new_tokens: int,
                    tree: Sequence[Sequence[int]] | TreeBuffers, *, acceptance: str = "greedy",
                    temperature: float = 0.7, epsilon: float = 0.09, delta: float = 0.3,
                    ) -> MedusaOutput:
    """Decode with Medusa heads and tree attention (batch size 1).

    One step: the root is the backbone's argmax after the committed text; node i of the tree is
    rank ``rank[i]`` of head ``head[i]``'s guesses (Eq. 3). One forward pass of the backbone over
    the root and all nodes, with the tree mask and positions ``length + depth`` (Eqs. 5-6), gives
    the backbone's logits after every candidate prefix. A node is accepted when its parent is and
    its token is the argmax of the parent's logits (greedy) or passes :func:`typical_accept`. The
    deepest accepted node wins (the first in tree order on ties); the root and its accepted
    ancestors are committed, the cache keeps their rows only (Eq. 8), and the winner's logits
    and hidden state give the next root and the next guesses.

    Parameters
    ----------
    model, heads : GPT, MedusaHeads
    prompt : LongTensor, shape (1, T) or (T,)
    max_new_tokens : int
        ``T + max_new_tokens + tree depth <= block_size``.
    tree : paths or TreeBuffers
        The candidate tree; its depth may not exceed the number of heads.
    acceptance : {"greedy", "typical"}
        Greedy reproduces plain greedy decoding exactly.
    temperature, epsilon, delta : float
        Typical acceptance only (Eq. 7); the paper's defaults.

    Returns
    -------
    MedusaOutput
    """
    prompt = _check_prompt(model, prompt, max_new_tokens)
    if prompt.shape[0] != 1:
        raise ValueError(f"medusa_generate decodes one sequence, got batch {prompt.shape[0]}")
    if acceptance not in ACCEPTANCE:
        raise ValueError(f"acceptance must be one of {ACCEPTANCE}, got {acceptance!r}")
    if acceptance == "typical" and (temperature <= 0 or not 0 < epsilon <= 1 or delta <= 0):
        raise ValueError("typical acceptance needs temperature > 0, 0 < epsilon <= 1, delta > 0")
    device = prompt.device
    buf = (tree if isinstance(tree, TreeBuffers) else tree_buffers(tree)).to(device)
    if buf.max_depth > heads.n_heads:
        raise ValueError(f"tree depth {buf.max_depth} exceeds the {heads.n_heads} Medusa heads")
    T0 = prompt.shape[1]
    if T0 + max_new_tokens + buf.max_depth > model.config.block_size:
        raise ValueError(f"prompt ({T0}) + max_new_tokens ({max_new_tokens}) + tree depth "
                         f"({buf.max_depth}) exceeds block_size={model.config.block_size}")
    cache = model.new_cache(1, T0 + max_new_tokens + buf.size)
    logits, hidden = model(prompt, cache=cache)
    last_logits, last_hidden = logits[0, -1], hidden[0, -1]  # (V,), (C,)
    out: list[torch.Tensor] = []
    n_out, accept_lengths = 0, []
    levels = [torch.nonzero(buf.depth == d)[:, 0] for d in range(1, buf.max_depth + 1)]
    while n_out < max_new_tokens:
        root = last_logits.argmax()[None]  # (1,)
        guesses = heads(last_hidden).topk(buf.max_rank, dim=-1).indices  # (K, R)
        candidates = torch.cat([root, guesses[buf.head, buf.rank]])  # (N+1,) Eq. 3
        start = cache.length
        logits, hidden = model(candidates[None], cache=cache, positions=start + buf.depth,
                               tree_mask=buf.mask)
        logits, hidden = logits[0], hidden[0]  # (N+1, V), (N+1, C)
        parent_logits = logits[buf.parent[1:]]  # (N, V)
        if acceptance == "greedy":
            ok = candidates[1:] == parent_logits.argmax(-1)  # (N,)
        else:
            ok = typical_accept(parent_logits, candidates[1:], temperature=temperature,
                                epsilon=epsilon, delta=delta)
        accepted = torch.cat([ok.new_ones(1), ok])  # (N+1,), the root is always accepted
        for nodes in levels:  # a node counts only when its whole path is accepted
            accepted[nodes] &= accepted[buf.parent[nodes]]
        best = int(torch.argmax(torch.where(accepted, buf.depth, -1)))  # first deepest
        path = [best]
        while path[-1] != 0:
            path.append(int(buf.parent[path[-1]]))
        path_t = torch.tensor(path[::-1], device=device)
        cache.keep(start, path_t)  # Eq. 8
        out.append(candidates[path_t])
        n_out += len(path)
        accept_lengths.append(len(path))
        last_logits, last_hidden = logits[best], hidden[best]
    new = torch.cat(out)[:max_new_tokens]
    return MedusaOutput(torch.cat([prompt, new[None]], dim=1), accept_lengths)
