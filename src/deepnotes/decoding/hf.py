"""Our :class:`~deepnotes.decoding.gpt.GPT` weights inside ``transformers``' GPT-2.

The architectures are the same (see :mod:`deepnotes.decoding.gpt`); the only difference in the
weights is that GPT-2's ``Conv1D`` layers store their matrices as (in, out) where ``nn.Linear``
stores (out, in). ``transformers`` is imported lazily: the rest of the package never needs it.
"""

from __future__ import annotations

import torch

from deepnotes.decoding.gpt import GPT, GPTConfig

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_config(config: GPTConfig):
    """A ``transformers.GPT2Config`` of the same shape, with dropout off."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=4 * config.n_embd,
        activation_function="gelu_new", layer_norm_epsilon=config.layer_norm_eps,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """``model``'s weights under GPT2LMHeadModel's names and layouts."""
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a GPT, got {type(model).__name__}")
    out = {}
    for name, tensor in model.state_dict().items():
        value = tensor.detach().clone()
        if name.endswith(_CONV1D):
            value = value.T.contiguous()  # nn.Linear (out, in) -> Conv1D (in, out)
        out[f"transformer.{name}"] = value
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def to_transformers(model: GPT):
    """A ``transformers.GPT2LMHeadModel`` holding ``model``'s weights, in eval mode, same dtype."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel(gpt2_config(model.config)).to(model.wte.weight.dtype)
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(model), strict=False)
    # GPT-2 registers its causal-mask buffers as non-persistent in recent versions, persistent in
    # older ones; anything else missing or unexpected is a real mismatch.
    missing = [k for k in missing if not k.endswith(("attn.bias", "attn.masked_bias"))]
    if missing or unexpected:
        raise ValueError(f"weights do not fit GPT2LMHeadModel: missing {missing}, "
                         f"unexpected {unexpected}")
    hf.tie_weights()
    return hf.eval()
