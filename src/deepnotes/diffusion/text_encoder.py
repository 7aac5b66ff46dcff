"""A CLIP text encoder for the shapes world, trained contrastively against a small image encoder.

Radford et al. (2021), "Learning Transferable Visual Models From Natural Language Supervision"
(CLIP), Sec. 2.3-2.4 and Fig. 3: a text transformer and an image encoder map a caption and an
image to vectors; linear projections into a shared space, L2-normalised, give cosine similarities
``s_ij = <u_i, v_j>``; with a learned temperature ``τ = 1 / exp(t)`` the loss is the symmetric
InfoNCE (van den Oord et al. 2018) over a batch of ``B`` matched pairs:

``L = ½ [CE(logits, I) + CE(logitsᵀ, I)]``, ``logits_ij = exp(t) · <u_i, v_j>``,

where ``CE(·, I)`` is the row-wise cross-entropy towards the diagonal. Stable Diffusion
(Rombach et al. 2022) conditions its U-Net on the frozen text transformer's per-token output
(cross-attention keys and values); SD3 (Esser et al. 2024) also on the pooled output.

The text side, :class:`TextEncoder`, is the architecture of ``transformers``' ``CLIPTextModel``
(same module tree and parameter names; :meth:`TextEncoder.from_transformers` copies one with a
strict ``load_state_dict`` and the outputs then agree): token + learned position embeddings,
pre-LayerNorm transformer layers (multi-head self-attention, an MLP with quick-GELU), a final
LayerNorm; ``last_hidden_state (B, T, d)`` is the per-token output and ``pooled (B, d)`` the
hidden state at each sequence's first end-of-text token.

**Causal, as CLIP.** CLIP's text transformer uses a causal mask; we keep it (``causal=True``,
the default) for two reasons: (i) the pooled end-of-text token is then the only position that has
read the whole caption, which makes it the summary CLIP's contrastive loss shapes, exactly as in
the models SD and SD3 download; (ii) with right padding no earlier position ever sees a pad token,
so the per-token states a U-Net attends to do not depend on the padded length. The cost: a word's
state does not know the words after it (``circle`` in "a red circle left of a blue square" does
not know it is left of something); the cross-attention still sees the later tokens themselves.
``causal=False`` gives the bidirectional variant (T5-like per-token states) for comparison.

The image side, :class:`ImageEncoder`, is a small CNN, not CLIP's ViT: four 3×3 convolution
stages down to 4×4, flattened (so absolute position, which the relations need, survives), and a
linear layer. :class:`ContrastiveModel` joins both as ``transformers``' ``CLIPModel`` does
(``text_projection``, ``visual_projection``, ``logit_scale``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deepnotes.data.shapes import CONTEXT_LENGTH, IMAGE_SIZE, VOCABULARY, CaptionTokenizer

EOS_ID = VOCABULARY.index("<eos>")
"""Id of the end-of-text token whose hidden state is the pooled output."""

ACTIVATIONS = ("quick_gelu", "gelu")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Shape of a :class:`TextEncoder`; field names are ``transformers.CLIPTextConfig`` keys.

    Attributes
    ----------
    vocab_size : int
        Token ids are ``0 .. vocab_size - 1`` (the shapes vocabulary by default).
    hidden_size : int
        ``d``: width of every token state (the cross-attention dimension of the U-Net).
    intermediate_size : int
        Hidden width of each layer's MLP.
    num_hidden_layers, num_attention_heads : int
        Depth, and heads per attention (must divide ``hidden_size``).
    max_position_embeddings : int
        Longest token sequence (the tokenizer's ``CONTEXT_LENGTH`` by default).
    hidden_act : {"quick_gelu", "gelu"}
        MLP activation; CLIP's is ``x · sigmoid(1.702 x)``.
    layer_norm_eps : float
    eos_token_id : int
        Pooled output = the state at the first position holding this id.
    causal : bool
        Causal self-attention as in CLIP (module docstring); False for bidirectional.
    """

    vocab_size: int = len(VOCABULARY)
    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    max_position_embeddings: int = CONTEXT_LENGTH
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = EOS_ID
    causal: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must divide "
                             f"hidden_size={self.hidden_size}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        if not 0 <= self.eos_token_id < self.vocab_size:
            raise ValueError(f"eos_token_id must be in [0, vocab_size), got {self.eos_token_id}")


# --- text transformer (module tree of transformers' CLIPTextModel) -----------------------------
class TextEmbeddings(nn.Module):
    """``token_embedding[ids] + position_embedding[0..T-1]`` ↔ ``CLIPTextEmbeddings``."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(positions)[None]


class TextAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections ↔ ``CLIPAttention``."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` (B, T, d); ``mask`` (B, 1, T, T) bool, True where a query may see a key."""
        b, t, d = x.shape
        h = self.num_heads

        def heads(y):
            return y.view(b, t, h, d // h).transpose(1, 2)                 # (B, h, T, d/h)

        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)),
                                             heads(self.v_proj(x)), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class TextMLP(nn.Module):
    """``fc2(act(fc1(x)))`` ↔ ``CLIPMLP``."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.quick = config.hidden_act == "quick_gelu"
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = x * torch.sigmoid(1.702 * x) if self.quick else F.gelu(x)
        return self.fc2(x)


class TextEncoderLayer(nn.Module):
    """Pre-LN block ``x + attn(LN1(x))``, then ``+ mlp(LN2(·))`` ↔ ``CLIPEncoderLayer``."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.self_attn = TextAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = TextMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class _Layers(nn.Module):
    """Holds ``layers`` so parameter names read ``encoder.layers.i...`` (``CLIPEncoder``)."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(TextEncoderLayer(config)
                                    for _ in range(config.num_hidden_layers))


class TextEncoder(nn.Module):
    """The CLIP text transformer: ``input_ids (B, T) → (last_hidden_state, pooled)``.

    Parameters
    ----------
    config : TextEncoderConfig, optional
    **overrides
        Fields of the config to change.
    """

    def __init__(self, config: TextEncoderConfig | None = None, **overrides: Any):
        super().__init__()
        config = TextEncoderConfig(**{**(asdict(config) if config else {}), **overrides})
        self.config = config
        self.embeddings = TextEmbeddings(config)
        self.encoder = _Layers(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        """CLIP's initialisation (``transformers``' ``CLIPPreTrainedModel._init_weights`` with
        factor 1): embeddings N(0, 0.02²); q/k/v, fc2 N(0, (d^-½ (2L)^-½)²); out_proj
        N(0, 1/d); fc1 N(0, 1/(2d)); biases 0."""
        d, n = self.config.hidden_size, self.config.num_hidden_layers
        nn.init.normal_(self.embeddings.token_embedding.weight, std=0.02)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=0.02)
        in_std = d ** -0.5 * (2 * n) ** -0.5
        for layer in self.encoder.layers:
            a, m = layer.self_attn, layer.mlp
            for lin, std in ((a.q_proj, in_std), (a.k_proj, in_std), (a.v_proj, in_std),
                             (a.out_proj, d ** -0.5), (m.fc1, (2 * d) ** -0.5), (m.fc2, in_std)):
                nn.init.normal_(lin.weight, std=std)
                nn.init.zeros_(lin.bias)

    @property
    def hidden_size(self) -> int:
        """``d``, the width of both outputs."""
        return self.config.hidden_size

    def _check(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long,
                                                                                torch.int):
            raise TypeError("input_ids must be an integer (long) tensor")
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
        cfg = self.config
        if input_ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(f"input_ids has {input_ids.shape[1]} tokens, more than "
                             f"max_position_embeddings={cfg.max_position_embeddings}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= cfg.vocab_size):
            raise ValueError(f"input_ids must lie in [0, vocab_size={cfg.vocab_size})")
        if not (input_ids == cfg.eos_token_id).any(1).all():
            raise ValueError(f"every row of input_ids must hold the end-of-text token "
                             f"(id {cfg.eos_token_id}); the pooled output is read there")
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids "
                                 f"{tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
            if not attention_mask[:, 0].bool().all():
                raise ValueError("attention_mask must keep the first token (right padding)")

    def _mask(self, t: int, attention_mask: torch.Tensor | None, device) -> torch.Tensor | None:
        """(B or 1, 1, T, T) bool: causal and/or key padding; None when nothing is masked."""
        mask = None
        if self.config.causal:
            mask = torch.ones(t, t, dtype=torch.bool, device=device).tril()[None, None]
        if attention_mask is not None:
            keys = attention_mask.bool()[:, None, None, :]                  # (B, 1, 1, T)
            mask = keys if mask is None else mask & keys
        return mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode token ids.

        Parameters
        ----------
        input_ids : LongTensor, shape (B, T), T ≤ max_position_embeddings
            Each row holds ``eos_token_id`` (as :class:`~deepnotes.data.shapes.CaptionTokenizer`
            produces).
        attention_mask : Tensor, shape (B, T), optional
            1/True on real tokens; pad keys are hidden from every query. With causal attention
            and right padding it changes only the states at pad positions.

        Returns
        -------
        last_hidden_state : Tensor, shape (B, T, d)
            After the final LayerNorm (what a U-Net cross-attends to).
        pooled : Tensor, shape (B, d)
            ``last_hidden_state`` at each row's first end-of-text token.
        """
        self._check(input_ids, attention_mask)
        x = self.embeddings(input_ids)
        mask = self._mask(input_ids.shape[1], attention_mask, x.device)
        for layer in self.encoder.layers:
            x = layer(x, mask)
        x = self.final_layer_norm(x)                                         # (B, T, d)
        eos = (input_ids == self.config.eos_token_id).int().argmax(1)       # first end token
        return x, x[torch.arange(x.shape[0], device=x.device), eos]

    def encode_captions(self, captions: list[str] | str
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokenize ``captions`` (an unknown word raises ``ValueError`` naming it) and encode.

        Returns ``(last_hidden_state (B, CONTEXT_LENGTH, d), pooled (B, d), attention_mask
        (B, CONTEXT_LENGTH))`` on this module's device.
        """
        tokens, mask = CaptionTokenizer()(captions)
        device = self.embeddings.token_embedding.weight.device
        tokens, mask = tokens.to(device), mask.to(device)
        hidden, pooled = self(tokens, mask)
        return hidden, pooled, mask

    # --- transformers interop --------------------------------------------------------------
    @classmethod
    def from_transformers(cls, module: nn.Module, causal: bool = True) -> TextEncoder:
        """Copy a ``transformers.CLIPTextModel`` (or the ``text_model`` of a
        ``CLIPTextModelWithProjection``) with a strict ``load_state_dict``.

        ``transformers`` reads the pooled token at the arg-max id when ``eos_token_id == 2`` (its
        legacy rule); this class always reads the first end-of-text token, so the pooled outputs
        agree when that token is also the largest id of its row, or when ``eos_token_id != 2``.
        """
        cfg = getattr(module, "config", None)
        if cfg is None or not hasattr(cfg, "hidden_size") or not hasattr(module, "embeddings"):
            raise TypeError(f"module must be a transformers CLIPTextModel, got "
                            f"{type(module).__name__}")
        kw = {f.name: getattr(cfg, f.name) for f in fields(TextEncoderConfig)
              if f.name != "causal"}
        ours = cls(TextEncoderConfig(**kw, causal=causal))
        state = {k: v for k, v in module.state_dict().items() if not k.endswith("position_ids")}
        ours.load_state_dict(state, strict=True)
        return ours.to(next(module.parameters()).dtype)

    def to_transformers(self) -> nn.Module:
        """A ``transformers.CLIPTextModel`` with this module's weights (causal encoders only),
        e.g. to assemble a diffusers pipeline from the same parts.

        Its ``last_hidden_state`` equals ours. With ``eos_token_id == 2`` (the shapes vocabulary)
        ``transformers`` pools at the arg-max id instead of the end token (its legacy rule), so
        use our ``pooled`` rather than its ``pooler_output``.
        """
        import transformers

        if not self.config.causal:
            raise ValueError("transformers' CLIPTextModel is causal; this encoder is not")
        cfg = self.config
        tcfg = transformers.CLIPTextConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            max_position_embeddings=cfg.max_position_embeddings, hidden_act=cfg.hidden_act,
            layer_norm_eps=cfg.layer_norm_eps, eos_token_id=cfg.eos_token_id, bos_token_id=1,
            pad_token_id=0)
        model = transformers.CLIPTextModel(tcfg)
        model.load_state_dict(self.state_dict(), strict=False)
        missing = set(model.state_dict()) - set(self.state_dict())
        if any(not k.endswith("position_ids") for k in missing):
            raise RuntimeError(f"parameters not copied: {sorted(missing)}")  # pragma: no cover
        return model.to(self.embeddings.token_embedding.weight).eval()


# --- image encoder and the contrastive pair ----------------------------------------------------
class ImageEncoder(nn.Module):
    """A small CNN for 32×32 RGB: ``(B, 3, 32, 32) → (B, width)``.

    Stages of (3×3 conv, SiLU) at 32, 16, 8 and 4 pixels (stride-2 convolutions between them,
    channels ``c, 2c, 2c, 2c``), then the 4×4 map flattened and a linear layer to ``width``.
    """

    def __init__(self, channels: int = 32, width: int = 128):
        super().__init__()
        for name, v in (("channels", channels), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        c, c2 = channels, 2 * channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c2, 3, stride=2, padding=1), nn.SiLU(),              # 16×16
            nn.Conv2d(c2, c2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c2, c2, 3, stride=2, padding=1), nn.SiLU(),             # 8×8
            nn.Conv2d(c2, c2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c2, c2, 3, stride=2, padding=1), nn.SiLU(),             # 4×4
        )
        side = IMAGE_SIZE // 8
        self.fc = nn.Linear(c2 * side * side, width)
        self.norm = nn.LayerNorm(width)
        self.width = width

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` (B, 3, 32, 32) in [-1, 1] → (B, width)."""
        if (not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4
                or pixel_values.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE)):
            shape = tuple(getattr(pixel_values, "shape", ()))
            raise ValueError(f"pixel_values must have shape (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), "
                             f"got {shape}")
        return self.norm(self.fc(self.body(pixel_values).flatten(1)))


class ContrastiveModel(nn.Module):
    """Text and image encoders with projections and a learned temperature ↔ ``CLIPModel``.

    Parameters
    ----------
    text_config : TextEncoderConfig, optional
    image_channels, image_width : int
        :class:`ImageEncoder` sizes.
    projection_dim : int
        Width of the shared embedding space.
    logit_scale_init : float
        Initial ``t`` (CLIP: ``ln(1 / 0.07)``); the logits are scaled by ``exp(t)``, clamped at
        100 as in CLIP.
    """

    def __init__(self, text_config: TextEncoderConfig | None = None, image_channels: int = 32,
                 image_width: int = 128, projection_dim: int = 64,
                 logit_scale_init: float = math.log(1 / 0.07)):
        super().__init__()
        self.text_model = TextEncoder(text_config)
        self.vision_model = ImageEncoder(image_channels, image_width)
        self.text_projection = nn.Linear(self.text_model.hidden_size, projection_dim, bias=False)
        self.visual_projection = nn.Linear(image_width, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Unit-norm text embeddings ``u`` (B, projection_dim)."""
        return F.normalize(self.text_projection(self.text_model(input_ids, attention_mask)[1]),
                           dim=-1)

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings ``v`` (B, projection_dim)."""
        return F.normalize(self.visual_projection(self.vision_model(pixel_values)), dim=-1)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``logits_per_text`` (B_text, B_image) ``= exp(t) · u vᵀ`` (``exp(t) ≤ 100``)."""
        u = self.text_embeds(input_ids, attention_mask)
        v = self.image_embeds(pixel_values)
        return self.logit_scale.exp().clamp(max=100.0) * u @ v.T


def clip_loss(logits_per_text: torch.Tensor, positives: torch.Tensor | None = None
              ) -> torch.Tensor:
    """Symmetric InfoNCE of a (B, B) text-image logit matrix (module docstring; CLIP Fig. 3).

    ``½ [CE_rows + CE_columns]`` towards the diagonal. With ``positives`` (a (B, B) bool matrix,
    True where text ``i`` describes image ``j``, diagonal included), each row's target is uniform
    over its positives instead of one-hot (a batch of the shapes world often holds one caption
    twice; calling the copy a negative would push apart two correct pairs).
    """
    if logits_per_text.ndim != 2 or logits_per_text.shape[0] != logits_per_text.shape[1]:
        raise ValueError(f"logits_per_text must be a square (B, B) matrix, got "
                         f"{tuple(logits_per_text.shape)}")
    b = logits_per_text.shape[0]
    if positives is None:
        target = torch.arange(b, device=logits_per_text.device)
        return (F.cross_entropy(logits_per_text, target)
                + F.cross_entropy(logits_per_text.T, target)) / 2
    if positives.shape != (b, b) or not positives.diagonal().all():
        raise ValueError("positives must be a (B, B) bool matrix with a true diagonal")
    p = positives.float()
    rows = p / p.sum(1, keepdim=True)
    cols = p.T / p.T.sum(1, keepdim=True)
    return (F.cross_entropy(logits_per_text, rows) + F.cross_entropy(logits_per_text.T, cols)) / 2


def same_caption(captions: list[str]) -> torch.Tensor:
    """(B, B) bool: ``captions[i] == captions[j]`` (the ``positives`` of :func:`clip_loss`)."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    k = torch.tensor([ids[c] for c in captions])
    return k[:, None] == k[None, :]


@torch.no_grad()
def retrieval_accuracy(model: ContrastiveModel, input_ids: torch.Tensor,
                       pixel_values: torch.Tensor, captions: list[str],
                       attention_mask: torch.Tensor | None = None) -> dict[str, float]:
    """Top-1 retrieval among ``B`` held-out pairs: ``text_to_image`` is the share of captions
    whose most similar image has that caption (a duplicate caption's image counts as a hit),
    ``image_to_text`` the converse."""
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids, pixel_values, attention_mask).cpu()
    finally:
        model.train(was_training)
    pos = same_caption(captions)
    rows = torch.arange(len(captions))
    return {"text_to_image": float(pos[rows, logits.argmax(1)].float().mean()),
            "image_to_text": float(pos[logits.argmax(0), rows].float().mean())}
