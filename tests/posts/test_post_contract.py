"""What every post of the package must hold to.

- Every measured number comes through a reference that resolves against the committed records
  (``results/<slug>/`` and ``benchmarks/results/``), and no measured-looking number is typed in.
- Every figure of the published run is placed in the text with a caption.
- Both languages exist, with the same date, tags, equation numbers and figures.
"""

import re

import pytest

from deepnotes.core import paths
from deepnotes.core.posts import load_posts, post_file, post_slugs
from deepnotes.core.references import bare_numbers, figure_refs, records_for, resolve

_TAG = re.compile(r"\\tag\{([^}]*)\}")


def _posts(lang):
    return {p.slug: p for p in load_posts(lang=lang)}


ENGLISH = _posts("en")
CHINESE = _posts("zh")
ALL = [pytest.param(p, id=f"{p.slug}.{p.lang}") for p in [*ENGLISH.values(), *CHINESE.values()]]


def _committed(slug):
    return records_for(slug, [paths.results_dir()])


@pytest.mark.parametrize("post", ALL)
def test_every_reference_resolves_against_the_committed_records(post):
    records = _committed(post.slug)
    resolve(post.summary, records, lang=post.lang)
    resolve(post.body, records, render_figure=lambda f: "", lang=post.lang)


@pytest.mark.parametrize("post", ALL)
def test_no_measured_number_is_typed_in(post):
    found = bare_numbers(post.summary) + bare_numbers(post.body)
    assert not found, (f"{post.path}: measured-looking numbers outside references (use "
                       f"{{{{ metric: ... }}}} / {{{{ bench: ... }}}}, or mark a paper value "
                       f"{{{{ paper: ... }}}}): {found[:8]}")


@pytest.mark.parametrize("post", ALL)
def test_every_figure_of_the_published_run_is_placed_with_a_caption(post):
    records = _committed(post.slug)
    placed = {f.name for f in figure_refs(post.body)}
    missing = sorted(records.figures - placed)
    assert not missing, f"{post.path}: figures of the run not placed in the text: {missing}"


#: The post column is ~700 px; a figure saved at 120 dpi wider than this (7.35 in) shrinks so
#: much that its 9-pt text drops below ~7 pt on screen.
MAX_FIGURE_WIDTH_PX = 882


@pytest.mark.parametrize("slug", post_slugs())
def test_published_figures_fit_the_column(slug):
    from PIL import Image

    widths = {png.name: Image.open(png).size[0]
              for png in sorted((paths.results_dir() / slug).glob("*.png"))}
    wide = {name: w for name, w in widths.items() if w > MAX_FIGURE_WIDTH_PX}
    assert not wide, f"{slug}: figures wider than the column ({MAX_FIGURE_WIDTH_PX} px): {wide}"


@pytest.mark.parametrize("slug", post_slugs())
def test_both_languages_exist(slug):
    assert post_file(slug, "zh").is_file(), f"{slug} has no Chinese post {post_file(slug, 'zh')}"


@pytest.mark.parametrize("slug", sorted(CHINESE))
def test_the_two_languages_agree(slug):
    en, zh = ENGLISH.get(slug), CHINESE[slug]
    assert en is not None, f"{zh.path} has no English post {post_file(slug, 'en')}"
    assert zh.date == en.date, "the two versions must share their date"
    assert zh.tags == en.tags, "the two versions must share their tags"
    assert _TAG.findall(zh.body) == _TAG.findall(en.body), "equation numbers differ"
    assert [f.name for f in figure_refs(zh.body)] == [f.name for f in figure_refs(en.body)], \
        "figure lists differ"
    assert re.search(r"[\u4e00-\u9fff]", zh.title + zh.summary), "the Chinese post has no Chinese"
