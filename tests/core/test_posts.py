import datetime as dt

import pytest

from deepnotes.core.posts import load_posts, parse_post


def test_parse_and_order(tmp_path, post_factory):
    post_factory(tmp_path, "older", day=1, tags=("a", "b"))
    post_factory(tmp_path, "newer", day=5)
    posts = load_posts([tmp_path], include_package=False)
    assert [p.slug for p in posts] == ["newer", "older"]
    older = posts[1]
    assert older.date == dt.date(2026, 1, 2) and older.tags == ["a", "b"]
    assert older.summary == "Summary of older." and older.body.startswith("Intro.")


def test_chinese_post_parses(tmp_path, post_factory):
    post_factory(tmp_path, "zh", title="随机近似", body="随机梯度下降的收敛性。\n")
    (post,) = load_posts([tmp_path], include_package=False)
    assert post.title == "随机近似" and "收敛" in post.body


@pytest.mark.parametrize("text,message", [
    ("no front matter", "no front matter"),
    ("---\ntitle: x\n---\nbody", "lacks date, tags, summary"),
    ("---\ntitle: x\ndate: 2026-13-40\ntags: []\nsummary: s\n---\n", "does not parse"),
    ("---\ntitle: x\ndate: tomorrow\ntags: []\nsummary: s\n---\n", "not YYYY-MM-DD"),
    ("---\ntitle: [x\n---\n", "does not parse"),
])
def test_bad_posts_are_named(tmp_path, text, message):
    path = tmp_path / "bad.md"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        parse_post(path)


def test_duplicate_slug(tmp_path, post_factory):
    post_factory(tmp_path / "a", "same")
    post_factory(tmp_path / "b", "same")
    with pytest.raises(ValueError, match="share the slug"):
        load_posts([tmp_path / "a", tmp_path / "b"], include_package=False)


def test_package_posts_are_valid():
    for post in load_posts():
        assert post.title and post.summary and post.tags
        assert "<!-- more -->" in post.body, f"{post.slug}: no excerpt marker"
