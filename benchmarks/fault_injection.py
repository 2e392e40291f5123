"""kill -9 at random moments of a training run that saves at every step, then resume.

Each trial starts `gptlib train` in a fresh folder and kills it with SIGKILL at a random
moment between its first checkpoint and its end (so the kill lands in a step, an
evaluation or the middle of a checkpoint write), and checks what a reader would find:

* the checkpoint loads (never half-written);
* every line of metrics.jsonl parses, but perhaps the last, which the kill cut short;
* `--resume` finishes with exit status 0, leaves no temporary files, and writes metrics
  with no repeated step;
* the final weights equal, bit for bit, those of the same run done without a kill.

Run: `python benchmarks/fault_injection.py [--trials 20]`. Prints a table and writes
benchmarks/results/fault_injection.json.
"""

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gptlib import load_checkpoint

RESULTS = Path(__file__).parent / "results"
CHECKPOINT = "checkpoint.safetensors"
STEPS = 24
TRAIN = [
    sys.executable, "-m", "gptlib", "train", "--preset", "nano",
    "--corpus", "course-en", "--steps", str(STEPS), "--eval-interval", "1",
    "--eval-batches", "2", "--no-progress",
]  # fmt: skip


# one thread: several of these processes may run side by side
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GPTLIB_DEVICE": "cpu"}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )


def temp_files(run_dir: Path) -> list[Path]:
    """What an unfinished save leaves: .checkpoint.safetensors.PID.tmp and the like."""
    return list(run_dir.glob(".*.tmp")) if run_dir.is_dir() else []


def start_training(folder: Path) -> subprocess.Popen:
    """Start the run in `folder`; return once it has saved its first checkpoint (or
    ended)."""
    proc = subprocess.Popen(
        TRAIN + ["--out", "run"],
        cwd=folder,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not (folder / "run" / CHECKPOINT).exists() and proc.poll() is None:
        time.sleep(0.005)
    return proc


def trial(seed: int, reference: dict[str, torch.Tensor], max_delay: float) -> dict:
    """Kill the run at a random moment between its first save and `max_delay` seconds
    later, then resume it."""
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="fault-"))
    proc = start_training(folder)
    delay = rng.uniform(0.0, max_delay)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt_path = folder / "run" / CHECKPOINT
    outcome = {
        "seed": seed,
        "killed_after_s": round(delay, 2),
        "temp_files_left": len(temp_files(folder / "run")),  # a kill mid-save
        "killed_at_step": load_checkpoint(ckpt_path).step,  # it must load
    }
    metrics = folder / "run" / "metrics.jsonl"
    if metrics.exists():  # every line parses, but the one a kill may have cut short
        lines = metrics.read_text().splitlines()
        outcome["metrics_cut_short"] = 0
        for i, line in enumerate(lines):
            try:
                json.loads(line)
            except ValueError:
                assert i == len(lines) - 1, f"line {i + 1} of {len(lines)} is broken"
                outcome["metrics_cut_short"] = 1
    done = run(TRAIN + ["--out", "run", "--resume"], folder)
    outcome["resumed_exit"] = done.returncode
    final = load_checkpoint(ckpt_path)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    outcome["final_step"] = final.step
    outcome["temp_files_after"] = len(temp_files(folder / "run"))
    # each kind of record (training step, evaluation) once per step, in order
    outcome["metrics_unrepeated"] = all(
        steps == sorted(set(steps))
        for steps in (
            [r["step"] for r in records if key in r] for key in ("loss", "val_loss")
        )
    )
    outcome["bit_exact"] = all(
        torch.equal(t, reference[name]) for name, t in final.model_state.items()
    )
    outcome["ok"] = (
        done.returncode == 0
        and final.step == STEPS
        and outcome["temp_files_after"] == 0
        and outcome["metrics_unrepeated"]
        and outcome["bit_exact"]
    )
    if not outcome["ok"]:
        outcome["stderr"] = done.stderr[-500:]
    shutil.rmtree(folder, ignore_errors=True)
    return outcome


def reference_run() -> tuple[dict[str, torch.Tensor], float]:
    """The final weights of the run never killed, and the seconds from its first save
    to its end: the window in which the trials kill."""
    folder = Path(tempfile.mkdtemp(prefix="fault-ref-"))
    proc = start_training(folder)
    first_save = time.monotonic()
    assert proc.wait() == 0, "the uninterrupted run failed"
    seconds = time.monotonic() - first_save
    reference = load_checkpoint(folder / "run" / CHECKPOINT).model_state
    shutil.rmtree(folder)
    return reference, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    reference, seconds = reference_run()
    print(
        f"uninterrupted run: {STEPS} steps, a save every step; {seconds:.2f} s from "
        "the first save to the end, the window in which each trial kills"
    )
    outcomes = [trial(seed, reference, seconds) for seed in range(args.trials)]
    print(f"{'trial':>5} {'kill after':>10} {'saved step':>10} {'mid-save':>8} "
          f"{'resume':>6} {'final':>5} {'bit-exact':>9} {'ok':>4}")  # fmt: skip
    for o in outcomes:
        print(
            f"{o['seed']:>5} {o['killed_after_s']:>9.2f}s {o['killed_at_step']:>10} "
            f"{'yes' if o['temp_files_left'] else 'no':>8} {o['resumed_exit']:>6} "
            f"{o['final_step']:>5} {o['bit_exact']!s:>9} "
            f"{'yes' if o['ok'] else 'NO':>4}"
        )
    passed = sum(o["ok"] for o in outcomes)
    print(f"{passed}/{len(outcomes)} trials recovered bit-exactly")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "fault_injection.json"
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "torch": torch.__version__,
                "steps": STEPS,
                "kill_window_s": round(seconds, 2),
                "trials": outcomes,
                "recovered": passed,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    sys.exit(0 if passed == len(outcomes) else 1)


if __name__ == "__main__":
    main()
