"""gptlib.evaluation: text scores, multiple choice, HellaSwag's download, the sample
board and `gptlib eval`, each against a direct computation or a known answer."""

import json
import math
import subprocess
import unicodedata

import pytest
import torch
import torch.nn.functional as F
from test_data import CountingHandler, server  # noqa: F401 (a fixture)

from gptlib.checkpoint import save_checkpoint
from gptlib.cli import main
from gptlib.data import course_text
from gptlib.evaluation import (
    GitFile,
    MultipleChoice,
    columns_of,
    course_choices,
    ending_losses,
    fetch_hellaswag,
    git_blob_sha1,
    read_choices,
    sample_board,
    score_choices,
    score_text,
)
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import BPETokenizer, CharTokenizer

# Three items in HellaSwag's own format (extra fields and all), as the tests' fixture.
HELLASWAG_LINES = [
    {
        "ind": 24,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "ctx": "A man is sitting on a roof. he",
        "split": "val",
        "split_type": "indomain",
        "label": 3,
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
        "source_id": "activitynet~v_-JhWjGDPHMY",
    },
    {
        "ctx": "The cat sat on the",
        "label": 0,
        "endings": ["mat.", "algebra of the seventh moon.", "run quickly."],
    },
    {"ctx": "Numbers go one, two,", "label": "1", "endings": ["seven", "three"]},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_model(vocab_size: int, block_size: int = 16, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16
    )
    return GPT(config).eval()


def uniform_model(vocab_size: int, block_size: int = 16) -> GPT:
    """A GPT whose logits are all zero: every token has probability 1 / vocab_size."""
    model = tiny_model(vocab_size, block_size)
    with torch.no_grad():
        model.tok_emb.weight.zero_()  # the head is tied to it: zero logits
    return model


# --- perplexity and bits per byte -----------------------------------------------------


@pytest.mark.parametrize("length", [2, 16, 17, 18, 50, 161])
def test_score_text_is_the_loss_of_every_token_once(length):
    """Against a direct computation: windows of block_size, each token after the
    first predicted once from the tokens before it in its window."""
    text = "".join(chr(ord("a") + i % 26) for i in range(length))
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz")
    model = tiny_model(tok.vocab_size)
    score = score_text(model, tok, text, batch_size=3)
    ids = torch.tensor(tok.encode(text))
    expected = 0.0
    for start in range(0, len(ids) - 1, 16):
        x, y = ids[start : start + 16], ids[start + 1 : start + 17]
        x = x[: len(y)]
        expected += F.cross_entropy(model(x[None])[0][0], y, reduction="sum").item()
    assert score.tokens == length - 1 and score.bytes == length - 1
    assert score.nats == pytest.approx(expected, rel=1e-6)
    assert score.loss == pytest.approx(expected / (length - 1), rel=1e-6)
    assert score.perplexity == pytest.approx(math.exp(score.loss))


def test_a_uniform_guess_over_bytes_is_eight_bits_per_byte():
    """Bits per byte does not depend on the tokenizer's vocabulary: guessing
    uniformly among the 256 bytes costs exactly 8 bits a byte, and a char tokenizer
    guessing among V characters costs log2(V) bits per character, spread over the
    character's UTF-8 bytes."""
    text = "Bits per byte: 每个字节多少比特？ The same for every tokenizer."
    bytes_only = BPETokenizer()  # no merges: one token per byte
    score = score_text(uniform_model(256), bytes_only, text)
    assert score.loss == pytest.approx(math.log(256))
    assert score.perplexity == pytest.approx(256)
    assert score.bits_per_byte == pytest.approx(8.0)
    chars = CharTokenizer.train(text)
    score = score_text(uniform_model(chars.vocab_size), chars, text)
    n_bytes = len(text.encode()) - len(text[0].encode())
    expected = (len(text) - 1) * math.log2(chars.vocab_size) / n_bytes
    assert score.bytes == n_bytes
    assert score.bits_per_byte == pytest.approx(expected)


def test_score_text_leaves_the_model_as_it_was():
    tok = CharTokenizer.train("abc")
    model = tiny_model(tok.vocab_size).train()
    score_text(model, tok, "abcabcabc")
    assert model.training
    with pytest.raises(ValueError, match="at least 2 tokens"):
        score_text(model, tok, "a")


# --- multiple choice ------------------------------------------------------------------


def test_ending_losses_are_the_loss_of_each_endings_tokens_only():
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .")
    model = tiny_model(tok.vocab_size, block_size=32)
    item = MultipleChoice("the cat sat on", ["the mat.", "a hat", "it"], 0)
    total, count = ending_losses(model, tok, item)
    for i, ending in enumerate(item.endings):
        context, rest = tok.encode(item.context), tok.encode(" " + ending)
        ids = torch.tensor(context + rest)
        logits = model(ids[None, :-1])[0][0]
        losses = F.cross_entropy(logits, ids[1:], reduction="none")
        assert count[i] == len(rest)
        assert total[i].item() == pytest.approx(losses[-len(rest) :].sum().item())


def test_a_row_longer_than_the_window_loses_context_from_the_left():
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz ")
    model = tiny_model(tok.vocab_size, block_size=16)
    item = MultipleChoice("abcdefghijklmnopqrstuvwxyz" * 2, ["xyz", "abcd"], 0)
    total, count = ending_losses(model, tok, item)
    for i, ending in enumerate(item.endings):
        ids = torch.tensor((tok.encode(item.context) + tok.encode(" " + ending))[-17:])
        losses = F.cross_entropy(model(ids[None, :-1])[0][0], ids[1:], reduction="none")
        n = len(ending) + 1
        assert count[i] == n
        assert total[i].item() == pytest.approx(losses[-n:].sum().item())


def test_accuracy_and_accuracy_norm_differ_on_length():
    """A uniform model's summed loss grows with an ending's length, so `accuracy`
    picks the shortest ending; per token every ending costs the same, so
    `accuracy_norm` sees a tie and takes the first."""
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz ")
    model = uniform_model(tok.vocab_size)
    items = [
        MultipleChoice("pick", ["a long ending", "short"], 1),
        MultipleChoice("pick", ["xy", "a longer one", "the longest one"], 0),
    ]
    scores = score_choices(model, tok, items)
    assert scores == {
        "items": 2,
        "accuracy": 1.0,
        "accuracy_norm": 0.5,
        "chance": pytest.approx((1 / 2 + 1 / 3) / 2),
    }


def test_read_choices_reads_hellaswag_lines(tmp_path):
    path = write_jsonl(tmp_path / "hs.jsonl", HELLASWAG_LINES)
    items = read_choices(path)
    assert [i.label for i in items] == [3, 0, 1]
    assert items[0].context == "A man is sitting on a roof. he"
    assert items[0].endings[3] == "starts pulling up roofing on a roof."
    assert len(read_choices(path, limit=2)) == 2


@pytest.mark.parametrize(
    "row, message",
    [
        ({"ctx": "x", "endings": ["a", "b"]}, "line 2: not a multiple-choice item"),
        ({"ctx": "x", "endings": ["a", "b"], "label": 2}, "line 2: needs a ctx"),
        ({"ctx": "x", "endings": ["a"], "label": 0}, "line 2: needs a ctx"),
        ({"ctx": "x", "endings": ["a", ""], "label": 0}, "line 2: needs a ctx"),
        ({"ctx": 3, "endings": ["a", "b"], "label": 0}, "line 2: needs a ctx"),
        ({"ctx": "x", "endings": ["a", "b"], "label": "one"}, "line 2: not a multi"),
    ],
)
def test_a_bad_line_is_named(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [HELLASWAG_LINES[1], row])
    with pytest.raises(ValueError, match=message):
        read_choices(path)


def test_an_empty_or_foreign_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no multiple-choice items"):
        read_choices(tmp_path / "empty.jsonl")
    (tmp_path / "notes.txt").write_text("just some notes\n")
    with pytest.raises(ValueError, match="line 1: not a multiple-choice item"):
        read_choices(tmp_path / "notes.txt")


@pytest.mark.parametrize("lang", ["en", "zh", None])
def test_course_choices_come_from_the_held_out_tenth(lang):
    items = course_choices(lang)
    assert items == course_choices(lang)  # the same items every time
    text = course_text(lang)
    held_out = " ".join(text[int(len(text) * 0.9) :].split())
    for item in items:
        right = item.endings[item.label]
        joined = (item.context + right, item.context + " " + right)
        assert any(sentence in held_out for sentence in joined), item
        assert len(set(item.endings)) == 4
    assert len(items) >= 10


def test_a_model_that_has_read_the_text_beats_chance():
    """A model that has memorised the held-out text (it knows which character
    followed each 8 characters there) must pick nearly every right ending: the
    items have answers a model can find, and the scoring finds them."""
    items = course_choices("en")
    text = course_text("en")
    tok = CharTokenizer.train(text)
    held_out = " ".join(text[int(len(text) * 0.9) :].split())
    follows: dict[str, set[int]] = {}
    for i in range(8, len(held_out)):
        follows.setdefault(held_out[i - 8 : i], set()).add(tok.stoi[held_out[i]])
    model = uniform_model(tok.vocab_size, block_size=512)

    def memorised(idx, targets=None):  # (B, T) -> logits (B, T, V)
        logits = torch.zeros(*idx.shape, tok.vocab_size)
        for b, row in enumerate(idx.tolist()):
            for t in range(len(row)):
                seen = tok.decode(row[max(0, t - 7) : t + 1])
                for next_id in follows.get(seen, ()):
                    logits[b, t, next_id] = 5.0
        return logits, None

    model.forward = memorised
    scores = score_choices(model, tok, items)
    assert scores["accuracy_norm"] > 0.9  # the summed loss still favours short ones
    assert scores["chance"] == 0.25


# --- HellaSwag's download ------------------------------------------------------------


def test_git_blob_sha1_is_gits_own_id(tmp_path):
    path = tmp_path / "file.jsonl"
    path.write_bytes(b'{"ctx": "x"}\n\xe4\xbd\xa0')
    try:
        done = subprocess.run(
            ["git", "hash-object", str(path)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("git is not installed")
    assert git_blob_sha1(path) == done.stdout.strip()


def test_fetch_hellaswag_checks_caches_and_refuses(server, tmp_path, monkeypatch):  # noqa: F811
    served, base = server
    monkeypatch.delenv("GPTLIB_HELLASWAG", raising=False)
    write_jsonl(served / "hellaswag_val.jsonl", HELLASWAG_LINES)
    blob = git_blob_sha1(served / "hellaswag_val.jsonl")
    source = GitFile(
        f"{base}/hellaswag_val.jsonl", blob, "hs.jsonl", "GPTLIB_HELLASWAG"
    )
    cache = tmp_path / "cache"
    path = fetch_hellaswag(source, cache, progress=False)
    assert path == cache / "hs.jsonl" and len(read_choices(path)) == 3
    assert fetch_hellaswag(source, cache, progress=False) == path
    assert CountingHandler.requests == ["/hellaswag_val.jsonl"]  # cached after one
    # a server that sends other bytes: refused, and nothing enters the cache
    wrong = GitFile(source.url, "0" * 40, "other.jsonl", source.env_var)
    with pytest.raises(ValueError, match="failed its git blob check"):
        fetch_hellaswag(wrong, cache, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == ["hs.jsonl"]
    # a damaged cached copy is downloaded again
    path.write_text("damaged")
    assert (
        fetch_hellaswag(source, cache, progress=False).read_bytes()
        == (served / "hellaswag_val.jsonl").read_bytes()
    )


def test_fetch_hellaswag_takes_a_local_copy_from_the_environment(tmp_path, monkeypatch):
    local = write_jsonl(tmp_path / "mine.jsonl", HELLASWAG_LINES)
    source = GitFile("http://127.0.0.1:9/never", git_blob_sha1(local), "x", "GPTLIB_HS")
    monkeypatch.setenv("GPTLIB_HS", str(local))
    assert fetch_hellaswag(source) == local
    local.write_text("changed")
    with pytest.raises(ValueError, match="is not http://127.0.0.1:9/never"):
        fetch_hellaswag(source)


# --- the sample board -----------------------------------------------------------------


def test_sample_board_puts_models_side_by_side():
    text = "The model learns. 模型在学习。 abcdefghijklmnopqrstuvwxyz"
    tok = CharTokenizer.train(text)
    models = {"first": (tiny_model(tok.vocab_size, seed=1), tok),
              "second": (tiny_model(tok.vocab_size, seed=2), tok)}  # fmt: skip
    board = sample_board(models, ["The ", "模型"], max_new_tokens=40, width=20)
    assert board == sample_board(models, ["The ", "模型"], max_new_tokens=40, width=20)
    lines = board.splitlines()
    assert lines[0] == "prompt: 'The '"
    assert lines[1].startswith("first") and "| second" in lines[1]
    # every row's separator sits in the same column, Chinese (2 columns) or not
    for line in lines:
        if " | " in line:
            before = line[: line.index(" | ")]
            width = sum(
                2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in before
            )
            assert width == 20 == columns_of(before), line


# --- gptlib eval ----------------------------------------------------------------------


def test_gptlib_eval_scores_two_checkpoints_and_writes_json(tmp_path, capsys):
    text = course_text()
    tok = CharTokenizer.train(text)
    for name, seed in (("a", 1), ("b", 2)):
        model = tiny_model(tok.vocab_size, block_size=64, seed=seed)
        save_checkpoint(tmp_path / name / "checkpoint.safetensors", model, None, 0, tok)
    choices = write_jsonl(tmp_path / "hs.jsonl", HELLASWAG_LINES)
    out = tmp_path / "results" / "eval.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "a"), "--checkpoint",
            str(tmp_path / "b"), "--choices", str(choices), "--corpus", "course-en",
            "--max-new-tokens", "10", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text(encoding="utf-8"))
    assert set(results["models"]) == {"a", "b"}
    held_out = course_text("en")[int(len(course_text("en")) * 0.9) :]
    for name in ("a", "b"):
        scores = results["models"][name]
        assert scores["choices"]["items"] == 3
        assert (
            scores["text"]["bytes"]
            < len(held_out.encode())
            <= scores["text"]["bytes"] + 4
        )
        assert scores["text"]["perplexity"] == pytest.approx(
            math.exp(scores["text"]["loss"])
        )
        assert f"{scores['text']['loss']:.3f}" in printed
    assert "prompt: 'The model'" in printed and "| b" in printed


def test_gptlib_eval_bad_flags_are_one_line_usage_errors(tmp_path, capsys):
    save_checkpoint(tmp_path / "c.safetensors", tiny_model(4), None, 0, None)
    assert main(["eval", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    ckpt = str(tmp_path / "c.safetensors")
    assert main(["eval", "--checkpoint", ckpt, "--choices", "nope"]) == 2
    assert "neither 'course', 'hellaswag' nor a file" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", ckpt, "--limit", "0"]) == 2
    assert "--limit must be 1 or more" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", ckpt]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no tokenizer" in err
