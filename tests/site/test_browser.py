"""The built site in headless Chromium: feed, pagination, math, figures and offline search.

The site holds the package's real posts with their topics' smoke runs plus the 14-post fixture
feed (one post in Chinese). It is served from a localhost thread; Chromium starts with background
networking off, so anything the pages fetched from the internet would fail and show up here.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import shutil
import threading
import time
from pathlib import Path

import pytest
from site_fixtures import CHINESE_SLUG, CHINESE_WORD, write_fixture_feed

from deepnotes.core.posts import load_posts
from deepnotes.core.registry import load_experiment, topic_slugs
from deepnotes.site.build import build_site

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# A second, mid-clause Chinese word: found only because the search separator splits CJK text.
CHINESE_MID_WORD = "收敛"
# Smoke runs of the real topics start while less than this has been spent on them, keeping the
# whole module under a minute; a smoke run takes a few seconds (up to ~15 s on a loaded machine).
SMOKE_BUDGET_S = 12.0


def _require_browser():
    # A missing browser fails (never skips): a skip in CI would hide a broken setup.
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: `make browser` installs Debian's chromium "
                    "and chromium-driver")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Smoke-run every real topic, then build the site with them and the fixture feed."""
    _require_browser()
    base = tmp_path_factory.mktemp("browser")
    runs = base / "smoke-runs"
    ran, start = [], time.monotonic()
    for slug in topic_slugs():
        if time.monotonic() - start > SMOKE_BUDGET_S:
            break  # the rest show "no completed run yet"; tests/experiments runs every smoke
        module = load_experiment(slug)
        config = dataclasses.replace(module.PRESETS["smoke"], out=str(runs), device="cpu")
        if module.run(config).status == "completed":
            ran.append(slug)
    posts_dir, fixture_runs, _ = write_fixture_feed(base / "fixture")
    for run in fixture_runs.iterdir():
        shutil.copytree(run, runs / run.name)
    out = base / "site"
    build_site(out, posts_dir=posts_dir, include_package=True, run_roots=[runs])
    posts = load_posts([posts_dir])
    return out, posts, ran


@pytest.fixture(scope="module")
def base_url(built):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built[0]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--window-size=1280,1400",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_feed_banner_excerpts_and_pagination(browser, base_url, built, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(base_url)
    banner = browser.find_element(By.CSS_SELECTOR, ".dn-banner")
    assert banner.is_displayed() and "INCOMING TRANSMISSION" in banner.text
    assert "LATEST UPDATES" in browser.find_element(By.CSS_SELECTOR, ".dn-latest").text
    excerpts = browser.find_elements(By.CSS_SELECTOR, "article.md-post--excerpt")
    assert len(excerpts) == 12 and all(e.is_displayed() for e in excerpts)
    newest = built[1]  # the package's posts and the fixture feed, newest first
    assert newest[0].title in excerpts[0].text
    browser.save_screenshot(str(tmp_path / "home.png"))
    assert console_errors(browser) == []  # every stylesheet, script and font loaded
    browser.find_element(By.CSS_SELECTOR, 'a[href$="page/2/"]').click()
    assert wait_for(lambda: browser.current_url.endswith("/page/2/"))
    second = browser.find_elements(By.CSS_SELECTOR, "article.md-post--excerpt")
    assert len(second) == min(12, len(newest) - 12)
    assert newest[12].title in second[0].text


def test_formulas_are_rendered_without_javascript_math(browser, base_url, built, tmp_path):
    from selenium.webdriver.common.by import By

    slugs = ["note-05"] + topic_slugs()
    for slug in slugs:
        browser.get(f"{base_url}posts/{slug}/")
        text, errors = browser.execute_script(
            "return [document.querySelector('article').innerText, "
            "document.querySelectorAll('.katex-error').length]")
        assert "$$" not in text and "\\[" not in text and "\\(" not in text, slug
        assert errors == 0, f"{slug}: {errors} formulas did not render"
    browser.get(f"{base_url}posts/note-05/")
    display = browser.find_element(By.CSS_SELECTOR, ".katex-display")
    assert display.is_displayed() and display.size["height"] > 20  # two aligned rows
    fonts_loaded = wait_for(lambda: browser.execute_script(
        "return [...document.fonts].filter(f => f.family.includes('KaTeX') && "
        "f.status === 'loaded').length"))
    assert fonts_loaded > 0  # KaTeX's own fonts, served by the site itself
    assert not browser.execute_script("return !!window.katex")  # math needs no script at view time
    browser.save_screenshot(str(tmp_path / "post.png"))
    assert console_errors(browser) == []


def test_figures_load(browser, base_url, built):
    from selenium.webdriver.common.by import By

    out, _, ran = built
    for slug in ["note-00"] + ran:
        browser.get(f"{base_url}posts/{slug}/")
        images = browser.find_elements(By.CSS_SELECTOR, "figure.dn-figure img")
        assert images, f"{slug}: no figure"
        for image in images:
            width = wait_for(lambda image=image: browser.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", image))
            assert width > 0, f"{slug}: {image.get_attribute('src')} did not load"


def test_offline_search_finds_the_chinese_post(browser, base_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(base_url)
    browser.find_element(By.CSS_SELECTOR, ".md-search__button").click()
    # Zensical's search dialog lives in a shadow root attached to a host element in <body>.
    host = wait_for(lambda: browser.execute_script(
        "return [...document.querySelectorAll('body *')].find(e => e.shadowRoot "
        "&& e.shadowRoot.querySelector('input'))"))
    assert host, "the search dialog did not open"
    root = host.shadow_root

    def hits():  # one script call: the result list re-renders while we read it
        return browser.execute_script(
            "return [...arguments[0].shadowRoot.querySelectorAll('ol a')].map(a => a.href)", host)

    def search(word, timeout=5.0):
        box = root.find_element(By.CSS_SELECTOR, "input")
        box.send_keys(Keys.BACKSPACE * len(box.get_attribute("value")))  # Ctrl+A is taken
        assert wait_for(lambda: not hits()), "results of the previous query stayed"
        box.send_keys(word)
        return wait_for(hits, timeout)

    for word in (CHINESE_WORD, CHINESE_MID_WORD):
        found = search(word)
        assert any(f"/posts/{CHINESE_SLUG}/" in h for h in found), f"{word!r} found {found}"
    assert search("zzzqqq", timeout=1.0) == []  # and the search does not match everything


MATH_LAYOUT_JS = (Path(__file__).parent / "math_layout.js").read_text(encoding="utf-8")


@pytest.mark.parametrize("width", [1280, 390])
def test_equation_numbers_never_cover_formulas_and_no_raw_tex(browser, base_url, built, width):
    """Measured with bounding boxes: the number of a display equation must not intersect any
    part of its formula; a formula wider than the column must sit in a scroll container; no `$`
    or `\\(` may be left in the rendered text; every image is a numbered figure whose caption
    says something (not a file name)."""
    zh = sorted(p.slug for p in load_posts(lang="zh"))
    pages = [f"posts/{s}/" for s in ["note-05", *topic_slugs()]] + [f"zh/posts/{s}/" for s in zh]
    browser.set_window_size(width, 1000)
    try:
        problems = {}
        for page in pages:
            browser.get(base_url + page)
            found = browser.execute_script(MATH_LAYOUT_JS)
            if any(found.values()):
                problems[page] = found
        assert not problems, f"at {width} px: {problems}"
    finally:
        browser.set_window_size(1280, 1400)


def test_placed_figures_are_numbered_with_captions(browser, base_url, built):
    from selenium.webdriver.common.by import By

    browser.get(f"{base_url}posts/note-00/")
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "figure.dn-figure "
                                                                        "figcaption")]
    # the caption's math is rendered by KaTeX: its letters, not the TeX source
    words = " ".join(captions[0].split()) if len(captions) == 1 else ""
    assert words.startswith("Figure 1. Training loss ℓ") and words.endswith(" by step.")
    assert "$" not in words and "\\" not in words
    browser.get(f"{base_url}zh/posts/note-00/")
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "figure.dn-figure "
                                                                        "figcaption")]
    assert captions == ["图 1. 训练损失随步数的变化。"]


def test_chinese_feed_and_language_switch(browser, base_url, built):
    from selenium.webdriver.common.by import By
    from site_fixtures import ZH_TITLE

    browser.get(base_url)
    browser.find_element(By.CSS_SELECTOR, ".dn-banner a.dn-lang").click()
    assert wait_for(lambda: browser.current_url.endswith("/zh/"))
    assert browser.execute_script("return document.documentElement.lang") == "zh"
    assert "最新更新" in browser.find_element(By.CSS_SELECTOR, ".dn-latest").text
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "article.md-post--excerpt")]
    chinese = load_posts(lang="zh")  # the package's Chinese posts, newest first
    assert len(titles) == min(12, len(chinese) + 1)  # the package's and the fixture's
    assert (chinese[0].title if chinese else ZH_TITLE) in titles[0]
    browser.get(f"{base_url}zh/posts/note-00/")
    browser.find_element(By.CSS_SELECTOR, "a.dn-lang").click()
    assert wait_for(lambda: browser.current_url.endswith("/posts/note-00/")
                    and "/zh/" not in browser.current_url)
    browser.find_element(By.CSS_SELECTOR, "a.dn-lang").click()
    assert wait_for(lambda: browser.current_url.endswith("/zh/posts/note-00/"))
    assert console_errors(browser) == []


def _open_search(browser):
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, ".md-search__button").click()
    host = wait_for(lambda: browser.execute_script(
        "return [...document.querySelectorAll('body *')].find(e => e.shadowRoot "
        "&& e.shadowRoot.querySelector('input'))"))
    assert host, "the search dialog did not open"
    return host


def test_chinese_search_finds_chinese_words_in_chinese_posts(browser, base_url, built):
    """Words from the middle of several Chinese posts, searched in the Chinese feed's own index."""
    import re

    from selenium.webdriver.common.by import By
    from site_fixtures import ZH_WORD

    cases = [(ZH_WORD, "note-00")]
    posts = load_posts(lang="zh")
    for post in posts[:4]:
        runs = re.findall(r"[\u4e00-\u9fff]{4,}", post.body.split("<!-- more -->")[-1])
        words = [run[i:i + 4] for run in runs for i in range(len(run) - 3)]
        if words:
            # the search splits Chinese into characters and ranks by them, so a word made of
            # common characters matches most posts and ranks at random among them: take a word
            # from the body whose characters are rare across the posts (the fewest posts
            # holding each of them, summed; nearest the middle on ties)
            def spread(word):
                return sum(sum(ch in other.body for other in posts) for ch in word)
            middle = len(words) // 2
            word = min(words, key=lambda w: (spread(w), abs(words.index(w) - middle)))
            cases.append((word, post.slug))
    browser.get(f"{base_url}zh/")
    host = _open_search(browser)
    box = host.shadow_root.find_element(By.CSS_SELECTOR, "input")
    for word, slug in cases:
        box.send_keys("\b" * len(box.get_attribute("value")))
        wait_for(lambda: not browser.execute_script(
            "return arguments[0].shadowRoot.querySelectorAll('ol a').length", host))
        box.send_keys(word)
        hits = wait_for(lambda: browser.execute_script(
            "return [...arguments[0].shadowRoot.querySelectorAll('ol a')].map(a => a.href)",
            host))
        assert any(f"/zh/posts/{slug}/" in h for h in hits or []), f"{word!r} found {hits}"


@pytest.fixture(scope="module")
def sub_path_url(built):
    """The site served under ``/sub/``, answering a missing path with ``404.html`` as static
    hosts do (GitHub Pages, Netlify): the page is shown at the missing URL."""
    site = built[0]

    class UnderSub(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def translate_path(self, path):
            rel = path.split("?", 1)[0]
            rel = rel[len("/sub"):] if rel.startswith("/sub/") else "/__missing__"
            return super().translate_path(rel)

        def send_head(self):
            target = Path(self.translate_path(self.path))
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                body = (site / "404.html").read_bytes()
                self.send_response(404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            return super().send_head()

    handler = functools.partial(UnderSub, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sub/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("missing", ["posts/no-such-post/", "no-such-page"])
def test_404_page_under_a_sub_path_keeps_its_style_and_links(browser, sub_path_url, missing):
    """Built without ``site_url``, the 404 page still loads its assets and links home when the
    site lives under a sub-path (its links were root-absolute before)."""
    from selenium.webdriver.common.by import By

    browser.get(sub_path_url + missing)
    loaded = browser.execute_script(
        "return Array.from(document.styleSheets).filter(s => s.href && s.cssRules.length > 0)"
        ".map(s => s.href)")
    assert any("/sub/assets/" in href for href in loaded), loaded
    home = browser.find_element(By.CSS_SELECTOR, "a.md-header__button.md-logo")
    assert browser.execute_script("return arguments[0].href", home) == sub_path_url
    assert not [e for e in console_errors(browser) if "404" not in e]
