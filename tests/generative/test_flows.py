"""Flow layers and stacks: exact inverses, brute-force Jacobian log-determinants, clear errors.

Property-based over dimension, batch size and seed (hypothesis). Reference log|det J| comes from
``torch.autograd.functional.jacobian`` (exact derivatives, no finite differences) and
``torch.linalg.slogdet``, per example, in float64.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepnotes.generative.flows import (
    NICE,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Flow,
    Glow,
    Inverse,
    InvertibleConv1x1,
    LogitTransform,
    Permute,
    PlanarFlow,
    PlanarStack,
    RadialFlow,
    RadialStack,
    RealNVP,
    Reverse,
    Scaling,
    StandardLogistic,
)
from deepnotes.generative.flows.coupling import bounded_log_scale

torch.set_num_threads(1)

LAYERS = {
    "additive_parity": lambda d, g: AdditiveCoupling(d, "parity", hidden=16),
    "additive_half": lambda d, g: AdditiveCoupling(d, "half", hidden=16),
    "affine_tanh": lambda d, g: AffineCoupling(d, "parity", hidden=16, scale="tanh"),
    "affine_sigmoid": lambda d, g: AffineCoupling(d, "half", hidden=16, scale="sigmoid"),
    "affine_inv_sigmoid": lambda d, g: AffineCoupling(d, "half", hidden=16, scale="inv_sigmoid"),
    "affine_exp": lambda d, g: AffineCoupling(d, "parity", hidden=16, scale="exp"),
    "scaling": lambda d, g: Scaling(d),
    "actnorm": lambda d, g: ActNorm(d),
    "conv1x1_plain": lambda d, g: InvertibleConv1x1(d, lu=False, generator=g),
    "conv1x1_lu": lambda d, g: InvertibleConv1x1(d, lu=True, generator=g),
    "planar": lambda d, g: PlanarFlow(d, generator=g),
    "radial": lambda d, g: RadialFlow(d, generator=g),
    "inverse_planar": lambda d, g: Inverse(PlanarFlow(d, generator=g)),
    "inverse_radial": lambda d, g: Inverse(RadialFlow(d, generator=g)),
    "reverse": lambda d, g: Reverse(d),
    "permute": lambda d, g: Permute(d, generator=g),
    "logit": lambda d, g: LogitTransform(d, alpha=0.05),
}
STACKS = {
    "nice": lambda d, g: NICE(d, n_couplings=4, hidden=16, n_hidden=2),
    "nice_normal_half": lambda d, g: NICE(d, 3, 16, 1, prior="normal", mask="half"),
    "realnvp": lambda d, g: RealNVP(d, n_couplings=4, hidden=16),
    "realnvp_actnorm_logit": lambda d, g: RealNVP(d, 3, 16, actnorm=True, logit_alpha=0.05),
    "glow_lu": lambda d, g: Glow(d, n_steps=3, hidden=16, generator=g),
    "glow_plain_tanh": lambda d, g: Glow(d, 2, 16, lu=False, scale="tanh", generator=g),
    "glow_inv_sigmoid": lambda d, g: Glow(d, 2, 16, scale="inv_sigmoid", generator=g),
    "planar_stack": lambda d, g: PlanarStack(d, n_layers=6, generator=g),
    "radial_stack": lambda d, g: RadialStack(d, n_layers=6, generator=g),
}
NEEDS_UNIT_INTERVAL = {"logit", "realnvp_actnorm_logit"}
BUILDERS = {**LAYERS, **STACKS}


def build(name: str, dim: int, seed: int, dtype=torch.float64, noise: float = 0.3):
    """A randomly perturbed instance (zero-initialised networks would make couplings trivial).

    ``noise`` is the std of the perturbation of every parameter (the plain 1x1 weight moves a
    sixth of that, so W stays well conditioned)."""
    torch.manual_seed(seed)  # nn.Linear initialises from the global generator
    g = torch.Generator().manual_seed(seed)
    model = BUILDERS[name](dim, g).to(dtype)
    data = inputs(name, 32, dim, g, dtype)
    with torch.no_grad():
        model(data)  # runs ActNorm's data-dependent initialisation, if any
        for pname, p in model.named_parameters():
            plain_w = pname.endswith("weight") and p.ndim == 2 and "net" not in pname
            scale = noise / 6 if plain_w else noise
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=dtype))
    return model


def inputs(name, batch, dim, g, dtype=torch.float64):
    if name in NEEDS_UNIT_INTERVAL:
        return (0.02 + 0.96 * torch.rand(batch, dim, generator=g)).to(dtype)
    return (1.5 * torch.randn(batch, dim, generator=g)).to(dtype)


def jacobians(f, x):
    """Full Jacobians ∂f/∂x per example by autograd, shape (B, D, D)."""
    return torch.stack([torch.autograd.functional.jacobian(lambda v: f(v[None])[0][0], xi)
                        for xi in x])


case = given(dim=st.integers(2, 6), batch=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))


@pytest.mark.parametrize("name", sorted(BUILDERS))
@settings(max_examples=15, deadline=None)
@case
def test_inverse_and_log_det_float64(name, dim, batch, seed):
    model = build(name, dim, seed)
    x = inputs(name, batch, dim, torch.Generator().manual_seed(seed + 1))
    z, log_det = model(x)
    assert z.shape == (batch, dim) and log_det.shape == (batch,)
    x_back, log_det_inv = model.inverse(z)
    jac, jac_inv = jacobians(model, x), jacobians(model.inverse, z)
    # autograd's Jacobian is exact; only round-off separates the two log-determinants
    torch.testing.assert_close(log_det, torch.linalg.slogdet(jac).logabsdet, rtol=0, atol=1e-8)
    # The inverse's Jacobian can be ill-conditioned (the perturbed couplings contract by up to
    # e^-17 per layer); the reference slogdet's round-off then grows with its condition number
    # (measured: 1.3e-8 at cond 2.7e9 for Glow with seed 100, about 5e-18 x cond).
    cond = torch.linalg.cond(jac_inv)
    err = (log_det_inv - torch.linalg.slogdet(jac_inv).logabsdet).abs()
    assert torch.all(err <= 1e-8 + 1e-17 * cond), (err, cond)
    torch.testing.assert_close(log_det_inv, -log_det, rtol=0, atol=1e-8)
    # Round-off of relative size ~1e-15 per layer in z, |z| large, is amplified by the inverse's
    # gain |∂x/∂z| (random perturbations can make a sigmoid coupling contract by e^-17, so the
    # gain reaches 1e7): the error bound scales with both; 1e-12 leaves ~100 ulp per layer.
    gain = torch.linalg.matrix_norm(jac_inv, ord=2)  # (B,)
    bound = 1e-12 * (1 + gain) * (1 + z.abs().amax(1))
    assert torch.all((x_back - x).abs().amax(1) <= bound), ((x_back - x).abs().amax(1), bound)


@pytest.mark.parametrize("name", sorted(STACKS))
def test_inverse_float32(name):
    # Perturbations of 0.1 keep every layer's gain within about e^{±1}, as in trained models (the
    # float64 test's 0.3 gives sigmoid couplings inverse gains 1/σ(a + 2) of 1e3 and more).
    model = build(name, 5, seed=3, dtype=torch.float32, noise=0.1)
    x = inputs(name, 64, 5, torch.Generator().manual_seed(4), torch.float32)
    z, log_det = model(x)
    x_back, log_det_inv = model.inverse(z)
    # float32 keeps 24 bits (eps 1.2e-7): each of up to ~20 layers adds a few ulp of relative
    # error to O(1)-sized values, amplified by per-layer gains of up to e^1: 1e-4 covers that
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-4)
    torch.testing.assert_close(log_det_inv, -log_det, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(STACKS))
def test_sample_log_prob_matches_log_prob(name):
    # moderate perturbations: with 0.3 the logit model's samples can sit so far out that
    # sigmoid rounds to exactly 0 or 1, outside the logit's open domain in floating point
    model = build(name, 4, seed=7, noise=0.1)
    x, log_q = model.sample(50, generator=torch.Generator().manual_seed(0), return_log_prob=True)
    assert x.shape == (50, 4) and x.dtype == torch.float64
    torch.testing.assert_close(model.log_prob(x), log_q, rtol=0, atol=1e-8)  # round-off only


@pytest.mark.parametrize("scale,sign", [("sigmoid", -1.0), ("inv_sigmoid", 1.0)])
def test_sigmoid_scales_contract_or_expand_towards_noise(scale, sign):
    """``sigmoid``: per-coordinate log-scale log σ(a + 2) <= 0 (contracts, data -> noise);
    ``inv_sigmoid``: its negative, >= 0 (expands); both log σ(2) in size at a = 0 (the
    zero-initialised start). Checked on the updated coordinates of a perturbed coupling."""
    layer = build(f"affine_{scale}", 6, seed=0)
    x = inputs("affine", 200, 6, torch.Generator().manual_seed(1))
    with torch.no_grad():
        s, t = layer._log_scale_shift(x)
        z, log_det = layer(x)
    updated = layer.mask == 0
    assert bool((sign * s[:, updated] > 0).all()) and bool((s[:, ~updated] == 0).all())
    # the same float64 expression as the layer's: equal up to summation order
    torch.testing.assert_close(z, x * torch.exp(s) + t, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_det, s.sum(1), rtol=0, atol=1e-12)
    a = torch.zeros(3, 2, dtype=torch.float64)
    expected = sign * math.log1p(math.exp(-2.0))  # ∓log σ(2) = ±log(1 + e^-2)
    torch.testing.assert_close(bounded_log_scale(a, scale), torch.full_like(a, expected),
                               rtol=0, atol=1e-15)


def test_actnorm_initialises_from_the_first_batch():
    x = 3.0 + 2.0 * torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    layer = ActNorm(3)
    z, _ = layer(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), rtol=0, atol=1e-5)  # float32 sums
    torch.testing.assert_close(z.std(0), torch.ones(3), rtol=0, atol=1e-5)
    before = layer.loc.clone()
    layer(x + 10.0)  # later calls do not re-initialise
    torch.testing.assert_close(layer.loc, before)


@pytest.mark.parametrize("prior,std", [("logistic", math.pi / math.sqrt(3)), ("normal", 1.0)])
def test_nice_scaling_initialisation_matches_the_prior_scale(prior, std):
    x = 0.01 + 0.3 * torch.rand(400, 6, generator=torch.Generator().manual_seed(0))
    model = NICE(6, n_couplings=2, hidden=8, prior=prior)
    model.initialize_scaling(x)
    z, _ = model(x)
    torch.testing.assert_close(z.std(0), torch.full((6,), std), rtol=1e-4, atol=0)  # float32


def test_lu_conv_matches_its_matrix_and_stays_invertible():
    layer = InvertibleConv1x1(5, lu=True, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        layer.log_s.add_(0.5)  # move off the rotation so the determinant is not 1
        w = layer.matrix
        assert float(torch.linalg.slogdet(w).logabsdet) == pytest.approx(
            float(layer.log_s.sum()), abs=1e-12)
    q = InvertibleConv1x1(5, lu=True, generator=torch.Generator().manual_seed(0)).matrix.detach()
    # the initial matrix is a rotation, up to its float32 construction (eps 1.2e-7, a few ulp)
    torch.testing.assert_close(q @ q.T, torch.eye(5), rtol=0, atol=1e-6)


def test_planar_constraint_holds_for_adversarial_u():
    layer = PlanarFlow(3).double()
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, 0.0, 0.0]))
        layer.u.copy_(torch.tensor([-10.0, 2.0, 0.0]))
    assert float((layer.w @ layer.u_hat()).detach()) > -1.0
    layer.constrain = False
    with pytest.raises(ValueError, match="not invertible"):
        layer(torch.zeros(2, 3, dtype=torch.float64))


def test_radial_constraint():
    layer = RadialFlow(2, constrain=False)
    with torch.no_grad():
        layer.beta_raw.fill_(-5.0)
    with pytest.raises(ValueError, match="not invertible"):
        layer(torch.zeros(2, 2))


def test_singular_plain_conv_is_reported():
    layer = InvertibleConv1x1(3)
    with torch.no_grad():
        layer.weight.zero_()
    with pytest.raises(ValueError, match="singular"):
        layer(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="singular"):
        layer.inverse(torch.zeros(2, 3))


@pytest.mark.parametrize("bad,error,match", [
    (torch.zeros(4, 3), ValueError, r"shape \(batch, 4\)"),
    (torch.zeros(4), ValueError, "shape"),
    (torch.full((2, 4), float("nan")), ValueError, "NaN"),
    (torch.full((2, 4), float("inf")), ValueError, "inf"),
    (torch.zeros(2, 4, dtype=torch.long), TypeError, "floating"),
    ([[0.0] * 4], TypeError, "torch.Tensor"),
])
def test_bad_inputs_are_named(bad, error, match):
    model = RealNVP(4, n_couplings=2, hidden=8)
    with pytest.raises(error, match=match):
        model.log_prob(bad)
    with pytest.raises(error, match=match):
        model.inverse(bad)


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="dim >= 2"):
        NICE(1)
    with pytest.raises(ValueError, match="share one dim"):
        Flow([Scaling(2), Scaling(3)])
    with pytest.raises(ValueError, match="base must be one of"):
        Flow([Scaling(2)], base="cauchy")
    with pytest.raises(ValueError, match="scale must be one of"):
        AffineCoupling(4, scale="softplus")
    with pytest.raises(ValueError, match="mask must keep"):
        AdditiveCoupling(2, torch.ones(2))
    with pytest.raises(ValueError, match="at least 2"):
        ActNorm(2)(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="squeezed logit"):
        LogitTransform(2)(torch.tensor([[0.5, 1.5]]))
    LogitTransform(2, alpha=0.05)(torch.tensor([[-0.05, 1.05]]))  # inside the wider domain


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_logit_with_logistic_prior_is_uniform_and_bits_per_dim_convention(alpha):
    # logit(s) of s ~ U(0, 1) is standard logistic, so this flow is uniform on the squeezed
    # interval: p(x) = (1 - 2α)^D on [0, 1]^D exactly, whatever x.
    dim = 5
    flow = Flow([LogitTransform(dim, alpha)], base="logistic").double()
    x = torch.rand(100, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = dim * math.log1p(-2 * alpha)
    torch.testing.assert_close(flow.log_prob(x), torch.full((100,), expected, dtype=x.dtype))
    # a uniform model of dequantised 17-level data scores log2(17) bits/dim (+ the squeeze's cost)
    bpd = flow.nll_bits_per_dim(x, n_levels=17)
    torch.testing.assert_close(bpd, torch.full_like(bpd, math.log2(17) - math.log2(1 - 2 * alpha)))
    torch.testing.assert_close(flow.nll_bits_per_dim(x), -flow.log_prob(x) / (dim * math.log(2)))


def test_logistic_base_is_the_standard_logistic():
    base = StandardLogistic(1).double()
    z = torch.linspace(-30, 30, 60001, dtype=torch.float64)[:, None]
    assert float(base.log_prob(z).exp().sum() * 1e-3) == pytest.approx(1.0, abs=1e-9)  # tails e^-30
    ref = torch.distributions.TransformedDistribution(
        torch.distributions.Uniform(0.0, 1.0), [torch.distributions.SigmoidTransform().inv])
    torch.testing.assert_close(base.log_prob(z[:5]), ref.log_prob(z[:5, 0].float()).double(),
                               rtol=1e-5, atol=0)  # the reference computes in float32
    s = base.sample(200_000, torch.Generator().manual_seed(0))
    # variance π²/3; the sample variance's standard error is ~0.02 at n = 2e5, 5 of them: 0.1
    assert float(s.var()) == pytest.approx(math.pi**2 / 3, abs=0.1)


def test_a_float64_batch_into_a_float32_flow_names_both_dtypes():
    from deepnotes.generative.flows.coupling import AffineCoupling

    layer = AffineCoupling(4, hidden=8)
    with pytest.raises(TypeError, match=r"input is torch.float64 .* parameters are torch.float32"):
        layer.forward(torch.zeros(2, 4, dtype=torch.float64))
