"""The page harness itself: it must be able to fail."""

import textwrap

import pagecode
import pytest

import conftest

pytest_plugins = ["pytester"]


def write_page(tmp_path, text):
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(text), encoding="utf-8")
    return page


def test_blocks_are_classified(tmp_path):
    page = write_page(
        tmp_path,
        """
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
        """,
    )
    blocks = pagecode.extract(page)
    assert [b.kind for b in blocks] == [
        "python",
        "shell",
        "shown",
        "unaccounted",
        "unaccounted",
        "python",
    ]
    assert blocks[0].expected_output == "1\n" and blocks[-1].code == "print(2)\n"


def test_includes_are_expanded_with_page_line_numbers(tmp_path):
    page = write_page(
        tmp_path,
        """
        Text.

        ```python
        --8<-- "gptlib/utils.py:seed_everything"
        seed_everything(0)
        ```
        """,
    )
    (block,) = pagecode.extract(page)
    assert block.code.startswith("def seed_everything(seed: int) -> None:")
    assert block.code.endswith("seed_everything(0)\n") and block.line == 4
    missing = write_page(
        tmp_path, '```python\n--8<-- "gptlib/utils.py:no_such_section"\n```\n'
    )
    with pytest.raises(Exception, match="no_such_section"):
        pagecode.extract(missing)


def test_one_session_per_page_like_a_reader(tmp_path):
    """A page's blocks share one kernel and one folder; each page gets a fresh one."""
    session = conftest.PageSession(write_page(tmp_path, "# p\n"), tmp_path / "figures")
    try:
        assert session.execute("x = 41")["ok"]
        reply = session.execute("print(x + 1)")
        assert reply == {"ok": True, "stdout": "42\n", "error": None, "exception": None}
        assert session.execute("x + 1")["stdout"] == "42\n"  # as the notebook shows it
        reply = session.execute("\n\nundefined_name")
        assert not reply["ok"] and reply["exception"].startswith("NameError")
        assert "----> 1 undefined_name" in reply["error"]  # the line, in the cell
        shell = pagecode.Block(page=tmp_path, line=1, lang="bash", code="pwd\n")
        assert session.execute(pagecode.cell_source(shell))["stdout"].strip() == str(
            session.cwd
        )
        failing = "%%bash -e -o pipefail\nfalse | cat\necho not reached"
        reply = session.execute(failing)
        assert not reply["ok"] and "not reached" not in reply["stdout"]
        # the pages' numbers are CPU numbers
        assert session.execute("!echo $GPTLIB_DEVICE")["stdout"].strip() == "cpu"
    finally:
        session.close()
    fresh = conftest.PageSession(write_page(tmp_path, "# q\n"), tmp_path / "figures")
    try:
        # nothing leaks between pages, and the harness leaves no name behind
        assert "NameError" in fresh.execute("print(x)")["exception"]
        assert "NameError" in fresh.execute("sys, page_figures")["exception"]
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
    assert pagecode.output_matches(shown, printed) is ok
    assert pagecode.output_matches("x y\n", "x   y\n", ignore_whitespace=True)


@pytest.mark.parametrize(
    "shown, printed, ok",
    [
        ("loss 2.75 at step 300\n", "loss 2.79 at step 300\n", True),
        (
            "loss 2.75 at step 300\n",
            "loss 2.81 at step 300\n",
            False,
        ),  # beyond abs=0.05
        (
            "loss 2.75 at step 300\n",
            "loss 2.75 at step 301\n",
            False,
        ),  # integers are exact
        ("loss 2.75 at step 300\n", "LOSS 2.75 at step 300\n", False),  # text is exact
        ("accuracy 95.2% (... s)\n", "accuracy 93.3% (12.5 s)\n", True),  # pct=2 points
        ("accuracy 95.2%\n", "accuracy 93.1%\n", False),
        ("1,149 characters, lr 3.00e-03\n", "1,149 characters, lr 3.02e-03\n", True),
        ("tensor(3.)\n", "tensor(3.)\n", True),
    ],
)
def test_output_comparison_within_a_tolerance(shown, printed, ok):
    assert (
        pagecode.output_matches(
            shown, printed, tolerance=pagecode.Tolerance(abs=0.05, pct=2)
        )
        is ok
    )


def test_tolerance_marker_belongs_to_the_next_expected_output(tmp_path):
    page = write_page(
        tmp_path,
        """
        ```python
        print(1.0)
        ```

        <!--output-tolerance: abs=0.1 int=2-->
        <!--pytest-codeblocks:expected-output-->
        ```text
        1.05
        ```

        ```python
        print(2)
        ```

        <!--pytest-codeblocks:expected-output-->
        ```text
        2
        ```
        """,
    )
    first, second = pagecode.extract(page)
    assert (
        first.tolerance == pagecode.Tolerance(abs=0.1, int=2)
        and second.tolerance is None
    )
    with pytest.raises(ValueError, match="bad output-tolerance"):
        pagecode.Tolerance.parse("0.05")


HARNESS_PAGE = """
# A page

```python
x = 41
```

```python
print(x + 1)
```

<!--pytest-codeblocks:expected-output-->
```text
42
```

```python
import matplotlib.pyplot as plt

fig, ax = plt.subplots(num="demo")
ax.plot([1, 2, 3], [3, 1, x]);
```
"""


@pytest.fixture()
def harness_project(pytester):
    """A project with this harness (conftest.py, pagecode, page_figures) and a page."""
    for name in ("conftest.py", "tests/pagecode.py", "tests/page_figures.py"):
        (pytester.path / name).parent.mkdir(exist_ok=True)
        (pytester.path / name).write_text(
            (pagecode.ROOT / name).read_text(encoding="utf-8"), encoding="utf-8"
        )
    pytester.makefile(
        ".toml", pyproject='[tool.pytest.ini_options]\npythonpath = [".", "tests"]\n'
    )
    (pytester.path / "docs").mkdir()
    (pytester.path / "docs" / "page.md").write_text(HARNESS_PAGE, encoding="utf-8")
    return pytester


def test_selecting_a_block_runs_the_blocks_before_it(harness_project, monkeypatch):
    monkeypatch.setenv(
        "PAGE_FIGURES_DIR", str(harness_project.path / "docs" / "figures")
    )
    result = harness_project.runpytest_subprocess(
        "docs/page.md::line 8"
    )  # needs x from line 4
    result.assert_outcomes(passed=1)  # only the selected block and the one before it
    result = harness_project.runpytest_subprocess(
        "docs", "--deselect", "docs/page.md::line 4"
    )
    result.assert_outcomes(passed=2, deselected=1, skipped=1)


def test_figures_are_drawn_elsewhere_and_compared_with_the_committed_ones(
    harness_project, monkeypatch
):
    monkeypatch.delenv("PAGE_FIGURES_DIR", raising=False)
    result = harness_project.runpytest_subprocess("docs")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*demo.png: drawn by a page but not in docs/figures*"])
    assert not (
        harness_project.path / "docs" / "figures"
    ).exists()  # a test run never writes there
    monkeypatch.setenv(
        "PAGE_FIGURES_DIR", str(harness_project.path / "docs" / "figures")
    )
    harness_project.runpytest_subprocess("docs").assert_outcomes(
        passed=3, skipped=1
    )  # ./dev figures
    assert (harness_project.path / "docs" / "figures" / "demo.png").is_file()
    monkeypatch.delenv("PAGE_FIGURES_DIR")
    harness_project.runpytest_subprocess("docs").assert_outcomes(passed=4)
    page = harness_project.path / "docs" / "page.md"
    page.write_text(
        HARNESS_PAGE.replace("[3, 1, x]", "[1, 3, x]"), encoding="utf-8"
    )  # the code changed
    result = harness_project.runpytest_subprocess("docs")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*demo.png: RMS difference*"])


ERROR_PAGE = """
```python
x = [1, 2]
print("before")
x[5]
```

<!--pytest-codeblocks:expected-output-->
```text
before
Traceback (most recent call last):
  ...
IndexError: list index out of range
```

```python
print(len(x))
```

<!--pytest-codeblocks:expected-output-->
```text
2
```

```python
x[0]
```

<!--pytest-codeblocks:expected-output-->
```text
Traceback (most recent call last):
  ...
IndexError: list index out of range
```
"""

WRONG_ERROR_PAGE = """
```python
[][5]
```

<!--pytest-codeblocks:expected-output-->
```text
Traceback (most recent call last):
  ...
KeyError: 5
```
"""


def test_a_block_that_shows_an_error_must_raise_it(harness_project):
    """A shown traceback is checked like output: the block must raise that error (the
    session goes on, as the reader's does); a different error, or none, fails."""
    docs = harness_project.path / "docs"
    (docs / "page.md").write_text(ERROR_PAGE, encoding="utf-8")
    (docs / "wrong.md").write_text(WRONG_ERROR_PAGE, encoding="utf-8")
    result = harness_project.runpytest_subprocess("docs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=2)  # 2 blocks and each page's figures pass
    result.stdout.fnmatch_lines(
        [
            "*page.md, line 25 (python)*",
            "*the page shows an error (a traceback), but the block raised nothing*",
            "*wrong.md, line 2 (python)*",
            "*KeyError: 5*",
            "*IndexError: list index out of range*",
        ]
    )


TWIN_PAGE = """{prose}

```python
print(1 + 1)
```

<!--pytest-codeblocks:expected-output-->
```text
{output}
```
"""


def test_a_chinese_page_with_the_same_blocks_runs_in_english(
    harness_project, monkeypatch
):
    """Same code and outputs: the English page runs them, the Chinese blocks are
    reported as skipped (never as passed); any difference, and the Chinese page runs on
    its own, as it does with PAGES_BOTH_LANGUAGES=1."""
    docs = harness_project.path / "docs"
    (docs / "page.md").unlink()
    (docs / "two.md").write_text(TWIN_PAGE.format(prose="Two.", output="2"), "utf-8")
    zh = docs / "two.zh.md"
    zh.write_text(TWIN_PAGE.format(prose="二。", output="2"), "utf-8")
    monkeypatch.delenv("PAGES_BOTH_LANGUAGES", raising=False)
    result = harness_project.runpytest_subprocess(
        "docs", "-p", "no:cacheprovider", "-ra"
    )
    result.assert_outcomes(passed=2, skipped=1)  # two.md's block, the figures item
    result.stdout.fnmatch_lines(["zh *0 *1", "*same code and output as two.md*"])

    monkeypatch.setenv("PAGES_BOTH_LANGUAGES", "1")
    result = harness_project.runpytest_subprocess("docs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)  # each page's block and figures

    monkeypatch.delenv("PAGES_BOTH_LANGUAGES")
    zh.write_text(TWIN_PAGE.format(prose="二。", output="3"), "utf-8")
    result = harness_project.runpytest_subprocess("docs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)  # the differing page ran, and failed
    result.stdout.fnmatch_lines(["*printed output differs from the page*"])
