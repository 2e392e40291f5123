"""Training a GPT: AdamW, a warm-up + cosine learning rate, gradient clipping and
accumulation, mixed precision, evaluation, a progress bar, a JSON-lines metrics log,
and a clean stop on Ctrl-C.

Chapter 09 (Training) builds this file. Saving a run and resuming it (chapter 10) plug
into `train` through its `checkpoint` argument, and several processes (chapter 14)
through its `parallel` argument; this module never imports gptlib.checkpoint or
gptlib.distributed.
"""

# --8<-- [start:imports]
import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from gptlib.data import get_batch
from gptlib.model import GPT
from gptlib.utils import get_device

# --8<-- [end:imports]


# --8<-- [start:config]
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DTYPE_CHOICES = ("auto", *DTYPES)


@dataclass
class TrainConfig:
    """Every setting of a training run (`gptlib train --help` lists them as flags)."""

    max_steps: int = 1000  # optimizer steps in the whole run
    batch_size: int = 16  # sequences per micro-batch
    learning_rate: float = 1e-3  # the peak learning rate, reached after the warm-up
    min_lr: float = 1e-4  # the cosine decays to this
    warmup_steps: int = 50  # steps of linear warm-up to learning_rate
    weight_decay: float = 0.1  # AdamW's decay of the weight matrices
    beta1: float = 0.9  # AdamW's average of the gradients (momentum)
    beta2: float = 0.99  # AdamW's average of the squared gradients
    grad_clip: float = 1.0  # largest gradient norm; 0 turns clipping off
    grad_accum_steps: int = 1  # micro-batches per step: batch_size * this sequences
    dtype: str = "auto"  # float32, bfloat16, float16 (autocast); auto: resolve_dtype
    compile: bool = False  # torch.compile the model for the training steps
    eval_interval: int = 100  # evaluate (and save a checkpoint) every this many steps
    eval_batches: int = 20  # batches of each split per evaluation
    log_interval: int = 10  # log the loss and the throughput every this many steps
    seed: int = 1337  # seeds the batches and dropout
    device: str | None = None  # cpu, cuda, cuda:1 or mps; None: the best available
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, rule: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"TrainConfig.{name} must be {rule}, got {value!r}")

        counts = {  # integer fields and their smallest value
            "max_steps": 1,
            "batch_size": 1,
            "grad_accum_steps": 1,
            "eval_interval": 1,
            "eval_batches": 1,
            "log_interval": 1,
            "warmup_steps": 0,
        }
        for name, least in counts.items():
            value = getattr(self, name)
            is_int = isinstance(value, int) and not isinstance(value, bool)
            check(name, is_int and value >= least, f">= {least} (an integer)")
        # Every comparison with NaN is False, so these ranges refuse NaN (and inf)
        inf = math.inf
        check("learning_rate", 0 < self.learning_rate < inf, "a finite number > 0")
        check(
            "min_lr",
            0 <= self.min_lr <= self.learning_rate,
            f"between 0 and learning_rate={self.learning_rate}",
        )
        check("weight_decay", 0 <= self.weight_decay < inf, "a finite number >= 0")
        check("grad_clip", 0 <= self.grad_clip < inf, "a finite number >= 0 (0: off)")
        check("beta1", 0 <= self.beta1 < 1, "in [0, 1)")
        check("beta2", 0 <= self.beta2 < 1, "in [0, 1)")
        check("dtype", self.dtype in DTYPE_CHOICES, f"one of {DTYPE_CHOICES}")


# --8<-- [end:config]


# --8<-- [start:optimizer]
def configure_optimizer(
    model: torch.nn.Module, config: TrainConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and LayerNorm gains are not
    decayed.

    `fused` updates all parameters in one kernel; None: fused on CUDA, where it is
    faster (chapter 13), and PyTorch's default elsewhere.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    betas = (config.beta1, config.beta2)
    if fused is None:
        fused = bool(params) and params[0].device.type == "cuda"
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=betas, fused=fused or None
    )


# --8<-- [end:optimizer]


# --8<-- [start:lr_schedule]
def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(
        1, config.max_steps - config.warmup_steps
    )
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))  # 1 -> 0
    return config.min_lr + cosine * (config.learning_rate - config.min_lr)


# --8<-- [end:lr_schedule]


# --8<-- [start:train_presets]
# Training settings that go with each model preset (gptlib.model.PRESETS).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(
        max_steps=300,
        batch_size=16,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=20,
        eval_interval=50,
    ),
    "tiny": dict(
        max_steps=800,
        batch_size=32,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=50,
        eval_interval=100,
    ),
    "small": dict(
        max_steps=5000,
        batch_size=64,
        learning_rate=1e-3,
        min_lr=1e-4,
        warmup_steps=100,
        eval_interval=250,
    ),
    "gpt2": dict(
        max_steps=20000,
        batch_size=8,
        learning_rate=6e-4,
        min_lr=6e-5,
        warmup_steps=700,
        eval_interval=500,
    ),
}


def train_config(preset: str, **overrides: Any) -> TrainConfig:
    """The training settings of a preset, any of them overridden. A new learning_rate
    brings min_lr along (a tenth of it, as in every preset) unless min_lr is given
    too."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(
            f"unknown preset {preset!r}; choose one of {list(TRAIN_PRESETS)}"
        )
    unknown = sorted(set(overrides) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}")
    settings = {**TRAIN_PRESETS[preset], **overrides}
    if "learning_rate" in overrides and "min_lr" not in overrides:
        settings["min_lr"] = overrides["learning_rate"] / 10
    return TrainConfig(**settings)


# --8<-- [end:train_presets]


# --8<-- [start:train_step]
class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stopped before the weights changed."""


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    grad_clip: float,
    autocast: contextlib.AbstractContextManager,
    scaler: torch.amp.GradScaler,
) -> tuple[float, float]:
    """One optimizer step over `batches` (gradient accumulation): (loss, grad norm).

    Each micro-batch's loss is divided by the number of micro-batches, so the summed
    gradients equal the gradient of the mean loss over one big batch. The loss stays
    on the device; one transfer at the end (one host sync per step) reads it and the
    gradient norm, and a loss that is not finite stops before the optimizer step.
    """
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=batches[0][0].device)
    for i, (x, y) in enumerate(batches):
        # a model split over processes (chapter 14) averages the gradients only after
        # the last micro-batch's backward: no_sync skips that for the others
        last = i == len(batches) - 1
        no_sync = getattr(model, "no_sync", contextlib.nullcontext)
        with contextlib.nullcontext() if last else no_sync():
            with autocast:  # the forward pass only: backward follows its dtypes
                _, loss = model(x, y)
            loss = loss / len(batches)
            scaler.scale(loss).backward()  # the scaler is a no-op unless float16
        total += loss.detach()
    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    loss_value, norm_value = torch.stack([total, grad_norm]).tolist()  # the host sync
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(f"loss is {loss_value}")
    scaler.step(optimizer)  # skips the step if float16 gradients overflowed
    scaler.update()
    return loss_value, norm_value


# --8<-- [end:train_step]


# --8<-- [start:autocast]
def resolve_dtype(device: torch.device, dtype: str) -> str:
    """What `dtype="auto"` means: bfloat16 on a CUDA GPU that has it (as fast as
    float16, without a GradScaler), float32 everywhere else (chapter 13 says why)."""
    if dtype != "auto":
        return dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def autocast_for(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass, or nothing for float32."""
    dtype = resolve_dtype(device, dtype)
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "float16" and device.type != "cuda":
        raise ValueError("float16 training needs CUDA (use bfloat16 on the CPU)")
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


# --8<-- [end:autocast]


# --8<-- [start:estimate_loss]
@torch.no_grad()
def estimate_loss(
    model: GPT,
    splits: dict[str, torch.Tensor],
    batch_size: int,
    eval_batches: int,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    keep_going: Callable[[int, int], bool] | None = None,
) -> dict[str, float] | None:
    """Mean loss over `eval_batches` random batches of each split, with dropout off.

    With a `seed`, the batches come from a generator of their own: every evaluation
    sees the same windows, and the training's random numbers are left untouched.
    `keep_going(done, total)`, if given, is called before each batch with the number
    of batches done and to do: it can show progress, and when it returns False the
    evaluation stops there and returns None (`train` stops this way on Ctrl-C).
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    was_training = model.training
    model.eval()
    out = {}
    done, total = 0, len(splits) * eval_batches
    try:
        for name, data in splits.items():
            # on the device: no sync per batch
            losses = torch.zeros(eval_batches, device=device)
            for i in range(eval_batches):
                if keep_going is not None and not keep_going(done, total):
                    return None
                x, y = get_batch(
                    data, batch_size, model.config.block_size, device, generator
                )
                losses[i] = model(x, y)[1]
                done += 1
            out[name] = losses.mean().item()
    finally:
        model.train(was_training)  # also when stopped half-way
    return out


# --8<-- [end:estimate_loss]


# --8<-- [start:loop_parts]
METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainResult:
    steps: int
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # the evaluations
    interrupted: bool = False  # stopped by Ctrl-C
    stopped_early: bool = False  # stopped at stop_at_step, to be resumed
    checkpoint: Path | None = None  # the last checkpoint written

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


@dataclass
class TrainState:
    """What a training run changes as it goes: what a checkpoint must hold."""

    model: GPT
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    config: TrainConfig
    step: int = 0
    world_size: int = 1  # processes the run is split over (chapter 14)


class Checkpointer(Protocol):
    """Saves a run and continues one (gptlib.checkpoint.RunCheckpoint, chapter 10)."""

    def restore(self, state: TrainState) -> None: ...

    def save(self, state: TrainState) -> Path: ...


class Parallel(Protocol):
    """One process of a run split over several (gptlib.distributed.DataParallel,
    chapter 14)."""

    rank: int
    world_size: int
    device: torch.device
    is_main: bool  # the one process that logs, shows progress and saves

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def batches(
        self,
        data: torch.Tensor,
        batch_size: int,
        block_size: int,
        grad_accum_steps: int,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]: ...

    def own_randomness(
        self, seed: int, step: int
    ) -> contextlib.AbstractContextManager: ...

    def mean(self, value: float) -> float: ...

    def any(self, flag: bool) -> bool: ...


class MetricsLog:
    """Records appended to out_dir/metrics.jsonl, one JSON object per line.

    A new run (`resume_step` 0) starts the file afresh. A resumed run keeps the
    records up to the step it resumes from and drops any later ones: a run that
    crashed wrote them after its last checkpoint, and the resumed run writes them again.
    """

    def __init__(self, out_dir: str | Path | None, resume_step: int = 0):
        self.file = None
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            path = Path(out_dir) / METRICS_NAME
            if resume_step > 0 and path.exists():
                keep_records_until(path, resume_step)
            self.file = open(path, "a" if resume_step > 0 else "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()  # readable (and plottable) while the run goes on
        return record

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()


def keep_records_until(path: Path, step: int) -> None:
    """Drop the records of `path` after `step`, and a last line cut short by a crash.
    Atomically: a temporary file replaces the old one, so a crash here loses nothing."""

    def kept(line: str) -> bool:
        try:
            return json.loads(line)["step"] <= step
        except ValueError:  # not JSON: the line a crash was writing
            return False

    lines = path.read_text(encoding="utf-8").splitlines()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines if kept(line)), "utf-8")
    tmp.replace(path)


# --8<-- [start:ctrl_c]
class StopOnCtrlC:
    """The first Ctrl-C asks the loop to stop after the current step (and save);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopOnCtrlC":
        if (
            threading.current_thread() is threading.main_thread()
        ):  # where signals arrive
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: stopping after this step and saving a checkpoint "
            "(press again to abort now)",
            flush=True,
        )

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --8<-- [end:ctrl_c]


def take_step(
    state: TrainState,
    model: torch.nn.Module,
    train_data: torch.Tensor,
    autocast: contextlib.AbstractContextManager,
    device: torch.device,
    parallel: Parallel | None = None,
) -> tuple[float, float, float]:
    """One step of the run: this step's learning rate, fresh batches, `train_step`.
    Returns (loss, gradient norm, learning rate)."""
    config = state.config
    lr = lr_at(state.step, config)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    block_size, accum = state.model.config.block_size, config.grad_accum_steps
    if parallel is None:
        batches = [
            get_batch(train_data, config.batch_size, block_size, device)
            for _ in range(accum)
        ]
        randomness = contextlib.nullcontext()
    else:  # this process's share of the step's batches (chapter 14)
        batches = parallel.batches(train_data, config.batch_size, block_size, accum)
        randomness = parallel.own_randomness(config.seed, state.step)
    try:
        with randomness:
            loss, grad_norm = train_step(
                model,
                state.optimizer,
                batches,
                config.grad_clip,
                autocast,
                state.scaler,
            )
    except NonFiniteLossError as e:
        raise NonFiniteLossError(
            f"{e} at step {state.step} (lr={lr:.2e}); "
            "the last checkpoint is untouched. "
            "Try a lower learning rate or check the data."
        ) from None
    state.step += 1
    return loss, grad_norm, lr


def evaluate(
    model: GPT,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    step: int,
    ctrl_c: StopOnCtrlC | None = None,
    bar: tqdm | None = None,
) -> dict[str, Any] | None:
    """The evaluation record of one step: the loss on both splits. With a progress
    `bar`, it shows how far the evaluation is; a Ctrl-C (`ctrl_c`) stops it between
    two batches, and then there is no record (None)."""
    # the bar's loss and throughput, put back afterwards (a disabled bar has none)
    postfix = getattr(bar, "postfix", None)

    def keep_going(done: int, total: int) -> bool:
        if bar is not None:
            bar.set_postfix_str(f"evaluating {done}/{total}")
        return ctrl_c is None or not ctrl_c.requested

    splits = {"train": train_data, "val": val_data}
    losses = estimate_loss(
        model,
        splits,
        config.batch_size,
        config.eval_batches,
        device,
        seed=config.seed,
        keep_going=keep_going,
    )
    if bar is not None:
        bar.set_postfix_str(postfix or "")
    if losses is None:
        return None
    return {"step": step, "train_loss": losses["train"], "val_loss": losses["val"]}


# --8<-- [end:loop_parts]


# --8<-- [start:train]
def train(
    model: GPT,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    checkpoint: Checkpointer | None = None,
    stop_at_step: int | None = None,
    parallel: Parallel | None = None,
) -> TrainResult:
    """Train `model` on random batches of `train_data`, evaluating on `val_data`.

    With `out_dir`, every evaluation and log record goes to its metrics.jsonl. With
    a `checkpoint`, the run is saved at every evaluation, at the end and on Ctrl-C,
    and continues from the saved run if there is one to resume (chapter 10).
    `stop_at_step` ends this run early while the schedule still aims at max_steps.
    With `parallel`, this process is one of several that share each step (chapter
    14); only the main one writes the log, the progress bar and the checkpoint.
    """
    for name, data in (("training", train_data), ("validation", val_data)):
        if len(data) <= model.config.block_size:
            raise ValueError(
                f"the {name} data has {len(data)} tokens, but a batch needs "
                f"more than block_size={model.config.block_size}"
            )
    device = get_device(config.device) if parallel is None else parallel.device
    model.to(device)
    if device.type == "cuda":  # TF32 matmuls: float32 range, ~8x the speed (ch. 13)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # the run (and its checkpoint) records the dtype it trains in, never "auto"
    config = replace(config, dtype=resolve_dtype(device, config.dtype))
    scaler = torch.amp.GradScaler(device.type, enabled=config.dtype == "float16")
    world_size = 1 if parallel is None else parallel.world_size
    state = TrainState(
        model, configure_optimizer(model, config), scaler, config, 0, world_size
    )
    torch.manual_seed(config.seed)  # which windows the batches are, what dropout drops
    if checkpoint is not None:
        checkpoint.restore(state)  # a saved run continues where it stopped
    step_model = torch.compile(model) if config.compile else model  # same weights
    if parallel is not None:  # the processes average their gradients (chapter 14)
        step_model = parallel.wrap(step_model)
    main = parallel is None or parallel.is_main  # the process that logs and saves
    autocast = autocast_for(device, config.dtype)
    tokens_per_step = (  # the global batch: micro-batch x accumulation x processes
        config.batch_size
        * config.grad_accum_steps
        * world_size
        * model.config.block_size
    )
    result = TrainResult(steps=state.step)
    start, step_seconds = time.perf_counter(), 0.0  # training time since the last log
    model.train()
    with (
        MetricsLog(out_dir if main else None, resume_step=state.step) as log,
        tqdm(
            total=config.max_steps,
            initial=state.step,
            disable=not (config.progress and main),
            desc="train",
            unit="step",
        ) as bar,
        StopOnCtrlC() as ctrl_c,
    ):

        def stop_requested() -> bool:  # several processes stop together, if any asks
            if parallel is None:
                return ctrl_c.requested
            return parallel.any(ctrl_c.requested)

        def evaluate_and_log() -> None:
            record = evaluate(
                model, train_data, val_data, config, device, state.step, ctrl_c, bar
            )
            if record is not None:  # None: a Ctrl-C stopped the evaluation half-way
                result.history.append(log.write(record))

        if state.step == 0:  # the loss before training: about ln(vocab_size)
            evaluate_and_log()
        # a Ctrl-C during that first evaluation ends the run before its first step
        while state.step < config.max_steps and not stop_requested():
            tick = time.perf_counter()
            loss, grad_norm, lr = take_step(
                state, step_model, train_data, autocast, device, parallel
            )
            step_seconds += time.perf_counter() - tick
            bar.update()
            if state.step % config.log_interval == 0:
                if parallel is not None:  # each process's loss is of its own batches
                    loss = parallel.mean(loss)
                tokens_per_sec = tokens_per_step * config.log_interval / step_seconds
                step_seconds = 0.0
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_sec:,.0f}")
                log.write(
                    {
                        "step": state.step,
                        "loss": loss,
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "tokens_per_sec": tokens_per_sec,
                    }
                )
            done = state.step == config.max_steps
            evaluating = state.step % config.eval_interval == 0 or done
            if evaluating:
                evaluate_and_log()
            if stop_requested():
                break
            if state.step == stop_at_step:
                result.stopped_early = True
                break
            if evaluating and checkpoint is not None and main and not done:
                checkpoint.save(state)  # the last checkpoint comes after the loop
        result.interrupted = stop_requested()
        if checkpoint is not None and main:  # at the end, at stop_at_step, or Ctrl-C
            result.checkpoint = checkpoint.save(state)
    result.steps = state.step
    result.seconds = time.perf_counter() - start
    return result


# --8<-- [end:train]


# --8<-- [start:read_metrics]
def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, for plotting."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --8<-- [end:read_metrics]
