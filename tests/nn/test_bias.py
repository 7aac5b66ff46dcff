"""The perceptron with and without its threshold, bias-free networks, and biases before norms."""

import numpy as np
import pytest
import torch
from torch import nn

from deepnotes.nn.bias import (
    augment,
    bias_gradient_parts,
    make_mlp,
    perceptron_fit,
    perceptron_predict,
    wasted_biases,
)


def _offset_blobs(n=200, seed=0):
    """Two classes on the same ray from the origin, split by the line x1 + x2 = 4."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 4.0, size=(4 * n, 2))
    s = x.sum(1)
    keep = np.abs(s - 4.0) > 0.5  # margin 0.5 / sqrt(2) around the true boundary
    x = x[keep][:n]
    y = np.where(x.sum(1) > 4.0, 1, -1)
    return x, y


def test_perceptron_with_bias_separates_offset_data_within_novikoff_bound():
    x, y = _offset_blobs()
    res = perceptron_fit(x, y, epochs=1000)
    assert res.converged and res.mistakes[-1] == 0
    assert np.array_equal(perceptron_predict(x, res.weight, res.bias), y)
    # Novikoff: total mistakes <= (R / gamma)^2 for inputs [x, 1] and any unit separator u
    u = np.array([1.0, 1.0, -4.0]) / np.sqrt(18.0)
    xa = augment(x)
    gamma = (y * (xa @ u)).min()
    radius = np.linalg.norm(xa, axis=1).max()
    assert gamma > 0 and res.mistakes.sum() <= (radius / gamma) ** 2


def test_perceptron_without_bias_never_converges_on_offset_data():
    x, y = _offset_blobs()
    res = perceptron_fit(x, y, epochs=200, bias=False)
    assert res.bias == 0.0 and not res.converged
    assert (res.mistakes > 0).all()
    # no line through the origin separates them: points on one ray carry both labels
    on_ray = np.array([[0.5, 0.5], [3.0, 3.0]])
    pred = perceptron_predict(on_ray, res.weight, 0.0)
    assert pred[0] == pred[1]


def test_bias_is_the_weight_of_a_constant_input():
    x, y = _offset_blobs(seed=1)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    with_bias = perceptron_fit(x, y, epochs=300, rng=rng_a)
    trick = perceptron_fit(augment(x), y, epochs=300, bias=False, rng=rng_b)
    assert np.array_equal(trick.weight[:-1], with_bias.weight)
    assert trick.weight[-1] == with_bias.bias
    assert np.array_equal(trick.mistakes, with_bias.mistakes)


def test_learning_rate_only_rescales_the_perceptron():
    x, y = _offset_blobs(seed=2)
    a = perceptron_fit(x, y, epochs=300, lr=1.0)
    b = perceptron_fit(x, y, epochs=300, lr=0.25)
    assert np.array_equal(a.mistakes, b.mistakes)
    np.testing.assert_allclose(b.weight, 0.25 * a.weight, rtol=1e-12)
    assert b.bias == pytest.approx(0.25 * a.bias, rel=1e-12)


def test_bias_free_relu_network_is_positively_homogeneous():
    torch.manual_seed(0)
    net = make_mlp(2, (16, 16), 1, bias=False).double()
    x = torch.randn(50, 2, dtype=torch.float64)
    for a in (0.0, 0.3, 1.0, 7.5):
        torch.testing.assert_close(net(a * x), a * net(x), rtol=1e-12, atol=1e-12)
    assert net(torch.zeros(1, 2, dtype=torch.float64)).item() == 0.0
    # so every ray from the origin carries a single class
    signs = torch.sign(net(torch.linspace(0.01, 10, 100, dtype=torch.float64)[:, None] * x[0]))
    assert (signs == signs[0]).all()


def test_bias_free_tanh_network_is_odd_and_biased_one_is_not():
    torch.manual_seed(1)
    net = make_mlp(2, (16,), 1, bias=False, activation=nn.Tanh).double()
    x = torch.randn(50, 2, dtype=torch.float64)
    torch.testing.assert_close(net(-x), -net(x), rtol=1e-12, atol=1e-12)
    biased = make_mlp(2, (16,), 1, bias=True, activation=nn.Tanh).double()
    assert biased(torch.zeros(1, 2, dtype=torch.float64)).abs().item() > 0


def _grads(norm: nn.Module, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 6), norm, nn.ReLU(), nn.Linear(6, 3)).double()
    x = torch.randn(32, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    nn.functional.cross_entropy(model(x), y).backward()
    return model


def test_bias_before_batch_norm_gets_zero_gradient():
    model = _grads(nn.BatchNorm1d(6))
    assert wasted_biases(model) == [("0.bias", "all")]
    gb, gw = model[0].bias.grad, model[0].weight.grad
    # zero in exact arithmetic; in float64 what is left is rounding, 1e-12 of the weight gradient
    assert gb.abs().max() <= 1e-12 * gw.abs().max()
    assert gw.abs().max() > 1e-3
    # and the bias does not change the output at all (up to rounding)
    x = torch.randn(16, 8, dtype=torch.float64)
    before = model(x)
    with torch.no_grad():
        model[0].bias.add_(torch.randn(6, dtype=torch.float64) * 10)
    model[1].reset_running_stats()
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-10)


def test_bias_before_layer_norm_loses_only_its_mean():
    model = _grads(nn.LayerNorm(6))
    assert wasted_biases(model) == [("0.bias", "mean")]
    mean_part, rest = bias_gradient_parts(model[0].bias.grad)
    assert mean_part <= 1e-12 * rest and rest > 1e-3


def test_bias_without_a_norm_is_used():
    model = _grads(nn.Identity())
    assert wasted_biases(model) == []
    mean_part, rest = bias_gradient_parts(model[0].bias.grad)
    assert mean_part > 1e-6 and rest > 1e-3


@pytest.mark.parametrize("call,match", [
    (lambda: perceptron_fit(np.ones(3), np.ones(3)), "x"),
    (lambda: perceptron_fit(np.ones((3, 2)), np.array([1, 0, 1])), "y"),
    (lambda: perceptron_fit(np.ones((3, 2)), np.ones(2)), "y"),
    (lambda: perceptron_fit(np.ones((3, 2)), np.ones(3), epochs=0), "epochs"),
    (lambda: perceptron_fit(np.ones((3, 2)), np.ones(3), lr=0.0), "lr"),
    (lambda: augment(np.ones(3)), "x"),
    (lambda: make_mlp(0, (4,), 1), "d_in"),
    (lambda: make_mlp(2, (4, 0), 1), "widths"),
    (lambda: bias_gradient_parts(torch.ones(2, 2)), "grad"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wasted_biases_needs_a_sequential():
    with pytest.raises(TypeError, match="model"):
        wasted_biases(nn.Linear(2, 2))
