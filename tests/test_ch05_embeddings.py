"""Chapter 05 (Embeddings): the lookup equals one-hot @ W, only looked-up rows get
gradients, and the sinusoidal table matches the formula of the Transformer paper."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from ch05_embeddings import mix, one_hot_embed, sinusoidal_positions

from gptlib import GPT, GPTConfig


@pytest.mark.parametrize(
    "vocab_size, n_embd, ids_shape",
    [
        (10, 4, (5,)),
        (65, 16, (2, 8)),
        (300, 7, (3, 4, 5)),
        (1, 3, (6,)),
        (50, 32, (0,)),
    ],
)
def test_embedding_equals_one_hot_times_weight(vocab_size, n_embd, ids_shape):
    g = torch.Generator().manual_seed(vocab_size)
    emb = nn.Embedding(vocab_size, n_embd)
    ids = torch.randint(vocab_size, ids_shape, generator=g)
    expected = emb(ids)
    assert expected.shape == ids_shape + (n_embd,)
    by_matmul = (
        F.one_hot(ids, vocab_size).float() @ emb.weight
    )  # computed here, independently
    assert torch.equal(by_matmul, expected)
    assert torch.equal(one_hot_embed(ids, emb.weight), expected)


def test_one_hot_embed_keeps_the_weight_dtype():
    weight = torch.randn(20, 6, dtype=torch.float64)
    ids = torch.tensor([[0, 19, 3]])
    out = one_hot_embed(ids, weight)
    assert out.dtype == torch.float64
    assert torch.equal(out, weight[ids])


def test_one_hot_embed_is_not_a_plain_lookup_of_something_else():
    # a wrong implementation (e.g. transposed weight, or ids offset by one) must fail
    weight = torch.arange(12.0).reshape(4, 3)
    ids = torch.tensor([2, 0, 3])
    assert one_hot_embed(ids, weight).tolist() == [
        [6.0, 7.0, 8.0],
        [0.0, 1.0, 2.0],
        [9.0, 10.0, 11.0],
    ]


def test_only_looked_up_rows_get_gradients():
    torch.manual_seed(0)
    vocab_size, n_embd = 30, 5
    emb = nn.Embedding(vocab_size, n_embd)
    ids = torch.tensor([[3, 7, 3, 12], [7, 7, 0, 29]])
    upstream = torch.randn(2, 4, n_embd)
    emb(ids).backward(upstream)
    grad = emb.weight.grad
    used = set(ids.flatten().tolist())
    for row in range(vocab_size):
        if row in used:
            # a row's gradient: the sum of the upstream gradients where it was looked up
            expected = upstream[ids == row].sum(dim=0)
            assert torch.allclose(grad[row], expected), row
            assert grad[row].abs().sum() > 0
        else:
            assert torch.equal(grad[row], torch.zeros(n_embd)), row


def test_gradient_counts_repeated_lookups():
    emb = nn.Embedding(6, 3)
    ids = torch.tensor([1, 1, 1, 4])
    emb(ids).sum().backward()
    assert emb.weight.grad[:, 0].tolist() == [0.0, 3.0, 0.0, 0.0, 1.0, 0.0]


def _formula(pos: int, channel: int, n_embd: int) -> float:
    """In plain Python: PE(pos, 2i) = sin(pos / 10000^(2i/d)),
    PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    two_i = channel - channel % 2
    angle = pos / 10000 ** (two_i / n_embd)
    return math.sin(angle) if channel % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize(
    "block_size, n_embd", [(16, 8), (64, 32), (1024, 768), (10, 7), (3, 1)]
)
def test_sinusoidal_shape_and_formula(block_size, n_embd):
    pe = sinusoidal_positions(block_size, n_embd)
    assert pe.shape == (block_size, n_embd)
    assert pe.dtype == torch.float32 and not pe.requires_grad
    entries = {
        (0, 0),
        (0, n_embd - 1),
        (1, 0),
        (block_size - 1, n_embd - 1),
        (block_size // 2, n_embd // 2),
    }
    if n_embd > 1:
        entries |= {(1, 1), (block_size - 1, 1), (block_size - 1, n_embd - 2)}
    for pos, channel in sorted(entries):
        expected = _formula(pos, channel, n_embd)
        # float32 angles: the error grows with the angle, about 1e-7 * pos
        assert abs(pe[pos, channel].item() - expected) < 1e-6 + 2e-7 * pos, (
            pos,
            channel,
        )


def test_sinusoidal_known_values():
    pe = sinusoidal_positions(4, 4)
    # channels 0, 1 turn at frequency 1; channels 2, 3 at 1/100 (10000^(2/4) = 100)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert pe[1].tolist() == pytest.approx(
        [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)], abs=1e-6
    )
    assert pe[3].tolist() == pytest.approx(
        [math.sin(3), math.cos(3), math.sin(0.03), math.cos(0.03)], abs=1e-6
    )


@pytest.mark.parametrize("block_size, n_embd", [(512, 64), (256, 8), (2048, 128)])
def test_sinusoidal_rows_are_distinct(block_size, n_embd):
    pe = sinusoidal_positions(block_size, n_embd)
    distances = torch.pdist(pe)  # every pair of rows
    assert distances.min() > 0.1


def test_sinusoidal_dot_product_depends_only_on_distance():
    pe = sinusoidal_positions(200, 32).double()
    for k in [1, 3, 17, 100]:
        dots = (pe[:-k] * pe[k:]).sum(dim=1)
        assert dots.max() - dots.min() < 1e-3, k


def test_mix_is_order_blind_without_positions_and_not_with_them():
    torch.manual_seed(0)
    x = torch.randn(7, 8)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    assert torch.allclose(
        mix(x)[perm], mix(x[perm]), atol=1e-6
    )  # shuffling only shuffles the output
    pos = torch.randn(7, 8)
    assert not torch.allclose(mix(x + pos)[perm], mix(x[perm] + pos), atol=1e-3)


def test_gpt_input_is_token_plus_position_embedding():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    idx = torch.randint(11, (3, 5))
    seen = []
    hook = model.drop.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0])
    )
    model(idx)
    hook.remove()
    expected = model.tok_emb(idx) + model.pos_emb(torch.arange(5))
    assert seen[0].shape == (3, 5, 8)
    assert torch.equal(seen[0], expected)
