"""The course corpus is frozen: a versioned snapshot inside the package, pinned here.

Editing a page never moves the numbers other pages show, because they train on this
snapshot, not on the live docs/. A new version is made on purpose with
`./dev corpus --version N` (scripts/freeze_course_corpus.py); then this pin, the one in
gptlib/data.py, and every number measured on the old version change together.
"""

import gzip
import hashlib
import json
import subprocess
import sys
from importlib import resources

import pagecode
import pytest

from gptlib import load_corpus
from gptlib.data import COURSE_CORPUS, course_snapshot
from gptlib.finetuning import LABELS, course_lines, glossary_instructions

PINNED = (
    "course-v1.json.gz",
    "a2740bd721f7e4543b3e21251eb14521fd539bb6062151ea68b50c8e1aadd9e5",
)


def test_the_packaged_snapshot_is_the_pinned_one():
    raw = (resources.files("gptlib") / "corpora" / PINNED[0]).read_bytes()
    assert (COURSE_CORPUS.filename, hashlib.sha256(raw).hexdigest()) == PINNED


def test_course_corpora_are_the_frozen_text():
    text, en, zh = (
        load_corpus("course"),
        load_corpus("course-en"),
        load_corpus("course-zh"),
    )
    assert (len(text), len(en), len(zh)) == (519_550, 308_000, 211_550)
    assert len(en) + len(zh) == len(text) and text.startswith(
        "# Build a GPT from scratch"
    )
    assert (
        sum("\u4e00" <= ch <= "\u9fff" for ch in zh) == 45_382
        and "<!--" not in text
        and "--8<--" not in text
    )


def test_derived_data_sets_are_frozen_too():
    lines = course_lines()
    assert len(lines) == 4574 and {label for _, label in lines} == set(
        range(len(LABELS))
    )
    assert len(glossary_instructions()) == 118 and course_snapshot()["version"] == 1


def test_the_freeze_command_writes_a_loadable_snapshot(tmp_path):
    out = tmp_path / "course.json.gz"
    done = subprocess.run(
        [
            sys.executable,
            str(pagecode.ROOT / "scripts" / "freeze_course_corpus.py"),
            "--version",
            "99",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    fresh = json.loads(gzip.decompress(out.read_bytes()))
    assert fresh["version"] == 99 and set(fresh) == set(course_snapshot())
    assert {p["page"] for p in fresh["pages"]} >= {
        p["page"] for p in course_snapshot()["pages"]
    }
    assert hashlib.sha256(out.read_bytes()).hexdigest() in done.stdout


@pytest.mark.parametrize(
    "text, words",
    [
        ("- en: attention\n  zh: [unclosed\n", "while parsing"),
        ("en: attention\n", "expected a list of terms"),
        ("- en: attention\n- en: token\n  zh: 词元\n", "term 1 needs"),
        ("- en: attention\n  zh: ''\n", "term 1 needs"),
    ],
)
def test_the_freeze_command_names_a_malformed_terms_file(tmp_path, text, words):
    terms = tmp_path / "terms.yml"
    terms.write_text(text, encoding="utf-8")
    out = tmp_path / "course.json.gz"
    done = subprocess.run(
        [
            sys.executable,
            str(pagecode.ROOT / "scripts" / "freeze_course_corpus.py"),
            *f"--version 99 --out {out} --terms {terms}".split(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {terms}: "), done.stderr
    assert words in lines[0] and "Traceback" not in done.stderr
    assert not out.exists()
