"""Corpus preparation speed: `prepare_shards` with 1 and 2 worker processes against
Hugging Face `tokenizers` (Rust) encoding the same documents with the same tokenizer.

    python benchmarks/bench_prepare.py [--repeats 3] [--vocab-size 8192]

The documents: the paragraphs of Tiny Shakespeare ($GPTLIB_TINYSHAKESPEARE or
../shared/data/tinyshakespeare.txt beside the clone; left out with a message when
absent) and the sections of the course pages. The tokenizer: a byte-level BPE trained
by `tokenizers` on them and saved in GPT-2's format, loaded by gptlib as a
`GPT2Tokenizer`, fresh for every run (its cache of encoded words starts empty) or warm
(it has seen every word: the steady state of a large corpus). The runs
are interleaved, so that a busy machine slows all alike, and every gptlib run must
write exactly the ids `tokenizers` makes. Prints a table, with what the measured rate
means for FineWeb-Edu's 10 billion tokens, and writes
benchmarks/results/bench_prepare.json.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

# tokenizers' batches on one core, like one worker of ours (read when it first runs)
os.environ["RAYON_NUM_THREADS"] = "1"

from gptlib import GPT2Tokenizer, read_documents
from gptlib.shards import SPLITS, in_validation, prepare_shards

RESULTS = Path(__file__).parent / "results"
SHARD_TOKENS = 100_000


def documents() -> list[str]:
    docs = list(read_documents("course"))
    from report import local_shakespeare  # benchmarks/report.py, beside this script

    path = local_shakespeare()
    if path is None:
        print("Tiny Shakespeare not found ($GPTLIB_TINYSHAKESPEARE): the course only")
    else:
        docs += list(read_documents(path))
    return docs


def gpt2_files(docs: list[str], vocab_size: int, folder: Path) -> Path:
    import tokenizers

    trainer = tokenizers.ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        docs, vocab_size, special_tokens=["<|endoftext|>"], show_progress=False
    )
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(folder))
    return folder


def with_gptlib(
    docs, folder: Path, out: Path, workers: int, warm: GPT2Tokenizer | None = None
) -> dict[str, bytes]:
    """prepare_shards's shards; with a fresh tokenizer (an empty cache), or `warm`."""
    tokenizer = warm or GPT2Tokenizer.from_files(
        folder / "vocab.json", folder / "merges.txt"
    )
    shutil.rmtree(out, ignore_errors=True)
    prepare_shards(
        docs, tokenizer, out, shard_tokens=SHARD_TOKENS, workers=workers, progress=False
    )
    return {
        split: b"".join(p.read_bytes() for p in sorted(out.glob(f"{split}-*.bin")))
        for split in SPLITS
    }


def with_tokenizers(docs, folder: Path) -> dict[str, bytes]:
    """The same streams, from Rust: each document's ids and <|endoftext|>."""
    import tokenizers

    rust = tokenizers.ByteLevelBPETokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt")
    )
    end = rust.token_to_id("<|endoftext|>")
    streams: dict[str, list[int]] = {split: [] for split in SPLITS}
    for number, encoding in enumerate(rust.encode_batch(docs)):
        if docs[number]:
            split = "val" if in_validation(number, 0.1) else "train"
            streams[split] += encoding.ids + [end]
    return {s: np.array(ids, dtype=np.uint16).tobytes() for s, ids in streams.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    docs = documents()
    text_bytes = sum(len(d.encode("utf-8")) for d in docs)
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    folder = gpt2_files(docs, args.vocab_size, work / "tokenizer")
    # a tokenizer that has seen every word once: the steady state of a large corpus,
    # where almost every chunk of text is one the cache already holds
    warm = GPT2Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt")
    for text in docs:
        warm.encode(text, allowed_special="none")
    ways = {
        "gptlib, 1 worker": lambda: with_gptlib(docs, folder, work / "one", 1),
        "gptlib, 2 workers": lambda: with_gptlib(docs, folder, work / "two", 2),
        "gptlib, 1 worker, warm cache": lambda: with_gptlib(
            docs, folder, work / "warm1", 1, warm
        ),
        "gptlib, 2 workers, warm cache": lambda: with_gptlib(
            docs, folder, work / "warm2", 2, warm
        ),
        "tokenizers (Rust), 1 thread": lambda: with_tokenizers(docs, folder),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    outputs: dict[str, list] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            outputs[name].append(way())
            seconds[name].append(time.perf_counter() - start)
    shutil.rmtree(work)
    reference = outputs["tokenizers (Rust), 1 thread"][0]
    tokens = sum(len(b) // 2 for b in reference.values())
    rows = []
    for name in ways:
        median = statistics.median(seconds[name])
        rows.append(
            {
                "way": name,
                "seconds": {
                    "median": median,
                    "min": min(seconds[name]),
                    "max": max(seconds[name]),
                },
                "tokens_per_s": tokens / median,
                "mb_per_s": text_bytes / median / 1e6,
                "same_ids_as_tokenizers": all(o == reference for o in outputs[name]),
            }
        )
    print(
        f"{len(docs):,} documents, {text_bytes / 1e6:.1f} MB, {tokens:,} tokens "
        f"(vocab {args.vocab_size}); median [min-max] of {args.repeats} "
        "interleaved runs"
    )
    print("| way | seconds | tokens/s | MB/s | same ids |")
    print("|---|---|---|---|---|")
    for r in rows:
        s = r["seconds"]
        print(
            f"| {r['way']} | {s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}] | "
            f"{r['tokens_per_s']:,.0f} | {r['mb_per_s']:.2f} | "
            f"{r['same_ids_as_tokenizers']} |"
        )
    # a web corpus lies between the two: common words cached, its long tail not
    cold, warm = (10e9 / rows[i]["tokens_per_s"] / 3600 for i in (0, 2))
    print(
        f"10 billion tokens on one core: {warm:.1f} h (every word cached) to "
        f"{cold:.1f} h (none); with 16 workers {warm / 16:.1f} to {cold / 16:.1f} h"
    )

    import tokenizers
    import torch
    from report import write_report  # benchmarks/report.py, beside this script

    write_report(
        args.out / "bench_prepare.json",
        "bench_prepare",
        torch.device("cpu"),
        tokenizers=tokenizers.__version__,
        repeats=args.repeats,
        documents=len(docs),
        text_bytes=text_bytes,
        tokens=tokens,
        vocab_size=args.vocab_size,
        rows=rows,
    )


if __name__ == "__main__":
    main()
