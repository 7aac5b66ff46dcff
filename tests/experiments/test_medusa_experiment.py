"""The medusa experiment's pieces that the smoke run does not check: tree names, the checkpoint the
benchmark reloads, and the repetition statistic."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deepnotes.decoding.gpt import GPT, GPTConfig
from deepnotes.decoding.medusa import MedusaHeads, chain_tree, topk_tree
from deepnotes.experiments import medusa as experiment


def test_parse_tree_names():
    acc = torch.tensor([[0.5, 0.2], [0.4, 0.1]])
    assert experiment.parse_tree("chain-2", acc, 2) == chain_tree(2)
    assert experiment.parse_tree("topk-2x1", acc, 2) == topk_tree((2, 1))
    assert len(experiment.parse_tree("sparse-3", acc, 2)) == 3
    for bad in ("chain-3", "ring-2", "topk-2xq", "sparse"):
        with pytest.raises(ValueError, match="tree"):
            experiment.parse_tree(bad, acc, 2)


def test_checkpoint_round_trip(tmp_path):
    cfg = experiment.PRESETS["smoke"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd))
    heads = MedusaHeads.for_model(model, cfg.n_medusa_heads)
    prep = experiment.Prepared(model, heads, torch.rand(3, 3), {"chain-2": chain_tree(2)},
                               [torch.zeros(1, 4, dtype=torch.long)], [], [], {})
    path = tmp_path / experiment.CHECKPOINT
    experiment.save_checkpoint(path, cfg, prep)
    back = experiment.load_checkpoint(path, dataclasses.replace(cfg, out="elsewhere"))
    for a, b in zip(model.state_dict().values(), back.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert back.trees == prep.trees and torch.equal(back.hits, prep.hits)
    with pytest.raises(ValueError, match="another config"):
        experiment.load_checkpoint(path, dataclasses.replace(cfg, head_steps=5))


def test_distinct_ngram_fraction():
    loop = torch.tensor([1, 2] * 10)
    assert experiment.distinct_ngram_fraction([torch.arange(20)], 4) == 1.0
    assert experiment.distinct_ngram_fraction([loop], 4) == pytest.approx(2 / 17)
