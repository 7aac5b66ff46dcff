"""Digits FID at the same CPU budget: a DCGAN-style GAN, WGAN-GP, VQGAN and the EDM diffusion model.

Each model trains on the digits train split on one torch thread until it has used ``budget_s``
seconds of process CPU time (``time.process_time``, so other jobs on a shared machine slow the
wall clock, not the budget), then draws 1000 images scored by the digits FID of the diffusion
topics (the cached feature classifier of ``deepnotes.experiments._diffusion_digits``).

- ``gan``: non-saturating loss, Adam 2e-4 (β₁ = 0.5), batches of 64, spectral normalisation in
  the discriminator (the variant that did not collapse in the gan post);
- ``wgan_gp``: λ = 10, five critic steps per generator step, Adam 1e-4 (0.5, 0.9);
- ``vqgan``: the vqgan topic's recipe (its full preset's sizes): an EMA codebook with dead-code
  restarts trained as a VQ-VAE, then the adversarial VQGAN fine-tune (patch discriminator,
  perceptual-style loss, adaptive weight), then the transformer prior over the 4×4 code grids,
  sampled and decoded. The budget is split 35 / 35 / 30 % between the three stages (a stage's
  unused time passes to the next), each stage's step count set from timed pilots of 20 and 40
  steps (their difference is the cost of a step; the pilots count against the budget). The
  perceptual network is a pretrained, cached digits classifier and is not charged to the budget
  (as LPIPS's VGG is not in the paper's);
- ``diffusion``: the class-conditional EDM U-Net of the edm topic (its training loop, with the
  number of steps set from a timed pilot of 20 steps to fill the budget), sampled by Heun with
  35 network evaluations and balanced labels. It is conditional and the GANs are not: the
  comparison is "what each family's recipe in this notebook gives per CPU-second".

The adversarial models train in chunks of 25 generator steps, checking the budget between chunks.
The FID of 1000 real test digits is the floor. Records ``fid``, ``steps``, ``cpu_s`` per model
and each FID's ratio to the diffusion model's, with the load average before and after.

    python benchmarks/gan.py [--quick]
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch

from deepnotes.core.bench import bench_main
from deepnotes.experiments import _diffusion_digits as H
from deepnotes.generative import gan, wgan
from deepnotes.nn.digits_models import ClassifierSpec, DigitsFID, digits

TOPICS = ("gan", "wasserstein-gan", "vqgan")
#: Shares of the CPU budget of the VQGAN's three stages (autoencoder, adversarial, prior).
VQGAN_SHARES = {"vqvae": 0.35, "vqgan": 0.35, "prior": 0.30}
PILOT = 20
N_FID = 1000
CHUNK = 25


def _quiet(iterable, *args, **kwargs):
    return iterable


def _adversarial(name: str, budget_s: float, seed: int) -> tuple[torch.nn.Module, dict]:
    x_train, _ = digits("train")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    generator = gan.DCGANGenerator(32, 16)
    if name == "gan":
        critic = gan.DCGANDiscriminator(16, spectral_norm=True)
        betas, lr, n_critic = (0.5, 0.999), 2e-4, 1
        objectives = gan.gan_objectives("non_saturating")
    else:
        critic = gan.DCGANDiscriminator(16)
        betas, lr, n_critic = (0.5, 0.9), 1e-4, 5
        objectives = wgan.wgan_objectives(10.0)
    g_opt = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    d_opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)

    def real():
        return x_train[torch.randint(0, len(x_train), (64,), generator=gen)]

    def noise():
        return torch.randn(64, 32, generator=gen)

    steps, t0 = 0, time.process_time()
    while time.process_time() - t0 < budget_s:
        gan.train_adversarial(generator, critic, real, noise, *objectives, g_opt, d_opt, CHUNK,
                              n_critic=n_critic)
        steps += CHUNK
    cpu = time.process_time() - t0
    generator.eval()
    with torch.no_grad():
        samples = generator(torch.randn(N_FID, 32, generator=gen))
    return samples, {"steps": steps, "cpu_s": cpu}


def _diffusion(budget_s: float, seed: int, out: str) -> tuple[torch.Tensor, dict]:
    t0 = time.process_time()
    H.train_denoiser(H.DenoiserSpec(n_steps=20, seed=seed), out, lambda *_: None, _quiet)
    per_step = (time.process_time() - t0) / 20
    n_steps = max(20, int(budget_s / per_step))
    t0 = time.process_time()
    model, _ = H.train_denoiser(H.DenoiserSpec(n_steps=n_steps, seed=seed), out,
                                lambda *_: None, _quiet)
    cpu = time.process_time() - t0
    labels = H.balanced_labels(N_FID)
    with torch.no_grad():
        samples = H.sample(H.conditional(model, labels), "heun", H.steps_for_nfe("heun", 35),
                           N_FID, seed)
    return samples, {"steps": n_steps, "cpu_s": cpu, "pilot_s_per_step": per_step}


def _vqgan(budget_s: float, seed: int, out: str) -> tuple[torch.Tensor, dict]:
    from deepnotes.experiments import vqgan as V

    base = V.PRESETS["full"]
    percep_net, _ = H.train_classifier(ClassifierSpec(n_steps=base.clf_steps, seed=1), 0.5, out,
                                       lambda *_: None, _quiet)
    x_train, _ = digits("train")
    run = SimpleNamespace(track=_quiet, rng=np.random.default_rng(seed), device="cpu",
                          log=lambda *_: None)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    def batches(step):
        return x_train[torch.randint(0, len(x_train), (base.batch,), generator=gen)]

    t_all = time.process_time()
    shares_left = dict(VQGAN_SHARES)

    def stage(name: str, train) -> tuple[object, int]:
        """Pilot ``train`` at PILOT and 2·PILOT steps (the difference is the marginal cost of a
        step, the rest is the stage's fixed cost), then train with the steps this stage's share
        of the budget still left allows (what an earlier stage left unused passes on)."""
        share = shares_left.pop(name) / (sum(shares_left.values()) + VQGAN_SHARES[name])
        stage_budget = share * (budget_s - (time.process_time() - t_all))
        t0 = time.process_time()
        train(PILOT)
        t1 = time.process_time()
        train(2 * PILOT)
        t2 = time.process_time()
        # noise on a loaded machine can make the difference tiny: never below half the average
        per_step = max((t2 - t1 - (t1 - t0)) / PILOT, 0.5 * (t2 - t1) / (2 * PILOT))
        fixed = max(t1 - t0 - PILOT * per_step, 0.0)
        left = stage_budget - (time.process_time() - t0) - fixed
        n_steps = max(PILOT, int(left / per_step))
        return train(n_steps), n_steps

    ae, n_ae = stage("vqvae", lambda n: V.train_usage(
        dataclasses.replace(base, usage_steps=n, n_usage_evals=1), "ema_restart", x_train,
        batches, run)[0])

    def adversarial(n):
        model = copy.deepcopy(ae)
        V.train_vqgan(dataclasses.replace(base, finetune_steps=n), model, percep_net, x_train,
                      gen, run)
        return model

    model, n_gan = stage("vqgan", adversarial)
    with torch.no_grad():
        codes = model.encode(x_train).flatten(1)
    grid_hw = tuple(model.encode(x_train[:1]).shape[1:])
    prior, n_prior = stage("prior", lambda n: V.train_prior(
        dataclasses.replace(base, prior_steps=n, n_prior_evals=1), codes, codes[:64], "vqgan",
        run)[0])
    cpu = time.process_time() - t_all
    with torch.no_grad():
        grids = prior.sample(N_FID, torch.Generator().manual_seed(seed)).view(-1, *grid_hw)
        samples = model.decode(grids).clamp(-1, 1)
    return samples, {"steps": {"vqvae": n_ae, "vqgan": n_gan, "prior": n_prior}, "cpu_s": cpu}


def run(quick: bool = False) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        budget = 15.0 if quick else 120.0
        load_before = os.getloadavg()
        net, meta = H.train_classifier(ClassifierSpec(n_steps=800), 0.5, None, lambda *_: None,
                                       _quiet)
        fid = DigitsFID(net)
        figures: dict = {"budget_cpu_s": budget, "n_fid": N_FID, "torch_threads": 1,
                         "fid_classifier_test_accuracy": meta["test_accuracy"],
                         "fid_test_split": fid.fid(digits("test")[0]), "models": {}}
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("gan", "wgan_gp", "vqgan", "diffusion"):
                if name == "diffusion":
                    samples, info = _diffusion(budget, 0, tmp)
                elif name == "vqgan":
                    samples, info = _vqgan(budget, 0, tmp)
                else:
                    samples, info = _adversarial(name, budget, 0)
                figures["models"][name] = {**info, "fid": fid.fid(samples)}
        base = figures["models"]["diffusion"]["fid"]
        figures["fid_over_diffusion"] = {k: v["fid"] / base for k, v in figures["models"].items()}
        figures["loadavg_before"] = load_before
        figures["loadavg_after"] = os.getloadavg()
        return figures
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    bench_main(__file__, run)
