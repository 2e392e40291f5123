"""`mkdocs build --strict` passes with no warnings, in both languages, with Chinese
search."""

import importlib
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pagecode
import pytest


@pytest.fixture(scope="module")
def site(served_site) -> Path:
    """The strict build of conftest.py's served_site (shared with the browser tests)."""
    return served_site.path


def test_both_languages_are_built(site: Path):
    for page in pagecode.pages("en"):
        slug = "" if page.stem == "index" else page.stem + "/"
        en = (site / slug / "index.html").read_text(encoding="utf-8")
        zh = (site / "zh" / slug / "index.html").read_text(encoding="utf-8")
        assert '<html lang="en"' in en and '<html lang="zh"' in zh
        assert 'hreflang="zh"' in en and 'hreflang="en"' in zh  # the language switcher
        # "edit this page": each language's own source file
        edit = "https://github.com/gpt-from-scratch/gpt-from-scratch/edit/main/docs/"
        assert f'href="{edit}{page.name}"' in en
        assert f'href="{edit}{pagecode.twin(page).name}"' in zh


def test_notebook_pages_are_pages_of_the_theme_in_both_languages(site: Path):
    """mkdocs-jupyter renders each chapter notebook as a page; with the i18n plugin
    it silently writes the raw .ipynb instead unless hooks/i18n_notebooks.py runs."""
    chapters = [p for p in pagecode.pages("en") if pagecode.is_chapter(p)]
    for page in chapters:
        for lang, prefix in (("en", ""), ("zh", "zh/")):
            folder = site / prefix / "notebooks" / page.stem
            html = (folder / "index.html").read_text(encoding="utf-8")
            where = f"{prefix}notebooks/{page.stem}/"
            assert f'<html lang="{lang}"' in html, where
            assert 'class="md-header' in html and "jupyter-wrapper" in html, where
            assert '"nbformat"' not in html, f"{where} is the raw notebook"
            assert "jp-CodeCell" in html and "jp-OutputArea" in html, where
            assert "cdnjs.cloudflare.com" not in html, f"{where} loads MathJax 2"
            other = "zh" if lang == "en" else "en"
            assert f'hreflang="{other}"' in html, f"{where}: no language switcher"
            name = page.stem + (".zh" if lang == "zh" else "") + ".ipynb"
            assert (folder / name).is_file(), f"{where}: no {name} to download"
            assert f'href="{name}" download' in html
            source = page.name.replace(".md", ".zh.md" if lang == "zh" else ".md")
            assert f"edit/main/docs/{source}" in html, f"{where}: edit link"
            # the chapter page links to its notebook page and to Colab
            chapter = (site / prefix / page.stem / "index.html").read_text("utf-8")
            assert f'href="../notebooks/{page.stem}/"' in chapter, where
            assert "colab.research.google.com/github/" in chapter, where


def test_included_code_is_on_the_page(site: Path):
    html = (site / "04-tokenizer" / "index.html").read_text(encoding="utf-8")
    assert "class CharTokenizer" in re.sub(r"<[^>]+>", "", html)
    assert "--8&lt;--" not in html and "--8<--" not in html


def read_index(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_each_language_has_its_own_search_index(site: Path):
    """hooks/search_per_language.py: the English pages at search/, the Chinese ones at
    zh/search/, and the Chinese pages search theirs."""
    english = read_index(site / "search" / "search_index.json")["docs"]
    chinese = read_index(site / "zh" / "search" / "search_index.json")["docs"]
    pages = len(pagecode.pages("en"))
    assert {d["location"] for d in english if "#" not in d["location"]} == {
        d["location"] for d in chinese if "#" not in d["location"]
    }  # the same pages, each in its language
    assert len([d for d in english if "#" not in d["location"]]) == pages
    assert not any(d["location"].startswith("zh/") for d in english + chinese)
    config = (site / "zh" / "06-attention" / "index.html").read_text(encoding="utf-8")
    assert '"base": "../../zh/"' in config


def test_search_index_segments_chinese(site: Path):
    index = read_index(site / "zh" / "search" / "search_index.json")
    separator = index["config"]["separator"]
    zh_text = " ".join(d["text"] for d in index["docs"])
    assert "\u200b" in zh_text, "jieba did not segment the Chinese pages"
    words = set(
        re.split(
            separator.replace("\\u200b", "\u200b").replace("\\u3000", "\u3000"), zh_text
        )
    )
    assert "分词器" in words or "词元" in words


def test_the_site_packages_are_pinned_as_in_the_docs_extra():
    """`./dev serve` installs requirements-site.txt, the rest installs pyproject.toml's
    docs extra: the same pins in both, and nothing the site needs left out (the strict
    build imports no more than these: mkdocs.yml's plugins, extensions and hook)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((pagecode.ROOT / "pyproject.toml").read_text("utf-8"))
    docs_extra = set(project["project"]["optional-dependencies"]["docs"])
    site = {
        line.strip()
        for line in (pagecode.ROOT / "requirements-site.txt")
        .read_text("utf-8")
        .splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert site and site <= docs_extra, site - docs_extra
    names = {re.split(r"[<>=]", requirement)[0] for requirement in site}
    assert names == {
        "mkdocs",
        "mkdocs-material",
        "mkdocs-static-i18n",
        "pymdown-extensions",
        "jieba",
        "mkdocs-jupyter",
        "mkdocstrings[python]",
    }


class Links(HTMLParser):
    """The hrefs and the ids of one HTML page."""

    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def test_no_broken_internal_links_or_anchors(site: Path, served_site):
    """Every link between the site's own pages, in both languages, reaches a file, and
    every #anchor an element with that id. The external links are listed, not fetched
    (no network at test time)."""
    site_path = urlsplit(served_site.url).path  # the site was built for this address
    pages = sorted(site.rglob("*.html"))
    parsed = {page: parse(page) for page in pages}
    broken, external, checked = [], set(), 0
    for page, links in parsed.items():
        for href in links.hrefs:
            url = urlsplit(href)
            if url.scheme in ("http", "https", "mailto"):
                external.add(href)
                continue
            if url.path.startswith("/"):  # absolute (404.html): under site_url's path
                relative = url.path.removeprefix(site_path)
                target = (site / unquote(relative)).resolve()
            else:
                target = (
                    (page.parent / unquote(url.path)).resolve() if url.path else page
                )
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {href} (no file)")
            elif url.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else parse(target).ids
                if unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {href} (no such anchor)")
    print(f"\n{checked} internal links checked; {len(external)} external links:")
    for href in sorted(external):
        print(f"  {href}")
    assert checked > 1000 and not broken, broken


def test_the_api_reference_documents_every_public_name(site: Path):
    """docs/api.md lists, module by module, every name `from gptlib import *` gives
    (and those of gptlib.pretrained, .benchmark, .distributed and .export), and the
    built page has a
    documented entry for each."""
    import gptlib

    text = (pagecode.DOCS / "api.md").read_text(encoding="utf-8")
    listed = {
        (module, name)
        for module, members in re.findall(
            r"^::: (gptlib\.\w+)\n    options:\n      members:\n((?:        - \w+\n)+)",
            text,
            re.M,
        )
        for name in re.findall(r"- (\w+)", members)
    }
    public = {
        (getattr(getattr(gptlib, n), "__module__", None) or "", n)
        for n in gptlib.__all__
    }
    constants = {n for module, n in public if not module.startswith("gptlib.")}
    names = {n for _, n in listed}
    assert set(gptlib.__all__) <= names, set(gptlib.__all__) - names
    for module, name in listed:
        assert name in vars(importlib.import_module(module)), (module, name)
        assert (
            name in constants
            or (module, name) in public
            or module
            in (
                "gptlib.pretrained",
                "gptlib.benchmark",
                "gptlib.distributed",
                "gptlib.export",
            )
        ), (module, name)
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    for module, name in listed:
        assert f'id="{module}.{name}"' in html, f"{module}.{name} is not on the page"
    zh = (site / "zh" / "api" / "index.html").read_text(encoding="utf-8")
    assert 'href="../../api/"' in zh and '<html lang="zh"' in zh


def test_the_badge_says_verified_only_after_the_tests(site: Path):
    hook = pagecode.load_module("hooks/verified_badge.py")
    assert "20" in hook.verified_badge({"VERIFIED_BY_CI": "123"})  # a date: 20YY-MM-DD
    assert "not verified" in hook.verified_badge({})
    built = (site / "badge" / "verified.svg").read_text(encoding="utf-8")
    assert built.startswith("<svg") and ("not verified" in built) != bool(
        os.environ.get("VERIFIED_BY_CI")
    )
    for page in ("index.html", "zh/index.html"):
        html = (site / page).read_text(encoding="utf-8")
        assert 'alt="verified by CI"' in html


def test_the_glossary_lists_every_term_with_its_chapter(site: Path):
    """hooks/glossary.py: one row per term of terms.yml, in each language, linking to
    the chapter that introduces it (tests/test_terms.py checks the chapters)."""
    import yaml

    terms = yaml.safe_load((pagecode.ROOT / "terms.yml").read_text(encoding="utf-8"))
    chapters = {
        p.name[:2]: p.stem for p in pagecode.pages("en") if pagecode.is_chapter(p)
    }
    for prefix in ("", "zh/"):
        html = (site / prefix / "glossary" / "index.html").read_text(encoding="utf-8")
        rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)[1:]
        assert len(rows) == len(terms), prefix
        for term in terms:
            link = f'href="../{chapters[term["chapter"]]}/"'
            assert any(
                f"<td>{term['en']}</td>" in row and link in row for row in rows
            ), (prefix, term["en"])
