import pytest
import torch

from gptlib.generate import generate, generate_tokens, sample_next, stream
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
    model = GPT(GPTConfig(vocab_size=260, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    pieces = list(stream(model, tok, "你", max_new_tokens=40, seed=0))
    g = torch.Generator().manual_seed(0)
    ids = [int(t) for t in generate_tokens(model, torch.tensor([tok.encode("你")]), 40, generator=g)]
    # pieces are held back while a multi-byte character is incomplete, never changed
    assert "".join(pieces) == tok.decode(ids)
    assert len(pieces) < 40  # some tokens were partial characters and waited for the next
