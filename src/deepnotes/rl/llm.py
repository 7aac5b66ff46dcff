"""Kimi k1.5-style reinforcement learning for a small language model on verifiable arithmetic.

Kimi Team (2025), "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv 2501.12599,
section 2.3 (the post ``kimi-k15-rl`` numbers the equations):

- a task whose answers a program can check: sums of two-digit numbers with a chain of thought
  (CoT) written in one of two styles, a concise one and a long, redundant one
  (:func:`arithmetic_splits`, :func:`solution`), a character tokenizer (:class:`CharTokenizer`)
  and an exact verifier giving the 0/1 reward (:func:`verify`);
- batched sampling of k responses per prompt with a key/value cache (:func:`sample_responses`)
  from :class:`deepnotes.decoding.gpt.GPT`, and the log-probability of a response under a policy
  (:func:`response_logprobs`);
- the k1.5 policy update: the surrogate of KL-regularised policy mirror descent against the
  reference policy (the policy at the start of the iteration), with the per-prompt mean reward of
  the k samples standing in for tau log Z (post, Eq. 4) and its gradient (Eq. 5):
  :func:`k15_loss`, :func:`k15_squared_loss`; plain REINFORCE with the same baseline is
  ``tau = 0`` (:func:`reinforce_loss`);
- the length penalty (Eq. 6, :func:`length_reward`);
- long-to-short: the shortest correct response per prompt (:func:`shortest_correct`, for
  shortest rejection sampling) and model merging by weight averaging (:func:`average_weights`).

The module is pure: no file I/O, printing or plotting.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepnotes.decoding.gpt import GPT

STYLES = ("short", "long")
"""CoT styles: ``short`` writes each partial sum at once; ``long`` splits every addition into
tens and units, then restates the running total (redundant text that RL can learn to cut)."""

ANSWER_MARK = "#"
"""Separates the chain of thought from the final answer."""
EOS = "."
"""Ends a response."""
ALPHABET = " 0123456789+=,:#."
"""Every character the task writes; the space pads prompts on the left (and batches on the
right, where the loss mask ignores it)."""


# --- the task ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One sum ``a + b + ...``: its operands and its answer."""

    operands: tuple[int, ...]

    @property
    def prompt(self) -> str:
        """The question as written, e.g. ``"12+34+5="`` (not padded)."""
        return "+".join(map(str, self.operands)) + "="

    @property
    def answer(self) -> int:
        return sum(self.operands)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def is_heldout(problem: Problem, heldout_fraction: float) -> bool:
    """Whether ``problem`` belongs to the held-out split.

    Decided by a hash of its prompt, not by the seed, so a problem is held out in every run and the
    two splits can never share a problem.
    """
    return zlib.crc32(problem.prompt.encode()) % 10_000 < heldout_fraction * 10_000


def arithmetic_splits(n_train: int, n_heldout: int, seed: int, *, min_terms: int = 2,
                      max_terms: int = 4, max_operand: int = 99, heldout_fraction: float = 0.2,
                      ) -> tuple[list[Problem], list[Problem]]:
    """Distinct training and held-out problems, drawn from ``seed``.

    Each problem sums ``n`` operands, ``n`` uniform in ``[min_terms, max_terms]``, each operand
    uniform in ``[1, max_operand]``. A problem goes to the held-out split when
    :func:`is_heldout`; duplicates are dropped, so the two lists are disjoint and free of repeats.

    Returns
    -------
    train, heldout : list of Problem, lengths ``n_train`` and ``n_heldout``
    """
    n_train = _check_int("n_train", n_train, 0)
    n_heldout = _check_int("n_heldout", n_heldout, 0)
    min_terms = _check_int("min_terms", min_terms, 2)
    max_terms = _check_int("max_terms", max_terms, min_terms)
    max_operand = _check_int("max_operand", max_operand, 2)
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    space = sum(max_operand ** n for n in range(min_terms, max_terms + 1))
    if n_train + n_heldout > space // 2:
        raise ValueError(f"n_train + n_heldout = {n_train + n_heldout} is too many for the "
                         f"{space} possible problems")
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    train: list[Problem] = []
    heldout: list[Problem] = []
    while len(train) < n_train or len(heldout) < n_heldout:
        n = int(rng.integers(min_terms, max_terms + 1))
        ops = tuple(int(v) for v in rng.integers(1, max_operand + 1, size=n))
        if ops in seen:
            continue
        seen.add(ops)
        p = Problem(ops)
        target = heldout if is_heldout(p, heldout_fraction) else train
        if len(target) < (n_heldout if target is heldout else n_train):
            target.append(p)
    return train, heldout


def _add_step(a: int, b: int, style: str) -> str:
    s = a + b
    if style == "short":
        return f"{a}+{b}={s}"
    # long: tens and units separately, then the total restated: 47+38=70+15=85:85
    tens = a // 10 * 10 + b // 10 * 10
    units = a % 10 + b % 10
    return f"{a}+{b}={tens}+{units}={s}:{s}"


def solution(problem: Problem, style: str) -> str:
    """The chain of thought and answer for ``problem`` in ``style``, ending with :data:`EOS`.

    ``short``: ``12+34=46,46+5=51#51.``; ``long``: ``12+34=40+6=46:46,46+5=50+1=51:51#51.``.
    The running total is added left to right.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    steps, total = [], problem.operands[0]
    for b in problem.operands[1:]:
        steps.append(_add_step(total, b, style))
        total += b
    return ",".join(steps) + f"{ANSWER_MARK}{total}{EOS}"


_ANSWER = re.compile(r"[0-9+=,:]*#(0|[1-9][0-9]*)\.")


def verify(response: str, answer: int) -> float:
    """The 0/1 reward r(x, y, y*) of a response (post, Eq. 1): 1.0 iff it is well formed and its
    final answer is ``answer``.

    Well formed: CoT characters only, exactly one :data:`ANSWER_MARK`, then the answer in
    canonical decimal (no sign, no leading zero) and :data:`EOS` as the last character. Anything
    else (no marker, two markers, a truncated response without EOS, "051") scores 0. The CoT
    itself is not checked: as in k1.5, only the final answer is rewarded.
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    m = _ANSWER.fullmatch(response)
    return float(m is not None and int(m.group(1)) == answer)


class CharTokenizer:
    """Character-level tokenizer over :data:`ALPHABET` (id = index in the alphabet)."""

    def __init__(self, alphabet: str = ALPHABET):
        if len(set(alphabet)) != len(alphabet) or EOS not in alphabet or " " not in alphabet:
            raise ValueError("alphabet must have distinct characters, including ' ' and EOS")
        self.alphabet = alphabet
        self._ids = {c: i for i, c in enumerate(alphabet)}
        self.pad_id = self._ids[" "]
        self.eos_id = self._ids[EOS]

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as exc:
            raise ValueError(f"text has a character outside the alphabet: {exc.args[0]!r}") \
                from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)

    def prompts(self, problems: Sequence[Problem], prompt_len: int) -> torch.Tensor:
        """Prompts left-padded with spaces to ``prompt_len``, LongTensor (B, prompt_len).

        Equal lengths let a whole batch decode in lock step against one key/value cache.
        """
        out = []
        for p in problems:
            if len(p.prompt) > prompt_len:
                raise ValueError(f"prompt {p.prompt!r} is longer than prompt_len={prompt_len}")
            out.append(self.encode(p.prompt.rjust(prompt_len)))
        return torch.tensor(out, dtype=torch.long)

    def sft_batch(self, problems: Sequence[Problem], responses: Sequence[str], prompt_len: int,
                  response_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt + response token ids and the mask of the targets to train on.

        Returns
        -------
        tokens : LongTensor, shape (B, prompt_len + response_len)
            Responses right-padded with spaces.
        mask : BoolTensor, shape (B, prompt_len + response_len - 1)
            True where the next-token target ``tokens[:, t + 1]`` is a response token (EOS
            included); prompt and padding targets are ignored.
        """
        if len(problems) != len(responses):
            raise ValueError("problems and responses must have the same length")
        prompts = self.prompts(problems, prompt_len)
        rows, masks = [], []
        for r in responses:
            ids = self.encode(r)
            if len(ids) > response_len:
                raise ValueError(f"response {r!r} is longer than response_len={response_len}")
            rows.append(ids + [self.pad_id] * (response_len - len(ids)))
            masks.append([True] * len(ids) + [False] * (response_len - len(ids)))
        tokens = torch.cat([prompts, torch.tensor(rows, dtype=torch.long)], dim=1)
        mask = torch.zeros(len(rows), prompt_len + response_len - 1, dtype=torch.bool)
        mask[:, prompt_len - 1:] = torch.tensor(masks, dtype=torch.bool)
        return tokens, mask


def sft_loss(model: GPT, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy (nats per response token) of ``(tokens, mask)`` from
    :meth:`CharTokenizer.sft_batch`: supervised fine-tuning on the chain of thought."""
    tokens, mask = batch
    logits, _ = model(tokens[:, :-1])  # (B, L-1, V)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:],
                                            reduction="none")  # (B, L-1)
    return (nll * mask).sum() / mask.sum().clamp_min(1)


# --- sampling ----------------------------------------------------------------------------------
@dataclass
class Rollout:
    """Responses sampled for a batch of prompts.

    Attributes
    ----------
    tokens : LongTensor, shape (N, P + T)
        Prompt then response ids; after a response's EOS, padding. ``N = n_prompts * k``, the k
        responses of prompt i in rows ``i*k .. i*k + k - 1``.
    mask : BoolTensor, shape (N, T)
        True on the response tokens (through EOS, included).
    lengths : LongTensor, shape (N,)
        Response length in tokens (EOS included); a truncated response has length T.
    finished : BoolTensor, shape (N,)
        Whether the response emitted EOS within T tokens.
    prompt_len : int
        P.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    prompt_len: int

    def texts(self, tokenizer: CharTokenizer) -> list[str]:
        """The responses as text, each cut after its EOS."""
        resp = self.tokens[:, self.prompt_len:].tolist()
        return [tokenizer.decode(r[:n]) for r, n in zip(resp, self.lengths.tolist(), strict=True)]


@torch.no_grad()
def sample_responses(model: GPT, prompts: torch.Tensor, k: int, max_new_tokens: int, eos_id: int,
                     *, temperature: float = 1.0, pad_id: int = 0,
                     generator: torch.Generator | None = None) -> Rollout:
    """Sample ``k`` responses per prompt, all in one batch with a key/value cache.

    Parameters
    ----------
    model : GPT
    prompts : LongTensor, shape (B, P)
        Equal-length prompts (left-padded), on the model's device.
    k : int
        Responses per prompt (k >= 1; the RL losses need k >= 2).
    max_new_tokens : int
        T, the longest response; decoding stops early when every response has ended.
    eos_id, pad_id : int
        End-of-response token, and the token written after it.
    temperature : float
        Softmax temperature; 0 decodes greedily.
    generator : torch.Generator, optional
        Randomness of the samples (on the model's device).

    Returns
    -------
    Rollout
    """
    k = _check_int("k", k, 1)
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1)
    if prompts.ndim != 2 or prompts.dtype != torch.long:
        raise ValueError(f"prompts must be a (B, P) LongTensor, got {prompts.dtype} "
                         f"{tuple(prompts.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    P = prompts.shape[1]
    if P + max_new_tokens > model.config.block_size:
        raise ValueError(f"prompt length {P} + max_new_tokens {max_new_tokens} exceeds "
                         f"block_size={model.config.block_size}")
    was_training = model.training
    model.eval()
    seq = prompts.repeat_interleave(k, dim=0)  # (N, P)
    N = seq.shape[0]
    cache = model.new_cache(N, P + max_new_tokens)
    logits, _ = model(seq, cache=cache)
    out = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=seq.device)
    done = torch.zeros(N, dtype=torch.bool, device=seq.device)
    lengths = torch.full((N,), max_new_tokens, dtype=torch.long, device=seq.device)
    for t in range(max_new_tokens):
        last = logits[:, -1].float()  # (N, V)
        if temperature == 0:
            nxt = last.argmax(-1)
        else:
            probs = torch.softmax(last / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (N,)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out[:, t] = nxt
        ended = ~done & (nxt == eos_id)
        lengths[ended] = t + 1
        done |= ended
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        logits, _ = model(nxt[:, None], cache=cache)
    model.train(was_training)
    steps = torch.arange(max_new_tokens, device=seq.device)
    mask = steps[None] < lengths[:, None]  # (N, T)
    return Rollout(torch.cat([seq, out], dim=1), mask, lengths.cpu(), done.cpu(), P)


def response_logprobs(model: GPT, tokens: torch.Tensor, mask: torch.Tensor,
                      prompt_len: int) -> torch.Tensor:
    """log π(y | x) of each response: the sum of its tokens' log-probabilities (nats).

    Parameters
    ----------
    tokens : LongTensor, shape (N, P + T)
    mask : BoolTensor, shape (N, T)
        Response tokens to count.
    prompt_len : int
        P.

    Returns
    -------
    Tensor, shape (N,)
    """
    logits, _ = model(tokens[:, :-1])  # (N, P+T-1, V)
    logits = logits[:, prompt_len - 1:].float()  # (N, T, V): predictions of the response tokens
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, prompt_len:, None])[..., 0]
    return (logp * mask).sum(dim=1)  # (N,)


# --- rewards -----------------------------------------------------------------------------------
def _groups(x, name: str, dtype=torch.float64) -> torch.Tensor:
    x = torch.as_tensor(x).to(dtype)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (k,) or (n_prompts, k), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is an empty group: shape {tuple(x.shape)}")
    if x.shape[1] < 2:
        raise ValueError(f"k = {x.shape[1]} responses per prompt in {name}: the mean-reward "
                         "baseline needs k >= 2")
    return x


def length_reward(lengths, correct) -> torch.Tensor:
    """k1.5's length reward of each response, given its group of k (post, Eq. 6).

    With ``min_len`` and ``max_len`` the shortest and longest of the k responses to a prompt,
    ``λ_i = 0.5 - (len_i - min_len) / (max_len - min_len)``; the length reward is ``λ_i`` for a
    correct response and ``min(0, λ_i)`` for a wrong one (short wrong answers are not
    encouraged). When all k lengths are equal, every length reward is 0 (paper, section 2.3.3).

    Parameters
    ----------
    lengths : array-like, shape (k,) or (n_prompts, k)
        Response lengths (tokens).
    correct : array-like of bool or 0/1, same shape
        The verifier's verdicts.

    Returns
    -------
    Tensor (float64), shape (n_prompts, k), values in [-0.5, 0.5]
    """
    lengths = _groups(lengths, "lengths")
    correct = _groups(correct, "correct")
    if lengths.shape != correct.shape:
        raise ValueError(f"lengths {tuple(lengths.shape)} and correct {tuple(correct.shape)} "
                         "must have the same shape")
    lo = lengths.min(dim=1, keepdim=True).values
    hi = lengths.max(dim=1, keepdim=True).values
    span = hi - lo
    lam = torch.where(span > 0, 0.5 - (lengths - lo) / span.clamp_min(1e-12),
                      torch.zeros_like(lengths))
    return torch.where(correct > 0, lam, lam.clamp(max=0.0))


# --- the k1.5 policy update ----------------------------------------------------------------------
def _check_loss_args(logp, logp_ref, rewards, tau):
    rewards = _groups(rewards, "rewards", dtype=torch.float32)
    if not isinstance(logp, torch.Tensor):
        raise TypeError(f"logp must be a Tensor, got {type(logp).__name__}")
    logp = logp.reshape(rewards.shape) if logp.numel() == rewards.numel() else logp
    if logp.shape != rewards.shape:
        raise ValueError(f"logp {tuple(logp.shape)} does not match rewards "
                         f"{tuple(rewards.shape)}")
    if logp_ref is not None:
        logp_ref = torch.as_tensor(logp_ref).reshape(rewards.shape)
    if isinstance(tau, bool) or not isinstance(tau, int | float) or tau < 0:
        raise ValueError(f"tau must be a number >= 0, got {tau!r}")
    return logp, logp_ref, rewards.to(logp.device, logp.dtype)


def k15_loss(logp: torch.Tensor, logp_ref: torch.Tensor | None, rewards, tau: float,
             ) -> torch.Tensor:
    """The k1.5 policy loss whose negative gradient is the paper's update direction (Eq. 5).

    For each prompt with k responses y_j sampled from the reference policy π_ref (the policy at
    the start of the iteration), rewards r_j and mean reward r̄,

    ``loss = mean over prompts of (1/k) Σ_j [ -(r_j - r̄) log π_θ(y_j|x)
    + (τ/2) (log π_θ(y_j|x) - log π_ref(y_j|x))² ]``,

    so ``-∇loss = (1/k) Σ_j [ (r_j - r̄) ∇log π_θ(y_j|x) - (τ/2) ∇(log π_θ/π_ref)² ]``, the
    gradient of the paper (its section 2.3.2), averaged over prompts. r̄ is a constant: it stands
    in for τ log Z (Eq. 4). :func:`k15_squared_loss` is the surrogate this comes from.

    Parameters
    ----------
    logp : Tensor, shape (n_prompts, k) or (n_prompts * k,)
        log π_θ(y_j | x) with gradient (:func:`response_logprobs`).
    logp_ref : Tensor, same shape, or None
        log π_ref(y_j | x), no gradient; ``None`` when ``tau == 0``.
    rewards : array-like, shape (n_prompts, k)
        Total rewards (verifier, plus the length reward when used).
    tau : float
        KL weight τ >= 0; τ = 0 is plain REINFORCE with the mean-reward baseline.

    Returns
    -------
    Tensor, scalar
    """
    logp, logp_ref, rewards = _check_loss_args(logp, logp_ref, rewards, tau)
    adv = rewards - rewards.mean(dim=1, keepdim=True)  # (G, k): r_j - r̄, no gradient
    loss = -(adv * logp)
    if tau > 0:
        if logp_ref is None:
            raise ValueError("logp_ref is needed when tau > 0")
        loss = loss + 0.5 * tau * (logp - logp_ref.detach()) ** 2
    return loss.mean()


def reinforce_loss(logp: torch.Tensor, rewards) -> torch.Tensor:
    """Plain REINFORCE with the per-prompt mean-reward baseline: :func:`k15_loss` at τ = 0."""
    return k15_loss(logp, None, rewards, 0.0)


def k15_squared_loss(logp: torch.Tensor, logp_ref: torch.Tensor, rewards, tau: float,
                     ) -> torch.Tensor:
    """The paper's surrogate of mirror descent (post, Eq. 4), scaled by ``1 / (2τ)``.

    ``mean over prompts of (1/k) Σ_j (r_j - r̄ - τ log(π_θ(y_j|x) / π_ref(y_j|x)))² / (2τ)``,
    with the mean reward r̄ in place of τ log Z. Its gradient equals :func:`k15_loss`'s exactly
    (the 1/(2τ) makes the two agree; it does not move the minimum). Shapes as in
    :func:`k15_loss`; ``tau > 0``.
    """
    if isinstance(tau, int | float) and not isinstance(tau, bool) and tau <= 0:
        raise ValueError(f"tau must be > 0 for the squared surrogate, got {tau!r}")
    logp, logp_ref, rewards = _check_loss_args(logp, logp_ref, rewards, tau)
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    return ((adv - tau * (logp - logp_ref.detach())) ** 2).mean() / (2 * tau)


def policy_loss(model: GPT, batch: dict, tau: float) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`k15_loss` of a rollout under ``model``, as a ``fit`` loss function.

    ``batch`` holds ``tokens``, ``mask``, ``prompt_len`` (a :class:`Rollout`'s fields),
    ``logp_ref`` (N,) and ``rewards`` (n_prompts, k). Also reports the mean log-ratio and the
    mean squared log-ratio (``log_ratio``, ``log_ratio_sq``).
    """
    logp = response_logprobs(model, batch["tokens"], batch["mask"], batch["prompt_len"])
    loss = k15_loss(logp, batch["logp_ref"], batch["rewards"], tau)
    with torch.no_grad():
        ratio = logp - batch["logp_ref"]
    return loss, {"log_ratio": float(ratio.mean()), "log_ratio_sq": float((ratio ** 2).mean())}


# --- long to short -----------------------------------------------------------------------------
def shortest_correct(lengths, correct) -> torch.Tensor:
    """Index of the shortest correct response of each prompt, or -1 when none is correct.

    Shortest rejection sampling (paper, section 2.4): of the k samples of a prompt, keep the
    shortest correct one as a fine-tuning target; ties go to the first.

    Parameters
    ----------
    lengths, correct : array-like, shape (n_prompts, k)

    Returns
    -------
    LongTensor, shape (n_prompts,)
    """
    lengths = _groups(lengths, "lengths")
    correct = _groups(correct, "correct")
    if lengths.shape != correct.shape:
        raise ValueError("lengths and correct must have the same shape")
    masked = torch.where(correct > 0, lengths, torch.full_like(lengths, float("inf")))
    idx = masked.argmin(dim=1)
    return torch.where(torch.isfinite(masked.min(dim=1).values), idx, torch.full_like(idx, -1))


def average_weights(state_a: dict, state_b: dict, alpha: float = 0.5) -> dict:
    """Model merging (paper, section 2.4; post, Eq. 7): ``alpha * a + (1 - alpha) * b`` of two
    state dicts of one architecture.

    Non-floating-point entries are taken from ``a``.
    """
    if set(state_a) != set(state_b):
        raise ValueError("the two state dicts have different keys")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
        out[name] = alpha * a + (1 - alpha) * b if a.is_floating_point() else a.clone()
    return out
