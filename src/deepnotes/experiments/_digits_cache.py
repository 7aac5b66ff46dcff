"""Trained networks cached on disk, shared by the experiments and benchmarks that need them.

Not a topic: the registry skips modules whose name starts with an underscore.

A network lives at ``<runs root>/_cache/<group>/<name>-<key>.pt`` with ``key`` a hash of its
training spec (and a version), so the EDM model behind the edm post is trained once and reused by
classifier guidance and the benchmark. While one trains, its :func:`~deepnotes.nn.training.fit`
checkpoints go to ``<name>-<key>.ckpt/``: an interrupted training (Ctrl-C, a crash, ``deepnotes
run --resume``) continues from there the next time any run asks for the network, since the key
pins everything that the training computes. Under data parallel every rank trains (the ranks
share the batch), and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from deepnotes.core import paths
from deepnotes.nn.training import distributed_info

CHECKPOINT_EVERY = 200


def cache_dir(out: str | None, group: str = "diffusion-digits") -> Path:
    """``<out or runs/>/_cache/<group>`` (created)."""
    root = Path(out) if out else paths.runs_dir()
    path = root / "_cache" / group
    path.mkdir(parents=True, exist_ok=True)
    return path


def spec_key(spec, version: int) -> str:
    """12 hex digits identifying a (dataclass) training spec and the training code's version."""
    text = json.dumps({"v": version, **dataclasses.asdict(spec)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def checkpoint_dir_for(path: Path) -> Path:
    """Where the training of the network cached at ``path`` keeps its checkpoints."""
    return path.with_suffix(".ckpt")


def load_or_train(path: Path, module: nn.Module, train: Callable[[Path], dict], log) -> dict:
    """Load ``module``'s weights and meta from ``path``, or call ``train(checkpoint_dir)``
    (which trains ``module`` in place and returns its JSON-able meta) and cache the result."""
    if path.is_file():
        # CPU tensors in the file (see below); load_state_dict copies them to the module's device
        blob = torch.load(path, weights_only=True, map_location="cpu")
        module.load_state_dict(blob["state"])
        log(f"loaded cached {path.name}")
        return json.loads(blob["meta"])
    ckpt = checkpoint_dir_for(path)
    if ckpt.is_dir():
        log(f"continuing the training of {path.name} from {ckpt}")
    meta = train(ckpt)
    if distributed_info()[0] == 0:
        tmp = path.with_suffix(".tmp")
        # saved from the CPU, so a network trained on a GPU loads on a machine without one
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save({"state": state, "meta": json.dumps(meta)}, tmp)
        tmp.replace(path)
        shutil.rmtree(ckpt, ignore_errors=True)
        log(f"trained and cached {path.name}")
    return meta
