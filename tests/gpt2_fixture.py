"""Files in GPT-2's formats, made offline for the tests: a byte-level BPE trained by
Hugging Face `tokenizers` (vocab.json + merges.txt) and a tiny random GPT-2 saved by
`transformers` (config.json + model.safetensors), the layout of a hub folder."""

from pathlib import Path

from gptlib.data import course_text

# Kinds of text a tokenizer comparison covers, several samples each.
SAMPLES = {
    "English": [
        "Hello world, it's 2024! Don't we'll they've I'm you're he'd.",
        "The quick brown fox jumps over the lazy dog. THE END",
        "naïve café résumé Zürich über façade",
    ],
    "Chinese": [
        "你好，世界！这是一个测试。",
        "自注意力 (self-attention) 让每个词元看见前面的词元。",
        "模型在 CPU 上训练了 300 步，损失从 6.7 降到 3.3。",
    ],
    "code": [
        "def f(x):\n    return x ** 2  # square\n",
        "for i in range(10):\n\tprint(f'{i:>3}', end='')\n",
        'x = {"a": [1, 2.5e-3, None]}; y = x["a"][0] != 3',
    ],
    "emoji": [
        "emoji 🤖🚀 and families 👩‍👩‍👧 and flags 🇨🇳🇬🇧",
        "✨ sparkles ✨ ½ x² ٣٤ ᛗ ∑∫ €100",
        "😀😃😄😁😆😅😂🤣",
    ],
    "whitespace": [
        "   leading and trailing   ",
        "a\n\n\nb\r\nc\t\t d    e",
        "  \n  \n\n     \t\n",
        " ",
        "word  word   word    word\n    indented\n",
    ],
}


def write_gpt2_tokenizer(folder: Path, vocab_size: int = 1000) -> Path:
    """vocab.json and merges.txt of a byte-level BPE trained by `tokenizers` on the
    course text (both languages, prose and code) and the samples' kinds of text."""
    import tokenizers

    text = course_text()
    extra = [s for kind in SAMPLES.values() for s in kind] * 20
    trainer = tokenizers.ByteLevelBPETokenizer()
    chunks = [text[i : i + 5000] for i in range(0, len(text), 5000)] + extra
    trainer.train_from_iterator(
        chunks,
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(folder))
    return folder


def write_tiny_gpt2(folder: Path, vocab_size: int = 1000, seed: int = 0):
    """A random 2-layer GPT-2 saved by `transformers` in `folder`, with the
    tokenizer above beside it: what `gptlib sample --pretrained` reads. Returns the
    transformers model (in eval mode)."""
    import torch
    import transformers

    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)  # config.json and model.safetensors
    write_gpt2_tokenizer(folder, vocab_size)
    return model
