"""Online action detection: causal per-frame classifiers of a stream, and their metrics.

An online detector reads a stream of frame features ``x_1, x_2, ...`` and, at every frame ``t``,
outputs scores over ``C + 1`` classes (``0`` is background) for the action happening *now*, using
only ``x_1..x_t`` (Eq. 1 of the post). Every model here also anticipates: it outputs scores for
the labels of frames ``t + 1 .. t + K`` from the same past (Eq. 2).

Models (one interface: ``model(x)`` with ``x`` of shape (B, T, D) returns an :class:`OnlineOutput`
whose row ``t`` depends on ``x[:, :t + 1]`` only):

- :class:`RecurrentDetector` -- LSTM or GRU over the frames, a linear head for the present and one
  for the K future frames (the baselines).
- :class:`TRN` -- Xu et al. 2019, "Temporal Recurrent Networks for Online Action Detection", ICCV:
  at every step a temporal decoder rolls K steps into the future from the encoder's state, and
  the average of its hidden states is fed back into the next encoder step (Eq. 3-5).
- :class:`IDN` -- Eun et al. 2020, "Learning to Discriminate Information for Online Action
  Detection", CVPR: information discrimination units, GRU cells whose gates compare each past
  frame with the current one, over a window of the last ``window`` frames (Eq. 6-9).
- :class:`OadTR` -- Wang et al. 2021, "OadTR: Online Action Detection with Transformers", ICCV:
  a transformer encoder over the window and a task token, a decoder of K learned future queries,
  and a classifier on the task token joined with the pooled decoder output (Eq. 10-11).

Window models (IDN, OadTR) see frames ``t - window + 1 .. t``; before the stream starts the window
is padded and the padding is masked (IDN skips the update, OadTR's attention ignores it).

Metrics (numpy, pure): :func:`average_precision` and :func:`calibrated_average_precision` of one
class, :func:`frame_map` (per-frame mAP over the action classes, background excluded, as in the
THUMOS'14 protocol of the papers above; calibrated with ``calibrated=True``, De Geest et al. 2016,
"Online Action Detection", ECCV), :func:`detection_latency` (from an action's first frame to its
first correctly classified frame) and :func:`anticipation_accuracy` (accuracy of the label
predicted ``i`` frames ahead, ``i = 1..K``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("lstm", "gru", "trn", "idn", "oadtr")
"""Names accepted by :func:`build_model`."""


class OnlineOutput(NamedTuple):
    """What every detector returns for a batch of streams of ``T`` frames.

    Attributes
    ----------
    current : Tensor, shape (B, T, C + 1)
        Logits of the label of frame ``t`` (Eq. 1).
    future : Tensor, shape (B, T, K, C + 1)
        ``future[:, t, i - 1]``: logits of the label of frame ``t + i`` (Eq. 2).
    aux : dict of str to Tensor
        Model-specific terms for :func:`detection_loss` (IDN: ``early_logits`` (B, T, C + 1) and
        ``window_dist`` (B, T, W), the distance of each window frame's embedding to the current
        one's); empty for the other models.
    """

    current: torch.Tensor
    future: torch.Tensor
    aux: dict[str, torch.Tensor]


def _check_input(x: torch.Tensor, in_dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != in_dim:
        raise ValueError(f"x must have shape (B, T, {in_dim}), got {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError("x must hold at least one frame")


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _windows(e: torch.Tensor, window: int,
             last: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``window`` frames ending at each of the last ``last`` frames (all frames if None).

    Parameters
    ----------
    e : Tensor, shape (B, T, H)

    Returns
    -------
    windows : Tensor, shape (B * L, window, H), ``L = last``
        ``windows[b * L + i, j]`` is ``e[b, t - window + 1 + j]`` with ``t = T - L + i`` (zeros
        before the stream).
    valid : Tensor, shape (B * L, window), bool
        False where the window reaches before frame 0.
    """
    b, t, h = e.shape
    last = t if last is None else last
    padded = F.pad(e, (0, 0, window - 1, 0))  # (B, T + W - 1, H)
    win = padded.unfold(1, window, 1)[:, t - last:].permute(0, 1, 3, 2)  # (B, L, W, H)
    ends = torch.arange(t - last, t, device=e.device)
    pos = ends[:, None] - window + 1 + torch.arange(window, device=e.device)
    valid = (pos >= 0).expand(b, last, window)
    return win.reshape(b * last, window, h), valid.reshape(b * last, window)


class OnlineDetector(nn.Module):
    """Shared parts: the frame embedding and the sizes.

    Parameters
    ----------
    in_dim : int
        Features per frame ``D``.
    n_classes : int
        Labels including background, ``C + 1``.
    hidden : int
        Width of the embedding and of the recurrent / attention state.
    horizon : int
        Future frames anticipated, ``K``.
    dropout : float
        Dropout on the embedding and before the heads.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 64, horizon: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        _check_sizes(in_dim=in_dim, hidden=hidden, horizon=horizon)
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2 (background + actions), "
                             f"got {n_classes!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.n_classes, self.hidden, self.horizon = in_dim, n_classes, hidden, horizon
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def _n_last(self, x: torch.Tensor, last: int | None) -> int:
        """Validate ``x`` and ``last``; the number of output rows."""
        _check_input(x, self.in_dim)
        if last is None:
            return x.shape[1]
        if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= x.shape[1]:
            raise ValueError(f"last must be an int in [1, T={x.shape[1]}], got {last!r}")
        return last


class RecurrentDetector(OnlineDetector):
    """LSTM or GRU baseline: ``h_t = cell(h_{t-1}, embed(x_t))``, heads on ``h_t``.

    The present is ``W_c h_t``; the K future labels are ``W_f h_t`` reshaped to (K, C + 1): the
    same anticipation head every model has, without a decoder.

    Parameters
    ----------
    kind : {"lstm", "gru"}
    layers : int
        Stacked recurrent layers.
    Other parameters as :class:`OnlineDetector`.
    """

    def __init__(self, in_dim: int, n_classes: int, kind: str = "lstm", hidden: int = 64,
                 horizon: int = 4, layers: int = 1, dropout: float = 0.1):
        super().__init__(in_dim, n_classes, hidden, horizon, dropout)
        if kind not in ("lstm", "gru"):
            raise ValueError(f"kind must be 'lstm' or 'gru', got {kind!r}")
        _check_sizes(layers=layers)
        self.kind = kind
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(hidden, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)
        self.future_head = nn.Linear(hidden, horizon * n_classes)

    def forward(self, x: torch.Tensor, last: int | None = None) -> OnlineOutput:
        """Outputs for the last ``last`` frames of ``x``, shape (B, T, D) (all when None)."""
        n = self._n_last(x, last)
        h, _ = self.rnn(self.embed(x))  # (B, T, H)
        h = self.drop(h[:, x.shape[1] - n:])
        future = self.future_head(h).unflatten(-1, (self.horizon, self.n_classes))
        return OnlineOutput(self.head(h), future, {})


class TRN(OnlineDetector):
    """Temporal Recurrent Network (Xu et al. 2019): anticipate, then feed the anticipation back.

    Per frame ``t`` (Eq. 3-5 of the post):

    1. encoder (the paper's spatiotemporal accumulator), an LSTM cell:
       ``(h_t, c_t) = LSTM([embed(x_t), f_{t-1}], (h_{t-1}, c_{t-1}))``, present ``W_c h_t``;
    2. temporal decoder, an LSTM cell started from ``(A_h h_t, A_c c_t)``, rolled for K steps; its
       input at step ``i`` is a projection of the scores it produced at step ``i - 1`` (of the
       present's scores at ``i = 1``), its hidden state ``d_i`` gives the scores ``W_c d_i`` of
       frame ``t + i`` (one classifier shared by encoder and decoder, as in the paper);
    3. future gate: ``f_t = ReLU(W_f mean_i d_i)`` enters the encoder at ``t + 1``.

    Parameters as :class:`OnlineDetector`.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 64, horizon: int = 4,
                 dropout: float = 0.1):
        super().__init__(in_dim, n_classes, hidden, horizon, dropout)
        self.encoder = nn.LSTMCell(2 * hidden, hidden)
        self.decoder = nn.LSTMCell(hidden, hidden)
        self.to_dec_h = nn.Linear(hidden, hidden)
        self.to_dec_c = nn.Linear(hidden, hidden)
        self.score_in = nn.Sequential(nn.Linear(n_classes, hidden), nn.ReLU())
        self.future_gate = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor, last: int | None = None) -> OnlineOutput:
        """Outputs for the last ``last`` frames of ``x``, shape (B, T, D) (all when None)."""
        n = self._n_last(x, last)
        e = self.embed(x)  # (B, T, H)
        b, t_len, h_dim = e.shape
        h = e.new_zeros(b, h_dim)
        c = e.new_zeros(b, h_dim)
        fut = e.new_zeros(b, h_dim)
        current, future = [], []
        for t in range(t_len):
            h, c = self.encoder(torch.cat([e[:, t], fut], dim=1), (h, c))
            score = self.classifier(self.drop(h))  # (B, C + 1)
            current.append(score)
            dh, dc = self.to_dec_h(h), self.to_dec_c(c)
            dec_scores, dec_sum = [], torch.zeros_like(h)
            for _ in range(self.horizon):
                dh, dc = self.decoder(self.drop(self.score_in(score)), (dh, dc))
                score = self.classifier(self.drop(dh))
                dec_scores.append(score)
                dec_sum = dec_sum + dh
            future.append(torch.stack(dec_scores, dim=1))  # (B, K, C + 1)
            fut = self.future_gate(dec_sum / self.horizon)
        return OnlineOutput(torch.stack(current[t_len - n:], 1),
                            torch.stack(future[t_len - n:], 1), {})


class IDUCell(nn.Module):
    """Information discrimination unit (Eun et al. 2020, Eq. 6-9 of the post).

    A GRU whose gates are conditioned on the current frame's embedding ``x0``:

    - reset ``r = sigmoid(W_hr h + W_0r x0)``: how relevant the accumulated state is to now;
    - update ``z = sigmoid(W_xz x + W_0z x0)``: how relevant the incoming frame is to now;
    - ``h' = tanh(W_xh x + W_hh (r * h))``, ``h_new = (1 - z) * (r * h) + z * h'``.

    Parameters
    ----------
    hidden : int
        Width of the embeddings and of the state.
    """

    def __init__(self, hidden: int):
        super().__init__()
        _check_sizes(hidden=hidden)
        self.w_hr = nn.Linear(hidden, hidden, bias=False)
        self.w_0r = nn.Linear(hidden, hidden)
        self.w_xz = nn.Linear(hidden, hidden, bias=False)
        self.w_0z = nn.Linear(hidden, hidden)
        self.w_xh = nn.Linear(hidden, hidden)
        self.w_hh = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor, x0: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step: ``x``, ``x0``, ``h`` each shape (N, H); returns the new state (N, H)."""
        r = torch.sigmoid(self.w_hr(h) + self.w_0r(x0))
        h_reset = r * h
        z = torch.sigmoid(self.w_xz(x) + self.w_0z(x0))
        candidate = torch.tanh(self.w_xh(x) + self.w_hh(h_reset))
        return (1 - z) * h_reset + z * candidate


class IDN(OnlineDetector):
    """Information Discrimination Network (Eun et al. 2020).

    Every frame is embedded early, ``x~_t = ReLU(W x_t)`` (the early embedding module, with its own
    classifier); for frame ``t`` an :class:`IDUCell` runs over ``x~_{t-W+1} .. x~_t`` with
    ``x0 = x~_t``, and the last state classifies the present (and, through the shared anticipation
    head, the K future frames). :func:`detection_loss` adds the early classifier's cross-entropy
    and the contrastive loss that pulls embeddings of the current action towards ``x0`` (Eq. 9).

    Parameters
    ----------
    window : int
        Frames per window ``W``, the current one included.
    Other parameters as :class:`OnlineDetector`.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 64, horizon: int = 4,
                 window: int = 12, dropout: float = 0.1):
        super().__init__(in_dim, n_classes, hidden, horizon, dropout)
        _check_sizes(window=window)
        self.window = window
        self.cell = IDUCell(hidden)
        self.early_head = nn.Linear(hidden, n_classes)
        self.head = nn.Linear(hidden, n_classes)
        self.future_head = nn.Linear(hidden, horizon * n_classes)

    def forward(self, x: torch.Tensor, last: int | None = None) -> OnlineOutput:
        """Outputs for the last ``last`` frames of ``x``, shape (B, T, D) (all when None).

        Only the windows of those frames are computed (training on a few frames per crop).
        """
        n = self._n_last(x, last)
        b = x.shape[0]
        e = self.embed(x)  # (B, T, H): the early embedding
        win, valid = _windows(e, self.window, n)  # (B*L, W, H), (B*L, W)
        x0 = win[:, -1]
        h = torch.zeros_like(x0)
        for j in range(self.window):
            step = self.cell(win[:, j], x0, h)
            h = torch.where(valid[:, j, None], step, h)  # padding before the stream: no update
        h = self.drop(h).view(b, n, -1)
        future = self.future_head(h).unflatten(-1, (self.horizon, self.n_classes))
        dist = (win - x0[:, None]).norm(dim=-1).view(b, n, self.window)  # (B, L, W)
        early = self.early_head(self.drop(e[:, e.shape[1] - n:]))
        aux = {"early_logits": early, "window_dist": dist}
        return OnlineOutput(self.head(h), future, aux)


class OadTR(OnlineDetector):
    """OadTR (Wang et al. 2021): transformer encoder over the past, decoder over future queries.

    For frame ``t``: tokens ``embed(x_{t-W+1}) .. embed(x_t)`` and a learned task token, plus
    learned position embeddings, go through a transformer encoder; K learned queries go through a
    transformer decoder that attends to the encoder's output (Eq. 10); query ``i`` classifies frame
    ``t + i``. The present is classified from the task token's output concatenated with the mean
    of the decoder's outputs (Eq. 11).

    Parameters
    ----------
    window : int
        Past frames per window ``W``, the current one included.
    heads : int
        Attention heads (must divide ``hidden``).
    enc_layers, dec_layers : int
        Encoder and decoder depths.
    Other parameters as :class:`OnlineDetector`.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 64, horizon: int = 4,
                 window: int = 12, heads: int = 4, enc_layers: int = 2, dec_layers: int = 1,
                 dropout: float = 0.1):
        super().__init__(in_dim, n_classes, hidden, horizon, dropout)
        _check_sizes(window=window, heads=heads, enc_layers=enc_layers, dec_layers=dec_layers)
        if hidden % heads:
            raise ValueError(f"heads ({heads}) must divide hidden ({hidden})")
        self.window = window
        self.task_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.pos = nn.Parameter(0.02 * torch.randn(1, window + 1, hidden))
        self.queries = nn.Parameter(0.02 * torch.randn(1, horizon, hidden))
        enc = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True,
                                         norm_first=True)
        dec = nn.TransformerDecoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True,
                                         norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, enc_layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, dec_layers)
        self.norm = nn.LayerNorm(hidden)
        self.future_head = nn.Linear(hidden, n_classes)
        self.head = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor, last: int | None = None) -> OnlineOutput:
        """Outputs for the last ``last`` frames of ``x``, shape (B, T, D) (all when None).

        Only the windows of those frames are computed (training on a few frames per crop).
        """
        t_len = self._n_last(x, last)
        b = x.shape[0]
        win, valid = _windows(self.embed(x), self.window, t_len)  # (N, W, H), (N, W); N = B*L
        n = win.shape[0]
        tokens = torch.cat([win, self.task_token.expand(n, -1, -1)], dim=1) + self.pos
        pad = torch.cat([~valid, valid.new_zeros(n, 1)], dim=1)  # (N, W + 1); True = ignore
        memory = self.norm(self.encoder(tokens, src_key_padding_mask=pad))  # (N, W + 1, H)
        dec = self.decoder(self.queries.expand(n, -1, -1), memory,
                           memory_key_padding_mask=pad)  # (N, K, H)
        dec = self.drop(self.norm(dec))
        present = torch.cat([memory[:, -1], dec.mean(1)], dim=1)  # task token + pooled future
        current = self.head(self.drop(present)).view(b, t_len, -1)
        future = self.future_head(dec).view(b, t_len, self.horizon, -1)
        return OnlineOutput(current, future, {})


def build_model(name: str, in_dim: int, n_classes: int, *, hidden: int = 64, horizon: int = 4,
                window: int = 12, dropout: float = 0.1) -> OnlineDetector:
    """One of :data:`MODELS` with the shared sizes (``window`` only for IDN and OadTR)."""
    if name in ("lstm", "gru"):
        return RecurrentDetector(in_dim, n_classes, name, hidden, horizon, dropout=dropout)
    if name == "trn":
        return TRN(in_dim, n_classes, hidden, horizon, dropout)
    if name == "idn":
        return IDN(in_dim, n_classes, hidden, horizon, window, dropout)
    if name == "oadtr":
        return OadTR(in_dim, n_classes, hidden, horizon, window, dropout=dropout)
    raise ValueError(f"name must be one of {MODELS}, got {name!r}")


def future_targets(labels: torch.Tensor, horizon: int, ignore_index: int = -100) -> torch.Tensor:
    """Labels of frames ``t + 1 .. t + K`` for every ``t``, shape (B, T, K).

    Frames past the end of the stream get ``ignore_index``.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (B, T), got {tuple(labels.shape)}")
    padded = F.pad(labels, (0, horizon), value=ignore_index)  # (B, T + K)
    return padded.unfold(1, horizon + 1, 1)[:, :, 1:]


def detection_loss(out: OnlineOutput, labels: torch.Tensor, *, lookahead: int = 0,
                   future_weight: float = 0.5, contrastive_margin: float = 1.0,
                   contrastive_weight: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Training loss of every detector (Eq. 12 of the post).

    ``CE(current_t, y_t) + future_weight * mean_i CE(future_{t,i}, y_{t+i})``, plus for IDN the
    early embedding's cross-entropy and ``contrastive_weight`` times the contrastive loss
    ``s d^2 + (1 - s) max(0, m - d)^2`` with ``d = ||x~_{t-j} - x~_t||`` over the window and
    ``s = [y_{t-j} = y_t]`` (Eq. 9). Future frames past the end of ``labels`` are ignored.

    Labels may run ``lookahead`` frames past the input: those frames are never seen by the model
    (it only receives the input), they only give targets to the anticipation of the last rows.

    Parameters
    ----------
    out : OnlineOutput
        A model's output for the last ``L`` frames of an input of ``T`` frames (``L = T`` unless
        the model was called with ``last``).
    labels : Tensor, shape (B, T + lookahead), int64
        True labels of the input's T frames and of the ``lookahead`` frames after it, ``-100``
        where a frame must be ignored.
    lookahead : int
        Label columns after the input's last frame (targets of Eq. 2 only).

    Returns
    -------
    loss : scalar Tensor
    parts : dict of the terms, as floats (for logging)
    """
    b, n = out.current.shape[:2]
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 0:
        raise ValueError(f"lookahead must be an int >= 0, got {lookahead!r}")
    if labels.ndim != 2 or labels.shape[0] != b or labels.shape[1] - lookahead < n:
        raise ValueError(f"labels must have shape ({b}, T + lookahead) with T >= {n} (the "
                         f"frames of the input), got {tuple(labels.shape)}")
    t_len = labels.shape[1] - lookahead  # frames of the input
    now = labels[:, t_len - n:t_len]  # (B, L)
    n_cls = out.current.shape[-1]
    ce_now = F.cross_entropy(out.current.reshape(-1, n_cls), now.reshape(-1))
    tgt = future_targets(labels, out.future.shape[2])[:, t_len - n:t_len]  # (B, L, K)
    ce_fut = F.cross_entropy(out.future.reshape(-1, n_cls), tgt.reshape(-1))
    loss = ce_now + future_weight * ce_fut
    parts = {"ce_current": float(ce_now.detach()), "ce_future": float(ce_fut.detach())}
    if "early_logits" in out.aux:
        ce_early = F.cross_entropy(out.aux["early_logits"].reshape(-1, n_cls), now.reshape(-1))
        dist = out.aux["window_dist"]  # (B, L, W)
        window = dist.shape[-1]
        inputs = labels[:, :t_len, None].float()
        lab_win, valid = _windows(inputs, window, n)  # (B*L, W, 1), (B*L, W)
        anchor = now.reshape(-1, 1).float()
        valid = valid & (lab_win[..., 0] >= 0) & (anchor >= 0)
        dist = dist.reshape(-1, window)
        same = (lab_win[..., 0] == anchor).float()
        con = same * dist**2 + (1 - same) * F.relu(contrastive_margin - dist) ** 2
        con = (con * valid).sum() / valid.sum().clamp_min(1)
        loss = loss + ce_early + contrastive_weight * con
        parts.update(ce_early=float(ce_early.detach()), contrastive=float(con.detach()))
    return loss, parts


# --------------------------------------------------------------------------------------------
# Metrics


def _check_scores(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.ndim != 1 or targets.shape != scores.shape:
        raise ValueError(f"scores and targets must be 1-D of equal length, got {scores.shape} "
                         f"and {targets.shape}")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be binary (0 or 1)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, targets.astype(bool)


def _ranked_counts(scores: np.ndarray, targets: np.ndarray):
    """True and false positives at each distinct score threshold, highest threshold first."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], targets[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each group of ties
    return tp[last], fp[last]


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class over frames (Eq. 13 of the post).

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds, highest first; frames
    with tied scores enter together (as ``sklearn.metrics.average_precision_score``). Equivalently,
    the mean over positive frames of the precision at that frame's score.

    Parameters
    ----------
    scores : ndarray, shape (N,)
    targets : ndarray, shape (N,), in {0, 1}

    Returns
    -------
    float, ``nan`` when there is no positive frame
    """
    scores, targets = _check_scores(scores, targets)
    n_pos = targets.sum()
    if n_pos == 0:
        return float("nan")
    tp, fp = _ranked_counts(scores, targets)
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0, tp]) * precision) / n_pos)


def calibrated_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Calibrated AP of one class (De Geest et al. 2016; Eq. 14 of the post).

    Precision is replaced by ``cPrec = w TP / (w TP + FP)``, ``w = N_neg / N_pos``: the precision
    the ranking would have if positives and negatives were equally frequent, so a class's score
    does not depend on how much background the test streams hold. Ties as in
    :func:`average_precision`.

    Returns
    -------
    float, ``nan`` when there is no positive or no negative frame
    """
    scores, targets = _check_scores(scores, targets)
    n_pos = targets.sum()
    n_neg = len(targets) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    w = n_neg / n_pos
    tp, fp = _ranked_counts(scores, targets)
    cprec = w * tp / (w * tp + fp)
    return float(np.sum(np.diff(np.r_[0, tp]) * cprec) / n_pos)


def frame_map(scores: np.ndarray, labels: np.ndarray, *, background: int = 0,
              calibrated: bool = False) -> tuple[float, np.ndarray]:
    """Per-frame mean AP over the action classes, background excluded (THUMOS'14 protocol).

    Each action class ``c`` ranks all frames of all streams by ``scores[:, c]``; the positives are
    the frames labelled ``c``. The mean is over classes that have at least one positive frame.

    Parameters
    ----------
    scores : ndarray, shape (N, C + 1)
        Class scores of every frame (probabilities or logits: only the ranking matters).
    labels : ndarray, shape (N,), int
    background : int
        The column left out of the mean.
    calibrated : bool
        Use :func:`calibrated_average_precision` (the "mcAP" of TVSeries).

    Returns
    -------
    mean : float
    per_class : ndarray, shape (C + 1,), ``nan`` for the background and absent classes
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, C + 1) and labels (N,), got {scores.shape} and "
                         f"{labels.shape}")
    if not 0 <= background < scores.shape[1]:
        raise ValueError(f"background must index a column of scores, got {background}")
    ap_fn = calibrated_average_precision if calibrated else average_precision
    per_class = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        if c != background and (labels == c).any():
            per_class[c] = ap_fn(scores[:, c], (labels == c).astype(np.int64))
    present = per_class[~np.isnan(per_class)]
    if present.size == 0:
        raise ValueError("no action class has a positive frame")
    return float(present.mean()), per_class


def action_instances(labels: np.ndarray, background: int = 0) -> np.ndarray:
    """Maximal runs of one action label, shape (M, 3): rows ``(start, end, label)``, end excluded.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(labels)) + 1]
    ends = np.r_[starts[1:], labels.size]
    runs = np.stack([starts, ends, labels[starts]], axis=1).astype(np.int64)
    return runs[runs[:, 2] != background]


def detection_latency(pred: np.ndarray, labels: np.ndarray,
                      background: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames from each action's start to its first correctly classified frame (Eq. 15).

    For every instance ``[s, e)`` of action ``c`` in ``labels``, the latency is ``t* - s`` with
    ``t*`` the first ``t`` in ``[s, e)`` where ``pred[t] == c``; an instance never detected while it
    lasts is a miss (``nan``).

    Parameters
    ----------
    pred : ndarray, shape (T,), int
        The online decision at each frame (e.g. the argmax of the current scores).
    labels : ndarray, shape (T,), int

    Returns
    -------
    latency : ndarray, shape (M,), float, frames (``nan`` for a miss)
    instances : ndarray, shape (M, 3), the instances as :func:`action_instances`
    """
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    if pred.shape != labels.shape or pred.ndim != 1:
        raise ValueError(f"pred and labels must be 1-D of equal length, got {pred.shape} and "
                         f"{labels.shape}")
    inst = action_instances(labels, background)
    latency = np.full(len(inst), np.nan)
    for i, (s, e, c) in enumerate(inst):
        hits = np.flatnonzero(pred[s:e] == c)
        if hits.size:
            latency[i] = hits[0]
    return latency, inst


def anticipation_accuracy(future_scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy of the label anticipated ``i`` frames ahead, ``i = 1..K`` (Eq. 16).

    ``acc_i = mean_{t < T - i} [argmax future_scores[t, i - 1] == labels[t + i]]``.

    Parameters
    ----------
    future_scores : ndarray, shape (T, K, C + 1)
    labels : ndarray, shape (T,), int

    Returns
    -------
    ndarray, shape (K,) (``nan`` where ``i >= T``)
    """
    future_scores = np.asarray(future_scores)
    labels = np.asarray(labels)
    if future_scores.ndim != 3 or labels.shape != (future_scores.shape[0],):
        raise ValueError(f"future_scores must be (T, K, C + 1) and labels (T,), got "
                         f"{future_scores.shape} and {labels.shape}")
    t_len, k = future_scores.shape[:2]
    pred = future_scores.argmax(-1)  # (T, K)
    acc = np.full(k, np.nan)
    for i in range(1, min(k, t_len - 1) + 1):
        acc[i - 1] = np.mean(pred[:t_len - i, i - 1] == labels[i:])
    return acc
