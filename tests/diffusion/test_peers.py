"""Same trajectories as diffusers' schedulers on the same model, timesteps and noise.

diffusers is a test dependency (the ``dev`` extra, installed by ``make test`` with torch pinned
by constraints.txt), so these tests always run. The model is the exact ε-prediction of the
Gaussian mixture under diffusers' own discrete VP chain (ᾱ table), wrapped for our samplers by
``as_denoiser(..., DiscreteVP(ᾱ), "eps")``. diffusers keeps ᾱ and σ in float32; we hand both
sides the same float64 tables so that the comparison is at float64 rounding (1e-10) where
diffusers allows it (DDIM, Heun). Its Euler and DPM-Solver steps cast the sample to float32
inside ``step`` (diffusers 0.42), so those two are compared at float32 accuracy (1e-5 after 12
steps), and each test also checks that a *different* sampler misses the peer by far more than
that tolerance, so it still tells algorithms apart.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from deepnotes.diffusion import samplers as S
from deepnotes.diffusion.parameterizations import as_denoiser
from deepnotes.diffusion.processes import DiscreteVP
from deepnotes.diffusion.schedules import append_zero

B = 200
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _setup(gmm, scheduler, n_steps):
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    process = DiscreteVP(scheduler.alphas_cumprod)

    def eps_model(x_t, t):
        t = torch.as_tensor(t, dtype=torch.float64).expand(x_t.shape[0])
        return gmm.posterior_mean(x_t, process.alpha(t), process.sigma(t))[1]

    scheduler.set_timesteps(n_steps)
    return process, eps_model


def _run_diffusers(scheduler, eps_model, x, noise=None):
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "sigmas") else x
        kw = {} if noise is None else {"eta": 1.0, "variance_noise": next(noise)}
        x = scheduler.step(eps_model(x_in, float(t)), t, x, **kw).prev_sample
    return x


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers_ddim_scheduler(gmm, eta):
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                  clip_sample=False, set_alpha_to_one=True)
    process, eps_model = _setup(gmm, sch, 25)
    sch.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    x_t = torch.randn(B, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = None
    if eta > 0:
        gen = torch.Generator().manual_seed(1)
        noise = iter([torch.randn(B, 2, generator=gen, dtype=torch.float64)
                      for _ in sch.timesteps])
    theirs = _run_diffusers(sch, eps_model, x_t, noise)
    ts = sch.timesteps.double()
    sigmas = append_zero(process.sigma_of_t(ts))
    ours = S.sample_ddim(as_denoiser(eps_model, process, "eps"), x_t / process.alpha(ts[:1]),
                         sigmas, eta=eta, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_ode_samplers_match_diffusers(gmm, name):
    cls, ours_fn = {
        "euler": (diffusers.EulerDiscreteScheduler, S.sample_euler),
        "heun": (diffusers.HeunDiscreteScheduler, S.sample_heun),
        "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, S.sample_dpmpp_2m),
    }[name]
    kw = {"algorithm_type": "dpmsolver++", "solver_order": 2} if name == "dpmpp_2m" else \
        {"timestep_spacing": "leading"}
    sch = cls(num_train_timesteps=1000, beta_schedule="linear", **kw)
    process, eps_model = _setup(gmm, sch, 12)
    ts = sch.timesteps.double()
    if name == "heun":
        ts = torch.cat([ts[:1], ts[1::2]])  # diffusers interleaves each step's two timesteps
    sigmas = append_zero(process.sigma_of_t(ts))
    assert torch.equal(ts, ts.round())  # integer timesteps: both sides read the ᾱ table exactly
    sch.sigmas = (torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
                  if name == "heun" else sigmas)
    x_sigma = float(sigmas[0]) * torch.randn(B, 2, generator=torch.Generator().manual_seed(2),
                                             dtype=torch.float64)
    # Euler/Heun schedulers carry x in σ-space; DPM-Solver carries x_t = α x_σ
    start = x_sigma * process.alpha(ts[:1]) if name == "dpmpp_2m" else x_sigma
    theirs = _run_diffusers(sch, eps_model, start)
    D = as_denoiser(eps_model, process, "eps")
    ours = ours_fn(D, x_sigma, sigmas)
    tol = TOL if name == "heun" else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(ours, theirs, **tol)
    other = (S.sample_euler if name != "euler" else S.sample_heun)(D, x_sigma, sigmas)
    assert float((other - theirs).abs().max()) > 100 * tol["atol"]


def _ddim_trailing(gmm, n_steps):
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                  clip_sample=False, set_alpha_to_one=True,
                                  timestep_spacing="trailing")
    process, eps_model = _setup(gmm, sch, n_steps)
    sch.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    x_t = torch.randn(B, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return sch, process, eps_model, x_t


def test_ddim_trailing_spacing_matches_diffusers_when_n_divides_1000(gmm):
    sch, process, eps_model, x_t = _ddim_trailing(gmm, 8)
    theirs = _run_diffusers(sch, eps_model, x_t)
    ts = sch.timesteps.double()
    assert torch.equal(ts[:-1] - ts[1:], torch.full((7,), 125.0, dtype=torch.float64))
    ours = S.sample_ddim(as_denoiser(eps_model, process, "eps"), x_t / process.alpha(ts[:1]),
                         append_zero(process.sigma_of_t(ts)))
    torch.testing.assert_close(ours, theirs, **TOL)


def test_ddim_trailing_spacing_differs_from_diffusers_by_its_prev_timestep_rule(gmm):
    """The documented difference (``sample_ddim``'s docstring): with a step count that does not
    divide 1000, diffusers' step lands on ``t - 1000 // N`` and the next step reads that sample as
    if it were at the next listed timestep; its last step lands on ``t = 0``, not σ = 0. We step
    between consecutive listed timesteps (DDIM's sub-sequence) down to σ = 0."""
    sch, process, eps_model, x_t = _ddim_trailing(gmm, 7)
    theirs = _run_diffusers(sch, eps_model, x_t)
    ts = sch.timesteps.double()
    D = as_denoiser(eps_model, process, "eps")
    ours = S.sample_ddim(D, x_t / process.alpha(ts[:1]), append_zero(process.sigma_of_t(ts)))
    gap = float((ours - theirs).abs().max())
    assert 1e-3 < gap < 0.2
    # diffusers' rule written out in σ-space with our denoiser: matches it to float64 rounding
    x = x_t
    for t in ts:
        prev = t - 1000 // 7
        s, a, s_to, a_to = (float(process.sigma_of_t(t)), float(process.alpha(t)),
                            float(process.sigma_of_t(prev)), float(process.alpha(prev)))
        x_sigma = x / a
        x0 = D(x_sigma, x.new_full((B,), s))
        x = a_to * (x0 + s_to * (x_sigma - x0) / s)  # DDIM, η = 0, to `prev`, back to x_t
    assert float(prev) == 0.0  # the last step lands on t = 0 (σ ≈ 0.01), not on σ = 0
    torch.testing.assert_close(x, theirs, **TOL)
