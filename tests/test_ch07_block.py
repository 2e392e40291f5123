"""Chapter 07 (Transformer Block): LayerNorm from scratch equals nn.LayerNorm, the
post-norm block has the pre-norm block's parameters, a plain list hides parameters that
ModuleList registers, residuals carry gradients, and gptlib's Block keeps (B, T, C)."""

import pytest
import torch
import torch.nn as nn
from ch07_block import (
    BlocksInAList,
    BlocksInAModuleList,
    LayerNormFromScratch,
    PostNormBlock,
    block_changes,
    deep_stack,
    input_grad_norm,
    to_post_norm,
)

from gptlib import GPT, Block, GPTConfig, KVCache


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape", [(7,), (3, 16), (2, 5, 64), (2, 3, 4, 10), (1, 1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_from_scratch_equals_nn_layernorm(shape, bias):
    g = torch.Generator().manual_seed(sum(shape) + bias)
    C = shape[-1]
    ours = LayerNormFromScratch(C, bias=bias)
    ref = nn.LayerNorm(C, bias=bias)
    with torch.no_grad():  # random scale and shift, so that they are really compared
        ours.weight.copy_(torch.randn(C, generator=g))
        ref.weight.copy_(ours.weight)
        if bias:
            ours.bias.copy_(torch.randn(C, generator=g))
            ref.bias.copy_(ours.bias)
    assert (ours.bias is None) == (not bias)
    x = torch.randn(shape, generator=g) * 4 + 2
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    upstream = torch.randn(shape, generator=g)
    ya, yb = ours(xa), ref(xb)
    assert ya.shape == shape
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    ya.backward(upstream)
    yb.backward(upstream)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    if bias:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_layernorm_from_scratch_uses_the_biased_variance_and_eps():
    # a wrong implementation (unbiased variance, eps outside the square root, no eps)
    # must fail
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    mean, var = 3.0, ((4 + 1 + 0 + 9) / 4)  # biased variance: divide by C = 4
    expected = (x - mean) / (var + 1e-5) ** 0.5
    torch.testing.assert_close(LayerNormFromScratch(4)(x), expected)
    constant = torch.full((2, 8), 3.0)  # zero variance: eps keeps it finite
    assert torch.equal(LayerNormFromScratch(8)(constant), torch.zeros(2, 8))
    big_eps = LayerNormFromScratch(4, eps=1.0)(x)
    torch.testing.assert_close(big_eps, (x - mean) / (var + 1.0) ** 0.5)


def test_layernorm_from_scratch_state_dict_matches_nn_layernorm():
    assert set(LayerNormFromScratch(8).state_dict()) == set(
        nn.LayerNorm(8).state_dict()
    )
    assert set(LayerNormFromScratch(8, bias=False).state_dict()) == set(
        nn.LayerNorm(8, bias=False).state_dict()
    )
    assert n_params(LayerNormFromScratch(8)) == 16


@pytest.mark.parametrize(
    "n_embd, n_head, bias", [(64, 4, True), (48, 6, False), (16, 2, True)]
)
def test_post_norm_block_has_the_same_parameters_as_block(n_embd, n_head, bias):
    config = GPTConfig(n_embd=n_embd, n_head=n_head, bias=bias)
    pre, post = Block(config), PostNormBlock(config)
    assert (
        n_params(post)
        == n_params(pre)
        == 12 * n_embd**2 + (13 * n_embd if bias else 2 * n_embd)
    )  # LayerNorm weights stay
    assert {k: v.shape for k, v in post.state_dict().items()} == {
        k: v.shape for k, v in pre.state_dict().items()
    }


def test_post_norm_block_normalises_after_the_addition():
    torch.manual_seed(0)
    config = GPTConfig(n_embd=32, n_head=4)
    post = PostNormBlock(config)
    x = torch.randn(2, 6, 32) * 5 + 3
    y = post(x)
    # the output is a LayerNorm output (weight 1, bias 0): mean 0, variance 1 per
    # position
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y.var(-1, correction=0), torch.ones(2, 6), atol=1e-3, rtol=0
    )
    expected = post.ln_1(x + post.attn(x))
    expected = post.ln_2(expected + post.mlp(expected))
    torch.testing.assert_close(y, expected)
    pre = Block(config)
    pre.load_state_dict(post.state_dict())
    assert not torch.allclose(
        pre(x), y, atol=1e-2
    )  # the two orders are different functions


def test_to_post_norm_copies_the_weights_and_keeps_the_original():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=3, n_head=2, n_embd=16))
    post = to_post_norm(model)
    assert all(type(b) is Block for b in model.blocks)
    assert all(isinstance(b, PostNormBlock) for b in post.blocks)
    for (name, a), (name_b, b) in zip(
        model.state_dict().items(), post.state_dict().items()
    ):
        assert name == name_b and torch.equal(a, b), name
    idx = torch.randint(20, (2, 8))
    assert not torch.allclose(model(idx)[0], post(idx)[0])
    changes = block_changes(model, idx)
    assert len(changes) == 3 and all(c > 0 for c in changes)


def test_plain_list_hides_parameters_modulelist_registers_them():
    config = GPTConfig(n_layer=3, n_head=2, n_embd=16)
    hidden, registered = BlocksInAList(config), BlocksInAModuleList(config)
    one_block = n_params(Block(config))
    assert n_params(hidden) == 0 and len(hidden.state_dict()) == 0
    assert n_params(registered) == 3 * one_block
    assert len(registered.state_dict()) == 3 * len(Block(config).state_dict())
    with pytest.raises(ValueError, match="empty parameter list"):
        torch.optim.AdamW(hidden.parameters())
    # both still run forward, with a KV cache too
    x = torch.randn(1, 4, 16)
    assert hidden(x, KVCache(3)).shape == registered(x, KVCache(3)).shape == (1, 4, 16)
    # a Sequential registers them too, but cannot pass the cache
    seq = nn.Sequential(*[Block(config, i) for i in range(3)])
    assert n_params(seq) == 3 * one_block
    with pytest.raises(TypeError):
        seq(x, KVCache(3))


@pytest.mark.parametrize("B, T, C, H", [(2, 10, 64, 4), (1, 1, 16, 2), (3, 64, 32, 8)])
def test_gptlib_block_preserves_shape(B, T, C, H):
    torch.manual_seed(0)
    block = Block(GPTConfig(n_embd=C, n_head=H, block_size=64))
    x = torch.randn(B, T, C)
    y = block(x)
    assert y.shape == (B, T, C)
    assert not torch.equal(y, x)


def test_residuals_keep_the_gradient_plain_stacks_lose_it():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    plain = input_grad_norm(deep_stack(20, 64, residual=False), x)
    torch.manual_seed(1)
    skip = input_grad_norm(deep_stack(20, 64, residual=True), x)
    assert plain < 1e-2
    assert skip > 1.0
