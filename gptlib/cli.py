"""Command-line interface: `gptlib train | prepare | sample | finetune` (or `python -m gptlib ...`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save as safetensors_bytes

from gptlib.checkpoint import (CHECKPOINT_NAME, CheckpointError, RunCheckpoint, atomic_write_bytes, find_checkpoint,
                               load_checkpoint, load_model, save_checkpoint)
from gptlib.data import encode_corpus, load_corpus, load_token_files, prepare_token_files, train_val_split
from gptlib.finetuning import (LABELS, GPTClassifier, apply_lora, count_parameters, course_lines, encodable,
                             encode_instruction, encode_labelled, evaluate_classifier, exact_match, finetune, freeze_layers,
                             glossary_instructions, merge_lora, pad_examples, random_batches, respond, save_adapter,
                             split_examples)
from gptlib.generation import stream
from gptlib.model import GPT, PRESETS, preset_config
from gptlib.tokenizer import BPETokenizer, CharTokenizer, Tokenizer, UnknownCharacterError
from gptlib.training import TRAIN_PRESETS, NonFiniteLossError, TrainConfig, estimate_loss, train
from gptlib.utils import seed_everything

RUNS_DIR = Path("runs")
ADAPTER_NAME = "adapter.safetensors"
HEAD_NAME = "classifier_head.safetensors"


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
    s.add_argument("--instruction", help="ask an instruction-tuned model (gptlib finetune --task instruct): "
                   "wraps the text in its prompt format, answers greedily and stops at the end of the answer")

    f = commands.add_parser(
        "finetune",
        help="fine-tune a trained checkpoint",
        description="Fine-tune a checkpoint: 'continue' pretraining on another corpus, 'classify' the lines of "
        "this course (English, Chinese or code) with a new head, or 'instruct' it with the course glossary "
        "(questions and answers, loss on the answers only). Prints before/after numbers; never changes --from.",
        formatter_class=HelpFormatter,
    )
    f.add_argument("--from", dest="source", type=Path, required=True, help="the checkpoint file or run folder to start from")
    f.add_argument("--task", choices=["continue", "classify", "instruct"], required=True, help="what to fine-tune for")
    f.add_argument("--corpus", default="course-en", help="the new corpus (with --task continue)")
    f.add_argument("--old-corpus", help="also report the loss on this corpus, to measure forgetting (--task continue)")
    f.add_argument("--lora-rank", type=int, help="train a LoRA adapter of this rank on the attention projections "
                   "instead of all weights")
    f.add_argument("--lora-alpha", type=float, help="LoRA scaling numerator (default: 2 x rank)")
    f.add_argument("--trainable-blocks", type=int, help="freeze the embeddings and all but the last N blocks")
    f.add_argument("--out", type=Path, help="output folder (default: runs/finetune-TASK)")
    f.add_argument("--steps", type=int, help="training steps (default: 200 for continue, 300 otherwise)")
    f.add_argument("--batch-size", type=int, default=16, help="examples (or windows) per step")
    f.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3 for continue, 3e-3 otherwise)")
    f.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: the best available)")
    f.add_argument("--seed", type=int, default=1337, help="random seed")
    f.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
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
    model = GPT(model_config)
    print(f"{source} {len(train_data) + len(val_data):,} tokens ({tokenizer.kind} tokenizer, "
          f"vocab {tokenizer.vocab_size})")
    print(f"model {args.preset}: {model.num_params():,} parameters; training {config.max_steps} steps -> {out_dir}")
    checkpoint = RunCheckpoint(out_dir / CHECKPOINT_NAME, tokenizer, resume=args.resume)
    result = train(model, train_data, val_data, config, out_dir=out_dir, checkpoint=checkpoint,
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


def cmd_sample(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    from .utils import get_device

    model, tokenizer = load_model(path, get_device(args.device))
    if tokenizer is None:
        raise ValueError(f"{path} holds no tokenizer, so its output cannot be turned into text")
    print(f"# sampling from {path}", file=sys.stderr)
    if args.instruction is not None:
        print(respond(model, tokenizer, args.instruction, args.max_new_tokens))
        return 0
    sys.stdout.write(args.prompt)
    pieces = stream(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                    args.seed, args.stop)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    if args.lora_rank is not None and args.trainable_blocks is not None:
        raise ValueError("choose --lora-rank or --trainable-blocks, not both")
    source = find_checkpoint(args.source)
    ckpt = load_checkpoint(source)
    if ckpt.tokenizer is None:
        raise ValueError(f"{source} holds no tokenizer: fine-tuning needs the ids the model was trained with")
    tokenizer, model = ckpt.tokenizer, ckpt.build_model()
    out_dir = args.out or RUNS_DIR / f"finetune-{args.task}"
    steps = args.steps if args.steps is not None else 200 if args.task == "continue" else 300
    lr = args.lr if args.lr is not None else 1e-3 if args.task == "continue" else 3e-3
    config = TrainConfig(max_steps=steps, batch_size=args.batch_size, learning_rate=lr, min_lr=lr / 10,
                         warmup_steps=min(20, steps // 10), eval_interval=steps, seed=args.seed,
                         device=args.device, progress=not args.no_progress)
    seed_everything(args.seed)
    print(f"fine-tuning {source} (step {ckpt.step}, {model.num_params():,} parameters) for '{args.task}', "
          f"{steps} steps at lr {lr:g} -> {out_dir}")
    run = {"continue": finetune_continue, "classify": finetune_classify, "instruct": finetune_instruct}[args.task]
    extra = run(args, model, tokenizer, config, out_dir)
    model = merge_lora(model)  # a plain GPT again: `gptlib sample` and load_model read it
    path = save_checkpoint(out_dir / CHECKPOINT_NAME, model, step=steps, tokenizer=tokenizer,
                           extra={"finetuned_from": str(source), "task": args.task, **extra})
    print(f"checkpoint: {path}")
    return 0


def prepare_trainable(args: argparse.Namespace, model: nn.Module, gpt: GPT) -> None:
    """Freeze blocks or add LoRA to `gpt` as the flags ask, and say how much is left to train."""
    if args.lora_rank is not None:
        apply_lora(gpt, args.lora_rank, args.lora_alpha)
    elif args.trainable_blocks is not None:
        freeze_layers(gpt, args.trainable_blocks)
    trainable, total = count_parameters(model)
    print(f"training {trainable:,} of {total:,} parameters ({trainable / total:.1%})")


def save_adapter_if_lora(args: argparse.Namespace, gpt: GPT, out_dir: Path) -> None:
    if args.lora_rank is not None:
        print(f"adapter: {save_adapter(out_dir / ADAPTER_NAME, gpt)}")


def finetune_continue(
    args: argparse.Namespace, model: GPT, tokenizer: Tokenizer, config: TrainConfig, out_dir: Path
) -> dict:
    train_data, val_data = train_val_split(encode_corpus(load_corpus(args.corpus), tokenizer), 0.1)
    named = {args.corpus: val_data}
    if args.old_corpus:
        named[args.old_corpus] = train_val_split(encode_corpus(load_corpus(args.old_corpus), tokenizer), 0.1)[1]
    before = estimate_loss(model, named, config.batch_size, config.eval_batches)
    prepare_trainable(args, model, model)
    result = train(model, train_data, val_data, config)
    if result.interrupted:
        raise KeyboardInterrupt
    after = estimate_loss(model, named, config.batch_size, config.eval_batches, next(model.parameters()).device)
    for name in named:
        print(f"val loss on {name}: {before[name]:.3f} -> {after[name]:.3f}")
    save_adapter_if_lora(args, model, out_dir)
    return {"val_loss_before": before, "val_loss_after": after}


def finetune_classify(
    args: argparse.Namespace, model: GPT, tokenizer: Tokenizer, config: TrainConfig, out_dir: Path
) -> dict:
    examples = encodable(course_lines(max_chars=model.config.block_size), tokenizer)
    train_set, _, test_set = split_examples(examples, seed=args.seed)
    block = model.config.block_size
    x_test, y_test = encode_labelled(test_set, tokenizer, block)
    y_train = torch.tensor([label for _, label in train_set])
    classifier = GPTClassifier(model, len(LABELS))
    before = evaluate_classifier(classifier, x_test, y_test, y_train)
    prepare_trainable(args, classifier, model)
    classifier.head.requires_grad_(True)
    finetune(classifier, random_batches(train_set, config.batch_size, lambda b: encode_labelled(b, tokenizer, block),
                                        args.seed), config)
    after = evaluate_classifier(classifier, x_test, y_test, y_train)
    print(f"{len(examples):,} labelled lines {LABELS}: {len(train_set):,} train, {len(test_set):,} test")
    print(f"test accuracy: {before.accuracy:.1%} -> {after.accuracy:.1%} "
          f"(always guessing the most common class: {after.majority_baseline:.1%})")
    print("confusion (rows: true, columns: predicted):", after.confusion.tolist())
    save_adapter_if_lora(args, model, out_dir)
    head = {name: t.detach().cpu().contiguous() for name, t in classifier.head.state_dict().items()}
    atomic_write_bytes(out_dir / HEAD_NAME, safetensors_bytes(head, metadata={"labels": json.dumps(LABELS)}))
    print(f"classifier head: {out_dir / HEAD_NAME}")
    return {"labels": list(LABELS), "accuracy_before": before.accuracy, "accuracy_after": after.accuracy}


def finetune_instruct(
    args: argparse.Namespace, model: GPT, tokenizer: Tokenizer, config: TrainConfig, out_dir: Path
) -> dict:
    pairs = glossary_instructions()
    usable = encodable(pairs, tokenizer)
    if len(usable) < len(pairs):
        print(f"skipping {len(pairs) - len(usable)} of {len(pairs)} questions: the tokenizer cannot encode them")
    train_set, _, test_set = split_examples(usable, (0.85, 0.0), seed=args.seed)
    encoded = [encode_instruction(tokenizer, q, a, model.config.block_size) for q, a in train_set]
    before = exact_match(model, tokenizer, train_set), exact_match(model, tokenizer, test_set)
    prepare_trainable(args, model, model)
    finetune(model, random_batches(encoded, config.batch_size, pad_examples, args.seed), config)
    after = exact_match(model, tokenizer, train_set), exact_match(model, tokenizer, test_set)
    print(f"exact answers, trained questions: {before[0]:.0%} -> {after[0]:.0%}; "
          f"held-out questions: {before[1]:.0%} -> {after[1]:.0%}")
    for q, a in train_set[:2] + test_set[:2]:
        print(f"  {q} -> {respond(model, tokenizer, q)!r} (expected {a!r})")
    save_adapter_if_lora(args, model, out_dir)
    return {"exact_before": before, "exact_after": after}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"train": cmd_train, "prepare": cmd_prepare, "sample": cmd_sample, "finetune": cmd_finetune}
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, CheckpointError, UnknownCharacterError, NonFiniteLossError, OSError) as e:
        print(f"gptlib {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
