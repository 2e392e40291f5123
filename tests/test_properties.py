"""Property tests: hypothesis draws the inputs, the test states what holds for all.

Tokenizers give back the text they encoded, batches are windows of the data with
targets shifted by one, generation never returns more than `max_new_tokens` tokens,
and the KV cache changes no logit.
"""

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gptlib import GPT, GPTConfig, get_batch, load_corpus
from gptlib.generation import generate, generate_tokens, stream
from gptlib.model import KVCache
from gptlib.tokenizer import (
    SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    UnknownCharacterError,
)

EOT = "<|endoftext|>"
# Trained once for the whole file: 300 tokens = 256 bytes + 43 merges + 1 special.
BPE = BPETokenizer.train(
    load_corpus("course")[:20000], vocab_size=300, special_tokens=[EOT]
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models here are tiny: a second thread only waits, and on a busy machine the
    waiting costs more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Any Unicode text: letters, CJK, emoji, combining marks, controls, whitespace
# (hypothesis leaves out lone surrogates, which are not text UTF-8 can hold).
any_text = st.text(max_size=200)


# --- (a) tokenizers ------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(any_text)
def test_bpe_round_trips_any_text(text):
    assert "".join(re.findall(SPLIT_PATTERN, text)) == text  # the split loses nothing
    ids = BPE.encode(text, allowed_special="none")
    assert all(0 <= i < BPE.vocab_size for i in ids)
    assert BPE.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(any_text, any_text)
def test_bpe_special_token_round_trips(before, after):
    text = before + EOT + after
    ids = BPE.encode(text, allowed_special="all")
    assert BPE.special_tokens[EOT] in ids
    assert BPE.decode(ids) == text
    with pytest.raises(ValueError, match="special token"):
        BPE.encode(text)  # the default refuses it


@st.composite
def alphabet_and_text(draw):
    alphabet = draw(st.text(min_size=1, max_size=40))
    text = draw(st.text(alphabet=sorted(set(alphabet)), max_size=200))
    return alphabet, text


@settings(max_examples=300, deadline=None)
@given(alphabet_and_text())
def test_char_round_trips_text_of_its_alphabet(case):
    alphabet, text = case
    tok = CharTokenizer.train(alphabet)
    ids = tok.encode(text)
    assert len(ids) == len(text) and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@settings(max_examples=300, deadline=None)
@given(alphabet_and_text(), st.text(min_size=1, max_size=10))
def test_char_unknown_characters_raise_or_map_to_unk(case, extra):
    alphabet, text = case
    unknown = set(extra) - set(alphabet)
    assume(unknown)
    mixed = text + extra
    tok = CharTokenizer.train(alphabet)
    with pytest.raises(UnknownCharacterError) as err:
        tok.encode(mixed)
    assert err.value.characters == sorted(unknown)
    unk = next((c for c in "\x00\ufffd?" if c not in alphabet + extra), None)
    assume(unk is not None)
    tok = CharTokenizer.train(alphabet, unk_token=unk)
    expected = "".join(unk if c in unknown else c for c in mixed)
    assert tok.decode(tok.encode(mixed)) == expected


# --- (b) batches ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(2, 300),
    batch_size=st.integers(1, 16),
    block_size=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
    as_numpy=st.booleans(),
)
def test_get_batch_windows(n, batch_size, block_size, seed, as_numpy):
    # data[i] == i + 7: each value names its position, so every window shows where
    # it starts
    values = np.arange(7, n + 7)
    data = values.astype(np.uint16) if as_numpy else torch.from_numpy(values)
    generator = torch.Generator().manual_seed(seed)
    if n <= block_size:
        with pytest.raises(ValueError, match="block_size"):
            get_batch(data, batch_size, block_size, generator=generator)
        return
    x, y = get_batch(data, batch_size, block_size, generator=generator)
    assert x.shape == y.shape == (batch_size, block_size)
    assert x.dtype == y.dtype == torch.long
    starts = x[:, 0] - 7
    assert ((starts >= 0) & (starts + block_size + 1 <= n)).all()  # windows in range
    offsets = torch.arange(block_size)
    assert torch.equal(x, starts[:, None] + offsets + 7)  # a contiguous window
    assert torch.equal(y, x + 1)  # the next token at every position


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.integers(0, 50), min_size=2, max_size=200),
    batch_size=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_get_batch_targets_are_inputs_shifted(tokens, batch_size, seed, data):
    block_size = data.draw(st.integers(1, len(tokens) - 1), label="block_size")
    generator = torch.Generator().manual_seed(seed)
    x, y = get_batch(torch.tensor(tokens), batch_size, block_size, generator=generator)
    assert x.shape == y.shape == (batch_size, block_size)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert set(x.flatten().tolist()) | set(y.flatten().tolist()) <= set(tokens)


# --- (c) generation length -----------------------------------------------------


@st.composite
def small_configs(draw, vocab_size=None):
    n_head = draw(st.integers(1, 3))
    return GPTConfig(
        vocab_size=vocab_size or draw(st.integers(2, 20)),
        block_size=draw(st.integers(1, 12)),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
        n_embd=n_head * draw(st.integers(1, 6)),
    )


def random_model(config: GPTConfig, seed: int, std: float = 0.5) -> GPT:
    """A GPT with larger random weights than the init, so its outputs vary a lot."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT(config)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, std)
    return model.eval()


CHAR = CharTokenizer.train("abcdefgh ")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=small_configs(vocab_size=CHAR.vocab_size),
    seed=st.integers(0, 2**16),
    prompt=st.text(alphabet="abcdefgh ", max_size=20),
    max_new_tokens=st.integers(0, 20),
    temperature=st.sampled_from([0.0, 0.7, 1.0, 2.0]),
    use_cache=st.booleans(),
)
def test_generation_never_exceeds_max_new_tokens(
    config, seed, prompt, max_new_tokens, temperature, use_cache
):
    model = random_model(config, seed)
    idx = torch.tensor([CHAR.encode(prompt) or [0]])
    sampling = dict(temperature=temperature, seed=seed)
    g = torch.Generator().manual_seed(seed)
    new = list(
        generate_tokens(
            model,
            idx,
            max_new_tokens,
            temperature=temperature,
            generator=g,
            use_cache=use_cache,
        )
    )
    assert len(new) == max_new_tokens
    assert all(t.shape == (1, 1) and 0 <= int(t) < config.vocab_size for t in new)
    # the character tokenizer makes one character per token: count the text
    text = generate(model, CHAR, prompt, max_new_tokens, **sampling)
    assert text.startswith(prompt) and len(text) - len(prompt) == max_new_tokens
    pieces = list(stream(model, CHAR, prompt, max_new_tokens, **sampling))
    assert "".join(pieces) == text[len(prompt) :]
    stopped = generate(model, CHAR, prompt, max_new_tokens, stop="a", **sampling)
    assert text.startswith(stopped) and "a" not in stopped[len(prompt) :]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), max_new_tokens=st.integers(0, 12))
def test_bpe_generation_is_exactly_max_new_tokens(seed, max_new_tokens):
    """A BPE token can end inside a character; `generate` holds such text back until
    it is whole, but its text is still exactly the decoded `max_new_tokens` tokens."""
    config = GPTConfig(
        vocab_size=BPE.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8
    )
    model = random_model(config, seed, std=1.0)
    prompt = "你好"
    text = generate(model, BPE, prompt, max_new_tokens, seed=seed)
    idx = torch.tensor([BPE.encode(prompt)])
    g = torch.Generator().manual_seed(seed)  # the same draws as generate's seed
    new = [int(t) for t in generate_tokens(model, idx, max_new_tokens, generator=g)]
    assert len(new) == max_new_tokens
    assert text == prompt + BPE.decode(new)


# --- (d) the KV cache changes nothing ------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=small_configs(),
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 3),
    data=st.data(),
)
def test_cached_logits_equal_uncached(config, seed, batch, data):
    model = random_model(config, seed)
    T = data.draw(st.integers(1, config.block_size), label="T")
    prefix = data.draw(st.integers(1, T), label="prefix")
    idx = torch.randint(
        config.vocab_size, (batch, T), generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        full, _ = model(idx)  # (B, T, V), no cache
        cache = KVCache(config.n_layer)
        first, _ = model(idx[:, :prefix], cache=cache)  # the prefix in one go
        steps = [first] + [
            model(idx[:, t : t + 1], cache=cache)[0] for t in range(prefix, T)
        ]  # then one token at a time
    assert len(cache) == T
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=small_configs(),
    seed=st.integers(0, 2**16),
    prompt_len=st.integers(1, 16),
    max_new_tokens=st.integers(1, 24),
)
def test_cached_greedy_generation_equals_uncached(
    config, seed, prompt_len, max_new_tokens
):
    """Greedy decoding with the cache picks, at every step, a token that the uncached
    model also ranks first (within 1e-5), also once the text outgrows block_size and
    the cache is rebuilt."""
    model = random_model(config, seed)
    idx = torch.randint(
        config.vocab_size,
        (1, prompt_len),
        generator=torch.Generator().manual_seed(seed),
    )
    cached = torch.cat(
        list(generate_tokens(model, idx, max_new_tokens, temperature=0.0)), dim=1
    )
    uncached = torch.cat(
        list(
            generate_tokens(
                model, idx, max_new_tokens, temperature=0.0, use_cache=False
            )
        ),
        dim=1,
    )
    seq = torch.cat([idx, cached], dim=1)
    with torch.no_grad():
        for step in range(max_new_tokens):
            context = seq[:, : prompt_len + step][:, -config.block_size :]
            logits = model(context)[0][0, -1]  # no cache
            chosen = int(cached[0, step])
            assert logits[chosen] >= logits.max() - 1e-5, (step, chosen)
    if not torch.equal(cached, uncached):  # only a near tie may pick another token
        step = int((cached != uncached).nonzero()[0, 1])
        context = seq[:, : prompt_len + step][:, -config.block_size :]
        logits = model(context)[0][0, -1]
        a, b = int(cached[0, step]), int(uncached[0, step])
        assert abs(logits[a] - logits[b]) <= 1e-5
