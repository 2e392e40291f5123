"""The course's model in headless Chromium (Debian's `chromium`, driven by Playwright),
through onnxruntime-web from node_modules (`npm ci`, which ./dev runs), served on
127.0.0.1 with no network.

First docs/playground/playground.js on its own, with a model trained and exported here:
greedy decoding gives exactly gptlib's greedy tokens, a seed gives the same sample
every time, the attention weights are causal rows that sum to 1. Then the playground
page of the built site, in both languages, with the committed model: it loads, its
greedy text is onnxruntime's in Python, its samples repeat with their seed, its map is
causal, it says so where WebAssembly is missing; screenshots go to
site-test/screenshots/playground-*.png."""

import functools
import http.server
import json
import os
import shutil
import threading

import numpy as np
import pagecode
import pytest
from test_browser import CHROMIUM  # skips this module where there is no Chromium

from gptlib import generate, load_model, load_tokenizer
from gptlib.cli import main

playwright = pytest.importorskip("playwright.sync_api")
onnxruntime = pytest.importorskip("onnxruntime")

ORT = pagecode.ROOT / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = (
    "ort.wasm.min.js",
    "ort-wasm-simd-threaded.wasm",
    "ort-wasm-simd-threaded.mjs",
)
if not ORT.is_dir():
    reason = "no node_modules/onnxruntime-web: run npm ci (./dev does)"
    if os.environ.get("CI"):
        raise RuntimeError(f"CI=true and {reason}")
    pytest.skip(reason, allow_module_level=True)

HARNESS = """<!doctype html><meta charset="utf-8">
<script src="ort.wasm.min.js"></script>
<script type="module">
import { Playground } from "./playground.js";
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = "./";
window.playground = await Playground.load(ort, ".", 64);
window.ready = true;
</script>"""
PROMPT = "The model "


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A nano model trained for 60 steps, exported, with the playground's files."""
    root = tmp_path_factory.mktemp("playground")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train = "train --preset nano --steps 60 --no-progress --out run"
        assert main(train.split()) == 0
        assert main("export --checkpoint run --onnx web".split()) == 0
    finally:
        os.chdir(cwd)
    web = root / "web"
    for name in ORT_FILES:
        shutil.copy(ORT / name, web)
    shutil.copy(pagecode.DOCS / "playground" / "playground.js", web)
    (web / "index.html").write_text(HARNESS, encoding="utf-8")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(web))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def driver():
    """Playwright, once for the module (one sync instance per thread at a time)."""
    with playwright.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def page(served, driver):
    _, url = served
    # the harness page, in a browser of its own
    browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith(url) else route.abort()
        ),
    )
    page.goto(url)
    page.wait_for_function("window.ready === true", timeout=60_000)
    yield page
    assert not errors, errors
    browser.close()


def test_greedy_decoding_in_the_browser_is_gptlibs(served, page):
    root, _ = served
    model, tokenizer = load_model(root / "run" / "checkpoint.safetensors")
    expected = generate(model, tokenizer, PROMPT, max_new_tokens=80, temperature=0)
    started = page.evaluate("performance.now()")
    ids = page.evaluate(
        f"playground.generate({PROMPT!r}, {{maxNewTokens: 80, temperature: 0}})"
    )
    seconds = (page.evaluate("performance.now()") - started) / 1000
    print(f"browser: 80 tokens in {seconds:.2f} s, {80 / seconds:.0f} tokens/s")
    assert tokenizer.decode(ids) == expected
    assert len(ids) == len(tokenizer.encode(PROMPT)) + 80


def test_a_seed_gives_the_same_sample_and_another_seed_another(page):
    def sample(seed):
        return page.evaluate(
            f"playground.generate({PROMPT!r}, {{maxNewTokens: 60, temperature: 1.0,"
            f" topK: 20, seed: {seed}}})"
        )

    first, again, other = sample(1), sample(1), sample(2)
    assert first == again and first != other


def test_the_attention_is_causal_and_each_row_sums_to_one(page):
    check = page.evaluate(
        """(async () => {
          const ids = playground.tokenizer.encode("attention: 注意力");
          const { attention } = await playground.forward(ids);
          const [B, L, H, T] = attention.dims, w = attention.data;
          let worstSum = 0, future = 0;
          for (let m = 0; m < L * H; m++)
            for (let i = 0; i < T; i++) {
              let sum = 0;
              for (let j = 0; j < T; j++) {
                const x = w[(m * T + i) * T + j];
                sum += x;
                if (j > i) future = Math.max(future, x);
              }
              worstSum = Math.max(worstSum, Math.abs(sum - 1));
            }
          return { dims: attention.dims, worstSum, future };
        })()"""
    )
    assert check["dims"] == [1, 2, 4, 14, 14]  # nano: 2 layers of 4 heads, 14 chars
    assert check["future"] == 0 and check["worstSum"] < 1e-5


# --- the page of the built site, with the committed model ----------------------------

MODEL = pagecode.DOCS / "playground" / "model"


def onnx_greedy(prompt: str, new: int) -> str:
    """The committed model's greedy text, by onnxruntime in Python."""
    info = json.loads((MODEL / "model.json").read_text())
    tokenizer = load_tokenizer(MODEL / "tokenizer.json")
    session = onnxruntime.InferenceSession(str(MODEL / "model.onnx"))
    ids = tokenizer.encode(prompt)
    for _ in range(new):
        context = np.array([ids[-info["block_size"] :]], dtype=np.int64)
        logits = session.run(["logits"], {"ids": context})[0]
        ids.append(int(logits[0, -1].argmax()))
    return tokenizer.decode(ids)


@pytest.fixture(scope="module")
def site_browser(driver):
    browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield browser
    browser.close()


def open_playground(browser, url: str, lang: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems = []
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.goto(url + ("zh/" if lang == "zh" else "") + "playground/")
    return page, problems


def run_playground(page, prompt: str, new: int, temperature: float, seed: int = 0):
    page.fill("#pg-prompt", prompt)
    page.fill("#pg-tokens", str(new))
    page.fill("#pg-temperature", str(temperature))
    page.fill("#pg-seed", str(seed))
    page.click("#pg-generate")
    page.wait_for_function("!document.getElementById('pg-generate').disabled")
    return page.inner_text("#pg-output")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_playground_page_writes_onnxruntimes_greedy_text(
    served_site, site_browser, lang
):
    page, problems = open_playground(site_browser, served_site.url, lang)
    page.wait_for_selector("#gpt-playground[data-state=ready]", timeout=60_000)
    prompt = "The model" if lang == "en" else "模型"
    text = run_playground(page, prompt, 60, 0)
    assert text == onnx_greedy(prompt, 60)
    status = page.inner_text("#pg-status")
    print(f"{lang}: {status}")
    assert "60" in status and not problems, problems
    shots = served_site.path / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"playground-{lang}.png"), full_page=True)
    page.close()


def test_the_page_samples_again_with_its_seed_and_maps_causal_attention(
    served_site, site_browser
):
    page, problems = open_playground(site_browser, served_site.url, "en")
    page.wait_for_selector("#gpt-playground[data-state=ready]", timeout=60_000)
    first = run_playground(page, "Attention ", 80, 1.0, seed=3)
    again = run_playground(page, "Attention ", 80, 1.0, seed=3)
    other = run_playground(page, "Attention ", 80, 1.0, seed=4)
    assert first == again != other
    page.select_option("#pg-layer", "3")
    page.select_option("#pg-head", "2")
    check = page.evaluate(
        """(() => {
          const { dims, data } = window.playgroundState.attention;
          const [, L, H, T] = dims;
          let worstSum = 0, future = 0;
          for (let m = 0; m < L * H; m++)
            for (let i = 0; i < T; i++) {
              let sum = 0;
              for (let j = 0; j < T; j++) {
                const x = data[(m * T + i) * T + j];
                sum += x;
                if (j > i) future = Math.max(future, x);
              }
              worstSum = Math.max(worstSum, Math.abs(sum - 1));
            }
          const canvas = document.getElementById("pg-attention");
          return { dims, worstSum, future, width: canvas.width };
        })()"""
    )
    assert check["dims"] == [1, 4, 4, 64, 64]  # tiny: 4 layers of 4 heads, 64 chars
    assert check["future"] == 0 and check["worstSum"] < 1e-5
    assert check["width"] > 64 * 6  # the map was drawn, a cell per pair
    assert not problems, problems
    page.close()


def test_without_webassembly_the_page_says_what_is_missing(served_site, site_browser):
    page = site_browser.new_page()
    page.add_init_script("delete globalThis.WebAssembly")  # as in a browser without it
    page.goto(served_site.url + "playground/")
    page.wait_for_selector("#pg-status.pg-failed", timeout=30_000)
    assert "no WebAssembly" in page.inner_text("#pg-status")
    assert page.is_disabled("#pg-generate")
    page.close()


def test_the_committed_model_is_what_model_json_says():
    """docs/playground/model/ is versioned data (./dev playground remakes it): its files
    are the ones model.json names, and the model is the tiny preset it says."""
    import hashlib

    info = json.loads((MODEL / "model.json").read_text())
    for name, sha256 in info["sha256"].items():
        assert hashlib.sha256((MODEL / name).read_bytes()).hexdigest() == sha256, name
    session = onnxruntime.InferenceSession(str(MODEL / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["logits", "attention"]
    tokenizer = load_tokenizer(MODEL / "tokenizer.json")
    assert tokenizer.vocab_size == info["vocab_size"]
    assert (info["preset"], info["n_layer"], info["n_head"]) == ("tiny", 4, 4)
    assert (MODEL / "model.onnx").stat().st_size < 5e6
