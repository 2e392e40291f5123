"""KV-cache benchmark: time to generate N new tokens with and without the cache.

    python benchmarks/kv_cache.py [--new-tokens 500] [--device cpu] [--repeats 3]

Prints a table and writes benchmarks/results/kv_cache-<device>.json. The model is
the `tiny` preset with a context window of 1024 positions, so prompt + new tokens fit
in the window and the cache is never rebuilt (see gptlib.generation.generate_tokens).
Weights are random: speed does not depend on what the model has learned.
"""

import argparse
import time
from pathlib import Path

import torch
from report import write_report  # benchmarks/report.py

from gptlib import GPT, get_device, preset_config
from gptlib.generation import generate_tokens


def time_generation(
    model: GPT,
    prompt: torch.Tensor,
    new_tokens: int,
    use_cache: bool,
    device: torch.device,
) -> tuple[float, list[int]]:
    g = torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = [
        int(t)
        for t in generate_tokens(
            model, prompt, new_tokens, temperature=1.0, generator=g, use_cache=use_cache
        )
    ]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--prompt-tokens", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    device = get_device(args.device)
    torch.manual_seed(0)
    config = preset_config("tiny", vocab_size=65, block_size=1024)
    model = GPT(config).to(device).eval()
    prompt = torch.randint(0, 65, (1, args.prompt_tokens), device=device)
    time_generation(model, prompt, 20, True, device)  # warm-up

    rows = {}
    for use_cache in (False, True):
        runs = [
            time_generation(model, prompt, args.new_tokens, use_cache, device)
            for _ in range(args.repeats)
        ]
        best = min(seconds for seconds, _ in runs)
        rows["with cache" if use_cache else "without cache"] = {
            "seconds": best,
            "tokens": runs[0][1],
        }
    same = rows["with cache"]["tokens"] == rows["without cache"]["tokens"]
    speedup = rows["without cache"]["seconds"] / rows["with cache"]["seconds"]

    print(
        f"KV cache, {args.new_tokens} new tokens, "
        f"tiny preset ({model.num_params():,} parameters), "
        f"{device.type}, best of {args.repeats}"
    )
    print(f"| {'mode':<14} | {'seconds':>8} | {'tokens/s':>9} |")
    print(f"|{'-' * 16}|{'-' * 10}|{'-' * 11}|")
    for name, row in rows.items():
        tokens_per_second = args.new_tokens / row["seconds"]
        print(f"| {name:<14} | {row['seconds']:8.2f} | {tokens_per_second:9.0f} |")
    print(f"speed-up: {speedup:.1f}x; identical tokens: {same}")

    write_report(
        args.out / f"kv_cache-{device.type}.json",
        "kv_cache",
        device,
        new_tokens=args.new_tokens,
        params=model.num_params(),
        seconds_without_cache=rows["without cache"]["seconds"],
        seconds_with_cache=rows["with cache"]["seconds"],
        speedup=speedup,
        identical_tokens=same,
    )


if __name__ == "__main__":
    main()
