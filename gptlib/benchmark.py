"""Speed, measured: how fast a GPT trains with each technique of chapter 13 turned on,
and how fast it generates with and without the KV cache.

`gptlib bench train` and `gptlib bench generate` run these on your machine and print
a table; benchmarks/ keeps the runs behind the course's pages. Each measurement of
`bench_train` runs in a fresh Python process, so one setting (threads, TF32, a
compiled graph, the memory high-water mark) cannot leak into the next, and the
settings take turns: repeat 1 of every setting, then repeat 2, and so on, so that a
machine that slows down for a minute slows all of them alike.

Chapter 13 (Making it fast) builds this file.
"""

# --8<-- [start:imports]
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from gptlib.data import encode_corpus, get_batch
from gptlib.generation import generate_tokens
from gptlib.model import GPT, KVCache, StaticKVCache, preset_config
from gptlib.tokenizer import CharTokenizer
from gptlib.training import (
    TrainConfig,
    autocast_for,
    configure_optimizer,
    read_metrics,
    train,
    train_step,
)
from gptlib.utils import get_device

# --8<-- [end:imports]


# --8<-- [start:peak_flops]
# Dense peak FLOP/s of GPUs (no sparsity), from the vendors' data sheets, by the name
# torch.cuda.get_device_name() reports and the dtype of the matmuls. "float32" is TF32
# (tensor cores), which training uses on CUDA.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 60.0},
    "RTX 4090": {"bfloat16": 165.2, "float16": 165.2, "float32": 82.6},
    "RTX 3090": {"bfloat16": 71.0, "float16": 71.0, "float32": 35.6},
    "T4": {"float16": 65.0, "float32": 8.1},
}


def peak_flops(device: torch.device, dtype: str) -> float | None:
    """The peak FLOP/s of `device` for matmuls in `dtype`, or None if unknown (CPUs,
    and GPUs missing from PEAK_TFLOPS)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for model, peaks in PEAK_TFLOPS.items():
        if model in name and dtype in peaks:
            return peaks[dtype] * 1e12
    return None


# --8<-- [end:peak_flops]


# --8<-- [start:setting]
@dataclass(frozen=True)
class Setting:
    """One row of the training benchmark: the baseline with some techniques on."""

    name: str
    dtype: str = "float32"  # float32, bfloat16 or float16 (with a GradScaler)
    attention: str = "sdpa"  # sdpa: the fused kernel; manual: written out
    compile: bool = False  # torch.compile the model
    fused: bool = False  # fused AdamW (one kernel for all parameters)
    tf32: bool = False  # CUDA: float32 matmuls on tensor cores
    pin: bool = False  # CUDA: batches in pinned memory, copied while the GPU works
    vocab_size: int | None = None  # None: the benchmark's vocabulary
    threads: int | None = None  # CPU threads; None: PyTorch's default


CPU_SETTINGS = [
    Setting("baseline: float32, SDPA, eager, AdamW"),
    Setting("manual attention", attention="manual"),
    Setting("bfloat16 autocast", dtype="bfloat16"),
    Setting("bfloat16 + manual attention", dtype="bfloat16", attention="manual"),
    Setting("fused AdamW", fused=True),
    Setting("torch.compile", compile=True),
    Setting("1 thread", threads=1),
    Setting("vocabulary 50257", vocab_size=50257),
    Setting("vocabulary 50304", vocab_size=50304),
]
CUDA_SETTINGS = [
    Setting("baseline: float32, SDPA, eager, AdamW"),
    Setting("TF32", tf32=True),
    Setting("bfloat16 autocast", dtype="bfloat16", tf32=True),
    Setting("float16 + GradScaler", dtype="float16", tf32=True),
    Setting("bfloat16 + fused AdamW", dtype="bfloat16", tf32=True, fused=True),
    Setting(
        "bfloat16 + fused + pinned batches",
        dtype="bfloat16",
        tf32=True,
        fused=True,
        pin=True,
    ),
    Setting(
        "bfloat16 + fused + pinned + compile",
        dtype="bfloat16",
        tf32=True,
        fused=True,
        pin=True,
        compile=True,
    ),
    Setting(
        "bfloat16, manual attention", dtype="bfloat16", tf32=True, attention="manual"
    ),
    Setting(
        "bfloat16, vocabulary 50257", dtype="bfloat16", tf32=True, vocab_size=50257
    ),
    Setting(
        "bfloat16, vocabulary 50304", dtype="bfloat16", tf32=True, vocab_size=50304
    ),
]


def settings_for(device: str, only: str | None = None) -> list[Setting]:
    """The rows for `device` ("cpu", "cuda", ...): all of them, or the baseline (the
    first row, which the others are compared with) and those whose name has `only`."""
    settings = CUDA_SETTINGS if device.startswith("cuda") else CPU_SETTINGS
    if only is None:
        return settings
    chosen = [s for s in settings[1:] if only.lower() in s.name.lower()]
    if not chosen:
        names = ", ".join(repr(s.name) for s in settings[1:])
        raise ValueError(f"--only {only!r} matches none of {names}")
    return [settings[0], *chosen]


def train_defaults(device: str) -> tuple[str, int]:
    """The preset and batch size the training benchmark uses on `device`: GPT-2
    (124M) at batch 16 x 1024 on a GPU, the tiny model at batch 12 on a CPU."""
    return ("gpt2", 16) if device.startswith("cuda") else ("tiny", 12)


# --8<-- [end:setting]


# --8<-- [start:time_training]
def time_training(
    setting: Setting,
    preset: str,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    vocab_size: int = 65,
) -> dict[str, Any]:
    """Train a fresh `preset` model for `warmup` steps, then time `steps` more.

    Returns ms per step, tokens per second, the peak memory and, on a GPU with a
    known peak, the MFU. The data is random token ids: speed does not depend on what
    the tokens say.
    """
    if setting.threads is not None:
        torch.set_num_threads(setting.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = setting.tf32
        torch.backends.cudnn.allow_tf32 = setting.tf32
    vocab = setting.vocab_size or vocab_size
    config = preset_config(
        preset, vocab_size=vocab, attention=setting.attention, dropout=0.0
    )
    torch.manual_seed(0)
    model = GPT(config).to(device)
    train_config = TrainConfig(batch_size=batch_size, dtype=setting.dtype)
    optimizer = configure_optimizer(model, train_config, fused=setting.fused)
    step_model = torch.compile(model) if setting.compile else model
    autocast = autocast_for(device, setting.dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=setting.dtype == "float16")
    data = torch.randint(0, vocab, (1_000_000,))
    T = config.block_size

    def step() -> None:
        batch = get_batch(data, batch_size, T, device, pin_memory=setting.pin)
        train_step(step_model, optimizer, [batch], 1.0, autocast, scaler)

    for _ in range(warmup):  # compiling, allocating, warming caches
        step()
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()  # train_step reads the loss: one host sync per step, as in training
    synchronize()
    seconds = (time.perf_counter() - start) / steps
    tokens_per_sec = batch_size * T / seconds
    # MFU against the peak of the matmuls' format (none for float32 without TF32)
    fast_matmuls = setting.dtype != "float32" or setting.tf32
    peak = peak_flops(device, setting.dtype) if fast_matmuls else None
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device)
    else:  # the process's resident memory high-water mark (Linux: KiB)
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "ms_per_step": seconds * 1000,
        "tokens_per_sec": tokens_per_sec,
        "peak_memory_mib": memory / 2**20,
        "mfu": model.estimate_mfu(tokens_per_sec, peak) if peak else None,
        "params": model.num_params(),
    }


# --8<-- [end:time_training]


# --8<-- [start:bench_train]
def run_isolated(function: str, **kwargs: Any) -> dict[str, Any]:
    """Run `function(**kwargs)` of this module in a fresh Python process and return
    its result (a JSON object)."""
    code = (
        "import json, sys; import gptlib.benchmark as b; "
        f"r = b.{function}_from_json(sys.argv[1]); print('RESULT ' + json.dumps(r))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        capture_output=True,
        text=True,
    )
    result = result_line(p.stdout)
    if result is None:
        error = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{function} failed in its process: {error}")
    return result


def result_line(stdout: str) -> dict[str, Any] | None:
    """The JSON object a benchmark process printed on its `RESULT ` line, if any."""
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return None


def time_training_from_json(text: str) -> dict[str, Any]:
    kwargs = json.loads(text)
    kwargs["setting"] = Setting(**kwargs["setting"])
    kwargs["device"] = torch.device(kwargs["device"])
    return time_training(**kwargs)


def bench_train(
    settings: list[Setting],
    preset: str = "tiny",
    batch_size: int = 12,
    steps: int = 30,
    warmup: int = 10,
    repeats: int = 3,
    device: str | None = None,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Time every setting `repeats` times, taking turns. One row per setting: the
    median ms per step and tokens/s over the repeats, their spread (slowest and
    fastest), the peak memory, and the MFU where the GPU's peak is known."""
    device_name = str(get_device(device))
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in settings}
    for repeat in range(repeats):
        for setting in settings:
            progress(f"repeat {repeat + 1}/{repeats}: {setting.name}")
            runs[setting.name].append(
                run_isolated(
                    "time_training",
                    setting=asdict(setting),
                    preset=preset,
                    batch_size=batch_size,
                    steps=steps,
                    warmup=warmup,
                    device=device_name,
                )
            )
    rows = []
    for setting in settings:
        ms = [r["ms_per_step"] for r in runs[setting.name]]
        mfu = [r["mfu"] for r in runs[setting.name] if r["mfu"] is not None]
        median_ms = statistics.median(ms)
        rows.append(
            {
                "setting": asdict(setting),
                "ms_per_step": median_ms,
                "ms_per_step_min": min(ms),
                "ms_per_step_max": max(ms),
                "tokens_per_sec": batch_size * preset_block(preset) / median_ms * 1000,
                "peak_memory_mib": max(
                    r["peak_memory_mib"] for r in runs[setting.name]
                ),
                "mfu": statistics.median(mfu) if mfu else None,
                "repeats_ms": ms,
            }
        )
    return rows


def preset_block(preset: str) -> int:
    return preset_config(preset, vocab_size=1).block_size


def train_table(rows: list[dict[str, Any]]) -> str:
    """The rows of bench_train as a Markdown table; speed-ups are against the first
    row, and the 50304 vocabulary's against the 50257 one."""
    base = rows[0]["ms_per_step"]
    by_name = {r["setting"]["name"]: r for r in rows}
    lines = [
        "| setting | ms/step (min-max) | tokens/s | speed-up | peak memory | MFU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = r["setting"]["name"]
        reference = base
        if (
            name.endswith("vocabulary 50304")
            and name.replace("50304", "50257") in by_name
        ):
            reference = by_name[name.replace("50304", "50257")]["ms_per_step"]
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        lines.append(
            f"| {name} | {r['ms_per_step']:.1f} ({r['ms_per_step_min']:.1f}-"
            f"{r['ms_per_step_max']:.1f}) | {r['tokens_per_sec']:,.0f} | "
            f"{reference / r['ms_per_step']:.2f}x | {r['peak_memory_mib']:,.0f} MiB | "
            f"{mfu} |"
        )
    return "\n".join(lines)


# --8<-- [end:bench_train]


# --8<-- [start:bench_generate]
def time_generation(
    model: GPT,
    context: int,
    new_tokens: int,
    cache: str,
    batch_size: int = 1,
) -> float:
    """Tokens per second (all sequences of the batch together) for generating
    `new_tokens` after a prompt of `context - new_tokens` random tokens, with `cache`
    "none" (recompute the window), "concat" (KVCache) or "static" (StaticKVCache).

    The prompt's forward pass (the prefill) is not timed: the clock measures the
    steps whose context runs up to `context` tokens.
    """
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(0)
    idx = torch.randint(
        0, model.config.vocab_size, (batch_size, context - new_tokens), device=device
    )
    n_layer, block_size = model.config.n_layer, model.config.block_size
    caches = {"concat": KVCache(n_layer), "static": StaticKVCache(n_layer, block_size)}
    kv = caches.get(cache)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    with torch.no_grad():
        if kv is None:  # no cache: every step recomputes the window
            generate = generate_tokens(
                model, idx, new_tokens, generator=g, use_cache=False
            )
            synchronize()
            start = time.perf_counter()
            for _ in generate:
                pass
        else:  # the same steps as generate_tokens, with the cache given here
            logits, _ = model(idx, cache=kv)  # the prefill
            synchronize()
            start = time.perf_counter()
            for _ in range(new_tokens):
                next_id = torch.multinomial(
                    logits[:, -1].softmax(-1), 1, generator=g
                )  # (B, 1)
                logits, _ = model(next_id, cache=kv)
    synchronize()
    return batch_size * new_tokens / (time.perf_counter() - start)


def contexts_up_to(max_context: int) -> tuple[int, ...]:
    """64, 128, 256, ... up to `max_context`."""
    contexts = [64]
    while contexts[-1] * 2 <= max_context:
        contexts.append(contexts[-1] * 2)
    return tuple(contexts)


def bench_generate(
    preset: str = "small",
    contexts: tuple[int, ...] = contexts_up_to(1024),
    new_tokens: int = 32,
    batch_sizes: tuple[int, ...] = (1, 8),
    repeats: int = 3,
    device: str | None = None,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Generation speed by context length, without a cache and with each cache:
    the best of `repeats` (taking turns), per batch size. The model has random
    weights and a window of the longest context."""
    torch.manual_seed(0)
    config = preset_config(preset, vocab_size=65, block_size=max(contexts), dropout=0.0)
    model = GPT(config).to(get_device(device)).eval()
    rows = []
    for batch_size in batch_sizes:
        for context in contexts:
            progress(f"batch {batch_size}, context {context}")
            n = min(new_tokens, context // 2)
            best = {"none": 0.0, "concat": 0.0, "static": 0.0}
            for _ in range(repeats):
                for cache in best:
                    speed = time_generation(model, context, n, cache, batch_size)
                    best[cache] = max(best[cache], speed)
            rows.append(
                {
                    "batch_size": batch_size,
                    "context": context,
                    "new_tokens": n,
                    **{f"tokens_per_sec_{k}": v for k, v in best.items()},
                }
            )
    return rows


def generate_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| batch | context | no cache tok/s | concat cache tok/s | static cache tok/s "
        "| cache speed-up | static / concat |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        none, concat, static = (
            r["tokens_per_sec_none"],
            r["tokens_per_sec_concat"],
            r["tokens_per_sec_static"],
        )
        lines.append(
            f"| {r['batch_size']} | {r['context']} | {none:,.0f} | {concat:,.0f} | "
            f"{static:,.0f} | {static / none:.1f}x | {static / concat:.2f}x |"
        )
    return "\n".join(lines)


# --8<-- [end:bench_generate]


# --8<-- [start:nanogpt_recipe]
@torch.no_grad()
def split_loss(model: torch.nn.Module, ids: torch.Tensor, block_size: int) -> float:
    """The mean loss over a whole split, cut into windows of `block_size` that do not
    overlap: every token (but the last few) is predicted once. Where `estimate_loss`
    samples 20 random batches (noise of about 0.01), this is exact: it compares two
    models' final losses. `model(x, y)` must return (logits, mean loss), as GPT and
    nanoGPT's GPT do."""
    was_training = model.training
    model.eval()
    n = (len(ids) - 1) // block_size
    x = ids[: n * block_size].view(n, block_size).long()  # (N, T)
    y = ids[1 : n * block_size + 1].view(n, block_size).long()
    losses = [model(xb, yb)[1] * len(xb) for xb, yb in zip(x.split(64), y.split(64))]
    model.train(was_training)
    return (sum(losses) / n).item()


def train_nanogpt_recipe(
    text: str,
    steps: int = 2000,
    dtype: str = "float32",
    attention: str = "sdpa",
    seed: int = 1337,
) -> dict[str, Any]:
    """nanoGPT's README recipe for a CPU, trained with gptlib: characters of `text`,
    4 layers, 4 heads, 128 wide, block 64, no biases, batch 12, lr 1e-3 to 1e-4 after
    100 warm-up steps, AdamW (0.9, 0.99), evaluation every 250 steps on 20 batches.

    Returns the keys that the course's nanoGPT runner prints for nanoGPT: ms per step
    (median and p10-p90 over the steps, evaluations left out), tokens/s, and the
    losses of the last evaluation, and the exact validation loss (`split_loss`).
    """
    tok = CharTokenizer.train(text)
    data = encode_corpus(text, tok)
    # nanoGPT's prepare.py: the first 90% trains, the last 10% validates
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    model = GPT(
        preset_config(
            "tiny", vocab_size=tok.vocab_size, bias=False, attention=attention
        )
    )
    config = TrainConfig(
        max_steps=steps, batch_size=12, learning_rate=1e-3, min_lr=1e-4,
        warmup_steps=100, beta2=0.99, eval_interval=250, eval_batches=20,
        log_interval=1, dtype=dtype, seed=seed, device="cpu", progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        result = train(model, train_data, val_data, config, out_dir=out_dir)
        records = read_metrics(os.path.join(out_dir, "metrics.jsonl"))
    wall = time.perf_counter() - start
    tokens_per_step = 12 * model.config.block_size
    ms = [
        tokens_per_step / r["tokens_per_sec"] * 1000
        for r in records
        if "tokens_per_sec" in r and r["step"] > 5
    ]
    deciles = statistics.quantiles(ms, n=10)
    final = result.final
    return {
        "split_val_loss": round(split_loss(model, val_data, 64), 4),
        "impl": "gptlib", "dtype": dtype, "attention": attention,
        "threads": torch.get_num_threads(), "params": model.num_params(),
        "iters": steps, "tokens_per_iter": tokens_per_step,
        "ms_per_iter_median": round(statistics.median(ms), 2),
        "ms_per_iter_p10": round(deciles[0], 2),
        "ms_per_iter_p90": round(deciles[-1], 2),
        "tokens_per_s": round(tokens_per_step / statistics.median(ms) * 1000),
        "final_step": final["step"], "train_loss": round(final["train_loss"], 4),
        "val_loss": round(final["val_loss"], 4), "wall_s": round(wall, 1),
    }  # fmt: skip


# --8<-- [end:nanogpt_recipe]


# --8<-- [start:profile]
# Which profiler rows go into which share of a step, by the operation's name
PROFILE_GROUPS = {
    "matmuls": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention kernel": ("scaled_dot_product", "softmax"),
    "GELU": ("gelu",),
    "LayerNorm": ("layer_norm",),
    "dtype casts": ("aten::copy_", "aten::_to_copy"),
    "optimizer and clipping": ("_foreach", "_fused_adam", "Optimizer.step"),
}


def profile_training_step(
    preset: str = "tiny",
    batch_size: int = 12,
    steps: int = 5,
    vocab_size: int = 65,
    setting: Setting = Setting("baseline"),
) -> dict[str, float]:
    """Where the time of a training step goes, on the CPU: milliseconds per step for
    each group of PROFILE_GROUPS, "other operations", and "outside operations"
    (Python, autograd's bookkeeping: the step's time that no operation accounts for).
    """
    from torch.profiler import ProfilerActivity, profile

    config = preset_config(
        preset, vocab_size=vocab_size, attention=setting.attention, dropout=0.0
    )
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = configure_optimizer(model, TrainConfig(), fused=setting.fused)
    autocast = autocast_for(torch.device("cpu"), setting.dtype)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    data = torch.randint(0, vocab_size, (100_000,))

    def step() -> None:
        batch = get_batch(data, batch_size, config.block_size)
        train_step(model, optimizer, [batch], 1.0, autocast, scaler)

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps * 1000
    shares = dict.fromkeys([*PROFILE_GROUPS, "other operations"], 0.0)
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1000 / steps
        group = next(
            (
                g
                for g, keys in PROFILE_GROUPS.items()
                if any(k in event.key for k in keys)
            ),
            "other operations" if event.key.startswith("aten::") else None,
        )
        if group is not None:
            shares[group] += ms
    # the profiler's own cost inflates `wall` a little: read this as a lower bound
    shares["outside operations"] = max(0.0, wall - sum(shares.values()))
    return {"step_ms": wall, **shares}


def profile_table(shares: dict[str, float]) -> str:
    step = shares["step_ms"]
    lines = ["| where | ms/step | share |", "|---|---:|---:|"]
    for group, ms in shares.items():
        if group != "step_ms":
            lines.append(f"| {group} | {ms:.1f} | {ms / step:.0%} |")
    lines.append(f"| whole step (profiled) | {step:.1f} | 100% |")
    return "\n".join(lines)


# --8<-- [end:profile]
