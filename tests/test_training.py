import json
import math
import os
import shutil
import signal
import time

import pytest
import torch

from gptlib import training
from gptlib.checkpoint import CHECKPOINT_NAME, RunCheckpoint, load_checkpoint
from gptlib.model import GPT, GPTConfig
from gptlib.training import (
    METRICS_NAME,
    TRAIN_PRESETS,
    NonFiniteLossError,
    TrainConfig,
    configure_optimizer,
    lr_at,
    read_metrics,
    train,
    train_config,
)

CFG = GPTConfig(vocab_size=16, block_size=16, n_layer=2, n_head=2, n_embd=32)


def pattern_data(n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.randint(
        0, 16, (37,), generator=g
    )  # a repeating 37-token "text": learnable
    return base.repeat(n // 37 + 1)[:n]


def quick_config(**kw) -> TrainConfig:
    settings = dict(
        max_steps=60,
        batch_size=8,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        eval_interval=20,
        eval_batches=4,
        log_interval=5,
        device="cpu",
        progress=False,
    )
    settings.update(kw)
    return TrainConfig(**settings)


def test_lr_schedule_warmup_then_cosine():
    c = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr=0.1)
    lrs = [lr_at(s, c) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # rising during warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then never rising
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lrs[100] == pytest.approx(0.1)


def test_weight_decay_only_on_matrices():
    model = GPT(CFG)
    opt = configure_optimizer(model, TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(
        p.dim() == 1 for p in no_decay["params"]
    )
    assert (
        sum(p.numel() for g in opt.param_groups for p in g["params"])
        == model.num_params()
    )


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(learning_rate=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        train_config("nano", steps=3)
    with pytest.raises(ValueError, match="unknown preset"):
        train_config("huge")


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(learning_rate=NAN), "learning_rate must be a finite number > 0, got nan"),
        (dict(learning_rate=INF), "learning_rate must be a finite number > 0, got inf"),
        (dict(min_lr=NAN), "min_lr must be between 0 and learning_rate=0.001, got nan"),
        (dict(weight_decay=NAN), "weight_decay must be a finite number >= 0, got nan"),
        (dict(grad_clip=NAN), r"grad_clip must be a finite number >= 0 \(0: off\)"),
        (dict(grad_clip=INF), r"grad_clip must be a finite number >= 0 .*, got inf"),
        (dict(grad_clip=-1.0), r"grad_clip must be a finite number >= 0 .*, got -1.0"),
        (dict(beta1=NAN), r"beta1 must be in \[0, 1\), got nan"),
        (dict(beta2=1.0), r"beta2 must be in \[0, 1\), got 1.0"),
        (dict(max_steps=NAN), r"max_steps must be >= 1 \(an integer\), got nan"),
        (dict(batch_size=2.5), r"batch_size must be >= 1 \(an integer\), got 2.5"),
        (dict(warmup_steps=-1), r"warmup_steps must be >= 0 \(an integer\), got -1"),
    ],
)
def test_train_config_refuses_nan_inf_and_out_of_range(settings, message):
    with pytest.raises(ValueError, match=message) as error:
        TrainConfig(**settings)
    assert str(error.value).startswith("TrainConfig.") and "\n" not in str(error.value)


def test_train_config_takes_the_preset_and_the_overrides():
    assert train_config("nano") == TrainConfig(**TRAIN_PRESETS["nano"])
    config = train_config("tiny", max_steps=7, learning_rate=1e-3, dtype="bfloat16")
    assert (config.max_steps, config.batch_size, config.dtype) == (
        7,
        TRAIN_PRESETS["tiny"]["batch_size"],
        "bfloat16",
    )
    assert config.min_lr == pytest.approx(
        1e-4
    )  # a new learning rate brings min_lr along
    assert train_config("tiny", learning_rate=1e-3, min_lr=0.0).min_lr == 0.0


def run(model, data, config, out_dir, resume=False, **kwargs):
    """`gptlib train` in short: metrics and a checkpoint in out_dir."""
    checkpoint = RunCheckpoint(out_dir / CHECKPOINT_NAME, resume=resume)
    return train(
        model,
        data[:3600],
        data[3600:],
        config,
        out_dir=out_dir,
        checkpoint=checkpoint,
        **kwargs,
    )


def test_training_lowers_loss_and_logs_metrics(tmp_path):
    torch.manual_seed(0)
    data = pattern_data()
    result = run(GPT(CFG), data, quick_config(), tmp_path)
    first, last = result.history[0], result.history[-1]
    assert first["val_loss"] == pytest.approx(math.log(16), abs=0.3)
    assert last["val_loss"] < 0.5 * first["val_loss"]
    records = read_metrics(tmp_path / METRICS_NAME)
    evals = [r for r in records if "val_loss" in r]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in evals] == [0, 20, 40, 60]
    assert len(steps) == 12 and all(
        r["tokens_per_sec"] > 0 and "grad_norm" in r and "lr" in r for r in steps
    )
    assert (tmp_path / CHECKPOINT_NAME).exists() and not result.interrupted


class NaNAfter(GPT):
    def __init__(self, config, after):
        super().__init__(config)
        self.calls, self.after = 0, after

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                loss = loss * float("nan")
        return logits, loss


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    data = pattern_data()
    model = NaNAfter(CFG, after=30)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 30"):
        run(model, data, quick_config(), tmp_path)
    saved = load_checkpoint(
        tmp_path / CHECKPOINT_NAME
    )  # written at step 20, before the NaN
    assert saved.step == 20 and all(
        torch.isfinite(t).all() for t in saved.model_state.values()
    )


def run_slices(tmp_path, name, slices, dropout=0.1):
    data = pattern_data()
    cfg = GPTConfig(**{**CFG.to_dict(), "dropout": dropout})
    for i, stop in enumerate(slices):
        # a new process would start from other RNG states: resume must not care
        torch.manual_seed(1234 + i)
        model = GPT(cfg)
        run(
            model,
            data,
            quick_config(),
            tmp_path / name,
            resume=i > 0,
            stop_at_step=stop,
        )
    return model, read_metrics(tmp_path / name / METRICS_NAME)


def test_resume_is_bit_exact(tmp_path):
    straight, log_a = run_slices(tmp_path, "a", [None])
    resumed, log_b = run_slices(tmp_path, "b", [30, None])
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values()
    ):
        assert torch.equal(a, b), name

    def strip(log):
        return [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in log]

    assert strip(log_a) == strip(log_b)


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to this process")
def test_ctrl_c_saves_and_resumes(tmp_path):
    # what SIGINT did before: the default handler, or SIG_IGN where the tests were
    # started in the background by a shell without job control
    before = signal.getsignal(signal.SIGINT)
    data = pattern_data()
    torch.manual_seed(0)
    model = GPT(CFG)
    calls = []

    def press_ctrl_c_in_the_20th_forward(module, args):
        calls.append(1)
        if len(calls) == 20:
            os.kill(os.getpid(), signal.SIGINT)

    hook = model.register_forward_pre_hook(press_ctrl_c_in_the_20th_forward)
    config = quick_config(max_steps=1_000_000, eval_interval=10**6)
    result = run(model, data, config, tmp_path)
    hook.remove()
    # 8 forwards evaluate at step 0 (4 batches x 2 splits); the 20th is step 12's,
    # which still completes
    assert result.interrupted and result.steps == 12
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME).step == result.steps
    # the same settings (a resumed run keeps them), 5 steps more
    more = run(
        GPT(CFG), data, config, tmp_path, resume=True, stop_at_step=result.steps + 5
    )
    assert more.steps == result.steps + 5 and not more.interrupted
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_resume_without_checkpoint_or_with_other_config(tmp_path):
    data = pattern_data()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(GPT(CFG), data, quick_config(), tmp_path, resume=True)
    run(GPT(CFG), data, quick_config(max_steps=2), tmp_path)
    other = GPT(GPTConfig(**{**CFG.to_dict(), "n_layer": 1}))
    with pytest.raises(ValueError, match="differs from the model"):
        run(other, data, quick_config(), tmp_path, resume=True)
    json.loads((tmp_path / METRICS_NAME).read_text().splitlines()[0])


def test_gradient_accumulation_equals_one_big_batch():
    import contextlib

    from gptlib.data import get_batch
    from gptlib.training import train_step

    torch.manual_seed(0)
    x, y = get_batch(pattern_data(), batch_size=8, block_size=16)
    finals = []
    for micro in (8, 4, 2):  # 1 x 8, 2 x 4, 4 x 2: the same 8 windows
        torch.manual_seed(0)
        model = GPT(CFG)
        opt = configure_optimizer(model, TrainConfig())
        batches = [(x[i : i + micro], y[i : i + micro]) for i in range(0, 8, micro)]
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        loss, _ = train_step(model, opt, batches, 1.0, contextlib.nullcontext(), scaler)
        finals.append((loss, model.state_dict()))
    for loss, state in finals[1:]:
        assert loss == pytest.approx(finals[0][0], abs=1e-6)
        for name, tensor in finals[0][1].items():
            assert torch.allclose(tensor, state[name], atol=1e-6), name


def test_bfloat16_autocast_trains_on_cpu():
    torch.manual_seed(0)
    data = pattern_data()
    result = train(GPT(CFG), data[:3600], data[3600:], quick_config(dtype="bfloat16"))
    assert result.history[-1]["val_loss"] < 0.5 * result.history[0]["val_loss"]
    with pytest.raises(ValueError, match="float16 training needs CUDA"):
        if torch.cuda.is_available():
            raise ValueError(
                "float16 training needs CUDA (skipped: this machine has CUDA)"
            )
        train(GPT(CFG), data[:3600], data[3600:], quick_config(dtype="float16"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        TrainConfig(dtype="fp8")


@pytest.mark.slow
def test_compiled_training_saves_plain_state_dict(tmp_path):
    torch.manual_seed(0)
    data = pattern_data()
    run(GPT(CFG), data, quick_config(max_steps=3, compile=True), tmp_path)
    keys = load_checkpoint(tmp_path / CHECKPOINT_NAME).model_state.keys()
    assert "tok_emb.weight" in keys and not any("_orig_mod" in k for k in keys)


def test_evaluation_does_not_move_the_training_batches():
    """Evaluation draws from a generator of its own: evaluating more often changes
    nothing in training, and every evaluation of the same weights gives the same
    numbers."""
    data = pattern_data()
    weights = []
    for eval_interval in (5, 30):
        torch.manual_seed(0)
        model = GPT(CFG)
        result = train(
            model,
            data[:3600],
            data[3600:],
            quick_config(max_steps=30, eval_interval=eval_interval),
        )
        weights.append(model.state_dict())
        assert result.history[-1]["step"] == 30
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_one_host_sync_per_optimizer_step(monkeypatch):
    """train_step keeps the loss on the device: the only reads to the host are one
    transfer per step (the loss and the gradient norm together, checked for NaN)."""
    import contextlib
    import sys

    from gptlib import training
    from gptlib.data import get_batch

    reads = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller == training.__file__:
                reads.append(name)
            return original(self, *args, **kwargs)

        return wrapper

    for name in (
        "item",
        "tolist",
        "__bool__",
        "__float__",
        "__int__",
        "cpu",
        "numpy",
        "__format__",
    ):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    torch.manual_seed(0)
    model = GPT(CFG)
    optimizer = configure_optimizer(model, TrainConfig())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    data = pattern_data()
    for accumulation in (1, 4):
        reads.clear()
        batches = [get_batch(data, 4, 16) for _ in range(accumulation)]
        loss, norm = training.train_step(
            model, optimizer, batches, 1.0, contextlib.nullcontext(), scaler
        )
        assert (
            reads == ["tolist"] and isinstance(loss, float) and isinstance(norm, float)
        )


def test_resume_after_a_crash_drops_the_records_written_after_the_checkpoint(tmp_path):
    """A run that crashed had logged steps its last checkpoint does not hold; the
    resumed run repeats those steps, and the log keeps each step once."""
    data = pattern_data()
    torch.manual_seed(0)
    run(GPT(CFG), data, quick_config(), tmp_path / "straight")
    torch.manual_seed(0)  # the same initial weights
    run(GPT(CFG), data, quick_config(), tmp_path / "run", stop_at_step=20)
    saved = tmp_path / "saved.safetensors"
    shutil.copy(tmp_path / "run" / CHECKPOINT_NAME, saved)  # step 20
    run(GPT(CFG), data, quick_config(), tmp_path / "run", resume=True, stop_at_step=35)
    # the crash: the checkpoint of step 20 is the last one, the log goes on to step
    # 35 and ends in a line cut short
    shutil.copy(saved, tmp_path / "run" / CHECKPOINT_NAME)
    with open(tmp_path / "run" / METRICS_NAME, "a", encoding="utf-8") as f:
        f.write('{"step": 40, "lo')
    run(GPT(CFG), data, quick_config(), tmp_path / "run", resume=True)

    def strip(log):
        return [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in log]

    log = read_metrics(tmp_path / "run" / METRICS_NAME)
    assert strip(log) == strip(read_metrics(tmp_path / "straight" / METRICS_NAME))
    left = [p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".tmp"]
    assert left == []  # the log was rewritten through a temporary file, now gone


class StopDuringEvaluation:
    """Sets the flag of train's StopOnCtrlC, as its handler does on a Ctrl-C, while
    `train` draws evaluation batch number `at` (counting all evaluations of the run)."""

    def __init__(self, monkeypatch, at: int):
        self.at, self.drawn, self.when = at, 0, None
        stoppers = self.stoppers = []

        class Recorded(training.StopOnCtrlC):
            def __enter__(self):
                stoppers.append(self)
                return super().__enter__()

        self.real_get_batch = training.get_batch
        monkeypatch.setattr(training, "StopOnCtrlC", Recorded)
        monkeypatch.setattr(training, "get_batch", self.get_batch)

    def get_batch(self, *args, **kwargs):
        if not torch.is_grad_enabled():  # estimate_loss draws under no_grad
            self.drawn += 1
            if self.drawn == self.at:
                self.stoppers[-1].requested = True
                self.when = time.perf_counter()
        return self.real_get_batch(*args, **kwargs)


def test_ctrl_c_during_the_first_evaluation_stops_within_a_batch(
    tmp_path, monkeypatch, capsys
):
    data = pattern_data()
    torch.manual_seed(0)
    model = GPT(CFG)
    stop = StopDuringEvaluation(monkeypatch, at=3)
    # 2 x 5000 batches: many seconds, were the evaluation to run to its end
    config = quick_config(eval_batches=5000, progress=True)
    result = run(model, data, config, tmp_path)
    seconds = time.perf_counter() - stop.when
    assert stop.drawn == 3 and seconds < 1.0, (stop.drawn, seconds)
    assert result.interrupted and result.steps == 0 and result.history == []
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME).step == 0
    assert read_metrics(tmp_path / METRICS_NAME) == []  # no half evaluation
    assert model.training  # estimate_loss put the mode back
    assert "evaluating 2/10000" in capsys.readouterr().err  # on the progress bar


def test_ctrl_c_during_a_later_evaluation_saves_that_step_and_resumes(
    tmp_path, monkeypatch
):
    data = pattern_data()
    torch.manual_seed(0)
    # 8 batches per evaluation (4 per split): batch 10 is in step 20's evaluation
    stop = StopDuringEvaluation(monkeypatch, at=10)
    result = run(GPT(CFG), data, quick_config(), tmp_path)
    assert stop.drawn == 10 and result.interrupted and result.steps == 20
    assert [r["step"] for r in result.history] == [0]  # step 20's was not finished
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME).step == 20
    assert max(r["step"] for r in read_metrics(tmp_path / METRICS_NAME)) == 20
    monkeypatch.undo()
    more = run(GPT(CFG), data, quick_config(), tmp_path, resume=True)
    assert more.steps == 60 and not more.interrupted
    evals = [
        r["step"] for r in read_metrics(tmp_path / METRICS_NAME) if "val_loss" in r
    ]
    assert evals == [0, 40, 60]
