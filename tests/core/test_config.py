import re
from dataclasses import dataclass
from typing import Literal

import pytest

from deepnotes.core.config import apply_overrides, describe, field_docs, parse_value
from deepnotes.core.experiment import ExperimentConfig


@dataclass
class DemoConfig(ExperimentConfig):
    """A config for tests."""

    steps: int = 10
    """Number of steps."""
    lr: float = 0.1
    """Learning rate."""
    sizes: tuple[int, ...] = (1, 2)
    """Sizes to sweep."""
    method: Literal["a", "b"] = "a"
    """Which method."""
    verbose: bool = False
    """Print more."""
    limit: float | None = None
    """Optional cap."""


def test_field_docs_come_from_attribute_docstrings():
    docs = field_docs(DemoConfig)
    assert docs["steps"] == "Number of steps."
    assert docs["seed"] == "Seed for python, numpy and torch."  # inherited from the base


@pytest.mark.parametrize("text,tp,expected", [
    ("3", int, 3), ("1e3", int, 1000), ("1_000", int, 1000), ("0.5", float, 0.5),
    ("true", bool, True), ("off", bool, False), ("4,5,6", tuple[int, ...], (4, 5, 6)),
    ("(7,)", tuple[int, ...], (7,)), ("b", Literal["a", "b"], "b"), ("none", float | None, None),
    ("2.5", float | None, 2.5), ("x", str, "x"), ("1,2", tuple[int, float], (1, 2.0)),
])
def test_parse_value(text, tp, expected):
    assert parse_value(text, tp) == expected


@pytest.mark.parametrize("text,tp", [
    ("1.5", int), ("abc", float), ("maybe", bool), ("c", Literal["a", "b"]),
    ("1,2,3", tuple[int, int]),
])
def test_parse_value_rejects(text, tp):
    with pytest.raises(ValueError):
        parse_value(text, tp)


def test_apply_overrides_changes_only_named_fields():
    cfg = apply_overrides(DemoConfig(), ["steps=5", "sizes=3,4", "method=b", "limit=2"])
    assert (cfg.steps, cfg.sizes, cfg.method, cfg.limit, cfg.lr) == (5, (3, 4), "b", 2.0, 0.1)


def test_unknown_key_names_the_fields():
    with pytest.raises(ValueError, match=r"unknown config field 'stepz'.*steps \(int\)"):
        apply_overrides(DemoConfig(), ["stepz=1"])


def test_bad_value_names_field_and_type():
    with pytest.raises(ValueError, match=r"'abc' for field 'lr' of type float"):
        apply_overrides(DemoConfig(), ["lr=abc"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(DemoConfig(), ["lr"])


def test_describe_lists_every_field():
    names = [row[0] for row in describe(DemoConfig())]
    assert names[:4] == ["seed", "device", "out", "preset"] and "limit" in names


def _limits_config():
    from dataclasses import dataclass

    from deepnotes.core.experiment import ExperimentConfig, make_presets

    @dataclass
    class Cfg(ExperimentConfig):
        steps: int = 10
        lr: float = 0.1
        sizes: tuple[int, ...] = (1, 2)
        noise: float = 0.0
        gamma: float = 0.9
        LIMITS = {"gamma": (0.0, 1.0)}

    presets = make_presets(smoke=Cfg(steps=2), quick=Cfg(), full=Cfg(steps=100, noise=0.5))
    return Cfg, presets


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "'steps' (int) must be > 0"),
    ({"lr": -1.0}, "'lr' (float) must be > 0"),
    ({"sizes": ()}, "'sizes' (tuple[int, ...]) must not be empty"),
    ({"sizes": (3, 0)}, "'sizes' (tuple[int, ...]) must be > 0"),
    ({"noise": -0.1}, "'noise' (float) must be >= 0"),
    ({"gamma": 1.5}, "'gamma' (float) must lie in [0.0, 1.0]"),
    ({"steps": 2.5}, "'steps' must be of type int"),
    ({"device": "cuda:abc"}, "cuda:N"),
    ({"seed": -1}, "'seed' must be a non-negative"),
])
def test_validate_config_names_the_field_its_type_and_range(changes, message):
    import dataclasses

    from deepnotes.core.config import validate_config

    cls, presets = _limits_config()
    validate_config(presets["full"], presets)
    validate_config(dataclasses.replace(presets["full"], noise=0.0, gamma=1.0), presets)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_config(dataclasses.replace(presets["quick"], **changes), presets)


def test_every_topics_presets_pass_their_own_validation():
    from deepnotes.core.config import validate_config
    from deepnotes.core.registry import load_experiment, topic_slugs

    for slug in topic_slugs():
        module = load_experiment(slug)
        for config in module.PRESETS.values():
            validate_config(config, module.PRESETS)
