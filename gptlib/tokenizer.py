"""Tokenizers: turn text into integer ids and back.

Two kinds, one interface (`encode`, `decode`, `vocab_size`, `save`, `to_dict`):

* `CharTokenizer`: one id per character seen in the training text.
* `BPETokenizer`: byte-level byte-pair encoding, trained from scratch. It starts
  from the 256 possible bytes, so it can encode *any* text (Chinese, emoji, ...)
  and decoding gives back exactly the text that was encoded.
* `GPT2Tokenizer`: the same kind of tokenizer, loaded from GPT-2's own files
  (vocab.json and merges.txt), encoding id for id as GPT-2 does.

Chapter 04 (Tokenizer) builds this file; chapter 16 (Real data and evaluation) adds
`GPT2Tokenizer`.
"""

# --8<-- [start:imports]
import json
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm

# --8<-- [end:imports]

FORMAT_VERSION = 1


# --8<-- [start:errors]
class UnknownCharacterError(ValueError):
    """The text holds characters that the tokenizer's vocabulary does not have."""

    def __init__(self, unknown: Iterable[str]):
        self.characters = sorted(set(unknown))
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in self.characters[:10])
        more = (
            f" and {len(self.characters) - 10} more"
            if len(self.characters) > 10
            else ""
        )
        super().__init__(
            f"{len(self.characters)} character(s) not in the vocabulary: "
            f"{shown}{more}. "
            "Train the tokenizer on text that contains them, "
            "or create it with unk_token=... to map unknown characters to one id."
        )


# --8<-- [end:errors]


# --8<-- [start:char]
class CharTokenizer:
    """One token per character. Trained, the vocabulary is the sorted set of characters
    seen."""

    kind = "char"

    def __init__(self, chars: Iterable[str], unk_token: str | None = None):
        self.chars = list(
            dict.fromkeys(chars)
        )  # the vocabulary in id order, each character once
        if unk_token is not None and unk_token not in self.chars:
            self.chars.append(unk_token)  # the unknown token gets the last id
        self.unk_token = unk_token
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}  # string -> id
        self.itos = dict(enumerate(self.chars))  # id -> string

    @classmethod
    def train(cls, text: str, unk_token: str | None = None) -> "CharTokenizer":
        return cls(sorted(set(text)), unk_token=unk_token)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        if self.unk_token is not None:
            unk_id = self.stoi[self.unk_token]
            return [self.stoi.get(ch, unk_id) for ch in text]
        unknown = {ch for ch in text if ch not in self.stoi}
        if unknown:
            raise UnknownCharacterError(unknown)
        return [self.stoi[ch] for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = sorted({i for i in ids if i not in self.itos})
        if bad:
            raise ValueError(
                f"token id(s) {bad[:10]} out of range for vocab_size={self.vocab_size}"
            )
        return "".join(self.itos[i] for i in ids)

    # --8<-- [end:char]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "version": FORMAT_VERSION,
            "chars": self.chars,
            "unk_token": self.unk_token,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharTokenizer":
        return cls(
            data["chars"], unk_token=data.get("unk_token")
        )  # the stored order is the id order

    def save(self, path: str | Path) -> Path:
        return _save_json(self.to_dict(), path)


# --8<-- [start:split_pattern]
# Split text into chunks before BPE so that merges never cross a word boundary:
# an optional space + letters, an optional space + digits, an optional space +
# punctuation, or whitespace. GPT-2 uses the same idea (with the `regex` module's
# \p{L}); here `[^\W\d_]` means "a letter" with only the standard library.
SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
)
# --8<-- [end:split_pattern]

# The split patterns a tokenizer file (or checkpoint) may name. A regular expression
# is code: a crafted one such as `(a|a)+$` backtracks exponentially, and encoding a
# prompt of a few dozen characters with it takes minutes. So `BPETokenizer.from_dict`
# refuses every other pattern. GPT-2's and GPT-4's own patterns need the `regex`
# module's \p{L}, which Python's `re` cannot compile; SPLIT_PATTERN is this library's
# standard-library version of GPT-2's. A pattern passed in Python
# (`BPETokenizer(pattern=...)`, `BPETokenizer.train(..., pattern=...)`) is the
# programmer's own and is not checked. To load a file whose pattern you trust, add
# that pattern to this set first.
KNOWN_PATTERNS: set[str] = {SPLIT_PATTERN}
# The longest token a tokenizer file may build. Real ones stay far below (GPT-2's
# longest is 128 bytes); 40 merges that each double a token would ask for a terabyte.
MAX_TOKEN_BYTES = 1024


class UnknownPatternError(ValueError):
    """A tokenizer file names a split pattern that is not in KNOWN_PATTERNS."""

    def __init__(self, pattern: object):
        self.pattern = pattern
        shown = repr(pattern)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"refusing the tokenizer's split pattern {shown}: it is not one gptlib "
            "knows, and a regular expression from a file can make encoding hang. "
            "If you trust the file, add its pattern first: "
            "gptlib.tokenizer.KNOWN_PATTERNS.add(pattern)"
        )


# --8<-- [start:bpe_helpers]
def count_pairs(words: dict[tuple[int, ...], int]) -> Counter[tuple[int, int]]:
    """How often each pair of neighbouring ids occurs, weighted by word frequency."""
    pairs: Counter[tuple[int, int]] = Counter()
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += freq
    return pairs


def merge_pair(
    ids: tuple[int, ...], pair: tuple[int, int], new_id: int
) -> tuple[int, ...]:
    """Replace every occurrence of `pair` in `ids` by `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


# --8<-- [end:bpe_helpers]


# --8<-- [start:bpe_init]
class BPETokenizer:
    """Byte-level BPE: ids 0..255 are the raw bytes, every later id a learned merge."""

    kind = "bpe"

    def __init__(
        self,
        merges: list[tuple[int, int]] | None = None,
        pattern: str = SPLIT_PATTERN,
        special_tokens: Iterable[str] = (),
    ):
        self.merges = [tuple(m) for m in (merges or [])]
        self.pattern = pattern
        self._split = re.compile(pattern)
        # vocab: id -> the bytes it stands for. Merge k creates id 256 + k.
        self.vocab = {i: bytes([i]) for i in range(256)}
        self.ranks: dict[tuple[int, int], int] = {}
        for k, (a, b) in enumerate(self.merges):
            self.vocab[256 + k] = self.vocab[a] + self.vocab[b]
            self.ranks[(a, b)] = k
        first_special = 256 + len(self.merges)
        self.special_tokens = {
            tok: first_special + i
            for i, tok in enumerate(dict.fromkeys(special_tokens))
        }
        self._cache: dict[str, list[int]] = {}

    # --8<-- [end:bpe_init]

    # --8<-- [start:train]
    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Iterable[str] = (),
        pattern: str = SPLIT_PATTERN,
        progress: bool = False,
    ) -> "BPETokenizer":
        """Learn `vocab_size - 256 - len(special_tokens)` merges from `text`."""
        special_tokens = list(dict.fromkeys(special_tokens))
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise ValueError(
                f"vocab_size must be at least {256 + len(special_tokens)} "
                "(256 bytes + special tokens)"
            )
        # Count each distinct chunk once: "the" appears thousands of times, but we
        # only need to merge inside it once and multiply by its frequency.
        # Special tokens are not text: drop them before counting, so no merge learns
        # them.
        for special in special_tokens:
            text = text.replace(special, "\n")
        chunks = Counter(re.findall(pattern, text))
        words = [tuple(chunk.encode("utf-8")) for chunk in chunks]  # in text order
        freqs = list(chunks.values())
        # Count the pairs once, as count_pairs does, and note which words hold each.
        pairs: Counter[tuple[int, int]] = Counter()
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        for i, word in enumerate(words):
            for pair in zip(word, word[1:]):
                pairs[pair] += freqs[i]
                where[pair].add(i)

        def pairs_with(
            tokens: set[int], word: tuple[int, ...]
        ) -> list[tuple[int, int]]:
            """The pairs of `word` that hold at least one of `tokens`."""
            return [p for p in zip(word, word[1:]) if p[0] in tokens or p[1] in tokens]

        merges: list[tuple[int, int]] = []
        for k in tqdm(range(num_merges), desc="BPE merges", disable=not progress):
            if not pairs:
                break  # every chunk is a single token already: nothing left to merge
            # The most frequent pair. On ties, the one count_pairs would meet first:
            # in the first word that holds a tied pair, the leftmost tied pair.
            top = max(pairs.values())
            tied = {pair for pair, n in pairs.items() if n == top}
            word = words[min(min(where[pair]) for pair in tied)]
            best = next(pair for pair in zip(word, word[1:]) if pair in tied)
            new_id = 256 + k
            # Update the counts instead of recounting every word (over 10x slower). A
            # merge changes only the words that hold `best`, and in them only the
            # pairs that hold one of its tokens or the new one: all other pairs are
            # there before and after. So take those pairs out, merge, put them back.
            tokens = {*best, new_id}
            for i in list(where[best]):
                old = words[i]
                words[i] = merge_pair(old, best, new_id)
                before, after = pairs_with(tokens, old), pairs_with(tokens, words[i])
                for pair in before:
                    pairs[pair] -= freqs[i]
                for pair in after:
                    pairs[pair] += freqs[i]
                    where[pair].add(i)
                for pair in set(before) - set(after):  # gone from word i
                    where[pair].discard(i)
                    if not where[pair]:  # and from every other word
                        del pairs[pair], where[pair]
            merges.append(best)
        return cls(merges, pattern=pattern, special_tokens=special_tokens)

    # --8<-- [end:train]

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special_tokens)

    # --8<-- [start:encode]
    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = tuple(chunk.encode("utf-8"))
        while len(ids) >= 2:
            # apply the earliest-learned merge that occurs in the chunk, as in training
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            ids = merge_pair(ids, pair, 256 + self.ranks[pair])
        return list(ids)

    def _encode_ordinary(self, text: str) -> list[int]:
        out: list[int] = []
        for chunk in self._split.findall(text):
            if chunk not in self._cache:
                self._cache[chunk] = self._encode_chunk(chunk)
            out.extend(self._cache[chunk])
        return out

    def encode(
        self, text: str, allowed_special: str | Collection[str] = "none_raise"
    ) -> list[int]:
        """Text -> token ids.

        Special-token text in `text` (such as "<|endoftext|>") becomes a control token
        only where the caller says so: `allowed_special="all"` (or a set of names) turns
        it into its id, "none" encodes it as ordinary text, and the default,
        "none_raise",
        raises, so that text from a user or a file can never smuggle one in.

        >>> tok = BPETokenizer(special_tokens=["<|endoftext|>"])  # bytes, no merges
        >>> tok.encode("hi<|endoftext|>", allowed_special="all")
        [104, 105, 256]
        >>> len(tok.encode("hi<|endoftext|>", allowed_special="none"))  # 2 + 13 bytes
        15
        """
        special = self._allowed_special(text, allowed_special)
        if not special:
            return self._encode_ordinary(text)
        split = (
            "("
            + "|".join(re.escape(t) for t in sorted(special, key=len, reverse=True))
            + ")"
        )
        out: list[int] = []
        for part in re.split(split, text):
            if part in special:
                out.append(special[part])
            elif part:
                out.extend(self._encode_ordinary(part))
        return out

    def _allowed_special(
        self, text: str, allowed: str | Collection[str]
    ) -> dict[str, int]:
        """The special tokens that `encode` may produce for this text."""
        if allowed == "all":
            return self.special_tokens
        if allowed == "none":
            return {}
        if allowed == "none_raise":
            found = [t for t in self.special_tokens if t in text]
            if found:
                raise ValueError(
                    f"the text contains the special token(s) {found}: pass "
                    "allowed_special='all' to encode them as control tokens, "
                    "or 'none' to encode them as ordinary text"
                )
            return {}
        if isinstance(allowed, str):
            raise ValueError(
                "allowed_special must be 'all', 'none', 'none_raise' or a set, "
                f"got {allowed!r}"
            )
        return {t: i for t, i in self.special_tokens.items() if t in allowed}

    def decode(self, ids: Iterable[int]) -> str:
        inverse_special = {
            i: tok.encode("utf-8") for tok, i in self.special_tokens.items()
        }
        parts = []
        for i in ids:
            i = int(i)
            if i in self.vocab:
                parts.append(self.vocab[i])
            elif i in inverse_special:
                parts.append(inverse_special[i])
            else:
                raise ValueError(
                    f"token id {i} out of range for vocab_size={self.vocab_size}"
                )
        # A slice of ids may end inside a multi-byte character; show U+FFFD there
        # instead of crashing. Whole encodings always decode exactly.
        return b"".join(parts).decode("utf-8", errors="replace")

    # --8<-- [end:encode]

    def token_str(self, i: int) -> str:
        """A readable form of one token (bytes that are not UTF-8 are shown escaped)."""
        for tok, j in self.special_tokens.items():
            if i == j:
                return tok
        raw = self.vocab[i]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return str(raw)[2:-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "merges": [list(m) for m in self.merges],
            "special_tokens": list(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BPETokenizer":
        """Rebuild a tokenizer from `to_dict()` output (a file, a checkpoint).

        Its split pattern must be one of KNOWN_PATTERNS: a pattern from a file is
        never compiled unchecked.

        >>> data = BPETokenizer().to_dict()
        >>> BPETokenizer.from_dict(data).encode("hi")
        [104, 105]
        >>> BPETokenizer.from_dict({**data, "pattern": "(a|a)+$"})
        Traceback (most recent call last):
        ...
        gptlib.tokenizer.UnknownPatternError: refusing ... split pattern '(a|a)+$'...
        """
        pattern = data["pattern"]
        if not (isinstance(pattern, str) and pattern in KNOWN_PATTERNS):
            raise UnknownPatternError(pattern)
        merges = [tuple(m) for m in data["merges"]]
        length = [1] * 256  # bytes per token: a merge adds up the two it joins
        for k, (a, b) in enumerate(merges):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(
                    f"merge {k} {(a, b)} refers to a token that does not exist yet"
                )
            length.append(length[a] + length[b])
            if length[-1] > MAX_TOKEN_BYTES:  # each merge could double it: 2^k bytes
                raise ValueError(
                    f"merge {k} {(a, b)} makes a token of {length[-1]:,} bytes, more "
                    f"than the {MAX_TOKEN_BYTES:,} any real tokenizer needs"
                )
        return cls(
            merges,
            pattern=pattern,
            special_tokens=data.get("special_tokens", []),
        )

    def save(self, path: str | Path) -> Path:
        return _save_json(self.to_dict(), path)


# --8<-- [start:protocol]
@runtime_checkable
class Tokenizer(Protocol):
    """What gptlib needs of a tokenizer: CharTokenizer and BPETokenizer are two, and any
    class with these members is a third. Add it to TOKENIZERS under its `kind` and
    checkpoints and token files can store and load it too."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_dict(
        self,
    ) -> dict[str, Any]: ...  # JSON data; from_dict(to_dict()) rebuilds it

    def save(self, path: str | Path) -> Path: ...


TOKENIZERS: dict[str, Any] = {
    "char": CharTokenizer,
    "bpe": BPETokenizer,
}  # kind -> class


def train_tokenizer(
    text: str, kind: str = "char", vocab_size: int = 512, progress: bool = False
) -> Tokenizer:
    """A tokenizer of the given kind trained on `text` (vocab_size is for BPE)."""
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size, progress=progress)
    raise ValueError(
        f"unknown tokenizer kind {kind!r}; choose one of {sorted(TOKENIZERS)}"
    )


# --8<-- [end:protocol]


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `to_dict()` output, checking that it is one of ours."""
    if not isinstance(data, dict) or data.get("type") not in TOKENIZERS:
        raise ValueError(
            f"not a gptlib tokenizer: expected a 'type' of {sorted(TOKENIZERS)}"
        )
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"tokenizer format version {data.get('version')!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    return TOKENIZERS[data["type"]].from_dict(data)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer saved with `.save(path)`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a tokenizer JSON file: {e}") from None
    return tokenizer_from_dict(data)


def _save_json(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    except BaseException as e:  # a full disk: no half-written file left behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(
                e.errno,
                f"could not write {path} ({e.strerror or e}); "
                "any previous file there is unchanged",
            ) from e
        raise
    tmp.replace(path)  # atomic: a crash leaves the old file or the new one, never half
    return path


# --8<-- [start:gpt2_pattern]
# GPT-2's split pattern, exactly: \p{L} is any letter and \p{N} any digit in any
# script, classes Python's `re` lacks, so this pattern needs the `regex` package.
GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's files write each byte as one printable character: the printable
    Latin-1 bytes stand for themselves, the other 68 (space, newline, control
    bytes) for the characters from U+0100 on, in byte order. So b" " is "Ġ" and
    b"\\n" is "Ċ" in vocab.json and merges.txt.

    >>> table = bytes_to_unicode()
    >>> table[ord("a")], table[ord(" ")], table[ord("\\n")]
    ('a', 'Ġ', 'Ċ')
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table |= {b: chr(256 + n) for n, b in enumerate(others)}
    return dict(sorted(table.items()))


# --8<-- [end:gpt2_pattern]


# --8<-- [start:gpt2_init]
class GPT2Tokenizer(BPETokenizer):
    """A byte-level BPE stored in GPT-2's format: `vocab.json` (token -> id) and
    `merges.txt` (one merge per line, by rank). GPT-2's own tokenizer is one, and
    so is any made with Hugging Face `tokenizers`' ByteLevelBPETokenizer.

    It encodes as `BPETokenizer` does (split, then apply the lowest-ranked merge
    until none applies) with two differences: the ids are the file's, not bytes
    0..255 followed by merges in order, and the split is GPT-2's own pattern.
    """

    kind = "gpt2"

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        special_tokens: Iterable[str] = ("<|endoftext|>",),
    ):
        import regex  # only this class needs it: \p{L} and \p{N}

        to_byte = {c: b for b, c in bytes_to_unicode().items()}
        self.pattern = GPT2_PATTERN
        self._split = regex.compile(GPT2_PATTERN)
        self.token_strings = dict(vocab)  # kept as the file has them, for to_dict
        self.special_tokens = {t: vocab[t] for t in special_tokens if t in vocab}
        self.vocab = {  # id -> the bytes it stands for, as in BPETokenizer
            i: bytes(to_byte[c] for c in token)
            for token, i in vocab.items()
            if token not in self.special_tokens
        }
        self.byte_ids = [vocab[bytes_to_unicode()[b]] for b in range(256)]
        # a merge joins two tokens into a third: rank by ids, and the id it makes
        self.merges = [(vocab[a], vocab[b]) for a, b in merges]
        self.ranks = {}
        self.merged = {}
        for k, (a, b) in enumerate(merges):
            pair = (vocab[a], vocab[b])
            self.ranks.setdefault(pair, k)  # a repeated line never outranks itself
            self.merged[pair] = vocab[a + b]
        self._cache = {}

    @classmethod
    def train(cls, *args: Any, **kwargs: Any) -> "GPT2Tokenizer":
        raise TypeError(
            "GPT2Tokenizer is loaded from vocab.json and merges.txt, not trained: "
            "train a BPETokenizer, or load one with GPT2Tokenizer.from_files"
        )

    @property
    def vocab_size(self) -> int:
        return len(self.token_strings)

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = tuple(self.byte_ids[b] for b in chunk.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            ids = merge_pair(ids, pair, self.merged[pair])
        return list(ids)

    # --8<-- [end:gpt2_init]

    # --8<-- [start:gpt2_files]
    @classmethod
    def from_files(
        cls,
        vocab_file: str | Path,
        merges_file: str | Path,
        special_tokens: Iterable[str] = ("<|endoftext|>",),
    ) -> "GPT2Tokenizer":
        """Load `vocab.json` and `merges.txt` (GPT-2's, or any in their format)."""
        vocab_file, merges_file = Path(vocab_file), Path(merges_file)
        try:
            vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
            lines = merges_file.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{vocab_file} or {merges_file} is damaged: {e}") from None
        merges = [line for line in lines if line and not line.startswith("#version")]
        return cls.from_dict(
            {
                "type": cls.kind,
                "version": FORMAT_VERSION,
                "vocab": vocab,
                "merges": merges,
                "special_tokens": list(special_tokens),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """GPT-2's own format inside: the vocab.json mapping, merges.txt's lines."""
        string = {i: s for s, i in self.token_strings.items()}
        return {
            "type": self.kind,
            "version": FORMAT_VERSION,
            "vocab": self.token_strings,
            "merges": [f"{string[a]} {string[b]}" for a, b in self.merges],
            "special_tokens": list(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPT2Tokenizer":
        """Rebuild from `to_dict()` output, checking what encoding relies on: ids
        0..n-1 each once, every byte a token, every merge made of tokens and
        making one."""
        vocab, lines = data["vocab"], data["merges"]
        specials = data.get("special_tokens", [])
        if not isinstance(vocab, dict) or not isinstance(lines, list):
            raise ValueError("a GPT-2 tokenizer needs a vocab (dict) and merges (list)")
        ids = list(vocab.values())
        whole = all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        if not whole or sorted(ids) != list(range(len(vocab))):
            raise ValueError(
                f"the vocabulary's {len(vocab)} ids are not 0..{len(vocab) - 1}, "
                "each once"
            )
        characters = set(bytes_to_unicode().values())
        missing = sorted(characters - vocab.keys())
        if missing:
            raise ValueError(
                f"the vocabulary lacks {len(missing)} of the 256 byte tokens "
                f"(first: {missing[0]!r}), so some text could not be encoded"
            )
        for token in vocab:
            if token not in specials and not set(token) <= characters:
                raise ValueError(
                    f"vocabulary token {token!r} is not in GPT-2's byte alphabet"
                )
            if len(token) > MAX_TOKEN_BYTES:
                raise ValueError(f"vocabulary token {token[:20]!r}... is too long")
        merges = []
        for n, line in enumerate(lines, 1):
            parts = line.split(" ") if isinstance(line, str) else []
            if len(parts) != 2 or not all(p in vocab for p in parts):
                raise ValueError(
                    f"merge {n} {line!r} is not two tokens of the vocabulary"
                )
            if parts[0] + parts[1] not in vocab:
                raise ValueError(
                    f"merge {n} {line!r} makes {parts[0] + parts[1]!r}, "
                    "which the vocabulary lacks"
                )
            merges.append((parts[0], parts[1]))
        return cls(vocab, merges, special_tokens=specials)


TOKENIZERS[GPT2Tokenizer.kind] = GPT2Tokenizer
# --8<-- [end:gpt2_files]
