"""``python -m deepnotes`` is the ``deepnotes`` command."""

from deepnotes.cli import main

raise SystemExit(main())
