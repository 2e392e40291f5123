"""The chapter notebooks (docs/notebooks/, made by scripts/make_notebooks.py).

Their execution is the page tests' (conftest.py): a page's blocks run, in order, in one
fresh Jupyter kernel, each as the notebook cell `pagecode.cell_source` makes of it,
after the notebook's install cell; each output is compared with the page's. These tests
check that the committed notebooks are exactly those cells, with the page's outputs
stored, in both languages; tests/test_site_build.py and tests/test_browser.py check the
pages the site makes of them.
"""

import re

import nbformat
import pagecode
import pytest

make_notebooks = pagecode.load_module("scripts/make_notebooks.py")

CHAPTERS = make_notebooks.chapters()


def read(page) -> nbformat.NotebookNode:
    return nbformat.read(make_notebooks.notebook_path(page), as_version=4)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_every_chapter_has_a_notebook_and_no_notebook_is_left_over():
    wanted = {make_notebooks.notebook_path(page) for page in CHAPTERS}
    there = set(make_notebooks.OUT.glob("*.ipynb"))
    assert wanted == there, (
        f"missing: {sorted(p.name for p in wanted - there)}, "
        f"left over: {sorted(p.name for p in there - wanted)}; run ./dev notebooks"
    )
    assert len(wanted) == 2 * len(make_notebooks.chapters("en")) >= 26


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.name)
def test_the_notebook_is_current(page):
    """The committed notebook is what the generator makes of the page today."""
    path = make_notebooks.notebook_path(page)
    assert path.read_text(encoding="utf-8") == make_notebooks.render(page), (
        f"{path.name} is out of date with {page.name}: run ./dev notebooks"
    )


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.name)
def test_the_notebook_is_valid_and_runs_what_the_page_tests_run(page):
    nb = read(page)
    nbformat.validate(nb)
    runnable = [b for b in pagecode.extract(page) if b.kind in ("python", "shell")]
    cells = code_cells(nb)
    assert [c.source for c in cells] == [pagecode.install_cell()] + [
        pagecode.cell_source(b) for b in runnable
    ]
    for cell, block in zip(cells[1:], runnable):
        stored = "".join(
            out.get("text", "") or "\n".join(out.get("traceback", []))
            for out in cell.outputs
        )
        if block.expected_output is None:
            assert cell.outputs == []
        else:
            assert stored.strip() == block.expected_output.strip()
    # the prose is the page's: its headings, in order, and no marker left over
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "<!--" not in markdown and "--8<--" not in markdown
    prose = re.sub(r"^(> )?```.*?^(> )?```", "", markdown, flags=re.M | re.S)
    headings = re.findall(r"^#{1,6} .+$", prose, re.M)
    assert len(headings) == len(pagecode.headings(page))


@pytest.mark.parametrize("en", make_notebooks.chapters("en"), ids=lambda p: p.name)
def test_both_languages_carry_the_same_code_cells(en):
    """So that running the English notebook (the page tests) runs the Chinese one."""
    a, b = code_cells(read(en)), code_cells(read(pagecode.twin(en)))
    assert [(c.source, c.outputs) for c in a] == [(c.source, c.outputs) for c in b]
    prose_a = [c.source for c in read(en).cells if c.cell_type == "markdown"]
    prose_b = [
        c.source for c in read(pagecode.twin(en)).cells if c.cell_type == "markdown"
    ]
    assert prose_a != prose_b  # the prose is each language's own


def test_an_error_block_is_stored_as_the_error_it_raises():
    page = pagecode.DOCS / "02-tensors.md"
    errors = [
        out
        for cell in code_cells(read(page))
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert errors and all(out.ename == "RuntimeError" for out in errors)


def test_figures_travel_with_the_notebook():
    """Colab has no docs/figures/: the figures are attachments of the markdown cells."""
    nb = read(pagecode.DOCS / "06-attention.zh.md")
    attached = [name for cell in nb.cells for name in cell.get("attachments", {})]
    assert "ch06-attention-map.png" in attached
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "](attachment:ch06-attention-map.png)" in text
    assert "](figures/" not in text
    # links to other chapters go to the published Chinese pages
    assert "https://gpt-from-scratch.github.io/gpt-from-scratch/zh/" in text
