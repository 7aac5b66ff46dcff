"""``python -m deepnotes`` is the ``deepnotes`` command."""

import signal

# Until the command has imported what it needs, Ctrl-C is noted rather than raised in the middle
# of an import (see cli._hold_interrupt); cli.main raises it cleanly once it takes over.
_PRESSED: list[int] = []
_DEFAULT = signal.signal(signal.SIGINT, lambda *_: _PRESSED.append(1))

from deepnotes.cli import main  # noqa: E402

signal.signal(signal.SIGINT, _DEFAULT)
if _PRESSED:
    import sys

    print("deepnotes: interrupted before anything started", file=sys.stderr)
    raise SystemExit(130)
raise SystemExit(main())
