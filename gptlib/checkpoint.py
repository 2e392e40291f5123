"""Save and load training state safely.

A checkpoint is one `.safetensors` file:

* tensors: the model's weights (`model.*`), the optimizer's state (`optimizer.*`)
  and the torch RNG states (`rng.*`);
* metadata (plain JSON strings): the model config, the tokenizer, the step, the
  optimizer's hyper-parameters and the Python/NumPy RNG states.

Loading reads tensors and JSON only. Nothing is unpickled, so a checkpoint from a
stranger cannot run code on your machine (a `torch.save` pickle can).
Every field is checked as it is read: a damaged or hand-made file fails in
`load_checkpoint`, in one line naming the file and the field, never later in PyTorch.
Writes go to a temporary file that is flushed to disk and then renamed over the
old checkpoint, so a crash or a full disk mid-save never destroys the last good one.
"""

# --8<-- [start:imports]
import json
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import Tokenizer, tokenizer_from_dict
from gptlib.training import TrainConfig, TrainState, resolve_dtype
from gptlib.utils import get_device

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
        # one state per GPU: a machine with fewer GPUs takes the first ones
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


# --8<-- [end:rng]


# --8<-- [start:atomic]
def temp_path(path: Path, pid: int | None = None) -> Path:
    """Where process `pid` (default: this one) writes a save to `path` before the
    rename: next to it, hidden, and named after it and the process."""
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def atomic_write_bytes(path: Path, data: bytes, what: str = "checkpoint") -> None:
    """Write `data` to `path`: readers see the old file or the new one, never half.
    (`what` the file is, for the error message.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            # the bytes are on disk before the rename makes them visible
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException as e:
        # a full disk, or a second Ctrl-C: never leave a half-written file behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(
                e.errno,
                f"could not write {what} {path} ({e.strerror}); "
                "any previous file there is unchanged",
            ) from e
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete the temporary files that killed saves to `path` left behind.

    A save killed outright (kill -9, a power cut) never reaches its clean-up. Only files
    named exactly as `temp_path` names them for `path` are touched, and none of another
    process that is still running: it may be saving right now.
    """
    if not path.parent.is_dir():
        return []
    ours = re.compile(re.escape(f".{path.name}.") + r"([0-9]+)\.tmp")
    removed = []
    for file in path.parent.iterdir():
        match = ours.fullmatch(file.name)
        if match and file.is_file() and not _other_process_running(int(match[1])):
            file.unlink(missing_ok=True)
            removed.append(file)
    return removed


def _other_process_running(pid: int) -> bool:
    if pid == os.getpid():  # left by an earlier process with our number (reused)
        return False
    if os.name != "posix":  # on Windows os.kill(pid, 0) would end the process
        return False
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


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
def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a safetensors file; anything else gets a clear
    error, and a pickle is refused before a byte of it is unpickled."""
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
        # a pickle starts with byte 0x80 and its protocol, 2 to 5
        pickled = len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5
        # 8 bytes of header length, then the JSON header
        safetensors = head[8:9] == b"{"
        if (zipped or pickled) and not safetensors:
            raise CheckpointError(
                f"{path} looks like a torch.save/pickle file. "
                "gptlib does not unpickle files: "
                "unpickling can run arbitrary code. Convert it with code you trust."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {e}"
        ) from None
    return metadata, tensors


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; other files get a clear error."""
    path = Path(path)
    metadata, tensors = read_safetensors(path)
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
    meta: dict[str, Any] = {}
    for key in ("config", "tied", "train_state", "tokenizer"):
        if key not in metadata:
            raise damaged(path, key, "missing")
        try:
            meta[key] = json.loads(metadata[key])
        except ValueError as e:
            raise damaged(path, key, e) from None
    # the model: a config that builds, and exactly the weights GPT(config) has
    if not isinstance(meta["config"], dict):
        raise damaged(path, "config", "not a JSON object")
    try:
        config = GPTConfig.from_dict(meta["config"])
    except (ValueError, TypeError) as e:
        raise damaged(path, "config", e) from None
    model_state = {
        k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")
    }
    tied = meta["tied"]
    if not isinstance(tied, dict):
        raise damaged(path, "tied", "not a JSON object")
    for alias, source in tied.items():
        if not isinstance(source, str) or f"model.{source}" not in tensors:
            raise damaged(
                path, "tied", f"{alias} is tied to {source!r}, not in the file"
            )
        model_state[alias] = model_state[source]
    check_weights(path, config, model_state)
    # the tokenizer: rebuilt from JSON, and no id beyond the model's vocabulary
    tokenizer = None
    if meta["tokenizer"] is not None:
        try:
            tokenizer = tokenizer_from_dict(meta["tokenizer"])
        except Exception as e:  # each tokenizer class checks its data its own way
            raise damaged(path, "tokenizer", e) from None
        if tokenizer.vocab_size > config.vocab_size:
            raise CheckpointError(
                f"{path}: its tokenizer has {tokenizer.vocab_size} tokens, "
                f"more than the model's vocab_size={config.vocab_size}"
            )
    # the training state: the step, the RNG states, the optimizer's
    train_state = meta["train_state"]
    if not isinstance(train_state, dict):
        raise damaged(path, "train_state", "not a JSON object")
    step = train_state.get("step")
    if not _is_count(step):
        raise damaged(path, "train_state.step", f"{step!r} is not a step number")
    extra = train_state.get("extra", {})
    if not isinstance(extra, dict):
        raise damaged(path, "train_state.extra", "not a JSON object")
    if "rng" not in train_state:
        raise damaged(path, "train_state.rng", "missing")
    rng_state = check_rng_state(path, train_state["rng"], tensors)
    optimizer_state = None
    if "optimizer" in train_state:
        optimizer_state = check_optimizer_state(path, train_state["optimizer"], tensors)
    return Checkpoint(
        config=config,
        model_state=model_state,
        step=step,
        tokenizer=tokenizer,
        optimizer_state=optimizer_state,
        rng_state=rng_state,
        extra=extra,
    )


# --8<-- [end:load]


# --8<-- [start:load_checks]
def damaged(path: Path, field: str, problem: object) -> CheckpointError:
    """The error for a field of the file that cannot be used as it is."""
    if isinstance(problem, KeyError):  # str() of a KeyError is only the key
        problem = f"{problem} is missing"
    return CheckpointError(f"{path} has damaged metadata: {field}: {one_line(problem)}")


def one_line(error: object) -> str:
    """The first line of an error message (PyTorch's can go on with a C++ trace)."""
    return str(error).strip().split("\n")[0]


def check_weights(
    path: Path, config: GPTConfig, weights: dict[str, torch.Tensor]
) -> None:
    """The weights must be the ones GPT(config) has, with the shapes it gives them."""
    # a block has several tensors: a small file cannot make us build a huge model
    if config.n_layer > len(weights):
        raise damaged(
            path, "config", f"n_layer={config.n_layer} for {len(weights)} tensors"
        )
    try:
        with torch.device("meta"):  # shapes only: no memory allocated, no time spent
            expected = GPT(config).state_dict()
    except (RuntimeError, TypeError, OverflowError) as e:  # sizes beyond int64
        raise damaged(path, "config", f"sizes too large ({one_line(e)})") from None
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not hold the weights of its config: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path} does not hold the weights of its config: {name} is "
                f"{tuple(tensor.shape)}, {config} makes it "
                f"{tuple(expected[name].shape)}"
            )
        if not tensor.is_floating_point():
            raise CheckpointError(f"{path}: {name} holds {tensor.dtype}, not floats")


def check_rng_state(
    path: Path, data: Any, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The RNG states, tried on throwaway generators: a bad one fails here, not when a
    resumed run calls set_rng_state."""
    try:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if "rng.torch" not in tensors:
            raise ValueError("the tensor rng.torch is missing")
        state = _rng_from_json(data, tensors)
        random.Random().setstate(state["python"])
        if not isinstance(state["python"][2], float | None):
            raise ValueError("Python's gauss entry is not a number")
        np.random.RandomState().set_state(state["numpy"])
        torch.Generator().set_state(state["torch"])
        for cuda_state in state["cuda"]:
            if cuda_state.dtype != torch.uint8 or cuda_state.dim() != 1:
                raise ValueError("a CUDA state is not a 1-D uint8 tensor")
    except (
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        OverflowError,
        RuntimeError,
    ) as e:
        raise damaged(path, "train_state.rng", e) from None
    return state


def check_optimizer_state(
    path: Path, data: Any, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The optimizer state, put back together after checking its JSON part."""
    try:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        groups, scalars = data["param_groups"], data["scalars"]
        if not isinstance(groups, list) or not isinstance(scalars, dict):
            raise ValueError("param_groups must be a list, scalars an object")
        for group in groups:
            if not isinstance(group, dict):
                raise ValueError("a param group is not a JSON object")
            ids = group["params"]
            if not isinstance(ids, list) or not all(_is_count(i) for i in ids):
                raise ValueError("params must be lists of parameter numbers")
            for key in ("lr", "eps", "weight_decay"):
                if key in group and not _is_number(group[key]):
                    raise ValueError(f"{key} is {group[key]!r}, not a number")
            betas = group.get("betas", [0.9, 0.99])
            if not (isinstance(betas, list) and len(betas) == 2) or not all(
                _is_number(beta) for beta in betas
            ):
                raise ValueError(f"betas is {betas!r}, not two numbers")
        joined = _join_optimizer_state(tensors, data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise damaged(path, "train_state.optimizer", e) from None
    ids = [i for group in groups for i in group["params"]]
    if len(set(ids)) != len(ids) or not joined["state"].keys() <= set(ids):
        raise damaged(
            path,
            "train_state.optimizer",
            "its states and param groups do not number the same parameters",
        )
    return joined


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --8<-- [end:load_checks]


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

# TrainConfig fields that change where or how visibly a run is computed, not the run:
# a resumed run may set them as it likes.
FREE_ON_RESUME = frozenset(
    {"device", "compile", "progress", "log_interval", "eval_interval"}
)


class TrainConfigChangedError(ValueError):
    """A resume with other training settings than the saved run's. `changes` holds
    them as {name: (saved value, new value)}."""

    def __init__(self, path: Path, changes: dict[str, tuple[Any, Any]]):
        self.changes = changes
        listed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
        super().__init__(
            f"{path} was saved by a run with other settings: {listed}. Resume with "
            "the saved settings, or allow_config_change=True to go on with the new ones"
        )


def train_config_changes(
    saved: dict[str, Any],
    config: TrainConfig,
    saved_world_size: int = 1,
    world_size: int = 1,
) -> dict[str, tuple[Any, Any]]:
    """The fields of `config` that differ from `saved` (a TrainConfig as a dict), as
    {name: (saved value, new value)}; FREE_ON_RESUME fields are left out. A dtype
    of "auto" is compared as what it means on this run's device (train saves that).
    A run split over processes (chapter 14) is compared by its global batch: 2
    processes accumulating 1 micro-batch each go on as 1 process accumulating 2."""
    device = get_device(config.device)
    now = {**asdict(config), "dtype": resolve_dtype(device, config.dtype)}
    if saved.get("dtype") == "auto":
        saved = {**saved, "dtype": resolve_dtype(device, "auto")}
    if saved_world_size != 1 or world_size != 1:
        accum = "grad_accum_steps x processes"
        now[accum] = now.pop("grad_accum_steps") * world_size
        if "grad_accum_steps" in saved:
            saved = {**saved, accum: saved["grad_accum_steps"] * saved_world_size}
    return {
        name: (saved[name], value)
        for name, value in now.items()
        if name in saved and name not in FREE_ON_RESUME and saved[name] != value
    }


def saved_world_size(ckpt: Checkpoint, path: Path) -> int:
    """How many processes the saved run was split over (chapter 14); 1 if it does not
    say."""
    count = ckpt.extra.get("world_size", 1)
    if not _is_count(count) or count < 1:
        problem = f"{count!r} is not a number of processes"
        raise damaged(path, "train_state.extra.world_size", problem)
    return count


class RunCheckpoint:
    """The checkpoint of a run, for `train(..., checkpoint=RunCheckpoint(...))`.

    `train` saves the run here at every evaluation, at the end and on Ctrl-C. With
    `resume=True` it first restores the saved run: weights, optimizer, scaler, random
    number generators and step, so the run goes on exactly where it stopped. A run
    with other training settings than the saved one is refused, unless
    `allow_config_change=True`.
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer: Tokenizer | None = None,
        resume: bool = False,
        allow_config_change: bool = False,
    ):
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.resume = resume
        self.allow_config_change = allow_config_change

    def restore(self, state: TrainState) -> None:
        remove_stale_temp_files(self.path)  # left by a save killed in an earlier run
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
        saved = ckpt.extra.get("train_config", {})
        if not isinstance(saved, dict):
            raise damaged(self.path, "train_state.extra.train_config", "not an object")
        changes = train_config_changes(
            saved, state.config, saved_world_size(ckpt, self.path), state.world_size
        )
        if changes and not self.allow_config_change:
            raise TrainConfigChangedError(self.path, changes)
        state.model.load_state_dict(ckpt.model_state)  # checked by load_checkpoint
        # the rest is checked against this run's optimizer and scaler as it loads
        try:
            state.optimizer.load_state_dict(ckpt.optimizer_state)
            check_optimizer_fits(state.optimizer)
            if "scaler" in ckpt.extra:
                check_scaler_state(ckpt.extra["scaler"], state.scaler)
                state.scaler.load_state_dict(ckpt.extra["scaler"])
            # after train() seeded: the next batch is the one due next
            set_rng_state(ckpt.rng_state)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"{self.path} cannot resume this run: {one_line(e)}"
            ) from None
        state.step = ckpt.step

    def save(self, state: TrainState) -> Path:
        extra: dict[str, Any] = {"train_config": asdict(state.config)}
        if state.world_size > 1:  # grad_accum_steps was each process's (chapter 14)
            extra["world_size"] = state.world_size
        if state.scaler.is_enabled():
            extra["scaler"] = state.scaler.state_dict()
        return save_checkpoint(
            self.path, state.model, state.optimizer, state.step, self.tokenizer, extra
        )


def check_optimizer_fits(optimizer: torch.optim.Optimizer) -> None:
    """Each group has every hyper-parameter, and each parameter's state tensors (AdamW's
    moments) have the parameter's shape."""
    for group in optimizer.param_groups:
        missing = sorted(optimizer.defaults.keys() - group.keys())
        if missing:
            raise ValueError(f"a param group of the optimizer has no {missing}")
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.dim() > 0:
                    if value.shape != param.shape:
                        raise ValueError(
                            f"the optimizer's {key} {tuple(value.shape)} does not fit "
                            f"its parameter {tuple(param.shape)}"
                        )


def check_scaler_state(data: Any, scaler: torch.amp.GradScaler) -> None:
    """A float16 run's GradScaler state: the same numbers this scaler keeps."""
    expected = scaler.state_dict()  # empty when the scaler is off: nothing to load
    if expected and not (
        isinstance(data, dict)
        and data.keys() == expected.keys()
        and all(_is_number(v) for v in data.values())
    ):
        raise ValueError(f"the scaler state {data!r} is not a GradScaler's")


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
