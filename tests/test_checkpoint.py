import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gptlib import checkpoint as ckpt_mod
from gptlib.checkpoint import (
    CHECKPOINT_NAME,
    FREE_ON_RESUME,
    CheckpointError,
    RunCheckpoint,
    TrainConfigChangedError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    temp_path,
    train_config_changes,
)
from gptlib.model import GPT, GPTConfig, preset_config
from gptlib.tokenizer import CharTokenizer
from gptlib.training import TrainConfig, TrainState, configure_optimizer, train
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


def test_a_header_that_claims_200_mb_is_refused_unread(tmp_path):
    """safetensors caps the header at 100 MB: a file cannot make the reader allocate
    or parse an arbitrarily large header."""
    path = tmp_path / "huge.safetensors"
    path.write_bytes((200_000_000).to_bytes(8, "little") + b'{"__metadata__": {}}')
    with pytest.raises(CheckpointError, match="huge.safetensors.*header too large"):
        load_checkpoint(path)


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


# --- every field of a checkpoint is checked as it is read ---------------------------


def rewritten(path, tmp_path, change):
    """A copy of the checkpoint at `path` with `change(metadata, tensors)` applied: the
    metadata's JSON fields parsed, the tensors by name. Both are edited in place."""
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    for key in JSON_FIELDS:
        metadata[key] = json.loads(metadata[key])
    change(metadata, tensors)
    for key in JSON_FIELDS:
        if key in metadata:
            metadata[key] = json.dumps(metadata[key])
    out = tmp_path / "changed.safetensors"
    save_file(tensors, out, metadata=metadata)
    return out


JSON_FIELDS = ("config", "tied", "train_state", "tokenizer")


def parent_and_key(metadata, key):
    """The object that holds metadata[key[0]][key[1]]...[key[-1]], and key[-1]."""
    *parents, last = key
    for parent in parents:
        metadata = metadata[parent]
    return metadata, last


def set_in(key, value):
    """A change that sets the metadata entry at `key` (a list of keys) to `value`."""

    def change(metadata, tensors):
        parent, last = parent_and_key(metadata, key)
        parent[last] = value

    return change


def drop_meta(*key):
    """A change that deletes the metadata entry at `key`."""

    def change(metadata, tensors):
        parent, last = parent_and_key(metadata, key)
        del parent[last]

    return change


def drop_tensor(name):
    return lambda metadata, tensors: tensors.pop(name)


def add_tensor(name, tensor):
    return lambda metadata, tensors: tensors.__setitem__(name, tensor)


BAD_CHECKPOINTS = {
    # the model config, and whether it agrees with the tensors
    "config not an object": (set_in(["config"], [1, 2]), "config: not a JSON object"),
    "config unknown field": (
        set_in(["config", "n_embed"], 16),
        "config: unknown GPTConfig field",
    ),
    "config invalid value": (set_in(["config", "n_head"], 3), "config: n_embd=16"),
    "config n_embd disagrees": (
        set_in(["config", "n_embd"], 32),
        r"c_attn.bias is \(48,\), GPTConfig\(.*n_embd=32.*\) makes it \(96,\)",
    ),
    "config vocab_size disagrees": (
        set_in(["config", "vocab_size"], 13),
        r"tok_emb.weight is \(12, 16\)",
    ),
    "config n_layer disagrees": (
        set_in(["config", "n_layer"], 2),
        r"missing \['blocks.1",
    ),
    "config n_layer huge": (
        set_in(["config", "n_layer"], 10**9),
        "config: n_layer=1000000000 for",
    ),
    "config vocab_size beyond int64": (
        set_in(["config", "vocab_size"], 10**30),
        "damaged metadata: config: sizes too large",
    ),
    # the weights and the tied alias
    "weight missing": (drop_tensor("model.ln_f.bias"), r"missing \['ln_f.bias'\]"),
    "weight unexpected": (
        add_tensor("model.extra.weight", torch.zeros(2)),
        r"unexpected \['extra.weight'\]",
    ),
    "weight of integers": (
        add_tensor("model.ln_f.bias", torch.zeros(16, dtype=torch.int64)),
        "ln_f.bias holds torch.int64, not floats",
    ),
    "tied dangling": (
        set_in(["tied", "lm_head.weight"], "nope.weight"),
        "tied: lm_head.weight is tied to 'nope.weight', not in the file",
    ),
    "tied dropped": (set_in(["tied"], {}), r"missing \['lm_head.weight'\]"),
    "tied not an object": (set_in(["tied"], ["x"]), "tied: not a JSON object"),
    "tied key missing": (drop_meta("tied"), "damaged metadata: tied: missing"),
    # the training state
    "train_state not an object": (set_in(["train_state"], 3), "train_state: not"),
    "step missing": (drop_meta("train_state", "step"), "train_state.step: None"),
    "step a string": (set_in(["train_state", "step"], "3"), "train_state.step: '3'"),
    "step negative": (set_in(["train_state", "step"], -1), "train_state.step: -1"),
    "step a bool": (set_in(["train_state", "step"], True), "train_state.step: True"),
    "extra not an object": (set_in(["train_state", "extra"], []), "train_state.extra"),
    "rng missing": (drop_meta("train_state", "rng"), "train_state.rng: missing"),
    "rng not an object": (set_in(["train_state", "rng"], []), "train_state.rng: not"),
    "rng python missing": (
        drop_meta("train_state", "rng", "python"),
        "train_state.rng: 'python' is missing",
    ),
    "rng python state short": (
        lambda m, t: m["train_state"]["rng"]["python"][1].pop(),
        "train_state.rng",
    ),
    "rng python version": (
        lambda m, t: m["train_state"]["rng"]["python"].__setitem__(0, 99),
        "train_state.rng",
    ),
    "rng python gauss": (
        lambda m, t: m["train_state"]["rng"]["python"].__setitem__(2, "x"),
        "train_state.rng: Python's gauss",
    ),
    "rng numpy key out of range": (
        lambda m, t: m["train_state"]["rng"]["numpy"][1].__setitem__(0, -1),
        "train_state.rng",
    ),
    "rng numpy short": (
        lambda m, t: m["train_state"]["rng"]["numpy"][1].pop(),
        "train_state.rng",
    ),
    "rng torch tensor missing": (
        drop_tensor("rng.torch"),
        "train_state.rng: the tensor rng.torch is missing",
    ),
    "rng torch tensor wrong size": (
        add_tensor("rng.torch", torch.zeros(7, dtype=torch.uint8)),
        "train_state.rng: Expected a CPUGeneratorImplState",
    ),
    "rng cuda state not bytes": (
        add_tensor("rng.cuda.0", torch.zeros(3)),
        "train_state.rng: a CUDA state",
    ),
    "rng cuda state numbering": (
        add_tensor("rng.cuda.1", torch.zeros(16, dtype=torch.uint8)),
        "train_state.rng: 'rng.cuda.0' is missing",
    ),
    # the optimizer
    "optimizer not an object": (
        set_in(["train_state", "optimizer"], [1]),
        "train_state.optimizer: not a JSON object",
    ),
    "optimizer groups missing": (
        drop_meta("train_state", "optimizer", "param_groups"),
        "train_state.optimizer: 'param_groups' is missing",
    ),
    "optimizer scalars not an object": (
        set_in(["train_state", "optimizer", "scalars"], []),
        "param_groups must be a list, scalars an object",
    ),
    "optimizer group not an object": (
        set_in(["train_state", "optimizer", "param_groups"], [3]),
        "a param group is not a JSON object",
    ),
    "optimizer params not numbers": (
        lambda m, t: m["train_state"]["optimizer"]["param_groups"][0].__setitem__(
            "params", ["a"]
        ),
        "params must be lists of parameter numbers",
    ),
    "optimizer lr not a number": (
        lambda m, t: m["train_state"]["optimizer"]["param_groups"][0].__setitem__(
            "lr", "fast"
        ),
        "lr is 'fast', not a number",
    ),
    "optimizer betas three": (
        lambda m, t: m["train_state"]["optimizer"]["param_groups"][0].__setitem__(
            "betas", [0.9, 0.9, 0.9]
        ),
        "betas is .*, not two numbers",
    ),
    "optimizer params twice": (
        lambda m, t: m["train_state"]["optimizer"]["param_groups"][1].__setitem__(
            "params", m["train_state"]["optimizer"]["param_groups"][0]["params"]
        ),
        "do not number the same parameters",
    ),
    "optimizer state of no parameter": (
        add_tensor("optimizer.state.99.exp_avg", torch.zeros(2)),
        "do not number the same parameters",
    ),
    "optimizer state badly named": (
        add_tensor("optimizer.state.x.exp_avg", torch.zeros(2)),
        "train_state.optimizer: invalid literal",
    ),
    "optimizer scalar badly named": (
        set_in(["train_state", "optimizer", "scalars"], {"nodot": 1}),
        "train_state.optimizer: not enough values",
    ),
    # the tokenizer
    "tokenizer of another kind": (
        set_in(["tokenizer"], {"type": "nope", "version": 1}),
        "tokenizer: not a gptlib tokenizer",
    ),
    "tokenizer without its characters": (
        set_in(["tokenizer"], {"type": "char", "version": 1}),
        "tokenizer: 'chars' is missing",
    ),
    "tokenizer characters not a list": (
        set_in(["tokenizer", "chars"], 5),
        "damaged metadata: tokenizer:",
    ),
    "tokenizer bpe with a broken pattern": (
        set_in(
            ["tokenizer"],
            {"type": "bpe", "version": 1, "pattern": "(", "merges": []},
        ),
        "damaged metadata: tokenizer:",
    ),
    "tokenizer larger than the model": (
        set_in(["tokenizer", "chars"], list("abcdefghijklmnopqrst")),
        "its tokenizer has 20 tokens, more than the model's vocab_size=12",
    ),
}


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    model, opt = trained_model_and_optimizer(1)
    tok = CharTokenizer.train("hello world")  # 8 characters, for a vocabulary of 12
    path = tmp_path_factory.mktemp("good") / "c.safetensors"
    return save_checkpoint(path, model, opt, step=1, tokenizer=tok)


@pytest.mark.parametrize(
    "change, message", BAD_CHECKPOINTS.values(), ids=BAD_CHECKPOINTS.keys()
)
def test_every_bad_field_is_one_clear_error(good_checkpoint, tmp_path, change, message):
    path = rewritten(good_checkpoint, tmp_path, change)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_metadata_that_is_not_json(good_checkpoint, tmp_path):
    with safe_open(good_checkpoint, framework="pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    for key in ("config", "tied", "train_state", "tokenizer"):
        save_file(tensors, tmp_path / "m.safetensors", metadata={**metadata, key: "{"})
        with pytest.raises(CheckpointError, match=f"damaged metadata: {key}: "):
            load_checkpoint(tmp_path / "m.safetensors")


def test_the_unchanged_copy_loads(good_checkpoint, tmp_path):
    """The rewriting itself breaks nothing: the failures above are the changes'."""
    ck = load_checkpoint(rewritten(good_checkpoint, tmp_path, lambda m, t: None))
    assert ck.step == 1 and ck.tokenizer.vocab_size == 8


# --- resuming a run: its settings, its optimizer and scaler -------------------------


def run_state(config: TrainConfig, scaler_on: bool = False, model_config=CFG):
    seed_everything(0)
    model = GPT(model_config)
    scaler = torch.amp.GradScaler("cpu", enabled=scaler_on)
    return TrainState(model, configure_optimizer(model, config), scaler, config)


def saved_run(tmp_path, config: TrainConfig, scaler_on: bool = False, step: int = 7):
    state = run_state(config, scaler_on)
    state.step = step
    return RunCheckpoint(tmp_path / CHECKPOINT_NAME).save(state)


def test_resume_with_other_settings_lists_them(tmp_path):
    path = saved_run(tmp_path, TrainConfig(max_steps=300, learning_rate=3e-3))
    other = TrainConfig(max_steps=500, learning_rate=0.01, min_lr=1e-4)
    with pytest.raises(TrainConfigChangedError) as caught:
        RunCheckpoint(path, resume=True).restore(run_state(other))
    assert "max_steps 300 -> 500, learning_rate 0.003 -> 0.01" in str(caught.value)
    assert "allow_config_change=True" in str(caught.value)
    assert caught.value.changes == {
        "max_steps": (300, 500),
        "learning_rate": (0.003, 0.01),
    }
    state = run_state(other)
    RunCheckpoint(path, resume=True, allow_config_change=True).restore(state)
    assert state.step == 7


def test_resume_ignores_settings_that_do_not_change_the_run(tmp_path):
    config = TrainConfig(max_steps=300)
    path = saved_run(tmp_path, config)
    free = dict(device="cpu", compile=True, progress=False, log_interval=3)
    assert set(free) | {"eval_interval"} == FREE_ON_RESUME
    state = run_state(TrainConfig(max_steps=300, eval_interval=7, **free))
    RunCheckpoint(path, resume=True).restore(state)
    assert state.step == 7


def test_train_config_changes():
    saved = asdict(TrainConfig(max_steps=300, dtype="bfloat16"))
    saved["retired_field"] = 1  # a field this gptlib no longer has: ignored
    del saved["seed"]  # one an older gptlib did not have: nothing to compare
    config = TrainConfig(max_steps=300, seed=5, progress=False)
    assert train_config_changes(saved, config) == {
        "dtype": ("bfloat16", "float32")
    }  # auto on a CPU


def test_a_run_saved_with_float32_resumes_with_the_auto_default(tmp_path):
    """A run records the dtype it trained in; "auto" resolves to it on the same
    device, so a run saved by an older gptlib (float32 default) resumes unchanged."""
    saved = asdict(TrainConfig(max_steps=300, dtype="float32", device="cpu"))
    assert train_config_changes(saved, TrainConfig(max_steps=300, device="cpu")) == {}
    config = TrainConfig(max_steps=3, eval_interval=3, device="cpu", progress=False)
    torch.manual_seed(0)
    model = GPT(preset_config("nano", vocab_size=5))
    data = torch.arange(400) % 5
    checkpoint = RunCheckpoint(tmp_path / "ckpt.safetensors")
    train(model, data, data, config, checkpoint=checkpoint)
    stored = load_checkpoint(tmp_path / "ckpt.safetensors").extra["train_config"]
    assert stored["dtype"] == "float32"


def test_stored_train_config_that_is_not_an_object(tmp_path):
    state = run_state(TrainConfig())
    path = save_checkpoint(
        tmp_path / "c.safetensors",
        state.model,
        state.optimizer,
        extra={"train_config": [1]},
    )
    with pytest.raises(CheckpointError, match="extra.train_config: not an object"):
        RunCheckpoint(path, resume=True).restore(run_state(TrainConfig()))


def test_optimizer_state_that_does_not_fit_this_run(tmp_path):
    state = run_state(TrainConfig())
    # the moments of parameters 0 and 1 swapped: a file shaped for another optimizer
    path = state_with_steps(state, tmp_path)
    swapped = rewritten(
        path,
        tmp_path,
        lambda m, t: t.update(
            {
                "optimizer.state.0.exp_avg": t["optimizer.state.1.exp_avg"],
                "optimizer.state.1.exp_avg": t["optimizer.state.0.exp_avg"],
            }
        ),
    )
    with pytest.raises(CheckpointError, match="cannot resume this run: .*exp_avg"):
        RunCheckpoint(swapped, resume=True).restore(run_state(TrainConfig()))
    # one param group where this run's optimizer has two
    merged = rewritten(path, tmp_path, merge_param_groups)
    with pytest.raises(CheckpointError, match="cannot resume this run: .*group"):
        RunCheckpoint(merged, resume=True).restore(run_state(TrainConfig()))
    # a param group without its betas
    no_betas = rewritten(
        path,
        tmp_path,
        drop_meta("train_state", "optimizer", "param_groups", 0, "betas"),
    )
    with pytest.raises(CheckpointError, match=r"has no \['betas'\]"):
        RunCheckpoint(no_betas, resume=True).restore(run_state(TrainConfig()))


def merge_param_groups(metadata, tensors):
    first, second = metadata["train_state"]["optimizer"]["param_groups"]
    first["params"] += second["params"]
    metadata["train_state"]["optimizer"]["param_groups"] = [first]


def state_with_steps(state, tmp_path):
    """A checkpoint of `state` after two optimizer steps: AdamW has its moments."""
    for _ in range(2):
        x = torch.randint(0, CFG.vocab_size, (2, CFG.block_size))
        state.optimizer.zero_grad()
        state.model(x, x)[1].backward()
        state.optimizer.step()
    return RunCheckpoint(tmp_path / CHECKPOINT_NAME).save(state)


@pytest.mark.parametrize(
    "scaler", [{}, {"scale": "big"}, [1.0], {"scale": 1.0}], ids=str
)
def test_damaged_scaler_state(tmp_path, scaler):
    path = saved_run(tmp_path, TrainConfig(), scaler_on=True)
    damaged = rewritten(
        path, tmp_path, set_in(["train_state", "extra", "scaler"], scaler)
    )
    with pytest.raises(CheckpointError, match="cannot resume this run: the scaler"):
        RunCheckpoint(damaged, resume=True).restore(
            run_state(TrainConfig(), scaler_on=True)
        )
    good = run_state(TrainConfig(), scaler_on=True)
    RunCheckpoint(path, resume=True).restore(good)
    assert good.step == 7


# --- temporary files of killed saves -------------------------------------------------


def test_stale_temp_files_of_this_path_are_removed_and_nothing_else(tmp_path):
    model, opt = trained_model_and_optimizer(0)
    path = tmp_path / "c.safetensors"
    dead = 2**22 + 1  # above Linux's largest pid: no process has it
    stale = [temp_path(path, dead), temp_path(path, os.getpid())]
    kept = [
        temp_path(path, os.getppid()),  # a running process: it may be saving now
        temp_path(tmp_path / "other.safetensors", dead),  # another checkpoint's
        tmp_path / f"c.safetensors.{dead}.tmp",  # not hidden: not a name we make
        tmp_path / f".c.safetensors.{dead}.tmp.keep",
        tmp_path / ".c.safetensors.abc.tmp",
        tmp_path / ".c.safetensors..tmp",
        tmp_path / "notes.txt",
    ]
    for file in stale + kept:
        file.write_bytes(b"half a checkpoint")
    save_checkpoint(path, model, opt)
    assert sorted(tmp_path.iterdir()) == sorted([path, *kept])
    assert load_checkpoint(path).step == 0


def test_run_checkpoint_removes_stale_temp_files_when_the_run_starts(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    stale = temp_path(path, 2**22 + 1)
    stale.write_bytes(b"half a checkpoint")
    RunCheckpoint(path).restore(run_state(TrainConfig()))  # a new run: nothing to load
    assert not stale.exists() and not path.exists()


@pytest.mark.skipif(os.name != "posix", reason="kill -9 is POSIX")
def test_a_save_killed_with_kill_9_is_cleaned_by_the_next_save(tmp_path):
    model, opt = trained_model_and_optimizer(0)
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, step=1)
    before = path.read_bytes()
    # a child process that dies (SIGKILL) between writing its temp file and renaming
    code = (
        "import os, signal, torch\n"
        "from gptlib import checkpoint\n"
        "from gptlib.model import GPT\n"
        f"model = GPT(checkpoint.load_checkpoint({str(path)!r}).config)\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"checkpoint.save_checkpoint({str(path)!r}, model, step=2)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1 and re.fullmatch(
        r"\.c\.safetensors\.\d+\.tmp", leftovers[0]
    )
    assert path.read_bytes() == before  # the killed save changed nothing
    save_checkpoint(path, model, opt, step=3)
    assert list(tmp_path.iterdir()) == [path] and load_checkpoint(path).step == 3
