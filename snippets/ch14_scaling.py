"""Chapter 14 (Scaling out): how much memory training a GPT needs per GPU, with plain
data parallelism (DDP) and with the sharded kinds (ZeRO stages 1 and 2, FSDP).

Run it: `python snippets/ch14_scaling.py` prints the table for the GPT-2 sizes on 8
GPUs. The page docs/14-scaling-out.md includes its sections.
"""

# --8<-- [start:gpt2_sizes]
import torch

from gptlib import GPT, GPTConfig

# The four GPT-2 models (Radford et al., 2019), and one of 7 billion parameters shaped
# like them: layers, heads, width
SIZES = {
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
    "7B": (32, 32, 4096),
}


def size_config(name: str) -> GPTConfig:
    n_layer, n_head, n_embd = SIZES[name]
    return GPTConfig(50304, 1024, n_layer, n_head, n_embd, dropout=0.0)


def parameter_count(config: GPTConfig) -> int:
    """The parameters of a GPT, counted without allocating them: on the "meta" device a
    tensor has a shape and a dtype but no memory."""
    with torch.device("meta"):
        return GPT(config).num_params()


# --8<-- [end:gpt2_sizes]


# --8<-- [start:training_memory]
GiB = 2**30


def training_memory(
    config: GPTConfig, batch_size: int, world_size: int
) -> dict[str, float]:
    """GiB per GPU to train `config` with AdamW, float32 weights and bfloat16 autocast,
    `batch_size` sequences of block_size tokens per GPU, over `world_size` GPUs.

    Per parameter: 4 bytes of weight, 4 of gradient, 8 of AdamW's two moments. DDP
    keeps all of it on every GPU; ZeRO-1 shards the moments over the GPUs, ZeRO-2 the
    gradients too, FSDP (ZeRO-3) the weights too. Activations are not sharded: about
    34 bytes per token, layer and channel in 16 bits with a fused attention
    (Korthikanti et al., 2022), plus the logits (float32, and their gradient).
    """
    n = parameter_count(config)
    weights, grads, adam = 4 * n, 4 * n, 8 * n
    tokens = batch_size * config.block_size
    activations = 34 * tokens * config.n_layer * config.n_embd
    activations += 2 * 4 * tokens * config.vocab_size
    states = {
        "DDP": weights + grads + adam,
        "ZeRO-1": weights + grads + adam / world_size,
        "ZeRO-2": weights + (grads + adam) / world_size,
        "FSDP": (weights + grads + adam) / world_size,
    }
    memory = {"params (M)": n / 1e6, "activations": activations / GiB}
    memory.update({k: (v + activations) / GiB for k, v in states.items()})
    return memory


def memory_table(batch_size: int, world_size: int) -> str:
    """`training_memory` for every size in SIZES, as a table."""
    rows = {
        name: training_memory(size_config(name), batch_size, world_size)
        for name in SIZES
    }
    columns = list(next(iter(rows.values())))
    lines = [f"{'model':<12}" + "".join(f"{c:>12}" for c in columns)]
    for name, row in rows.items():
        lines.append(f"{name:<12}" + "".join(f"{v:>12.1f}" for v in row.values()))
    return "\n".join(lines)


# --8<-- [end:training_memory]


if __name__ == "__main__":
    print(memory_table(batch_size=4, world_size=8))
