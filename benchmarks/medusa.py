"""Medusa decoding against plain greedy decoding (ours, KV cache) and transformers' ``generate``.

The backbone, heads, trees and prompts are those of the newest completed
``deepnotes run medusa --preset full`` in ``runs/`` (its ``medusa_models.pt``); without one they
are trained anew with the experiment's recipe and seed (``deepnotes.experiments.medusa.prepare``;
``--quick``: the ``smoke`` preset). The record names the source (``models_from``). transformers'
``GPT2LMHeadModel`` is loaded with the same weights (``deepnotes.decoding.hf``) and decodes
greedily with its own KV cache (``generate(do_sample=False)``).

Every contender decodes the same held-out prompts, round robin (one prompt of each contender in
turn, repeated ``ROUNDS`` times), on one torch thread, batch size 1, float32. Recorded per
contender: total seconds, tokens per second, mean accepted length (tokens per forward pass), and
speedups over ours-plain and over transformers. Greedy outputs are compared token for token.
The load average before and after is recorded: on a shared machine only the ratios between
contenders measured in the same run mean anything.

    python benchmarks/medusa.py [--quick]
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import torch

from deepnotes.core.bench import bench_main
from deepnotes.core.device import resolve_device
from deepnotes.core.paths import runs_dir
from deepnotes.core.results import list_runs
from deepnotes.core.seeding import seed_everything
from deepnotes.decoding.gpt import generate
from deepnotes.decoding.hf import to_transformers
from deepnotes.decoding.medusa import medusa_generate, tree_buffers
from deepnotes.experiments import medusa as experiment

THREADS = 1
ROUNDS = 1


def _models(quick: bool):
    """Models, trees and prompts of the newest completed run of the preset, or trained anew."""
    cfg = experiment.PRESETS["smoke" if quick else "full"]
    for run_dir, meta in list_runs("medusa", [runs_dir()]):
        path = run_dir / experiment.CHECKPOINT
        if meta.get("preset") == cfg.preset and path.is_file():
            try:
                return cfg, experiment.load_checkpoint(path, cfg), str(run_dir.name)
            except ValueError:  # made with another config
                continue
    run = SimpleNamespace(rng=seed_everything(cfg.seed), device=resolve_device("cpu"),
                          log=lambda msg: None, track=lambda it, *a, **k: it)
    return cfg, experiment.prepare(cfg, run), "trained by this benchmark"


def run(quick: bool = False) -> dict:
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    cfg, prep, source = _models(quick)
    prepare_s = time.perf_counter() - t0
    model, heads = prep.model, prep.heads
    hf = to_transformers(model)
    n_new = cfg.new_tokens

    def plain(prompt):
        return generate(model, prompt, n_new), None

    def transformers_generate(prompt):
        out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new,
                          min_new_tokens=n_new, do_sample=False, use_cache=True)
        return out, None

    def medusa(buf, acceptance):
        def decode(prompt):
            out = medusa_generate(model, heads, prompt, n_new, buf, acceptance=acceptance,
                                  temperature=cfg.temperature, epsilon=cfg.epsilon,
                                  delta=cfg.delta)
            return out.tokens, out.accept_lengths
        return decode

    contenders = {"ours_plain": plain, "transformers_generate": transformers_generate}
    nodes = {"ours_plain": 0, "transformers_generate": 0}
    for spec, tree in prep.trees.items():
        name = "medusa_greedy_" + spec.replace("-", "_")
        contenders[name], nodes[name] = medusa(tree_buffers(tree), "greedy"), len(tree)
    largest = max(prep.trees, key=lambda s: len(prep.trees[s]))
    name = "medusa_typical_" + largest.replace("-", "_")
    contenders[name] = medusa(tree_buffers(prep.trees[largest]), "typical")
    nodes[name] = len(prep.trees[largest])
    for fn in contenders.values():  # warm-up: first calls allocate and dispatch
        fn(prep.prompts[0][:, :8])
    seconds = {name: 0.0 for name in contenders}
    lengths: dict[str, list[int]] = {name: [] for name in contenders}
    same_as_plain = {name: 0 for name in contenders}
    for _ in range(ROUNDS):
        for prompt in prep.prompts:
            reference = None
            for name, fn in contenders.items():
                start = time.perf_counter()
                tokens, accepted = fn(prompt)
                seconds[name] += time.perf_counter() - start
                if name == "ours_plain":
                    reference = tokens
                same_as_plain[name] += int(torch.equal(tokens, reference))
                if accepted is not None:
                    lengths[name] += accepted
    n_runs = ROUNDS * len(prep.prompts)
    n_tokens = n_runs * n_new
    rows = {}
    for name in contenders:
        rows[name] = {
            "seconds": seconds[name],
            "tokens_per_s": n_tokens / seconds[name],
            "accept_length": float(np.mean(lengths[name])) if lengths[name] else 1.0,
            "speedup_over_ours_plain": seconds["ours_plain"] / seconds[name],
            "speedup_over_transformers": seconds["transformers_generate"] / seconds[name],
            "identical_to_plain_greedy": same_as_plain[name] / n_runs,
            "tree_nodes": nodes[name],
        }
    greedy = [n for n in contenders if n.startswith("medusa_greedy_")]
    best = max(greedy, key=lambda n: rows[n]["speedup_over_ours_plain"])
    return {
        "preset": cfg.preset, "threads": THREADS, "rounds": ROUNDS,
        "prompts": len(prep.prompts), "new_tokens": n_new, "dtype": "float32",
        "backbone_params": model.num_params(), "medusa_heads": heads.n_heads,
        "models_from": source, "prepare_s": prepare_s,
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
        "rows": rows,
        "best_greedy": best,
        "best_greedy_speedup_over_ours_plain": rows[best]["speedup_over_ours_plain"],
        "best_greedy_speedup_over_transformers": rows[best]["speedup_over_transformers"],
        "best_greedy_accept_length": rows[best]["accept_length"],
        "ours_plain_speedup_over_transformers":
            rows["ours_plain"]["speedup_over_transformers"],
        "all_greedy_identical": all(rows[n]["identical_to_plain_greedy"] == 1.0
                                    for n in [*greedy, "transformers_generate"]),
    }


if __name__ == "__main__":
    bench_main(__file__, run)
