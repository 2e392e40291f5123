"""Load GPT-2 weights in Hugging Face format into `gptlib.GPT`.

Hugging Face's GPT-2 stores its linear layers as `Conv1D`, whose weight is the
transpose of `nn.Linear`'s: (in_features, out_features). Everything else maps by name.
Chapter 08 (The GPT model) builds this file; chapter 16 (Real data and evaluation)
adds `load_pretrained`, which needs neither `transformers` nor PyTorch's pickles.
"""

# --8<-- [start:imports]
import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import GPT2Tokenizer

# --8<-- [end:imports]

# --8<-- [start:mapping]
# Hugging Face key (with {i} for the block number) -> gptlib key,
# and whether to transpose.
HF_TO_GPTLIB: list[tuple[str, str, bool]] = [
    ("transformer.wte.weight", "tok_emb.weight", False),
    ("transformer.wpe.weight", "pos_emb.weight", False),
    ("transformer.ln_f.weight", "ln_f.weight", False),
    ("transformer.ln_f.bias", "ln_f.bias", False),
]
HF_BLOCK_TO_GPTLIB: list[tuple[str, str, bool]] = [
    ("ln_1.weight", "ln_1.weight", False),
    ("ln_1.bias", "ln_1.bias", False),
    # Conv1D: (C, 3C) -> Linear: (3C, C)
    ("attn.c_attn.weight", "attn.c_attn.weight", True),
    ("attn.c_attn.bias", "attn.c_attn.bias", False),
    ("attn.c_proj.weight", "attn.c_proj.weight", True),
    ("attn.c_proj.bias", "attn.c_proj.bias", False),
    ("ln_2.weight", "ln_2.weight", False),
    ("ln_2.bias", "ln_2.bias", False),
    ("mlp.c_fc.weight", "mlp.c_fc.weight", True),
    ("mlp.c_fc.bias", "mlp.c_fc.bias", False),
    ("mlp.c_proj.weight", "mlp.c_proj.weight", True),
    ("mlp.c_proj.bias", "mlp.c_proj.bias", False),
]
# --8<-- [end:mapping]


# --8<-- [start:config_from_hf]
def config_from_hf(hf_config: Any) -> GPTConfig:
    """A GPTConfig from a Hugging Face `GPT2Config` (refusing settings gptlib's GPT
    does not have)."""
    activation = getattr(hf_config, "activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(
            f"activation_function={activation!r}: "
            "gptlib's MLP uses the tanh GELU ('gelu_new')"
        )
    if getattr(hf_config, "layer_norm_epsilon", 1e-5) != 1e-5:
        raise ValueError(
            f"layer_norm_epsilon={hf_config.layer_norm_epsilon}: "
            "gptlib's LayerNorms use 1e-5"
        )
    # Variants of GPT-2's attention: each would load without a complaint and give
    # other logits. (reorder_and_upcast_attn is accepted: the same scores, only
    # computed in float32 when the model runs in float16.)
    if not getattr(hf_config, "scale_attn_weights", True):
        raise ValueError(
            "scale_attn_weights=False: gptlib's attention always divides the scores "
            "by sqrt(head size)"
        )
    if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError(
            "scale_attn_by_inverse_layer_idx=True: gptlib's attention does not "
            "divide the scores by the layer number"
        )
    # another MLP width would fail later, at the weights' shapes, less clearly
    n_inner = getattr(hf_config, "n_inner", None)
    if n_inner is not None and n_inner != 4 * hf_config.n_embd:
        raise ValueError(
            f"n_inner={n_inner}: gptlib's MLP is 4 * n_embd = "
            f"{4 * hf_config.n_embd} wide"
        )
    return GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        dropout=0.0,
        bias=True,
    )


# --8<-- [end:config_from_hf]


# --8<-- [start:convert]
def gpt_from_hf_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: GPTConfig
) -> GPT:
    """Build a gptlib GPT holding the weights of a Hugging Face GPT-2 state_dict."""
    model = GPT(config)
    ours = model.state_dict()
    pairs = list(HF_TO_GPTLIB)
    for i in range(config.n_layer):
        pairs += [
            (f"transformer.h.{i}.{hf}", f"blocks.{i}.{mine}", t)
            for hf, mine, t in HF_BLOCK_TO_GPTLIB
        ]
    missing = [hf for hf, _, _ in pairs if hf not in state_dict]
    if missing:
        raise KeyError(
            f"the Hugging Face state_dict lacks {len(missing)} key(s), "
            f"first: {missing[:3]}"
        )
    head = state_dict.get("lm_head.weight")
    if head is not None and not torch.equal(head, state_dict["transformer.wte.weight"]):
        raise ValueError(
            "lm_head.weight differs from transformer.wte.weight: gptlib ties them, "
            "so an untied head cannot be loaded without changing its output"
        )
    with torch.no_grad():
        for hf, mine, transpose in pairs:
            weight = state_dict[hf].t() if transpose else state_dict[hf]
            if weight.shape != ours[mine].shape:
                raise ValueError(
                    f"shape mismatch for {hf} -> {mine}: {tuple(weight.shape)} "
                    f"vs {tuple(ours[mine].shape)} "
                    "(is the config the one these weights were trained with?)"
                )
            ours[mine].copy_(weight)
    # lm_head.weight is tied to tok_emb.weight, so it now holds wte as GPT-2's head does
    return model


# --8<-- [end:convert]


# --8<-- [start:load_hf_gpt2]
def load_hf_gpt2(name_or_path: str = "gpt2") -> GPT:
    """GPT-2 from the Hugging Face hub or a local folder (needs
    `pip install transformers`)."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(name_or_path)
    return gpt_from_hf_state_dict(hf.state_dict(), config_from_hf(hf.config)).eval()


# --8<-- [end:load_hf_gpt2]


# --8<-- [start:load_pretrained]
# What a GPT-2 folder on the Hugging Face hub holds that gptlib reads: no pickles
# (pytorch_model.bin), no code, only JSON, text and safetensors.
GPT2_TOKENIZER_FILES = ("vocab.json", "merges.txt")
PRETRAINED_FILES = ("config.json", "model.safetensors", *GPT2_TOKENIZER_FILES)
# GPT2Config's defaults, for keys a config.json leaves out
GPT2_DEFAULTS = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
}


def pretrained_folder(
    name_or_path: str, files: tuple[str, ...] = PRETRAINED_FILES
) -> Path:
    """A local folder with `files`: `name_or_path` itself if it is a folder, else a
    model on the Hugging Face hub ("gpt2", "gpt2-medium", ...), of which `files` are
    downloaded once into the hub's cache (needs `pip install huggingface_hub`)."""
    path = Path(name_or_path)
    if path.is_dir():
        missing = [name for name in files if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{path} lacks {', '.join(missing)}: a GPT-2 folder holds "
                f"{', '.join(files)}"
            )
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(
            f"{name_or_path!r} is not a folder here, and downloading it from the "
            "Hugging Face hub needs huggingface_hub: pip install huggingface_hub"
        ) from None
    return Path(snapshot_download(name_or_path, allow_patterns=list(files)))


def load_pretrained(name_or_path: str = "gpt2") -> tuple[GPT, GPT2Tokenizer]:
    """A GPT-2 (in eval mode) and its own tokenizer, from the hub or a folder: the
    config from config.json, the weights from model.safetensors (never a pickle),
    the tokenizer from vocab.json and merges.txt."""
    from safetensors.torch import load_file

    folder = pretrained_folder(name_or_path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    hf_config = SimpleNamespace(**(GPT2_DEFAULTS | config))
    state_dict = load_file(folder / "model.safetensors")
    # Files saved from GPT2Model (the hub's gpt2) lack GPT2LMHeadModel's prefix.
    state_dict = {
        k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}": v
        for k, v in state_dict.items()
    }
    model = gpt_from_hf_state_dict(state_dict, config_from_hf(hf_config)).eval()
    tokenizer = GPT2Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens, more than "
            f"the model's vocab_size={model.config.vocab_size}"
        )
    return model, tokenizer


# --8<-- [end:load_pretrained]
