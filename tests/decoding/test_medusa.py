"""Tests for deepnotes.decoding.medusa: trees, tree attention, acceptance, and exactness of
greedy Medusa decoding against plain greedy decoding.

All exactness checks run in float64 (see tests/decoding/test_gpt.py for the reason).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from deepnotes.decoding.gpt import generate
from deepnotes.decoding.medusa import (
    MedusaHeads,
    chain_tree,
    expected_accept_length,
    head_topk_hits,
    head_weights,
    medusa_generate,
    medusa_loss,
    sparse_tree,
    topk_tree,
    tree_buffers,
    typical_accept,
)

TOL = 1e-10  # float64 logits of O(1): rounding differences are ~1e-15
TREES = {"chain": chain_tree(3), "topk-3x2x2": topk_tree((3, 2, 2)),
         "sparse-12": sparse_tree(torch.tensor([[.6, .2, .1], [.4, .2, .1], [.3, .1, .1]]), 12)}


class OracleHeads:
    """Stand-in heads that know the greedy continuation and guess it imperfectly.

    The position is recovered from the hidden state (nearest row of the reference pass); head k
    then puts the true token ``ref[t + k + 1]`` at rank 0, at rank 1, or outside the top 3, by a
    fixed pseudo-random pattern. This drives long accepted paths, side branches and rejections,
    which random heads on a random model almost never produce.
    """

    def __init__(self, model, ref, n_heads=3, seed=0):
        self.ref = ref[0]
        self.hidden = model(ref)[1][0]  # (L, C)
        self.n_heads, self.vocab, self.seed = n_heads, model.config.vocab_size, seed

    def __call__(self, h):
        t = int((self.hidden - h).norm(dim=-1).argmin())
        out = []
        for k in range(1, self.n_heads + 1):
            g = torch.Generator().manual_seed(self.seed * 10_007 + t * 31 + k)
            logits = torch.randn(self.vocab, generator=g, dtype=torch.float64)
            if t + k + 1 < len(self.ref):
                order = logits.argsort(descending=True).tolist()
                true = int(self.ref[t + k + 1])
                order.remove(true)
                rank = [0, 0, 0, 1, 5][int(torch.randint(5, (1,), generator=g))]
                order.insert(rank, true)
                logits = torch.empty_like(logits)
                logits[torch.tensor(order)] = torch.arange(self.vocab, 0, -1, dtype=logits.dtype)
            out.append(logits)
        return torch.stack(out)  # (K, V)


def test_tree_buffers_known_answer():
    buf = tree_buffers(topk_tree((2, 2)))
    assert buf.paths == ((0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1))
    assert buf.depth.tolist() == [0, 1, 1, 2, 2, 2, 2]
    assert buf.parent.tolist() == [-1, 0, 0, 1, 1, 2, 2]
    assert buf.head.tolist() == [0, 0, 1, 1, 1, 1] and buf.rank.tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.nonzero(buf.mask[5])[:, 0].tolist() == [0, 2, 5]  # root, (1,), (1, 0)
    assert buf.mask.sum().item() == 1 + 2 * 2 + 4 * 3
    assert len(topk_tree((3, 2, 2))) == 3 + 6 + 12 and chain_tree(2) == ((0,), (0, 0))
    with pytest.raises(ValueError, match="parent"):
        tree_buffers([(0,), (1, 1)])


def test_tree_attention_logits_equal_each_path_run_separately(tiny_model, prompts):
    model = tiny_model()
    prefix = torch.randint(0, 32, (1, 9))
    buf = tree_buffers(TREES["topk-3x2x2"])
    tokens = torch.randint(0, 32, (buf.size,))
    cache = model.new_cache(1)
    model(prefix, cache=cache)
    logits, hidden = model(tokens[None], cache=cache, positions=9 + buf.depth, tree_mask=buf.mask)
    for i in range(buf.size):
        path = [i]
        while path[-1] != 0:
            path.append(int(buf.parent[path[-1]]))
        seq = torch.cat([prefix[0], tokens[path[::-1]]])[None]
        ref_logits, ref_hidden = model(seq)
        torch.testing.assert_close(logits[0, i], ref_logits[0, -1], atol=TOL, rtol=0)
        torch.testing.assert_close(hidden[0, i], ref_hidden[0, -1], atol=TOL, rtol=0)


def test_cache_after_keeping_a_path_equals_a_fresh_prefill(tiny_model, prompts):
    model = tiny_model()
    prefix = torch.randint(0, 32, (1, 6))
    buf = tree_buffers(TREES["topk-3x2x2"])
    tokens = torch.randint(0, 32, (buf.size,))
    cache = model.new_cache(1)
    model(prefix, cache=cache)
    model(tokens[None], cache=cache, positions=6 + buf.depth, tree_mask=buf.mask)
    path = torch.tensor([0] + [1 + buf.paths.index(p) for p in ((1,), (1, 1), (1, 1, 1))])
    assert path.tolist() == [0, 2, 7, 17] and buf.parent[path[1:]].tolist() == [0, 2, 7]
    cache.keep(6, path)
    fresh = model.new_cache(1)
    model(torch.cat([prefix[0], tokens[path]])[None], cache=fresh)
    assert cache.length == fresh.length == 10
    torch.testing.assert_close(cache.k[:, :, :, :10], fresh.k[:, :, :, :10], atol=TOL, rtol=0)
    torch.testing.assert_close(cache.v[:, :, :, :10], fresh.v[:, :, :, :10], atol=TOL, rtol=0)


@pytest.mark.parametrize("tree", list(TREES))
def test_greedy_medusa_equals_greedy_decoding(tree, tiny_model, prompts):
    model = tiny_model()
    lengths = []
    for i, prompt in enumerate(prompts(4)):
        ref = generate(model, prompt, 40)
        out = medusa_generate(model, OracleHeads(model, ref, seed=i), prompt, 40, TREES[tree])
        assert torch.equal(out.tokens, ref), f"prompt {i} differs"
        assert sum(out.accept_lengths) >= 40 and max(out.accept_lengths) <= 4
        lengths += out.accept_lengths
        # the real heads (untrained: a random perturbation of the LM head) must also be exact
        heads = MedusaHeads.for_model(model, 3)
        with torch.no_grad():
            for p in heads.parameters():
                p.add_(0.5 * torch.randn_like(p))
        assert torch.equal(medusa_generate(model, heads, prompt, 40, TREES[tree]).tokens, ref)
    assert np.mean(lengths) > 1.5  # the oracle exercises multi-token acceptance
    if tree != "chain":
        assert 4 in lengths


def test_typical_acceptance_known_answer():
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64).repeat(3, 1)
    entropy = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    threshold = min(0.25, 0.7 * math.exp(-entropy))  # = 0.2497...: 0.2 fails, 0.3 passes
    assert 0.2 < threshold < 0.3
    got = typical_accept(p.log(), torch.tensor([0, 1, 2]), temperature=1.0, epsilon=0.25,
                         delta=0.7)
    assert got.tolist() == [True, True, False]
    got = typical_accept(p.log(), torch.tensor([0, 1, 2]), temperature=1.0, epsilon=0.09,
                         delta=0.3)
    assert got.tolist() == [True, True, True]  # threshold min(0.09, 0.107) = 0.09


def test_typical_acceptance_at_low_temperature_is_greedy(tiny_model, prompts):
    model = tiny_model()
    prompt = prompts(1)[0]
    ref = generate(model, prompt, 30)
    out = medusa_generate(model, OracleHeads(model, ref), prompt, 30, TREES["topk-3x2x2"],
                          acceptance="typical", temperature=1e-4)
    assert torch.equal(out.tokens, ref)
    # at temperature 1 typical acceptance takes more than the argmax: longer steps
    hot = medusa_generate(model, OracleHeads(model, ref), prompt, 30, TREES["topk-3x2x2"],
                          acceptance="typical", temperature=1.0, epsilon=0.3, delta=0.5)
    assert hot.mean_accept_length >= out.mean_accept_length


def test_sparse_tree_is_optimal_by_brute_force():
    rng = np.random.default_rng(0)
    acc = torch.tensor(np.sort(rng.uniform(0, 0.5, (2, 3)), axis=1)[:, ::-1].copy())
    nodes = list(topk_tree((3, 3)))
    for n in (1, 3, 5):
        best = max(expected_accept_length(sub, acc)
                   for sub in itertools.combinations(nodes, n)
                   if all(len(p) == 1 or p[:-1] in sub for p in sub))
        assert expected_accept_length(sparse_tree(acc, n), acc) == pytest.approx(best, abs=1e-12)
    assert expected_accept_length(chain_tree(2), acc) == pytest.approx(
        1 + acc[0, 0] + acc[0, 0] * acc[1, 0])


def test_heads_start_as_the_lm_head_and_loss_targets_are_shifted(tiny_model, prompts):
    model = tiny_model()
    x = torch.randint(0, 32, (2, 12))
    logits, hidden = model(x)
    heads = MedusaHeads.for_model(model, 2)
    torch.testing.assert_close(heads(hidden)[1], logits, atol=0, rtol=0)  # zero-init ResBlock
    # K = 1, hidden = a scaled one-hot of tokens[t + 2], projection = identity:
    one = MedusaHeads(8, 8, 1, n_layers=0)
    with torch.no_grad():
        one.heads[0][0].weight.copy_(torch.eye(8))
    tokens = torch.randint(0, 8, (3, 10 + 2))
    h = 50.0 * torch.nn.functional.one_hot(tokens[:, 2:], 8).float()
    loss, per_head = medusa_loss(one, h, tokens)
    assert loss.item() < 1e-6 and per_head.shape == (1,)
    assert head_topk_hits(one, h, tokens, 2).tolist() == [[1.0, 0.0]]
    wrong, _ = medusa_loss(one, 50.0 * torch.nn.functional.one_hot(tokens[:, 1:-1], 8).float(),
                           tokens)
    assert wrong.item() > 1.0
    assert head_weights(3).tolist() == pytest.approx([0.8, 0.64, 0.512])


def test_bad_inputs_raise(tiny_model, prompts):
    model = tiny_model()
    heads = MedusaHeads.for_model(model, 2)
    p = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="depth"):
        medusa_generate(model, heads, p, 5, chain_tree(3))
    with pytest.raises(ValueError, match="acceptance"):
        medusa_generate(model, heads, p, 5, chain_tree(2), acceptance="nucleus")
    with pytest.raises(ValueError, match="batch"):
        medusa_generate(model, heads, p.repeat(2, 1), 5, chain_tree(2))
    with pytest.raises(ValueError, match="block_size"):
        medusa_generate(model, heads, p, 59, chain_tree(2))
    with pytest.raises(ValueError):
        topk_tree(())
    with pytest.raises(ValueError):
        sparse_tree(torch.tensor([[1.5]]), 3)
