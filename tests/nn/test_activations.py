"""Our activations against torch.nn.functional (or the closed form where torch has none).

Tolerance: 1e-12 relative and absolute in float64. Both sides compute the same formula in
different but equivalent forms (e.g. exp(-|x|) instead of exp(-x), erfc instead of 1 + erf), so
they differ by a few ulps (2.2e-16 each); 1e-12 leaves room for that and nothing more.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from deepnotes.nn import activations as A

TOL = {"rtol": 1e-12, "atol": 1e-12}

# name -> (ours, reference); both take one tensor.
ELEMENTWISE = {
    "step": (A.step, lambda x: torch.heaviside(x, torch.ones((), dtype=x.dtype))),
    "step_half": (lambda x: A.step(x, value_at_zero=0.5),
                  lambda x: torch.heaviside(x, torch.full((), 0.5, dtype=x.dtype))),
    "sigmoid": (A.sigmoid, torch.sigmoid),
    "tanh": (A.tanh, torch.tanh),
    "softplus": (A.softplus, F.softplus),
    "softplus_beta": (lambda x: A.softplus(x, beta=2.5, threshold=7.0),
                      lambda x: F.softplus(x, beta=2.5, threshold=7.0)),
    "relu": (A.relu, F.relu),
    "leaky_relu": (A.leaky_relu, F.leaky_relu),
    "leaky_relu_0.2": (lambda x: A.leaky_relu(x, negative_slope=0.2),
                       lambda x: F.leaky_relu(x, negative_slope=0.2)),
    "elu": (A.elu, F.elu),
    "elu_alpha": (lambda x: A.elu(x, alpha=0.7), lambda x: F.elu(x, alpha=0.7)),
    "selu": (A.selu, F.selu),
    "gelu": (A.gelu, F.gelu),
    "gelu_tanh": (lambda x: A.gelu(x, approximate="tanh"),
                  lambda x: F.gelu(x, approximate="tanh")),
    "silu": (A.silu, F.silu),
    "mish": (A.mish, F.mish),
    "hardsigmoid": (A.hardsigmoid, F.hardsigmoid),
    "hardswish": (A.hardswish, F.hardswish),
}


def _reglu_ref(x, dim=-1):
    a, b = x.chunk(2, dim)
    return a * F.relu(b)


def _geglu_ref(x, dim=-1, approximate="none"):
    a, b = x.chunk(2, dim)
    return a * F.gelu(b, approximate=approximate)


def _swiglu_ref(x, dim=-1):
    a, b = x.chunk(2, dim)
    return a * F.silu(b)


GATED = {
    "glu": (A.glu, F.glu),
    "reglu": (A.reglu, _reglu_ref),
    "geglu": (A.geglu, _geglu_ref),
    "geglu_tanh": (lambda x, dim=-1: A.geglu(x, dim, approximate="tanh"),
                   lambda x, dim=-1: _geglu_ref(x, dim, approximate="tanh")),
    "swiglu": (A.swiglu, _swiglu_ref),
}

# Kinks and thresholds of every function (0, +-3, softplus's threshold 20 and 7/2.5), values
# where the stable forms switch branch, and the extremes the issue names.
SPECIAL = [0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, 2.8, 3.0, -3.0, 3.0001,
           -2.9999, 7.0 / 2.5, 19.999, 20.0, 20.001, -20.0, 30.0, -30.0, 40.0, -40.0, 100.0,
           -100.0, 710.0, -710.0, 1000.0, -1000.0, 1e4, -1e4]


def _inputs(dtype=torch.float64, n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    random = torch.cat([torch.randn(n, generator=g, dtype=dtype) * 3,
                        torch.randn(n // 4, generator=g, dtype=dtype) * 50])
    return torch.cat([random, torch.tensor(SPECIAL, dtype=dtype)])


def _value_and_grad(fn, x, weights):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    return y.detach(), grad


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_matches_torch_float64(name):
    ours, ref = ELEMENTWISE[name]
    x = _inputs()
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    y, g = _value_and_grad(ours, x, w)
    if name.startswith("step"):
        # torch.heaviside has no derivative; the closed form is 0 everywhere
        y_ref, g_ref = ref(x), torch.zeros_like(x)
    elif name == "hardsigmoid":
        # torch's backward multiplies by 1.0f/6.0f, a float32 constant, also in float64 (see
        # test_torch_hardsigmoid_gradient_uses_a_float32_sixth); we hold ours to the closed form
        y_ref, g_ref = ref(x), w * ((x > -3) & (x < 3)).to(x.dtype) / 6.0
    else:
        y_ref, g_ref = _value_and_grad(ref, x, w)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(g, g_ref, **TOL)


@pytest.mark.parametrize("name", sorted(GATED))
@pytest.mark.parametrize("dim", [-1, 1, 0])
def test_gated_matches_reference_float64(name, dim):
    ours, ref = GATED[name]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 8, 10, generator=g, dtype=torch.float64) * 4
    x.view(-1)[:len(SPECIAL)] = torch.tensor(SPECIAL, dtype=torch.float64)
    out_shape = list(x.shape)
    out_shape[dim] //= 2
    w = torch.randn(out_shape, generator=g, dtype=torch.float64)
    y, gx = _value_and_grad(lambda t: ours(t, dim=dim), x, w)
    y_ref, gx_ref = _value_and_grad(lambda t: ref(t, dim=dim), x, w)
    assert y.shape == torch.Size(out_shape)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(gx, gx_ref, **TOL)


@pytest.mark.parametrize("shape,n_weights", [((5, 4, 3), 4), ((5, 4), 1), ((7,), 1),
                                             ((2, 3, 4, 5), 3)])
def test_prelu_matches_torch_including_weight_gradient(shape, n_weights):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    x.data.view(-1)[0] = 0.0
    wt = torch.rand(n_weights, generator=g, dtype=torch.float64).requires_grad_(True)
    up = torch.randn(shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((A.prelu(x, wt) * up).sum(), (x, wt))
    refs = torch.autograd.grad((F.prelu(x, wt) * up).sum(), (x, wt))
    torch.testing.assert_close(A.prelu(x, wt), F.prelu(x, wt), **TOL)
    for got, want in zip(grads, refs, strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("name", sorted(set(ELEMENTWISE) - {"step", "step_half"}))
def test_gradcheck_elementwise(name):
    ours, _ = ELEMENTWISE[name]
    # away from the kinks (finite differences straddling a kink are not derivatives)
    x = torch.tensor([-7.3, -2.2, -0.7, -0.1, 0.13, 0.9, 2.1, 4.4, 25.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(ours, (x.requires_grad_(True),))


@pytest.mark.parametrize("name", sorted(GATED))
def test_gradcheck_gated(name):
    ours, _ = GATED[name]
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.autograd.gradcheck(ours, (x.requires_grad_(True),))


def test_gradcheck_prelu():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.rand(3, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(A.prelu, (x, w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(set(ELEMENTWISE) | set(GATED)))
def test_no_nan_or_inf_up_to_1e4(name, dtype):
    x = torch.cat([torch.linspace(-1e4, 1e4, 20001, dtype=dtype),
                   torch.tensor(SPECIAL, dtype=dtype)])
    if name in GATED:
        ours = GATED[name][0]
        x = torch.stack([x.flip(0), x], dim=-1)  # values and gates both sweep the range
    else:
        ours = ELEMENTWISE[name][0]
    x.requires_grad_(True)
    y = ours(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()


def test_prelu_no_nan_or_inf_up_to_1e4():
    x = torch.linspace(-1e4, 1e4, 2001, dtype=torch.float32).reshape(1, 1, -1).requires_grad_(True)
    w = torch.tensor([0.25], requires_grad=True)
    grads = torch.autograd.grad(A.prelu(x, w).sum(), (x, w))
    assert all(torch.isfinite(g).all() for g in grads)


def test_named_extremes():
    big = torch.tensor([1000.0, -1000.0], dtype=torch.float64)
    assert A.softplus(big)[0].item() == 1000.0
    assert A.softplus(big)[1].item() == 0.0
    assert A.sigmoid(big)[1].item() == 0.0 and A.sigmoid(big)[0].item() == 1.0
    # softplus stays exact even when the threshold switch is moved out of the way
    assert A.softplus(big, threshold=1e9)[0].item() == 1000.0
    assert A.tanh(big).tolist() == [1.0, -1.0]
    # the stable forms keep relative accuracy deep in the tails, where torch's formula is 0
    x = torch.tensor([-50.0], dtype=torch.float64)
    assert A.sigmoid(x).item() == pytest.approx(math.exp(-50.0), rel=1e-14)
    assert A.softplus(x).item() == pytest.approx(math.exp(-50.0), rel=1e-14)


def test_step_has_zero_gradient_everywhere():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(A.step(x).sum(), x)
    assert torch.equal(g, torch.zeros_like(x))
    assert A.step(torch.tensor([-1.0, 0.0, 2.0])).tolist() == [0.0, 1.0, 1.0]
    assert A.step(torch.tensor([0.0]), value_at_zero=0.0).tolist() == [0.0]


def test_torch_hardsigmoid_gradient_uses_a_float32_sixth():
    x = torch.linspace(-2.9, 2.9, 7, dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(A.hardsigmoid(x).sum(), x)
    (theirs,) = torch.autograd.grad(F.hardsigmoid(x).sum(), x)
    assert torch.equal(ours, torch.full_like(ours, 1.0 / 6.0))
    assert torch.equal(theirs, torch.full_like(theirs, float(torch.tensor(1.0 / 6.0))))
    torch.testing.assert_close(ours, theirs, rtol=2.0**-24, atol=0.0)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "selu", "silu", "mish",
                                  "hardsigmoid", "hardswish"])
def test_inplace_matches_torch_inplace(name):
    ours, ref = getattr(A, name), getattr(F, name)
    base = torch.randn(50, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 4
    results = []
    for fn in (ours, ref):
        leaf = base.clone().requires_grad_(True)
        h = leaf * 1.0  # a non-leaf, as in-place activations are used inside networks
        out = fn(h, inplace=True)
        assert out is h
        (g,) = torch.autograd.grad((out * base).sum(), leaf)
        results.append((out.detach(), g))
    torch.testing.assert_close(results[0][0], results[1][0], **TOL)
    # hardsigmoid: torch's float32 sixth (see above) bounds the agreement of the gradients
    tol = {"rtol": 2.0**-24, "atol": 0.0} if name == "hardsigmoid" else TOL
    torch.testing.assert_close(results[0][1], results[1][1], **tol)
    # without autograd the tensor is simply overwritten
    t = base.clone()
    assert ours(t, inplace=True) is t and torch.allclose(t, ref(base))


def test_signatures_follow_torch():
    import inspect

    for name in ("relu", "leaky_relu", "elu", "selu", "silu", "mish", "hardsigmoid",
                 "hardswish", "glu", "gelu", "softplus"):
        ours = inspect.signature(getattr(A, name)).parameters
        theirs = {"softplus": {"beta": 1.0, "threshold": 20.0},
                  "gelu": {"approximate": "none"}}.get(name)
        if theirs is None:
            params = inspect.signature(getattr(F, name)).parameters
            theirs = {k: p.default for k, p in params.items() if k != "input"}
        assert {k: p.default for k, p in ours.items() if k != "input"} == theirs, name


@pytest.mark.parametrize("call,match", [
    (lambda: A.relu([1.0]), "input"),
    (lambda: A.relu(torch.tensor([1, 2])), "input"),
    (lambda: A.softplus(torch.ones(2), beta=0.0), "beta"),
    (lambda: A.softplus(torch.ones(2), beta=float("nan")), "beta"),
    (lambda: A.leaky_relu(torch.ones(2), negative_slope="0.1"), "negative_slope"),
    (lambda: A.elu(torch.ones(2), alpha=float("inf")), "alpha"),
    (lambda: A.gelu(torch.ones(2), approximate="erf"), "approximate"),
    (lambda: A.glu(torch.ones(3, 5)), "dim"),
    (lambda: A.glu(torch.ones(3, 4), dim=2), "dim"),
    (lambda: A.swiglu(torch.ones(3, 4), dim=1.0), "dim"),
    (lambda: A.relu(torch.ones(2), inplace=1), "inplace"),
    (lambda: A.prelu(torch.ones(2, 3), torch.ones(4)), "weight"),
    (lambda: A.prelu(torch.ones(2, 3), torch.ones(3, 1)), "weight"),
    (lambda: A.step(torch.ones(2), value_at_zero=None), "value_at_zero"),
])
def test_bad_arguments_raise_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
