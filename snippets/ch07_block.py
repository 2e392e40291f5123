"""Chapter 07 (Transformer Block): LayerNorm from scratch, residual connections,
a post-norm block to compare with gptlib's pre-norm Block, and where a block list lives.

Run it: `python snippets/ch07_block.py` prints a short demo. The page
docs/07-transformer-block.md includes its sections.
"""

# --8<-- [start:imports]
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib import (
    GPT,
    Block,
    CharTokenizer,
    GPTConfig,
    encode_corpus,
    get_batch,
    load_corpus,
    seed_everything,
)

# --8<-- [end:imports]


# --8<-- [start:layernorm]
class LayerNormFromScratch(nn.Module):
    """LayerNorm over the last dimension: each vector gets mean 0 and variance 1,
    then a learned scale (weight) and shift (bias) per channel."""

    def __init__(self, n_embd: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps  # keeps the division finite when a vector is constant
        # the scale, starts at 1
        self.weight = nn.Parameter(torch.ones(n_embd))
        # the shift, starts at 0
        self.bias = nn.Parameter(torch.zeros(n_embd)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1): one mean per vector
        # biased: divides by C, not C - 1
        var = x.var(dim=-1, keepdim=True, correction=0)  # (..., 1)
        x_hat = (x - mean) / torch.sqrt(var + self.eps)  # (..., C): mean 0, variance 1
        out = x_hat * self.weight  # scale each channel
        if self.bias is not None:
            out = out + self.bias  # shift each channel
        return out


# --8<-- [end:layernorm]


# --8<-- [start:residual]
class Residual(nn.Module):
    """x + f(x): the layer f learns a change to x instead of a replacement for it."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


def deep_stack(depth: int, width: int, residual: bool) -> nn.Sequential:
    """`depth` layers of Linear + tanh, each wrapped in a skip connection or not."""
    layers = [nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth)]
    if residual:
        layers = [Residual(layer) for layer in layers]
    return nn.Sequential(*layers)


def input_grad_norm(stack: nn.Module, x: torch.Tensor) -> float:
    """The norm of d(sum of the outputs)/d(input): how much gradient reaches the
    bottom."""
    x = x.detach().requires_grad_()
    stack(x).sum().backward()
    return x.grad.norm().item()


# --8<-- [end:residual]


# --8<-- [start:post_norm]
class PostNormBlock(Block):
    """The original Transformer's order: add first, then normalise (x = ln(x + f(x))).

    Same parts, so the same parameters, as gptlib's pre-norm Block; only forward
    differs.
    """

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x, cache))  # (B, T, C)
        x = self.ln_2(x + self.mlp(x))  # (B, T, C)
        return x


# --8<-- [end:post_norm]


# --8<-- [start:pre_vs_post]
def to_post_norm(model: GPT) -> GPT:
    """A copy of `model` whose blocks are PostNormBlocks holding the very same
    weights."""
    post = copy.deepcopy(model)
    for i, block in enumerate(model.blocks):
        post.blocks[i] = PostNormBlock(model.config, i)
        # same names: ln_1, attn, ln_2, mlp
        post.blocks[i].load_state_dict(block.state_dict())
    return post


def train_briefly(
    model: GPT,
    data: torch.Tensor,
    steps: int,
    lr: float,
    batch_size: int = 16,
    seed: int = 0,
) -> list[float]:
    """The plainest loop: AdamW at a constant learning rate, no warmup, no clipping.
    Returns the training loss of every step. The same seed gives the same batches."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        # (B, T) each
        x, y = get_batch(data, batch_size, model.config.block_size, generator=g)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def block_changes(model: GPT, idx: torch.Tensor) -> list[float]:
    """For each block: |block(x) - x| / |x|, how much it changes the stream it is
    given."""
    changes = []

    def record(module, inputs, output):
        changes.append(((output - inputs[0]).norm() / inputs[0].norm()).item())

    hooks = [block.register_forward_hook(record) for block in model.blocks]
    model(idx)
    for hook in hooks:
        hook.remove()
    return changes


# --8<-- [end:pre_vs_post]


# --8<-- [start:containers]
class BlocksInAList(nn.Module):
    """The bug: blocks kept in a plain Python list are invisible to PyTorch."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.blocks = [Block(config, layer) for layer in range(config.n_layer)]

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cache)
        return x


class BlocksInAModuleList(nn.Module):
    """The fix, as in gptlib.GPT: nn.ModuleList registers every block."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.blocks = nn.ModuleList(
            [Block(config, layer) for layer in range(config.n_layer)]
        )

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cache)  # each block gets the cache too
        return x


# --8<-- [end:containers]


if __name__ == "__main__":
    seed_everything(0)
    x = torch.randn(4, 8, 32)
    ours, ref = LayerNormFromScratch(32), nn.LayerNorm(32)
    print(
        "LayerNorm from scratch vs nn.LayerNorm, max abs difference:",
        f"{(ours(x) - ref(x)).abs().max():.1e}",
    )
    for residual in (False, True):
        torch.manual_seed(0)
        norm = input_grad_norm(deep_stack(20, 64, residual), torch.randn(8, 64))
        print(f"20 layers, residual={residual}: gradient norm at the input {norm:.1e}")
    t = torch.linspace(-6, 6, 1201)
    gelu_gap = F.gelu(t) - F.gelu(t, approximate="tanh")
    print(f"exact vs tanh GELU, max abs difference: {gelu_gap.abs().max():.1e}")
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16)
    print(
        "parameters in a list:",
        sum(p.numel() for p in BlocksInAList(cfg).parameters()),
        "| in a ModuleList:",
        sum(p.numel() for p in BlocksInAModuleList(cfg).parameters()),
    )
    text = load_corpus("course-en")
    tok = CharTokenizer.train(text)
    data = encode_corpus(text, tok)
    pre = GPT(
        GPTConfig(
            vocab_size=tok.vocab_size, block_size=32, n_layer=4, n_head=4, n_embd=64
        )
    )
    post = to_post_norm(pre)
    for name, model in (("pre-norm", pre), ("post-norm", post)):
        losses = train_briefly(model, data, steps=150, lr=1e-3)
        print(f"{name}: loss after 150 steps {sum(losses[-20:]) / 20:.2f}")
    counts = torch.bincount(data, minlength=tok.vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    print(f"guessing by letter frequency alone: {-(p * p.log()).sum():.2f}")
