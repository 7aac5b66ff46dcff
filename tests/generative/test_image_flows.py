"""Image flows: squeeze, checkerboard/channel couplings, per-channel ActNorm and 1×1 convolutions,
the multi-scale split, and RealNVP/Glow in image mode.

Exact inverses and log-determinants against the full Jacobian from
``torch.autograd.functional.jacobian`` (float64), property-based over image shapes and seeds
(hypothesis); known answers for the squeeze permutation and the masks; clear errors.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepnotes.generative.flows import (
    ActNorm,
    Chain,
    ConvAffineCoupling,
    Glow,
    InvertibleConv1x1,
    RealNVP,
    Split,
    Squeeze,
    image_mask,
)
from deepnotes.generative.flows.image import LearnedTopPrior

torch.set_num_threads(1)

# name -> (builder(shape, generator), requirement on (C, H, W))
BUILDERS = {
    "squeeze": (lambda s, g: Squeeze(s), "even_hw"),
    "coupling_checker_tanh": (lambda s, g: ConvAffineCoupling(s, "checkerboard", hidden=8), None),
    "coupling_checker_flip_sigmoid": (
        lambda s, g: ConvAffineCoupling(s, "checkerboard", True, 8, scale="sigmoid"), None),
    "coupling_channel_tanh": (lambda s, g: ConvAffineCoupling(s, "channel", hidden=8), "c2"),
    "coupling_channel_flip_exp": (
        lambda s, g: ConvAffineCoupling(s, "channel", True, 8, 1, scale="exp"), "c2"),
    "coupling_channel_inv_sigmoid": (
        lambda s, g: ConvAffineCoupling(s, "channel", hidden=8, scale="inv_sigmoid"), "c2"),
    "coupling_checker_flip_inv_sigmoid": (
        lambda s, g: ConvAffineCoupling(s, "checkerboard", True, 8, scale="inv_sigmoid"), None),
    "actnorm": (lambda s, g: ActNorm(image_shape=s), None),
    "conv1x1_plain": (lambda s, g: InvertibleConv1x1(generator=g, image_shape=s), None),
    "conv1x1_lu": (lambda s, g: InvertibleConv1x1(lu=True, generator=g, image_shape=s), None),
    "split": (None, "split"),  # built in build(): the inner part needs the split's shape
    "split_trailing": (None, "split"),
    "split_learned_prior": (lambda s, g: Split(math.prod(s), Chain([
        ConvAffineCoupling((s[0] // 2, s[1], s[2]), "checkerboard", hidden=8)]), s, True),
        "split_even"),
    "split_learned_prior_trailing": (lambda s, g: Split(math.prod(s), Chain([
        ConvAffineCoupling((s[0] // 2, s[1], s[2]), "checkerboard", hidden=8)]), s, True,
        "trailing"), "split_even"),
    "top_prior": (lambda s, g: LearnedTopPrior(s), None),
    "realnvp_1scale": (lambda s, g: RealNVP(image_shape=s, n_couplings=1, hidden=8,
                                            n_scales=1), None),
    "realnvp_2scales_actnorm": (lambda s, g: RealNVP(image_shape=s, n_couplings=1, hidden=8,
                                                     actnorm=True), "hw4"),
    "glow_1level_lu": (lambda s, g: Glow(image_shape=s, n_steps=2, hidden=8, generator=g,
                                         n_levels=1), "even_hw"),
    "glow_2levels_plain_tanh": (lambda s, g: Glow(image_shape=s, n_steps=1, hidden=8, lu=False,
                                                  scale="tanh", generator=g), "hw4"),
    "glow_2levels_learned_prior": (lambda s, g: Glow(image_shape=s, n_steps=1, hidden=8,
                                                     generator=g, learn_prior=True), "hw4"),
    "glow_2levels_fixed_prior": (lambda s, g: Glow(image_shape=s, n_steps=1, hidden=8,
                                                   generator=g, learn_prior=False), "hw4"),
    "glow_2levels_inv_sigmoid": (lambda s, g: Glow(image_shape=s, n_steps=1, hidden=8,
                                                   scale="inv_sigmoid", generator=g), "hw4"),
}
SHAPES = [(c, h, w) for c in (1, 2, 3) for h in (2, 4) for w in (2, 4)]


def allowed(req, shape):
    c, h, w = shape
    return {None: True, "even_hw": h % 2 == 0 and w % 2 == 0, "c2": c >= 2,
            "hw4": h % 4 == 0 and w % 4 == 0, "split": c >= 2,
            "split_even": c % 2 == 0}[req]


def build(name, shape, seed, dtype=torch.float64, noise=0.1):
    """A randomly perturbed instance (zero-initialised last convolutions would make couplings
    the identity); the plain 1×1 weight moves a sixth of ``noise`` to stay well conditioned.

    ``noise`` is smaller than the vector tests' 0.3: a 3×3 convolution sums 9·C inputs, so 0.3
    can push sigmoid scales to e^-30 and the Jacobian's condition number past 1e14, where the
    reference ``slogdet`` itself is only good to ~1e-4.
    """
    make, _ = BUILDERS[name]
    torch.manual_seed(seed)  # nn.Conv2d initialises from the global generator
    g = torch.Generator().manual_seed(seed)
    if name in ("split", "split_trailing"):  # the inner part transforms C // 2 channels
        inner_shape = (shape[0] // 2, shape[1], shape[2])
        inner = Chain([ConvAffineCoupling(inner_shape, "checkerboard", hidden=8)])
        model = Split(math.prod(shape), inner,
                      factor_out="trailing" if name == "split_trailing" else "leading")
    else:
        model = make(shape, g)
    model = model.to(dtype)
    with torch.no_grad():
        model(images(shape, 16, g, dtype).flatten(1))  # ActNorm's data-dependent start
        for pname, p in model.named_parameters():
            plain_w = pname.endswith("weight") and p.ndim == 2
            p.add_((noise / 6 if plain_w else noise) * torch.randn(p.shape, generator=g,
                                                                    dtype=dtype))
    return model


def images(shape, batch, g, dtype=torch.float64):
    return (1.5 * torch.randn(batch, *shape, generator=g)).to(dtype)


def jacobians(f, x):
    """∂f/∂x per example by autograd, shape (B, D, D), for flat x (B, D)."""
    return torch.stack([torch.autograd.functional.jacobian(lambda v: f(v[None])[0][0], xi)
                        for xi in x])


@pytest.mark.parametrize("name", sorted(BUILDERS))
@settings(max_examples=10, deadline=None)
@given(data=st.data(), batch=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_inverse_and_log_det_float64(name, data, batch, seed):
    # draw only allowed shapes: filtering with assume() trips hypothesis' filter_too_much
    # health check for "hw4" models, which accept 3 of the 12 shapes
    shape = data.draw(st.sampled_from([s for s in SHAPES if allowed(BUILDERS[name][1], s)]))
    model = build(name, shape, seed)
    x = images(shape, batch, torch.Generator().manual_seed(seed + 1)).flatten(1)
    z, log_det = model(x)
    assert z.shape == x.shape and log_det.shape == (batch,)
    x_back, log_det_inv = model.inverse(z)
    jac, jac_inv = jacobians(model, x), jacobians(model.inverse, z)
    # autograd's Jacobian is exact: only float64 round-off separates the two log-determinants
    torch.testing.assert_close(log_det, torch.linalg.slogdet(jac).logabsdet, rtol=0, atol=1e-8)
    torch.testing.assert_close(log_det_inv, torch.linalg.slogdet(jac_inv).logabsdet,
                               rtol=0, atol=1e-8)
    torch.testing.assert_close(log_det_inv, -log_det, rtol=0, atol=1e-8)
    # as in test_flows: round-off ~1e-15 relative per layer, amplified by the inverse's gain
    gain = torch.linalg.matrix_norm(jac_inv, ord=2)
    bound = 1e-12 * (1 + gain) * (1 + z.abs().amax(1))
    assert torch.all((x_back - x).abs().amax(1) <= bound)


@pytest.mark.parametrize("name", ["realnvp_2scales_actnorm", "glow_2levels_plain_tanh",
                                  "glow_1level_lu", "glow_2levels_fixed_prior"])
def test_image_models_float32_round_trip_and_4d_input(name):
    shape = (1, 8, 8)
    model = build(name, shape, seed=2, dtype=torch.float32, noise=0.05)
    x = images(shape, 32, torch.Generator().manual_seed(3), torch.float32)
    z, log_det = model(x)  # (B, C, H, W) input is flattened
    z_flat, log_det_flat = model(x.flatten(1))
    torch.testing.assert_close(z, z_flat, rtol=0, atol=0)
    torch.testing.assert_close(log_det, log_det_flat, rtol=0, atol=0)
    x_back, log_det_inv = model.inverse(z.reshape(32, *shape))
    # float32 (eps 1.2e-7): a few ulp per layer over ~20 layers with gains near 1 (noise 0.05)
    torch.testing.assert_close(x_back, x.flatten(1), rtol=0, atol=1e-4)
    torch.testing.assert_close(log_det_inv, -log_det, rtol=0, atol=1e-3)  # sums of 64 terms


def test_squeeze_is_the_documented_permutation():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    layer = Squeeze((2, 4, 6))
    y, ld = layer(x.flatten(1))
    y = y.reshape(1, *layer.out_shape)
    assert layer.out_shape == (8, 2, 3) and float(ld) == 0.0
    for c in range(2):
        for i in range(2):
            for j in range(2):
                for h in range(2):
                    for w in range(3):
                        assert y[0, 4 * c + 2 * i + j, h, w] == x[0, c, 2 * h + i, 2 * w + j]


def test_masks():
    cb = image_mask((3, 2, 3), "checkerboard")
    assert cb.shape == (1, 2, 3)
    assert cb[0].tolist() == [[1, 0, 1], [0, 1, 0]]
    torch.testing.assert_close(image_mask((3, 2, 3), "checkerboard", flip=True), 1 - cb)
    ch = image_mask((4, 2, 2), "channel")
    assert ch.flatten().tolist() == [1, 1, 0, 0]
    assert image_mask((4, 2, 2), "channel", flip=True).flatten().tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("mask", ["checkerboard", "channel"])
def test_coupling_leaves_the_masked_entries_unchanged(mask):
    shape = (2, 4, 4)
    layer = build("coupling_checker_tanh" if mask == "checkerboard" else
                  "coupling_channel_tanh", shape, seed=0)
    x = images(shape, 5, torch.Generator().manual_seed(1))
    y, _ = layer(x.flatten(1))
    keep = image_mask(shape, mask).expand(shape).bool()
    y = y.reshape(5, *shape)
    assert torch.equal(y[:, keep], x[:, keep])
    assert not torch.allclose(y[:, ~keep], x[:, ~keep])  # the others did move


def test_image_actnorm_initialises_per_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 4, 4, generator=g) * torch.tensor([1.0, 5.0, 0.2])[:, None, None]
    x = x + torch.tensor([2.0, -1.0, 7.0])[:, None, None]
    layer = ActNorm(image_shape=(3, 4, 4))
    z, log_det = layer(x.flatten(1))
    z = z.reshape(64, 3, 16)
    # float32 sums over 1024 values per channel: 1e-5 is a few ulp of their scale
    torch.testing.assert_close(z.mean((0, 2)), torch.zeros(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(z.std((0, 2)), torch.ones(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(log_det, 16 * layer.log_scale.sum().expand(64))


def test_image_1x1_conv_log_det_is_pixels_times_slogdet():
    layer = InvertibleConv1x1(image_shape=(3, 2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.weight.mul_(torch.tensor([2.0, 1.0, 0.5])[:, None] * 1.5)
    _, log_det = layer(torch.zeros(2, 30))
    expected = 10 * torch.linalg.slogdet(layer.weight).logabsdet
    torch.testing.assert_close(log_det, expected.expand(2).detach())


def test_backward_compatible_vector_constructors():
    assert RealNVP(4, 2, 8).dim == 4 and RealNVP(4, 2, 8).image_shape is None
    assert Glow(6, 2, 8).dim == 6
    assert ActNorm(5).dim == 5 and InvertibleConv1x1(5, True).dim == 5
    assert RealNVP(64, image_shape=(1, 8, 8)).dim == 64


def test_bad_images_and_configurations_are_named():
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze((1, 5, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        Glow(image_shape=(1, 6, 6), n_levels=2)
    with pytest.raises(ValueError, match="divisible by 2"):
        RealNVP(image_shape=(1, 5, 5), n_scales=2)
    with pytest.raises(ValueError, match="at least 2 channels"):
        ConvAffineCoupling((1, 4, 4), "channel")
    with pytest.raises(ValueError, match="image mask kind"):
        ConvAffineCoupling((2, 4, 4), "stripes")
    with pytest.raises(ValueError, match="does not match image_shape"):
        RealNVP(32, image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="three positive ints"):
        Glow(image_shape=(8, 8))
    with pytest.raises(ValueError, match="give dim"):
        RealNVP()
    model = RealNVP(image_shape=(1, 8, 8), n_couplings=1, hidden=4)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 1, 8, 8\)"):
        model.log_prob(torch.zeros(2, 3, 8, 8))  # wrong channel count
    with pytest.raises(ValueError, match=r"shape \(batch, 64\)"):
        model.log_prob(torch.zeros(2, 63))
    bad = torch.zeros(2, 1, 8, 8)
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(bad)
    with pytest.raises(ValueError, match="NaN"):
        model.inverse(bad)


def gaussian_log_density(v, mean, log_std):
    """log N(v; mean, diag(exp(log_std))^2) summed over the last axis, written out by hand."""
    return (-0.5 * ((v - mean) / log_std.exp()) ** 2 - log_std
            - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_split_factors_out_the_documented_part():
    """Known answer: ``leading`` passes x[:, :dim - d] through and feeds x[:, dim - d:] to
    ``inner``; ``trailing`` passes x[:, d:] and feeds x[:, :d]. The factored-out part comes
    first in the output either way. Glow's splits factor out the trailing half."""
    shape = (3, 2, 2)  # an odd channel count: the two parts differ in size (d = 4, dim = 12)
    for factor_out in ("leading", "trailing"):
        split = build("split" if factor_out == "leading" else "split_trailing", shape, seed=0)
        x = images(shape, 4, torch.Generator().manual_seed(1)).flatten(1)
        z, ld = split(x)
        d = split.inner.dim
        out, kept = (x[:, :12 - d], x[:, 12 - d:]) if factor_out == "leading" else \
            (x[:, d:], x[:, :d])
        inner_z, inner_ld = split.inner(kept)
        assert torch.equal(z, torch.cat([out, inner_z], 1)) and torch.equal(ld, inner_ld)
        torch.testing.assert_close(split.inverse(z)[0], x, rtol=0, atol=1e-12)  # round-off
    glow = Glow(image_shape=(1, 8, 8), n_steps=1, hidden=4)
    assert [m.factor_out for m in glow.modules() if isinstance(m, Split)] == ["trailing"]
    with pytest.raises(ValueError, match="factor_out must be one of"):
        Split(12, split.inner, factor_out="middle")


@pytest.mark.parametrize("factor_out", ["leading", "trailing"])
def test_learned_split_prior_is_the_conditional_gaussian_density(factor_out):
    """Split(learn_prior=True): log p of the model equals N(mu(z1), sigma(z1)) for the
    factored-out half times (standard normal of inner(z1)) · |det ∂inner/∂z1|, with mu and
    log sigma computed here by a separate ``conv2d`` call on the kept half."""
    from deepnotes.generative.flows import Flow
    shape, g = (2, 4, 4), torch.Generator().manual_seed(0)
    name = "split_learned_prior" + ("_trailing" if factor_out == "trailing" else "")
    split = build(name, shape, seed=0)  # perturbed: non-zero prior and coupling
    inner = split.inner
    model = Flow([split], base="normal").double()
    x = images(shape, 5, g).flatten(1)
    factored, kept = (x[:, :16], x[:, 16:]) if factor_out == "leading" else (x[:, 16:], x[:, :16])
    out = torch.nn.functional.conv2d(kept.reshape(5, 1, 4, 4), split.prior.weight,
                                     split.prior.bias, padding=1)
    mean, log_std = out[:, :1].flatten(1), out[:, 1:].flatten(1)
    inner_z, inner_ld = inner(kept)
    expected = (gaussian_log_density(factored, mean, log_std)
                + gaussian_log_density(inner_z, 0.0, torch.zeros(())) + inner_ld)
    # the same float64 sums in a different order: round-off only
    torch.testing.assert_close(model.log_prob(x), expected, rtol=0, atol=1e-10)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_learned_prior_glow_log_prob_is_change_of_variables(seed):
    """Brute force on a tiny image: log p(x) = log N(f(x); 0, I) + log|det ∂f/∂x| with the
    determinant of the full autograd Jacobian, for a perturbed Glow with learned priors (the
    priors' shifts and scales are part of f)."""
    shape = (1, 4, 4)
    model = build("glow_2levels_learned_prior", shape, seed)
    x = images(shape, 3, torch.Generator().manual_seed(seed + 1)).flatten(1)
    z, _ = model(x)
    logdet = torch.linalg.slogdet(jacobians(model, x)).logabsdet
    zero = torch.zeros(())
    expected = gaussian_log_density(z, zero, zero) + logdet
    assert model.image_shape == shape
    # float64; slogdet of a 16×16 well-conditioned Jacobian agrees with the layer sums to ~1e-12
    torch.testing.assert_close(model.log_prob(x), expected, rtol=0, atol=1e-8)
    x_back, _ = model.inverse(z)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)  # gains near 1 (noise 0.1)


def test_learned_prior_glow_starts_as_the_fixed_prior_glow():
    """Zero-initialised priors: at initialisation the learned-prior Glow is the fixed-prior
    Glow (same seeds, same other parameters), in log_prob, forward and sampling."""
    shape = (1, 8, 8)
    x = images(shape, 16, torch.Generator().manual_seed(4), torch.float32).flatten(1)
    models = []
    for learn in (True, False):
        torch.manual_seed(7)
        models.append(Glow(image_shape=shape, n_steps=2, hidden=8, learn_prior=learn,
                           generator=torch.Generator().manual_seed(7)))
    learned, fixed = models
    assert sum(p.numel() for p in learned.parameters()) > sum(
        p.numel() for p in fixed.parameters())
    # identical arithmetic apart from exact zero shifts and unit scales: bit-for-bit equal
    torch.testing.assert_close(learned.log_prob(x), fixed.log_prob(x), rtol=0, atol=0)
    z = torch.randn(4, 64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(learned.inverse(z)[0], fixed.inverse(z)[0], rtol=0, atol=0)


def test_learned_prior_moves_with_training():
    """The prior parameters receive gradients (they are not frozen at the standard normal)."""
    model = Glow(image_shape=(1, 8, 8), n_steps=1, hidden=8)
    x = images((1, 8, 8), 8, torch.Generator().manual_seed(0), torch.float32)
    (-model.log_prob(x).mean()).backward()
    split = next(m for m in model.modules() if isinstance(m, Split))
    top = next(m for m in model.modules() if isinstance(m, LearnedTopPrior))
    assert split.prior.bias.grad.abs().sum() > 0 and top.log_std.grad.abs().sum() > 0


def test_learned_prior_split_needs_an_image_shape():
    inner = Chain([ConvAffineCoupling((1, 4, 4), "checkerboard", hidden=4)])
    with pytest.raises(ValueError, match="needs image_shape"):
        Split(32, inner, learn_prior=True)
    with pytest.raises(ValueError, match="even channel count"):
        Split(48, Chain([ConvAffineCoupling((1, 4, 4), "checkerboard", hidden=4)]),
              (3, 4, 4), learn_prior=True)
