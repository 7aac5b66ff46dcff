import json
import sys
import types
from dataclasses import dataclass, replace

import numpy as np
import pytest

from deepnotes.core.experiment import ExperimentConfig, make_presets, start_run
from deepnotes.core.plotting import new_figure


@dataclass
class ToyConfig(ExperimentConfig):
    """Toy experiment config."""

    n: int = 4
    """Samples."""
    fail_at: int = -1
    """Raise at this step (-1: never)."""
    interrupt_at: int = -1
    """Simulate Ctrl-C at this step (-1: never)."""


MODULE_NAME = "deepnotes.experiments.toy_topic"


@pytest.fixture
def toy_module():
    """A throwaway experiment module following the contract."""
    module = types.ModuleType(MODULE_NAME)
    module.PRESETS = make_presets(smoke=ToyConfig(n=2), quick=ToyConfig(), full=ToyConfig(n=8))
    module.HEADLINE = "toy/mean"
    module.PEER = "toy/peer_mean"

    def run(config):
        with start_run(MODULE_NAME, config) as run:
            values = []
            for i in run.track(range(config.n), description="toy"):
                if i == config.fail_at:
                    raise RuntimeError("boom")
                if i == config.interrupt_at:
                    raise KeyboardInterrupt
                values.append(run.rng.normal())
                run.log_metrics({"toy/mean": float(np.mean(values)), "toy/peer_mean": 0.0})
            fig, ax = new_figure()
            ax.plot(values)
            run.save_figure(fig, "values")
        return run.result

    module.run = run
    sys.modules[MODULE_NAME] = module
    yield module
    del sys.modules[MODULE_NAME]


def test_run_writes_the_contract_files(toy_module, tmp_path):
    cfg = replace(toy_module.PRESETS["quick"], out=str(tmp_path), seed=3)
    result = toy_module.run(cfg)
    assert result.status == "completed" and result.run_dir.parent == tmp_path / "toy-topic"
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"config.json", "metrics.json", "log.txt", "command.txt", "values.png"} <= names
    meta = json.loads((result.run_dir / "metrics.json").read_text())
    assert meta["status"] == "completed" and meta["preset"] == "quick" and meta["seed"] == 3
    assert meta["headline"] == "toy/mean" and meta["figures"] == ["values.png"]
    assert meta["metrics"]["toy/mean"] == pytest.approx(result.headline_value)
    assert result.peer_value == 0.0
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["config"]["n"] == 4 and "numpy" in config["environment"]["versions"]
    command = (result.run_dir / "command.txt").read_text().strip()
    assert command == "deepnotes run toy-topic --preset quick --seed 3"


def test_command_records_overrides(toy_module, tmp_path):
    cfg = replace(toy_module.PRESETS["smoke"], out=str(tmp_path), n=3, device="cpu")
    result = toy_module.run(cfg)
    command = (result.run_dir / "command.txt").read_text().strip()
    assert command == "deepnotes run toy-topic --preset smoke --seed 0 --device cpu --set n=3"


def test_runs_never_overwrite_each_other(toy_module, tmp_path):
    cfg = replace(toy_module.PRESETS["smoke"], out=str(tmp_path))
    dirs = {toy_module.run(cfg).run_dir for _ in range(3)}  # same second, same preset and seed
    assert len(dirs) == 3


def test_same_seed_same_numbers(toy_module, tmp_path):
    cfg = replace(toy_module.PRESETS["smoke"], out=str(tmp_path), seed=7)
    assert toy_module.run(cfg).metrics == toy_module.run(cfg).metrics
    assert toy_module.run(replace(cfg, seed=8)).metrics != toy_module.run(cfg).metrics


def test_interrupt_keeps_what_was_written(toy_module, tmp_path):
    cfg = replace(toy_module.PRESETS["quick"], out=str(tmp_path), interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        toy_module.run(cfg)
    (run_dir,) = (tmp_path / "toy-topic").iterdir()
    meta = json.loads((run_dir / "metrics.json").read_text())
    assert meta["status"] == "interrupted" and "toy/mean" in meta["metrics"]
    assert "interrupted" in (run_dir / "log.txt").read_text()


def test_failure_is_logged_with_traceback(toy_module, tmp_path):
    cfg = replace(toy_module.PRESETS["quick"], out=str(tmp_path), fail_at=1)
    with pytest.raises(RuntimeError, match="boom"):
        toy_module.run(cfg)
    (run_dir,) = (tmp_path / "toy-topic").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    assert "RuntimeError: boom" in (run_dir / "log.txt").read_text()


def test_make_presets_requires_all_three():
    with pytest.raises(ValueError, match="full"):
        make_presets(smoke=ToyConfig(), quick=ToyConfig())


def test_start_run_rejects_a_non_config(tmp_path):
    with pytest.raises(TypeError, match="ExperimentConfig"):
        with start_run(MODULE_NAME, {"n": 1}):
            pass


def test_bad_figure_name(toy_module, tmp_path):
    with start_run(MODULE_NAME, ToyConfig(out=str(tmp_path))) as run:
        fig, _ = new_figure()
        with pytest.raises(ValueError, match="bare name"):
            run.save_figure(fig, "a/b.png")


def test_a_gpu_that_is_not_there_is_an_error_before_any_folder(tmp_path):
    import torch

    from deepnotes.core.experiment import ExperimentConfig, start_run

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = ExperimentConfig(out=str(tmp_path), device="cuda")
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        with start_run("deepnotes.experiments.some_topic", config):
            pass
    assert not any(tmp_path.iterdir())


def test_a_cpu_only_topic_says_so_once_and_records_where_it_ran(tmp_path, monkeypatch):
    import json
    import sys
    import types

    from deepnotes.core.experiment import ExperimentConfig, start_run

    fake = types.ModuleType("deepnotes.experiments.numba_topic")
    fake.CPU_ONLY = "its kernels are numba"
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    with start_run(fake.__name__, ExperimentConfig(out=str(tmp_path), device="auto")) as run:
        pass
    log = (run.run_dir / "log.txt").read_text()
    assert log.count("runs on the CPU (its kernels are numba)") == 1
    assert json.loads((run.run_dir / "metrics.json").read_text())["device"] == "cpu"
