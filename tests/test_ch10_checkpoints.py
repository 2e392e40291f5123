"""Chapter 10 (Saving & resuming): the snippet's code, and the claims of the page that
tests/test_checkpoint.py, tests/test_training.py and tests/test_cli.py do not check:
a resume from a periodic checkpoint (written right after an evaluation) is bit-exact
and does not repeat the evaluation, forgetting the RNG state breaks exactness, and a
second Ctrl-C aborts without saving."""

import errno
import os
import pickle
import signal
import time
from pathlib import Path

import pytest
import torch
from ch10_checkpoints import Payload, load_weights, predicted_size, save_rotating
from test_checkpoint import trained_model_and_optimizer
from test_training import (  # the same small setup as the training tests
    CFG,
    pattern_data,
    quick_config,
    run,
)

from gptlib import checkpoint as ckpt_mod
from gptlib.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from gptlib.model import GPT
from gptlib.tokenizer import CharTokenizer
from gptlib.training import METRICS_NAME, read_metrics
from gptlib.utils import seed_everything


def trained(steps: int = 2):
    return trained_model_and_optimizer(steps, CFG)


def test_payload_runs_code_when_unpickled_and_nowhere_else(tmp_path, capsys):
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps({"w": [1.0], "x": Payload(marker)}))
    assert (
        marker.exists() and "printed by code inside the file" in capsys.readouterr().out
    )
    marker.unlink()
    torch.save({"x": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="exec"):
        torch.load(
            tmp_path / "evil.pt"
        )  # weights_only=True is the default (PyTorch >= 2.6)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_save_rotating_keeps_the_newest_and_deletes_only_after_saving(
    tmp_path, monkeypatch
):
    model, opt = trained()
    for step in [
        5,
        50,
        95,
        100,
        105,
    ]:  # 100 and 105 sort after 95 only if the step is zero-padded
        newest = save_rotating(tmp_path, model, opt, step, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-0000095.safetensors",
        "ckpt-0000100.safetensors",
        "ckpt-0000105.safetensors",
    ]
    assert load_checkpoint(newest).step == 105

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_rotating(tmp_path, model, opt, 110, keep=3)
    monkeypatch.undo()
    assert len(list(tmp_path.iterdir())) == 3  # a failed save deletes nothing


def test_predicted_size_is_the_tensor_bytes_of_the_file(tmp_path):
    model, opt = trained()
    n = sum(p.numel() for p in model.parameters())
    assert predicted_size(model, with_optimizer=False) == 4 * n
    n_tensors = len(list(model.parameters()))
    assert predicted_size(model) == 12 * n + 4 * n_tensors
    for optimizer, with_optimizer in [(opt, True), (None, False)]:
        path = save_checkpoint(
            tmp_path / f"{with_optimizer}.safetensors", model, optimizer
        )
        rest = path.stat().st_size - predicted_size(model, with_optimizer)
        assert 5056 < rest < 5056 + 40_000  # the torch RNG state and the JSON header


def test_load_weights_equals_load_model(tmp_path):
    model, opt = trained()
    tok = CharTokenizer.train("abcdefghijklmnop")
    path = save_checkpoint(
        tmp_path / "c.safetensors", model, opt, step=2, tokenizer=tok
    )
    light = load_weights(path)
    full, _ = load_model(path)
    x = torch.randint(0, 16, (2, 16))
    assert not light.training and light.lm_head.weight is light.tok_emb.weight
    assert torch.equal(light(x)[0], full(x)[0])


class CrashAfter(GPT):
    """Training forward passes fail after `after` of them: a process dying mid-run."""

    def __init__(self, config, after):
        super().__init__(config)
        self.calls, self.after = 0, after

    def forward(self, idx, targets=None):
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                raise RuntimeError("simulated crash")
        return super().forward(idx, targets)


def evals(path: Path) -> list[dict]:
    return [r for r in read_metrics(path / METRICS_NAME) if "val_loss" in r]


def crash_and_resume(run_dir: Path) -> GPT:
    data = pattern_data()
    seed_everything(0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(CrashAfter(CFG, after=45), data, quick_config(), run_dir)
    saved = load_checkpoint(run_dir / CHECKPOINT_NAME)
    assert saved.step == 40  # written right after the step-40 evaluation
    torch.manual_seed(99)  # a new process: other RNG states
    model = GPT(CFG)
    run(model, data, quick_config(), run_dir, resume=True)
    return model


def straight_run(run_dir: Path) -> GPT:
    data = pattern_data()
    seed_everything(0)
    model = GPT(CFG)
    run(model, data, quick_config(), run_dir)
    return model


def same_weights(a: GPT, b: GPT) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )


def test_resume_after_a_crash_is_bit_exact_and_does_not_repeat_the_evaluation(tmp_path):
    straight = straight_run(tmp_path / "a")
    resumed = crash_and_resume(tmp_path / "b")
    assert same_weights(straight, resumed)
    assert [r["step"] for r in evals(tmp_path / "b")] == [
        0,
        20,
        40,
        60,
    ]  # step 40 evaluated once
    assert evals(tmp_path / "a") == evals(tmp_path / "b")


def test_forgetting_the_rng_state_breaks_exactness(tmp_path, monkeypatch):
    straight = straight_run(tmp_path / "a")
    monkeypatch.setattr(ckpt_mod, "set_rng_state", lambda state: None)
    assert not same_weights(straight, crash_and_resume(tmp_path / "b"))


class DoubleCtrlC(GPT):
    """The user presses Ctrl-C twice during the third training step."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def forward(self, idx, targets=None):
        if self.training:
            self.calls += 1
            if self.calls == 3:
                signal.raise_signal(signal.SIGINT)
                time.sleep(0.05)  # the first press is handled: stop after this step
                signal.raise_signal(signal.SIGINT)
                time.sleep(
                    0.05
                )  # the second press interrupts here, in the middle of the step
        return super().forward(idx, targets)


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to this process")
def test_second_ctrl_c_aborts_at_once_without_saving(tmp_path, capsys):
    # what SIGINT did before: the default handler, or SIG_IGN where the tests were
    # started in the background by a shell without job control
    before = signal.getsignal(signal.SIGINT)
    data = pattern_data()
    with pytest.raises(KeyboardInterrupt):
        run(
            DoubleCtrlC(CFG),
            data,
            quick_config(max_steps=1000, eval_interval=10**6),
            tmp_path,
        )
    assert (
        "Ctrl-C: stopping after this step" in capsys.readouterr().out
    )  # the first press was handled
    assert not (
        tmp_path / CHECKPOINT_NAME
    ).exists()  # nothing saved: no periodic checkpoint was due
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
