"""The English and Chinese pages of a chapter stay in step: same pages, same headings
structure, same includes, same code blocks and expected outputs. Only prose differs."""

import pagecode
import pytest

EN = pagecode.pages("en")
ZH = pagecode.pages("zh")


@pytest.mark.parametrize("page", EN + ZH, ids=lambda p: p.name)
def test_every_page_has_its_twin(page):
    assert pagecode.twin(page).exists(), (
        f"{page.name} has no {pagecode.twin(page).name}"
    )


@pytest.mark.parametrize("en", EN, ids=lambda p: p.name)
def test_same_headings_structure(en):
    zh = pagecode.twin(en)
    if zh.exists():
        assert pagecode.headings(en) == pagecode.headings(zh)


@pytest.mark.parametrize("en", EN, ids=lambda p: p.name)
def test_same_code_block_for_block(en):
    zh = pagecode.twin(en)
    if not zh.exists():
        pytest.fail(f"{zh.name} is missing")
    assert pagecode.includes(en) == pagecode.includes(zh)
    a, b = pagecode.extract(en), pagecode.extract(zh)
    assert len(a) == len(b), f"{len(a)} blocks in {en.name}, {len(b)} in {zh.name}"
    for x, y in zip(a, b):
        where = f"{en.name} line {x.line} vs {zh.name} line {y.line}"
        assert (x.lang, x.kind) == (y.lang, y.kind), where
        if x.kind == "diagram":  # labels are written in each language
            assert pagecode.runs_the_same(x, y), f"diagram structure differs: {where}"
            continue
        assert x.code == y.code, f"code differs: {where}"
        assert x.expected_output == y.expected_output, (
            f"expected output differs: {where}"
        )
        assert x.tolerance == y.tolerance, f"output tolerance differs: {where}"
        assert x.ignore_whitespace == y.ignore_whitespace, where
    # so the English page's run checks the Chinese page's code (conftest.py)
    assert pagecode.english_twin_runs(zh)
