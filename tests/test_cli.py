import subprocess
import sys

import pytest
import torch

from gptlib.checkpoint import load_checkpoint
from gptlib.cli import main


def cli(*parts: str) -> int:
    """`gptlib PARTS...` in this process: the exit code."""
    return main(" ".join(parts).split())


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "gptlib", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "sample" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--preset" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "huge"], "invalid choice: 'huge'"),
        (["train", "--steps", "many"], "invalid int value"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_bad_values_give_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "nano", "--steps", "0", "--no-progress"]) == 2
    assert "max_steps must be >= 1" in capsys.readouterr().err
    assert main(["train", "--corpus", "nope", "--no-progress"]) == 2
    assert "--corpus 'nope': neither a corpus name" in capsys.readouterr().err
    assert main(["sample"]) == 2
    assert "no checkpoint in runs" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    assert main(["sample", "--checkpoint", "bad.safetensors"]) == 1  # found, unreadable
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_train_then_sample_end_to_end(tmp_path):
    train = "train --preset nano --steps 40 --eval-interval 20 --no-progress"
    done = run_cli(*train.split(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "model nano" in done.stdout and "val loss" in done.stdout
    assert (tmp_path / "runs" / "nano" / "checkpoint.safetensors").exists()
    sample = ["sample", "--seed", "3", "--max-new-tokens", "50", "--prompt", "The "]
    a, b = (run_cli(*sample, cwd=tmp_path) for _ in range(2))  # the same seed twice
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("The ") and len(a.stdout) > 40
    assert "sampling from runs/nano/checkpoint.safetensors" in a.stderr


def test_prepare_then_train_from_token_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        cli("prepare --corpus course-en --tokenizer bpe --vocab-size 300", "--out toks")
        == 0
    )
    assert "train and" in capsys.readouterr().out
    assert cli("train --preset nano --data toks --steps 5 --no-progress") == 0
    out = capsys.readouterr().out
    assert "token files toks" in out and "bpe tokenizer, vocab 300" in out


def test_prepare_shards_with_gpt2s_tokenizer_then_train(tmp_path, capsys, monkeypatch):
    """A JSON lines corpus, GPT-2-format tokenizer files, two worker processes."""
    import json

    from gpt2_fixture import write_gpt2_tokenizer

    monkeypatch.chdir(tmp_path)
    write_gpt2_tokenizer(tmp_path / "gpt2")
    from gptlib.data import course_sections

    with open("corpus.jsonl", "w", encoding="utf-8") as f:
        for section in course_sections() + [""]:
            f.write(json.dumps({"text": section}) + "\n")
    flags = "--tokenizer gpt2 --shard-tokens 30000 --workers 2 --no-progress"
    assert cli("prepare --corpus corpus.jsonl --out shards", flags) == 0
    out = capsys.readouterr().out
    assert "train: 204 documents" in out and "val: 24 documents" in out
    assert "229 documents read (1 empty, skipped), uint16 ids, vocab 1000" in out
    assert cli("train --preset nano --data shards --steps 3 --no-progress") == 0
    assert "token files shards" in capsys.readouterr().out


def test_an_interrupted_prepare_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    import gptlib.cli

    monkeypatch.chdir(tmp_path)
    real, readings = gptlib.cli.read_documents, []

    def interrupted(*args):  # the tokenizer learns from a first reading in full
        readings.append(args)
        for number, text in enumerate(real(*args)):
            if number == 150 and len(readings) == 2:  # Ctrl-C while tokenizing
                raise KeyboardInterrupt
            yield text

    line = "prepare --corpus course --shard-tokens 20000 --workers 1 --out sh"
    monkeypatch.setattr(gptlib.cli, "read_documents", interrupted)
    assert cli(line, "--no-progress") == 130
    err = capsys.readouterr().err
    assert err.strip().endswith(
        "go on with: gptlib prepare --corpus course --shard-tokens 20000 "
        "--workers 1 --out sh --no-progress --resume"
    ), err
    monkeypatch.setattr(gptlib.cli, "read_documents", real)
    assert cli(line, "--no-progress --resume") == 0
    assert "228 documents read" in capsys.readouterr().out


def test_resume_in_a_new_process_is_bit_exact(tmp_path):
    """Train N steps in one process; versus N/2, stop, a new process resumes for N/2."""
    from gptlib.checkpoint import load_checkpoint

    common = (
        "train --preset nano --corpus course-en --steps 60 "
        "--eval-interval 20 --no-progress"
    ).split()
    straight = run_cli(*common, "--out", "a", cwd=tmp_path)
    first = run_cli(*common, "--out", "b", "--stop-at", "30", cwd=tmp_path)
    second = run_cli(*common, "--out", "b", "--resume", cwd=tmp_path)
    for done in (straight, first, second):
        assert done.returncode == 0, done.stderr
    assert "stopped at step 30" in first.stdout
    a = load_checkpoint(tmp_path / "a" / "checkpoint.safetensors")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.safetensors")
    assert a.step == b.step == 60
    for name, tensor in a.model_state.items():
        assert torch.equal(tensor, b.model_state[name]), name

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [line for line in lines if "val_loss" in line]

    assert losses("a") == losses("b")


def test_train_help_lists_every_model_and_training_setting(capsys):
    """The flags are made from GPTConfig and TrainConfig: a new field is a new flag,
    with its comment as help."""
    from dataclasses import fields

    from gptlib.model import GPTConfig
    from gptlib.training import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for f in fields(GPTConfig) + fields(TrainConfig):
        if f.name != "vocab_size":  # the tokenizer's
            assert f"--{f.name.replace('_', '-')}" in out, f.name
    assert (
        "--steps" in out
        and "--lr" in out
        and "--no-compile" in out
        and "{auto,float32,bfloat16,float16}" in out
    )
    assert (
        "micro-batches per step: batch_size * this sequences" in out
    )  # help from the field's comment
    assert "Transformer blocks (default: the preset's)" in out


@pytest.mark.slow
def test_every_setting_reaches_the_run(tmp_path):
    """bfloat16 autocast, gradient accumulation, torch.compile and a model shape, all
    from flags, on the CPU."""
    done = run_cli(
        "train",
        "--preset",
        "nano",
        "--corpus",
        "course-en",
        "--steps",
        "4",
        "--eval-interval",
        "2",
        "--dtype",
        "bfloat16",
        "--grad-accum-steps",
        "2",
        "--compile",
        "--n-layer",
        "1",
        "--n-embd",
        "32",
        "--n-head",
        "2",
        "--dropout",
        "0.1",
        "--warmup-steps",
        "1",
        "--weight-decay",
        "0.05",
        "--no-progress",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "runs" / "nano" / "checkpoint.safetensors")
    assert (
        ckpt.config.n_layer,
        ckpt.config.n_embd,
        ckpt.config.n_head,
        ckpt.config.dropout,
    ) == (1, 32, 2, 0.1)
    settings = ckpt.extra["train_config"]
    assert (settings["dtype"], settings["grad_accum_steps"], settings["compile"]) == (
        "bfloat16",
        2,
        True,
    )
    assert (
        settings["max_steps"],
        settings["warmup_steps"],
        settings["weight_decay"],
    ) == (4, 1, 0.05)
    assert (
        settings["batch_size"] == 16 and settings["learning_rate"] == 3e-3
    )  # the rest: the nano preset's
    assert not any(
        "_orig_mod" in name for name in ckpt.model_state
    )  # the plain model was saved
