"""The experiment contract: a config dataclass, presets, and a run directory per run.

Every topic's ``deepnotes.experiments.<module>`` defines ``Config(ExperimentConfig)``,
``PRESETS`` (``smoke``, ``quick``, ``full``), ``HEADLINE`` (a metric key), ``PEER`` (the peer's
metric key for the same quantity, or ``None``) and ``run(config) -> Result``. ``run`` wraps its
body in :func:`start_run`, which creates ``<out>/<slug>/<run-id>/`` and writes, as the run goes:

- ``config.json``  the config, the environment and the command that reproduces the run;
- ``metrics.json`` status, wall time, headline keys and the metrics logged so far;
- ``log.txt``      every ``run.log`` line, and the traceback of a failure;
- ``*.png``        figures saved with ``run.save_figure``;
- ``command.txt``  the CLI command that reproduces the run.

A run never overwrites an earlier one. Ctrl-C marks the run ``interrupted`` and keeps what was
written; an exception marks it ``failed`` and logs the traceback; both are re-raised.

Resume: inside :func:`resume_from` (``deepnotes run SLUG --resume RUN_DIR``) the next run reopens
``RUN_DIR`` instead of creating a directory; ``run.resuming`` is true and the training loops
given ``fit(..., **run.fit_checkpoint(...))`` continue from their checkpoints under
``run.checkpoint_dir`` (removed when the run completes). Data parallel: under
``torch.distributed`` (``RANK``/``WORLD_SIZE`` set by ``deepnotes run --nproc N`` or
``torchrun``), only rank 0 writes the run directory; the other ranks write to a temporary
directory that is removed when the run closes, and print nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from deepnotes.core import paths
from deepnotes.core.config import field_types
from deepnotes.core.progress import track
from deepnotes.core.registry import PRESET_NAMES, slug_of
from deepnotes.core.seeding import seed_everything

T = TypeVar("T")


@dataclass
class ExperimentConfig:
    """Fields every experiment has; a topic's ``Config`` subclasses it."""

    seed: int = 0
    """Seed for python, numpy and torch."""
    device: str = "auto"
    """Torch device: auto (CUDA when available), cpu, cuda or cuda:N."""
    out: str | None = None
    """Root of run directories (default: <repo>/runs); the run goes to <out>/<slug>/<run-id>/."""
    preset: str = "custom"
    """Name of the preset this config came from (set by make_presets)."""


@dataclass
class Result:
    """What ``run(config)`` returns: where the run lives and what it measured."""

    slug: str
    run_dir: Path
    metrics: dict[str, float]
    figures: list[Path]
    status: str
    """completed, interrupted or failed."""
    wall_time_s: float
    headline: str | None = None
    peer: str | None = None

    @property
    def headline_value(self) -> float | None:
        return self.metrics.get(self.headline) if self.headline else None

    @property
    def peer_value(self) -> float | None:
        return self.metrics.get(self.peer) if self.peer else None


ConfigT = TypeVar("ConfigT", bound=ExperimentConfig)

_RESUME_DIR: Path | None = None


@contextlib.contextmanager
def resume_from(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Runs started inside this block continue ``run_dir`` (see the module docstring)."""
    global _RESUME_DIR
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.json'} does not exist: {run_dir} is not a "
                                "run directory")
    previous, _RESUME_DIR = _RESUME_DIR, run_dir
    try:
        yield run_dir
    finally:
        _RESUME_DIR = previous


def distributed_env() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from the environment torchrun (or ``--nproc``) sets;
    ``(0, 0, 1)`` in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def make_presets(**presets: ConfigT) -> dict[str, ConfigT]:
    """Name each preset config (``smoke``, ``quick``, ``full`` are required)."""
    missing = [p for p in PRESET_NAMES if p not in presets]
    if missing:
        raise ValueError(f"presets {', '.join(missing)} are missing")
    return {name: dataclasses.replace(cfg, preset=name) for name, cfg in presets.items()}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path, payload: Any) -> None:
    """Write atomically, so an interrupted run never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps(_jsonable(payload), indent=2, allow_nan=True) + "\n"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def reproduce_command(slug: str, config: ExperimentConfig, presets: dict | None) -> str:
    """The ``deepnotes run`` command recreating ``config``: its preset plus ``--set`` overrides."""
    base = (presets or {}).get(config.preset)
    parts = ["deepnotes", "run", slug]
    if base is not None:
        parts += ["--preset", config.preset]
    parts += ["--seed", str(config.seed)]
    for name in field_types(type(config)):
        if name in ("seed", "preset", "out"):
            continue
        value = getattr(config, name)
        if base is not None and getattr(base, name) == value:
            continue
        if name == "device":
            parts += ["--device", str(value)]
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
        parts += ["--set", f"{name}={text}"]
    return " ".join(parts)


class Run:
    """A live run: its directory, seeded generator, device, logger, metrics and figures."""

    def __init__(self, slug: str, config: ExperimentConfig, module: Any | None = None):
        self.slug = slug
        self.config = config
        self.headline = getattr(module, "HEADLINE", None)
        self.peer = getattr(module, "PEER", None)
        self.rank, self.local_rank, self.world_size = distributed_env()
        self.resume_dir = _RESUME_DIR
        root = Path(config.out) if config.out else paths.runs_dir()
        self.metrics: dict[str, float] = {}
        self.figures: list[Path] = []
        if self.rank != 0:  # rank 0 alone writes the run directory
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"deepnotes-{slug}-rank{self.rank}-"))
        elif self.resume_dir is not None:
            self.run_dir = self.resume_dir
            self._reopen(slug)
        else:
            self.run_dir = self._new_run_dir(root / slug, config)
        self.status = "running"
        self.started_at = _dt.datetime.now().astimezone()
        self._t0 = time.perf_counter()
        self._log = open(self.run_dir / "log.txt", "a", encoding="utf-8")  # noqa: SIM115
        self.rng = seed_everything(config.seed)
        self._device = None
        self.device_used: str | None = None
        """Where the work ran when it is not ``device`` (a CPU-only topic), else None."""
        self._fit_calls = 0
        if self.resume_dir is None or self.rank != 0:
            command = reproduce_command(slug, config, getattr(module, "PRESETS", None))
            (self.run_dir / "command.txt").write_text(command + "\n", encoding="utf-8")
            from deepnotes.core.bench import machine_info

            _write_json(self.run_dir / "config.json", {
                "slug": slug, "config": config, "command": command, "environment": machine_info(),
            })
        self._write_metrics()

    def _reopen(self, slug: str) -> None:
        """Continue the run in ``self.run_dir``: keep its metrics and figures so far."""
        path = self.run_dir / "metrics.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot resume: {path} is missing or unreadable ({exc})") from None
        if meta.get("slug") != slug:
            raise ValueError(f"cannot resume: {self.run_dir} is a run of {meta.get('slug')!r}, "
                             f"not {slug!r}")
        self.metrics = {k: float(v) for k, v in meta.get("metrics", {}).items()}
        self.figures = [self.run_dir / name for name in meta.get("figures", [])
                        if (self.run_dir / name).is_file()]

    @property
    def resuming(self) -> bool:
        """True when this run continues an interrupted one (``--resume``)."""
        return self.resume_dir is not None

    @property
    def checkpoint_dir(self) -> Path:
        """``<run_dir>/checkpoints``, for ``fit(checkpoint_dir=...)``; on ranks other than 0
        under data parallel, the resumed run's folder (read only: rank 0 alone writes)."""
        return (self.resume_dir or self.run_dir) / "checkpoints"

    @staticmethod
    def _new_run_dir(topic_dir: Path, config: ExperimentConfig) -> Path:
        topic_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{config.preset}-s{config.seed}"
        for attempt in range(1000):
            candidate = topic_dir / (base if attempt == 0 else f"{base}-{attempt}")
            try:
                candidate.mkdir()  # atomic: never reuse (and so never overwrite) a run directory
                return candidate
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a new run directory under {topic_dir}")

    def fit_checkpoint(self, *generators: Any, every: int | None = None) -> dict[str, Any]:
        """Keyword arguments that make one ``fit`` loop of this run checkpoint and resume:
        ``fit(..., **run.fit_checkpoint(gen, every=100))``.

        Loops are named in call order (``fit-1``, ``fit-2``, ...). A resumed run executes the
        experiment from the top again: a loop that had finished restores its final state at
        once, the interrupted one continues from its last checkpoint, later ones start fresh.
        ``run.rng`` is always saved and restored with the loop; pass every other generator its
        batches or loss draw from (torch's and NumPy's global generators are always included).
        Checkpoints are written every ``every`` steps, at the end and on Ctrl-C.
        """
        self._fit_calls += 1
        return {"checkpoint_dir": self.checkpoint_dir, "checkpoint_name": f"fit-{self._fit_calls}",
                "checkpoint_every": every, "resume": self.resuming,
                "generators": [self.rng, *generators]}

    @property
    def device(self):
        """``torch.device`` chosen from ``config.device`` (imports torch on first use)."""
        if self._device is None:
            from deepnotes.core.device import resolve_device

            device = resolve_device(self.config.device)
            if device.type == "cuda" and device.index is None and self.world_size > 1:
                import torch

                device = torch.device("cuda", self.local_rank)  # one GPU per rank
            self._device = device
        return self._device

    @property
    def wall_time_s(self) -> float:
        return time.perf_counter() - self._t0

    def log(self, message: str) -> None:
        """Print ``message`` and append it to ``log.txt`` with the elapsed time."""
        line = f"[{self.wall_time_s:8.2f}s] {message}"
        if self.rank == 0:
            print(line, file=sys.stderr, flush=True)
        self._log.write(line + "\n")
        self._log.flush()

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Merge ``metrics`` into ``metrics.json`` (written at once, so partial runs keep them)."""
        for key, value in metrics.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"metric keys must be non-empty strings, got {key!r}")
            self.metrics[key] = float(value)
        self._write_metrics()

    def save_figure(self, fig, name: str) -> Path:
        """Save ``fig`` as ``<run_dir>/<name>.png`` and close it."""
        from deepnotes.core.plotting import save_figure

        if not name or "/" in name or name.endswith(".png"):
            raise ValueError(f"figure name must be a bare name without extension, got {name!r}")
        path = self.run_dir / f"{name}.png"
        if self.rank == 0:
            save_figure(fig, path)
        else:  # rank 0 alone writes; another rank's figure is the same, so skip rendering it
            import matplotlib.pyplot as plt

            plt.close(fig)
        if path not in self.figures:
            self.figures.append(path)
        return path

    def track(self, iterable: Iterable[T], description: str = "",
              total: int | None = None) -> Iterator[T]:
        """Iterate with a progress bar (none on ranks other than 0)."""
        return track(iterable, description=description or self.slug, total=total,
                     disable=self.rank != 0)

    def _write_metrics(self) -> None:
        _write_json(self.run_dir / "metrics.json", {
            "slug": self.slug,
            "run_id": self.run_dir.name,
            "preset": self.config.preset,
            "seed": self.config.seed,
            "status": self.status,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "wall_time_s": round(self.wall_time_s, 3),
            "headline": self.headline,
            "peer": self.peer,
            "metrics": self.metrics,
            "figures": [p.name for p in self.figures],
            # where the networks ran: the resolved device, "cpu" for a CPU-only topic, or None
            # while nothing has asked for the device yet
            "device": self.device_used or (str(self._device) if self._device is not None else None),
        })

    def close(self, status: str) -> None:
        if status == "completed" and self.rank == 0:  # nothing left to resume
            shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
        self.status = status
        self._write_metrics()
        self.log(f"{status} in {self.wall_time_s:.1f} s -> {self.run_dir}")
        self._log.close()
        if self.rank != 0:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def result(self) -> Result:
        return Result(self.slug, self.run_dir, dict(self.metrics), list(self.figures), self.status,
                      self.wall_time_s, self.headline, self.peer)


@contextlib.contextmanager
def start_run(module_name: str, config: ExperimentConfig) -> Iterator[Run]:
    """Open a run for the experiment module ``module_name`` (pass ``__name__``)."""
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    slug = slug_of(module_name)
    module = sys.modules.get(module_name)
    cpu_only = getattr(module, "CPU_ONLY", None)
    if config.device not in ("auto", "cpu"):
        # A requested GPU must exist, even for a topic that will not use it: an error now,
        # before any folder is made, rather than a run that says "cuda" and ran on the CPU.
        from deepnotes.core.device import resolve_device

        resolve_device(config.device)
    run = Run(slug, config, module)
    how = "resumed" if run.resuming else f"preset={config.preset} seed={config.seed}"
    ranks = f" ({run.world_size} ranks)" if run.world_size > 1 else ""
    run.log(f"{slug}: {how}{ranks} -> {run.run_dir}")
    if cpu_only:
        run.device_used = "cpu"
        if config.device != "cpu":
            run.log(f"note: {slug} runs on the CPU ({cpu_only}); --device {config.device} does "
                    "not apply to it")
    try:
        yield run
    except KeyboardInterrupt:
        run.close("interrupted")
        raise
    except BaseException:
        run._log.write(traceback.format_exc())
        run.close("failed")
        raise
    else:
        run.close("completed")
