"""Digits diffusion: NFE each sampler needs to come within 5% of DDPM-1000's digits FID, and
sampler throughput side by side with diffusers' schedulers on the same trained denoiser.

The model is the edm topic's full-preset U-Net (trained once and cached under
``runs/_cache/diffusion-digits``; ``--quick`` trains a tiny one in a temporary folder). Targets
(issue 8): EDM Heun within 5% of DDPM-1000 at <= 35 NFE, DPM-Solver++(2M) at <= 20 NFE.

diffusers' schedulers drive an ε-prediction model at DDPM's integer timesteps; our σ-space
denoiser becomes one through ``σ = sqrt((1 − ᾱ_t)/ᾱ_t)``, ``x_σ = x_t sqrt(1 + σ²)`` and
``ε = (x_σ − D(x_σ; σ))/σ`` (the same table as our DDPM sampler), so both sides call the very
same network; every call is counted, so NFE are reported as measured, not assumed.

One FID estimate has a seed-to-seed spread comparable to the 5% band, so ``fid_seed_spread``
repeats the DDPM reference, and each sampler of ``SPREAD_NFE`` at its budgets, over the sampling
seeds ``SPREAD_SEEDS`` (the first is the seed of the curves above): FID mean and sample standard
deviation per budget, the per-seed ratio to the same seed's DDPM reference (mean ± sd), how many
seeds fall within 5%, and the NFE each seed needs (``nfe_to_within_5pct_per_seed``).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
from contextlib import nullcontext

import torch

from deepnotes.core.bench import time_call
from deepnotes.diffusion.schedules import append_zero
from deepnotes.experiments import _diffusion_digits as H
from deepnotes.experiments.edm import PRESETS

#: The topics whose posts quote this benchmark (`deepnotes bench SLUG` finds it).
TOPICS = ("edm", "diffusion-sde", "rectified-flow", "classifier-guidance")

TARGETS = {"heun": 35, "dpmpp_2m": 20}
#: Samples per FID. The edm post's 300 leave a seed-to-seed spread larger than the 5% band being
#: measured (DDPM at 70 NFE scored 22% *below* DDPM-1000 there); 1000 shrinks it about 1.8-fold.
N_FID = 1000
#: Sampling seeds and, per sampler, the budgets of the seed-spread check (bounded CPU cost: the
#: DDPM-1000 reference dominates it, one per extra seed). DPM-Solver++(2M) around its 10-NFE
#: claim; Heun at the two budgets either side of its first within-5% point.
SPREAD_SEEDS = (1000, 1001, 1002, 1003, 1004)
SPREAD_NFE = {"dpmpp_2m": (10, 15, 20), "heun": (19, 25)}


class Counted:
    """A denoiser that counts its evaluations (one per batch call)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.fn(x, sigma)


def _eps_model(denoiser):
    table = H._DDPM

    def eps(x_t: torch.Tensor, t) -> torch.Tensor:
        sigma = float(table.sigma_of_t(torch.tensor(float(t), dtype=torch.float64)))
        x = x_t * math.sqrt(1 + sigma ** 2)
        return (x - denoiser(x, x.new_full((x.shape[0],), sigma))) / sigma

    return eps


def _diffusers_sample(name: str, denoiser, n_steps: int, n: int, seed: int) -> torch.Tensor:
    import diffusers

    common = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    sch = {
        "DDIMScheduler": lambda: diffusers.DDIMScheduler(**common, clip_sample=False,
                                                         set_alpha_to_one=True),
        # "leading" spacing keeps Euler/Heun on integer timesteps, where diffusers' σ (linear
        # interpolation in t) and ours (log-linear) agree exactly; with the default "linspace"
        # the ε-wrapper would read a slightly different σ than the scheduler steps with
        "EulerDiscreteScheduler": lambda: diffusers.EulerDiscreteScheduler(
            **common, timestep_spacing="leading"),
        "HeunDiscreteScheduler": lambda: diffusers.HeunDiscreteScheduler(
            **common, timestep_spacing="leading"),
        "DPMSolverMultistepScheduler": lambda: diffusers.DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2),
    }[name]()
    sch.set_timesteps(n_steps)
    if hasattr(sch, "sigmas") and name != "DPMSolverMultistepScheduler":
        # Euler/Heun step with their own σ table, interpolated in a way that need not match the
        # σ our ε-wrapper reads at the same timestep (Heun's "leading" table is off by a
        # timestep shift): hand them the σ of their integer timesteps, as tests/diffusion/
        # test_peers.py does (Heun's repeated timesteps give its interleaved table)
        sch.sigmas = append_zero(H._DDPM.sigma_of_t(sch.timesteps.double())).float()
    eps = _eps_model(denoiser)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=gen) * float(sch.init_noise_sigma)
    with torch.no_grad():
        for t in sch.timesteps:
            inp = sch.scale_model_input(x, t)
            x = sch.step(eps(inp, t), t, x).prev_sample
    return x


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def _seed_spread(scorer, den, n_fid, ref_steps, ref_fid, curves, seeds, budgets, log) -> dict:
    """FID of the DDPM reference and of each sampler of ``budgets`` (name -> NFE budgets) over
    sampling ``seeds`` (the first seed's values are those of the main ``curves``, reused when
    present)."""
    ref = {seeds[0]: ref_fid}
    fids: dict = {name: {b: {} for b in bs} for name, bs in budgets.items()}
    for seed in seeds:
        if seed not in ref:
            ref[seed] = scorer.fid(H.sample(den, "ddpm", ref_steps, n_fid, seed))
        for name, bs in budgets.items():
            known = {c["nfe"]: c["fid"] for c in curves[name]}
            for b in bs:
                n_steps = H.steps_for_nfe(name, b)
                if seed == seeds[0] and H.nfe_of(name, n_steps) in known:
                    fids[name][b][seed] = known[H.nfe_of(name, n_steps)]
                else:
                    fids[name][b][seed] = scorer.fid(H.sample(den, name, n_steps, n_fid, seed))
        log(f"seed {seed}: DDPM-{ref_steps} {ref[seed]:.3f}; " + "; ".join(
            f"{name} " + ", ".join(f"{b} NFE {fids[name][b][seed]:.3f}" for b in bs)
            for name, bs in budgets.items()))
    out = {"seeds": list(seeds), "n_fid": n_fid, "budgets": {k: list(v) for k, v in
                                                              budgets.items()},
           "ddpm_reference_fid": _mean_sd([ref[s] for s in seeds]),
           "nfe_to_within_5pct_per_seed": {}}
    for name, bs in budgets.items():
        per_seed_nfe = {}
        for seed in seeds:
            within = [b for b in bs if fids[name][b][seed] <= 1.05 * ref[seed]]
            per_seed_nfe[str(seed)] = min(within) if within else None
        out["nfe_to_within_5pct_per_seed"][name] = per_seed_nfe
        out[name] = {}
        for b in bs:
            ratios = [fids[name][b][s] / ref[s] for s in seeds]
            out[name][str(b)] = {
                "fid": _mean_sd([fids[name][b][s] for s in seeds]),
                "ratio_to_same_seed_reference": _mean_sd(ratios),
                "n_seeds_within_5pct": sum(r <= 1.05 for r in ratios),
                "n_seeds": len(seeds)}
    return out


PEERS = {"DDIMScheduler": "ddim", "EulerDiscreteScheduler": "euler",
         "HeunDiscreteScheduler": "heun", "DPMSolverMultistepScheduler": "dpmpp_2m"}


def run(quick: bool = False) -> dict:
    # --quick trains a throwaway tiny model; the full run reuses (or fills) the runs/ cache
    ctx = tempfile.TemporaryDirectory(prefix="dn-bench-diffusion-") if quick else nullcontext()
    with ctx as out:
        return _run(quick, out)


def _run(quick: bool, out: str | None) -> dict:
    torch.manual_seed(0)
    load_start = os.getloadavg()
    config = PRESETS["smoke" if quick else "full"]
    grid = (5, 10, 20) if quick else (5, 10, 15, 20, 25, 35, 50, 70, 100)
    ref_steps = 50 if quick else 1000
    n_fid = 40 if quick else N_FID
    n_tp, tp_steps = (16, 5) if quick else (256, 20)

    def log(msg):
        print(msg, flush=True)

    with H.one_thread():
        model, meta = H.train_denoiser(config.spec, out, log, lambda it, d: it)
        fnet, _ = H.train_classifier(config.clf_spec, model.sigma_data, out, log,
                                     lambda it, d: it)
        scorer = H.DigitsFID(fnet)
        labels = H.balanced_labels(n_fid)
        den = H.conditional(model, labels)
        seed = 1000
        ref_fid = scorer.fid(H.sample(den, "ddpm", ref_steps, n_fid, seed))
        log(f"DDPM-{ref_steps}: FID {ref_fid:.3f}")

        nfe_to_5pct, curves = {}, {}
        for name in H.SAMPLERS:
            curves[name] = []
            nfe_to_5pct[name] = None
            for budget in grid:
                n_steps = H.steps_for_nfe(name, budget)
                counted = Counted(den)
                fid = scorer.fid(H.sample(counted, name, n_steps, n_fid, seed))
                curves[name].append({"nfe": counted.calls, "fid": fid})
                if fid <= 1.05 * ref_fid:
                    nfe_to_5pct[name] = counted.calls
                    break
            log(f"{name}: NFE to 5% = {nfe_to_5pct[name]}")

        spread = _seed_spread(scorer, den, n_fid, ref_steps, ref_fid, curves,
                              seeds=SPREAD_SEEDS[:2] if quick else SPREAD_SEEDS,
                              budgets={"dpmpp_2m": (5, 10), "heun": (5,)} if quick
                              else SPREAD_NFE, log=log)

        throughput = {}
        tp_labels = H.balanced_labels(n_tp)
        tp_den = H.conditional(model, tp_labels)
        repeat = 1 if quick else 5
        for peer, ours in PEERS.items():
            sides = {"ours": lambda c, o=ours: H.sample(c, o, tp_steps, n_tp, seed),
                     "peer": lambda c, p=peer: _diffusers_sample(p, c, tp_steps, n_tp, seed)}
            runs, times = {}, {side: [] for side in sides}
            for side, fn in sides.items():
                counted = Counted(tp_den)
                x = fn(counted)  # untimed warm-up (imports, allocator), also counts the NFE
                runs[side] = (x, counted.calls)
            # interleaved rounds, alternating which side goes first, so that a change in the
            # shared machine's load hits both sides alike
            for r in range(repeat):
                for side in (("ours", "peer") if r % 2 == 0 else ("peer", "ours")):
                    fn = sides[side]
                    times[side].append(time_call(lambda f=fn: f(tp_den), repeat=1,
                                                 warmup=0)["best_s"])
            throughput[ours] = {"peer": f"diffusers.{peer}", "steps": tp_steps, "batch": n_tp,
                                "interleaved_rounds": repeat}
            for side, (x, nfe) in runs.items():
                throughput[ours].update({
                    f"{side}_nfe": nfe, f"{side}_images_per_s": n_tp / min(times[side]),
                    f"{side}_median_images_per_s": n_tp / statistics.median(times[side]),
                    f"{side}_fid": scorer.fid(x)})
            throughput[ours]["ours_over_peer_best"] = (throughput[ours]["ours_images_per_s"]
                                                      / throughput[ours]["peer_images_per_s"])
            throughput[ours]["ours_over_peer_median"] = (
                throughput[ours]["ours_median_images_per_s"]
                / throughput[ours]["peer_median_images_per_s"])
            log(f"{ours} vs {peer}: {throughput[ours]}")

    targets = {f"{k}_le_{v}_nfe": (nfe_to_5pct[k] is not None and nfe_to_5pct[k] <= v)
               for k, v in TARGETS.items()}
    return {
        "model": {"spec": str(config.spec), "sigma_data": meta["sigma_data"],
                  "params": sum(p.numel() for p in model.parameters())},
        "n_fid": n_fid, "ddpm_reference_steps": ref_steps, "ddpm_reference_fid": ref_fid,
        "nfe_grid": list(grid), "nfe_to_within_5pct": nfe_to_5pct, "targets_met": targets,
        "fid_curves": curves, "fid_seed_spread": spread, "throughput": throughput,
        "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
        "note": "one torch thread; throughput: best (and median) of interleaved rounds, ours "
                "and diffusers' alternating, after a warm-up; on a shared machine",
    }


if __name__ == "__main__":
    from deepnotes.core.bench import bench_main

    bench_main(__file__, run)
