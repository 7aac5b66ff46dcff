"""Tests for deepnotes.decoding.gpt (KV cache, tree masks, decoding) and deepnotes.decoding.hf
(the same logits and greedy tokens from transformers' GPT2LMHeadModel loaded with our weights).

Exactness tests run in float64: cached and uncached passes reduce the same sums in different
orders, so they agree to rounding (~1e-16 relative per operation in float64), and an argmax tie
within that distance is then practically impossible.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from deepnotes.decoding.gpt import GPT, GPTConfig, KVCache, generate, lm_loss

TOL = 1e-10  # float64 logits of O(1): rounding differences are ~1e-15


def test_cached_logits_equal_full_forward(tiny_model, prompts):
    model = tiny_model()
    x = torch.randint(0, 32, (3, 20))
    full, hidden = model(x)
    cache = model.new_cache(3)
    parts = [model(x[:, :7], cache=cache)[0]]  # prefill, then one token at a time, then a chunk
    for t in range(7, 12):
        parts.append(model(x[:, t:t + 1], cache=cache)[0])
    parts.append(model(x[:, 12:], cache=cache)[0])
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=TOL, rtol=0)
    assert hidden.shape == (3, 20, 32)


@pytest.mark.parametrize("greedy", [True, False])
def test_kv_cache_decoding_equals_no_cache_decoding(greedy, tiny_model, prompts):
    model = tiny_model()
    for prompt in prompts():
        runs = [generate(model, prompt, 25, greedy=greedy, top_k=10, use_cache=c,
                         generator=torch.Generator().manual_seed(3)) for c in (True, False)]
        assert torch.equal(runs[0], runs[1])
        assert runs[0].shape == (1, prompt.shape[1] + 25)
        assert torch.equal(runs[0][:, :prompt.shape[1]], prompt)


def test_greedy_is_argmax_of_full_forward(tiny_model, prompts):
    model = tiny_model()
    out = generate(model, prompts(1)[0], 10)
    logits, _ = model(out[:, :-1])
    t0 = out.shape[1] - 10
    assert torch.equal(logits[0, t0 - 1:].argmax(-1), out[0, t0:])


def test_tree_mask_and_positions_reproduce_a_chain(tiny_model, prompts):
    """A causal tree mask with consecutive positions is an ordinary cached chunk."""
    model = tiny_model()
    x = torch.randint(0, 32, (1, 15))
    cache = model.new_cache(1)
    model(x[:, :9], cache=cache)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    got, _ = model(x[:, 9:], cache=cache, positions=torch.arange(9, 15), tree_mask=mask)
    torch.testing.assert_close(got, model(x)[0][:, 9:], atol=TOL, rtol=0)


def test_cache_keep_moves_selected_rows(tiny_model, prompts):
    model = tiny_model()
    x = torch.randint(0, 32, (1, 10))
    cache = model.new_cache(1)
    model(x[:, :4], cache=cache)
    model(x[:, 4:], cache=cache)  # rows 4..9
    keep = torch.tensor([0, 2, 5])  # rows 4, 6, 9 -> 4, 5, 6
    ref = cache.k[:, :, :, torch.tensor([0, 1, 2, 3, 4, 6, 9])].clone()
    cache.keep(4, keep)
    assert cache.length == 7
    torch.testing.assert_close(cache.k[:, :, :, :7], ref, atol=0, rtol=0)
    with pytest.raises(ValueError):
        cache.keep(4, torch.tensor([3]))  # row 7 is past length 7


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16))
    data = torch.arange(17).remainder(8)[None].repeat(4, 1)  # a cycle: perfectly predictable
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    first = lm_loss(model, data).item()
    for _ in range(60):
        opt.zero_grad()
        lm_loss(model, data).backward()
        opt.step()
    assert lm_loss(model, data).item() < 0.1 * first


def test_bad_inputs_raise(tiny_model, prompts):
    model = tiny_model()
    with pytest.raises(ValueError, match="n_head"):
        GPTConfig(n_head=3, n_embd=32)
    with pytest.raises(ValueError, match="block_size"):
        generate(model, torch.zeros(1, 60, dtype=torch.long), 10)
    with pytest.raises(TypeError, match="prompt"):
        generate(model, torch.zeros(1, 3), 2)
    with pytest.raises(ValueError, match="capacity"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=KVCache(model.config, 1, 4))
    with pytest.raises(ValueError, match="tree_mask"):
        model(torch.zeros(1, 3, dtype=torch.long), tree_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 2, greedy=False, temperature=0)


def test_transformers_gpt2_gives_the_same_logits_and_greedy_tokens(tiny_model, prompts):
    importlib.import_module("transformers")
    from deepnotes.decoding.hf import to_transformers

    model = tiny_model()
    hf = to_transformers(model)
    x = torch.randint(0, 32, (2, 30))
    torch.testing.assert_close(hf(x).logits, model(x)[0], atol=TOL, rtol=0)
    for prompt in prompts(3):
        ours = generate(model, prompt, 20)
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                             min_new_tokens=20, do_sample=False)
        assert torch.equal(ours, theirs)
    # float32, as the benchmark runs it: rounding-level agreement
    model32 = tiny_model(torch.float32)
    torch.testing.assert_close(to_transformers(model32)(x).logits, model32(x)[0],
                               atol=2e-5, rtol=1e-5)
