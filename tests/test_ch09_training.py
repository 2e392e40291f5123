"""Chapter 09 (Training): the page's own code and the promises it makes that
tests/test_training.py and tests/test_data.py do not already check.

* the overfit-one-batch check (snippets/ch09_training.py) memorises a batch, and fails
  when learning is broken;
* the throughput helper counts tokens as the exercise says;
* estimate_loss measures in eval mode, records no gradients and restores the mode;
* train_step returns the norm before clipping and clips to grad_clip (0: no clipping);
* lr_at without warm-up, and after max_steps;
* training from memory-mapped token files gives the same run as from tensors;
* benchmarks/train_shakespeare.py runs end to end (when Tiny Shakespeare is at hand).
"""

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import ch09_training
import numpy as np
import pytest
import torch
from ch09_training import overfit_one_batch, tokens_per_second

from gptlib import GPT, GPTConfig, TrainConfig, estimate_loss, get_batch, lr_at, train
from gptlib.data import load_token_files, prepare_token_files
from gptlib.tokenizer import CharTokenizer
from gptlib.training import configure_optimizer, train_step

ROOT = Path(__file__).resolve().parent.parent

CFG = GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32)


def random_data(n: int = 2000, vocab: int = 16) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(0))


def test_overfit_one_batch_memorises_and_fails_when_learning_is_broken():
    torch.manual_seed(0)
    x, y = get_batch(
        random_data(),
        batch_size=4,
        block_size=16,
        generator=torch.Generator().manual_seed(1),
    )
    losses = overfit_one_batch(GPT(CFG), x, y, steps=150, lr=1e-2)
    assert len(losses) == 150
    assert losses[0] == pytest.approx(
        math.log(16), abs=0.3
    )  # a fresh model guesses uniformly
    assert losses[-1] < 0.1  # random tokens, yet one batch can be learned by heart
    torch.manual_seed(0)
    frozen = overfit_one_batch(
        GPT(CFG), x, y, steps=20, lr=0.0
    )  # a "bug": no update reaches the weights
    assert min(frozen) > 2.0 and max(frozen) - min(frozen) < 1e-5


def test_tokens_per_second_counts_every_micro_batch(monkeypatch):
    clock = iter([10.0, 12.0])  # start, end: 2 seconds
    monkeypatch.setattr(ch09_training.time, "perf_counter", lambda: next(clock))
    torch.manual_seed(0)
    rate = tokens_per_second(
        GPT(CFG), random_data(), batch_size=3, grad_accum_steps=4, steps=5, warmup=1
    )
    assert rate == pytest.approx(5 * 4 * 3 * 16 / 2.0)


class CountingDropoutGPT(GPT):
    """Records whether each forward pass ran in training mode and with gradients."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = []

    def forward(self, idx, targets=None):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return super().forward(idx, targets)


@pytest.mark.parametrize("start_in_training_mode", [True, False])
def test_estimate_loss_measures_in_eval_mode_without_gradients_and_restores_mode(
    start_in_training_mode,
):
    torch.manual_seed(0)
    model = CountingDropoutGPT(GPTConfig(**{**CFG.to_dict(), "dropout": 0.5}))
    model.train(start_in_training_mode)
    data = random_data()
    torch.manual_seed(5)
    losses = estimate_loss(
        model, {"train": data, "val": data[:500]}, batch_size=4, eval_batches=3
    )
    assert model.training is start_in_training_mode
    assert (
        model.calls == [(False, False)] * 6
    )  # 3 batches per split, all in eval mode, no graph
    assert all(p.grad is None for p in model.parameters())
    # the same batches, measured by hand in eval mode: the same mean
    torch.manual_seed(5)
    model.eval()
    with torch.no_grad():
        by_hand = [model(*get_batch(data, 4, 16))[1].item() for _ in range(3)]
    assert losses["train"] == pytest.approx(sum(by_hand) / 3, rel=1e-6)


def step_with_clip(grad_clip: float):
    torch.manual_seed(0)
    model = GPT(CFG)
    optimizer = configure_optimizer(model, TrainConfig())
    x, y = get_batch(random_data(), 8, 16, generator=torch.Generator().manual_seed(2))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    _, norm = train_step(
        model, optimizer, [(x, y)], grad_clip, contextlib.nullcontext(), scaler
    )
    after = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    return norm, after


def test_train_step_reports_the_norm_before_clipping_and_clips_to_grad_clip():
    unclipped, after_unclipped = step_with_clip(0.0)  # 0 turns clipping off
    assert unclipped == pytest.approx(after_unclipped, rel=1e-5)
    clip = unclipped / 4
    norm, after = step_with_clip(clip)
    assert norm == pytest.approx(
        unclipped, rel=1e-5
    )  # the log shows the norm before clipping
    assert after == pytest.approx(clip, rel=1e-4)  # the step used the clipped gradient


def test_lr_without_warmup_and_after_max_steps():
    c = TrainConfig(max_steps=10, warmup_steps=0, learning_rate=1.0, min_lr=0.25)
    assert lr_at(0, c) == pytest.approx(1.0)
    assert lr_at(10, c) == pytest.approx(0.25) and lr_at(50, c) == pytest.approx(0.25)


def test_training_from_token_files_equals_training_from_tensors(tmp_path):
    text = "".join(
        chr(97 + int(i)) for i in random_data(3000)
    )  # 16 letters, 3000 characters
    tok = CharTokenizer.train(text)
    prepare_token_files(text, tok, tmp_path, val_fraction=0.1)
    train_ids, val_ids, _ = load_token_files(tmp_path)
    assert isinstance(train_ids, np.memmap) and train_ids.dtype == np.uint16
    ids = torch.tensor(tok.encode(text))
    n = len(train_ids)
    config = TrainConfig(
        max_steps=12,
        batch_size=4,
        eval_interval=6,
        eval_batches=2,
        device="cpu",
        progress=False,
    )
    histories = []
    for train_data, val_data in [(train_ids, val_ids), (ids[:n], ids[n:])]:
        torch.manual_seed(0)
        histories.append(train(GPT(CFG), train_data, val_data, config).history)
    assert histories[0] == histories[1] and len(histories[0]) == 3


def test_train_shakespeare_benchmark_runs(tmp_path):
    if not os.environ.get("GPTLIB_TINYSHAKESPEARE"):
        pytest.skip(
            "no local Tiny Shakespeare "
            "($GPTLIB_TINYSHAKESPEARE; ./dev sets it from ../shared/data)"
        )
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_shakespeare.py"),
            "--steps",
            "4",
            "--eval-interval",
            "2",
            "--eval-batches",
            "1",
            "--device",
            "cpu",
            "--run-dir",
            str(tmp_path / "run"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(
        (tmp_path / "train_shakespeare.json").read_text(encoding="utf-8")
    )
    assert [r["step"] for r in result["history"]] == [0, 2, 4]
    assert (
        result["params"] == 809_856
        and result["model"]["n_layer"] == 4
        and len(result["sample"]) == 300
    )
    assert (
        "| minutes | train loss | val loss |" in done.stdout
        and result["sample"] in done.stdout
    )
