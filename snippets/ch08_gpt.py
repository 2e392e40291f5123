"""Chapter 08 (The GPT model): the parameter count by formula, and the residual stream
at init.

Run it: `python snippets/ch08_gpt.py` prints a short demo. The page docs/08-gpt-model.md
includes its sections.
"""

# --8<-- [start:imports]
import math

import torch
import torch.nn as nn

from gptlib.model import GPT, PRESETS, GPTConfig, preset_config

# --8<-- [end:imports]


# --8<-- [start:count_params]
def count_params(config: GPTConfig, tied: bool = True) -> int:
    """The number of parameters of GPT(config), by formula (tied: lm_head shares
    tok_emb's matrix)."""
    V, T, C, L = config.vocab_size, config.block_size, config.n_embd, config.n_layer
    # every Linear except lm_head, and every LayerNorm, has a bias iff config.bias
    b = 1 if config.bias else 0
    layer_norm = C + b * C  # weight (and bias)
    embeddings = V * C + T * C  # tok_emb (V, C) + pos_emb (T, C)
    per_block = (
        layer_norm  # ln_1
        + (C * 3 * C + b * 3 * C)  # attn.c_attn: C -> 3C (q, k, v)
        + (C * C + b * C)  # attn.c_proj: C -> C
        + layer_norm  # ln_2
        + (C * 4 * C + b * 4 * C)  # mlp.c_fc: C -> 4C
        + (4 * C * C + b * C)  # mlp.c_proj: 4C -> C
    )  # = 12 C^2 + 13 C with biases, 12 C^2 + 2 C without
    head = 0 if tied else V * C  # lm_head (C -> V, no bias): nothing new when tied
    return embeddings + L * per_block + layer_norm + head  # the last layer_norm is ln_f


# --8<-- [end:count_params]


# --8<-- [start:residual]
@torch.no_grad()
def residual_stds(model: GPT, idx: torch.Tensor) -> list[float]:
    """The std of the residual stream x: after the embeddings, then after each block."""
    T = idx.shape[1]
    pos = torch.arange(T, device=idx.device)  # (T,)
    x = model.tok_emb(idx) + model.pos_emb(pos)  # (B, T, C)
    stds = [x.std().item()]
    for block in model.blocks:
        x = block(x)  # two writes: x + attn(ln_1(x)), then x + mlp(ln_2(x))
        stds.append(x.std().item())
    return stds


@torch.no_grad()
def unscale_residual_init(model: GPT) -> GPT:
    """Re-draw every c_proj weight with std 0.02: GPT-2's init without the
    1/sqrt(2 n_layer)."""
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02)
    return model


# --8<-- [end:residual]


if __name__ == "__main__":
    torch.manual_seed(0)
    for name in PRESETS:
        config = preset_config(name, **({} if name == "gpt2" else {"vocab_size": 65}))
        with torch.device("meta"):  # shapes only: no memory, no time
            model = GPT(config)
        counted = sum(p.numel() for p in model.parameters())
        print(f"{name:5s} formula {count_params(config):>11,}  numel {counted:>11,}")
    idx = torch.randint(65, (4, 32))
    print("residual stream std after the last block, scaled vs unscaled init:")
    for n_layer in [2, 8, 32]:
        torch.manual_seed(0)
        model = GPT(
            GPTConfig(
                vocab_size=65, block_size=64, n_layer=n_layer, n_head=4, n_embd=128
            )
        )
        scaled = residual_stds(model, idx)[-1]
        unscaled = residual_stds(unscale_residual_init(model), idx)[-1]
        print(
            f"  n_layer {n_layer:2d}: {scaled:.3f} vs {unscaled:.3f} "
            f"(sqrt(2 n_layer) = {math.sqrt(2 * n_layer):.1f})"
        )
