"""The command line: `gptlib train | prepare | sample | finetune | classify | eval |
export | bench` (or `python -m gptlib ...`).

A thin layer over the library. Every field of `GPTConfig` and `TrainConfig` is a flag
of `gptlib train` (the training ones of `gptlib finetune` too), with the field's type,
and its comment in the dataclass as the help; a flag left out takes the preset's value.
"""

import argparse
import inspect
import json
import math
import os
import re
import shlex
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch

from gptlib.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    RunCheckpoint,
    find_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
    saved_world_size,
    train_config_changes,
)
from gptlib.data import (
    CORPORA,
    TokenFileError,
    encode_corpus,
    load_corpus,
    load_token_files,
    prepare_token_files,
    train_val_split,
)
from gptlib.distributed import DataParallel, data_parallel, world_size
from gptlib.evaluation import (
    course_choices,
    fetch_hellaswag,
    read_choices,
    sample_board,
    score_choices,
    score_text,
)
from gptlib.finetuning import (
    LABELS,
    PROMPT_TEMPLATE,
    GPTClassifier,
    apply_lora,
    continue_pretraining,
    count_parameters,
    encode_labelled,
    finetune_config,
    freeze_layers,
    instruction_tune,
    load_classifier_head,
    merge_lora,
    respond,
    save_adapter,
    save_classifier_head,
    train_classifier,
)
from gptlib.generation import stream
from gptlib.model import GPT, PRESETS, GPTConfig, preset_config
from gptlib.pretrained import GPT2_TOKENIZER_FILES, load_pretrained, pretrained_folder
from gptlib.shards import INDEX_FILE as SHARD_INDEX
from gptlib.shards import TOKENIZER_FILE as SHARD_TOKENIZER
from gptlib.shards import open_shards, prepare_shards, read_documents
from gptlib.tokenizer import GPT2Tokenizer, Tokenizer, load_tokenizer, train_tokenizer
from gptlib.training import (
    DTYPE_CHOICES,
    METRICS_NAME,
    TRAIN_PRESETS,
    NonFiniteLossError,
    TrainConfig,
    train,
    train_config,
)
from gptlib.utils import DeviceError, get_device, seed_everything

RUNS_DIR = Path("runs")
# exit statuses: a flag that cannot work, a failure while working, Ctrl-C
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130
ADAPTER_NAME = "adapter.safetensors"
HEAD_NAME = "classifier_head.safetensors"
# TrainConfig fields that every command shares (one parent parser)
COMMON = ("device", "seed")
# short forms the course uses
ALIASES = {"max_steps": ["--steps"], "learning_rate": ["--lr"]}
CHOICES = {"dtype": list(DTYPE_CHOICES)}
TRAINABLE = ("char", "bpe")  # the tokenizers `train_tokenizer` makes from a corpus
# the sample board's prompts when `gptlib eval` is given none: one per language
BOARD_PROMPTS = ("The model", "模型")


# --- flags from dataclasses -----------------------------------------------------------


def field_help(cls: type) -> dict[str, str]:
    """The comment after each field of a dataclass (`max_steps: int = 1000  # ...`)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (a frozen install): flags without help
        return {}
    return dict(re.findall(r"^\s+(\w+): [^=\n]+= [^#\n]+#\s*(.+)$", source, re.M))


def field_type(cls: type, name: str) -> type:
    """int, float, str or bool: the field's type, with `| None` taken off."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def add_dataclass_flags(
    group: argparse._ArgumentGroup,
    cls: type,
    skip: tuple[str, ...] = (),
    from_preset: set[str] = frozenset(),
) -> None:
    """One flag per field of `cls`: --field-name, typed, with the field's comment as
    help.

    Every flag defaults to None, "not given": the command fills in the preset's value
    (fields in `from_preset`) or the dataclass default.
    """
    notes = field_help(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        kind = field_type(cls, f.name)
        default = "the preset's" if f.name in from_preset else f.default
        help_text = f"{notes.get(f.name, '')} (default: {default})"
        names = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
        if kind is bool:
            group.add_argument(
                *names,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            choices = CHOICES.get(f.name)
            group.add_argument(
                *names,
                dest=f.name,
                type=kind,
                default=None,
                choices=choices,
                metavar=None if choices else f.name.upper(),
                help=help_text,
            )


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` that the command line set."""
    return {
        f.name: getattr(args, f.name)
        for f in fields(cls)
        if getattr(args, f.name, None) is not None
    }


# --- the parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptlib",
        description="Train a small GPT, sample from it, fine-tune "
        "it. Every command has --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full Python traceback instead of one line",
    )
    common = argparse.ArgumentParser(add_help=False, parents=[debug])
    shared = common.add_argument_group("every command")
    shared.add_argument(
        "--device",
        help="cpu, cuda, cuda:1 or mps (default: the best available; "
        "$GPTLIB_DEVICE overrides)",
    )
    shared.add_argument(
        "--seed",
        type=int,
        help="random seed: batches, dropout, samples (default: 1337 "
        "when training, a fresh sample each time when sampling)",
    )

    t = commands.add_parser(
        "train",
        parents=[common],
        help="train a GPT on a corpus",
        description="Train a GPT. A preset fixes the model size and the training "
        "settings; any flag you give overrides the preset. Under torchrun "
        "(torchrun --nproc_per_node=N -m gptlib train ...) the N processes share "
        "each step: the global batch is batch size x accumulation x N.",
    )
    data = t.add_argument_group("data")
    data.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="tiny",
        help="model size and training settings (default: tiny)",
    )
    data.add_argument(
        "--corpus",
        default="course",
        help="'course', 'course-en', 'course-zh', "
        "'tinyshakespeare' or the path of a .txt file (default: course)",
    )
    data.add_argument(
        "--data",
        type=Path,
        help="a folder written by `gptlib prepare` (token files), instead of --corpus",
    )
    add_tokenizer_flags(data)
    run = t.add_argument_group("run")
    run.add_argument(
        "--out",
        type=Path,
        help="run folder for the checkpoint and metrics.jsonl (default: runs/PRESET)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run folder's checkpoint",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="start over in a run folder that already holds a run, replacing it",
    )
    run.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: go on with training settings that differ from the saved "
        "run's (otherwise refused)",
    )
    run.add_argument(
        "--stop-at",
        type=int,
        help="stop (with a checkpoint) at this step; --resume continues "
        "the same schedule",
    )
    model_flags = t.add_argument_group(
        "model (GPTConfig; vocab_size comes from the tokenizer)"
    )
    add_dataclass_flags(
        model_flags,
        GPTConfig,
        skip=("vocab_size",),
        from_preset=set().union(*PRESETS.values()),
    )
    training = t.add_argument_group("training (TrainConfig)")
    add_dataclass_flags(
        training,
        TrainConfig,
        skip=COMMON,
        from_preset=set().union(*TRAIN_PRESETS.values()),
    )

    p = commands.add_parser(
        "prepare",
        parents=[debug],
        help="tokenize a corpus once into token files on disk",
        description="Write train.bin, val.bin (token ids) and tokenizer.json, "
        "for `gptlib train --data`. With --shard-tokens, stream a corpus of any size "
        "(text, JSON lines, Parquet; local or hf://datasets/...) into shards of "
        "that many tokens, tokenized by --workers processes, whole documents held "
        "out for validation; --resume goes on after an interruption.",
    )
    p.add_argument(
        "--corpus",
        default="course",
        help="a corpus name or the path of a .txt file; with --shard-tokens also "
        ".jsonl, .jsonl.gz, .parquet, a folder of them or "
        "hf://datasets/OWNER/NAME/PATTERN (default: course)",
    )
    p.add_argument(
        "--tokenizer",
        default="char",
        help="char or bpe (trained on the corpus, its first 10 MB with "
        "--shard-tokens), gpt2 (GPT-2's own, downloaded once), or the path of a "
        "gptlib tokenizer.json or of a folder with vocab.json and merges.txt "
        "(default: char)",
    )
    p.add_argument(
        "--vocab-size",
        dest="bpe_vocab_size",
        type=int,
        default=512,
        help="the BPE tokenizer's vocabulary size, with --tokenizer bpe (default: 512)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the tokens (with --shard-tokens: of the documents) kept for "
        "validation (default: 0.1)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the token files")
    shards = p.add_argument_group("token shards")
    shards.add_argument(
        "--shard-tokens",
        type=int,
        help="write shards of this many tokens and an index.json instead of "
        "train.bin and val.bin (GPT-2 runs use 100000000)",
    )
    shards.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes that tokenize (default: one per core)",
    )
    shards.add_argument(
        "--text-field",
        default="text",
        help="the field (JSON lines) or column (Parquet) with the text (default: text)",
    )
    shards.add_argument(
        "--utf8-errors",
        choices=("strict", "replace"),
        default="strict",
        help="bytes that are not UTF-8: stop with an error (strict, the default) or "
        "read each as U+FFFD (replace)",
    )
    shards.add_argument(
        "--resume",
        action="store_true",
        help="go on with the shards an interrupted run left in --out",
    )
    shards.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = commands.add_parser(
        "sample",
        parents=[common],
        help="generate text from a trained checkpoint",
        description="Continue a prompt with a trained model, printing the text as it "
        "is generated.",
    )
    model_source = s.add_mutually_exclusive_group()
    model_source.add_argument(
        "--checkpoint",
        type=Path,
        help=f"a checkpoint file or run folder (default: the newest "
        f"runs/*/{CHECKPOINT_NAME})",
    )
    model_source.add_argument(
        "--pretrained",
        metavar="NAME",
        help="a GPT-2 from the Hugging Face hub (gpt2, gpt2-medium, ...; downloaded "
        "once) or a local folder in its format, with its own tokenizer",
    )
    s.add_argument(
        "--prompt", default="\n", help="text to continue (default: a newline)"
    )
    s.add_argument(
        "--max-new-tokens",
        type=int,
        default=300,
        help="how many tokens to generate (default: 300)",
    )
    s.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="0 = greedy; lower = safer, higher = wilder (default: 0.8)",
    )
    s.add_argument(
        "--top-k", type=int, help="sample only among the k most likely tokens"
    )
    s.add_argument(
        "--top-p",
        type=float,
        help="sample only among the most likely tokens that together reach p",
    )
    s.add_argument("--stop", help="stop before this text appears")
    s.add_argument(
        "--instruction",
        help="ask an instruction-tuned model (gptlib finetune --task instruct): "
        "wraps the text in its prompt format, answers greedily and stops at the end "
        "of the answer",
    )

    f = commands.add_parser(
        "finetune",
        parents=[common],
        help="fine-tune a trained checkpoint",
        description="Fine-tune a checkpoint: 'continue' pretraining on another corpus, "
        "'classify' the lines of this course (English, Chinese or code) with a new "
        "head, or 'instruct' it with the course glossary (questions and answers, loss "
        "on the answers only). Prints before/after numbers; never changes --from.",
    )
    task = f.add_argument_group("task")
    task.add_argument(
        "--from",
        dest="source",
        type=Path,
        required=True,
        help="the checkpoint file or run folder to start from",
    )
    task.add_argument(
        "--task",
        choices=["continue", "classify", "instruct"],
        required=True,
        help="what to fine-tune for",
    )
    task.add_argument(
        "--corpus",
        default="course-en",
        help="the new corpus, with --task continue (default: course-en)",
    )
    task.add_argument(
        "--old-corpus",
        help="also report the loss on this corpus, to measure forgetting "
        "(--task continue)",
    )
    task.add_argument(
        "--lora-rank",
        type=int,
        help="train a LoRA adapter of this rank on the attention "
        "projections instead of all weights",
    )
    task.add_argument(
        "--lora-alpha", type=float, help="LoRA scaling numerator (default: 2 x rank)"
    )
    task.add_argument(
        "--trainable-blocks",
        type=int,
        help="freeze the embeddings and all but the last N blocks",
    )
    task.add_argument(
        "--out", type=Path, help="output folder (default: runs/finetune-TASK)"
    )
    task.add_argument(
        "--force",
        action="store_true",
        help="replace the checkpoint that --out already holds",
    )
    tuning = f.add_argument_group("training (TrainConfig; defaults: the task's)")
    add_dataclass_flags(
        tuning,
        TrainConfig,
        skip=COMMON,
        from_preset={
            "max_steps",
            "learning_rate",
            "min_lr",
            "warmup_steps",
            "eval_interval",
            "batch_size",
        },
    )

    c = commands.add_parser(
        "classify",
        parents=[common],
        help="label texts with a fine-tuned classifier",
        description="Label each text with the classifier that `gptlib finetune --task "
        f"classify` wrote ({HEAD_NAME} beside its checkpoint).",
    )
    c.add_argument(
        "--checkpoint",
        type=Path,
        default=RUNS_DIR / "finetune-classify",
        help="the classifier's checkpoint file or run folder "
        "(default: runs/finetune-classify)",
    )
    c.add_argument("texts", nargs="+", metavar="TEXT", help="the texts to label")

    e = commands.add_parser(
        "eval",
        parents=[common],
        help="score models: perplexity, bits per byte, multiple choice",
        description="Score one or more models on the same held-out text (loss, "
        "perplexity, bits per byte) and multiple-choice items (accuracy), and print "
        "their continuations of fixed prompts side by side. --out writes it all as "
        "JSON.",
    )
    e.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a checkpoint file or run folder; give it twice to compare two",
    )
    e.add_argument(
        "--pretrained",
        metavar="NAME",
        action="append",
        default=[],
        help="a GPT-2 from the Hugging Face hub or a folder in its format",
    )
    e.add_argument(
        "--corpus",
        default="course",
        help="score the last tenth of this corpus (the validation split of "
        "`gptlib train --corpus`): a name or the path of a .txt file "
        "(default: course)",
    )
    e.add_argument(
        "--choices",
        default="course",
        help="multiple-choice items: 'course' (from the held-out course text, in "
        "the language of --corpus), "
        "'hellaswag' (its validation set, downloaded once) or a JSONL file in "
        "HellaSwag's format (default: course)",
    )
    e.add_argument("--limit", type=int, help="score only the first N items")
    e.add_argument(
        "--prompt",
        action="append",
        default=[],
        help=f"a prompt for the sample board (default: {len(BOARD_PROMPTS)} fixed "
        "ones); repeat for more",
    )
    e.add_argument(
        "--max-new-tokens",
        type=int,
        default=60,
        help="tokens per sample on the board (default: 60)",
    )
    e.add_argument("--out", type=Path, help="write the results to this JSON file")

    x = commands.add_parser(
        "export",
        parents=[debug],
        help="write a trained model and its tokenizer for a web page (ONNX)",
        description="Write model.onnx (token ids -> logits and, unless "
        "--no-attention, every head's attention weights; any batch and length up to "
        "block_size) and tokenizer.json, for onnxruntime-web; onnxruntime checks the "
        "logits against PyTorch's. Needs pip install 'gptlib[web]'.",
    )
    x.add_argument(
        "--checkpoint",
        type=Path,
        help=f"a checkpoint file or run folder (default: the newest "
        f"runs/*/{CHECKPOINT_NAME})",
    )
    x.add_argument(
        "--onnx", type=Path, required=True, metavar="DIR", help="the folder to write"
    )
    x.add_argument(
        "--no-attention",
        dest="attention",
        action="store_false",
        help="logits only (the playground's attention view needs the weights)",
    )

    b = commands.add_parser(
        "bench",
        parents=[debug],
        help="measure training or generation speed on this machine",
        description="train: ms/step, tokens/s, peak memory (and MFU on a known GPU) "
        "for each speed technique, each in a fresh process, taking turns. generate: "
        "tokens/s without a KV cache and with each cache, by context length. "
        "profile: where the time of one training step goes (CPU).",
    )
    b.add_argument("what", choices=["train", "generate", "profile"])
    b.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    b.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="model size (default: tiny on a CPU, gpt2 on a GPU for train; small "
        "for generate)",
    )
    b.add_argument("--batch-size", type=int, help="default: 12 (CPU), 16 (GPU)")
    b.add_argument("--steps", type=int, default=20, help="timed training steps")
    b.add_argument("--repeats", type=int, default=3, help="runs of each setting")
    b.add_argument(
        "--only",
        metavar="TEXT",
        help="train: the baseline and the settings whose name contains TEXT",
    )
    b.add_argument(
        "--max-context",
        type=int,
        default=1024,
        help="generate: contexts 64, 128, ... up to this (default: 1024)",
    )
    return parser


def add_tokenizer_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--tokenizer",
        choices=sorted(TRAINABLE),
        default="char",
        help="how text becomes token ids (default: char)",
    )
    group.add_argument(
        "--vocab-size",
        dest="bpe_vocab_size",
        type=int,
        default=512,
        help="the BPE tokenizer's vocabulary size, with --tokenizer bpe (default: 512)",
    )


# --- checking the flags before any work ---------------------------------------------


class UsageError(ValueError):
    """A flag whose value cannot work. Raised before any work or output starts."""


def check_device(args: argparse.Namespace) -> torch.device:
    try:
        return get_device(args.device)
    except DeviceError as e:
        raise UsageError(f"--device: {e}") from None


def check_corpus(name: str) -> None:
    if name not in CORPORA and not Path(name).is_file():
        raise UsageError(
            f"--corpus {name!r}: neither a corpus name ({', '.join(sorted(CORPORA))}) "
            "nor a text file"
        )


def check_existing_checkpoint(path: Path | None, flag: str) -> Path:
    """The checkpoint file `path` names (a file or a run folder; None: the newest run
    in runs/), which must exist."""
    try:
        path = find_checkpoint(path, RUNS_DIR)
    except FileNotFoundError as e:  # no path given, and no run in runs_dir
        raise UsageError(f"{flag}: {e}") from None
    if not path.is_file():
        raise UsageError(f"{flag}: no checkpoint at {path}")
    return path


def run_files(out_dir: Path) -> list[str]:
    """The files of a run that a new run in `out_dir` would replace."""
    return [
        name
        for name in (CHECKPOINT_NAME, METRICS_NAME)
        if (Path(out_dir) / name).exists()
    ]


def check_train(args: argparse.Namespace) -> None:
    config = train_config(args.preset, **given(args, TrainConfig))
    preset_config(args.preset, **given(args, GPTConfig))  # the model flags make sense
    check_device(args)
    if args.stop_at is not None and not 1 <= args.stop_at <= config.max_steps:
        raise UsageError(
            f"--stop-at must be a step from 1 to {config.max_steps} (--steps), "
            f"got {args.stop_at}"
        )
    if args.data is not None:
        if not args.data.is_dir():
            raise UsageError(
                f"--data: no folder {args.data} (make one: gptlib prepare)"
            )
    else:
        check_corpus(args.corpus)
    out_dir = args.out or RUNS_DIR / args.preset
    if args.resume and args.force:
        raise UsageError("--resume continues a run, --force replaces it: choose one")
    if args.resume:
        path = check_existing_checkpoint(out_dir / CHECKPOINT_NAME, "--resume")
        ckpt = load_checkpoint(path)
        if ckpt.optimizer_state is None:
            raise UsageError(
                f"--resume: {path} holds no optimizer state (a fine-tuned or "
                "inference checkpoint) and cannot be resumed; train into a new --out"
            )
        if ckpt.tokenizer is None and args.data is None:
            raise UsageError(
                f"--resume: {path} holds no tokenizer to encode --corpus with"
            )
        saved = ckpt.extra.get("train_config")
        processes = (saved_world_size(ckpt, path), world_size())
        changes = (
            train_config_changes(saved, config, *processes)
            if isinstance(saved, dict)
            else {}
        )
        if changes and not args.allow_config_change:
            listed = ", ".join(
                f"{k} {old} -> {new}" for k, (old, new) in changes.items()
            )
            raise UsageError(
                f"--resume: {path} was trained with other settings ({listed}): give "
                "the run's own flags, or --allow-config-change to go on with these"
            )
        args.resumed_checkpoint = ckpt
    elif run_files(out_dir) and not args.force:
        raise UsageError(
            f"{out_dir} already holds a run ({', '.join(run_files(out_dir))}): "
            "continue it with --resume, train into another folder with --out, or "
            "start it over with --force"
        )


def check_prepare(args: argparse.Namespace) -> None:
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(
            f"--val-fraction must be between 0 and 1, got {args.val_fraction}"
        )
    if args.tokenizer not in (*TRAINABLE, "gpt2") and not Path(args.tokenizer).exists():
        raise UsageError(
            f"--tokenizer {args.tokenizer!r}: neither char, bpe, gpt2 nor a file or "
            "folder"
        )
    if args.shard_tokens is None:
        check_corpus(args.corpus)
        if args.resume:
            raise UsageError("--resume goes on with shards: give --shard-tokens")
        return
    if args.shard_tokens < 1:
        raise UsageError(f"--shard-tokens must be 1 or more, got {args.shard_tokens}")
    if args.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {args.workers}")
    if (args.out / SHARD_INDEX).exists() and not args.resume:
        raise UsageError(
            f"{args.out} already holds shards: go on with --resume, or choose "
            "another --out"
        )


def check_sample(args: argparse.Namespace) -> None:
    check_device(args)
    if args.pretrained is None:
        args.checkpoint = check_existing_checkpoint(args.checkpoint, "--checkpoint")
    if args.max_new_tokens < 1:
        raise UsageError(
            f"--max-new-tokens must be 1 or more, got {args.max_new_tokens}"
        )
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise UsageError(
            f"--temperature must be 0 (greedy) or more, got {args.temperature}"
        )
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be 1 or more, got {args.top_k}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")


def check_finetune(args: argparse.Namespace) -> None:
    check_device(args)
    if args.lora_rank is not None and args.trainable_blocks is not None:
        raise UsageError("choose --lora-rank or --trainable-blocks, not both")
    if args.lora_rank is not None and args.lora_rank < 1:
        raise UsageError(f"--lora-rank must be 1 or more, got {args.lora_rank}")
    if args.lora_alpha is not None and not (
        math.isfinite(args.lora_alpha) and args.lora_alpha > 0
    ):
        raise UsageError(f"--lora-alpha must be positive, got {args.lora_alpha}")
    if args.trainable_blocks is not None and args.trainable_blocks < 0:
        raise UsageError(
            f"--trainable-blocks must be 0 or more, got {args.trainable_blocks}"
        )
    finetune_config(args.task, **given(args, TrainConfig))
    if args.task == "continue":
        check_corpus(args.corpus)
        if args.old_corpus is not None:
            check_corpus(args.old_corpus)
    args.source = check_existing_checkpoint(args.source, "--from")
    args.out = args.out or RUNS_DIR / f"finetune-{args.task}"
    if (args.out / CHECKPOINT_NAME).exists() and not args.force:
        raise UsageError(
            f"{args.out} already holds a checkpoint: choose another --out, or replace "
            "it with --force"
        )


def check_classify(args: argparse.Namespace) -> None:
    check_device(args)
    args.checkpoint = check_existing_checkpoint(args.checkpoint, "--checkpoint")
    head = args.checkpoint.parent / HEAD_NAME
    if not head.is_file():
        raise UsageError(
            f"no classifier head {head}: make one with gptlib finetune --task classify"
        )


# --- commands -------------------------------------------------------------------------


TOKENIZER_SAMPLE = 10_000_000  # characters of a sharded corpus a tokenizer learns from


def prepare_tokenizer(args: argparse.Namespace, text: Callable[[], str]) -> Tokenizer:
    """The tokenizer --tokenizer names; `text()` is what char and bpe learn from."""
    if args.tokenizer in TRAINABLE:
        return train_tokenizer(
            text(), args.tokenizer, args.bpe_vocab_size, progress=True
        )
    path = Path(args.tokenizer)
    if path.is_file():
        return load_tokenizer(path)
    folder = pretrained_folder(args.tokenizer, files=GPT2_TOKENIZER_FILES)
    return GPT2Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt")


def text_sample(source: str, text_field: str, errors: str) -> str:
    """The first TOKENIZER_SAMPLE characters of a corpus's documents."""
    parts, size = [], 0
    for text in read_documents(source, text_field, errors):
        parts.append(text)
        size += len(text) + 2
        if size >= TOKENIZER_SAMPLE:
            break
    return "\n\n".join(parts)[:TOKENIZER_SAMPLE]


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.shard_tokens is not None:
        return prepare_sharded(args)
    text = load_corpus(args.corpus)
    tokenizer = prepare_tokenizer(args, lambda: text)
    counts = prepare_token_files(text, tokenizer, args.out, args.val_fraction)
    print(
        f"{args.out}: {counts['train']:,} train and {counts['val']:,} val tokens "
        f"({args.tokenizer} tokenizer, vocab {tokenizer.vocab_size})"
    )
    return 0


def prepare_sharded(args: argparse.Namespace) -> int:
    reading = (args.corpus, args.text_field, args.utf8_errors)
    if args.resume and (args.out / SHARD_TOKENIZER).is_file():
        tokenizer = load_tokenizer(args.out / SHARD_TOKENIZER)  # the run's own
    else:
        tokenizer = prepare_tokenizer(args, lambda: text_sample(*reading))
    try:
        index = prepare_shards(
            read_documents(*reading),
            tokenizer,
            args.out,
            shard_tokens=args.shard_tokens,
            val_fraction=args.val_fraction,
            workers=args.workers,
            source=args.corpus,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            "\ngptlib prepare: interrupted; the finished shards are kept, go on with: "
            + resume_command(args.argv, args.out),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    docs = index["documents"]
    for split in ("train", "val"):
        tokens = sum(shard["tokens"] for shard in index[split])
        print(
            f"{split}: {docs[split]:,} documents, {tokens:,} tokens "
            f"in {len(index[split])} shard(s)"
        )
    print(
        f"{args.out}: {docs['read']:,} documents read ({docs['empty']} empty, "
        f"skipped), {index['dtype']} ids, vocab {tokenizer.vocab_size}"
    )
    return 0


def resume_command(argv: list[str], out_dir: Path, processes: int = 1) -> str:
    """The command that continues this run: the same flags, without --stop-at and
    --force, with --resume and --out (under torchrun when the run had processes)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--stop-at":
            skip = True
        elif not arg.startswith("--stop-at=") and arg not in ("--force", "--resume"):
            kept.append(arg)
    if not any(a == "--out" or a.startswith("--out=") for a in kept):
        kept += ["--out", str(out_dir)]
    launcher = ["gptlib"]
    if processes > 1:
        nproc = f"--nproc_per_node={processes}"  # on one machine; several: chapter 14
        launcher = ["torchrun", "--standalone", nproc, "-m", "gptlib"]
    return shlex.join([*launcher, *kept, "--resume"])


def cmd_train(args: argparse.Namespace) -> int:
    config = train_config(args.preset, **given(args, TrainConfig))
    # under torchrun: this process is one of several that share each step (ch. 14)
    with data_parallel(config.device) as parallel:
        return train_run(args, config, parallel)


def train_run(
    args: argparse.Namespace, config: TrainConfig, parallel: DataParallel | None
) -> int:
    main = parallel is None or parallel.is_main  # only one process prints
    say = print if main else lambda *_: None
    out_dir = args.out or RUNS_DIR / args.preset
    seed_everything(config.seed)
    if args.data is not None:
        if (args.data / SHARD_INDEX).is_file():  # gptlib prepare --shard-tokens
            train_data, val_data, tokenizer = open_shards(args.data)
        else:
            train_data, val_data, tokenizer = load_token_files(args.data)
        source = f"token files {args.data}"
    else:
        text = load_corpus(args.corpus)
        # keep the ids the model was trained with: the checkpoint's tokenizer
        if args.resume:
            tokenizer = args.resumed_checkpoint.tokenizer
        else:
            tokenizer = train_tokenizer(
                text,
                args.tokenizer,
                args.bpe_vocab_size,
                progress=config.progress and main,
            )
        train_data, val_data = train_val_split(encode_corpus(text, tokenizer), 0.1)
        source = f"corpus {args.corpus}: {len(text):,} characters ->"
    # gpt2 keeps its 50257
    vocab = {} if args.preset == "gpt2" else {"vocab_size": tokenizer.vocab_size}
    model_config = preset_config(args.preset, **vocab, **given(args, GPTConfig))
    if model_config.vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"preset {args.preset} has vocab_size={model_config.vocab_size}, "
            f"smaller than the tokenizer's {tokenizer.vocab_size}"
        )
    model = GPT(model_config)
    say(
        f"{source} {len(train_data) + len(val_data):,} tokens "
        f"({tokenizer.kind} tokenizer, vocab {tokenizer.vocab_size})"
    )
    say(
        f"model {args.preset}: {model.num_params():,} parameters; "
        f"training {config.max_steps} steps -> {out_dir}"
    )
    processes = 1 if parallel is None else parallel.world_size
    if processes > 1:
        tokens = config.batch_size * config.grad_accum_steps * model_config.block_size
        say(
            f"{processes} processes x {tokens:,} tokens = a global batch of "
            f"{processes * tokens:,} tokens per step"
        )
    checkpoint = RunCheckpoint(
        out_dir / CHECKPOINT_NAME,
        tokenizer,
        resume=args.resume,
        allow_config_change=args.allow_config_change,
    )
    result = train(
        model,
        train_data,
        val_data,
        config,
        out_dir,
        checkpoint,
        stop_at_step=args.stop_at,
        parallel=parallel,
    )
    if result.interrupted or result.stopped_early:
        say(
            f"stopped at step {result.steps}; resume with: "
            f"{resume_command(args.argv, out_dir, processes)}"
        )
    elif result.final:
        say(
            f"step {result.steps}: train loss {result.final['train_loss']:.3f}, "
            f"val loss {result.final['val_loss']:.3f} ({result.seconds:.0f} s)"
        )
    say(f"checkpoint: {result.checkpoint}")
    return EXIT_INTERRUPTED if result.interrupted else 0


def cmd_sample(args: argparse.Namespace) -> int:
    if args.pretrained is not None:
        path = args.pretrained
        model, tokenizer = load_pretrained(path)
        model.to(get_device(args.device))
    else:
        path = args.checkpoint
        model, tokenizer = load_model(path, get_device(args.device))
    if tokenizer is None:
        raise ValueError(
            f"{path} holds no tokenizer, so its output cannot be turned into text"
        )
    # what would fail half-way fails here, before any output
    if args.instruction is not None:
        tokenizer.encode(PROMPT_TEMPLATE.format(instruction=args.instruction))
    else:
        tokenizer.encode(args.prompt)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise ValueError(
            f"{path} has NaN or infinite weights (from a training run that "
            "diverged?): there is nothing to sample from"
        )
    print(f"# sampling from {path}", file=sys.stderr)
    if args.instruction is not None:
        print(respond(model, tokenizer, args.instruction, args.max_new_tokens))
        return 0
    sys.stdout.write(args.prompt)
    pieces = stream(
        model,
        tokenizer,
        args.prompt,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
        args.stop,
    )
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    source, out_dir = args.source, args.out
    ckpt = load_checkpoint(source)
    if ckpt.tokenizer is None:
        raise ValueError(
            f"{source} holds no tokenizer: "
            "fine-tuning needs the ids the model was trained with"
        )
    tokenizer, model = ckpt.tokenizer, ckpt.build_model()
    config = finetune_config(args.task, **given(args, TrainConfig))
    seed_everything(config.seed)
    print(
        f"fine-tuning {source} (step {ckpt.step}, {model.num_params():,} parameters) "
        f"for '{args.task}', {config.max_steps} steps at lr {config.learning_rate:g} "
        f"-> {out_dir}"
    )
    run = {
        "continue": finetune_continue,
        "classify": finetune_classify,
        "instruct": finetune_instruct,
    }[args.task]
    extra, classifier = run(args, model, tokenizer, config)
    if args.lora_rank is not None:
        print(f"adapter: {save_adapter(out_dir / ADAPTER_NAME, model)}")
    # a plain GPT again: `gptlib sample` and load_model read it
    model = merge_lora(model)
    path = save_checkpoint(
        out_dir / CHECKPOINT_NAME,
        model,
        step=config.max_steps,
        tokenizer=tokenizer,
        extra={"finetuned_from": str(source), "task": args.task, **extra},
    )
    print(f"checkpoint: {path}")
    # saved after the merge: the head belongs to the merged weights
    if classifier is not None:
        head_path = save_classifier_head(out_dir / HEAD_NAME, classifier, LABELS)
        print(f"classifier head: {head_path}")
    return 0


def trainable_as_asked(args: argparse.Namespace) -> Callable[[torch.nn.Module], None]:
    """Freeze blocks or add LoRA as the flags ask, and say how much is left to train."""

    def make_trainable(module: torch.nn.Module) -> None:
        gpt = getattr(module, "gpt", module)  # a classifier's GPT, or the GPT itself
        if args.lora_rank is not None:
            apply_lora(gpt, args.lora_rank, args.lora_alpha)
        elif args.trainable_blocks is not None:
            freeze_layers(gpt, args.trainable_blocks)
        trainable, total = count_parameters(module)
        share = trainable / total
        print(f"training {trainable:,} of {total:,} parameters ({share:.1%})")

    return make_trainable


def finetune_continue(
    args: argparse.Namespace, model: GPT, tokenizer: Tokenizer, config: TrainConfig
) -> tuple[dict, None]:
    losses = continue_pretraining(
        model, tokenizer, config, args.corpus, args.old_corpus, trainable_as_asked(args)
    )
    for name, (before, after) in losses.items():
        print(f"val loss on {name}: {before:.3f} -> {after:.3f}")
    before = {name: loss for name, (loss, _) in losses.items()}
    after = {name: loss for name, (_, loss) in losses.items()}
    return {"val_loss_before": before, "val_loss_after": after}, None


def finetune_classify(
    args: argparse.Namespace, model: GPT, tokenizer: Tokenizer, config: TrainConfig
) -> tuple[dict, GPTClassifier]:
    run = train_classifier(model, tokenizer, config, trainable_as_asked(args))
    before, after = run.before, run.after
    print(f"{run.n_examples:,} labelled lines {LABELS}: ", end="")
    print(f"{run.n_train:,} train, {run.n_test:,} test")
    print(
        f"test accuracy: {before.accuracy:.1%} -> {after.accuracy:.1%} "
        f"(always guessing the most common class: {after.majority_baseline:.1%})"
    )
    print("confusion (rows: true, columns: predicted):", after.confusion.tolist())
    scores = {"accuracy_before": before.accuracy, "accuracy_after": after.accuracy}
    return {"labels": list(LABELS), **scores}, run.classifier


def finetune_instruct(
    args: argparse.Namespace, model: GPT, tokenizer: Tokenizer, config: TrainConfig
) -> tuple[dict, None]:
    run = instruction_tune(model, tokenizer, config, trainable_as_asked(args))
    if run.skipped:
        print(f"skipping {run.skipped} questions: the tokenizer cannot encode them")
    (trained, held_out), (trained_after, held_out_after) = run.before, run.after
    print(
        f"exact answers, trained questions: {trained:.0%} -> {trained_after:.0%}; "
        f"held-out questions: {held_out:.0%} -> {held_out_after:.0%}"
    )
    for q, a in run.train_set[:2] + run.test_set[:2]:
        print(f"  {q} -> {respond(model, tokenizer, q)!r} (expected {a!r})")
    return {"exact_before": run.before, "exact_after": run.after}, None


def cmd_classify(args: argparse.Namespace) -> int:
    path = args.checkpoint
    model, tokenizer = load_model(path, get_device(args.device))
    classifier, labels = load_classifier_head(path.parent / HEAD_NAME, model)
    x, _ = encode_labelled(
        [(text, 0) for text in args.texts], tokenizer, model.config.block_size
    )
    with torch.no_grad():
        logits, _ = classifier(x.to(next(model.parameters()).device))
        probs = logits.softmax(dim=-1)  # (N, n_labels)
    for text, p in zip(args.texts, probs.tolist()):
        best = max(range(len(labels)), key=p.__getitem__)
        print(f"{labels[best]:<8} {p[best]:4.0%}  {text}")
    return 0


def check_export(args: argparse.Namespace) -> None:
    args.checkpoint = check_existing_checkpoint(args.checkpoint, "--checkpoint")
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not find_spec(m)]
    if missing:
        raise UsageError(
            f"exporting needs {', '.join(missing)}: pip install 'gptlib[web]'"
        )


def cmd_export(args: argparse.Namespace) -> int:
    from gptlib.export import export_for_web

    model, tokenizer = load_model(args.checkpoint, "cpu")
    if tokenizer is None:
        raise ValueError(f"{args.checkpoint} holds no tokenizer for the web page")
    done = export_for_web(model, tokenizer, args.onnx, args.attention)
    print(
        f"{done['model']}: {done['model_bytes'] / 1e6:.1f} MB, "
        f"{done['parameters']:,} parameters, up to {done['block_size']} tokens"
        + (", with attention weights" if done["attention"] else "")
    )
    print(
        f"onnxruntime's logits differ from PyTorch's by at most "
        f"{done['max_difference']:.1e}"
    )
    print(
        f"{done['tokenizer']}: {tokenizer.kind} tokenizer, vocab {tokenizer.vocab_size}"
    )
    return 0


def check_eval(args: argparse.Namespace) -> None:
    check_device(args)
    if not args.checkpoint and not args.pretrained:
        args.checkpoint = [None]  # the newest run in runs/
    args.checkpoint = [
        check_existing_checkpoint(path, "--checkpoint") for path in args.checkpoint
    ]
    check_corpus(args.corpus)
    if args.choices not in ("course", "hellaswag") and not Path(args.choices).is_file():
        raise UsageError(
            f"--choices {args.choices!r}: neither 'course', 'hellaswag' nor a file"
        )
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be 1 or more, got {args.limit}")
    if args.max_new_tokens < 1:
        raise UsageError(
            f"--max-new-tokens must be 1 or more, got {args.max_new_tokens}"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    device = get_device(args.device)
    models: dict[str, tuple[GPT, Tokenizer]] = {}
    for path in args.checkpoint:
        model, tokenizer = load_model(path, device)
        if tokenizer is None:
            raise ValueError(f"{path} holds no tokenizer to encode the text with")
        # a run's checkpoint is named after its folder (runs/tiny -> tiny)
        name = path.parent.name if path.name == CHECKPOINT_NAME else path.name
        models[name if name not in models else str(path)] = model, tokenizer
    for name in args.pretrained:
        model, tokenizer = load_pretrained(name)
        models[name] = model.to(device), tokenizer
    text = load_corpus(args.corpus)
    held_out = text[int(len(text) * 0.9) :]
    if args.choices == "course":  # in the language of --corpus, when it has one
        lang = {"course-en": "en", "course-zh": "zh"}.get(args.corpus)
        items = course_choices(lang, n=args.limit or 100)
    else:
        path = fetch_hellaswag() if args.choices == "hellaswag" else args.choices
        items = read_choices(path, args.limit)
    results: dict[str, Any] = {"corpus": args.corpus, "choices": args.choices}
    print(
        f"held-out text: the last tenth of {args.corpus}, {len(held_out):,} "
        f"characters; choices: {args.choices}, {len(items)} items"
    )
    header = f"{'model':<20} {'loss':>6} {'ppl':>8} {'bits/byte':>9} {'acc':>6} "
    print(header + f"{'acc_norm':>8}")
    for name, (model, tokenizer) in models.items():
        seed_everything(args.seed or 0)
        scored = score_text(model, tokenizer, held_out, progress=True)
        chosen = score_choices(model, tokenizer, items, progress=True)
        results.setdefault("models", {})[name] = {
            "text": scored.to_dict(),
            "choices": chosen,
        }
        print(
            f"{name[-20:]:<20} {scored.loss:>6.3f} {scored.perplexity:>8.2f} "
            f"{scored.bits_per_byte:>9.3f} {chosen['accuracy']:>6.1%} "
            f"{chosen['accuracy_norm']:>8.1%}"
        )
    print(f"(guessing scores {chosen['chance']:.1%} on these items)\n")
    prompts = args.prompt or list(BOARD_PROMPTS)
    board = sample_board(models, prompts, args.max_new_tokens, seed=args.seed or 0)
    print(board)
    if args.out is not None:
        write_json(args.out, results)
        print(f"results: {args.out}")
    return 0


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON, atomically: a full disk leaves any old file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def check_bench(args: argparse.Namespace) -> None:
    args.device = str(check_device(args))
    from gptlib.benchmark import settings_for

    try:
        settings_for(args.device, args.only)  # a bad --only fails before any work
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.max_context < 64:
        raise UsageError(f"--max-context must be 64 or more, got {args.max_context}")
    for flag in ("batch_size", "steps", "repeats"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(
                f"--{flag.replace('_', '-')} must be 1 or more, got {value}"
            )


def cmd_bench(args: argparse.Namespace) -> int:
    from gptlib import benchmark  # its imports are only needed here

    default_preset, default_batch = benchmark.train_defaults(args.device)
    batch_size = args.batch_size or default_batch
    progress = lambda line: print(line, file=sys.stderr)  # noqa: E731
    if args.what == "train":
        settings = benchmark.settings_for(args.device, args.only)
        preset = args.preset or default_preset
        rows = benchmark.bench_train(
            settings, preset, batch_size, args.steps, 5, args.repeats, args.device,
            progress,
        )  # fmt: skip
        print(f"{preset} preset, batch {batch_size}, on {args.device}:")
        print(benchmark.train_table(rows))
    elif args.what == "generate":
        rows = benchmark.bench_generate(
            args.preset or "small", benchmark.contexts_up_to(args.max_context),
            repeats=args.repeats,
            device=args.device, progress=progress,
        )  # fmt: skip
        print(benchmark.generate_table(rows))
    else:
        shares = benchmark.profile_training_step(args.preset or "tiny", batch_size)
        print(benchmark.profile_table(shares))
    return 0


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    # command: (check its flags, do the work)
    "train": (check_train, cmd_train),
    "prepare": (check_prepare, cmd_prepare),
    "sample": (check_sample, cmd_sample),
    "finetune": (check_finetune, cmd_finetune),
    "classify": (check_classify, cmd_classify),
    "eval": (check_eval, cmd_eval),
    "export": (check_export, cmd_export),
    "bench": (check_bench, cmd_bench),
}
# what a user can cause and fix: one line, no traceback
USER_ERRORS = (
    ValueError,  # UsageError, CheckpointError, UnknownCharacterError among them
    OSError,  # FileNotFoundError, a full disk, permissions
    NonFiniteLossError,
    DeviceError,
)

# a damaged file found while checking the flags is a failure (1), not a usage error (2)
BAD_FILES = (CheckpointError, TokenFileError, OSError)


def report(args: argparse.Namespace, error: BaseException | str, status: int) -> int:
    """One line on stderr: `gptlib COMMAND: error: ...`, and the exit status."""
    message = " ".join(str(error).split())  # one line, whatever the message held
    # under torchrun, which of the processes failed
    rank = f" (rank {os.environ['RANK']})" if world_size() > 1 else ""
    print(f"gptlib {args.command}{rank}: error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)  # a malformed flag exits here with 2
    args.argv = argv
    check, work = COMMANDS[args.command]
    try:
        try:
            check(args)
        except BAD_FILES:
            raise  # the flags are right, the file they name is not: status 1
        except USER_ERRORS as e:
            if args.debug:
                raise
            return report(args, e, EXIT_USAGE)
        return work(args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        return report(args, e, EXIT_FAILURE)
    except KeyboardInterrupt:
        print(f"\ngptlib {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug of gptlib's, or a case it does not handle yet
        if args.debug:
            raise
        if world_size() > 1:  # a process whose partner failed first fails this way
            hint = "if another process of the run failed first, its error is the cause"
        else:
            hint = "run again with --debug for the traceback, and please report it"
        return report(
            args, f"unexpected {type(e).__name__}: {e} ({hint})", EXIT_FAILURE
        )
