"""Float facts against IEEE 754 / torch.finfo, GradScaler against torch.amp.GradScaler, and FP16
training with master weights and dynamic scaling against FP32."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepnotes.data import load_digits
from deepnotes.nn.amp import (
    GradScaler,
    MasterWeights,
    StaticGradScaler,
    measure_float_facts,
    underflow_fractions,
)


@pytest.mark.parametrize("dtype, subnormal", [
    (torch.float16, 2.0**-24), (torch.bfloat16, 2.0**-133), (torch.float32, 2.0**-149),
])
def test_measured_float_facts_equal_ieee(dtype, subnormal):
    facts = measure_float_facts(dtype)
    info = torch.finfo(dtype)
    assert facts["eps"] == info.eps
    assert facts["smallest_normal"] == info.tiny
    assert facts["max"] == info.max
    assert facts["smallest_subnormal"] == subnormal
    assert facts["overflow"] == float("inf")


def test_underflow_fractions():
    g = torch.tensor([1e-9, -1e-9, 1e-6, 1.0, 7e4, 0.0])
    f = underflow_fractions(g, torch.float16)
    assert f["count"] == 5
    assert f["zero"] == pytest.approx(2 / 5)  # below half the smallest subnormal
    assert f["subnormal"] == pytest.approx(1 / 5)  # 1e-6 < 6.1e-5
    assert f["overflow"] == pytest.approx(1 / 5)  # 7e4 > 65504
    scaled = underflow_fractions(g[:3], torch.float16, scale=2.0**12)
    assert scaled["zero"] == 0.0  # 1e-9 * 4096 = 4.1e-6: a subnormal, no longer zero
    assert underflow_fractions(g, torch.bfloat16)["zero"] == 0.0
    with pytest.raises(ValueError, match="scale"):
        underflow_fractions(g, scale=0.0)


def _toy(seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    x = torch.randn(16, 4, generator=gen)
    y = torch.randn(16, 2, generator=gen)
    return model, x, y


def _run_scaler(make_scaler, inject, steps=24, clip=None):
    """Train the toy with SGD; at steps in ``inject`` one gradient entry is set to inf/NaN."""
    model, x, y = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    scaler = make_scaler()
    scales, skipped = [], []
    for step in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        if step in inject:
            model[0].weight.grad[0, 0] = inject[step]
        before = [p.detach().clone() for p in model.parameters()]
        if clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        skipped.append(all(torch.equal(b, p) for b, p in zip(before, model.parameters(),
                                                              strict=True)))
    return scales, skipped, [p.detach() for p in model.parameters()]


INJECT = {2: float("inf"), 3: float("nan"), 9: float("-inf"), 17: float("inf")}


@pytest.mark.parametrize("clip", [None, 0.5])
def test_grad_scaler_matches_torch(clip):
    kw = dict(init_scale=2.0**10, growth_factor=2.0, backoff_factor=0.25, growth_interval=3)
    ours = _run_scaler(lambda: GradScaler(**kw), INJECT, clip=clip)
    ref = _run_scaler(lambda: torch.amp.GradScaler("cpu", **kw), INJECT, clip=clip)
    assert ours[0] == ref[0]  # the same scale after every update
    assert ours[1] == ref[1]  # the same skipped steps
    assert [i for i, s in enumerate(ours[1]) if s] == sorted(INJECT)
    for a, b in zip(ours[2], ref[2], strict=True):
        assert torch.equal(a, b)  # bit-identical parameters


def test_grad_scaler_scale_trace_by_hand():
    scales, _, _ = _run_scaler(lambda: GradScaler(init_scale=8.0, growth_interval=2),
                               {1: float("inf")}, steps=6)
    # step 0 ok (1 of 2), step 1 inf: 4, steps 2-3 ok: 8, steps 4-5 ok: 16
    assert scales == [8.0, 4.0, 4.0, 8.0, 8.0, 16.0]


def test_static_scaler_skips_but_keeps_its_scale():
    scales, skipped, _ = _run_scaler(lambda: StaticGradScaler(128.0), {4: float("inf")}, steps=8)
    assert scales == [128.0] * 8
    assert [i for i, s in enumerate(skipped) if s] == [4]


def test_grad_scaler_never_grows_to_inf():
    scaler = GradScaler(init_scale=3e38, growth_interval=1)
    model, x, y = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    F.mse_loss(model(x), y).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == float(torch.tensor(3e38, dtype=torch.float32))


def test_grad_scaler_protocol_errors():
    model, x, y = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = GradScaler()
    scaler.scale(F.mse_loss(model(x), y)).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="unscale_"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step"):
        scaler.step(opt)
    scaler.update()
    with pytest.raises(RuntimeError, match="No inf checks"):
        scaler.update()
    disabled = GradScaler(enabled=False)
    loss = F.mse_loss(model(x), y)
    assert disabled.scale(loss) is loss and disabled.get_scale() == 1.0


@pytest.mark.parametrize("kw, name", [
    (dict(init_scale=0.0), "init_scale"), (dict(init_scale=-1.0), "init_scale"),
    (dict(growth_factor=1.0), "growth_factor"), (dict(backoff_factor=1.0), "backoff_factor"),
    (dict(backoff_factor=0.0), "backoff_factor"), (dict(growth_interval=0), "growth_interval"),
])
def test_bad_arguments_raise_value_error(kw, name):
    with pytest.raises(ValueError, match=name):
        GradScaler(**kw)


def test_unscaling_fp16_gradients_is_refused():
    model = nn.Linear(2, 2).half()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(1, 2, dtype=torch.float16)).float().sum().backward()
    with pytest.raises(ValueError, match="FP16"):
        GradScaler().unscale_(opt)


def _train_digits(dtype, scaler, steps=150, seed=0):
    x_tr, y_tr = (torch.from_numpy(a) for a in load_digits("train", flatten=True))
    x_te, y_te = (torch.from_numpy(a) for a in load_digits("test", flatten=True))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    master = MasterWeights(model, dtype)
    opt = torch.optim.SGD(master.params, lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y_tr), (64,), generator=gen)
        logits = model(x_tr[idx].to(dtype)).float()
        scaler.scale(F.cross_entropy(logits, y_tr[idx])).backward()
        master.grads_to_master()
        scaler.step(opt)
        scaler.update()
        master.master_to_model()
    with torch.no_grad():
        return float((model(x_te.to(dtype)).argmax(1) == y_te).double().mean())


def test_fp16_with_dynamic_scaling_reaches_fp32_accuracy():
    acc32 = _train_digits(torch.float32, GradScaler(enabled=False))
    acc16 = _train_digits(torch.float16, GradScaler(init_scale=2.0**16, growth_interval=25))
    assert acc32 > 0.9
    # one test set of ~360 digits: 2 points is ~7 digits, the run-to-run spread of such a model
    assert acc16 >= acc32 - 0.02


def test_master_weights_keep_fp32_copies():
    model = nn.Linear(3, 2)
    w32 = model.weight.detach().clone()
    master = MasterWeights(model, torch.float16)
    assert model.weight.dtype == torch.float16 and master.params[0].dtype == torch.float32
    assert torch.equal(master.params[0], w32)
    with torch.no_grad():
        master.params[0].fill_(0.25).add_(1e-5)  # below FP16's spacing at 0.25 (2^-12)
    master.master_to_model()
    assert torch.equal(model.weight, torch.full_like(model.weight, 0.25))
    assert master.params[0][0, 0].item() == pytest.approx(0.25 + 1e-5, abs=1e-7)  # kept in FP32
