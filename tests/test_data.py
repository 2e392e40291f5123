import errno
import hashlib
import http.server
import json
import os
import threading
from functools import partial

import numpy as np
import pytest
import torch

from gptlib import data
from gptlib.data import (
    RECORD_FILE,
    TOKENIZER_FILE,
    TRAIN_FILE,
    VAL_FILE,
    RemoteCorpus,
    TokenFileError,
    download,
    encode_corpus,
    fetch_remote_corpus,
    get_batch,
    load_corpus,
    load_token_files,
    prepare_token_files,
    tokenizer_fingerprint,
    train_val_split,
)
from gptlib.tokenizer import SPLIT_PATTERN, BPETokenizer, CharTokenizer


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):
        CountingHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(tmp_path):
    """A loopback HTTP server serving tmp_path/served (no internet needed)."""
    served = tmp_path / "served"
    served.mkdir()
    CountingHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(CountingHandler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_caches_and_checks_sha256(server, tmp_path):
    served, base = server
    payload = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    (served / "input.txt").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache"
    path = download(f"{base}/input.txt", sha, "shakes.txt", cache, progress=False)
    assert path == cache / "shakes.txt" and path.read_bytes() == payload
    assert CountingHandler.requests == ["/input.txt"]
    again = download(f"{base}/input.txt", sha, "shakes.txt", cache, progress=False)
    assert again == path and CountingHandler.requests == [
        "/input.txt"
    ]  # served from the cache


def test_download_rejects_wrong_checksum_and_keeps_cache_clean(server, tmp_path):
    served, base = server
    (served / "input.txt").write_text("tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="SHA-256"):
        download(f"{base}/input.txt", "0" * 64, "shakes.txt", cache, progress=False)
    assert not (cache / "shakes.txt").exists()


def test_remote_corpus_prefers_local_copy_from_env(tmp_path, monkeypatch):
    local = tmp_path / "mine.txt"
    local.write_text("to be or not to be")
    corpus = RemoteCorpus(
        "http://127.0.0.1:9/never",
        hashlib.sha256(b"to be or not to be").hexdigest(),
        "mine.txt",
        "GPTLIB_TEST_CORPUS",
    )
    monkeypatch.setenv("GPTLIB_TEST_CORPUS", str(local))
    assert fetch_remote_corpus(corpus, progress=False) == local
    local.write_text("changed")
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        fetch_remote_corpus(corpus, progress=False)


def test_remote_corpus_env_var_naming_a_missing_file(tmp_path, monkeypatch):
    corpus = RemoteCorpus(
        "http://127.0.0.1:9/never", "0" * 64, "mine.txt", "GPTLIB_TEST_CORPUS"
    )
    monkeypatch.setenv("GPTLIB_TEST_CORPUS", str(tmp_path / "nowhere.txt"))
    with pytest.raises(FileNotFoundError, match="GPTLIB_TEST_CORPUS"):
        fetch_remote_corpus(corpus, progress=False)


def test_tinyshakespeare_from_a_local_copy_when_present():
    if not os.environ.get(data.TINYSHAKESPEARE.env_var):
        pytest.skip(
            "no local Tiny Shakespeare "
            "($GPTLIB_TINYSHAKESPEARE; ./dev sets it from ../shared/data)"
        )
    text = load_corpus("tinyshakespeare")
    assert text.startswith("First Citizen:") and len(text) == 1_115_394


def test_load_corpus_path_and_errors(tmp_path):
    f = tmp_path / "my.txt"
    f.write_text("hello", encoding="utf-8")
    assert load_corpus(str(f)) == "hello"
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("no-such-corpus")


def test_encode_split_and_batches():
    text = "abcdefghij" * 20
    tok = CharTokenizer.train(text)
    ids = encode_corpus(text, tok)
    assert ids.dtype == torch.long and len(ids) == 200
    train, val = train_val_split(ids, 0.1)
    assert (
        len(train) == 180
        and len(val) == 20
        and torch.equal(torch.cat([train, val]), ids)
    )
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(train, batch_size=4, block_size=8, generator=g)
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert torch.equal(
        y, (x + 1) % 10
    )  # "abcdefghij" repeats: ids 0..9, each followed by the next
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(ids, 1.5)
    with pytest.raises(ValueError, match="more than block_size"):
        get_batch(ids[:5], 2, 8)


def test_token_files_round_trip_and_memmap_batches(tmp_path):
    from gptlib.data import load_token_files, prepare_token_files
    from gptlib.tokenizer import BPETokenizer

    text = "the quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸。" * 40
    tok = BPETokenizer.train(text, vocab_size=300)
    counts = prepare_token_files(text, tok, tmp_path, val_fraction=0.1)
    train, val, loaded = load_token_files(tmp_path)
    ids = tok.encode(text)
    assert (
        train.dtype.name == "uint16"
        and (tmp_path / "train.bin").stat().st_size == 2 * counts["train"]
    )
    assert train.tolist() + val.tolist() == ids and loaded.to_dict() == tok.to_dict()
    as_tensor = torch.tensor(train.tolist())
    x1, y1 = get_batch(train, 4, 16, generator=torch.Generator().manual_seed(0))
    x2, y2 = get_batch(as_tensor, 4, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.dtype == torch.long
    with pytest.raises(FileNotFoundError, match="gptlib prepare"):
        load_token_files(tmp_path / "nothing-here")


def test_chunked_split_takes_every_kth_chunk_for_validation():
    data = torch.arange(1000)
    train, val = train_val_split(
        data, 0.1, chunk_size=30
    )  # 34 chunks: 3 of them (the 10th, 20th, 30th) validate
    assert val.tolist() == list(range(270, 300)) + list(range(570, 600)) + list(
        range(870, 900)
    )
    assert len(train) + len(val) == 1000 and not set(train.tolist()) & set(val.tolist())
    assert torch.equal(torch.sort(torch.cat([train, val])).values, data)
    with pytest.raises(ValueError, match="fewer than 10 chunks"):
        train_val_split(data, 0.1, chunk_size=200)


# --- token files carry a record, and are checked against it -------------------------

TEXT = "the quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸。" * 40


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TEXT, vocab_size=300)


@pytest.fixture()
def token_dir(tmp_path, bpe):
    prepare_token_files(TEXT, bpe, tmp_path / "toks")
    return tmp_path / "toks"


def test_token_record_describes_the_files(token_dir, bpe):
    record = json.loads((token_dir / RECORD_FILE).read_text())
    n = len(bpe.encode(TEXT))
    assert record["dtype"] == "uint16" and record["vocab_size"] == 300
    assert record["train"]["tokens"] + record["val"]["tokens"] == n
    assert record["tokenizer_sha256"] == tokenizer_fingerprint(bpe)
    for split in ("train", "val"):
        data = (token_dir / f"{split}.bin").read_bytes()
        assert record[split]["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in token_dir.iterdir()) == [
        "tokenizer.json",
        "tokens.json",
        "train.bin",
        "val.bin",
    ]  # no temporary file left


def edit_record(**changes):
    def change(folder):
        record = json.loads((folder / RECORD_FILE).read_text())
        for key, value in changes.items():
            if "__" in key:  # train__tokens: record["train"]["tokens"]
                split, field = key.split("__")
                record[split][field] = value
            else:
                record[key] = value
        (folder / RECORD_FILE).write_text(json.dumps(record))

    return change


def write(name, data):
    def change(folder):
        path = folder / name
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)

    return change


def other_tokenizer(vocab_size):
    def change(folder):
        BPETokenizer.train(TEXT[::-1], vocab_size=vocab_size).save(
            folder / TOKENIZER_FILE
        )

    return change


def forged_id(folder):
    """A train.bin with an id beyond the vocabulary, and a record forged to match."""
    ids = np.fromfile(folder / TRAIN_FILE, dtype=np.uint16)
    ids[5] = 300
    ids.tofile(folder / TRAIN_FILE)
    sha256 = hashlib.sha256(ids.tobytes()).hexdigest()
    edit_record(train__sha256=sha256)(folder)


def flip_a_byte(data):
    return data[:10] + bytes([data[10] ^ 1]) + data[11:]


BPE_WITHOUT_MERGES = {"type": "bpe", "version": 1, "pattern": SPLIT_PATTERN}

BAD_TOKEN_FOLDERS = {
    "record not JSON": (write(RECORD_FILE, b"{"), "tokens.json is not JSON"),
    "record not ours": (
        write(RECORD_FILE, b'{"format": "other"}'),
        "tokens.json is not a gptlib token record",
    ),
    "record version": (edit_record(version=2), "tokens.json has version 2"),
    "record dtype missing": (
        edit_record(dtype=None),
        "tokens.json: dtype is None, expected a string",
    ),
    "record vocab_size": (
        edit_record(vocab_size=301),
        "tokens.json: vocab_size is 301, .*tokenizer.json has 300 tokens",
    ),
    "record vocab_size a bool": (
        edit_record(vocab_size=True),
        "vocab_size is True, expected a whole number > 0",
    ),
    "record dtype": (edit_record(dtype="uint32"), "dtype is uint32, not uint16"),
    "record tokens a string": (
        edit_record(train__tokens="many"),
        "train.tokens is 'many', expected a whole number > 0",
    ),
    "record tokens zero": (edit_record(val__tokens=0), "val.tokens is 0"),
    "record split missing": (
        edit_record(val=None),
        "val.tokens is None",
    ),
    "record tokens wrong": (
        edit_record(train__tokens=5),
        "train.bin has .* bytes, not the train.tokens=5 uint16 of .*tokens.json",
    ),
    "train.bin cut short": (
        write(TRAIN_FILE, lambda data: data[:-2]),
        "train.bin has .* bytes, not the train.tokens=",
    ),
    "val.bin changed": (
        write(VAL_FILE, flip_a_byte),
        "val.bin: its SHA-256 is not val.sha256 of .*tokens.json",
    ),
    "another tokenizer, same size": (
        other_tokenizer(300),
        "tokenizer_sha256 is not that of .*tokenizer.json: the ids were made by",
    ),
    "another tokenizer, other size": (other_tokenizer(280), "vocab_size is 300"),
    "tokenizer not JSON": (
        write(TOKENIZER_FILE, b"\x00"),
        "tokenizer.json is not a tokenizer JSON file",
    ),
    "tokenizer of no kind": (
        write(TOKENIZER_FILE, b'{"type": "nope"}'),
        "tokenizer.json: not a gptlib tokenizer",
    ),
    "tokenizer without its merges": (
        write(TOKENIZER_FILE, json.dumps(BPE_WITHOUT_MERGES).encode()),
        "tokenizer.json: 'merges' is missing",
    ),
    "an id beyond the vocabulary": (forged_id, "train.bin holds token id 300"),
}


@pytest.mark.parametrize(
    "change, message", BAD_TOKEN_FOLDERS.values(), ids=BAD_TOKEN_FOLDERS.keys()
)
def test_token_files_that_disagree_with_their_record(token_dir, change, message):
    change(token_dir)
    with pytest.raises(TokenFileError, match=message) as caught:
        load_token_files(token_dir)
    assert str(token_dir) in str(caught.value) and "\n" not in str(caught.value)


def test_token_folder_without_a_record_is_refused(token_dir):
    """A folder written before gptlib wrote records: prepare it again."""
    (token_dir / RECORD_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="tokens.json is missing: run `gptlib"):
        load_token_files(token_dir)


@pytest.mark.parametrize(
    "text, val_fraction, message",
    [
        (TEXT, 0.0, "val_fraction must be between 0 and 1, got 0.0"),
        (TEXT, 1.0, "val_fraction must be between 0 and 1, got 1.0"),
        (TEXT, -0.1, "val_fraction must be between 0 and 1"),
        (TEXT, 1.5, "val_fraction must be between 0 and 1"),
        ("", 0.1, "the corpus is empty"),
        ("t", 0.1, "1 tokens: .* leaves 0 for training and 1 for validation"),
    ],
)
def test_prepare_refuses_before_writing_anything(
    tmp_path, bpe, text, val_fraction, message
):
    with pytest.raises(ValueError, match=message):
        prepare_token_files(text, bpe, tmp_path / "toks", val_fraction)
    assert not (tmp_path / "toks").exists()


def test_a_prepare_that_fails_leaves_the_folder_as_it_was(token_dir, bpe, monkeypatch):
    """Every file is written under a temporary name before any is replaced: a full
    disk half-way leaves the earlier token files, readable, and no temporary files."""
    before = {p.name: p.read_bytes() for p in token_dir.iterdir()}

    def fail(self, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(BPETokenizer, "save", fail)
    with pytest.raises(OSError, match="No space left on device.*unchanged"):
        prepare_token_files(TEXT[:500], bpe, token_dir)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in token_dir.iterdir()} == before
    load_token_files(token_dir)  # still agrees with its record
