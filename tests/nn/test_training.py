"""deepnotes.nn.training.fit: the loop, EMA, clipping, precision, checkpoint/resume, DDP."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from deepnotes.nn.training import EMA, FitResult, fit, load_checkpoint, shard_batch

D_IN, D_OUT = 6, 3


def _problem(seed: int = 0, n: int = 64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=gen)
    w = torch.randn(D_IN, D_OUT, generator=gen)
    y = x @ w + 0.1 * torch.randn(n, D_OUT, generator=gen)
    return x, y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, D_OUT))


def _mse(model, batch):
    xb, yb = batch
    return ((model(xb) - yb) ** 2).mean()


def _sampler(x, y, batch_size, gen):
    def batches(step):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=gen)
        return x[idx], y[idx]
    return batches


def test_fit_reduces_loss_and_records_history():
    x, y = _problem()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    seen = []
    result = fit(model, _mse, _sampler(x, y, 16, gen), opt, 60,
                 callback=lambda step, m: seen.append((step, m["loss"])))
    assert isinstance(result, FitResult)
    assert result.steps_done == 60 and result.resumed_from == 0
    assert len(result.history["loss"]) == 60
    assert [s for s, _ in seen] == list(range(60))
    assert np.mean(result.history["loss"][-10:]) < 0.5 * np.mean(result.history["loss"][:10])
    assert result.ema is None


def test_fit_matches_a_hand_written_loop():
    """Same seed, same order of operations: fit is the plain Adam loop, bit for bit."""
    x, y = _problem()
    model_a, model_b = _model(), _model()
    opt_a = torch.optim.Adam(model_a.parameters(), lr=1e-2)
    torch.manual_seed(5)
    fit(model_a, _mse, _sampler(x, y, 16, torch.Generator().manual_seed(2)), opt_a, 20)
    opt_b = torch.optim.Adam(model_b.parameters(), lr=1e-2)
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(2)
    model_b.train()
    for _ in range(20):
        idx = torch.randint(0, x.shape[0], (16,), generator=gen)
        loss = _mse(model_b, (x[idx], y[idx]))
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_iterable_batches_and_aux_metrics():
    x, y = _problem()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def loss_fn(m, batch):
        loss = _mse(m, batch)
        return loss, {"rmse": loss.detach().sqrt()}

    result = fit(model, loss_fn, ((x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)), opt, 8)
    assert len(result.history["rmse"]) == 8
    assert np.allclose(np.square(result.history["rmse"]), result.history["loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="ran out after 8"):
        fit(model, _mse, iter([(x, y)] * 8), opt, 9)


def test_ema_follows_the_closed_form():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model, 0.9)
    for t in range(1, 4):
        with torch.no_grad():
            model.weight.fill_(float(t))
        ema.update(model)
    # shadow_t = 0.9 shadow_{t-1} + 0.1 t, from 0
    expected = 0.0
    for t in range(1, 4):
        expected = 0.9 * expected + 0.1 * t
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), expected))
    target = nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])
    clone = EMA(model, 0.5)
    clone.load_state_dict(ema.state_dict())
    assert clone.decay == 0.9 and clone.num_updates == 3
    warm = EMA(model, 0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, 1.0)


def test_fit_with_ema_and_scheduler():
    x, y = _problem()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    result = fit(model, _mse, _sampler(x, y, 16, torch.Generator().manual_seed(0)), opt, 30,
                 scheduler=sched, ema_decay=0.9)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 8)
    assert result.ema is not None and result.ema.num_updates == 30
    for name, p in model.named_parameters():
        assert not torch.equal(p, result.ema.shadow[name])


def test_gradient_clipping_bounds_the_step():
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.full((8, 4), 100.0)
    result = fit(model, lambda m, b: m(b).pow(2).mean(), lambda s: x, opt, 1, clip_grad_norm=0.5)
    assert result.history["grad_norm"][0] > 0.5
    after = [p.detach() for p in model.parameters()]
    moved = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(after, before, strict=True)))
    assert float(moved) == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(precision):
    x, y = _problem()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    seen_dtypes = []

    def loss_fn(m, batch):
        out = m[0](batch[0])
        seen_dtypes.append(out.dtype)
        return _mse(m, batch)

    result = fit(model, loss_fn, _sampler(x, y, 16, torch.Generator().manual_seed(0)), opt, 40,
                 precision=precision, clip_grad_norm=10.0)
    assert seen_dtypes[0] == (torch.bfloat16 if precision == "bf16" else torch.float16)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.mean(result.history["loss"][-5:]) < np.mean(result.history["loss"][:5])


def test_bad_arguments_name_themselves():
    model, x = nn.Linear(2, 1), torch.zeros(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="precision"):
        fit(model, lambda m, b: m(b).sum(), lambda s: x, opt, 1, precision="fp8")
    with pytest.raises(ValueError, match="steps"):
        fit(model, lambda m, b: m(b).sum(), lambda s: x, opt, -1)
    with pytest.raises(TypeError, match="optimizer"):
        fit(model, lambda m, b: m(b).sum(), lambda s: x, "adam", 1)
    with pytest.raises(TypeError, match="loss_fn must return"):
        fit(model, lambda m, b: m(b), lambda s: x, opt, 1)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        fit(model, lambda m, b: m(b).sum(), lambda s: x, opt, 1, resume=True)


# --- checkpoint and resume ---------------------------------------------------------------------
class _Stop(Exception):
    pass


def _resumable_run(tmp_path, *, stop_at=None, resume=False, steps=25):
    """A loop that touches every random state a checkpoint must restore: a torch generator
    (batches), the global torch RNG (dropout, noise), numpy's and python's global RNGs."""
    x, y = _problem()
    model = _model(3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(7)
    np_gen = np.random.default_rng(11)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)

    def batches(step):
        idx = torch.randint(0, x.shape[0], (16,), generator=gen)
        scale = 1.0 + 0.01 * float(np_gen.standard_normal()) + 0.01 * np.random.rand()
        return x[idx] * scale, y[idx] + 0.01 * random.random()

    def loss_fn(m, batch):
        xb, yb = batch
        return ((m(xb + 0.01 * torch.randn_like(xb)) - yb) ** 2).mean()

    def callback(step, metrics):
        if stop_at is not None and step + 1 == stop_at:
            raise _Stop

    result = fit(model, loss_fn, batches, opt, steps, scheduler=sched, ema_decay=0.8,
                 ema_warmup=True, clip_grad_norm=1.0, callback=callback,
                 checkpoint_dir=tmp_path, checkpoint_every=4, resume=resume,
                 generators=[gen, np_gen])
    return model, result


def test_resume_is_bit_identical(tmp_path):
    full_model, full = _resumable_run(tmp_path / "full")
    with pytest.raises(_Stop):
        _resumable_run(tmp_path / "cut", stop_at=10)  # last checkpoint at step 8
    assert load_checkpoint(tmp_path / "cut" / "fit.pt")["step"] == 8
    model, result = _resumable_run(tmp_path / "cut", resume=True)
    assert result.resumed_from == 8 and result.steps_done == 25
    for pa, pb in zip(full_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    for name in full.ema.shadow:
        assert torch.equal(full.ema.shadow[name], result.ema.shadow[name])
    assert result.history == full.history
    # a finished loop resumes to its final state without training
    again_model, again = _resumable_run(tmp_path / "cut", resume=True)
    assert again.resumed_from == 25 and again.history == full.history
    for pa, pb in zip(full_model.parameters(), again_model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_resume_without_checkpoint_starts_fresh_but_explicit_path_must_exist(tmp_path):
    _, result = _resumable_run(tmp_path, resume=True, steps=3)
    assert result.resumed_from == 0 and result.steps_done == 3
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        _resumable_run(tmp_path, resume=tmp_path / "nope.pt", steps=3)


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "fit.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="fit.pt.*corrupt"):
        _resumable_run(tmp_path, resume=True, steps=3)
    torch.save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="not written by"):
        load_checkpoint(bad)


def test_checkpoint_for_another_loop_is_refused(tmp_path):
    _resumable_run(tmp_path, steps=4)
    with pytest.raises(ValueError, match="4 steps"):
        _resumable_run(tmp_path, resume=True, steps=5)


def test_shard_batch_splits_every_tensor():
    batch = {"x": torch.arange(8).view(4, 2), "y": (torch.arange(4), 3.0)}
    part = shard_batch(batch, 1, 2)
    assert torch.equal(part["x"], torch.tensor([[4, 5], [6, 7]]))
    assert torch.equal(part["y"][0], torch.tensor([2, 3])) and part["y"][1] == 3.0
    with pytest.raises(ValueError, match="evenly"):
        shard_batch(torch.zeros(5), 0, 2)


# --- data parallel -----------------------------------------------------------------------------
_DDP_WORKER = r'''
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from deepnotes.nn.training import fit


def main(out, batch_size, steps, save_rank):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo", init_method="env://")
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 2))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 5, generator=gen), torch.randn(256, 2, generator=gen)

    def batches(step):  # the global batch: identical on every rank, fit takes this rank's slice
        idx = torch.randint(0, 256, (batch_size,), generator=gen)
        return x[idx], y[idx]

    def loss_fn(m, batch):
        xb, yb = batch
        return ((m(xb) - yb) ** 2).mean()

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    result = fit(model, loss_fn, batches, opt, steps, clip_grad_norm=1.0, ema_decay=0.9)
    if int(os.environ.get("RANK", "0")) == save_rank:
        torch.save({"model": model.state_dict(), "loss": result.history["loss"],
                    "ema": result.ema.shadow}, out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
        # The work is done and saved. Exit without the interpreter's teardown: gloo's threads
        # can abort it ("terminate called without an active exception", exit code -6, seen
        # once in four full test runs), which would fail the test after the training passed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
'''


def _launch(tmp_path, world: int, out: str, batch_size: int, steps: int, save_rank: int = 0):
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    if world == 1:  # in this process: no start-up cost
        namespace: dict = {"__name__": "ddp_worker"}
        exec(compile(_DDP_WORKER, str(script), "exec"), namespace)
        namespace["main"](str(tmp_path / out), batch_size, steps, save_rank)
        return torch.load(tmp_path / out)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / out), str(batch_size), str(steps),
             str(save_rank)], env=env, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return torch.load(tmp_path / out)


def test_two_ranks_with_half_batches_match_one_process(tmp_path):
    """DDP averages the two half-batch gradients: the same step as the full batch, up to the
    order of the float32 sums (a mean of two means vs one mean): atol 1e-5 after 6 Adam steps."""
    one = _launch(tmp_path, 1, "one.pt", 32, 6)
    two = _launch(tmp_path, 2, "two.pt", 32, 6, save_rank=1)  # rank 1 ends with the same weights
    for name, w in one["model"].items():
        assert not torch.equal(w, _model_init_state()[name])  # the weights did move
        torch.testing.assert_close(two["model"][name], w, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(two["ema"][name], one["ema"][name], atol=1e-5, rtol=1e-5)
    # the logged loss is the mean over ranks, i.e. the full-batch loss
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)


def _model_init_state():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 2)).state_dict()


def test_list_of_optimisers_and_schedulers_step_together():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    opts = [torch.optim.SGD(model[0].parameters(), lr=0.1), torch.optim.Adam(model[1].parameters())]
    scheds = [torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5) for o in opts]
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, lambda m, b: m(b).pow(2).mean(), lambda s: torch.ones(2, 3), opts, 3,
        scheduler=scheds)
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert opts[0].param_groups[0]["lr"] == pytest.approx(0.1 / 8)


# --- through the CLI: --resume and --nproc ------------------------------------------------------
def _metrics(run_dir):
    import json

    meta = json.loads((run_dir / "metrics.json").read_text())
    return meta["status"], {k: v for k, v in meta["metrics"].items() if not k.endswith("_ms")}


def test_cli_resume_reaches_the_uninterrupted_metrics(tmp_path, monkeypatch):
    """`deepnotes run nice --resume RUN_DIR` after a Ctrl-C in its first training loop: the
    loop continues from its checkpoint, and every metric equals the uninterrupted run's (step
    times aside)."""
    from deepnotes import cli
    from deepnotes.experiments import _flows_common

    base = ["run", "nice", "--preset", "smoke", "--device", "cpu", "--set", "priors=logistic",
            "--set", "digits_hidden=8", "--out"]
    assert cli.main([*base, str(tmp_path / "a")]) == 0
    (full_dir,) = (tmp_path / "a" / "nice").iterdir()
    real_fit = _flows_common.fit

    def interrupted_fit(*args, **kwargs):
        def ctrl_c(step, metrics):
            if step == 19:
                raise KeyboardInterrupt
        return real_fit(*args, callback=ctrl_c, **kwargs)

    monkeypatch.setattr(_flows_common, "fit", interrupted_fit)
    assert cli.main([*base, str(tmp_path / "b")]) == cli.EXIT_INTERRUPTED
    (cut_dir,) = (tmp_path / "b" / "nice").iterdir()
    assert _metrics(cut_dir)[0] == "interrupted"
    assert load_checkpoint(cut_dir / "checkpoints" / "fit-1.pt")["step"] == 18  # every 3 steps
    monkeypatch.setattr(_flows_common, "fit", real_fit)
    assert cli.main(["run", "nice", "--resume", str(cut_dir)]) == 0
    status, metrics = _metrics(cut_dir)
    assert status == "completed" and metrics == _metrics(full_dir)[1]
    assert "resumed" in (cut_dir / "log.txt").read_text()
    assert not (cut_dir / "checkpoints").exists()  # removed once the run completed
    assert cli.main(["run", "nice", "--resume", str(cut_dir)]) == cli.EXIT_USAGE
    assert cli.main(["run", "nice", "--resume", str(tmp_path / "nope")]) == cli.EXIT_USAGE


def test_cli_nproc_runs_ranks_and_only_rank_zero_writes(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "deepnotes", "run", "nice", "--preset", "smoke", "--device", "cpu",
         "--nproc", "2", "--out", str(tmp_path), "--set", "priors=logistic",
         "--set", "digits_hidden=8", "--set", "grid=10"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "nice").iterdir())
    assert len(runs) == 1  # one run directory, written by rank 0
    status, metrics = _metrics(runs[0])
    assert status == "completed" and np.isfinite(metrics["digits/test_bits_per_dim"])
    assert "(2 ranks)" in (runs[0] / "log.txt").read_text()
    assert proc.stdout.count("nice: completed") == 1  # rank 1 prints nothing


def test_a_run_on_another_rank_writes_and_prints_nothing(tmp_path, monkeypatch, capsys):
    from deepnotes.core.experiment import ExperimentConfig, resume_from, start_run

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with start_run("deepnotes.experiments.nice", ExperimentConfig(out=str(tmp_path))) as run:
        run.log("hello from rank 1")
        run.log_metrics({"a/b": 1.0})
        scratch = run.run_dir
        assert run.rank == 1 and run.world_size == 2 and not run.resuming
        assert tmp_path not in scratch.parents
    assert not scratch.exists() and not (tmp_path / "nice").exists()
    assert "hello" not in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="config.json"):
        with resume_from(tmp_path):
            pass
