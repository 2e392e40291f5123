"""MkDocs hook: the "verified by CI" badge, written into the built site as
badge/verified.svg (README.md and the home page show it).

The published site is built only after the whole test suite passed (the `build` job of
.github/workflows/ci.yml needs the `test` job), and that job sets $VERIFIED_BY_CI: the
badge then reads "verified by CI" with the date of that build. Any other build (`./dev
serve`, `./dev build` on your machine) says "local build, not verified", because nothing
ran its tests.
"""

from __future__ import annotations

import datetime
import os
from html import escape
from pathlib import Path

CHAR_PX = (
    6.6  # the width of a character of 11 px Verdana, roughly: enough to size the box
)


def badge_svg(label: str, message: str, color: str) -> str:
    """A flat two-part badge, like the ones README files show."""
    left, right = (int(len(text) * CHAR_PX) + 12 for text in (label, message))
    width = left + right
    label, message = escape(label), escape(message)
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" \
role="img" aria-label="{label}: {message}">
<title>{label}: {message}</title>
<rect width="{left}" height="20" fill="#555"/>
<rect x="{left}" width="{right}" height="20" fill="{color}"/>
<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" \
font-size="11">
<text x="{left / 2}" y="14">{label}</text>
<text x="{left + right / 2}" y="14">{message}</text>
</g>
</svg>
"""


def verified_badge(environ: dict[str, str] = os.environ) -> str:
    if environ.get("VERIFIED_BY_CI"):
        today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        return badge_svg("verified by CI", today, "#2e7d32")
    return badge_svg("verified by CI", "local build, not verified", "#9e9e9e")


def on_post_build(config):
    out = Path(config["site_dir"]) / "badge" / "verified.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(verified_badge(), encoding="utf-8")
