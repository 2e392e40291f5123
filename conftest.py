"""Page-code tests: every code block of every page under docs/, in both languages, runs.

Each page becomes a test file and each of its blocks a test item, in reading order.
The blocks of a page run in ONE fresh Jupyter kernel (nbclient), one after the other,
like a reader pasting them into a new Python session or running the chapter's notebook
top to bottom: each block is run as the notebook cell `pagecode.cell_source` makes of it
(a shell block under `%%bash`), in one working directory. `--8<--` includes are
expanded first, exactly as the site build expands them (tests/pagecode.py). See
CONTRIBUTING.md for the markers.

Selecting one block (`-k`, `--lf`, a node id) runs the blocks before it first, quietly:
a block never runs in a session that lacks what the page did before it. Figures the
pages draw go to a temporary folder; the last item compares them with docs/figures/
(`./dev figures` redraws those).
"""

from __future__ import annotations

import functools
import http.server
import math
import os
import re
import shutil
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import nbformat
import page_figures
import pagecode  # tests/ is on the path: pythonpath in pyproject.toml
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

# A local Tiny Shakespeare beside the clone (as ./dev sets it), for pytest run directly.
SHARED_SHAKESPEARE = (
    Path(__file__).parent.parent / "shared" / "data" / "tinyshakespeare.txt"
)
if SHARED_SHAKESPEARE.is_file():
    os.environ.setdefault("GPTLIB_TINYSHAKESPEARE", str(SHARED_SHAKESPEARE))

# Under pytest-xdist (`./dev test` runs `-n auto`), the workers share the cores: each
# worker, the page kernels it starts and the processes its tests start get their share
# of threads. Tiny models slow down many times over when threads outnumber cores.
# Page kernels are the exception (PageSession.env): a page's numbers were measured with
# torch's own thread count, and sums split over other threads round differently; one
# worker runs the pages, one after another (pytest_collection_modifyitems).
OMP_THREADS_GIVEN = os.environ.get("OMP_NUM_THREADS")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))
    # threads that wait sleep instead of spinning on a core another worker needs
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BLOCK_TIMEOUT_S = 600
# Groups of tests that take minutes (measured on 2 cores: the pages about 8, the wheel
# and the site about 2 each): under pytest-xdist they are sent out first, in this order.
LONG_GROUPS = ("pages", "tests/test_wheel.py", "site")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of IPython's tracebacks
COMMITTED_FIGURES = pagecode.DOCS / "figures"
FIGURE_TOLERANCE = (
    8.0  # RMS difference (0-255) allowed between a redrawn figure and the committed one
)


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "codeblocks", False):
        raise pytest.UsageError(
            "don't pass --codeblocks: the stock collector would run the raw "
            "'--8<--' lines; conftest.py already runs every page's blocks with the "
            "includes expanded"
        )
    config._page_counts = Counter()  # type: ignore[attr-defined]
    # $PAGE_FIGURES_DIR (set by `./dev figures`) redraws the committed figures; a plain
    # test run draws them into a temporary folder and only compares.
    chosen = os.environ.get("PAGE_FIGURES_DIR")
    config._figures_dir = (
        Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="page-figures-"))
    )  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    if not os.environ.get("PAGE_FIGURES_DIR"):
        shutil.rmtree(config._figures_dir, ignore_errors=True)


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix == ".md" and pagecode.DOCS in file_path.parents:
        return DocPage.from_parent(parent, path=file_path)
    return None


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def served_site():
    """The site, built once per test run (`mkdocs build --strict`, no warnings) into
    site-test/ for a loopback address, and served from a thread:
    tests/test_site_build.py reads its files, tests/test_browser.py opens its pages."""
    folder = pagecode.ROOT / "site-test"
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder))
    )
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    shutil.rmtree(folder, ignore_errors=True)
    pagecode.build_site(folder, url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(path=folder, url=url)
    server.shutdown()


class PageSession:
    """A fresh Jupyter kernel and a working directory, shared by a page's blocks: the
    chapter's notebook, run cell by cell (nbclient)."""

    def __init__(self, page: Path, figures_dir: Path):
        self.page = page
        self.figures_dir = figures_dir
        self.cwd = Path(tempfile.mkdtemp(prefix=f"page-{page.stem}-"))
        self.client: NotebookClient | None = None
        self.failed: str | None = (
            None  # the first failing block, for the blocks after it
        )
        self.next_block = 0  # blocks before this index have run

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = (
            str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        )
        if OMP_THREADS_GIVEN is None:  # torch's own choice, as in the reader's session
            env.pop("OMP_NUM_THREADS", None)
        # Threads that wait sleep instead of spinning: while another worker holds a
        # core, spinning threads of a small model's ops slow it down many times over.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["MPLBACKEND"] = "Agg"  # no windows: figures are written to files instead
        env["PAGE_FIGURES_DIR"] = str(self.figures_dir)
        env["PYTHONUNBUFFERED"] = "1"
        # The numbers on the pages were measured on the CPU: a laptop's GPU would
        # print others.
        env["GPTLIB_DEVICE"] = os.environ.get("PAGE_DEVICE", "cpu")
        return env

    def start(self) -> None:
        self.notebook = nbformat.v4.new_notebook()
        self.client = NotebookClient(
            self.notebook,
            timeout=BLOCK_TIMEOUT_S,
            kernel_name="python3",
            allow_errors=True,  # a failing cell is reported by run(), block by block
            resources={"metadata": {"path": str(self.cwd)}},
        )
        self.client.km = self.client.create_kernel_manager()
        self.client.start_new_kernel(env=self.env())
        self.client.start_new_kernel_client()
        setup = page_figures.KERNEL_SETUP.format(
            folder=str(Path(__file__).parent / "tests")
        )
        reply = self.execute(setup)
        assert reply["ok"], f"the kernel setup failed: {reply['error']}"
        if pagecode.is_chapter(self.page):  # the notebook's first cell, then the blocks
            reply = self.execute(pagecode.install_cell())
            assert reply["ok"] and not reply["stdout"], reply

    def execute(self, source: str) -> dict:
        """Run one cell; its printed output (stdout and the value of its last
        expression, as the notebook shows them), and its error if any."""
        if self.client is None:
            self.start()
        cell = nbformat.v4.new_code_cell(source)
        self.notebook.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.notebook.cells) - 1)
        except (CellTimeoutError, DeadKernelError) as e:
            self.close_kernel()
            return {"ok": False, "stdout": "", "error": f"{type(e).__name__}: {e}"}
        stdout, stderr, error, exception = [], [], None, None
        for out in cell.outputs:
            if out.output_type == "stream":
                (stdout if out.name == "stdout" else stderr).append(out.text)
            elif out.output_type == "execute_result":
                stdout.append(out.data.get("text/plain", "") + "\n")
            elif out.output_type == "error":
                exception = f"{out.ename}: {out.evalue}"
                error = ANSI.sub("", "\n".join(out.traceback))
        if error and stderr:
            error = "".join(stderr)[-3000:] + error
        return {
            "ok": error is None,
            "stdout": "".join(stdout),
            "error": error,
            "exception": exception,
        }

    def run(self, block: pagecode.Block) -> str | None:
        """Run one block and check its output; return None, or what went wrong."""
        reply = self.execute(pagecode.cell_source(block))
        printed = reply["stdout"]
        if block.kind == "python" and pagecode.shows_error(block.expected_output):
            # A block whose point is an error: it must raise, and the error (the last
            # line of the traceback) must be the one the page shows.
            if reply["ok"]:
                return (
                    "the page shows an error (a traceback), but the block raised "
                    f"nothing.\n--- code printed:\n{printed}"
                )
            if reply.get("exception") is None:  # timed out, or the session died
                return reply["error"]
            printed += f"{pagecode.TRACEBACK}\n  (its frames)\n{reply['exception']}\n"
        elif not reply["ok"]:
            return reply["error"]
        if block.expected_output is None and printed.strip():
            return (
                "the block printed output, but the page does not show it: "
                "add an expected-output block under it (see CONTRIBUTING.md).\n"
                f"--- code printed:\n{printed}"
            )
        if block.expected_output is not None and not pagecode.output_matches(
            block.expected_output,
            printed,
            block.ignore_whitespace,
            block.tolerance,
        ):
            return (
                "printed output differs from the page"
                f"{pagecode.describe_tolerance(block.tolerance)}.\n"
                f"--- page shows:\n{block.expected_output}"
                f"--- code printed:\n{printed}"
            )
        return None

    def close_kernel(self) -> None:
        if self.client is not None:
            self.client._cleanup_kernel()
            self.client = None

    def close(self) -> None:
        self.close_kernel()
        shutil.rmtree(self.cwd, ignore_errors=True)


# A Chinese page shows the same code blocks and outputs as its English twin (only the
# prose differs): running the English page runs its code, and the suite does not pay
# twice. PAGES_BOTH_LANGUAGES=1 runs the Chinese pages too.
SAME_AS_ENGLISH = "same code and output as"


class DocPage(pytest.File):
    def collect(self):
        self.session_ = None
        self.blocks_: list[DocBlock] = []
        english_runs = not os.environ.get(
            "PAGES_BOTH_LANGUAGES"
        ) and pagecode.english_twin_runs(self.path)
        for block in pagecode.extract(self.path):
            if block.kind == "diagram":
                continue  # a picture, not code: tests/test_browser.py sees it drawn
            item = DocBlock.from_parent(
                self, name=f"line {block.line}", block=block, index=len(self.blocks_)
            )
            if english_runs and block.kind in ("python", "shell"):
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"{SAME_AS_ENGLISH} {pagecode.twin(self.path).name}, "
                        "which runs it (checked block by block: tests/pagecode.py)"
                    )
                )
            elif block.kind == "shown":
                item.add_marker(
                    pytest.mark.skip(reason=f"shown, not run: {block.skip_reason}")
                )
            elif block.kind == "unaccounted":
                item.add_marker(
                    pytest.mark.xfail(
                        reason=(
                            "neither run nor marked; "
                            "see test_every_block_is_run_or_marked"
                        ),
                        run=False,
                        strict=True,
                    )
                )
            self.blocks_.append(item)
            yield item
        if not english_runs and any(b.block.kind == "python" for b in self.blocks_):
            # after the page's blocks, on the same worker: the figures it drew
            yield FiguresAreCurrent.from_parent(self, name="figures are current")

    def setup(self) -> None:
        self.session_ = PageSession(self.path, page_figures_dir(self.config, self.path))

    def teardown(self) -> None:
        if self.session_ is not None:
            self.session_.close()


class BlockFailed(Exception):
    pass


class DocBlock(pytest.Item):
    def __init__(self, *, block: pagecode.Block, index: int, **kwargs):
        super().__init__(**kwargs)
        self.block = block
        self.index = index
        self.lang = pagecode.language(block.page)

    def runtest(self) -> None:
        page: DocPage = self.parent
        session: PageSession = page.session_
        # The blocks before this one that did not run yet (a -k or --lf selection):
        # run them first, as the reader did, so that this block finds what the page
        # built before it.
        for earlier in page.blocks_[session.next_block : self.index]:
            if session.failed is None and earlier.block.kind in ("python", "shell"):
                problem = session.run(earlier.block)
                if problem:
                    session.failed = (
                        f"{earlier.name}, run first because this block needs it: "
                        f"{problem}"
                    )
        session.next_block = self.index + 1
        if session.failed:
            raise BlockFailed(
                f"not run: an earlier block of this page failed ({session.failed})"
            )
        problem = session.run(self.block)
        if problem:
            session.failed = self.name
            raise BlockFailed(problem)
        # counted where the report arrives (the main process, under pytest-xdist)
        if self.block.expected_output is not None:
            self.user_properties.append(("page count", (self.lang, "output checked")))
        self.user_properties.append(
            ("page count", (self.lang, f"{self.block.kind} run"))
        )

    def repr_failure(self, excinfo, style=None) -> str:
        if isinstance(excinfo.value, BlockFailed):
            numbered = "\n".join(
                f"{i:4d} | {line}"
                for i, line in enumerate(self.block.code.splitlines(), 1)
            )
            return (
                f"{self.block.page.name}, {self.name} ({self.block.kind}):\n"
                f"{numbered}\n\n{excinfo.value}"
            )
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return (
            self.block.page,
            self.block.line - 1,
            f"{self.block.page.name}::{self.name}",
        )


def page_figures_dir(config: pytest.Config, page: Path) -> Path:
    """Where a page's kernel saves its figures: docs/figures itself under `./dev
    figures`, else a folder of its own (pages may run in different processes)."""
    if os.environ.get("PAGE_FIGURES_DIR"):
        return config._figures_dir  # type: ignore[attr-defined]
    return config._figures_dir / page.stem  # type: ignore[attr-defined]


class FiguresAreCurrent(pytest.Item):
    """After a page's blocks ran: each figure it drew matches its docs/figures/ copy."""

    def runtest(self) -> None:
        from matplotlib.testing.compare import compare_images

        folder = page_figures_dir(self.config, self.path)
        drawn = sorted(folder.glob("*.png"))
        if folder.resolve() == COMMITTED_FIGURES.resolve():
            pytest.skip("the figures were just redrawn into docs/figures")
        stale = []
        for new in drawn:
            old = COMMITTED_FIGURES / new.name
            if not old.exists():
                stale.append(f"{new.name}: drawn by a page but not in docs/figures")
                continue
            try:
                diff = compare_images(
                    str(old), str(new), tol=FIGURE_TOLERANCE, in_decorator=True
                )
            except Exception as e:  # noqa: BLE001 - a size mismatch is reported as an exception
                stale.append(f"{new.name}: {e}".splitlines()[0])
                continue
            if diff is not None:
                stale.append(
                    f"{new.name}: RMS difference {diff['rms']:.1f} > {FIGURE_TOLERANCE}"
                )
        if stale:
            raise BlockFailed(
                "committed figures differ from what the pages draw now; "
                "redraw them with `./dev figures` and commit docs/figures/:\n  "
                + "\n  ".join(stale)
            )

    def repr_failure(self, excinfo, style=None) -> str:
        if isinstance(excinfo.value, BlockFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}: its figures are current"


def xdist_group(nodeid: str) -> str:
    """The group a test runs in under pytest-xdist: its file, except that all the pages
    are one group (run one after another by one worker: their numbers were measured
    with all the machine's threads, see PageSession.env, and two such kernels at once
    would fight over the cores), and that the site build and the browser tests (the
    playground's too), which share the built site, are one."""
    path = nodeid.split("::")[0]
    if path.startswith("docs/"):
        return "pages"
    return (
        "site"
        if path
        in (
            "tests/test_site_build.py",
            "tests/test_browser.py",
            "tests/test_playground.py",
        )
        else path
    )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`./dev test` runs one worker per core: each worker takes a whole group at a
    time (xdist_group), in the order the workers collected them."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list
) -> None:
    """Under pytest-xdist: the groups that take minutes first (LONG_GROUPS), then the
    others largest first (bytes of source as the measure), so that no big group starts
    last and keeps one worker busy after the other has finished."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    paths: dict[str, set[Path]] = {}
    for item in items:
        paths.setdefault(xdist_group(item.nodeid), set()).add(item.path)

    def cost(group: str) -> float:
        if group in LONG_GROUPS:  # before every other group, in the order listed
            return (
                math.inf if group == LONG_GROUPS[0] else 1e12 - LONG_GROUPS.index(group)
            )
        return sum(path.stat().st_size for path in paths[group])

    costs = {group: cost(group) for group in paths}
    # stable: each file keeps its own order (a page's blocks run top to bottom)
    items.sort(key=lambda item: -costs[xdist_group(item.nodeid)])


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    counts = pytest_runtest_logreport.config._page_counts  # type: ignore[attr-defined]
    for name, value in report.user_properties if report.when == "call" else ():
        if name == "page count":
            counts[tuple(value)] += 1
    # count blocks that were explicitly not run (their skip happens at setup)
    if report.when == "setup" and report.skipped:
        lang = "zh" if ".zh.md" in report.nodeid else "en"
        for kind, reason in (
            ("shown, not run", "shown, not run"),
            ("run in English", SAME_AS_ENGLISH),
        ):
            if reason in str(report.longrepr):
                pytest_runtest_logreport.config._page_counts[(lang, kind)] += 1  # type: ignore[attr-defined]


def pytest_sessionstart(session: pytest.Session) -> None:
    pytest_runtest_logreport.config = session.config  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    counts = config._page_counts
    if not counts:
        return
    terminalreporter.section("page code blocks")
    kinds = [
        "python run",
        "shell run",
        "output checked",
        "shown, not run",
        "run in English",
    ]
    terminalreporter.write_line(
        f"{'language':<10}" + "".join(f"{k:>16}" for k in kinds)
    )
    for lang in ("en", "zh"):
        terminalreporter.write_line(
            f"{lang:<10}" + "".join(f"{counts[(lang, k)]:>16}" for k in kinds)
        )
