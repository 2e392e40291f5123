"""Fine-tuning a pretrained GPT: freezing, a classification head, instruction data with
masked prompts, LoRA adapters, and the loop that trains on batches of examples.

Continued pretraining needs nothing new: it is `gptlib.training.train` on another
corpus,
starting from trained weights, with a smaller learning rate.

Chapter 12 builds this file.
"""

# --8<-- [start:imports]
import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from tqdm.auto import tqdm

from gptlib.checkpoint import CheckpointError, atomic_write_bytes
from gptlib.data import course_snapshot, encode_corpus, load_corpus, train_val_split
from gptlib.generation import generate
from gptlib.model import GPT
from gptlib.tokenizer import Tokenizer, UnknownCharacterError
from gptlib.training import (
    TrainConfig,
    autocast_for,
    configure_optimizer,
    estimate_loss,
    lr_at,
    resolve_dtype,
    train,
    train_step,
)
from gptlib.utils import get_device

# --8<-- [end:imports]


# --8<-- [start:count]
def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied weight counts once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(
        p.numel() for p in params
    )


# --8<-- [end:count]


# --8<-- [start:freeze]
def freeze_layers(model: GPT, trainable_blocks: int) -> None:
    """Freeze the embeddings and all but the last `trainable_blocks` blocks.

    The last blocks and the final LayerNorm keep training. The output head is the
    token embedding (weight tying, chapter 08), so it is frozen with it.
    """
    if not 0 <= trainable_blocks <= len(model.blocks):
        raise ValueError(
            f"trainable_blocks must be between 0 and n_layer={len(model.blocks)}, "
            f"got {trainable_blocks}"
        )
    model.requires_grad_(False)
    for block in model.blocks[len(model.blocks) - trainable_blocks :]:
        block.requires_grad_(True)
    model.ln_f.requires_grad_(True)


# --8<-- [end:freeze]


# --8<-- [start:classifier]
PAD = -1  # pads classification inputs; no real token has this id


class GPTClassifier(nn.Module):
    """A GPT body with a linear head on the hidden state of each sequence's last token.

    Causal attention lets only the last token see the whole text, so its vector is
    the one that can summarize it. Inputs are padded on the right with PAD; padding
    comes after the last real token, which therefore never attends to it.
    """

    def __init__(self, gpt: GPT, n_classes: int):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, idx: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        lengths = (idx != PAD).sum(dim=1)  # (B,) real tokens per sequence
        h = self.gpt.hidden_states(
            idx.clamp(min=0)
        )  # (B, T, C); PAD becomes a harmless id 0
        last = h[torch.arange(idx.size(0), device=idx.device), lengths - 1]  # (B, C)
        logits = self.head(last)  # (B, n_classes)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return logits, loss


# --8<-- [end:classifier]


# --8<-- [start:classification_data]
LABELS = ("english", "chinese", "code")  # what a line of this course is


def course_lines(min_chars: int = 20, max_chars: int = 64) -> list[tuple[str, int]]:
    """Labelled lines this project owns, from the frozen course corpus: prose of the
    English pages, prose of the Chinese pages, and Python from gptlib/ and snippets/.
    Each line is cut to `max_chars` characters; lines shorter than `min_chars` are
    dropped."""
    lines = course_snapshot()["lines"]
    return sorted(
        {
            (line[:max_chars], LABELS.index(label))
            for label in LABELS
            for line in lines[label]
            if len(line) >= min_chars
        }
    )


def split_examples(
    examples: Sequence, fractions: tuple[float, float] = (0.7, 0.15), seed: int = 0
) -> tuple[list, list, list]:
    """Shuffle once (seeded) and cut into train, validation and test lists."""
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n_train, n_val = (
        int(len(shuffled) * fractions[0]),
        int(len(shuffled) * fractions[1]),
    )
    return (
        shuffled[:n_train],
        shuffled[n_train : n_train + n_val],
        shuffled[n_train + n_val :],
    )


def check_split(what: str, total: int, train_set: list, test_set: list) -> None:
    """Refuse to fine-tune on a split with nothing to train on or nothing to test."""
    if not train_set or not test_set:
        raise ValueError(
            f"the tokenizer can encode only {total} {what}: too few to train on and "
            "test; fine-tune a model pretrained on the course (--corpus course)"
        )


def encode_labelled(
    examples: Sequence[tuple[str, int]], tokenizer: Tokenizer, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> ids padded with PAD (N, T), labels (N,). A text longer than block_size
    keeps its end."""
    ids = [tokenizer.encode(text)[-block_size:] for text, _ in examples]
    x = torch.full((len(ids), max(map(len, ids))), PAD, dtype=torch.long)
    for i, row in enumerate(ids):
        x[i, : len(row)] = torch.tensor(row)
    return x, torch.tensor([label for _, label in examples])


@torch.no_grad()
def predict(
    model: GPTClassifier, x: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """The predicted class of every row of x, in batches."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat(
        [
            model(x[i : i + batch_size].to(device))[0].argmax(dim=-1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    )


def confusion_matrix(
    labels: torch.Tensor, predictions: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """counts[i, j]: how many examples of class i were predicted as class j."""
    counts = torch.zeros(n_classes, n_classes, dtype=torch.long)
    counts.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    return counts


@dataclass
class ClassificationReport:
    """Accuracies on held-out data, and the baseline a classifier has to beat."""

    accuracy: float
    majority_baseline: float
    confusion: torch.Tensor


def evaluate_classifier(
    model: GPTClassifier, x: torch.Tensor, y: torch.Tensor, train_labels: torch.Tensor
) -> ClassificationReport:
    """Accuracy on (x, y), and that of always guessing the commonest training label."""
    predictions = predict(model, x)
    majority = torch.bincount(train_labels).argmax()
    return ClassificationReport(
        accuracy=(predictions == y).float().mean().item(),
        majority_baseline=(y == majority).float().mean().item(),
        confusion=confusion_matrix(y, predictions, model.head.out_features),
    )


def encodable(examples: Sequence[tuple], tokenizer: Tokenizer) -> list[tuple]:
    """The examples whose texts the tokenizer can encode (a character tokenizer lacks
    some characters)."""
    kept = []
    for example in examples:
        try:
            for text in example:
                if isinstance(text, str):
                    tokenizer.encode(text)
        except UnknownCharacterError:
            continue
        kept.append(example)
    return kept


# --8<-- [end:classification_data]


# --8<-- [start:finetune_loop]
def finetune(
    model: nn.Module,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig,
) -> list[float]:
    """Train `model` on batches from `next_batch()` and return the loss of every step.

    The step is chapter 09's `train_step` (AdamW, warmup + cosine, clipping, mixed
    precision); only the batches differ: examples instead of random windows of a
    corpus. Frozen parameters (requires_grad=False) are left out of the optimizer.
    """
    device = get_device(config.device)
    model.to(device)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("every parameter is frozen: there is nothing to fine-tune")
    optimizer = configure_optimizer(model, config)
    dtype = resolve_dtype(device, config.dtype)
    autocast = autocast_for(device, dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")
    torch.manual_seed(config.seed)
    losses = []
    model.train()
    for step in tqdm(
        range(config.max_steps),
        disable=not config.progress,
        desc="finetune",
        unit="step",
    ):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        batches = [
            tuple(t.to(device) for t in next_batch())
            for _ in range(config.grad_accum_steps)
        ]
        loss, _ = train_step(
            model, optimizer, batches, config.grad_clip, autocast, scaler
        )
        losses.append(loss)
    model.eval()
    return losses


# How each task of `gptlib finetune` trains when no flag says otherwise: few steps, and
# for continued pretraining a lower rate (the weights are good already).
FINETUNE_DEFAULTS: dict[str, dict[str, Any]] = {
    "continue": dict(max_steps=200, learning_rate=1e-3),
    "classify": dict(max_steps=300, learning_rate=3e-3),
    "instruct": dict(max_steps=300, learning_rate=3e-3),
}


def finetune_config(task: str, **overrides: Any) -> TrainConfig:
    """The training settings of a fine-tuning task, any of them overridden: batches of
    16, min_lr a tenth of the rate, a short warm-up, one evaluation at the end."""
    if task not in FINETUNE_DEFAULTS:
        raise ValueError(
            f"unknown fine-tuning task {task!r}; "
            f"choose one of {list(FINETUNE_DEFAULTS)}"
        )
    settings = {"batch_size": 16, **FINETUNE_DEFAULTS[task], **overrides}
    steps, lr = settings["max_steps"], settings["learning_rate"]
    settings.setdefault("min_lr", lr / 10)
    settings.setdefault("warmup_steps", min(20, steps // 10))
    settings.setdefault("eval_interval", max(1, steps))
    return TrainConfig(**settings)


# --8<-- [end:finetune_loop]


# --8<-- [start:batches]
def random_batches(
    examples: Sequence,
    batch_size: int,
    collate: Callable[[list], tuple[torch.Tensor, torch.Tensor]],
    seed: int = 0,
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A function that returns `batch_size` examples drawn at random (seeded)."""
    rng = random.Random(seed)
    return lambda: collate(rng.choices(examples, k=batch_size))


# --8<-- [end:batches]


# --8<-- [start:instruction_data]
PROMPT_TEMPLATE = (
    "In: {instruction}\nOut: "  # short: the prompt and response fit a 64-token window
)
END = "\n"  # a response ends with a newline, so generation can stop there
IGNORE_INDEX = (
    -100
)  # targets with this value add nothing to the loss (F.cross_entropy's ignore_index)


def glossary_instructions() -> list[tuple[str, str]]:
    """(instruction, response) pairs from the course's terminology table, both ways."""
    pairs = []
    for en, zh in course_snapshot()["glossary"]:
        if zh != en:  # 'logits' is 'logits' in both languages: nothing to translate
            pairs.append((f"Chinese for: {en}", zh))
            pairs.append((f"English for: {zh}", en))
    return pairs


def encode_instruction(
    tokenizer: Tokenizer, instruction: str, response: str, block_size: int
) -> tuple[list[int], list[int]]:
    """Input ids and targets for one example. Targets are the inputs shifted by one,
    with every position that predicts a prompt token set to IGNORE_INDEX: the model is
    trained
    to write the response, not to reproduce the question."""
    prompt = tokenizer.encode(PROMPT_TEMPLATE.format(instruction=instruction))
    answer = tokenizer.encode(response + END)
    ids = prompt + answer
    if len(ids) - 1 > block_size:
        raise ValueError(
            f"example {instruction!r} is {len(ids) - 1} tokens, "
            f"longer than block_size={block_size}"
        )
    targets = [IGNORE_INDEX] * len(prompt) + answer
    return ids[:-1], targets[1:]  # position t predicts token t + 1


def pad_examples(
    examples: Sequence[tuple[list[int], list[int]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch: inputs with id 0 (causal attention never lets a real token see
    the padding after it), targets with IGNORE_INDEX (the padding adds nothing to the
    loss)."""
    T = max(len(ids) for ids, _ in examples)
    x = torch.zeros(len(examples), T, dtype=torch.long)
    y = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, targets) in enumerate(examples):
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, : len(targets)] = torch.tensor(targets)
    return x, y  # (B, T) each


def respond(
    model: GPT, tokenizer: Tokenizer, instruction: str, max_new_tokens: int = 30
) -> str:
    """The model's greedy answer to one instruction."""
    prompt = PROMPT_TEMPLATE.format(instruction=instruction)
    return generate(
        model, tokenizer, prompt, max_new_tokens, temperature=0.0, stop=END
    )[len(prompt) :]


def exact_match(
    model: GPT, tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]]
) -> float:
    """The share of (instruction, response) pairs that the model answers exactly."""
    if not pairs:
        raise ValueError("exact_match of no pairs: there is nothing to score")
    return sum(respond(model, tokenizer, q) == a for q, a in pairs) / len(pairs)


# --8<-- [end:instruction_data]


# --8<-- [start:lora]
class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: y = W x + (alpha / r) B A x.

    A (r, in) starts random and B (out, r) starts at zero, so at first the layer
    computes
    exactly what the base layer did; training moves only A and B, r * (in + out) numbers
    instead of in * out.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(
            self.lora_A, a=math.sqrt(5)
        )  # nn.Linear's own initialization
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (
            self.dropout(x) @ self.lora_A.T @ self.lora_B.T
        )  # (B, T, in) -> (B, T, r) -> (B, T, out)
        return self.base(x) + self.scaling * update

    def merged(self) -> nn.Linear:
        """A plain nn.Linear with the update folded in: W + (alpha / r) B A.
        The same outputs, at no extra cost."""
        linear = nn.Linear(
            self.base.in_features,
            self.base.out_features,
            bias=self.base.bias is not None,
        )
        linear.to(self.base.weight.device, self.base.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(
                self.base.weight + self.scaling * self.lora_B @ self.lora_A
            )
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear


LORA_TARGETS = (
    "attn.c_attn",
    "attn.c_proj",
)  # the attention projections of every block


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: Sequence[str] = LORA_TARGETS,
) -> list[str]:
    """Freeze `model`, and wrap in a LoRALinear every nn.Linear whose name ends with a
    target.

    Returns the wrapped names. alpha defaults to 2 * rank (a scaling of 2).
    """
    alpha = 2.0 * rank if alpha is None else alpha
    model.requires_grad_(False)
    names = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.endswith(tuple(targets))
    ]
    if not names:
        raise ValueError(
            f"no nn.Linear in the model matches the LoRA targets {list(targets)}"
        )
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Swap each LoRALinear for its merged nn.Linear, in place: a plain model again."""
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, m.merged())
    return model


# --8<-- [end:lora]


# --8<-- [start:adapter]
ADAPTER_FORMAT = "gptlib-lora-adapter"


def base_fingerprint(model: nn.Module) -> str:
    """A SHA-256 of the frozen base weights: an adapter never goes on another model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if "lora_" not in name:
            digest.update(name.replace(".base.", ".").encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_adapter(path: str | Path, model: nn.Module) -> Path:
    """Write only the LoRA weights (and how to re-apply them) to a small file."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not layers:
        raise ValueError("the model has no LoRA layers: call apply_lora first")
    tensors = {}
    for name, m in layers.items():
        tensors[f"{name}.lora_A"] = m.lora_A.detach().cpu().contiguous()
        tensors[f"{name}.lora_B"] = m.lora_B.detach().cpu().contiguous()
    first = next(iter(layers.values()))
    metadata = {
        "format": ADAPTER_FORMAT,
        "rank": str(first.rank),
        "alpha": str(first.alpha),
        "layers": json.dumps(list(layers)),
        "base_fingerprint": base_fingerprint(model),
    }
    path = Path(path)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))
    return path


def read_marked_file(
    path: str | Path, marker: str, what: str
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a safetensors file whose format is `marker`, or a
    clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:  # JSON and raw tensors only: nothing in the file can run code
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable {what} file: {e}") from None
    if metadata.get("format") != marker:
        raise CheckpointError(f"{path} is not a gptlib {what} (no '{marker}' marker)")
    return metadata, tensors


def load_adapter(path: str | Path, model: nn.Module) -> nn.Module:
    """Apply the LoRA adapter saved at `path` to `model` (a plain model with the same
    base weights)."""
    metadata, tensors = read_marked_file(path, ADAPTER_FORMAT, "LoRA adapter")
    if metadata["base_fingerprint"] != base_fingerprint(model):
        raise CheckpointError(
            f"{path} was trained on other base weights than this model's"
        )
    layers = json.loads(metadata["layers"])
    apply_lora(model, int(metadata["rank"]), float(metadata["alpha"]), targets=layers)
    with torch.no_grad():
        for name in layers:
            layer = model.get_submodule(name)
            layer.lora_A.copy_(tensors[f"{name}.lora_A"])
            layer.lora_B.copy_(tensors[f"{name}.lora_B"])
    return model


# --8<-- [end:adapter]


# --8<-- [start:classifier_head]
HEAD_FORMAT = "gptlib-classifier-head"


def save_classifier_head(
    path: str | Path, classifier: GPTClassifier, labels: Sequence[str]
) -> Path:
    """Write a classifier's head and its labels, to go beside a checkpoint of its GPT.

    The GPT's fingerprint goes with them, so the head is never put on another body.
    """
    if len(labels) != classifier.head.out_features:
        raise ValueError(
            f"{len(labels)} labels for a head with "
            f"{classifier.head.out_features} outputs"
        )
    tensors = {
        name: t.detach().cpu().contiguous()
        for name, t in classifier.head.state_dict().items()
    }
    metadata = {
        "format": HEAD_FORMAT,
        "labels": json.dumps(list(labels), ensure_ascii=False),
        "base_fingerprint": base_fingerprint(classifier.gpt),
    }
    path = Path(path)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))
    return path


def load_classifier_head(path: str | Path, gpt: GPT) -> tuple[GPTClassifier, list[str]]:
    """The classifier made of `gpt` and the head saved at `path` (in eval mode), and
    its labels."""
    metadata, tensors = read_marked_file(path, HEAD_FORMAT, "classifier head")
    if metadata["base_fingerprint"] != base_fingerprint(gpt):
        raise CheckpointError(
            f"{path} was trained on top of other weights than this model's"
        )
    labels = json.loads(metadata["labels"])
    classifier = GPTClassifier(gpt, len(labels))
    classifier.head.load_state_dict(
        tensors
    )  # strict: exactly the head's weight and bias
    return classifier.to(next(gpt.parameters()).device).eval(), labels


# --8<-- [end:classifier_head]


# The three tasks of `gptlib finetune`, built from the pieces above. Each measures
# before and after, so that the command line can say what changed; `make_trainable`
# runs in between, to freeze layers or add LoRA adapters (without it, all of it trains).
MakeTrainable = Callable[[nn.Module], None]


def continue_pretraining(
    model: GPT,
    tokenizer: Tokenizer,
    config: TrainConfig,
    corpus: str,
    old_corpus: str | None = None,
    make_trainable: MakeTrainable | None = None,
) -> dict[str, tuple[float, float]]:
    """Train on `corpus`: the validation loss before and after, on it and old_corpus."""
    splits = {
        name: train_val_split(encode_corpus(load_corpus(name), tokenizer), 0.1)
        for name in dict.fromkeys(filter(None, (corpus, old_corpus)))
    }
    val = {name: val_data for name, (_, val_data) in splits.items()}
    before = estimate_loss(model, val, config.batch_size, config.eval_batches)
    if make_trainable is not None:
        make_trainable(model)
    if train(model, *splits[corpus], config).interrupted:
        raise KeyboardInterrupt
    device = next(model.parameters()).device
    after = estimate_loss(model, val, config.batch_size, config.eval_batches, device)
    return {name: (before[name], after[name]) for name in val}


@dataclass
class ClassifierRun:
    classifier: GPTClassifier
    n_examples: int  # labelled lines in all (train, validation and test)
    n_train: int
    n_test: int
    before: ClassificationReport
    after: ClassificationReport


def train_classifier(
    model: GPT,
    tokenizer: Tokenizer,
    config: TrainConfig,
    make_trainable: MakeTrainable | None = None,
) -> ClassifierRun:
    """A head on `model` for LABELS, trained on the course's lines, tested on others."""
    block = model.config.block_size
    examples = encodable(course_lines(max_chars=block), tokenizer)
    train_set, _, test_set = split_examples(examples, seed=config.seed)
    check_split("of the course's lines", len(examples), train_set, test_set)
    x_test, y_test = encode_labelled(test_set, tokenizer, block)
    y_train = torch.tensor([label for _, label in train_set])
    classifier = GPTClassifier(model, len(LABELS))
    before = evaluate_classifier(classifier, x_test, y_test, y_train)
    if make_trainable is not None:
        make_trainable(classifier)
    classifier.head.requires_grad_(True)  # the new head always trains

    def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_labelled(batch, tokenizer, block)

    finetune(
        classifier,
        random_batches(train_set, config.batch_size, collate, config.seed),
        config,
    )
    after = evaluate_classifier(classifier, x_test, y_test, y_train)
    return ClassifierRun(
        classifier, len(examples), len(train_set), len(test_set), before, after
    )


@dataclass
class InstructionRun:
    skipped: int  # glossary questions the tokenizer cannot encode
    train_set: list[tuple[str, str]]
    test_set: list[tuple[str, str]]
    before: tuple[float, float]  # exact answers: (trained questions, held-out ones)
    after: tuple[float, float]


def instruction_tune(
    model: GPT,
    tokenizer: Tokenizer,
    config: TrainConfig,
    make_trainable: MakeTrainable | None = None,
) -> InstructionRun:
    """Teach `model` the course glossary as questions and answers (85% of them)."""
    pairs = glossary_instructions()
    usable = encodable(pairs, tokenizer)
    train_set, _, test_set = split_examples(usable, (0.85, 0.0), seed=config.seed)
    check_split("glossary questions", len(usable), train_set, test_set)
    block = model.config.block_size
    encoded = [encode_instruction(tokenizer, q, a, block) for q, a in train_set]

    def exact() -> tuple[float, float]:
        return exact_match(model, tokenizer, train_set), exact_match(
            model, tokenizer, test_set
        )

    before = exact()
    if make_trainable is not None:
        make_trainable(model)
    finetune(
        model,
        random_batches(encoded, config.batch_size, pad_examples, config.seed),
        config,
    )
    return InstructionRun(
        len(pairs) - len(usable), train_set, test_set, before, exact()
    )
