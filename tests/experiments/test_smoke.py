"""Every topic's smoke preset runs end to end and honours the run-directory contract."""

import dataclasses
import json

import pytest

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
