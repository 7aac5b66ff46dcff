"""Reading runs back: the latest run of a topic, its metrics, and publishing a full run.

Run directories live in ``runs/<slug>/<run-id>/`` (made by experiments) and the committed
``results/<slug>/`` (one published ``full`` run, shown by a fresh clone's site).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deepnotes.core import paths

#: Which preset a post shows, best first.
PRESET_RANK = {"full": 0, "quick": 1, "smoke": 2, "custom": 3}
PUBLISHED_FILES = ("metrics.json", "config.json", "command.txt", "log.txt")


def read_metrics(run_dir: Path) -> dict:
    """The parsed ``metrics.json`` of a run; ``ValueError`` naming the file if it is corrupt."""
    path = Path(run_dir) / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the run is corrupt") from exc


def _run_dirs(slug: str, root: Path) -> list[Path]:
    topic = Path(root) / slug
    if not topic.is_dir():
        return []
    if (topic / "metrics.json").is_file():  # results/<slug>/ is itself one run
        return [topic]
    return [d for d in topic.iterdir() if (d / "metrics.json").is_file()]


def list_runs(slug: str, roots: list[Path] | None = None) -> list[tuple[Path, dict]]:
    """Completed runs of ``slug`` under ``roots``, best first: full > quick > smoke, then newest."""
    roots = roots if roots is not None else [paths.runs_dir(), paths.results_dir()]
    runs = []
    for root in roots:
        for run_dir in _run_dirs(slug, root):
            try:
                meta = read_metrics(run_dir)
            except ValueError:
                continue
            if meta.get("status") == "completed":
                runs.append((run_dir, meta))
    runs.sort(key=lambda r: (PRESET_RANK.get(r[1].get("preset"), 9),
                             _neg(r[1].get("started_at", ""))))
    return runs


def _neg(stamp: str) -> tuple:
    return tuple(-ord(c) for c in stamp)


def find_latest_run(slug: str, roots: list[Path] | None = None) -> Path | None:
    """The newest completed run of the best preset, or ``None``."""
    runs = list_runs(slug, roots)
    return runs[0][0] if runs else None


def publish(slug: str, run_dir: Path | None = None, dest_root: Path | None = None) -> Path:
    """Copy a completed ``full`` run (default: newest in ``runs/<slug>``) to ``results/<slug>/``.

    ``results/`` is tracked by git, so replacing its previous content loses nothing.
    """
    if run_dir is None:
        runs = list_runs(slug, [paths.runs_dir()])
        candidates = [r for r in runs if r[1].get("preset") == "full"]
        if not candidates:
            raise FileNotFoundError(
                f"no completed full run of {slug} under {paths.runs_dir()}; "
                f"run `deepnotes run {slug} --preset full` first"
            )
        run_dir = candidates[0][0]
    run_dir = Path(run_dir)
    meta = read_metrics(run_dir)
    if meta.get("status") != "completed":
        raise ValueError(f"{run_dir} has status {meta.get('status')!r}; "
                         "only completed runs are published")
    dest = (dest_root or paths.results_dir()) / slug
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in PUBLISHED_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, staging / name)
    for png in run_dir.glob("*.png"):
        shutil.copy2(png, staging / png.name)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest
