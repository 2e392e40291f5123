"""Scores beyond the training loss.

* `score_text`: the loss over every token of a held-out text, as perplexity and as
  bits per byte (comparable across tokenizers).
* `score_choices`: multiple-choice accuracy in the style of HellaSwag: the model
  picks the ending it finds least surprising. `read_choices` reads HellaSwag's
  JSONL, `fetch_hellaswag` downloads its validation set, and `course_choices` makes
  a small set from the course's own frozen text.
* `sample_board`: the continuations of fixed prompts by several models, side by side.

Chapter 16 (Real data and evaluation) builds this file.
"""

# --8<-- [start:imports]
import hashlib
import json
import math
import os
import random
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gptlib.data import cache_dir, course_text
from gptlib.generation import generate
from gptlib.model import GPT
from gptlib.tokenizer import Tokenizer

# --8<-- [end:imports]


# --8<-- [start:score_text]
@dataclass(frozen=True)
class TextScore:
    tokens: int  # tokens predicted (all but the first)
    bytes: int  # UTF-8 bytes of the text those tokens spell
    nats: float  # their summed loss, -sum ln p(token | the tokens before it)

    @property
    def loss(self) -> float:
        """Mean loss per token, in nats: what training reports."""
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        """exp(loss): as unsure as a fair choice among this many tokens."""
        return math.exp(self.loss)

    @property
    def bits_per_byte(self) -> float:
        """Bits per UTF-8 byte of text: the same unit whatever the tokenizer."""
        return self.nats / math.log(2) / self.bytes

    def to_dict(self) -> dict[str, float]:
        extra = ("loss", "perplexity", "bits_per_byte")
        return asdict(self) | {name: getattr(self, name) for name in extra}


@torch.no_grad()
def score_text(
    model: GPT,
    tokenizer: Tokenizer,
    text: str,
    batch_size: int = 8,
    progress: bool = False,
) -> TextScore:
    """The model's loss on every token of `text` after the first.

    The tokens are cut into windows of block_size: each token is predicted once,
    from the tokens before it in its window, as in training (a window's first
    tokens see little context; a sliding window would give each more, and cost
    more forward passes).
    """
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (N,)
    if len(ids) < 2:
        raise ValueError("the text must be at least 2 tokens long to score one")
    T, device = model.config.block_size, next(model.parameters()).device
    starts = range(0, len(ids) - 1, T)
    # full windows in batches; the last, shorter one (if any) in a batch of its own
    full = [s for s in starts if s + T + 1 <= len(ids)]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[s] for s in starts if s + T + 1 > len(ids)]
    was_training = model.training
    model.eval()
    sums = []  # one summed loss per batch, kept on the device: one sync at the end
    try:
        for batch in tqdm(batches, desc="scoring", disable=not progress):
            n = min(T, len(ids) - 1 - batch[0])  # window length
            x = torch.stack([ids[s : s + n] for s in batch]).to(device)  # (B, n)
            y = torch.stack([ids[s + 1 : s + n + 1] for s in batch]).to(device)
            logits, _ = model(x)  # (B, n, V)
            sums.append(
                F.cross_entropy(
                    logits.flatten(0, 1).float(), y.flatten(), reduction="sum"
                )
            )
    finally:
        model.train(was_training)
    nats = torch.stack(sums).cpu().double().sum().item()
    # the first token is not predicted: its bytes are not counted either
    first = len(tokenizer.decode(ids[:1].tolist()).encode("utf-8"))
    return TextScore(len(ids) - 1, len(text.encode("utf-8")) - first, nats)


# --8<-- [end:score_text]


# --8<-- [start:choices]
@dataclass(frozen=True)
class MultipleChoice:
    context: str
    endings: list[str]
    label: int  # the index of the right ending


def read_choices(path: str | Path, limit: int | None = None) -> list[MultipleChoice]:
    """Multiple-choice items from a JSON-lines file in HellaSwag's format: each line
    has "ctx", "endings" (a list of strings) and "label" (the right one's index).
    A line that lacks one gets an error naming the file and the line."""
    path = Path(path)
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(items) == limit:
                break
            try:
                row = json.loads(line)
                endings, label = row["endings"], int(row["label"])
                item = MultipleChoice(row["ctx"], list(endings), label)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}, line {n}: not a multiple-choice item "
                    f"(needs ctx, endings, label): {e!r}"
                ) from None
            if not (
                isinstance(item.context, str)
                and len(item.endings) >= 2
                and all(isinstance(e, str) and e for e in item.endings)
                and 0 <= item.label < len(item.endings)
            ):
                raise ValueError(
                    f"{path}, line {n}: needs a ctx string, two or more non-empty "
                    "endings and a label that is one of their indices"
                )
            items.append(item)
    if not items:
        raise ValueError(f"{path} holds no multiple-choice items")
    return items


@torch.no_grad()
def ending_losses(
    model: GPT, tokenizer: Tokenizer, item: MultipleChoice
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed loss of each ending's tokens after the context, and their number:
    two tensors of shape (number of endings,).

    Each ending is encoded on its own, after a space, and appended to the context's
    tokens, as build-nanogpt's HellaSwag does; a row longer than the model's
    window loses context from the left.
    """
    context = tokenizer.encode(item.context)
    endings = [tokenizer.encode(" " + ending) for ending in item.endings]
    keep = model.config.block_size + 1
    rows = [(context + ending)[-keep:] for ending in endings]
    length = max(len(row) for row in rows)
    x = torch.zeros(len(rows), length - 1, dtype=torch.long)  # (E, L)
    y = torch.full((len(rows), length - 1), -100)  # -100: not an ending token
    for i, (row, ending) in enumerate(zip(rows, endings)):
        x[i, : len(row) - 1] = torch.tensor(row[:-1])
        n = min(len(ending), len(row) - 1)  # the ending's tokens that are targets
        y[i, len(row) - 1 - n : len(row) - 1] = torch.tensor(row[-n:])
    device = next(model.parameters()).device
    logits, _ = model(x.to(device))  # (E, L, V)
    losses = F.cross_entropy(
        logits.transpose(1, 2).float(), y.to(device), reduction="none"
    )  # (E, L): 0 where the target is -100
    return losses.sum(dim=1).cpu(), (y != -100).sum(dim=1)


def score_choices(
    model: GPT,
    tokenizer: Tokenizer,
    items: Iterable[MultipleChoice],
    progress: bool = False,
) -> dict[str, float]:
    """Accuracy on multiple-choice items, two ways: `accuracy` picks the ending with
    the lowest summed loss, `accuracy_norm` the lowest mean loss per token (which does
    not favour short endings). `chance` is what guessing scores on these items."""
    items = list(items)
    was_training = model.training
    model.eval()
    right = right_norm = 0
    try:
        for item in tqdm(items, desc="choices", disable=not progress):
            total, count = ending_losses(model, tokenizer, item)
            right += int(total.argmin()) == item.label
            right_norm += int((total / count).argmin()) == item.label
    finally:
        model.train(was_training)
    return {
        "items": len(items),
        "accuracy": right / len(items),
        "accuracy_norm": right_norm / len(items),
        "chance": sum(1 / len(item.endings) for item in items) / len(items),
    }


# --8<-- [end:choices]


# --8<-- [start:course_choices]
def is_sentence(text: str, lang: str) -> bool:
    """A sentence of prose, not code, a table or a list: letters (or Chinese
    characters) and punctuation, ending in a full stop."""
    if not 40 <= len(text) <= 250 or any(c in text for c in "`*|[]()=_<>"):
        return False
    if lang == "en":
        prose = sum(c.isalpha() or c in " ,.;:'-" for c in text)
        return text[0].isupper() and text.endswith(".") and prose >= 0.95 * len(text)
    chinese = sum("\u4e00" <= c <= "\u9fff" for c in text)
    return text.endswith("。") and chinese >= 0.6 * len(text)


def course_choices(
    lang: str | None = None, n: int = 100, endings: int = 4, seed: int = 0
) -> list[MultipleChoice]:
    """Multiple-choice items from the last tenth of the frozen course text (`lang`
    "en", "zh" or None for both, as the corpora course-en, course-zh and course):
    the part `train_val_split` keeps for validation, so a model trained on that
    corpus has not read them. A sentence's first half is the context, its second
    half the right ending, and the second halves of `endings - 1` other sentences
    in the same language are the wrong ones. The same items on every machine."""
    text = course_text(lang)
    held_out = text[int(len(text) * 0.9) :]
    halves: dict[str, list[tuple[str, str]]] = {"en": [], "zh": []}
    for paragraph in held_out.split("\n\n"):
        paragraph = " ".join(paragraph.split())
        for sentence in re.split(r"(?<=\.)\s+|(?<=。)", paragraph):
            for language, cut_at_space in (("en", True), ("zh", False)):
                if is_sentence(sentence, language):
                    middle = len(sentence) // 2  # Chinese may be cut anywhere
                    cut = sentence.rfind(" ", 0, middle) if cut_at_space else middle
                    halves[language].append((sentence[:cut], sentence[cut:].strip()))
    pairs = [(lang, pair) for lang, found in halves.items() for pair in found]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    items = []
    for language, (context, right) in pairs[:n]:
        others = [end for _, end in halves[language] if end != right]
        if len(others) < endings - 1:
            continue  # too few sentences in this language for wrong endings
        options = [right, *rng.sample(others, endings - 1)]
        rng.shuffle(options)
        items.append(MultipleChoice(context, options, options.index(right)))
    if not items:
        raise ValueError("the course text held out has no sentences to make items")
    return items


# --8<-- [end:course_choices]


# --8<-- [start:hellaswag]
@dataclass(frozen=True)
class GitFile:
    url: str  # at a pinned commit, so the content never changes
    git_sha1: str  # its blob id at that commit: the checksum git itself keeps
    filename: str
    env_var: str  # a path in this variable is used instead of downloading


HELLASWAG_VAL = GitFile(
    url="https://raw.githubusercontent.com/rowanz/hellaswag/"
    "a29ff8e9a04bba4bd6588223785ce105328adc57/data/hellaswag_val.jsonl",
    git_sha1="0f5ee25d72216f12317d5d8a7b92deafa423d81e",
    filename="hellaswag_val.jsonl",
    env_var="GPTLIB_HELLASWAG",
)


def git_blob_sha1(path: str | Path) -> str:
    """The id git gives a file: SHA-1 of b"blob <size>\\0" + its bytes. HellaSwag's
    authors publish no SHA-256, but this id is fixed at a commit."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def fetch_hellaswag(
    source: GitFile = HELLASWAG_VAL,
    directory: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """The local path of HellaSwag's validation set (10,042 items): the file named
    by $GPTLIB_HELLASWAG, else a download, cached once its git blob id matched."""
    local = os.environ.get(source.env_var)
    if local:
        if not Path(local).is_file():
            raise FileNotFoundError(f"${source.env_var} is {local}, not a file")
        if git_blob_sha1(local) != source.git_sha1:
            raise ValueError(f"{local} (from ${source.env_var}) is not {source.url}")
        return Path(local)
    import pooch  # only downloads need it

    directory = Path(directory) if directory is not None else cache_dir()
    path = directory / source.filename
    if path.is_file() and git_blob_sha1(path) == source.git_sha1:
        return path
    # pooch checks SHA-256 only: download beside the cache, check, then move in
    part = directory / f"{source.filename}.part"
    part.unlink(missing_ok=True)
    pooch.retrieve(
        source.url, None, fname=part.name, path=directory, progressbar=progress
    )
    if git_blob_sha1(part) != source.git_sha1:
        part.unlink()
        raise ValueError(f"the download of {source.url} failed its git blob check")
    part.replace(path)
    return path


# --8<-- [end:hellaswag]


# --8<-- [start:sample_board]
def columns_of(text: str) -> int:
    """How many columns a terminal gives `text`: two for a Chinese character."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` columns, broken at a space where there is
    one (Chinese has none: it breaks anywhere)."""
    lines, line = [], ""
    for char in text:
        if columns_of(line + char) > width:
            cut = line.rfind(" ")
            if char == " " or cut <= 0:  # break here
                lines.append(line)
                line = "" if char == " " else char
                continue
            lines.append(line[:cut])  # break at the last space
            line = line[cut + 1 :]
        line += char
    return [*lines, line] if line.strip() else lines


def sample_board(
    models: Mapping[str, tuple[GPT, Tokenizer]],
    prompts: Iterable[str],
    max_new_tokens: int = 60,
    seed: int = 0,
    width: int = 36,
) -> str:
    """A table to read: for each prompt, each model's continuation in a column of
    its own (sampled with the same seed, temperature 0.8, top-k 40)."""
    lines = []
    names = list(models)
    for prompt in prompts:
        columns = []
        for name in names:
            model, tokenizer = models[name]
            text = generate(
                model, tokenizer, prompt, max_new_tokens, 0.8, top_k=40, seed=seed
            )
            wrapped = wrap(text[len(prompt) :].replace("\n", " ⏎ "), width)
            columns.append([name, "-" * width, *wrapped])
        lines.append(f"prompt: {prompt!r}")
        for row in range(max(len(c) for c in columns)):
            cells = [c[row] if row < len(c) else "" for c in columns]
            padded = [cell + " " * (width - columns_of(cell)) for cell in cells]
            lines.append(" | ".join(padded).rstrip())
        lines.append("")
    return "\n".join(lines)


# --8<-- [end:sample_board]
