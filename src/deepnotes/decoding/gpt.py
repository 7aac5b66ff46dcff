"""A small GPT-2-shaped decoder with a key/value cache, and plain greedy / sampling decoding.

The network is the GPT-2 architecture at toy size (Radford et al., 2019, "Language Models are
Unsupervised Multitask Learners"): learned token and position embeddings, pre-LayerNorm blocks
(causal multi-head self-attention, then a 4x-wide MLP with tanh-approximated GELU), a final
LayerNorm and an output projection tied to the token embedding. Every choice matches
``transformers``' ``GPT2LMHeadModel`` so that :mod:`deepnotes.decoding.hf` can load our weights
into it and get the same logits (the reference the tests hold us to).

Two additions serve Medusa decoding (:mod:`deepnotes.decoding.medusa`):

- :meth:`GPT.forward` takes explicit ``positions`` and a ``tree_mask`` among the new tokens, so one
  forward pass can score a whole tree of candidate continuations (post, Eq. 5);
- :class:`KVCache` can :meth:`~KVCache.keep` an arbitrary subset of the rows it just appended,
  moving the accepted path's keys and values into place and dropping the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    """Shape of a :class:`GPT`."""

    vocab_size: int = 256
    """Number of token ids (256 for the byte-level tokeniser)."""
    block_size: int = 256
    """Number of learned positions: no sequence (prompt, generation and tree) may be longer."""
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide ``n_embd``."""
    n_embd: int = 128
    """Width of the residual stream."""
    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm (GPT-2's value)."""

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head={self.n_head} must divide n_embd={self.n_embd}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


class KVCache:
    """Pre-allocated keys and values of every layer, filled left to right.

    ``k`` and ``v`` have shape (n_layer, B, n_head, capacity, head_size); rows ``[0, length)`` hold
    the tokens seen so far. :meth:`GPT.forward` writes the new tokens' rows at ``[length,
    length + T)`` and advances ``length`` by ``T``.
    """

    def __init__(self, config: GPTConfig, batch_size: int, capacity: int, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if batch_size < 1 or capacity < 1:
            raise ValueError(f"batch_size and capacity must be positive, got {batch_size}, "
                             f"{capacity}")
        shape = (config.n_layer, batch_size, config.n_head, capacity, config.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def keep(self, start: int, indices: torch.Tensor) -> None:
        """Move rows ``start + indices`` (in order) to ``start, start + 1, ...``; drop the rest.

        After a tree verification pass appended rows ``[start, start + N)`` for the N tree nodes,
        this moves the accepted path's rows into a contiguous block (post, Eq. 8).

        Parameters
        ----------
        start : int
            ``length`` before the tree was appended.
        indices : LongTensor, shape (n,)
            Rows to keep, relative to ``start``, each in ``[0, length - start)``.
        """
        indices = torch.as_tensor(indices, device=self.k.device, dtype=torch.long)
        if indices.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
        n = indices.numel()
        if not 0 <= start <= self.length or (n and (indices.min() < 0
                                                    or start + indices.max() >= self.length)):
            raise ValueError(f"indices must select rows in [start, length) = [{start}, "
                             f"{self.length})")
        src = start + indices
        # Advanced indexing copies the selected rows before the assignment writes them back.
        self.k[:, :, :, start:start + n] = self.k[:, :, :, src]
        self.v[:, :, :, start:start + n] = self.v[:, :, :, src]
        self.length = start + n


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over the cached prefix and the new tokens (post, Eq. 5)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_size = config.n_head, config.head_size
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """``x`` (B, T, C); ``mask`` (T, S) bool, True where a query may attend a key, or
        ``None`` for a plain causal mask over the T new tokens (no cache)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            start = cache.length
            cache.k[layer, :, :, start:start + T] = k
            cache.v[layer, :, :, start:start + T] = v
            k = cache.k[layer, :, :, :start + T]  # (B, nh, S, hs), S = start + T
            v = cache.v[layer, :, :, :start + T]
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2's "gelu_new" is the tanh approximation of GELU.
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, mask, cache, layer):
        x = x + self.attn(self.ln_1(x), mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2-shaped language model; see the module docstring."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 n_layer) at initialisation.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """Output projection, shape (vocab_size, n_embd): tied to the token embedding."""
        return self.wte.weight

    def num_params(self) -> int:
        """Number of parameters (the tied output projection counted once)."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int = 1, capacity: int | None = None) -> KVCache:
        """An empty :class:`KVCache` on the model's device and dtype (capacity: block_size)."""
        p = self.wte.weight
        return KVCache(self.config, batch_size, capacity or self.config.block_size,
                       device=p.device, dtype=p.dtype)

    def forward(self, idx: torch.Tensor, *, cache: KVCache | None = None,
                positions: torch.Tensor | None = None, tree_mask: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and final hidden states of the tokens ``idx``.

        Parameters
        ----------
        idx : LongTensor, shape (B, T)
            New token ids.
        cache : KVCache, optional
            Keys and values of the ``cache.length`` tokens before ``idx``; the new tokens' rows are
            appended and ``cache.length`` grows by T. Without a cache, ``idx`` is the whole
            sequence.
        positions : LongTensor, shape (T,), optional
            Position ids of the new tokens (default ``cache.length + arange(T)``). A token tree
            gives each node the position ``cache.length + depth`` (post, Eq. 6).
        tree_mask : BoolTensor, shape (T, T), optional
            ``tree_mask[i, j]`` is True where new token i may attend new token j (default: causal,
            ``j <= i``). Every new token attends every cached token.

        Returns
        -------
        logits : Tensor, shape (B, T, vocab_size)
        hidden : Tensor, shape (B, T, n_embd)
            Output of the final LayerNorm, the input of the LM head and of Medusa heads.
        """
        if idx.ndim != 2 or idx.dtype != torch.long:
            raise ValueError(f"idx must be a (B, T) LongTensor, got {idx.dtype} "
                             f"{tuple(idx.shape)}")
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if cache is not None:
            if cache.k.shape[1] != B:
                raise ValueError(f"cache holds batch {cache.k.shape[1]}, idx has batch {B}")
            if past + T > cache.capacity:
                raise ValueError(f"cache capacity {cache.capacity} < {past} cached + {T} new")
        if positions is None:
            positions = torch.arange(past, past + T, device=idx.device)
        elif positions.shape != (T,):
            raise ValueError(f"positions must have shape ({T},), got {tuple(positions.shape)}")
        if T == 0 or int(positions.max()) >= self.config.block_size:
            raise ValueError(f"need 1 <= T and positions < block_size={self.config.block_size}")
        mask = None
        if tree_mask is not None:
            if tree_mask.shape != (T, T) or tree_mask.dtype != torch.bool:
                raise ValueError(f"tree_mask must be a ({T}, {T}) BoolTensor")
            mask = tree_mask
        elif past and T > 1:
            mask = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        if mask is not None and past:
            mask = torch.cat([mask.new_ones(T, past), mask], dim=1)  # (T, past + T)
        # (mask None with a cache: one new token attends everything cached, nothing to mask)
        x = self.wte(idx) + self.wpe(positions)  # (B, T, C)
        for layer, block in enumerate(self.h):
            x = block(x, mask, cache, layer)
        if cache is not None:
            cache.length = past + T
        hidden = self.ln_f(x)  # (B, T, C)
        logits = hidden @ self.lm_head_weight.T  # (B, T, V)
        return logits, hidden


def lm_loss(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (nats per token) of ``batch``, shape (B, T + 1)."""
    logits, _ = model(batch[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))


def _check_prompt(model: GPT, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    if not isinstance(prompt, torch.Tensor) or prompt.dtype != torch.long:
        raise TypeError("prompt must be a LongTensor of token ids")
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must have shape (B, T>=1), got {tuple(prompt.shape)}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if prompt.shape[1] + max_new_tokens > model.config.block_size:
        raise ValueError(f"prompt ({prompt.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"block_size={model.config.block_size}")
    return prompt


def _pick(logits: torch.Tensor, greedy: bool, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """Next token from ``logits`` (B, V): argmax, or a sample at ``temperature`` from the top-k."""
    if greedy:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: GPT, prompt: torch.Tensor, max_new_tokens: int, *, greedy: bool = True,
             temperature: float = 1.0, top_k: int | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain autoregressive decoding: one forward pass per new token.

    Parameters
    ----------
    model : GPT
    prompt : LongTensor, shape (B, T) or (T,)
    max_new_tokens : int
        Tokens to append; ``T + max_new_tokens <= block_size``.
    greedy : bool
        Argmax decoding; otherwise sample from ``softmax(logits / temperature)`` restricted to the
        ``top_k`` most likely tokens (all when ``None``).
    use_cache : bool
        Feed one token per step against a :class:`KVCache` (the fast path), or re-run the whole
        sequence every step (the reference the cache is tested against).
    generator : torch.Generator, optional
        Source of randomness for sampling.

    Returns
    -------
    LongTensor, shape (B, T + max_new_tokens): the prompt followed by the new tokens.
    """
    prompt = _check_prompt(model, prompt, max_new_tokens)
    if not greedy and temperature <= 0:
        raise ValueError(f"temperature must be positive when sampling, got {temperature}")
    if top_k is not None and not 1 <= top_k <= model.config.vocab_size:
        raise ValueError(f"top_k must be in [1, vocab_size], got {top_k}")
    seq = prompt
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens) if use_cache \
        else None
    logits, _ = model(prompt, cache=cache)
    for i in range(max_new_tokens):
        nxt = _pick(logits[:, -1], greedy, temperature, top_k, generator)  # (B,)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if i == max_new_tokens - 1:
            break
        logits, _ = model(nxt[:, None], cache=cache) if use_cache else model(seq)
    return seq
