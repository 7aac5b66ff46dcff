"""Kimi k1.5-style RL pieces: the loss and its gradient against the paper's formula by hand, the
length penalty, the verifier, the task generator, sampling and long-to-short."""

import math

import numpy as np
import pytest
import torch

from deepnotes.decoding.gpt import GPT, GPTConfig
from deepnotes.rl import llm as L

# --- the loss: a group small enough to differentiate by hand ------------------------------------
# Policy: one categorical step over 3 "responses" with logits θ, so log π(y_j) = θ_j - logsumexp(θ)
# and ∂ log π(y_j) / ∂θ = e_j - softmax(θ). Reference: logits θ_ref.
THETA = [0.3, -0.2, 0.5]
THETA_REF = [0.0, 0.0, 0.0]
SAMPLED = [0, 2, 2, 1]  # k = 4 responses of one prompt (indices into the 3 outcomes)
REWARDS = [1.0, 0.0, 1.0, 0.0]
TAU = 0.7


def _by_hand():
    """The paper's gradient (section 2.3.2), computed with plain floats:
    (1/k) Σ_j [ (r_j - r̄) ∇log π(y_j) - τ (log π(y_j) - log π_ref(y_j)) ∇log π(y_j) ]."""
    z = math.log(sum(math.exp(t) for t in THETA))
    z_ref = math.log(sum(math.exp(t) for t in THETA_REF))
    soft = [math.exp(t - z) for t in THETA]
    k = len(SAMPLED)
    rbar = sum(REWARDS) / k
    grad = [0.0, 0.0, 0.0]
    loss = 0.0
    sq = 0.0
    for y, r in zip(SAMPLED, REWARDS, strict=True):
        logp = THETA[y] - z
        ratio = logp - (THETA_REF[y] - z_ref)
        loss += (-(r - rbar) * logp + TAU / 2 * ratio ** 2) / k
        sq += (r - rbar - TAU * ratio) ** 2 / k / (2 * TAU)
        for i in range(3):
            dlogp = (1.0 if i == y else 0.0) - soft[i]
            grad[i] += ((r - rbar) * dlogp - TAU * ratio * dlogp) / k  # ascent direction
    return loss, sq, grad


def _logps(theta, ref):
    theta = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax(theta, 0)[SAMPLED]
    logp_ref = torch.log_softmax(torch.tensor(ref, dtype=torch.float64), 0)[SAMPLED]
    return theta, logp, logp_ref


def test_k15_loss_and_gradient_equal_the_papers_formula_by_hand():
    loss_hand, _, ascent = _by_hand()
    theta, logp, logp_ref = _logps(THETA, THETA_REF)
    loss = L.k15_loss(logp, logp_ref, [REWARDS], TAU)
    loss.backward()
    assert loss.item() == pytest.approx(loss_hand, rel=1e-12)
    # the loss is minimised: its negative gradient is the paper's update direction
    np.testing.assert_allclose(-theta.grad.numpy(), ascent, rtol=1e-12, atol=1e-15)


def test_squared_surrogate_has_the_same_gradient():
    _, sq_hand, ascent = _by_hand()
    theta, logp, logp_ref = _logps(THETA, THETA_REF)
    sq = L.k15_squared_loss(logp, logp_ref, [REWARDS], TAU)
    sq.backward()
    assert sq.item() == pytest.approx(sq_hand, rel=1e-12)
    np.testing.assert_allclose(-theta.grad.numpy(), ascent, rtol=1e-12, atol=1e-15)


def test_reinforce_is_tau_zero_and_the_kl_term_vanishes_at_the_reference():
    # At θ = θ_ref the squared log-ratio has zero gradient: k1.5's first step is REINFORCE's.
    theta, logp, logp_ref = _logps(THETA, THETA)
    L.k15_loss(logp, logp_ref, [REWARDS], TAU).backward()
    g_k15 = theta.grad.clone()
    theta2, logp2, _ = _logps(THETA, THETA)
    L.reinforce_loss(logp2, [REWARDS]).backward()
    np.testing.assert_allclose(g_k15.numpy(), theta2.grad.numpy(), rtol=1e-12)
    # hand value of REINFORCE's gradient: (1/k) Σ (r_j - r̄)(e_{y_j} - softmax θ)
    soft = torch.softmax(torch.tensor(THETA, dtype=torch.float64), 0).numpy()
    rbar = np.mean(REWARDS)
    ascent = sum((r - rbar) * (np.eye(3)[y] - soft) for y, r in zip(SAMPLED, REWARDS,
                                                                   strict=True)) / 4
    np.testing.assert_allclose(-theta2.grad.numpy(), ascent, rtol=1e-12, atol=1e-15)


def test_baseline_is_per_prompt():
    # Two prompts: adding a constant to one prompt's rewards changes nothing (its own mean).
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    r = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    g1 = torch.autograd.grad(L.reinforce_loss(logp, r), logp)[0]
    g2 = torch.autograd.grad(L.reinforce_loss(logp, r + torch.tensor([[0.0], [5.0]])), logp)[0]
    torch.testing.assert_close(g1, g2)
    # mean over prompts of (1/k) Σ: d loss / d logp_{g,j} = -(r_j - r̄) / (G k)
    torch.testing.assert_close(g1, torch.tensor([[-0.125, 0.125], [0.0, 0.0]]))


def test_loss_rejects_bad_groups():
    logp = torch.zeros(1, 1, requires_grad=True)
    with pytest.raises(ValueError, match="k = 1"):
        L.k15_loss(logp, logp, [[1.0]], 0.1)
    with pytest.raises(ValueError, match="empty group"):
        L.k15_loss(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3), 0.1)
    with pytest.raises(ValueError, match="tau"):
        L.k15_loss(torch.zeros(1, 2), torch.zeros(1, 2), [[1.0, 0.0]], -1.0)
    with pytest.raises(ValueError, match="logp_ref"):
        L.k15_loss(torch.zeros(1, 2), None, [[1.0, 0.0]], 0.5)
    with pytest.raises(ValueError, match="does not match"):
        L.k15_loss(torch.zeros(3), torch.zeros(3), [[1.0, 0.0]], 0.5)
    with pytest.raises(ValueError, match="k = 1"):
        L.length_reward([5], [1])


# --- length penalty ------------------------------------------------------------------------------
def test_length_reward_matches_hand_values():
    lengths = [10, 20, 30, 40, 20]
    correct = [1, 1, 0, 0, 0]
    # min 10, max 40: λ = 0.5 - (len - 10)/30 -> 0.5, 1/6, -1/6, -0.5, 1/6
    lam = [0.5, 0.5 - 10 / 30, 0.5 - 20 / 30, -0.5, 0.5 - 10 / 30]
    expected = [lam[0], lam[1], min(0, lam[2]), min(0, lam[3]), min(0, lam[4])]
    got = L.length_reward(lengths, correct)
    assert got.shape == (1, 5)
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-12)


def test_length_reward_all_equal_lengths_is_zero_and_groups_are_separate():
    got = L.length_reward([[7, 7, 7], [3, 5, 7]], [[1, 0, 1], [0, 1, 1]])
    np.testing.assert_allclose(got.numpy(), [[0, 0, 0], [0, 0, -0.5]], atol=1e-15)
    with pytest.raises(ValueError, match="same shape"):
        L.length_reward([[1, 2]], [[1, 0, 1]])


# --- verifier ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, answer, reward", [
    ("12+34=46,46+5=51#51.", 51, 1.0),
    ("12+34=40+6=46:46,46+5=50+1=51:51#51.", 51, 1.0),
    ("#51.", 51, 1.0),  # only the final answer is rewarded
    ("12+34=46,46+5=52#52.", 51, 0.0),  # wrong
    ("12+34=46,46+5=51#51", 51, 0.0),  # truncated: no EOS
    ("12+34=46,46+5=51", 51, 0.0),  # no answer marker
    ("12+34=46#46,46+5=51#51.", 51, 0.0),  # two markers
    ("12+34=46,46+5=51#051.", 51, 0.0),  # not canonical
    ("12+34=46,46+5=51#.", 51, 0.0),  # empty answer
    ("12+34=46,46+5=51#51..", 51, 0.0),  # text after EOS
    ("12+34=46 #51.", 51, 0.0),  # a character outside the CoT alphabet
    ("#0.", 0, 1.0),
])
def test_verifier_is_exact(text, answer, reward):
    assert L.verify(text, answer) == reward


def test_every_generated_solution_verifies_and_tokenizes_round_trip():
    train, held = L.arithmetic_splits(300, 100, seed=3)
    tok = L.CharTokenizer()
    for p in train + held:
        for style in L.STYLES:
            s = L.solution(p, style)
            assert L.verify(s, p.answer) == 1.0
            assert L.verify(s, p.answer + 1) == 0.0
            assert tok.decode(tok.encode(s)) == s
    p = L.Problem((47, 38, 5))
    assert L.solution(p, "short") == "47+38=85,85+5=90#90."
    assert L.solution(p, "long") == "47+38=70+15=85:85,85+5=80+10=90:90#90."
    with pytest.raises(ValueError, match="style"):
        L.solution(p, "medium")


# --- the task ------------------------------------------------------------------------------------
def test_task_is_deterministic_per_seed_and_splits_are_disjoint():
    a = L.arithmetic_splits(500, 200, seed=7)
    b = L.arithmetic_splits(500, 200, seed=7)
    c = L.arithmetic_splits(500, 200, seed=8)
    assert a == b
    assert a != c
    train, held = a
    assert len(train) == 500 and len(held) == 200
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert len({p.prompt for p in train}) == 500
    # the split is a property of the problem, so another seed's held-out set is disjoint too
    assert not {p.prompt for p in c[0]} & {p.prompt for p in held}
    assert all(2 <= len(p.operands) <= 4 and all(1 <= v <= 99 for v in p.operands)
               for p in train)


def test_task_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_terms"):
        L.arithmetic_splits(10, 10, 0, min_terms=1)
    with pytest.raises(TypeError, match="n_train"):
        L.arithmetic_splits(10.0, 10, 0)
    with pytest.raises(ValueError, match="too many"):
        L.arithmetic_splits(100, 100, 0, max_terms=2, max_operand=9)


def test_sft_batch_masks_prompt_and_padding():
    tok = L.CharTokenizer()
    p = L.Problem((3, 4))
    tokens, mask = tok.sft_batch([p], [L.solution(p, "short")], 6, 12)
    assert tok.decode(tokens[0].tolist()) == "  3+4=" + "3+4=7#7." + " " * 4
    # targets tokens[1:]: the response (8 characters, EOS included) and nothing else
    assert mask.shape == (1, 17) and mask[0].sum() == 8 and mask[0, 5:13].all()


# --- sampling, log-probabilities, long to short ---------------------------------------------------
def _tiny_model(vocab):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=24, n_layer=1, n_head=2, n_embd=16))


def test_sampling_with_cache_gives_valid_rollouts_and_logprobs_match_the_sampler():
    tok = L.CharTokenizer()
    model = _tiny_model(tok.vocab_size)
    prompts = tok.prompts([L.Problem((1, 2)), L.Problem((33, 4))], 8)
    gen = torch.Generator().manual_seed(0)
    ro = L.sample_responses(model, prompts, 3, 16, tok.eos_id, pad_id=tok.pad_id, generator=gen)
    assert ro.tokens.shape == (6, 24) and ro.mask.shape == (6, 16)
    assert torch.equal(ro.tokens[:3, :8], prompts[[0, 0, 0]])
    assert torch.equal(ro.mask.sum(1), ro.lengths)
    for row, n, fin in zip(ro.tokens[:, 8:], ro.lengths, ro.finished, strict=True):
        assert (row[n - 1] == tok.eos_id) == bool(fin)
        assert (row[n:] == tok.pad_id).all()
    # the sum of per-token log-probs equals a step-by-step recomputation without the cache
    logp = L.response_logprobs(model, ro.tokens, ro.mask, 8)
    with torch.no_grad():
        for i in range(6):
            total = 0.0
            for t in range(int(ro.lengths[i])):
                logits, _ = model(ro.tokens[i:i + 1, :8 + t])
                total += torch.log_softmax(logits[0, -1], -1)[ro.tokens[i, 8 + t]].item()
            # float32: up to 16 log-probs summed in another order, by another kernel path
            assert logp[i].item() == pytest.approx(total, abs=1e-4)
    greedy = L.sample_responses(model, prompts, 2, 16, tok.eos_id, temperature=0)
    assert torch.equal(greedy.tokens[0], greedy.tokens[1])
    with pytest.raises(ValueError, match="block_size"):
        L.sample_responses(model, prompts, 2, 17, tok.eos_id)
    with pytest.raises(ValueError, match="k must be"):
        L.sample_responses(model, prompts, 0, 4, tok.eos_id)


def test_shortest_correct_and_weight_averaging():
    idx = L.shortest_correct([[9, 4, 6, 4], [3, 5, 7, 9], [5, 5, 8, 2]],
                             [[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]])
    assert idx.tolist() == [3, -1, 0]
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    merged = L.average_weights(a, b, 0.25)
    torch.testing.assert_close(merged["w"], torch.tensor([2.5, 4.5]))
    assert merged["n"].item() == 5
    with pytest.raises(ValueError, match="keys"):
        L.average_weights(a, {"w": b["w"]})
