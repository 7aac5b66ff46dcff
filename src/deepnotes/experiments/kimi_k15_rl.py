"""Kimi k1.5-style RL on verifiable arithmetic: accuracy against response length.

1. SFT: a small GPT (:mod:`deepnotes.decoding.gpt`) learns to answer sums of two-digit numbers with
   a chain of thought, half of the examples in the concise style and half in the long, redundant
   one (:func:`deepnotes.rl.llm.solution`), with ``deepnotes.nn.training.fit``.
2. RL from the same SFT checkpoint with the same budget (the same prompts, k samples each, the same
   gradient steps per iteration), three ways: k1.5's mirror-descent loss with the length penalty
   (after a warm-up), the same without the length penalty, and plain REINFORCE with the per-prompt
   mean-reward baseline (tau = 0, no length penalty; the peer). Each iteration samples k responses
   per prompt from the current policy, which becomes the reference pi_ref, then takes
   ``updates_per_iter`` gradient steps on that batch with ``fit``.
3. Long to short: from the long model (k1.5 without length penalty), sample k responses on
   training prompts, keep the shortest correct one per prompt (shortest rejection sampling) and
   fine-tune the long model on them; and merge the long model with the short one (k1.5 with the
   length penalty) by averaging their weights.

Every model is evaluated on the same held-out problems by greedy decoding (accuracy, mean response
length in tokens, generated tokens per correct answer) and by one sample at temperature 1.

Figures: ``sft_loss``, ``rl_curves`` (held-out accuracy and mean length against RL iteration for
the three methods), ``tradeoff`` (accuracy against mean length, every model) and ``cot_samples``
(the first held-out problems answered by every model, as text).
Headline: held-out accuracy of k1.5 with the length penalty; peer: the same of REINFORCE.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.decoding.gpt import GPT, GPTConfig
from deepnotes.nn.training import fit
from deepnotes.rl import llm as L

METHODS = {
    "k15_lp": "k1.5 + length penalty",
    "k15": "k1.5, no length penalty",
    "reinforce": "REINFORCE (mean baseline)",
}
"""RL runs: metric prefix -> legend label."""
EXTRA = {"sft": "SFT (start of RL)", "long2short": "shortest-rejection SFT",
         "merged": "merged k1.5 models"}


@dataclass
class Config(ExperimentConfig):
    n_layer: int = 2
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block."""
    n_embd: int = 64
    """Width of the residual stream."""
    max_terms: int = 2
    """Most operands in a sum (at least 2; operands are 1..99)."""
    n_train: int = 4_000
    """Training problems (SFT and RL prompts)."""
    n_heldout: int = 512
    """Held-out problems, disjoint from the training ones, for every evaluation."""
    n_shown: int = 2
    """Held-out problems (the first ones) whose answers the ``cot_samples`` figure shows."""
    long_fraction: float = 0.5
    """Share of SFT examples written in the long, redundant CoT style."""
    sft_steps: int = 800
    """Optimiser steps of supervised fine-tuning."""
    sft_batch: int = 64
    """Examples per SFT step."""
    sft_lr: float = 3e-3
    """Peak SFT learning rate (AdamW, linear warm-up and decay)."""
    rl_iters: int = 50
    """RL iterations (sample, then update) per method."""
    prompts_per_iter: int = 16
    """Training prompts per RL iteration."""
    k: int = 8
    """Responses sampled per prompt (the group of the mean-reward baseline)."""
    updates_per_iter: int = 4
    """Gradient steps on each iteration's samples (pi_ref stays the iteration's start)."""
    rl_lr: float = 2e-4
    """Adam learning rate of RL."""
    tau: float = 0.5
    """k1.5's KL weight τ (REINFORCE uses 0)."""
    temperature: float = 1.0
    """Sampling temperature of RL rollouts."""
    lp_weight: float = 1.0
    """Weight of the length reward added to the 0/1 reward (k1.5 + length penalty only)."""
    lp_warmup: int = 10
    """RL iterations without the length penalty before it switches on (the paper's warm-up)."""
    eval_every: int = 5
    """RL iterations between two held-out evaluations."""
    l2s_prompts: int = 256
    """Training prompts sampled for shortest rejection sampling."""
    l2s_k: int = 8
    """Samples per prompt for shortest rejection sampling."""
    l2s_steps: int = 60
    """Fine-tuning steps on the shortest correct samples."""
    l2s_lr: float = 3e-4
    """Learning rate of that fine-tuning."""
    merge_alpha: float = 0.5
    """Weight of the long model (k1.5) in the merge; the rest goes to the short one (k1.5 + length
    penalty)."""
    threads: int = 1
    """Torch CPU threads (one: the models are tiny, and on the shared 2-core machine a second
    thread mostly waits)."""

    @property
    def prompt_len(self) -> int:
        return 3 * self.max_terms  # "99+99+99=": two digits and a sign per term

    @property
    def response_len(self) -> int:
        # long style: at most 21 characters per addition ("297+99=380+16=396:396"), commas, "#396."
        return 22 * (self.max_terms - 1) + 5


PRESETS = make_presets(
    smoke=Config(n_layer=1, n_head=2, n_embd=32, max_terms=2, n_train=400, n_heldout=16,
                 sft_steps=6, sft_batch=16, rl_iters=2, prompts_per_iter=4, k=3,
                 updates_per_iter=2, lp_warmup=1, eval_every=1, l2s_prompts=8, l2s_k=3,
                 l2s_steps=2),
    quick=Config(n_embd=32, n_train=2_000, n_heldout=64, sft_steps=100, sft_batch=32,
                 rl_iters=4, prompts_per_iter=8, k=4, updates_per_iter=2, lp_warmup=2,
                 eval_every=2, l2s_prompts=32, l2s_k=4, l2s_steps=10),
    full=Config(),
)
HEADLINE = "k15_lp/heldout_acc"
PEER = "reinforce/heldout_acc"


def _model(cfg: Config, tok: L.CharTokenizer, device) -> GPT:
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.prompt_len + cfg.response_len,
                         n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)).to(device)


def _decay(optimizer, steps: int):
    warm = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / steps))


@torch.no_grad()
def evaluate(model: GPT, tok: L.CharTokenizer, problems, cfg: Config, temperature: float = 0.0,
             generator: torch.Generator | None = None) -> dict[str, float]:
    """Accuracy, mean response length (tokens) and tokens per correct answer on ``problems``."""
    device = model.wte.weight.device
    ro = L.sample_responses(model, tok.prompts(problems, cfg.prompt_len).to(device), 1,
                            cfg.response_len, tok.eos_id, temperature=temperature,
                            pad_id=tok.pad_id, generator=generator)
    texts = ro.texts(tok)
    correct = np.array([L.verify(t, p.answer) for t, p in zip(texts, problems, strict=True)])
    lengths = ro.lengths.numpy().astype(float)
    return {"acc": float(correct.mean()), "len": float(lengths.mean()),
            "tokens_per_correct": float(lengths.sum() / max(correct.sum(), 1)),
            "long_style": float(np.mean([":" in t for t in texts])), "texts": texts}


def sft(cfg: Config, run, tok, train, rng: np.random.Generator) -> tuple[GPT, list[float]]:
    model = _model(cfg, tok, run.device)
    run.log(f"policy: {model.num_params():,} parameters")

    def batches(step: int):
        idx = rng.integers(0, len(train), cfg.sft_batch)
        probs = [train[i] for i in idx]
        styles = np.where(rng.random(cfg.sft_batch) < cfg.long_fraction, "long", "short")
        tokens, mask = tok.sft_batch(probs, [L.solution(p, s) for p, s in zip(probs, styles,
                                                                            strict=True)],
                                     cfg.prompt_len, cfg.response_len)
        return tokens.to(run.device), mask.to(run.device)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    result = fit(model, L.sft_loss, batches, opt, cfg.sft_steps,
                 scheduler=_decay(opt, cfg.sft_steps), clip_grad_norm=1.0, progress=run.track,
                 description="SFT")
    model.eval()
    return model, result.history["loss"]


def rl(cfg: Config, run, tok, sft_model: GPT, train, heldout, method: str):
    """One RL run from the SFT weights; returns the policy and its per-iteration curves."""
    policy = copy.deepcopy(sft_model)
    tau = 0.0 if method == "reinforce" else cfg.tau
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.rl_lr)
    # the same prompt sequence for every method; sampling noise of its own
    prompt_rng = np.random.default_rng(cfg.seed + 1)
    gen = torch.Generator(device=run.device).manual_seed(cfg.seed + 2)
    curve = {"iter": [], "acc": [], "len": [], "train_reward": [], "train_acc": [],
             "train_len": [], "log_ratio_sq": []}

    def record_eval(it: int) -> None:
        ev = evaluate(policy, tok, heldout, cfg)
        curve["iter"].append(it)
        curve["acc"].append(ev["acc"])
        curve["len"].append(ev["len"])

    record_eval(0)
    for it in run.track(range(cfg.rl_iters), f"RL {method}"):
        probs = [train[i] for i in prompt_rng.choice(len(train), cfg.prompts_per_iter,
                                                     replace=False)]
        prompts = tok.prompts(probs, cfg.prompt_len).to(run.device)
        ro = L.sample_responses(policy, prompts, cfg.k, cfg.response_len, tok.eos_id,
                                temperature=cfg.temperature, pad_id=tok.pad_id, generator=gen)
        texts = ro.texts(tok)
        answers = [p.answer for p in probs for _ in range(cfg.k)]
        correct = torch.tensor([L.verify(t, a) for t, a in zip(texts, answers, strict=True)],
                               dtype=torch.float64).view(-1, cfg.k)  # (G, k)
        lengths = ro.lengths.double().view(-1, cfg.k)
        rewards = correct.clone()
        if method == "k15_lp" and it >= cfg.lp_warmup:
            rewards += cfg.lp_weight * L.length_reward(lengths, correct)
        with torch.no_grad():
            logp_ref = L.response_logprobs(policy, ro.tokens, ro.mask, ro.prompt_len)
        batch = {"tokens": ro.tokens, "mask": ro.mask, "prompt_len": ro.prompt_len,
                 "logp_ref": logp_ref, "rewards": rewards.float().to(run.device)}
        res = fit(policy, lambda m, b: L.policy_loss(m, b, tau), lambda step, b=batch: b, opt,
                  cfg.updates_per_iter, clip_grad_norm=1.0)
        policy.eval()
        curve["train_reward"].append(float(rewards.mean()))
        curve["train_acc"].append(float(correct.mean()))
        curve["train_len"].append(float(lengths.mean()))
        curve["log_ratio_sq"].append(float(np.mean(res.history["log_ratio_sq"])))
        if (it + 1) % cfg.eval_every == 0 or it + 1 == cfg.rl_iters:
            record_eval(it + 1)
    return policy, curve


def long_to_short(cfg: Config, run, tok, long_model: GPT, short_model: GPT, train,
                  rng: np.random.Generator):
    """Shortest rejection sampling from ``long_model`` and SFT on it; the weight average of
    ``long_model`` and ``short_model`` (Eq. 7)."""
    gen = torch.Generator(device=run.device).manual_seed(cfg.seed + 3)
    probs = [train[i] for i in rng.choice(len(train), cfg.l2s_prompts, replace=False)]
    prompts = tok.prompts(probs, cfg.prompt_len).to(run.device)
    ro = L.sample_responses(long_model, prompts, cfg.l2s_k, cfg.response_len, tok.eos_id,
                            temperature=cfg.temperature, pad_id=tok.pad_id, generator=gen)
    texts = ro.texts(tok)
    answers = [p.answer for p in probs for _ in range(cfg.l2s_k)]
    correct = torch.tensor([L.verify(t, a) for t, a in zip(texts, answers, strict=True)]
                           ).view(-1, cfg.l2s_k)
    pick = L.shortest_correct(ro.lengths.view(-1, cfg.l2s_k), correct)
    kept = [(probs[g], texts[g * cfg.l2s_k + j]) for g, j in enumerate(pick.tolist()) if j >= 0]
    merged = copy.deepcopy(long_model)
    merged.load_state_dict(L.average_weights(long_model.state_dict(), short_model.state_dict(),
                                             cfg.merge_alpha))
    merged.eval()
    stats = {"kept": len(kept), "kept_len": float(np.mean([len(t) for _, t in kept] or [0])),
             "sampled_len": float(ro.lengths.double().mean())}
    short = copy.deepcopy(long_model)
    if not kept:  # nothing correct to learn from (only in a tiny smoke run): short = long
        run.log("long2short: no correct sample, the short model is the long one")
        return short, merged, stats
    data_rng = np.random.default_rng(cfg.seed + 4)

    def batches(step: int):
        idx = data_rng.integers(0, len(kept), min(cfg.sft_batch, len(kept)))
        tokens, mask = tok.sft_batch([kept[i][0] for i in idx], [kept[i][1] for i in idx],
                                     cfg.prompt_len, cfg.response_len)
        return tokens.to(run.device), mask.to(run.device)

    opt = torch.optim.AdamW(short.parameters(), lr=cfg.l2s_lr, weight_decay=0.0)
    fit(short, L.sft_loss, batches, opt, cfg.l2s_steps, clip_grad_norm=1.0, progress=run.track,
        description="long2short SFT")
    short.eval()
    return short, merged, stats


# --- figures -----------------------------------------------------------------------------------
COLORS = {"k15_lp": PALETTE[0], "k15": PALETTE[1], "reinforce": PALETTE[3], "sft": PALETTE[7],
          "long2short": PALETTE[2], "merged": PALETTE[4]}


def _sft_figure(losses):
    fig, ax = new_figure(size="column", layout="constrained")
    x = np.arange(1, len(losses) + 1)
    k = max(1, len(losses) // 30)
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    ax.plot(x, losses, color=PALETTE[7], lw=0.6, alpha=0.5, label="per step")
    ax.plot(x[k - 1:], smooth, color=PALETTE[0], label=f"running mean of {k}")
    ax.set(xlabel="SFT step", ylabel="nats per response token", yscale="log",
           title="Supervised fine-tuning on both CoT styles")
    ax.legend(fontsize=9)
    return fig


def _curves_figure(curves, warmup: int):
    fig, (ax1, ax2) = new_figure(1, 2, size=(7.0, 3.5), layout="constrained")
    for m, label in METHODS.items():
        c = curves[m]
        ax1.plot(c["iter"], 100 * np.array(c["acc"]), "o-", ms=3, color=COLORS[m], label=label)
        ax2.plot(c["iter"], c["len"], "o-", ms=3, color=COLORS[m], label=label)
    ax1.set(xlabel="RL iteration", ylabel="held-out accuracy (%)", title="Accuracy (greedy)")
    ax2.set(xlabel="RL iteration", ylabel="mean response length (tokens)",
            title="Response length (greedy)")
    for ax in (ax1, ax2):
        ax.axvline(warmup, color="grey", lw=0.8, ls=":")
    lo, hi = ax2.get_ylim()
    ax2.text(warmup + 0.6, (lo + hi) / 2, "length penalty on", rotation=90, fontsize=9,
             color="grey", va="center")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9)
    return fig


def _tradeoff_figure(table):
    fig, ax = new_figure(size="column_tall", layout="constrained")
    for name, row in table.items():
        label = METHODS.get(name) or EXTRA[name]
        ax.scatter(row["len"], 100 * row["acc"], s=50, color=COLORS[name], label=label,
                   zorder=3)
    ax.set(xlabel="mean response length (tokens)", ylabel="held-out accuracy (%)",
           title="Accuracy against length (greedy decoding)")
    # outside the axes: a model may land anywhere in the plane, and the legend must hide none
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9)
    return fig


def _samples_figure(problems, answers: dict[str, list[str]]):
    rows = len(problems) * (len(answers) + 1)
    fig, ax = new_figure(size=(7.0, 0.24 * rows + 0.3), layout="constrained")
    ax.axis("off")
    line = 0
    for i, problem in enumerate(problems):
        ax.text(0.0, 1.0 - line / rows, f"held-out prompt  {problem.prompt}   "
                f"(answer {problem.answer})", family="monospace", fontsize=9, va="top",
                weight="bold", transform=ax.transAxes)
        line += 1
        for name, texts in answers.items():
            label = METHODS.get(name) or EXTRA[name]
            ok = "correct" if L.verify(texts[i], problem.answer) else "wrong"
            y = 1.0 - line / rows
            ax.text(0.02, y, label, family="monospace", fontsize=9, va="top",
                    color=COLORS[name], transform=ax.transAxes)
            ax.text(0.42, y, f"{texts[i]}  [{len(texts[i])} tok, {ok}]", family="monospace",
                    fontsize=9, va="top", transform=ax.transAxes)
            line += 1
    return fig


def run(config: Config) -> Result:
    cfg = config
    if cfg.max_terms < 2:
        raise ValueError(f"max_terms must be >= 2, got {cfg.max_terms}")
    if cfg.k < 2 or cfg.l2s_k < 1:
        raise ValueError(f"k must be >= 2 for the mean-reward baseline, got {cfg.k}")
    with start_run(__name__, cfg) as run:
        t_start = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            tok = L.CharTokenizer()
            train, heldout = L.arithmetic_splits(cfg.n_train, cfg.n_heldout, cfg.seed,
                                                 max_terms=cfg.max_terms)
            run.log(f"task: {len(train)} training and {len(heldout)} held-out problems; e.g. "
                    f"{heldout[0].prompt} -> {L.solution(heldout[0], 'long')}")
            t0 = time.perf_counter()
            sft_model, sft_losses = sft(cfg, run, tok, train, run.rng)
            times = {"sft": time.perf_counter() - t0}
            models = {"sft": sft_model}
            curves = {}
            for m in METHODS:
                t0 = time.perf_counter()
                models[m], curves[m] = rl(cfg, run, tok, sft_model, train, heldout, m)
                times[m] = time.perf_counter() - t0
                run.log(f"{m}: held-out acc {curves[m]['acc'][0]:.3f} -> "
                        f"{curves[m]['acc'][-1]:.3f}, length {curves[m]['len'][0]:.1f} -> "
                        f"{curves[m]['len'][-1]:.1f}")
            t0 = time.perf_counter()
            models["long2short"], models["merged"], l2s = long_to_short(
                cfg, run, tok, models["k15"], models["k15_lp"], train, run.rng)
            times["long2short"] = time.perf_counter() - t0
            table, greedy_texts = {}, {}
            gen = torch.Generator(device=run.device).manual_seed(cfg.seed + 5)
            for name, model in models.items():
                ev = evaluate(model, tok, heldout, cfg)
                sampled = evaluate(model, tok, heldout, cfg, temperature=1.0, generator=gen)
                table[name] = ev | {"sampled_acc": sampled["acc"], "sampled_len": sampled["len"]}
                greedy_texts[name] = ev["texts"]
        finally:
            torch.set_num_threads(threads)

        metrics = {"policy/params_count": sft_model.num_params(),
                   "sft/final_loss_nats": float(np.mean(sft_losses[-20:])),
                   "long2short/kept_count": l2s["kept"],
                   "long2short/kept_len_tokens": l2s["kept_len"],
                   "long2short/sampled_len_tokens": l2s["sampled_len"]}
        for name, row in table.items():
            metrics |= {f"{name}/heldout_acc": row["acc"],
                        f"{name}/mean_len_tokens": row["len"],
                        f"{name}/tokens_per_correct": row["tokens_per_correct"],
                        f"{name}/long_style_frac": row["long_style"],
                        f"{name}/sampled_acc": row["sampled_acc"],
                        f"{name}/sampled_len_tokens": row["sampled_len"]}
        for m in METHODS:
            metrics[f"{m}/final_train_reward"] = float(np.mean(curves[m]["train_reward"][-5:]))
            metrics[f"{m}/mean_log_ratio_sq"] = float(np.mean(curves[m]["log_ratio_sq"]))
            metrics[f"{m}/curve_min_acc"] = min(curves[m]["acc"])
            metrics[f"{m}/curve_max_acc"] = max(curves[m]["acc"])
        for name, seconds in times.items():
            metrics[f"time/{name}_s"] = seconds
        metrics["time/total_s"] = time.perf_counter() - t_start
        run.log_metrics(metrics)
        for name, row in table.items():
            run.log(f"{name:>11}: acc {row['acc']:.3f} (sampled {row['sampled_acc']:.3f}), "
                    f"length {row['len']:.1f}, tokens/correct {row['tokens_per_correct']:.1f}, "
                    f"long style {row['long_style']:.2f}")
        shown = heldout[:cfg.n_shown]
        samples = {n: greedy_texts[n][:cfg.n_shown] for n in table}
        for n, texts in samples.items():
            for p, text in zip(shown, texts, strict=True):
                run.log(f"sample {n}: {p.prompt} {text}")
        run.save_figure(_sft_figure(np.array(sft_losses)), "sft_loss")
        run.save_figure(_curves_figure(curves, cfg.lp_warmup), "rl_curves")
        run.save_figure(_tradeoff_figure(table), "tradeoff")
        run.save_figure(_samples_figure(shown, samples), "cot_samples")
    return run.result
