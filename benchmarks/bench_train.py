"""Training speed: each technique of chapter 13 on its own, and gptlib against nanoGPT.

    python benchmarks/bench_train.py [--device cpu] [--preset tiny] [--repeats 3]
    python benchmarks/bench_train.py --nanogpt NANOGPT_GIT_DIR [--iters 2000]

The first form times every setting of gptlib.benchmark.CPU_SETTINGS (CUDA_SETTINGS on a
GPU), each in a fresh process, taking turns (`gptlib bench train` does the same
without writing files), profiles one step, and writes
benchmarks/results/bench_train-<device>.json with Markdown tables beside it (.md, and
-profile.md on a CPU) that chapter 13 includes.

The second form is the side-by-side with nanoGPT: its README recipe for a CPU (Tiny
Shakespeare characters, 4 layers, 4 heads, 128 wide, block 64, batch 12, 2000 steps),
run by ../shared/bench/nanogpt_cpu.py on an unchanged nanoGPT snapshot, and the same
recipe trained by gptlib (`gptlib.benchmark.train_nanogpt_recipe`) with its default
settings and with the fastest CPU settings found. The three take turns, `--repeats`
times. Both final models are also scored on the whole validation split
(`split_loss`), which removes the noise of 20 random evaluation batches. Writes
benchmarks/results/nanogpt_side_by_side.json and .md.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from report import write_report  # benchmarks/report.py

from gptlib.benchmark import (
    Setting,
    bench_train,
    profile_table,
    profile_training_step,
    result_line,
    settings_for,
    train_defaults,
    train_table,
)
from gptlib.utils import get_device

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
NANOGPT_SCRIPT = SHARED / "bench" / "nanogpt_cpu.py"
DATA = SHARED / "data" / "tinyshakespeare.txt"
FASTEST_CPU = {"dtype": "bfloat16", "attention": "manual"}

# Scores a nanoGPT checkpoint on its whole validation split, in nanoGPT's folder
NANOGPT_SPLIT_LOSS = """
import json, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from model import GPT, GPTConfig
from gptlib.benchmark import split_loss
ck = torch.load(sys.argv[2], map_location="cpu")  # written by this run
model = GPT(GPTConfig(**ck["model_args"]))
model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ck["model"].items()})
val = np.fromfile(sys.argv[3], dtype=np.uint16).astype(np.int64)
print(json.dumps(split_loss(model, torch.from_numpy(val), 64)))
"""

GPTLIB_RECIPE = """
import json, sys
from gptlib.benchmark import train_nanogpt_recipe
text = open(sys.argv[1], encoding="utf-8").read()
kwargs = json.loads(sys.argv[2])
print("RESULT " + json.dumps(train_nanogpt_recipe(text, **kwargs)))
"""


def printed_result(stdout: str) -> dict:
    result = result_line(stdout)
    if result is None:
        raise RuntimeError(f"no RESULT line in:\n{stdout[-2000:]}")
    return result


def run_nanogpt(nanogpt: str, iters: int) -> dict:
    p = subprocess.run(
        [sys.executable, str(NANOGPT_SCRIPT), "--nanogpt", nanogpt, "--data", str(DATA),
         "--iters", str(iters), "--no-big", "--gen-tokens", "50", "--gen-reps", "1",
         "--keep"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = printed_result(p.stdout)
    work = Path(p.stdout.split("work dir kept: ")[1].splitlines()[0].strip())
    try:
        score = subprocess.run(
            [sys.executable, "-c", NANOGPT_SPLIT_LOSS, str(work / "n"),
             str(work / "out" / "ckpt.pt"),
             str(work / "n" / "data" / "shakespeare_char" / "val.bin")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        loss = json.loads(score.stdout.splitlines()[-1])  # after nanoGPT's prints
        result["split_val_loss"] = round(loss, 4)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def run_gptlib(iters: int, **settings: str) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", GPTLIB_RECIPE, str(DATA),
         json.dumps({"steps": iters, **settings})],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return printed_result(p.stdout)


def side_by_side(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    if not NANOGPT_SCRIPT.exists() or not DATA.exists():
        sys.exit(f"needs {NANOGPT_SCRIPT} and {DATA} (the shared folder)")
    runs = {"nanoGPT": [], "gptlib default": [], "gptlib fastest": []}
    for repeat in range(args.repeats):
        for name in runs:
            print(f"repeat {repeat + 1}/{args.repeats}: {name}", flush=True)
            if name == "nanoGPT":
                result = run_nanogpt(args.nanogpt, args.iters)
            elif name == "gptlib default":
                result = run_gptlib(args.iters)
            else:
                result = run_gptlib(args.iters, **FASTEST_CPU)
            runs[name].append(result)
            print(
                f"  {result['ms_per_iter_median']} ms/step, val loss "
                f"{result['val_loss']}, whole split {result['split_val_loss']}"
            )
    lines = [
        "| run | ms/step, repeats 1 / 2 / 3 | tokens/s (median) | speed vs nanoGPT "
        "| val loss (20 batches) | val loss (whole split) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    for name, results in runs.items():
        ms = [r["ms_per_iter_median"] for r in results]
        ratios = [n["ms_per_iter_median"] / r["ms_per_iter_median"]
                  for n, r in zip(runs["nanoGPT"], results)]  # fmt: skip
        summary[name] = {
            "ms_per_step": ms,
            "ratio_vs_nanogpt": ratios,
            "ratio_median": statistics.median(ratios),
            "val_loss": results[-1]["val_loss"],
            "split_val_loss": results[-1]["split_val_loss"],
        }
        lines.append(
            f"| {name} | {' / '.join(f'{x:.1f}' for x in ms)} | "
            f"{statistics.median(r['tokens_per_s'] for r in results):,.0f} | "
            f"{statistics.median(ratios):.2f}x "
            f"({' / '.join(f'{x:.2f}' for x in ratios)}) | "
            f"{results[-1]['val_loss']:.3f} | {results[-1]['split_val_loss']:.3f} |"
        )
    table = "\n".join(lines)
    print(table)
    (args.out / "nanogpt_side_by_side.md").write_text(table + "\n", encoding="utf-8")
    write_report(
        args.out / "nanogpt_side_by_side.json",
        "nanogpt_side_by_side",
        torch.device("cpu"),
        iters=args.iters,
        fastest_cpu=FASTEST_CPU,
        summary=summary,
        runs=runs,
    )


def settings_table(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    device = get_device(args.device)
    settings = settings_for(device.type)
    default_preset, default_batch = train_defaults(device.type)
    preset = args.preset or default_preset
    batch = args.batch_size or default_batch
    rows = bench_train(
        settings, preset, batch, args.steps, args.warmup, args.repeats, str(device)
    )
    table = train_table(rows)
    print(table)
    results = {"preset": preset, "batch_size": batch, "steps": args.steps,
               "repeats": args.repeats, "rows": rows}  # fmt: skip
    name = f"bench_train-{device.type}"
    (args.out / f"{name}.md").write_text(table + "\n", encoding="utf-8")
    if device.type == "cpu":  # the profiler's CPU view; on a GPU use its own tools
        fastest = Setting("fastest", **FASTEST_CPU)
        profiles = {
            "baseline": profile_training_step(preset, batch),
            "fastest": profile_training_step(preset, batch, setting=fastest),
        }
        text = "\n\n".join(
            f"One step, {which}:\n\n{profile_table(shares)}"
            for which, shares in profiles.items()
        )
        print(text)
        (args.out / f"{name}-profile.md").write_text(text + "\n", encoding="utf-8")
        results["profiles"] = profiles
    write_report(args.out / f"{name}.json", "bench_train", device, **results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", help="cpu, cuda (default: the best available)")
    parser.add_argument("--preset", help="default: tiny on a CPU, gpt2 on a GPU")
    parser.add_argument("--batch-size", type=int, help="default: 12 (CPU), 16 (GPU)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nanogpt", help="the nanoGPT snapshot: side-by-side mode")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.nanogpt:
        side_by_side(args)
    else:
        settings_table(args)


if __name__ == "__main__":
    main()
