"""The Atom feed (``feed.xml``) of the posts, written beside the built site's ``index.html``.

Neither engine's blog plugin writes a feed without a third-party RSS plugin, so the feed is made
here from the parsed posts. Links are relative to the feed (resolved against its own URL, RFC 4287
section 2 / xml:base), so the site works wherever it is served; ids are stable URNs.
"""

from __future__ import annotations

import datetime as _dt
import xml.etree.ElementTree as ET
from pathlib import Path

from deepnotes.core.posts import Post

ATOM = "http://www.w3.org/2005/Atom"


def _stamp(day: _dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def atom_feed(posts: list[Post], *, title: str = "deepnotes", site_url: str = "") -> bytes:
    """Atom XML for ``posts`` (newest first), one entry each with title, link, date and summary."""
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    if site_url:
        feed.set("{http://www.w3.org/XML/1998/namespace}base", site_url.rstrip("/") + "/")

    def sub(parent, tag, text=None, **attrs):
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    sub(feed, "title", title)
    sub(feed, "subtitle", "An ML notebook where every post is backed by code that runs.")
    sub(feed, "id", "urn:deepnotes:feed")
    sub(feed, "link", href="./", rel="alternate", type="text/html")
    sub(feed, "link", href="feed.xml", rel="self", type="application/atom+xml")
    newest = max((p.date for p in posts), default=_dt.date(2026, 1, 1))
    sub(feed, "updated", _stamp(newest))
    author = sub(feed, "author")
    sub(author, "name", "deepnotes")
    for post in posts:
        entry = sub(feed, "entry")
        sub(entry, "title", post.title)
        sub(entry, "link", href=f"posts/{post.slug}/", rel="alternate", type="text/html")
        sub(entry, "id", f"urn:deepnotes:post:{post.slug}")
        sub(entry, "published", _stamp(post.date))
        sub(entry, "updated", _stamp(post.date))
        sub(entry, "summary", post.summary)
        for tag in post.tags:
            sub(entry, "category", term=tag)
    ET.indent(feed)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True) + b"\n"


def write_feed(posts: list[Post], site_dir: Path, **kwargs) -> Path:
    path = Path(site_dir) / "feed.xml"
    path.write_bytes(atom_feed(posts, **kwargs))
    return path
