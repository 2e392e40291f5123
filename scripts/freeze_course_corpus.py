"""Freeze the course corpus: this repository's pages, code and glossary, as package
data.

    ./dev corpus            # or: python scripts/freeze_course_corpus.py

Pages and tests train on `load_corpus("course")` and its relatives. They read a frozen
snapshot, gptlib/corpora/course-v<N>.json.gz, never the live docs/, so editing a page
never moves a number that another page shows. Run this script only to make a new
version on purpose: it writes the snapshot and prints its SHA-256, which then goes into
`COURSE_CORPUS` in gptlib/data.py and the pin in tests/test_corpus.py; every page
number measured on the old version has to be measured again.

The snapshot holds what was derived from the repository at one commit:
* pages: each page's sections (cut before every `## ` heading) in English and Chinese,
  with HTML comments and `--8<--` include lines removed;
* lines: the candidate lines of the English/Chinese/code classification data set
  (prose lines of the pages outside code blocks, every line of gptlib/ and snippets/);
* glossary: the (English, Chinese) pairs of terms.yml.
"""

import argparse
import gzip
import hashlib
import json
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SKIP_LINE = re.compile(
    r"^(#|\||!\[|<|```|\?\?\?|[-*] \[|[-=]{3})"
)  # headings, tables, figures, HTML, fences
CJK = re.compile(r"[\u4e00-\u9fff]")


def english_pages() -> list[Path]:
    """The English pages in reading order, Home first."""
    pages = [p for p in DOCS.glob("*.md") if not p.name.endswith(".zh.md")]
    return sorted(pages, key=lambda p: "00" if p.stem == "index" else p.stem)


def chinese_twin(page: Path) -> Path:
    return page.with_name(page.stem + ".zh.md")


def page_sections(page: Path) -> list[str]:
    """A page's text, cut before each `## ` heading.

    HTML comments and snippet includes are removed first.
    """
    if not page.exists():
        return []
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"^\s*-+8<-+.*$\n?", "", text, flags=re.M)
    return [part for part in re.split(r"(?m)^(?=## )", text.strip() + "\n\n") if part]


def prose_lines(page: Path, chinese: bool) -> list[str]:
    """Lines of prose in the page's language.

    Lines inside code blocks, headings, tables and HTML are left out.
    """
    lines, in_code = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code or SKIP_LINE.match(line.lstrip()):
            continue
        if chinese == bool(
            CJK.search(line)
        ):  # Chinese pages: only the lines with Chinese in them
            lines.append(line.strip())
    return lines


def code_lines() -> list[str]:
    sources = sorted(
        [*(ROOT / "gptlib").glob("*.py"), *(ROOT / "snippets").glob("*.py")]
    )
    return [
        line.strip()
        for source in sources
        for line in source.read_text(encoding="utf-8").splitlines()
    ]


def keep(lines: list[str]) -> list[str]:
    return [line for line in lines if line and "--8<--" not in line]


def read_glossary(path: Path) -> list[list[str]]:
    """The (English, Chinese) pairs of a terms file; a malformed one stops the script
    with one line that names the file and the entry."""
    try:
        terms = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SystemExit(f"error: {path}: {' '.join(str(e).split())}") from None
    if not isinstance(terms, list):
        raise SystemExit(f"error: {path}: expected a list of terms, got {terms!r:.60}")
    for i, term in enumerate(terms, 1):
        ok = isinstance(term, dict) and all(
            isinstance(term.get(key), str) and term[key].strip() for key in ("en", "zh")
        )
        if not ok:
            raise SystemExit(
                f"error: {path}: term {i} needs non-empty 'en' and 'zh' strings, "
                f"got {term!r:.80}"
            )
    return [[t["en"], t["zh"]] for t in terms]


def snapshot(version: int, terms: Path) -> dict:
    pages = english_pages()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    glossary = read_glossary(terms)  # before any other work: a bad file stops here
    return {
        "name": "course",
        "version": version,
        "source_commit": commit,
        "pages": [
            {
                "page": p.stem,
                "en": page_sections(p),
                "zh": page_sections(chinese_twin(p)),
            }
            for p in pages
        ],
        "lines": {
            "english": keep(
                [line for p in pages for line in prose_lines(p, chinese=False)]
            ),
            "chinese": keep(
                [
                    line
                    for p in pages
                    if chinese_twin(p).exists()
                    for line in prose_lines(chinese_twin(p), chinese=True)
                ]
            ),
            "code": keep(code_lines()),
        },
        "glossary": glossary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version",
        type=int,
        required=True,
        help="the snapshot version to write (course-vN)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write (default: gptlib/corpora/course-vN.json.gz)",
    )
    parser.add_argument(
        "--terms",
        type=Path,
        default=ROOT / "terms.yml",
        help="the terms table whose pairs become the glossary (default: terms.yml)",
    )
    args = parser.parse_args()
    data = json.dumps(
        snapshot(args.version, args.terms), ensure_ascii=False, sort_keys=True, indent=0
    ).encode("utf-8")
    out = args.out or ROOT / "gptlib" / "corpora" / f"course-v{args.version}.json.gz"
    # mtime=0: the same bytes every time
    out.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(
        f"{out}: {out.stat().st_size:,} bytes, "
        f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}"
    )


if __name__ == "__main__":
    main()
