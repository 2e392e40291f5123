"""Data-parallel training (gptlib.distributed, chapter 14): real torchrun runs of two
CPU processes talking through gloo, against one process accumulating the same global
batch; resuming under one and two processes; a failing process and a Ctrl-C ending the
whole job; and the pieces of DataParallel on their own, in this process."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptlib import (
    GPT,
    CharTokenizer,
    CheckpointError,
    RunCheckpoint,
    TrainConfig,
    get_batch,
    load_checkpoint,
    load_corpus,
    prepare_token_files,
    preset_config,
    train,
)
from gptlib.checkpoint import train_config_changes
from gptlib.cli import main, resume_command
from gptlib.distributed import DataParallel, data_parallel, seed_for, under_torchrun
from gptlib.training import read_metrics

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
# a tiny model and run: the cost of a torchrun test is starting its processes
MODEL = "--preset nano --n-layer 2 --n-head 2 --n-embd 32 --block-size 32"
RUN = "--steps 6 --batch-size 4 --eval-interval 3 --eval-batches 2 --log-interval 1"
FLAGS = f"{MODEL} {RUN} --no-progress --device cpu".split()
TIMEOUT_S = 180  # a hang fails the test instead of the suite
TOLERANCE = 1e-6  # the weights of the two runs; measured: 0.0 (bit for bit)


def torchrun_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GPTLIB_DEVICE"}
    env["TMPDIR"] = str(tmp)  # torchrun's log folders go with the test's files
    # two processes on two cores: one thread each (more would slow both down)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # tests/failing_rank.py is run as a module
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE), env.get("PYTHONPATH")])
    )
    return env


def start_torchrun(
    processes: int, *args: str, cwd: Path, module: str = "gptlib"
) -> subprocess.Popen:
    """`torchrun --nproc_per_node=N -m MODULE ARGS` on the CPU, started."""
    command = [*TORCHRUN, f"--nproc_per_node={processes}", "-m", module, *args]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=torchrun_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(job: subprocess.Popen, cwd: Path) -> subprocess.CompletedProcess:
    """Wait for a job, bounded in time: one that hangs is killed, its processes too
    (torchrun starts each in a session of its own, which killing torchrun misses)."""
    with job:
        try:
            stdout, stderr = job.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_processes_of(cwd)
            job.kill()
            raise
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def torchrun(
    processes: int, *args: str, cwd: Path, module: str = "gptlib"
) -> subprocess.CompletedProcess:
    return finish(start_torchrun(processes, *args, cwd=cwd, module=module), cwd)


def kill_processes_of(tmp: Path) -> None:
    """Kill every process whose environment has TMPDIR=tmp: the job's (Linux)."""
    marker = f"TMPDIR={tmp}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state


def max_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Token files, a 2-process run stopped at step 3 of 6 (its checkpoint copied
    aside before anything resumes it), and the 1-process runs to compare it with."""
    root = tmp_path_factory.mktemp("ddp")
    text = load_corpus("course-en")[:60_000]
    prepare_token_files(text, CharTokenizer.train(text), root / "data")
    data = ["--data", str(root / "data")]
    done = torchrun(
        2, "train", *data, *FLAGS, "--stop-at", "3", "--out", "two", cwd=root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "two.out").write_text(done.stdout)
    (root / "stopped").mkdir()
    stopped = root / "two" / "checkpoint.safetensors"
    (root / "stopped" / "checkpoint.safetensors").write_bytes(stopped.read_bytes())
    with contextlib.chdir(root):  # one process, accumulating 2 micro-batches
        one = [*data, *FLAGS, "--grad-accum-steps", "2"]
        assert main(["train", *one, "--stop-at", "3", "--out", "one-3"]) == 0
        assert main(["train", *one, "--out", "one-6"]) == 0
    return root


def test_two_processes_equal_one_process_accumulating_the_same_batch(runs):
    """After 3 steps, 2 processes x 1 micro-batch have the weights of 1 process x 2
    micro-batches (the global batch is the same 8 windows)."""
    two, one = runs / "stopped/checkpoint.safetensors", runs / "one-3"
    difference = max_difference(two, one / "checkpoint.safetensors")
    print(f"max |w_2proc - w_1proc| after 3 steps: {difference:.1e}")
    assert difference <= TOLERANCE
    assert (
        "2 processes x 128 tokens = a global batch of 256 tokens"
        in (runs / "two.out").read_text()
    )
    # and the weights did move: the comparison is not of two untrained models
    torch.manual_seed(1337)
    config = load_checkpoint(two).config
    untouched = GPT(config).state_dict()
    assert any(not torch.equal(untouched[k], w) for k, w in weights(two).items())


def test_only_rank_0_writes_and_the_checkpoint_is_a_plain_models(runs):
    saved = load_checkpoint(runs / "stopped/checkpoint.safetensors")
    assert not any(k.startswith("module.") for k in saved.model_state)
    assert saved.step == 3 and saved.extra["world_size"] == 2
    assert saved.extra["train_config"]["grad_accum_steps"] == 1
    # each record once (a second process writing the log would double them): the
    # evaluation at step 0, the loss of steps 1, 2 and 3, the evaluation at step 3
    log = read_metrics(runs / "two/metrics.jsonl")
    assert [(r["step"], "val_loss" in r) for r in log] == [
        (0, True),
        (1, False),
        (2, False),
        (3, False),
        (3, True),
    ]
    # a single process loads it as it is
    model = GPT(saved.config)
    model.load_state_dict(saved.model_state)
    stdout = (runs / "two.out").read_text()
    assert stdout.count("stopped at step 3") == 1  # printed by rank 0 only
    assert "torchrun --standalone --nproc_per_node=2 -m gptlib train" in stdout


def test_resume_under_two_and_under_one_process(runs):
    """The checkpoint of the 2-process run goes on under 2 processes (torchrun) and
    under 1 (plain gptlib, accumulating 2): both end where the uninterrupted
    1-process run ended."""
    data = ["--data", str(runs / "data")]
    done = torchrun(2, "train", *data, *FLAGS, "--out", "two", "--resume", cwd=runs)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 6: train loss" in done.stdout
    end = runs / "one-6/checkpoint.safetensors"
    assert max_difference(runs / "two/checkpoint.safetensors", end) <= TOLERANCE

    (runs / "one-from-two").mkdir()
    stopped = runs / "stopped/checkpoint.safetensors"
    (runs / "one-from-two/checkpoint.safetensors").write_bytes(stopped.read_bytes())
    with contextlib.chdir(runs):
        flags = [*data, *FLAGS, "--out", "one-from-two", "--resume"]
        # the same global batch needs 2 micro-batches in one process ...
        assert main(["train", *flags]) == 2
        assert main(["train", *flags, "--grad-accum-steps", "2"]) == 0
    resumed = runs / "one-from-two/checkpoint.safetensors"
    assert max_difference(resumed, end) <= TOLERANCE
    assert "world_size" not in load_checkpoint(resumed).extra


def test_a_one_process_checkpoint_resumes_under_two_processes(runs):
    """And the other way: the 1-process run stopped at step 3 goes on under torchrun."""
    (runs / "two-from-one").mkdir()
    stopped = runs / "one-3/checkpoint.safetensors"
    (runs / "two-from-one/checkpoint.safetensors").write_bytes(stopped.read_bytes())
    data = ["--data", str(runs / "data")]
    flags = [*data, *FLAGS, "--out", "two-from-one", "--resume"]
    done = torchrun(2, "train", *flags, cwd=runs)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = runs / "two-from-one/checkpoint.safetensors"
    end = runs / "one-6/checkpoint.safetensors"
    assert max_difference(resumed, end) <= TOLERANCE
    assert load_checkpoint(resumed).extra["world_size"] == 2


def test_a_failing_process_ends_the_whole_job(runs, tmp_path):
    """One process raises at its second step while the other waits for it in an
    all-reduce: torchrun stops both, says which failed, and exits non-zero."""
    data = ["--data", str(runs / "data")]
    start = time.perf_counter()
    done = torchrun(
        2, "train", *data, *FLAGS, "--out", "f", cwd=tmp_path, module="failing_rank"
    )
    seconds = time.perf_counter() - start
    print(f"failing job ended in {seconds:.1f} s with exit status {done.returncode}")
    assert done.returncode != 0
    assert "gptlib train (rank 1): error: unexpected RuntimeError: rank 1 fails" in (
        done.stderr
    )
    assert "Root Cause" in done.stderr and "rank      : 1" in done.stderr
    assert seconds < 60  # not the process group's 10-minute timeout


def test_ctrl_c_stops_every_process_after_the_same_step_and_saves(runs, tmp_path):
    data = ["--data", str(runs / "data")]
    flags = [*data, *MODEL.split(), "--steps", "100000", "--eval-interval", "1000"]
    flags += ["--eval-batches", "2", "--log-interval", "1", "--no-progress"]
    job = start_torchrun(2, "train", *flags, "--device", "cpu", cwd=tmp_path)
    # a step's loss in the log: both processes are in the loop, with their Ctrl-C
    # handlers (the loss is averaged over them)
    log = tmp_path / "runs/nano/metrics.jsonl"
    deadline = time.monotonic() + TIMEOUT_S
    while not (log.exists() and '"loss"' in log.read_text()):
        assert job.poll() is None and time.monotonic() < deadline, "no training step"
        time.sleep(0.1)
    job.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
    done = finish(job, tmp_path)
    stdout, stderr = done.stdout, done.stderr
    assert stdout.count("Ctrl-C: stopping after this step") == 2  # both processes
    assert "stopped at step" in stdout, stderr[-3000:]
    step = int(stdout.split("stopped at step ")[1].split(";")[0])
    saved = load_checkpoint(tmp_path / "runs/nano/checkpoint.safetensors")
    assert saved.step == step > 0


# --- the pieces, in this process --------------------------------------------------


def test_outside_torchrun_data_parallel_is_none(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not under_torchrun()
    with data_parallel() as parallel:
        assert parallel is None


def test_the_ranks_share_out_the_batches_one_process_would_draw():
    data = torch.arange(1000)
    torch.manual_seed(0)
    single = [get_batch(data, 4, 8) for _ in range(6)]  # 1 process, accumulating 6
    shares = []
    for rank in range(3):  # 3 processes accumulating 2, from the same seed
        torch.manual_seed(0)
        parallel = DataParallel(rank, 3, torch.device("cpu"))
        shares += parallel.batches(data, 4, 8, 2)
    assert len(shares) == 6
    for (x, y), (sx, sy) in zip(single, shares):
        assert torch.equal(x, sx) and torch.equal(y, sy)
    # and the generator ends where the single process's does: the next step agrees
    torch.manual_seed(0)
    DataParallel(1, 3, torch.device("cpu")).batches(data, 4, 8, 2)
    after = torch.get_rng_state()
    torch.manual_seed(0)
    [get_batch(data, 4, 8) for _ in range(6)]
    assert torch.equal(after, torch.get_rng_state())


def test_own_randomness_differs_by_rank_and_leaves_the_shared_generator():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    drawn = []
    for rank in (0, 1):
        with DataParallel(rank, 2, torch.device("cpu")).own_randomness(1337, 5):
            drawn.append(torch.rand(4))
    assert not torch.equal(drawn[0], drawn[1])
    assert torch.equal(before, torch.get_rng_state())
    assert seed_for(1337, 5, 0) == seed_for(1337, 5, 0) != seed_for(1337, 6, 0)


class OtherRank:
    """A `Parallel` that is not the main process, with no others to talk to."""

    rank, world_size, device, is_main = 1, 2, torch.device("cpu"), False

    def wrap(self, model):
        return model

    def batches(self, data, batch_size, block_size, grad_accum_steps):
        return [
            get_batch(data, batch_size, block_size) for _ in range(grad_accum_steps)
        ]

    def own_randomness(self, seed, step):
        return contextlib.nullcontext()

    def mean(self, value):
        return value

    def any(self, flag):
        return flag


def test_a_process_that_is_not_rank_0_writes_nothing(tmp_path):
    torch.manual_seed(0)
    model = GPT(preset_config("nano", vocab_size=16, n_layer=1, block_size=8))
    data = torch.randint(0, 16, (200,))
    config = TrainConfig(max_steps=3, eval_interval=1, eval_batches=1, progress=False)
    checkpoint = RunCheckpoint(tmp_path / "ckpt.safetensors")
    result = train(
        model, data, data, config, tmp_path / "out", checkpoint, parallel=OtherRank()
    )
    assert result.steps == 3 and len(result.history) == 4  # it trained and evaluated
    assert result.checkpoint is None and not (tmp_path / "ckpt.safetensors").exists()
    assert not (tmp_path / "out").exists()  # no metrics.jsonl, not even its folder


def test_the_global_batch_decides_what_a_resume_may_change():
    saved = {"batch_size": 4, "grad_accum_steps": 1, "dtype": "float32"}
    config = TrainConfig(batch_size=4, grad_accum_steps=2, dtype="float32")
    assert train_config_changes(saved, config, saved_world_size=2) == {}
    assert train_config_changes(saved, config) == {"grad_accum_steps": (1, 2)}
    assert train_config_changes(saved, config, 2, 2) == {
        "grad_accum_steps x processes": (2, 4)
    }


def test_a_damaged_world_size_is_a_clear_error(runs, tmp_path):
    from gptlib.checkpoint import save_checkpoint

    ckpt = load_checkpoint(runs / "stopped/checkpoint.safetensors")
    model = ckpt.build_model()
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / "bad.safetensors"
    extra = {**ckpt.extra, "world_size": "two"}
    save_checkpoint(path, model, optimizer, 3, ckpt.tokenizer, extra)
    with contextlib.chdir(tmp_path):
        config = TrainConfig(max_steps=6, progress=False)
        state_model = ckpt.build_model()
        with pytest.raises(CheckpointError, match="world_size: 'two' is not a number"):
            train(
                state_model,
                torch.zeros(100, dtype=torch.long),
                torch.zeros(100, dtype=torch.long),
                config,
                checkpoint=RunCheckpoint(path, resume=True),
            )


def test_the_resume_command_of_a_torchrun_job():
    argv = ["train", "--preset", "nano", "--stop-at", "3"]
    assert resume_command(argv, Path("runs/nano"), 2) == (
        "torchrun --standalone --nproc_per_node=2 -m gptlib train --preset nano "
        "--out runs/nano --resume"
    )
    assert resume_command(argv, Path("runs/nano")).startswith("gptlib train")
