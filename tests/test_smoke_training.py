"""Smoke test: a small GPT really learns on the course corpus, on the CPU (and on CUDA
when present).

The validation loss starts at about ln(vocab_size): an untrained model spreads its
probability evenly over the vocabulary (the course corpus has a few hundred distinct
characters in English and Chinese, so ln(V) is around 6.5). The test asks that after a
few hundred steps the validation loss is below 60% of ln(V). A model that only learned
the character frequencies (a unigram model) reaches roughly 0.75 * ln(V) on this
corpus, so passing means the model is using context, not only counting characters.
"""

import math
import time

import pytest
import torch

from gptlib import (
    GPT,
    CharTokenizer,
    TrainConfig,
    encode_corpus,
    load_corpus,
    preset_config,
    train,
    train_val_split,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def unigram_val_loss(
    train_data: torch.Tensor, val_data: torch.Tensor, vocab_size: int
) -> float:
    counts = (
        torch.bincount(train_data, minlength=vocab_size).double() + 1.0
    )  # add-one smoothing
    logp = (counts / counts.sum()).log()
    return -logp[val_data].mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_tiny_gpt_learns_the_course_corpus(device, capsys):
    torch.manual_seed(0)
    text = load_corpus("course")
    tok = CharTokenizer.train(text)
    train_data, val_data = train_val_split(encode_corpus(text, tok), 0.1)
    model = GPT(preset_config("nano", vocab_size=tok.vocab_size))
    config = TrainConfig(
        max_steps=400,
        batch_size=16,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=20,
        eval_interval=100,
        eval_batches=10,
        device=device,
        progress=False,
    )
    start = time.perf_counter()
    result = train(model, train_data, val_data, config)
    seconds = time.perf_counter() - start
    first, last = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    ln_v = math.log(tok.vocab_size)
    unigram = unigram_val_loss(train_data, val_data, tok.vocab_size)
    with capsys.disabled():
        print(
            f"\n[smoke {device}] vocab {tok.vocab_size} (ln V = {ln_v:.2f}), "
            f"{result.steps} steps in {seconds:.1f} s:"
            f" val loss {first:.3f} -> {last:.3f} (unigram baseline {unigram:.3f})"
        )
    assert abs(first - ln_v) < 0.5, "an untrained model should be close to uniform"
    assert last < 0.6 * ln_v
    assert last < unigram - 0.5, "the model should beat character frequencies alone"
