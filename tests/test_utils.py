import random

import numpy as np
import pytest
import torch

from gptlib.utils import get_device, inspect, seed_everything, time_block


def test_get_device_picks_what_is_available(monkeypatch):
    monkeypatch.delenv("GPTLIB_DEVICE", raising=False)
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else "mps"
        if torch.backends.mps.is_available()
        else "cpu"
    )
    assert get_device().type == expected


def test_get_device_override_by_argument_and_env(monkeypatch):
    monkeypatch.setenv("GPTLIB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.delenv("GPTLIB_DEVICE")
    assert get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the error on a machine without CUDA"
)
def test_get_device_refuses_absent_cuda():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        get_device("cuda")


def test_seed_everything_reproduces_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


def test_inspect_reports_shape_dtype_grad(capsys):
    x = torch.ones(2, 3, requires_grad=True)
    y = (x * 2).sum()
    line = inspect(y, "y")
    assert capsys.readouterr().out.strip() == line
    assert (
        "shape=()" in line
        and "dtype=torch.float32" in line
        and "requires_grad=True" in line
    )
    assert "grad_fn=SumBackward0" in line
    assert "grad_fn=None" in inspect(x, "x")


def test_time_block_measures(capsys):
    with time_block("sleep", device="cpu") as t:
        sum(range(100_000))
    assert t.seconds > 0
    assert capsys.readouterr().out.startswith("sleep: ")
    with time_block("quiet", verbose=False) as t2:
        pass
    assert t2.seconds >= 0 and capsys.readouterr().out == ""
