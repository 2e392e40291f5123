"""What the page tests know about the course pages: find them, expand their `--8<--`
includes exactly as MkDocs does, extract their code blocks, and classify each block.

See CONTRIBUTING.md ("How page code is tested") for the mechanism and the markers.
"""

from __future__ import annotations

import io
import re
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
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*\{?\s*\.?([\w+-]*)")


@cache
def snippet_preprocessor():
    """The pymdownx.snippets preprocessor, configured from mkdocs.yml as the site build is."""
    config = yaml_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    options = {}
    for ext in config["markdown_extensions"]:
        if isinstance(ext, dict) and "pymdownx.snippets" in ext:
            options = dict(ext["pymdownx.snippets"] or {})
    options["base_path"] = [str((ROOT / p).resolve()) for p in options.get("base_path", ["."])]
    options["check_paths"] = True
    md = markdown.Markdown(extensions=["pymdownx.snippets"], extension_configs={"pymdownx.snippets": options})
    return md.preprocessors["snippet"]


def expand(path: Path) -> tuple[str, list[int]]:
    """The page with every `--8<--` include replaced by the included code.

    Returns the text and, for each of its lines, the page line it came from, so
    errors point at the real line of the .md file.
    """
    pre = snippet_preprocessor()
    out: list[str] = []
    origin: list[int] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        lines = pre.run([line]) if "8<-" in line else [line]
        out.extend(lines)
        origin.extend([number] * len(lines))
    return "\n".join(out) + "\n", origin


@dataclass
class Block:
    page: Path
    line: int  # the line of the opening fence in the .md file
    lang: str
    code: str
    expected_output: str | None = None
    ignore_whitespace: bool = False
    marks: list[str] = field(default_factory=list)

    @property
    def skip_reason(self) -> str | None:
        """The reason given in a `<!--pytest.mark.skip(reason="...")-->` marker, if any."""
        for mark in self.marks:
            m = re.match(r"""pytest\.mark\.skip\(\s*reason\s*=\s*(["'])(.+?)\1\s*\)$""", mark.strip())
            if m:
                return m.group(2)
        return None

    @property
    def kind(self) -> str:
        """'python' or 'shell' (executed), 'shown' (explicitly not run), or 'unaccounted'."""
        if self.skip_reason:
            return "shown"
        if self.marks:
            return "unaccounted"  # only skip(reason=...) is allowed: any other mark hides a block
        if self.lang in PYTHON:
            return "python"
        if self.lang in SHELL:
            return "shell"
        return "unaccounted"


def extract(path: Path) -> list[Block]:
    """Every code block of a page (after expansion), in reading order."""
    text, origin = expand(path)
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
                marks=list(cb.marks),
            )
        )
    return blocks


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
    return re.findall(r"""-+8<-+\s+["']([^"']+)["']""", path.read_text(encoding="utf-8"))
