"""One call seeds every random number generator an experiment may touch."""

from __future__ import annotations

import os
import random
import sys

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's legacy global state and torch (when imported).

    torch is seeded only if it is already imported, so that topics without torch never pay for
    importing it; an experiment module that uses torch imports it at module level, before ``run``.

    Returns
    -------
    numpy.random.Generator
        A fresh generator seeded with ``seed``: pass it explicitly instead of using global state.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)  # inherited by subprocesses only
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)
