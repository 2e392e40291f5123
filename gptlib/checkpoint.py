"""Save and load training state safely.

A checkpoint is one `.safetensors` file:

* tensors: the model's weights (`model.*`), the optimizer's state (`optimizer.*`)
  and the torch RNG states (`rng.*`);
* metadata (plain JSON strings): the model config, the tokenizer, the step, the
  optimizer's hyper-parameters and the Python/NumPy RNG states.

Loading reads tensors and JSON only. Nothing is unpickled, so a checkpoint from a
stranger cannot run code on your machine (a `torch.save` pickle can).
Writes go to a temporary file that is flushed to disk and then renamed over the
old checkpoint, so a crash or a full disk mid-save never destroys the last good one.
"""

# --8<-- [start:imports]
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import Tokenizer, tokenizer_from_dict
from gptlib.training import TrainState

# --8<-- [end:imports]


# --8<-- [start:rng]
def get_rng_state() -> dict[str, Any]:
    """Every random number generator's state: a resumed run draws the same numbers."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --8<-- [end:rng]


# --8<-- [start:atomic]
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path`: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(
                f.fileno()
            )  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except (
        BaseException
    ) as e:  # a full disk, or a second Ctrl-C: never leave a half-written file behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(
                e.errno,
                f"could not write checkpoint {path} ({e.strerror}); "
                "any previous file there is unchanged",
            ) from e
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --8<-- [end:atomic]


# --8<-- [start:format]
FORMAT = "gptlib-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """The file is not a usable gptlib checkpoint; the message says why."""


@dataclass
class Checkpoint:
    config: GPTConfig
    model_state: dict[str, torch.Tensor]
    step: int = 0
    tokenizer: Tokenizer | None = None
    optimizer_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def build_model(self, device: torch.device | str = "cpu") -> GPT:
        model = GPT(self.config)
        missing, unexpected = model.load_state_dict(self.model_state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint does not match GPT(config): missing {missing}, "
                f"unexpected {unexpected}"
            )
        return model.to(device)


# --8<-- [end:format]


# --8<-- [start:json_state]
def _rng_to_json(state: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _rng_from_json(
    data: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    version, internal, gauss = data["python"]
    name, keys, pos, has_gauss, cached = data["numpy"]
    n_cuda = sum(1 for k in tensors if k.startswith("rng.cuda."))
    return {
        "python": (version, tuple(internal), gauss),
        "numpy": (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached),
        "torch": tensors["rng.torch"],
        "cuda": [tensors[f"rng.cuda.{i}"] for i in range(n_cuda)],
    }


def _split_optimizer_state(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (tensors for safetensors, the rest as JSON-able data)."""
    tensors, scalars = {}, {}
    for idx, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.state.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer_state(
    tensors: dict[str, torch.Tensor], data: dict[str, Any]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer.state."):
            idx, key = name[len("optimizer.state.") :].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for name, value in data["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    # JSON has no tuples: give hyper-parameters like betas=(0.9, 0.99) their type back
    groups = [
        {
            k: tuple(v) if isinstance(v, list) and k != "params" else v
            for k, v in g.items()
        }
        for g in data["param_groups"]
    ]
    return {"state": dict(sorted(state.items())), "param_groups": groups}


# --8<-- [end:json_state]


# --8<-- [start:save]
def save_checkpoint(
    path: str | Path,
    model: GPT,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    tokenizer: Tokenizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model, optimizer, step, tokenizer and RNG states to `path`, atomically."""
    path = Path(path)
    model = getattr(
        model, "_orig_mod", model
    )  # a torch.compile wrapper: save the plain model
    model = getattr(model, "module", model)  # a DDP wrapper: likewise
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.numel())
        if key in seen:  # a tied weight: store it once, remember the alias
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[f"model.{name}"] = tensor.detach().cpu().contiguous()
    train_state: dict[str, Any] = {"step": step, "extra": extra or {}}
    if optimizer is not None:
        opt_tensors, opt_data = _split_optimizer_state(optimizer.state_dict())
        tensors.update(
            {k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()}
        )
        train_state["optimizer"] = opt_data
    rng = get_rng_state()
    tensors["rng.torch"] = rng["torch"]
    for i, cuda_state in enumerate(rng["cuda"]):
        tensors[f"rng.cuda.{i}"] = cuda_state
    train_state["rng"] = _rng_to_json(rng)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "config": json.dumps(model.config.to_dict()),
        "tied": json.dumps(tied),
        "train_state": json.dumps(train_state),
        "tokenizer": json.dumps(
            tokenizer.to_dict() if tokenizer is not None else None, ensure_ascii=False
        ),
    }
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))
    return path


# --8<-- [end:save]


# --8<-- [start:load]
def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; other files get a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # safe_open parses a JSON header and raw tensors: it never runs code from the file
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        with open(path, "rb") as f:
            head = f.read(9)
        zipped = head[:2] == b"PK"  # torch.save writes a zip archive
        pickled = head[:1] == b"\x80" and head[1:2] in (
            b"\x02",
            b"\x03",
            b"\x04",
            b"\x05",
        )  # pickle protocol 2-5
        safetensors = (
            head[8:9] == b"{"
        )  # 8 bytes of header length, then the JSON header
        if (zipped or pickled) and not safetensors:
            raise CheckpointError(
                f"{path} looks like a torch.save/pickle file. "
                "gptlib does not unpickle files: "
                "unpickling can run arbitrary code. Convert it with code you trust."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {e}"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a gptlib checkpoint "
            f"(no '{FORMAT}' marker)"
        )
    if metadata.get("version") != str(VERSION):
        raise CheckpointError(
            f"{path} has checkpoint version {metadata.get('version')}, "
            f"this gptlib reads {VERSION}"
        )
    try:
        config = GPTConfig.from_dict(json.loads(metadata["config"]))
        tied = json.loads(metadata["tied"])
        train_state = json.loads(metadata["train_state"])
        tok_data = json.loads(metadata["tokenizer"])
        tokenizer = tokenizer_from_dict(tok_data) if tok_data is not None else None
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} has damaged metadata: {e}") from None
    model_state = {
        k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")
    }
    for alias, source in tied.items():
        model_state[alias] = model_state[source]
    optimizer_state = None
    if "optimizer" in train_state:
        optimizer_state = _join_optimizer_state(tensors, train_state["optimizer"])
    return Checkpoint(
        config=config,
        model_state=model_state,
        step=int(train_state["step"]),
        tokenizer=tokenizer,
        optimizer_state=optimizer_state,
        rng_state=_rng_from_json(train_state["rng"], tensors),
        extra=train_state.get("extra", {}),
    )


# --8<-- [end:load]


# --8<-- [start:load_model]
def load_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[GPT, Tokenizer | None]:
    """The model (in eval mode) and tokenizer stored in a checkpoint."""
    ckpt = load_checkpoint(path)
    model = ckpt.build_model(device)
    model.eval()
    return model, ckpt.tokenizer


# --8<-- [end:load_model]


# --8<-- [start:run_checkpoint]
CHECKPOINT_NAME = "checkpoint.safetensors"


class RunCheckpoint:
    """The checkpoint of a run, for `train(..., checkpoint=RunCheckpoint(...))`.

    `train` saves the run here at every evaluation, at the end and on Ctrl-C. With
    `resume=True` it first restores the saved run: weights, optimizer, scaler, random
    number generators and step, so the run goes on exactly where it stopped.
    """

    def __init__(
        self, path: str | Path, tokenizer: Tokenizer | None = None, resume: bool = False
    ):
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.resume = resume

    def restore(self, state: TrainState) -> None:
        if not self.resume:
            return
        if not self.path.is_file():
            raise FileNotFoundError(
                f"resume=True but there is no checkpoint at {self.path}"
            )
        ckpt = load_checkpoint(self.path)
        if ckpt.config != state.model.config:
            raise ValueError(
                f"checkpoint config {ckpt.config} differs from "
                f"the model's {state.model.config}"
            )
        if (
            self.tokenizer is not None
            and ckpt.tokenizer is not None
            and self.tokenizer.to_dict() != ckpt.tokenizer.to_dict()
        ):
            raise ValueError(
                "the tokenizer differs from the checkpoint's: "
                "its token ids would mean other text"
            )
        if ckpt.optimizer_state is None:
            raise CheckpointError(
                f"{self.path} holds no optimizer state (a model saved for inference?): "
                "it cannot be resumed"
            )
        state.model.load_state_dict(ckpt.model_state)
        state.optimizer.load_state_dict(ckpt.optimizer_state)
        if "scaler" in ckpt.extra:
            state.scaler.load_state_dict(ckpt.extra["scaler"])
        set_rng_state(
            ckpt.rng_state
        )  # after train() seeded: the next batch is the one due next
        state.step = ckpt.step

    def save(self, state: TrainState) -> Path:
        extra: dict[str, Any] = {"train_config": asdict(state.config)}
        if state.scaler.is_enabled():
            extra["scaler"] = state.scaler.state_dict()
        return save_checkpoint(
            self.path, state.model, state.optimizer, state.step, self.tokenizer, extra
        )


def find_checkpoint(
    path: str | Path | None = None, runs_dir: str | Path = "runs"
) -> Path:
    """A checkpoint file: `path` itself, the checkpoint in the run folder `path`, or
    (with no path) the newest runs_dir/*/checkpoint.safetensors."""
    if path is not None:
        path = Path(path)
        return path / CHECKPOINT_NAME if path.is_dir() else path
    found = sorted(
        Path(runs_dir).glob(f"*/{CHECKPOINT_NAME}"), key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise FileNotFoundError(
            f"no checkpoint in {runs_dir}/*/: train one first (gptlib train) "
            "or name one"
        )
    return found[-1]


# --8<-- [end:run_checkpoint]
