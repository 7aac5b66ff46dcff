"""deepnotes: an ML notebook where every post is backed by code that runs.

Families live in subpackages (``deepnotes.algorithms``, ``deepnotes.nn``, ``deepnotes.rl``, ...);
shared infrastructure in ``deepnotes.core`` and ``deepnotes.data``; one experiment per topic in
``deepnotes.experiments``. Importing this package imports nothing heavy (no torch, no numba).
"""

__version__ = "0.1.0"
