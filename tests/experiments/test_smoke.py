"""Every topic's smoke preset runs end to end, honours the run-directory contract and passes the
value check its smoke metrics can decide (``smoke_checks.CHECKS``)."""

import dataclasses
import json

import pytest
from smoke_checks import CHECKS, NOT_CHECKED

from deepnotes.core.registry import load_experiment, topic_slugs


@pytest.mark.parametrize("slug", topic_slugs())
def test_smoke_run(slug, tmp_path):
    module = load_experiment(slug)
    config = dataclasses.replace(module.PRESETS["smoke"], out=str(tmp_path), device="cpu")
    result = module.run(config)
    assert result.status == "completed"
    meta = json.loads((result.run_dir / "metrics.json").read_text())
    assert meta["status"] == "completed" and meta["preset"] == "smoke"
    assert module.HEADLINE in meta["metrics"], f"headline {module.HEADLINE} not logged"
    if module.PEER:
        assert module.PEER in meta["metrics"], f"peer metric {module.PEER} not logged"
    assert result.figures and all(p.is_file() and p.stat().st_size > 1000 for p in result.figures)
    for name in ("config.json", "log.txt", "command.txt"):
        assert (result.run_dir / name).is_file()
    if slug in CHECKS:
        ok = CHECKS[slug](meta["metrics"])
        assert ok is None or ok, f"{slug}: smoke value check failed"


def test_every_topic_is_checked_or_listed():
    missing = set(topic_slugs()) - set(CHECKS) - set(NOT_CHECKED)
    assert not missing, f"add a value check or a reason for: {sorted(missing)}"
    stale = (set(CHECKS) | set(NOT_CHECKED)) - set(topic_slugs())
    assert not stale, f"checks for topics that do not exist: {sorted(stale)}"
