"""FlashAttention on CPU: exactness, tile schedules, peak memory against length, and the roofline.

Four parts, each a figure or a check of the post:

1. **Exactness.** The tiled reference (:func:`deepnotes.nn.attention.tiled_attention`) against
   PyTorch's SDPA math backend in float64, output and gradients, over ragged and causal shapes.
2. **Tiles** (``tiles``): which (query block, key block) tiles the forward computes, masks or
   skips (:func:`~deepnotes.nn.attention.tile_kinds`), and the order in which the programs of the
   forward and of the two backward passes walk them.
3. **Memory against length** (``memory_vs_length``): the extra peak resident memory of one
   attention call (forward, and forward plus backward) for the naive algorithm, the tiled
   reference and SDPA's CPU flash and math backends, measured with the kernel's high-water mark
   (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs``) on one head of
   float32.
4. **Roofline** (``roofline``): an H100's compute and bandwidth roofs with the attention
   throughputs *measured by peers* (PyTorch SDPA's flash and cuDNN backends and naive attention,
   torch 2.11, H100 80GB HBM3; the project's reference measurements, ``H100_PEER_ANCHORS``),
   placed at the arithmetic intensity of their compulsory memory traffic. Our Triton kernel is
   added from ``benchmarks/results/flash_attention.json`` only when that record holds GPU rows
   that were actually measured.

No network is trained here; the torch work (attention calls) runs on ``run.device`` but the
memory probe reads the process's resident memory, so it is meaningful on CPU only (on CUDA the
memory part is skipped; ``benchmarks/flash_attention.py`` reports the GPU).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyArrowPatch, Patch
from torch.nn.attention import SDPBackend, sdpa_kernel

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.nn.attention import (
    TILE_FULL,
    TILE_MASKED,
    TILE_SKIPPED,
    causal_mask,
    naive_attention,
    tile_kinds,
    tiled_attention,
)

#: H100 SXM (80GB HBM3) datasheet peaks: dense FP16/BF16 tensor-core TFLOP/s and HBM TB/s.
H100_PEAK_TFLOPS = 989.4
H100_HBM_TBPS = 3.35

#: Peers' attention throughput on an H100 80GB HBM3 with torch 2.11 (cu130), TFLOP/s, fp16,
#: batch x seq = 16k tokens (32 heads at d=64, 16 at d=128): the project's reference
#: measurements (shared anchors ``gpu_attention.h100.jsonl``), not ours. Columns: head dim,
#: seq, causal, SDPA flash fwd, flash fwd+bwd, cuDNN fwd, cuDNN fwd+bwd, naive fwd.
H100_PEER_ANCHORS = (
    (64, 512, False, 260.7, 181.4, 383.6, 275.5, 52.4),
    (64, 512, True, 152.7, 110.9, 257.6, 168.4, 13.4),
    (64, 1024, False, 291.1, 229.2, 440.7, 361.9, 54.4),
    (64, 1024, True, 212.7, 161.5, 336.7, 257.5, 13.9),
    (64, 2048, False, 302.3, 257.0, 473.2, 425.6, 49.1),
    (64, 2048, True, 262.7, 208.4, 405.3, 337.7, 13.1),
    (64, 4096, False, 306.7, 278.0, 483.1, 442.4, 43.6),
    (64, 4096, True, 284.9, 244.3, 442.9, 396.7, 11.7),
    (64, 8192, False, 308.4, 292.6, 490.9, 443.2, 38.6),
    (64, 8192, True, 297.4, 264.2, 463.7, 424.7, 11.0),
    (128, 512, False, 296.4, 193.9, 520.0, 333.9, 96.8),
    (128, 512, True, 180.8, 123.2, 329.4, 184.8, 25.4),
    (128, 1024, False, 332.3, 245.8, 604.0, 453.6, 103.6),
    (128, 1024, True, 245.1, 176.1, 445.8, 317.0, 26.8),
    (128, 2048, False, 349.1, 279.8, 648.3, 533.9, 93.7),
    (128, 2048, True, 269.8, 226.1, 534.2, 420.3, 25.5),
    (128, 4096, False, 355.7, 306.7, 662.6, 561.1, 80.8),
    (128, 4096, True, 293.0, 261.4, 586.8, 490.2, 23.2),
    (128, 8192, False, 356.8, 318.6, 678.2, 558.5, 76.2),
    (128, 8192, True, 324.7, 288.0, 616.0, 527.0, 21.6),
)
ANCHOR_COLUMNS = ("d", "n", "causal", "flash_fwd", "flash_fwdbwd", "cudnn_fwd", "cudnn_fwdbwd",
                  "naive_fwd")

METHODS = {  # name -> (label, colour)
    "naive": (r"naive: $\mathrm{softmax}(qk^\top)\,v$", PALETTE[3]),
    "tiled": ("ours: tiled reference", PALETTE[0]),
    "sdpa_flash": ("SDPA flash (CPU)", PALETTE[2]),
    "sdpa_math": ("SDPA math", PALETTE[1]),
}


@dataclass
class Config(ExperimentConfig):
    seq_lens: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)
    """Sequence lengths (L = S) of the memory sweep."""
    train_max_len: int = 8192
    """Longest length at which forward+backward memory is measured (naive autograd saves L x S)."""
    head_dim: int = 64
    """Head dimension d of the memory sweep."""
    block_q: int = 128
    """Query rows per tile of the tiled reference."""
    block_k: int = 256
    """Key rows per tile of the tiled reference."""
    check_shapes: tuple[int, ...] = (37, 64, 100, 129, 200, 300)
    """Lengths mixed into the float64 exactness check (pairs of them give L and S)."""
    diagram_seq_q: int = 360
    """Query length of the tile diagrams."""
    diagram_seq_k: int = 600
    """Key length of the tile diagrams (longer than the queries: bottom-right causal)."""
    diagram_block: int = 64
    """Tile size of the diagrams (both axes)."""
    threads: int = 1
    """Torch threads. On a shared 2-core machine, two threads spin on each other in the tiled
    loop's many small ops; one thread per contender keeps timings comparable."""


PRESETS = make_presets(
    smoke=Config(seq_lens=(256, 512), train_max_len=512, check_shapes=(37, 64)),
    quick=Config(seq_lens=(512, 1024, 2048, 4096), train_max_len=2048,
                 check_shapes=(37, 64, 100)),
    full=Config(),
)
HEADLINE = "memory/tiled_fwd_peak_mib"
PEER = "memory/naive_fwd_peak_mib"


# --- measurement helpers (also used by benchmarks/flash_attention.py) ------------------------

def _read_status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def peak_memory_supported() -> bool:
    """Prepare the probe; True where it works (Linux >= 4.0 with glibc, writable proc).

    The resident high-water mark can be reset through ``/proc/self/clear_refs``. glibc's malloc
    would blur it: by default, after a large block is freed it raises its mmap threshold (up to
    32 MiB) and serves later blocks from a heap whose freed pages stay resident, so a call could
    reuse memory freed by an earlier one and appear to need none. A fixed threshold of 64 KiB
    (``mallopt(M_MMAP_THRESHOLD)``, which also turns the dynamic adjustment off) and a 64 KiB
    trim threshold give every block above 64 KiB its own mapping, returned on free: resident
    memory then follows the live allocations to within 64 KiB per block.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        if not (libc.mallopt(m_mmap_threshold, 1 << 16) and libc.mallopt(m_trim_threshold,
                                                                            1 << 16)):
            return False
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        _read_status_kib("VmHWM")
        _exact_rss_kib()
        return True
    except (OSError, AttributeError):
        return False


def release_malloc_thresholds() -> None:
    """Undo :func:`peak_memory_supported`'s 64 KiB thresholds for the rest of the process.

    Setting a threshold turns glibc's dynamic adjustment off for good, so the best we can do is
    the state that adjustment reaches after a large free (mmap threshold 32 MiB, trim threshold
    twice that): later work in the same process (a test session) then does not pay a fresh
    mapping and its page faults for every block above 64 KiB.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def peak_memory_mib(fn) -> float:
    """Extra peak resident memory of ``fn()`` in MiB above the resident size before the call.

    Call :func:`peak_memory_supported` once first (it fixes malloc's thresholds).

    Writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark ``VmHWM`` to
    the current resident size; after the call, ``VmHWM`` minus that size is the largest amount
    of memory the call held at once (allocations of other threads in this process count too).
    The kernel's counters behind ``VmRSS``/``VmHWM`` are per-CPU approximations, off by up to
    a couple of MiB; the exact resident size from ``/proc/self/smaps_rollup`` (a page-table walk)
    after the call, while its result is still alive, bounds the peak from below. The larger of
    the two is returned, so results and other live allocations count exactly and transient peaks
    to within the counters' error.
    """
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")
    base = _read_status_kib("VmRSS")
    base_exact = _exact_rss_kib()
    out = fn()
    peak = _read_status_kib("VmHWM") - base
    held = _exact_rss_kib() - base_exact
    del out
    return max(peak, held) / 1024.0


def _exact_rss_kib() -> int:
    with open("/proc/self/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Rss:"):
                return int(line.split()[1])
    raise OSError("Rss not in /proc/self/smaps_rollup")


def sdpa(q, k, v, backend: SDPBackend, causal: bool = False):
    """PyTorch's scaled_dot_product_attention pinned to one backend."""
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def attention_call(method: str, q, k, v, causal: bool = False, block_q: int = 128,
                   block_k: int = 256):
    """One forward of a contender by name: naive, tiled, sdpa_flash or sdpa_math."""
    if method == "naive":
        return naive_attention(q, k, v, causal)
    if method == "tiled":
        return tiled_attention(q, k, v, causal, block_q=block_q, block_k=block_k)
    if method == "sdpa_flash":
        return sdpa(q, k, v, SDPBackend.FLASH_ATTENTION, causal)
    if method == "sdpa_math":
        return sdpa(q, k, v, SDPBackend.MATH, causal)
    raise ValueError(f"unknown method {method!r}")


def attention_flops(batch: int, heads: int, seq_q: int, seq_k: int, d: int, causal: bool,
                    backward: bool = False) -> float:
    """FLOPs of attention as FlashAttention's benchmarks count them.

    Forward: two matmuls, ``4 B H L S d`` (half for causal with L = S). Backward: five matmuls,
    2.5 times the forward, so forward+backward is 3.5 times the forward.
    """
    f = 4.0 * batch * heads * seq_q * seq_k * d * (0.5 if causal else 1.0)
    return 3.5 * f if backward else f


def arithmetic_intensity(seq: int, d: int, causal: bool, fused: bool, bytes_per: int = 2) -> float:
    """FLOPs per byte of compulsory HBM traffic for one head's forward (L = S = ``seq``).

    Fused (flash): read q, k, v and write o once, ``4 seq d`` elements. Naive: also write the
    scores, read them for the softmax, write the probabilities and read them for ``P v``,
    ``4 seq^2`` more elements. A lower bound on traffic, so an upper bound on intensity.
    """
    flops = attention_flops(1, 1, seq, seq, d, causal)
    elems = 4 * seq * d + (0 if fused else 4 * seq * seq)
    return flops / (elems * bytes_per)


# --- experiment parts ------------------------------------------------------------------------

def check_exactness(cfg: Config, run) -> dict[str, float]:
    """Largest |ours - SDPA math| over output and gradients, float64, causal and not."""
    lens = cfg.check_shapes
    worst_out = worst_grad = 0.0
    n_cases = 0
    g = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    for a, seq_q in enumerate(lens):
        seq_k = lens[(a + 1) % len(lens)]
        d = (16, 32, 64, 128)[a % 4]
        for causal in (False, True):
            q, k, v = (torch.randn(2, 2, n, d, generator=g, dtype=torch.float64)
                       .to(run.device).requires_grad_() for n in (seq_q, seq_k, seq_k))
            out = tiled_attention(q, k, v, causal, block_q=32, block_k=64)
            grad_out = torch.randn_like(out)
            grads = torch.autograd.grad(out, (q, k, v), grad_out)
            mask = causal_mask(seq_q, seq_k, q.device) if causal else None
            with sdpa_kernel(SDPBackend.MATH):
                ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).nan_to_num(0.0)
            ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
            worst_out = max(worst_out, (out - ref).abs().max().item())
            worst_grad = max(worst_grad, *((x - y).abs().max().item()
                                           for x, y in zip(grads, ref_grads, strict=True)))
            n_cases += 1
    run.log(f"exactness over {n_cases} float64 cases: output {worst_out:.2e}, "
            f"gradients {worst_grad:.2e}")
    return {"exactness/max_abs_err_output": worst_out, "exactness/max_abs_err_grads": worst_grad,
            "exactness/cases_count": n_cases}


def measure_memory(cfg: Config, run) -> dict[str, dict[str, list[float]]]:
    """Peak extra MiB per method and length: ``{"fwd": {method: [...]}, "fwdbwd": {...}}``."""
    d = cfg.head_dim
    out: dict[str, dict[str, list[float]]] = {"fwd": {m: [] for m in METHODS},
                                              "fwdbwd": {"naive": [], "tiled": []}}
    g = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    for n in run.track(cfg.seq_lens, "memory vs length"):
        q, k, v = (torch.randn(1, 1, n, d, generator=g) for _ in range(3))
        for method in METHODS:
            t0 = time.perf_counter()
            with torch.no_grad():
                mib = peak_memory_mib(partial(attention_call, method, q, k, v,
                                              block_q=cfg.block_q, block_k=cfg.block_k))
            out["fwd"][method].append(mib)
            run.log(f"L={n}: {method} forward peak +{mib:.1f} MiB "
                    f"({time.perf_counter() - t0:.1f} s)")
        for method in ("naive", "tiled"):
            if n > cfg.train_max_len:
                out["fwdbwd"][method].append(math.nan)
                continue
            qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

            def step(m=method, qg=qg, kg=kg, vg=vg):
                o = attention_call(m, qg, kg, vg, block_q=cfg.block_q, block_k=cfg.block_k)
                return torch.autograd.grad(o, (qg, kg, vg), torch.ones_like(o))

            mib = peak_memory_mib(step)
            out["fwdbwd"][method].append(mib)
            run.log(f"L={n}: {method} forward+backward peak +{mib:.1f} MiB")
    return out


# --- figures ---------------------------------------------------------------------------------

_KIND_COLOURS = {TILE_SKIPPED: "#f2f2f2", TILE_FULL: PALETTE[0], TILE_MASKED: PALETTE[1]}


def _draw_tiles(ax, kinds: np.ndarray, title: str):
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([_KIND_COLOURS[k] for k in (TILE_SKIPPED, TILE_FULL, TILE_MASKED)])
    ax.imshow(kinds, cmap=cmap, vmin=-0.5, vmax=2.5, aspect="equal")
    n_q, n_k = kinds.shape
    ax.set_xticks(np.arange(-0.5, n_k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_q, 1), minor=True)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="both", length=0)
    ax.set_xticks(range(n_k), [str(j) for j in range(n_k)], fontsize=8)
    ax.set_yticks(range(n_q), [str(i) for i in range(n_q)], fontsize=8)
    ax.set(xlabel="key block $j$ (K, V)", ylabel="query block $i$ (Q, O)")
    ax.set_title(title, fontsize=10)


def _arrow(ax, start, end, colour="black"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, lw=1.4,
                                 color=colour))


def tiles_figure(cfg: Config):
    """Forward tiles (non-causal and causal) and the two backward passes on the causal grid."""
    bq = bk = cfg.diagram_block
    lq, lk = cfg.diagram_seq_q, cfg.diagram_seq_k
    full = tile_kinds(lq, lk, bq, bk, causal=False).numpy()
    causal = tile_kinds(lq, lk, bq, bk, causal=True).numpy()
    fig, grid = new_figure(2, 2, size="column_grid", constrained_layout=True)
    axes = (grid[0, 0], grid[0, 1], grid[1, 0])
    _draw_tiles(axes[0], full, "forward, no mask: one program\nper query block walks its row")
    for i in range(full.shape[0]):
        _arrow(axes[0], (-0.35, i), (full.shape[1] - 0.65, i), "white")
    skipped = int((causal == TILE_SKIPPED).sum())
    masked = int((causal == TILE_MASKED).sum())
    _draw_tiles(axes[1], causal, f"forward, causal ($S>L$):\n{skipped} of {causal.size} tiles "
                f"skipped, {masked} masked")
    for i in range(causal.shape[0]):
        last = int(np.nonzero(causal[i] != TILE_SKIPPED)[0].max())
        _arrow(axes[1], (-0.35, i), (last + 0.35, i), "white")
    _draw_tiles(axes[2], causal, "backward, causal: dK/dV programs walk\ndown a key block, "
                "dQ programs along a row")
    for j in range(causal.shape[1]):
        rows = np.nonzero(causal[:, j] != TILE_SKIPPED)[0]
        if rows.size:
            _arrow(axes[2], (j, rows.min() - 0.35), (j, causal.shape[0] - 0.65), "white")
    _arrow(axes[2], (-0.35, causal.shape[0] - 1), (causal.shape[1] - 0.65,
                                                   causal.shape[0] - 1), "black")
    handles = [Patch(color=_KIND_COLOURS[TILE_FULL], label="computed, no mask"),
               Patch(color=_KIND_COLOURS[TILE_MASKED], label="computed with the causal mask"),
               Patch(facecolor=_KIND_COLOURS[TILE_SKIPPED], edgecolor="0.6",
                     label="never loaded (early exit)")]
    grid[1, 1].axis("off")
    grid[1, 1].legend(handles=handles, loc="center", fontsize=9,
                      title=rf"tiles of ${bq}\times{bk}$: $L={lq}$ queries, $S={lk}$ keys",
                      title_fontsize=9)
    return fig


#: Values below this are drawn on it (hollow): the transient part of a peak is resolved only
#: to about this much (see :func:`peak_memory_mib`).
MEMORY_FLOOR_MIB = 0.5


def _plot_floored(ax, x, values, colour, label):
    vals = np.asarray(values, dtype=float)
    low = vals < MEMORY_FLOOR_MIB
    shown = np.where(low, MEMORY_FLOOR_MIB, vals)
    ax.plot(x, shown, "-", color=colour, label=label)
    ax.plot(x[~low], shown[~low], "o", color=colour)
    ax.plot(x[low], shown[low], "o", color=colour, mfc="white")


def memory_figure(cfg: Config, mem: dict[str, dict[str, list[float]]]):
    fig, (ax1, ax2) = new_figure(2, 1, size=(7.0, 6.4), constrained_layout=True)
    lens = np.asarray(cfg.seq_lens, dtype=float)
    score = lens**2 * 4 / 2**20  # one float32 L x L matrix, MiB
    out_mib = lens * cfg.head_dim * 4 / 2**20  # one float32 L x d matrix
    for ax, kind, methods, title in (
            (ax1, "fwd", tuple(METHODS), f"Forward, one head, $d={cfg.head_dim}$, float32"),
            (ax2, "fwdbwd", ("naive", "tiled"), "Forward + backward (autograd)")):
        for method in methods:
            label, colour = METHODS[method]
            _plot_floored(ax, lens, mem[kind][method], colour, label)
        ax.plot(lens, score, ":", color="0.4", label=r"one $L\times L$ float32 matrix")
        ax.plot(lens, out_mib, "--", color="0.4", label=r"one $L\times d$ float32 matrix")
        ax.axhspan(MEMORY_FLOOR_MIB * 0.5, MEMORY_FLOOR_MIB, color="0.9", zorder=0)
        ax.set(xscale="log", yscale="log", xlabel="sequence length $L=S$",
               ylabel="extra peak resident memory (MiB)", title=title,
               ylim=(MEMORY_FLOOR_MIB * 0.5, None))
        ax.set_xticks(lens, [str(int(n)) for n in lens])
        ax.minorticks_off()
        ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax1.text(lens[-1], MEMORY_FLOOR_MIB * 0.6, "hollow: below probe resolution", ha="right",
             fontsize=9, color="0.3")
    return fig


def _load_gpu_rows() -> list[dict]:
    """Our kernel's GPU rows from the benchmark record, when they were measured."""
    from deepnotes.core.paths import benchmarks_dir

    path = benchmarks_dir() / "results" / "flash_attention.json"
    if not path.is_file():
        return []
    gpu = json.loads(path.read_text(encoding="utf-8")).get("figures", {}).get("gpu", {})
    if gpu.get("status") != "measured":
        return []
    return [r for r in gpu.get("rows", []) if isinstance(r.get("ours_fwd_tflops"), float)]


def roofline_figure(gpu_rows: list[dict]):
    fig, ax = new_figure(1, 1, size=(7.0, 4.6))
    ai = np.logspace(0, 4, 200)
    ax.plot(ai, np.minimum(H100_PEAK_TFLOPS, H100_HBM_TBPS * ai), color="black", lw=1.5,
            label="H100 SXM roofs: 989 TFLOP/s fp16 tensor cores, 3.35 TB/s HBM3")
    markers = {64: "o", 128: "s"}
    for row in H100_PEER_ANCHORS:
        r = dict(zip(ANCHOR_COLUMNS, row, strict=True))
        fill = "none" if r["causal"] else None
        x_fused = arithmetic_intensity(r["n"], r["d"], r["causal"], fused=True)
        x_naive = arithmetic_intensity(r["n"], r["d"], r["causal"], fused=False)
        kw = {"marker": markers[r["d"]], "ms": 5, "ls": "none"}
        for x, y, colour in ((x_fused, r["flash_fwd"], PALETTE[2]),
                             (x_fused, r["cudnn_fwd"], PALETTE[4]),
                             (x_naive, r["naive_fwd"], PALETTE[3])):
            ax.plot([x], [y], color=colour, mfc=fill if fill else colour, **kw)
    for row in gpu_rows:
        x = arithmetic_intensity(row["seq"], row["head_dim"], row["causal"], fused=True)
        ax.plot([x], [row["ours_fwd_tflops"]], marker="*", ms=9, ls="none", color=PALETTE[0])
    handles = [
        ax.lines[0],
        ax.plot([], [], "o", color=PALETTE[2], label="SDPA flash backend, forward")[0],
        ax.plot([], [], "o", color=PALETTE[4], label="SDPA cuDNN backend, forward")[0],
        ax.plot([], [], "o", color=PALETTE[3], label="naive attention, forward")[0],
        ax.plot([], [], "o", color="0.4", mfc="none",
                label=r"hollow: causal; circle $d=64$, square $d=128$")[0],
    ]
    if gpu_rows:
        handles.append(ax.plot([], [], "*", color=PALETTE[0], ms=9,
                               label="ours (Triton), forward, measured")[0])
    else:
        ax.text(0.98, 0.04, "ours (Triton): no GPU measurement recorded yet",
                transform=ax.transAxes, ha="right", fontsize=9, color=PALETTE[0])
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.set(xscale="log", yscale="log", xlim=(1, 1e4), ylim=(5, 2000),
           xlabel="arithmetic intensity (FLOP per byte of compulsory HBM traffic)",
           ylabel="TFLOP/s",
           title="H100 roofline with peers' reference measurements (torch 2.11, fp16)")
    return fig


def anchor_metrics() -> dict[str, float]:
    """Ranges of the peers' H100 reference measurements, for the post to quote by reference."""
    cols = {c: np.array([row[i] for row in H100_PEER_ANCHORS])
            for i, c in enumerate(ANCHOR_COLUMNS)}
    out = {}
    for d in (64, 128):
        sel = (cols["d"] == d) & ~cols["causal"].astype(bool)
        for c in ("flash_fwd", "flash_fwdbwd", "cudnn_fwd", "cudnn_fwdbwd", "naive_fwd"):
            out[f"anchor_h100/d{d}_{c}_tflops_min"] = cols[c][sel].min()
            out[f"anchor_h100/d{d}_{c}_tflops_max"] = cols[c][sel].max()
    out["anchor_h100/cudnn_over_flash_fwd_mean"] = float(np.mean(cols["cudnn_fwd"]
                                                                 / cols["flash_fwd"]))
    out["anchor_h100/flash_fwd_fraction_of_peak_max"] = cols["flash_fwd"].max() / H100_PEAK_TFLOPS
    out["anchor_h100/cudnn_fwd_fraction_of_peak_max"] = cols["cudnn_fwd"].max() / H100_PEAK_TFLOPS
    out["roofline/ridge_flop_per_byte"] = H100_PEAK_TFLOPS / H100_HBM_TBPS
    out["roofline/naive_intensity_d64_n4096"] = arithmetic_intensity(4096, 64, False, False)
    out["roofline/flash_intensity_d64_n4096"] = arithmetic_intensity(4096, 64, False, True)
    return out


def run(config: Config) -> Result:
    if not config.seq_lens or min(config.seq_lens) < 1:
        raise ValueError(f"seq_lens must be positive lengths, got {config.seq_lens}")
    if config.head_dim < 16 or config.head_dim > 256:
        raise ValueError(f"head_dim must be in [16, 256], got {config.head_dim}")
    if min(config.block_q, config.block_k, config.diagram_block, config.threads) < 1:
        raise ValueError("block_q, block_k, diagram_block and threads must be positive")
    with start_run(__name__, config) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            run.log_metrics(check_exactness(config, run))
            kinds = tile_kinds(config.diagram_seq_q, config.diagram_seq_k, config.diagram_block,
                               config.diagram_block, causal=True)
            run.log_metrics({
                "tiles/diagram_skipped_count": int((kinds == TILE_SKIPPED).sum()),
                "tiles/diagram_masked_count": int((kinds == TILE_MASKED).sum()),
                "tiles/diagram_full_count": int((kinds == TILE_FULL).sum()),
                "tiles/diagram_total_count": kinds.numel(),
            })
            run.save_figure(tiles_figure(config), "tiles")
            if run.device.type == "cpu" and peak_memory_supported():
                try:
                    mem = measure_memory(config, run)
                finally:
                    release_malloc_thresholds()
                last = len(config.seq_lens) - 1
                n_max = config.seq_lens[last]
                metrics = {"memory/max_len": n_max}
                for kind, per_method in mem.items():
                    for method, values in per_method.items():
                        for n, val in zip(config.seq_lens, values, strict=True):
                            if not math.isnan(val):
                                metrics[f"memory/{method}_{kind}_mib_L{n}"] = val
                        metrics[f"memory/{method}_{kind}_peak_mib"] = values[last]
                        trained = [val for val in values if not math.isnan(val)]
                        if trained and kind == "fwdbwd":
                            metrics[f"memory/{method}_fwdbwd_peak_mib_longest"] = trained[-1]
                tiled_last = mem["fwd"]["tiled"][last]
                if tiled_last >= MEMORY_FLOOR_MIB:  # a ratio only above the probe's resolution
                    metrics["memory/naive_over_tiled_fwd"] = (mem["fwd"]["naive"][last]
                                                              / tiled_last)
                metrics["memory/score_matrix_mib"] = n_max**2 * 4 / 2**20
                metrics["memory/train_max_len"] = max(n for n in config.seq_lens
                                                      if n <= config.train_max_len)
                run.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})
                run.save_figure(memory_figure(config, mem), "memory_vs_length")
            else:
                run.log("memory probe skipped: it reads this process's resident memory (CPU, "
                        "Linux only)")
            run.log_metrics(anchor_metrics())
            gpu_rows = _load_gpu_rows()
            run.log_metrics({"roofline/ours_gpu_rows_count": len(gpu_rows)})
            run.save_figure(roofline_figure(gpu_rows), "roofline")
        finally:
            torch.set_num_threads(threads)
    return run.result
