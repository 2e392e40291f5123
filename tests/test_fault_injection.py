"""Runs killed and interrupted the hard way, in real processes.

* kill -9 at random moments of a run that saves at every step: three trials of
  benchmarks/fault_injection.py (which runs twenty and prints a table), each resumed to
  the end, bit for bit the weights of a run never killed;
* Ctrl-C twice in quick succession: exit status 130, one line, the last checkpoint
  intact, and the run resumes from it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pagecode
import pytest

from gptlib import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
fault_injection = pagecode.load_module("benchmarks/fault_injection.py")

ENV = fault_injection.ENV


@pytest.fixture(scope="module")
def reference() -> tuple[dict, float]:
    """The final weights of the run never killed, and how long it took."""
    return fault_injection.reference_run()


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_then_resume_is_bit_exact(reference, seed):
    weights, seconds = reference
    outcome = fault_injection.trial(seed, weights, seconds)
    assert outcome["ok"], outcome


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a child process")
def test_ctrl_c_twice_aborts_at_once_and_keeps_the_last_checkpoint(tmp_path):
    # steps of ~0.1 s (a wider model, a larger batch), so that both presses land in
    # the step after the first save
    line = [sys.executable, "-m", "gptlib", "train", "--preset", "nano",
            "--n-embd", "256", "--batch-size", "32", "--corpus", "course-en",
            "--steps", "100000", "--eval-interval", "10", "--eval-batches", "1",
            "--no-progress", "--out", "run"]  # fmt: skip
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    proc = subprocess.Popen(
        line,
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C as in a terminal, even where these tests run in the background (a
        # shell without job control starts background commands with SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None:  # the first save, step 10
        assert time.monotonic() < deadline, "no checkpoint after 2 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    # The second press only once the first was handled: two signals sent while the
    # process waits for a core (a busy machine) arrive as one.
    seen = b""
    while b"press again to abort now" not in seen:
        printed = proc.stdout.readline()
        assert printed, f"the first Ctrl-C was not acknowledged: {seen.decode()}"
        seen += printed
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert [x for x in err.decode().splitlines() if x.strip()] == [
        "gptlib train: interrupted"
    ]
    step = load_checkpoint(checkpoint).step  # whole, and not saved again
    assert step == 10
    assert list((tmp_path / "run").glob(".*.tmp")) == []
    for record in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        json.loads(record)
    resumed = subprocess.run(
        line + ["--resume", "--stop-at", str(step + 10)],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(checkpoint).step == step + 10
