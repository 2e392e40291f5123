"""Corpora, token arrays and batches.

* `load_corpus(name)` returns the text of a named corpus: `course` (this course's own
  pages, English and Chinese, frozen into the package: always the same text, offline),
  `course-en`, `course-zh`, or `tinyshakespeare` (downloaded once, checked against its
  SHA-256, cached; `$GPTLIB_TINYSHAKESPEARE` can name a local copy).
* `encode_corpus`, `train_val_split` and `get_batch` turn text into the `(B, T)`
  input/target batches a language model trains on.
"""

# --8<-- [start:imports]
import gzip
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptlib.tokenizer import Tokenizer, load_tokenizer

# --8<-- [end:imports]


# --8<-- [start:corpora]
@dataclass(frozen=True)
class PackagedCorpus:
    filename: str  # in gptlib/corpora/
    sha256: str


# The course's own text, frozen: a snapshot of its pages (English and Chinese), code and
# glossary at one commit, made by scripts/freeze_course_corpus.py in the repository.
# A new version is made on purpose, never by editing a page: the numbers pages show
# stay put.
COURSE_CORPUS = PackagedCorpus(
    "course-v1.json.gz",
    "a2740bd721f7e4543b3e21251eb14521fd539bb6062151ea68b50c8e1aadd9e5",
)


@cache
def course_snapshot() -> dict[str, Any]:
    """The frozen course corpus, a dict: "pages" ({"page", "en", "zh"} each, the
    sections of a page in both languages), "lines" and "glossary"."""
    raw = (resources.files("gptlib") / "corpora" / COURSE_CORPUS.filename).read_bytes()
    if hashlib.sha256(raw).hexdigest() != COURSE_CORPUS.sha256:
        raise ValueError(
            f"gptlib's packaged corpus {COURSE_CORPUS.filename} is damaged "
            "(SHA-256 mismatch): reinstall gptlib"
        )
    return json.loads(gzip.decompress(raw))


def course_sections(lang: str | None = None) -> list[str]:
    """The sections of the course pages, in reading order. With both languages, the
    sections of each page alternate (English, Chinese, English, ...) so that any stretch
    of the text, the validation split at its end included, has both languages in it."""
    pages = course_snapshot()["pages"]
    if lang is not None:
        return [section for page in pages for section in page[lang]]
    parts: list[str] = []
    for page in pages:
        en, zh = page["en"], page["zh"]
        for i in range(max(len(en), len(zh))):
            parts += en[i : i + 1] + zh[i : i + 1]
    return parts


def course_text(lang: str | None = None) -> str:
    """The course pages as one text: their sections (`course_sections`) joined."""
    return "".join(course_sections(lang))


CORPORA: dict[str, Callable[[], str]] = {
    "course": course_text,
    "course-en": lambda: course_text("en"),
    "course-zh": lambda: course_text("zh"),
    "tinyshakespeare": lambda: fetch_remote_corpus(TINYSHAKESPEARE).read_text(
        encoding="utf-8"
    ),
}


def load_corpus(name: str) -> str:
    """The text of a named corpus (see `CORPORA`) or of a UTF-8 text file at a path."""
    if name in CORPORA:
        return CORPORA[name]()
    path = Path(name)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path} is not UTF-8 text ({e.reason} at byte {e.start})"
            ) from None
        if not text:
            raise ValueError(f"{path} is empty: a corpus needs some text")
        return text
    raise ValueError(
        f"unknown corpus {name!r}: use one of {sorted(CORPORA)} "
        "or the path of a text file"
    )


# --8<-- [end:corpora]


# --8<-- [start:batches]
def encode_corpus(text: str, tokenizer: Tokenizer) -> torch.Tensor:
    """The whole text as one long 1-D tensor of token ids."""
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def train_val_split(
    data: torch.Tensor, val_fraction: float = 0.1, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (1 - val_fraction) of the tokens for training, the rest for validation.

    With `chunk_size`, the tokens are cut into chunks of that size instead and every
    (1 / val_fraction)-th chunk is kept for validation, so that both sets sample the
    whole
    text: a corpus whose end differs from the rest (a course that grows page by page)
    still gets a validation set like its training set.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if chunk_size is None:
        n = int(len(data) * (1.0 - val_fraction))
        return data[:n], data[n:]
    every = round(1.0 / val_fraction)
    chunks = data.split(chunk_size)
    is_val = [i % every == every - 1 for i in range(len(chunks))]
    if not any(is_val):
        raise ValueError(
            f"{len(data)} tokens make fewer than {every} chunks of {chunk_size}: "
            "use a smaller chunk_size"
        )
    train = torch.cat([c for c, v in zip(chunks, is_val) if not v])
    return train, torch.cat([c for c, v in zip(chunks, is_val) if v])


# --8<-- [start:get_batch]
def random_starts(
    tokens: int,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Where `get_batch`'s windows start: uniform over every position with a whole
    window (block_size + 1 tokens, the targets' last included) after it."""
    return torch.randint(tokens - block_size, (batch_size,), generator=generator)


def get_batch(
    data: torch.Tensor | np.ndarray,
    batch_size: int,
    block_size: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    pin_memory: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `batch_size` random windows: inputs x and targets y = x shifted by one.

    `data` is a tensor of token ids or ids on disk (a memory-mapped array, or
    chapter 16's `ShardedTokens`), of which only the windows drawn are read. For a
    CUDA `device`, `pin_memory` puts the batch in page-locked memory first, from which
    the copy to the GPU runs while the GPU is still busy with the last step.
    """
    if len(data) <= block_size:
        raise ValueError(
            f"need more than block_size={block_size} tokens to make a batch, "
            f"got {len(data)}"
        )
    starts = random_starts(len(data), batch_size, block_size, generator)  # (B,)
    if not isinstance(data, torch.Tensor):
        # memory-mapped token files: read only these windows from disk
        windows = np.stack(
            [data[i : i + block_size + 1] for i in starts.tolist()]
        ).astype(np.int64)
        chunk = torch.from_numpy(windows)  # (B, T + 1)
    else:
        chunk = torch.stack(
            [data[i : i + block_size + 1] for i in starts]
        )  # (B, T + 1)
    x, y = (
        chunk[:, :-1].contiguous(),
        chunk[:, 1:].contiguous(),
    )  # (B, T) each: y is x shifted by one, the next token at each position
    if pin_memory and torch.device(device).type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.to(device), y.to(device)


# --8<-- [end:get_batch]
# --8<-- [end:batches]


# --8<-- [start:token_files]
TRAIN_FILE, VAL_FILE, TOKENIZER_FILE = "train.bin", "val.bin", "tokenizer.json"
RECORD_FILE = "tokens.json"  # what the other three hold, checked on every load
RECORD_FORMAT = "gptlib-tokens"
SPLIT_FILES = {"train": TRAIN_FILE, "val": VAL_FILE}
FILES = (TRAIN_FILE, VAL_FILE, TOKENIZER_FILE, RECORD_FILE)  # the order of writing


class TokenFileError(ValueError):
    """Token files that do not agree with their record; the message says how."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids below 65,536 (GPT-2's 50,257 fit): half the disk of int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """SHA-256 of the tokenizer's canonical JSON: another fingerprint, other ids."""
    canonical = json.dumps(
        tokenizer.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prepare_token_files(
    text: str, tokenizer: Tokenizer, out_dir: str | Path, val_fraction: float = 0.1
) -> dict[str, int]:
    """Encode `text` once: write train.bin, val.bin (token ids), tokenizer.json and
    tokens.json, the record `load_token_files` checks them against."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    vocab_size = tokenizer.vocab_size
    ids = np.array(tokenizer.encode(text), dtype=token_dtype(vocab_size))
    n = int(len(ids) * (1.0 - val_fraction))
    # every check before the first write: a refused corpus leaves the folder as it was
    if len(ids) == 0:
        raise ValueError("the corpus is empty: there are no tokens to write")
    if n == 0 or n == len(ids):
        raise ValueError(
            f"the corpus has {len(ids)} tokens: with val_fraction={val_fraction} "
            f"that leaves {n} for training and {len(ids) - n} for validation"
        )
    if ids.max() >= vocab_size:
        raise ValueError(f"the tokenizer made id {ids.max()}, >= its {vocab_size=}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "version": 1,
        "dtype": ids.dtype.name,
        "vocab_size": vocab_size,
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
    }
    # Every file is written under a temporary name first: a full disk or an error
    # stops here and leaves the folder's earlier files as they were.
    temps = {name: out_dir / f".{name}.tmp" for name in FILES}
    try:
        for split, part in (("train", ids[:n]), ("val", ids[n:])):
            data = part.tobytes()
            temps[SPLIT_FILES[split]].write_bytes(data)
            sha256 = hashlib.sha256(data).hexdigest()
            record[split] = {"tokens": len(part), "sha256": sha256}
        tokenizer.save(temps[TOKENIZER_FILE])
        temps[RECORD_FILE].write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    except BaseException as e:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(
                e.errno,
                f"could not write token files to {out_dir} ({e.strerror or e}); "
                "the files already there are unchanged",
            ) from e
        raise
    # Renames need no space. The record goes first and comes back last: if this is
    # cut short, the folder has no record and is refused, never read half-new.
    (out_dir / RECORD_FILE).unlink(missing_ok=True)
    for name in FILES:  # RECORD_FILE last
        temps[name].replace(out_dir / name)
    return {"train": n, "val": len(ids) - n}


def load_token_files(data_dir: str | Path) -> tuple[np.memmap, np.memmap, Tokenizer]:
    """Memory-map train.bin and val.bin, once they agree with tokens.json: batches are
    read from disk, the corpus never sits in RAM."""
    data_dir = Path(data_dir)
    for name in FILES:
        if not (data_dir / name).is_file():
            raise FileNotFoundError(
                f"{data_dir / name} is missing: "
                f"run `gptlib prepare --out {data_dir}` first"
            )
    tokenizer_path, record_path = data_dir / TOKENIZER_FILE, data_dir / RECORD_FILE
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except Exception as e:  # each tokenizer class checks its data its own way
        problem = f"{e} is missing" if isinstance(e, KeyError) else str(e)
        named = str(tokenizer_path) in problem  # most errors name the file already
        raise TokenFileError(
            problem if named else f"{tokenizer_path}: {problem}"
        ) from None
    record = read_token_record(record_path)
    vocab_size, dtype = tokenizer.vocab_size, token_dtype(tokenizer.vocab_size)
    # the record must describe this tokenizer...
    if record["vocab_size"] != vocab_size:
        raise TokenFileError(
            f"{record_path}: vocab_size is {record['vocab_size']}, "
            f"{tokenizer_path} has {vocab_size} tokens"
        )
    if record["dtype"] != dtype.name:
        raise TokenFileError(
            f"{record_path}: dtype is {record['dtype']}, not {dtype.name}"
        )
    if record["tokenizer_sha256"] != tokenizer_fingerprint(tokenizer):
        raise TokenFileError(
            f"{record_path}: tokenizer_sha256 is not that of {tokenizer_path}: "
            "the ids were made by another tokenizer"
        )
    # ...and these files, byte for byte
    memmaps = []
    for split, name in SPLIT_FILES.items():
        path, expected = data_dir / name, record[split]
        size = path.stat().st_size
        if size != expected["tokens"] * dtype.itemsize:
            raise TokenFileError(
                f"{path} has {size:,} bytes, not the {split}.tokens="
                f"{expected['tokens']:,} {dtype.name} of {record_path}"
            )
        sha256, largest = scan_token_file(path, dtype)
        if sha256 != expected["sha256"]:
            raise TokenFileError(
                f"{path}: its SHA-256 is not {split}.sha256 of {record_path}: "
                "the file changed after `gptlib prepare`"
            )
        if largest >= vocab_size:  # never an id the model has no embedding for
            raise TokenFileError(
                f"{path} holds token id {largest}, >= vocab_size={vocab_size}"
            )
        memmaps.append(np.memmap(path, dtype=dtype, mode="r"))
    train, val = memmaps
    return train, val, tokenizer


def read_record(path: Path, record_format: str, what: str) -> dict[str, Any]:
    """A JSON record gptlib wrote: a dict with this "format" and version 1."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise TokenFileError(f"{path} is not JSON: {e}") from None
    if not isinstance(record, dict) or record.get("format") != record_format:
        raise TokenFileError(f"{path} is not a gptlib {what}")
    if record.get("version") != 1:
        raise TokenFileError(f"{path} has version {record.get('version')!r}, not 1")
    return record


def read_token_record(path: Path) -> dict[str, Any]:
    """tokens.json, each field of the type `prepare_token_files` writes."""
    record = read_record(path, RECORD_FORMAT, "token record")
    fields = {k: record.get(k) for k in ("dtype", "vocab_size", "tokenizer_sha256")}
    for split in ("train", "val"):
        part = record.get(split)
        part = part if isinstance(part, dict) else {}
        fields |= {f"{split}.{k}": part.get(k) for k in ("tokens", "sha256")}
    for name, value in fields.items():
        if name.endswith(("vocab_size", "tokens")):
            expected = "a whole number > 0"
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        else:
            expected, ok = "a string", isinstance(value, str)
        if not ok:
            raise TokenFileError(f"{path}: {name} is {value!r}, expected {expected}")
    return record


def scan_token_file(path: Path, dtype: np.dtype) -> tuple[str, int]:
    """(SHA-256, largest id) of a token file, read once, 16 MiB at a time."""
    digest, largest = hashlib.sha256(), -1
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
            largest = max(largest, int(np.frombuffer(block, dtype=dtype).max()))
    return digest.hexdigest(), largest


# --8<-- [end:token_files]


# --8<-- [start:download]
CACHE_ENV_VAR = "GPTLIB_CACHE"


def cache_dir() -> Path:
    """Where downloads are kept: $GPTLIB_CACHE, else ~/.cache/gptlib."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "gptlib")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    sha256: str,
    filename: str,
    directory: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Download `url` into the cache once, check its SHA-256 and return the local path.

    A cached file with the right checksum is used as it is (no network). pooch
    downloads to a temporary file and moves it into place only after the checksum
    matched, so an interrupted or corrupted download never poisons the cache.
    """
    import pooch  # imported here: only downloads need it

    directory = Path(directory) if directory is not None else cache_dir()
    try:
        path = pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=filename,
            path=directory,
            progressbar=progress,
        )
    except ValueError as e:  # pooch raises ValueError on a checksum mismatch
        raise ValueError(f"download of {url} failed its SHA-256 check: {e}") from None
    return Path(path)


@dataclass(frozen=True)
class RemoteCorpus:
    url: str
    sha256: str
    filename: str
    env_var: str  # a path in this variable is used instead of downloading


TINYSHAKESPEARE = RemoteCorpus(
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
    "tinyshakespeare/input.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    filename="tinyshakespeare.txt",
    env_var="GPTLIB_TINYSHAKESPEARE",
)


def fetch_remote_corpus(corpus: RemoteCorpus, progress: bool = True) -> Path:
    """The local path of a public corpus: the file named by its environment variable if
    set (checked against the published SHA-256), else a cached download."""
    local = os.environ.get(corpus.env_var)
    if local:
        path = Path(local)
        if not path.is_file():
            raise FileNotFoundError(
                f"${corpus.env_var} is {local}, which is not a file"
            )
        if sha256_of(path) != corpus.sha256:
            raise ValueError(
                f"{path} (from ${corpus.env_var}) is not the published "
                f"{corpus.filename}: "
                "its SHA-256 does not match"
            )
        return path
    return download(corpus.url, corpus.sha256, corpus.filename, progress=progress)


# --8<-- [end:download]
