"""Every peer benchmark runs in its --quick size and records JSON (so benchmarks never rot)."""

import json

import pytest

from deepnotes import cli
from deepnotes.core.paths import benchmarks_dir

NAMES = sorted(p.stem for p in benchmarks_dir().glob("*.py") if not p.stem.startswith("_"))


def test_there_are_benchmarks():
    assert NAMES, f"no benchmark scripts in {benchmarks_dir()}"


@pytest.mark.parametrize("name", NAMES)
def test_quick_benchmark_records_figures(name, tmp_path):
    assert cli.main(["bench", name, "--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["benchmark"] == name and record["figures"]
    assert record["command"] == f"deepnotes bench {name} --quick"
    assert record["machine"]["versions"]["numpy"]
