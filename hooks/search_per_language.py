"""One search index per language.

mkdocs-static-i18n builds both languages into one search index, so on the Chinese site
a search for "attention" listed the English pages first. After the build this hook
splits site/search/search_index.json into the English pages (kept there) and the
Chinese ones (site/zh/search/search_index.json, locations relative to zh/), and points
the Chinese pages' search at theirs: Material fetches `<base>/search/search_index.json`
and resolves results against the same `base`, taken from each page's `__config`.
"""

import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority

ZH = "zh/"
BASE = re.compile(r'("base": ")([^"]*?)(?:/zh/)?(")')  # the site root, maybe + /zh/


@event_priority(-100)  # after mkdocs-static-i18n has written the merged index
def on_post_build(config, **kwargs) -> None:
    site = Path(config.site_dir)
    index_path = site / "search" / "search_index.json"
    if not index_path.exists() or not (site / ZH).is_dir():
        return  # a build of one language, or without search
    index = json.loads(index_path.read_text(encoding="utf-8"))
    if not any(d["location"].startswith(ZH) for d in index["docs"]):
        return  # split already: this runs after each language's build
    english = [d for d in index["docs"] if not d["location"].startswith(ZH)]
    chinese = [
        {**d, "location": d["location"][len(ZH) :]}
        for d in index["docs"]
        if d["location"].startswith(ZH)
    ]
    write(index_path, {**index, "docs": english})
    write(site / ZH / "search" / "search_index.json", {**index, "docs": chinese})
    for page in (site / ZH).rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        pointed = BASE.sub(lambda m: f"{m[1]}{m[2]}/zh/{m[3]}", html, count=1)
        if pointed != html:
            page.write_text(pointed, encoding="utf-8")


def write(path: Path, index: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
