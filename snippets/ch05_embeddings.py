"""Chapter 05 (Embeddings): token and position embeddings.

Run it: `python snippets/ch05_embeddings.py` prints a short demo. The page
docs/05-embeddings.md includes its sections.
"""

# --8<-- [start:imports]
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib import CharTokenizer, seed_everything

# --8<-- [end:imports]


# --8<-- [start:one_hot]
def one_hot_embed(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The embedding lookup written as a matrix multiply: one_hot(ids) @ weight.

    ids: integer tensor of any shape S; weight: (V, C). Returns shape S + (C,),
    the same numbers as `nn.functional.embedding(ids, weight)`, at V times the work.
    """
    one_hot = F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype)  # S + (V,)
    return one_hot @ weight  # S + (V,) @ (V, C) -> S + (C,)


# --8<-- [end:one_hot]


# --8<-- [start:mix]
def mix(x: torch.Tensor) -> torch.Tensor:
    """A stand-in for self-attention (chapter 06). x: (T, C), one vector per token.

    Every output is a weighted average of all the input vectors, with weights computed
    from the vectors themselves. Nothing here looks at where a vector sits in x.
    """
    # (T, T): how much token t takes from token s
    weights = torch.softmax(x @ x.T, dim=-1)
    return weights @ x  # (T, T) @ (T, C) -> (T, C)


# --8<-- [end:mix]


# --8<-- [start:sinusoidal]
def sinusoidal_positions(block_size: int, n_embd: int) -> torch.Tensor:
    """The fixed position table of "Attention Is All You Need" (Vaswani et al., 2017).

    PE[pos, 2i]   = sin(pos / 10000^(2i / n_embd))
    PE[pos, 2i+1] = cos(pos / 10000^(2i / n_embd))
    Returns a (block_size, n_embd) tensor; nothing in it is learned.
    """
    pos = torch.arange(block_size, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    # 0, 2, 4, ...: (ceil(C / 2),)
    two_i = torch.arange(0, n_embd, 2, dtype=torch.float32)
    # 1 / 10000^(2i / C), from 1 down to ~1e-4
    freq = torch.exp(-math.log(10000.0) * two_i / n_embd)
    angles = pos * freq  # (T, 1) * (ceil(C / 2),) -> (T, ceil(C / 2))
    pe = torch.zeros(block_size, n_embd)
    pe[:, 0::2] = torch.sin(angles)  # even channels
    # odd channels (one fewer if C is odd)
    pe[:, 1::2] = torch.cos(angles[:, : n_embd // 2])
    return pe


# --8<-- [end:sinusoidal]


if __name__ == "__main__":
    seed_everything(0)
    tok = CharTokenizer.train("the cat sat on the mat")
    # (B, T) = (2, 11)
    idx = torch.tensor([tok.encode("the cat sat"), tok.encode(" on the mat")])
    tok_emb = nn.Embedding(tok.vocab_size, 8)  # (V, C) = (10, 8)
    pos_emb = nn.Embedding(16, 8)  # learned positions, block_size 16
    pos = torch.arange(idx.shape[1])  # (T,)
    x = tok_emb(idx) + pos_emb(pos)  # (B, T, C) + (T, C) -> (B, T, C)
    print("ids", tuple(idx.shape), "-> embeddings", tuple(x.shape))
    print(
        "lookup == one-hot @ W:",
        torch.equal(tok_emb(idx), one_hot_embed(idx, tok_emb.weight)),
    )
    tok_emb(idx[:1]).sum().backward()  # "the cat sat" has no 'm', 'n', 'o'
    print(
        "rows with a gradient:",
        tok_emb.weight.grad.abs().sum(1).nonzero().flatten().tolist(),
        "of",
        tok.vocab_size,
    )
    pe = sinusoidal_positions(1024, 64)
    print(
        "sinusoidal table",
        tuple(pe.shape),
        "min distance between two rows",
        round(torch.pdist(pe).min().item(), 3),
    )
