"""The ``deepnotes`` command: list, show, run, tour, bench, publish, site.

Start-up stays light: this module imports only the standard library at the top; each command
imports what it needs (``deepnotes list`` never imports torch, numba or matplotlib).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

PAGE_SIZE = 12
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# --- list / show -------------------------------------------------------------------------------
def _summary(post) -> str:
    """The post's summary with its references resolved (left as written if they cannot be)."""
    from deepnotes.core.references import ReferenceError, records_for, resolve

    try:
        return resolve(post.summary, records_for(post.slug), lang=post.lang)
    except ReferenceError:
        return post.summary


def cmd_list(args) -> int:
    from deepnotes.core.posts import load_posts

    posts = load_posts(lang=args.lang)
    if args.tag:
        tags = sorted({t for p in posts for t in p.tags})
        wanted = args.tag.lower()
        posts = [p for p in posts if wanted in (t.lower() for t in p.tags)]
        if not posts:
            raise CliError(f"no post has the tag {args.tag!r}; tags: {', '.join(tags)}")
    pages = max(1, math.ceil(len(posts) / PAGE_SIZE))
    if not 1 <= args.page <= pages:
        raise CliError(f"page {args.page} does not exist; there are {pages} page(s)")
    shown = posts[(args.page - 1) * PAGE_SIZE: args.page * PAGE_SIZE]
    title = "LATEST UPDATES" + (f" · tag {args.tag}" if args.tag else "")
    print(f"{title} · page {args.page} of {pages} · {len(posts)} post(s)\n")
    for post in shown:
        print(f"{post.date.isoformat()}  {post.slug}  [{', '.join(post.tags)}]")
        print(f"    {post.title}")
        print(f"    {_summary(post)}\n")
    if args.page < pages:
        tag = f" --tag {args.tag}" if args.tag else ""
        print(f"next: deepnotes list --page {args.page + 1}{tag}")
    return 0


def _metrics_table(meta: dict) -> str:
    rows = [[k, _fmt(v)] for k, v in sorted(meta.get("metrics", {}).items())]
    return _table(rows, ["metric", "value"]) if rows else "(no metrics)"


def cmd_show(args) -> int:
    from deepnotes.core.posts import parse_post, post_file
    from deepnotes.core.references import ReferenceError, figure_label, records_for, resolve
    from deepnotes.core.registry import check_slug
    from deepnotes.core.results import find_latest_run, read_metrics

    slug = check_slug(args.slug)
    path = post_file(slug, args.lang)
    if not path.is_file():
        raise CliError(f"{slug} has no post in {args.lang!r} ({path} is missing)")
    post = parse_post(path)
    run_dir = find_latest_run(slug)

    def figure_line(fig) -> str:
        where = f"{run_dir / fig.name}.png" if run_dir else f"{fig.name}.png"
        return f"[{figure_label(fig.number, post.lang)}: {fig.caption} ({where})]"

    records = records_for(slug)
    records.missing_records_ok = True  # an installed package has no benchmarks/results beside it
    try:
        body = resolve(post.body, records, render_figure=figure_line, lang=post.lang,
                       allow_missing_run=True)
    except ReferenceError as exc:
        raise CliError(f"{path}: {exc}") from exc
    print(f"{post.title}\n{post.date.isoformat()} · {', '.join(post.tags)}\n")
    print(body.replace("<!-- more -->\n", "").strip() + "\n")
    if run_dir is None:
        print(f"No run yet: deepnotes run {slug}")
        return 0
    meta = read_metrics(run_dir)
    print(f"Latest metrics ({meta.get('preset')} run {meta.get('run_id')}, {run_dir}):")
    print(_metrics_table(meta))
    return 0


# --- run / tour --------------------------------------------------------------------------------
def _build_config(module, args):
    import dataclasses

    from deepnotes.core.config import apply_overrides, validate_config

    if args.preset not in module.PRESETS:
        known = ", ".join(module.PRESETS)
        raise CliError(f"unknown preset {args.preset!r}; expected one of {known}")
    config = module.PRESETS[args.preset]
    changes = {}
    if args.seed is not None:
        if args.seed < 0:
            raise CliError("--seed must be non-negative")
        changes["seed"] = args.seed
    if getattr(args, "device", None):
        changes["device"] = args.device
    if getattr(args, "out", None):
        changes["out"] = str(args.out)
    config = dataclasses.replace(config, **changes)
    try:
        config = apply_overrides(config, getattr(args, "set", None) or [])
        validate_config(config, module.PRESETS)  # before any run folder exists
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return config


def _print_config(module, config) -> None:
    from deepnotes.core.config import describe

    rows = [[name, tp, _fmt(value), doc] for name, tp, value, doc in describe(config)]
    print(f"{module.__name__}.Config (preset {config.preset}); change with --set key=value\n")
    print(_table(rows, ["field", "type", "value", "meaning"]))


class _hold_interrupt:
    """Hold Ctrl-C while modules import, then raise it.

    A KeyboardInterrupt in the middle of importing torch or numba leaves half-initialised
    extension modules behind ("cannot load module more than once", a RecursionError, a native
    abort). Held here, it arrives as a clean KeyboardInterrupt once the imports are done, before
    any run folder exists (exit status 130).
    """

    def __enter__(self):
        import signal
        import threading

        self.pressed = False
        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, *_):
        self.pressed = True

    def __exit__(self, exc_type, *exc):
        import signal

        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        if self.pressed and exc_type is None:
            raise KeyboardInterrupt
        return False


def cmd_run(args) -> int:
    import contextlib
    import os

    from deepnotes.core.registry import load_experiment

    with _hold_interrupt():  # the imports of torch, numba and the topic
        from deepnotes.core.experiment import resume_from

        module = load_experiment(args.slug)
    config = _resumed_config(module, args) if args.resume else _build_config(module, args)
    if args.show_config:
        _print_config(module, config)
        return 0
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        raise CliError(f"unknown device {config.device!r}: expected auto, cpu, cuda or cuda:N")
    if args.nproc < 1:
        raise CliError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # a worker (or torchrun) skips this
        return _spawn_ranks(args, config)
    resuming = resume_from(args.resume) if args.resume else contextlib.nullcontext()
    with _distributed(config) as rank, resuming:
        result = module.run(config)
    if rank != 0:
        return 0
    print(f"\n{args.slug}: {result.status} in {result.wall_time_s:.1f} s -> {result.run_dir}")
    if result.headline:
        peer = f" (peer {result.peer}: {_fmt(result.peer_value)})" if result.peer else ""
        print(f"headline {result.headline}: {_fmt(result.headline_value)}{peer}")
    return 0


def _resumed_config(module, args):
    """The config of the interrupted run in ``args.resume`` (``--device`` may change)."""
    import dataclasses
    import json
    import typing

    from deepnotes.core.config import field_types

    if args.set or args.seed is not None:
        raise CliError("--resume continues a run with its own config; drop --set/--seed")
    path = Path(args.resume) / "config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        meta = json.loads((Path(args.resume) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot resume {args.resume}: {exc}") from None
    if saved.get("slug") != args.slug:
        raise CliError(f"{args.resume} is a run of {saved.get('slug')!r}, not {args.slug!r}")
    if meta.get("status") == "completed":
        raise CliError(f"{args.resume} has already completed; nothing to resume")
    cls = type(next(iter(module.PRESETS.values())))
    types_ = field_types(cls)
    values = {}
    for name, value in saved["config"].items():
        if name not in types_:
            raise CliError(f"{path}: field {name!r} no longer exists in {cls.__qualname__}")
        if isinstance(value, list) and typing.get_origin(types_[name]) is tuple:
            value = tuple(value)
        values[name] = value
    config = cls(**values)
    return dataclasses.replace(config, device=args.device) if args.device else config


def _spawn_ranks(args, config) -> int:
    """Start ``--nproc`` copies of this command as torch.distributed ranks (the environment
    torchrun would set) and wait for them; the first failure stops the others."""
    import os
    import socket
    import subprocess

    if config.device != "cpu":
        import torch

        if (config.device != "auto" or torch.cuda.is_available()) and \
                args.nproc > torch.cuda.device_count():
            raise CliError(f"--nproc {args.nproc} needs as many GPUs; "
                           f"{torch.cuda.device_count()} visible (use --device cpu)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(args.nproc):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(args.nproc),
                   LOCAL_WORLD_SIZE=str(args.nproc), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "deepnotes", *args.argv], env=env))
    codes: dict[int, int] = {}
    try:
        while len(codes) < len(procs):
            for rank, proc in enumerate(procs):
                if rank not in codes and proc.poll() is not None:
                    codes[rank] = proc.returncode
                    if proc.returncode != 0:
                        for other in procs:
                            if other.poll() is None:
                                other.terminate()
            time.sleep(0.05)
    except KeyboardInterrupt:  # the ranks got the same Ctrl-C: let them checkpoint and stop
        for proc in procs:
            proc.wait()
        raise
    failed = {r: c for r, c in codes.items() if c != 0}
    if failed:
        print(f"deepnotes: rank(s) {', '.join(map(str, failed))} failed", file=sys.stderr)
        return max(failed.values(), key=abs)
    return 0


class _distributed:
    """Initialise torch.distributed when this process is a rank (``WORLD_SIZE`` > 1): nccl for
    CUDA tensors (and gloo for CPU ones) on a CUDA run, gloo on CPU. The context value is this
    process's rank."""

    def __init__(self, config):
        self.config = config
        self.active = False

    def __enter__(self) -> int:
        import os

        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0
        import torch
        import torch.distributed as dist

        from deepnotes.core.device import resolve_device

        cuda = resolve_device(self.config.device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # a CUDA run may still train small helper networks on CPU: gloo serves CPU tensors
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", init_method="env://")
        self.active = True
        return dist.get_rank()

    def __exit__(self, *exc) -> bool:
        if self.active:
            import torch.distributed as dist

            dist.destroy_process_group()
        return False


def cmd_tour(args) -> int:
    import traceback

    from deepnotes.core.registry import UnknownTopicError, check_slug, load_experiment, topic_slugs

    try:  # every slug is checked before any topic runs
        slugs = [check_slug(s) for s in args.only] if args.only else topic_slugs()
    except UnknownTopicError as exc:
        raise CliError(str(exc)) from None
    rows, failed = [], []
    for slug in slugs:
        print(f"\n=== {slug} ({args.preset}) ===", flush=True)
        t0 = time.perf_counter()
        try:
            module = load_experiment(slug)
            config = _build_config(module, argparse.Namespace(preset=args.preset, seed=args.seed,
                                                              out=args.out, set=[]))
            result = module.run(config)
            peer = _fmt(result.peer_value) if result.peer else "—"
            rows.append([slug, result.headline or "—", _fmt(result.headline_value), peer,
                         f"{result.wall_time_s:.1f}", "ok"])
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failing topic must not stop the tour
            traceback.print_exc()
            failed.append(slug)
            rows.append([slug, "—", "—", "—", f"{time.perf_counter() - t0:.1f}",
                         f"FAILED: {type(exc).__name__}: {exc}"[:80]])
    print("\n" + _table(rows, ["topic", "headline metric", "value", "peer", "wall s", "status"]))
    if failed:
        print(f"\n{len(failed)} topic(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# --- bench / publish / site --------------------------------------------------------------------
def cmd_bench(args) -> int:
    import importlib.util
    import json
    import shlex

    from deepnotes.core.bench import benchmark_for, record
    from deepnotes.core.paths import benchmarks_dir

    name = args.name.replace("-", "_").removesuffix(".py")
    path = benchmark_for(args.name, benchmarks_dir())
    if path is None:
        import difflib

        known = sorted(p.stem for p in benchmarks_dir().glob("*.py") if not p.stem.startswith("_"))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = (f"did you mean {', '.join(close)}?" if close
                else f"benchmarks: {', '.join(known) or 'none'}")
        raise CliError(f"unknown benchmark {args.name!r} (looked for "
                       f"{benchmarks_dir() / (name + '.py')}); {hint}")
    name = path.stem
    spec = importlib.util.spec_from_file_location(f"deepnotes_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.run(quick=args.quick)
    command = "deepnotes bench " + shlex.quote(args.name) + (" --quick" if args.quick else "")
    out = record(name, figures, command, args.out, quick=args.quick)
    print(json.dumps(figures, indent=2, default=str))
    print(f"recorded {out}")
    return 0


def cmd_publish(args) -> int:
    from deepnotes.core.registry import check_slug
    from deepnotes.core.results import publish

    try:
        dest = publish(check_slug(args.slug), args.run, force=args.force)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"published {args.slug} -> {dest}")
    return 0


def cmd_site(args) -> int:
    from deepnotes.core.paths import repo_root

    out = Path(args.out) if args.out else repo_root() / "site"
    if args.action == "build":
        from deepnotes.site.build import build_site
        from deepnotes.site.katex import KatexMissingError

        t0 = time.perf_counter()
        try:
            index = build_site(out, site_url=args.site_url)
        except (ValueError, KatexMissingError) as exc:  # a refused folder, or `make node` not run
            raise CliError(str(exc)) from None
        print(f"site built in {time.perf_counter() - t0:.1f} s: {index}")
        return 0
    from deepnotes.site.build import serve_site

    if not (out / "index.html").is_file():
        raise CliError(f"no site at {out}; run `deepnotes site build` first")
    serve_site(out, port=args.port)
    return 0


# --- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepnotes",
        description="An ML notebook where every post is backed by code that runs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="the feed, newest first, 12 a page")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--tag", default=None, help="only posts with this tag")
    p.add_argument("--lang", choices=("en", "zh"), default="en", help="en (default) or zh")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a post's text and its latest metrics")
    p.add_argument("slug")
    p.add_argument("--lang", choices=("en", "zh"), default="en", help="en (default) or zh")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run a topic's experiment")
    p.add_argument("slug")
    p.add_argument("--preset", default="quick", help="smoke | quick | full (default quick)")
    p.add_argument("--seed", type=int, default=None, help="default: the preset's seed")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N]")
    p.add_argument("--out", type=Path, default=None, help="root of run directories (default runs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable); see --show-config")
    p.add_argument("--show-config", action="store_true", help="print the config fields and exit")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue an interrupted run in its own directory, from its checkpoints")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data parallel over N processes (torch.distributed; gloo on CPU, nccl "
                        "on CUDA); the same as torchrun --nproc-per-node N -m deepnotes run ...")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tour", help="run every topic in turn, then print a summary table")
    p.add_argument("--preset", default="quick")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", nargs="+", default=None, metavar="SLUG", help="a subset of topics")
    p.set_defaults(func=cmd_tour)

    p = sub.add_parser("bench",
                       help="run a peer comparison from benchmarks/ and record its figures")
    p.add_argument("name")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a fast check")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("publish", help="copy a topic's newest full run to results/<slug>/")
    p.add_argument("slug")
    p.add_argument("--run", type=Path, default=None, help="a specific run directory")
    p.add_argument("--force", action="store_true",
                   help="publish a run that is not the full preset as it is (the record says so)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("site", help="build or serve the feed site")
    p.add_argument("action", choices=["build", "serve"])
    p.add_argument("--out", type=Path, default=None, help="site folder (default site/)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--site-url", default=None,
                   help="where the site is served (https://host/path/): absolute links in the "
                        "Atom feeds and a sitemap.xml (default: DEEPNOTES_SITE_URL)")
    p.set_defaults(func=cmd_site)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # re-used by `run --nproc`
    from deepnotes.core.registry import UnknownTopicError

    try:
        return args.func(args)
    except (CliError, UnknownTopicError) as exc:
        print(f"deepnotes: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ndeepnotes: interrupted; what was written is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `deepnotes list | head`: the reader left; stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        print(f"deepnotes: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
