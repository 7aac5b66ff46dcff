"""The feed site: Zensical's blog over the posts, with each topic's latest run and its code.

``build_site(out_dir)`` writes a static site (offline search, KaTeX math rendered at build time,
an Atom feed); ``serve_site(out_dir)`` serves it on localhost. See :mod:`deepnotes.site.build`.
"""

from deepnotes.site.build import build_site, serve_site

__all__ = ["build_site", "serve_site"]
