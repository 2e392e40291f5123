"""Every chapter as a Jupyter notebook, made from the same sources as its page.

    ./dev notebooks         # or: python scripts/make_notebooks.py

writes docs/notebooks/NN-slug.ipynb and NN-slug.zh.ipynb for each chapter page:

* the page's prose as markdown cells (admonitions as quotes, links to the published
  site, its figures as cell attachments, so the notebook stands on its own in Colab);
* its blocks as code cells, made by `pagecode.cell_source`: exactly the cells the page
  tests run, in order, in one Jupyter kernel (conftest.py), so running the page's tests
  runs the notebook top to bottom;
* as each code cell's stored output, the output the page shows: the page tests check
  it against a real run (with the page's stated tolerance), and it does not move from
  machine to machine, so regenerating a notebook needs no run.

Both languages' notebooks carry the same code cells; only the prose differs. The site
renders them with mkdocs-jupyter (hooks/i18n_notebooks.py). tests/test_notebooks.py
checks that the committed notebooks are what this script writes today.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import pagecode  # noqa: E402 - the page tests' reading of the pages, shared

OUT = pagecode.DOCS / "notebooks"
MKDOCS_YML = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
# the published addresses (not $SITE_URL: a notebook must not depend on who built it)
SITE_URL = re.search(r'site_url: !ENV \[SITE_URL, "([^"]+)"\]', MKDOCS_YML).group(1)

WORDS = {
    "en": {
        "made_from": "This notebook is the chapter [{title}]({url}) of *Build a GPT "
        "from scratch*, made from the same sources as the page. The outputs stored in "
        "it are the ones the page shows, checked against a real run by the course's "
        "tests (on a 2-core CPU: on a GPU some numbers differ in the last digits).",
        "install": "In Colab, or any Python without `gptlib`, the first cell installs "
        "the course's library; where it is installed already, it does nothing.",
    },
    "zh": {
        "made_from": "这个笔记本就是《从零构建 GPT》的一章 [{title}]({url})，与网页出自"
        "同一份源文件。其中保存的输出就是网页上显示的输出，由课程的测试对照真实运行检查过"
        "（在 2 核 CPU 上；换成 GPU，有些数字的最后几位会不同）。",
        "install": "在 Colab 或任何没有 `gptlib` 的 Python 里，第一个代码单元会先安装"
        "课程的库；已经装好的地方，它什么也不做。",
    },
}


def chapters(lang: str | None = None) -> list[Path]:
    """The chapter pages (docs/NN-slug.md): the ones that get a notebook."""
    return [p for p in pagecode.pages(lang) if pagecode.is_chapter(p)]


def notebook_path(page: Path) -> Path:
    return OUT / page.name.replace(".md", ".ipynb")


def page_url(page: Path, anchor: str = "") -> str:
    """The published address of a page (`06-attention.md` in a Chinese page means the
    Chinese page, as the i18n plugin resolves it)."""
    stem = page.name.split(".")[0]
    prefix = "zh/" if pagecode.language(page) == "zh" else ""
    path = "" if stem == "index" else f"{stem}/"
    return f"{SITE_URL}{prefix}{path}{anchor}"


ADMONITION = re.compile(r'^(\s*)(?:!!!|\?\?\?\+?)\s*(\w+)(?:\s+"([^"]*)")?\s*$')
LINK = re.compile(r"\]\((?!https?:|#|figures/)([\w.-]+\.md)(#[\w-]+)?\)")
FIGURE = re.compile(r"\]\(figures/([\w.-]+\.png)\)")
HEADING_ID = re.compile(r"^(#{1,6} .*?)\s*\{#([\w-]+)\}\s*$")
COMMENT = re.compile(r"^\s*<!--.*-->\s*$")


class Writer:
    """Turns the expanded text of a page into notebook cells."""

    def __init__(self, page: Path):
        self.page = page
        self.lang = pagecode.language(page)
        self.cells: list = []
        self.markdown: list[str] = []
        self.attachments: dict = {}

    def flush(self) -> None:
        # a quote cut by a code cell: no empty quote lines at its ends, none doubled
        text = re.sub(r"(\n>)+\n(?=\n|>)", "\n>\n", "\n".join(self.markdown))
        text = re.sub(r"^(>\n)+|(\n>)+$", "", text.strip("\n")).strip("\n")
        if text.strip("> \n"):
            cell = nbformat.v4.new_markdown_cell(text)
            if self.attachments:
                cell.attachments = self.attachments
            self.cells.append(cell)
        self.markdown, self.attachments = [], {}

    def prose(self, line: str) -> None:
        def local(m: re.Match) -> str:
            target = self.page.with_name(m.group(1))
            if self.lang == "zh" and not target.name.endswith(".zh.md"):
                target = pagecode.twin(target)
            return f"]({page_url(target, m.group(2) or '')})"

        def figure(m: re.Match) -> str:
            name = m.group(1)
            data = (pagecode.DOCS / "figures" / name).read_bytes()
            self.attachments[name] = {"image/png": base64.b64encode(data).decode()}
            return f"](attachment:{name})"

        # `## Title {#id}` (attr_list): Jupyter's markdown has no such syntax
        heading = HEADING_ID.match(line)
        if heading:
            self.markdown.append(f'<a id="{heading.group(2)}"></a>\n')
            line = heading.group(1)
        self.markdown.append(FIGURE.sub(figure, LINK.sub(local, line)))

    def code(self, source: str, output: str | None) -> None:
        self.flush()
        cell = nbformat.v4.new_code_cell(source)
        if output is not None:
            cell.outputs = stored_outputs(output)
        self.cells.append(cell)


def stored_outputs(shown: str) -> list:
    """What a code cell stores: the page's output, as the stream (and error) the
    notebook front ends draw."""
    if not pagecode.shows_error(shown):
        return [nbformat.v4.new_output("stream", name="stdout", text=shown)]
    before, _, after = shown.partition(pagecode.TRACEBACK)
    lines = [pagecode.TRACEBACK, *after.strip("\n").splitlines()]
    name, _, value = lines[-1].partition(": ")
    error = nbformat.v4.new_output("error", ename=name, evalue=value, traceback=lines)
    if before.strip():
        return [nbformat.v4.new_output("stream", name="stdout", text=before), error]
    return [error]


def fence_end(lines: list[str], start: int) -> int:
    """The index of the line that closes the fence opened at `start`."""
    indent, fence = pagecode.FENCE.match(lines[start]).group(1, 2)
    for i in range(start + 1, len(lines)):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*$", lines[i])
        if m and m.group(2)[0] == fence[0] and len(m.group(2)) >= len(fence):
            return i
    raise ValueError(f"{lines[start]!r}: the fence is never closed")


def build(page: Path) -> nbformat.NotebookNode:
    """The notebook of one chapter page."""
    text, _ = pagecode.expand(page)
    lines = text.splitlines()
    blocks = iter(pagecode.extract(page))
    writer = Writer(page)
    title = lines[0].lstrip("# ").strip()
    writer.prose(lines[0])
    writer.prose("")
    words = WORDS[writer.lang]
    writer.prose(words["made_from"].format(title=title, url=page_url(page)))
    writer.prose("")
    writer.prose(words["install"])
    writer.code(pagecode.install_cell(), None)
    quote = None  # the indentation of the admonition's body while inside one
    i, previous = 1, ""
    while i < len(lines):
        line = lines[i]
        if (
            quote is not None
            and line.strip()
            and len(line) - len(line.lstrip()) < quote
        ):
            quote = None
            writer.prose("")
        if pagecode.FENCE.match(line):
            end = fence_end(lines, i)
            if pagecode.EXPECTED_MARKER.match(previous):
                i, previous = end + 1, lines[end]  # stored with the cell above it
                continue
            block = next(blocks)
            if block.kind in ("python", "shell"):
                writer.code(pagecode.cell_source(block), block.expected_output)
            else:  # shown, not run; a diagram: part of the prose
                indent = len(line) - len(line.lstrip())
                for fenced in lines[i : end + 1]:
                    writer.prose(("> " if quote is not None else "") + fenced[indent:])
            i, previous = end + 1, lines[end]
            continue
        if not COMMENT.match(line):
            m = ADMONITION.match(line)
            if m:
                quote = len(m.group(1)) + 4
                title = m.group(3) or m.group(2).capitalize()
                writer.prose(f"{m.group(1)}> **{title}**")
                writer.prose(f"{m.group(1)}>")
            elif quote is not None:
                writer.prose("> " + line[quote:] if line.strip() else ">")
            else:
                writer.prose(line)
        if line.strip():
            previous = line
        i += 1
    writer.flush()
    assert next(blocks, None) is None, f"{page.name}: blocks left over"
    nb = nbformat.v4.new_notebook(cells=writer.cells)
    for number, cell in enumerate(nb.cells):
        cell.id = f"cell-{number:03d}"  # stable ids: the same page, the same file
    nb.metadata = {
        "kernelspec": {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        },
        "language_info": {"name": "python"},
    }
    return nb


def render(page: Path) -> str:
    return nbformat.writes(build(page)) + "\n"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    wanted = {notebook_path(page): page for page in chapters()}
    for stale in set(OUT.glob("*.ipynb")) - set(wanted):
        stale.unlink()
        print(f"removed {stale.relative_to(ROOT)}")
    for path, page in sorted(wanted.items()):
        text = render(page)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    print(f"{len(wanted)} notebooks in {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
