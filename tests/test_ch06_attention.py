"""Chapter 06 (Attention): the from-scratch attention equals PyTorch's
scaled_dot_product_attention, the from-scratch multi-head module equals gptlib's
CausalSelfAttention, attention is causal, and the 1/sqrt(d_k) scaling keeps the
score variance near 1."""

import math

import pytest
import torch
import torch.nn.functional as F
from ch06_attention import (
    Head,
    MultiHeadAttention,
    attention_maps,
    attention_weights,
    causal_attention,
    copy_from_gptlib,
)

from gptlib import GPT, CausalSelfAttention, GPTConfig

SHAPES = [
    (1, 1, 1, 1),
    (2, 3, 1, 8),
    (1, 1, 7, 5),
    (3, 2, 13, 9),
    (2, 4, 64, 32),
    (1, 12, 33, 64),
    (5, 1, 2, 3),
]
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_causal_attention_equals_sdpa(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    q, k, v = torch.randn((3, *shape), generator=g, dtype=dtype).unbind(0)
    ours = causal_attention(q, k, v)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert ours.shape == expected.shape == shape and ours.dtype == dtype
    torch.testing.assert_close(ours, expected, atol=TOLERANCE[dtype], rtol=0)


def test_causal_attention_gradients_equal_sdpa():
    g = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(2, 3, 11, 6, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    ]
    upstream = torch.randn(2, 3, 11, 6, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(causal_attention(*inputs), inputs, upstream)
    theirs = torch.autograd.grad(
        F.scaled_dot_product_attention(*inputs, is_causal=True), inputs, upstream
    )
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_causal_attention_against_a_plain_python_loop():
    # an independent reference: for every position, softmax over the positions 0..t
    g = torch.Generator().manual_seed(1)
    T, D = 6, 3
    q, k, v = torch.randn(3, T, D, generator=g, dtype=torch.float64).unbind(0)
    out = causal_attention(q, k, v)
    for t in range(T):
        scores = [
            sum(q[t, d].item() * k[s, d].item() for d in range(D)) / math.sqrt(D)
            for s in range(t + 1)
        ]
        exp = [math.exp(x - max(scores)) for x in scores]
        weights = [e / sum(exp) for e in exp]
        for d in range(D):
            assert out[t, d].item() == pytest.approx(
                sum(w * v[s, d].item() for s, w in enumerate(weights)), abs=1e-12
            )


def test_attention_weights_are_causal_and_rows_sum_to_one():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 2, 3, 9, 4, generator=g).unbind(0)
    w = attention_weights(q, k)
    assert w.shape == (2, 3, 9, 9)
    assert torch.equal(
        w.triu(diagonal=1), torch.zeros_like(w)
    )  # exactly 0 above the diagonal
    assert (w.tril() > 0).sum() == 2 * 3 * 9 * 10 // 2  # and positive on and below it
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(2, 3, 9))
    assert torch.equal(
        w[..., 0, 0], torch.ones(2, 3)
    )  # the first position sees only itself


def test_equal_scores_give_the_running_average():
    T = 5
    w = attention_weights(torch.zeros(T, 2), torch.zeros(T, 2))
    expected = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize("module", ["function", "head", "multihead"])
def test_changing_a_future_token_leaves_earlier_outputs_unchanged(module):
    torch.manual_seed(3)
    T, C = 12, 16
    if module == "function":

        def f(x):
            return causal_attention(x, x * 2.0, x.flip(-1))
    elif module == "head":
        f = Head(C, 4)
    else:
        f = MultiHeadAttention(C, 4)
    x = torch.randn(2, T, C)
    for j in [0, 5, T - 1]:
        x2 = x.clone()
        x2[:, j] = torch.randn(2, C)
        with torch.no_grad():
            y, y2 = f(x), f(x2)
        assert torch.allclose(y[:, :j], y2[:, :j], atol=1e-6, rtol=0), (
            j
        )  # the past: unchanged
        assert not torch.allclose(y[:, j:], y2[:, j:], atol=1e-3), (
            j
        )  # from j on: changed


def test_without_the_mask_the_future_would_leak():
    # the causality test above can fail: an unmasked attention changes earlier outputs
    torch.manual_seed(4)
    x = torch.randn(1, 8, 4)
    x2 = x.clone()
    x2[:, -1] = torch.randn(4)

    def unmasked(x):
        return torch.softmax(x @ x.transpose(-2, -1) / 2.0, dim=-1) @ x

    assert not torch.allclose(unmasked(x)[:, :-1], unmasked(x2)[:, :-1], atol=1e-6)


@pytest.mark.parametrize(
    "n_embd, n_head, bias",
    [(32, 4, True), (48, 3, True), (16, 1, True), (24, 8, False), (64, 4, True)],
)
def test_multihead_with_gptlib_weights_equals_causal_self_attention(
    n_embd, n_head, bias
):
    torch.manual_seed(n_embd + n_head)
    attn = CausalSelfAttention(GPTConfig(n_embd=n_embd, n_head=n_head, bias=bias))
    ours = copy_from_gptlib(MultiHeadAttention(n_embd, n_head, bias=bias), attn)
    for T in [1, 7, 20]:
        x = torch.randn(3, T, n_embd)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), attn(x), atol=1e-6, rtol=0)


def test_multihead_equals_gptlib_in_float64():
    torch.manual_seed(5)
    attn = CausalSelfAttention(GPTConfig(n_embd=40, n_head=5)).double()
    ours = copy_from_gptlib(MultiHeadAttention(40, 5).double(), attn)
    x = torch.randn(2, 17, 40, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), attn(x), atol=1e-12, rtol=0)


def test_a_wrong_weight_mapping_is_detected():
    # the equivalence test can fail: swapping two heads' query rows changes the output
    torch.manual_seed(6)
    attn = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4))
    ours = copy_from_gptlib(MultiHeadAttention(32, 4), attn)
    with torch.no_grad():
        w0 = ours.heads[0].query.weight.clone()
        ours.heads[0].query.weight.copy_(ours.heads[1].query.weight)
        ours.heads[1].query.weight.copy_(w0)
        x = torch.randn(2, 9, 32)
        assert not torch.allclose(ours(x), attn(x), atol=1e-4)


def test_copy_rejects_mismatched_sizes():
    attn = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4))
    with pytest.raises(AssertionError):
        copy_from_gptlib(MultiHeadAttention(32, 2), attn)
    with pytest.raises(ValueError):
        MultiHeadAttention(30, 4)


@pytest.mark.parametrize("d_k", [16, 64, 256, 1024])
def test_scaling_keeps_score_variance_near_one(d_k):
    g = torch.Generator().manual_seed(d_k)
    q, k = torch.randn(2, 20_000, d_k, generator=g).unbind(0)
    scores = (q * k).sum(dim=-1)
    assert scores.var().item() == pytest.approx(d_k, rel=0.1)  # unscaled: variance d_k
    assert (scores / math.sqrt(d_k)).var().item() == pytest.approx(
        1.0, abs=0.1
    )  # scaled: variance 1


def test_attention_weights_use_the_scaled_scores():
    # weights = softmax(scores / sqrt(D)): the log-ratio of two weights in a row is
    # the score difference / sqrt(D)
    g = torch.Generator().manual_seed(7)
    D = 64
    q, k = torch.randn(2, 5, D, generator=g, dtype=torch.float64).unbind(0)
    w = attention_weights(q, k)
    t = 4
    for s in range(t):
        expected = (q[t] @ k[s] - q[t] @ k[t]).item() / math.sqrt(D)
        assert math.log(w[t, s] / w[t, t]) == pytest.approx(expected, abs=1e-9)


def test_dropout_only_in_training():
    torch.manual_seed(8)
    head = Head(16, 8, dropout=0.5)
    x = torch.randn(2, 10, 16)
    head.eval()
    with torch.no_grad():
        y_eval = head(x)
        q, k, v = head.query(x), head.key(x), head.value(x)
        torch.testing.assert_close(
            y_eval,
            F.scaled_dot_product_attention(q, k, v, is_causal=True),
            atol=1e-6,
            rtol=0,
        )
        head.train()
        assert not torch.allclose(head(x), y_eval, atol=1e-3)


@pytest.mark.parametrize("layer", [0, 1])
def test_attention_maps_reproduce_the_models_attention_output(layer):
    torch.manual_seed(9)
    model = GPT(
        GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=4, n_embd=32)
    ).eval()
    # random biases and gains, so that a missing ln_1 or bias would show
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    idx = torch.randint(20, (2, 11))
    maps = attention_maps(model, idx, layer)
    assert maps.shape == (2, 4, 11, 11)
    # the model's own path up to this layer's attention, recomputed here
    with torch.no_grad():
        x = model.tok_emb(idx) + model.pos_emb(torch.arange(11))
        for block in model.blocks[:layer]:
            x = block(x)
        block = model.blocks[layer]
        h = block.ln_1(x)
        v = (
            block.attn.c_attn(h).split(32, dim=2)[2].view(2, 11, 4, 8).transpose(1, 2)
        )  # (B, H, T, D)
        y = (maps @ v).transpose(1, 2).reshape(2, 11, 32)
        torch.testing.assert_close(
            block.attn.c_proj(y), block.attn(h), atol=1e-5, rtol=0
        )
