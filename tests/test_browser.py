"""The built site in a real browser: headless Chromium (Debian's `chromium` package,
driven by Playwright), against the site served on 127.0.0.1, with no network.

For every page in both languages: no console errors and no failed requests (the site
serves everything it needs itself, MathJax included); the language switcher leads to the
same page in the other language; a search lists the right chapter first, in each
language; every code block has a copy button; every formula is rendered; every
diagram is drawn; every figure loads; at a phone's width (390 px) the page does not
scroll sideways. The notebook pages are checked the same way. Screenshots of a few
pages (both languages, light and dark, desktop and phone) are written to
site-test/screenshots/ for a person to look at.

`./dev` installs Chromium and a CJK font where it can (Debian, as root); elsewhere these
tests skip and say why.
"""

import json
import os
import shutil
import subprocess

import pagecode
import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

# $CHROMIUM names another Chromium-based browser (GitHub's runners have Google Chrome)
CHROMIUM = (
    os.environ.get("CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
)
if CHROMIUM is None:
    reason = "no Chromium: install Debian's chromium and fonts-noto-cjk (./dev does)"
    if os.environ.get("CI"):  # CI must run them: ./dev test installs Chromium there
        raise RuntimeError(f"CI=true and {reason}")
    pytest.skip(reason, allow_module_level=True)

SITE = pagecode.ROOT / "site-test"  # conftest.served_site builds here; screenshots too
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
SCREENSHOTS = [  # (page, language, colour scheme, viewport)
    ("06-attention", "en", "light", "desktop"),
    ("06-attention", "zh", "dark", "desktop"),
    ("05-embeddings", "zh", "light", "phone"),
    ("", "en", "dark", "phone"),
    ("notebooks/05-embeddings", "zh", "light", "desktop"),
    ("glossary", "zh", "light", "desktop"),
]


def page_paths() -> list[str]:
    """The URL path of every page, in both languages: '06-attention/', 'zh/...', and
    of every chapter's notebook page: 'notebooks/06-attention/', 'zh/notebooks/...'."""
    paths = []
    for page in pagecode.pages("en"):
        slug = "" if page.stem == "index" else page.stem + "/"
        paths += [slug, "zh/" + slug]
    for page in filter(pagecode.is_chapter, pagecode.pages("en")):
        paths += [f"notebooks/{page.stem}/", f"zh/notebooks/{page.stem}/"]
    return paths


@pytest.fixture(scope="module")
def base_url(served_site):
    """The site built and served by conftest.py's served_site (site-test/)."""
    return served_site.url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, url: str, viewport=DESKTOP, scheme="light", wait="networkidle"):
    """The page at `url`, loaded, with what went wrong on the way."""
    page = browser.new_page(viewport=viewport, color_scheme=scheme)
    problems = []
    page.on(
        "console",
        lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on(
        "response",
        lambda r: (
            problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
        ),
    )
    page.goto(url, wait_until=wait)
    return page, problems


@pytest.mark.parametrize("path", page_paths())
def test_page_in_a_browser(browser, base_url, path):
    # "load", not "networkidle": the only later request is the search worker's index,
    # which the search tests load for real (0.8 s a page saved). Here: the page asks
    # for its own language's index.
    page, problems = open_page(browser, base_url + path, wait="load")
    base = page.evaluate(
        "new URL(JSON.parse(document.getElementById('__config').textContent).base"
        " + '/search/search_index.json', location.href).href"
    )
    language_root = base_url + ("zh/" if path.startswith("zh/") else "")
    assert (
        base.replace("//search", "/search")
        == f"{language_root}search/search_index.json"
    )
    # formulas: MathJax replaces every arithmatex block with its rendering
    formulas = page.locator(".arithmatex").count()
    if formulas:
        rendered = "document.querySelectorAll('.arithmatex mjx-container').length"
        page.wait_for_function(f"{rendered} >= {formulas}", timeout=15_000)
    # diagrams: Material swaps each pre.mermaid for a drawn div.mermaid
    diagrams = page.evaluate("document.querySelectorAll('.mermaid').length")
    if diagrams:
        page.wait_for_function(
            "document.querySelectorAll('pre.mermaid').length === 0", timeout=15_000
        )
        drawn = page.locator("div.mermaid").count()
        assert drawn == diagrams, f"{drawn} of {diagrams} diagrams drawn"
    assert problems == [], problems

    code_blocks = page.locator(".md-content pre > code").count()
    copy_buttons = page.locator(".md-content pre button[data-md-type='copy']").count()
    assert copy_buttons == code_blocks, (
        f"{copy_buttons} copy buttons, {code_blocks} code blocks"
    )

    # at 1280 px, a block of at most 88 columns (the pages' limit) fits its column
    scrolling = page.evaluate(
        """Array.from(document.querySelectorAll('.md-content pre > code'))
        .filter(c => Math.max(...c.textContent.split('\\n').map(l => l.length)) <= 88)
        .filter(c => c.scrollWidth > c.clientWidth + 1).length"""
    )
    assert scrolling == 0, f"{scrolling} code blocks of <= 88 columns scroll sideways"

    figures = page.locator(".md-content img")
    for i in range(figures.count()):
        width = figures.nth(i).evaluate("img => img.complete && img.naturalWidth")
        assert width, f"figure {figures.nth(i).get_attribute('src')} did not load"

    # the language switcher: the same page in the other language
    other = path[3:] if path.startswith("zh/") else "zh/" + path
    lang = "en" if path.startswith("zh/") else "zh"
    link = page.locator(f".md-select a[hreflang='{lang}']")
    assert link.count() == 1
    assert link.get_attribute("href") is not None
    target = page.evaluate(
        "href => new URL(href, location.href).href", link.get_attribute("href")
    )
    assert target == base_url + other

    # the same page at a phone's width
    page.set_viewport_size(PHONE)
    overflow = page.evaluate(
        "document.scrollingElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px at 390 px"
    assert problems == [], problems
    page.close()


@pytest.mark.parametrize("lang", ["", "zh/"])
def test_a_notebook_page_shows_the_notebook(browser, base_url, lang):
    """The notebook page of chapter 05: every code cell with its stored output, the
    formulas of its markdown typeset, its figures, and the .ipynb to download."""
    page, problems = open_page(browser, f"{base_url}{lang}notebooks/05-embeddings/")
    rendered = "document.querySelectorAll('.jp-RenderedMarkdown mjx-container').length"
    page.wait_for_function(f"{rendered} > 0", timeout=15_000)
    name = "05-embeddings" + (".zh" if lang else "") + ".ipynb"
    nb = json.loads((pagecode.DOCS / "notebooks" / name).read_text(encoding="utf-8"))
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    # nbconvert nests each cell in a wrapper of the same classes: count those with ids
    assert page.locator(".jp-CodeCell[id^='cell-id=']").count() == len(code)
    with_output = sum(1 for cell in code if cell["outputs"])
    assert page.locator(".jp-CodeCell .jp-OutputArea-output").count() >= with_output
    assert page.locator(".jp-RenderedMarkdown img").count() >= 1  # its figure
    download = page.locator(f"a[href='{name}'][download]")
    assert download.count() == 1
    response = page.request.get(f"{base_url}{lang}notebooks/05-embeddings/{name}")
    assert response.ok and json.loads(response.body())["cells"] == nb["cells"]
    assert problems == [], problems
    page.close()


@pytest.mark.parametrize(
    "site, query, first",
    [
        ("", "attention", "06-attention/"),
        ("", "tokenizer", "04-tokenizer/"),
        ("zh/", "注意力", "zh/06-attention/"),
        ("zh/", "分词器", "zh/04-tokenizer/"),
        ("zh/", "attention", "zh/06-attention/"),  # the English term in parentheses
        ("zh/", "KV 缓存", "zh/11-generation/"),
    ],
)
def test_search_lists_the_chapter_first(browser, base_url, site, query, first):
    page, problems = open_page(browser, base_url + site)
    box = page.locator(".md-search__input")
    box.click()
    box.fill(query)  # Material searches on key events: fill, then press a key
    box.press("End")
    results = page.locator(".md-search-result__item > a")
    results.first.wait_for(timeout=15_000)
    top = results.first.get_attribute("href").split("?")[0]
    assert top == base_url + first, (query, top)
    assert problems == [], problems
    page.close()


def test_screenshots_for_review(browser, base_url):
    out = SITE / "screenshots"
    out.mkdir(exist_ok=True)
    for slug, lang, scheme, size in SCREENSHOTS:
        path = ("zh/" if lang == "zh" else "") + (slug + "/" if slug else "")
        viewport = PHONE if size == "phone" else DESKTOP
        page, problems = open_page(browser, base_url + path, viewport, scheme)
        assert problems == [], problems
        name = f"{slug.replace('/', '-') or 'home'}-{lang}-{scheme}-{size}.png"
        page.screenshot(path=str(out / name), full_page=False)
        page.close()
        assert (out / name).stat().st_size > 10_000, f"{name} looks empty"
    print(f"\nscreenshots: {out}")


def test_a_cjk_font_is_installed():
    """Without one, Chinese renders as boxes (in the screenshots too)."""
    fonts = subprocess.run(
        ["fc-list", ":lang=zh", "family"], capture_output=True, text=True
    ).stdout
    assert fonts.strip(), "no CJK font: install Debian's fonts-noto-cjk (./dev does)"
