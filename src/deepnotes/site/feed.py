"""The Atom feed (``feed.xml``) of the posts, written beside the built site's ``index.html``.

Neither engine's blog plugin writes a feed without a third-party RSS plugin, so the feed is made
here from the parsed posts. Links are relative to the feed (resolved against its own URL, RFC 4287
section 2 / xml:base), so the site works wherever it is served; ids are stable URNs.
"""

from __future__ import annotations

import datetime as _dt
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from deepnotes.core.posts import Post

ATOM = "http://www.w3.org/2005/Atom"


def _stamp(moment: _dt.date | _dt.datetime) -> str:
    if not isinstance(moment, _dt.datetime):
        moment = _dt.datetime.combine(moment, _dt.time(), _dt.UTC)
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def article_html(page: Path) -> str | None:
    """The ``<article>`` of a built page (the post as rendered, math included), or ``None``."""
    if not Path(page).is_file():
        return None
    text = Path(page).read_text(encoding="utf-8")
    match = re.search(r"<article\b[^>]*>(.*?)</article>", text, re.DOTALL)
    return match.group(1).strip() if match else None


def atom_feed(posts: list[Post], *, title: str = "deepnotes", site_url: str = "",
              lang: str = "en", content: dict[str, str] | None = None) -> bytes:
    """Atom XML for ``posts`` (newest first): title, link, dates, summary and, where ``content``
    has the post's rendered HTML, the full post (relative links resolve against ``site_url``)."""
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    feed.set("{http://www.w3.org/XML/1998/namespace}lang", lang)
    if site_url:
        feed.set("{http://www.w3.org/XML/1998/namespace}base", site_url.rstrip("/") + "/")

    def sub(parent, tag, text=None, **attrs):
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    sub(feed, "title", title)
    sub(feed, "subtitle", "An ML notebook where every post is backed by code that runs.")
    sub(feed, "id", "urn:deepnotes:feed" + ("" if lang == "en" else f":{lang}"))
    sub(feed, "link", href="./", rel="alternate", type="text/html")
    sub(feed, "link", href="feed.xml", rel="self", type="application/atom+xml")
    newest = max((p.published_at for p in posts), default=_dt.date(2026, 1, 1))
    sub(feed, "updated", _stamp(newest))
    author = sub(feed, "author")
    sub(author, "name", "deepnotes")
    for post in posts:
        entry = sub(feed, "entry")
        sub(entry, "title", post.title)
        sub(entry, "link", href=f"posts/{post.slug}/", rel="alternate", type="text/html")
        sub(entry, "id", f"urn:deepnotes:post:{post.slug}" + ("" if lang == "en" else f":{lang}"))
        sub(entry, "published", _stamp(post.published_at))
        sub(entry, "updated", _stamp(post.published_at))
        sub(entry, "summary", post.summary)
        if content and content.get(post.slug):
            # xml:base lets a reader resolve the page's relative image and link URLs.
            body = sub(entry, "content", content[post.slug], type="html")
            body.set("{http://www.w3.org/XML/1998/namespace}base", f"posts/{post.slug}/")
        for tag in post.tags:
            sub(entry, "category", term=tag)
    ET.indent(feed)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True) + b"\n"


def write_feed(posts: list[Post], site_dir: Path, **kwargs) -> Path:
    """Write ``site_dir/feed.xml`` with each post's rendered article as its content."""
    content = {p.slug: article_html(Path(site_dir) / "posts" / p.slug / "index.html")
               for p in posts}
    path = Path(site_dir) / "feed.xml"
    path.write_bytes(atom_feed(posts, content=content, **kwargs))
    return path
