"""Chapter 03 (Autograd & the bigram model): the simplest language model, two ways.

A bigram model predicts the next character from the current one alone. `bigram_counts`
builds it by counting; `BigramLanguageModel` learns the same table by gradient descent,
with the training loop every later chapter uses. `NextTokenWindows` serves the batches
of `gptlib.data.get_batch` through a `torch.utils.data.Dataset`.

Run it: `python snippets/ch03_bigram.py` trains both on the course's English text and
prints their losses and samples. The page docs/03-autograd-bigram.md includes its
sections.
"""

# --8<-- [start:imports]
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from gptlib import get_batch, load_corpus

# --8<-- [end:imports]


# --8<-- [start:counts]
def bigram_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(V, V) table: how often token b follows token a in the 1-D tensor `ids`.

    >>> bigram_counts(torch.tensor([0, 1, 1, 0]), 2)
    tensor([[0, 1],
            [1, 1]])
    """
    pairs = ids[:-1] * vocab_size + ids[1:]  # one number per (a, b) pair
    return torch.bincount(pairs, minlength=vocab_size * vocab_size).view(
        vocab_size, vocab_size
    )


def bigram_probs(counts: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Each row of counts divided by its sum: row a is the distribution of the token
    after a. `smoothing` is added to every count first, so that a pair the training
    text never had gets a small probability instead of 0 (an infinite loss)."""
    counts = counts.float() + smoothing
    return counts / counts.sum(dim=1, keepdim=True)  # (V, V) / (V, 1), broadcast


# --8<-- [end:counts]


# --8<-- [start:model]
class BigramLanguageModel(nn.Module):
    """A table of logits, one row per token: row a scores every token that may follow a.

    The same model as the counts, but its table is an `nn.Embedding` of V vectors of
    size V, learned by gradient descent: the GPT of later chapters keeps this interface
    (ids in, logits and a loss out) and replaces the table with a Transformer.
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.logits_table = nn.Embedding(vocab_size, vocab_size)  # (V, V)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.logits_table(idx)  # (B, T) -> (B, T, V)
        if targets is None:
            return logits, None
        # cross_entropy wants one row of scores per prediction: (B*T, V) and (B*T,)
        loss = F.cross_entropy(logits.view(-1, self.vocab_size), targets.view(-1))
        return logits, loss


# --8<-- [end:model]


# --8<-- [start:sample]
@torch.no_grad()
def sample(
    next_probs, start: int, length: int, generator: torch.Generator
) -> list[int]:
    """`length` tokens after `start`, each drawn from `next_probs(last_id)`: a (V,)
    tensor of probabilities for the token after `last_id`."""
    ids = [start]
    for _ in range(length):
        probs = next_probs(ids[-1])  # (V,)
        ids.append(torch.multinomial(probs, 1, generator=generator).item())
    return ids


# --8<-- [end:sample]


# --8<-- [start:train]
def train_steps(
    model: nn.Module,
    train_data: torch.Tensor,
    steps: int,
    batch_size: int = 32,
    block_size: int = 8,
    lr: float = 0.1,
    generator: torch.Generator | None = None,
) -> list[float]:
    """The training loop: sample a batch, forward, loss, zero_grad, backward, step.
    Returns the loss of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        x, y = get_batch(train_data, batch_size, block_size, generator=generator)
        _, loss = model(x, y)  # forward: (B, T) -> logits (B, T, V) and a scalar loss
        optimizer.zero_grad(set_to_none=True)  # forget the last step's gradients
        loss.backward()  # fill p.grad for every parameter p
        optimizer.step()  # move every parameter against its gradient
        losses.append(loss.item())
    return losses


# --8<-- [end:train]


# --8<-- [start:windows]
class NextTokenWindows(Dataset):
    """Every window of `block_size` tokens in `data`, with its targets: item i is
    (data[i : i+T], data[i+1 : i+T+1]), the pair that `get_batch` makes from start i."""

    def __init__(self, data: torch.Tensor, block_size: int):
        self.data, self.block_size = data, block_size

    def __len__(self) -> int:
        return len(self.data) - self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.data[i : i + self.block_size + 1]  # (T + 1,)
        return chunk[:-1], chunk[1:]


# --8<-- [end:windows]


if __name__ == "__main__":
    text = load_corpus("course-en")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[ch] for ch in text])
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    V = len(chars)
    probs = bigram_probs(bigram_counts(train_data, V))
    count_loss = -probs[val_data[:-1], val_data[1:]].log().mean().item()
    print(f"vocabulary {V}, ln V = {math.log(V):.3f}")
    print(f"counting model, validation loss {count_loss:.3f}")
    torch.manual_seed(0)
    model = BigramLanguageModel(V)
    losses = train_steps(model, train_data, 1000, generator=torch.Generator())
    model.eval()
    _, val_loss = model(val_data[None, :-1], val_data[None, 1:])
    print(f"trained model, validation loss {val_loss.item():.3f}")
    g = torch.Generator().manual_seed(0)
    ids = sample(
        lambda i: F.softmax(model.logits_table.weight[i], dim=-1), stoi["T"], 80, g
    )
    print("".join(chars[i] for i in ids))
