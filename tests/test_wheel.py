"""gptlib works outside this repository, as people install it: a wheel installed without
the docs and test extras into a fresh virtual environment runs every command the README
shows, from an empty directory.

Offline: the wheel is built with this environment's setuptools, and the fresh
environment sees only the distributions gptlib's wheel declares (and what they need),
linked from this environment instead of downloaded. An undeclared import (yaml, say)
fails here; so does a library that reads docs/, terms.yml or ../shared.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.parser import Parser
from importlib.metadata import distribution
from pathlib import Path

import pagecode
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

README = (pagecode.ROOT / "README.md").read_text(encoding="utf-8")
SHAKESPEARE = "GPTLIB_TINYSHAKESPEARE"


def readme_commands() -> list[str]:
    """The `python -m gptlib ...` and `torchrun ...` lines of the README's shell blocks,
    minus comments."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [
        line.split("  #")[0].strip() for block in blocks for line in block.splitlines()
    ]
    return [line for line in lines if line.startswith(("python -m gptlib", "torchrun"))]


def chains(commands: list[str]) -> list[list[str]]:
    """The commands in groups that can run side by side: a group starts with a command
    that needs no earlier one (a new run, a preparation, a benchmark), and holds the
    commands after it that use what it made (sample, finetune, --resume, --data)."""
    groups: list[list[str]] = []
    for command in commands:
        words = shlex.split(command)
        starts = words[words.index("-m") + 2 : words.index("-m") + 3] in (
            ["train"],
            ["prepare"],
            ["bench"],
            [],  # -m gptlib.distributed
        )
        needs_earlier = "--resume" in words or "--data" in words
        if not groups or (starts and not needs_earlier):
            groups.append([])
        groups[-1].append(command)
    return groups


def shortened(command: str) -> str:
    """The same command, made small: the nano preset, few steps, few tokens; torchrun
    as `python -m torch.distributed.run` (the fresh environment links torch in, without
    its scripts)."""
    command = command.replace("torchrun ", "python -m torch.distributed.run ", 1)
    command = command.replace("--preset tiny", "--preset nano").replace(
        "runs/tiny", "runs/nano"
    )
    command = command.replace("--stop-at 400", "--stop-at 10").replace(
        "--max-new-tokens 200", "--max-new-tokens 30"
    )
    words = shlex.split(command)
    sub = words[words.index("-m") + 2 :]  # what follows `-m gptlib`
    if sub[:1] in (["train"], ["finetune"]) and "--help" not in words:
        words += (
            ["--steps", "20", "--no-progress"]
            if "--steps" not in words
            else ["--no-progress"]
        )
    if sub[:2] == ["bench", "train"]:  # the baseline and one setting, timed once
        words += [
            "--preset",
            "nano",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--only",
            "fused",
        ]
    if sub[:2] == ["bench", "generate"]:
        words += ["--preset", "nano", "--repeats", "1", "--max-context", "128"]
    if sub[:1] == ["sample"] and "--max-new-tokens" not in words:
        words += ["--max-new-tokens", "30"]
    return shlex.join(words)


def runtime_distributions(wheel: Path) -> list:
    """The distributions the wheel's Requires-Dist names, and theirs, as installed
    here."""
    with zipfile.ZipFile(wheel) as z:
        metadata = next(
            name for name in z.namelist() if name.endswith(".dist-info/METADATA")
        )
        requires = (
            Parser().parsestr(z.read(metadata).decode()).get_all("Requires-Dist") or []
        )
    found, todo = {}, list(requires)
    while todo:
        requirement = Requirement(todo.pop())
        if requirement.marker is not None and not requirement.marker.evaluate(
            {"extra": ""}
        ):
            continue  # an extra (docs, test) or another platform's
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = distribution(requirement.name)
            todo += found[name].requires or []
    return list(found.values())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the gptlib wheel and its runtime dependencies, and an empty
    directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = (
        tmp / "source"
    )  # what the package is built from, and nothing else (the build writes there)
    shutil.copytree(
        pagecode.ROOT / "gptlib",
        source / "gptlib",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(pagecode.ROOT / name, source / name)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("gptlib-*.whl")
    venv = tmp / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    deps = tmp / "deps"  # the runtime dependencies, linked from this environment
    deps.mkdir()
    for dist in runtime_distributions(wheel):
        for top in {
            f.parts[0]
            for f in dist.files or []
            if f.parts[0] not in ("..", "__pycache__")
        }:
            if not (deps / top).exists():
                (deps / top).symlink_to(dist.locate_file(top))
    python = venv / "bin" / "python"
    site = subprocess.run(
        [
            str(python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "gptlib-runtime-deps.pth").write_text(str(deps) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    install = subprocess.run(
        pip + ["install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run(pip + ["check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, (
        check.stdout + check.stderr
    )  # every requirement is satisfied
    empty = tmp / "empty"
    empty.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        PYTHONNOUSERSITE="1",
        GPTLIB_CACHE=str(tmp / "cache"),
        # the threads this test may use (its share of the cores under pytest-xdist)
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
    )
    return {"wheel": wheel, "python": python, "cwd": empty, "env": env}


def run(installed, command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        shell=True,
        cwd=installed["cwd"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_holds_the_package_and_its_data_only(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "gptlib/corpora/course-v1.json.gz" in names and "gptlib/cli.py" in names
    assert not [
        n for n in names if n.startswith(("docs/", "tests/", "snippets/", "scripts/"))
    ]


def test_the_fresh_environment_has_no_extras_and_gptlib_from_the_wheel(installed):
    done = run(
        installed, "python -c 'import gptlib, sys; print(gptlib.__file__); import yaml'"
    )
    assert (
        "ModuleNotFoundError: No module named 'yaml'" in done.stderr
    )  # the docs/test extras are absent
    assert (
        "site-packages/gptlib/__init__.py" in done.stdout
        and str(pagecode.ROOT) not in done.stdout
    )


def test_every_readme_command_runs_from_an_empty_directory(installed):
    """Each command in order within its chain; two chains at a time, on one thread
    each (the commands are small: most of their time is starting Python)."""
    commands = readme_commands()
    assert len(commands) >= 12
    skipped = [
        c
        for c in commands
        if "shakespeare" in c and not installed["env"].get(SHAKESPEARE)
    ]
    one_thread = {**installed, "env": {**installed["env"], "OMP_NUM_THREADS": "1"}}

    def run_chain(chain: list[str]) -> list[tuple[str, subprocess.CompletedProcess]]:
        done = []
        for command in chain:
            if command not in skipped:
                done.append((shortened(command), run(one_thread, shortened(command))))
                if done[-1][1].returncode != 0:
                    break  # the rest of the chain needs what this one made
        return done

    with ThreadPoolExecutor(max_workers=2) as pool:
        ran = [r for rs in pool.map(run_chain, chains(commands)) for r in rs]
    for small, done in ran:
        assert done.returncode == 0, (
            f"{small}\nexit {done.returncode}\n"
            f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    print("\n".join(f"exit {done.returncode}: {small}" for small, done in ran))
    if skipped:
        print(f"not run ({SHAKESPEARE} is not set): " + "; ".join(skipped))
    assert sum(" finetune " in c for c, _ in ran) == 3
    assert any(" classify " in c for c, _ in ran)
    assert sum("torch.distributed.run" in c for c, _ in ran) == 2


def test_the_readme_python_example_runs_from_the_wheel(installed):
    (code,) = re.findall(r"```python\n(.*?)```", README, re.S)
    done = subprocess.run(
        [str(installed["python"]), "-c", code],
        cwd=installed["cwd"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("The ")
