"""The online softmax and the tiled attention reference against torch (softmax, SDPA math)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from deepnotes.nn.attention import (
    causal_mask,
    flash_attention,
    merge_softmax_stats,
    naive_attention,
    online_softmax,
    online_softmax_stats,
    softmax_stats,
    tile_kinds,
    tiled_attention,
    tiled_attention_backward,
    tiled_attention_forward,
)


def _qkv(b, h, seq_q, seq_k, d, dtype=torch.float64, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(b, h, n, d, generator=g, dtype=torch.float64).to(dtype)
           for n in (seq_q, seq_k, seq_k)]
    return [t.requires_grad_(grad) for t in out]


def _sdpa_math(q, k, v, causal, scale=None):
    """SDPA's math backend with the bottom-right causal mask (our convention) made explicit."""
    mask = causal_mask(q.shape[2], k.shape[2]) if causal else None
    with sdpa_kernel(SDPBackend.MATH):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    # a row that sees no key: SDPA may give NaN or 0; our definition is 0
    return out.nan_to_num(0.0)


# --- online softmax (Eq. 2-4) ----------------------------------------------------------------

@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 16, 50, 64, 1000])
def test_online_softmax_equals_torch_softmax_for_any_block_size(block_size):
    x = torch.randn(5, 64, dtype=torch.float64) * 10
    torch.testing.assert_close(online_softmax(x, block_size), torch.softmax(x, -1),
                               rtol=1e-13, atol=1e-15)
    m, l = online_softmax_stats(x, block_size)
    torch.testing.assert_close(m + torch.log(l), torch.logsumexp(x, -1), rtol=1e-13, atol=0)


@pytest.mark.parametrize("seed", range(8))
def test_merge_of_any_split_in_any_order_gives_the_row_statistics(seed):
    """Cut a row at random points, take each chunk's stats, merge them in a random tree."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 97, generator=g, dtype=torch.float64) * 20
    n_cuts = int(torch.randint(1, 20, (1,), generator=g))
    cuts = sorted(set(torch.randint(1, 97, (n_cuts,), generator=g).tolist()))
    bounds = [0, *cuts, 97]
    parts = [softmax_stats(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    while len(parts) > 1:  # merge a random adjacent or non-adjacent pair (the merge commutes)
        i, j = torch.randperm(len(parts), generator=g)[:2].tolist()
        merged = merge_softmax_stats(*parts[i], *parts[j])
        parts = [p for t, p in enumerate(parts) if t not in (i, j)] + [merged]
    m, l = parts[0]
    torch.testing.assert_close(m, x.amax(-1), rtol=0, atol=0)
    torch.testing.assert_close(m + torch.log(l), torch.logsumexp(x, -1), rtol=1e-13, atol=0)


def test_online_softmax_float32_and_masked_chunks():
    x = torch.randn(4, 300) * 30
    x[0, :128] = -math.inf  # a chunk with nothing visible must not give NaN
    for block in (1, 32, 128, 300):
        torch.testing.assert_close(online_softmax(x, block), torch.softmax(x, -1),
                                   rtol=2e-6, atol=1e-7)
    m, l = softmax_stats(torch.full((2, 8), -math.inf))
    assert torch.isneginf(m).all() and (l == 0).all()


def test_online_softmax_rejects_bad_block_size():
    with pytest.raises(ValueError, match="block_size"):
        online_softmax(torch.randn(3, 4), 0)


# --- tiled reference == SDPA math backend in float64 (Eq. 1, 5-8) ----------------------------

SHAPES = [
    # b, h, seq_q, seq_k, d, block_q, block_k
    (2, 3, 64, 64, 16, 16, 16),      # divisible lengths
    (1, 2, 37, 37, 32, 16, 8),       # ragged: lengths not multiples of the blocks
    (2, 1, 30, 77, 64, 8, 16),       # k/v longer than q (KV cache)
    (1, 2, 50, 19, 24, 16, 8),       # q longer than k/v: early causal rows see nothing
    (1, 1, 129, 200, 128, 32, 64),   # larger head dim, ragged
    (1, 1, 5, 300, 256, 4, 128),     # widest head, a few queries against many keys
    (1, 2, 1, 33, 16, 128, 256),     # one query row, blocks larger than the sequences
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_tiled_output_and_grads_equal_sdpa_math_float64(shape, causal):
    b, h, seq_q, seq_k, d, bq, bk = shape
    q, k, v = _qkv(b, h, seq_q, seq_k, d, seed=seq_q + seq_k)
    out = tiled_attention(q, k, v, causal=causal, block_q=bq, block_k=bk)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    ref = _sdpa_math(q, k, v, causal)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    for name, got, want in zip("qkv", grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=f"d{name}")


@pytest.mark.parametrize("causal", [False, True])
def test_lse_is_the_logsumexp_of_the_scores(causal):
    q, k, v = _qkv(1, 2, 45, 70, 32, grad=False)
    _, lse = tiled_attention_forward(q, k, v, causal=causal, block_q=16, block_k=16)
    s = q @ k.transpose(-2, -1) / math.sqrt(32)
    if causal:
        s = s.masked_fill(~causal_mask(45, 70), -math.inf)
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), rtol=0, atol=1e-12)


def test_custom_scale_and_noncontiguous_inputs():
    # (B, L, H, d) memory layout seen as (B, H, L, d): strided views, as after a projection
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, n, 3, 32, generator=g, dtype=torch.float64).transpose(1, 2)
               .requires_grad_() for n in (40, 52, 52))
    out = tiled_attention(q, k, v, causal=True, scale=0.3, block_q=16, block_k=16)
    torch.testing.assert_close(out, _sdpa_math(q, k, v, True, scale=0.3), rtol=0, atol=1e-10)


def test_rows_that_see_no_key_are_zero_with_zero_grads():
    q, k, v = _qkv(1, 1, 10, 4, 16)  # causal with L > S: rows 0..5 see no key
    out = tiled_attention(q, k, v, causal=True, block_q=4, block_k=2)
    _, lse = tiled_attention_forward(q, k, v, causal=True, block_q=4, block_k=2)
    assert (out[0, 0, :6] == 0).all() and torch.isneginf(lse[0, 0, :6]).all()
    assert torch.isfinite(lse[0, 0, 6:]).all()
    out.sum().backward()
    assert (q.grad[0, 0, :6] == 0).all() and torch.isfinite(q.grad).all()
    assert torch.isfinite(k.grad).all() and torch.isfinite(v.grad).all()


def test_naive_attention_matches_sdpa():
    q, k, v = _qkv(2, 2, 33, 47, 32, grad=False)
    for causal in (False, True):
        torch.testing.assert_close(naive_attention(q, k, v, causal), _sdpa_math(q, k, v, causal),
                                   rtol=0, atol=1e-12)


def test_backward_function_matches_autograd_of_naive():
    q, k, v = _qkv(1, 2, 21, 34, 16)
    o, lse = tiled_attention_forward(q, k, v, causal=True, block_q=8, block_k=8)
    do = torch.randn_like(o)
    dq, dk, dv = tiled_attention_backward(q, k, v, o, lse, do, causal=True, block_q=8, block_k=8)
    ref = torch.autograd.grad(naive_attention(q, k, v, causal=True), (q, k, v), do)
    for got, want in zip((dq, dk, dv), ref, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("seq_q,seq_k", [(64, 64), (37, 100), (100, 37), (5, 5)])
def test_tile_kinds_match_the_brute_force_mask(seq_q, seq_k):
    """A tile is skipped iff no entry is visible, full iff all are, masked otherwise."""
    mask = causal_mask(seq_q, seq_k)
    kinds = tile_kinds(seq_q, seq_k, 16, 8, causal=True)
    for bi in range(kinds.shape[0]):
        for bj in range(kinds.shape[1]):
            tile = mask[bi * 16:(bi + 1) * 16, bj * 8:(bj + 1) * 8]
            want = 1 if tile.all() else (0 if not tile.any() else 2)
            assert kinds[bi, bj] == want, (bi, bj)
    assert (tile_kinds(seq_q, seq_k, 16, 8, causal=False) == 1).all()


# --- low precision: the FlashAttention test criterion ----------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_error_is_no_worse_than_sdpa_in_the_same_dtype(dtype, causal):
    """Our error against a float64 reference is at most twice SDPA's (math backend, same dtype)
    plus a small floor: the comparison FlashAttention's own tests make."""
    q64, k64, v64 = _qkv(2, 2, 70, 90, 64, seed=3)
    do64 = torch.randn(2, 2, 70, 64, dtype=torch.float64)
    ref = _sdpa_math(q64, k64, v64, causal)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do64)
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in (q64, k64, v64))
    ours = tiled_attention(q, k, v, causal=causal, block_q=32, block_k=32)
    assert ours.dtype == dtype
    ours_grads = torch.autograd.grad(ours, (q, k, v), do64.to(dtype))
    peer = _sdpa_math(q, k, v, causal)
    peer_grads = torch.autograd.grad(peer, (q, k, v), do64.to(dtype))
    floor = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]
    pairs = [(ours, peer, ref), *zip(ours_grads, peer_grads, ref_grads, strict=True)]
    for got, other, want in pairs:
        err = (got.double() - want).abs().max().item()
        peer_err = (other.double() - want).abs().max().item()
        assert err <= 2 * peer_err + floor, (err, peer_err)


# --- memory: nothing of size L x S is ever allocated -----------------------------------------

def _largest_op_allocation(fn) -> int:
    """Bytes of the largest net allocation made by one operator while ``fn`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.cpu_memory_usage for e in prof.events())


def test_tiled_forward_allocates_tiles_not_the_score_matrix():
    seq, d, bq, bk = 512, 32, 64, 128
    q, k, v = _qkv(1, 1, seq, seq, d, dtype=torch.float32, grad=False)
    score_bytes = seq * seq * 4
    tiled = _largest_op_allocation(lambda: tiled_attention_forward(q, k, v, block_q=bq,
                                                                   block_k=bk))
    naive = _largest_op_allocation(lambda: naive_attention(q, k, v))
    assert naive >= score_bytes  # the baseline writes the (L, S) scores
    # the tiled forward's largest buffer is O(N d) (the output) or one (bq, bk) tile
    assert tiled <= max(seq * d * 4, bq * bk * 4) * 1.01 and tiled < score_bytes / 8


# --- public entry and validation -------------------------------------------------------------

def test_flash_attention_on_cpu_is_the_tiled_reference():
    q, k, v = _qkv(1, 2, 40, 40, 32)
    torch.testing.assert_close(flash_attention(q, k, v, causal=True),
                               tiled_attention(q, k, v, causal=True), rtol=0, atol=0)


@pytest.mark.parametrize("fn", [flash_attention, tiled_attention, naive_attention])
def test_invalid_inputs_raise_value_errors(fn):
    q = torch.randn(1, 2, 8, 32)
    k = torch.randn(1, 2, 10, 32)
    v = torch.randn(1, 2, 10, 32)
    with pytest.raises(ValueError, match="head dims differ"):
        fn(q, torch.randn(1, 2, 10, 16), v)
    with pytest.raises(ValueError, match="lengths differ"):
        fn(q, k, torch.randn(1, 2, 9, 32))
    with pytest.raises(ValueError, match="unsupported dtype"):
        fn(q.to(torch.int32), k.to(torch.int32), v.to(torch.int32))
    with pytest.raises(ValueError, match="share a dtype"):
        fn(q, k.double(), v)
    with pytest.raises(ValueError, match="head dim must be in"):
        fn(*(torch.randn(1, 1, 4, 8) for _ in range(3)))
    with pytest.raises(ValueError, match="batch, heads, seq, dim"):
        fn(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="batch and heads"):
        fn(q, torch.randn(1, 3, 10, 32), torch.randn(1, 3, 10, 32))
    with pytest.raises(ValueError, match="scale"):
        fn(q, k, v, scale=-1.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(q.numpy(), k, v)
