"""Online action detection on wrist-sensor streams: LSTM and GRU baselines, TRN, IDN and OadTR.

Data: BasicMotions (bundled inside the aeon wheel; :mod:`deepnotes.data.sensor_streams`), stitched
into untrimmed streams: standing is the background, walking, running and badminton are the three
actions. Train streams are built from the archive's train recordings, test streams from its test
recordings. Frames are chunks of ``chunk`` samples (0.5 s by default), standardised per channel
with the train streams' statistics.

Every model of :mod:`deepnotes.vision.online_action` trains with ``deepnotes.nn.training.fit`` on
random crops of the train streams (recurrent models: every frame of a ``crop``-frame crop; window
models: the last ``window_rows`` frames of a crop just long enough for their windows) and is then
run once over every whole test stream, causally. All torch networks run on ``run.device``.

Figures: ``stream_predictions`` (one test stream: the sensor signal, the truth and each model's
online decision), ``frame_map`` (per-frame mAP and calibrated mAP per model), ``latency`` (fraction
of actions detected within a delay), ``anticipation`` (accuracy of the label anticipated 1..K
frames ahead, against holding the present prediction) and ``training_loss``.
Headline: OadTR's per-frame mAP; peer: the LSTM baseline's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.colors import ListedColormap

from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data.sensor_streams import (
    basic_motions_streams,
    channel_stats,
    load_basic_motions,
    to_frames,
)
from deepnotes.nn.training import fit
from deepnotes.vision.online_action import (
    MODELS,
    anticipation_accuracy,
    build_model,
    detection_latency,
    detection_loss,
    frame_map,
)

LABELS = {"lstm": "LSTM", "gru": "GRU", "trn": "TRN", "idn": "IDN", "oadtr": "OadTR"}
WINDOW_MODELS = ("idn", "oadtr")
CLASS_COLORS = ("#DDDDDD", PALETTE[0], PALETTE[1], PALETTE[2])


@dataclass
class Config(ExperimentConfig):
    models: tuple[str, ...] = MODELS
    """Detectors to train and compare (lstm, gru, trn, idn, oadtr)."""
    chunk: int = 5
    """Sensor samples per frame (10 Hz samples: 5 is half a second)."""
    train_streams: int = 48
    """Streams stitched from the train recordings."""
    test_streams: int = 16
    """Streams stitched from the test recordings (the evaluation set)."""
    actions_per_stream: int = 10
    """Action segments per stream (with a background segment before, between and after)."""
    action_min: int = 30
    """Shortest action segment, in samples."""
    action_max: int = 100
    """Longest action segment, in samples (a whole 10 s recording)."""
    background_min: int = 20
    """Shortest background segment, in samples."""
    background_max: int = 60
    """Longest background segment, in samples."""
    hidden: int = 64
    """Width of every model's embedding and state."""
    horizon: int = 4
    """Future frames anticipated (K)."""
    window: int = 12
    """Frames of past seen by the window models, IDN and OadTR (the current one included)."""
    dropout: float = 0.1
    """Dropout in every model."""
    steps: int = 300
    """Optimiser steps per model."""
    batch_size: int = 32
    """Crops per step."""
    crop: int = 32
    """Frames per training crop of the recurrent models (LSTM, GRU, TRN); all are targets."""
    window_rows: int = 4
    """Frames per crop that are targets for IDN and OadTR (their crops hold window + rows - 1)."""
    lr: float = 3e-3
    """Peak learning rate of AdamW (cosine decay to zero after a 5% warm-up)."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay."""
    future_weight: float = 0.5
    """Weight of the anticipation loss (Eq. 12)."""
    boundary_s: float = 1.0
    """Frames less than this many seconds after a label change form the boundary set."""
    seeds: int = 1
    """Independent trainings of each model (metrics are means over seeds)."""
    threads: int = 1
    """Torch CPU threads (the models are small: more threads mostly add synchronisation)."""


PRESETS = make_presets(
    smoke=Config(train_streams=4, test_streams=2, actions_per_stream=4, hidden=16, steps=3,
                 batch_size=4, crop=16, window=6, window_rows=4),
    quick=Config(train_streams=16, test_streams=6, hidden=32, steps=50, batch_size=8, crop=24),
    full=Config(seeds=2),
)
HEADLINE = "oadtr/frame_map"
PEER = "lstm/frame_map"


def _make_streams(config: Config, rng: np.random.Generator):
    """Train and test streams as frames: lists of (frames (T_i, chunk*6) float32, labels (T_i,))."""
    kw = dict(action_len=(config.action_min, config.action_max),
              background_len=(config.background_min, config.background_max), align=config.chunk)
    train = basic_motions_streams("train", config.train_streams, config.actions_per_stream, rng,
                                  **kw)
    test = basic_motions_streams("test", config.test_streams, config.actions_per_stream, rng, **kw)
    mean, std = channel_stats(train)  # the test streams are standardised with train statistics
    def frames(streams):
        return [to_frames(((s.x - mean) / std).astype(np.float32), s.labels, config.chunk)
                for s in streams]
    return train, frames(train), frames(test), test


def _batches(train, length: int, lookahead: int, batch_size: int, seed: int, device):
    """``batches(step)``: ``batch_size`` random crops of ``length`` frames, with the labels of
    ``lookahead`` more frames (targets of the anticipation only), the same for every model of a
    seed (a generator per step, so the draw does not depend on earlier calls)."""
    lengths = np.array([len(y) for _, y in train])
    usable = np.flatnonzero(lengths >= length + lookahead)
    if usable.size == 0:
        raise ValueError(f"no train stream holds {length} frames; lower crop or window")

    def batch(step: int):
        rng = np.random.default_rng([seed, step])
        idx = rng.choice(usable, batch_size)
        starts = rng.integers(0, lengths[idx] - length - lookahead + 1)
        x = np.stack([train[i][0][s:s + length] for i, s in zip(idx, starts, strict=True)])
        y = np.stack([train[i][1][s:s + length + lookahead]
                      for i, s in zip(idx, starts, strict=True)])
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    return batch


def _train(name: str, config: Config, train, in_dim: int, n_classes: int, seed: int, run):
    """Build and fit one model; returns (model, loss history, seconds)."""
    torch.manual_seed(seed)
    model = build_model(name, in_dim, n_classes, hidden=config.hidden, horizon=config.horizon,
                        window=config.window, dropout=config.dropout).to(run.device)
    windowed = name in WINDOW_MODELS
    length = config.window + config.window_rows - 1 if windowed else config.crop
    last = config.window_rows if windowed else None
    batches = _batches(train, length, config.horizon, config.batch_size, seed, run.device)

    def loss_fn(model, batch):
        x, y = batch
        return detection_loss(model(x, last=last), y, lookahead=config.horizon,
                              future_weight=config.future_weight)

    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm = max(1, config.steps // 20)

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, config.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    t0 = time.perf_counter()
    result = fit(model, loss_fn, batches, opt, config.steps, scheduler=sched, clip_grad_norm=1.0,
                 progress=run.track, description=f"{name} (seed {seed})")
    return model.eval(), result.history["loss"], time.perf_counter() - t0


@torch.no_grad()
def _predict(model, test, device):
    """Run ``model`` over every test stream at once: (current probs, future probs) per stream.

    Streams are padded at the end to one length: the models are causal, so the padding cannot
    change the rows of real frames (tests/vision/test_online_action.py checks it).
    """
    t_max = max(len(y) for _, y in test)
    x = np.zeros((len(test), t_max, test[0][0].shape[1]), dtype=np.float32)
    for i, (f, _) in enumerate(test):
        x[i, :len(f)] = f
    out = model(torch.from_numpy(x).to(device))
    cur = out.current.softmax(-1).float().cpu().numpy()
    fut = out.future.softmax(-1).float().cpu().numpy()
    return [(cur[i, :len(y)], fut[i, :len(y)]) for i, (_, y) in enumerate(test)]


def _since_change(y: np.ndarray) -> np.ndarray:
    """Frames since the last label change of a stream (a large number before the first one)."""
    idx = np.arange(len(y))
    change = np.r_[False, y[1:] != y[:-1]]
    last = np.maximum.accumulate(np.where(change, idx, -(10**9)))
    return idx - last


def _evaluate(preds, test, frame_s: float, horizon: int,
              boundary_s: float) -> dict[str, float | np.ndarray]:
    """Every metric of one trained model over all test streams."""
    labels = np.concatenate([y for _, y in test])
    scores = np.concatenate([c for c, _ in preds])
    m, per_class = frame_map(scores, labels)
    near = np.concatenate([_since_change(y) for _, y in test]) * frame_s < boundary_s
    m_near, _ = frame_map(scores[near], labels[near])
    cm, per_class_c = frame_map(scores, labels, calibrated=True)
    lat = np.concatenate([detection_latency(c.argmax(-1), y)[0]
                          for (c, _), (_, y) in zip(preds, test, strict=True)])
    hit = np.zeros(horizon)
    hold = np.zeros(horizon)
    count = np.zeros(horizon)
    for (c, f), (_, y) in zip(preds, test, strict=True):
        n = np.maximum(len(y) - np.arange(1, horizon + 1), 0)
        acc = np.nan_to_num(anticipation_accuracy(f, y))
        # the hold baseline: the present prediction copied into every future frame
        acc_hold = np.nan_to_num(anticipation_accuracy(np.repeat(c[:, None], horizon, 1), y))
        hit += acc * n
        hold += acc_hold * n
        count += n
    return {"frame_map": m, "frame_cmap": cm, "boundary_map": m_near, "per_class_ap": per_class,
            "per_class_cap": per_class_c, "latency_frames": lat,
            "latency_mean_s": np.nanmean(lat) * frame_s if np.isfinite(lat).any() else np.nan,
            "latency_median_s": np.nanmedian(lat) * frame_s if np.isfinite(lat).any() else np.nan,
            "miss_rate": float(np.isnan(lat).mean()),
            "frame_accuracy": float((scores.argmax(-1) == labels).mean()),
            "anticipation": hit / count, "hold": hold / count}


# --------------------------------------------------------------------------------------------
# Figures


def _stream_figure(config: Config, stream, frames_labels, preds: dict[str, np.ndarray],
                   class_names):
    names = list(preds)
    fig, axes = new_figure(2, 1, size=(7.0, 2.2 + 0.35 * len(names)), sharex=True,
                           layout="constrained",
                           gridspec_kw={"height_ratios": [1.4, 0.35 * (len(names) + 1)]})
    t = np.arange(len(stream.x)) / stream.rate_hz
    acc = np.linalg.norm(stream.x[:, :3], axis=1)
    axes[0].plot(t, acc, color=PALETTE[7], lw=0.8)
    axes[0].set(ylabel=r"acceleration $\Vert\mathbf{a}\Vert$",
                title="A test stream: signal, truth, online decisions")
    rows = np.stack([frames_labels] + [preds[n] for n in names])  # (1 + M, T_frames)
    frame_s = config.chunk / stream.rate_hz
    axes[1].imshow(rows, aspect="auto", interpolation="nearest", vmin=0,
                   vmax=len(CLASS_COLORS) - 1, cmap=ListedColormap(CLASS_COLORS),
                   extent=(0, rows.shape[1] * frame_s, len(rows) - 0.5, -0.5))
    axes[1].set_yticks(range(len(rows)), ["truth"] + [LABELS[n] for n in names])
    axes[1].set_xlabel("time (s)")
    axes[1].grid(False)
    handles = [axes[1].plot([], [], color=c, lw=6)[0] for c in CLASS_COLORS]
    fig.legend(handles, class_names, loc="outside lower center", ncol=len(class_names),
               fontsize=9)
    return fig


def _map_figure(names, stats):
    fig, ax = new_figure(1, 1, size=(6.0, 3.6))
    x = np.arange(len(names))
    bars = (("frame_map", "per-frame mAP"), ("frame_cmap", "calibrated mAP"),
            ("boundary_map", "mAP near transitions"))
    for k, (key, label) in enumerate(bars):
        vals = [100 * np.mean(stats[n][key]) for n in names]
        err = [100 * np.std(stats[n][key]) for n in names]
        ax.bar(x + (k - 1) * 0.27, vals, 0.27, yerr=err, label=label, color=PALETTE[k],
               capsize=3)
    ax.set_xticks(x, [LABELS[n] for n in names])
    lo = min(100 * min(min(stats[n]["boundary_map"]) for n in names), 90)
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set(ylabel="%, test streams", title="Detection quality per model (mean over seeds)")
    ax.legend(loc="upper center", ncol=3, bbox_to_anchor=(0.5, -0.1), fontsize=9)
    return fig


def _latency_figure(names, lats, frame_s: float, max_frames: int):
    fig, ax = new_figure(1, 1, size=(6.0, 3.6))
    grid = np.arange(max_frames + 1)
    for color, n in zip(PALETTE, names, strict=False):
        lat = lats[n]
        frac = [(lat <= g).mean() for g in grid]  # nan (missed) is never <= g
        ax.step(grid * frame_s, frac, where="post", color=color, label=LABELS[n])
    ax.set(xlabel="delay after the action starts (s)",
           ylabel="fraction of actions detected", ylim=(0, 1.02),
           title="How soon each action is first classified correctly")
    ax.legend(loc="lower right")
    return fig


def _anticipation_figure(names, stats, frame_s: float, horizon: int):
    fig, ax = new_figure(1, 1, size=(6.0, 3.6))
    h = np.arange(1, horizon + 1) * frame_s
    for color, n in zip(PALETTE, names, strict=False):
        ax.plot(h, 100 * np.mean(stats[n]["anticipation"], 0), "o-", color=color,
                label=LABELS[n])
        ax.plot(h, 100 * np.mean(stats[n]["hold"], 0), ":", color=color, lw=1)
    ax.plot([], [], ":", color="grey", label="holding the present decision")
    ax.set(xlabel="anticipated time ahead (s)", ylabel="accuracy (%)",
           title="Anticipating the label of a future frame")
    ax.legend(fontsize=9, loc="upper right")
    return fig


def _loss_figure(names, losses):
    fig, ax = new_figure(1, 1, size=(6.0, 3.4))
    for color, n in zip(PALETTE, names, strict=False):
        curve = np.asarray(losses[n])
        k = max(1, len(curve) // 50)
        smooth = np.convolve(curve, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, color=color, label=LABELS[n])
    ax.set(yscale="log", xlabel="step", ylabel="training loss (Eq. 12)",
           title="Training loss (first seed, moving average)")
    ax.legend()
    return fig


def run(config: Config) -> Result:
    unknown = set(config.models) - set(MODELS)
    if unknown or not config.models:
        raise ValueError(f"models must be a non-empty subset of {MODELS}, got {config.models}")
    if min(config.chunk, config.steps, config.batch_size, config.crop, config.window,
           config.window_rows, config.seeds, config.horizon, config.hidden) < 1:
        raise ValueError("chunk, steps, batch_size, crop, window, window_rows, seeds, horizon "
                         "and hidden must be positive")
    with start_run(__name__, config) as run:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            _run(config, run)
        finally:
            torch.set_num_threads(threads)
    return run.result


def _run(config: Config, run) -> None:
    train_streams, train, test, test_streams = _make_streams(config, run.rng)
    class_names = train_streams[0].class_names
    n_classes = len(class_names)
    frame_s = config.chunk / train_streams[0].rate_hz
    x_train, _ = load_basic_motions("train")
    run.log(f"BasicMotions (aeon): {len(x_train)} train recordings; {len(train)} train and "
            f"{len(test)} test streams, {sum(len(y) for _, y in test)} test frames of "
            f"{frame_s:g} s")
    labels_all = np.concatenate([y for _, y in test])
    near = np.concatenate([_since_change(y) for _, y in test]) * frame_s < config.boundary_s
    run.log_metrics({
        "data/boundary_frames_count": int(near.sum()),
        "data/test_frames_count": len(labels_all),
        "data/test_actions_count": sum(len(detection_latency(y, y)[0]) for _, y in test),
        "data/test_background_fraction": float((labels_all == 0).mean()),
        "data/frame_s": frame_s,
    })
    in_dim = train[0][0].shape[1]
    stats: dict[str, dict[str, list]] = {n: {} for n in config.models}
    losses, lats, example = {}, {}, {}
    for s in range(config.seeds):
        seed = int(run.rng.integers(2**31))
        for name in config.models:
            model, loss, secs = _train(name, config, train, in_dim, n_classes, seed, run)
            preds = _predict(model, test, run.device)
            ev = _evaluate(preds, test, frame_s, config.horizon, config.boundary_s)
            ev["train_time_s"] = secs
            ev["params_count"] = sum(p.numel() for p in model.parameters())
            for key, val in ev.items():
                stats[name].setdefault(key, []).append(val)
            if s == 0:
                losses[name] = loss
                example[name] = preds[0][0].argmax(-1)
            lats.setdefault(name, []).append(ev["latency_frames"])
            run.log(f"{name} seed {s}: mAP {100 * ev['frame_map']:.2f}%, boundary mAP "
                    f"{100 * ev['boundary_map']:.2f}%, cmAP "
                    f"{100 * ev['frame_cmap']:.2f}%, latency {ev['latency_mean_s']:.2f} s, "
                    f"miss {100 * ev['miss_rate']:.1f}%, {secs:.0f} s")
    for name in config.models:
        st = stats[name]
        metrics = {f"{name}/{key}": float(np.mean(st[key]))
                   for key in ("frame_map", "frame_cmap", "boundary_map", "latency_mean_s",
                               "latency_median_s", "miss_rate", "frame_accuracy", "train_time_s",
                               "params_count")}
        metrics[f"{name}/frame_map_seed_std"] = float(np.std(st["frame_map"]))
        metrics[f"{name}/frame_cmap_seed_std"] = float(np.std(st["frame_cmap"]))
        metrics[f"{name}/boundary_map_seed_std"] = float(np.std(st["boundary_map"]))
        for c in range(1, n_classes):
            aps = [pc[c] for pc in st["per_class_ap"] if np.isfinite(pc[c])]
            metrics[f"{name}/ap_{class_names[c]}"] = float(np.mean(aps)) if aps else np.nan
        antic = np.mean(st["anticipation"], 0)
        hold = np.mean(st["hold"], 0)
        for i in range(config.horizon):
            metrics[f"{name}/anticipation_acc_{i + 1}"] = float(antic[i])
            metrics[f"{name}/hold_acc_{i + 1}"] = float(hold[i])
        metrics[f"{name}/final_train_loss"] = float(np.mean(losses[name][-20:]))
        run.log_metrics(metrics)
    names = list(config.models)
    lat_all = {n: np.concatenate(lats[n]) for n in names}
    max_lat = int(max(4, np.nanmax([np.nanmax(v) if np.isfinite(v).any() else 0
                                    for v in lat_all.values()]) + 1))
    run.save_figure(_stream_figure(config, test_streams[0], test[0][1], example,
                                   class_names), "stream_predictions")
    run.save_figure(_map_figure(names, stats), "frame_map")
    run.save_figure(_latency_figure(names, lat_all, frame_s, max_lat), "latency")
    run.save_figure(_anticipation_figure(names, stats, frame_s, config.horizon), "anticipation")
    run.save_figure(_loss_figure(names, losses), "training_loss")
