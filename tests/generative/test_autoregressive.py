"""FVSBN, NADE and MADE: normalisation, the autoregressive property, sampling, training."""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from deepnotes.generative.autoregressive import FVSBN, MADE, NADE, made_masks

ORDERINGS_4 = [None, [3, 2, 1, 0], [2, 0, 3, 1]]


def all_configs(d: int) -> torch.Tensor:
    """Every binary vector of length d, shape (2^d, d), in lexicographic order."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))


def build(kind: str, d: int, ordering=None, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "fvsbn":
        model = FVSBN(d, ordering=ordering)
    elif kind == "nade":
        model = NADE(d, hidden=7, ordering=ordering)
    elif kind == "made":
        model = MADE(d, hidden_sizes=(16, 16), ordering=ordering, n_masks=3, mask_seed=seed)
    else:
        model = MADE(d, hidden_sizes=(16,), n_masks=4, order_agnostic=True, mask_seed=seed)
    # random, non-trivial parameters (default inits are close to uniform for some models)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0)
    return model.double()


KINDS = ["fvsbn", "nade", "made", "made_oa"]


# order-agnostic MADE draws its own orderings, so it is built without one
CASES_4 = [(k, o) for k in KINDS[:3] for o in ORDERINGS_4] + [("made_oa", None)]


@pytest.mark.parametrize(("kind", "ordering"), CASES_4)
@pytest.mark.parametrize("seed", [0, 1])
def test_probabilities_of_all_16_configurations_sum_to_one(kind, ordering, seed):
    model = build(kind, 4, ordering, seed)
    x = all_configs(4).double()
    with torch.no_grad():
        if isinstance(model, MADE):
            for i in range(model.n_masks):
                model.select_mask(i)
                total = model.log_prob(x).exp().sum()
                # float64 sum of 16 terms: rounding is ~1e-15
                assert float(total) == pytest.approx(1.0, abs=1e-12)
            total = model.log_prob_ensemble(x).exp().sum()
        else:
            total = model.log_prob(x).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)


def jacobian_of_logits(model, d: int, seed: int) -> torch.Tensor:
    x = torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda v: model.logits(v[None])[0], x)  # (D, D)


@pytest.mark.parametrize("kind", KINDS)
def test_jacobian_is_strictly_triangular_in_the_ordering(kind):
    d = 6
    ordering = [4, 1, 5, 0, 3, 2] if kind != "made_oa" else None
    model = build(kind, d, ordering, seed=3)
    n_masks = model.n_masks if isinstance(model, MADE) else 1
    for i in range(n_masks):
        if isinstance(model, MADE):
            model.select_mask(i)
        order = model.ordering
        jac = jacobian_of_logits(model, d, seed=i)[order][:, order]  # rows/cols in order
        upper = torch.triu(torch.ones(d, d, dtype=torch.bool))
        # exact zeros: masked weights contribute 0.0 * w, never a rounding residue
        assert bool((jac[upper] == 0).all()), f"mask {i}: output depends on itself or later"
        # the model is not trivially independent: the last pixel sees some earlier pixel
        assert bool((jac[-1, :-1] != 0).any())


def test_made_masks_connect_each_output_only_to_earlier_inputs():
    order = torch.tensor([2, 0, 3, 1, 4])
    masks = made_masks(order, (8, 8), torch.Generator().manual_seed(0))
    reach = masks[0]
    for m in masks[1:]:
        reach = (m @ reach).clamp(max=1)  # (D out, D in): 1 where some path exists
    rank = torch.argsort(order)
    allowed = (rank[None, :] < rank[:, None]).float()
    assert bool((reach <= allowed).all())
    assert masks[-1][order[0]].sum() == 0  # the first pixel in the ordering sees nothing


def test_made_order_agnostic_masks_use_distinct_orderings():
    model = MADE(8, (32,), n_masks=6, order_agnostic=True, mask_seed=1)
    distinct = {tuple(o.tolist()) for o in model.orderings}
    assert len(distinct) > 1
    fixed = MADE(8, (32,), n_masks=6, ordering=list(range(7, -1, -1)), mask_seed=1)
    assert all(o.tolist() == list(range(7, -1, -1)) for o in fixed.orderings)
    assert not torch.equal(fixed.mask_0[0], fixed.mask_0[1])  # connectivity re-sampled


@pytest.mark.parametrize("ordering", [None, [5, 3, 0, 4, 1, 2]])
def test_nade_fast_logits_equal_naive_recomputation(ordering):
    model = build("nade", 6, ordering, seed=2)
    x = torch.bernoulli(torch.full((10, 6), 0.5, dtype=torch.float64),
                        generator=torch.Generator().manual_seed(0))
    # both in float64; the cumulative sum reorders additions, so ~1e-15 relative differences
    torch.testing.assert_close(model.logits(x), model.naive_logits(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_ancestral_sampling_frequencies_match_exact_probabilities(kind):
    d, n = 3, 20000
    model = build(kind, d, [2, 0, 1] if kind != "made_oa" else None, seed=5)
    x = all_configs(d).double()
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        if kind == "made_oa":
            probs = model.log_prob_ensemble(x).exp().numpy()
            samples = model.sample_ensemble(n, generator=gen)
        else:
            probs = model.log_prob(x).exp().numpy()
            samples = model.sample(n, generator=gen)
    codes = (samples.long() * torch.tensor([4, 2, 1])).sum(1).numpy()  # lexicographic index
    counts = np.bincount(codes, minlength=2**d)
    # fixed seeds make this deterministic; a wrong sampler fails with p << 1e-6 at n = 20000
    assert chisquare(counts, probs * n).pvalue > 1e-3


def test_sampling_is_reproducible_with_a_generator():
    model = build("nade", 5, None, seed=0)
    a = model.sample(7, generator=torch.Generator().manual_seed(3))
    b = model.sample(7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (7, 5)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", KINDS)
def test_training_reduces_nll_on_a_tiny_set(kind):
    torch.manual_seed(0)
    d = 8
    data = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1],
                         [1, 0, 1, 0, 1, 0, 1, 0]] * 4, dtype=torch.float32)
    model = {"fvsbn": lambda: FVSBN(d), "nade": lambda: NADE(d, 16),
             "made": lambda: MADE(d, (32,)),
             "made_oa": lambda: MADE(d, (32,), n_masks=4, order_agnostic=True)}[kind]()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    @torch.no_grad()
    def nll():
        if isinstance(model, MADE):
            return -model.log_prob_ensemble(data).mean()
        return -model.log_prob(data).mean()

    before = float(nll())
    for step in range(150):
        if isinstance(model, MADE):
            model.select_mask(step % model.n_masks)
        loss = -model.log_prob(data).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(nll())
    # 3 equiprobable patterns: the best possible NLL is log 3 = 1.10 nats; start is ~ 8 log 2
    assert after < 0.5 * before and after < 2.0


@pytest.mark.parametrize("cls", [FVSBN, NADE, lambda d: MADE(d, (8,))])
def test_invalid_inputs_raise_clear_errors(cls):
    model = cls(4)
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(torch.tensor([[0.0, 1.0, float("nan"), 0.0]]))
    with pytest.raises(TypeError):
        model.log_prob(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="n must be"):
        model.sample(-1)


def test_invalid_construction_raises():
    with pytest.raises(ValueError, match="permutation"):
        FVSBN(3, ordering=[0, 0, 1])
    with pytest.raises(ValueError, match="permutation"):
        NADE(3, ordering=[0, 1])
    with pytest.raises(TypeError):
        NADE(3, ordering=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="dim"):
        FVSBN(0)
    with pytest.raises(ValueError, match="hidden"):
        NADE(3, hidden=0)
    with pytest.raises(ValueError, match="not both"):
        MADE(3, (4,), order_agnostic=True, ordering=[2, 1, 0])
    with pytest.raises(ValueError, match="mask index"):
        MADE(3, (4,), n_masks=2).select_mask(2)


def test_integer_and_bool_inputs_are_accepted():
    model = FVSBN(3)
    x = torch.tensor([[0, 1, 1], [1, 0, 0]])
    torch.testing.assert_close(model.log_prob(x), model.log_prob(x.float()))
    torch.testing.assert_close(model.log_prob(x.bool()), model.log_prob(x.float()))


def test_made_state_dict_round_trip_keeps_orderings_and_masks_consistent():
    model = build("made_oa", 5, None, seed=4)
    model.select_mask(3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = all_configs(5).double()
    expected = model.log_prob_ensemble(x)
    copy = build("made_oa", 5, None, seed=9)  # other parameters, other masks
    copy.select_mask(1)
    copy.load_state_dict(state)
    torch.testing.assert_close(copy.orderings, model.orderings, rtol=0, atol=0)
    torch.testing.assert_close(copy.log_prob_ensemble(x), expected, rtol=0, atol=0)
    for i in range(copy.n_masks):
        copy.select_mask(i)
        assert torch.equal(copy.ordering, model.orderings[i])


def test_made_direct_connection_keeps_the_autoregressive_property():
    torch.manual_seed(0)
    model = MADE(5, (12,), ordering=[3, 0, 4, 2, 1], direct=True).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0)
    order = model.ordering
    jac = jacobian_of_logits(model, 5, seed=0)[order][:, order]
    assert bool((jac[torch.triu(torch.ones(5, 5, dtype=torch.bool))] == 0).all())
    with torch.no_grad():
        total = model.log_prob(all_configs(5).double()).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)  # 32 float64 terms
