"""Chapter 06 (Attention): causal self-attention from scratch.

Run it: `python snippets/ch06_attention.py` prints a short demo. The page
docs/06-attention.md includes its sections.

Shapes: B = batch size, T = sequence length, C = n_embd, H = n_head, D = C // H.
"""

# --8<-- [start:imports]
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib import GPT, CausalSelfAttention, seed_everything

# --8<-- [end:imports]


# --8<-- [start:causal_attention]
def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) with the future masked out.

    q, k: (..., T, D) -> (..., T, T). Row t holds how much position t takes from each
    position s; it sums to 1 and is 0 for every s > t.
    """
    T, D = q.shape[-2:]
    # (..., T, D) @ (..., D, T) -> (..., T, T)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    # True on and below the diagonal
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=q.device))
    # the future: -inf, so exp() gives 0
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.softmax(scores, dim=-1)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """Causal scaled dot-product attention.

    q, k, v: (B, H, T, D) (any leading dims) -> (B, H, T, D).
    """
    weights = attention_weights(q, k)  # (B, H, T, T)
    if dropout_p > 0.0:
        # drop some links, scale the rest by 1 / (1 - p)
        weights = F.dropout(weights, p=dropout_p)
    # (B, H, T, T) @ (B, H, T, D) -> (B, H, T, D): weighted averages of values
    return weights @ v


# --8<-- [end:causal_attention]


# --8<-- [start:heads]
class Head(nn.Module):
    """One head of causal self-attention, with its own query, key and value maps."""

    def __init__(
        self, n_embd: int, head_size: int, dropout: float = 0.0, bias: bool = True
    ):
        super().__init__()
        # what am I looking for?
        self.query = nn.Linear(n_embd, head_size, bias=bias)
        # what do I contain?
        self.key = nn.Linear(n_embd, head_size, bias=bias)
        # what do I pass on if chosen?
        self.value = nn.Linear(n_embd, head_size, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (B, T, D) each
        q, k, v = self.query(x), self.key(x), self.value(x)
        dropout_p = self.dropout if self.training else 0.0
        return causal_attention(q, k, v, dropout_p)  # (B, T, D)


class MultiHeadAttention(nn.Module):
    """n_head heads side by side; their outputs are concatenated and projected back
    to C."""

    def __init__(
        self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True
    ):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        head_size = n_embd // n_head
        self.heads = nn.ModuleList(
            [Head(n_embd, head_size, dropout, bias) for _ in range(n_head)]
        )
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)  # mixes what the heads found
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # H x (B, T, D) -> (B, T, C)
        y = torch.cat([head(x) for head in self.heads], dim=-1)
        return self.resid_dropout(self.proj(y))  # (B, T, C)


# --8<-- [end:heads]


# --8<-- [start:copy_weights]
@torch.no_grad()
def copy_from_gptlib(
    mha: MultiHeadAttention, attn: CausalSelfAttention
) -> MultiHeadAttention:
    """Load the weights of gptlib's CausalSelfAttention into our MultiHeadAttention.

    c_attn is one Linear(C, 3C): output rows 0..C-1 are the queries, C..2C-1 the keys,
    2C..3C-1 the values, and within each, head h owns the rows h*D .. (h+1)*D - 1.
    """
    C = attn.c_proj.in_features
    D = C // attn.n_head
    assert len(mha.heads) == attn.n_head and mha.proj.in_features == C
    w_q, w_k, w_v = attn.c_attn.weight.split(C, dim=0)  # (C, C) each
    b_q, b_k, b_v = (
        attn.c_attn.bias.split(C)
        if attn.c_attn.bias is not None
        else (None, None, None)
    )
    for h, head in enumerate(mha.heads):
        rows = slice(h * D, (h + 1) * D)
        for linear, w, b in (
            (head.query, w_q, b_q),
            (head.key, w_k, b_k),
            (head.value, w_v, b_v),
        ):
            linear.weight.copy_(w[rows])
            if b is not None:
                linear.bias.copy_(b[rows])
    mha.proj.weight.copy_(attn.c_proj.weight)
    if attn.c_proj.bias is not None:
        mha.proj.bias.copy_(attn.c_proj.bias)
    return mha


# --8<-- [end:copy_weights]


# --8<-- [start:attention_maps]
@torch.no_grad()
def attention_maps(model: GPT, idx: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """The attention weights of one layer of a GPT for token ids idx (B, T):
    (B, H, T, T).

    Runs the model up to that layer, then recomputes q and k the way its
    CausalSelfAttention does (c_attn applied to ln_1(x)), and uses our
    attention_weights.
    """
    B, T = idx.shape
    pos = torch.arange(T, device=idx.device)  # (T,)
    x = model.tok_emb(idx) + model.pos_emb(pos)  # (B, T, C)
    for block in model.blocks[:layer]:
        x = block(x)  # the layers below this one
    block = model.blocks[layer]
    C, H = x.size(-1), block.attn.n_head
    q, k, _ = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)  # (B, T, C) each
    q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
    k = k.view(B, T, H, C // H).transpose(1, 2)
    return attention_weights(q, k)  # (B, H, T, T)


# --8<-- [end:attention_maps]


if __name__ == "__main__":
    from gptlib import GPTConfig

    seed_everything(0)
    torch.set_printoptions(precision=2, sci_mode=False)
    q, k, v = torch.randn(3, 1, 1, 5, 4).unbind(0)  # B=1, H=1, T=5, D=4
    print(
        "attention weights of 5 random tokens "
        "(rows sum to 1, zeros above the diagonal):"
    )
    print(attention_weights(q, k)[0, 0])
    q, k, v = torch.randn(3, 2, 4, 16, 8).unbind(0)  # (B, H, T, D) = (2, 4, 16, 8)
    ours = causal_attention(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    diff = (ours - ref).abs().max()
    print(
        "from scratch vs F.scaled_dot_product_attention: "
        f"max |difference| {diff.item():.1e}"
    )
    attn = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4))
    mha = copy_from_gptlib(MultiHeadAttention(32, 4), attn)
    x = torch.randn(2, 10, 32)
    print(
        "MultiHeadAttention with gptlib's weights == CausalSelfAttention:",
        torch.allclose(mha(x), attn(x), atol=1e-6),
    )
