"""References from posts to run and benchmark records: resolution, errors, the bare-number check."""

import json

import pytest

from deepnotes.core.references import (
    Records,
    ReferenceError,
    bare_numbers,
    figure_refs,
    format_number,
    resolve,
)


@pytest.fixture
def records(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "speed.json").write_text(json.dumps({
        "figures": {"rows": [{"ours_s": 1.5, "peer_s": 3.0}, {"ours_s": 2.0, "peer_s": 1.0}],
                    "name": "dense"}}))
    metrics = {"digits/test_bits_per_dim": 2.23456, "toy/kl_nats": 0.5, "n/steps": 12000.0,
               "zero": 0.0}
    return Records("demo", metrics, {"curves", "samples"}, bench)


def test_metric_and_bench_values_with_formats_and_ratios(records):
    text = ("bpd {{ metric: digits/test_bits_per_dim | .3f }}, kl {{metric:toy/kl_nats}}, "
            "steps {{ metric: n/steps }}, ratio {{ bench: speed: figures.rows.0.ours_s / "
            "figures.rows.0.peer_s | .2f }}×, slow {{ bench: speed: figures.rows.1.ours_s }} s, "
            "name {{ bench: speed: figures.name }}, pct {{ metric: toy/kl_nats | .0% }}")
    out = resolve(text, records)
    assert out == ("bpd 2.235, kl 0.5, steps 12,000, ratio 0.50×, slow 2 s, name dense, "
                   "pct 50%")


def test_metric_ratio_of_two_keys_with_slashes(records):
    out = resolve("{{ metric: toy/kl_nats / digits/test_bits_per_dim | .4f }}", records)
    assert out == f"{0.5 / 2.23456:.4f}"


@pytest.mark.parametrize("text, message", [
    ("{{ metric: digits/test_bits_per_dimm }}", "closest: digits/test_bits_per_dim"),
    ("{{ bench: nope: figures.name }}", "no benchmark record"),
    ("{{ bench: speed: figures.rows.2.ours_s }}", "no '2' at figures.rows"),
    ("{{ bench: speed: figures.nam }}", "closest: name"),
    ("{{ bench: speed }}", "must read NAME: PATH"),
    ("{{ metric: toy/kl_nats / zero }}", "divides by zero"),
    ("{{ bench: speed: figures.name / figures.rows.0.ours_s }}", "needs numbers"),
    ("{{ figure: missing | A caption. }}", "figure 'missing' is not in"),
    ("{{ figure: curves }}", "needs a caption"),
    ("{{ figref: samples }}", "names no figure placed"),
    ("{{ metrc: toy/kl_nats }}", "unknown directive"),
    ("{{ measured: 5 s }}", "needs its date and machine"),
    ("{{ metric: toy/kl_nats | .3q }}", "format '.3q'"),
])
def test_a_reference_that_names_nothing_fails_with_its_name(records, text, message):
    with pytest.raises(ReferenceError, match=message.replace("(", r"\(")):
        resolve(text, records)


def test_no_run_is_an_error_naming_the_command():
    with pytest.raises(ReferenceError, match="deepnotes run demo --preset full"):
        resolve("{{ metric: a }}", Records("demo"))


def test_figures_are_numbered_in_order_and_figref_works_before_placement(records):
    text = ("As {{ figref: samples }} shows.\n\n{{ figure: curves | Loss by step. }}\n\n"
            "{{ figure: samples | Samples. }}\n")
    figs = figure_refs(text)
    assert [(f.number, f.name, f.caption) for f in figs] == [(1, "curves", "Loss by step."),
                                                               (2, "samples", "Samples.")]
    out = resolve(text, records, render_figure=lambda f: f"<F{f.number}:{f.name}>")
    assert out == "As Figure 2 shows.\n\n<F1:curves>\n\n<F2:samples>\n"
    assert resolve("{{ figref: curves }}\n{{ figure: curves | C. }}", records, lang="zh",
                   render_figure=lambda f: "").startswith("图 1")
    with pytest.raises(ReferenceError, match="placed twice"):
        figure_refs("{{ figure: curves | a }}\n{{ figure: curves | b }}")


def test_marks_and_fenced_code_are_left_alone(records):
    text = ("{{ paper: 2.8× }} and {{ const: 24 GB }} and "
            "{{ measured: 5.7 s | 2026-11-25, AMD EPYC 2 cores }}\n"
            "```\n{{ metric: not/resolved }}\n```\n")
    out = resolve(text, records)
    assert out.startswith("2.8× and 24 GB and 5.7 s (one-off measurement, 2026-11-25, AMD EPYC")
    assert "{{ metric: not/resolved }}" in out


def test_directive_may_wrap_across_lines_of_a_paragraph(records):
    assert resolve("x {{ metric:\n  toy/kl_nats }} y", records) == "x 0.5 y"


def test_default_format():
    assert format_number(3.0) == "3" and format_number(123456.0) == "123,456"
    assert format_number(0.123456) == "0.1235" and format_number("text") == "text"
    assert format_number(float("nan")) == "nan"


@pytest.mark.parametrize("line", [
    "ours trains in 0.92× xgboost's time", "it took 5.7 s", "from 1.4 to 1.1 ns per sample",
    "reaches 1.878 bits/dim", "within 5%", "12.5 ms per call", "70–130 ms", "a 47x speed-up",
    "about 9 s to compile", "FID 9.2 at 35 NFE", "accuracy of 0.97",
])
def test_bare_numbers_are_found(line):
    assert bare_numbers(line), line


@pytest.mark.parametrize("line", [
    "8×8 digits", "a 2x2 grid", "$t = 0.5\\,s$", "`time 5 s`", "{{ metric: a/b_s }} s",
    "{{ paper: 2.8× }}", "see [x](https://a.b/1.5x)", "100 trees of depth 6", "1e-6 relative",
    "seed 0 on 2 cores", "<img width=\"50%\">", "version 2.13.0",
])
def test_references_math_code_and_plain_counts_are_not_bare(line):
    assert not bare_numbers(line), line


def test_bare_numbers_skip_fenced_code_and_report_line_numbers():
    text = "intro\n```\n5 s\n```\nthen 3.5 s\n"
    assert bare_numbers(text) == [(5, "then 3.5 s")]


def test_a_site_built_before_any_run_shows_placeholders_but_still_checks_benchmarks(records):
    empty = Records("demo", None, set(), records.bench_dir)
    text = "v {{ metric: a/b }}\n{{ figure: curves | Loss. }}\nsee {{ figref: curves }}"
    out = resolve(text, empty, allow_missing_run=True)
    assert out == "v —\n*Figure 1 (no run yet). Loss.*\nsee Figure 1"
    with pytest.raises(ReferenceError, match="no benchmark record"):
        resolve("{{ bench: nope: x }}", empty, allow_missing_run=True)


def test_a_smoke_run_shows_placeholders_for_names_only_the_full_run_has(records):
    smoke = Records("demo", {"toy/kl_nats": 0.25}, {"curves"}, records.bench_dir, lenient=True)
    text = ("{{ metric: toy/kl_nats }} {{ metric: digits/test_bits_per_dim }}\n"
            "{{ figure: curves | A. }}\n{{ figure: samples | B. }}")
    out = resolve(text, smoke, render_figure=lambda f: f"<{f.name}>")
    assert out == "0.25 —\n<curves>\n*Figure 2 (not in this run). B.*"
    full = Records("demo", {"toy/kl_nats": 0.25}, {"curves"}, records.bench_dir)
    with pytest.raises(ReferenceError):
        resolve(text, full, render_figure=lambda f: "")


def test_the_format_bar_may_be_escaped_inside_a_markdown_table(records):
    row = "| kl | {{ metric: toy/kl_nats \\| .3f }} |"
    assert resolve(row, records) == "| kl | 0.500 |"


def test_show_away_from_the_repository_tolerates_missing_records(tmp_path):
    away = Records("demo", None, set(), tmp_path / "no-such-folder", missing_records_ok=True)
    out = resolve("{{ bench: flows: a.b }} and {{ metric: x }}", away, allow_missing_run=True)
    assert out == "— and —"
