"""CLIP-style text encoder: equal to transformers' CLIPTextModel, shapes, masks, InfoNCE."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from torch.nn import functional as F

from deepnotes.data.shapes import CONTEXT_LENGTH, CaptionTokenizer, ShapesWorld
from deepnotes.diffusion import text_encoder as T


def _clip_text_model(eos: int, act: str = "quick_gelu"):
    cfg = transformers.CLIPTextConfig(vocab_size=23, hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      max_position_embeddings=12, hidden_act=act,
                                      eos_token_id=eos, bos_token_id=1, pad_token_id=0,
                                      attn_implementation="eager")
    torch.manual_seed(0)
    return transformers.CLIPTextModel(cfg).eval()


def _ids(eos: int, b: int = 5, t: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Random right-padded rows ``[1, w..., eos, 0...]`` with words in 3..22 (no eos among them)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(b, t, dtype=torch.long)
    mask = torch.zeros(b, t, dtype=torch.long)
    for i in range(b):
        n = 3 + i % (t - 4)
        words = torch.randint(3, 23, (n,), generator=g)
        words[words == eos] = 3 if eos != 3 else 4
        row = torch.cat([torch.tensor([1]), words, torch.tensor([eos])])
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return ids, mask


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_equals_transformers_clip_text_model(act):
    eos = 7           # != 2, so transformers reads the first end token as we do
    ref = _clip_text_model(eos, act)
    ours = T.TextEncoder.from_transformers(ref).eval()
    ids, mask = _ids(eos)
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask)
        hidden, pooled = ours(ids, mask)
        hidden_nomask, _ = ours(ids)
    torch.testing.assert_close(hidden, out.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, out.pooler_output, atol=1e-5, rtol=0)
    # causal + right padding: the mask changes nothing up to each row's end token
    real = mask.bool()
    torch.testing.assert_close(hidden_nomask[real], hidden[real], atol=1e-6, rtol=0)


def test_from_transformers_rejects_other_modules():
    with pytest.raises(TypeError, match="CLIPTextModel"):
        T.TextEncoder.from_transformers(torch.nn.Linear(2, 2))


def test_shapes_and_caption_errors():
    enc = T.TextEncoder()
    hidden, pooled, mask = enc.encode_captions(["a small red circle",
                                                "a large blue cross left of a small red circle"])
    assert hidden.shape == (2, CONTEXT_LENGTH, enc.hidden_size)
    assert pooled.shape == (2, enc.hidden_size) and mask.shape == (2, CONTEXT_LENGTH)
    # pooled = state at the end token
    tokens, _ = CaptionTokenizer()(["a small red circle"])
    eos = int((tokens[0] == T.EOS_ID).nonzero()[0])
    torch.testing.assert_close(pooled[0], hidden[0, eos])
    with pytest.raises(ValueError, match="unknown word 'hexagon'"):
        enc.encode_captions(["a small red hexagon"])
    with pytest.raises(ValueError, match="end-of-text"):
        enc(torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        enc(torch.full((1, CONTEXT_LENGTH + 1), T.EOS_ID))
    with pytest.raises(TypeError, match="input_ids"):
        enc(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="num_attention_heads"):
        T.TextEncoderConfig(hidden_size=30, num_attention_heads=4)


def test_causal_states_ignore_later_tokens_bidirectional_do_not():
    tok = CaptionTokenizer()
    a, _ = tok(["a small red circle left of a small blue square"])
    b, _ = tok(["a small red circle above a large green cross"])
    for causal in (True, False):
        torch.manual_seed(0)
        enc = T.TextEncoder(causal=causal).eval()
        with torch.no_grad():
            ha, _ = enc(a)
            hb, _ = enc(b)
        same_prefix = torch.allclose(ha[0, :5], hb[0, :5], atol=1e-6)  # <bos> a small red circle
        assert same_prefix == causal


def test_clip_loss_equals_its_formula_on_a_hand_batch():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.5, 0.3], [-0.2, 0.1, 0.9]])

    def ce_diag(m):
        return -sum(m[i][i] - math.log(sum(math.exp(v) for v in m[i])) for i in range(3)) / 3

    rows = logits.tolist()
    cols = logits.T.tolist()
    expected = (ce_diag(rows) + ce_diag(cols)) / 2
    assert T.clip_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    # identity positives = the plain loss; a duplicate caption splits the target between copies
    assert T.clip_loss(logits, torch.eye(3, dtype=torch.bool)).item() == pytest.approx(expected)
    pos = T.same_caption(["x", "y", "x"])
    assert pos.tolist() == [[True, False, True], [False, True, False], [True, False, True]]

    def soft(m, p):
        total = 0.0
        for i in range(3):
            lse = math.log(sum(math.exp(v) for v in m[i]))
            ks = [j for j in range(3) if p[i][j]]
            total += -sum(m[i][j] - lse for j in ks) / len(ks)
        return total / 3

    expected_dup = (soft(rows, pos.tolist()) + soft(cols, pos.T.tolist())) / 2
    assert T.clip_loss(logits, pos).item() == pytest.approx(expected_dup, rel=1e-6)
    with pytest.raises(ValueError, match="square"):
        T.clip_loss(torch.zeros(2, 3))


def test_contrastive_model_logits_and_retrieval():
    torch.manual_seed(0)
    model = T.ContrastiveModel(T.TextEncoderConfig(hidden_size=32, num_hidden_layers=1),
                               image_channels=8, image_width=32, projection_dim=16)
    b = ShapesWorld(0, "val").batch(0, 6)
    logits = model(b.tokens, b.images, b.attention_mask)
    u = model.text_embeds(b.tokens, b.attention_mask)
    v = model.image_embeds(b.images)
    torch.testing.assert_close(logits, math.exp(math.log(1 / 0.07)) * u @ v.T)
    assert torch.allclose(u.norm(dim=1), torch.ones(6))
    loss = T.clip_loss(logits, T.same_caption(b.captions))
    loss.backward()
    assert model.logit_scale.grad is not None
    acc = T.retrieval_accuracy(model, b.tokens, b.images, b.captions, b.attention_mask)
    assert set(acc) == {"text_to_image", "image_to_text"}
    with pytest.raises(ValueError, match="pixel_values"):
        model.image_embeds(F.pad(b.images, (0, 1)))


def test_to_transformers_round_trip():
    torch.manual_seed(0)
    ours = T.TextEncoder(hidden_size=32, num_hidden_layers=2, intermediate_size=48).eval()
    ref = ours.to_transformers()
    tokens, mask = CaptionTokenizer()(["a small red circle left of a large blue square",
                                       "a large green cross"])
    with torch.no_grad():
        hidden, _ = ours(tokens, mask)
        out = ref(input_ids=tokens, attention_mask=mask.long())
    torch.testing.assert_close(out.last_hidden_state, hidden, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="causal"):
        T.TextEncoder(causal=False).to_transformers()
