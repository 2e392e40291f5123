"""The examples in gptlib's docstrings (`>>>` lines) run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import gptlib

MODULES = sorted(
    m.name for m in pkgutil.iter_modules(gptlib.__path__) if not m.name.startswith("_")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"gptlib.{name}")
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.failed == 0, (
        f"{result.failed} docstring example(s) of gptlib.{name} failed (run with -s)"
    )


def test_the_teaching_classes_have_examples():
    from gptlib.model import GPT, GPTConfig

    for obj in (GPT, GPTConfig):
        assert ">>>" in (obj.__doc__ or ""), f"{obj.__name__} has no docstring example"
