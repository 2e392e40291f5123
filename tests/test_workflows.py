"""The GitHub Actions workflows are valid before they reach GitHub."""

import subprocess
import sys
from pathlib import Path

import pagecode
import yaml

WORKFLOWS = sorted((pagecode.ROOT / ".github" / "workflows").glob("*.yml"))


def test_workflows_match_the_github_schema():
    assert WORKFLOWS
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, WORKFLOWS),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_catches_a_typo(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        (pagecode.ROOT / ".github/workflows/ci.yml")
        .read_text()
        .replace("runs-on:", "runs_on:", 1)
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(broken),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0


def test_ci_runs_the_readme_test_command_and_deploys_only_after_tests():
    ci = yaml.safe_load((pagecode.ROOT / ".github/workflows/ci.yml").read_text())
    jobs = ci["jobs"]
    assert any(step.get("run") == "./dev test" for step in jobs["test"]["steps"])
    assert jobs["build"]["needs"] == "test" and jobs["deploy"]["needs"] == "build"
    assert "refs/heads/main" in jobs["deploy"]["if"]
    assert [s["uses"].split("@")[0] for s in jobs["deploy"]["steps"]] == [
        "actions/deploy-pages"
    ]
    assert (
        jobs["gpu-smoke"]["if"] == "vars.GPU_RUNNER != ''"
    )  # never waits for a runner that does not exist
    assert "./dev test" in (pagecode.ROOT / "README.md").read_text()
    assert "./dev test" in (pagecode.ROOT / ".ci/run").read_text()


def test_the_published_site_says_it_was_verified():
    """The build job, which runs only after the test job, marks the site verified; the
    badge hook reads that mark (hooks/verified_badge.py)."""
    ci = yaml.safe_load((pagecode.ROOT / ".github/workflows/ci.yml").read_text())
    build = [s for s in ci["jobs"]["build"]["steps"] if s.get("run") == "./dev build"]
    assert build and build[0]["env"]["VERIFIED_BY_CI"]
    readme = (pagecode.ROOT / "README.md").read_text()
    assert "gpt-from-scratch/badge/verified.svg" in readme
