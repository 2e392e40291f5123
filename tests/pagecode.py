"""What the page tests know about the course pages: find them, expand their `--8<--`
includes exactly as MkDocs does, extract their code blocks, and classify each block.

See CONTRIBUTING.md ("How page code is tested") for the mechanism and the markers.
"""

from __future__ import annotations

import doctest
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import markdown
from mkdocs.utils.yaml import yaml_load
from pytest_codeblocks import extract_from_buffer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

PYTHON = {"python", "py", "python3", "pycon"}
SHELL = {"bash", "sh", "shell"}
DIAGRAM = {"mermaid"}  # drawn by the browser (Material's Mermaid support), not run
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*\{?\s*\.?([\w+-]*)")


@cache
def snippet_preprocessor():
    """The pymdownx.snippets preprocessor, configured from mkdocs.yml like the site."""
    config = yaml_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    options = {}
    for ext in config["markdown_extensions"]:
        if isinstance(ext, dict) and "pymdownx.snippets" in ext:
            options = dict(ext["pymdownx.snippets"] or {})
    options["base_path"] = [
        str((ROOT / p).resolve()) for p in options.get("base_path", ["."])
    ]
    options["check_paths"] = True
    md = markdown.Markdown(
        extensions=["pymdownx.snippets"],
        extension_configs={"pymdownx.snippets": options},
    )
    return md.preprocessors["snippet"]


def expand(path: Path) -> tuple[str, list[int]]:
    """The page with every `--8<--` include replaced by the included code.

    Returns the text and, for each of its lines, the page line it came from, so
    errors point at the real line of the .md file.
    """
    out: list[str] = []
    origin: list[int] = []
    for number, line in enumerate(
        path.read_text(encoding="utf-8").splitlines(), start=1
    ):
        lines = snippet_preprocessor().run([line]) if "8<-" in line else [line]
        out.extend(lines)
        origin.extend([number] * len(lines))
    return "\n".join(out) + "\n", origin


@dataclass(frozen=True)
class Tolerance:
    """`<!--output-tolerance: abs=0.05 pct=2 int=3 rel=0.01-->`, on the line above an
    expected-output marker: decimals may differ by `abs`, percentages by `pct`
    (points), integers by `int`, and any of them by `rel` times the shown value. Text
    must match."""

    abs: float = 0.0
    pct: float = 0.0
    int: float = 0.0
    rel: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Tolerance:
        values = {}
        for item in spec.split():
            key, _, value = item.partition("=")
            if key not in {"abs", "pct", "int", "rel"} or not value:
                raise ValueError(
                    f"bad output-tolerance item {item!r}: use abs=, pct=, int=, rel="
                )
            values[key] = float(value)
        return cls(**values)

    def allows(self, shown: str, printed: str, kind: str) -> bool:
        a, b = float(shown.replace(",", "")), float(printed.replace(",", ""))
        return abs(a - b) <= getattr(self, kind) + self.rel * abs(a) + 1e-12


TOLERANCE_MARKER = re.compile(r"^\s*<!--\s*output-tolerance:(.*?)-->\s*$")
EXPECTED_MARKER = re.compile(r"^\s*<!--[-\s]*pytest-codeblocks:expected-output")
NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?"


def number_kind(number: str, after: str) -> str:
    """Which tolerance applies to a number.

    'pct' (followed by %), 'abs' (a decimal) or 'int'.
    """
    if after.startswith("%"):
        return "pct"
    return "abs" if re.search(r"[.eE]", number) else "int"


def output_matches(
    shown: str,
    printed: str,
    ignore_whitespace: bool = False,
    tolerance: Tolerance | None = None,
) -> bool:
    """The page's output block against what the code printed: `...` matches anything
    (doctest's ELLIPSIS); trailing spaces and blank lines at either end do not count.
    With a tolerance, numbers may differ by as much as it allows; the text may not."""

    def tidy(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"

    shown, printed = tidy(shown), tidy(printed)
    if tolerance is None:
        flags = doctest.ELLIPSIS | (
            doctest.NORMALIZE_WHITESPACE if ignore_whitespace else 0
        )
        return doctest.OutputChecker().check_output(shown, printed, flags)
    pattern, expected = [], []
    pieces = re.split(
        rf"(\.\.\.|{NUMBER})", shown
    )  # the separators land at the odd positions
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            words = re.split(r"\s+", piece) if ignore_whitespace else [piece]
            pattern.append(r"\s+".join(re.escape(word) for word in words))
        elif piece == "...":
            pattern.append(".*?")
        else:
            pattern.append(f"({NUMBER})")
            expected.append((piece, number_kind(piece, pieces[i + 1])))
    m = re.fullmatch("".join(pattern), printed, re.S)
    return m is not None and all(
        tolerance.allows(shown_number, printed_number, kind)
        for (shown_number, kind), printed_number in zip(expected, m.groups())
    )


def describe_tolerance(tolerance: Tolerance | None) -> str:
    if tolerance is None:
        return ""
    parts = [f"{k} {v:g}" for k, v in vars(tolerance).items() if v]
    return f" (beyond the tolerance: {', '.join(parts)})"


TRACEBACK = "Traceback (most recent call last):"


def shows_error(expected_output: str | None) -> bool:
    """Whether a page's output block shows a Python error: a line `Traceback (most
    recent call last):`, then (usually elided as `...`) the frames, then the error. The
    block must then raise that error, as it does for a reader at the Python prompt."""
    return expected_output is not None and any(
        line.strip() == TRACEBACK for line in expected_output.splitlines()
    )


@dataclass
class Block:
    page: Path
    line: int  # the line of the opening fence in the .md file
    lang: str
    code: str
    expected_output: str | None = None
    ignore_whitespace: bool = False
    tolerance: Tolerance | None = (
        None  # how far printed numbers may be from the shown ones
    )
    marks: list[str] = field(default_factory=list)

    @property
    def skip_reason(self) -> str | None:
        """The reason given in a `<!--pytest.mark.skip(reason="...")-->` marker, or
        None."""
        for mark in self.marks:
            m = re.match(
                r"""pytest\.mark\.skip\(\s*reason\s*=\s*(["'])(.+?)\1\s*\)$""",
                mark.strip(),
            )
            if m:
                return m.group(2)
        return None

    @property
    def kind(self) -> str:
        """'python' or 'shell' (executed), 'diagram' (a Mermaid picture, labelled in
        the page's language), 'shown' (explicitly not run) or 'unaccounted'."""
        if self.lang in DIAGRAM and not self.marks:
            return "diagram"
        if self.skip_reason:
            return "shown"
        if self.marks:
            # only skip(reason=...) is allowed: any other mark hides a block
            return "unaccounted"
        if self.lang in PYTHON:
            return "python"
        if self.lang in SHELL:
            return "shell"
        return "unaccounted"


def extract(path: Path) -> list[Block]:
    """Every code block of a page (after expansion), in reading order."""
    text, origin = expand(path)
    # one per expected-output marker, in order: the tolerance marker above it, or None
    tolerances = []
    previous = ""
    for line in text.splitlines():
        if EXPECTED_MARKER.match(line):
            m = TOLERANCE_MARKER.match(previous)
            tolerances.append(Tolerance.parse(m.group(1)) if m else None)
        if line.strip():
            previous = line
    tolerances.reverse()
    blocks = []
    for cb in extract_from_buffer(io.StringIO(text)):
        m = FENCE.match(text.splitlines()[cb.lineno - 1])
        lang = (m.group(3) if m else "").lower()
        blocks.append(
            Block(
                page=path,
                line=origin[cb.lineno - 1],
                lang=lang,
                code=cb.code,
                expected_output=cb.expected_output,
                ignore_whitespace=cb.expected_output_ignore_whitespace,
                tolerance=tolerances.pop() if cb.expected_output is not None else None,
                marks=list(cb.marks),
            )
        )
    return blocks


def cell_source(block: Block) -> str:
    """The notebook cell that runs a block: Python as it is; a shell block under
    `%%bash`, stopping at its first failing command as a script under `bash -e` does."""
    code = block.code.rstrip("\n")
    return f"%%bash -e -o pipefail\n{code}" if block.kind == "shell" else code


def load_module(relative: str):
    """A script of this repository (benchmarks/, scripts/, hooks/) as a module, for the
    tests: those folders are not packages."""
    import importlib.util

    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_chapter(path: Path) -> bool:
    """A chapter page (docs/NN-slug.md): one that is also a notebook."""
    return re.match(r"\d\d-", path.name) is not None


def install_cell() -> str:
    """The first code cell of every chapter notebook: install gptlib where it is
    missing (Colab); where it is installed, as in the page tests, it does nothing."""
    repo = re.search(
        r"^repo_url: (\S+)", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M
    )
    return (
        "import importlib.util\n\n"
        'if importlib.util.find_spec("gptlib") is None:\n'
        f'    %pip install --quiet "gptlib @ git+{repo.group(1)}"'
    )


def language(path: Path) -> str:
    return "zh" if path.name.endswith(".zh.md") else "en"


def pages(lang: str | None = None) -> list[Path]:
    found = sorted(DOCS.rglob("*.md"))
    return [p for p in found if lang is None or language(p) == lang]


def twin(path: Path) -> Path:
    """The other language's page: x.md <-> x.zh.md."""
    if path.name.endswith(".zh.md"):
        return path.with_name(path.name[: -len(".zh.md")] + ".md")
    return path.with_name(path.name[: -len(".md")] + ".zh.md")


def diagram_structure(code: str) -> str:
    """A Mermaid diagram without its labels: node ids, arrows and keywords, which both
    languages share (`A["嵌入"] --> B` and `A["embedding"] --> B` are one structure)."""
    code = re.sub(r'"[^"]*"|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}|\|[^|]*\|', "", code)
    code = re.sub(
        r"^(\s*(?:Note\s+\w+(?:\s+of)?\s+[\w,]+|\w+\s*->>?\+?-?\s*\w+)\s*):.*$",
        r"\1",
        code,
        flags=re.M,
    )
    code = re.sub(
        r"^(\s*(?:participant|actor)\s+\w+)\s+as\s.*$", r"\1", code, flags=re.M
    )
    return "\n".join(
        " ".join(line.split()) for line in code.splitlines() if line.strip()
    )


def runs_the_same(a: Block, b: Block) -> bool:
    """Two blocks that run the same code and check the same output, the same way (two
    diagrams: the same picture, whatever the language of their labels)."""
    if a.kind == b.kind == "diagram":
        return diagram_structure(a.code) == diagram_structure(b.code)
    return (a.lang, a.kind, a.code, a.expected_output, a.ignore_whitespace) == (
        b.lang,
        b.kind,
        b.code,
        b.expected_output,
        b.ignore_whitespace,
    ) and a.tolerance == b.tolerance


def english_twin_runs(page: Path) -> bool:
    """True for a Chinese page whose blocks, every one, run the same as its English
    twin's: running the English page runs this page's code."""
    if language(page) != "zh" or not twin(page).exists():
        return False
    mine, theirs = extract(page), extract(twin(page))
    return len(mine) == len(theirs) and all(map(runs_the_same, mine, theirs))


def headings(path: Path) -> list[int]:
    """The heading levels of a page, in order (code blocks excluded)."""
    levels, in_fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = re.match(r"^(#{1,6})\s", line)
        if m and not in_fence:
            levels.append(len(m.group(1)))
    return levels


def includes(path: Path) -> list[str]:
    """The `--8<--` include targets of a page, in order."""
    return re.findall(
        r"""-+8<-+\s+["']([^"']+)["']""", path.read_text(encoding="utf-8")
    )


def build_site(out: Path, site_url: str | None = None) -> None:
    """`mkdocs build --strict` into `out`, for `site_url` (default: mkdocs.yml's); an
    error or any warning fails the calling test with MkDocs' own words."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    if site_url is not None:
        env["SITE_URL"] = site_url
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [
        line for line in done.stderr.splitlines() if re.search(r"\bWARNING\b", line)
    ]
    assert not warnings, warnings
