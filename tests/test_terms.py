"""The Chinese pages use the terminology of terms.yml, and nothing it says to avoid."""

import re

import pagecode
import pytest
import yaml

TERMS = yaml.safe_load((pagecode.ROOT / "terms.yml").read_text(encoding="utf-8"))
BY_EN = {t["en"].lower(): t for t in TERMS}


def test_terms_table_is_well_formed():
    assert len(BY_EN) == len(TERMS), "an English term is listed twice"
    assert all(set(t) <= {"en", "zh", "avoid"} and t["zh"] for t in TERMS)


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
        before = prose[: m.start()].rstrip(
            " *`"
        )  # **词表** (vocabulary) counts as 词表
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
