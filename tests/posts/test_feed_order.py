"""The feed's order is the authors' choice: no two posts of a language share a publication time
(with equal times the blog falls back to alphabetical order)."""

import pytest

from deepnotes.core.posts import load_posts


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_publication_times_are_distinct_so_the_feed_order_is_meant(lang):
    posts = load_posts(lang=lang)
    stamps = [p.published_at for p in posts]
    twins = sorted({p.slug for p in posts if stamps.count(p.published_at) > 1})
    assert not twins, f"posts sharing a publication time (the feed falls back to the slug): {twins}"
