"""Medusa on a byte-level GPT trained on the Python standard library: accepted length and speedup.

1. A small GPT-2-shaped model (:mod:`deepnotes.decoding.gpt`) learns next-byte prediction on the
   standard library's source files (:mod:`deepnotes.data.text`), with ``deepnotes.nn.training.fit``.
2. Medusa-1: K heads (:class:`~deepnotes.decoding.medusa.MedusaHeads`) train on the frozen
   backbone's hidden states (Eq. 2), with ``fit`` again.
3. On held-out files: every head's rank-r hit rate (top-k accuracy), and sparse trees built from
   those rates (Eq. 4) beside chain and Cartesian top-k trees.
4. Decoding from held-out prompts: plain greedy decoding with a KV cache against Medusa with each
   tree, greedy acceptance (checked token for token against the plain output) and typical
   acceptance (Eq. 7). Wall-clock times are taken round robin, one prompt of every method in turn.

Figures: ``training_curves`` (backbone and heads), ``head_accuracy`` (top-k accuracy of each
head), ``accept_length`` (tokens per verification pass by tree, measured and predicted) and
``speedup`` (wall-clock speedup over plain greedy decoding against tree size).
Headline: tokens per second of greedy Medusa with the best tree; peer: the same of plain greedy
decoding with a KV cache (same weights, same prompts).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data.text import load_stdlib_text
from deepnotes.decoding.gpt import GPT, GPTConfig, generate, lm_loss
from deepnotes.decoding.medusa import (
    MedusaHeads,
    chain_tree,
    expected_accept_length,
    head_topk_hits,
    medusa_generate,
    medusa_loss,
    sparse_tree,
    topk_tree,
    tree_buffers,
)
from deepnotes.nn.training import fit


@dataclass
class Config(ExperimentConfig):
    n_layer: int = 4
    """Transformer blocks of the backbone."""
    n_head: int = 4
    """Attention heads per block."""
    n_embd: int = 128
    """Width of the residual stream."""
    block_size: int = 256
    """Training window and longest decodable sequence, in bytes."""
    train_bytes: int = 4_000_000
    """Bytes of training text (standard-library files in the loader's fixed order)."""
    val_bytes: int = 400_000
    """Bytes of held-out text (files whose path hash puts them in the validation split)."""
    batch_size: int = 16
    """Windows per optimiser step (backbone and heads)."""
    backbone_steps: int = 640
    """Optimiser steps of the backbone."""
    backbone_lr: float = 3e-3
    """Peak learning rate of the backbone (AdamW, linear warm-up, cosine decay)."""
    eval_every: int = 40
    """Backbone steps between two validation losses."""
    n_medusa_heads: int = 4
    """Medusa heads K (head k guesses the byte k + 1 places after the next)."""
    head_steps: int = 160
    """Optimiser steps of the Medusa heads (backbone frozen)."""
    head_lr: float = 2e-3
    """Peak learning rate of the heads."""
    max_rank: int = 8
    """Ranks r = 1..max_rank for top-k accuracy and tree construction."""
    eval_windows: int = 64
    """Held-out windows for head accuracy (and so for the sparse trees' rates)."""
    trees: tuple[str, ...] = ("chain-1", "chain-4", "topk-2x2x2x2", "sparse-8", "sparse-16",
                              "sparse-32", "sparse-64")
    """Tree shapes: chain-D, topk-AxBx.. (Cartesian product), sparse-N (N nodes, Eq. 4)."""
    n_prompts: int = 16
    """Held-out prompts decoded by every method."""
    prompt_len: int = 64
    """Bytes per prompt."""
    new_tokens: int = 128
    """Bytes generated per prompt."""
    temperature: float = 0.7
    """Typical acceptance: temperature of the backbone's distribution."""
    epsilon: float = 0.09
    """Typical acceptance: hard probability threshold (Eq. 7)."""
    delta: float = 0.3
    """Typical acceptance: entropy-scaled threshold factor (Eq. 7)."""
    threads: int = 1
    """Torch CPU threads (one: the shared 2-core machine is loaded, and decoding is sequential)."""


PRESETS = make_presets(
    smoke=Config(n_layer=1, n_head=2, n_embd=32, block_size=64, train_bytes=60_000,
                 val_bytes=20_000, batch_size=4, backbone_steps=6, eval_every=3,
                 n_medusa_heads=2, head_steps=4, max_rank=3, eval_windows=4,
                 trees=("chain-2", "topk-2x2", "sparse-4"), n_prompts=2, prompt_len=16,
                 new_tokens=16),
    quick=Config(n_layer=2, n_head=2, n_embd=64, block_size=128, train_bytes=500_000,
                 val_bytes=100_000, batch_size=8, backbone_steps=60, eval_every=15,
                 n_medusa_heads=3, head_steps=40, max_rank=4, eval_windows=16,
                 trees=("chain-3", "topk-2x2x2", "sparse-16"), n_prompts=4, prompt_len=32,
                 new_tokens=48),
    full=Config(),
)
HEADLINE = "medusa/greedy_tokens_per_s"
PEER = "plain/greedy_tokens_per_s"


def parse_tree(spec: str, rank_accuracy: torch.Tensor, n_heads: int):
    """The tree named ``spec`` (see ``Config.trees``)."""
    kind, _, arg = spec.partition("-")
    try:
        if kind == "chain":
            tree = chain_tree(int(arg))
        elif kind == "topk":
            tree = topk_tree(tuple(int(a) for a in arg.split("x")))
        elif kind == "sparse":
            tree = sparse_tree(rank_accuracy, int(arg))
        else:
            raise ValueError(kind)
    except ValueError as exc:
        raise ValueError(f"tree {spec!r}: expected chain-D, topk-AxB.. or sparse-N") from exc
    if max(len(p) for p in tree) > n_heads:
        raise ValueError(f"tree {spec!r} is deeper than the {n_heads} Medusa heads")
    return tree


def _windows(text: torch.Tensor, gen: torch.Generator, n: int, length: int) -> torch.Tensor:
    starts = torch.randint(0, len(text) - length, (n,), generator=gen)
    return torch.stack([text[s:s + length] for s in starts.tolist()])  # (n, length)


def _schedule(optimizer, steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_backbone(cfg: Config, run, train: torch.Tensor, val: torch.Tensor, gen):
    model = GPT(GPTConfig(vocab_size=256, block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd)).to(run.device)
    run.log(f"backbone: {model.num_params():,} parameters")
    val_batch = _windows(val, gen, 2 * cfg.batch_size, cfg.block_size + 1).to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.backbone_lr, betas=(0.9, 0.95),
                            weight_decay=0.1)
    val_curve: list[tuple[int, float]] = []

    def evaluate(step: int, metrics: dict) -> None:
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.backbone_steps:
            with torch.no_grad():
                val_curve.append((step + 1, lm_loss(model, val_batch).item()))

    result = fit(model, lm_loss,
                 lambda step: _windows(train, gen, cfg.batch_size,
                                       cfg.block_size + 1).to(run.device),
                 opt, cfg.backbone_steps, scheduler=_schedule(opt, cfg.backbone_steps,
                                                              max(1, cfg.backbone_steps // 20)),
                 clip_grad_norm=1.0, progress=run.track, description="backbone",
                 callback=evaluate)
    model.eval().requires_grad_(False)
    return model, result.history["loss"], val_curve


def train_heads(cfg: Config, run, model: GPT, train: torch.Tensor, gen):
    K = cfg.n_medusa_heads
    heads = MedusaHeads.for_model(model, K)

    def loss_fn(h, batch):
        with torch.no_grad():  # Medusa-1: the backbone is frozen
            _, hidden = model(batch[:, :cfg.block_size])
        loss, per_head = medusa_loss(h, hidden, batch)
        return loss, {f"head{k + 1}_ce": float(ce) for k, ce in enumerate(per_head)}

    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.head_lr, weight_decay=0.0)
    result = fit(heads, loss_fn,
                 lambda step: _windows(train, gen, cfg.batch_size,
                                       cfg.block_size + K + 1).to(run.device),
                 opt, cfg.head_steps, scheduler=_schedule(opt, cfg.head_steps,
                                                          max(1, cfg.head_steps // 20)),
                 progress=run.track, description="medusa heads")
    heads.eval().requires_grad_(False)
    return heads, result.history


@torch.no_grad()
def rank_hits(cfg: Config, model: GPT, heads: MedusaHeads, val: torch.Tensor, gen):
    """Rank-r hit rates of the backbone (row 0) and of every head (rows 1..K), shape (K+1, R)."""
    K = cfg.n_medusa_heads
    windows = _windows(val, gen, cfg.eval_windows, cfg.block_size + K + 1).to(model.wte.weight
                                                                                .device)
    logits, hidden = model(windows[:, :cfg.block_size])
    top = logits.topk(cfg.max_rank, -1).indices  # (B, T, R)
    backbone = (top == windows[:, 1:cfg.block_size + 1, None]).double().mean((0, 1))
    return torch.cat([backbone[None], head_topk_hits(heads, hidden, windows, cfg.max_rank)]).cpu()


def decode_all(cfg: Config, run, model, heads, trees: dict, prompts: list[torch.Tensor]):
    """Decode every prompt with every method, round robin; times, accepted lengths, matches."""
    methods = ["plain"] + [f"{acc}/{name}" for acc in ("greedy", "typical") for name in trees]
    buffers = {name: tree_buffers(tree) for name, tree in trees.items()}
    seconds = {m: 0.0 for m in methods}
    lengths: dict[str, list[int]] = {m: [] for m in methods[1:]}
    matches = {name: 0 for name in trees}
    outputs = []
    for prompt in run.track(prompts, "decoding"):
        reference = None
        for method in methods:
            t0 = time.perf_counter()
            if method == "plain":
                reference = generate(model, prompt, cfg.new_tokens)
                outputs.append(reference[0, prompt.shape[1]:].cpu())
            else:
                acc, name = method.split("/")
                out = medusa_generate(model, heads, prompt, cfg.new_tokens, buffers[name],
                                      acceptance=acc, temperature=cfg.temperature,
                                      epsilon=cfg.epsilon, delta=cfg.delta)
            seconds[method] += time.perf_counter() - t0
            if method != "plain":
                lengths[method] += out.accept_lengths
                if acc == "greedy":
                    matches[name] += int(torch.equal(out.tokens, reference))
    return seconds, lengths, matches, outputs


def distinct_ngram_fraction(texts: list[torch.Tensor], n: int = 8) -> float:
    """Distinct n-grams over all n-grams of ``texts`` (1: no repeats; near 0: loops)."""
    grams = [tuple(t[i:i + n].tolist()) for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


@dataclass
class Prepared:
    """Trained models, the trees built from their held-out accuracy, and the prompts."""

    model: GPT
    heads: MedusaHeads
    hits: torch.Tensor
    """Rank-r hit rates, shape (K + 1, max_rank): the backbone, then heads 1..K."""
    trees: dict
    prompts: list
    backbone_loss: list
    val_curve: list
    head_hist: dict


def prepare(cfg: Config, run) -> Prepared:
    """Train the backbone and the heads, measure the heads, build the trees, draw the prompts.

    ``run`` needs ``rng`` (numpy Generator), ``device``, ``log`` and ``track``; the benchmark
    passes a stand-in to rebuild the experiment's models from the same seed.
    """
    gen = torch.Generator().manual_seed(int(run.rng.integers(2**31)))
    train = torch.from_numpy(load_stdlib_text("train", max_bytes=cfg.train_bytes)).long()
    val = torch.from_numpy(load_stdlib_text("val", max_bytes=cfg.val_bytes)).long()
    run.log(f"text: {len(train):,} training bytes, {len(val):,} held-out bytes")
    model, backbone_loss, val_curve = train_backbone(cfg, run, train, val, gen)
    heads, head_hist = train_heads(cfg, run, model, train, gen)
    hits = rank_hits(cfg, model, heads, val, gen)  # (K+1, R)
    trees = {spec: parse_tree(spec, hits[1:], cfg.n_medusa_heads) for spec in cfg.trees}
    prompts = list(_windows(val, gen, cfg.n_prompts, cfg.prompt_len).to(run.device)[:, None])
    return Prepared(model, heads, hits, trees, prompts, backbone_loss, val_curve, head_hist)


CHECKPOINT = "medusa_models.pt"
"""File in the run directory with the trained weights, trees and prompts (not published: the
benchmark reloads it from ``runs/`` instead of training again)."""


def save_checkpoint(path, cfg: Config, prep: Prepared) -> None:
    torch.save({"config": dataclasses.asdict(cfg), "model": prep.model.state_dict(),
                "heads": prep.heads.state_dict(), "hits": prep.hits, "trees": prep.trees,
                "prompts": [p.cpu() for p in prep.prompts]}, path)


def load_checkpoint(path, cfg: Config) -> Prepared:
    """Models, trees and prompts saved by a run of ``cfg``; ``ValueError`` if the run differs."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = {k: v for k, v in state["config"].items() if k not in ("out", "device", "preset")}
    wanted = {k: v for k, v in dataclasses.asdict(cfg).items()
              if k not in ("out", "device", "preset")}
    if saved != wanted:
        raise ValueError(f"{path} was made with another config")
    model = GPT(GPTConfig(vocab_size=256, block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd))
    model.load_state_dict(state["model"])
    heads = MedusaHeads(cfg.n_embd, 256, cfg.n_medusa_heads)
    heads.load_state_dict(state["heads"])
    model.eval().requires_grad_(False)
    heads.eval().requires_grad_(False)
    return Prepared(model, heads, state["hits"], state["trees"], state["prompts"], [], [], {})


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, len(x)))
    return np.convolve(x, np.ones(k) / k, mode="valid")


def _training_figure(cfg, backbone_loss, val_curve, head_hist):
    fig, (ax1, ax2) = new_figure(1, 2, size=(7.0, 3.0), constrained_layout=True)
    bits = 1 / math.log(2)
    k = max(1, len(backbone_loss) // 25)
    steps = np.arange(1, len(backbone_loss) + 1)
    ax1.plot(steps[k - 1:], bits * _smooth(np.array(backbone_loss), k), color=PALETTE[0],
             label="train (running mean)")
    vs, vl = zip(*val_curve, strict=True)
    ax1.plot(vs, bits * np.array(vl), "o-", ms=3, color=PALETTE[3], label="held-out files")
    ax1.set(xlabel="backbone step", ylabel="bits per byte", title="Backbone (next byte)")
    ax1.legend(fontsize=9)
    k = max(1, cfg.head_steps // 20)
    for i in range(cfg.n_medusa_heads):
        ce = np.array(head_hist[f"head{i + 1}_ce"])
        ax2.plot(np.arange(k, len(ce) + 1), bits * _smooth(ce, k), color=PALETTE[i % 8],
                 label=f"head {i + 1} (byte +{i + 2})")
    ax2.set(xlabel="head step (backbone frozen)", ylabel="bits per byte",
            title="Medusa heads (Medusa-1)")
    ax2.legend(fontsize=9)
    return fig


def _tree_label(spec: str, sep: str = "\n") -> str:
    """A tree spec for figure labels: "topk-2x2x2" becomes top-k with 2 by 2 by 2 in mathtext."""
    kind, _, arg = spec.partition("-")
    if kind == "topk":
        return "top-$k$," + sep + "$" + r"{\times}".join(arg.split("x")) + "$"
    return spec  # chain-D and sparse-N read as the post names them


def _accuracy_figure(cfg, hits):
    fig, ax = new_figure(size="column_tall", constrained_layout=True)
    ranks = np.arange(1, cfg.max_rank + 1)
    cum = 100 * np.cumsum(hits.numpy(), axis=1)
    ax.plot(ranks, cum[0], "s-", color=PALETTE[7], label="backbone LM head (byte +1)")
    for i in range(1, cum.shape[0]):
        ax.plot(ranks, cum[i], "o-", color=PALETTE[(i - 1) % 7], label=f"head {i} (byte +{i + 1})")
    ax.set(xlabel="$k$", ylabel="top-$k$ accuracy on held-out files (%)", ylim=(0, 100),
           title="How often the right byte is among a head's $k$ guesses")
    ax.legend(fontsize=9)
    return fig


def _accept_figure(names, sizes, greedy, typical, predicted):
    fig, ax = new_figure(size="column_tall", constrained_layout=True)
    x = np.arange(len(names))
    ax.bar(x - 0.2, greedy, 0.4, color=PALETTE[0], label="greedy acceptance (measured)")
    ax.bar(x + 0.2, typical, 0.4, color=PALETTE[1], label="typical acceptance (measured)")
    ax.plot(x - 0.2, predicted, "kD", ms=5, label="Eq. 4 prediction (greedy)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(x, [f"{_tree_label(n)}\n({s} node{'s' * (s > 1)})"
                      for n, s in zip(names, sizes, strict=True)], fontsize=9)
    ax.set(ylabel="tokens per forward pass", title="Accepted length by tree shape",
           ylim=(0, 1.3 * max(max(greedy), max(typical), max(predicted))))
    ax.legend(fontsize=9, loc="upper left", ncol=2)
    return fig


def _speedup_figure(names, sizes, greedy, typical):
    fig, ax = new_figure(size="column_tall", constrained_layout=True)
    sparse = sorted((sizes[i], greedy[i], typical[i]) for i, n in enumerate(names)
                    if n.startswith("sparse"))
    if sparse:
        s, g, t = (np.array(v) for v in zip(*sparse, strict=True))
        ax.plot(s, g, "o-", color=PALETTE[0], label="sparse trees, greedy acceptance")
        ax.plot(s, t, "o--", color=PALETTE[1], label="sparse trees, typical acceptance")
    others = [i for i, n in enumerate(names) if not n.startswith("sparse")]
    for j, i in enumerate(others):
        ax.plot(sizes[i], greedy[i], "D", color=PALETTE[0], mfc="white", ms=6)
        ax.plot(sizes[i], typical[i], "D", color=PALETTE[1], mfc="white", ms=6)
        ax.annotate(_tree_label(names[i], " "), (sizes[i], max(greedy[i], typical[i])), fontsize=9,
                    xytext=(4, 4 + 6 * (j % 2)), textcoords="offset points")
    if others:
        ax.plot([], [], "D", color="grey", mfc="white", label="chain and top-k trees")
    ax.axhline(1.0, color="grey", lw=0.8)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.08 * (hi - lo))  # room for a tree's name above the highest point
    ax.set(xscale="log", xlabel="tree nodes (log scale)",
           ylabel="speedup over plain greedy", title="Wall-clock speedup on one CPU thread")
    ticks = sorted(set(sizes))
    # a tick closer than 25% to a power-of-two neighbour (30 beside 32) would print over it
    ticks = [t for t in ticks if t & (t - 1) == 0
             or not any(u != t and abs(math.log(u / t)) < math.log(1.25) for u in ticks)]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.legend(fontsize=9)
    return fig


def run(config: Config) -> Result:
    cfg = config
    if cfg.prompt_len + cfg.new_tokens + cfg.n_medusa_heads > cfg.block_size:
        raise ValueError("prompt_len + new_tokens + n_medusa_heads must fit in block_size")
    if not cfg.trees:
        raise ValueError("trees must name at least one tree")
    with start_run(__name__, cfg) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            prep = prepare(cfg, run)
            seconds, lengths, matches, outputs = decode_all(cfg, run, prep.model, prep.heads,
                                                            prep.trees, prep.prompts)
        finally:
            torch.set_num_threads(threads)
        save_checkpoint(run.run_dir / CHECKPOINT, cfg, prep)
        model, heads, hits, trees = prep.model, prep.heads, prep.hits, prep.trees
        backbone_loss, val_curve, head_hist = prep.backbone_loss, prep.val_curve, prep.head_hist
        rank_acc = hits[1:]

        bits = 1 / math.log(2)
        metrics = {
            "backbone/params_count": model.num_params(),
            "heads/params_count": sum(p.numel() for p in heads.parameters()),
            "backbone/final_train_bits_per_byte": bits * np.mean(backbone_loss[-10:]),
            "backbone/val_bits_per_byte": bits * val_curve[-1][1],
        }
        cum = torch.cumsum(hits, 1)
        for r in sorted({1, min(3, cfg.max_rank), cfg.max_rank}):
            metrics[f"backbone/top{r}_acc"] = cum[0, r - 1]
            for k in range(cfg.n_medusa_heads):
                metrics[f"heads/head{k + 1}_top{r}_acc"] = cum[k + 1, r - 1]
        for k in range(cfg.n_medusa_heads):
            metrics[f"heads/head{k + 1}_final_ce_bits"] = bits * np.mean(
                head_hist[f"head{k + 1}_ce"][-10:])
        n_tokens = cfg.n_prompts * cfg.new_tokens
        # How repetitive greedy continuations are, against held-out text of the same length:
        # loops (runs of spaces, repeated lines) are easy for the heads to guess.
        val_text = torch.from_numpy(load_stdlib_text("val", max_bytes=cfg.val_bytes)).long()
        held_out = list(_windows(val_text, torch.Generator().manual_seed(cfg.seed),
                                 cfg.n_prompts, cfg.new_tokens))
        metrics["plain/greedy_distinct_8gram_fraction"] = distinct_ngram_fraction(outputs)
        metrics["text/held_out_distinct_8gram_fraction"] = distinct_ngram_fraction(held_out)
        metrics["plain/greedy_space_fraction"] = float(torch.cat(outputs).eq(32).double().mean())
        metrics["text/held_out_space_fraction"] = float(torch.cat(held_out).eq(32).double()
                                                        .mean())
        run.log("greedy sample: " + repr(bytes(outputs[0].tolist()).decode("utf-8", "replace")))
        metrics["plain/greedy_tokens_per_s"] = n_tokens / seconds["plain"]
        names, sizes, g_len, t_len, pred, g_speed, t_speed = [], [], [], [], [], [], []
        for spec, tree in trees.items():
            key = spec.replace("-", "_")
            names.append(spec)
            sizes.append(len(tree))
            g, t = f"greedy/{spec}", f"typical/{spec}"
            g_len.append(float(np.mean(lengths[g])))
            t_len.append(float(np.mean(lengths[t])))
            pred.append(expected_accept_length(tree, rank_acc))
            g_speed.append(seconds["plain"] / seconds[g])
            t_speed.append(seconds["plain"] / seconds[t])
            metrics |= {
                f"tree_{key}/nodes_count": len(tree),
                f"tree_{key}/greedy_accept_length": g_len[-1],
                f"tree_{key}/typical_accept_length": t_len[-1],
                f"tree_{key}/predicted_accept_length": pred[-1],
                f"tree_{key}/greedy_speedup": g_speed[-1],
                f"tree_{key}/typical_speedup": t_speed[-1],
                f"tree_{key}/greedy_tokens_per_s": n_tokens / seconds[g],
                # time of one Medusa pass over one plain pass: speedup = accept_length / cost
                f"tree_{key}/greedy_pass_cost_ratio": (seconds[g] / len(lengths[g]))
                / (seconds["plain"] / n_tokens),
                f"tree_{key}/greedy_match_fraction": matches[spec] / cfg.n_prompts,
            }
        best = int(np.argmax(g_speed))
        metrics |= {
            "medusa/greedy_tokens_per_s": n_tokens / seconds[f"greedy/{names[best]}"],
            "medusa/best_greedy_speedup": g_speed[best],
            "medusa/best_greedy_accept_length": g_len[best],
            "medusa/best_typical_speedup": max(t_speed),
            "medusa/best_typical_accept_length": max(t_len),
            "medusa/best_tree_nodes_count": sizes[best],
            "check/greedy_match_fraction": sum(matches.values()) / (len(trees) * cfg.n_prompts),
        }
        run.log_metrics(metrics)
        run.log(f"plain greedy: {metrics['plain/greedy_tokens_per_s']:.0f} tokens/s; best tree "
                f"{names[best]}: accepted {g_len[best]:.2f}, speedup {g_speed[best]:.2f}; "
                f"greedy outputs identical: {metrics['check/greedy_match_fraction']:.0%}")
        for i, spec in enumerate(names):
            run.log(f"  {spec:>14} ({sizes[i]:2d} nodes): greedy {g_len[i]:.2f} tok/pass "
                    f"(Eq. 4: {pred[i]:.2f}) x{g_speed[i]:.2f}; typical {t_len[i]:.2f} "
                    f"x{t_speed[i]:.2f}")
        run.save_figure(_training_figure(cfg, backbone_loss, val_curve, head_hist),
                        "training_curves")
        run.save_figure(_accuracy_figure(cfg, hits), "head_accuracy")
        run.save_figure(_accept_figure(names, sizes, g_len, t_len, pred), "accept_length")
        run.save_figure(_speedup_figure(names, sizes, g_speed, t_speed), "speedup")
    return run.result
