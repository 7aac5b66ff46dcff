"""Exact attention by tiles: the online softmax, FlashAttention's forward and backward in torch.

Scaled dot-product attention of queries ``q`` (L rows), keys ``k`` and values ``v`` (S rows) is

    S = scale * q k^T,    P = softmax(S) row-wise,    O = P v                          (Eq. 1)

The naive algorithm writes the (L, S) matrices S and P to memory. FlashAttention (Dao et al.,
2022; FlashAttention-2, Dao, 2023) never does: it walks over blocks of keys keeping, for every
query row, a running maximum ``m``, a running sum ``l`` of exponentials relative to ``m`` and an
accumulator rescaled whenever ``m`` grows (the online softmax of Milakov & Gimelshein, 2018,
Eq. 2-4 of the post). The result is exact, not an approximation: only the order of the floating
point operations changes. The forward saves one number per row, the log-sum-exp
``lse = m + log l`` (Eq. 5); the backward recomputes P block by block from it and uses
``D = rowsum(dO * O)`` in place of the (L, S) Jacobian of the softmax (Eq. 6-8).

This module holds the CPU reference of all of it, in plain torch (it runs on any device):

- :func:`softmax_stats`, :func:`merge_softmax_stats`, :func:`online_softmax_stats`,
  :func:`online_softmax`: the recurrence and the merge of two partial results;
- :func:`naive_attention`: Eq. 1 with the full score matrix (the O(L S)-memory baseline);
- :func:`tiled_attention_forward` / :func:`tiled_attention_backward`: the tiled algorithm,
  memory O((L + S) d) besides one (block_q, block_k) tile;
- :func:`flash_attention`: the public entry, differentiable, shapes (batch, heads, seq, dim):
  the Triton kernel of :mod:`deepnotes.nn.attention_triton` on CUDA, the tiled reference
  elsewhere.

**Causal masking with k/v longer than q** is aligned to the bottom right, as in FlashAttention
2.1 and later and as decoding with a KV cache needs: query row ``i`` sees keys
``j <= i + (S - L)``. With ``L == S`` this is the usual lower-triangular mask (SDPA's
``is_causal=True``); with ``L != S`` SDPA's ``is_causal`` aligns to the top left instead and the
equivalent SDPA call passes ``torch.nn.attention.bias.causal_lower_right``. A query row that sees
no key at all (only possible when ``L > S``) returns zeros, its log-sum-exp is ``-inf`` and its
gradients are zero.
"""

from __future__ import annotations

import math

import torch

#: Dtypes the tiled reference accepts; float64 is for exactness tests.
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: Head dimensions the public function accepts (the Triton kernel pads to a power of two).
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256
#: Default tile sizes of the CPU reference: large enough that a (128, 256) matmul amortises the
#: Python loop, small enough that a tile (128 KiB in float32) stays in L2.
BLOCK_Q, BLOCK_K = 128, 256


# ---------------------------------------------------------------------------------------------
# Online softmax (Eq. 2-4)
# ---------------------------------------------------------------------------------------------

def softmax_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum and sum of exponentials of one chunk of a row.

    Parameters
    ----------
    x : Tensor, shape (..., n)
        A chunk of the scores of each row; ``-inf`` entries are masked out.

    Returns
    -------
    m : Tensor, shape (...)
        ``max_j x_j`` (``-inf`` for an all-masked chunk).
    l : Tensor, shape (...)
        ``sum_j exp(x_j - m)`` (0 for an all-masked chunk), so that
        ``logsumexp(x) = m + log l`` (Eq. 2).
    """
    m = x.amax(dim=-1)
    m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)  # all -inf: exp(-inf) = 0
    return m, torch.exp(x - m_safe.unsqueeze(-1)).sum(dim=-1)


def merge_softmax_stats(m_a: torch.Tensor, l_a: torch.Tensor, m_b: torch.Tensor,
                        l_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the statistics of two disjoint chunks of the same rows (Eq. 3).

    ``m = max(m_a, m_b)`` and ``l = l_a exp(m_a - m) + l_b exp(m_b - m)``. The merge is
    associative and commutative up to rounding, which is why any split of a row, processed in
    any order or as a tree, gives the softmax of the whole row.

    Parameters
    ----------
    m_a, l_a, m_b, l_b : Tensor, same shape (...)
        Outputs of :func:`softmax_stats` (or of earlier merges) for chunks ``a`` and ``b``.

    Returns
    -------
    m, l : Tensor, shape (...)
        The statistics of the union of the two chunks.
    """
    m = torch.maximum(m_a, m_b)
    m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    return m, l_a * torch.exp(m_a - m_safe) + l_b * torch.exp(m_b - m_safe)


def online_softmax_stats(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the last axis in blocks: the running max and sum of Eq. 4.

    After block ``t`` (entries ``x_b``): ``m_t = max(m_{t-1}, max x_b)`` and
    ``l_t = l_{t-1} exp(m_{t-1} - m_t) + sum exp(x_b - m_t)``, started at ``m_0 = -inf``,
    ``l_0 = 0``; this is :func:`merge_softmax_stats` of the running pair with the new block.

    Parameters
    ----------
    x : Tensor, shape (..., n)
    block_size : int
        Entries read per step (the last block may be shorter).

    Returns
    -------
    m, l : Tensor, shape (...)
    """
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    m = torch.full(x.shape[:-1], -math.inf, dtype=x.dtype, device=x.device)
    l = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[-1], block_size):
        m, l = merge_softmax_stats(m, l, *softmax_stats(x[..., start:start + block_size]))
    return m, l


def online_softmax(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Softmax over the last axis from the one-pass statistics: ``exp(x - m) / l``.

    Equal to ``torch.softmax(x, -1)`` up to rounding for every ``block_size``.
    """
    m, l = online_softmax_stats(x, block_size)
    return torch.exp(x - m.unsqueeze(-1)) / l.unsqueeze(-1)


# ---------------------------------------------------------------------------------------------
# Checks shared by every entry point
# ---------------------------------------------------------------------------------------------

def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              dtypes=SUPPORTED_DTYPES) -> tuple[int, int, int, int, int]:
    """Validate shapes (batch, heads, seq, dim) and dtypes; return ``(B, H, L, S, d)``.

    Raises
    ------
    TypeError
        When an argument is not a tensor.
    ValueError
        For a wrong rank, a batch/head mismatch, a q/k head-dim mismatch, a k/v length
        mismatch, a head dim outside [16, 256], mixed dtypes or devices, or an unsupported dtype.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (batch, heads, seq, dim), got "
                             f"{tuple(t.shape)}")
    if q.dtype not in dtypes:
        raise ValueError(f"unsupported dtype {q.dtype} for q; expected one of "
                         f"{', '.join(str(d) for d in dtypes)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}")
    b, h, seq_q, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:2] != (b, h):
        raise ValueError(f"batch and heads of q {tuple(q.shape[:2])}, k {tuple(k.shape[:2])} "
                         f"and v {tuple(v.shape[:2])} must match")
    if k.shape[3] != d:
        raise ValueError(f"q and k head dims differ: q has {d}, k has {k.shape[3]}")
    if v.shape[2] != k.shape[2]:
        raise ValueError(f"k and v lengths differ: k has {k.shape[2]} rows, v has {v.shape[2]}")
    if v.shape[3] != d:
        raise ValueError(f"v head dim {v.shape[3]} must equal q's {d}")
    if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
        raise ValueError(f"head dim must be in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], got {d}")
    if seq_q < 1 or k.shape[2] < 1:
        raise ValueError(f"q and k need at least one row, got {seq_q} and {k.shape[2]}")
    return b, h, seq_q, k.shape[2], d


def _scale(scale: float | None, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    if not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return float(scale)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 tiles are multiplied and accumulated in float32 (as tensor cores do)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def causal_mask(seq_q: int, seq_k: int, device=None) -> torch.Tensor:
    """Bottom-right causal mask, shape (seq_q, seq_k): True where row ``i`` sees key ``j``.

    ``j <= i + (seq_k - seq_q)``; the same as ``torch.nn.attention.bias.causal_lower_right``.
    """
    rows = torch.arange(seq_q, device=device).unsqueeze(1)
    cols = torch.arange(seq_k, device=device).unsqueeze(0)
    return cols <= rows + (seq_k - seq_q)


# ---------------------------------------------------------------------------------------------
# Naive attention (Eq. 1): the O(L S)-memory baseline
# ---------------------------------------------------------------------------------------------

def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    scale: float | None = None) -> torch.Tensor:
    """Eq. 1 with the full (L, S) score and probability matrices, differentiable by autograd.

    Computed in the inputs' dtype, as the "naive" row of the benchmark (what a plain
    ``softmax(q @ k.T) @ v`` costs). Rows that see no key return zeros.

    Parameters
    ----------
    q : Tensor, shape (B, H, L, d)
    k, v : Tensor, shape (B, H, S, d)
    causal : bool
        Bottom-right causal mask (module docstring).
    scale : float, optional
        Multiplies the scores; default ``1 / sqrt(d)``.

    Returns
    -------
    Tensor, shape (B, H, L, d)
    """
    _, _, seq_q, seq_k, d = check_qkv(q, k, v)
    s = torch.matmul(q, k.transpose(-2, -1)) * _scale(scale, d)  # (B, H, L, S)
    if causal:
        s = s.masked_fill(~causal_mask(seq_q, seq_k, q.device), -math.inf)
        # rows with no visible key: softmax of all -inf is NaN; they are defined as zero
        p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    else:
        p = torch.softmax(s, dim=-1)
    return torch.matmul(p, v)


# ---------------------------------------------------------------------------------------------
# Tiled forward and backward (Eq. 2-8)
# ---------------------------------------------------------------------------------------------

def _visible_key_end(row_end: int, seq_q: int, seq_k: int, causal: bool) -> int:
    """One past the last key any of rows ``< row_end`` sees: where the causal loop stops."""
    return min(seq_k, row_end + seq_k - seq_q) if causal else seq_k


def _check_blocks(block_q: int, block_k: int) -> None:
    for name, val in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")


def tiled_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            causal: bool = False, scale: float | None = None,
                            block_q: int = BLOCK_Q, block_k: int = BLOCK_K,
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashAttention forward by tiles (Eq. 2-5; FlashAttention-2's loop order).

    For each block of ``block_q`` query rows, loop over blocks of ``block_k`` keys up to the
    causal limit (blocks entirely above the diagonal are never visited; only blocks that the
    diagonal crosses are masked). Per key block: ``s = scale q_i k_j^T``, new running max
    ``m' = max(m, rowmax s)``, accumulator ``acc = acc exp(m - m') + exp(s - m') v_j`` and
    ``l = l exp(m - m') + rowsum exp(s - m')``. The division by ``l`` happens once, at the
    end of the row block (FlashAttention-2's deferred normalisation).

    Parameters
    ----------
    q : Tensor, shape (B, H, L, d)
    k, v : Tensor, shape (B, H, S, d)
        Any lengths; ``L`` and ``S`` need not be multiples of the block sizes.
    causal : bool
        Bottom-right causal mask (module docstring).
    scale : float, optional
        Default ``1 / sqrt(d)``.
    block_q, block_k : int
        Tile sizes (rows of q, rows of k/v).

    Returns
    -------
    o : Tensor, shape (B, H, L, d), dtype of q
    lse : Tensor, shape (B, H, L), float32 (float64 for float64 inputs)
        ``log sum_j exp(s_ij)`` of each row (Eq. 5); ``-inf`` for a row that sees no key.
    """
    b, h, seq_q, seq_k, d = check_qkv(q, k, v)
    _check_blocks(block_q, block_k)
    sc = _scale(scale, d)
    acc_t = _acc_dtype(q.dtype)
    o = torch.empty_like(q)
    lse = torch.empty(b, h, seq_q, dtype=acc_t, device=q.device)
    offset = seq_k - seq_q
    for i0 in range(0, seq_q, block_q):
        i1 = min(i0 + block_q, seq_q)
        qi = q[:, :, i0:i1].to(acc_t) * sc  # (B, H, bq, d); scale folded into q once
        m = torch.full((b, h, i1 - i0), -math.inf, dtype=acc_t, device=q.device)
        l = torch.zeros((b, h, i1 - i0), dtype=acc_t, device=q.device)
        acc = torch.zeros((b, h, i1 - i0, d), dtype=acc_t, device=q.device)
        for j0 in range(0, _visible_key_end(i1, seq_q, seq_k, causal), block_k):
            j1 = min(j0 + block_k, seq_k)
            s = torch.matmul(qi, k[:, :, j0:j1].to(acc_t).transpose(-2, -1))  # (B, H, bq, bk)
            if causal and j1 - 1 > i0 + offset:  # the diagonal crosses this tile
                s = s.masked_fill(~_tile_mask(i0, i1, j0, j1, offset, q.device), -math.inf)
            m_new = torch.maximum(m, s.amax(dim=-1))
            # A row with nothing visible so far keeps m = -inf; use 0 so exp() gives 0, not NaN.
            m_safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(s - m_safe.unsqueeze(-1))
            alpha = torch.exp(m - m_safe)  # rescales the old accumulator (Eq. 4)
            l = l * alpha + p.sum(dim=-1)
            acc = acc * alpha.unsqueeze(-1) + torch.matmul(p, v[:, :, j0:j1].to(acc_t))
            m = m_new
        empty = l == 0  # rows that saw no key
        o[:, :, i0:i1] = (acc / torch.where(empty, 1.0, l).unsqueeze(-1)).to(q.dtype)
        lse[:, :, i0:i1] = torch.where(empty, -math.inf, m + torch.log(l))
    return o, lse


#: Tile kinds of :func:`tile_kinds`.
TILE_SKIPPED, TILE_FULL, TILE_MASKED = 0, 1, 2


def tile_kinds(seq_q: int, seq_k: int, block_q: int, block_k: int, causal: bool) -> torch.Tensor:
    """What the forward does with each (query block, key block) tile, shape (n_q, n_k), int8.

    ``TILE_SKIPPED`` (0): never loaded (wholly above the causal diagonal: the early exit);
    ``TILE_FULL`` (1): computed without a mask; ``TILE_MASKED`` (2): the causal diagonal crosses
    it, so it is computed with the mask. The same rules drive the loops of
    :func:`tiled_attention_forward` (and of the Triton kernel, which additionally masks the
    ragged last tile of a sequence).
    """
    _check_blocks(block_q, block_k)
    n_q, n_k = -(-seq_q // block_q), -(-seq_k // block_k)
    kinds = torch.full((n_q, n_k), TILE_FULL, dtype=torch.int8)
    if causal:
        offset = seq_k - seq_q
        for bi in range(n_q):
            i0, i1 = bi * block_q, min((bi + 1) * block_q, seq_q)
            for bj in range(n_k):
                j0, j1 = bj * block_k, min((bj + 1) * block_k, seq_k)
                if j0 >= _visible_key_end(i1, seq_q, seq_k, causal):
                    kinds[bi, bj] = TILE_SKIPPED
                elif j1 - 1 > i0 + offset:
                    kinds[bi, bj] = TILE_MASKED
    return kinds


def _tile_mask(i0: int, i1: int, j0: int, j1: int, offset: int, device) -> torch.Tensor:
    """True where row ``i0 + r`` sees key ``j0 + c`` (bottom-right causal), shape (i1-i0, j1-j0)."""
    rows = torch.arange(i0, i1, device=device).unsqueeze(1)
    cols = torch.arange(j0, j1, device=device).unsqueeze(0)
    return cols <= rows + offset


def tiled_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             o: torch.Tensor, lse: torch.Tensor, grad_o: torch.Tensor,
                             causal: bool = False, scale: float | None = None,
                             block_q: int = BLOCK_Q, block_k: int = BLOCK_K,
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashAttention backward by recomputation (Eq. 6-8; FlashAttention-2's loop order).

    ``D = rowsum(dO * O)`` (Eq. 6) replaces the softmax Jacobian. Outer loop over key blocks
    ``j`` (each owns its ``dK_j``, ``dV_j``), inner loop over the query blocks that see it;
    per tile: ``P = exp(scale q_i k_j^T - lse_i)`` recomputed from the saved log-sum-exp,
    ``dV_j += P^T dO_i``, ``dP = dO_i v_j^T``, ``dS = P * (dP - D_i)`` (Eq. 7),
    ``dQ_i += scale dS k_j`` and ``dK_j += scale dS^T q_i`` (Eq. 8). Nothing of size (L, S) is
    ever stored.

    Parameters
    ----------
    q : Tensor, shape (B, H, L, d)
    k, v : Tensor, shape (B, H, S, d)
    o : Tensor, shape (B, H, L, d)
        The forward output.
    lse : Tensor, shape (B, H, L)
        The forward's log-sum-exp.
    grad_o : Tensor, shape (B, H, L, d)
        Gradient of the loss with respect to ``o``.
    causal, scale, block_q, block_k
        As in :func:`tiled_attention_forward`.

    Returns
    -------
    dq, dk, dv : Tensor, shapes of q, k, v, dtype of q
    """
    b, h, seq_q, seq_k, d = check_qkv(q, k, v)
    _check_blocks(block_q, block_k)
    if o.shape != q.shape or grad_o.shape != q.shape or lse.shape != q.shape[:3]:
        raise ValueError(f"o and grad_o must have q's shape {tuple(q.shape)} and lse "
                         f"{tuple(q.shape[:3])}; got {tuple(o.shape)}, {tuple(grad_o.shape)}, "
                         f"{tuple(lse.shape)}")
    sc = _scale(scale, d)
    acc_t = _acc_dtype(q.dtype)
    offset = seq_k - seq_q
    do32 = grad_o.to(acc_t)
    delta = (do32 * o.to(acc_t)).sum(dim=-1)  # (B, H, L), Eq. 6
    # A row that saw no key has P = 0: lse = +inf makes exp(s - lse) = 0 without a branch.
    lse = torch.where(torch.isneginf(lse), math.inf, lse.to(acc_t))
    dq = torch.zeros(q.shape, dtype=acc_t, device=q.device)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    for j0 in range(0, seq_k, block_k):
        j1 = min(j0 + block_k, seq_k)
        kj = k[:, :, j0:j1].to(acc_t)  # (B, H, bk, d)
        vj = v[:, :, j0:j1].to(acc_t)
        dk_j = torch.zeros_like(kj)
        dv_j = torch.zeros_like(vj)
        # first query row that sees key j0 (bottom-right causal), rounded down to its block
        i_start = (max(0, j0 - offset) // block_q) * block_q if causal else 0
        for i0 in range(i_start, seq_q, block_q):
            i1 = min(i0 + block_q, seq_q)
            qi = q[:, :, i0:i1].to(acc_t)
            s = torch.matmul(qi, kj.transpose(-2, -1)) * sc  # (B, H, bq, bk)
            p = torch.exp(s - lse[:, :, i0:i1].unsqueeze(-1))
            if causal and j1 - 1 > i0 + offset:
                p = p.masked_fill(~_tile_mask(i0, i1, j0, j1, offset, q.device), 0.0)
            doi = do32[:, :, i0:i1]
            dv_j += torch.matmul(p.transpose(-2, -1), doi)
            dp = torch.matmul(doi, vj.transpose(-2, -1))  # (B, H, bq, bk)
            ds = p * (dp - delta[:, :, i0:i1].unsqueeze(-1))  # Eq. 7
            dq[:, :, i0:i1] += torch.matmul(ds, kj) * sc
            dk_j += torch.matmul(ds.transpose(-2, -1), qi) * sc
        dk[:, :, j0:j1] = dk_j.to(k.dtype)
        dv[:, :, j0:j1] = dv_j.to(v.dtype)
    return dq.to(q.dtype), dk, dv


class TiledAttention(torch.autograd.Function):
    """The tiled reference as an autograd function: saves q, k, v, o and lse, never P."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float, block_q: int, block_k: int):
        o, lse = tiled_attention_forward(q, k, v, causal, scale, block_q, block_k)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.args = (causal, scale, block_q, block_k)
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, o, lse = ctx.saved_tensors
        causal, scale, block_q, block_k = ctx.args
        dq, dk, dv = tiled_attention_backward(q, k, v, o, lse, grad_o.contiguous(), causal,
                                              scale, block_q, block_k)
        return dq, dk, dv, None, None, None, None


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    scale: float | None = None, block_q: int = BLOCK_Q,
                    block_k: int = BLOCK_K) -> torch.Tensor:
    """Differentiable tiled attention (the reference path of :func:`flash_attention`).

    Shapes as in :func:`tiled_attention_forward`; returns ``o`` only.
    """
    d = check_qkv(q, k, v)[4]
    _check_blocks(block_q, block_k)
    return TiledAttention.apply(q, k, v, bool(causal), _scale(scale, d), block_q, block_k)


def triton_available() -> bool:
    """True when the Triton kernel can run here (triton importable and a CUDA device present)."""
    from deepnotes.nn import attention_triton

    return attention_triton.HAS_TRITON and torch.cuda.is_available()


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    scale: float | None = None) -> torch.Tensor:
    """Exact attention without the (L, S) matrix, differentiable (Eq. 1 computed as Eq. 2-8).

    Dispatch: CUDA tensors in float16, bfloat16 or float32 go to the Triton kernel
    (:func:`deepnotes.nn.attention_triton.triton_flash_attention`) when triton is installed;
    everything else (CPU, float64, no triton) runs the tiled torch reference
    :func:`tiled_attention`. Both compute the same function; the tests hold each against SDPA.

    Parameters
    ----------
    q : Tensor, shape (batch, heads, L, d)
    k, v : Tensor, shape (batch, heads, S, d)
        ``S`` may differ from ``L`` (longer for a KV cache); ``16 <= d <= 256``.
    causal : bool
        Bottom-right causal mask: row ``i`` sees keys ``j <= i + S - L``.
    scale : float, optional
        Multiplies ``q k^T``; default ``1 / sqrt(d)``.

    Returns
    -------
    Tensor, shape (batch, heads, L, d), dtype of q

    Raises
    ------
    ValueError
        q/k head-dim mismatch, k/v length mismatch, unsupported dtype (anything but float16,
        bfloat16, float32, float64), head dim outside [16, 256], non-positive scale.
    """
    check_qkv(q, k, v)
    if q.is_cuda and q.dtype != torch.float64:
        from deepnotes.nn import attention_triton

        if attention_triton.HAS_TRITON:
            return attention_triton.triton_flash_attention(q, k, v, causal=causal, scale=scale)
    return tiled_attention(q, k, v, causal=causal, scale=scale)
