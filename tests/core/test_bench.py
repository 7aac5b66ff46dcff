"""Benchmark records: quick runs never replace the full record; a topic slug finds its benchmark."""

import json

from deepnotes.core import bench


def test_quick_records_go_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "results_dir", lambda: tmp_path)
    full = bench.record("demo", {"x": 1}, "cmd")
    quick = bench.record("demo", {"x": 2}, "cmd --quick", quick=True)
    assert full == tmp_path / "demo.json" and quick == tmp_path / "quick" / "demo.json"
    assert json.loads(full.read_text())["figures"] == {"x": 1}
    assert json.loads(quick.read_text())["quick"] is True


def test_a_topic_slug_finds_the_benchmark_that_declares_it(tmp_path):
    (tmp_path / "gbdt.py").write_text('"""Doc."""\nTOPICS = ("gbdt-to-xgboost",)\n')
    (tmp_path / "flows.py").write_text('TOPICS = ("nice", "normalizing-flows")\n')
    assert bench.benchmark_for("gbdt", tmp_path) == tmp_path / "gbdt.py"
    assert bench.benchmark_for("gbdt-to-xgboost", tmp_path) == tmp_path / "gbdt.py"
    assert bench.benchmark_for("normalizing-flows", tmp_path) == tmp_path / "flows.py"
    assert bench.benchmark_for("edm", tmp_path) is None


def test_every_topic_slug_declared_by_the_repository_benchmarks_resolves():
    from deepnotes.core.paths import benchmarks_dir

    assert bench.benchmark_for("gbdt-to-xgboost", benchmarks_dir()).stem == "gbdt"
    assert bench.benchmark_for("temporal-difference", benchmarks_dir()).stem == "rl_tabular"
