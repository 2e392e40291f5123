import pytest
import torch

from gptlib.generation import generate, generate_tokens, sample_next, stream
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import BPETokenizer, CharTokenizer

CFG = GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16)


def test_greedy_picks_argmax():
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 1.0]])
    assert sample_next(logits, temperature=0).tolist() == [[1], [0]]


def test_top_k_never_samples_outside_the_k_best():
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]).repeat(500, 1)
    picks = sample_next(logits, temperature=1.0, top_k=2).flatten()
    assert set(picks.tolist()) == {3, 4}


def test_low_temperature_sharpens():
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 2.0]]).repeat(2000, 1)
    cold = sample_next(logits, temperature=0.2).float().mean()
    hot = sample_next(logits, temperature=5.0).float().mean()
    assert cold > 0.95 and 0.45 < hot < 0.65


def test_sample_next_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(1, 3), temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(torch.zeros(1, 3), top_k=0)


BAD_SETTINGS = [
    (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0, got -1"),
    (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
    (dict(temperature=-0.5), "temperature must be a finite number >= 0, got -0.5"),
    (dict(temperature=float("inf")), "temperature must be a finite number >= 0"),
    (dict(top_k=0), "top_k must be an integer >= 1, got 0"),
    (dict(top_k=2.5), "top_k must be an integer >= 1, got 2.5"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"),
    (dict(top_p=float("nan")), r"top_p must be in \(0, 1\], got nan"),
]


@pytest.mark.parametrize("settings, message", BAD_SETTINGS)
def test_bad_settings_fail_before_the_model_runs(settings, message):
    torch.manual_seed(0)
    tok = CharTokenizer.train("abcdefghijklmnopqrst")
    model = GPT(CFG)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    kwargs = {"max_new_tokens": 5, **settings}
    with pytest.raises(ValueError, match=message):
        generate(model, tok, "abc", **kwargs)
    with pytest.raises(ValueError, match=message):
        next(stream(model, tok, "abc", **kwargs))
    n = kwargs.pop("max_new_tokens")
    with pytest.raises(ValueError, match=message):
        next(generate_tokens(model, torch.zeros(1, 1, dtype=torch.long), n, **kwargs))
    assert calls == [] and model.training  # no forward pass; the mode is restored


def test_zero_new_tokens_give_back_the_prompt():
    torch.manual_seed(0)
    tok = CharTokenizer.train("abcdefghijklmnopqrst")
    model = GPT(CFG)
    assert generate(model, tok, "abc", max_new_tokens=0) == "abc"
    assert list(stream(model, tok, "abc", max_new_tokens=0)) == []
    assert list(generate_tokens(model, torch.zeros(1, 1, dtype=torch.long), 0)) == []


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_nan_weights_give_a_clear_error(temperature):
    torch.manual_seed(0)
    tok = CharTokenizer.train("abcdefghijklmnopqrst")
    model = GPT(CFG)
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight[0, 0] = float("nan")  # one NaN spreads to all
    with pytest.raises(ValueError, match="logits are NaN or infinite"):
        generate(model, tok, "abc", max_new_tokens=5, temperature=temperature)


def test_generation_beyond_block_size_crops_context():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    idx = torch.zeros(1, 3, dtype=torch.long)
    new = list(generate_tokens(model, idx, max_new_tokens=20, temperature=0))
    assert len(new) == 20 and all(t.shape == (1, 1) for t in new)


def test_seed_makes_sampling_reproducible_and_model_mode_is_restored():
    torch.manual_seed(0)
    tok = CharTokenizer.train("abcdefghijklmnopqrst")
    model = GPT(CFG)
    model.train()
    a = generate(model, tok, "abc", max_new_tokens=30, seed=7)
    b = generate(model, tok, "abc", max_new_tokens=30, seed=7)
    c = generate(model, tok, "abc", max_new_tokens=30, seed=8)
    assert a == b and a != c and a.startswith("abc") and len(a) == 33
    assert model.training


def test_stream_pieces_add_up_to_the_decoded_text():
    torch.manual_seed(0)
    tok = BPETokenizer.train("你好世界" * 30, vocab_size=260)
    model = GPT(
        GPTConfig(vocab_size=260, block_size=8, n_layer=1, n_head=2, n_embd=16)
    ).eval()
    pieces = list(stream(model, tok, "你", max_new_tokens=40, seed=0))
    g = torch.Generator().manual_seed(0)
    ids = [
        int(t)
        for t in generate_tokens(
            model, torch.tensor([tok.encode("你")]), 40, generator=g
        )
    ]
    # pieces are held back while a multi-byte character is incomplete, never changed
    assert "".join(pieces) == tok.decode(ids)
    assert (
        len(pieces) < 40
    )  # some tokens were partial characters and waited for the next


def test_top_p_keeps_the_smallest_set_covering_p():
    torch.manual_seed(0)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    picks = sample_next(probs.log().repeat(2000, 1), top_p=0.75).flatten()
    assert set(picks.tolist()) == {0, 1}  # 0.5 + 0.3 covers 0.75; 0.15 is not needed
    picks = sample_next(probs.log().repeat(2000, 1), top_p=0.81).flatten()
    assert set(picks.tolist()) == {0, 1, 2}
    assert (
        sample_next(probs.log(), top_p=0.01).item() == 0
    )  # the best token always stays
    with pytest.raises(ValueError, match="top_p"):
        sample_next(probs.log(), top_p=1.5)


@pytest.mark.parametrize("temperature, seed", [(0.0, None), (1.0, 3)])
def test_kv_cache_gives_the_same_tokens(temperature, seed):
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=32)
    ).eval()
    prompt = torch.randint(0, 30, (2, 5))

    def run(use_cache):
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        # 40 new tokens: well past block_size=16, so the window slides and the cache is
        # rebuilt
        return torch.cat(
            list(
                generate_tokens(
                    model, prompt, 40, temperature, generator=g, use_cache=use_cache
                )
            ),
            1,
        )

    assert torch.equal(run(True), run(False))


def test_cached_forward_equals_full_forward():
    from gptlib.model import KVCache

    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=32)
    ).eval()
    idx = torch.randint(0, 30, (2, 16))
    full, _ = model(idx)
    cache = KVCache(2)
    parts = [model(idx[:, :6], cache=cache)[0], model(idx[:, 6:9], cache=cache)[0]]
    parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(9, 16)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="longer than block_size"):
        model(idx[:, :1], cache=cache)


def test_stop_string_ends_generation_before_it():
    torch.manual_seed(0)
    tok = CharTokenizer.train("ab")
    model = GPT(GPTConfig(vocab_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8))
    full = generate(model, tok, "a", max_new_tokens=60, seed=1)
    cut = generate(model, tok, "a", max_new_tokens=60, seed=1, stop="bb")
    continuation = full[
        1:
    ]  # the stop string is looked for in the generated text, not the prompt
    assert "bb" in continuation
    assert cut == "a" + continuation[: continuation.index("bb")]
