"""MkDocs hook: the chapter notebooks (docs/notebooks/*.ipynb) as real pages of the
theme, in both languages.

mkdocs-jupyter wraps each notebook in a NotebookFile, which renders it. The i18n plugin
(mkdocs-static-i18n) runs its own `on_files` at priority -100, whatever the plugin
order, and recreates every file as a plain File: the wrapper is lost and the notebook
page becomes the raw .ipynb text, with no warning even under --strict (measured:
TOOLCHAIN.md section 6). This hook runs after it and wraps the notebooks again,
keeping the address i18n gave each one, and gives each notebook page its
language-switcher links where i18n left them out.

It also mends what nbconvert puts in each notebook page: it drops the MathJax 2 and
Mermaid loaders that fetch from a CDN (the site serves MathJax 3 itself, and
docs/javascripts/mathjax.js typesets the notebooks' `$...$` too); it gives the headings
the same ids as the chapter page's (nbconvert's differ from the table of contents', and
Chinese headings get none); and it keeps the notebook pages out of the search index
(they hold the chapter's text a second time).
"""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

from mkdocs.plugins import event_priority
from mkdocs_jupyter.plugin import NotebookFile
from pymdownx.slugs import slugify

SLUGIFY = slugify(case="lower")  # as mkdocs.yml's toc extension makes the pages' ids


@event_priority(-200)  # after i18n's on_files (-100)
def on_files(files, config):
    jupyter = config.plugins["mkdocs-jupyter"]
    i18n = config.plugins["i18n"]
    locales = [lang.locale for lang in i18n.config.languages if lang.build]
    for file in list(files):
        if isinstance(file, NotebookFile) or not jupyter.should_include(file):
            continue
        notebook = NotebookFile(file, **config)
        notebook.dest_path, notebook.url = file.dest_path, file.url
        notebook.abs_dest_path = os.path.normpath(
            os.path.join(config["site_dir"], notebook.dest_path)
        )
        # notebooks/06-attention/ <-> zh/notebooks/06-attention/
        english = re.sub(r"^zh/", "", file.url)
        alternates = getattr(file, "alternates", None)
        if alternates is not None:
            for locale in locales:
                url = english if locale == "en" else f"{locale}/{english}"
                alternates.setdefault(locale, SimpleNamespace(url=url))
        files.remove(file)
        files.append(notebook)
    return files


CDN_LOADERS = re.compile(
    r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->"
    r'|<script type="module">(?:(?!</script>).)*?jp-Mermaid.*?</script>',
    re.S,
)
HEADING = re.compile(r'<h([1-6]) id="([^"]*)"(.*?)</h\1>', re.S)


def toc_items(toc) -> list:
    items = []
    for item in toc:
        items += [item, *toc_items(item.children)]
    return items


def on_page_content(html, page, config, files):
    if not isinstance(page.file, NotebookFile):
        return html
    page.meta["search"] = {"exclude": True}
    html = CDN_LOADERS.sub("", html)
    items = toc_items(page.toc)
    headings = list(HEADING.finditer(html))
    if len(items) != len(headings):  # never seen: leave nbconvert's ids
        return html
    used: set[str] = set()
    for item in items:
        base = SLUGIFY(item.title, "-")
        item.id = base
        n = 0
        while item.id in used:
            n += 1
            item.id = f"{base}_{n}"
        used.add(item.id)

    ids = iter(items)

    def heading(m: re.Match) -> str:
        new = next(ids).id
        inner = m.group(3).replace(f'href="#{m.group(2)}"', f'href="#{new}"')
        return f'<h{m.group(1)} id="{new}"{inner}</h{m.group(1)}>'

    return HEADING.sub(heading, html)
