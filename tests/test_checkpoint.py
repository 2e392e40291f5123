import errno
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from gptlib import checkpoint as ckpt_mod
from gptlib.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import CharTokenizer
from gptlib.training import TrainConfig, configure_optimizer
from gptlib.utils import seed_everything

CFG = GPTConfig(vocab_size=12, block_size=8, n_layer=1, n_head=2, n_embd=16)


def trained_model_and_optimizer(steps: int = 3, config: GPTConfig = CFG):
    """A small model and its AdamW after a few steps. All RNGs are seeded, so the
    checkpoint (whose metadata holds their states) is the same every run."""
    seed_everything(0)
    model = GPT(config)
    opt = configure_optimizer(model, TrainConfig())
    for _ in range(steps):
        x = torch.randint(0, config.vocab_size, (4, config.block_size))
        _, loss = model(x, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def test_round_trip_model_optimizer_tokenizer_step(tmp_path):
    model, opt = trained_model_and_optimizer()
    tok = CharTokenizer.train("hello 世界!🤖")
    path = save_checkpoint(
        tmp_path / "c.safetensors",
        model,
        opt,
        step=3,
        tokenizer=tok,
        extra={"note": "x"},
    )
    ck = load_checkpoint(path)
    assert ck.config == CFG and ck.step == 3 and ck.extra == {"note": "x"}
    assert ck.tokenizer.encode("hello 世界") == tok.encode("hello 世界")
    for name, tensor in model.state_dict().items():
        assert torch.equal(ck.model_state[name], tensor), name
    restored = ck.build_model()
    assert restored.lm_head.weight is restored.tok_emb.weight  # tying survives
    x = torch.randint(0, 12, (2, 8))
    model.eval()
    restored.eval()
    assert torch.equal(model(x)[0], restored(x)[0])
    opt2 = configure_optimizer(restored, TrainConfig())
    opt2.load_state_dict(ck.optimizer_state)
    before, after = opt.state_dict(), opt2.state_dict()
    assert (
        before["state"].keys() == after["state"].keys()
        and before["param_groups"] == after["param_groups"]
    )
    for idx, state in before["state"].items():
        for key, value in state.items():
            assert torch.equal(value, after["state"][idx][key]), (idx, key)
    m2, tok2 = load_model(path)
    assert not m2.training and tok2.vocab_size == tok.vocab_size


def test_rng_state_is_restored(tmp_path):
    model, _ = trained_model_and_optimizer(0)
    torch.manual_seed(5)
    path = save_checkpoint(tmp_path / "c.safetensors", model)
    expected = torch.rand(4)
    torch.manual_seed(99)
    ckpt_mod.set_rng_state(load_checkpoint(path).rng_state)
    assert torch.equal(torch.rand(4), expected)


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, step=1)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device.*unchanged"):
        save_checkpoint(path, model, opt, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [
        "c.safetensors"
    ]  # no temp file left behind
    monkeypatch.undo()
    assert load_checkpoint(path).step == 1


def test_truncated_checkpoint_is_never_mistaken_for_a_pickle(tmp_path):
    # a safetensors file starts with its header length (8 bytes, little-endian); a
    # length whose first byte is 0x80 looks like the start of a pickle, unless the '{'
    # after it is checked
    header = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
    data = (640).to_bytes(8, "little") + header
    assert data[:2] == b"\x80\x02"  # also the first two bytes of a protocol-2 pickle
    (tmp_path / "trunc.safetensors").write_bytes(data)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.safetensors")


def test_ctrl_c_during_a_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, step=1)
    before = path.read_bytes()

    def ctrl_c(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.os, "fsync", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, opt, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [
        "c.safetensors"
    ]  # no temp file left behind


def test_truncated_and_garbage_files_give_clear_errors(tmp_path):
    model, _ = trained_model_and_optimizer(0)
    path = save_checkpoint(tmp_path / "c.safetensors", model)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.safetensors")
    (tmp_path / "garbage.bin").write_bytes(os.urandom(100) + b"x")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.bin")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_foreign_safetensors_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a gptlib checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


class Exploit:
    """Unpickling this would create a file: the classic pickle attack."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_files_are_refused_without_unpickling(tmp_path, writer):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save({"model": Exploit(str(target))}, path)
    else:
        path.write_bytes(pickle.dumps(Exploit(str(target))))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)
    assert not target.exists()


def test_damaged_metadata_is_reported(tmp_path):
    save_file(
        {"model.x": torch.zeros(1)},
        tmp_path / "m.safetensors",
        metadata={"format": "gptlib-checkpoint", "version": "1", "config": "{not json"},
    )
    with pytest.raises(CheckpointError, match="damaged metadata"):
        load_checkpoint(tmp_path / "m.safetensors")
    save_file(
        {"model.x": torch.zeros(1)},
        tmp_path / "v.safetensors",
        metadata={"format": "gptlib-checkpoint", "version": "9"},
    )
    with pytest.raises(CheckpointError, match="version 9"):
        load_checkpoint(tmp_path / "v.safetensors")
