"""FlashAttention: our kernels beside PyTorch's SDPA backends and naive attention, in one run.

One prepared script for both machines:

- **GPU rows** (only when CUDA is available): forward and forward+backward TFLOP/s of our Triton
  kernel (``deepnotes.nn.attention_triton``), SDPA's flash backend, SDPA's cuDNN backend and
  naive attention, for batch x seq = 16k tokens, 32 heads, head dim 64 and 128, seq 512-8192,
  causal and not, fp16 and bf16 (80 configurations, each contender timed with CUDA events after
  warm-up). Before timing, the accuracy of ours and of SDPA flash is checked against a float32
  reference at one size per (dtype, d, causal). Then the mixed-precision topic's GPU row: a small
  transformer's training step in fp32, tf32, bf16 and fp16 with loss scaling through the house
  loop ``deepnotes.nn.training.fit``, and bf16/fp16 through a plain torch.amp loop beside it.
  Without CUDA these rows are recorded as ``"not measured: no GPU available"``; no GPU figure is
  ever estimated.
- **CPU rows** (always): our tiled reference (``deepnotes.nn.attention.tiled_attention``) beside
  SDPA's CPU flash and math backends and naive attention at seq 4096-16384 (one batch, one head,
  d = 64, float32, one torch thread each): time per call, GFLOP/s and the extra peak resident
  memory of the same call (``deepnotes.experiments.flash_attention.peak_memory_mib``).
  Contenders are timed round robin so load changes on a shared machine hit all of them alike;
  compare ratios, not absolute times. ``os.getloadavg()`` is recorded before and after.

    python benchmarks/flash_attention.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from deepnotes.core.bench import bench_main
from deepnotes.experiments.flash_attention import (
    MEMORY_FLOOR_MIB,
    attention_call,
    attention_flops,
    peak_memory_mib,
    peak_memory_supported,
    release_malloc_thresholds,
)
from deepnotes.nn.attention import naive_attention

NO_GPU = "not measured: no GPU available"
CPU_METHODS = ("tiled", "sdpa_flash", "sdpa_math", "naive")


# --- CPU ---------------------------------------------------------------------------------------

def _cpu_call(method: str, q, k, v, causal: bool, backward: bool):
    if not backward:
        with torch.no_grad():
            return attention_call(method, q, k, v, causal)
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    out = attention_call(method, qg, kg, vg, causal)
    return torch.autograd.grad(out, (qg, kg, vg), torch.ones_like(out))




def cpu_rows(quick: bool) -> dict:
    """Time and peak memory of each CPU contender, interleaved, per (seq, causal, mode)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mem_ok = peak_memory_supported()
    d, repeat = 64, 2
    lens = (512, 1024) if quick else (4096, 8192, 16384)
    bwd_max = 1024 if quick else 8192  # SDPA math / naive autograd keep L x S: 3 GiB at 16384
    rows = []
    g = torch.Generator().manual_seed(0)
    try:
        for n in lens:
            q, k, v = (torch.randn(1, 1, n, d, generator=g) for _ in range(3))
            for causal in (False, True):
                for backward in (False, True):
                    if backward and n > bwd_max:
                        continue
                    times: dict[str, list[float]] = {m: [] for m in CPU_METHODS}
                    peaks: dict[str, float] = {}
                    for _ in range(repeat):  # round robin over the contenders
                        for m in CPU_METHODS:
                            call = partial(_cpu_call, m, q, k, v, causal, backward)
                            t0 = time.perf_counter()
                            if mem_ok and m not in peaks:
                                peaks[m] = peak_memory_mib(call)
                            else:
                                call()
                            times[m].append(time.perf_counter() - t0)
                    flops = attention_flops(1, 1, n, n, d, causal, backward)
                    row = {"seq": n, "head_dim": d, "batch": 1, "heads": 1, "causal": causal,
                           "mode": "fwd+bwd" if backward else "fwd", "dtype": "float32"}
                    for m in CPU_METHODS:
                        sec = statistics.median(times[m])
                        row[f"{m}_ms"] = 1e3 * sec
                        row[f"{m}_gflops"] = flops / sec / 1e9
                        if m in peaks:
                            row[f"{m}_peak_mib"] = peaks[m]
                    row["tiled_speedup_over_sdpa_math"] = row["sdpa_math_ms"] / row["tiled_ms"]
                    row["tiled_speedup_over_sdpa_flash"] = row["sdpa_flash_ms"] / row["tiled_ms"]
                    row["tiled_speedup_over_naive"] = row["naive_ms"] / row["tiled_ms"]
                    if mem_ok:  # a ratio only where the tiled peak is above the probe's noise
                        tiled = row["tiled_peak_mib"]
                        row["naive_over_tiled_peak_memory"] = (
                            row["naive_peak_mib"] / tiled if tiled >= MEMORY_FLOOR_MIB
                            else None)
                    rows.append(row)
    finally:
        torch.set_num_threads(threads)
        if mem_ok:
            release_malloc_thresholds()
    return {"torch_threads": 1, "repeat": repeat, "timing": "median of interleaved calls",
            "memory": ("extra peak resident memory of the first call (VmHWM, malloc mmap "
                       "threshold fixed at 64 KiB)") if mem_ok else "not measured: no VmHWM",
            "rows": {_cpu_key(r): r for r in rows}}


def _cpu_key(row: dict) -> str:
    """Stable key of a CPU row for the post's references, e.g. ``fwdbwd_causal_8192``."""
    return f"{row['mode'].replace('+', '')}_{'causal' if row['causal'] else 'full'}_{row['seq']}"


# --- GPU ---------------------------------------------------------------------------------------

def _cuda_ms(fn, min_iters: int = 10, min_time_s: float = 0.15) -> float:
    """Median milliseconds of ``fn()`` with CUDA events, after a warm-up call."""
    fn()
    torch.cuda.synchronize()
    samples = []
    t_end = time.perf_counter() + min_time_s
    while len(samples) < min_iters or time.perf_counter() < t_end:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop))
        if len(samples) >= 200:
            break
    return statistics.median(samples)


def _gpu_fn(name: str, causal: bool):
    from deepnotes.nn.attention_triton import triton_flash_attention

    if name == "ours":
        return lambda q, k, v: triton_flash_attention(q, k, v, causal=causal)
    if name == "naive":
        return lambda q, k, v: naive_attention(q, k, v, causal)
    backend = {"sdpa_flash": SDPBackend.FLASH_ATTENTION,
               "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}[name]

    def fn(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return fn


GPU_METHODS = ("ours", "sdpa_flash", "sdpa_cudnn", "naive")


def _gpu_fwd(fn, q, k, v):
    with torch.no_grad():
        return fn(q, k, v)


def _gpu_fwdbwd(fn, q, k, v, do):
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    return torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), do)


def _accuracy_rows(dtypes, dims) -> list[dict]:
    """Max error of ours and of SDPA flash against a float32 reference (output and grads)."""
    rows = []
    for dtype in dtypes:
        for d in dims:
            for causal in (False, True):
                g = torch.Generator(device="cuda").manual_seed(0)
                q, k, v, do = (torch.randn(4, 32, 2048, d, device="cuda", generator=g)
                               for _ in range(4))
                q32, k32, v32 = (t.clone().requires_grad_() for t in (q, k, v))
                with sdpa_kernel(SDPBackend.MATH):
                    ref = F.scaled_dot_product_attention(q32, k32, v32, is_causal=causal)
                ref_all = (ref, *torch.autograd.grad(ref, (q32, k32, v32), do))
                row = {"dtype": str(dtype).removeprefix("torch."), "head_dim": d,
                       "causal": causal}
                for name in ("ours", "sdpa_flash"):
                    a, b, c = (t.to(dtype).requires_grad_() for t in (q, k, v))
                    out = _gpu_fn(name, causal)(a, b, c)
                    got = (out, *torch.autograd.grad(out, (a, b, c), do.to(dtype)))
                    for label, x, y in zip(("out", "dq", "dk", "dv"), got, ref_all, strict=True):
                        row[f"{name}_{label}_max_err"] = (x.float() - y).abs().max().item()
                row["ours_within_2x_sdpa_flash_error"] = all(
                    row[f"ours_{t}_max_err"] <= 2 * row[f"sdpa_flash_{t}_max_err"] + 1e-5
                    for t in ("out", "dq", "dk", "dv"))
                rows.append(row)
                del q, k, v, do, q32, k32, v32, ref, ref_all
    return rows


def gpu_rows(quick: bool) -> dict:
    if not torch.cuda.is_available():
        return {"status": NO_GPU, "rows": [], "summary": NO_GPU}
    try:
        import triton  # noqa: F401
    except ImportError:
        return {"status": "not measured: triton not installed", "rows": []}
    torch.backends.cuda.matmul.allow_tf32 = False
    dtypes = (torch.float16,) if quick else (torch.float16, torch.bfloat16)
    dims = (64,) if quick else (64, 128)
    seqs = (1024,) if quick else (512, 1024, 2048, 4096, 8192)
    tokens, heads = 16384, 32
    out = {"status": "measured", "device": torch.cuda.get_device_name(),
           "tokens": tokens, "heads": heads, "accuracy": _accuracy_rows(dtypes, dims), "rows": []}
    for dtype in dtypes:
        for d in dims:
            for n in seqs:
                b = tokens // n
                for causal in (False, True):
                    g = torch.Generator(device="cuda").manual_seed(0)
                    q, k, v, do = (torch.randn(b, heads, n, d, device="cuda", dtype=dtype,
                                               generator=g) for _ in range(4))
                    row = {"dtype": str(dtype).removeprefix("torch."), "head_dim": d, "seq": n,
                           "batch": b, "heads": heads, "causal": causal}
                    f_fwd = attention_flops(b, heads, n, n, d, causal)
                    for name in GPU_METHODS:
                        fn = _gpu_fn(name, causal)
                        fwd = partial(_gpu_fwd, fn, q, k, v)
                        fwdbwd = partial(_gpu_fwdbwd, fn, q, k, v, do)
                        for mode, call, flops in (("fwd", fwd, f_fwd),
                                                  ("fwdbwd", fwdbwd, 3.5 * f_fwd)):
                            try:
                                ms = _cuda_ms(call)
                                row[f"{name}_{mode}_ms"] = ms
                                row[f"{name}_{mode}_tflops"] = flops / (ms * 1e-3) / 1e12
                            except (RuntimeError, torch.OutOfMemoryError) as err:
                                row[f"{name}_{mode}_tflops"] = f"failed: {str(err)[:120]}"
                                torch.cuda.empty_cache()
                    for mode in ("fwd", "fwdbwd"):
                        ours = row.get(f"ours_{mode}_tflops")
                        for peer in ("sdpa_flash", "sdpa_cudnn", "naive"):
                            other = row.get(f"{peer}_{mode}_tflops")
                            if isinstance(ours, float) and isinstance(other, float):
                                row[f"ours_over_{peer}_{mode}"] = ours / other
                    out["rows"].append(row)
                    del q, k, v, do
                    torch.cuda.empty_cache()
    out["summary"] = _gpu_summary(out["rows"])
    return out


def _gpu_summary(rows: list[dict]) -> dict:
    summary = {}
    for key in ("ours_over_sdpa_flash_fwd", "ours_over_sdpa_flash_fwdbwd",
                "ours_over_sdpa_cudnn_fwd", "ours_over_sdpa_cudnn_fwdbwd",
                "ours_fwd_tflops", "ours_fwdbwd_tflops", "sdpa_flash_fwd_tflops",
                "sdpa_flash_fwdbwd_tflops", "sdpa_cudnn_fwd_tflops", "sdpa_cudnn_fwdbwd_tflops"):
        vals = [r[key] for r in rows if isinstance(r.get(key), float)]
        if vals:
            summary[key] = {"min": min(vals), "median": statistics.median(vals),
                            "max": max(vals)}
    fwd = summary.get("ours_over_sdpa_flash_fwd")
    bwd = summary.get("ours_over_sdpa_flash_fwdbwd")
    if fwd and bwd:
        summary["target_fwd_ge_1.0_met_by_median"] = fwd["median"] >= 1.0
        summary["target_fwdbwd_ge_0.85_met_by_median"] = bwd["median"] >= 0.85
    return summary


# --- the mixed-precision topic's GPU row ------------------------------------------------------

def _tiny_lm(vocab: int, width: int, layers: int, heads: int, seq: int) -> torch.nn.Module:
    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, width)
            self.pos = torch.nn.Parameter(torch.randn(seq, width) * 0.02)
            layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                                     batch_first=True, norm_first=True)
            self.body = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = torch.nn.Linear(width, vocab)
            mask = torch.nn.Transformer.generate_square_subsequent_mask(seq)
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, tokens):
            h = self.emb(tokens) + self.pos[: tokens.shape[1]]
            return self.head(self.body(h, mask=self.mask, is_causal=True))

    return LM()


def mixed_precision_rows(quick: bool) -> dict:
    """Training-step time, tokens/s and final loss per precision, same init and data."""
    if not torch.cuda.is_available():
        return {"status": NO_GPU, "rows": []}
    from deepnotes.nn.training import fit

    vocab, width, layers, heads, seq, batch = 512, 512, 6, 8, 256, 64
    steps = 10 if quick else 120
    timed_from = steps // 4

    def batches(step: int):
        # a learnable synthetic task: each sequence repeats a random 16-token pattern
        g = torch.Generator(device="cuda").manual_seed(step)
        pattern = torch.randint(0, vocab, (batch, 16), device="cuda", generator=g)
        x = pattern.repeat(1, seq // 16 + 1)[:, : seq + 1]
        return x[:, :-1], x[:, 1:]

    def loss_fn(model, batch):
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())

    def one(mode: str, loop: str) -> dict:
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        torch.manual_seed(0)
        model = _tiny_lm(vocab, width, layers, heads, seq).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
        stamps: list[float] = []
        if loop == "fit":
            precision = {"fp32": "fp32", "tf32": "fp32", "bf16": "bf16", "fp16": "fp16"}[mode]
            result = fit(model, loss_fn, batches, opt, steps, precision=precision,
                         callback=lambda i, m: stamps.append(time.perf_counter()))
            losses = result.history["loss"]
        else:  # torch.amp, written out: autocast, and GradScaler for fp16
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]
            scaler = torch.amp.GradScaler("cuda", enabled=mode == "fp16")
            losses = []
            for i in range(steps):
                with torch.autocast("cuda", dtype=dtype):
                    loss = loss_fn(model, batches(i))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                losses.append(loss.item())
                stamps.append(time.perf_counter())
        per_step = [b - a for a, b in zip(stamps[timed_from:-1], stamps[timed_from + 1:],
                                          strict=True)]
        ms = 1e3 * statistics.median(per_step)
        return {"mode": mode, "loop": loop, "ms_per_step": ms,
                "tokens_per_s": batch * seq / (ms * 1e-3),
                "final_loss_mean_last10": sum(losses[-10:]) / len(losses[-10:]),
                "first_loss": losses[0]}

    rows = [one(mode, "fit") for mode in ("fp32", "tf32", "bf16", "fp16")]
    rows += [one(mode, "torch.amp") for mode in ("bf16", "fp16")]
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"status": "measured", "device": torch.cuda.get_device_name(),
            "model": {"vocab": vocab, "width": width, "layers": layers, "heads": heads,
                      "seq": seq, "batch": batch, "steps": steps,
                      "timed": f"median step time over steps {timed_from}..{steps - 1}"},
            "rows": rows}


def run(quick: bool = False) -> dict:
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    figures: dict = {"load_avg_before": list(load_before)}
    figures["gpu"] = gpu_rows(quick)
    figures["mixed_precision_gpu"] = mixed_precision_rows(quick)
    figures["cpu"] = cpu_rows(quick)
    figures["load_avg_after"] = list(os.getloadavg())
    figures["wall_s"] = time.perf_counter() - t0
    figures["flop_convention"] = ("forward 4*B*H*L*S*d (half when causal); forward+backward "
                                  "3.5 times the forward")
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
