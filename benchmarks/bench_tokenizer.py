"""BPE training speed: the old full-recount trainer, gptlib's incremental one, and
Hugging Face `tokenizers` (Rust), on the same text and vocabulary size.

    python benchmarks/bench_tokenizer.py [--repeats 3] [--vocab-size 512]

Corpora: the first 200,000 characters of Tiny Shakespeare (read from
$GPTLIB_TINYSHAKESPEARE or ../shared/data/tinyshakespeare.txt beside the clone; skipped
with a message when absent) and the Chinese course pages, `load_corpus("course-zh")`.
The runs are interleaved (old, new, library, old, new, library, ...) so that a busy
machine slows all three alike. The old and new trainers must learn exactly the same
merges; the library only gives a speed reference (it breaks ties differently, see
chapter 04).

Prints a table and writes benchmarks/results/bench_tokenizer.json.

`train_reference` is the trainer as it was before it was made incremental, kept here
as the reference that tests/test_tokenizer.py checks gptlib's trainer against.
"""

import argparse
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from gptlib.tokenizer import SPLIT_PATTERN, BPETokenizer, count_pairs, merge_pair

RESULTS = Path(__file__).parent / "results"


def train_reference(
    text: str,
    vocab_size: int,
    special_tokens: Iterable[str] = (),
    pattern: str = SPLIT_PATTERN,
) -> BPETokenizer:
    """BPE training as gptlib did it first: recount every pair after every merge."""
    special_tokens = list(dict.fromkeys(special_tokens))
    num_merges = vocab_size - 256 - len(special_tokens)
    if num_merges < 0:
        raise ValueError(f"vocab_size must be at least {256 + len(special_tokens)}")
    for special in special_tokens:
        text = text.replace(special, "\n")
    chunks = Counter(re.findall(pattern, text))
    words = {tuple(chunk.encode("utf-8")): freq for chunk, freq in chunks.items()}
    merges: list[tuple[int, int]] = []
    for k in range(num_merges):
        pairs = count_pairs(words)
        if not pairs:
            break
        best = max(pairs, key=pairs.get)  # the first counted of the most frequent
        words = {merge_pair(w, best, 256 + k): f for w, f in words.items()}
        merges.append(best)
    return BPETokenizer(merges, pattern=pattern, special_tokens=special_tokens)


def train_library(text: str, vocab_size: int) -> int:
    """Train Hugging Face's byte-level BPE (chapter 04's setup); its vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return tok.get_vocab_size()


def corpora(chars: int) -> dict[str, tuple[str, str]]:
    """name -> (where the text comes from, the text) of the corpora at hand."""
    from gptlib import load_corpus

    found = {}
    from report import local_shakespeare  # benchmarks/report.py, beside this script

    path = local_shakespeare()
    if path is None:
        print("Tiny Shakespeare not found ($GPTLIB_TINYSHAKESPEARE): skipping it")
    else:
        text = path.read_text(encoding="utf-8")[:chars]
        found["tinyshakespeare"] = (f"the first {chars:,} characters of {path}", text)
    found["course-zh"] = ('load_corpus("course-zh")', load_corpus("course-zh"))
    return found


def timed(fn: Callable[[str], object], text: str) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(text)
    return time.perf_counter() - start, result


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(seconds),
        "min": min(seconds),
        "max": max(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--chars", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    trainers = {
        "old": lambda text: train_reference(text, args.vocab_size).merges,
        "new": lambda text: BPETokenizer.train(text, args.vocab_size).merges,
        "tokenizers": lambda text: train_library(text, args.vocab_size),
    }
    results = {}
    for name, (source, text) in corpora(args.chars).items():
        seconds: dict[str, list[float]] = {t: [] for t in trainers}
        merges: dict[str, list] = {"old": [], "new": []}
        for _ in range(args.repeats):
            for trainer, train in trainers.items():
                took, out = timed(train, text)
                seconds[trainer].append(took)
                if trainer in merges:
                    merges[trainer].append(out)
        runs = merges["old"] + merges["new"]
        identical = all(m == runs[0] for m in runs)
        times = {t: summary(s) for t, s in seconds.items()}
        results[name] = {
            "source": source,
            "characters": len(text),
            "vocab_size": args.vocab_size,
            "merges": len(runs[0]),
            "seconds": times,
            "speedup_new_vs_old": times["old"]["median"] / times["new"]["median"],
            "new_vs_tokenizers": times["new"]["median"] / times["tokenizers"]["median"],
            "identical_merges": identical,
        }

    print(
        f"BPE training to vocab_size={args.vocab_size}, seconds: median [min-max] of "
        f"{args.repeats} interleaved runs"
    )
    header = ["corpus", "chars", "old", "new", "tokenizers", "speed-up", "identical"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in header) + "|")
    for name, r in results.items():
        cells = [name, f"{r['characters']:,}"]
        for t in trainers:
            s = r["seconds"][t]
            cells.append(f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]")
        cells += [f"{r['speedup_new_vs_old']:.1f}x faster", str(r["identical_merges"])]
        print("| " + " | ".join(cells) + " |")

    import tokenizers
    import torch
    from report import write_report  # benchmarks/report.py, beside this script

    write_report(
        args.out / "bench_tokenizer.json",
        "bench_tokenizer",
        torch.device("cpu"),
        tokenizers=tokenizers.__version__,
        repeats=args.repeats,
        corpora=results,
    )


if __name__ == "__main__":
    main()
