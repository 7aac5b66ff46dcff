"""Our flows beside normflows 1.7.3: the closest equivalent architectures, the same budget.

Pairs (ours vs normflows), each trained with Adam at the same constant learning rate, batch
size, number of steps and network widths, on the same batches, with gradient-norm clipping at
100 for both:

- toys (two moons, eight Gaussians; fresh exact samples each step), test NLL in nats on 5000
  held-out samples:
  - ``nice``: ``NICE(2, K, H, prior="normal")`` (additive couplings from random weights, diagonal
    scaling) vs K ``MaskedAffineFlow`` without s (additive) and an ``AffineConstFlow`` scaling
    (normflows has no logistic base, so both use the Gaussian);
  - ``realnvp``: ``RealNVP(2, K, H)`` (one MLP gives s and t, tanh-bounded scale) vs K
    ``MaskedAffineFlow`` with alternating masks and separate s and t MLPs of the same width
    (normflows' RealNVP recipe; unbounded exp scale);
  - ``glow``: ``Glow(2, K, H)`` (ActNorm, LU linear map, coupling with sigmoid scale) vs K
    blocks of ``AffineCouplingBlock`` (sigmoid scale) + ``LULinearPermute`` + ``ActNorm``;
- variational inference on the energy U2 (Rezende & Mohamed 2015), K planar layers from a fixed
  standard normal: ``vi_flow`` + ``reverse_kl`` vs ``Planar`` + ``NormalizingFlow.reverse_kld``;
  reported as KL(q || p) = F + log Z in nats (log Z by quadrature, 20000 samples);
- digits (fixed split of ``deepnotes.data``, uniform dequantisation, logit transform with
  α = 0.05 in both), test bits/dim (Eq. 15 of the post ``normalizing-flows``):
  - ``realnvp_vector``: ``RealNVP(64, ...)`` vs ``MaskedAffineFlow`` + ``Logit``;
  - ``glow_image``: ``Glow(image_shape=(1, 8, 8), n_levels=2)`` (sigmoid scale, contracting
    towards noise in both: ours ``x σ(a + 2) + t``, normflows' ``(x - t) σ(a + 2)``; both
    factor out the half the last coupling updated) with the paper's learned priors
    (a Gaussian for the factored-out half conditioned on the kept half, a per-channel Gaussian at
    the top) vs normflows' ``MultiscaleFlow`` of ``GlowBlock`` with its Glow example's learned
    per-channel bases (``GlowBase``; normflows has no conditional split prior);
  - ``glow_image_fixed_prior``: the same two models with every base the fixed standard normal
    (``learn_prior=False`` vs ``DiagGaussian(trainable=False)``).

Equal size: every row records both parameter counts. Where the architectures differ in size
(RealNVP's separate s and t networks in normflows against our single network that outputs both;
Glow's toy MLP), *our* coupling width is set to the one whose parameter count is closest to
normflows' at the stated width (``ours_hidden`` beside ``normflows_hidden``); normflows keeps its
own recipe.

Seeds: each row is trained from several seeds (initialisation and training batches; the test
set is fixed), and the JSON gives the per-seed test figures, their mean and sample sd for both
sides, and the verdict ``ours_no_worse``: mean_ours <= mean_normflows + sqrt(sd_ours² / n +
sd_normflows² / n) (lower is better for every metric here; with one seed it is a plain
comparison of the two values).

Steps of the two contenders alternate (one of ours, one of theirs, on the same batch), so load
changes on a shared machine hit both alike; ms/step is the median over all seeds' steps after
the first five of each seed. Nothing is JIT-compiled (plain PyTorch), so there is no compile
time to separate. Torch runs on one thread.

    python benchmarks/flows.py [--quick]

``FLOWS_ONLY=digits/glow_image,...`` (row names, comma-separated) runs only those rows; write
such partial runs elsewhere with ``--out DIR``.
"""

from __future__ import annotations

import math
import os
import time

import normflows as nf
import numpy as np
import torch

from deepnotes.core.bench import bench_main
from deepnotes.data import N_LEVELS, get_toy, load_digits
from deepnotes.generative.flows import (
    NICE,
    Glow,
    RealNVP,
    log_normaliser,
    potential,
    reverse_kl,
    vi_flow,
)

#: The topics whose posts quote this benchmark (`deepnotes bench SLUG` finds it).
TOPICS = ("nice", "normalizing-flows")

THREADS = 1
ALPHA = 0.05
RULE = ("ours_no_worse: mean_ours <= mean_normflows + sqrt(sd_ours^2/n_ours + "
        "sd_normflows^2/n_normflows) (sample sd, ddof=1; lower is better; with one seed: "
        "ours <= normflows)")
MATCHING = ("where parameter counts differ, our coupling width (ours_hidden) is the one whose "
            "count is closest to normflows' at normflows_hidden; normflows keeps its recipe "
            "(separate s and t MLPs in RealNVP)")


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _matched_hidden(make, target: int, start: int) -> int:
    """The width ``h`` whose ``_n_params(make(h))`` is nearest ``target`` (counts grow with h)."""
    if _n_params(make(start)) == target:
        return start
    lo, hi = 1, 2 * start
    while _n_params(make(hi)) < target:
        hi *= 2
    while hi - lo > 1:  # invariant: count(lo) < target <= count(hi), or lo == 1
        mid = (lo + hi) // 2
        if _n_params(make(mid)) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda h: abs(_n_params(make(h)) - target))


def _race(contenders: dict, batches, steps: int, lr: float) -> dict[str, list[float]]:
    """Train every contender ``loss(x)`` on the same batches, steps interleaved; ms per step."""
    opts = {n: torch.optim.Adam(m.parameters(), lr=lr) for n, (m, _) in contenders.items()}
    times: dict[str, list[float]] = {n: [] for n in contenders}
    for step in range(steps):
        x = batches(step)
        for name, (module, loss_fn) in contenders.items():
            t0 = time.perf_counter()
            loss = loss_fn(x)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 100.0)
            opts[name].step()
            times[name].append(1e3 * (time.perf_counter() - t0))
    skip = min(5, steps - 1)
    return {n: t[skip:] for n, t in times.items()}


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def _summary(key: str, seeds: list[int], metric: dict, ms: dict, ours, theirs,
             hidden: dict, **extra) -> dict:
    """One row: per-seed values, mean ± sd, the verdict, pooled ms/step, sizes."""
    row: dict = {"seeds": list(seeds)}
    stats = {}
    for side in ("ours", "normflows"):
        mean, sd = _mean_sd(metric[side])
        stats[side] = (mean, sd, len(metric[side]))
        row[f"{side}_{key}_mean"] = mean
        row[f"{side}_{key}_sd"] = sd
        row[f"{side}_{key}_per_seed"] = list(metric[side])
    (m_o, sd_o, n_o), (m_p, sd_p, n_p) = stats["ours"], stats["normflows"]
    se = 0.0 if sd_o is None or sd_p is None else math.sqrt(sd_o ** 2 / n_o + sd_p ** 2 / n_p)
    med = {side: float(np.median(np.concatenate(ms[side]))) for side in ms}
    row.update({
        "combined_se": se, "ours_minus_normflows": m_o - m_p, "ours_no_worse": m_o <= m_p + se,
        "ours_ms_per_step": med["ours"], "normflows_ms_per_step": med["normflows"],
        "ours_ms_per_step_per_seed": [float(np.median(t)) for t in ms["ours"]],
        "normflows_ms_per_step_per_seed": [float(np.median(t)) for t in ms["normflows"]],
        "time_ratio_ours_over_normflows": med["ours"] / med["normflows"],
        "time_ok": med["ours"] <= med["normflows"],
        "ours_params": _n_params(ours), "normflows_params": _n_params(theirs),
        "ours_hidden": hidden["ours"], "normflows_hidden": hidden["normflows"], **extra})
    return row


def _nll(log_prob):
    return lambda x: -log_prob(x).mean()


# ---- 2-D toys -----------------------------------------------------------------------------

def _nf_realnvp_2d(k: int, hidden: int):
    b = torch.tensor([1.0, 0.0])
    flows = []
    for i in range(k):
        s = nf.nets.MLP([2, hidden, hidden, 2], init_zeros=True)
        t = nf.nets.MLP([2, hidden, hidden, 2], init_zeros=True)
        flows.append(nf.flows.MaskedAffineFlow(b if i % 2 == 0 else 1 - b, t, s))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)


def _nf_nice_2d(k: int, hidden: int):
    """Additive couplings (``MaskedAffineFlow`` without s) and a diagonal scaling (NICE)."""
    b = torch.tensor([1.0, 0.0])
    flows = [nf.flows.AffineConstFlow((2,), scale=True, shift=False)]  # last towards noise
    for i in range(k):
        t = nf.nets.MLP([2, hidden, hidden, 2])
        flows.append(nf.flows.MaskedAffineFlow(b if i % 2 == 0 else 1 - b, t, None))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)


def _nf_glow_2d(k: int, hidden: int):
    flows = []
    for _ in range(k):
        net = nf.nets.MLP([1, hidden, hidden, 2], init_zeros=True)
        flows += [nf.flows.AffineCouplingBlock(net, scale=True, scale_map="sigmoid",
                                               split_mode="channel"),
                  nf.flows.LULinearPermute(2), nf.flows.ActNorm(2)]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)


def _toy_makers(arch: str, k: int):
    if arch == "nice":
        return (lambda h: NICE(2, k, h, n_hidden=2, prior="normal")), \
            (lambda h: _nf_nice_2d(k, h))
    if arch == "realnvp":
        return (lambda h: RealNVP(2, k, h)), (lambda h: _nf_realnvp_2d(k, h))
    return (lambda h: Glow(2, k, h)), (lambda h: _nf_glow_2d(k, h))


def _toys(cfg: dict, only=None) -> dict:
    out = {}
    k, h = cfg["toy_depth"], cfg["toy_hidden"]
    for t_i, toy_name in enumerate(cfg["toys"]):
        toy = get_toy(toy_name)
        x_test = torch.from_numpy(toy.sample(5000, np.random.default_rng(10 + t_i))).float()
        true_nll = -float(np.mean(toy.log_prob(x_test.double().numpy())))
        for arch in ("nice", "realnvp", "glow"):
            if only is not None and f"{toy_name}/{arch}" not in only:
                continue
            make_ours, make_theirs = _toy_makers(arch, k)
            h_ours = _matched_hidden(make_ours, _n_params(make_theirs(h)), h)
            nll: dict = {"ours": [], "normflows": []}
            ms: dict = {"ours": [], "normflows": []}
            for seed in cfg["seeds"]:
                torch.manual_seed(seed)
                rng = np.random.default_rng(1000 + seed)
                ours, theirs = make_ours(h_ours), make_theirs(h)
                times = _race({"ours": (ours, _nll(ours.log_prob)),
                               "normflows": (theirs, _nll(theirs.log_prob))},
                              lambda _s, toy=toy, rng=rng: torch.from_numpy(
                                  toy.sample(cfg["toy_batch"], rng)).float(),
                              cfg["toy_steps"], cfg["toy_lr"])
                with torch.no_grad():
                    nll["ours"].append(-float(ours.log_prob(x_test).mean()))
                    nll["normflows"].append(-float(theirs.log_prob(x_test).mean()))
                for side in ms:
                    ms[side].append(times[side])
            out[f"{toy_name}/{arch}"] = _summary(
                "test_nll_nats", cfg["seeds"], nll, ms, ours, theirs,
                {"ours": h_ours, "normflows": h}, true_nll_nats=true_nll)
    return out


# ---- variational inference -----------------------------------------------------------------

class _Target(torch.nn.Module):
    """An unnormalised target for normflows: ``log_prob = -U``."""

    def __init__(self, energy):
        super().__init__()
        self.energy = energy

    def log_prob(self, z):
        return -self.energy(z)


def _vi(cfg: dict) -> dict:
    energy = potential("U2")
    log_z = log_normaliser(energy, n=cfg["quad_n"])
    k = cfg["vi_layers"]
    n, anneal = cfg["vi_batch"], cfg["vi_anneal"]

    def beta(step):
        return min(1.0, 0.1 + 0.9 * step / anneal)

    kl: dict = {"ours": [], "normflows": []}
    ms: dict = {"ours": [], "normflows": []}
    for seed in cfg["seeds"]:
        torch.manual_seed(seed)
        ours = vi_flow(k, "planar", generator=torch.Generator().manual_seed(seed))
        theirs = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False),
                                    [nf.flows.Planar((2,)) for _ in range(k)], _Target(energy))
        times = _race(
            {"ours": (ours, lambda s, m=ours: reverse_kl(m, energy, n, beta=beta(s))),
             "normflows": (theirs, lambda s, m=theirs: m.reverse_kld(n, beta=beta(s)))},
            lambda step: step, cfg["vi_steps"], cfg["vi_lr"])
        with torch.no_grad():
            kl["ours"].append(float(reverse_kl(ours, energy, 20_000)) + log_z)
            kl["normflows"].append(float(theirs.reverse_kld(20_000)) + log_z)
        for side in ms:
            ms[side].append(times[side])
    return {"U2/planar": _summary("kl_nats", cfg["seeds"], kl, ms, ours, theirs,
                                  {"ours": None, "normflows": None}, layers=k,
                                  neg_log_z_nats=-log_z)}


# ---- digits --------------------------------------------------------------------------------

def _nf_realnvp_vector(k: int, hidden: int):
    b = (torch.arange(64) % 2 == 0).float()  # our "parity" mask: even indices kept first
    flows = []
    for i in range(k):
        s = nf.nets.MLP([64, hidden, hidden, 64], init_zeros=True)
        t = nf.nets.MLP([64, hidden, hidden, 64], init_zeros=True)
        flows.append(nf.flows.MaskedAffineFlow(b if i % 2 == 0 else 1 - b, t, s))
    flows.append(nf.transforms.Logit(ALPHA))  # sampling order: the logit's inverse is last
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(64, trainable=False), flows)


def _nf_glow_image(k: int, hidden: int, levels: int = 2, learn_prior: bool = False):
    """normflows' Glow example for (1, 8, 8) inputs: learned per-channel bases (``GlowBase``,
    unconditional) if ``learn_prior``, else fixed standard-normal bases."""
    c, hw = 1, 8
    q0, merges, flows = [], [], []
    for i in range(levels):
        blocks = [nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), hidden, split_mode="channel",
                                     scale=True) for _ in range(k)]
        flows.append(blocks + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            shape = (c * 2 ** (levels - i), hw // 2 ** (levels - i), hw // 2 ** (levels - i))
        else:
            shape = (c * 2 ** (levels + 1), hw // 2 ** levels, hw // 2 ** levels)
        q0.append(nf.distributions.GlowBase(shape) if learn_prior
                  else nf.distributions.DiagGaussian(shape, trainable=False))
    return nf.MultiscaleFlow(q0, flows, merges, transform=nf.transforms.Logit(ALPHA),
                             class_cond=False)


def _digit_makers(arch: str, cfg: dict):
    if arch == "realnvp_vector":
        k = cfg["vec_depth"]
        return (lambda h: RealNVP(64, k, h, logit_alpha=ALPHA)), \
            (lambda h: _nf_realnvp_vector(k, h)), cfg["vec_hidden"]
    k, learn = cfg["img_steps"], arch == "glow_image"
    return (lambda h: Glow(image_shape=(1, 8, 8), n_steps=k, hidden=h, logit_alpha=ALPHA,
                           learn_prior=learn)), \
        (lambda h: _nf_glow_image(k, h, learn_prior=learn)), cfg["img_hidden"]


DIGIT_ROWS = ("realnvp_vector", "glow_image", "glow_image_fixed_prior")


def _digits(cfg: dict, only=None) -> dict:
    k_train = np.rint(load_digits("train", "float", flatten=True)[0] * (N_LEVELS - 1))
    k_test = np.rint(load_digits("test", "float", flatten=True)[0] * (N_LEVELS - 1))

    def dequantise(k, rng):
        x = (k + rng.random(k.shape)) / N_LEVELS
        return torch.from_numpy(np.minimum(x, np.nextafter(1.0, 0.0))).float()

    test_rng = np.random.default_rng(20)  # the same test noise for every model and seed
    x_test = [dequantise(k_test, test_rng) for _ in range(2)]

    def bits_per_dim(log_p):
        return -float((log_p.double() - 64 * math.log(N_LEVELS)).mean()) / (64 * math.log(2))

    out = {}
    for arch in DIGIT_ROWS:
        if only is not None and f"digits/{arch}" not in only:
            continue
        make_ours, make_theirs, h = _digit_makers(arch, cfg)
        h_ours = _matched_hidden(make_ours, _n_params(make_theirs(h)), h)
        bpd: dict = {"ours": [], "normflows": []}
        ms: dict = {"ours": [], "normflows": []}
        for seed in cfg["digits_seeds"]:
            torch.manual_seed(seed)
            rng = np.random.default_rng(1000 + seed)
            ours, theirs = make_ours(h_ours), make_theirs(h)
            if arch == "realnvp_vector":
                def their_lp(x, theirs=theirs):
                    return theirs.log_prob(x)
            else:
                def their_lp(x, theirs=theirs):
                    return theirs.log_prob(x.reshape(-1, 1, 8, 8), None)
            batch = cfg["digits_batch"]
            times = _race(
                {"ours": (ours, _nll(ours.log_prob)), "normflows": (theirs, _nll(their_lp))},
                lambda _s, b=batch, rng=rng: dequantise(
                    k_train[rng.integers(0, len(k_train), b)], rng),
                cfg["digits_steps"], cfg["digits_lr"])
            with torch.no_grad():
                bpd["ours"].append(float(np.mean([bits_per_dim(ours.log_prob(x))
                                                  for x in x_test])))
                bpd["normflows"].append(float(np.mean([bits_per_dim(their_lp(x))
                                                       for x in x_test])))
            for side in ms:
                ms[side].append(times[side])
        out[f"digits/{arch}"] = _summary("test_bits_per_dim", cfg["digits_seeds"], bpd, ms,
                                         ours, theirs, {"ours": h_ours, "normflows": h})
    return out


FULL = dict(seeds=(0, 1, 2), digits_seeds=(0, 1, 2), toys=("two-moons", "8-gaussians"),
            toy_depth=6, toy_hidden=64, toy_batch=256, toy_steps=1000, toy_lr=3e-3,
            vi_layers=16, vi_batch=128, vi_steps=1000, vi_anneal=400, vi_lr=2e-2, vec_depth=6,
            vec_hidden=256, img_steps=3, img_hidden=64, digits_batch=64, digits_steps=600,
            digits_lr=1e-3, quad_n=1400)
QUICK = dict(FULL, seeds=(0,), digits_seeds=(0,), toys=("two-moons",), toy_depth=2,
             toy_hidden=16, toy_steps=12, vi_layers=4, vi_steps=12, vi_anneal=6, vec_depth=2,
             vec_hidden=32, img_steps=1, img_hidden=8, digits_steps=8, quad_n=300)


def _verdicts(sections: dict) -> dict:
    rows = {name: row for sec in sections.values() for name, row in sec.items()}
    return {"nll_no_worse": [n for n, r in rows.items() if r["ours_no_worse"]],
            "nll_worse": [n for n, r in rows.items() if not r["ours_no_worse"]],
            "time_ok": [n for n, r in rows.items() if r["time_ok"]],
            "time_over": [n for n, r in rows.items() if not r["time_ok"]]}


def run(quick: bool = False, only=None) -> dict:
    """All rows, or only the row names in ``only`` (default: ``$FLOWS_ONLY``, comma-separated,
    e.g. ``digits/glow_image``)."""
    torch.set_num_threads(THREADS)
    cfg = QUICK if quick else FULL
    if only is None and os.environ.get("FLOWS_ONLY"):
        only = os.environ["FLOWS_ONLY"].split(",")
    only = None if only is None else {name.strip() for name in only}
    t0 = time.perf_counter()
    figures: dict = {
        "normflows_version": nf.__version__, "torch_threads": THREADS,
        "settings": {"no_worse_rule": RULE, "parameter_matching": MATCHING,
                     "time_target": "ours_ms_per_step <= normflows_ms_per_step (ratio <= 1.0)",
                     "seeds": ("toys and VI: seeds; digits: digits_seeds (fewer, slower rows); "
                               "a seed sets initialisation and training batches, test sets "
                               "are fixed")},
        "budget": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}
    if only is not None:
        figures["only"] = sorted(only)
    sections = {"toys": _toys(cfg, only),
                "vi": _vi(cfg) if only is None or "U2/planar" in only else {},
                "digits": _digits(cfg, only)}
    figures.update(sections)
    figures["summary"] = _verdicts(sections)
    figures["wall_s"] = time.perf_counter() - t0
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
