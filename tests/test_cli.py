"""The ``deepnotes`` command, end to end, in a temporary root (DEEPNOTES_ROOT)."""

import json
import subprocess
import sys
import textwrap

import pytest

from deepnotes import cli
from deepnotes.core import posts as posts_module

FAST_TOPIC = "stochastic-approximation"


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPNOTES_ROOT", str(tmp_path))
    return tmp_path


def test_list_does_not_import_heavy_modules():
    code = ("import sys; from deepnotes.cli import main; main(['list']); "
            "heavy = [m for m in ('torch', 'numba', 'matplotlib', 'scipy') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout


def test_python_dash_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "deepnotes", "list"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "LATEST UPDATES" in out.stdout


def test_list_paginates_12_and_filters_by_tag(tmp_path, monkeypatch, capsys, post_factory):
    for i in range(13):
        post_factory(tmp_path, f"post-{i:02d}", day=i, tags=("odd",) if i % 2 else ("even",))
    monkeypatch.setattr(posts_module, "POSTS_DIR", tmp_path)
    assert cli.main(["list"]) == 0
    page1 = capsys.readouterr().out
    assert "page 1 of 2" in page1 and page1.count("Summary of") == 12
    assert page1.index("post-12") < page1.index("post-11")  # newest first
    assert "post-00" not in page1 and "--page 2" in page1
    assert cli.main(["list", "--page", "2"]) == 0
    page2 = capsys.readouterr().out
    assert page2.count("Summary of") == 1 and "post-00" in page2
    assert cli.main(["list", "--page", "3"]) == 2
    assert "page 3 does not exist" in capsys.readouterr().err
    assert cli.main(["list", "--tag", "odd"]) == 0
    assert capsys.readouterr().out.count("Summary of") == 6
    assert cli.main(["list", "--tag", "nope"]) == 2


def test_unknown_slug_exits_2_with_suggestion(capsys):
    assert cli.main(["run", FAST_TOPIC.replace("approximation", "aproximation")]) == 2
    assert f"did you mean {FAST_TOPIC}" in capsys.readouterr().err
    assert cli.main(["show", "nope-nope"]) == 2


def test_bad_set_names_field_and_type(root, capsys):
    assert cli.main(["run", FAST_TOPIC, "--preset", "smoke", "--set", "seed=abc"]) == 2
    assert "field 'seed' of type int" in capsys.readouterr().err
    assert cli.main(["run", FAST_TOPIC, "--set", "no_such_field=1"]) == 2
    assert "unknown config field 'no_such_field'" in capsys.readouterr().err
    assert cli.main(["run", FAST_TOPIC, "--preset", "huge"]) == 2
    assert not (root / "runs").exists(), "a rejected command must not create a run"


def test_show_config(capsys):
    assert cli.main(["run", FAST_TOPIC, "--preset", "smoke", "--show-config"]) == 0
    out = capsys.readouterr().out
    assert "seed" in out and "Seed for python, numpy and torch." in out


def test_run_then_show_then_publish(root, capsys):
    assert cli.main(["run", FAST_TOPIC, "--preset", "smoke", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "headline" in out
    (run_dir,) = (root / "runs" / FAST_TOPIC).iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["seed"] == 1
    assert cli.main(["show", FAST_TOPIC]) == 0
    shown = capsys.readouterr().out
    assert "Latest metrics (smoke run" in shown and "metric" in shown
    assert cli.main(["publish", FAST_TOPIC]) == 2  # only full runs are published by default
    assert "--preset full" in capsys.readouterr().err
    assert cli.main(["publish", FAST_TOPIC, "--run", str(run_dir)]) == 2  # a smoke run
    assert "not a full one" in capsys.readouterr().err
    assert cli.main(["publish", FAST_TOPIC, "--run", str(run_dir), "--force"]) == 0
    assert (root / "results" / FAST_TOPIC / "metrics.json").is_file()
    record = json.loads((root / "results" / FAST_TOPIC / "published.json").read_text())
    assert record["forced"] is True


def test_failing_experiment_exits_nonzero_with_its_message(root, capsys, monkeypatch):
    import types

    from deepnotes.core import registry
    from deepnotes.core.experiment import ExperimentConfig, make_presets, start_run

    fake = types.ModuleType("deepnotes.experiments.broken_topic")
    cfg = ExperimentConfig()
    fake.Config, fake.HEADLINE, fake.PEER = ExperimentConfig, "x", None
    fake.PRESETS = make_presets(smoke=cfg, quick=cfg, full=cfg)

    def run(config):
        with start_run(fake.__name__, config):
            raise RuntimeError("the loss diverged at step 3")

    fake.run = run
    monkeypatch.setattr(registry, "load_experiment", lambda slug: fake)
    assert cli.main(["run", "broken-topic", "--preset", "smoke"]) == 1
    assert "the loss diverged at step 3" in capsys.readouterr().err
    (run_dir,) = (root / "runs" / "broken-topic").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    assert "RuntimeError" in (run_dir / "log.txt").read_text()


def test_tour_reports_failures_and_goes_on(root, capsys, monkeypatch):
    from deepnotes.core import registry

    real = registry.load_experiment
    broken = "sliding-window-maximum"

    def load(slug):
        if slug == broken:
            raise RuntimeError("broken on purpose")
        return real(slug)

    monkeypatch.setattr(registry, "load_experiment", load)
    status = cli.main(["tour", "--preset", "smoke", "--only", broken, FAST_TOPIC])
    out = capsys.readouterr().out
    assert status == 1
    assert FAST_TOPIC in out and "ok" in out and "FAILED: RuntimeError: broken on purpose" in out
    assert cli.main(["tour", "--preset", "smoke", "--only", FAST_TOPIC]) == 0


def test_bench_runs_and_records(root, capsys):
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "tiny_peer.py").write_text(textwrap.dedent("""
        def run(quick=False):
            return {"ours_s": 1.0, "peer_s": 2.0, "quick": quick}
    """))
    assert cli.main(["bench", "tiny-peer", "--quick", "--out", str(root / "out")]) == 0
    record = json.loads((root / "out" / "tiny_peer.json").read_text())
    assert record["figures"] == {"ours_s": 1.0, "peer_s": 2.0, "quick": True}
    assert record["command"] == "deepnotes bench tiny-peer --quick"
    assert record["machine"]["logical_cores"] >= 1
    assert cli.main(["bench", "tiny-pear"]) == 2
    assert "did you mean tiny_peer" in capsys.readouterr().err


def test_list_into_a_closed_pipe_stops_quietly():
    code = "from deepnotes.cli import main; raise SystemExit(main(['list']))"
    cmd = f"{sys.executable} -c \"{code}\" | head -c 10"
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
    assert out.returncode == 0 and "failed" not in out.stderr and "Error" not in out.stderr


def test_a_bad_set_value_is_refused_before_any_run_folder(root, capsys):
    assert cli.main(["run", FAST_TOPIC, "--preset", "smoke", "--set", "mean_steps=0"]) == 2
    assert "'mean_steps' (int) must be > 0" in capsys.readouterr().err
    assert cli.main(["run", FAST_TOPIC, "--device", "cuda:abc"]) == 2
    assert "cuda:N" in capsys.readouterr().err
    assert not (root / "runs").exists() or not any((root / "runs").rglob("metrics.json"))


def test_tour_checks_every_slug_before_running_any(root, capsys):
    assert cli.main(["tour", "--only", FAST_TOPIC, "no-such-topic"]) == 2
    assert "unknown topic 'no-such-topic'" in capsys.readouterr().err
    assert not (root / "runs").exists()


def test_ctrl_c_during_the_imports_stops_cleanly_before_any_run(tmp_path):
    """SIGINT a fresh `deepnotes run` at several moments of its first seconds. The failures seen
    before (issue 13) must not happen: the interrupt ignored, an ImportError from half-imported
    extension modules, a RecursionError, a native abort. Each try ends by exit 130 (or finishes)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "DEEPNOTES_ROOT": str(tmp_path)}
    for delay in (0.4, 0.7, 1.0, 1.5, 2.0):
        proc = subprocess.Popen([sys.executable, "-m", "deepnotes", "run", FAST_TOPIC,
                                 "--preset", "smoke"], env=env, stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        for bad in ("ImportError", "RecursionError", "Fatal Python error", "Aborted"):
            assert bad not in err, f"after {delay} s: {err[-800:]}"
        assert proc.returncode in (0, 130), f"after {delay} s: exit {proc.returncode}: {err[-800:]}"
