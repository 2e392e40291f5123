"""The package's shape: every module is reachable as a module, not hidden by a
function."""

import importlib
import pkgutil
import types
from pathlib import Path

import gptlib

MODULES = sorted(
    m.name for m in pkgutil.iter_modules(gptlib.__path__) if not m.name.startswith("_")
)


def test_no_public_name_shadows_a_module():
    shadowing = [name for name in gptlib.__all__ if name in MODULES]
    assert not shadowing, f"gptlib.{shadowing} would hide the module of the same name"


def test_import_gives_the_module():
    for name in MODULES:
        module = importlib.import_module(f"gptlib.{name}")
        assert isinstance(module, types.ModuleType)
        assert isinstance(getattr(gptlib, name, module), types.ModuleType), (
            f"gptlib.{name} is not the module"
        )


def test_the_library_never_reads_the_repository():
    """What gptlib needs ships inside it (the course corpus is package data): a wheel
    installed anywhere works. tests/test_wheel.py checks that for real."""
    for path in sorted(Path(gptlib.__file__).parent.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for repository_path in (
            "parent.parent",
            '"docs"',
            "terms.yml",
            "shared/",
            '"snippets"',
            "REPO_DIR",
        ):
            assert repository_path not in text, (
                f"{path.name} refers to {repository_path}"
            )
