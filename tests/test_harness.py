"""The page harness itself: it must be able to fail."""

import textwrap

import pytest

import conftest
import pagecode


def write_page(tmp_path, text):
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(text), encoding="utf-8")
    return page


def test_blocks_are_classified(tmp_path):
    page = write_page(tmp_path, '''
        ```python
        print(1)
        ```

        <!--pytest-codeblocks:expected-output-->
        ```text
        1
        ```

        ```bash
        echo hi
        ```

        <!--pytest.mark.skip(reason="a directory tree, not code")-->
        ```text
        docs/
        ```

        ```text
        forgotten output
        ```

        <!--pytest.mark.skip()-->
        ```python
        print("skipped without a reason")
        ```

        ??? success "Solution"

            ```python
            print(2)
            ```
        ''')
    blocks = pagecode.extract(page)
    assert [b.kind for b in blocks] == ["python", "shell", "shown", "unaccounted", "unaccounted", "python"]
    assert blocks[0].expected_output == "1\n" and blocks[-1].code == "print(2)\n"


def test_includes_are_expanded_with_page_line_numbers(tmp_path):
    page = write_page(tmp_path, '''
        Text.

        ```python
        --8<-- "gptlib/utils.py:seed_everything"
        seed_everything(0)
        ```
        ''')
    (block,) = pagecode.extract(page)
    assert block.code.startswith("def seed_everything(seed: int) -> None:")
    assert block.code.endswith("seed_everything(0)\n") and block.line == 4
    missing = write_page(tmp_path, '```python\n--8<-- "gptlib/utils.py:no_such_section"\n```\n')
    with pytest.raises(Exception, match="no_such_section"):
        pagecode.extract(missing)


def test_one_session_per_page_like_a_reader(tmp_path):
    session = conftest.PageSession(write_page(tmp_path, "# p\n"))
    try:
        assert session.run_python("x = 41", "p.md, block at line 1")["ok"]
        reply = session.run_python("print(x + 1)", "p.md, block at line 5")
        assert reply == {"ok": True, "stdout": "42\n", "error": None}
        reply = session.run_python("\n\nundefined_name", "p.md, block at line 9")
        assert not reply["ok"] and "NameError" in reply["error"] and 'block at line 9", line 3' in reply["error"]
        assert session.run_shell("pwd")["stdout"].strip() == str(session.cwd)
        assert not session.run_shell("exit 3")["ok"]
    finally:
        session.close()
    fresh = conftest.PageSession(write_page(tmp_path, "# q\n"))
    try:
        assert "NameError" in fresh.run_python("print(x)", "q.md")["error"]  # nothing leaks between pages
    finally:
        fresh.close()


@pytest.mark.parametrize(
    "shown, printed, ok",
    [
        ("a 1\n", "a 1\n", True),
        ("a 1\n", "a 2\n", False),
        ("took ... s\n", "took 0.31 s\n", True),
        ("line\n", "line   \n\n", True),
        ("x y\n", "x   y\n", False),
    ],
)
def test_output_comparison(shown, printed, ok):
    assert conftest.output_matches(shown, printed) is ok
    assert conftest.output_matches("x y\n", "x   y\n", ignore_whitespace=True)
