"""Writing post files for tests (a plain module, importable from any test folder: the
top-level tests/ directory is on sys.path through tests/conftest.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def write_post(directory: Path, slug: str, *, day: int = 1, tags=("test",), title=None,
               body: str = "Intro.\n\n<!-- more -->\n\nMore with $x^2$.\n") -> Path:
    """Write a minimal valid post file."""
    directory.mkdir(parents=True, exist_ok=True)
    date = dt.date(2026, 1, 1) + dt.timedelta(days=day)
    tag_list = ", ".join(tags)
    text = (f"---\ntitle: \"{title or slug}\"\ndate: {date.isoformat()}\ntags: [{tag_list}]\n"
            f"summary: \"Summary of {slug}.\"\npapers: []\n---\n\n{body}")
    path = directory / f"{slug}.md"
    path.write_text(text, encoding="utf-8")
    return path
