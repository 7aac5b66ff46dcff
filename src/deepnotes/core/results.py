"""Reading runs back: the latest run of a topic, its metrics, and publishing a full run.

Run directories live in ``runs/<slug>/<run-id>/`` (made by experiments) and the committed
``results/<slug>/`` (one published ``full`` run, shown by a fresh clone's site).
"""

from __future__ import annotations

import datetime as _dt
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


def publish_problems(slug: str, run_dir: Path) -> list[str]:
    """Why ``run_dir`` should not be published as ``slug``'s record (empty when it may be).

    A publishable run is the topic's own, completed, of the ``full`` preset, with the full
    preset's settings (only ``seed``, ``device`` and ``out`` may differ).
    """
    import dataclasses
    import importlib

    from deepnotes.core.registry import module_of

    run_dir = Path(run_dir)
    meta = read_metrics(run_dir)
    problems = []
    if meta.get("preset") != "full":
        problems.append(f"it is a {meta.get('preset')!r} run, not a full one")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        return problems + ["it has no config.json, so its settings cannot be checked"]
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")).get("config") or {}
    except json.JSONDecodeError as exc:
        return problems + [f"its config.json is not valid JSON ({exc})"]
    try:
        module = importlib.import_module(module_of(slug))
    except ModuleNotFoundError:
        return problems  # no experiment module: nothing to compare the settings with
    full = dataclasses.asdict(module.PRESETS["full"])
    changed = {k: v for k, v in config.items()
               if k not in ("seed", "device", "out", "preset") and k in full
               and _jsonish(full[k]) != _jsonish(v)}
    if changed:
        shown = ", ".join(f"{k}={v!r} (full: {full[k]!r})" for k, v in sorted(changed.items()))
        problems.append(f"its settings differ from the full preset: {shown}")
    return problems


def _jsonish(value):
    return json.loads(json.dumps(value, default=str))


def publish(slug: str, run_dir: Path | None = None, dest_root: Path | None = None, *,
            force: bool = False) -> Path:
    """Copy a completed ``full`` run (default: newest in ``runs/<slug>``) to ``results/<slug>/``.

    The run must be ``slug``'s own and completed. It must also pass :func:`publish_problems`
    (the full preset, its settings unchanged) unless ``force``; a forced record says so in its
    ``published.json``. ``results/`` is tracked by git, so replacing its previous content loses
    nothing.
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
    if meta.get("slug", slug) != slug:
        raise ValueError(f"{run_dir} is a run of {meta.get('slug')!r}, not of {slug!r}")
    problems = publish_problems(slug, run_dir)
    if problems and not force:
        raise ValueError(f"{run_dir} is not published: {'; '.join(problems)}. Publish the "
                         f"topic's own full run (`deepnotes run {slug} --preset full`), or pass "
                         "--force to publish it anyway (the record will say so)")
    dest = (dest_root or paths.results_dir()) / slug
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in PUBLISHED_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, staging / name)
    for png in run_dir.glob("*.png"):
        shutil.copy2(png, staging / png.name)
    (staging / "published.json").write_text(json.dumps({
        "run_id": meta.get("run_id", run_dir.name), "forced": bool(problems),
        "problems": problems,
        "published_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest
