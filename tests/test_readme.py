"""What the README shows works: its Python example runs, its gptlib command lines parse
(tests/test_wheel.py runs them all from an installed wheel)."""

import re
import shlex
import subprocess
import sys

import pagecode

from gptlib.cli import build_parser

README = (pagecode.ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_python_example_runs(tmp_path):
    (code,) = re.findall(r"```python\n(.*?)```", README, re.S)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("The ")


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
