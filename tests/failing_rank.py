"""`gptlib train` in which the process of rank 1 raises at its second step, for
tests/test_distributed.py: run as `torchrun ... -m failing_rank train ...` (tests/ on
PYTHONPATH)."""

import os
import sys

import gptlib.training
from gptlib.cli import main

real_train_step = gptlib.training.train_step
steps = 0


def failing_train_step(*args, **kwargs):
    global steps
    steps += 1
    if os.environ["RANK"] == "1" and steps == 2:
        raise RuntimeError("rank 1 fails on purpose")
    return real_train_step(*args, **kwargs)


gptlib.training.train_step = failing_train_step
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
