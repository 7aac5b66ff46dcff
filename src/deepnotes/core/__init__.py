"""Shared infrastructure: seeding, device choice, config parsing, the topic registry, run
directories and result writing, progress bars, plotting style and benchmark recording.

Submodules are imported on demand so that ``deepnotes list`` stays light (no torch import).
"""
