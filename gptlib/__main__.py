"""`python -m gptlib ...` runs the command-line interface."""

from gptlib.cli import main

raise SystemExit(main())
