"""MkDocs hook: the glossary pages (docs/glossary.md, docs/glossary.zh.md), made from
terms.yml.

Each page holds the line `<!-- glossary: terms.yml -->`; this hook replaces it with the
table of every term, in English and Chinese, with a link to the chapter that introduces
it (the `chapter` of each term). Nothing is generated into docs/: the table is made at
build time, so it cannot drift from terms.yml. tests/test_terms.py checks each term
against its chapter in both languages.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MARKER = "<!-- glossary: terms.yml -->"


def chapter_titles(docs: Path, lang: str) -> dict[str, tuple[str, str]]:
    """'06' -> ('06-attention.md', 'Attention') (the page's H1, in `lang`)."""
    titles = {}
    for page in sorted(docs.glob("[0-9][0-9]-*.md")):
        if page.name.endswith(".zh.md"):
            continue
        source = page.with_name(page.stem + ".zh.md") if lang == "zh" else page
        h1 = source.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
        titles[page.name[:2]] = (page.name, h1)
    return titles


def glossary_table(terms: list[dict], docs: Path, lang: str) -> str:
    titles = chapter_titles(docs, lang)

    def chapter(term: dict) -> str:
        name, title = titles[term["chapter"]]
        return f"[{term['chapter']} {title}]({name})"

    if lang == "zh":
        rows = ["| 中文 | English | 引入的章节 |", "|---|---|---|"]
        ordered = sorted(terms, key=lambda t: (t["chapter"], t["en"].lower()))
        rows += [f"| {t['zh']} | {t['en']} | {chapter(t)} |" for t in ordered]
    else:
        rows = ["| English | 中文 | introduced in |", "|---|---|---|"]
        ordered = sorted(terms, key=lambda t: t["en"].lower())
        rows += [f"| {t['en']} | {t['zh']} | {chapter(t)} |" for t in ordered]
    return "\n".join(rows)


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    docs = Path(config["docs_dir"])
    terms = yaml.safe_load((docs.parent / "terms.yml").read_text(encoding="utf-8"))
    lang = "zh" if page.file.src_uri.endswith(".zh.md") else "en"
    return markdown.replace(MARKER, glossary_table(terms, docs, lang))
