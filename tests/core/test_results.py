import json
import time

import pytest

from deepnotes.core.results import find_latest_run, list_runs, publish, read_metrics


def fake_run(root, slug, run_id, preset, started, status="completed"):
    run_dir = root / slug / run_id
    run_dir.mkdir(parents=True)
    meta = {"slug": slug, "run_id": run_id, "preset": preset, "status": status,
            "started_at": started, "metrics": {"a/b": 1.0}}
    (run_dir / "metrics.json").write_text(json.dumps(meta))
    (run_dir / "plot.png").write_bytes(b"\x89PNG fake")
    (run_dir / "command.txt").write_text(f"deepnotes run {slug} --preset {preset}\n")
    (run_dir / "config.json").write_text(json.dumps({"slug": slug, "config": {"preset": preset}}))
    return run_dir


def test_best_preset_then_newest(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "t", "1", "quick", "2026-01-02T00:00:00")
    newest_quick = fake_run(runs, "t", "2", "quick", "2026-01-03T00:00:00")
    fake_run(runs, "t", "3", "smoke", "2026-01-04T00:00:00")
    fake_run(runs, "t", "4", "full", "2026-01-05T00:00:00", status="interrupted")
    assert find_latest_run("t", [runs]) == newest_quick
    full = fake_run(runs, "t", "5", "full", "2026-01-01T00:00:00")
    assert find_latest_run("t", [runs]) == full
    assert [r[0].name for r in list_runs("t", [runs])] == ["5", "2", "1", "3"]
    assert find_latest_run("other", [runs]) is None


def test_results_dir_is_one_flat_run(tmp_path):
    results = tmp_path / "results" / "t"
    results.mkdir(parents=True)
    (results / "metrics.json").write_text(json.dumps({"preset": "full", "status": "completed",
                                                      "started_at": "2026"}))
    assert find_latest_run("t", [tmp_path / "runs", tmp_path / "results"]) == results


def test_publish_copies_newest_full_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPNOTES_ROOT", str(tmp_path))
    (tmp_path / "results" / "t").mkdir(parents=True)
    (tmp_path / "results" / "t" / "old.png").write_bytes(b"old")
    with pytest.raises(FileNotFoundError, match="--preset full"):
        publish("t")
    fake_run(tmp_path / "runs", "t", "a", "full", "2026-01-01T00:00:00")
    time.sleep(0.01)
    fake_run(tmp_path / "runs", "t", "b", "full", "2026-01-02T00:00:00")
    dest = publish("t")
    assert dest == tmp_path / "results" / "t"
    assert sorted(p.name for p in dest.iterdir()) == ["command.txt", "config.json",
                                                      "metrics.json", "plot.png",
                                                      "published.json"]
    assert read_metrics(dest)["run_id"] == "b"
    assert json.loads((dest / "published.json").read_text())["forced"] is False


def test_publish_refuses_incomplete_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPNOTES_ROOT", str(tmp_path))
    run_dir = fake_run(tmp_path / "runs", "t", "a", "full", "2026", status="failed")
    with pytest.raises(ValueError, match="only completed"):
        publish("t", run_dir)


def test_corrupt_metrics_named(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        read_metrics(tmp_path)


def _real_run(tmp_path, slug, preset, **overrides):
    """A run of a real topic whose config.json holds ``preset``'s settings plus ``overrides``."""
    import dataclasses

    from deepnotes.core.registry import load_experiment

    run_dir = fake_run(tmp_path / "runs", slug, f"{preset}-{len(overrides)}", "full",
                       "2026-01-01T00:00:00")
    config = {**dataclasses.asdict(load_experiment(slug).PRESETS[preset]), **overrides,
              "preset": "full"}
    (run_dir / "config.json").write_text(json.dumps({"slug": slug, "config": config}))
    return run_dir


def test_publish_refuses_another_topics_run_a_relabelled_smoke_run_and_overrides(
        tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPNOTES_ROOT", str(tmp_path))
    slug = "sliding-window-maximum"
    other = fake_run(tmp_path / "runs", "nice", "x", "full", "2026")
    with pytest.raises(ValueError, match="a run of 'nice', not of 'sliding-window-maximum'"):
        publish(slug, other, force=True)
    relabelled = _real_run(tmp_path, slug, "smoke")  # `--preset smoke --set preset=full`
    with pytest.raises(ValueError, match="settings differ from the full preset"):
        publish(slug, relabelled)
    dest = publish(slug, relabelled, force=True)
    record = json.loads((dest / "published.json").read_text())
    assert record["forced"] is True and "differ from the full preset" in record["problems"][0]
    assert publish(slug, _real_run(tmp_path, slug, "full", seed=3)) == dest  # seed may differ
    assert json.loads((dest / "published.json").read_text())["forced"] is False
