import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.model import GPT, PRESETS, CausalSelfAttention, GPTConfig, preset_config

CFG = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32)


def formula_params(c: GPTConfig) -> int:
    """Parameters of a GPT by formula (bias=True, tied head)."""
    C, L = c.n_embd, c.n_layer
    per_block = (
        2 * (2 * C)
        + (C * 3 * C + 3 * C)
        + (C * C + C)
        + (C * 4 * C + 4 * C)
        + (4 * C * C + C)
    )
    return c.vocab_size * C + c.block_size * C + L * per_block + 2 * C


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = GPT(CFG)
    idx = torch.randint(0, 50, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 50) and loss is None
    _, loss = model(idx, idx)
    assert loss.ndim == 0


def test_initial_loss_is_about_ln_vocab():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=500, block_size=32, n_layer=2, n_head=2, n_embd=64)
    model = GPT(cfg)
    idx = torch.randint(0, 500, (8, 32))
    _, loss = model(idx, torch.randint(0, 500, (8, 32)))
    assert abs(loss.item() - math.log(500)) < 0.1


def test_causal_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    a = torch.randint(0, 50, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 7) % 50
    la, _ = model(a)
    lb, _ = model(b)
    assert torch.allclose(la[0, :10], lb[0, :10], atol=1e-6)
    assert not torch.allclose(la[0, 10:], lb[0, 10:])


def test_attention_equals_explicit_masked_softmax():
    torch.manual_seed(0)
    attn = CausalSelfAttention(CFG).eval()
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    attn = attn.double()
    B, T, C = x.shape
    H, D = CFG.n_head, C // CFG.n_head
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    scores = scores.masked_fill(
        torch.tril(torch.ones(T, T, dtype=torch.bool)).logical_not(), float("-inf")
    )
    y = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    expected = attn.c_proj(y)
    assert torch.allclose(attn(x), expected, atol=1e-12)


def test_weight_tying_and_param_count():
    model = GPT(CFG)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == formula_params(CFG)


def test_gpt2_preset_has_124m_parameters():
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(preset_config("gpt2"))
    assert model.num_params() == formula_params(model.config) == 124_439_808


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=100, block_size=8, n_layer=8, n_head=4, n_embd=256)
    model = GPT(cfg)
    proj_std = model.blocks[0].attn.c_proj.weight.std().item()
    fc_std = model.blocks[0].mlp.c_fc.weight.std().item()
    assert abs(fc_std - 0.02) < 0.002
    assert abs(proj_std - 0.02 / math.sqrt(2 * 8)) < 0.001


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="positive integer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.5)
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        GPTConfig.from_dict({"n_layers": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="longer than block_size"):
        GPT(CFG)(torch.zeros(1, 17, dtype=torch.long))


def test_presets_build():
    for name in PRESETS:
        with torch.device("meta"):
            GPT(preset_config(name, **({} if name == "gpt2" else {"vocab_size": 65})))


def test_num_params_without_the_position_embeddings():
    model = GPT(CFG)
    positions = CFG.block_size * CFG.n_embd
    assert model.num_params(non_embedding=True) == model.num_params() - positions
    # the token embedding is also the output layer (tied): it stays in the count
    assert model.num_params(non_embedding=True) > model.tok_emb.weight.numel()


def test_loss_takes_targets_that_are_not_contiguous():
    torch.manual_seed(0)
    model = GPT(CFG)
    data = torch.randint(0, 50, (3, 17))
    x, y = data[:, :-1], data[:, 1:]  # two views of one tensor: neither is contiguous
    assert not y.is_contiguous()
    _, loss = model(x, y)
    _, expected = model(x.contiguous(), y.contiguous())
    assert torch.equal(loss, expected)
