"""The GPT model, in the order the course builds it: the configuration, attention, the
MLP, the Transformer block, the GPT itself, size presets, and the KV cache that
generation uses.

Shapes in comments use B = batch size, T = sequence length (time), C = n_embd
(channels), H = n_head, D = C // H (head size), V = vocab_size.

Chapters 05-08 build this file; chapter 11 adds the KV cache.
"""

# --8<-- [start:imports]
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

# --8<-- [end:imports]


# --8<-- [start:config]
ATTENTION = ("sdpa", "manual")  # how CausalSelfAttention computes (chapter 13)


@dataclass
class GPTConfig:
    """The sizes a GPT is built from (`gptlib train --help` lists them as flags).

    >>> GPTConfig(n_embd=96, n_head=4).n_embd // 4  # each head gets n_embd / n_head
    24
    """

    vocab_size: int = 65  # token ids are 0 .. vocab_size - 1 (the tokenizer's)
    block_size: int = 64  # the longest context the model sees (number of positions)
    n_layer: int = 4  # Transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # the width of every token's vector
    dropout: float = 0.0  # share of units dropped while training
    bias: bool = True  # biases in Linear layers and LayerNorms, as in GPT-2
    attention: str = "sdpa"  # "sdpa": PyTorch's fused kernel; "manual": written out

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"GPTConfig.{name} must be a positive integer, got {value!r}"
                )
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attention not in ATTENTION:
            raise ValueError(
                f"attention must be one of {ATTENTION}, got {self.attention!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown GPTConfig field(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**data)


# --8<-- [end:config]


# --8<-- [start:attention]
class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and the past."""

    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.layer = layer  # which slot of a KVCache is ours (chapter 11)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.manual = config.attention == "manual"  # chapter 13 measures both
        # q, k and v of all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The queries, keys and values of every head: (B, T, C) -> 3 x (B, H, T, D)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        # split C into H heads of size D and move heads next to batch: (B, H, T, D)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        return q, k, v

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.heads(x)  # each (B, H, T, D)
        mask = None  # None: the usual causal mask (is_causal)
        if cache is not None:  # generating: earlier tokens' keys and values come too
            k, v, mask = cache.update(self.layer, k, v)  # (B, H, past + T, D)
        # softmax(q k^T / sqrt(D) + causal mask) v, with a fused kernel where one exists
        dropout_p = self.dropout if self.training else 0.0
        if self.manual:
            y = manual_attention(q, k, v, dropout_p)  # (B, H, T, D)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=dropout_p
            )  # (B, H, T, D)
        y = (
            y.transpose(1, 2).contiguous().view(B, T, C)
        )  # heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


# --8<-- [end:attention]


# --8<-- [start:manual_attention]
def manual_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """Causal attention written out, as chapter 06 builds it: q (B, H, T, D) against
    k, v (B, H, S, D), where the T queries are the last T of the S positions.

    Under bfloat16 autocast on a CPU this beats the fused kernel's backward pass
    (chapter 13 measures it); the softmax runs in float32 either way.
    """
    att = attention_weights(q, k)  # (B, H, T, S)
    att = F.dropout(att, dropout_p) if dropout_p > 0 else att
    return att.to(v.dtype) @ v  # (B, H, T, D)


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) under the causal mask, in float32: how much each of the
    T queries takes from each of the S positions, (B, H, T, S), every row summing to 1.
    (What chapter 06 draws, and the browser playground shows for a reader's text.)"""
    T, S = q.size(2), k.size(2)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
    causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    return att.float().masked_fill(~causal, float("-inf")).softmax(dim=-1)


# --8<-- [end:manual_attention]


# --8<-- [start:mlp]
class MLP(nn.Module):
    """Position-wise feed-forward network: widen 4x, GELU, project back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # the tanh form GPT-2 was trained with
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (B, T, 4C) -> (B, T, C)
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


# --8<-- [end:mlp]


# --8<-- [start:block]
class Block(nn.Module):
    """A pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)  # (B, T, C): tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # (B, T, C): each token thinks on its own
        return x


# --8<-- [end:block]


# --8<-- [start:gpt]
class GPT(nn.Module):
    """A GPT language model: token ids in, the logits of the next token at every
    position out (and the loss, given targets).

    Token and position embeddings, n_layer Transformer blocks, a final LayerNorm, and
    a linear head that shares its matrix with the token embedding.

    >>> config = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16)
    >>> model = GPT(config)
    >>> idx = torch.tensor([[1, 2, 3]])  # one sequence of 3 token ids: (B, T)
    >>> logits, loss = model(idx, targets=torch.tensor([[2, 3, 4]]))
    >>> logits.shape  # a score for each of the 10 tokens, at each of the 3 positions
    torch.Size([1, 3, 10])
    >>> abs(loss.item() - math.log(10)) < 0.2  # untrained: about a uniform guess
    True
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # --8<-- [start:embeddings]
        self.tok_emb = nn.Embedding(
            config.vocab_size, config.n_embd
        )  # token id -> vector
        self.pos_emb = nn.Embedding(
            config.block_size, config.n_embd
        )  # position -> vector
        # --8<-- [end:embeddings]
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            [Block(config, layer) for layer in range(config.n_layer)]
        )
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # --8<-- [start:tying_and_init]
        # Weight tying: the same matrix maps ids to vectors and vectors back to logits.
        self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2 scales the projections that write into the residual stream, so the
        # stream's variance does not grow with depth (2 writes per block).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        # --8<-- [end:tying_and_init]

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(
        self, idx: torch.Tensor, cache: "KVCache | None" = None
    ) -> torch.Tensor:
        """What the head reads: token ids (B, T) -> vectors (B, T, C)."""
        B, T = idx.shape
        past = len(cache) if cache is not None else 0  # positions already in the cache
        if past + T > self.config.block_size:
            raise ValueError(
                f"sequence length {past + T} is longer than "
                f"block_size={self.config.block_size}"
            )
        # --8<-- [start:embed_forward]
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.drop(
            self.tok_emb(idx) + self.pos_emb(pos)
        )  # (B, T, C) + (T, C) -> (B, T, C)
        # --8<-- [end:embed_forward]
        for block in self.blocks:
            x = block(x, cache)  # (B, T, C)
        return self.ln_f(x)  # (B, T, C)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: "KVCache | None" = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.lm_head(self.hidden_states(idx, cache))  # (B, T, V)
        loss = None
        if targets is not None:
            # ignore_index=-100 lets fine-tuning mask positions out of the loss
            loss = F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=-100
            )  # (B * T, V) against (B * T,)
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters, counting the tied embedding/head matrix once.

        `non_embedding=True` leaves out the position embeddings, as nanoGPT does when it
        reports model sizes (the token embedding stays: it is also the output layer).
        """
        n = sum(p.numel() for p in self.parameters())  # a shared tensor is listed once
        return n - self.pos_emb.weight.numel() if non_embedding else n

    # --8<-- [start:mfu]
    def flops_per_token(self) -> int:
        """Training FLOPs per token, forward and backward (PaLM paper, appendix B):
        6 per parameter for the matmuls, and 12 * L * H * Q * T for attention's
        q @ k^T and att @ v (Q = head size, T = block_size)."""
        c = self.config
        attention = 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size
        return 6 * self.num_params(non_embedding=True) + attention

    def estimate_mfu(self, tokens_per_sec: float, peak_flops: float) -> float:
        """Model FLOPs utilisation: the share of the device's peak FLOP/s that
        training at `tokens_per_sec` uses for the model's own arithmetic."""
        return self.flops_per_token() * tokens_per_sec / peak_flops

    # --8<-- [end:mfu]


# --8<-- [end:gpt]


# Model sizes, smallest first. vocab_size comes from the tokenizer, except for gpt2,
# whose vocabulary is fixed by its tokenizer (50257 tokens).
# --8<-- [start:presets]
PRESETS: dict[str, dict[str, Any]] = {
    # ~0.1M parameters: seconds, for tests and demos
    "nano": dict(n_layer=2, n_head=4, n_embd=64, block_size=64),
    # ~0.8M: about a minute on a laptop CPU
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64),
    # ~10.7M: wants a GPU
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
    # 124M: GPT-2 small
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
}


def preset_config(name: str, **overrides: Any) -> GPTConfig:
    """A GPTConfig from a preset name, with any field overridden (e.g. vocab_size=...).

    >>> preset_config("nano", vocab_size=100).n_layer
    2
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


# --8<-- [end:presets]


# --8<-- [start:kv_cache]
class KVCache:
    """The keys and values of the tokens seen so far, one slot per layer.

    During generation each new token needs only its own query, against the keys and
    values of all earlier tokens; keeping them avoids recomputing the whole prefix.
    `CausalSelfAttention` hands each layer's new keys and values to `update`.
    """

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def length(self, layer: int = 0) -> int:
        """How many positions this layer has cached."""
        k = self.keys[layer]
        return 0 if k is None else k.size(2)

    def __len__(self) -> int:
        return self.length(0)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Add this step's k, v (B, H, T, D) after the cached ones. Returns all keys and
        values (B, H, past + T, D) and the causal mask for the T new queries: query i
        sits at position past + i and may see keys 0 .. past + i."""
        past = self.length(layer)
        if past:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        T = k.size(2) - past
        return k, v, bottom_right_causal_mask(T, past + T)


def bottom_right_causal_mask(T: int, S: int) -> Any:
    """The causal mask of T new queries over S keys, aligned to the bottom right: query
    i sees keys 0 .. S - T + i. PyTorch's `causal_lower_right` gives it to SDPA without
    building a T x S tensor."""
    # imported here, not at the top: it loads torch's compiler (about 1.5 s at every
    # start), which only generating needs
    from torch.nn.attention.bias import causal_lower_right

    return causal_lower_right(T, S)


# --8<-- [end:kv_cache]


# --8<-- [start:static_kv_cache]
class StaticKVCache(KVCache):
    """A KVCache with room for `max_length` positions, allocated at the first update:
    each step writes its keys and values in place, where `KVCache` concatenates
    (a new, longer tensor per layer and token). `generate_tokens` uses this one.
    """

    def __init__(self, n_layer: int, max_length: int):
        super().__init__(n_layer)
        self.max_length = max_length
        self.lengths = [0] * n_layer  # positions filled, per layer

    def length(self, layer: int = 0) -> int:
        return self.lengths[layer]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        past, T = self.lengths[layer], k.size(2)
        if past + T > self.max_length:
            raise ValueError(
                f"the cache holds {self.max_length} positions, not {past + T}"
            )
        if self.keys[layer] is None:  # the first step: (B, H, max_length, D) each
            B, H, _, D = k.shape
            self.keys[layer] = k.new_empty(B, H, self.max_length, D)
            self.values[layer] = v.new_empty(B, H, self.max_length, D)
        self.keys[layer][:, :, past : past + T] = k  # in place: no new memory
        self.values[layer][:, :, past : past + T] = v
        self.lengths[layer] = past + T
        return (
            self.keys[layer][:, :, : past + T],  # views of the filled part
            self.values[layer][:, :, : past + T],
            bottom_right_causal_mask(T, past + T),
        )


# --8<-- [end:static_kv_cache]
