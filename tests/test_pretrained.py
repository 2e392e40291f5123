"""gptlib.GPT with Hugging Face GPT-2 weights gives the logits of GPT2LMHeadModel."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from gptlib.pretrained import config_from_hf, gpt_from_hf_state_dict  # noqa: E402


def reference(**kw):
    cfg = transformers.GPT2Config(
        vocab_size=100,
        n_positions=32,
        n_embd=48,
        n_layer=3,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        **kw,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval(), cfg


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_logits_equal_hugging_face(dtype, tol):
    hf, cfg = reference()
    ours = gpt_from_hf_state_dict(hf.state_dict(), config_from_hf(cfg)).eval()
    hf, ours = hf.to(dtype), ours.to(dtype)
    idx = torch.randint(0, 100, (3, 32))
    with torch.no_grad():
        diff = (hf(idx).logits - ours(idx)[0]).abs().max().item()
    assert diff < tol, diff


def test_missing_key_and_wrong_shape_are_named():
    hf, cfg = reference()
    sd = dict(hf.state_dict())
    del sd["transformer.h.1.mlp.c_fc.weight"]
    with pytest.raises(KeyError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight"):
        gpt_from_hf_state_dict(sd, config_from_hf(cfg))
    wrong = config_from_hf(cfg)
    wrong.vocab_size = 101
    with pytest.raises(
        ValueError,
        match=(
            r"transformer\.wte\.weight -> tok_emb\.weight: "
            r"\(100, 48\) vs \(101, 48\)"
        ),
    ):
        gpt_from_hf_state_dict(hf.state_dict(), wrong)


def test_untied_head_and_other_activations_are_refused():
    hf, cfg = reference(tie_word_embeddings=False)
    with torch.no_grad():
        hf.lm_head.weight.normal_(0, 0.5)
    with pytest.raises(ValueError, match="untied head"):
        gpt_from_hf_state_dict(hf.state_dict(), config_from_hf(cfg))
    _, relu_cfg = reference(activation_function="relu")
    with pytest.raises(ValueError, match="activation_function='relu'"):
        config_from_hf(relu_cfg)


@pytest.mark.parametrize(
    "option, value",
    [
        ("scale_attn_weights", False),
        ("scale_attn_by_inverse_layer_idx", True),
        ("n_inner", 100),
    ],
)
def test_variants_gptlib_does_not_have_are_refused(option, value):
    _, cfg = reference(**{option: value})
    with pytest.raises(ValueError, match=f"^{option}={value}: gptlib"):
        config_from_hf(cfg)


def test_reorder_and_upcast_attn_gives_the_same_logits():
    # it only changes how the scores are computed (upcast to float32): accepted
    hf, cfg = reference(reorder_and_upcast_attn=True, attn_implementation="eager")
    ours = gpt_from_hf_state_dict(hf.state_dict(), config_from_hf(cfg)).eval()
    idx = torch.randint(0, 100, (3, 32))
    with torch.no_grad():
        assert torch.allclose(hf(idx).logits, ours(idx)[0], atol=1e-5)
