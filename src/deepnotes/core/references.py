"""References from a post to the records its numbers and figures come from.

A post never types a measured number: it names the record, and the site builder and
``deepnotes show`` resolve the name when they render the post. The directives (spaces inside the
braces are optional):

``{{ metric: KEY | FMT }}``
    a metric of the topic's latest run (``metrics.json``, its ``metrics`` dict);
``{{ bench: NAME: PATH | FMT }}``
    a field of ``benchmarks/results/NAME.json``; ``PATH`` is dot-separated keys from the top of
    the record, integers index lists (``figures.rows.0.speedup``);
``{{ figure: NAME | CAPTION }}``
    on a line of its own: the run's ``NAME.png``, numbered in order of appearance;
``{{ figref: NAME }}``
    "Figure N" for a figure placed anywhere in the post;
``{{ paper: TEXT }}`` / ``{{ const: TEXT }}``
    a value quoted from a paper, or a constant (a setting, a hardware figure): rendered verbatim,
    and exempt from the bare-number check (:func:`bare_numbers`);
``{{ measured: TEXT | DATE, MACHINE }}``
    a one-off development measurement without a record, rendered with its date and machine.

A metric or bench value may be a ratio of two fields of the same record, ``A / B`` (a slash with a
space on each side, since metric keys contain slashes). In a Markdown table write the bar before
``FMT`` as ``\\|``. ``FMT`` is a Python format spec (``.3f``,
``.1%``, ``,.0f``); the default shows integral values whole and others with 4 significant digits.
A name that the record does not hold raises :class:`ReferenceError`, so a build never shows a
number that no record supports.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("metric", "bench", "figure", "figref", "paper", "const", "measured")
DIRECTIVE = re.compile(r"\{\{\s*(?P<kind>[a-z]+)\s*:\s*(?P<arg>.*?)\s*\}\}", re.DOTALL)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_RATIO = " / "


class ReferenceError(ValueError):
    """A directive names nothing (unknown key, record, path or figure) or is malformed."""


class _Placeholder(Exception):
    """A lenient run lacks the name: show :data:`NO_RUN` instead of a value."""


@dataclass
class FigureRef:
    """A figure placed by a ``{{ figure: ... }}`` directive."""

    number: int
    name: str
    """The PNG's stem in the run directory."""
    caption: str


@dataclass
class Records:
    """Where the values of one post's references come from.

    ``metrics`` is the ``metrics`` dict of the topic's run (``None`` when there is no run),
    ``figures`` the PNG stems that run holds, ``bench_dir`` the folder of benchmark records.
    """

    slug: str
    metrics: dict[str, Any] | None = None
    figures: set[str] = field(default_factory=set)
    bench_dir: Path | None = None
    run_label: str = "the topic's run"
    missing_records_ok: bool = False
    """A benchmark record that does not exist shows a placeholder (``deepnotes show`` of an
    installed package, away from the repository's ``benchmarks/results``)."""
    lenient: bool = False
    """The run is not a ``full`` one (a smoke or quick run shown before any full run exists): the
    post was written against the full run's names, so a name this run lacks shows a placeholder
    instead of failing. Against a full run every name must resolve."""
    _bench_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def bench(self, name: str) -> Any:
        if name not in self._bench_cache:
            if self.bench_dir is None:
                raise ReferenceError(f"{self.slug}: no benchmark folder to read {name!r} from")
            path = Path(self.bench_dir) / f"{name}.json"
            if not path.is_file() and self.missing_records_ok:
                raise _Placeholder
            if not path.is_file():
                known = sorted(p.stem for p in Path(self.bench_dir).glob("*.json"))
                raise ReferenceError(f"{self.slug}: no benchmark record {path}"
                                     + _hint(name, known))
            try:
                self._bench_cache[name] = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ReferenceError(f"{path} is not valid JSON: {exc}") from exc
        return self._bench_cache[name]


def records_for(slug: str, run_roots: list[Path] | None = None) -> Records:
    """The records of ``slug``: its best run (a ``full`` one when any exists, as the site shows
    it) and the benchmark folder. A run of another preset gives lenient records."""
    from deepnotes.core import paths
    from deepnotes.core.results import find_latest_run, read_metrics

    run_dir = find_latest_run(slug, run_roots)
    bench_dir = paths.benchmarks_dir() / "results"
    if run_dir is None:
        return Records(slug, None, set(), bench_dir)
    meta = read_metrics(run_dir)
    figures = {p.stem for p in Path(run_dir).glob("*.png")}
    label = f"the {meta.get('preset', '?')} run {run_dir}"
    return Records(slug, dict(meta.get("metrics") or {}), figures, bench_dir, label,
                   lenient=meta.get("preset") != "full")


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" (closest: {', '.join(close)})" if close else ""


def _split_format(arg: str) -> tuple[str, str | None]:
    """``"KEY | FMT"`` -> ``("KEY", "FMT")``; inside a Markdown table the bar is written ``\\|``."""
    if "|" in arg:
        value, fmt = arg.rsplit("|", 1)
        return value.strip().removesuffix("\\").strip(), fmt.strip() or None
    return arg.strip(), None


def format_number(value: Any, fmt: str | None = None) -> str:
    """Format a referenced value: ``fmt`` as a Python format spec, or the default."""
    if fmt:
        try:
            return format(value, fmt)
        except (TypeError, ValueError) as exc:
            raise ReferenceError(f"format {fmt!r} does not apply to {value!r}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    return f"{value:.4g}"


def _json_path(record: Any, path: str, where: str) -> Any:
    node = record
    walked: list[str] = []
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"-?\d+", part) and \
                -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            here = ".".join(walked) or "the top"
            keys = list(node) if isinstance(node, dict) else []
            kind = f"a list of {len(node)}" if isinstance(node, list) else type(node).__name__
            raise ReferenceError(f"{where}: no {part!r} at {here} (found {kind})"
                                 + _hint(part, keys))
        walked.append(part)
    return node


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReferenceError(f"{where}: a ratio needs numbers, got {value!r}")
    return float(value)


def _ratio(lookup: Callable[[str], Any], expr: str, where: str) -> Any:
    if _RATIO not in expr:
        return lookup(expr)
    top, bottom = (part.strip() for part in expr.split(_RATIO, 1))
    num, den = _number(lookup(top), where), _number(lookup(bottom), where)
    if den == 0:
        raise ReferenceError(f"{where}: ratio {expr!r} divides by zero")
    return num / den


def metric_value(records: Records, expr: str) -> Any:
    """The value of ``{{ metric: expr }}`` (before formatting)."""
    where = f"{records.slug}: metric {expr!r}"
    if records.metrics is None:
        raise ReferenceError(f"{where}: the topic has no completed run to read it from "
                             f"(run `deepnotes run {records.slug} --preset full` and publish it)")

    def lookup(key: str) -> Any:
        if key not in records.metrics and records.lenient:
            raise _Placeholder
        if key not in records.metrics:
            raise ReferenceError(f"{records.slug}: metric {key!r} is not in {records.run_label}"
                                 + _hint(key, records.metrics))
        return records.metrics[key]

    return _ratio(lookup, expr, where)


def bench_value(records: Records, arg: str) -> Any:
    """The value of ``{{ bench: NAME: PATH }}`` (before formatting)."""
    name, sep, expr = arg.partition(":")
    name, expr = name.strip(), expr.strip()
    if not sep or not name or not expr:
        raise ReferenceError(f"{records.slug}: bench reference {arg!r} must read NAME: PATH")
    record = records.bench(name)
    where = f"{records.slug}: bench {name}"
    return _ratio(lambda path: _json_path(record, path, where), expr, where)


def _outside_fences(lines: list[str]) -> list[bool]:
    flags, fence = [], None
    for line in lines:
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            flags.append(False)
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            flags.append(False)
        else:
            flags.append(True)
    return flags


def figure_refs(text: str) -> list[FigureRef]:
    """The ``{{ figure: ... }}`` directives of ``text`` in order, numbered from 1."""
    figures: list[FigureRef] = []
    lines = text.split("\n")
    for line, outside in zip(lines, _outside_fences(lines), strict=True):
        if not outside:
            continue
        for match in DIRECTIVE.finditer(line):
            if match.group("kind") != "figure":
                continue
            name, caption = _split_format(match.group("arg"))
            if not caption:
                raise ReferenceError(f"figure {name!r} needs a caption: "
                                     "{{ figure: NAME | what the figure shows }}")
            if any(f.name == name for f in figures):
                raise ReferenceError(f"figure {name!r} is placed twice")
            figures.append(FigureRef(len(figures) + 1, name, caption))
    return figures


def figure_label(number: int, lang: str = "en") -> str:
    return f"图 {number}" if lang == "zh" else f"Figure {number}"


NO_RUN = "—"
"""What a metric reference shows when the topic has no run at all (``allow_missing_run``)."""


def resolve(text: str, records: Records, *,
            render_figure: Callable[[FigureRef], str] | None = None,
            lang: str = "en", allow_missing_run: bool = False) -> str:
    """Replace every directive of ``text`` (outside fenced code) by what it refers to.

    ``render_figure`` turns a placed figure into markup (the site's ``<figure>``, the CLI's one
    line); by default a Markdown image line with a numbered caption. With
    ``allow_missing_run``, a topic that has no run at all shows :data:`NO_RUN` for its metrics and
    a caption without image for its figures (a site built before any run); a run that exists but
    lacks a name is an error either way.
    """
    figures = {f.name: f for f in figure_refs(text)}
    no_run = records.metrics is None and allow_missing_run
    placed = render_figure or (
        lambda f: f"![{f.caption}]({f.name}.png)\n\n*{figure_label(f.number, lang)}. {f.caption}*")

    def render_figure(fig: FigureRef) -> str:
        if no_run or (records.lenient and fig.name not in records.figures):
            label = "尚无运行" if lang == "zh" else "no run yet"
            if records.lenient and not no_run:
                label = "不在这次运行中" if lang == "zh" else "not in this run"
            return f"*{figure_label(fig.number, lang)} ({label}). {fig.caption}*"
        return placed(fig)

    for fig in figures.values():
        if not no_run and not records.lenient and fig.name not in records.figures:
            raise ReferenceError(f"{records.slug}: figure {fig.name!r} is not in "
                                 f"{records.run_label}" + _hint(fig.name, records.figures))
    def replace(match: re.Match) -> str:
        kind, arg = match.group("kind"), match.group("arg")
        if kind == "metric":
            expr, fmt = _split_format(arg)
            if no_run:
                return NO_RUN
            try:
                return format_number(metric_value(records, expr), fmt)
            except _Placeholder:
                return NO_RUN
        if kind == "bench":
            expr, fmt = _split_format(arg)
            try:
                return format_number(bench_value(records, expr), fmt)
            except _Placeholder:
                return NO_RUN
        if kind == "figure":
            return render_figure(figures[_split_format(arg)[0]])
        if kind == "figref":
            name = arg.strip()
            if name not in figures:
                raise ReferenceError(f"{records.slug}: figref {name!r} names no figure placed in "
                                     "the post" + _hint(name, figures))
            return figure_label(figures[name].number, lang)
        if kind in ("paper", "const"):
            return arg
        if kind == "measured":
            value, when = _split_format(arg)
            if not when:
                raise ReferenceError(f"{records.slug}: measured {value!r} needs its date and "
                                     "machine: {{ measured: TEXT | YYYY-MM-DD, MACHINE }}")
            note = "单次测量" if lang == "zh" else "one-off measurement"
            return f"{value} ({note}, {when})"
        raise ReferenceError(f"{records.slug}: unknown directive {{{{ {kind}: ... }}}}; "
                             f"known: {', '.join(KINDS)}")

    lines = text.split("\n")
    flags = _outside_fences(lines)
    # Directives never span fences; resolve each run of outside lines as one block so that a
    # directive may wrap across lines of a paragraph.
    out: list[str] = []
    block: list[str] = []
    for line, outside in zip(lines, flags, strict=True):
        if outside:
            block.append(line)
            continue
        if block:
            out.append(DIRECTIVE.sub(replace, "\n".join(block)))
            block = []
        out.append(line)
    if block:
        out.append(DIRECTIVE.sub(replace, "\n".join(block)))
    return "\n".join(out)


# --- the bare-number check ----------------------------------------------------------------------
_UNITS = (r"(?:ms|µs|us|ns|s|sec|min|h|%|bits/dim|bits per dim|nats|FID|TFLOP/s|GFLOP/s|"
          r"TFLOPs|GB/s|MB/s|MB|GB|KB|MiB|GiB|KiB|steps/s|it/s|M/s|tokens/s|images/s|fps|"
          r"million env steps/s)")
_NUMBER = r"(?<![\w.\-/])\d+(?:[.,]\d+)*(?:\s*(?:–|-|to)\s*\d+(?:[.,]\d+)*)?"
BARE_NUMBER = re.compile(
    rf"{_NUMBER}(?:\s?{_UNITS}(?![\w/])|\s?[×x](?![\w\d]))")
#: A measured quantity named before its value: "FID 9.2", "accuracy of 0.97", "AUC = 0.98".
NAMED_VALUE = re.compile(
    r"\b(?:FID|AUC|NLL|KL|accuracy|bits/dim|perplexity|准确率|精度)\b[^.\n\d]{0,12}?"
    r"(?<![\w.])\d+\.\d+")
_STRIP = [
    re.compile(r"\$\$.*?\$\$", re.DOTALL),          # display math
    re.compile(r"(?<!\\)\$[^$\n]+?(?<!\\)\$"),      # inline math
    re.compile(r"\\\(.*?\\\)", re.DOTALL),
    re.compile(r"`[^`\n]*`"),                         # code spans
    DIRECTIVE,                                        # every directive is a reference or a mark
    re.compile(r"\]\([^)]*\)"),                       # link targets
    re.compile(r"<[^>\n]+>"),                         # HTML tags
    re.compile(r"https?://\S+"),
]


def bare_numbers(text: str) -> list[tuple[int, str]]:
    """Measured-looking numbers typed into ``text`` outside references, math and code.

    Returns ``(line number, the line)`` pairs (1-based). A number followed by a unit of time,
    speed, size, a ratio sign (``×``/``x``), a percentage, bits/dim, nats or FID counts as
    measured-looking; ``8×8`` (a digit after the sign) does not.
    """
    lines = text.split("\n")
    flags = _outside_fences(lines)
    kept = "\n".join(line if outside else "" for line, outside in zip(lines, flags, strict=True))
    for pattern in _STRIP:
        kept = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), kept)
    found = []
    for number, (line, original) in enumerate(zip(kept.split("\n"), lines, strict=True), 1):
        if BARE_NUMBER.search(line) or NAMED_VALUE.search(line):
            found.append((number, original.strip()))
    return found


__all__ = [
    "DIRECTIVE", "FigureRef", "KINDS", "ReferenceError", "Records", "bare_numbers",
    "bench_value", "figure_label", "figure_refs", "format_number", "metric_value",
    "records_for", "resolve",
]
