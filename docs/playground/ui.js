// The playground page: a prompt, sampling settings, the text as it is written, and the
// attention map of any layer and head over it. Its words come from the page (data-*
// attributes of #gpt-playground), so the English and the Chinese page share this file.
import { Playground } from "./playground.js";

const box = document.getElementById("gpt-playground");
const $ = (id) => document.getElementById(id);
const status = $("pg-status");
const words = box.dataset;
// the site's root as a full URL (the page gives its relative way there: see
// hooks/playground.py); onnxruntime-web resolves a relative wasmPaths from its own
// script, not from the page
const root = new URL(words.root, document.baseURI).href;
let playground = null;

function say(text, failed = false) {
  status.textContent = text;
  status.classList.toggle("pg-failed", failed);
}

function fill(select, count) {
  select.replaceChildren(
    ...Array.from({ length: count }, (_, i) => new Option(String(i), String(i))),
  );
}

// The weights of one head, T x T, as a grid: row i is token i, looking back at tokens
// 0..i (the columns); darker is more. The characters label the rows and the columns.
function drawAttention() {
  const state = window.playgroundState;
  if (!state) return;
  const [, L, H, T] = state.attention.dims;
  const layer = Number($("pg-layer").value), head = Number($("pg-head").value);
  const canvas = $("pg-attention");
  const cell = Math.max(6, Math.min(14, Math.floor(560 / T)));
  const margin = 16;
  canvas.width = canvas.height = margin + T * cell;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const offset = ((layer * H + head) * T) * T;
  for (let i = 0; i < T; i++) {
    for (let j = 0; j <= i; j++) {
      const w = state.attention.data[offset + i * T + j];
      g.fillStyle = `rgba(63, 81, 181, ${Math.sqrt(w)})`;
      g.fillRect(margin + j * cell, margin + i * cell, cell - 1, cell - 1);
    }
  }
  g.fillStyle = getComputedStyle(box).color;
  g.font = `${Math.min(cell, 12)}px sans-serif`;
  g.textAlign = "center";
  state.tokens.forEach((t, k) => {
    const shown = t === "\n" ? "↵" : t === " " ? "·" : t;
    g.fillText(shown, margin + k * cell + cell / 2, margin - 4);
    g.fillText(shown, margin / 2, margin + k * cell + cell - 2);
  });
}

async function generate() {
  const button = $("pg-generate");
  button.disabled = true;
  const output = $("pg-output");
  const prompt = $("pg-prompt").value;
  const settings = {
    maxNewTokens: Number($("pg-tokens").value),
    temperature: Number($("pg-temperature").value),
    topK: Number($("pg-topk").value),
    seed: Number($("pg-seed").value),
  };
  output.textContent = prompt;
  const started = performance.now();
  try {
    say(words.writing);
    settings.onToken = (text) => { output.textContent += text; };
    const ids = await playground.generate(prompt, settings);
    const seconds = (performance.now() - started) / 1000;
    const rate = (settings.maxNewTokens / seconds).toFixed(0);
    // the attention of the last block_size tokens: what the model saw last
    const seen = ids.slice(-playground.blockSize);
    const { attention } = await playground.forward(seen);
    window.playgroundState = {
      ids, attention: { dims: attention.dims, data: attention.data },
      tokens: seen.map((i) => playground.tokenizer.chars[i]),
    };
    drawAttention();
    say(words.done.replace("{n}", settings.maxNewTokens).replace("{rate}", rate));
  } catch (error) {
    say(words.error + " " + error.message, true);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  if (typeof WebAssembly !== "object") return say(words.noWasm, true);
  if (typeof ort === "undefined") return say(words.noRuntime, true);
  ort.env.wasm.numThreads = 1; // no threads: no cross-origin isolation needed
  ort.env.wasm.wasmPaths = `${root}playground/vendor/`;
  try {
    const model = `${root}playground/model`;
    const info = await (await fetch(`${model}/model.json`)).json();
    playground = await Playground.load(ort, model, info.block_size);
    window.playground = playground; // for the tests, and for the curious (F12)
    fill($("pg-layer"), info.n_layer);
    fill($("pg-head"), info.n_head);
    $("pg-layer").onchange = $("pg-head").onchange = drawAttention;
    $("pg-generate").onclick = generate;
    $("pg-generate").disabled = false;
    say(words.ready);
    box.dataset.state = "ready";
  } catch (error) {
    say(words.error + " " + error.message, true);
  }
}

start();
