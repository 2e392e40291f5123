"""A full disk, for real: `train`, `prepare`, `finetune` and a tokenizer save on a small
tmpfs that fills up, and what a reader finds afterwards.

The test runs this file as a script inside a private mount namespace
(`unshare --map-root-user --mount`), where a 64 MiB tmpfs is mounted over a temporary
folder: nothing outside the test sees the mount, and no root rights are needed where
unprivileged user namespaces are allowed. The script fills the disk with a ballast file
up to a few kilobytes, runs each command in-process (one torch import for all), and
prints what it found as JSON; the test checks it. Every failure must be: exit status 1,
one line on stderr naming the file and saying the earlier files are unchanged, the
earlier files byte-identical, and no temporary files left behind.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DISK_SIZE = "64m"
TRAIN = (
    "train --preset nano --corpus course-en --steps 4 --eval-interval 2 --no-progress"
)


def can_mount_tmpfs(folder: Path) -> str | None:
    """None when a private tmpfs can be mounted here, else why not."""
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size=1m tmpfs '{folder}'"],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"cannot mount a private tmpfs: {probe.stderr.strip()}"
    return None


def test_a_full_disk_loses_nothing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    why_not = can_mount_tmpfs(disk)
    if why_not is not None:
        pytest.skip(why_not)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTLIB_DEVICE": "cpu"}
    script = (
        f"mount -t tmpfs -o size={DISK_SIZE} tmpfs '{disk}' && "
        f"'{sys.executable}' '{__file__}' '{disk}'"
    )
    done = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])

    # each command on a full disk: status 1, one line, earlier files unchanged
    for name in ("train", "prepare again", "prepare new", "finetune", "tokenizer"):
        case = found[name]
        assert case["status"] == 1, (name, case)
        assert len(case["stderr"]) == 1, (name, case)
        assert "No space left on device" in case["stderr"][0], (name, case)
        assert "unchanged" in case["stderr"][0], (name, case)
        assert case["unchanged"], (name, case)
        assert case["temp_files"] == [], (name, case)
    assert found["prepare new"]["files"] == []  # nothing half-written
    assert found["finetune"]["files"] == []
    # with space again, the interrupted run resumes and finishes
    assert found["resumed"] == {"status": 0, "step": 4}


# --- the script, run inside the namespace ------------------------------------------


def fill(disk: Path, leave: int) -> None:
    """Fill the disk with a ballast file, then free `leave` bytes of it."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    os.truncate(ballast, max(0, ballast.stat().st_size - leave))


def empty(disk: Path) -> None:
    (disk / "ballast").unlink(missing_ok=True)


def files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temp_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*.tmp")]


def cli(line: str) -> tuple[int, list[str]]:
    from gptlib.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(line.split())
    return status, err.getvalue().strip().splitlines()


def on_full_disk(
    disk: Path, folder: Path, leave: int, action, keep: list[str] | None = None
) -> dict:
    """Run `action` (status, stderr lines) with `leave` bytes free. Are the files of
    `folder` (or only those named in `keep`) as they were?"""
    before = files(folder) if folder.exists() else {}
    kept = before if keep is None else {k: before[k] for k in keep}
    fill(disk, leave)
    try:
        status, stderr = action()
    finally:
        empty(disk)
    after = files(folder) if folder.exists() else {}
    return {
        "status": status,
        "stderr": stderr,
        "unchanged": {k: after.get(k) for k in kept} == kept,
        "files": sorted(after),
        "temp_files": temp_files(disk),
    }


def main(disk: Path) -> None:
    import torch

    from gptlib import BPETokenizer, CharTokenizer, load_checkpoint

    torch.set_num_threads(1)
    os.chdir(disk)
    found = {}
    run = disk / "run"
    assert cli(f"{TRAIN} --out run --stop-at 2")[0] == 0
    size = (run / "checkpoint.safetensors").stat().st_size
    # train: half a checkpoint of room, so the save at step 4 fails; the metrics, a few
    # hundred bytes, still fit
    found["train"] = on_full_disk(
        disk,
        run,
        size // 2,
        lambda: cli(f"{TRAIN} --out run --resume"),
        keep=["checkpoint.safetensors"],  # metrics.jsonl gets the steps after 2
    )
    status, _ = cli(f"{TRAIN} --out run --resume")
    found["resumed"] = {
        "status": status,
        "step": load_checkpoint(run / "checkpoint.safetensors").step,
    }

    assert cli("prepare --corpus course-en --out toks")[0] == 0
    found["prepare again"] = on_full_disk(
        disk, disk / "toks", 8192, lambda: cli("prepare --corpus course --out toks")
    )
    found["prepare new"] = on_full_disk(
        disk, disk / "new", 8192, lambda: cli("prepare --corpus course --out new")
    )
    found["finetune"] = on_full_disk(
        disk,
        disk / "ft",
        16384,
        lambda: cli(
            "finetune --from run --task continue --steps 1 --no-progress --out ft"
        ),
    )

    tokenizer_file = disk / "tokenizer.json"
    CharTokenizer.train("abc").save(tokenizer_file)
    big = BPETokenizer.train("the quick brown fox jumps over the lazy dog " * 50, 300)

    def save_big() -> tuple[int, list[str]]:
        try:
            big.save(tokenizer_file)
        except OSError as e:
            return 1, [str(e)]
        return 0, []

    found["tokenizer"] = on_full_disk(disk, tokenizer_file.parent, 0, save_big)
    print(json.dumps(found))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
