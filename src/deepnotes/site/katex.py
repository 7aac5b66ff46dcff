"""Build-time math: KaTeX (from the npm registry, pinned in package.json) run by Node.js.

``make node`` installs KaTeX into ``<repo>/node_modules``; ``DEEPNOTES_NODE_MODULES`` points
elsewhere and ``DEEPNOTES_NODE`` picks the ``node`` binary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from deepnotes.core import paths

SCRIPT = Path(__file__).with_name("katex_render.js")
MAKE_NODE = "run `make node` at the repository root (npm ci installs KaTeX from package-lock.json)"


class KatexMissingError(RuntimeError):
    """Node.js or the KaTeX package cannot be found."""


def node_binary() -> str:
    node = os.environ.get("DEEPNOTES_NODE") or shutil.which("node") or shutil.which("nodejs")
    if not node:
        raise KatexMissingError(f"Node.js is needed to render the site's math and is not on PATH; "
                                f"install it (apt-get install nodejs npm), then {MAKE_NODE}")
    return node


def katex_dir() -> Path:
    """The installed ``katex`` package: env override, then the repository's node_modules."""
    env = os.environ.get("DEEPNOTES_NODE_MODULES")
    candidates = [Path(env)] if env else []
    candidates += [paths.repo_root() / "node_modules",
                   paths.PACKAGE_DIR.parents[1] / "node_modules", Path.cwd() / "node_modules"]
    for modules in candidates:
        pkg = modules / "katex"
        if (pkg / "package.json").is_file() and (pkg / "dist" / "katex.min.css").is_file():
            return pkg
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise KatexMissingError(f"KaTeX is not installed (looked in {looked}); {MAKE_NODE}")


def copy_assets(dest: Path) -> Path:
    """Copy KaTeX's stylesheet and fonts to ``dest`` (the CSS finds ``fonts/`` beside itself)."""
    dist = katex_dir() / "dist"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(dist / "katex.min.css", dest / "katex.min.css")
    shutil.copytree(dist / "fonts", dest / "fonts", dirs_exist_ok=True)
    return dest / "katex.min.css"


def render_site(site_dir: Path) -> dict:
    """Replace every arithmatex element in the built HTML by KaTeX output, in place.

    Returns the script's report: ``files``, ``changed``, ``rendered`` and ``errors`` (a list of
    ``{file, tex, message}``; KaTeX runs with ``throwOnError: false``, so a bad formula shows in
    red on its page and is counted here rather than failing the build).
    """
    pkg = katex_dir()
    proc = subprocess.run([node_binary(), str(SCRIPT), str(pkg), str(site_dir)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"KaTeX rendering failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
