"""``--device`` reaches every torch experiment (issue 13): a static check of the sources.

There is no GPU in CI, so this cannot run a topic on CUDA. It checks instead that every topic
module that imports torch either declares ``CPU_ONLY`` with a real reason (its work is numba,
numpy or closed-form float64, said once in the run's log) or asks for ``run.device``; the
placeholder reason of the topics not yet ported is gone. That ``--device cpu`` left every number
unchanged was checked by running each ported topic's smoke preset before and after the port.
"""

import ast
import re

import pytest

from deepnotes.core.paths import PACKAGE_DIR
from deepnotes.core.registry import experiment_slugs

EXPERIMENTS = PACKAGE_DIR / "experiments"
_TORCH_IMPORT = re.compile(r"^\s*(import torch\b|from torch\b)", re.MULTILINE)


def _source(slug: str) -> str:
    return (EXPERIMENTS / f"{slug.replace('-', '_')}.py").read_text(encoding="utf-8")


def _cpu_only(source: str) -> str | None:
    """The module-level string ``CPU_ONLY = "..."`` of a module's source, or None."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "CPU_ONLY" for t in node.targets):
            value = node.value
            if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                raise AssertionError("CPU_ONLY must be a string literal (the reason)")
            return value.value
    return None


TORCH_TOPICS = [slug for slug in experiment_slugs() if _TORCH_IMPORT.search(_source(slug))]


def test_the_scan_finds_the_torch_topics():
    # a broken pattern would make every check below vacuous
    assert {"adam-vs-adamw", "edm", "nice", "rectified-flow"} <= set(TORCH_TOPICS)


@pytest.mark.parametrize("slug", TORCH_TOPICS)
def test_torch_topic_runs_on_the_chosen_device(slug):
    source = _source(slug)
    reason = _cpu_only(source)
    if reason is None:
        assert "run.device" in source, (
            f"{slug} imports torch but never asks for run.device: its networks ignore --device "
            "(move them to run.device, or declare CPU_ONLY with the reason)")
    else:
        assert reason.strip(), f"{slug}: CPU_ONLY needs a reason"
        assert "not been ported" not in reason, (
            f"{slug} still says its networks are not ported to --device: port them")


@pytest.mark.parametrize("slug", experiment_slugs())
def test_no_topic_keeps_the_not_ported_placeholder(slug):
    reason = _cpu_only(_source(slug))
    assert reason is None or "not been ported" not in reason, slug
