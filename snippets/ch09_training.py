"""Chapter 09 (Training): the smallest training loop and its sanity check (overfit one
batch), and the exercises' throughput measurement for gradient accumulation.

Run it: `python snippets/ch09_training.py` prints a short demo. The page
docs/09-training.md includes its sections; the library code is gptlib/training.py and
gptlib/data.py.
"""

# --8<-- [start:imports]
import contextlib
import time

import torch

from gptlib.data import get_batch
from gptlib.model import GPT
from gptlib.training import TrainConfig, configure_optimizer, train_step

# --8<-- [end:imports]


# --8<-- [start:overfit]
def overfit_one_batch(
    model: GPT, x: torch.Tensor, y: torch.Tensor, steps: int = 200, lr: float = 3e-3
) -> list[float]:
    """Train on the same batch (x, y) again and again; return the loss of every step.

    A model that works can memorise one batch: the loss must fall close to 0. If it does
    not, something between the data and the optimizer is broken.
    """
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        # forward: the mean cross-entropy over all B * T positions
        _, loss = model(x, y)
        # gradients add up unless cleared (chapter 03)
        optimizer.zero_grad(set_to_none=True)
        # backward: a gradient for every parameter
        loss.backward()
        # update: move each parameter against its gradient
        optimizer.step()
        losses.append(loss.item())
    return losses


# --8<-- [end:overfit]


# --8<-- [start:throughput]
def tokens_per_second(
    model: GPT,
    data: torch.Tensor,
    batch_size: int,
    grad_accum_steps: int = 1,
    steps: int = 10,
    warmup: int = 2,
) -> float:
    """Training throughput: tokens per second over `steps` optimizer steps, each made of
    `grad_accum_steps` micro-batches of `batch_size` sequences (after `warmup`
    steps)."""
    config = TrainConfig(batch_size=batch_size, grad_accum_steps=grad_accum_steps)
    optimizer = configure_optimizer(model, config)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    block_size = model.config.block_size
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batches = [
            get_batch(data, batch_size, block_size) for _ in range(grad_accum_steps)
        ]
        train_step(
            model,
            optimizer,
            batches,
            config.grad_clip,
            contextlib.nullcontext(),
            scaler,
        )
    seconds = time.perf_counter() - start
    return steps * grad_accum_steps * batch_size * block_size / seconds


# --8<-- [end:throughput]


if __name__ == "__main__":
    from gptlib import (
        CharTokenizer,
        encode_corpus,
        load_corpus,
        preset_config,
        seed_everything,
    )

    seed_everything(1337)
    text = load_corpus("course-en")
    tok = CharTokenizer.train(text)
    data = encode_corpus(text, tok)
    model = GPT(preset_config("nano", vocab_size=tok.vocab_size))
    x, y = get_batch(data, batch_size=8, block_size=model.config.block_size)
    losses = overfit_one_batch(model, x, y, steps=200)
    print(
        f"overfit one batch: loss {losses[0]:.2f} at step 1, "
        f"{losses[-1]:.3f} at step 200"
    )
    small = tokens_per_second(
        GPT(preset_config("nano", vocab_size=tok.vocab_size)),
        data,
        8,
        grad_accum_steps=4,
    )
    big = tokens_per_second(
        GPT(preset_config("nano", vocab_size=tok.vocab_size)), data, 32
    )
    print(
        f"tokens/s: batch 8 x 4 micro-batches {small:,.0f}, one batch of 32 {big:,.0f}"
    )
