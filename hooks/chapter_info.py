"""MkDocs hook: where a chapter stands in the course, and when it last changed.

For each chapter page and its notebook page it sets `page.meta.chapter`, which
overrides/partials/content.html shows above the page: "Chapter 06 · 6 of 13", with links
to run the chapter as a notebook (the notebook page, its .ipynb, Colab) or, on the
notebook page, back to the chapter (whose .md its "edit this page" link opens: the
notebook is generated). For every page it sets `page.meta.revision_date`,
which Material shows at the bottom: the date of the last commit that changed the page or
a file it includes (`--8<--`), in one `git log` for the whole site. Outside a git
checkout there is no date and nothing is shown.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

CHAPTER = re.compile(r"^(notebooks/)?(\d\d)-([\w-]+?)(\.zh)?\.(md|ipynb)$")
INCLUDE = re.compile(r"""-+8<-+\s+["']([^"':]+)""")
WORDS = {
    "en": {
        "chapter": "Chapter {number} · {position} of {total}",
        "notebook": "Run this chapter as a notebook",
        "download": "Download the .ipynb",
        "colab": "Open in Colab",
        "page": "Read this chapter as a page",
        "updated": "Last updated {date}",
    },
    "zh": {
        "chapter": "第 {number} 章 · 共 {total} 章中的第 {position} 章",
        "notebook": "以笔记本运行本章",
        "download": "下载 .ipynb",
        "colab": "在 Colab 中打开",
        "page": "以网页阅读本章",
        "updated": "最后更新于 {date}",
    },
}


@cache
def last_changed(root: str) -> dict[str, str]:
    """The date (YYYY-MM-DD) of the newest commit that touched each file."""
    try:
        log = subprocess.run(
            ["git", "log", "--format=@%cs", "--name-only", "--", "."],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    dates: dict[str, str] = {}
    date = ""
    for line in log.splitlines():
        if line.startswith("@"):
            date = line[1:]
        elif line:
            dates.setdefault(line, date)  # newest first: keep the first date seen
    return dates


def revision_date(docs_dir: Path, src_uri: str) -> str | None:
    root = docs_dir.parent
    dates = last_changed(str(root))
    source = docs_dir / src_uri
    files = [f"{docs_dir.name}/{src_uri}"]
    if source.suffix == ".md":
        files += INCLUDE.findall(source.read_text(encoding="utf-8"))
    known = [dates[f] for f in files if f in dates]
    return max(known) if known else None


def on_page_context(context, page, config, nav):
    docs_dir = Path(config["docs_dir"])
    src = page.file.src_uri
    lang = "zh" if ".zh." in src else "en"
    words = WORDS[lang]
    date = revision_date(docs_dir, src)
    if date:
        page.meta["revision_date"] = words["updated"].format(date=date)
    m = CHAPTER.match(src)
    if not m:
        return context
    notebook_page, number, slug = m.group(1), m.group(2), m.group(3)
    if notebook_page and page.edit_url:  # a notebook is made from its page: edit that
        page.edit_url = page.edit_url.replace("/notebooks/", "/").replace(
            ".ipynb", ".md"
        )
    chapters = sorted(
        p.name[:2]
        for p in docs_dir.glob("[0-9][0-9]-*.md")
        if not p.name.endswith(".zh.md")
    )
    suffix = ".zh" if lang == "zh" else ""
    home = "zh/" if lang == "zh" else ""  # from the site's root (the template's `url`)
    ipynb = f"{number}-{slug}{suffix}.ipynb"
    repository = config["repo_url"].rstrip("/").removeprefix("https://github.com/")
    page.meta["chapter"] = {
        "label": words["chapter"].format(
            number=number, position=chapters.index(number) + 1, total=len(chapters)
        ),
        "is_notebook": bool(notebook_page),
        "page": (f"{home}{number}-{slug}/", words["page"]),
        "notebook": (f"{home}notebooks/{number}-{slug}/", words["notebook"]),
        "download": (f"{home}notebooks/{number}-{slug}/{ipynb}", words["download"]),
        "colab": (
            f"https://colab.research.google.com/github/{repository}/blob/main/"
            f"docs/notebooks/{ipynb}",
            words["colab"],
        ),
    }
    return context
