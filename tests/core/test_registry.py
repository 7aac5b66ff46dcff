import dataclasses

import pytest

from deepnotes.core.experiment import ExperimentConfig
from deepnotes.core.posts import post_slugs
from deepnotes.core.registry import (
    PRESET_NAMES,
    UnknownTopicError,
    check_slug,
    experiment_slugs,
    load_experiment,
    topic_slugs,
)


def test_every_post_has_an_experiment_and_every_experiment_a_post():
    posts, experiments = set(post_slugs()), set(experiment_slugs())
    assert posts - experiments == set(), "posts without an experiment module"
    assert experiments - posts == set(), "experiment modules without a post"
    assert topic_slugs(), "no topics discovered"


@pytest.mark.parametrize("slug", topic_slugs())
def test_experiment_follows_the_contract(slug):
    module = load_experiment(slug)
    assert issubclass(module.Config, ExperimentConfig) and dataclasses.is_dataclass(module.Config)
    for name in PRESET_NAMES:
        preset = module.PRESETS[name]
        assert isinstance(preset, module.Config) and preset.preset == name
    assert isinstance(module.HEADLINE, str)
    assert getattr(module, "PEER", None) is None or isinstance(module.PEER, str)
    assert module.__doc__, f"{module.__name__} has no docstring"


def test_unknown_slug_suggests_close_ones():
    slug = topic_slugs()[0]
    with pytest.raises(UnknownTopicError, match=f"did you mean {slug}"):
        check_slug(slug[:-2] + "xx")
    with pytest.raises(UnknownTopicError, match="topics:"):
        check_slug("zzzzzzzzzzzzzzzzzzzzzz")
