"""Chapter 11 (Generation): the sampling loop by hand, entropy, what top-k / top-p keep,
timing the KV cache, and the exercises' repetition penalty and min-p sampling.

Run it: `python snippets/ch11_generation.py` prints a short demo. The page
docs/11-generation.md includes its sections; the library code is gptlib/generation.py.
"""

# --8<-- [start:imports]
import time

import torch
import torch.nn.functional as F

from gptlib import GPT, generate_tokens

# --8<-- [end:imports]


# --8<-- [start:sample_loop]
@torch.no_grad()
def naive_generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The sampling loop at its simplest: idx (B, T) -> (B, T + max_new_tokens)."""
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        # the model has positions for block_size tokens only
        context = idx[:, -block_size:]
        logits, _ = model(context)  # (B, T, V): a prediction after every position
        logits = logits[:, -1, :]  # (B, V): only the last one is about the next token
        probs = F.softmax(logits, dim=-1)  # (B, V): each row sums to 1
        next_id = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)  # append, and feed it back in
    return idx


# --8<-- [end:sample_loop]


# --8<-- [start:entropy]
def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats, -sum p ln p, over the last dimension (0 ln 0 counts as 0)."""
    return torch.special.entr(probs).sum(dim=-1)


# --8<-- [end:entropy]


# --8<-- [start:filter_probs]
def filter_probs(
    probs: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """What top-k and top-p keep of a probability vector (V,), renormalised to sum to 1.

    A readable reference for sample_next, which does the same on logits: top-k first,
    then top-p on what top-k left.
    """
    probs = probs.clone()
    if top_k is not None:
        kth_best = probs.sort(descending=True).values[min(top_k, len(probs)) - 1]
        probs[probs < kth_best] = 0.0  # keep the k most likely tokens
        probs = probs / probs.sum()
    if top_p is not None:
        sorted_probs, order = probs.sort(descending=True)
        # probability of the better tokens
        before = sorted_probs.cumsum(0) - sorted_probs
        sorted_probs[before > top_p] = 0.0  # the better tokens already cover top_p
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        probs = probs / probs.sum()
    return probs


# --8<-- [end:filter_probs]


# --8<-- [start:time_generation]
def time_generation(
    model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool, repeats: int = 3
) -> tuple[float, torch.Tensor]:
    """Best wall time of `repeats` runs (CPU) to sample `new_tokens` tokens, and the
    tokens."""
    best = float("inf")
    for _ in range(repeats):
        g = torch.Generator().manual_seed(0)  # every run samples the same tokens
        start = time.perf_counter()
        token_stream = generate_tokens(
            model, prompt, new_tokens, generator=g, use_cache=use_cache
        )
        tokens = torch.cat(list(token_stream), 1)
        best = min(best, time.perf_counter() - start)
    return best, tokens


# --8<-- [end:time_generation]


# --8<-- [start:repetition_penalty]
def repetition_penalty(
    logits: torch.Tensor, idx: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make every token that already occurs in idx (B, T) less likely: logits (B, V).

    The penalty of the CTRL paper (Keskar et al., 2019), in the form Hugging Face
    transformers implements it: a positive logit is divided by `penalty`, a negative
    one multiplied by it, so both move down for penalty > 1.
    """
    seen = torch.gather(logits, 1, idx)  # (B, T): logits of the tokens already there
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, idx, seen)


@torch.no_grad()
def greedy_with_penalty(
    model: GPT, idx: torch.Tensor, max_new_tokens: int, penalty: float
) -> torch.Tensor:
    """Greedy decoding with a repetition penalty over the tokens in the context
    window."""
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        context = idx[:, -block_size:]
        logits = model(context)[0][:, -1, :]  # (B, V)
        logits = repetition_penalty(logits, context, penalty)
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx


# --8<-- [end:repetition_penalty]


# --8<-- [start:min_p]
def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep the tokens at least min_p times as likely as the best one: logits (B, V)."""
    probs = F.softmax(logits, dim=-1)
    # scales with confidence
    threshold = min_p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


# --8<-- [end:min_p]


if __name__ == "__main__":
    from gptlib import CharTokenizer, GPTConfig, sample_next

    torch.manual_seed(0)
    words = ["mat", "floor", "sofa", "bed", "roof", "moon"]
    probs = torch.tensor([0.42, 0.23, 0.16, 0.09, 0.06, 0.04])
    print("entropy of the toy distribution:", round(entropy(probs).item(), 3), "nats")
    for kwargs in [dict(top_k=3), dict(top_p=0.8)]:
        kept = filter_probs(probs, **kwargs)
        print(kwargs, {w: round(p, 3) for w, p in zip(words, kept.tolist()) if p > 0})
    filtered = min_p_filter(probs.log()[None], 0.3)[0]
    print("min_p=0.3 keeps:", [w for w, logit in zip(words, filtered) if logit > -1e9])

    tok = CharTokenizer.train("abcdefgh")
    model = GPT(
        GPTConfig(
            vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16
        )
    ).eval()
    prompt = torch.tensor([tok.encode("abc")])
    ours = naive_generate(model, prompt, 20, torch.Generator().manual_seed(0))[:, 3:]
    g = torch.Generator().manual_seed(0)
    token_stream = generate_tokens(model, prompt, 20, generator=g, use_cache=False)
    theirs = torch.cat(list(token_stream), 1)
    print(
        "naive loop == generate_tokens:",
        torch.equal(ours, theirs),
        tok.decode(ours[0].tolist()),
    )
    print("greedy sample_next:", sample_next(probs.log()[None], temperature=0).item())
    seconds, _ = time_generation(model, prompt, 40, use_cache=True, repeats=1)
    print(f"40 tokens with the cache: {seconds:.3f} s")
