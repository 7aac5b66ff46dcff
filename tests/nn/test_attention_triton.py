"""The Triton FlashAttention kernels against the float64 tiled reference.

Without a GPU the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set here before
the module is imported) at small sizes with 16x16 tiles, so several blocks, the causal early exit
and the ragged ends are all exercised. With CUDA the same checks run on the GPU, plus full-size
comparisons with SDPA. Skipped cleanly when triton is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

ON_GPU = torch.cuda.is_available()
_INTERPRET_SET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
#: triton decorates its own library functions (tl.zeros, tl.max, ...) when it is first imported,
#: for the interpreter only if TRITON_INTERPRET was set then. When another test imported triton
#: earlier without it (diffusers does), the kernels cannot run in this process: the interpreter
#: tests then run in a fresh one (test_interpreter_tests_in_a_fresh_process).
NEED_FRESH_PROCESS = not ON_GPU and "triton" in sys.modules and not _INTERPRET_SET
if not ON_GPU and not NEED_FRESH_PROCESS and importlib.util.find_spec("triton") is not None:
    os.environ["TRITON_INTERPRET"] = "1"
    if "deepnotes.nn.attention_triton" in sys.modules:  # built without the interpreter
        importlib.reload(sys.modules["deepnotes.nn.attention_triton"])
importlib.import_module("triton")
in_this_process = pytest.mark.skipif(
    NEED_FRESH_PROCESS, reason="triton was imported without TRITON_INTERPRET: runs in a fresh "
    "process instead")

from deepnotes.nn import attention_triton as at  # noqa: E402
from deepnotes.nn.attention import (  # noqa: E402
    causal_mask,
    flash_attention,
    tiled_attention,
    tiled_attention_forward,
)

DEVICE = "cuda" if ON_GPU else "cpu"


def _inputs(b, h, seq_q, seq_k, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for n in
               (seq_q, seq_k, seq_k))
    do = torch.randn(b, h, seq_q, d, generator=g, dtype=torch.float64)
    return q, k, v, do


def _reference(q, k, v, do, causal):
    """Output and gradients in float64 on CPU (the tiled reference equals SDPA there)."""
    q, k, v = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    out = tiled_attention(q, k, v, causal=causal)
    return (out, *torch.autograd.grad(out, (q, k, v), do.double().cpu()))


def _ours(q, k, v, do, causal, dtype):
    q, k, v = (t.to(DEVICE, dtype).requires_grad_() for t in (q, k, v))
    out = at.triton_flash_attention(q, k, v, causal=causal)
    assert out.dtype == dtype and out.shape == q.shape
    return (out, *torch.autograd.grad(out, (q, k, v), do.to(DEVICE, dtype)))


# b, h, seq_q, seq_k, d: ragged lengths (not multiples of 16), S > L, L > S, odd head dims
SHAPES = [(1, 2, 40, 40, 32), (1, 1, 20, 53, 24), (2, 1, 45, 19, 64), (1, 1, 17, 33, 80),
          (1, 1, 9, 30, 16), (1, 1, 20, 20, 256)]


@in_this_process
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_kernel_matches_the_reference(shape, causal):
    """float32 tiles use IEEE products: only summation order separates us from float64."""
    q, k, v, do = _inputs(*shape, torch.float32, seed=sum(shape))
    ours = _ours(q, k, v, do, causal, torch.float32)
    ref = _reference(q, k, v, do, causal)
    for name, got, want in zip(("o", "dq", "dk", "dv"), ours, ref, strict=True):
        torch.testing.assert_close(got.double().cpu(), want, rtol=0, atol=2e-5, msg=name)


@in_this_process
def test_lse_matches_the_reference():
    q, k, v, _ = _inputs(1, 2, 37, 50, 32, torch.float32)
    for causal in (False, True):
        _, lse = at.triton_attention_forward(q.float().to(DEVICE), k.float().to(DEVICE),
                                             v.float().to(DEVICE), causal=causal)
        _, ref = tiled_attention_forward(q, k, v, causal=causal)
        torch.testing.assert_close(lse.double().cpu(), ref, rtol=0, atol=1e-5)


@in_this_process
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_error_within_twice_sdpa_error(dtype, causal):
    """FlashAttention's test criterion: the error of our half-precision result against a float64
    reference is at most twice that of PyTorch's SDPA run in the same dtype, plus a floor."""
    q, k, v, do = _inputs(1, 2, 48, 40, 64, dtype, seed=7)
    ours = _ours(q, k, v, do, causal, dtype)
    ref = _reference(q, k, v, do, causal)
    q16, k16, v16 = (t.to(DEVICE, dtype).requires_grad_() for t in (q, k, v))
    mask = causal_mask(48, 40, DEVICE) if causal else None
    peer_o = F.scaled_dot_product_attention(q16, k16, v16, attn_mask=mask).nan_to_num(0.0)
    peer = (peer_o, *torch.autograd.grad(peer_o, (q16, k16, v16), do.to(DEVICE, dtype)))
    floor = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    for name, got, other, want in zip(("o", "dq", "dk", "dv"), ours, peer, ref, strict=True):
        err = (got.double().cpu() - want).abs().max().item()
        peer_err = (other.double().cpu() - want).abs().max().item()
        assert err <= 2 * peer_err + floor, (name, err, peer_err)


@in_this_process
def test_gradients_are_deterministic():
    """Two passes, no atomics: the same bits on every run."""
    q, k, v, do = _inputs(1, 1, 33, 33, 16, torch.float16)
    a = _ours(q, k, v, do, True, torch.float16)
    b = _ours(q, k, v, do, True, torch.float16)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@in_this_process
def test_usable_inside_a_model():
    """Projections -> kernel -> projection: autograd reaches the weights as through SDPA."""
    torch.manual_seed(0)
    proj = torch.nn.Linear(32, 3 * 32).to(DEVICE)
    out_proj = torch.nn.Linear(32, 4).to(DEVICE)
    x = torch.randn(2, 24, 32, device=DEVICE)

    def loss(attn):
        qkv = proj(x).view(2, 24, 3, 1, 32).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d), strided
        heads = attn(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(2, 24, 32)
        return out_proj(heads).square().mean()

    grads = torch.autograd.grad(loss(lambda q, k, v: at.triton_flash_attention(q, k, v, True)),
                                list(proj.parameters()))
    ref = torch.autograd.grad(
        loss(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        list(proj.parameters()))
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@in_this_process
def test_kernel_rejects_bad_inputs():
    q = torch.randn(1, 1, 16, 32, device=DEVICE)
    with pytest.raises(ValueError, match="unsupported dtype"):
        at.triton_flash_attention(q.double(), q.double(), q.double())
    with pytest.raises(ValueError, match="head dims differ"):
        at.triton_flash_attention(q, torch.randn(1, 1, 16, 16, device=DEVICE), q)
    with pytest.raises(ValueError, match="lengths differ"):
        at.triton_flash_attention(q, q, torch.randn(1, 1, 8, 32, device=DEVICE))
    with pytest.raises(ValueError, match="scale"):
        at.triton_flash_attention(q, q, q, scale=math.inf)


@in_this_process
@pytest.mark.skipif(ON_GPU, reason="checks the CPU-without-interpreter guard")
def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setattr(at, "INTERPRETED", False)
    q = torch.randn(1, 1, 16, 32)
    with pytest.raises(ValueError, match="CUDA"):
        at.triton_flash_attention(q, q, q)


# --- on the GPU only: full sizes against SDPA's flash backend --------------------------------

@in_this_process
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_full_size_against_sdpa_flash(d, causal, dtype):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(2, 16, 2048, d, device="cuda", generator=g) for _ in range(4))
    q32, k32, v32 = (t.clone().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.MATH):
        ref_o = F.scaled_dot_product_attention(q32.double(), k32.double(), v32.double(),
                                               is_causal=causal)
    ref = (ref_o, *torch.autograd.grad(ref_o, (q32, k32, v32), do.double()))
    q16, k16, v16 = (t.to(dtype).requires_grad_() for t in (q, k, v))
    ours_o = flash_attention(q16, k16, v16, causal=causal)  # dispatches to the kernel
    ours = (ours_o, *torch.autograd.grad(ours_o, (q16, k16, v16), do.to(dtype)))
    a, b, c = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        peer_o = F.scaled_dot_product_attention(a, b, c, is_causal=causal)
    peer = (peer_o, *torch.autograd.grad(peer_o, (a, b, c), do.to(dtype)))
    for name, got, other, want in zip(("o", "dq", "dk", "dv"), ours, peer, ref, strict=True):
        err = (got.double() - want.double()).abs().max().item()
        peer_err = (other.double() - want.double()).abs().max().item()
        assert err <= 2 * peer_err + 1e-5, (name, err, peer_err)


@pytest.mark.skipif(not NEED_FRESH_PROCESS, reason="the interpreter tests ran in this process")
def test_interpreter_tests_in_a_fresh_process():
    import subprocess

    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
