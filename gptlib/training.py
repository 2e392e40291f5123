"""The training loop: AdamW, warmup + cosine learning rate, clipping, evaluation,
a progress bar, a JSON-lines metrics log, checkpoints, clean Ctrl-C."""


# --8<-- [start:imports]
import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gptlib.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from gptlib.data import get_batch
from gptlib.model import GPT
from gptlib.tokenizer import Tokenizer
from gptlib.utils import get_device
# --8<-- [end:imports]

CHECKPOINT_NAME = "checkpoint.safetensors"
METRICS_NAME = "metrics.jsonl"


# --8<-- [start:ch09_config]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # the cosine decays to this
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off
    grad_accum_steps: int = 1  # micro-batches per optimizer step: an effective batch of batch_size * this
    dtype: str = "float32"  # "bfloat16" or "float16" run the forward pass in autocast (mixed precision)
    compile: bool = False  # torch.compile the model for the training steps
    eval_interval: int = 100  # evaluate (and checkpoint, if out_dir is set) every this many steps
    eval_batches: int = 20
    log_interval: int = 10
    seed: int = 1337
    device: str | None = None  # None: pick automatically (cuda -> mps -> cpu)
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum_steps", "eval_interval", "eval_batches", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.min_lr < 0 or self.min_lr > self.learning_rate:
            raise ValueError("need 0 <= min_lr <= learning_rate and learning_rate > 0")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps, grad_clip and weight_decay must be >= 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)
# --8<-- [end:ch09_config]


# --8<-- [start:ch09_nonfinite]
class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the weights were damaged further."""
# --8<-- [end:ch09_nonfinite]


# --8<-- [start:optimizer]
def configure_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and LayerNorm gains are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2))
# --8<-- [end:optimizer]


# --8<-- [start:lr_schedule]
def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))  # 1 -> 0
    return config.min_lr + cosine * (config.learning_rate - config.min_lr)
# --8<-- [end:lr_schedule]


# --8<-- [start:estimate_loss]
@torch.no_grad()
def estimate_loss(
    model: GPT,
    splits: dict[str, torch.Tensor],
    batch_size: int,
    eval_batches: int,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean loss over `eval_batches` random batches of each split, with dropout off."""
    was_training = model.training
    model.eval()
    out = {}
    for name, data in splits.items():
        losses = torch.zeros(eval_batches)
        for i in range(eval_batches):
            x, y = get_batch(data, batch_size, model.config.block_size, device)
            _, loss = model(x, y)
            losses[i] = loss.item()
        out[name] = losses.mean().item()
    model.train(was_training)
    return out
# --8<-- [end:estimate_loss]


# --8<-- [start:ch09_result]
@dataclass
class TrainResult:
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)  # the eval records
    interrupted: bool = False  # stopped by Ctrl-C
    stopped_early: bool = False  # stopped at stop_at_step, to be resumed
    checkpoint: Path | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}
# --8<-- [end:ch09_result]


# --8<-- [start:ch10_ctrl_c]
class _StopOnCtrlC:
    """The first Ctrl-C asks the loop to stop after the current step (and save);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopOnCtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (press again to abort now)", flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
# --8<-- [end:ch10_ctrl_c]


# --8<-- [start:train_step]
def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    grad_clip: float,
    autocast: contextlib.AbstractContextManager,
    scaler: torch.amp.GradScaler,
) -> tuple[float, float]:
    """One optimizer step over `batches` (gradient accumulation). Returns (loss, grad norm).

    Each micro-batch's loss is divided by the number of micro-batches, so the summed
    gradients equal the gradient of the mean loss over one big batch.
    """
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for x, y in batches:
        with autocast:
            _, loss = model(x, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()}")
        scaler.scale(loss / len(batches)).backward()  # the scaler is a no-op unless float16
        total += loss.item() / len(batches)
    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    scaler.step(optimizer)  # skips the step if float16 gradients overflowed
    scaler.update()
    return total, grad_norm.item()
# --8<-- [end:train_step]


# --8<-- [start:ch09_autocast]
def autocast_for(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass, or nothing for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "float16" and device.type != "cuda":
        raise ValueError("float16 training needs CUDA (use bfloat16 on the CPU)")
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])
# --8<-- [end:ch09_autocast]


# --8<-- [start:train]
def train(
    model: GPT,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig,
    tokenizer: Tokenizer | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Train `model` on random batches of `train_data`, evaluating on `val_data`.

    With `out_dir`, writes `metrics.jsonl` and `checkpoint.safetensors` there
    (every eval_interval steps, at the end, and on Ctrl-C); `resume=True`
    continues from that checkpoint exactly where it stopped. `stop_at_step` ends
    this run early (with a checkpoint) while the schedule still aims at max_steps,
    so a long run can be done in slices.
    """
    for name, data in (("training", train_data), ("validation", val_data)):
        if len(data) <= model.config.block_size:
            raise ValueError(f"the {name} data has {len(data)} tokens, but a batch needs more than "
                             f"block_size={model.config.block_size}: use more text or a smaller block_size")
    device = get_device(config.device)
    model.to(device)
    optimizer = configure_optimizer(model, config)
    autocast = autocast_for(device, config.dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=config.dtype == "float16")
    step_model = torch.compile(model) if config.compile else model  # same weights, faster steps
    out_dir = Path(out_dir) if out_dir is not None else None
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir else None
    step = 0
    evaluated_at = -1  # the step whose evaluation already ran (and moved the RNG)
    torch.manual_seed(config.seed)
    # --8<-- [start:ch10_resume]
    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise FileNotFoundError(f"resume=True but there is no checkpoint at {ckpt_path}")
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.config != model.config:
            raise ValueError(f"checkpoint config {ckpt.config} differs from the model's {model.config}")
        if tokenizer is not None and ckpt.tokenizer is not None and tokenizer.to_dict() != ckpt.tokenizer.to_dict():
            raise ValueError("the tokenizer differs from the checkpoint's: its token ids would mean other text")
        model.load_state_dict(ckpt.model_state)
        optimizer.load_state_dict(ckpt.optimizer_state)
        set_rng_state(ckpt.rng_state)
        if "scaler" in ckpt.extra:
            scaler.load_state_dict(ckpt.extra["scaler"])
        step = ckpt.step
        evaluated_at = ckpt.extra.get("evaluated_at", -1)
    # --8<-- [end:ch10_resume]
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    metrics = open(out_dir / METRICS_NAME, "a" if resume else "w", encoding="utf-8") if out_dir else None

    def log(record: dict[str, Any]) -> None:
        if metrics:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    # --8<-- [start:ch10_checkpoint]
    def checkpoint() -> Path | None:
        if ckpt_path is None:
            return None
        extra = {"train_config": asdict(config), "evaluated_at": evaluated_at}
        if scaler.is_enabled():
            extra["scaler"] = scaler.state_dict()
        return save_checkpoint(ckpt_path, model, optimizer, step, tokenizer, extra=extra)
    # --8<-- [end:ch10_checkpoint]

    result = TrainResult(steps=step, seconds=0.0)
    tokens_per_step = config.batch_size * config.grad_accum_steps * model.config.block_size
    bar = tqdm(total=config.max_steps, initial=step, disable=not config.progress, desc="train", unit="step")
    start = time.perf_counter()
    step_seconds = 0.0  # time spent in training steps since the last log line (evaluation excluded)
    model.train()
    try:
        with _StopOnCtrlC() as stop:
            while step < config.max_steps:
                # --8<-- [start:ch10_eval]
                if step % config.eval_interval == 0 and step != evaluated_at:
                    evaluated_at = step
                    losses = estimate_loss(
                        model, {"train": train_data, "val": val_data}, config.batch_size, config.eval_batches, device
                    )
                    record = {"step": step, "train_loss": losses["train"], "val_loss": losses["val"]}
                    result.history.append(record)
                    log(record)
                    if step > 0:
                        result.checkpoint = checkpoint()
                # --8<-- [end:ch10_eval]
                lr = lr_at(step, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_start = time.perf_counter()
                batches = [get_batch(train_data, config.batch_size, model.config.block_size, device)
                           for _ in range(config.grad_accum_steps)]
                try:
                    loss, grad_norm = train_step(step_model, optimizer, batches, config.grad_clip, autocast, scaler)
                except NonFiniteLossError as e:
                    raise NonFiniteLossError(
                        f"{e} at step {step} (lr={lr:.2e}); the last checkpoint is untouched. "
                        "Try a lower learning rate or check the data."
                    ) from None
                step += 1
                step_seconds += time.perf_counter() - step_start
                bar.update(1)
                if step % config.log_interval == 0:
                    tok_per_s = tokens_per_step * config.log_interval / step_seconds
                    step_seconds = 0.0
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_per_s:,.0f}")
                    log({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                         "tokens_per_sec": tok_per_s})
                # --8<-- [start:ch10_stop]
                if stop.requested:
                    result.interrupted = True
                    break
                if step == stop_at_step:
                    result.stopped_early = True
                    break
                # --8<-- [end:ch10_stop]
        if not (result.interrupted or result.stopped_early) and step != evaluated_at:
            evaluated_at = step
            losses = estimate_loss(
                model, {"train": train_data, "val": val_data}, config.batch_size, config.eval_batches, device
            )
            record = {"step": step, "train_loss": losses["train"], "val_loss": losses["val"]}
            result.history.append(record)
            log(record)
        result.checkpoint = checkpoint()
    finally:
        bar.close()
        if metrics:
            metrics.close()
    result.steps = step
    result.seconds = time.perf_counter() - start
    return result
# --8<-- [end:train]


# --8<-- [start:ch09_read_metrics]
def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, for plotting."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
# --8<-- [end:ch09_read_metrics]


# Training settings that go with each model preset (gptlib.model.PRESETS).
# --8<-- [start:train_presets]
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(max_steps=300, batch_size=16, learning_rate=3e-3, min_lr=3e-4, warmup_steps=20, eval_interval=50),
    "tiny": dict(max_steps=800, batch_size=32, learning_rate=3e-3, min_lr=3e-4, warmup_steps=50, eval_interval=100),
    "small": dict(max_steps=5000, batch_size=64, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, eval_interval=250),
    "gpt2": dict(max_steps=20000, batch_size=8, learning_rate=6e-4, min_lr=6e-5, warmup_steps=700, eval_interval=500),
}
# --8<-- [end:train_presets]
