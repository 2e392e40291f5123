"""gptlib.finetuning: masked instruction loss, freezing, the classification head, LoRA
(only adapters train, merged == unmerged, adapter files round-trip), and the
`gptlib finetune` command."""

import copy
import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gptlib.cli import main
from gptlib.finetuning import (
    IGNORE_INDEX,
    LABELS,
    PAD,
    PROMPT_TEMPLATE,
    GPTClassifier,
    LoRALinear,
    apply_lora,
    base_fingerprint,
    confusion_matrix,
    count_parameters,
    course_lines,
    encodable,
    encode_instruction,
    encode_labelled,
    evaluate_classifier,
    finetune,
    finetune_config,
    freeze_layers,
    glossary_instructions,
    load_adapter,
    load_classifier_head,
    merge_lora,
    pad_examples,
    random_batches,
    respond,
    save_adapter,
    save_classifier_head,
    split_examples,
)
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import CharTokenizer
from gptlib.training import TrainConfig


def cli(*parts: str) -> int:
    """`gptlib PARTS...` in this process: the exit code."""
    return main(" ".join(parts).split())


CFG = GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=32)


def quick(**kw) -> TrainConfig:
    settings = dict(
        max_steps=20,
        batch_size=8,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        device="cpu",
        progress=False,
    )
    return TrainConfig(**{**settings, **kw})


def model_with(seed: int = 0, config: GPTConfig = CFG) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


@pytest.fixture
def tok():
    return CharTokenizer.train("In: Out: abcdefghijklmnopqrstuvwxyz\n")


# --- instruction data: the loss sees the response only --------------------------------


def test_instruction_targets_mask_the_prompt(tok):
    ids, targets = encode_instruction(tok, "ab", "xyz", block_size=32)
    prompt = tok.encode(PROMPT_TEMPLATE.format(instruction="ab"))
    full = prompt + tok.encode("xyz\n")
    assert ids == full[:-1]
    # position t predicts token t + 1: the first len(prompt) - 1 predictions are
    # prompt tokens
    assert targets == [IGNORE_INDEX] * (len(prompt) - 1) + tok.encode("xyz\n")
    assert tok.decode(t for t in targets if t != IGNORE_INDEX) == "xyz\n"


def test_masked_loss_ignores_prompt_tokens(tok):
    model = model_with()
    ids, targets = encode_instruction(tok, "hello", "abc", block_size=32)
    x, y = torch.tensor([ids]), torch.tensor([targets])
    logits, loss = model(x, y)
    answer = y[0] != IGNORE_INDEX
    assert answer.sum() == len("abc\n")
    by_hand = F.cross_entropy(
        logits[0][answer], y[0][answer]
    )  # only the answer's positions
    assert torch.allclose(loss, by_hand)
    unmasked = torch.tensor(
        [ids[1:] + tok.encode("\n")]
    )  # the same text, every position a target
    assert not torch.allclose(loss, model(x, unmasked)[1])
    # the loss sends no gradient to the predictions made at prompt positions
    logits.retain_grad()
    loss.backward()
    per_position = logits.grad[0].abs().sum(dim=-1)  # (T,)
    assert (per_position[~answer] == 0).all() and (per_position[answer] > 0).all()


def test_pad_examples_pads_inputs_and_masks_targets(tok):
    a = encode_instruction(tok, "a", "b", 32)
    b = encode_instruction(tok, "abcdef", "ghijk", 32)
    x, y = pad_examples([a, b])
    assert x.shape == y.shape == (2, len(b[0]))
    assert (y[0, len(a[1]) :] == IGNORE_INDEX).all() and (x[0, len(a[0]) :] == 0).all()
    # right padding never changes the logits of the real tokens (causal attention)
    model = model_with()
    alone = model(torch.tensor([a[0]]))[0]
    padded = model(x[:1])[0][:, : len(a[0])]
    assert torch.allclose(alone, padded, atol=1e-6)


def test_too_long_example_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="longer than block_size=8"):
        encode_instruction(tok, "abcdefgh", "ijk", block_size=8)


def test_glossary_instructions_cover_both_directions():
    pairs = glossary_instructions()
    assert ("Chinese for: self-attention", "自注意力") in pairs
    assert ("English for: 自注意力", "self-attention") in pairs
    assert not any(
        q.endswith(": logits") for q, _ in pairs
    )  # the same word in both languages is skipped


def test_instruction_tuning_learns_the_answers(tok):
    model = model_with(config=dataclasses.replace(CFG, vocab_size=tok.vocab_size))
    pairs = [("ab", "xy"), ("cd", "uvw"), ("ef", "st")]
    encoded = [encode_instruction(tok, q, a, CFG.block_size) for q, a in pairs]
    assert [respond(model, tok, q) for q, _ in pairs] != [a for _, a in pairs]
    losses = finetune(
        model,
        random_batches(encoded, 8, pad_examples),
        quick(max_steps=150, learning_rate=1e-2),
    )
    assert losses[-1] < 0.05 < losses[0]
    assert [respond(model, tok, q) for q, _ in pairs] == [a for _, a in pairs]


# --- freezing -------------------------------------------------------------------------


def test_freeze_layers_counts_and_trains_only_the_unfrozen():
    model = model_with()
    total = model.num_params()
    assert count_parameters(model) == (total, total)
    freeze_layers(model, 1)
    expected = sum(p.numel() for p in model.blocks[-1].parameters()) + sum(
        p.numel() for p in model.ln_f.parameters()
    )
    assert count_parameters(model) == (expected, total)
    before = copy.deepcopy(model.state_dict())
    data = torch.randint(0, 40, (500,))

    def batch():
        i = torch.randint(0, 400, (1,)).item()
        return data[i : i + 32].view(1, 32), data[i + 1 : i + 33].view(1, 32)

    finetune(model, batch, quick(max_steps=5))
    after = model.state_dict()
    for name, value in before.items():
        moved = not torch.equal(value, after[name])
        assert moved == (name.startswith(("blocks.1.", "ln_f."))), name
    freeze_layers(model, 0)
    assert count_parameters(model)[0] == sum(p.numel() for p in model.ln_f.parameters())
    with pytest.raises(ValueError, match="between 0 and n_layer=2"):
        freeze_layers(model, 3)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to fine-tune"):
        finetune(model, batch, quick(max_steps=1))


# --- classification -------------------------------------------------------------------


def test_classifier_reads_the_last_real_token_and_ignores_padding():
    gpt = model_with()
    clf = GPTClassifier(gpt, 3).eval()
    short, long = [1, 2, 3], [4, 5, 6, 7, 8]
    x = torch.full((2, 5), PAD)
    x[0, :3], x[1] = torch.tensor(short), torch.tensor(long)
    logits, _ = clf(x)
    alone = clf(torch.tensor([short]))[0]
    assert torch.allclose(logits[:1], alone, atol=1e-6)
    expected = clf.head(gpt.hidden_states(torch.tensor([short]))[:, -1])
    assert torch.allclose(alone, expected)


def test_encode_labelled_pads_and_keeps_the_end(tok):
    x, y = encode_labelled([("abc", 0), ("abcdefghij", 2)], tok, block_size=4)
    assert x.tolist()[0] == tok.encode("abc") + [PAD]
    assert x.tolist()[1] == tok.encode("ghij") and y.tolist() == [0, 2]


def test_confusion_matrix_counts_pairs():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion_matrix(labels, preds, 3).tolist() == [
        [1, 1, 0],
        [0, 1, 0],
        [1, 0, 2],
    ]


def test_course_lines_are_labelled_by_where_they_come_from():
    examples = course_lines()
    counts = [sum(1 for _, label in examples if label == i) for i in range(len(LABELS))]
    assert all(c > 50 for c in counts), counts
    han = lambda s: any("\u4e00" <= c <= "\u9fff" for c in s)  # noqa: E731
    assert all(han(t) for t, label in examples if label == LABELS.index("chinese"))
    assert not any(han(t) for t, label in examples if label == LABELS.index("english"))
    assert (
        "def count_parameters(model: nn.Module) -> tuple[int, int]:",
        LABELS.index("code"),
    ) in examples
    assert all(20 <= len(t) <= 64 for t, _ in examples)
    train, val, test = split_examples(examples)
    assert len(train) + len(val) + len(test) == len(examples) and not set(train) & set(
        test
    )
    assert split_examples(examples) == (train, val, test)  # seeded


def test_classification_beats_the_majority_baseline_on_held_out_lines():
    text_tok = CharTokenizer.train("".join(t for t, _ in course_lines()))
    examples = encodable(course_lines(), text_tok)
    train, _, test = split_examples(examples, seed=0)
    x_test, y_test = encode_labelled(test, text_tok, 64)
    _, y_train = encode_labelled(train, text_tok, 64)
    torch.manual_seed(0)
    clf = GPTClassifier(
        GPT(
            GPTConfig(
                vocab_size=text_tok.vocab_size,
                block_size=64,
                n_layer=2,
                n_head=4,
                n_embd=64,
            )
        ),
        len(LABELS),
    )
    before = evaluate_classifier(clf, x_test, y_test, y_train)
    finetune(
        clf,
        random_batches(train, 32, lambda b: encode_labelled(b, text_tok, 64)),
        quick(max_steps=150, batch_size=32),
    )
    after = evaluate_classifier(clf, x_test, y_test, y_train)
    assert after.accuracy > after.majority_baseline + 0.25, (
        after.accuracy,
        after.majority_baseline,
    )
    assert after.accuracy > before.accuracy + 0.25
    assert after.confusion.sum() == len(test) and after.confusion.trace() / len(
        test
    ) == pytest.approx(after.accuracy)


# --- LoRA -----------------------------------------------------------------------------


def test_lora_starts_as_the_base_layer_and_counts_r_times_in_plus_out():
    torch.manual_seed(0)
    base = nn.Linear(16, 24)
    lora = LoRALinear(copy.deepcopy(base), rank=4, alpha=8)
    x = torch.randn(2, 5, 16)
    assert torch.equal(lora(x), base(x))  # B = 0 at the start
    assert count_parameters(lora) == (4 * (16 + 24), 16 * 24 + 24 + 4 * (16 + 24))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRALinear(base, rank=0, alpha=1)


def test_apply_lora_wraps_the_attention_projections_only():
    model = model_with()
    names = apply_lora(model, rank=2)
    assert names == [
        f"blocks.{i}.attn.{p}" for i in range(2) for p in ("c_attn", "c_proj")
    ]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{m}" for n in names for m in "AB"}
    assert count_parameters(model)[0] == 2 * 2 * ((32 + 96) + (32 + 32))
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(model_with(), rank=2, targets=("nothing",))


def lora_trained(steps: int = 10) -> tuple[GPT, GPT, torch.Tensor]:
    """(base, the base + a trained LoRA adapter, a batch of inputs)."""
    base = model_with(1)
    model = copy.deepcopy(base)
    apply_lora(model, rank=4)
    data = torch.randint(0, 40, (300,), generator=torch.Generator().manual_seed(0))
    x, y = data[:256].view(8, 32), data[1:257].view(8, 32)
    finetune(model, lambda: (x, y), quick(max_steps=steps, learning_rate=1e-2))
    return base, model, x


def test_lora_trains_only_adapter_weights():
    base, model, _ = lora_trained()
    trained = dict(model.named_parameters())
    for name, p in base.named_parameters():
        wrapped = name.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        after = trained.get(name, trained.get(wrapped))
        assert torch.equal(p, after), f"{name} moved"
    adapters = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert adapters and all(
        m.lora_B.abs().sum() > 0 for m in adapters
    )  # the adapters did learn


def test_merged_equals_unmerged():
    base, model, x = lora_trained()
    unmerged = model(x)[0]
    assert not torch.allclose(
        unmerged, base(x)[0], atol=1e-3
    )  # the adapter changes the outputs...
    merged = merge_lora(copy.deepcopy(model))
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert merged.state_dict().keys() == base.state_dict().keys()  # a plain GPT again
    assert torch.allclose(
        merged(x)[0], unmerged, atol=1e-5
    )  # ...and merging keeps exactly that change


def test_adapter_save_load_round_trip(tmp_path):
    base, model, x = lora_trained()
    path = save_adapter(tmp_path / "adapter.safetensors", model)
    full = save_checkpoint(
        tmp_path / "full.safetensors", merge_lora(copy.deepcopy(model))
    )
    assert (
        path.stat().st_size < full.stat().st_size / 10
    )  # only the adapters are in the file
    restored = load_adapter(path, copy.deepcopy(base))
    assert torch.equal(restored(x)[0], model(x)[0])
    assert base_fingerprint(restored) == base_fingerprint(base)


def test_adapter_refuses_other_base_weights_and_foreign_files(tmp_path):
    base, model, _ = lora_trained(steps=2)
    path = save_adapter(tmp_path / "adapter.safetensors", model)
    with pytest.raises(CheckpointError, match="other base weights"):
        load_adapter(path, model_with(7))
    with pytest.raises(CheckpointError, match="not a gptlib LoRA adapter"):
        load_adapter(
            save_checkpoint(tmp_path / "ckpt.safetensors", base), copy.deepcopy(base)
        )
    (tmp_path / "junk").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="not a readable LoRA adapter"):
        load_adapter(tmp_path / "junk", copy.deepcopy(base))
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(tmp_path / "none.safetensors", base)


# --- the command line -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A nano model past its first plateau, trained once for the tests below."""
    out = tmp_path_factory.mktemp("source") / "nano"
    assert (
        main(
            [
                "train",
                "--preset",
                "nano",
                "--corpus",
                "course",
                "--steps",
                "150",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    return out / "checkpoint.safetensors"


@pytest.fixture
def source_checkpoint(trained_checkpoint, tmp_path, monkeypatch):
    """The trained checkpoint as runs/nano/checkpoint.safetensors in a fresh working
    directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "nano").mkdir(parents=True)
    copy_path = tmp_path / "runs" / "nano" / "checkpoint.safetensors"
    copy_path.write_bytes(trained_checkpoint.read_bytes())
    return copy_path


def test_cli_finetune_each_task(source_checkpoint, capsys):
    original = source_checkpoint.read_bytes()
    assert (
        cli(
            "finetune --from runs/nano --task continue --steps 40 --lr",
            "3e-3 --old-corpus course-zh --no-progress",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "val loss on course-en:" in out and "val loss on course-zh:" in out
    ckpt = load_checkpoint("runs/finetune-continue/checkpoint.safetensors")
    assert ckpt.extra["task"] == "continue" and ckpt.step == 40
    assert (
        ckpt.extra["val_loss_after"]["course-en"]
        < ckpt.extra["val_loss_before"]["course-en"]
    )

    assert (
        cli(
            "finetune --from runs/nano --task classify --steps 30",
            "--lora-rank 2 --no-progress",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "always guessing the most common class" in out
    for name in (
        "checkpoint.safetensors",
        "adapter.safetensors",
        "classifier_head.safetensors",
    ):
        assert (source_checkpoint.parent.parent / "finetune-classify" / name).is_file()
    assert (
        main(["classify", "def forward(self, x):", "这一章训练一个模型。"]) == 0
    )  # the head loads and labels
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("这一章训练一个模型。")
    assert all(
        line.split()[0] in LABELS and line.split()[1].endswith("%") for line in lines
    )

    assert (
        main(
            [
                "finetune",
                "--from",
                str(source_checkpoint),
                "--task",
                "instruct",
                "--steps",
                "10",
                "--trainable-blocks",
                "1",
                "--out",
                "inst",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "exact answers, trained questions:" in out and "(expected" in out
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                "inst",
                "--instruction",
                "Chinese for: attention",
                "--max-new-tokens",
                "5",
            ]
        )
        == 0
    )
    assert source_checkpoint.read_bytes() == original  # --from is never written


def test_cli_finetune_lora_model_loads_as_a_plain_gpt(source_checkpoint, capsys):
    assert (
        cli(
            "finetune --from runs/nano --task continue --steps 5",
            "--lora-rank 4 --out lora --no-progress",
        )
        == 0
    )
    out = capsys.readouterr().out
    trainable, total = [
        int(n.replace(",", ""))
        for n in out.split("training ")[1].split(" parameters")[0].split(" of ")
    ]
    assert trainable == 2 * 4 * (
        (64 + 192) + (64 + 64)
    )  # 2 blocks x r x (in + out) of c_attn and c_proj
    model = load_checkpoint(
        "lora/checkpoint.safetensors"
    ).build_model()  # merged: strict load succeeds
    restored = load_adapter(
        "lora/adapter.safetensors", load_checkpoint(source_checkpoint).build_model()
    )
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    assert torch.allclose(model(x)[0], restored(x)[0], atol=1e-5)


def test_classifier_head_round_trip_and_refusals(tmp_path):
    gpt = model_with()
    classifier = GPTClassifier(gpt, 3)
    nn.init.normal_(classifier.head.weight)
    path = save_classifier_head(
        tmp_path / "head.safetensors", classifier, ("a", "b", "c")
    )
    loaded, labels = load_classifier_head(path, copy.deepcopy(gpt))
    x = torch.randint(0, gpt.config.vocab_size, (2, 6))
    assert labels == ["a", "b", "c"] and torch.equal(
        loaded(x)[0], classifier.eval()(x)[0]
    )
    with pytest.raises(CheckpointError, match="on top of other weights"):
        load_classifier_head(path, model_with(seed=1))
    with pytest.raises(ValueError, match="2 labels for a head with 3 outputs"):
        save_classifier_head(tmp_path / "bad.safetensors", classifier, ("a", "b"))
    save_adapter(tmp_path / "adapter.safetensors", apply_lora_copy(gpt))
    with pytest.raises(CheckpointError, match="not a gptlib classifier head"):
        load_classifier_head(tmp_path / "adapter.safetensors", gpt)
    with pytest.raises(FileNotFoundError, match="no classifier head at"):
        load_classifier_head(tmp_path / "missing.safetensors", gpt)


def apply_lora_copy(gpt):
    lora = copy.deepcopy(gpt)
    apply_lora(lora, rank=2)
    return lora


def test_finetune_config_per_task():
    assert (
        finetune_config("continue").max_steps == 200
        and finetune_config("instruct").learning_rate == 3e-3
    )
    config = finetune_config(
        "classify", max_steps=50, learning_rate=1e-2, dtype="bfloat16"
    )
    assert (config.min_lr, config.warmup_steps, config.eval_interval) == (1e-3, 5, 50)
    assert config.dtype == "bfloat16" and config.batch_size == 16
    with pytest.raises(ValueError, match="unknown fine-tuning task"):
        finetune_config("summarize")


def test_cli_finetune_errors(source_checkpoint, capsys):
    assert (
        cli(
            "finetune --from runs/nano --task continue --lora-rank 2",
            "--trainable-blocks 1",
        )
        == 2
    )
    assert "not both" in capsys.readouterr().err
    assert main(["finetune", "--from", "missing", "--task", "classify"]) == 2
    assert "no checkpoint at missing" in capsys.readouterr().err
    assert cli("finetune --from runs/nano --task continue --lora-rank 0") == 2
    assert "--lora-rank must be 1 or more" in capsys.readouterr().err
    assert (
        main(["finetune", "--from", "runs/nano", "--task", "instruct", "--steps", "0"])
        == 2
    )
    assert "max_steps must be >= 1" in capsys.readouterr().err
    (source_checkpoint.parent / "other.txt").write_text(
        "only ascii? no: ☃ snowmen", encoding="utf-8"
    )
    assert (
        cli("finetune --from runs/nano --task continue --corpus", "runs/nano/other.txt")
        == 1  # the flags are fine; the text holds a character the model never saw
    )
    assert "not in the vocabulary" in capsys.readouterr().err
