// The course's model in the browser: gptlib's exported model.onnx and tokenizer.json,
// run by onnxruntime-web (single-threaded WebAssembly: GitHub Pages cannot send the
// cross-origin isolation headers that threads need). No server does any work.

// gptlib's CharTokenizer: one id per Unicode character, in the order of `chars`
export class CharTokenizer {
  constructor(data) {
    if (data.type !== "char") {
      throw new Error(`the playground reads char tokenizers, not ${data.type}`);
    }
    this.chars = data.chars;
    this.ids = new Map(this.chars.map((c, i) => [c, i]));
  }
  encode(text) {
    // Array.from walks code points, as Python's str does (an emoji is one)
    return Array.from(text, (c) => {
      const id = this.ids.get(c);
      if (id === undefined) throw new Error(`"${c}" is not in the vocabulary`);
      return id;
    });
  }
  decode(ids) {
    return ids.map((i) => this.chars[i]).join("");
  }
}

// mulberry32: a small seeded generator, so that a seed gives the same text every time
export function randomFrom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The next id from the last position's logits: the most likely one at temperature 0
// (the first of equal ones, as torch.argmax), else a draw from softmax(logits / t)
// over the top_k most likely ids.
export function pickNext(logits, temperature, topK, random) {
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let order = Array.from(logits.keys()).sort((i, j) => logits[j] - logits[i]);
  if (topK > 0) order = order.slice(0, topK);
  const top = logits[order[0]];
  const weights = order.map((i) => Math.exp((logits[i] - top) / temperature));
  let r = random() * weights.reduce((a, b) => a + b, 0);
  for (let k = 0; k < order.length; k++) {
    r -= weights[k];
    if (r <= 0) return order[k];
  }
  return order[order.length - 1];
}

export class Playground {
  // `folder` holds model.onnx and tokenizer.json; `ort` is onnxruntime-web
  static async load(ort, folder, blockSize) {
    const tokenizer = new CharTokenizer(
      await (await fetch(`${folder}/tokenizer.json`)).json(),
    );
    const session = await ort.InferenceSession.create(`${folder}/model.onnx`, {
      executionProviders: ["wasm"],
    });
    return new Playground(ort, session, tokenizer, blockSize);
  }

  constructor(ort, session, tokenizer, blockSize) {
    Object.assign(this, { ort, session, tokenizer, blockSize });
  }

  // logits (T x V) and attention (L x H x T x T) of one sequence of ids
  async forward(ids) {
    const input = new this.ort.Tensor(
      "int64", BigInt64Array.from(ids, BigInt), [1, ids.length],
    );
    const out = await this.session.run({ ids: input });
    return { logits: out.logits, attention: out.attention };
  }

  // Continue `prompt` by `maxNewTokens` ids, calling onToken(text) as each arrives.
  // The model sees the last blockSize ids, as gptlib's generate crops them.
  async generate(prompt, { maxNewTokens = 100, temperature = 0.8, topK = 0,
                           seed = 0, onToken = () => {} } = {}) {
    const ids = this.tokenizer.encode(prompt);
    const random = randomFrom(seed);
    const vocab = this.tokenizer.chars.length;
    for (let n = 0; n < maxNewTokens; n++) {
      const context = ids.slice(-this.blockSize);
      const { logits } = await this.forward(context);
      const last = logits.data.subarray((context.length - 1) * vocab,
                                        context.length * vocab);
      const next = pickNext(last, temperature, topK, random);
      ids.push(next);
      onToken(this.tokenizer.decode([next]));
    }
    return ids;
  }
}
