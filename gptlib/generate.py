"""Autoregressive sampling: predict a token, append it, repeat."""


# --8<-- [start:imports]
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .model import GPT
from .tokenizer import Tokenizer
# --8<-- [end:imports]


# --8<-- [start:sample_next]
def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token id from the logits of the last position, shape (B, V) -> (B, 1)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:  # greedy: always the most likely token
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kth_best = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))  # keep only the k best
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
# --8<-- [end:sample_next]


# --8<-- [start:generate]
@torch.no_grad()
def generate_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield one new token (B, 1) at a time, feeding each back in as input."""
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        context = idx[:, -block_size:]  # the model has positions for block_size tokens only
        logits, _ = model(context)  # (B, T, V)
        next_id = sample_next(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
        yield next_id


def generate(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> str:
    """Continue `prompt` by `max_new_tokens` tokens and return prompt + continuation."""
    return prompt + "".join(stream(model, tokenizer, prompt, max_new_tokens, temperature, top_k, seed))
# --8<-- [end:generate]


def stream(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece, as soon as each piece is complete text."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    ids = tokenizer.encode(prompt) or [0]  # an empty prompt starts from token 0
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    pending: list[int] = []
    try:
        for next_id in generate_tokens(model, idx, max_new_tokens, temperature, top_k, generator):
            pending.append(int(next_id))
            text = tokenizer.decode(pending)
            if not text.endswith("\ufffd"):  # a BPE token can end inside a multi-byte character
                yield text
                pending = []
        if pending:
            yield tokenizer.decode(pending)
    finally:
        model.train(was_training)
