"""Generation speed: tokens/s without a KV cache, with the growing cache (KVCache,
one concatenation per layer and token) and with the preallocated one (StaticKVCache,
written in place), by context length.

    python benchmarks/bench_generate.py [--device cpu] [--preset small] [--repeats 3]

Each row generates up to 32 tokens whose context runs up to the row's length (the
prompt's forward pass is not timed), best of `--repeats`, the three ways taking
turns. Writes benchmarks/results/bench_generate-<device>.json and a Markdown table
beside it (.md) that chapter 13 includes. `gptlib bench generate` runs the same
without writing files.
"""

import argparse
from pathlib import Path

from report import write_report  # benchmarks/report.py

from gptlib.benchmark import bench_generate, generate_table
from gptlib.utils import get_device

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", help="cpu, cuda (default: the best available)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    device = get_device(args.device)
    rows = bench_generate(args.preset, repeats=args.repeats, device=str(device))
    table = generate_table(rows)
    print(table)
    name = f"bench_generate-{device.type}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(
        f"{args.preset} preset, best of {args.repeats}:\n\n{table}\n", encoding="utf-8"
    )
    write_report(
        args.out / f"{name}.json", "bench_generate", device, preset=args.preset,
        repeats=args.repeats, rows=rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
