"""Where things live: the package's posts, and the repository's runs/, results/ and benchmarks/."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
POSTS_DIR = PACKAGE_DIR / "posts"


def repo_root() -> Path:
    """The checkout holding ``pyproject.toml`` (the current directory when installed elsewhere).

    ``DEEPNOTES_ROOT`` overrides it, which is how tests point the CLI at a temporary tree.
    """
    env = os.environ.get("DEEPNOTES_ROOT")
    if env:
        return Path(env).resolve()
    candidate = PACKAGE_DIR.parents[1]
    if (candidate / "pyproject.toml").is_file() and (candidate / "src" / "deepnotes").is_dir():
        return candidate
    return Path.cwd()


def runs_dir() -> Path:
    """Default root of experiment runs: ``<repo>/runs``."""
    return repo_root() / "runs"


def results_dir() -> Path:
    """Committed outputs of each topic's ``full`` run: ``<repo>/results``."""
    return repo_root() / "results"


def benchmarks_dir() -> Path:
    """Peer comparisons: ``<repo>/benchmarks``."""
    return repo_root() / "benchmarks"
