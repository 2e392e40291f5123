"""Data parallelism: one training run spread over several processes (one per GPU, or a
few CPU processes) with PyTorch's DistributedDataParallel, launched by `torchrun`.

Chapter 14 (Scaling out) builds this file. `train` takes a `DataParallel` through its
`parallel` argument; gptlib.training never imports this module.

    torchrun --nproc_per_node=2 -m gptlib.distributed   # can the processes talk?
    torchrun --nproc_per_node=2 -m gptlib train --preset nano
"""

# --8<-- [start:imports]
import contextlib
import gc
import hashlib
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gptlib.data import get_batch, random_starts
from gptlib.utils import get_device

# --8<-- [end:imports]


# --8<-- [start:environment]
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """True in a process that torchrun started: it sets RANK, WORLD_SIZE and the rest
    in each process's environment."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def world_size() -> int:
    """How many processes this run has: WORLD_SIZE under torchrun, else 1."""
    return int(os.environ["WORLD_SIZE"]) if under_torchrun() else 1


# --8<-- [end:environment]


# --8<-- [start:all_reduce]
def check_processes(device: str | None = None) -> list[float]:
    """Join the process group, all-reduce each rank's number, print what each rank
    holds before and after, and leave. Run it under torchrun: it says whether the
    processes (GPUs, machines) of a job can talk to each other, before a long run."""
    with data_parallel(device) as parallel:
        rank = parallel.rank if parallel else 0
        device = parallel.device if parallel else get_device(device)
        mine = torch.tensor([float(rank), 1.0], device=device)  # (rank, one)
        summed = mine.clone()
        if parallel is not None:
            dist.all_reduce(summed, op=dist.ReduceOp.SUM)  # every rank gets the sum
        line = f"rank {rank}: {mine.tolist()} -> all_reduce -> {summed.tolist()}\n"
        sys.stdout.write(line)  # in one piece: the processes share the terminal
        return summed.tolist()


# --8<-- [end:all_reduce]


# --8<-- [start:data_parallel_class]
def seed_for(*numbers: int) -> int:
    """A 64-bit seed that depends on every one of `numbers` (seed, step, rank).

    >>> seed_for(1337, 5, 0) == seed_for(1337, 5, 0)  # the same numbers: the same seed
    True
    >>> len({seed_for(1337, 5, rank) for rank in range(8)})  # one per process
    8
    """
    digest = hashlib.sha256("/".join(map(str, numbers)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class DataParallel:
    """This process's place in a data-parallel run: what `train(..., parallel=...)`
    needs to split each step over the processes.

    Every step has one global batch of `world_size * grad_accum_steps` micro-batches:
    exactly the micro-batches one process would draw with `grad_accum_steps *
    world_size` (the random generator of each process is kept in step with the
    others'), process r taking its share. Dropout draws from a generator of its own
    per process and step, so the processes drop different units.
    """

    rank: int  # this process's number, 0 .. world_size - 1
    world_size: int
    device: torch.device  # cuda:LOCAL_RANK with GPUs, else the CPU

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, shows progress and saves."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around `model`: it copies rank 0's weights to every
        process now, and averages the gradients over the processes in backward."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def batches(
        self,
        data: torch.Tensor | np.ndarray,
        batch_size: int,
        block_size: int,
        grad_accum_steps: int,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This process's micro-batches of the step. Every process draws the starts
        of all of the global batch's windows, in the order one process would, and
        reads only its own `grad_accum_steps` micro-batches: from token files on disk,
        each process reads its part."""
        mine = range(self.rank * grad_accum_steps, (self.rank + 1) * grad_accum_steps)
        batches = []
        for i in range(self.world_size * grad_accum_steps):
            if i in mine:
                batches.append(get_batch(data, batch_size, block_size, self.device))
            else:  # the same random numbers get_batch draws, so all stay in step
                random_starts(len(data), batch_size, block_size)
        return batches

    @contextlib.contextmanager
    def own_randomness(self, seed: int, step: int) -> Iterator[None]:
        """Random numbers of this process and step for what runs inside (dropout); the
        generator the batches come from is left as it was, in step with the others."""
        forked = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed_for(seed, step, self.rank))
            yield

    def mean(self, value: float) -> float:
        """The mean of `value` over the processes (each passes its own)."""
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.item() / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every process if `flag` is true on at least one: a Ctrl-C that
        reached one process stops them all after the same step."""
        flags = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags.item())


# --8<-- [end:data_parallel_class]


# --8<-- [start:data_parallel]
@contextlib.contextmanager
def data_parallel(
    device: str | None = None, timeout_s: float = 600.0
) -> Iterator[DataParallel | None]:
    """Under torchrun: join the process group and yield this process's DataParallel;
    leave the group at the end, whether the block ends, fails or is interrupted.
    Elsewhere: yield None, and `train(..., parallel=None)` trains in this process. So
    one script runs both ways: `python train.py` and `torchrun ... train.py`.

    GPUs talk through NCCL, one GPU per process (LOCAL_RANK picks it); CPUs through
    gloo. A process that waits longer than `timeout_s` for the others fails instead of
    hanging forever.
    """
    if not under_torchrun():
        yield None
        return
    device = get_device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"data-parallel training runs on CUDA or a CPU, not {device}")
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield DataParallel(dist.get_rank(), dist.get_world_size(), device)
    except BaseException as error:
        # Free the DDP wrapper that the failed frames still hold while the group is
        # alive. Freed later, it would take the group down with it, and that can
        # deadlock (gloo's threads wait for the GIL that the freeing thread holds).
        traceback.clear_frames(error.__traceback__)
        gc.collect()
        raise
    finally:
        dist.destroy_process_group()


# --8<-- [end:data_parallel]


if __name__ == "__main__":
    check_processes()
