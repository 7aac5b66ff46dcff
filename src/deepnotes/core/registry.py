"""The topic registry, discovered from the files (never hand-listed).

A topic is a post ``deepnotes/posts/<slug>.md`` plus an experiment module
``deepnotes.experiments.<slug with underscores>``. Discovery reads file names only, so listing
topics imports neither torch nor any experiment.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from types import ModuleType

from deepnotes.core.paths import PACKAGE_DIR
from deepnotes.core.posts import post_slugs

EXPERIMENTS_PACKAGE = "deepnotes.experiments"
PRESET_NAMES = ("smoke", "quick", "full")


def slug_of(module_name: str) -> str:
    """``deepnotes.experiments.adam_vs_adamw`` -> ``adam-vs-adamw``."""
    return module_name.rsplit(".", 1)[-1].replace("_", "-")


def module_of(slug: str) -> str:
    """``adam-vs-adamw`` -> ``deepnotes.experiments.adam_vs_adamw``."""
    return f"{EXPERIMENTS_PACKAGE}.{slug.replace('-', '_')}"


class UnknownTopicError(LookupError):
    """Raised for a slug with no topic; the message names the closest slugs."""


def experiment_slugs() -> list[str]:
    """Slugs of every module in ``deepnotes.experiments`` (found on disk, not imported)."""
    found = pkgutil.iter_modules([str(PACKAGE_DIR / "experiments")])
    return sorted(slug_of(m.name) for m in found if not m.name.startswith("_"))


def topic_slugs() -> list[str]:
    """Slugs that have both a post and an experiment."""
    return sorted(set(post_slugs()) & set(experiment_slugs()))


def check_slug(slug: str) -> str:
    """Return ``slug`` if it is a topic; else raise :class:`UnknownTopicError` with suggestions."""
    known = topic_slugs()
    if slug in known:
        return slug
    if slug.strip().lower() in known:  # `deepnotes run GAN` finds gan
        return slug.strip().lower()
    close = difflib.get_close_matches(slug, known, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; topics: {', '.join(known)}"
    raise UnknownTopicError(f"unknown topic {slug!r}{hint}")


def load_experiment(slug: str) -> ModuleType:
    """Import a topic's experiment module and check it follows the contract."""
    module = importlib.import_module(module_of(check_slug(slug)))
    required = ("Config", "PRESETS", "run", "HEADLINE")
    problems = [name for name in required if not hasattr(module, name)]
    if problems:
        raise TypeError(f"{module.__name__} lacks {', '.join(problems)}")
    missing = [p for p in PRESET_NAMES if p not in module.PRESETS]
    if missing:
        raise TypeError(f"{module.__name__}.PRESETS lacks {', '.join(missing)}")
    return module


__all__ = [
    "EXPERIMENTS_PACKAGE", "PRESET_NAMES", "UnknownTopicError", "check_slug", "experiment_slugs",
    "load_experiment", "module_of", "slug_of", "topic_slugs",
]
