"""A reader can find every chapter, and no page sends them to one that is not written:
the nav and the home page's course map link every chapter page, and every "chapter NN"
(第 NN 章) in the prose names a chapter that exists."""

import re

import pagecode
import pytest
from mkdocs.utils.yaml import yaml_load

CHAPTERS = {
    int(m.group(1)): page.name
    for page in pagecode.pages("en")
    if (m := re.match(r"(\d\d)-", page.name))
}

# "chapter 03", "Chapters 05 to 07", "chapters 13 and 14", "第 05 章", "第 05 到 07 章"
ENGLISH_REFERENCE = re.compile(
    r"\b[Cc]hapters?\s+(\d+(?:\s*(?:,|and|or|to|–|-)\s*\d+)*)"
)
CHINESE_REFERENCE = re.compile(r"第\s*(\d+(?:\s*(?:到|至|、|和|或|-|–)\s*\d+)*)\s*章")


def chapter_references(page) -> list[tuple[int, str]]:
    """(chapter number, the words that name it) for every reference in a page's text
    (prose and code alike: a comment that says "chapter 13" sends the reader there)."""
    text = page.read_text(encoding="utf-8")
    found = []
    for pattern in (ENGLISH_REFERENCE, CHINESE_REFERENCE):
        for m in pattern.finditer(text):
            found += [(int(n), m.group(0)) for n in re.findall(r"\d+", m.group(1))]
    return found


def test_the_reference_patterns_see_the_forms_pages_use(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "chapter 03; Chapters 05 to 07; chapters 13 and 14; 第 05 章；第 08 到 09 章",
        encoding="utf-8",
    )
    assert [n for n, _ in chapter_references(page)] == [3, 5, 7, 13, 14, 5, 8, 9]


@pytest.mark.parametrize("page", pagecode.pages(), ids=lambda p: p.name)
def test_pages_refer_only_to_chapters_that_exist(page):
    missing = [words for n, words in chapter_references(page) if n not in CHAPTERS]
    assert not missing, f"{page.name} refers to chapters not written yet: {missing}"


APPENDICES = ["playground.md", "glossary.md", "api.md"]  # after the chapters


def test_the_nav_lists_every_page_in_chapter_order():
    config = yaml_load((pagecode.ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = [next(iter(item.values())) for item in config["nav"]]
    chapters = [CHAPTERS[n] for n in sorted(CHAPTERS)]
    assert nav == ["index.md", *chapters, *APPENDICES]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_course_map_links_every_chapter_that_exists(lang):
    index = pagecode.DOCS / ("index.md" if lang == "en" else "index.zh.md")
    rows = re.findall(
        r"^\|\s*(\d\d)\s*\|([^|]*)\|", index.read_text(encoding="utf-8"), re.M
    )
    assert rows, f"{index.name} has no course map"
    linked = {int(number): re.search(r"\]\(([^)#]+)", cell) for number, cell in rows}
    for number, name in CHAPTERS.items():
        assert linked.get(number), f"{index.name}: the course map does not link {name}"
        assert linked[number].group(1) == name
    for number, link in linked.items():
        if number and number not in CHAPTERS:
            assert link is None, f"{index.name} links chapter {number:02d}: not written"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_each_page_is_called_in_the_nav_what_its_title_says(lang):
    """The nav entry (translated for Chinese) is the page's own first heading."""
    config = yaml_load((pagecode.ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    (i18n,) = [
        p["i18n"] for p in config["plugins"] if isinstance(p, dict) and "i18n" in p
    ]
    (zh,) = [entry for entry in i18n["languages"] if entry["locale"] == "zh"]
    for item in config["nav"]:
        ((title, name),) = item.items()
        if name == "index.md":
            continue  # "Home": the home page's heading is the site's name
        page = pagecode.DOCS / name
        if lang == "zh":
            title, page = zh["nav_translations"][title], pagecode.twin(page)
        heading = re.search(r"^# (.+)$", page.read_text(encoding="utf-8"), re.M)
        assert heading and heading.group(1).strip() == title, (page.name, title)
