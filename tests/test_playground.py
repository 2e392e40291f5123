"""The course's model in headless Chromium (Debian's `chromium`, driven by Playwright),
through onnxruntime-web from node_modules (`npm ci`, which ./dev runs) and
docs/playground/playground.js, served on 127.0.0.1 with no network: greedy decoding
gives exactly gptlib's greedy tokens, a seed gives the same sample every time, and the
attention weights are causal rows that sum to 1."""

import functools
import http.server
import os
import shutil
import threading

import pagecode
import pytest
from test_browser import CHROMIUM  # skips this module where there is no Chromium

from gptlib import generate, load_model
from gptlib.cli import main

playwright = pytest.importorskip("playwright.sync_api")
pytest.importorskip("onnxruntime")

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
def page(served):
    _, url = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(url)
                else route.abort()
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
