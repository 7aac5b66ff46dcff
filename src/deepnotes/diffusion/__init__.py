"""Diffusion and flow-matching models: noise processes, denoisers, samplers.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""
