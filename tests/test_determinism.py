"""The same seed gives the same numbers on CPU, in another process too: the losses of a
training run, its final weights, and the text sampled from it.

Two processes each train the same run and sample from it; everything they write must
be equal, bit for bit. (On a GPU some kernels are not deterministic: see chapter 15,
"Two runs, two results".)
"""

import hashlib
import json
import os
import subprocess
import sys

from gptlib import load_checkpoint

TRAIN = (
    "train --preset nano --corpus course-en --steps 20 --eval-interval 10 "
    "--eval-batches 4 --no-progress --out run"
)
SAMPLE = "sample --checkpoint run --prompt The --max-new-tokens 40 --seed 7"


def gptlib(line: str, cwd) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTLIB_DEVICE": "cpu"}
    done = subprocess.run(
        [sys.executable, "-m", "gptlib", *line.split()],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def one_process(folder) -> dict:
    folder.mkdir()
    gptlib(TRAIN, folder)
    text = gptlib(SAMPLE, folder)
    records = [
        json.loads(line)
        for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    weights = load_checkpoint(folder / "run" / "checkpoint.safetensors").model_state
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(weights[name].numpy().tobytes())
    return {
        "losses": [r.get("loss", r.get("val_loss")) for r in records],
        "weights": digest.hexdigest(),
        "sample": text,
    }


def test_same_seed_same_numbers_in_two_processes(tmp_path):
    first = one_process(tmp_path / "first")
    second = one_process(tmp_path / "second")
    assert len(first["losses"]) > 3 and first["sample"].startswith("The")
    assert first == second
