"""One training loop for every torch experiment: :func:`fit`.

``fit`` runs ``steps`` optimiser steps of ``loss_fn(model, batch)`` and adds, as options, what the
experiments used to write by hand: an exponential moving average of the weights (:class:`EMA`),
gradient-norm clipping, bf16/fp16 autocast (fp16 with dynamic loss scaling, as
``torch.amp.GradScaler``), a learning-rate scheduler, checkpoints that resume bit-identically on
CPU, and data parallelism over ``torch.distributed`` ranks (``DistributedDataParallel``).

The module is pure: it prints nothing and writes no file except the checkpoints the caller asks for
with ``checkpoint_dir``. Progress bars come in through ``progress`` (an experiment passes
``run.track``), per-step metrics go out through ``callback`` and :class:`FitResult`.

Resume, in one paragraph: a checkpoint holds the model, optimiser, scheduler, EMA and loss-scaler
states, the step, the history so far, and the random states (Python's ``random``, NumPy's global
state, torch's CPU and CUDA generators and every generator passed in ``generators``). Restoring all
of them before step ``k`` makes steps ``k, k+1, ...`` draw the same batches and noise as the
uninterrupted run, so the final weights are equal bit for bit on CPU (on CUDA, up to the
non-determinism of its kernels).

Data parallel, in one paragraph: when ``torch.distributed`` is initialised with more than one
rank, ``fit`` wraps the model in ``DistributedDataParallel`` and gives each rank its slice of the
global batch (every tensor in ``batch`` is cut along dim 0 into ``world_size`` equal parts; the
batch source is called identically on every rank, as every rank has the same seed). DDP averages
the gradients over ranks, so for a loss that is a mean over the batch, ``N`` ranks with ``B/N``
examples each take the same step as one process with ``B`` examples. Randomness drawn *inside*
``loss_fn`` (noise levels, dropout) is drawn per rank; draw it in the batch source instead when
the multi-rank run must match the single-process one exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
CHECKPOINT_VERSION = 1

LossOutput = torch.Tensor | tuple[torch.Tensor, dict[str, float]]


# --- EMA ---------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a model's weights (Polyak averaging).

    After each optimiser step, every floating-point parameter's shadow moves towards it,

    ``shadow <- shadow + (1 - d) * (param - shadow)`` (``torch.lerp``),

    with ``d = decay``, or ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` earlier updates when
    ``warmup`` is true (so a short run does not average in its untrained start). Buffers (and
    integer tensors) are copied, not averaged.

    Parameters
    ----------
    model : nn.Module
        The model whose weights are averaged; the shadow starts as a copy of its state.
    decay : float
        In ``[0, 1)``; the averaging horizon is about ``1 / (1 - decay)`` steps.
    warmup : bool
        Use the warm-up schedule above.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 <= decay < 1:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        model = unwrap(model)
        self._param_names = [name for name, _ in model.named_parameters()]
        self.shadow: dict[str, torch.Tensor] = {
            name: tensor.detach().clone() for name, tensor in model.state_dict().items()
        }

    def current_decay(self) -> float:
        """The ``d`` the next :meth:`update` uses."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1 + n) / (10 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow one step towards ``model``'s current weights."""
        d = self.current_decay()
        params = dict(unwrap(model).named_parameters())
        for name, tensor in unwrap(model).state_dict().items():
            avg = self.shadow[name]
            if name in params and avg.is_floating_point():
                avg.lerp_(params[name].detach(), 1 - d)
            else:
                avg.copy_(tensor)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s weights and buffers with the averaged ones."""
        unwrap(model).load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model: keys {sorted(missing)[:5]}")
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


# --- result ------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    history : dict[str, list[float]]
        One value per step for ``"loss"`` (always), every key ``loss_fn`` reports, and
        ``"grad_norm"`` (the norm before clipping) when ``clip_grad_norm`` is set. After a resume
        the list covers all steps, the ones before the checkpoint included. Under data parallel,
        the values are averaged over ranks.
    ema : EMA or None
        The weight average when ``ema_decay`` was given; ``ema.copy_to(model)`` uses it.
    steps_done : int
        Optimiser steps taken in total (``steps`` unless the loop was stopped).
    resumed_from : int
        The step the loop started from: 0, or the step of the checkpoint it resumed.
    """

    history: dict[str, list[float]] = field(default_factory=lambda: {"loss": []})
    ema: EMA | None = None
    steps_done: int = 0
    resumed_from: int = 0

    @property
    def final_loss(self) -> float:
        return self.history["loss"][-1] if self.history["loss"] else math.nan


# --- helpers -----------------------------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel
                                       | nn.DataParallel) else model


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``. Wrapping this adapter (not the model) in DDP
    runs the whole loss inside DDP's forward, so ``loss_fn`` gets the bare model (any method,
    any ``isinstance`` check works) and DDP still synchronises every parameter's gradient."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], LossOutput]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> LossOutput:
        return self.loss_fn(self.model, batch)


def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard_batch(batch: Any, rank: int, world_size: int) -> Any:
    """This rank's slice of ``batch``: every tensor cut along dim 0 into ``world_size`` equal
    parts (tuples, lists and dicts are walked; other values pass through)."""
    if world_size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0:
            return batch
        n = batch.shape[0]
        if n % world_size:
            raise ValueError(f"batch of {n} examples cannot be split evenly over "
                             f"{world_size} ranks; choose a batch size divisible by it")
        per = n // world_size
        return batch[rank * per:(rank + 1) * per]
    if isinstance(batch, dict):
        return {k: shard_batch(v, rank, world_size) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        parts = [shard_batch(v, rank, world_size) for v in batch]
        if hasattr(batch, "_fields"):  # namedtuple
            return type(batch)(*parts)
        return type(batch)(parts)
    return batch


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _rng_state(generators: Sequence[Any]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": [_generator_state(g) for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _generator_state(gen: Any) -> Any:
    if isinstance(gen, torch.Generator):
        return gen.get_state()
    if isinstance(gen, np.random.Generator):
        return gen.bit_generator.state
    if isinstance(gen, random.Random):
        return gen.getstate()
    raise TypeError(f"generators must hold torch.Generator, numpy.random.Generator or "
                    f"random.Random objects, got {type(gen).__name__}")


def _set_rng_state(state: dict[str, Any], generators: Sequence[Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state["generators"]
    if len(saved) != len(generators):
        raise ValueError(f"the checkpoint holds {len(saved)} generator state(s) but "
                         f"{len(generators)} generator(s) were passed")
    for gen, gstate in zip(generators, saved, strict=True):
        if isinstance(gen, torch.Generator):
            gen.set_state(gstate)
        elif isinstance(gen, np.random.Generator):
            gen.bit_generator.state = gstate
        else:
            gen.setstate(gstate)


def checkpoint_path(checkpoint_dir: str | os.PathLike, name: str = "fit") -> Path:
    """The file :func:`fit` writes for the loop called ``name`` under ``checkpoint_dir``."""
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"checkpoint_name must be a bare file name, got {name!r}")
    return Path(checkpoint_dir) / f"{name}.pt"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit`; a missing, unreadable or foreign file raises
    ``FileNotFoundError`` / ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated file, not a torch file, unpickling error
        raise ValueError(f"checkpoint {path} is corrupt or unreadable "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != "deepnotes.fit":
        raise ValueError(f"checkpoint {path} was not written by deepnotes.nn.training.fit")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has version {state.get('version')}, "
                         f"expected {CHECKPOINT_VERSION}")
    return state


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a crash while saving keeps the previous checkpoint


class _GracefulInterrupt:
    """While active (main thread only), the first Ctrl-C only sets a flag, so the loop can
    finish its step and save a checkpoint; a second Ctrl-C interrupts at once."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _batch_source(batches: Any, start: int) -> Callable[[int], Any]:
    """A function step -> batch; an iterable is fast-forwarded past the first ``start``."""
    if callable(batches) and not isinstance(batches, Iterable | Iterator):
        return batches
    if not isinstance(batches, Iterable):
        raise TypeError("batches must be a callable step -> batch or an iterable of batches, "
                        f"got {type(batches).__name__}")
    iterator = iter(batches)

    def draw(step: int):
        try:
            return next(iterator)
        except StopIteration:
            raise ValueError(f"batches ran out after {step} batches; pass an endless "
                             "iterable or a callable step -> batch") from None

    for step in range(start):
        draw(step)
    return draw


def _as_float(value: Any) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _load_states(objects: list[Any], states: list[Any], what: str) -> None:
    if len(objects) != len(states):
        raise ValueError(f"the checkpoint holds {len(states)} {what} state(s), "
                         f"the loop has {len(objects)}")
    for obj, state in zip(objects, states, strict=True):
        obj.load_state_dict(state)


def _stateful(batches: Any) -> bool:
    return callable(getattr(batches, "state_dict", None)) and \
        callable(getattr(batches, "load_state_dict", None))


def _split_loss(output: Any) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], dict):
        loss, extra = output
    else:
        loss, extra = output, {}
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("loss_fn must return a scalar loss tensor or (loss, {name: float}), "
                        f"got {type(loss).__name__}")
    return loss, extra


def _check_args(model, optimizer, steps, precision, clip_grad_norm, ema_decay,
                checkpoint_every) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    optimizers = optimizer if isinstance(optimizer, list | tuple) else [optimizer]
    if not optimizers or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer (or a list of them), got "
                        f"{type(optimizer).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm!r}")
    if ema_decay is not None and not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay!r}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool)
                                         or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive int or None, "
                         f"got {checkpoint_every!r}")


# --- the loop ----------------------------------------------------------------------------------
def fit(model: nn.Module, loss_fn: Callable[[nn.Module, Any], LossOutput], batches: Any,
        optimizer: torch.optim.Optimizer, steps: int, *, scheduler: Any = None,
        clip_grad_norm: float | None = None, ema_decay: float | None = None,
        ema_warmup: bool = False, precision: str = "fp32",
        progress: Callable[..., Iterable[int]] | None = None, description: str = "train",
        callback: Callable[[int, dict[str, float]], None] | None = None,
        checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
        checkpoint_name: str = "fit", resume: bool | str | os.PathLike = False,
        generators: Sequence[Any] = (), ddp_kwargs: dict[str, Any] | None = None) -> FitResult:
    """Train ``model`` for ``steps`` optimiser steps on ``loss_fn``.

    Each step ``i`` (0-based): ``batch = batches(i)`` (or the next item of an iterable), its
    rank's slice under data parallel; ``loss = loss_fn(model, batch)`` under autocast; backward
    (fp16: on the scaled loss); optional gradient-norm clipping; ``optimizer.step()``;
    ``scheduler.step()``; the EMA update; the history; a checkpoint when due; ``callback(i,
    metrics)``.

    Parameters
    ----------
    model : nn.Module
        Trained in place, on the device its parameters are on. In ``train()`` mode during the loop.
    loss_fn : callable
        ``loss_fn(model, batch) -> loss`` or ``-> (loss, {name: float})``; ``loss`` is a scalar
        tensor. ``model`` is always the bare model; under data parallel the whole call runs
        inside ``DistributedDataParallel``'s forward, which synchronises the gradients.
    batches : callable or iterable
        ``batches(step) -> batch`` (preferred: resume then just calls it from the checkpoint's
        step), or an iterable yielding batches (on resume its first batches are drawn and
        discarded, before the random states are restored). A source with ``state_dict()`` and
        ``load_state_dict()`` methods (an epoch's permutation, a stateful data loader) has its
        state checkpointed and restored instead of being fast-forwarded.
    optimizer : torch.optim.Optimizer or list of them
        Several optimisers (each over its own parameters) all step after the same backward.
    steps : int
        Total number of optimiser steps (a resumed loop runs the remaining ones).
    scheduler : optional
        An LR scheduler (``torch.optim.lr_scheduler``), or a list of them, stepped once after
        every optimiser step.
    clip_grad_norm : float, optional
        Clip the global gradient 2-norm to this value; its pre-clip value is logged as
        ``grad_norm``.
    ema_decay : float, optional
        Keep an :class:`EMA` of the weights with this decay (returned in ``FitResult.ema``).
    ema_warmup : bool
        Use the EMA warm-up ``min(decay, (1 + n) / (10 + n))``.
    precision : {"fp32", "bf16", "fp16"}
        Autocast dtype of the forward pass; fp16 scales the loss (``torch.amp.GradScaler``).
        Parameters and optimiser states stay fp32. On CPU use bf16.
    progress : callable, optional
        ``progress(iterable, description)`` wrapping the step range, e.g. ``run.track``.
        Disabled on ranks other than 0.
    description : str
        The progress bar's label.
    callback : callable, optional
        ``callback(step, metrics)`` after every step; ``metrics`` holds this step's history
        values. An exception raised here stops the loop (the last checkpoint stays).
    checkpoint_dir : path, optional
        Where checkpoints go (``<checkpoint_dir>/<checkpoint_name>.pt``, overwritten atomically).
        With a directory, a checkpoint is written every ``checkpoint_every`` steps, at the end,
        and at a step boundary on the first Ctrl-C (which then raises ``KeyboardInterrupt``).
        Only rank 0 writes.
    checkpoint_every : int, optional
        Steps between checkpoints (default: only at the end and on Ctrl-C).
    checkpoint_name : str
        File name stem, distinct for each loop of an experiment that trains several models.
    resume : bool or path
        ``True``: continue from ``<checkpoint_dir>/<checkpoint_name>.pt`` when it exists (a loop
        whose checkpoint is absent starts at step 0, as in a resumed multi-stage experiment; a
        loop that had finished just restores its final state). A path: continue from that file,
        which must exist. A corrupt file raises ``ValueError`` naming it.
    generators : sequence
        ``torch.Generator`` / ``numpy.random.Generator`` / ``random.Random`` objects that
        ``batches`` or ``loss_fn`` draw from; their states are checkpointed and restored.
    ddp_kwargs : dict, optional
        Extra ``DistributedDataParallel`` arguments under data parallel, e.g.
        ``{"find_unused_parameters": True}`` for a loss that leaves some parameters unused.

    Returns
    -------
    FitResult
    """
    _check_args(model, optimizer, steps, precision, clip_grad_norm, ema_decay, checkpoint_every)
    optimizers = list(optimizer) if isinstance(optimizer, list | tuple) else [optimizer]
    schedulers = (list(scheduler) if isinstance(scheduler, list | tuple)
                  else [] if scheduler is None else [scheduler])
    if resume and resume is not True and not isinstance(resume, str | os.PathLike):
        raise TypeError(f"resume must be a bool or a path, got {type(resume).__name__}")
    if resume is True and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    generators = tuple(generators)
    for gen in generators:
        _generator_state(gen)  # type check now, not at the first checkpoint

    device = _model_device(model)
    rank, world_size = distributed_info()
    bare = unwrap(model)
    compute_loss: Callable[[Any], LossOutput] = lambda batch: loss_fn(bare, batch)  # noqa: E731
    ddp = None
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(_LossModule(bare, loss_fn), device_ids=ids,
                                                  **(ddp_kwargs or {}))
        compute_loss = ddp
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = EMA(bare, ema_decay, warmup=ema_warmup) if ema_decay is not None else None
    result = FitResult(history={"loss": []}, ema=ema)

    path = checkpoint_path(checkpoint_dir, checkpoint_name) if checkpoint_dir is not None else None
    source = None
    if resume is not False:
        load_from = path if resume is True else Path(resume)
        if resume is not True or load_from.is_file():
            state = load_checkpoint(load_from)
            try:
                bare.load_state_dict(state["model"])
                _load_states(optimizers, state["optimizer"], "optimizer")
                _load_states(schedulers, state["scheduler"], "scheduler")
                if ema is not None:
                    ema.load_state_dict(state["ema"])
                scaler.load_state_dict(state["scaler"])
            except (KeyError, RuntimeError, ValueError, TypeError) as exc:
                raise ValueError(f"checkpoint {load_from} does not fit this model/optimiser "
                                 f"({type(exc).__name__}: {exc})") from exc
            if state["steps"] != steps:
                raise ValueError(f"checkpoint {load_from} was written by a loop of "
                                 f"{state['steps']} steps, this one has {steps}")
            result.resumed_from = int(state["step"])
            result.history = {k: list(v) for k, v in state["history"].items()}
            if _stateful(batches):
                batches.load_state_dict(state["batches"])
            source = _batch_source(batches, 0 if _stateful(batches) else result.resumed_from)
            _set_rng_state(state["rng"], generators)
    start = result.resumed_from
    if source is None:
        source = _batch_source(batches, 0)

    def save(step: int) -> None:
        if path is None or rank != 0:
            return
        _save_checkpoint(path, {
            "format": "deepnotes.fit", "version": CHECKPOINT_VERSION, "step": step,
            "steps": steps, "model": bare.state_dict(),
            "optimizer": [o.state_dict() for o in optimizers],
            "scheduler": [s.state_dict() for s in schedulers],
            "ema": ema.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict(), "history": result.history,
            "rng": _rng_state(generators),
            "batches": batches.state_dict() if _stateful(batches) else None,
        })

    step_range: Iterable[int] = range(start, steps)
    if progress is not None and rank == 0:
        step_range = progress(step_range, description)
    bare.train()
    result.steps_done = start
    with _GracefulInterrupt(path is not None) as interrupt:
        for step in step_range:
            batch = shard_batch(source(step), rank, world_size)
            with _autocast(device, precision):
                loss, extra = _split_loss(compute_loss(batch))
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            metrics = {"loss": loss.detach().float(), **{k: _as_float(v) for k, v in extra.items()}}
            if clip_grad_norm is not None:
                for opt in optimizers:
                    scaler.unscale_(opt)
                norm = torch.nn.utils.clip_grad_norm_(bare.parameters(), clip_grad_norm)
                metrics["grad_norm"] = norm.detach().float()
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
            for sched in schedulers:
                sched.step()
            if ema is not None:
                ema.update(bare)
            if world_size > 1:  # a Ctrl-C seen by any rank stops every rank after this step
                metrics["_interrupt"] = float(interrupt.requested)
            values = _reduce_metrics(metrics, world_size)
            if values.pop("_interrupt", 0.0) > 0:
                interrupt.requested = True
            for key, value in values.items():
                result.history.setdefault(key, []).append(value)
            result.steps_done = step + 1
            if checkpoint_every is not None and (step + 1) % checkpoint_every == 0:
                save(step + 1)
            if interrupt.requested:
                save(step + 1)
                raise KeyboardInterrupt
            if callback is not None:
                callback(step, values)
    if result.steps_done == steps and (start < steps or resume is False):
        save(steps)
    del ddp  # drops DDP's gradient hooks from the model's parameters
    return result


def _reduce_metrics(metrics: dict[str, Any], world_size: int) -> dict[str, float]:
    """Metrics as floats, averaged over ranks under data parallel (one all-reduce)."""
    if world_size == 1:
        return {k: float(v) for k, v in metrics.items()}
    keys = sorted(metrics)
    dev = metrics["loss"].device  # the loss's device picks the backend (gloo or nccl)
    packed = torch.tensor([_as_float(metrics[k]) for k in keys], dtype=torch.float64,
                          device=dev)
    torch.distributed.all_reduce(packed)
    packed /= world_size
    return dict(zip(keys, packed.tolist(), strict=True))
