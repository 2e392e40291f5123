"""The Chinese pages use the terminology of terms.yml, and nothing it says to avoid."""

import re

import pagecode
import pytest
import yaml

TERMS = yaml.safe_load((pagecode.ROOT / "terms.yml").read_text(encoding="utf-8"))
BY_EN = {t["en"].lower(): t for t in TERMS}


def test_terms_table_is_well_formed():
    assert len(BY_EN) == len(TERMS), "an English term is listed twice"
    assert all(
        set(t) <= {"en", "zh", "avoid", "chapter", "not_in"} and t["zh"] for t in TERMS
    )
    assert all(re.fullmatch(r"\d\d", t.get("chapter", "")) for t in TERMS), (
        'every term names the chapter that introduces it: chapter: "NN"'
    )


@pytest.mark.parametrize("page", pagecode.pages("zh"), ids=lambda p: p.name)
def test_chinese_pages_use_the_chosen_terms(page):
    text = page.read_text(encoding="utf-8")
    prose = re.sub(
        r"```.*?```", "", text, flags=re.S
    )  # code blocks are the same in both languages
    prose = re.sub(r"`[^`\n]*`", "", prose)  # so is inline code
    wrong = []
    # "中文术语 (English term)": the Chinese right before the English must be the
    # chosen term
    for m in re.finditer(r" ?[（(]([A-Za-z][A-Za-z -]+?)(?:[,，][^)）]*)?[)）]", prose):
        term = BY_EN.get(m.group(1).strip().lower())
        # **词表** (vocabulary) and “秩” (rank) count as 词表 and 秩
        before = prose[: m.start()].rstrip(" *`”」")
        if term and not before.endswith(term["zh"]):
            wrong.append(
                f"…{before[-8:]} ({m.group(1)}) — the course says {term['zh']}"
            )
    for term in TERMS:
        for variant in term.get("avoid", []):
            if variant in prose:
                wrong.append(
                    f"{variant} — the course says {term['zh']} for {term['en']}"
                )
    assert not wrong, f"{page.name}: " + "; ".join(wrong)


def prose_of(page) -> str:
    """A page's running prose: no code, no HTML comments, no headings and no "what you
    will build" box (they name what the text below introduces)."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```|<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r'^!!! abstract ".*"\n(?:(?:    .*)?\n)*', "", text, flags=re.M)
    text = re.sub(r"^#{1,6} .*$", "", text, flags=re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def first_use(term: dict, text: str) -> int:
    """Where the Chinese term is first used: not inside a longer word that the table
    lists under `not_in` (均值, "mean", holds 值, "value")."""
    for m in re.finditer(re.escape(term["zh"]), text):
        inside = any(
            text[max(m.start() - len(w), 0) : m.end() + len(w)].find(w) >= 0
            for w in term.get("not_in", [])
        )
        if not inside:
            return m.start()
    return -1


CHAPTER_PAGES = {p.name[:2]: p for p in pagecode.pages("en") if pagecode.is_chapter(p)}


@pytest.mark.parametrize("term", TERMS, ids=lambda t: t["en"])
def test_each_term_is_introduced_in_its_chapter_in_both_languages(term):
    """The glossary (hooks/glossary.py) links each term to the chapter that introduces
    it: the English page uses the English term, and the Chinese page gives the English
    term in parentheses right after the Chinese term's first use."""
    assert term["chapter"] in CHAPTER_PAGES, (
        f"{term['en']}: no chapter {term['chapter']}"
    )
    en = CHAPTER_PAGES[term["chapter"]]
    zh = pagecode.twin(en)
    english = prose_of(en)
    assert re.search(rf"\b{re.escape(term['en'])}", english, re.I), (
        f"{en.name} never says {term['en']!r}"
    )
    chinese = prose_of(zh)
    first = first_use(term, chinese)
    assert first >= 0, f"{zh.name} never says {term['zh']!r}"
    if term["zh"] != term["en"]:
        after = chinese[first + len(term["zh"]) :].lstrip("*”」")
        given = re.match(
            rf"\s?[（(]{re.escape(term['en'])}(?:[)）]|[,，；;])", after, re.I
        )
        assert given, (
            f"{zh.name}: the first {term['zh']!r} is not followed by ({term['en']}): "
            f"…{chinese[max(first - 15, 0) : first + 25]!r}…"
        )
