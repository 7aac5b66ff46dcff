"""The receptive-field recurrence against the input gradient of single output units.

With strictly positive weights and average pooling no two paths can cancel, so the set of input
pixels with a non-zero gradient is exactly the set a unit can see; its bounding box must equal
the computed span (size and centre) exactly, for random stacks with stride, padding and dilation.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deepnotes.nn.receptive_field import (
    Layer,
    Residual,
    field_moments,
    input_gradient_map,
    read_layers,
    receptive_fields,
)


@st.composite
def stacks(draw):
    layers = []
    for _ in range(draw(st.integers(1, 5))):
        k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
        s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        if draw(st.booleans()):
            d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            p = tuple(draw(st.integers(0, di * (ki - 1))) for ki, di in zip(k, d, strict=True))
            conv = nn.Conv2d(2, 2, k, stride=s, padding=p, dilation=d)
            layers += [conv, nn.ReLU()] if draw(st.booleans()) else [conv]
        else:  # torch's pooling wants padding <= kernel / 2
            p = tuple(draw(st.integers(0, ki // 2)) for ki in k)
            layers.append(nn.AvgPool2d(k, stride=s, padding=p))
    return nn.Sequential(*layers).double()


def _positive(model):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.1)
    return model


def _support_box(grad):
    rows = torch.nonzero(grad.abs().sum(1) > 0).flatten()
    cols = torch.nonzero(grad.abs().sum(0) > 0).flatten()
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))


@settings(max_examples=40, deadline=None)
@given(stacks())
def test_span_equals_gradient_support(model):
    _positive(model)
    fields = [receptive_fields(read_layers(model, axis)) for axis in (0, 1)]
    size = [f[-1].size + 3 * f[-1].jump + 4 for f in fields]  # room for an interior unit
    try:
        outs = [receptive_fields(read_layers(model, a), size[a])[-1].output_size for a in (0, 1)]
    except ValueError:  # a pooling window larger than its padded input: not a valid stack
        return
    x = torch.rand(1, 2, *size, dtype=torch.float64) + 0.5  # positive: ReLUs stay open
    y = model(x)
    assert tuple(y.shape[2:]) == tuple(outs)
    units = []
    for a in (0, 1):
        f = fields[a][-1]
        inside = [u for u in range(outs[a]) if f.span(u)[0] >= 0 and f.span(u)[1] <= size[a] - 1]
        if not inside:
            return
        units.append(inside[len(inside) // 2])
    box = _support_box(input_gradient_map(model, x, units))
    for a in (0, 1):
        lo, hi = fields[a][-1].span(units[a])
        assert box[a] == (lo, hi)  # exact: size = hi - lo + 1, centre = (hi + lo) / 2


def test_vgg16_known_answer():
    """VGG-16's conv5_3 and pool5 see 196 and 212 pixels (Araujo et al. 2019, Table 1)."""
    layers = []
    for n_convs in (2, 2, 3, 3, 3):
        for _ in range(n_convs):  # fresh modules: Sequential lists a repeated module once
            layers += [nn.Conv2d(1, 1, 3, padding=1), nn.ReLU()]
        layers.append(nn.MaxPool2d(2, 2))
    fields = receptive_fields(read_layers(nn.Sequential(*layers)), input_size=224)
    assert fields[-2].size == 196 and fields[-1].size == 212
    assert fields[-1].jump == 32 and fields[-1].output_size == 7
    assert fields[-1].start == 15.5  # the centre of the first 32x32 block


def test_max_pool_gradient_stays_inside_the_span():
    gen = torch.Generator().manual_seed(1)
    model = _positive(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(3, 2, 1),
                                    nn.Conv2d(1, 1, 3, dilation=2)).double())
    f = receptive_fields(read_layers(model))[-1]
    x = torch.rand(1, 1, 40, 40, generator=gen, dtype=torch.float64)
    box = _support_box(input_gradient_map(model, x, (5, 5)))
    lo, hi = f.span(5)
    assert lo <= box[0][0] and box[0][1] <= hi


def test_residual_block_reads_as_its_body_and_matches_gradients():
    body = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(1, 1, 3, padding=1))
    model = _positive(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1),
                                    Residual(body, nn.Conv2d(1, 1, 1, stride=2)),
                                    Residual(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)))))
    model = model.double()
    f = receptive_fields(read_layers(model))[-1]
    assert (f.size, f.jump, f.start) == (13, 2, 0.0)
    x = torch.rand(1, 1, 33, 33, dtype=torch.float64) + 0.5
    box = _support_box(input_gradient_map(model, x, (8, 8)))
    assert box[0] == f.span(8) and box[1] == f.span(8)


def test_same_and_valid_padding_strings():
    conv = nn.Conv2d(1, 1, (4, 3), padding="same")
    lay_h, lay_w = read_layers(nn.Sequential(conv), 0)[0], read_layers(nn.Sequential(conv), 1)[0]
    assert (lay_h.padding, lay_h.padding_end) == (1, 2) and lay_w.padding == 1
    assert lay_h.output_size(10) == 10
    assert read_layers(nn.Sequential(nn.Conv2d(1, 1, 3, padding="valid")))[0].padding == 0


def test_ceil_mode_output_size_matches_torch():
    for n in range(3, 12):
        pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        layer = read_layers(nn.Sequential(pool))[0]
        assert layer.output_size(n) == pool(torch.zeros(1, 1, n, n)).shape[2]


def test_field_moments_of_a_gaussian():
    r = torch.arange(41, dtype=torch.float64) - 20
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 3.0**2))
    m = field_moments(g)
    assert m["centre_h"] == pytest.approx(20) and m["centre_w"] == pytest.approx(20)
    assert m["std_h"] == pytest.approx(3.0, rel=1e-6) and m["std_w"] == pytest.approx(3.0, rel=1e-6)
    assert 5 <= m["radius_95"] <= 8


@pytest.mark.parametrize("make, name", [
    (lambda: Layer(kernel=3, stride=0), "stride"),
    (lambda: Layer(kernel=0), "kernel_size"),
    (lambda: Layer(kernel=3, dilation=0), "dilation"),
    (lambda: Layer(kernel=3, padding=-1), "padding"),
    (lambda: receptive_fields([Layer(kernel=7, name="conv1")], input_size=4), "kernel_size"),
    (lambda: read_layers(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(4, 2))),
     "Flatten"),
    (lambda: read_layers(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2))),
     "Upsample"),
    (lambda: read_layers(nn.Sequential(Residual(nn.Conv2d(1, 1, 3, padding=1),
                                                nn.Conv2d(1, 1, 5, padding=1)))), "shortcut"),
    (lambda: receptive_fields([Layer(3)], input_size=0), "input_size"),
    (lambda: read_layers(nn.Sequential(nn.Conv2d(1, 1, 3)), axis=2), "axis"),
])
def test_bad_arguments_raise_value_error(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_error_names_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 3)))
    with pytest.raises(ValueError, match=r"layer 1\.1 \(Linear\)"):
        read_layers(model)
