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
equal to diffusers' ``AutoencoderKL`` weight for weight; ``unet_conditional`` Stable Diffusion's
text-conditioned U-Net (equal to diffusers' ``UNet2DConditionModel``, with ControlNet's residual
inputs), ``mmdit`` SD3's MM-DiT (equal to diffusers' ``SD3Transformer2DModel``),
``text_encoder`` a CLIP text transformer (equal to transformers' ``CLIPTextModel``) trained
contrastively with a small image encoder, ``caption_score`` the shapes caption score (attribute
classifier), shapes FID, and Sobel edge maps / shape masks / edge F1 for ControlNet conditions.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""

from deepnotes.diffusion import (
    autoencoder,
    caption_score,
    gmm,
    guidance,
    likelihood,
    metrics,
    mmdit,
    networks,
    ode,
    parameterizations,
    processes,
    rectified_flow,
    samplers,
    schedules,
    text_encoder,
    unet,
    unet_conditional,
)

__all__ = ["autoencoder", "caption_score", "gmm", "guidance", "likelihood", "metrics", "mmdit",
           "networks", "ode", "parameterizations", "processes", "rectified_flow", "samplers",
           "schedules", "text_encoder", "unet", "unet_conditional"]
