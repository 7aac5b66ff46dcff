"""Shared pieces of the decoding tests: one torch thread, a small peaked GPT, random prompts."""

from __future__ import annotations

import pytest
import torch

from deepnotes.decoding.gpt import GPT, GPTConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: extra threads only add synchronisation on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_model(dtype=torch.float64, seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=32, block_size=64, n_layer=2, n_head=2, n_embd=32) | kw
    model = GPT(GPTConfig(**cfg)).to(dtype).eval()
    with torch.no_grad():  # larger weights than GPT-2's init: a peaked, input-dependent model
        for p in model.parameters():
            p.mul_(8.0 if p.ndim == 2 else 1.0)
    return model


def _prompts(n=4, vocab=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (1, int(t)), generator=g) for t in
            torch.randint(1, 12, (n,), generator=g)]


@pytest.fixture
def tiny_model():
    """Factory ``tiny_model(dtype=float64, seed=0, **GPTConfig fields) -> GPT`` in eval mode."""
    return _tiny_model


@pytest.fixture
def prompts():
    """Factory ``prompts(n=4) -> list of (1, T) LongTensors``, T in [1, 11]."""
    return _prompts
