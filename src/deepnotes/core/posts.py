"""Posts: Markdown files with YAML front matter, shipped as package data in ``deepnotes/posts``.

Front matter fields: ``title``, ``date`` (YYYY-MM-DD, or YYYY-MM-DD HH:MM:SS to order the posts
of one day), ``tags`` (list), ``summary`` (the feed
excerpt), ``papers`` (list of ``{title, authors, year, url}``). The slug is the file name.

Every post exists in two languages: ``<slug>.md`` (English) and ``<slug>.zh.md`` (Chinese), with
the same date, tags, numbered equations and figures (``tests/core/test_posts.py`` holds them to it).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from deepnotes.core.paths import POSTS_DIR

REQUIRED_FIELDS = ("title", "date", "tags", "summary")
LANGS = ("en", "zh")
"""The languages of the notebook; English is the default."""
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)


@dataclass(frozen=True)
class Post:
    """One post of the notebook."""

    slug: str
    title: str
    date: _dt.date
    tags: list[str]
    summary: str
    body: str
    """Markdown after the front matter."""
    path: Path
    papers: list[dict] = field(default_factory=list)
    lang: str = "en"
    """``en`` or ``zh``."""
    published: _dt.datetime | None = None
    """Date and time of publication (UTC): front matter ``date: 2026-11-25 09:00:00`` orders
    posts of one day; a bare date means midnight."""

    @property
    def published_at(self) -> _dt.datetime:
        return self.published or _dt.datetime.combine(self.date, _dt.time(), _dt.UTC)


def lang_of(path: Path) -> tuple[str, str]:
    """``(slug, lang)`` of a post file: ``gan.md`` -> ``("gan", "en")``, ``gan.zh.md`` -> zh."""
    name = Path(path).name
    if name.endswith(".zh.md"):
        return name[: -len(".zh.md")], "zh"
    return Path(name).stem, "en"


def post_file(slug: str, lang: str = "en", directory: Path | None = None) -> Path:
    """The file of ``slug``'s post in ``lang`` (it may not exist)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, got {lang!r}")
    return Path(directory or POSTS_DIR) / (f"{slug}.md" if lang == "en" else f"{slug}.{lang}.md")


def parse_post(path: Path) -> Post:
    """Read one post; raise ``ValueError`` naming the file and the missing or malformed field."""
    import yaml

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    match = _FRONT_MATTER.match(text)
    if not match:
        raise ValueError(f"{path}: no front matter (the file must start with a '---' YAML block)")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: PyYAML on dates like 2026-13-40
        raise ValueError(f"{path}: front matter does not parse: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: front matter must be a mapping")
    missing = [f for f in REQUIRED_FIELDS if f not in meta]
    if missing:
        raise ValueError(f"{path}: front matter lacks {', '.join(missing)}")
    date = meta["date"]
    if isinstance(date, str):
        try:
            date = _dt.date.fromisoformat(date)
        except ValueError as exc:
            raise ValueError(f"{path}: date {date!r} is not YYYY-MM-DD") from exc
    published = None
    if isinstance(date, _dt.datetime):
        published = date if date.tzinfo else date.replace(tzinfo=_dt.UTC)
        date = date.date()
    if not isinstance(date, _dt.date):
        raise ValueError(f"{path}: date must be YYYY-MM-DD, got {date!r}")
    tags = meta["tags"]
    if isinstance(tags, str):
        tags = [tags]
    papers = meta.get("papers") or []
    if not isinstance(papers, list):
        raise ValueError(f"{path}: papers must be a list")
    slug, lang = lang_of(path)
    return Post(
        slug=slug,
        title=str(meta["title"]),
        date=date,
        tags=[str(t) for t in tags],
        summary=str(meta["summary"]).strip(),
        body=text[match.end():],
        path=path,
        papers=papers,
        lang=lang,
        published=published,
    )


def load_posts(extra_dirs: list[Path] | None = None, *, include_package: bool = True,
               lang: str = "en") -> list[Post]:
    """All posts in ``lang``, newest first (ties broken by slug for a stable order)."""
    dirs = ([POSTS_DIR] if include_package else []) + [Path(d) for d in (extra_dirs or [])]
    files = english_post_files if lang == "en" else (
        lambda d: sorted(Path(d).glob(f"*.{lang}.md")))
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, got {lang!r}")
    posts = [parse_post(p) for d in dirs for p in files(Path(d))]
    seen: dict[str, Path] = {}
    for post in posts:
        if post.slug in seen:
            raise ValueError(f"two posts share the slug {post.slug!r}: "
                             f"{seen[post.slug]} and {post.path}")
        seen[post.slug] = post.path
    return sorted(posts, key=lambda p: (-p.published_at.timestamp(), p.slug))


def english_post_files(directory: Path) -> list[Path]:
    """The English post files of ``directory`` (``<slug>.md``; ``<slug>.zh.md`` is Chinese)."""
    return sorted(p for p in Path(directory).glob("*.md") if not p.name.endswith(".zh.md"))


def post_slugs() -> list[str]:
    """Slugs of the package's posts, sorted."""
    return sorted(p.stem for p in english_post_files(POSTS_DIR))
