"""Adam / AdamW against torch.optim, plain and fused paths, and the Optimizer contract."""

import copy

import pytest
import torch

from deepnotes.nn.optim import Adam, AdamW

PEERS = {Adam: torch.optim.Adam, AdamW: torch.optim.AdamW}


def _mlp(dtype, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return net.to(dtype)


def _data(dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 6, generator=g, dtype=dtype)
    return x, torch.randn(32, 3, generator=g, dtype=dtype)


def _loss(net, x, y):
    return ((net(x) - y) ** 2).mean()


def _train_pair(ours, peer, net, ref, x, y, steps):
    for _ in range(steps):
        for model, opt in ((net, ours), (ref, peer)):
            opt.zero_grad()
            _loss(model, x, y).backward()
            opt.step()


def _max_rel_err(net, ref):
    return max(((a - b).abs().max() / b.abs().max()).item()
               for a, b in zip(net.parameters(), ref.parameters(), strict=True))


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_matches_torch_over_500_steps(cls, fused, amsgrad, weight_decay):
    # float64: the fused kernel rounds differently from torch's CPU kernels (e.g. no FMA), and in
    # float32 that 1-ulp difference grows over 500 steps past 1e-6 through the loss landscape.
    # In float64 both stay ~1e-14 apart, so 1e-6 relative is a real check of the equations.
    dtype = torch.float64
    net, ref = _mlp(dtype), _mlp(dtype)
    x, y = _data(dtype)
    kw = dict(lr=3e-3, weight_decay=weight_decay, amsgrad=amsgrad)
    ours, peer = cls(net.parameters(), fused=fused, **kw), PEERS[cls](ref.parameters(), **kw)
    _train_pair(ours, peer, net, ref, x, y, 500)
    moved = max((a - b).abs().max().item()
                for a, b in zip(net.parameters(), _mlp(dtype).parameters(), strict=True))
    assert moved > 1e-2, "parameters barely moved: the comparison would be vacuous"
    assert _max_rel_err(net, ref) < 1e-6


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_plain_float32_follows_torch_op_for_op(cls, amsgrad):
    # The plain path issues torch's own sequence of tensor ops, so float32 rounding matches too.
    net, ref = _mlp(torch.float32), _mlp(torch.float32)
    x, y = _data(torch.float32)
    kw = dict(lr=3e-3, weight_decay=0.05, amsgrad=amsgrad)
    ours, peer = cls(net.parameters(), **kw), PEERS[cls](ref.parameters(), **kw)
    _train_pair(ours, peer, net, ref, x, y, 500)
    assert _max_rel_err(net, ref) < 1e-6


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_fused_float32_close_to_torch_over_a_few_steps(cls):
    # Each step rounds a handful of float32 ops (eps ~ 6e-8) in a different order from torch;
    # five steps of that stay well inside 1e-5 relative before chaotic growth can set in.
    net, ref = _mlp(torch.float32), _mlp(torch.float32)
    x, y = _data(torch.float32)
    kw = dict(lr=1e-2, weight_decay=0.05, amsgrad=True)
    ours, peer = cls(net.parameters(), fused=True, **kw), PEERS[cls](ref.parameters(), **kw)
    _train_pair(ours, peer, net, ref, x, y, 5)
    assert _max_rel_err(net, ref) < 1e-5


@pytest.mark.parametrize("fused", [False, True])
def test_maximize_and_param_groups_with_different_settings(fused):
    dtype = torch.float64
    net, ref = _mlp(dtype), _mlp(dtype)
    x, y = _data(dtype)

    def groups(model):
        return [{"params": model[0].parameters(), "lr": 1e-2, "weight_decay": 0.1,
                 "amsgrad": True},
                {"params": model[2].parameters()}]

    ours = AdamW(groups(net), lr=1e-3, maximize=True, fused=fused)
    peer = torch.optim.AdamW(groups(ref), lr=1e-3, maximize=True)
    _train_pair(ours, peer, net, ref, x, y, 50)
    assert _max_rel_err(net, ref) < 1e-10  # float64, 50 steps: rounding stays ~1e-15


@pytest.mark.parametrize("fused", [False, True])
def test_closure_is_called_and_its_loss_returned(fused):
    dtype = torch.float64
    net, ref = _mlp(dtype), _mlp(dtype)
    x, y = _data(dtype)
    ours, peer = Adam(net.parameters(), lr=1e-2, fused=fused), torch.optim.Adam(ref.parameters(),
                                                                                 lr=1e-2)
    for _ in range(20):
        losses = []
        for model, opt in ((net, ours), (ref, peer)):
            def closure(model=model, opt=opt):
                opt.zero_grad()
                loss = _loss(model, x, y)
                loss.backward()
                return loss
            losses.append(opt.step(closure).item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)  # same params -> same loss
    assert _max_rel_err(net, ref) < 1e-10


def test_l2_weight_decay_equals_l2_term_in_the_loss():
    # Eq. 6: Adam's weight_decay is exactly the gradient of (wd / 2) * ||theta||^2.
    dtype, wd = torch.float64, 0.03
    net, ref = _mlp(dtype), _mlp(dtype)
    x, y = _data(dtype)
    ours, peer = Adam(net.parameters(), lr=1e-2, weight_decay=wd), Adam(ref.parameters(), lr=1e-2)
    for _ in range(100):
        ours.zero_grad()
        _loss(net, x, y).backward()
        ours.step()
        peer.zero_grad()
        penalty = sum((p**2).sum() for p in ref.parameters())
        (_loss(ref, x, y) + 0.5 * wd * penalty).backward()
        peer.step()
    assert _max_rel_err(net, ref) < 1e-10  # same sum, different order: float64 rounding only


@pytest.mark.parametrize("fused", [False, True])
def test_state_dict_round_trip(fused):
    dtype = torch.float64
    net = _mlp(dtype)
    x, y = _data(dtype)
    opt = AdamW(net.parameters(), lr=1e-2, amsgrad=True, fused=fused)
    _train_pair(opt, opt, net, net, x, y, 5)
    saved_model, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    state = saved_opt["state"][0]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert state["step"].item() == 10  # _train_pair steps the same optimizer twice per round
    _train_pair(opt, opt, net, net, x, y, 5)

    net2 = _mlp(dtype, seed=3)
    net2.load_state_dict(saved_model)
    opt2 = AdamW(net2.parameters(), lr=0.5, amsgrad=True, fused=fused)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]["lr"] == 1e-2
    _train_pair(opt2, opt2, net2, net2, x, y, 5)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_state_dict_interchangeable_with_torch(fused):
    dtype = torch.float64
    net, ref = _mlp(dtype), _mlp(dtype)
    x, y = _data(dtype)
    peer = torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=0.1)
    _train_pair(peer, peer, ref, ref, x, y, 10)
    net.load_state_dict(ref.state_dict())
    ours = Adam(net.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
    ours.load_state_dict(copy.deepcopy(peer.state_dict()))
    _train_pair(ours, peer, net, ref, x, y, 20)
    assert _max_rel_err(net, ref) < 1e-10


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("kwargs", [{"lr": -1e-3}, {"eps": -1e-8}, {"betas": (1.0, 0.999)},
                                    {"betas": (0.9, -0.1)}, {"betas": (-0.1, 0.9)},
                                    {"weight_decay": -1e-2}])
def test_invalid_hyperparameters_raise_like_torch(cls, kwargs):
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError):
        PEERS[cls](params, **kwargs)
    with pytest.raises(ValueError, match="Invalid"):
        cls(params, **kwargs)
    with pytest.raises(ValueError, match="Invalid"):
        cls([{"params": params, **kwargs}])  # a bad value inside a group is caught too


def test_defaults_match_torch():
    params = [torch.nn.Parameter(torch.zeros(3))]
    for cls in (Adam, AdamW):
        ours, peer = cls(params).defaults, PEERS[cls](params).defaults
        for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
            assert ours[key] == peer[key], key


@pytest.mark.parametrize("fused", [False, True])
def test_params_without_grad_are_skipped(fused):
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    opt = AdamW([a, b], lr=0.1, fused=fused)
    a.grad = torch.ones(4)
    opt.step()
    # The fused path lays out every parameter of the group at once, so b may hold step-0 state.
    assert torch.equal(b.detach(), torch.ones(4)) and opt.state[b].get("step", 0) == 0
    assert (a < 1).all() and opt.state[a]["step"].item() == 1
    b.grad = torch.ones(4)
    a.grad = None
    before = a.detach().clone()
    opt.step()  # b's first step, a untouched: per-parameter step counts may differ
    assert torch.equal(a.detach(), before)
    assert opt.state[a]["step"].item() == 1 and opt.state[b]["step"].item() == 1


def test_fused_updates_model_in_place_and_survives_set_to_none_false():
    net, ref = _mlp(torch.float64), _mlp(torch.float64)
    x, y = _data(torch.float64)
    weight = net[0].weight
    ours, peer = Adam(net.parameters(), lr=1e-2, fused=True), torch.optim.Adam(ref.parameters(),
                                                                                lr=1e-2)
    for _ in range(20):
        for model, opt in ((net, ours), (ref, peer)):
            opt.zero_grad(set_to_none=False)  # gradients accumulate into the existing tensors
            _loss(model, x, y).backward()
            opt.step()
    assert net[0].weight is weight  # the module still owns the same Parameter objects
    assert _max_rel_err(net, ref) < 1e-10


def test_sparse_gradients_are_rejected():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    for fused in (False, True):
        with pytest.raises(RuntimeError, match="sparse"):
            Adam(emb.parameters(), fused=fused).step()


def test_fused_rejects_unsupported_dtypes():
    with pytest.raises(TypeError, match="float32/float64"):
        Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))], fused=True)


def test_fused_layout_follows_add_param_group():
    dtype = torch.float64
    net, ref = _mlp(dtype), _mlp(dtype)
    x, y = _data(dtype)
    ours = AdamW(net[0].parameters(), lr=1e-2, fused=True)
    peer = torch.optim.AdamW(ref[0].parameters(), lr=1e-2)
    _train_pair(ours, peer, net, ref, x, y, 10)
    ours.add_param_group({"params": net[2].parameters(), "lr": 3e-3})
    peer.add_param_group({"params": ref[2].parameters(), "lr": 3e-3})
    _train_pair(ours, peer, net, ref, x, y, 10)  # the flat buffers are rebuilt with the new group
    assert _max_rel_err(net, ref) < 1e-10


def test_fused_rejects_mixed_dtypes_at_first_step():
    a = torch.nn.Parameter(torch.zeros(3, dtype=torch.float32))
    b = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    with pytest.raises(TypeError, match="one dtype"):
        Adam([a, b], fused=True).step()


@pytest.mark.parametrize("ours_cls, torch_cls", [(Adam, torch.optim.Adam),
                                                 (AdamW, torch.optim.AdamW)])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_complex_parameters_follow_torch(ours_cls, torch_cls, amsgrad):
    """torch updates a complex parameter as the real tensor of its parts; so do we."""
    gen = torch.Generator().manual_seed(3)
    start = torch.randn(5, 4, dtype=torch.complex128, generator=gen)
    target = torch.randn(5, 4, dtype=torch.complex128, generator=gen)
    params = [start.clone().requires_grad_(True) for _ in range(2)]
    opts = [ours_cls([params[0]], lr=0.05, weight_decay=0.1, amsgrad=amsgrad),
            torch_cls([params[1]], lr=0.05, weight_decay=0.1, amsgrad=amsgrad, foreach=False)]
    for _ in range(50):
        for p, opt in zip(params, opts, strict=True):
            opt.zero_grad()
            (p - target).abs().pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=1e-12)
    assert opts[0].state[params[0]]["exp_avg"].is_complex()


def test_torch_keywords_and_tensor_lr_are_accepted_as_torch_accepts_them():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, dtype=torch.float64, generator=gen)
    ours_p, ref_p = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    lr = torch.tensor(0.01, dtype=torch.float64)
    ours = AdamW([ours_p], lr=lr, foreach=None, capturable=False, differentiable=False)
    ref = torch.optim.AdamW([ref_p], lr=torch.tensor(0.01, dtype=torch.float64), foreach=False)
    for step in range(20):
        if step == 10:  # a scheduler changing the tensor in place is seen at the next step
            lr.fill_(0.002)
            ref.param_groups[0]["lr"].fill_(0.002)
        for p, opt in ((ours_p, ours), (ref_p, ref)):
            opt.zero_grad()
            (p**2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours_p, ref_p, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="capturable"):
        Adam([ours_p], capturable=True)
    with pytest.raises(ValueError, match="1-element"):
        Adam([ours_p], lr=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="float lr"):
        Adam([ours_p], lr=lr, fused=True)


def _conv(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Conv2d(4, 4, 3),
                               torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 4 * 4, 3)).to(dtype)


@pytest.mark.parametrize("cls", [AdamW])  # Adam's path differs only in Eq. 6 vs 7 (covered above)
def test_fused_maximize_drift_is_rounding_not_a_formula_difference(cls):
    """Fused ``maximize=True`` on a conv model drifts from torch in float32 over hundreds of
    steps. In float64 the same 400 steps agree to ~1e-12 (a formula difference, e.g. a sign or a
    bias correction, would show at the first step), and one float32 step from the same state and
    gradient differs by a few float32 ulps: per-step rounding (no FMA, another operation order)
    that gradient ascent on the loss amplifies."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randn(8, 3, generator=g)
    kw = dict(lr=1e-3, weight_decay=0.01, maximize=True)
    net, ref = _conv(torch.float64), _conv(torch.float64)
    ours, peer = cls(net.parameters(), fused=True, **kw), PEERS[cls](ref.parameters(), **kw)
    _train_pair(ours, peer, net, ref, x.double(), y.double(), 400)
    moved = max((a - b).abs().max().item()
                for a, b in zip(net.parameters(), _conv(torch.float64).parameters(), strict=True))
    assert moved > 0.1, "parameters barely moved: the comparison would be vacuous"
    assert _max_rel_err(net, ref) < 1e-9
    # float32: 50 steps in lock step (torch's state), then one step each from identical state
    net, ref = _conv(torch.float32), _conv(torch.float32)
    peer = PEERS[cls](ref.parameters(), **kw)
    for _ in range(50):
        peer.zero_grad()
        _loss(ref, x, y).backward()
        peer.step()
    net.load_state_dict(ref.state_dict())
    ours = cls(net.parameters(), fused=True, **kw)
    ours.load_state_dict(copy.deepcopy(peer.state_dict()))  # a copy: the tensors are shared
    for model, opt in ((net, ours), (ref, peer)):
        opt.zero_grad()
        _loss(model, x, y).backward()
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    ours.step()
    peer.step()
    ulp = torch.finfo(torch.float32).eps
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        assert ((a - b).abs() <= 4 * ulp * b.abs().clamp_min(1e-3)).all()
