"""One fresh Python session for one page: the reader who pastes a page's blocks, in
order, into a new interpreter. The page tests start this script in a subprocess and send
it blocks; it runs each in the same namespace and answers with the output or the error.

Protocol: one JSON object per line on stdin ({"code", "filename"}), one per line on the
file descriptor given as argv[1] ({"ok", "stdout", "error", "exception"}).
"""

import contextlib
import io
import json
import linecache
import os
import sys
import traceback

FIGURES_DIR = os.environ.get("PAGE_FIGURES_DIR")


def save_figures() -> None:
    """Write each changed labelled matplotlib figure to $PAGE_FIGURES_DIR/<label>.png.

    A page makes a figure with `plt.figure(num="label")` or `plt.subplots(num="label")`
    and shows it with `![...](figures/label.png)`. This runs after every block, so a
    figure that a later block draws on (or redraws under the same label) is saved as
    it finally looks. A figure is written when it is `stale` (matplotlib sets the flag
    whenever anything on it changes; we clear it after saving), so unchanged figures are
    not written again.
    """
    if not FIGURES_DIR or "matplotlib.pyplot" not in sys.modules:
        return
    from matplotlib._pylab_helpers import (
        Gcf,
    )  # the open figures, without changing the current one

    for manager in Gcf.get_all_fig_managers():
        fig = manager.canvas.figure
        label = fig.get_label()
        if label and fig.stale:
            os.makedirs(FIGURES_DIR, exist_ok=True)
            fig.savefig(
                os.path.join(FIGURES_DIR, f"{label}.png"),
                dpi=110,
                bbox_inches="tight",
                metadata={"Software": None},
            )
            fig.stale = False


def main() -> None:
    proto = os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    for request in sys.stdin:
        message = json.loads(request)
        code, filename = message["code"], message["filename"]
        # Let tracebacks show the block's own lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        out = io.StringIO()
        error = exception = None
        try:
            compiled = compile(code, filename, "exec")
            with contextlib.redirect_stdout(out):
                exec(compiled, namespace)
        except BaseException as e:  # noqa: BLE001 - report everything, SystemExit included
            frames = traceback.extract_tb(e.__traceback__)
            # Drop this driver's own frame; keep the block's frames and their callees.
            frames = [f for f in frames if f.filename != __file__]
            exception = "".join(traceback.format_exception_only(e))
            error = "".join(traceback.format_list(frames)) + exception
        save_figures()
        proto.write(
            json.dumps(
                {
                    "ok": error is None,
                    "stdout": out.getvalue(),
                    "error": error,
                    "exception": exception,  # its last line(s), as a REPL ends them
                }
            )
            + "\n"
        )
        proto.flush()


if __name__ == "__main__":
    main()
