"""Chapter 15 (Debugging checklist): the activation-memory measurement counts what
autograd saves (not the weights), and the estimate matches it across GPT shapes."""

import pytest
import torch
import torch.nn as nn
from ch15_debugging import estimate_activation_bytes, saved_activation_bytes

from gptlib import GPT, GPTConfig, preset_config


class LinearWithLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x, y):
        return self.linear(x), None


def test_a_linear_layer_saves_its_input_and_nothing_else():
    model = LinearWithLoss()
    x = torch.randn(10, 4)
    assert saved_activation_bytes(model, x, None) == x.numel() * 4  # float32
    with torch.no_grad():
        assert saved_activation_bytes(model, x, None) == 0


@pytest.mark.parametrize(
    "config",
    [
        preset_config("nano", vocab_size=203),
        preset_config("tiny", vocab_size=203),
        GPTConfig(n_layer=3, n_head=3, n_embd=48, block_size=32, vocab_size=1000),
    ],
    ids=["nano", "tiny", "odd"],
)
@pytest.mark.parametrize("batch_size", [2, 8])
def test_the_estimate_matches_the_measurement(config, batch_size):
    torch.manual_seed(0)
    model = GPT(config)
    T = config.block_size
    x = torch.randint(config.vocab_size, (batch_size, T))
    y = torch.randint(config.vocab_size, (batch_size, T))
    measured = saved_activation_bytes(model, x, y)
    estimated = estimate_activation_bytes(config, batch_size, T)
    assert abs(measured - estimated) / measured < 0.03
