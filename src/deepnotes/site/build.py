"""Build the feed site: stage a docs tree, run Zensical (or mkdocs-material), render the math.

Steps of :func:`build_site`:

1. stage ``mkdocs.yml``, the theme override and ``docs/`` (home banner, posts with their latest
   run's metrics and figures, source pages, KaTeX's CSS and fonts) in a temporary folder;
2. run the engine on it (``python -m zensical build``: a subprocess, so the Rust runtime's output
   can be silenced and a crash cannot take the caller down);
3. render every formula with KaTeX (Node.js) and write ``feed.xml`` (Atom) and a marker file;
4. swap the result into ``out_dir``, which is only ever replaced if it holds a previous build.
"""

from __future__ import annotations

import datetime as _dt
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import yaml

from deepnotes.core import paths
from deepnotes.core.posts import LANGS, load_posts
from deepnotes.site import feed, katex, pages, plaintext

HERE = Path(__file__).resolve().parent
MARKER = ".deepnotes-site"
ENGINES = ("auto", "zensical", "mkdocs")


class SiteMathWarning(UserWarning):
    """Some formulas did not render (KaTeX reported errors); the page shows them in red."""


def _pick_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    have = {name: importlib.util.find_spec(name) is not None for name in ("zensical", "mkdocs")}
    have["mkdocs"] = have["mkdocs"] and importlib.util.find_spec("material") is not None
    if engine == "auto":
        engine = "zensical" if have["zensical"] else "mkdocs" if have["mkdocs"] else ""
    if not engine or not have[engine]:
        wanted = "zensical or mkdocs-material" if not engine else engine
        raise RuntimeError(f"the site needs {wanted}: pip install -c constraints.txt -e '.[site]'")
    return engine


def _run_engine(engine: str, project: Path, quiet: bool) -> Path:
    """Build ``project/mkdocs.yml`` into ``project/site``; on error, raise with its output."""
    config, site = project / "mkdocs.yml", project / "site"
    if engine == "zensical":
        cmd = [sys.executable, "-m", "zensical", "build", "-f", str(config)]
    else:
        cmd = [sys.executable, "-m", "mkdocs", "build", "-f", str(config), "-d", str(site)]
        cmd += ["-q"] if quiet else []
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(cmd, cwd=project, env=env, check=False, text=True,
                          capture_output=quiet)
    if proc.returncode != 0 or not (site / "index.html").is_file():
        output = ((proc.stdout or "") + (proc.stderr or ""))[-4000:]
        raise RuntimeError(f"{engine} failed (exit {proc.returncode}) on {config}:\n{output}")
    return site


#: What differs between the two feeds' configurations.
LANGUAGE_CONFIG = {
    "en": {"archive_name": "Archive", "categories_name": "Tags"},
    "zh": {"archive_name": "归档", "categories_name": "标签",
           "site_description": "每篇文章都由可运行代码支撑的机器学习笔记。"},
}


def _stage(project: Path, posts, run_roots: list[Path], *, lang: str = "en",
           site_url: str | None = None, other_lang: set[str] | None = None) -> None:
    docs = project / "docs"
    pages.write_docs(posts, run_roots, docs, lang=lang, other_lang=other_lang or set())
    katex.copy_assets(docs / "assets" / "katex")
    shutil.copy2(HERE / "assets" / "extra.css", docs / "assets" / "extra.css")
    (project / "overrides").mkdir()
    shutil.copy2(HERE / "assets" / "main.html", project / "overrides" / "main.html")
    config = yaml.safe_load((HERE / "mkdocs.yml").read_text(encoding="utf-8"))
    config.update(docs_dir="docs", site_dir="site")
    config["theme"]["language"] = lang
    local = LANGUAGE_CONFIG[lang]
    if "site_description" in local:
        config["site_description"] = local["site_description"]
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "blog" in plugin:
            plugin["blog"].update(archive_name=local["archive_name"],
                                  categories_name=local["categories_name"])
    if site_url:
        config["site_url"] = site_url.rstrip("/") + ("/zh/" if lang == "zh" else "/")
    (project / "mkdocs.yml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                                        encoding="utf-8")


def _resolve_root_links(site: Path) -> None:
    """Rewrite ``dn-root:PATH`` links into URLs relative to each page (see pages.ROOT_LINK)."""
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if pages.ROOT_LINK not in text:
            continue
        up = os.path.relpath(site, page.parent)
        prefix = "" if up == "." else up.replace(os.sep, "/") + "/"
        page.write_text(text.replace(pages.ROOT_LINK, prefix), encoding="utf-8")


#: The folders at the root of each feed: a 404 page finds the site's root in the missing URL as
#: the part before the first of them (``/sub/posts/typo/`` → ``/sub/``).
SITE_SECTIONS = ("posts", "category", "archive", "page", "assets", "figures", "source", "zh")

_BASE_SCRIPT = """<script>(function () {{
  var path = location.pathname;
  var m = path.match(/^(.*?\\/)(?:{sections})\\//);
  window.__dnRoot = (m ? m[1] : path.replace(/[^\\/]*$/, "")) + "{lang_dir}";
  document.write('<base href="' + window.__dnRoot + '">');
}})();</script>"""

_CONFIG_SCRIPT = """<script>(function () {
  var el = document.getElementById("__config"), config = JSON.parse(el.textContent);
  ["base", "search"].forEach(function (key) {
    if (typeof config[key] === "string" && config[key].charAt(0) === "/")
      config[key] = window.__dnRoot + config[key].slice(1);
  });
  el.textContent = JSON.stringify(config);
})();</script>"""


def _relocatable_404(site: Path, lang_dir: str) -> None:
    """Make ``404.html`` work under any sub-path when no ``site_url`` is known.

    A server shows the 404 page at the missing URL, so the engine's root-absolute links
    (``/assets/...``) break when the site lives under ``/sub/``. A first script in ``<head>``
    finds the site's root in the missing URL (the part before the first known section folder,
    :data:`SITE_SECTIONS`, else the URL's folder) and sets ``<base>`` to it; the links become
    relative to that base, and the theme's script configuration (its scope, base and search
    worker) is pointed at the same root.
    """
    page = site / lang_dir / "404.html"
    if not page.is_file():
        return
    text = page.read_text(encoding="utf-8")
    text = re.sub(r'((?:href|src)=")/(?!/)', r"\1./", text)
    text = text.replace('new URL("/",location)', "new URL(window.__dnRoot,location)")
    head = _BASE_SCRIPT.format(sections="|".join(SITE_SECTIONS), lang_dir=lang_dir)
    text = re.sub(r"<head>", lambda m: m.group(0) + head, text, count=1)
    text = re.sub(r'<script src="\./assets/javascripts/bundle',
                  lambda m: _CONFIG_SCRIPT + m.group(0), text, count=1)
    page.write_text(text, encoding="utf-8")


def _plain_search_index(path: Path) -> None:
    """Replace the raw TeX of the search entries by plain text (the engines index pre-KaTeX)."""
    if not path.is_file():
        return
    index = json.loads(path.read_text(encoding="utf-8"))
    for item in index.get("items", []):
        if str(item.get("location", "")).startswith("source/"):
            continue  # code pages: their backslashes and dollars are code
        for key in ("title", "text"):
            if isinstance(item.get(key), str):
                item[key] = plaintext.strip_tex(item[key])
    path.write_text(json.dumps(index, ensure_ascii=False, separators=(",", ":")),
                    encoding="utf-8")


def _write_sitemap(site: Path, site_url: str | None) -> None:
    """``sitemap.xml`` listing every page of both languages (a sitemap needs absolute URLs, so
    without ``site_url`` there is none rather than an empty one)."""
    target = site / "sitemap.xml"
    target.unlink(missing_ok=True)
    for extra in site.rglob("sitemap.xml.gz"):
        extra.unlink()
    for nested in site.glob("*/sitemap.xml"):
        nested.unlink()
    if not site_url:
        return
    base = site_url.rstrip("/") + "/"
    urls = sorted(page.parent.relative_to(site).as_posix() for page in site.rglob("index.html"))
    body = "".join(f"  <url><loc>{base}{'' if u == '.' else u + '/'}</loc></url>\n"
                   for u in urls)
    target.write_text('<?xml version="1.0" encoding="UTF-8"?>\n'
                      '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
                      f"{body}</urlset>\n", encoding="utf-8")


def is_site_build(folder: Path) -> bool:
    """Whether ``folder`` holds a build made by :func:`build_site` (it has the marker file)."""
    return (Path(folder) / MARKER).is_file()


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.is_file() or out_dir.is_symlink():
        raise ValueError(f"{out_dir} is a file or link, not a site folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_site_build(out_dir):
        raise ValueError(
            f"{out_dir} is not empty and holds no previous site build (no {MARKER} file); "
            "refusing to replace it: choose an empty or new folder")


def _swap_in(built: Path, out_dir: Path) -> None:
    """Move ``built`` to ``out_dir``, replacing a previous build only once the new one is ready."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    old = new.with_name(new.name.replace(".new-", ".old-"))
    try:
        shutil.copytree(built, new, dirs_exist_ok=True)  # same filesystem as out_dir from here on
        if out_dir.exists():
            _check_replaceable(out_dir)  # again: the folder may have changed during the build
            out_dir.rename(old)
        new.rename(out_dir)
    finally:
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def build_site(out_dir: Path, *, posts_dir: Path | list[Path] | None = None,
               include_package: bool | None = None, run_roots: list[Path] | None = None,
               engine: str = "auto", quiet: bool = True, site_url: str | None = None) -> Path:
    """Build the site into ``out_dir`` and return the path of its ``index.html``.

    Parameters
    ----------
    out_dir
        Destination folder. It must be absent, empty or a previous build (``ValueError`` else).
    posts_dir
        Extra folder(s) of posts; ``None`` builds the package's posts only.
    include_package
        Whether the package's posts are included too (default: only when ``posts_dir`` is None).
    run_roots
        Where runs are looked up (default ``runs/`` and ``results/`` of the repository).
    engine
        ``"zensical"``, ``"mkdocs"`` (mkdocs-material) or ``"auto"`` (the first installed).
    quiet
        Hide the engine's console output (it is still shown if the engine fails).
    site_url
        Where the site will be served (``https://host/path/``): gives the sitemap and the Atom
        feeds absolute links. Default: ``DEEPNOTES_SITE_URL``, else relative links only.

    The English feed is built at the root and, when Chinese posts exist, the Chinese feed under
    ``zh/``; each has its own pagination, tags, archive, search index and Atom feed, and every
    post links to its version in the other language.
    """
    site_url = site_url or os.environ.get("DEEPNOTES_SITE_URL") or None
    out_dir = Path(out_dir).resolve()
    _check_replaceable(out_dir)
    engine = _pick_engine(engine)
    katex.katex_dir(), katex.node_binary()  # fail before any work if `make node` was not run
    extra = [posts_dir] if isinstance(posts_dir, (str, Path)) else list(posts_dir or [])
    if include_package is None:
        include_package = posts_dir is None
    feeds = {lang: load_posts(extra, include_package=include_package, lang=lang)
             for lang in LANGS}
    posts = feeds["en"]
    if run_roots is None:
        run_roots = [paths.runs_dir(), paths.results_dir()]
    slugs = {lang: {p.slug for p in feed_posts} for lang, feed_posts in feeds.items()}
    with tempfile.TemporaryDirectory(prefix="deepnotes-site-") as tmp:
        site = None
        for lang in LANGS:
            if not feeds[lang] and lang != "en":
                continue
            project = Path(tmp) / lang
            project.mkdir()
            other = "zh" if lang == "en" else "en"
            _stage(project, feeds[lang], [Path(r) for r in run_roots], lang=lang,
                   site_url=site_url, other_lang=slugs[other] if feeds[other] else set())
            built = _run_engine(engine, project, quiet)
            if site is None:
                site = built
            else:
                shutil.copytree(built, site / lang)
        _resolve_root_links(site)
        if not site_url:
            for lang_dir in ("", "zh/"):
                _relocatable_404(site, lang_dir)
        for index in (site / "search.json", site / "zh" / "search.json"):
            _plain_search_index(index)
        _write_sitemap(site, site_url)
        report = katex.render_site(site)
        for lang in LANGS:  # after KaTeX: the feeds carry the rendered posts
            if feeds[lang] or lang == "en":
                root = site if lang == "en" else site / lang
                url = site_url.rstrip("/") + ("/zh/" if lang == "zh" else "/") if site_url else ""
                feed.write_feed(feeds[lang], root, lang=lang, site_url=url,
                                title="deepnotes" if lang == "en" else "deepnotes（中文）")
        if report["errors"]:
            shown = "; ".join(f"{e['file']}: {e['message']}" for e in report["errors"][:5])
            warnings.warn(f"{len(report['errors'])} formula(s) did not render: {shown}",
                          SiteMathWarning, stacklevel=2)
        (site / MARKER).write_text(json.dumps({
            "generator": "deepnotes.site.build", "engine": engine, "posts": len(posts),
            "posts_zh": len(feeds["zh"]),
            "formulas": report["rendered"], "math_errors": len(report["errors"]),
            "built_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }, indent=2) + "\n", encoding="utf-8")
        _swap_in(site, out_dir)
    return out_dir / "index.html"


def serve_site(out_dir: Path, port: int = 8000) -> None:
    """Serve ``out_dir`` on http://localhost:PORT/ until Ctrl-C."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out_dir))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"serving {out_dir} at http://localhost:{server.server_address[1]}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")
