"""The fixture feed of the site tests: 14 posts (one in Chinese) and fake runs beside them."""

from __future__ import annotations

import json
from pathlib import Path

from post_helpers import write_post  # tests/post_helpers.py, also behind post_factory

CHINESE_SLUG = "sui-ji-bi-jin"
CHINESE_TITLE = "随机逼近的收敛性"
CHINESE_WORD = "随机逼近"

MATH_BODY = r"""Intro of {slug}: the step size $\eta_t$ shrinks.

<!-- more -->

## Method
The update, written without a blank line before the display:
$$
\begin{{aligned}} x_{{t+1}} &= x_t - \eta_t g_t \\
\eta_t &= \frac{{1}}{{t + 1}} \end{{aligned}} \tag{{1}}
$$
and inline $a < b$ with (Eq. 1).

## Results

The figure shows the loss.

## Reproduce

    deepnotes run {slug} --preset full
"""


#: note-00's body: the math body plus a results paragraph whose number and figure are references.
REFERENCED_BODY = MATH_BODY.replace(
    "The figure shows the loss.",
    "Accuracy reached {{{{ metric: test/accuracy | .2% }}}} ({{{{ figref: loss_curve }}}}).\n\n"
    "{{{{ figure: loss_curve | Training loss $\\ell_t$ by step. }}}}")
ZH_TITLE = "笔记零：步长与收敛"
ZH_WORD = "学习率衰减"


def write_zh_post(directory: Path, slug: str, *, day: int, tags) -> Path:
    """The Chinese version of ``slug`` (same date, tags, equation and figure as the English)."""
    path = write_post(directory / ".zh", slug, day=day, tags=tags, title=ZH_TITLE, body=(
        f"本文讨论{ZH_WORD}下迭代的行为。\n\n<!-- more -->\n\n## 方法\n\n"
        "$$\nx_{t+1} = x_t - \\eta_t g_t \\tag{1}\n$$\n\n## 结果\n\n"
        "准确率达到 {{ metric: test/accuracy | .2% }}（{{ figref: loss_curve }}）。\n\n"
        "{{ figure: loss_curve | 训练损失随步数的变化。 }}\n"))
    target = path.rename(directory / f"{slug}.zh.md")
    path.parent.rmdir()
    return target


def write_feed(directory: Path, n_english: int = 13) -> list[str]:
    """``n_english`` English posts with math plus one Chinese post; returns slugs newest first."""
    slugs = []
    for i in range(n_english):
        slug = f"note-{i:02d}"
        tags = ("algorithms", "numba") if i % 2 else ("optimization",)
        write_post(directory, slug, day=i, tags=tags, title=f"Note {i:02d}",
                   body=MATH_BODY.format(slug=slug))
        slugs.append(slug)
    write_post(directory, CHINESE_SLUG, day=n_english + 5, tags=("optimization",),
               title=CHINESE_TITLE,
               body=f"本文讨论{CHINESE_WORD}算法在步长递减时的收敛性。\n\n<!-- more -->\n\n"
                    "当步长满足 $\\sum_t \\eta_t = \\infty$ 时，迭代收敛。\n")
    return [CHINESE_SLUG] + slugs[::-1]


def write_run(root: Path, slug: str, *, preset: str = "full", started: str = "2026-11-20T10:00:00",
              metrics: dict | None = None, figure: str = "loss_curve") -> Path:
    """A completed run directory as experiments write it: metrics.json, command.txt, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = root / slug / f"{started.replace(':', '').replace('-', '')}-{preset}"
    run_dir.mkdir(parents=True)
    fig, ax = plt.subplots(figsize=(3, 2), dpi=80)
    ax.plot([0, 1, 2], [3, 1, 0.5])
    fig.savefig(run_dir / f"{figure}.png")
    plt.close(fig)
    metrics = metrics if metrics is not None else {"test/accuracy": 0.98, "train/loss": 0.1234567}
    (run_dir / "metrics.json").write_text(json.dumps({
        "slug": slug, "run_id": run_dir.name, "preset": preset, "seed": 0, "status": "completed",
        "started_at": started + "+00:00", "wall_time_s": 1.5, "headline": next(iter(metrics)),
        "peer": None, "metrics": metrics, "figures": [f"{figure}.png"],
    }), encoding="utf-8")
    (run_dir / "command.txt").write_text(f"deepnotes run {slug} --preset {preset}\n",
                                         encoding="utf-8")
    return run_dir


def write_fixture_feed(base: Path) -> tuple[Path, Path, list[str]]:
    """Posts under ``base/posts`` and runs under ``base/runs``: note-00 has a ``full`` run and a
    newer ``smoke`` run (the site must show the full one), note-01 a ``quick`` run.

    Returns (posts dir, runs root, slugs newest first).
    """
    slugs = write_feed(base / "posts")
    write_post(base / "posts", "note-00", day=0, tags=("optimization",), title="Note 00",
               body=REFERENCED_BODY.format(slug="note-00"))
    write_zh_post(base / "posts", "note-00", day=0, tags=("optimization",))
    runs = base / "runs"
    write_run(runs, "note-00", preset="full", started="2026-11-20T10:00:00",
              metrics={"test/accuracy": 0.9876, "train/loss": 0.0123})
    write_run(runs, "note-00", preset="smoke", started="2026-11-21T10:00:00",
              metrics={"test/accuracy": 0.5, "train/loss": 9.0}, figure="smoke_only")
    write_run(runs, "note-01", preset="quick")
    return base / "posts", runs, slugs
