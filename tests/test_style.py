"""Code that is shown reads well: formatted and linted by ruff (pyproject.toml), no line
wider than a page's code block, sections named after concepts, every section shown."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pagecode
import pytest

ROOT = pagecode.ROOT
PYTHON_PATHS = [
    "gptlib",
    "snippets",
    "tests",
    "benchmarks",
    "scripts",
    "hooks",
    "conftest.py",
]
SHOWN_FILES = sorted([*ROOT.glob("gptlib/*.py"), *ROOT.glob("snippets/*.py")])
# a code block of the site at 1280 px shows 88 characters without scrolling
MAX_COLUMNS = 88
MARKER = re.compile(r"^(\s*)# --8<-- \[(start|end):(\w+)\]\s*$")


def ruff(*args: str) -> subprocess.CompletedProcess:
    venv_bin = str(Path(sys.executable).parent)
    exe = shutil.which("ruff", path=venv_bin) or shutil.which("ruff")
    assert exe, (
        "ruff is not installed (it is in the test extra: ./dev test installs it)"
    )
    return subprocess.run(
        [exe, *args, *PYTHON_PATHS], cwd=ROOT, capture_output=True, text=True
    )


def test_ruff_lint_passes():
    done = ruff("check", "--output-format", "concise")
    assert done.returncode == 0, done.stdout[-4000:]


def test_ruff_format_leaves_the_code_as_it_is():
    done = ruff("format", "--check")
    assert done.returncode == 0, (
        done.stdout[-4000:] + "\nrun: .venv/bin/ruff format " + " ".join(PYTHON_PATHS)
    )


@pytest.mark.parametrize("page", pagecode.pages(), ids=lambda p: p.name)
def test_code_on_the_page_fits_without_scrolling(page):
    too_wide = [
        f"line {block.line}: {line[:60]}... ({len(line)} columns)"
        for block in pagecode.extract(page)
        if block.lang in pagecode.PYTHON | pagecode.SHELL
        for line in block.code.splitlines()
        if len(line) > MAX_COLUMNS
    ]
    assert not too_wide, (
        f"{page.name}: code wider than {MAX_COLUMNS} columns:\n" + "\n".join(too_wide)
    )


def sections(path: Path) -> list[tuple[int, str, str, str]]:
    """(line, indentation, start|end, name) of every section marker of a file."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = MARKER.match(line)
        if m:
            found.append((number, m.group(1), m.group(2), m.group(3)))
    return found


@pytest.mark.parametrize("path", SHOWN_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sections_are_named_after_concepts_and_close_where_they_open(path):
    markers = sections(path)
    assert not [name for *_, name in markers if re.match(r"ch\d", name)], (
        "a section named after a chapter"
    )
    opened = {}
    for line, _, kind, name in markers:
        if kind == "start":
            assert name not in opened, (
                f"{path.name}:{line}: section {name} opened twice"
            )
            opened[name] = line
        else:
            assert opened.pop(name, None) is not None, (
                f"{path.name}:{line}: {name} ends but never starts"
            )
    assert not opened, f"{path.name}: sections never closed: {sorted(opened)}"
    classes = [
        node
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
    ]
    for line, indent, _, name in markers:
        for cls in classes:
            inside = cls.lineno < line <= cls.end_lineno
            assert not (inside and not indent), (
                f"{path.name}:{line}: marker {name} at column 0 inside {cls.name}"
            )


def test_every_section_is_shown_on_a_page():
    included = {
        include for page in pagecode.pages() for include in pagecode.includes(page)
    }
    unshown = [
        f"{path.relative_to(ROOT)}:{name}"
        for path in SHOWN_FILES
        for _, _, kind, name in sections(path)
        if kind == "start" and f"{path.relative_to(ROOT)}:{name}" not in included
    ]
    assert not unshown, (
        f"sections no page includes (show them, or remove the markers): {unshown}"
    )
