"""MkDocs hook: the playground page (docs/playground.md, docs/playground.zh.md).

* In the page's HTML, `@@ROOT@@` becomes the way from that page to the site's root, so
  that both languages load the same files: /playground/ui.js, /playground/model/...
* After the build, onnxruntime-web's files are copied from node_modules/ (which
  `npm ci` fills: ./dev does) into playground/vendor/ of the site: the page fetches
  nothing from a CDN. Without them the page says so in place of the playground.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT_MARK = "@@ROOT@@"
ORT = Path(__file__).resolve().parent.parent / "node_modules" / "onnxruntime-web"
# the single-threaded WebAssembly build (GitHub Pages cannot serve the headers that
# threads need); the .mjs is the loader the .js imports
VENDORED = (
    "ort.wasm.min.js",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
)


def on_page_content(html, page, config, files):
    if ROOT_MARK not in html:
        return html
    depth = page.url.rstrip("/").count("/") + 1 if page.url else 0
    return html.replace(ROOT_MARK, "../" * depth)


def on_post_build(config):
    vendor = Path(config["site_dir"]) / "playground" / "vendor"
    if not (ORT / "dist").is_dir():
        return  # the page reports the missing files to the reader
    vendor.mkdir(parents=True, exist_ok=True)
    for name in VENDORED:
        shutil.copy(ORT / "dist" / name, vendor / name)
