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


def course_text(lang: str | None = None) -> str:
    """The course pages as one text, in reading order. With both languages, the sections
    of each page alternate (English, Chinese, English, ...) so that any stretch of the
    text, the validation split at its end included, has both languages in it."""
    pages = course_snapshot()["pages"]
    if lang is not None:
        return "".join("".join(page[lang]) for page in pages)
    parts: list[str] = []
    for page in pages:
        en, zh = page["en"], page["zh"]
        for i in range(max(len(en), len(zh))):
            parts += en[i : i + 1] + zh[i : i + 1]
    return "".join(parts)


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
        return path.read_text(encoding="utf-8")
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
def get_batch(
    data: torch.Tensor | np.ndarray,
    batch_size: int,
    block_size: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `batch_size` random windows: inputs x and targets y = x shifted by one."""
    if len(data) <= block_size:
        raise ValueError(
            f"need more than block_size={block_size} tokens to make a batch, "
            f"got {len(data)}"
        )
    starts = torch.randint(
        len(data) - block_size, (batch_size,), generator=generator
    )  # (B,)
    if isinstance(
        data, np.ndarray
    ):  # a memmapped token file: read only these windows from disk
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
    return x.to(device), y.to(device)


# --8<-- [end:get_batch]
# --8<-- [end:batches]


# --8<-- [start:token_files]
TRAIN_FILE, VAL_FILE, TOKENIZER_FILE = "train.bin", "val.bin", "tokenizer.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids below 65,536 (GPT-2's 50,257 fit): half the disk of int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def prepare_token_files(
    text: str, tokenizer: Tokenizer, out_dir: str | Path, val_fraction: float = 0.1
) -> dict[str, int]:
    """Encode `text` once: write train.bin, val.bin (token ids) and tokenizer.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = np.array(tokenizer.encode(text), dtype=token_dtype(tokenizer.vocab_size))
    n = int(len(ids) * (1.0 - val_fraction))
    for name, part in ((TRAIN_FILE, ids[:n]), (VAL_FILE, ids[n:])):
        tmp = out_dir / (name + ".tmp")
        part.tofile(tmp)
        tmp.replace(out_dir / name)  # atomic: never a half-written token file
    tokenizer.save(out_dir / TOKENIZER_FILE)
    return {"train": n, "val": len(ids) - n}


def load_token_files(data_dir: str | Path) -> tuple[np.memmap, np.memmap, Tokenizer]:
    """Memory-map train.bin and val.bin: batches are read from disk, the corpus never
    sits in RAM."""
    data_dir = Path(data_dir)
    for name in (TRAIN_FILE, VAL_FILE, TOKENIZER_FILE):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(
                f"{data_dir / name} is missing: "
                f"run `gptlib prepare --out {data_dir}` first"
            )
    tokenizer = load_tokenizer(data_dir / TOKENIZER_FILE)
    dtype = token_dtype(tokenizer.vocab_size)
    train = np.memmap(data_dir / TRAIN_FILE, dtype=dtype, mode="r")
    val = np.memmap(data_dir / VAL_FILE, dtype=dtype, mode="r")
    return train, val, tokenizer


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
