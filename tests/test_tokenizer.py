import json
import random
import re
import time
from pathlib import Path

import pagecode
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlib.tokenizer import (
    KNOWN_PATTERNS,
    SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    UnknownCharacterError,
    UnknownPatternError,
    count_pairs,
    load_tokenizer,
    merge_pair,
    tokenizer_from_dict,
)

ROOT = Path(__file__).resolve().parents[1]
# The trainer as it was before it was made incremental (recount every pair after every
# merge) lives in the benchmark that times the two; here it is the reference.
train_reference = pagecode.load_module("benchmarks/bench_tokenizer.py").train_reference

SAMPLES = [
    "",
    "hello world",
    "你好，世界！这是一个测试。",
    "emoji 🤖🚀 and combined 👩‍👩‍👧 and flags 🇨🇳",
    "naïve café_x² ½ tabs\tand\nnewlines  \n\n  trailing   ",
    "mixed 中英文 text with 123,456 numbers and 'quotes' it's",
]


def random_text(rng: random.Random, n: int = 80) -> str:
    chars = []
    while len(chars) < n:
        cp = rng.choice(
            [
                rng.randrange(0x20, 0x7F),
                rng.randrange(0x4E00, 0x9FFF),
                rng.randrange(0x1F300, 0x1FAFF),
                rng.randrange(0xA0, 0x2FFF),
                rng.choice([0x20, 0x0A, 0x09]),
            ]
        )
        chars.append(chr(cp))
    return "".join(chars)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    text = " ".join(SAMPLES) * 20 + "the cat sat on the mat. 猫坐在垫子上。" * 50
    return BPETokenizer.train(text, vocab_size=300, special_tokens=["<|endoftext|>"])


def test_split_pattern_covers_every_character():
    rng = random.Random(0)
    for text in SAMPLES + [random_text(rng) for _ in range(300)]:
        assert "".join(re.findall(SPLIT_PATTERN, text)) == text


def test_char_round_trip_and_vocab():
    text = "你好 world! 🤖"
    tok = CharTokenizer.train(text)
    assert tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("l") == [tok.stoi["l"]]


def test_char_unknown_characters_are_named():
    tok = CharTokenizer.train("abc")
    with pytest.raises(UnknownCharacterError) as err:
        tok.encode("abcxyz中")
    assert err.value.characters == ["x", "y", "z", "中"]
    assert "'中' (U+4E2D)" in str(err.value) and "unk_token" in str(err.value)


def test_char_unk_token_maps_unknown():
    tok = CharTokenizer.train("abc", unk_token="?")
    ids = tok.encode("axb")
    assert ids[1] == tok.stoi["?"] == tok.vocab_size - 1
    assert tok.decode(ids) == "a?b"


def test_char_decode_rejects_bad_ids():
    with pytest.raises(ValueError, match="out of range"):
        CharTokenizer.train("ab").decode([0, 7])


def test_bpe_helpers():
    words = {(1, 2, 3): 2, (1, 2): 5}
    assert count_pairs(words) == {(1, 2): 7, (2, 3): 2}
    assert merge_pair((1, 2, 1, 2, 3), (1, 2), 9) == (9, 9, 3)


def test_bpe_learns_requested_vocab(bpe):
    assert bpe.vocab_size == 300
    assert len(bpe.merges) == 300 - 256 - 1


def test_bpe_first_merge_is_most_frequent_pair():
    text = "low lower lowest " * 5 + "newer wider " * 3
    tok = BPETokenizer.train(text, vocab_size=260)
    chunks = {}
    for chunk in re.findall(SPLIT_PATTERN, text):
        key = tuple(chunk.encode())
        chunks[key] = chunks.get(key, 0) + 1
    pairs = count_pairs(chunks)
    assert tok.merges[0] == max(pairs, key=pairs.get)
    assert tok.token_str(256) == bytes(tok.merges[0]).decode()


@pytest.mark.parametrize("text", SAMPLES)
def test_bpe_round_trip_exact(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_round_trip_random_unicode(bpe):
    rng = random.Random(1)
    for _ in range(200):
        text = random_text(rng)
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_compresses_training_text(bpe):
    text = "the cat sat on the mat. 猫坐在垫子上。"
    assert len(bpe.encode(text)) < len(text.encode("utf-8")) / 2


def test_bpe_special_token_is_one_id_only_when_allowed(bpe):
    eot = bpe.special_tokens["<|endoftext|>"]
    ids = bpe.encode("a<|endoftext|>b", allowed_special="all")
    assert eot in ids and len(ids) == 3 and bpe.decode(ids) == "a<|endoftext|>b"
    assert bpe.encode("a<|endoftext|>b", allowed_special={"<|endoftext|>"}) == ids
    with pytest.raises(
        ValueError, match="special token"
    ):  # the default: text cannot smuggle one in
        bpe.encode("a<|endoftext|>b")
    plain = bpe.encode("a<|endoftext|>b", allowed_special="none")
    assert eot not in plain and bpe.decode(plain) == "a<|endoftext|>b"
    assert plain == bpe.encode(
        "a<|endoftext|>b", allowed_special=set()
    )  # a set without it: plain text
    assert bpe.encode("no special text here") == bpe.encode(
        "no special text here", allowed_special="all"
    )
    with pytest.raises(ValueError, match="allowed_special must be"):
        bpe.encode("x", allowed_special="some")


class ReversedBytes:
    """A third tokenizer: one token per byte, the bytes of the text reversed (a toy)."""

    kind = "reversed-bytes"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))[::-1]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids)[::-1].decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"type": self.kind, "version": 1}

    @classmethod
    def from_dict(cls, data: dict) -> "ReversedBytes":
        return cls()

    def save(self, path):
        return Path(path)


def test_a_third_tokenizer_plugs_in(tmp_path, monkeypatch):
    """Anything with the Tokenizer protocol's members works with the library, and once
    in TOKENIZERS it is stored in and loaded from checkpoints like the built-in ones."""
    from gptlib import (
        GPT,
        GPTConfig,
        encode_corpus,
        generate,
        load_checkpoint,
        save_checkpoint,
    )
    from gptlib.tokenizer import TOKENIZERS, Tokenizer

    tok = ReversedBytes()
    assert isinstance(tok, Tokenizer) and isinstance(
        CharTokenizer.train("ab"), Tokenizer
    )
    assert not isinstance(object(), Tokenizer)
    assert encode_corpus("abc", tok).tolist() == [99, 98, 97]
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8
        )
    )
    assert generate(model, tok, "hi", max_new_tokens=3, seed=0).startswith("hi")
    monkeypatch.setitem(TOKENIZERS, tok.kind, ReversedBytes)
    path = save_checkpoint(tmp_path / "c.safetensors", model, tokenizer=tok)
    assert isinstance(load_checkpoint(path).tokenizer, ReversedBytes)


def test_train_tokenizer_by_kind():
    from gptlib.tokenizer import train_tokenizer

    assert train_tokenizer("abcab").kind == "char"
    assert train_tokenizer("abcab " * 20, "bpe", vocab_size=260).vocab_size == 260
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        train_tokenizer("abc", "words")


def test_bpe_vocab_too_small():
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer.train("abc", vocab_size=100)


def test_bpe_stops_when_nothing_left_to_merge():
    tok = BPETokenizer.train("ab ab ab", vocab_size=1000)
    assert tok.vocab_size < 1000 and tok.decode(tok.encode("ab ab")) == "ab ab"


@pytest.mark.parametrize(
    "make",
    [
        lambda: CharTokenizer.train("héllo 你好"),
        lambda: BPETokenizer.train("héllo 你好" * 10, 270),
    ],
)
def test_save_load_round_trip(tmp_path, make):
    tok = make()
    path = tok.save(tmp_path / "tok.json")
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok)
    assert loaded.encode("héllo 你好") == tok.encode("héllo 你好")
    assert loaded.to_dict() == tok.to_dict()


def test_load_rejects_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a gptlib tokenizer"):
        load_tokenizer(tmp_path / "x.json")
    (tmp_path / "y.json").write_bytes(b"\x00\xff not json")
    with pytest.raises(ValueError, match="not a tokenizer JSON"):
        load_tokenizer(tmp_path / "y.json")
    with pytest.raises(ValueError, match="does not exist yet"):
        tokenizer_from_dict(
            {
                "type": "bpe",
                "version": 1,
                "pattern": SPLIT_PATTERN,
                "merges": [[256, 1]],
            }
        )


def test_matches_library_bpe_on_round_trip_and_size():
    """Our byte-level BPE vs Hugging Face `tokenizers`, trained on the same text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from gptlib.data import load_corpus

    text = load_corpus("course")
    train_text, held_out = text[: len(text) * 9 // 10], text[len(text) * 9 // 10 :]
    ours = BPETokenizer.train(train_text, vocab_size=512)
    lib = Tokenizer(models.BPE())
    lib.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    lib.decoder = decoders.ByteLevel()
    lib.train_from_iterator(
        [train_text],
        trainers.BpeTrainer(
            vocab_size=512,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    assert ours.decode(ours.encode(held_out)) == held_out
    assert lib.decode(lib.encode(held_out).ids) == held_out
    n_ours, n_lib = len(ours.encode(held_out)), len(lib.encode(held_out).ids)
    # same algorithm, same vocab size: token counts on unseen text agree within 10%
    assert abs(n_ours - n_lib) / n_lib < 0.10, (n_ours, n_lib)


def test_char_save_load_keeps_ids_when_unk_token_is_in_the_text(tmp_path):
    tok = CharTokenizer.train("ab?", unk_token="?")
    back = load_tokenizer(tok.save(tmp_path / "c.json"))
    assert back.chars == tok.chars and back.encode("ab?x") == tok.encode("ab?x")


def test_bpe_does_not_learn_special_tokens_as_text():
    special = "<|endoftext|>"
    tok = BPETokenizer.train(
        ("hello world" + special) * 50, vocab_size=300, special_tokens=[special]
    )
    learned = {tok.token_str(256 + k) for k in range(len(tok.merges))}
    assert not any("|" in t or "endoftext" in t for t in learned)


# A split pattern that backtracks exponentially: encoding "a" * 24 + "!" with it takes
# over a second, and every further "a" doubles the time.
CRAFTED_PATTERN = r"(a|a)+$|[\s\S]"


def test_crafted_pattern_is_refused_on_load_fast(tmp_path):
    data = {**BPETokenizer().to_dict(), "pattern": CRAFTED_PATTERN}
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    t0 = time.perf_counter()
    with pytest.raises(UnknownPatternError) as err:
        load_tokenizer(path)
    assert time.perf_counter() - t0 < 0.1
    assert isinstance(err.value, ValueError) and err.value.pattern == CRAFTED_PATTERN
    message = str(err.value)
    assert "\n" not in message and "KNOWN_PATTERNS.add(pattern)" in message
    with pytest.raises(UnknownPatternError):
        tokenizer_from_dict(data)
    for odd in (None, 3, ["a"], SPLIT_PATTERN + "|(a|a)+$"):
        with pytest.raises(UnknownPatternError):
            tokenizer_from_dict({**data, "pattern": odd})


def test_crafted_pattern_in_a_checkpoint_is_refused(tmp_path):
    from gptlib import GPT, GPTConfig, load_checkpoint, save_checkpoint

    tok = BPETokenizer(pattern=CRAFTED_PATTERN)  # in Python: the programmer's choice
    model = GPT(GPTConfig(vocab_size=256, block_size=8, n_layer=1, n_head=1, n_embd=8))
    path = save_checkpoint(tmp_path / "c.safetensors", model, tokenizer=tok)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="refusing the tokenizer's split pattern"):
        load_checkpoint(path)
    assert time.perf_counter() - t0 < 1.0


def test_known_pattern_loads_and_a_trusted_one_can_be_added(tmp_path, monkeypatch):
    assert SPLIT_PATTERN in KNOWN_PATTERNS
    tok = BPETokenizer.train("the cat sat on the mat " * 5, vocab_size=260)
    back = load_tokenizer(tok.save(tmp_path / "known.json"))
    assert back.pattern == SPLIT_PATTERN and back.merges == tok.merges
    whole = BPETokenizer.train("abab abab", vocab_size=258, pattern=r"(?s).+")
    path = whole.save(tmp_path / "whole.json")
    with pytest.raises(UnknownPatternError):
        load_tokenizer(path)
    monkeypatch.setattr("gptlib.tokenizer.KNOWN_PATTERNS", KNOWN_PATTERNS | {r"(?s).+"})
    assert load_tokenizer(path).encode("abab abab") == whole.encode("abab abab")


def test_bpe_save_reload_round_trips(tmp_path, bpe):
    back = load_tokenizer(bpe.save(tmp_path / "bpe.json"))
    assert back.to_dict() == bpe.to_dict()
    assert back.special_tokens == bpe.special_tokens
    for text in SAMPLES + ["a<|endoftext|>b"]:
        ids = bpe.encode(text, allowed_special="all")
        assert back.encode(text, allowed_special="all") == ids
        assert back.decode(ids) == text


def test_a_tokenizer_file_cannot_build_huge_tokens():
    """Each merge may join a token with itself: 24 of them would build a 16 MB token,
    40 a terabyte one. Loading refuses the first merge past MAX_TOKEN_BYTES."""
    from gptlib.tokenizer import MAX_TOKEN_BYTES, BPETokenizer

    doubling = [[97, 97]] + [[256 + k, 256 + k] for k in range(39)]
    data = {**BPETokenizer().to_dict(), "merges": doubling}
    with pytest.raises(ValueError, match="makes a token of 2,048 bytes"):
        BPETokenizer.from_dict(data)
    assert MAX_TOKEN_BYTES == 1024
    ok = {**data, "merges": doubling[:10]}  # 1,024 bytes: allowed
    assert BPETokenizer.from_dict(ok).decode([256 + 9]) == "a" * 1024


# --- the incremental trainer learns exactly the merges of the full recount ---------


def random_bytes_text(n: int, seed: int = 0) -> str:
    """n random bytes, each read as one character (U+0000..U+00FF)."""
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n)).decode("latin-1")


def assert_same_training(text: str, vocab_size: int, **kwargs) -> BPETokenizer:
    new = BPETokenizer.train(text, vocab_size, **kwargs)
    old = train_reference(text, vocab_size, **kwargs)
    assert new.merges == old.merges  # same pairs, same order, so the same ids
    assert new.vocab == old.vocab and new.to_dict() == old.to_dict()
    return new


def course(lang: str, start: int, chars: int) -> str:
    from gptlib.data import load_corpus

    return load_corpus(f"course-{lang}")[start : start + chars]


CORPORA = {
    "english": lambda: course("en", 10_000, 6_000),
    "chinese": lambda: course("zh", 30_000, 4_000),
    "code": lambda: (ROOT / "gptlib" / "model.py").read_text(encoding="utf-8")[:8000],
    "random bytes": lambda: random_bytes_text(2_000),
    "random unicode": lambda: random_text(random.Random(2), 1_500),
    "ties": lambda: "aaaa bbbb abab baba abba " * 6 + "ab ba aaaaaaa bbbbbbb",
    "samples": lambda: " ".join(SAMPLES) * 3,
}


@pytest.mark.parametrize("name", CORPORA)
def test_incremental_training_learns_the_reference_merges(name):
    text = CORPORA[name]()
    tok = assert_same_training(text, 340)
    assert len(tok.merges) > 0


@pytest.mark.parametrize(
    "text", ["", "a", "aa", "ab", "aaa", "a b c", "\n\n", "你", "🤖", "ab ab ab"]
)
def test_incremental_training_edge_cases(text):
    tok = assert_same_training(text, 300)  # more merges asked for than there are
    assert tok.decode(tok.encode(text)) == text


def test_incremental_training_ties_everywhere():
    """Every pair equally frequent: only the tie-break decides, at every merge."""
    text = "".join(chr(c) for c in range(0x61, 0x61 + 26)) * 3  # abc...z three times
    tok = assert_same_training(text, 256 + 60, pattern=r"(?s).+")
    assert tok.merges[0] == (ord("a"), ord("b"))  # all tied: the first one counted
    assert_same_training(text, 256 + 60)
    assert_same_training("ab ba " * 5 + "aaaa", 256 + 20, pattern=r"\S+|\s+")


def test_incremental_training_with_special_tokens_and_another_pattern():
    text = course("en", 0, 3_000) + "<|endoftext|>" + course("zh", 0, 1_000)
    assert_same_training(text, 330, special_tokens=["<|endoftext|>", "<|pad|>"])
    assert_same_training(text[:2_000], 300, pattern=r"(?s).+")  # one long chunk


def test_incremental_training_first_merges_of_a_larger_vocab_are_a_prefix():
    text = course("zh", 0, 3_000)
    small = BPETokenizer.train(text, 300)
    assert BPETokenizer.train(text, 330).merges[:44] == small.merges


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet="aab b\u4f60\u597d!\n", max_size=80),
    vocab_size=st.integers(256, 300),
    whole=st.booleans(),
)
def test_incremental_training_matches_the_reference_on_any_text(
    text, vocab_size, whole
):
    """Few distinct characters, short texts: ties and overlaps such as "aaa" abound."""
    pattern = r"(?s).+" if whole else SPLIT_PATTERN
    assert_same_training(text, vocab_size, pattern=pattern)
