"""Chapter 11 (Generation): the page's hand-written pieces against gptlib.generation.

tests/test_generation.py covers gptlib's own behaviour (greedy, top-k, top-p, seeds,
stream, stop strings, KV cache); these tests check the chapter's reference code: the
naive loop draws what generate_tokens draws, filter_probs describes what sample_next
samples (top-k and top-p combined too), and the exercises' penalty and min-p filters.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from ch11_generation import (
    entropy,
    filter_probs,
    greedy_with_penalty,
    min_p_filter,
    naive_generate,
    repetition_penalty,
    time_generation,
)

from gptlib import GPT, GPTConfig, generate_tokens, sample_next


def small_model(vocab_size=12, block_size=8):
    torch.manual_seed(0)
    return GPT(
        GPTConfig(
            vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16
        )
    ).eval()


def test_naive_loop_draws_the_same_tokens_as_generate_tokens_past_the_window():
    model = small_model()
    prompt = torch.randint(0, 12, (2, 5), generator=torch.Generator().manual_seed(1))
    ours = naive_generate(
        model, prompt, 20, torch.Generator().manual_seed(3)
    )  # 25 tokens > block_size 8
    assert ours.shape == (2, 25) and torch.equal(ours[:, :5], prompt)
    for use_cache in (False, True):
        g = torch.Generator().manual_seed(3)
        theirs = torch.cat(
            list(generate_tokens(model, prompt, 20, generator=g, use_cache=use_cache)),
            1,
        )
        assert torch.equal(ours[:, 5:], theirs)


def test_naive_loop_without_cropping_would_fail():
    model = small_model()
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_entropy_in_nats():
    assert entropy(torch.full((7,), 1 / 7)).item() == pytest.approx(math.log(7))
    assert entropy(torch.tensor([0.0, 1.0, 0.0])).item() == 0.0
    assert entropy(torch.tensor([0.5, 0.5])).item() == pytest.approx(math.log(2))
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    h = [entropy(F.softmax(logits / t, -1)).item() for t in (0.5, 1.0, 2.0)]
    assert h[0] < h[1] < h[2] < math.log(4)


def test_filter_probs_on_the_page_distribution():
    probs = torch.tensor([0.42, 0.23, 0.16, 0.09, 0.06, 0.04])
    kept = filter_probs(probs, top_k=2)
    assert torch.allclose(kept, torch.tensor([0.42, 0.23, 0, 0, 0, 0]) / 0.65)
    assert (filter_probs(probs, top_p=0.5) > 0).tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert (filter_probs(probs, top_p=0.8) > 0).sum() == 3  # 0.42 + 0.23 < 0.8 <= 0.81
    assert (filter_probs(probs, top_p=0.95) > 0).sum() == 5
    assert torch.equal(filter_probs(probs, top_k=100), probs / probs.sum())
    assert filter_probs(probs, top_p=1e-3).tolist() == [1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(top_k=3),
        dict(top_p=0.7),
        dict(top_k=4, top_p=0.6),
        dict(top_k=2, top_p=0.5),
    ],  # the last: order matters
)
def test_sample_next_draws_from_what_filter_probs_keeps(kwargs):
    probs = torch.tensor([0.05, 0.30, 0.02, 0.25, 0.18, 0.20])
    g = torch.Generator().manual_seed(0)
    picks = sample_next(probs.log().repeat(40_000, 1), generator=g, **kwargs).flatten()
    freq = torch.bincount(picks, minlength=6) / len(picks)
    expected = filter_probs(probs, **kwargs)
    assert torch.equal(freq > 0, expected > 0)  # exactly the kept tokens are ever drawn
    assert torch.allclose(freq, expected, atol=0.01)


def test_repetition_penalty_lowers_only_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = repetition_penalty(logits, torch.tensor([[0, 1, 1]]), penalty=2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert torch.equal(
        repetition_penalty(logits, torch.tensor([[0, 1]]), penalty=1.0), logits
    )


def test_greedy_with_penalty_one_is_plain_greedy():
    model = small_model()
    prompt = torch.tensor([[1, 2, 3]])
    plain = torch.cat(list(generate_tokens(model, prompt, 15, temperature=0)), 1)
    assert torch.equal(
        greedy_with_penalty(model, prompt, 15, penalty=1.0)[:, 3:], plain
    )


def test_min_p_keeps_tokens_relative_to_the_best():
    probs = torch.tensor(
        [[0.42, 0.23, 0.16, 0.09, 0.06, 0.04], [0.90, 0.05, 0.03, 0.01, 0.006, 0.004]]
    )
    kept = min_p_filter(probs.log(), 0.2) > float("-inf")
    assert kept.tolist() == [
        [True, True, True, True, False, False],
        [True, False, False, False, False, False],
    ]
    assert min_p_filter(probs.log(), 0.0).isfinite().all()


def test_time_generation_returns_the_same_tokens_either_way():
    model = small_model(block_size=32)
    prompt = torch.tensor([[1, 2, 3]])
    seconds_off, off = time_generation(model, prompt, 10, use_cache=False, repeats=1)
    seconds_on, on = time_generation(model, prompt, 10, use_cache=True, repeats=2)
    assert (
        off.shape == (1, 10)
        and torch.equal(off, on)
        and seconds_off > 0
        and seconds_on > 0
    )
