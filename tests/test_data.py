import hashlib
import http.server
import os
import threading
from functools import partial

import pytest
import torch

from gptlib import data
from gptlib.data import (
    RemoteCorpus,
    download,
    encode_corpus,
    fetch_remote_corpus,
    get_batch,
    load_corpus,
    train_val_split,
)
from gptlib.tokenizer import CharTokenizer


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
