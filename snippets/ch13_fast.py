"""Chapter 13 (Making it fast): batches from token files through a `DataLoader`.

Worker processes must import what they run, so the dataset lives in this file rather
than on the page (a class defined in a notebook or a pasted session cannot be sent to
a worker on macOS and Windows, which start workers with spawn).

Run it: `python snippets/ch13_fast.py` times the loader with 0 and 2 workers. The page
docs/13-making-it-fast.md includes its sections.
"""

# --8<-- [start:token_windows]
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


class TokenWindows(Dataset):
    """The windows of a token file (`prepare_token_files`) as a map-style dataset:
    item i is the window starting at token i, as (x, y), y shifted by one."""

    def __init__(self, path: str, block_size: int, dtype: np.dtype = np.uint16):
        self.path, self.block_size, self.dtype = path, block_size, dtype
        self.tokens = np.memmap(path, dtype=dtype, mode="r")

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        window = torch.from_numpy(
            self.tokens[i : i + self.block_size + 1].astype(np.int64)
        )  # (T + 1,)
        return window[:-1], window[1:]  # (T,) each


def batches(
    dataset: TokenWindows,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
) -> DataLoader:
    """Random windows (with replacement, as `get_batch` draws them), batched by
    `num_workers` processes that read ahead of the training loop."""
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=10**9,  # as many as the loop asks for
        generator=torch.Generator().manual_seed(seed),
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,  # page-locked batches: faster, asynchronous GPU copies
        persistent_workers=num_workers > 0,
    )


def batches_per_second(loader: DataLoader, n: int = 200) -> float:
    """How many batches per second `loader` delivers (after its first batch, which
    pays for starting the workers)."""
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - start)


# --8<-- [end:token_windows]


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    from gptlib import CharTokenizer, load_corpus, prepare_token_files

    text = load_corpus("course-en")
    with tempfile.TemporaryDirectory() as folder:
        prepare_token_files(text, CharTokenizer.train(text), folder)
        dataset = TokenWindows(str(Path(folder) / "train.bin"), block_size=64)
        for workers in (0, 2):
            speed = batches_per_second(batches(dataset, 32, num_workers=workers))
            print(f"{workers} workers: {speed:,.0f} batches/s")
