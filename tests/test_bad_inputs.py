"""Bad inputs, as readers make them: every one ends in one clear line, the right exit
status, and loses nothing.

The command-line table runs each case in a folder that holds real runs, token files and
broken files of every kind, and checks: the exit status (2: a flag that cannot work,
checked before any work; 1: a failure while working), that stderr is exactly one line
`gptlib COMMAND: error: ...` with the expected words and no traceback, and that every
file in the folder is byte-identical afterwards (and no file was added). The library
table checks that each public function raises its documented error type, with words
that name the problem.
"""

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2Config

from gptlib import (
    GPT,
    CharTokenizer,
    CheckpointError,
    DeviceError,
    TokenFileError,
    TrainConfig,
    UnknownCharacterError,
    UnknownPatternError,
    generate,
    get_batch,
    get_device,
    load_checkpoint,
    load_corpus,
    load_model,
    load_token_files,
    prepare_token_files,
    preset_config,
    sample_next,
    save_checkpoint,
    tokenizer_from_dict,
    train_val_split,
)
from gptlib.cli import COMMANDS, main
from gptlib.finetuning import exact_match, instruction_tune
from gptlib.pretrained import config_from_hf

NANO = "--preset nano --steps 3 --eval-interval 3 --no-progress"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder as a reader's would look after a few commands, plus broken files."""
    root = tmp_path_factory.mktemp("world")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        assert main(f"train {NANO} --corpus course-en --out runs/nano".split()) == 0
        assert main("prepare --corpus course-en --out toks".split()) == 0
        Path("abc.txt").write_text("abcab cabc " * 500, encoding="utf-8")
        assert main(f"train {NANO} --corpus abc.txt --out runs/abc".split()) == 0
    finally:
        os.chdir(cwd)
    good = root / "runs" / "nano" / "checkpoint.safetensors"
    ckpt = load_checkpoint(good)
    model = ckpt.build_model()
    # what `gptlib finetune` writes: weights and tokenizer, no optimizer state
    save_checkpoint(
        root / "runs" / "finetuned" / "checkpoint.safetensors",
        model,
        step=3,
        tokenizer=ckpt.tokenizer,
    )
    (root / "garbage.safetensors").write_bytes(bytes(range(256)) * 4)
    data = good.read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(2)}, root / "pickle.pt")
    save_file({"x": torch.zeros(2)}, str(root / "foreign.safetensors"))
    (root / "empty.txt").write_text("", encoding="utf-8")
    (root / "a-file").write_text("not a folder", encoding="utf-8")
    # checkpoints whose metadata lies about the tensors or the tokenizer
    config = json.loads(metadata_of(good)["config"])
    tokenizer = json.loads(metadata_of(good)["tokenizer"])
    state = json.loads(metadata_of(good)["train_state"])
    redos = {"type": "bpe", "version": 1, "pattern": "(a|a)+$|[\\s\\S]", "merges": []}
    redos["special_tokens"] = []
    broken = {
        "wide": {"config": {**config, "n_embd": config["n_embd"] * 2}},
        "bigtok": {
            "tokenizer": {**tokenizer, "chars": tokenizer["chars"] + ["\u2603"] * 5}
        },
        "redos": {"tokenizer": redos},
        "nostep": {"train_state": {k: v for k, v in state.items() if k != "step"}},
        "norng": {"train_state": {k: v for k, v in state.items() if k != "rng"}},
    }
    for name, changes in broken.items():
        rewrite_metadata(good, root / "runs" / name / "checkpoint.safetensors", changes)
    # token folders, each broken in one way
    shutil.copytree(root / "toks", root / "toks-dtype")
    ids = np.fromfile(root / "toks" / "train.bin", dtype=np.uint16)
    ids.astype(np.int64).tofile(root / "toks-dtype" / "train.bin")
    shutil.copytree(root / "toks", root / "toks-edited")
    edited = ids.copy()
    edited[0] = (edited[0] + 1) % 50
    edited.tofile(root / "toks-edited" / "train.bin")
    shutil.copytree(root / "toks", root / "toks-bigid")
    record = json.loads((root / "toks" / "tokens.json").read_text())
    big = ids.copy()
    big[0] = record["vocab_size"]  # an id the model has no embedding for
    big.tofile(root / "toks-bigid" / "train.bin")
    record["train"]["sha256"] = hashlib.sha256(big.tobytes()).hexdigest()
    (root / "toks-bigid" / "tokens.json").write_text(json.dumps(record))
    shutil.copytree(root / "toks", root / "toks-notok")
    tok = json.loads((root / "toks" / "tokenizer.json").read_text())
    del tok["chars"]
    (root / "toks-notok" / "tokenizer.json").write_text(json.dumps(tok))
    (root / "bad-utf8.txt").write_bytes(b"fine\n\nnot \xff fine\n")
    shards = "prepare --corpus course-en --shard-tokens 20000 --workers 1 --no-progress"
    assert main(f"{shards} --out {root / 'shards'}".split()) == 0
    shutil.copytree(root / "shards", root / "shards-unfinished")
    index = json.loads((root / "shards" / "index.json").read_text())
    index["complete"] = False
    (root / "shards-unfinished" / "index.json").write_text(json.dumps(index))
    shutil.copytree(root / "toks", root / "toks-norecord")
    (root / "toks-norecord" / "tokens.json").unlink()
    with torch.no_grad():  # a checkpoint whose weights are NaN
        model.lm_head.weight.fill_(math.nan)
    save_checkpoint(
        root / "runs" / "nan" / "checkpoint.safetensors",
        model,
        step=3,
        tokenizer=ckpt.tokenizer,
    )
    return root


def metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def rewrite_metadata(src: Path, dst: Path, changes: dict) -> None:
    """A copy of checkpoint `src` whose metadata fields are replaced by `changes`."""
    metadata = metadata_of(src) | {k: json.dumps(v) for k, v in changes.items()}
    dst.parent.mkdir(parents=True)
    save_file(load_file(str(src)), str(dst), metadata=metadata)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# (command line, exit status, words the error line must contain)
CLI_CASES = [
    # devices
    ("train --device foo", 2, "unknown device 'foo'"),
    ("train --device cuda", 2, "CUDA is not available"),
    ("train --device cuda:1", 2, "CUDA is not available"),
    ("train --device mps", 2, "MPS is not available"),
    ("train --device meta", 2, "not one gptlib trains on"),
    ("sample --checkpoint runs/nano --device foo", 2, "unknown device"),
    ("finetune --from runs/nano --task continue --device cuda", 2, "CUDA"),
    ("classify --checkpoint runs/nano --device foo x", 2, "unknown device"),
    ("bench train --device foo", 2, "unknown device 'foo'"),
    # numbers that cannot work
    ("bench train --steps 0", 2, "--steps must be 1 or more"),
    ("bench generate --repeats -1", 2, "--repeats must be 1 or more"),
    ("bench generate --max-context 32", 2, "--max-context must be 64 or more"),
    ("bench train --only quantum", 2, "--only 'quantum' matches none of"),
    # where a run goes: never over another run
    (f"train {NANO} --out runs/nano", 2, "already holds a run"),
    (f"train {NANO} --out runs/nano --resume --force", 2, "choose one"),
    (f"train {NANO} --out runs/none --resume", 2, "no checkpoint at runs/none"),
    (f"train {NANO} --out runs/finetuned --resume", 2, "holds no optimizer state"),
    (f"train {NANO} --corpus abc.txt --out runs/abc --resume --lr 0.5", 2, "lr"),
    (f"train {NANO} --corpus abc.txt --out runs/abc --resume --steps 5", 2, "3 -> 5"),
    (f"train {NANO} --out runs/nostep --resume", 1, "step"),
    (f"train {NANO} --out runs/norng --resume", 1, "rng"),
    # the schedule
    (f"train {NANO} --out runs/new --stop-at 0", 2, "--stop-at must be"),
    (f"train {NANO} --out runs/new --stop-at -3", 2, "--stop-at must be"),
    (f"train {NANO} --out runs/new --stop-at 4", 2, "from 1 to 3"),
    ("train --preset nano --steps 0 --out runs/new", 2, "max_steps must be >= 1"),
    ("train --preset nano --batch-size 0 --out runs/new", 2, "batch_size"),
    ("train --preset nano --n-head 3 --out runs/new", 2, "n_embd"),
    # data
    (f"train {NANO} --corpus nope --out runs/new", 2, "--corpus 'nope'"),
    (f"train {NANO} --data missing --out runs/new", 2, "--data: no folder missing"),
    (f"train {NANO} --data a-file --out runs/new", 2, "--data: no folder a-file"),
    (f"train {NANO} --data toks-dtype --out runs/new", 1, "bytes, not the"),
    (f"train {NANO} --data toks-edited --out runs/new", 1, "changed after"),
    (f"train {NANO} --data toks-bigid --out runs/new", 1, "holds token id"),
    (f"train {NANO} --data toks-notok --out runs/new", 1, "chars"),
    (f"train {NANO} --data toks-norecord --out runs/new", 1, "tokens.json is missing"),
    (f"train {NANO} --corpus empty.txt --out runs/new", 1, "empty.txt is empty"),
    (f"train {NANO} --corpus pickle.pt --out runs/new", 1, "not UTF-8 text"),
    ("prepare --corpus nope --out toks2", 2, "--corpus 'nope'"),
    ("prepare --corpus empty.txt --out toks2", 1, "empty.txt is empty"),
    ("prepare --val-fraction 0 --out toks2", 2, "--val-fraction"),
    ("prepare --val-fraction 1.5 --out toks2", 2, "--val-fraction"),
    ("prepare --val-fraction -0.1 --out toks2", 2, "--val-fraction"),
    ("prepare --tokenizer nope --out toks2", 2, "--tokenizer 'nope'"),
    ("prepare --resume --out toks2", 2, "give --shard-tokens"),
    ("prepare --shard-tokens 0 --out sh2", 2, "--shard-tokens must be 1 or more"),
    ("prepare --shard-tokens 9 --workers 0 --out sh2", 2, "--workers must be 1"),
    ("prepare --shard-tokens 9 --out shards", 2, "already holds shards"),
    ("prepare --corpus nope.jsonl --shard-tokens 9 --out sh2", 1, "no corpus nope"),
    ("prepare --corpus bad-utf8.txt --shard-tokens 9 --out sh2", 1, "line 3: not UTF"),
    ("prepare --shard-tokens 9 --resume --out sh2", 1, "holds no index.json"),
    (
        "prepare --corpus course-en --shard-tokens 999 --resume --out shards",
        1,
        "other settings (shard_tokens 20000 -> 999)",
    ),
    (f"train {NANO} --data shards-unfinished --out runs/new", 1, "is unfinished"),
    # sampling
    ("sample --checkpoint nope", 2, "no checkpoint at nope"),
    ("sample --checkpoint runs/none", 2, "no checkpoint at runs/none"),
    ("sample --checkpoint runs/nano --max-new-tokens -5", 2, "--max-new-tokens"),
    ("sample --checkpoint runs/nano --max-new-tokens 0", 2, "--max-new-tokens"),
    ("sample --checkpoint runs/nano --temperature nan", 2, "--temperature"),
    ("sample --checkpoint runs/nano --temperature -1", 2, "--temperature"),
    ("sample --checkpoint runs/nano --top-k 0", 2, "--top-k"),
    ("sample --checkpoint runs/nano --top-p 0", 2, "--top-p"),
    ("sample --checkpoint runs/nano --top-p 1.5", 2, "--top-p"),
    ("sample --checkpoint garbage.safetensors", 1, "not a readable checkpoint"),
    ("sample --checkpoint truncated.safetensors", 1, "not a readable checkpoint"),
    ("sample --checkpoint pickle.pt", 1, "pickle"),
    ("sample --checkpoint foreign.safetensors", 1, "not a gptlib checkpoint"),
    ("sample --checkpoint runs/nan", 1, "NaN"),
    ("sample --checkpoint runs/wide", 1, "n_embd"),
    ("sample --checkpoint runs/bigtok", 1, "vocab"),
    ("sample --checkpoint runs/redos", 1, "pattern"),
    ("sample --checkpoint runs/abc --prompt xyz", 1, "'x'"),
    # fine-tuning
    ("finetune --from nope --task continue", 2, "no checkpoint at nope"),
    ("finetune --from runs/nano --task continue --lora-rank 0", 2, "--lora-rank"),
    (
        "finetune --from runs/nano --task continue --lora-rank 2 --trainable-blocks 1",
        2,
        "not both",
    ),
    ("finetune --from runs/nano --task continue --trainable-blocks -1", 2, "blocks"),
    (
        "finetune --from runs/nano --task continue --lora-rank 2 --lora-alpha nan",
        2,
        "--lora-alpha",
    ),
    ("finetune --from runs/nano --task continue --corpus nope", 2, "--corpus 'nope'"),
    ("finetune --from runs/nano --task classify --steps 0", 2, "max_steps"),
    ("finetune --from runs/nano --task continue --out runs/nano", 2, "--force"),
    ("finetune --from garbage.safetensors --task continue", 1, "not a readable"),
    ("finetune --from runs/abc --task instruct --steps 1", 1, "glossary"),
    ("finetune --from runs/abc --task classify --steps 1", 1, "encode"),
    # classifying
    ("classify --checkpoint nope x", 2, "no checkpoint at nope"),
    ("classify --checkpoint runs/nano x", 2, "no classifier head"),
    # evaluating, and GPT-2 from a folder
    ("eval --checkpoint nope", 2, "no checkpoint at nope"),
    ("eval --checkpoint runs/nano --device foo", 2, "unknown device"),
    ("eval --checkpoint runs/nano --corpus nope", 2, "--corpus 'nope'"),
    ("eval --checkpoint runs/nano --choices nope.jsonl", 2, "neither 'course'"),
    ("eval --checkpoint runs/nano --limit 0", 2, "--limit must be 1 or more"),
    ("eval --checkpoint runs/nano --max-new-tokens 0", 2, "--max-new-tokens"),
    ("eval --checkpoint garbage.safetensors", 1, "not a readable checkpoint"),
    ("eval --checkpoint runs/nano --choices abc.txt", 1, "not a multiple-choice"),
    ("eval --checkpoint runs/abc --corpus course-en", 1, "not in the vocabulary"),
    ("sample --pretrained runs/nano", 1, "lacks config.json"),
    # exporting for the browser
    ("export --onnx web --checkpoint nope", 2, "no checkpoint at nope"),
    ("export --onnx web --checkpoint garbage.safetensors", 1, "not a readable"),
]


@pytest.mark.parametrize(
    "line, status, words", CLI_CASES, ids=[case[0] for case in CLI_CASES]
)
def test_command_line(world, monkeypatch, capsys, line, status, words):
    monkeypatch.chdir(world)
    monkeypatch.delenv("GPTLIB_DEVICE", raising=False)
    before = snapshot(world)
    assert main(line.split()) == status
    out, err = capsys.readouterr()
    if status == 2:  # flags are checked before any work or output
        assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    command = line.split()[0]
    assert lines[0].startswith(f"gptlib {command}: error: "), err
    assert words in lines[0], err
    assert "Traceback" not in err
    assert snapshot(world) == before, "files changed"


def test_device_from_the_environment(world, monkeypatch, capsys):
    monkeypatch.chdir(world)
    monkeypatch.setenv("GPTLIB_DEVICE", "bogus")
    assert main(["sample", "--checkpoint", "runs/nano"]) == 2
    assert "unknown device 'bogus' (from $GPTLIB_DEVICE)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line, words",
    [
        ("train --preset huge", "invalid choice: 'huge'"),
        ("train --steps many", "invalid int value"),
        ("frobnicate", "invalid choice"),
        ("sample --top-k", "expected one argument"),
    ],
)
def test_malformed_flags_exit_2_with_usage(capsys, line, words):
    with pytest.raises(SystemExit) as e:
        main(line.split())
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_debug_shows_the_traceback(world, monkeypatch):
    monkeypatch.chdir(world)
    with pytest.raises(CheckpointError):
        main(["sample", "--checkpoint", "garbage.safetensors", "--debug"])


def test_a_stopped_run_prints_the_complete_resume_command(
    world, monkeypatch, capsys, tmp_path
):
    monkeypatch.chdir(tmp_path)
    line = "train --preset nano --corpus course-en --steps 6 --lr 0.01 --no-progress"
    assert main(f"{line} --stop-at 3".split()) == 0
    printed = capsys.readouterr().out
    resume = printed.split("resume with: ")[1].splitlines()[0]
    assert resume == f"gptlib {line} --out runs/nano --resume"
    assert main(resume.split()[1:]) == 0
    assert load_checkpoint("runs/nano/checkpoint.safetensors").step == 6


# --- the library ----------------------------------------------------------------------


def nano() -> GPT:
    torch.manual_seed(0)
    return GPT(preset_config("nano", vocab_size=3))


CHARS = CharTokenizer.train("abc")
DATA = torch.arange(10) % 3
NAN = math.nan
REDOS = {"type": "bpe", "version": 1, "pattern": "(a|a)+$", "merges": []}
HF_VARIANTS = {"scale_attn_weights": False, "scale_attn_by_inverse_layer_idx": True}

# (name, call taking the world folder, error type, words its message must contain)
LIBRARY_CASES = [
    ("device foo", lambda w: get_device("foo"), DeviceError, "unknown device"),
    ("device cuda", lambda w: get_device("cuda"), DeviceError, "CUDA"),
    ("device meta", lambda w: get_device("meta"), DeviceError, "meta"),
    (
        "garbage checkpoint",
        lambda w: load_checkpoint(w / "garbage.safetensors"),
        CheckpointError,
        "garbage.safetensors",
    ),
    (
        "truncated checkpoint",
        lambda w: load_checkpoint(w / "truncated.safetensors"),
        CheckpointError,
        "truncated.safetensors",
    ),
    (
        "missing checkpoint",
        lambda w: load_checkpoint(w / "missing.safetensors"),
        FileNotFoundError,
        "missing.safetensors",
    ),
    (
        "pickle",
        lambda w: load_checkpoint(w / "pickle.pt"),
        CheckpointError,
        "pickle",
    ),
    (
        "foreign safetensors",
        lambda w: load_checkpoint(w / "foreign.safetensors"),
        CheckpointError,
        "not a gptlib checkpoint",
    ),
    (
        "config vs tensors",
        lambda w: load_checkpoint(w / "runs/wide/checkpoint.safetensors"),
        CheckpointError,
        "n_embd",
    ),
    (
        "tokenizer larger than model",
        lambda w: load_checkpoint(w / "runs/bigtok/checkpoint.safetensors"),
        CheckpointError,
        "vocab",
    ),
    (
        "no step",
        lambda w: load_checkpoint(w / "runs/nostep/checkpoint.safetensors"),
        CheckpointError,
        "step",
    ),
    (
        "crafted pattern",
        lambda w: tokenizer_from_dict(REDOS | {"special_tokens": []}),
        UnknownPatternError,
        "pattern",
    ),
    (
        "token files of another dtype",
        lambda w: load_token_files(w / "toks-dtype"),
        TokenFileError,
        "bytes",
    ),
    (
        "token files without record",
        lambda w: load_token_files(w / "toks-norecord"),
        FileNotFoundError,
        "gptlib prepare",
    ),
    (
        "prepare an empty corpus",
        lambda w: prepare_token_files("", CHARS, w / "new-toks"),
        ValueError,
        "empty",
    ),
    (
        "prepare val_fraction 1",
        lambda w: prepare_token_files("abcabc", CHARS, w / "new-toks", 1.0),
        ValueError,
        "val_fraction",
    ),
    ("unknown corpus", lambda w: load_corpus("nope"), ValueError, "unknown corpus"),
    ("unknown preset", lambda w: preset_config("huge"), ValueError, "unknown preset"),
    (
        "heads do not divide",
        lambda w: preset_config("nano", n_head=3),
        ValueError,
        "n_embd",
    ),
    (
        "vocab_size 0",
        lambda w: GPT(preset_config("nano", vocab_size=0)),
        ValueError,
        "vocab_size",
    ),
    ("max_steps 0", lambda w: TrainConfig(max_steps=0), ValueError, "max_steps"),
    ("lr NaN", lambda w: TrainConfig(learning_rate=NAN), ValueError, "learning_rate"),
    ("grad_clip NaN", lambda w: TrainConfig(grad_clip=NAN), ValueError, "grad_clip"),
    ("beta2 1", lambda w: TrainConfig(beta2=1.0), ValueError, "beta2"),
    ("dtype", lambda w: TrainConfig(dtype="fp8"), ValueError, "dtype"),
    (
        "val_fraction 0",
        lambda w: train_val_split(DATA, 0.0),
        ValueError,
        "val_fraction",
    ),
    ("batch window", lambda w: get_batch(DATA, 2, 10), ValueError, "block_size"),
    ("unknown char", lambda w: CHARS.encode("abd"), UnknownCharacterError, "'d'"),
    (
        "tokenizer field missing",
        lambda w: tokenizer_from_dict({"type": "char", "version": 1}),
        KeyError,
        "chars",
    ),
    (
        "max_new_tokens -1",
        lambda w: generate(nano(), CHARS, "ab", max_new_tokens=-1),
        ValueError,
        "max_new_tokens",
    ),
    (
        "temperature NaN",
        lambda w: generate(nano(), CHARS, "ab", 3, temperature=NAN),
        ValueError,
        "temperature",
    ),
    (
        "top_k 0",
        lambda w: sample_next(torch.zeros(1, 3), top_k=0),
        ValueError,
        "top_k",
    ),
    (
        "top_p 2",
        lambda w: sample_next(torch.zeros(1, 3), top_p=2.0),
        ValueError,
        "top_p",
    ),
    (
        "NaN weights",
        lambda w: generate(
            load_model(w / "runs/nan/checkpoint.safetensors")[0], CHARS, "ab", 3
        ),
        ValueError,
        "NaN",
    ),
    (
        "HF attention variants",
        lambda w: config_from_hf(GPT2Config(**HF_VARIANTS)),
        ValueError,
        "scale_attn",
    ),
    (
        "no glossary question encodes",
        lambda w: instruction_tune(nano(), CHARS, TrainConfig(max_steps=1)),
        ValueError,
        "glossary",
    ),
    (
        "score no pairs",
        lambda w: exact_match(nano(), CHARS, []),
        ValueError,
        "no pairs",
    ),
]


@pytest.mark.parametrize(
    "call, error, words",
    [c[1:] for c in LIBRARY_CASES],
    ids=[c[0] for c in LIBRARY_CASES],
)
def test_library(world, call, error, words):
    before = snapshot(world)
    with pytest.raises(error) as e:
        call(world)
    assert words in str(e.value)
    assert snapshot(world) == before, "files changed"


def test_the_tables_are_large_enough():
    # the bar: 60 bad inputs, across every command and the public functions
    assert len(CLI_CASES) + len(LIBRARY_CASES) >= 60
    assert {line.split()[0] for line, *_ in CLI_CASES} == set(COMMANDS)


def test_world_is_what_the_cases_expect(world):
    # the cases above rely on these; a broken fixture would make them pass vacuously
    assert (world / "runs" / "nano" / "checkpoint.safetensors").is_file()
    assert (world / "toks" / "train.bin").is_file()
    ckpt = load_checkpoint(world / "runs" / "finetuned" / "checkpoint.safetensors")
    assert ckpt.optimizer_state is None
