"""Command-line interface: `gptlib train ...`, `gptlib sample ...` (or `python -m gptlib ...`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gptlib.checkpoint import CheckpointError, load_checkpoint, load_model
from gptlib.data import encode_corpus, load_corpus, load_token_files, prepare_token_files, train_val_split
from gptlib.generate import stream
from gptlib.model import PRESETS, preset_config
from gptlib.tokenizer import BPETokenizer, CharTokenizer, Tokenizer, UnknownCharacterError
from gptlib.train import CHECKPOINT_NAME, TRAIN_PRESETS, NonFiniteLossError, TrainConfig, train
from gptlib.utils import seed_everything

RUNS_DIR = Path("runs")


class HelpFormatter(argparse.HelpFormatter):
    """Show each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, "", argparse.SUPPRESS) and "(default:" not in text
        if shown and action.option_strings:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptlib",
        description="Train a small GPT and sample from it. Every command has --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = commands.add_parser(
        "train",
        help="train a GPT on a corpus",
        description="Train a GPT. A preset fixes the model size and sensible training settings; "
        "any flag you give overrides the preset.",
        formatter_class=HelpFormatter,
    )
    t.add_argument("--preset", choices=list(PRESETS), default="tiny", help="model size and training settings")
    t.add_argument("--corpus", default="course",
                   help="'course', 'course-en', 'course-zh', 'tinyshakespeare' or the path of a .txt file")
    t.add_argument("--tokenizer", choices=["char", "bpe"], default="char", help="how text becomes token ids")
    t.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary size (with --tokenizer bpe)")
    t.add_argument("--data", type=Path, help="a folder written by `gptlib prepare` (memory-mapped token files), "
                   "instead of --corpus")
    t.add_argument("--out", type=Path, help="run folder for the checkpoint and metrics.jsonl (default: runs/PRESET)")
    t.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    t.add_argument("--batch-size", type=int, help="sequences per step (default: the preset's)")
    t.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    t.add_argument("--eval-interval", type=int, help="evaluate and checkpoint every N steps (default: the preset's)")
    t.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: the best available)")
    t.add_argument("--seed", type=int, default=1337, help="random seed")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    t.add_argument("--stop-at", type=int, help="stop (with a checkpoint) at this step; --resume continues the same schedule")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    p = commands.add_parser(
        "prepare",
        help="tokenize a corpus once into token files on disk",
        description="Write train.bin, val.bin (token ids) and tokenizer.json, for `gptlib train --data`.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--corpus", default="course", help="a corpus name or the path of a .txt file")
    p.add_argument("--tokenizer", choices=["char", "bpe"], default="char", help="how text becomes token ids")
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary size (with --tokenizer bpe)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the tokens kept for validation")
    p.add_argument("--out", type=Path, required=True, help="folder for the token files")

    s = commands.add_parser(
        "sample",
        help="generate text from a trained checkpoint",
        description="Continue a prompt with a trained model, printing the text as it is generated.",
        formatter_class=HelpFormatter,
    )
    s.add_argument("--checkpoint", type=Path,
                   help=f"a checkpoint file or run folder (default: the newest runs/*/{CHECKPOINT_NAME})")
    s.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    s.add_argument("--max-new-tokens", type=int, default=300, help="how many tokens to generate")
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; lower = safer, higher = wilder")
    s.add_argument("--top-k", type=int, help="sample only among the k most likely tokens")
    s.add_argument("--top-p", type=float, help="sample only among the most likely tokens that together reach p")
    s.add_argument("--stop", help="stop before this text appears")
    s.add_argument("--seed", type=int, help="fix the seed for reproducible samples")
    s.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: the best available)")
    return parser


def train_tokenizer(text: str, kind: str, vocab_size: int) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(text)
    return BPETokenizer.train(text, vocab_size, progress=True)


def cmd_prepare(args: argparse.Namespace) -> int:
    text = load_corpus(args.corpus)
    tokenizer = train_tokenizer(text, args.tokenizer, args.vocab_size)
    counts = prepare_token_files(text, tokenizer, args.out, args.val_fraction)
    print(f"{args.out}: {counts['train']:,} train and {counts['val']:,} val tokens "
          f"({args.tokenizer} tokenizer, vocab {tokenizer.vocab_size})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    out_dir = args.out or RUNS_DIR / args.preset
    seed_everything(args.seed)
    if args.data is not None:
        train_data, val_data, tokenizer = load_token_files(args.data)
        source = f"token files {args.data}"
    else:
        text = load_corpus(args.corpus)
        if args.resume:  # keep the ids the model was trained with: reuse the checkpoint's tokenizer
            tokenizer = load_checkpoint(find_checkpoint(out_dir)).tokenizer
        else:
            tokenizer = train_tokenizer(text, args.tokenizer, args.vocab_size)
        train_data, val_data = train_val_split(encode_corpus(text, tokenizer), 0.1)
        source = f"corpus {args.corpus}: {len(text):,} characters ->"
    overrides = {} if args.preset == "gpt2" else {"vocab_size": tokenizer.vocab_size}
    model_config = preset_config(args.preset, **overrides)
    if model_config.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"preset {args.preset} has vocab_size={model_config.vocab_size}, "
                         f"smaller than the tokenizer's {tokenizer.vocab_size}")
    settings = dict(TRAIN_PRESETS[args.preset], seed=args.seed, device=args.device, progress=not args.no_progress)
    for flag, key in [("steps", "max_steps"), ("batch_size", "batch_size"), ("lr", "learning_rate"),
                      ("eval_interval", "eval_interval")]:
        if getattr(args, flag) is not None:
            settings[key] = getattr(args, flag)
    if "learning_rate" in settings and settings["min_lr"] > settings["learning_rate"]:
        settings["min_lr"] = settings["learning_rate"] / 10
    config = TrainConfig(**settings)
    from .model import GPT  # after argument checks: building gpt2 takes a moment

    model = GPT(model_config)
    print(f"{source} {len(train_data) + len(val_data):,} tokens ({tokenizer.kind} tokenizer, "
          f"vocab {tokenizer.vocab_size})")
    print(f"model {args.preset}: {model.num_params():,} parameters; training {config.max_steps} steps -> {out_dir}")
    result = train(model, train_data, val_data, config, tokenizer=tokenizer, out_dir=out_dir, resume=args.resume,
                   stop_at_step=args.stop_at)
    final = result.final
    if result.interrupted or result.stopped_early:
        source_flag = f"--data {args.data}" if args.data else f"--corpus {args.corpus}"
        print(f"stopped at step {result.steps}; resume with: gptlib train --preset {args.preset} "
              f"{source_flag} --out {out_dir} --resume")
    elif final:
        print(f"step {result.steps}: train loss {final['train_loss']:.3f}, val loss {final['val_loss']:.3f} "
              f"({result.seconds:.0f} s)")
    print(f"checkpoint: {result.checkpoint}")
    return 130 if result.interrupted else 0


def find_checkpoint(path: Path | None) -> Path:
    if path is not None:
        return path / CHECKPOINT_NAME if path.is_dir() else path
    found = sorted(RUNS_DIR.glob(f"*/{CHECKPOINT_NAME}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {RUNS_DIR}/*/: train one first (gptlib train) or pass --checkpoint")
    return found[-1]


def cmd_sample(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    from .utils import get_device

    model, tokenizer = load_model(path, get_device(args.device))
    if tokenizer is None:
        raise ValueError(f"{path} holds no tokenizer, so its output cannot be turned into text")
    print(f"# sampling from {path}", file=sys.stderr)
    sys.stdout.write(args.prompt)
    pieces = stream(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                    args.seed, args.stop)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"train": cmd_train, "prepare": cmd_prepare, "sample": cmd_sample}
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, CheckpointError, UnknownCharacterError, NonFiniteLossError, OSError) as e:
        print(f"gptlib {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
