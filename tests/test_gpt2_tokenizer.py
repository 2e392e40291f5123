"""GPT2Tokenizer against the references, offline: a byte-level BPE trained with
Hugging Face `tokenizers` and saved in GPT-2's format (vocab.json + merges.txt) is
loaded into gptlib and into `transformers`' GPT2Tokenizer, and both must give the
same ids, id for id, on every kind of text."""

import json
from pathlib import Path

import pytest
from gpt2_fixture import SAMPLES, write_gpt2_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlib.checkpoint import load_checkpoint, save_checkpoint
from gptlib.data import course_text
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import (
    GPT2_PATTERN,
    GPT2Tokenizer,
    bytes_to_unicode,
    load_tokenizer,
    tokenizer_from_dict,
)

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return write_gpt2_tokenizer(tmp_path_factory.mktemp("gpt2-format"))


@pytest.fixture(scope="module")
def ours(files) -> GPT2Tokenizer:
    return GPT2Tokenizer.from_files(files / "vocab.json", files / "merges.txt")


@pytest.fixture(scope="module")
def reference(files):
    return transformers.GPT2Tokenizer(
        str(files / "vocab.json"), str(files / "merges.txt")
    )


@pytest.fixture(scope="module")
def rust(files):
    return tokenizers.ByteLevelBPETokenizer(
        str(files / "vocab.json"), str(files / "merges.txt")
    )


def test_byte_table_is_gpt2s():
    from transformers.convert_slow_tokenizer import bytes_to_unicode as theirs

    assert bytes_to_unicode() == theirs()


@pytest.mark.parametrize("kind", SAMPLES)
def test_same_ids_as_the_references(kind, ours, reference, rust):
    compared = 0
    for text in SAMPLES[kind]:
        ids = ours.encode(text)
        assert ids == reference.encode(text), text
        assert ids == rust.encode(text).ids, text
        assert ours.decode(ids) == text == reference.decode(ids)
        compared += len(ids)
    print(f"{kind}: {len(SAMPLES[kind])} texts, {compared} ids identical")


def test_same_ids_on_the_whole_course_text(ours, reference):
    """200,000 characters of pages, both languages, code and output included."""
    text = course_text()[:200_000]
    ids = ours.encode(text, allowed_special="all")
    assert ids == reference.encode(text)
    assert ours.decode(ids) == text
    print(f"course text: {len(text):,} characters, {len(ids):,} ids identical")


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
        min_size=0,
        max_size=60,
    )
)
def test_same_ids_on_random_text(text, ours, reference):
    if "<|endoftext|>" in text:
        return
    assert ours.encode(text) == reference.encode(text)
    assert ours.decode(ours.encode(text)) == text


def test_special_token_is_one_id_only_when_allowed(ours, reference):
    text = "one<|endoftext|>two"
    ids = ours.encode(text, allowed_special="all")
    assert ids == reference.encode(text)  # transformers splits out added tokens
    assert ours.special_tokens["<|endoftext|>"] in ids
    with pytest.raises(ValueError, match="special token"):
        ours.encode(text)  # the default refuses: text from a user cannot smuggle one
    assert len(ours.encode(text, allowed_special="none")) > len(ids)


def test_pattern_needs_the_regex_module():
    import re

    import regex

    with pytest.raises(re.error):
        re.compile(GPT2_PATTERN)  # \p{L} is not in the standard library
    assert regex.findall(GPT2_PATTERN, "x² it's  ok") == [
        "x",
        "²",
        " it",
        "'s",
        " ",
        " ok",
    ]


def test_round_trip_through_json_and_a_checkpoint(ours, tmp_path):
    path = ours.save(tmp_path / "tok.json")
    again = load_tokenizer(path)
    assert isinstance(again, GPT2Tokenizer) and again.to_dict() == ours.to_dict()
    text = "A checkpoint keeps its tokenizer. 检查点保存分词器。"
    assert again.encode(text) == ours.encode(text)
    model = GPT(GPTConfig(vocab_size=ours.vocab_size, block_size=8, n_layer=1,
                          n_head=1, n_embd=8))  # fmt: skip
    ckpt = load_checkpoint(
        save_checkpoint(tmp_path / "c.safetensors", model, None, 0, ours)
    )
    assert ckpt.tokenizer.encode(text) == ours.encode(text)


def test_vocab_ids_are_the_files_not_bytes_then_merges(ours, files):
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    assert ours.encode("!") == [vocab["!"]]
    assert ours.vocab_size == len(vocab) == 1000
    assert ours.special_tokens == {"<|endoftext|>": vocab["<|endoftext|>"]}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["vocab"].update({"Ġqqzx": d["vocab"].pop("Ġ")}), "lacks 1 of"),
        (lambda d: d["vocab"].update({"Ġ": 5}), "not 0..999"),
        (lambda d: d["merges"].append("Ġ nope"), "not two tokens of the vocabulary"),
        (lambda d: d["merges"].append("a"), "not two tokens"),
        (lambda d: d["vocab"].update({"a b": 1000}), "not in GPT-2's byte alphabet"),
        (lambda d: d["vocab"].update({"qqzx": "7"}), "not 0..1000"),
    ],
)
def test_damaged_data_is_refused_in_one_line(ours, change, message):
    data = json.loads(json.dumps(ours.to_dict()))
    change(data)
    with pytest.raises(ValueError, match=message) as e:
        tokenizer_from_dict(data)
    assert "\n" not in str(e.value)


def test_a_merge_that_makes_no_token_is_refused(ours):
    data = json.loads(json.dumps(ours.to_dict()))
    # two tokens that exist, whose concatenation does not
    data["merges"].append("ĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠ ĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠ")
    for part in ("ĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠ",):
        data["vocab"].setdefault(part, len(data["vocab"]))
    with pytest.raises(ValueError, match="which the vocabulary lacks"):
        tokenizer_from_dict(data)


def test_it_is_loaded_not_trained():
    with pytest.raises(TypeError, match="loaded from vocab.json and merges.txt"):
        GPT2Tokenizer.train("some text", 300)


def test_damaged_files_give_one_line_errors(files, tmp_path):
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        GPT2Tokenizer.from_files(tmp_path / "vocab.json", files / "merges.txt")
