"""Chapter 15 (Debugging checklist): the shared setup of the page's reproductions, and
the tools to measure activation memory.

Run it: `python snippets/ch15_debugging.py` trains the reference nano model briefly,
then measures and estimates its activation memory. The page
docs/15-debugging-checklist.md includes its sections.
"""

# --8<-- [start:setup]
import math

import torch
import torch.nn as nn
import torch.nn.functional as F  # noqa: F401 - the reproductions on the page use F

from gptlib import (
    GPT,
    CharTokenizer,
    GPTConfig,
    encode_corpus,
    get_batch,
    load_corpus,
    preset_config,
    seed_everything,
    train_val_split,
)

text = load_corpus("course-en")
tokenizer = CharTokenizer.train(text)
V = tokenizer.vocab_size
train_data, val_data = train_val_split(encode_corpus(text, tokenizer))


def fresh_model(seed: int = 0, **overrides) -> GPT:
    """A new nano GPT, the same one for the same seed."""
    seed_everything(seed)
    return GPT(preset_config("nano", vocab_size=V, **overrides))


@torch.no_grad()
def val_loss(
    model: nn.Module, data: torch.Tensor = val_data, batches: int = 8
) -> float:
    """The mean loss over fixed batches of `data`: the same batches on every call."""
    model.eval()
    g = torch.Generator().manual_seed(123)
    losses = [
        model(*get_batch(data, 16, 64, generator=g))[1].item() for _ in range(batches)
    ]
    model.train()
    return sum(losses) / batches


# --8<-- [end:setup]


# --8<-- [start:memory]
def saved_activation_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the tensors that autograd keeps for the backward pass of model(x, y):
    the activations. The weights, which it also keeps, are not counted."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # storage address -> bytes, so views count once

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, y)
    return sum(saved.values())


def estimate_activation_bytes(
    config: GPTConfig, batch_size: int, seq_len: int, bytes_per_value: int = 4
) -> int:
    """Activation memory of one training step of a GPT, per token: 16·C values in each
    block (the inputs of the two layer norms and four linear layers, q, k, v and the
    attention output, and the MLP's 4·C hidden layer twice, before and after GELU),
    2·C at the top, and the V log-probabilities of the loss. Attention kernels that
    store the (T, T) weights (dropout on some backends) add H·T per token and layer."""
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    per_token = L * 16 * C + 2 * C + V
    return batch_size * seq_len * per_token * bytes_per_value


# --8<-- [end:memory]


if __name__ == "__main__":
    import sys

    sys.path.insert(0, "snippets")
    from ch03_bigram import train_steps

    model = fresh_model()
    print(f"nano model, validation loss before training {val_loss(model):.3f}")
    g = torch.Generator().manual_seed(0)
    train_steps(model, train_data, 150, 16, 64, lr=3e-3, generator=g)
    print(f"after 150 steps {val_loss(model):.3f} (ln V = {math.log(V):.3f})")
    x, y = get_batch(train_data, 16, 64, generator=g)
    measured = saved_activation_bytes(model, x, y)
    estimated = estimate_activation_bytes(model.config, 16, 64)
    print(
        f"activations: measured {measured / 2**20:.2f} MiB, "
        f"estimated {estimated / 2**20:.2f} MiB"
    )
