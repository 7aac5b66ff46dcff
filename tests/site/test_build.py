"""The feed site, built from a fixture feed of 14 posts (one in Chinese) and fake runs."""

from __future__ import annotations

import json
import posixpath
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from site_fixtures import CHINESE_SLUG, CHINESE_TITLE, CHINESE_WORD, write_fixture_feed

from deepnotes.site import build as site_build
from deepnotes.site import katex, pages
from deepnotes.site.build import build_site

ATOM = "{http://www.w3.org/2005/Atom}"
# 14 posts build in ~1.5 s on 2 cores; the bound catches an accidental per-post engine run or
# KaTeX start, not scheduler noise on a busy CI machine.
MAX_BUILD_S = 15.0
BUILD_SECONDS: list[float] = []


@pytest.fixture(scope="module")
def feed(tmp_path_factory):
    posts_dir, runs, slugs = write_fixture_feed(tmp_path_factory.mktemp("feed"))
    return posts_dir, runs, slugs


@pytest.fixture(scope="module")
def site(feed, tmp_path_factory):
    posts_dir, runs, _ = feed
    out = tmp_path_factory.mktemp("out") / "site"
    t0 = time.perf_counter()
    index = build_site(out, posts_dir=posts_dir, run_roots=[runs])
    BUILD_SECONDS.append(time.perf_counter() - t0)
    assert index == out / "index.html"
    return out


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def excerpt_slugs(page: str) -> list[str]:
    """Slugs of the excerpts on a feed page, in order (each excerpt's title links to its post)."""
    articles = re.findall(r'<article class="md-post md-post--excerpt">(.*?)</article>', page, re.S)
    return [re.search(r'href="[./]*posts/([^/"]+)/"', a).group(1) for a in articles]


def resolve(page: Path, href: str) -> Path:
    """The file a relative link on ``page`` points to (directory URLs end in index.html)."""
    target = Path(posixpath.normpath(posixpath.join(page.parent.as_posix(), href.split("#")[0])))
    return target / "index.html" if href.endswith("/") else target


def test_home_shows_banner_and_the_12_newest_excerpts(site, feed):
    html = read(site / "index.html")
    assert "INCOMING TRANSMISSION" in html and "LATEST UPDATES" in html
    assert excerpt_slugs(html) == feed[2][:12]
    assert 'rel="alternate" type="application/atom+xml"' in html


def test_page_2_has_the_rest_and_is_linked(site, feed):
    html = read(site / "page" / "2" / "index.html")
    assert excerpt_slugs(html) == feed[2][12:]
    assert re.search(r'href="[./]*page/2/"', read(site / "index.html"))
    assert "INCOMING TRANSMISSION" not in html  # the banner heads page 1 only


def test_tag_pages_list_their_posts_and_banner_links_resolve(site):
    optimization = read(site / "category" / "optimization" / "index.html")
    assert CHINESE_TITLE in optimization and "Note 00" in optimization
    assert "Note 01" not in optimization
    home = site / "index.html"
    tag_links = re.findall(r'class="dn-tag" href="([^"]+)"', read(home))
    assert len(tag_links) == 3  # algorithms, numba, optimization
    assert all(resolve(home, href).is_file() for href in tag_links)


def test_feed_is_atom_with_every_post_newest_first(site, feed):
    root = ET.parse(site / "feed.xml").getroot()
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 14
    hrefs = [e.find(f"{ATOM}link").get("href") for e in entries]
    assert hrefs == [f"posts/{slug}/" for slug in feed[2]]
    assert all((site / href / "index.html").is_file() for href in hrefs)
    first = entries[0]
    assert first.findtext(f"{ATOM}title") == CHINESE_TITLE
    assert first.findtext(f"{ATOM}summary") == f"Summary of {CHINESE_SLUG}."
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", first.findtext(f"{ATOM}updated"))
    assert root.findtext(f"{ATOM}updated") == first.findtext(f"{ATOM}updated")


def test_search_index_holds_the_chinese_post(site):
    index = json.loads(read(site / "search.json"))
    hits = [item for item in index["items"] if CHINESE_WORD in item["title"] + item["text"]]
    assert any(item["location"].startswith(f"posts/{CHINESE_SLUG}/") for item in hits)


def test_math_is_rendered_by_katex_with_no_raw_tex_left(site):
    page = site / "posts" / "note-05" / "index.html"
    html = read(page)
    assert html.count('class="katex-display"') == 1  # the aligned block, despite no blank line
    assert html.count('class="katex"') == 3  # the display + inline $\eta_t$ and $a < b$
    assert 'class="katex-tag"' in html and "<mtext>(1)</mtext>" in html  # \tag{1}, numbered
    assert "katex-error" not in html
    body = html.split('<article class="md-content__inner', 1)[1]
    assert "$$" not in body and "\\(" not in body and "\\[" not in body
    chinese = read(site / "posts" / CHINESE_SLUG / "index.html")
    assert 'class="katex"' in chinese and CHINESE_WORD in chinese


def test_katex_css_and_fonts_ship_with_the_site(site):
    css = site / "assets" / "katex" / "katex.min.css"
    fonts = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", read(css)))
    assert fonts and all((css.parent / f).is_file() for f in fonts)
    page = site / "posts" / "note-05" / "index.html"
    links = re.findall(r'<link rel="stylesheet" href="([^"]+)"', read(page))
    assert any(resolve(page, href) == css for href in links)


def test_pages_reference_nothing_off_site(site):
    for page in site.rglob("*.html"):
        refs = re.findall(r'<(?:link|script|img)\b[^>]*?(?:href|src)="([^"]+)"', read(page))
        remote = [r for r in refs if re.match(r"(https?:)?//", r)]
        assert not remote, f"{page.relative_to(site)} loads {remote}"


def test_post_shows_its_latest_full_run_with_figure_table_and_command(site, feed):
    page = site / "posts" / "note-00" / "index.html"
    html = read(page)
    assert "0.9876" in html and "9.0" not in html  # the full run, not the newer smoke one
    assert re.search(r"<table>.*<code>test/accuracy</code> \(headline\).*</table>", html, re.S)
    assert "deepnotes run note-00 --preset full" in html
    images = re.findall(r'<img[^>]*src="([^"]+\.png)"', html)
    assert len(images) == 1 and "smoke_only" not in images[0]
    copied = resolve(page, images[0])
    original = feed[1] / "note-00" / "20261120T100000-full" / "loss_curve.png"
    assert copied.read_bytes() == original.read_bytes()
    # the run block sits in the post's Results section, before "Reproduce"
    assert html.index("0.9876") < html.index('id="reproduce"')
    quick = read(site / "posts" / "note-01" / "index.html")
    assert "<code>quick</code> preset" in quick
    assert "<table>" not in read(site / "posts" / "note-02" / "index.html")  # no run, no table


def test_build_is_fast(site):
    assert BUILD_SECONDS and BUILD_SECONDS[0] < MAX_BUILD_S


def test_a_second_build_replaces_the_first(tmp_path, post_factory):
    out = tmp_path / "out"
    post_factory(tmp_path / "a", "first-post")
    build_site(out, posts_dir=tmp_path / "a", run_roots=[])
    assert (out / "posts" / "first-post" / "index.html").is_file()
    (out / "stray.txt").write_text("left over", encoding="utf-8")
    post_factory(tmp_path / "b", "second-post")
    build_site(out, posts_dir=tmp_path / "b", run_roots=[])
    assert (out / "posts" / "second-post" / "index.html").is_file()
    assert not (out / "posts" / "first-post").exists() and not (out / "stray.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no leftovers


def test_refuses_to_replace_a_folder_that_is_not_a_site(tmp_path, post_factory):
    post_factory(tmp_path / "posts", "a-post")
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious", encoding="utf-8")
    with pytest.raises(ValueError, match="refusing"):
        build_site(mine, posts_dir=tmp_path / "posts", run_roots=[])
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    with pytest.raises(ValueError, match="not a site folder"):
        build_site(mine / "thesis.tex", posts_dir=tmp_path / "posts", run_roots=[])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_site(empty, posts_dir=tmp_path / "posts", run_roots=[]).is_file()


def test_missing_katex_says_to_run_make_node(tmp_path, monkeypatch, post_factory):
    post_factory(tmp_path / "posts", "a-post")
    monkeypatch.setenv("DEEPNOTES_ROOT", str(tmp_path))
    monkeypatch.setenv("DEEPNOTES_NODE_MODULES", str(tmp_path / "nowhere"))
    monkeypatch.setattr(katex.paths, "PACKAGE_DIR", tmp_path / "pkg")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(katex.KatexMissingError, match="make node"):
        build_site(tmp_path / "out", posts_dir=tmp_path / "posts", run_roots=[])
    assert not (tmp_path / "out").exists()


def test_unknown_engine_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="engine"):
        build_site(tmp_path / "out", posts_dir=tmp_path, engine="hugo")


def test_auto_engine_prefers_zensical_then_falls_back_to_mkdocs(monkeypatch):
    installed = {"zensical", "mkdocs", "material"}
    monkeypatch.setattr(site_build.importlib.util, "find_spec",
                        lambda name: object() if name in installed else None)
    assert site_build._pick_engine("auto") == "zensical"
    installed.discard("zensical")
    assert site_build._pick_engine("auto") == "mkdocs"
    installed.discard("material")
    with pytest.raises(RuntimeError, match=r"\[site\]"):
        site_build._pick_engine("auto")


def test_mkdocs_material_fallback_builds_the_same_feed(feed, tmp_path):
    posts_dir, runs, slugs = feed
    out = tmp_path / "site"
    build_site(out, posts_dir=posts_dir, run_roots=[runs], engine="mkdocs")
    assert excerpt_slugs(read(out / "index.html")) == slugs[:12]
    assert excerpt_slugs(read(out / "page" / "2" / "index.html")) == slugs[12:]
    assert 'class="katex-display"' in read(out / "posts" / "note-05" / "index.html")


# --- the Markdown staging helpers ---------------------------------------------------------------
def test_display_math_gets_its_own_block_but_code_is_untouched():
    text = "Text:\n$$\na = b\n$$\nafter\n```\nx:\n$$\n```\n"
    expected = "Text:\n\n$$\na = b\n$$\n\nafter\n```\nx:\n$$\n```\n"
    assert pages.separate_display_math(text) == expected
    assert pages.separate_display_math("a\n$$ x $$\nb") == "a\n\n$$ x $$\n\nb"


def test_results_block_goes_at_the_end_of_the_results_section():
    body = "Intro\n\n## Results\nProse.\n\n## Reproduce\ncmd\n"
    out = pages.insert_results(body, "TABLE\n")
    assert out.index("Prose.") < out.index("TABLE") < out.index("## Reproduce")
    out = pages.insert_results("Intro\n\n## Deviations\n1. x\n", "TABLE\n")
    assert out.index("## Results") < out.index("TABLE") < out.index("## Deviations")


def test_source_page_shows_the_experiment_and_the_modules_it_imports(tmp_path, monkeypatch):
    from deepnotes.core.posts import Post

    experiment = tmp_path / "demo.py"
    experiment.write_text("from deepnotes.core.experiment import start_run\n"
                          "from deepnotes.data import digits\nimport numpy\n", encoding="utf-8")
    real_module_file = pages.module_file
    monkeypatch.setattr(pages, "module_file", lambda m: experiment
                        if m == "deepnotes.experiments.demo" else real_module_file(m))
    post = Post("demo", "Demo", None, [], "", "", experiment)
    text = pages.source_page(post)
    assert "## `deepnotes.experiments.demo`" in text and "## `deepnotes.data.digits`" in text
    assert "deepnotes.core.experiment`" not in text  # shared core pieces are left out
    assert "](../posts/demo.md)" in text


def test_metric_values_are_formatted_for_the_table():
    assert pages.format_value(0.123456789) == "0.1235"
    assert pages.format_value(float("nan")) == "nan"
    assert pages.format_value(123456) == "123,456"
    assert pages.format_value(list(range(8))) == "[0, 1, 2, 3, 4, 5, …]"


def test_serve_site_serves_the_folder(tmp_path, monkeypatch):
    import threading
    import urllib.request

    (tmp_path / "index.html").write_text("hello", encoding="utf-8")
    started = {}

    class Server(site_build.http.server.ThreadingHTTPServer):
        def serve_forever(self, poll_interval=0.05):
            started["port"] = self.server_address[1]
            threading.Thread(target=self._stop_after_one_request, daemon=True).start()
            super().serve_forever(poll_interval)

        def _stop_after_one_request(self):
            url = f"http://127.0.0.1:{self.server_address[1]}/index.html"
            started["body"] = urllib.request.urlopen(url, timeout=5).read()
            self.shutdown()

    monkeypatch.setattr(site_build.http.server, "ThreadingHTTPServer", Server)
    site_build.serve_site(tmp_path, port=0)
    assert started["body"] == b"hello"


def test_references_resolve_and_figures_are_numbered_beside_their_text(site):
    html = read(site / "posts" / "note-00" / "index.html")
    assert "Accuracy reached 98.76% (Figure 1)." in html
    caption = re.search(r'<figcaption><span class="dn-figure__label">Figure 1\.</span> '
                        r"Training loss (.*?) by step\.</figcaption>", html, re.S)
    assert caption and 'class="katex"' in caption.group(1) and "$" not in caption.group(1)
    assert 'alt="Training loss ℓ_t by step."' in html  # the alt text: the caption's math as text
    # the placed figure comes before the folded block of all metrics, and is not repeated
    assert html.index("Figure 1.") < html.index("<details")
    assert html.count("loss_curve.png") == 1 and "More figures" not in html


def test_a_reference_that_names_nothing_fails_the_build(tmp_path, feed):
    from deepnotes.core.references import ReferenceError

    posts_dir, runs, _ = feed
    bad = tmp_path / "posts"
    bad.mkdir()
    text = (posts_dir / "note-00.md").read_text(encoding="utf-8")
    (bad / "note-00.md").write_text(text.replace("test/accuracy", "test/acuracy"),
                                    encoding="utf-8")
    with pytest.raises(ReferenceError, match="test/acuracy.*closest: test/accuracy"):
        build_site(tmp_path / "out", posts_dir=bad, run_roots=[runs])
    assert not (tmp_path / "out").exists()


def test_chinese_feed_has_its_own_home_post_search_and_atom(site):
    from site_fixtures import ZH_TITLE, ZH_WORD

    home = read(site / "zh" / "index.html")
    assert '<html lang="zh"' in home and "最新更新" in home and ZH_TITLE in home
    post = read(site / "zh" / "posts" / "note-00" / "index.html")
    assert "准确率达到 98.76%（图 1）" in post and "图 1." in post
    index = json.loads(read(site / "zh" / "search.json"))
    assert any(ZH_WORD in item["text"] for item in index["items"])
    english = json.loads(read(site / "search.json"))
    assert not any(ZH_WORD in item["text"] for item in english["items"])
    root = ET.parse(site / "zh" / "feed.xml").getroot()
    assert [e.findtext(f"{ATOM}title") for e in root.findall(f"{ATOM}entry")] == [ZH_TITLE]


def test_language_switch_links_the_same_post_both_ways(site):
    en_page = site / "posts" / "note-00" / "index.html"
    zh_page = site / "zh" / "posts" / "note-00" / "index.html"
    to_zh = re.findall(r'class="dn-lang" href="([^"]+)"', read(en_page))
    to_en = re.findall(r'class="dn-lang" href="([^"]+)"', read(zh_page))
    assert [resolve(en_page, h) for h in to_zh] == [zh_page]
    assert [resolve(zh_page, h) for h in to_en] == [en_page]
    home_switch = re.findall(r'class="dn-lang" href="([^"]+)"', read(site / "index.html"))
    assert [resolve(site / "index.html", h) for h in home_switch] == [site / "zh" / "index.html"]
    # a post without a Chinese version has no switch
    assert 'class="dn-lang"' not in read(site / "posts" / "note-01" / "index.html")


def test_atom_entries_carry_the_rendered_post(site):
    root = ET.parse(site / "feed.xml").getroot()
    entry = next(e for e in root.findall(f"{ATOM}entry")
                 if e.find(f"{ATOM}link").get("href") == "posts/note-05/")
    content = entry.find(f"{ATOM}content")
    assert content.get("type") == "html" and 'class="katex' in content.text


def test_every_page_links_its_version_in_the_other_language(site):
    for page, other in [
        (site / "index.html", site / "zh" / "index.html"),
        (site / "archive" / "index.html", site / "zh" / "archive" / "index.html"),
        (site / "category" / "optimization" / "index.html",
         site / "zh" / "category" / "optimization" / "index.html"),
        (site / "zh" / "posts" / "note-00" / "index.html",
         site / "posts" / "note-00" / "index.html"),
    ]:
        links = re.findall(r'class="dn-lang-bar" href="([^"]+)"', read(page))
        assert [resolve(page, h) for h in links] == [other], page
        assert other.is_file()
