"""Generative models: flows, autoregressive models, VAEs, GANs, vector quantisation.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""
