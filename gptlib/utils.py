"""Small tools used everywhere in the course: pick a device, seed every RNG, look at a
tensor, time a piece of code.

Chapter 01 (Setup & tools) builds this file.
"""

# --8<-- [start:imports]
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

# --8<-- [end:imports]

# --8<-- [start:get_device]
DEVICE_ENV_VAR = "GPTLIB_DEVICE"


class DeviceError(RuntimeError):
    """A device was asked for that is not there, or that does not exist."""


def get_device(preferred: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple's MPS, then the CPU.

    `preferred` (or the environment variable GPTLIB_DEVICE) overrides the choice,
    e.g. "cpu" to debug on a machine with a GPU. Asking for a device that is not
    there is an error, not a silent fallback.
    """
    choice = preferred or os.environ.get(DEVICE_ENV_VAR)
    if choice:
        source = "" if preferred else f" (from ${DEVICE_ENV_VAR})"
        try:
            device = torch.device(choice)
        except RuntimeError:
            raise DeviceError(
                f"unknown device {choice!r}{source}: use cpu, cuda, cuda:N or mps"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError(
                f"device {choice!r} was asked for{source}, "
                "but CUDA is not available here"
            )
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise DeviceError(
                f"device {choice!r} was asked for{source}, but there are "
                f"{torch.cuda.device_count()} GPU(s)"
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise DeviceError(
                f"device {choice!r} was asked for{source}, "
                "but MPS is not available here"
            )
        if device.type not in ("cpu", "cuda", "mps"):
            raise DeviceError(
                f"device {choice!r}{source} is not one gptlib trains on: "
                "use cpu, cuda, cuda:N or mps"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --8<-- [end:get_device]


# --8<-- [start:seed_everything]
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's random number generators (all GPUs too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# --8<-- [end:seed_everything]


# --8<-- [start:inspect]
def inspect(tensor: torch.Tensor, name: str = "tensor") -> str:
    """Print (and return) the facts about a tensor that most bugs come from."""
    grad_fn = type(tensor.grad_fn).__name__ if tensor.grad_fn is not None else None
    line = (
        f"{name}: shape={tuple(tensor.shape)} dtype={tensor.dtype} "
        f"device={tensor.device} requires_grad={tensor.requires_grad} grad_fn={grad_fn}"
    )
    print(line)
    return line


# --8<-- [end:inspect]


# --8<-- [start:time_block]
@dataclass
class Timing:
    """What `time_block` measured; `seconds` is filled in when the block ends."""

    label: str
    seconds: float = float("nan")


@contextmanager
def time_block(
    label: str, device: torch.device | str | None = None, verbose: bool = True
) -> Iterator[Timing]:
    """Time the code inside a `with` block.

    GPU work is asynchronous: a kernel is queued and Python moves on. So on a GPU
    we synchronise before starting and before stopping the clock, otherwise we
    would time the queueing, not the work.
    """
    kind = torch.device(device).type if device is not None else get_device().type
    synchronizers = {"cuda": torch.cuda.synchronize, "mps": torch.mps.synchronize}
    synchronize = synchronizers.get(kind, lambda: None)
    timing = Timing(label)
    synchronize()
    start = time.perf_counter()
    try:
        yield timing
    finally:
        synchronize()
        timing.seconds = time.perf_counter() - start
        if verbose:
            print(f"{label}: {timing.seconds * 1000:.1f} ms")


# --8<-- [end:time_block]
