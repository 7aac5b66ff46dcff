"""Surrogates of accuracy: values against torch or closed forms, gradients against Eqs. 7-10."""

import pytest
import torch
import torch.nn.functional as F

from deepnotes.nn import surrogates as S

TOL = {"rtol": 1e-12, "atol": 1e-14}


def _data(b=40, c=5, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, c, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    target = torch.randint(0, c, (b,), generator=g)
    return logits, target


def _grad(loss, logits):
    (g,) = torch.autograd.grad(loss, logits)
    return g


def test_accuracy_and_zero_one_loss_have_no_gradient():
    logits, target = _data()
    acc = S.accuracy(logits, target)
    err = S.zero_one_loss(logits, target)
    assert not acc.requires_grad and not err.requires_grad
    assert acc.item() == pytest.approx(1.0 - err.item())
    assert acc.item() == (logits.argmax(1) == target).double().mean().item()


def test_margin_is_positive_exactly_when_correct():
    logits, target = _data()
    m = S.margin(logits, target)
    assert torch.equal(m > 0, logits.argmax(1) == target)
    # Eq. 7: +1 at the target, -1 at the strongest other class
    g = _grad(m.sum(), logits)
    other = logits.detach().scatter(1, target[:, None], float("-inf")).argmax(1)
    want = torch.zeros_like(g)
    want[torch.arange(len(target)), target] = 1.0
    want[torch.arange(len(target)), other] = -1.0
    assert torch.equal(g, want)


def test_cross_entropy_matches_torch_and_closed_form_gradient():
    logits, target = _data()
    ours = S.cross_entropy(logits, target)
    torch.testing.assert_close(ours, F.cross_entropy(logits, target), **TOL)
    p = torch.softmax(logits.detach(), 1)
    want = (p - F.one_hot(target, 5)) / len(target)  # Eq. 10
    torch.testing.assert_close(_grad(ours, logits), want, **TOL)
    big = torch.tensor([[1000.0, -1000.0]], dtype=torch.float64)
    assert S.cross_entropy(big, torch.tensor([0])).item() == 0.0
    assert S.cross_entropy(big, torch.tensor([1])).item() == 2000.0


@pytest.mark.parametrize("p,fn", [(1, S.hinge_loss), (2, S.squared_hinge_loss)])
@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_hinges_match_multi_margin_loss_and_closed_form(p, fn, margin):
    logits, target = _data()
    ours = fn(logits, target, margin=margin)
    ref = F.multi_margin_loss(logits, target, p=p, margin=margin)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(_grad(ours, logits), _grad(ref, logits), **TOL)
    # closed form (Eq. 5): d/df_k = p * h_k^(p-1) / (C B) for k != y, minus their sum at y
    f = logits.detach()
    h = (margin - f.gather(1, target[:, None]) + f).clamp_min(0)
    h[torch.arange(len(target)), target] = 0
    dk = (p * h ** (p - 1) * (h > 0)) / (5 * len(target))
    dk[torch.arange(len(target)), target] = -dk.sum(1)
    torch.testing.assert_close(_grad(fn(logits, target, margin=margin), logits), dk, **TOL)


@pytest.mark.parametrize("temperature", [0.1, 1.0, 4.0])
def test_softmax_zero_one_gradient_closed_form(temperature):
    logits, target = _data()
    loss = S.softmax_zero_one_loss(logits, target, temperature=temperature)
    p = torch.softmax(logits.detach() / temperature, 1)
    p_y = p.gather(1, target[:, None])
    want = -p_y * (F.one_hot(target, 5) - p) / (temperature * len(target))  # Eq. 9
    torch.testing.assert_close(loss, (1 - p_y).mean(), **TOL)
    torch.testing.assert_close(_grad(loss, logits), want, **TOL)


@pytest.mark.parametrize("temperature", [0.1, 1.0, 4.0])
def test_sigmoid_zero_one_gradient_closed_form(temperature):
    logits, target = _data()
    loss = S.sigmoid_zero_one_loss(logits, target, temperature=temperature)
    f = logits.detach()
    other = f.scatter(1, target[:, None], float("-inf"))
    m = f.gather(1, target[:, None])[:, 0] - other.max(1).values
    s = torch.sigmoid(m / temperature)
    coef = -s * (1 - s) / (temperature * len(target))  # Eq. 8: dL/dm, then Eq. 7
    want = torch.zeros_like(f)
    want[torch.arange(len(target)), target] += coef
    want[torch.arange(len(target)), other.argmax(1)] -= coef
    torch.testing.assert_close(loss, torch.sigmoid(-m / temperature).mean(), **TOL)
    torch.testing.assert_close(_grad(loss, logits), want, **TOL)


@pytest.mark.parametrize("fn", [S.sigmoid_zero_one_loss, S.softmax_zero_one_loss])
def test_relaxed_losses_tend_to_the_zero_one_loss(fn):
    logits, target = _data(b=200)
    m = S.margin(logits, target).detach()
    keep = m.abs() > 0.2  # away from ties, where the limit is 1/2 (sigmoid) or 1 - 1/k
    lg, tg = logits.detach()[keep], target[keep]
    exact = S.zero_one_loss(lg, tg, reduction="none")
    gaps = [float((fn(lg, tg, temperature=t, reduction="none") - exact).abs().max())
            for t in (1.0, 0.1, 0.01)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-7


def test_flat_gradients_of_a_cold_sigmoid_surrogate():
    # a point misclassified by a margin of 3: cold temperatures leave it (almost) no gradient
    logits = torch.tensor([[0.0, 3.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0])
    norms = [float(_grad(S.sigmoid_zero_one_loss(logits, target, temperature=t), logits).norm())
             for t in (1.0, 0.1, 0.01)]
    assert norms[0] > norms[1] > norms[2] and norms[2] < 1e-100
    ce = float(_grad(S.cross_entropy(logits, target), logits).norm())
    assert ce > 1.0  # cross-entropy pushes hardest on the worst-classified points


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("name", sorted(S.LOSSES))
def test_reductions(name, reduction):
    logits, target = _data()
    fn = S.LOSSES[name]
    per = fn(logits, target, reduction="none")
    assert per.shape == (40,)
    out = fn(logits, target, reduction=reduction)
    torch.testing.assert_close(out, per.sum() if reduction == "sum" else per, **TOL)
    torch.testing.assert_close(fn(logits, target), per.mean(), **TOL)


@pytest.mark.parametrize("call,match", [
    (lambda: S.cross_entropy(torch.ones(3), torch.zeros(3, dtype=torch.long)), "logits"),
    (lambda: S.cross_entropy(torch.ones(3, 1), torch.zeros(3, dtype=torch.long)), "logits"),
    (lambda: S.cross_entropy(torch.ones(3, 2), torch.zeros(3)), "target"),
    (lambda: S.cross_entropy(torch.ones(3, 2), torch.zeros(2, dtype=torch.long)), "target"),
    (lambda: S.cross_entropy(torch.ones(3, 2), torch.full((3,), 2)), "target"),
    (lambda: S.cross_entropy(torch.ones(3, 2), torch.zeros(3, dtype=torch.long),
                             reduction="avg"), "reduction"),
    (lambda: S.sigmoid_zero_one_loss(torch.ones(3, 2), torch.zeros(3, dtype=torch.long),
                                     temperature=0.0), "temperature"),
    (lambda: S.softmax_zero_one_loss(torch.ones(3, 2), torch.zeros(3, dtype=torch.long),
                                     temperature=-1.0), "temperature"),
    (lambda: S.hinge_loss(torch.ones(3, 2), torch.zeros(3, dtype=torch.long), margin=0), "margin"),
])
def test_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
