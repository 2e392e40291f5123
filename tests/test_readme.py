"""What the README shows works: its Python example runs, its gptlib command lines parse
(tests/test_wheel.py runs them all from an installed wheel)."""

import re
import shlex

import pagecode

from gptlib.cli import build_parser

README = (pagecode.ROOT / "README.md").read_text(encoding="utf-8")


# The README's Python example runs in tests/test_wheel.py, from the installed wheel in
# an empty folder: a stricter test than running it here, so it is not run twice.


def test_readme_gptlib_commands_parse():
    commands = re.findall(r"^python -m gptlib (.+?)(?:\s+#.*)?$", README, re.M)
    assert len(commands) >= 4
    for line in commands:
        args = shlex.split(line)
        if "--help" in args:
            continue
        build_parser().parse_args(args)  # exits (fails the test) on a bad flag


def test_readme_names_the_two_commands():
    assert "./dev serve" in README and "./dev test" in README
