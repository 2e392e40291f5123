"""Token shards: a corpus larger than memory, tokenized once into files of one size.

Chapter 16 (Real data and evaluation). `gptlib.data.prepare_token_files` encodes one
string; a web corpus (FineWeb-Edu's 10-billion-token sample, OpenWebText) does not fit
in memory as one. Here:

* `read_documents(source)` streams the documents of a corpus one at a time: the
  course's page sections, text, JSON lines or Parquet files, local or on the Hugging
  Face hub (`hf://datasets/OWNER/NAME/PATTERN`, each file downloaded once, cached);
* `prepare_shards(documents, tokenizer, out_dir)` tokenizes them in worker processes
  into shards of exactly `shard_tokens` ids, holding whole documents out for
  validation, and records every shard (tokens, SHA-256) in index.json. Cut short
  (Ctrl-C, kill -9, a full disk), it goes on with `resume=True`: the shards it had
  finished are kept, not redone;
* `open_shards(out_dir)` reads them back, each split as one long `ShardedTokens`
  array on memory-mapped files, which `get_batch` samples windows from as from a
  tensor.
"""

# --8<-- [start:imports]
import fnmatch
import gzip
import hashlib
import json
import multiprocessing
import re
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from gptlib.checkpoint import atomic_write_bytes
from gptlib.data import (
    TokenFileError,
    course_sections,
    read_record,
    token_dtype,
    tokenizer_fingerprint,
)
from gptlib.tokenizer import BPETokenizer, Tokenizer, load_tokenizer

# --8<-- [end:imports]


# --8<-- [start:documents]
COURSE_SOURCES = {"course": None, "course-en": "en", "course-zh": "zh"}
HUB_PREFIX = "hf://datasets/"
READERS = (".txt", ".jsonl", ".jsonl.gz", ".parquet")  # the file types read


def read_documents(
    source: str | Path, text_field: str = "text", errors: str = "strict"
) -> Iterator[str]:
    """The documents of a corpus, one at a time: never all of it in memory.

    `source` is "course" ("course-en", "course-zh": the sections of the course's
    pages), a file, a folder (its files in name order) or
    `hf://datasets/OWNER/NAME[@REVISION]/PATTERN` on the Hugging Face hub. A .txt file
    holds a document per paragraph (blank lines between them); .jsonl and .jsonl.gz a
    JSON object per line, with the text under `text_field`; .parquet a column
    `text_field`. Bytes that are not UTF-8 stop the reading with an error that names
    the file and line, unless `errors="replace"`: each bad byte then reads as U+FFFD.

    >>> docs = read_documents("course-en")
    >>> next(docs)[:40]
    '# Build a GPT from scratch\\n\\nThis course '
    """
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r}")
    if str(source) in COURSE_SOURCES:
        for section in course_sections(COURSE_SOURCES[str(source)]):
            yield section.rstrip("\n")
        return
    for path in corpus_files(source):
        if path.name.endswith(".txt"):
            yield from paragraphs(path, errors)
        elif path.name.endswith(".parquet"):
            yield from parquet_texts(path, text_field)
        else:
            yield from jsonl_texts(path, text_field, errors)


def corpus_files(source: str | Path) -> Iterator[Path]:
    """The files of a corpus in order (a hub corpus's downloaded when reached)."""
    if str(source).startswith(HUB_PREFIX):
        yield from hub_files(str(source))
        return
    path = Path(source)
    if path.is_file():
        if not path.name.endswith(READERS):
            raise ValueError(f"{path}: gptlib reads {', '.join(READERS)} files")
        yield path
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.name.endswith(READERS))
        if not files:
            raise ValueError(f"{path} holds no {', '.join(READERS)} files")
        yield from files
    else:
        raise FileNotFoundError(
            f"no corpus {source}: give 'course', a file, a folder or {HUB_PREFIX}..."
        )


def text_lines(path: Path, errors: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, gzipped or not, decoded as UTF-8."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if errors == "replace":
                    yield number, raw.decode("utf-8", "replace")
                    continue
                raise ValueError(
                    f"{path}, line {number}: not UTF-8 ({e.reason} at byte {e.start} "
                    "of the line); fix the file, or read each bad byte as U+FFFD "
                    "with errors='replace' (gptlib prepare --utf8-errors replace)"
                ) from None


def paragraphs(path: Path, errors: str) -> Iterator[str]:
    lines: list[str] = []
    for _, line in text_lines(path, errors):
        if line.strip():
            lines.append(line)
        elif lines:
            yield "".join(lines).rstrip("\n")
            lines = []
    if lines:
        yield "".join(lines).rstrip("\n")


def jsonl_texts(path: Path, text_field: str, errors: str) -> Iterator[str]:
    for number, line in text_lines(path, errors):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {number}: not JSON ({e.msg})") from None
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ValueError(
                f"{path}, line {number}: no text under {text_field!r} "
                "(choose the field with text_field, gptlib prepare --text-field)"
            )
        yield text


def parquet_texts(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"reading {path} needs pyarrow: pip install 'gptlib[data]'"
        ) from None
    table = pq.ParquetFile(path)
    if text_field not in table.schema_arrow.names:
        raise ValueError(
            f"{path} has no column {text_field!r} (its columns: "
            f"{', '.join(table.schema_arrow.names)})"
        )
    for batch in table.iter_batches(batch_size=1024, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            yield text or ""  # a null reads as an empty document


def hub_files(source: str) -> Iterator[Path]:
    """The files of a dataset on the Hugging Face hub that match the pattern, each
    downloaded (with a progress bar) when the reading reaches it, once: the hub's
    cache keeps it."""
    match = re.fullmatch(
        r"([^/@]+/[^/@]+)(?:@([^/]+))?/(.+)", source[len(HUB_PREFIX) :]
    )
    if match is None:
        raise ValueError(
            f"{source}: expected {HUB_PREFIX}OWNER/NAME[@REVISION]/PATTERN, such as "
            f"{HUB_PREFIX}HuggingFaceFW/fineweb-edu/sample/10BT/*.parquet"
        )
    repo_id, revision, pattern = match.groups()
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:
        raise ImportError(
            f"{source} needs huggingface_hub: pip install 'gptlib[data]'"
        ) from None
    names = HfApi().list_repo_files(repo_id, repo_type="dataset", revision=revision)
    names = sorted(n for n in names if fnmatch.fnmatch(n, pattern))
    if not names:
        raise FileNotFoundError(f"no file of {repo_id} matches {pattern!r}")
    for name in names:
        yield Path(
            hf_hub_download(repo_id, name, repo_type="dataset", revision=revision)
        )


# --8<-- [end:documents]


# --8<-- [start:encode]
def in_validation(document: int, val_fraction: float, seed: int = 0) -> bool:
    """Whether document number `document` goes to validation. A hash of (seed,
    number) decides, not the order of work: every run, with any number of workers,
    resumed or not, holds out the same documents."""
    digest = hashlib.blake2b(f"{seed}:{document}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < val_fraction * 2**64


def document_end(tokenizer: Tokenizer) -> list[int]:
    """The ids written after each document: GPT-2's <|endoftext|> where the tokenizer
    has it (the model learns where a text stops), else those of a blank line."""
    special = getattr(tokenizer, "special_tokens", {})
    if "<|endoftext|>" in special:
        return [special["<|endoftext|>"]]
    return tokenizer.encode("\n\n")


class DocumentEncoder:
    """Documents -> arrays of token ids, each document followed by `document_end`.
    A worker process gets a copy of it once and encodes many batches with it."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.end = document_end(tokenizer)
        self.dtype = token_dtype(tokenizer.vocab_size)

    def __call__(self, first: int, texts: list[str]) -> list[np.ndarray]:
        out = []
        for number, text in enumerate(texts, first):
            if not text:  # an empty document: no ids, not even its end
                out.append(np.zeros(0, dtype=self.dtype))
                continue
            try:
                # text from the web may contain "<|endoftext|>": it stays text
                if isinstance(self.tokenizer, BPETokenizer):
                    ids = self.tokenizer.encode(text, allowed_special="none")
                else:
                    ids = self.tokenizer.encode(text)
            except ValueError as e:
                raise ValueError(f"document {number}: {e}") from None
            out.append(np.array(ids + self.end, dtype=self.dtype))
        return out


_encoder: DocumentEncoder | None = None  # in a worker process: its own copy


def start_worker(encoder: DocumentEncoder) -> None:
    global _encoder
    _encoder = encoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's


def encode_in_worker(first: int, texts: list[str]) -> list[np.ndarray]:
    assert _encoder is not None
    return _encoder(first, texts)


def encode_batches(
    batches: Iterable[tuple[int, list[str]]], encoder: DocumentEncoder, workers: int
) -> Iterator[list[np.ndarray]]:
    """encoder(*batch) for each batch, in order, by `workers` processes. At most a few
    batches per worker wait their turn: the corpus is never read far ahead."""
    if workers <= 1:
        yield from (encoder(*batch) for batch in batches)
        return
    # fork where there is one: a worker starts as a copy of this process, so code
    # defined in a notebook or a pasted session runs in it too (spawn, Windows' only
    # way, imports it again from a file)
    fork = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else None)
    with context.Pool(workers, start_worker, (encoder,)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(encode_in_worker, batch))
            if len(pending) >= 4 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# --8<-- [end:encode]


# --8<-- [start:writer]
INDEX_FILE, TOKENIZER_FILE = "index.json", "tokenizer.json"
INDEX_FORMAT = "gptlib-shards"
SPLITS = ("train", "val")
SHARD_NAME = re.compile(r"(train|val)-[0-9]{6}\.bin")


class ShardWriter:
    """One split's token ids, cut into shards of exactly `shard_tokens` (the last
    one shorter). The ids past the last full shard wait in `pending`."""

    def __init__(
        self,
        out_dir: Path,
        split: str,
        shard_tokens: int,
        shards: list[dict[str, Any]],
        pending: np.ndarray,
    ):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.shards = shards  # the finished ones: {"file", "tokens", "sha256"}
        self.pending, self.pending_tokens = [pending], len(pending)

    def add(self, ids: np.ndarray) -> None:
        self.pending.append(ids)
        self.pending_tokens += len(ids)
        while self.pending_tokens >= self.shard_tokens:
            tokens = np.concatenate(self.pending)
            self.write(tokens[: self.shard_tokens])
            self.pending = [tokens[self.shard_tokens :]]
            self.pending_tokens = len(self.pending[0])

    def write(self, tokens: np.ndarray) -> None:
        name = f"{self.split}-{len(self.shards):06d}.bin"
        data = tokens.tobytes()
        atomic_write_bytes(self.out_dir / name, data, what="shard")
        sha256 = hashlib.sha256(data).hexdigest()
        self.shards.append({"file": name, "tokens": len(tokens), "sha256": sha256})

    def carry(self) -> np.ndarray:
        """The pending ids as one array (what a resumed run starts from)."""
        return np.concatenate(self.pending)

    def finish(self) -> None:
        if self.pending_tokens:
            self.write(self.carry())
            self.pending, self.pending_tokens = [self.carry()[:0]], 0


# --8<-- [end:writer]


# --8<-- [start:progress]
def save_progress(out_dir: Path, index: dict[str, Any], writers: dict) -> None:
    """Record the finished shards and the pending ids (in a file named after the
    number of documents read, so that an older index still finds its own): a run
    killed after this goes on from here."""
    read = index["documents"]["read"]
    for split, writer in writers.items():
        carry = writer.carry()
        name = f"carry-{split}-{read:012d}.bin"
        atomic_write_bytes(out_dir / name, carry.tobytes(), what="shard")
        index["carry"][split] = {
            "file": name,
            "tokens": len(carry),
            "sha256": hashlib.sha256(carry.tobytes()).hexdigest(),
        }
    write_index(out_dir, index)
    remove_unlisted(out_dir, index)


def write_index(out_dir: Path, index: dict[str, Any]) -> None:
    text = json.dumps(index, indent=1) + "\n"
    atomic_write_bytes(out_dir / INDEX_FILE, text.encode("utf-8"), what="index")


def remove_unlisted(out_dir: Path, index: dict[str, Any]) -> None:
    """Delete shard and carry files that the index does not list: those of a killed
    run after its last record, or carries that a newer one replaced."""
    listed = {shard["file"] for split in SPLITS for shard in index[split]}
    listed |= {carry["file"] for carry in index["carry"].values()}
    for path in out_dir.glob("*.bin"):
        made_here = SHARD_NAME.fullmatch(path.name) or path.name.startswith("carry-")
        if made_here and path.name not in listed:
            path.unlink()


def read_carry(out_dir: Path, index: dict[str, Any], split: str) -> np.ndarray:
    dtype = np.dtype(index["dtype"])
    carry = index["carry"].get(split)
    if carry is None:
        return np.zeros(0, dtype=dtype)
    path = out_dir / carry["file"]
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != carry["sha256"]:
        raise TokenFileError(f"{path} is missing or damaged: prepare the shards anew")
    return np.frombuffer(data, dtype=dtype).copy()


def start_or_resume(
    out_dir: Path, settings: dict[str, Any], fingerprint: str, resume: bool
) -> dict[str, Any] | None:
    """The index to go on from, or None for a new folder; refuses to mix runs."""
    path = out_dir / INDEX_FILE
    if not path.exists():
        if resume:
            raise FileNotFoundError(f"--resume: {out_dir} holds no {INDEX_FILE}")
        return None
    index = read_index(path)
    if not resume:
        state = "finished" if index["complete"] else "unfinished"
        raise FileExistsError(
            f"{out_dir} already holds {state} shards: go on with resume=True "
            "(gptlib prepare --resume), or choose another folder"
        )
    if index["settings"] != settings:
        changed = ", ".join(
            f"{k} {index['settings'].get(k)!r} -> {v!r}"
            for k, v in settings.items()
            if index["settings"].get(k) != v
        )
        raise ValueError(f"{path} was prepared with other settings ({changed})")
    if index["tokenizer"]["sha256"] != fingerprint:
        raise ValueError(f"{path} was prepared with another tokenizer")
    return index


def read_index(path: Path) -> dict[str, Any]:
    """index.json, each field checked before anything trusts it (a file name that
    could point outside the folder included)."""
    index = read_record(path, INDEX_FORMAT, "shard index")
    checks: list[tuple[str, Callable[[Any], bool]]] = [
        ("complete", lambda v: isinstance(v, bool)),
        ("settings", lambda v: isinstance(v, dict)),
        ("tokenizer", lambda v: isinstance(v, dict) and is_hex(v.get("sha256"))),
        ("dtype", lambda v: v in ("uint16", "uint32")),
        ("documents", lambda v: isinstance(v, dict) and all(
            is_count(v.get(k)) for k in ("read", "train", "val", "empty")
        )),
        ("train", lambda v: isinstance(v, list) and all(map(is_shard, v))),
        ("val", lambda v: isinstance(v, list) and all(map(is_shard, v))),
        ("carry", lambda v: isinstance(v, dict) and all(
            k in SPLITS and is_shard(c, carry=True) for k, c in v.items()
        )),
    ]  # fmt: skip
    for name, ok in checks:
        if not ok(index.get(name)):
            raise TokenFileError(f"{path}: {name} is missing or damaged")
    return index


def is_hex(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value) is not None


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_shard(entry: Any, carry: bool = False) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return False
    pattern = r"carry-(train|val)-[0-9]{12}\.bin" if carry else SHARD_NAME.pattern
    named = re.fullmatch(pattern, entry["file"]) is not None
    return named and is_count(entry.get("tokens")) and is_hex(entry.get("sha256"))


# --8<-- [end:progress]


# --8<-- [start:prepare]
def prepare_shards(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    shard_tokens: int = 100_000_000,
    val_fraction: float = 0.1,
    workers: int = 1,
    source: str = "",
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize `documents` into shards in `out_dir` and return its index.

    Whole documents go to the "train" or the "val" split (`in_validation`), each
    followed by `document_end`; each split's ids are cut into files of `shard_tokens`
    ids (uint16 when the vocabulary fits, else uint32), a document running on from one
    shard into the next. Empty documents are skipped and counted. After every batch
    that finished a shard, index.json records where the work stands; with
    `resume=True` the same call (same documents, tokenizer and settings) goes on
    from there, skipping the documents already done without encoding them again.
    """
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be 1 or more, got {shard_tokens}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    out_dir = Path(out_dir)
    settings = {
        "source": source,
        "shard_tokens": shard_tokens,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    fingerprint = tokenizer_fingerprint(tokenizer)
    dtype = token_dtype(tokenizer.vocab_size)
    index = start_or_resume(out_dir, settings, fingerprint, resume)
    if index is None:  # a new folder
        out_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(out_dir / TOKENIZER_FILE)
        index = {
            "format": INDEX_FORMAT,
            "version": 1,
            "complete": False,
            "settings": settings,
            "tokenizer": {"vocab_size": tokenizer.vocab_size, "sha256": fingerprint},
            "dtype": dtype.name,
            "documents": {"read": 0, "train": 0, "val": 0, "empty": 0},
            "train": [],
            "val": [],
            "carry": {},
        }
        write_index(out_dir, index)  # from now on, resume=True can go on
    elif index["complete"]:
        return index
    else:
        remove_unlisted(out_dir, index)  # what the killed run wrote after its record
    counts = index["documents"]
    writers = {
        split: ShardWriter(
            out_dir,
            split,
            shard_tokens,
            index[split],
            read_carry(out_dir, index, split),
        )
        for split in SPLITS
    }
    done = counts["read"]  # documents that a resumed run skips
    bar = tqdm(
        desc="tokenizing",
        unit=" docs",
        initial=done,
        disable=not progress,
        dynamic_ncols=True,
    )
    remaining = skip_documents(documents, done)
    encoder = DocumentEncoder(tokenizer)
    with bar:
        for arrays in encode_batches(
            numbered_batches(remaining, done), encoder, workers
        ):
            shards_before = len(index["train"]) + len(index["val"])
            for ids in arrays:
                number = counts["read"]
                counts["read"] += 1
                if len(ids) == 0:
                    counts["empty"] += 1
                    continue
                split = "val" if in_validation(number, val_fraction, seed) else "train"
                counts[split] += 1
                writers[split].add(ids)
            bar.update(len(arrays))
            bar.set_postfix(shards=len(index["train"]) + len(index["val"]))
            if len(index["train"]) + len(index["val"]) > shards_before:
                save_progress(out_dir, index, writers)
    for split in SPLITS:
        if counts[split] == 0:
            raise ValueError(
                f"no document went to {split} ({counts['read']} documents read, "
                f"{counts['empty']} empty, val_fraction={val_fraction}): "
                "a split needs at least one"
            )
        writers[split].finish()
    index["complete"], index["carry"] = True, {}
    write_index(out_dir, index)
    remove_unlisted(out_dir, index)
    return index


def numbered_batches(
    documents: Iterable[str], first: int, size: int = 64
) -> Iterator[tuple[int, list[str]]]:
    """(number of the first document, up to `size` documents)."""
    batch: list[str] = []
    for text in documents:
        batch.append(text)
        if len(batch) == size:
            yield first, batch
            first, batch = first + size, []
    if batch:
        yield first, batch


def skip_documents(documents: Iterable[str], n: int) -> Iterator[str]:
    """`documents` after the first n, which are read but not encoded."""
    iterator = iter(documents)
    for skipped in range(n):
        if next(iterator, None) is None:
            raise ValueError(
                f"the corpus has {skipped} documents, fewer than the {n} that the "
                "interrupted run had read: is it the same corpus?"
            )
    return iterator


# --8<-- [end:prepare]


# --8<-- [start:read]
class ShardedTokens:
    """The shards of one split as one long 1-D array of token ids. It has len() and
    slices, like chapter 10's memory-mapped train.bin, so `get_batch` and
    `estimate_loss` take it as they take that; a slice reads only the shards it
    touches, and a window that runs over a shard's end goes on in the next, as the
    text did.

    >>> tokens = ShardedTokens([np.arange(5), np.arange(5, 8)])
    >>> len(tokens), tokens[3:7]
    (8, array([3, 4, 5, 6]))
    """

    def __init__(self, shards: list[np.ndarray]):
        self.shards = shards
        self.starts = np.cumsum([0] + [len(s) for s in shards])  # of each shard

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, where: slice) -> np.ndarray:
        if not isinstance(where, slice) or where.step not in (None, 1):
            raise TypeError("ShardedTokens takes slices with step 1, such as t[i:j]")
        start, stop, _ = where.indices(len(self))
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts = []
        while start < stop:
            offset = start - int(self.starts[shard])
            take = min(stop - start, len(self.shards[shard]) - offset)
            parts.append(self.shards[shard][offset : offset + take])
            start, shard = start + take, shard + 1
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else self.shards[0][:0]


def open_shards(
    data_dir: str | Path, verify: bool = True
) -> tuple[ShardedTokens, ShardedTokens, Tokenizer]:
    """(train, val, tokenizer) of a folder `prepare_shards` finished. Every shard
    must have the size its index says; with `verify` (the default) also its SHA-256
    and no id past the vocabulary, which reads each once (about a second per GB)."""
    data_dir = Path(data_dir)
    path = data_dir / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run gptlib prepare first")
    index = read_index(path)
    if not index["complete"]:
        raise TokenFileError(
            f"{data_dir} is unfinished: run the same gptlib prepare with --resume"
        )
    tokenizer = load_tokenizer(data_dir / TOKENIZER_FILE)
    if tokenizer_fingerprint(tokenizer) != index["tokenizer"]["sha256"]:
        raise TokenFileError(
            f"{data_dir / TOKENIZER_FILE} is not the tokenizer that made the shards"
        )
    dtype = np.dtype(index["dtype"])
    splits = []
    for split in SPLITS:
        shards = []
        for shard in index[split]:
            file = data_dir / shard["file"]
            size = file.stat().st_size if file.is_file() else None
            if size != shard["tokens"] * dtype.itemsize:
                raise TokenFileError(
                    f"{file} is missing or has {size} bytes, not the "
                    f"{shard['tokens']:,} ids of {path}"
                )
            tokens = np.memmap(file, dtype=dtype, mode="r")
            if verify:
                check_shard(file, tokens, shard["sha256"], tokenizer.vocab_size)
            shards.append(tokens)
        splits.append(ShardedTokens(shards))
    train, val = splits
    return train, val, tokenizer


def check_shard(path: Path, tokens: np.ndarray, sha256: str, vocab_size: int) -> None:
    digest, step = hashlib.sha256(), 1 << 23
    for i in range(0, len(tokens), step):
        block = tokens[i : i + step]
        digest.update(block.tobytes())
        if int(block.max()) >= vocab_size:
            raise TokenFileError(f"{path} holds an id >= vocab_size={vocab_size}")
    if digest.hexdigest() != sha256:
        raise TokenFileError(f"{path} changed after gptlib prepare: SHA-256 differs")


# --8<-- [end:read]
