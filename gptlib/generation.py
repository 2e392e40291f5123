"""Autoregressive sampling: predict a token, append it, repeat.

Chapter 11 (Generation) builds this file.
"""

# --8<-- [start:imports]
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from gptlib.model import GPT, StaticKVCache
from gptlib.tokenizer import Tokenizer

# --8<-- [end:imports]


# --8<-- [start:sample_next]
def check_sampling(
    temperature: float, top_k: int | None = None, top_p: float | None = None
) -> None:
    """Refuse sampling settings that mean nothing, with a message that names them."""
    if not 0 <= temperature < math.inf:  # False for NaN too
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:  # False for NaN too
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token id from the logits of the last position: (B, V) -> (B, 1)."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:  # greedy: always the most likely token
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k is not None:
        kth_best = torch.topk(logits, min(top_k, logits.size(-1))).values[
            :, [-1]
        ]  # (B, 1)
        logits = logits.masked_fill(
            logits < kth_best, float("-inf")
        )  # keep only the k best
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        sorted_probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens before it already cover top_p of the probability
        drop = (
            sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        )  # the best token is never dropped
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(
            -1, order, sorted_logits
        )
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


# --8<-- [end:sample_next]


# --8<-- [start:generate_tokens]
@torch.no_grad()
def generate_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield one new token (B, 1) at a time, feeding each back in as input
    (`max_new_tokens=0`: none).

    With `use_cache`, only the newest token goes through the model at each step; the
    keys and values of earlier tokens come from a StaticKVCache (chapter 13: a KVCache
    that does not grow, only fills up). Learned positions stop at
    block_size, so when the text outgrows the window the cache is rebuilt from the
    last block_size tokens (the same context the uncached loop sees).
    """
    # bad settings fail here, before the first (maybe slow) forward pass
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(
            f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}"
        )
    check_sampling(temperature, top_k, top_p)
    block_size = model.config.block_size
    cache = None
    for step in range(max_new_tokens):
        if not use_cache:
            logits, _ = model(
                idx[:, -block_size:]
            )  # recompute the whole context: (B, T, V)
        elif cache is None or len(cache) + 1 > block_size:
            cache = StaticKVCache(model.config.n_layer, block_size)
            logits, _ = model(
                idx[:, -block_size:], cache=cache
            )  # fill the cache with the context
        else:
            logits, _ = model(
                idx[:, -1:], cache=cache
            )  # only the newest token: (B, 1, V)
        # NaN weights give NaN logits at every step: checking the first step is enough,
        # and costs one host sync per call instead of one per token
        if step == 0 and not torch.isfinite(logits[:, -1]).all():
            raise ValueError(
                "the model's logits are NaN or infinite, so there is nothing to "
                "sample from: are its weights NaN (a training run that diverged)?"
            )
        next_id = sample_next(
            logits[:, -1, :], temperature, top_k, top_p, generator
        )  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
        yield next_id


# --8<-- [end:generate_tokens]


# --8<-- [start:stream]
def stream(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: str | None = None,
) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece, as soon as each piece is text.

    Stops after `max_new_tokens` tokens (0: yields nothing), or before the first
    occurrence of `stop`.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    ids = tokenizer.encode(prompt) or [0]  # an empty prompt starts from token 0
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    pending: list[int] = []  # ids whose text is not complete yet
    text, shown = "", 0  # the continuation so far, and how much of it was yielded
    hold = len(stop) - 1 if stop else 0  # the tail that could be the start of `stop`
    try:
        for next_id in generate_tokens(
            model, idx, max_new_tokens, temperature, top_k, top_p, generator
        ):
            pending.append(int(next_id))
            piece = tokenizer.decode(pending)
            if piece.endswith(
                "\ufffd"
            ):  # a BPE token can end inside a multi-byte character
                continue
            text += piece
            pending = []
            if stop and stop in text:
                text = text[: text.index(stop)]
                break
            if len(text) - hold > shown:
                yield text[shown : len(text) - hold]
                shown = len(text) - hold
        else:
            text += tokenizer.decode(pending) if pending else ""
        if len(text) > shown:
            yield text[shown:]
    finally:
        model.train(was_training)


# --8<-- [end:stream]


# --8<-- [start:generate]
def generate(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: str | None = None,
) -> str:
    """Continue `prompt` and return prompt + continuation (`max_new_tokens=0`: the
    prompt)."""
    pieces = stream(
        model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop
    )
    return prompt + "".join(pieces)


# --8<-- [end:generate]
