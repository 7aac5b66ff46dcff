"""The Markdown the site engine reads: the home banner, a page per post, a source page per topic.

Each post page is the post's own Markdown with, appended to its "Results" section, the latest
run's metrics table, figures and reproduce command (:func:`run_section`), and a link to its source
page. Nothing here touches the checkout: pages are written under a staging ``docs/`` folder.
"""

from __future__ import annotations

import ast
import datetime as _dt
import html
import math
import re
import shutil
from pathlib import Path

import yaml

from deepnotes.core import paths
from deepnotes.core.posts import Post
from deepnotes.core.references import (
    FigureRef,
    ReferenceError,
    figure_label,
    figure_refs,
    records_for,
    resolve,
)
from deepnotes.core.registry import module_of
from deepnotes.core.results import find_latest_run, read_metrics
from deepnotes.site import plaintext

MORE = "<!-- more -->"
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_H2 = re.compile(r"^##\s+(.*?)\s*#*\s*$")


def tag_slug(tag: str) -> str:
    """The URL segment the blog plugin gives a category (lowercase, runs of non-word chars -> -)."""
    return re.sub(r"[^\w]+", "-", tag.strip().lower()).strip("-")


# --- Markdown helpers ---------------------------------------------------------------------------
def _outside_fences(lines: list[str]) -> list[bool]:
    """For each line, whether it lies outside fenced code (fence lines count as inside)."""
    flags, fence = [], None
    for line in lines:
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            flags.append(False)
        elif fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            flags.append(False)
        else:
            flags.append(True)
    return flags


def separate_display_math(text: str) -> str:
    """Put blank lines around each ``$$ ... $$`` block outside code fences.

    Arithmatex only sees display math that starts its own Markdown block, while authors often
    write ``... equations:`` directly above ``$$``; the blank lines make both forms render.
    """
    lines = text.split("\n")
    outside = _outside_fences(lines)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if outside[i] and stripped.startswith("$$"):
            end = i
            closed_on_same_line = len(stripped) >= 4 and stripped.endswith("$$")
            if not closed_on_same_line:
                end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().endswith("$$")),
                           i)
            if out and out[-1].strip():
                out.append("")
            out.extend(lines[i:end + 1])
            if end + 1 < len(lines) and lines[end + 1].strip():
                out.append("")
            i = end + 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def insert_results(body: str, section: str) -> str:
    """Insert ``section`` at the end of the body's ``## Results`` section.

    Without such a heading, a new ``## Results`` section goes before "Deviations"/"Reproduce"
    (or at the end).
    """
    lines = body.rstrip("\n").split("\n")
    outside = _outside_fences(lines)
    heads = [(i, _H2.match(line).group(1)) for i, line in enumerate(lines)
             if outside[i] and _H2.match(line)]
    results = [i for i, title in heads if title.lower().startswith("results")]
    if results:
        after = [i for i, _ in heads if i > results[0]]
        at, block = (after[0] if after else len(lines)), section
    else:
        later = [i for i, title in heads
                 if title.lower().startswith(("deviations", "reproduce", "references"))]
        at, block = (later[0] if later else len(lines)), "## Results\n\n" + section
    return "\n".join(lines[:at] + ["", block.rstrip("\n"), ""] + lines[at:]) + "\n"


def _fence_for(code: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", code)), default=2)
    return "`" * (longest + 1)


# --- metrics ------------------------------------------------------------------------------------
def format_value(value) -> str:
    """A metric as table text: 4 significant digits for floats, lists shortened."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(format_value(v) for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    return str(value)


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _started(meta: dict) -> str:
    stamp = meta.get("started_at") or ""
    try:
        return _dt.datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp or "unknown date"


def _copy_figure(slug: str, run_dir: Path, name: str, figures_dir: Path) -> str:
    """Copy ``<run_dir>/<name>`` under ``figures_dir/<slug>/``; return its URL from a post page."""
    dest = figures_dir / slug
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run_dir / name, dest / name)
    return f"../figures/{slug}/{name}"


def figure_html(url: str, label: str, caption: str) -> str:
    """A numbered figure: the image and ``<figcaption>`` with its label ("Figure 3.").

    The caption is inline Markdown, so ``$k^*$`` in it is math that KaTeX renders like the
    post's; the image's alt text is the caption as plain text (math as a reader types it)."""
    alt = html.escape(plaintext.strip_tex(caption), quote=True)
    return "\n".join([
        '<figure class="dn-figure" markdown>',
        f"![{alt}]({url})",
        f'<figcaption markdown="span"><span class="dn-figure__label">{html.escape(label)}.</span> '
        f"{caption}</figcaption>",
        "</figure>",
    ])



def run_section(slug: str, run_dir: Path, figures_dir: Path, *, placed: set[str] | None = None,
                lang: str = "en") -> str:
    """Markdown for a run: preset/date, all metrics (folded), unplaced figures, reproduce command.

    Figures the post placed itself (``placed``: PNG stems) are not repeated.
    """
    zh = lang == "zh"
    meta = read_metrics(run_dir)
    started = html.escape(_started(meta))
    preset = html.escape(str(meta.get("preset", "?")))
    wall = meta.get("wall_time_s")
    wall_text = f", {wall:.1f} s" if isinstance(wall, (int, float)) else ""
    line = (f'<p class="dn-run">本文的数字和图表来自 <code>{preset}</code> preset 的运行，'
            f"开始于 {started}{wall_text}。</p>" if zh else
            f'<p class="dn-run">Figures and numbers on this page come from the '
            f"<code>{preset}</code> preset run started {started}{wall_text}.</p>")
    lines = [line, ""]
    metrics = meta.get("metrics") or {}
    if metrics:
        title = f"本次运行的全部指标（{len(metrics)} 项）" if zh else \
            f"All {len(metrics)} metrics of this run"
        lines += [f'??? note "{title}"', ""]
        table = ["| Metric | Value |", "| --- | ---: |"]
        for key, value in metrics.items():
            role = " (headline)" if key == meta.get("headline") else (
                " (peer)" if key == meta.get("peer") else "")
            table.append(f"| `{_cell(key)}`{role} | {_cell(format_value(value))} |")
        lines += ["    " + row for row in table] + [""]
    placed = placed or set()
    names = [n for n in meta.get("figures") or [] if (run_dir / n).is_file()]
    names += sorted(p.name for p in run_dir.glob("*.png") if p.name not in names)
    rest = [n for n in names if Path(n).stem not in placed]
    if rest:
        lines += ["更多图表：" if zh else "More figures from this run:", ""]
        for name in rest:
            url = _copy_figure(slug, run_dir, name, figures_dir)
            caption = html.escape(Path(name).stem.replace("_", " "))
            lines += [figure_html(url, caption, ""), ""]
    command = run_dir / "command.txt"
    if command.is_file():
        lines += ["复现这次运行：" if zh else "Reproduce this run:", "", "```bash",
                  command.read_text(encoding="utf-8").strip(), "```", ""]
    return "\n".join(lines)


# --- source pages -------------------------------------------------------------------------------
def module_file(module: str) -> Path | None:
    """The file of a ``deepnotes.*`` module, found on disk without importing it."""
    parts = module.split(".")
    if parts[0] != "deepnotes":
        return None
    base = paths.PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str) -> list[str]:
    """``deepnotes`` modules a file imports (the shared ``core`` left out), in order."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from deepnotes.nn import optim` may name a submodule: prefer it when it exists.
            names = [f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}")
                     else node.module for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            shared = name.startswith("deepnotes.core") or name == "deepnotes.experiments"
            if name.startswith("deepnotes.") and not shared and name not in found \
                    and module_file(name):
                found.append(name)
    return found


def experiment_file(slug: str) -> Path | None:
    return module_file(module_of(slug))


def source_page(post: Post) -> str | None:
    """Markdown showing a topic's experiment module and the algorithm modules it imports."""
    exp = experiment_file(post.slug)
    if exp is None:
        return None
    code = exp.read_text(encoding="utf-8")
    modules = [module_of(post.slug)] + imported_modules(code)
    front = yaml.safe_dump({"title": post.title}, allow_unicode=True).strip()
    lines = [f"---\n{front}\n---", "", f"# Source: {post.title}", "",
             f"The code behind [{post.title}](../posts/{post.slug}.md): the experiment module, "
             "then each `deepnotes` module it imports (the shared `deepnotes.core` pieces are left "
             "out).",
             ""]
    for module in modules:
        path = module_file(module)
        text = path.read_text(encoding="utf-8")
        rel = (path.relative_to(paths.PACKAGE_DIR.parent).as_posix()
               if path.is_relative_to(paths.PACKAGE_DIR.parent) else path.name)
        fence = _fence_for(text)
        lines += [f"## `{module}`", "", f"`{rel}`, {text.count(chr(10))} lines", "",
                  f"{fence}python", text.rstrip("\n"), fence, ""]
    return "\n".join(lines)


# --- post and home pages ------------------------------------------------------------------------
def post_page(post: Post, run_roots: list[Path], docs: Path, *, other_lang: bool = False) -> str:
    """The staged Markdown of one post (front matter for the blog plugin + body + run + links).

    References (:mod:`deepnotes.core.references`) are resolved against the topic's latest run and
    the benchmark records; a reference that names nothing raises ``ReferenceError``.
    """
    records = records_for(post.slug, run_roots)
    run_dir = find_latest_run(post.slug, run_roots)

    def place(fig: FigureRef) -> str:
        url = _copy_figure(post.slug, run_dir, f"{fig.name}.png", docs / "figures")
        return figure_html(url, figure_label(fig.number, post.lang), fig.caption)

    try:
        summary = resolve(post.summary, records, lang=post.lang, allow_missing_run=True)
        body = resolve(post.body.strip("\n") + "\n", records, render_figure=place,
                       lang=post.lang, allow_missing_run=True)
    except ReferenceError as exc:
        raise ReferenceError(f"{post.path}: {exc}") from exc
    meta = {"title": post.title, "date": post.published_at.replace(tzinfo=None),
            "categories": list(post.tags),
            "slug": post.slug, "description": summary}
    if MORE not in body:  # the blog needs an excerpt marker; the summary then serves as excerpt
        body = f"{summary}\n\n{MORE}\n\n{body}"
    body = separate_display_math(body)
    parts: list[str] = []
    zh = post.lang == "zh"
    if run_dir is not None:
        placed = {f.name for f in figure_refs(post.body)}
        parts.append(run_section(post.slug, run_dir, docs / "figures", placed=placed,
                                 lang=post.lang))
    elif experiment_file(post.slug) is not None:
        parts.append(f"No completed run of this topic yet: `deepnotes run {post.slug} --preset "
                     "quick`, then `deepnotes site build`.\n")
    if experiment_file(post.slug) is not None:
        source = f"../source/{post.slug}.md"
        parts.append(f"代码：[实验模块及其使用的算法模块]({source})（`{module_of(post.slug)}`）。\n"
                     if zh else
                     f"Code: [the experiment and the modules it uses]({source}) "
                     f"(`{module_of(post.slug)}`).\n")
    if parts:
        body = insert_results(body, "\n".join(parts))
    has_papers = re.search(r"^##\s+(Papers|References|论文|参考文献)", body, re.MULTILINE)
    if post.papers and not has_papers:
        body += ("\n## 论文\n\n" if zh else "\n## Papers\n\n") + \
            "\n".join(f"- {_paper(p)}" for p in post.papers) + "\n"
    front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False)
    if other_lang:  # after the excerpt: the feed pages show excerpts from another folder
        switch = f'<p class="dn-lang-switch">{language_link(post.slug, post.lang)}</p>'
        body = body.replace(MORE, f"{MORE}\n\n{switch}\n", 1)
    return f"---\n{front}---\n\n# {post.title}\n\n{body}"


def _paper(paper) -> str:
    if isinstance(paper, dict):
        text = ", ".join(str(paper[k]) for k in ("authors", "year", "title") if paper.get(k))
        return f"[{text}]({paper['url']})" if paper.get("url") else text
    return str(paper)


ROOT_LINK = "dn-root:"
"""Prefix of a link relative to the root of the whole site (both languages): the builder rewrites
it into a relative URL for each page once the engines are done (engines rebase relative links
differently, and a root-absolute URL would break under a sub-path)."""


def language_link(slug: str | None, lang: str) -> str:
    """A link from a page in ``lang`` to the same page in the other language."""
    if lang == "zh":
        href = ROOT_LINK + (f"posts/{slug}/" if slug else "")
        return (f'<a class="dn-lang" href="{href}" hreflang="en" lang="en">'
                "Read in English</a>")
    href = ROOT_LINK + (f"zh/posts/{slug}/" if slug else "zh/")
    return f'<a class="dn-lang" href="{href}" hreflang="zh" lang="zh">阅读中文版</a>'


def home_page(posts: list[Post], *, lang: str = "en", other_lang: bool = False) -> str:
    """The banner above the feed; the blog plugin appends the excerpts."""
    zh = lang == "zh"
    tags = sorted({t for p in posts for t in p.tags})
    tag_links = " ".join(f'<a class="dn-tag" href="category/{html.escape(tag_slug(t))}/">'
                         f"#{html.escape(t)}</a>" for t in tags)
    lede = ("一本机器学习笔记：每篇文章都由能运行的代码支撑，下面的图表和数字都来自本仓库里的实验。"
            if zh else
            "An ML notebook where every post is backed by code that runs: the figures and "
            "numbers below come from the experiments in this repository.")
    count = f"{len(posts)} 篇文章" if zh else f"{len(posts)} posts"
    atom = "Atom 订阅" if zh else "Atom feed"
    switch = f" · {language_link(None, lang)}" if other_lang else ""
    archive = "归档" if zh else "Archive"
    return (
        "---\ntitle: deepnotes\nhide: [toc]\n---\n\n"
        '<div class="dn-banner" markdown="0">\n'
        '<p class="dn-banner__signal"><span class="dn-blink"></span>INCOMING TRANSMISSION</p>\n'
        "<h1>deepnotes</h1>\n"
        f'<p class="dn-banner__lede">{lede}</p>\n'
        f'<p class="dn-banner__links"><a href="feed.xml">{atom}</a> · '
        f'<a href="archive/">{archive}</a> · {count}{switch}'
        + (f" · {tag_links}" if tag_links else "") + "</p>\n"
        "</div>\n\n"
        f'<h2 class="dn-latest">{"最新更新" if zh else "LATEST UPDATES"}</h2>\n'
    )


def neighbours(older: Post | None, newer: Post | None, *, lang: str = "en") -> str:
    """Links to the previous (older) and next (newer) post, in feed order."""
    zh = lang == "zh"
    links = []
    if older is not None:
        links.append(f'<span class="dn-prev">{"上一篇" if zh else "Previous"}: '
                     f"[{_link_text(older.title)}]({older.slug}.md)</span>")
    if newer is not None:
        links.append(f'<span class="dn-next">{"下一篇" if zh else "Next"}: '
                     f"[{_link_text(newer.title)}]({newer.slug}.md)</span>")
    if not links:
        return ""
    return '\n\n<nav class="dn-prevnext" markdown="1">\n' + "\n".join(links) + "\n</nav>\n"


def _link_text(title: str) -> str:
    return title.replace("[", "\\[").replace("]", "\\]")


def archive_page(posts: list[Post], *, lang: str = "en") -> str:
    """Every post as one line (date and title), grouped by month, newest first."""
    zh = lang == "zh"
    lines = ["---", f"title: {'归档' if zh else 'Archive'}", "hide: [toc]", "---", "",
             f"# {'归档' if zh else 'Archive'}", ""]
    month = None
    for post in posts:
        key = post.date.strftime("%Y-%m")
        if key != month:
            month = key
            heading = (f"{post.date.year} 年 {post.date.month} 月" if zh
                       else post.date.strftime("%B %Y"))
            lines += ["", f"## {heading}", ""]
        lines.append(f"- {post.date.isoformat()} · [{_link_text(post.title)}]"
                     f"(posts/{post.slug}.md)")
    return "\n".join(lines) + "\n"


def write_docs(posts: list[Post], run_roots: list[Path], docs: Path, *, lang: str = "en",
               other_lang: set[str] | None = None) -> None:
    """Write the whole staged docs tree (pages, figures) under ``docs``.

    ``other_lang`` holds the slugs that have a version in the other language: their pages link
    to it, and the home page links to the other feed when it is not empty.
    """
    other_lang = other_lang or set()
    (docs / "posts").mkdir(parents=True, exist_ok=True)
    (docs / "index.md").write_text(home_page(posts, lang=lang, other_lang=bool(other_lang)),
                                   encoding="utf-8")
    (docs / "archive.md").write_text(archive_page(posts, lang=lang), encoding="utf-8")
    for i, post in enumerate(posts):
        page = post_page(post, run_roots, docs, other_lang=post.slug in other_lang)
        page += neighbours(posts[i + 1] if i + 1 < len(posts) else None,
                           posts[i - 1] if i > 0 else None, lang=lang)
        (docs / "posts" / f"{post.slug}.md").write_text(page, encoding="utf-8")
        source = source_page(post)
        if source is not None:
            (docs / "source").mkdir(exist_ok=True)
            (docs / "source" / f"{post.slug}.md").write_text(source, encoding="utf-8")
