"""Checks on the pages themselves (their code is run by conftest.py)."""

import re

import pagecode
import pytest

PAGES = pagecode.pages()


def test_there_are_pages_in_both_languages():
    assert pagecode.pages("en") and len(pagecode.pages("en")) == len(
        pagecode.pages("zh")
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_block_is_run_or_marked(page):
    """A block is executed (python, bash) or explicitly marked shown-not-run, with a
    reason."""
    blocks = pagecode.extract(page)
    unaccounted = [
        f"line {b.line} ({b.lang or 'no language'}, marks {b.marks})"
        for b in blocks
        if b.kind == "unaccounted"
    ]
    assert not unaccounted, f"{page.name}: blocks neither run nor marked: {unaccounted}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_includes_resolve_and_markers_do_not_leak(page):
    text, _ = pagecode.expand(page)  # raises on a missing file or section
    assert "--8<-- [start:" not in text and "--8<-- [end:" not in text


@pytest.mark.parametrize(
    "page", [p for p in PAGES if re.match(r"\d\d-", p.name)], ids=lambda p: p.name
)
def test_chapters_end_with_exercises_and_run_solutions(page):
    text = page.read_text(encoding="utf-8")
    title = "练习" if pagecode.language(page) == "zh" else "Exercises"
    assert re.search(rf"^## {title}\s*$", text, re.M), (
        f"{page.name} has no '## {title}' section"
    )
    exercises = text[re.search(rf"^## {title}\s*$", text, re.M).end() :]
    solutions = re.findall(
        r'^\?\?\?\+? \w+ "[^"]+"\n((?:\n|    .*\n)+)', exercises, re.M
    )
    assert len(solutions) >= 2, f"{page.name}: want at least 2 collapsed solutions"
    for body in solutions:
        assert "```python" in body, (
            f"{page.name}: a solution without a runnable python block"
        )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_placeholders_and_figures_exist(page):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"coming soon|TODO|FIXME|敬请期待|待补充", text, re.I)
    for figure in re.findall(r"\]\((figures/[^)]+)\)", text):
        assert (pagecode.DOCS / figure).exists(), (
            f"{page.name} shows {figure}, which no page code drew"
        )


def test_every_committed_figure_is_shown_by_a_page():
    shown = {
        name
        for page in PAGES
        for name in re.findall(
            r"\]\(figures/([^)]+)\)", page.read_text(encoding="utf-8")
        )
    }
    committed = {p.name for p in (pagecode.DOCS / "figures").glob("*.png")}
    assert committed <= shown, f"figures no page shows: {sorted(committed - shown)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_definitions_keep_their_blank_lines(page):
    """Sections included one after another in one fence keep the blank lines that part
    them in the source: no `def` or `class` glued to the line above it."""
    glued = []
    for block in pagecode.extract(page):
        lines = block.code.split("\n") if block.lang == "python" else []
        for above, line in zip(lines, lines[1:]):
            if re.match(r"(async def|def|class|@)\b", line) and above.strip():
                if not above.startswith(("@", "#")):
                    glued.append(
                        f"line {block.line}: {line[:40]!r} after {above[:40]!r}"
                    )
    assert not glued, glued
