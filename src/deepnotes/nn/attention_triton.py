"""FlashAttention-2 in Triton: a fused forward and a two-pass backward, as an autograd function.

Same function as the tiled reference :mod:`deepnotes.nn.attention` (Eq. 1-8 of the post), as
GPU kernels. Layout (batch, heads, seq, dim); any strides with a unit last stride.

Forward (``_fwd_kernel``): one program per (query block of ``BLOCK_M`` rows, batch x head), so
the grid is parallel over batch, heads *and* query blocks (FlashAttention-2's change over
FlashAttention-1, which parallelised over batch and heads only). Each program keeps its query
tile, the running max ``m``, sum ``l`` and accumulator in registers and streams key/value tiles
of ``BLOCK_N`` rows: first the tiles wholly below the causal diagonal and inside the sequence
(no masking at all), then the few tiles the diagonal or the ragged end crosses (masked). Tiles
wholly above the diagonal are never loaded (the causal early exit). Exponentials are base 2
with ``log2(e)`` folded into the scale (``exp2`` is one instruction). It writes ``o`` and the
natural-log log-sum-exp per row (float32).

Backward: three launches.

1. ``_bwd_preprocess``: ``D = rowsum(dO * O)`` per row (Eq. 6).
2. ``_bwd_dkdv_kernel``: one program per key block; it owns ``dK_j`` and ``dV_j`` in registers
   and loops over the query blocks that see it (Eq. 7-8).
3. ``_bwd_dq_kernel``: one program per query block; it owns ``dQ_i`` and loops over key blocks.

**Why two passes and not atomics.** FlashAttention-2's reference backward runs one pass over key
blocks and adds each tile's ``dS k_j`` contribution to a float32 ``dQ`` buffer with atomic adds.
That saves recomputing ``S``/``P`` and ``dP`` for ``dQ`` (5 tile matmuls per tile pair instead
of 7), but the order of the atomic float additions varies from run to run, so gradients are not
bit-reproducible, and it needs a float32 ``dQ`` buffer plus a conversion kernel. The two-pass
form is deterministic (the same bits on every run, which our tests and the CPU comparison rely
on), writes every output exactly once, and its two kernels have no contention; the price is
two extra tile matmuls in the ``dQ`` pass (about 40% more backward FLOPs than the atomic form),
which the benchmark measures against SDPA's flash backend.

Importing this module never fails: without triton, ``HAS_TRITON`` is False and
:func:`triton_flash_attention` raises ``RuntimeError``. Under ``TRITON_INTERPRET=1`` the kernels
run on CPU tensors through Triton's numpy interpreter (how the tests run them without a GPU).

References
----------
T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Ré (2022). FlashAttention: Fast and Memory-Efficient
Exact Attention with IO-Awareness. NeurIPS.
T. Dao (2023). FlashAttention-2: Faster Attention with Better Parallelism and Work
Partitioning. ICLR 2024.
"""

from __future__ import annotations

import math
import os

import torch

from deepnotes.nn.attention import check_qkv

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised in environments without triton
    triton = None
    tl = None
    HAS_TRITON = False

#: Input dtypes of the kernel. float32 tiles are multiplied in full IEEE precision, or in TF32
#: when ``torch.backends.cuda.matmul.allow_tf32`` is set.
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


#: Whether the kernels below were built for Triton's CPU interpreter: ``triton.jit`` reads
#: ``TRITON_INTERPRET`` when it decorates, so this is fixed at import.
INTERPRETED = HAS_TRITON and os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true",
                                                                                 "on", "yes")


def interpreting() -> bool:
    """True when this module's kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``
    was set before the module was imported)."""
    return INTERPRETED


if HAS_TRITON:

    @triton.jit
    def _dot(a, b, DOT_PRECISION: tl.constexpr):
        """``a @ b`` accumulated in float32. ``DOT_PRECISION == "upcast"`` multiplies float32
        copies instead: only under the interpreter for bfloat16, whose ``tl.dot`` multiplies
        the raw bit patterns there (triton issue #11584). A bf16 x bf16 product is exact in
        float32, so the upcast computes what the tensor cores do, up to summation order."""
        if DOT_PRECISION == "upcast":
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        return tl.dot(a, b, input_precision=DOT_PRECISION)

    @triton.jit
    def _load_tile(ptrs, row_mask, d_mask, EVEN_D: tl.constexpr, CHECK_ROWS: tl.constexpr):
        """Load a (rows, D_PAD) tile, zero outside the sequence and past the head dim."""
        if CHECK_ROWS:
            if EVEN_D:
                tile = tl.load(ptrs, mask=row_mask[:, None], other=0.0)
            else:
                tile = tl.load(ptrs, mask=row_mask[:, None] & d_mask[None, :], other=0.0)
        else:
            if EVEN_D:
                tile = tl.load(ptrs)
            else:
                tile = tl.load(ptrs, mask=d_mask[None, :], other=0.0)
        return tile

    @triton.jit
    def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
                   d_mask, lo, hi, seq_k, causal_offset, qk_scale,
                   BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                   EVEN_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
        """Stream key/value tiles ``[lo, hi)`` into the running (m, l, acc) of Eq. 2-4."""
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_mask = offs_n < seq_k
            k = _load_tile(k_base + offs_n[:, None] * stride_kn + offs_d[None, :], n_mask,
                           d_mask, EVEN_D, MASKED)
            v = _load_tile(v_base + offs_n[:, None] * stride_vn + offs_d[None, :], n_mask,
                           d_mask, EVEN_D, MASKED)
            s = _dot(q, tl.trans(k), DOT_PRECISION) * qk_scale  # log2 units
            if MASKED:
                keep = n_mask[None, :]
                if CAUSAL:
                    keep = keep & (offs_n[None, :] <= offs_m[:, None] + causal_offset)
                s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # rows that have seen no key yet keep m = -inf: subtract 0 instead (exp2 -> 0)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_PRECISION)
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _fwd_kernel(Q, K, V, O, LSE,
                    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                    n_heads, seq_q, seq_k, head_dim, qk_scale,
                    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    D_PAD: tl.constexpr, EVEN_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = bh // n_heads
        h = bh % n_heads
        q_base = Q + b * stride_qb + h * stride_qh
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D_PAD)
        m_mask = offs_m < seq_q
        d_mask = offs_d < head_dim
        q = _load_tile(q_base + offs_m[:, None] * stride_qm + offs_d[None, :], m_mask, d_mask,
                       EVEN_D, True)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        causal_offset = seq_k - seq_q
        full_seq = (seq_k // BLOCK_N) * BLOCK_N  # tiles inside the sequence
        if CAUSAL:
            # tiles every row of this block sees entirely: key <= start_m + offset
            n_full = tl.maximum(start_m + causal_offset + 1, 0) // BLOCK_N * BLOCK_N
            n_full = tl.minimum(n_full, full_seq)
            hi = tl.minimum(start_m + BLOCK_M + causal_offset, seq_k)  # causal early exit
        else:
            n_full = full_seq
            hi = seq_k
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
                                   offs_m, offs_d, d_mask, 0, n_full, seq_k, causal_offset,
                                   qk_scale, BLOCK_N, False, CAUSAL, EVEN_D, DOT_PRECISION)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
                                   offs_m, offs_d, d_mask, n_full, hi, seq_k, causal_offset,
                                   qk_scale, BLOCK_N, True, CAUSAL, EVEN_D, DOT_PRECISION)
        empty = l_i == 0.0  # rows with no visible key: output 0, lse -inf
        acc = acc / tl.where(empty, 1.0, l_i)[:, None]
        lse = tl.where(empty, float("-inf"),
                       (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
        o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
        tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])
        tl.store(LSE + bh * seq_q + offs_m, lse, mask=m_mask)

    @triton.jit
    def _bwd_preprocess(O, DO, DELTA, stride_ob, stride_oh, stride_om, stride_dob, stride_doh,
                        stride_dom, n_heads, seq_q, head_dim,
                        BLOCK_M: tl.constexpr, D_PAD: tl.constexpr):
        """``D = rowsum(dO * O)`` in float32 (Eq. 6)."""
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = bh // n_heads
        h = bh % n_heads
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D_PAD)
        mask = (offs_m < seq_q)[:, None] & (offs_d < head_dim)[None, :]
        o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om
                    + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom
                     + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DELTA + bh * seq_q + offs_m, tl.sum(o * do, 1), mask=offs_m < seq_q)

    @triton.jit
    def _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qm,
                        stride_dom, offs_n, offs_d, d_mask, lo, hi, seq_q, causal_offset,
                        qk_scale, BLOCK_M: tl.constexpr, MASKED: tl.constexpr,
                        CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
                        DOT_PRECISION: tl.constexpr):
        """Accumulate ``dV_j += P^T dO_i`` and ``dK_j += dS^T q_i`` over query tiles [lo, hi)."""
        for start_m in range(lo, hi, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            m_mask = offs_m < seq_q
            q = _load_tile(q_base + offs_m[:, None] * stride_qm + offs_d[None, :], m_mask,
                           d_mask, EVEN_D, MASKED)
            do = _load_tile(do_base + offs_m[:, None] * stride_dom + offs_d[None, :], m_mask,
                            d_mask, EVEN_D, MASKED)
            # lse in log2 units; +inf for rows past the end or with no visible key: P = 0
            lse2 = tl.load(lse_base + offs_m, mask=m_mask, other=float("inf"))
            lse2 = lse2 * 1.4426950408889634
            lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2)
            delta = tl.load(delta_base + offs_m, mask=m_mask, other=0.0)
            s_t = _dot(k, tl.trans(q), DOT_PRECISION) * qk_scale  # (N, M)
            p_t = tl.math.exp2(s_t - lse2[None, :])
            if MASKED:
                if CAUSAL:
                    keep = offs_n[:, None] <= offs_m[None, :] + causal_offset
                    p_t = tl.where(keep, p_t, 0.0)
            dv += _dot(p_t.to(do.dtype), do, DOT_PRECISION)
            dp_t = _dot(v, tl.trans(do), DOT_PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])  # Eq. 7, transposed
            dk += _dot(ds_t.to(q.dtype), q, DOT_PRECISION)
        return dk, dv

    @triton.jit
    def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV,
                         stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                         stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_dom,
                         stride_dkb, stride_dkh, stride_dkn, stride_dvb, stride_dvh, stride_dvn,
                         n_heads, seq_q, seq_k, head_dim, sm_scale, qk_scale,
                         CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         D_PAD: tl.constexpr, EVEN_D: tl.constexpr,
                         DOT_PRECISION: tl.constexpr):
        start_n = tl.program_id(0) * BLOCK_N
        bh = tl.program_id(1)
        b = bh // n_heads
        h = bh % n_heads
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D_PAD)
        n_mask = offs_n < seq_k
        d_mask = offs_d < head_dim
        k = _load_tile(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn
                       + offs_d[None, :], n_mask, d_mask, EVEN_D, True)
        v = _load_tile(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn
                       + offs_d[None, :], n_mask, d_mask, EVEN_D, True)
        dk = tl.zeros([BLOCK_N, D_PAD], tl.float32)
        dv = tl.zeros([BLOCK_N, D_PAD], tl.float32)
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        lse_base = LSE + bh * seq_q
        delta_base = DELTA + bh * seq_q
        causal_offset = seq_k - seq_q
        full_seq = (seq_q // BLOCK_M) * BLOCK_M
        if CAUSAL:
            # query rows that see key start_n: row >= start_n - offset; the diagonal crosses
            # query tiles up to row start_n + BLOCK_N - 1 - offset, later tiles see all of it
            lo = tl.maximum(start_n - causal_offset, 0) // BLOCK_M * BLOCK_M
            mid = tl.maximum(start_n + BLOCK_N - 1 - causal_offset, 0) // BLOCK_M * BLOCK_M
            mid = tl.minimum(tl.maximum(mid + BLOCK_M, lo), full_seq)
            mid = tl.maximum(mid, lo)
            tail = tl.maximum(full_seq, lo)
        else:
            lo = 0
            mid = 0
            tail = full_seq
        # masked tiles (diagonal) first, then unmasked tiles, then the ragged end masked
        dk, dv = _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                 stride_qm, stride_dom, offs_n, offs_d, d_mask, lo, mid, seq_q,
                                 causal_offset, qk_scale, BLOCK_M, True, CAUSAL, EVEN_D,
                                 DOT_PRECISION)
        dk, dv = _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                 stride_qm, stride_dom, offs_n, offs_d, d_mask,
                                 mid, full_seq, seq_q, causal_offset,
                                 qk_scale, BLOCK_M, False, CAUSAL, EVEN_D, DOT_PRECISION)
        dk, dv = _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                 stride_qm, stride_dom, offs_n, offs_d, d_mask,
                                 tail, seq_q, seq_q, causal_offset,
                                 qk_scale, BLOCK_M, True, CAUSAL, EVEN_D, DOT_PRECISION)
        out_mask = n_mask[:, None] & d_mask[None, :]
        tl.store(DK + b * stride_dkb + h * stride_dkh + offs_n[:, None] * stride_dkn
                 + offs_d[None, :], (dk * sm_scale).to(DK.dtype.element_ty), mask=out_mask)
        tl.store(DV + b * stride_dvb + h * stride_dvh + offs_n[:, None] * stride_dvn
                 + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=out_mask)

    @triton.jit
    def _bwd_dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m,
                      offs_d, d_mask, lo, hi, seq_k, causal_offset, qk_scale,
                      BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                      EVEN_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
        """Accumulate ``dQ_i += dS k_j`` over key tiles [lo, hi) (Eq. 7-8)."""
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_mask = offs_n < seq_k
            k = _load_tile(k_base + offs_n[:, None] * stride_kn + offs_d[None, :], n_mask,
                           d_mask, EVEN_D, MASKED)
            v = _load_tile(v_base + offs_n[:, None] * stride_vn + offs_d[None, :], n_mask,
                           d_mask, EVEN_D, MASKED)
            s = _dot(q, tl.trans(k), DOT_PRECISION) * qk_scale
            p = tl.math.exp2(s - lse2[:, None])
            if MASKED:
                keep = n_mask[None, :]
                if CAUSAL:
                    keep = keep & (offs_n[None, :] <= offs_m[:, None] + causal_offset)
                p = tl.where(keep, p, 0.0)
            dp = _dot(do, tl.trans(v), DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dq += _dot(ds.to(k.dtype), k, DOT_PRECISION)
        return dq

    @triton.jit
    def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ,
                       stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                       stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_dom,
                       stride_dqb, stride_dqh, stride_dqm,
                       n_heads, seq_q, seq_k, head_dim, sm_scale, qk_scale,
                       CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       D_PAD: tl.constexpr, EVEN_D: tl.constexpr,
                       DOT_PRECISION: tl.constexpr):
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = bh // n_heads
        h = bh % n_heads
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D_PAD)
        m_mask = offs_m < seq_q
        d_mask = offs_d < head_dim
        q = _load_tile(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm
                       + offs_d[None, :], m_mask, d_mask, EVEN_D, True)
        do = _load_tile(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom
                        + offs_d[None, :], m_mask, d_mask, EVEN_D, True)
        lse2 = tl.load(LSE + bh * seq_q + offs_m, mask=m_mask, other=float("inf"))
        lse2 = lse2 * 1.4426950408889634  # natural log -> log2 units
        lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2)
        delta = tl.load(DELTA + bh * seq_q + offs_m, mask=m_mask, other=0.0)
        dq = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        causal_offset = seq_k - seq_q
        full_seq = (seq_k // BLOCK_N) * BLOCK_N
        if CAUSAL:
            n_full = tl.maximum(start_m + causal_offset + 1, 0) // BLOCK_N * BLOCK_N
            n_full = tl.minimum(n_full, full_seq)
            hi = tl.minimum(start_m + BLOCK_M + causal_offset, seq_k)
        else:
            n_full = full_seq
            hi = seq_k
        dq = _bwd_dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m,
                           offs_d, d_mask, 0, n_full, seq_k, causal_offset, qk_scale, BLOCK_N,
                           False, CAUSAL, EVEN_D, DOT_PRECISION)
        dq = _bwd_dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m,
                           offs_d, d_mask, n_full, hi, seq_k, causal_offset, qk_scale, BLOCK_N,
                           True, CAUSAL, EVEN_D, DOT_PRECISION)
        tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqm
                 + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty),
                 mask=m_mask[:, None] & d_mask[None, :])


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def block_config(head_dim: int, kernel: str) -> dict:
    """Tile sizes and launch parameters for one kernel (``"fwd"``, ``"dkdv"`` or ``"dq"``).

    A forward program holds its query tile, the float32 accumulator (BLOCK_M x D_PAD) and one
    float32 score tile (BLOCK_M x BLOCK_N) in registers, so wide heads get narrower tiles; the
    backward programs hold two float32 accumulators (dK and dV) or dQ beside the q/dO tiles, so
    their tiles are smaller than the forward's. These are the usual FlashAttention-2 choices for
    Ampere/Hopper; they are not autotuned here. Under the interpreter the tiles are 16x16: it
    runs every program serially in numpy, and small tiles let small test shapes exercise several
    blocks, the causal early exit and the ragged ends.
    """
    d_pad = _next_pow2(max(head_dim, 16))
    if interpreting():
        return {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 1, "num_stages": 1}
    if kernel == "fwd":
        if d_pad <= 64:
            return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
        if d_pad <= 128:
            return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    # backward programs hold two (BLOCK, D_PAD) float32 accumulators (dK and dV) or dQ plus the
    # q/do tiles: smaller tiles than the forward
    if d_pad <= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    if d_pad <= 128:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}
    return {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}


def _check_kernel_inputs(q, k, v) -> tuple[int, int, int, int, int]:
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed: pip install triton (the `gpu` extra), or use "
                           "deepnotes.nn.attention.tiled_attention")
    dims = check_qkv(q, k, v, dtypes=KERNEL_DTYPES)
    if not q.is_cuda and not interpreting():
        raise ValueError(f"the Triton kernel needs CUDA tensors (got {q.device}); set "
                         "TRITON_INTERPRET=1 to run it on CPU in Triton's interpreter")
    return dims


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _dot_precision(dtype: torch.dtype) -> str | None:
    # float32 inputs: full IEEE products, so the kernel computes what the float32 reference
    # does, unless the user allowed TF32 for float32 matmuls as torch defines it
    if dtype == torch.float32:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 and not interpreting() else "ieee"
    if dtype == torch.bfloat16 and interpreting():
        return "upcast"  # see _dot
    return None  # 16-bit inputs: tensor-core products, the default


def _forward(q, k, v, causal: bool, sm_scale: float):
    b, h, seq_q, seq_k, d = q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3]
    o = torch.empty_like(q)
    lse = torch.empty((b, h, seq_q), dtype=torch.float32, device=q.device)
    cfg = block_config(d, "fwd")
    d_pad = _next_pow2(d)
    grid = (triton.cdiv(seq_q, cfg["BLOCK_M"]), b * h)
    _fwd_kernel[grid](q, k, v, o, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(o),
                      h, seq_q, seq_k, d, sm_scale * LOG2E,
                      CAUSAL=causal, D_PAD=d_pad, EVEN_D=d == d_pad,
                      DOT_PRECISION=_dot_precision(q.dtype), **cfg)
    return o, lse


def _backward(q, k, v, o, lse, do, causal: bool, sm_scale: float):
    b, h, seq_q, seq_k, d = q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3]
    d_pad = _next_pow2(d)
    delta = torch.empty_like(lse)
    pre_block = 16 if interpreting() else 64
    _bwd_preprocess[(triton.cdiv(seq_q, pre_block), b * h)](
        o, do, delta, *_strides(o), *_strides(do), h, seq_q, d, BLOCK_M=pre_block, D_PAD=d_pad)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = dict(CAUSAL=causal, D_PAD=d_pad, EVEN_D=d == d_pad,
                  DOT_PRECISION=_dot_precision(q.dtype))
    cfg = block_config(d, "dkdv")
    _bwd_dkdv_kernel[(triton.cdiv(seq_k, cfg["BLOCK_N"]), b * h)](
        q, k, v, do, lse, delta, dk, dv, *_strides(q), *_strides(k), *_strides(v),
        *_strides(do), *_strides(dk), *_strides(dv), h, seq_q, seq_k, d, sm_scale,
        sm_scale * LOG2E, **common, **cfg)
    cfg = block_config(d, "dq")
    _bwd_dq_kernel[(triton.cdiv(seq_q, cfg["BLOCK_M"]), b * h)](
        q, k, v, do, lse, delta, dq, *_strides(q), *_strides(k), *_strides(v), *_strides(do),
        *_strides(dq), h, seq_q, seq_k, d, sm_scale, sm_scale * LOG2E, **common, **cfg)
    return dq, dk, dv


def _unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class TritonFlashAttention(torch.autograd.Function):
    """Triton forward and backward as one differentiable op; saves q, k, v, o and lse."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, sm_scale: float):
        q, k, v = (_unit_last_stride(t) for t in (q, k, v))
        o, lse = _forward(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, _unit_last_stride(grad_o), ctx.causal,
                               ctx.sm_scale)
        return dq, dk, dv, None, None


def triton_flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """FlashAttention-2 forward and backward in Triton (module docstring), differentiable.

    Parameters
    ----------
    q : Tensor, shape (batch, heads, L, d), float16, bfloat16 or float32, on CUDA
        (or on CPU under ``TRITON_INTERPRET=1``).
    k, v : Tensor, shape (batch, heads, S, d)
    causal : bool
        Bottom-right causal mask, as in :func:`deepnotes.nn.attention.flash_attention`.
    scale : float, optional
        Default ``1 / sqrt(d)``.

    Returns
    -------
    Tensor, shape (batch, heads, L, d), dtype of q

    Raises
    ------
    ValueError
        Shape mismatches (as :func:`deepnotes.nn.attention.check_qkv`), a dtype other than
        float16/bfloat16/float32, CPU tensors outside the interpreter.
    RuntimeError
        When triton is not installed.
    """
    d = _check_kernel_inputs(q, k, v)[4]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return TritonFlashAttention.apply(q, k, v, bool(causal), float(scale))


def triton_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             causal: bool = False, scale: float | None = None,
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel alone: ``(o, lse)``, as ``tiled_attention_forward`` returns them."""
    d = _check_kernel_inputs(q, k, v)[4]
    q, k, v = (_unit_last_stride(t) for t in (q, k, v))
    return _forward(q, k, v, bool(causal), 1.0 / math.sqrt(d) if scale is None else float(scale))
