"""gptlib.shards: documents streamed from files, tokenized by worker processes into
shards with an index, resumed after kill -9, read back as one memory-mapped array."""

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlib.data import TokenFileError, course_sections, get_batch
from gptlib.distributed import DataParallel
from gptlib.shards import (
    DocumentEncoder,
    document_end,
    in_validation,
    open_shards,
    prepare_shards,
    read_documents,
)
from gptlib.tokenizer import BPETokenizer, CharTokenizer, GPT2Tokenizer

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the model reads a text and guesses the next token of it again".split()


def fixture_documents(n: int = 300, seed: int = 0) -> list[str]:
    """Documents of 1 to 60 words, two empty, one far longer than a shard."""
    rng = np.random.default_rng(seed)
    docs = [
        " ".join(rng.choice(WORDS, size=rng.integers(1, 60))) + "." for _ in range(n)
    ]
    docs[7] = docs[150] = ""  # empty documents
    docs[42] = " ".join(rng.choice(WORDS, size=2000))  # spans several shards
    return docs


@pytest.fixture(scope="module")
def char():
    return CharTokenizer.train(" ".join(WORDS) + ".\n")


def shard_bytes(folder: Path, split: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob(f"{split}-*.bin")))


def expected_stream(docs, tokenizer, val_fraction=0.1, seed=0):
    """Each split's ids as the documented rule makes them, without gptlib.shards's
    writer: whole documents in order, each followed by its end."""
    end = document_end(tokenizer)
    streams = {"train": [], "val": []}
    for number, text in enumerate(docs):
        if text:
            split = "val" if in_validation(number, val_fraction, seed) else "train"
            streams[split] += tokenizer.encode(text) + end
    return streams


# --- reading documents --------------------------------------------------------------


def test_text_json_lines_and_parquet_read_the_same_documents(tmp_path):
    docs = ["first line\nof the first", "second", "", "last, with 中文 and 🤖"]
    (tmp_path / "a.txt").write_text("\n\n\n".join(d for d in docs if d) + "\n\n")
    rows = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs))
    (tmp_path / "b.jsonl").write_text(rows + "\n")  # a trailing blank line is fine
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs}), tmp_path / "d.parquet", row_group_size=2)
    assert list(read_documents(tmp_path / "a.txt")) == [d for d in docs if d]
    for name in ("b.jsonl", "c.jsonl.gz", "d.parquet"):
        assert list(read_documents(tmp_path / name)) == docs, name
    # a folder: its files in name order
    everything = list(read_documents(tmp_path))
    assert everything == [d for d in docs if d] + docs * 3


def test_course_documents_are_its_sections():
    docs = list(read_documents("course"))
    assert docs == [s.rstrip("\n") for s in course_sections()]
    assert len(docs) == 228


def test_non_utf8_bytes_stop_with_the_place_or_read_as_replacement(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good text\n\nbad \xff byte\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 3: not UTF-8 .*replace"):
        list(read_documents(bad))
    assert list(read_documents(bad, errors="replace")) == [
        "good text",
        "bad \ufffd byte",
    ]
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "\xc3("}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not UTF-8"):
        list(read_documents(jsonl))


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": \n', r"line 2: not JSON"),
        ('{"body": "no text field"}\n', r"line 1: no text under 'text'"),
        ('["a list"]\n', r"line 1: no text under 'text'"),
        ('{"text": 5}\n', r"line 1: no text under 'text'"),
    ],
)
def test_bad_json_lines_name_the_line(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        list(read_documents(path))


def test_unknown_sources_and_file_types_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no corpus"):
        list(read_documents(tmp_path / "missing.txt"))
    (tmp_path / "notes.md").write_text("# hi")
    with pytest.raises(ValueError, match="reads .txt, .jsonl"):
        list(read_documents(tmp_path / "notes.md"))
    with pytest.raises(ValueError, match="holds no .txt"):
        list(read_documents(tmp_path))
    with pytest.raises(ValueError, match="expected hf://datasets/OWNER/NAME"):
        list(read_documents("hf://datasets/just-a-name"))
    with pytest.raises(ValueError, match="errors must be"):
        list(read_documents("course", errors="ignore"))


def test_a_hub_corpus_downloads_each_matching_file_when_reached(tmp_path, monkeypatch):
    """The hub's own functions replaced by local ones: which files, in which order,
    from which revision, downloaded only once the reading gets there."""
    import huggingface_hub

    files = {"data/b.jsonl": ["b1"], "data/a.jsonl": ["a1", "a2"], "README.md": []}
    calls = []

    class FakeApi:
        def list_repo_files(self, repo_id, repo_type, revision):
            calls.append(("list", repo_id, repo_type, revision))
            return list(files)

    def fake_download(repo_id, filename, repo_type, revision):
        calls.append(("download", filename, revision))
        path = tmp_path / filename.replace("/", "_")
        path.write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in files[filename])
        )
        return str(path)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    docs = read_documents("hf://datasets/someone/corpus@v1/data/*.jsonl")
    assert next(docs) == "a1"
    assert calls == [
        ("list", "someone/corpus", "dataset", "v1"),
        ("download", "data/a.jsonl", "v1"),
    ]
    assert list(docs) == ["a2", "b1"]
    with pytest.raises(FileNotFoundError, match="no file of someone/corpus matches"):
        list(read_documents("hf://datasets/someone/corpus/*.parquet"))


# --- preparing shards ---------------------------------------------------------------


def test_shards_hold_each_split_whole_documents_in_order(tmp_path, char):
    docs = fixture_documents()
    index = prepare_shards(docs, char, tmp_path, shard_tokens=1000, progress=False)
    expected = expected_stream(docs, char)
    for split in ("train", "val"):
        ids = np.frombuffer(shard_bytes(tmp_path, split), dtype=np.uint16)
        assert ids.tolist() == expected[split]
        sizes = [s["tokens"] for s in index[split]]
        assert all(size == 1000 for size in sizes[:-1]) and 0 < sizes[-1] <= 1000
        assert sum(sizes) == len(expected[split])
        for shard in index[split]:  # the index describes each file, byte for byte
            data = (tmp_path / shard["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    held = {n for n in range(len(docs)) if docs[n] and in_validation(n, 0.1)}
    assert index["documents"] == {
        "read": 300,
        "train": 298 - len(held),
        "val": len(held),
        "empty": 2,
    }
    assert 15 <= len(held) <= 45  # about a tenth
    assert index["complete"] and index["carry"] == {} and index["dtype"] == "uint16"
    assert sorted(p.name for p in tmp_path.glob("carry-*")) == []
    # document 42 (2,000 words) runs on from one shard into the next ones
    assert len(char.encode(docs[42])) > 3 * 1000


def test_documents_end_with_gpt2s_endoftext_or_a_blank_line(tmp_path):
    from gpt2_fixture import write_gpt2_tokenizer

    folder = write_gpt2_tokenizer(tmp_path / "gpt2")
    gpt2 = GPT2Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt")
    assert document_end(gpt2) == [gpt2.special_tokens["<|endoftext|>"]]
    char = CharTokenizer.train("ab\n")
    assert document_end(char) == char.encode("\n\n")
    # web text that contains the special token's text keeps it as text
    (ids,) = DocumentEncoder(gpt2)(0, ["a <|endoftext|> b"])
    assert ids.tolist().count(gpt2.special_tokens["<|endoftext|>"]) == 1  # its end
    assert gpt2.decode(ids.tolist()) == "a <|endoftext|> b<|endoftext|>"


def test_worker_processes_write_the_same_bytes_as_one(tmp_path, char):
    docs = fixture_documents()
    kwargs = dict(shard_tokens=700, progress=False)
    one = prepare_shards(docs, char, tmp_path / "one", workers=1, **kwargs)
    two = prepare_shards(docs, char, tmp_path / "two", workers=2, **kwargs)
    assert one == two
    for split in ("train", "val"):
        assert shard_bytes(tmp_path / "one", split) == shard_bytes(
            tmp_path / "two", split
        )


def test_ids_wider_than_16_bits_are_stored_as_uint32(tmp_path):
    wide = CharTokenizer(["\n"] + [chr(0x20000 + i) for i in range(70_000)])
    docs = [chr(0x20000 + 69_999) + chr(0x20000)] * 40
    index = prepare_shards(docs, wide, tmp_path, shard_tokens=50, progress=False)
    assert index["dtype"] == "uint32"
    train, val, _ = open_shards(tmp_path)
    assert int(max(train[0 : len(train)].max(), val[0 : len(val)].max())) == 70_000


def test_an_encoding_error_names_the_document(tmp_path, char):
    docs = ["the model", "reads €"]
    with pytest.raises(ValueError, match="document 1: .*'€'"):
        prepare_shards(docs, char, tmp_path, shard_tokens=10, progress=False)


def test_a_split_with_no_document_is_refused(tmp_path, char):
    with pytest.raises(ValueError, match="no document went to val"):
        prepare_shards(["the model"], char, tmp_path, shard_tokens=10, progress=False)


def test_settings_are_checked(tmp_path, char):
    with pytest.raises(ValueError, match="shard_tokens must be 1 or more"):
        prepare_shards(["a"], char, tmp_path, shard_tokens=0)
    with pytest.raises(ValueError, match="val_fraction must be between"):
        prepare_shards(["a"], char, tmp_path, shard_tokens=5, val_fraction=1.0)


# --- resuming -----------------------------------------------------------------------

KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_shards import fixture_documents, WORDS
    from gptlib.shards import prepare_shards
    from gptlib.tokenizer import CharTokenizer

    def documents():
        for number, text in enumerate(fixture_documents(600)):
            if number == 590:  # 2 batches of 64 are written by now: kill it here
                Path({marker!r}).touch()
                time.sleep(600)
            yield text

    char = CharTokenizer.train(" ".join(WORDS) + ".\\n")
    prepare_shards(documents(), char, {out!r}, shard_tokens=1000, workers=2,
                   progress=False)
    """
)


def test_a_run_killed_with_sigkill_resumes_without_redoing_finished_shards(
    tmp_path, char
):
    out, marker = tmp_path / "killed", tmp_path / "marker"
    script = KILLED_RUN.format(
        tests=str(ROOT / "tests"), marker=str(marker), out=str(out)
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, "the run ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    index = json.loads((out / "index.json").read_text())
    assert not index["complete"]
    finished = {
        s["file"]: (out / s["file"]).stat() for s in index["train"] + index["val"]
    }
    assert len(index["train"]) >= 5 and index["documents"]["read"] == 128
    assert set(index["carry"]) == {"train", "val"}
    print(
        f"killed after {index['documents']['read']} of 600 documents: "
        f"{len(index['train'])} train and {len(index['val'])} val shards finished"
    )

    docs = fixture_documents(600)
    counted = CountingChars(char.to_dict()["chars"])
    with pytest.raises(FileExistsError, match="unfinished shards: go on with resume"):
        prepare_shards(docs, counted, out, shard_tokens=1000, progress=False)
    with pytest.raises(ValueError, match="other settings .*shard_tokens 1000 -> 999"):
        prepare_shards(docs, counted, out, shard_tokens=999, resume=True)
    other = CharTokenizer.train(" ".join(WORDS) + ".\nX")
    with pytest.raises(ValueError, match="another tokenizer"):
        prepare_shards(docs, other, out, shard_tokens=1000, resume=True)
    resumed = prepare_shards(
        docs, counted, out, shard_tokens=1000, resume=True, progress=False
    )
    # only the documents after the record were encoded again (and once the blank
    # line that ends each document)
    read_before = index["documents"]["read"]
    assert counted.calls == 1 + sum(1 for text in docs[read_before:] if text)
    for name, stat in finished.items():  # the finished shards were not rewritten
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    fresh = prepare_shards(
        docs, char, tmp_path / "fresh", shard_tokens=1000, progress=False
    )
    assert resumed == fresh  # the same index: shards, sizes, checksums, counts
    for split in ("train", "val"):
        assert shard_bytes(out, split) == shard_bytes(tmp_path / "fresh", split)
    assert not list(out.glob("carry-*")) and not list(out.glob(".*tmp"))
    # resuming a finished folder does nothing
    again = prepare_shards(docs, counted, out, shard_tokens=1000, resume=True)
    assert again == fresh


class CountingChars(CharTokenizer):
    """A CharTokenizer that counts the texts it encodes (same ids, same
    fingerprint: its to_dict is CharTokenizer's)."""

    calls = 0

    def encode(self, text):
        self.calls += 1
        return super().encode(text)


def test_ctrl_c_before_the_first_shard_can_be_resumed(tmp_path, char):
    def interrupted(docs, after):
        for number, text in enumerate(docs):
            if number == after:
                raise KeyboardInterrupt
            yield text

    docs = fixture_documents()
    settings = dict(shard_tokens=100_000, progress=False)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(interrupted(docs, 3), char, tmp_path / "a", **settings)
    assert not json.loads((tmp_path / "a" / "index.json").read_text())["complete"]
    resumed = prepare_shards(docs, char, tmp_path / "a", resume=True, **settings)
    assert resumed == prepare_shards(docs, char, tmp_path / "b", **settings)


def test_resume_needs_an_index(tmp_path, char):
    with pytest.raises(FileNotFoundError, match="holds no index.json"):
        prepare_shards(["a"], char, tmp_path, shard_tokens=5, resume=True)


# --- reading shards -----------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, char):
    folder = tmp_path_factory.mktemp("shards")
    prepare_shards(fixture_documents(), char, folder, shard_tokens=1000, progress=False)
    return folder


def test_sharded_tokens_slice_like_one_array(prepared):
    train, val, _ = open_shards(prepared)
    whole = np.frombuffer(shard_bytes(prepared, "train"), dtype=np.uint16)
    assert len(train) == len(whole) and len(train.shards) > 5
    rng = np.random.default_rng(0)
    cuts = [(999, 1001), (0, len(whole)), (2000, 2000), (len(whole) - 3, None)]
    cuts += [tuple(sorted(rng.integers(0, len(whole), 2))) for _ in range(200)]
    for start, stop in cuts:
        assert np.array_equal(train[start:stop], whole[start:stop]), (start, stop)
    with pytest.raises(TypeError, match="slices with step 1"):
        train[5]
    with pytest.raises(TypeError, match="slices with step 1"):
        train[::2]


def test_batches_from_shards_equal_batches_from_one_array(prepared):
    train, _, _ = open_shards(prepared)
    whole = torch.from_numpy(
        np.frombuffer(shard_bytes(prepared, "train"), dtype=np.uint16).astype(np.int64)
    )
    for seed in range(5):
        gen_a, gen_b = torch.Generator().manual_seed(seed), torch.Generator()
        gen_b.manual_seed(seed)
        xa, ya = get_batch(train, 16, 64, generator=gen_a)
        xb, yb = get_batch(whole, 16, 64, generator=gen_b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.dtype == torch.int64


def test_each_rank_reads_its_share_of_the_global_batch_from_shards(prepared):
    train, _, _ = open_shards(prepared)
    torch.manual_seed(0)
    single = [get_batch(train, 4, 32) for _ in range(4)]
    shares = []
    for rank in range(2):
        torch.manual_seed(0)
        parallel = DataParallel(rank, 2, torch.device("cpu"))
        shares += parallel.batches(ReadCounter(train), 4, 32, 2)
    for (x, y), (sx, sy) in zip(single, shares):
        assert torch.equal(x, sx) and torch.equal(y, sy)
    counter = ReadCounter(train)
    DataParallel(1, 2, torch.device("cpu")).batches(counter, 4, 32, 2)
    assert counter.reads == 2 * 4  # its own 2 micro-batches of 4 windows, no more


class ReadCounter:
    """Token ids that count the windows read from them."""

    def __init__(self, tokens):
        self.tokens, self.reads = tokens, 0

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, where):
        self.reads += 1
        return self.tokens[where]


def copy_of(prepared, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in prepared.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def edit_index(folder, change):
    index = json.loads((folder / "index.json").read_text())
    change(index)
    (folder / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "train-000002.bin").write_bytes(b"12"), "has 2 bytes, not"),
        (lambda f: (f / "val-000000.bin").unlink(), "is missing or has None bytes"),
        (
            lambda f: (f / "train-000000.bin").write_bytes(
                np.fromfile(f / "train-000000.bin", dtype=np.uint16)[::-1].tobytes()
            ),
            "changed after gptlib prepare",
        ),
        (lambda f: (f / "index.json").write_text("{"), "is not JSON"),
        (lambda f: (f / "index.json").write_text("[]"), "not a gptlib shard index"),
        (
            lambda f: edit_index(f, lambda i: i.update(version=2)),
            "has version 2, not 1",
        ),
        (
            lambda f: edit_index(f, lambda i: i["train"][0].update(file="../x.bin")),
            "train is missing or damaged",
        ),
        (
            lambda f: edit_index(f, lambda i: i["val"][0].update(tokens=-1)),
            "val is missing or damaged",
        ),
        (
            lambda f: edit_index(f, lambda i: i.update(dtype="int64")),
            "dtype is missing or damaged",
        ),
        (
            lambda f: edit_index(f, lambda i: i.update(complete=False)),
            "unfinished: run the same gptlib prepare with --resume",
        ),
        (
            lambda f: (f / "tokenizer.json").write_text(
                json.dumps(CharTokenizer.train("xyz").to_dict())
            ),
            "is not the tokenizer that made the shards",
        ),
        (lambda f: (f / "index.json").unlink(), "index.json is missing"),
    ],
)
def test_damaged_shard_folders_are_refused_with_the_reason(
    prepared, tmp_path, damage, message
):
    folder = copy_of(prepared, tmp_path)
    damage(folder)
    with pytest.raises((TokenFileError, FileNotFoundError), match=message):
        open_shards(folder)


def test_an_id_past_the_vocabulary_is_refused(prepared, tmp_path):
    folder = copy_of(prepared, tmp_path)
    shard = folder / "val-000000.bin"
    ids = np.frombuffer(shard.read_bytes(), dtype=np.uint16).copy()
    ids[3] = 60_000
    shard.write_bytes(ids.tobytes())
    digest = hashlib.sha256(ids.tobytes()).hexdigest()
    edit_index(folder, lambda i: i["val"][0].update(sha256=digest))
    with pytest.raises(TokenFileError, match="holds an id >= vocab_size"):
        open_shards(folder)
    open_shards(folder, verify=False)  # sizes only: what verify=False promises


def test_in_validation_is_a_fixed_fraction_of_documents():
    held = [in_validation(n, 0.1) for n in range(20_000)]
    assert 0.09 < sum(held) / len(held) < 0.11
    assert held == [in_validation(n, 0.1) for n in range(20_000)]
    assert held != [in_validation(n, 0.1, seed=1) for n in range(20_000)]


def test_bpe_ids_of_a_trained_tokenizer_round_trip_through_shards(tmp_path):
    docs = fixture_documents(200)
    bpe = BPETokenizer.train("\n\n".join(docs), 300)
    prepare_shards(docs, bpe, tmp_path, shard_tokens=500, workers=2, progress=False)
    train, val, tokenizer = open_shards(tmp_path)
    text = tokenizer.decode(train[0 : len(train)].tolist())
    expected = [d for n, d in enumerate(docs) if d and not in_validation(n, 0.1)]
    assert text == "".join(d + "\n\n" for d in expected)
