"""Chapter 12 (Fine-tuning): how far each part of a model moved, the confusion-matrix
plot, and a view of which tokens an instruction example trains on.

Run it: `python snippets/ch12_finetuning.py` fine-tunes a small model both ways and
prints what moved. The page docs/12-finetuning.md includes its sections; the library
code is gptlib/finetuning.py.
"""

# --8<-- [start:imports]
import torch
import torch.nn as nn

from gptlib.finetuning import IGNORE_INDEX
from gptlib.tokenizer import Tokenizer

# --8<-- [end:imports]


# --8<-- [start:relative_change]
def part_of(name: str) -> str:
    """The part of a GPT a parameter belongs to: 'tok_emb', 'blocks.0', 'ln_f', ..."""
    pieces = name.split(".")
    return ".".join(pieces[:2]) if pieces[0] == "blocks" else pieces[0]


@torch.no_grad()
def relative_change(before: nn.Module, after: nn.Module) -> dict[str, float]:
    """For each part of the model, |after - before| / |before| over all its weights."""
    moved: dict[str, float] = {}
    size: dict[str, float] = {}
    trained = dict(after.named_parameters())
    for name, p in before.named_parameters():
        part = part_of(name)
        moved[part] = moved.get(part, 0.0) + (trained[name] - p).pow(2).sum().item()
        size[part] = size.get(part, 0.0) + p.pow(2).sum().item()
    return {part: (moved[part] / size[part]) ** 0.5 for part in moved}


# --8<-- [end:relative_change]


# --8<-- [start:show_targets]
def show_targets(tokenizer: Tokenizer, ids: list[int], targets: list[int]) -> None:
    """Print each input token above the token it is trained to predict
    (· = masked out)."""
    shown = [repr(tokenizer.decode([i]))[1:-1] for i in ids]
    wanted = [
        "·" if t == IGNORE_INDEX else repr(tokenizer.decode([t]))[1:-1] for t in targets
    ]
    print("input: ", " ".join(f"{s:>2}" for s in shown))
    print("target:", " ".join(f"{s:>2}" for s in wanted))


# --8<-- [end:show_targets]


# --8<-- [start:plot_confusion]
def plot_confusion(
    ax, counts: torch.Tensor, labels: tuple[str, ...], title: str
) -> None:
    """Draw a confusion matrix: rows are the true classes, columns the predicted
    ones."""
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            dark = counts[i, j] > counts.max() / 2
            color = "white" if dark else "black"
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", color=color)


# --8<-- [end:plot_confusion]


if __name__ == "__main__":
    import copy

    from gptlib import GPT, TrainConfig, get_batch, preset_config
    from gptlib.finetuning import finetune, freeze_layers

    torch.manual_seed(0)
    data = torch.randint(0, 65, (5000,))
    base = GPT(preset_config("nano", vocab_size=65))
    config = TrainConfig(
        max_steps=30, batch_size=8, warmup_steps=3, device="cpu", progress=False
    )
    for blocks in (2, 1):
        model = copy.deepcopy(base)
        freeze_layers(model, blocks)
        finetune(model, lambda: get_batch(data, 8, 64), config)
        rounded = {k: round(v, 3) for k, v in relative_change(base, model).items()}
        print(f"trainable_blocks={blocks}:", rounded)
