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


# --- load_pretrained and `gptlib sample --pretrained`: a hub folder, offline ---------


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    """A tiny random GPT-2 in the layout of a Hugging Face hub folder, and the
    transformers model and tokenizer that read it."""
    from gpt2_fixture import write_tiny_gpt2

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    hf = write_tiny_gpt2(folder)
    tokenizer = transformers.GPT2Tokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt")
    )
    return folder, hf, tokenizer


def test_load_pretrained_reads_a_hub_folder_without_transformers(hub_folder):
    from gptlib.pretrained import load_pretrained

    folder, hf, hf_tokenizer = hub_folder
    model, tokenizer = load_pretrained(str(folder))
    text = "Attention is all you need. 注意力就是你所需要的。"
    ids = tokenizer.encode(text)
    assert ids == hf_tokenizer.encode(text)
    idx = torch.tensor([ids])
    with torch.no_grad():
        diff = (hf(idx).logits - model(idx)[0]).abs().max().item()
    assert diff < 1e-5, diff
    assert not model.training


def test_weights_saved_without_the_transformer_prefix_load_too(hub_folder, tmp_path):
    """The hub's own gpt2 model.safetensors was saved from GPT2Model: keys h.0...,
    wte.weight, no lm_head."""
    import shutil

    from safetensors.torch import load_file, save_file

    from gptlib.pretrained import load_pretrained

    folder, hf, _ = hub_folder
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copy(folder / name, tmp_path / name)
    tensors = load_file(folder / "model.safetensors")
    bare = {
        k.removeprefix("transformer."): v.contiguous()
        for k, v in tensors.items()
        if k != "lm_head.weight"
    }
    assert "h.0.attn.c_attn.weight" in bare
    save_file(bare, tmp_path / "model.safetensors")
    model, _ = load_pretrained(str(tmp_path))
    idx = torch.randint(0, 1000, (2, 16))
    with torch.no_grad():
        assert torch.allclose(hf(idx).logits, model(idx)[0], atol=1e-5)


def test_a_folder_without_the_files_is_named(tmp_path):
    from gptlib.pretrained import load_pretrained

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks model.safetensors, vocab.json"):
        load_pretrained(str(tmp_path))


def test_sample_pretrained_greedy_equals_transformers_generate(hub_folder):
    """`gptlib sample --pretrained FOLDER --temperature 0`, in a new process, prints
    the prompt and the same continuation as transformers' greedy generate."""
    import subprocess
    import sys

    folder, hf, hf_tokenizer = hub_folder
    prompt = "The model reads"
    ids = torch.tensor([hf_tokenizer.encode(prompt)])
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=0)
    expected = hf_tokenizer.decode(out[0].tolist())
    done = subprocess.run(
        [sys.executable, "-m", "gptlib", "sample", "--pretrained", str(folder),
         "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "20"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n"
    assert f"sampling from {folder}" in done.stderr


def test_sample_takes_a_checkpoint_or_a_pretrained_model_not_both(capsys):
    from gptlib.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sample", "--checkpoint", "a", "--pretrained", "gpt2"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_a_hub_name_is_downloaded_with_huggingface_hub(monkeypatch, hub_folder):
    """A name that is not a folder goes to the hub's snapshot_download (cached by the
    hub library), asking only for the four files gptlib reads, never a pickle."""
    huggingface_hub = pytest.importorskip("huggingface_hub")

    from gptlib.pretrained import PRETRAINED_FILES, pretrained_folder

    folder = hub_folder[0]
    asked = {}

    def snapshot_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert pretrained_folder("gpt2") == folder
    assert asked == {"repo_id": "gpt2", "allow_patterns": list(PRETRAINED_FILES)}
    assert "pytorch_model.bin" not in PRETRAINED_FILES
