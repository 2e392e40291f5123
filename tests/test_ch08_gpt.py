"""Chapter 08 (The GPT model): the parameter count by formula, weight tying, GPT-2's
initialisation and what it does to the residual stream, and loading Hugging Face
weights whose every tensor is different. tests/test_model.py and
tests/test_pretrained.py check the basics (one config's count, the gpt2 count, one
init std, logits with a fresh HF model)."""

import math

import pytest
import torch
import torch.nn as nn
from ch08_gpt import count_params, residual_stds, unscale_residual_init

from gptlib.model import GPT, PRESETS, GPTConfig, preset_config

CONFIGS = [
    dict(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64),
    dict(vocab_size=1, block_size=1, n_layer=1, n_head=1, n_embd=1),
    dict(vocab_size=300, block_size=17, n_layer=3, n_head=3, n_embd=48),
    dict(vocab_size=1000, block_size=128, n_layer=5, n_head=2, n_embd=40),
    dict(vocab_size=7, block_size=8, n_layer=1, n_head=8, n_embd=8, dropout=0.1),
]


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def untie(model: GPT) -> GPT:
    """Give lm_head a matrix of its own, holding the same numbers as tok_emb."""
    model.lm_head.weight = nn.Parameter(model.tok_emb.weight.detach().clone())
    return model


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "fields",
    CONFIGS,
    ids=lambda f: f"V{f['vocab_size']}-L{f['n_layer']}-C{f['n_embd']}",
)
def test_formula_equals_numel(fields, bias):
    config = GPTConfig(**fields, bias=bias)
    model = GPT(config)
    assert count_params(config) == numel(model) == model.num_params()
    assert count_params(config, tied=False) == numel(untie(model))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", list(PRESETS))
def test_formula_equals_numel_for_every_preset(name, bias):
    config = preset_config(
        name, bias=bias, **({} if name == "gpt2" else {"vocab_size": 65})
    )
    with torch.device("meta"):
        model = GPT(config)
    assert count_params(config) == numel(model)


def test_bias_false_removes_exactly_the_biases():
    config = GPTConfig(**CONFIGS[2])
    C, L = config.n_embd, config.n_layer
    # per block: ln_1, ln_2 biases (2C), c_attn (3C), attn.c_proj (C), c_fc (4C),
    # mlp.c_proj (C); then ln_f (C)
    assert (
        count_params(config) - count_params(GPTConfig(**CONFIGS[2], bias=False))
        == L * 11 * C + C
    )


@pytest.mark.parametrize(
    "n_layer, n_embd, expected",
    [
        (12, 768, 124_439_808),
        (24, 1024, 354_823_168),
        (36, 1280, 774_030_080),
        (48, 1600, 1_557_611_200),
    ],
    ids=["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"],
)
def test_gpt2_family_counts(n_layer, n_embd, expected):
    """The published sizes of the four GPT-2 models, with a tied head."""
    config = preset_config("gpt2", n_layer=n_layer, n_embd=n_embd, n_head=n_embd // 64)
    with torch.device("meta"):
        model = GPT(config)
    assert count_params(config) == numel(model) == expected


@pytest.mark.parametrize(
    "fields", [CONFIGS[0], CONFIGS[3], PRESETS["gpt2"]], ids=["nano", "V1000", "gpt2"]
)
def test_tying_saves_exactly_v_times_c(fields):
    config = GPTConfig(**fields)
    with torch.device("meta"):
        tied = GPT(config)
        untied = untie(GPT(config))
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    saved = config.vocab_size * config.n_embd
    assert numel(untied) - numel(tied) == saved
    assert count_params(config, tied=False) - count_params(config) == saved


def test_tied_gradient_is_the_sum_of_both_uses():
    torch.manual_seed(0)
    config = GPTConfig(**CONFIGS[0])
    tied = GPT(config)
    untied = untie(GPT(config))
    untied.load_state_dict(tied.state_dict())
    idx = torch.randint(config.vocab_size, (2, 16))
    targets = torch.randint(config.vocab_size, (2, 16))
    tied(idx, targets)[1].backward()
    untied(idx, targets)[1].backward()
    both = untied.tok_emb.weight.grad + untied.lm_head.weight.grad
    assert torch.allclose(tied.tok_emb.weight.grad, both, atol=1e-7)
    assert not torch.allclose(
        tied.tok_emb.weight.grad, untied.lm_head.weight.grad, atol=1e-7
    )


@pytest.mark.parametrize("n_layer", [1, 2, 6, 12, 24])
def test_init_stds(n_layer):
    torch.manual_seed(n_layer)
    model = GPT(
        GPTConfig(vocab_size=500, block_size=64, n_layer=n_layer, n_head=4, n_embd=128)
    )
    proj = torch.cat(
        [
            p.flatten()
            for n, p in model.named_parameters()
            if n.endswith("c_proj.weight")
        ]
    )
    assert (
        proj.numel() == n_layer * 5 * 128 * 128
    )  # attn (C, C) + mlp (C, 4C) in every block
    expected = 0.02 / math.sqrt(2 * n_layer)
    assert abs(proj.std().item() / expected - 1) < 0.02
    assert abs(proj.mean().item()) < 0.05 * expected
    others = [
        p
        for n, p in model.named_parameters()
        if n.endswith("weight") and "c_proj" not in n and "ln_" not in n
    ]
    assert (
        len(others) == 2 + 2 * n_layer
    )  # tok_emb (= lm_head), pos_emb, c_attn and c_fc of every block
    for p in others:
        assert abs(p.std().item() / 0.02 - 1) < 0.05
    for n, p in model.named_parameters():
        if n.endswith("bias"):
            assert torch.all(p == 0), n
        elif "ln_" in n:
            assert torch.all(p == 1), n


def test_unscale_residual_init_gives_plain_002():
    torch.manual_seed(0)
    model = unscale_residual_init(
        GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=8, n_head=4, n_embd=128))
    )
    proj = torch.cat(
        [
            p.flatten()
            for n, p in model.named_parameters()
            if n.endswith("c_proj.weight")
        ]
    )
    assert abs(proj.std().item() / 0.02 - 1) < 0.02
    assert (
        abs(model.blocks[0].mlp.c_fc.weight.std().item() / 0.02 - 1) < 0.05
    )  # the rest is untouched


def test_scaled_residual_stream_does_not_grow_with_depth():
    idx = torch.randint(65, (4, 32), generator=torch.Generator().manual_seed(0))
    last = {}
    for n_layer in [2, 8]:
        torch.manual_seed(n_layer)
        model = GPT(
            GPTConfig(
                vocab_size=65, block_size=32, n_layer=n_layer, n_head=4, n_embd=128
            )
        )
        stds = residual_stds(model, idx)
        assert len(stds) == n_layer + 1
        last[n_layer] = stds[-1], residual_stds(unscale_residual_init(model), idx)[-1]
    assert 0.9 < last[8][0] / last[2][0] < 1.15  # scaled: about the same at any depth
    assert (
        1.6 < last[8][1] / last[2][1] < 2.5
    )  # unscaled: about sqrt(8 / 2) = 2 times larger


def test_residual_stds_follow_the_model():
    """residual_stds runs the same computation as the model's forward, up to ln_f."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIGS[0])).eval()
    idx = torch.randint(65, (2, 20))
    seen = []
    hook = model.ln_f.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0])
    )
    with torch.no_grad():
        model(idx)
    hook.remove()
    assert residual_stds(model, idx)[-1] == pytest.approx(
        seen[0].std().item(), rel=1e-6
    )


transformers = pytest.importorskip("transformers")


def test_every_distinct_hf_weight_lands_in_its_place():
    """With every HF tensor drawn at random (biases and LayerNorms too), a mix-up
    anywhere shows."""
    from gptlib.pretrained import config_from_hf, gpt_from_hf_state_dict

    hf_config = transformers.GPT2Config(
        n_layer=2,
        n_head=4,
        n_embd=64,
        n_positions=64,
        vocab_size=100,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    reference = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0.0, 0.5)
    config = config_from_hf(hf_config)
    ours = gpt_from_hf_state_dict(reference.state_dict(), config).eval()
    assert (
        ours.num_params()
        == count_params(config)
        == sum(p.numel() for p in reference.parameters())
    )
    idx = torch.randint(100, (2, 64))
    with torch.no_grad():
        expected = reference(idx).logits
        diff = (ours(idx)[0] - expected).abs().max().item()
    assert diff < 1e-4 * max(1.0, expected.abs().max().item()), diff
    assert ours.lm_head.weight is ours.tok_emb.weight
    assert torch.equal(ours.lm_head.weight, reference.lm_head.weight)
