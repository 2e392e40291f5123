"""Figures the pages draw, saved from inside a page's Jupyter kernel.

The page tests run a page's blocks, in order, in one fresh Jupyter kernel (conftest.py):
the blocks are the cells of the chapter's notebook. Before the first block they register
`save_figures` to run after every cell, so a page's figures land in $PAGE_FIGURES_DIR
without the page saying anything about files.
"""

import os
import sys


def save_figures(*_: object) -> None:
    """Write each changed labelled matplotlib figure to $PAGE_FIGURES_DIR/<label>.png.

    A page makes a figure with `plt.figure(num="label")` or `plt.subplots(num="label")`
    and shows it with `![...](figures/label.png)`. This runs after every cell, so a
    figure that a later block draws on (or redraws under the same label) is saved as
    it finally looks. A figure is written when it is `stale` (matplotlib sets the flag
    whenever anything on it changes; we clear it after saving), so unchanged figures are
    not written again.
    """
    folder = os.environ.get("PAGE_FIGURES_DIR")
    if not folder or "matplotlib.pyplot" not in sys.modules:
        return
    # the open figures, without changing the current one
    from matplotlib._pylab_helpers import Gcf

    for manager in Gcf.get_all_fig_managers():
        fig = manager.canvas.figure
        label = fig.get_label()
        if label and fig.stale:
            os.makedirs(folder, exist_ok=True)
            fig.savefig(
                os.path.join(folder, f"{label}.png"),
                dpi=110,
                bbox_inches="tight",
                metadata={"Software": None},
            )
            fig.stale = False


# The code the page tests run in a fresh kernel before a page's first block. It leaves
# no name behind in the reader's namespace: a page must show its own imports.
KERNEL_SETUP = """\
def _register_page_figures(folder):
    import sys
    sys.path.insert(0, folder)
    import page_figures
    sys.path.remove(folder)
    get_ipython().events.register("post_run_cell", page_figures.save_figures)
_register_page_figures({folder!r})
del _register_page_figures
"""
