"""Diffusion and flow-matching models: noise processes, denoisers, samplers.

One interface (Karras et al. 2022): every model is a denoiser ``D(x, sigma) -> x0_estimate`` on
the σ-space variable ``x_σ = x_0 + σ ε``; ``schedules`` gives decreasing ``sigmas`` ending in 0,
``parameterizations.as_denoiser`` adapts ε/x0/v/velocity networks of any ``processes`` time
convention, and every function in ``samplers`` takes ``(D, x, sigmas, ..., callback=None)``.
``gmm`` holds exact Gaussian-mixture marginals (the test reference), ``likelihood`` the
probability-flow ODE log-density, ``ode`` our Dormand–Prince integrator, ``networks`` a small MLP
backbone for 2-D data, ``unet`` a small U-Net (and its encoder as a noise-conditional
classifier) for digit images, ``metrics`` the sliced Wasserstein and Fréchet distances, ``guidance``
classifier and classifier-free guidance as denoiser wrappers, ``rectified_flow`` reflow pairs,
path straightness and the flow-matching loss (``rectified_flow_loss``), ``autoencoder`` the
KL-regularised autoencoder of latent diffusion (f = 4, c latent channels, latent scale from data),
equal to diffusers' ``AutoencoderKL`` weight for weight.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""

from deepnotes.diffusion import (
    autoencoder,
    gmm,
    guidance,
    likelihood,
    metrics,
    networks,
    ode,
    parameterizations,
    processes,
    rectified_flow,
    samplers,
    schedules,
    unet,
)

__all__ = ["autoencoder", "gmm", "guidance", "likelihood", "metrics", "networks", "ode",
           "parameterizations", "processes", "rectified_flow", "samplers", "schedules", "unet"]
