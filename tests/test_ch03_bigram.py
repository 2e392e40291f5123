"""Chapter 03 (Autograd & the bigram model): counting and learning give the same model,
the training loop clears its gradients, and the Dataset serves get_batch's batches."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from ch03_bigram import (
    BigramLanguageModel,
    NextTokenWindows,
    bigram_counts,
    bigram_probs,
    sample,
    train_steps,
)
from torch.utils.data import DataLoader

from gptlib import get_batch


def test_counts_match_counting_pairs_in_python():
    ids = torch.randint(7, (500,), generator=torch.Generator().manual_seed(0))
    counts = bigram_counts(ids, 7)
    expected = Counter(zip(ids[:-1].tolist(), ids[1:].tolist()))
    assert counts.sum() == len(ids) - 1
    for a in range(7):
        for b in range(7):
            assert counts[a, b] == expected[(a, b)]


def test_probs_are_rows_of_distributions():
    counts = torch.tensor([[0, 3], [5, 0]])
    assert torch.allclose(bigram_probs(counts, 0.0), torch.tensor([[0.0, 1], [1, 0]]))
    smoothed = bigram_probs(counts, 0.1)
    assert (smoothed > 0).all()
    assert torch.allclose(smoothed.sum(dim=1), torch.ones(2))


def test_the_model_loss_is_cross_entropy_of_its_table():
    model = BigramLanguageModel(11)
    x = torch.randint(11, (3, 5))
    y = torch.randint(11, (3, 5))
    logits, loss = model(x, y)
    assert logits.shape == (3, 5, 11)
    table = model.logits_table.weight
    expected = -F.log_softmax(table[x], dim=-1).gather(-1, y[..., None]).mean()
    assert torch.allclose(loss, expected)
    assert model(x)[1] is None


def test_gradient_descent_finds_the_counting_model():
    """The counts (no smoothing) minimise the training cross-entropy: the learned table
    gets as close as we like, and never below."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, (400,), generator=g)
    probs = bigram_probs(bigram_counts(ids, 5), smoothing=0.0)
    best = -probs[ids[:-1], ids[1:]].log().mean().item()
    torch.manual_seed(0)
    model = BigramLanguageModel(5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.0)
    for _ in range(500):
        _, loss = model(ids[None, :-1], ids[None, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    learned = model(ids[None, :-1], ids[None, 1:])[1].item()
    assert best - 1e-5 <= learned < best + 1e-3


def test_train_steps_clears_the_gradients_every_step():
    """With lr=0 the weights stay put, so after three steps each parameter's .grad must
    be the gradient of the third batch alone: nothing left over from the first two."""
    data = torch.randint(9, (300,), generator=torch.Generator().manual_seed(1))
    model = BigramLanguageModel(9)
    losses = train_steps(model, data, 3, 4, 8, lr=0.0, generator=torch.Generator())
    assert len(losses) == 3
    g = torch.Generator()  # replay the three batches
    batches = [get_batch(data, 4, 8, generator=g) for _ in range(3)]
    fresh = BigramLanguageModel(9)
    fresh.load_state_dict(model.state_dict())
    fresh(*batches[-1])[1].backward()
    assert torch.allclose(
        model.logits_table.weight.grad, fresh.logits_table.weight.grad
    )


def test_training_lowers_the_loss():
    data = torch.tensor([0, 1, 2, 3] * 100)  # fully predictable
    model = BigramLanguageModel(4)
    g = torch.Generator().manual_seed(0)
    losses = train_steps(model, data, 100, 8, 8, lr=0.1, generator=g)
    assert losses[-1] < 0.1 < losses[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_dataloader_serves_the_batches_of_get_batch(seed):
    data = torch.randint(50, (1000,), generator=torch.Generator().manual_seed(seed))
    windows = NextTokenWindows(data, block_size=8)
    assert len(windows) == len(data) - 8
    x, y = get_batch(data, 4, 8, generator=torch.Generator().manual_seed(seed))
    starts = torch.randint(
        len(data) - 8, (4,), generator=torch.Generator().manual_seed(seed)
    )
    x2, y2 = next(iter(DataLoader(windows, batch_size=4, sampler=starts.tolist())))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one


def test_sampling_follows_the_probabilities():
    cycle = torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])  # 0 -> 1 -> 2 -> 0
    ids = sample(lambda i: cycle[i], 0, 6, torch.Generator().manual_seed(0))
    assert ids == [0, 1, 2, 0, 1, 2, 0]


def test_docstring_examples():
    import doctest

    import ch03_bigram

    result = doctest.testmod(ch03_bigram)
    assert result.attempted > 0 and result.failed == 0
