"""Page-code tests: every code block of every page under docs/, in both languages, runs.

Each page becomes a test file and each of its blocks a test item, in reading order.
The Python blocks of a page run in ONE fresh interpreter (a subprocess), one after the
other, like a reader pasting them into a new Python session; shell blocks run with bash
in the same working directory. `--8<--` includes are expanded first, exactly as the
site build expands them (tests/pagecode.py). See CONTRIBUTING.md for the markers.
"""

from __future__ import annotations

import doctest
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tests"))
import pagecode  # noqa: E402

# A local Tiny Shakespeare beside the clone (as ./dev sets it), for pytest run directly.
SHARED_SHAKESPEARE = Path(__file__).parent.parent / "shared" / "data" / "tinyshakespeare.txt"
if SHARED_SHAKESPEARE.is_file():
    os.environ.setdefault("GPTLIB_TINYSHAKESPEARE", str(SHARED_SHAKESPEARE))

BLOCK_TIMEOUT_S = 600
FIGURES_DIR = pagecode.DOCS / "figures"


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "codeblocks", False):
        raise pytest.UsageError(
            "don't pass --codeblocks: the stock collector would run the raw '--8<--' lines; "
            "conftest.py already runs every page's blocks with the includes expanded"
        )
    config._page_counts = Counter()  # type: ignore[attr-defined]


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix == ".md" and pagecode.DOCS in file_path.parents:
        return DocPage.from_parent(parent, path=file_path)
    return None


class PageSession:
    """A fresh Python interpreter plus a working directory, shared by one page's blocks."""

    def __init__(self, page: Path):
        self.page = page
        self.cwd = Path(tempfile.mkdtemp(prefix=f"page-{page.stem}-"))
        self.stderr = open(self.cwd / ".session-stderr.log", "w+", encoding="utf-8")
        self.proc: subprocess.Popen | None = None
        self.failed: str | None = None  # the first failing block, for the blocks after it

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["MPLBACKEND"] = "Agg"  # no windows: figures are written to docs/figures/ instead
        env["PAGE_FIGURES_DIR"] = str(FIGURES_DIR)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run_python(self, code: str, filename: str) -> dict:
        if self.proc is None:
            read_fd, write_fd = os.pipe()
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).parent / "tests" / "page_session.py"), str(write_fd)],
                stdin=subprocess.PIPE, stdout=self.stderr, stderr=self.stderr, cwd=self.cwd,
                env=self.env(), pass_fds=(write_fd,), text=True, encoding="utf-8",
            )
            os.close(write_fd)
            self.replies = os.fdopen(read_fd, "r", encoding="utf-8")
        self.proc.stdin.write(json.dumps({"code": code, "filename": filename}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.replies], [], [], BLOCK_TIMEOUT_S)
        line = self.replies.readline() if ready else ""
        if not line:
            self.close()
            why = "timed out" if not ready else "the Python session died"
            return {"ok": False, "stdout": "", "error": f"{why}\n{self.stderr_tail()}"}
        return json.loads(line)

    def run_shell(self, code: str) -> dict:
        try:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=self.cwd, env=self.env(),
                                  capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"ok": False, "stdout": "", "error": "timed out"}
        error = None if done.returncode == 0 else f"exit status {done.returncode}\n{done.stderr[-3000:]}"
        return {"ok": error is None, "stdout": done.stdout, "error": error}

    def stderr_tail(self) -> str:
        self.stderr.flush()
        return (self.cwd / ".session-stderr.log").read_text(encoding="utf-8", errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.replies.close()
            self.proc = None
        self.stderr.close()
        shutil.rmtree(self.cwd, ignore_errors=True)


class DocPage(pytest.File):
    def collect(self):
        self.session_ = None
        for block in pagecode.extract(self.path):
            item = DocBlock.from_parent(self, name=f"line {block.line}", block=block)
            if block.kind == "shown":
                item.add_marker(pytest.mark.skip(reason=f"shown, not run: {block.skip_reason}"))
            elif block.kind == "unaccounted":
                item.add_marker(pytest.mark.xfail(
                    reason="neither run nor marked; see test_every_block_is_run_or_marked", run=False, strict=True))
            yield item

    def setup(self) -> None:
        self.session_ = PageSession(self.path)

    def teardown(self) -> None:
        if self.session_ is not None:
            self.session_.close()


class BlockFailed(Exception):
    pass


def output_matches(shown: str, printed: str, ignore_whitespace: bool = False) -> bool:
    """The page's output block against what the code printed: `...` matches anything
    (doctest's ELLIPSIS); trailing spaces and blank lines at either end do not count."""
    def tidy(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"

    flags = doctest.ELLIPSIS | (doctest.NORMALIZE_WHITESPACE if ignore_whitespace else 0)
    return doctest.OutputChecker().check_output(tidy(shown), tidy(printed), flags)


class DocBlock(pytest.Item):
    def __init__(self, *, block: pagecode.Block, **kwargs):
        super().__init__(**kwargs)
        self.block = block
        self.lang = pagecode.language(block.page)

    def runtest(self) -> None:
        session: PageSession = self.parent.session_
        b = self.block
        if session.failed:
            raise BlockFailed(f"not run: an earlier block of this page failed ({session.failed})")
        filename = f"{b.page.relative_to(pagecode.ROOT)}, block at line {b.line}"
        reply = session.run_shell(b.code) if b.kind == "shell" else session.run_python(b.code, filename)
        if not reply["ok"]:
            session.failed = self.name
            raise BlockFailed(reply["error"])
        if b.expected_output is None and reply["stdout"].strip():
            session.failed = self.name
            raise BlockFailed("the block printed output, but the page does not show it: add an expected-output "
                              f"block under it (see CONTRIBUTING.md).\n--- code printed:\n{reply['stdout']}")
        if b.expected_output is not None:
            if not output_matches(b.expected_output, reply["stdout"], b.ignore_whitespace):
                session.failed = self.name
                raise BlockFailed(f"printed output differs from the page.\n--- page shows:\n{b.expected_output}"
                                  f"--- code printed:\n{reply['stdout']}")
            self.config._page_counts[(self.lang, "output checked")] += 1
        self.config._page_counts[(self.lang, f"{b.kind} run")] += 1

    def repr_failure(self, excinfo, style=None) -> str:
        if isinstance(excinfo.value, BlockFailed):
            numbered = "\n".join(f"{i:4d} | {line}" for i, line in enumerate(self.block.code.splitlines(), 1))
            return f"{self.block.page.name}, {self.name} ({self.block.kind}):\n{numbered}\n\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.block.page, self.block.line - 1, f"{self.block.page.name}::{self.name}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # count blocks that were explicitly not run (their skip happens at setup)
    if report.when == "setup" and report.skipped and "shown, not run" in str(report.longrepr):
        lang = "zh" if ".zh.md" in report.nodeid else "en"
        pytest_runtest_logreport.config._page_counts[(lang, "shown, not run")] += 1  # type: ignore[attr-defined]


def pytest_sessionstart(session: pytest.Session) -> None:
    pytest_runtest_logreport.config = session.config  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    counts = config._page_counts
    if not counts:
        return
    terminalreporter.section("page code blocks")
    kinds = ["python run", "shell run", "output checked", "shown, not run"]
    terminalreporter.write_line(f"{'language':<10}" + "".join(f"{k:>16}" for k in kinds))
    for lang in ("en", "zh"):
        terminalreporter.write_line(f"{lang:<10}" + "".join(f"{counts[(lang, k)]:>16}" for k in kinds))
