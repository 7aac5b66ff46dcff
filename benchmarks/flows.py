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
  - ``glow_image``: ``Glow(image_shape=(1, 8, 8), n_levels=2)`` vs normflows'
    ``MultiscaleFlow`` of ``GlowBlock`` (its Glow example, 2 levels, fixed Gaussian bases).

Steps of the two contenders alternate (one of ours, one of theirs, on the same batch), so load
changes on a shared machine hit both alike; ms/step is the median over the steps after the
first five. Nothing is JIT-compiled (plain PyTorch), so there is no compile time to separate.

    python benchmarks/flows.py [--quick]
"""

from __future__ import annotations

import math
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

THREADS = 1
ALPHA = 0.05


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _race(contenders: dict, batches, steps: int, lr: float) -> dict[str, float]:
    """Train every contender ``loss(x)`` on the same batches, steps interleaved; ms/step."""
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
            times[name].append(time.perf_counter() - t0)
    skip = min(5, steps - 1)
    return {n: 1e3 * float(np.median(t[skip:])) for n, t in times.items()}


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


def _toy_pair(arch: str, k: int, h: int):
    if arch == "nice":
        return NICE(2, k, h, n_hidden=2, prior="normal"), _nf_nice_2d(k, h)
    if arch == "realnvp":
        return RealNVP(2, k, h), _nf_realnvp_2d(k, h)
    return Glow(2, k, h), _nf_glow_2d(k, h)


def _toys(cfg: dict, rng: np.random.Generator) -> dict:
    out = {}
    for toy_name in cfg["toys"]:
        toy = get_toy(toy_name)
        x_test = torch.from_numpy(toy.sample(5000, rng)).float()
        true_nll = -float(np.mean(toy.log_prob(x_test.double().numpy())))
        for arch in ("nice", "realnvp", "glow"):
            torch.manual_seed(0)
            k, h = cfg["toy_depth"], cfg["toy_hidden"]
            ours, theirs = _toy_pair(arch, k, h)
            ms = _race({"ours": (ours, _nll(ours.log_prob)),
                        "normflows": (theirs, _nll(theirs.log_prob))},
                       lambda _s, toy=toy: torch.from_numpy(
                           toy.sample(cfg["toy_batch"], rng)).float(),
                       cfg["toy_steps"], cfg["toy_lr"])
            with torch.no_grad():
                nll = {"ours": -float(ours.log_prob(x_test).mean()),
                       "normflows": -float(theirs.log_prob(x_test).mean())}
            out[f"{toy_name}/{arch}"] = _pair(nll, ms, ours, theirs, "test_nll_nats",
                                              true_nll_nats=true_nll)
    return out


def _nll(log_prob):
    return lambda x: -log_prob(x).mean()


def _pair(metric: dict, ms: dict, ours, theirs, key: str, **extra) -> dict:
    return {f"ours_{key}": metric["ours"], f"normflows_{key}": metric["normflows"],
            "ours_ms_per_step": ms["ours"], "normflows_ms_per_step": ms["normflows"],
            "time_ratio_ours_over_normflows": ms["ours"] / ms["normflows"],
            "ours_params": _n_params(ours), "normflows_params": _n_params(theirs), **extra}


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
    torch.manual_seed(0)
    k = cfg["vi_layers"]
    ours = vi_flow(k, "planar", generator=torch.Generator().manual_seed(0))
    theirs = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False),
                                [nf.flows.Planar((2,)) for _ in range(k)], _Target(energy))
    n, anneal = cfg["vi_batch"], cfg["vi_anneal"]

    def beta(step):
        return min(1.0, 0.1 + 0.9 * step / anneal)

    ms = _race({"ours": (ours, lambda s: reverse_kl(ours, energy, n, beta=beta(s))),
                "normflows": (theirs, lambda s: theirs.reverse_kld(n, beta=beta(s)))},
               lambda step: step, cfg["vi_steps"], cfg["vi_lr"])
    with torch.no_grad():
        kl = {"ours": float(reverse_kl(ours, energy, 20_000)) + log_z,
              "normflows": float(theirs.reverse_kld(20_000)) + log_z}
    return {"U2/planar": _pair(kl, ms, ours, theirs, "kl_nats", layers=k,
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


def _nf_glow_image(k: int, hidden: int, levels: int = 2):
    """normflows' Glow example for (1, 8, 8) inputs, with fixed standard-normal bases."""
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
        q0.append(nf.distributions.DiagGaussian(shape, trainable=False))
    return nf.MultiscaleFlow(q0, flows, merges, transform=nf.transforms.Logit(ALPHA),
                             class_cond=False)


def _digits(cfg: dict, rng: np.random.Generator) -> dict:
    k_train = np.rint(load_digits("train", "float", flatten=True)[0] * (N_LEVELS - 1))
    k_test = np.rint(load_digits("test", "float", flatten=True)[0] * (N_LEVELS - 1))

    def dequantise(k):
        x = (k + rng.random(k.shape)) / N_LEVELS
        return torch.from_numpy(np.minimum(x, np.nextafter(1.0, 0.0))).float()

    x_test = [dequantise(k_test) for _ in range(2)]  # the same noise for both contenders

    def bits_per_dim(log_p):
        return -float((log_p.double() - 64 * math.log(N_LEVELS)).mean()) / (64 * math.log(2))

    out = {}
    for arch in ("realnvp_vector", "glow_image"):
        torch.manual_seed(0)
        if arch == "realnvp_vector":
            ours = RealNVP(64, cfg["vec_depth"], cfg["vec_hidden"], logit_alpha=ALPHA)
            theirs = _nf_realnvp_vector(cfg["vec_depth"], cfg["vec_hidden"])

            def their_lp(x, theirs=theirs):
                return theirs.log_prob(x)
        else:
            ours = Glow(image_shape=(1, 8, 8), n_steps=cfg["img_steps"],
                        hidden=cfg["img_hidden"], logit_alpha=ALPHA)
            theirs = _nf_glow_image(cfg["img_steps"], cfg["img_hidden"])

            def their_lp(x, theirs=theirs):
                return theirs.log_prob(x.reshape(-1, 1, 8, 8), None)
        batch = cfg["digits_batch"]
        ms = _race({"ours": (ours, _nll(ours.log_prob)), "normflows": (theirs, _nll(their_lp))},
                   lambda _s, b=batch: dequantise(k_train[rng.integers(0, len(k_train), b)]),
                   cfg["digits_steps"], cfg["digits_lr"])
        with torch.no_grad():
            bpd = {"ours": float(np.mean([bits_per_dim(ours.log_prob(x)) for x in x_test])),
                   "normflows": float(np.mean([bits_per_dim(their_lp(x)) for x in x_test]))}
        out[f"digits/{arch}"] = _pair(bpd, ms, ours, theirs, "test_bits_per_dim")
    return out


FULL = dict(toys=("two-moons", "8-gaussians"), toy_depth=6, toy_hidden=64, toy_batch=256,
            toy_steps=1000, toy_lr=3e-3, vi_layers=16, vi_batch=128, vi_steps=1000,
            vi_anneal=400, vi_lr=2e-2, vec_depth=6, vec_hidden=256, img_steps=3, img_hidden=64,
            digits_batch=64, digits_steps=600, digits_lr=1e-3, quad_n=1400)
QUICK = dict(FULL, toys=("two-moons",), toy_depth=2, toy_hidden=16, toy_steps=12, vi_layers=4,
             vi_steps=12, vi_anneal=6, vec_depth=2, vec_hidden=32, img_steps=1, img_hidden=8,
             digits_steps=8, quad_n=300)


def run(quick: bool = False) -> dict:
    torch.set_num_threads(THREADS)
    cfg = QUICK if quick else FULL
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    figures: dict = {"normflows_version": nf.__version__, "torch_threads": THREADS,
                     "budget": {k: list(v) if isinstance(v, tuple) else v
                                for k, v in cfg.items()}}
    figures["toys"] = _toys(cfg, rng)
    figures["vi"] = _vi(cfg)
    figures["digits"] = _digits(cfg, rng)
    figures["wall_s"] = time.perf_counter() - t0
    return figures


if __name__ == "__main__":
    bench_main(__file__, run)
