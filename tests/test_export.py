"""gptlib.export: the model as ONNX for the browser, checked with onnxruntime against
PyTorch (logits within 1e-4 for several batch sizes and lengths, attention weights
causal and normalised), and `gptlib export`."""

import json

import numpy as np
import pytest
import torch

from gptlib import GPT, CharTokenizer, load_corpus, load_tokenizer, preset_config
from gptlib.cli import main
from gptlib.export import WebGPT, export_for_web, export_onnx, onnx_difference
from gptlib.model import attention_weights

onnxruntime = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4  # float32 logits, summed in another order by onnxruntime's kernels


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.train(load_corpus("course"))


@pytest.fixture(scope="module")
def model(tokenizer):
    """The playground's model: the tiny preset, the course's characters."""
    torch.manual_seed(0)
    return GPT(preset_config("tiny", vocab_size=tokenizer.vocab_size)).eval()


@pytest.fixture(scope="module")
def exported(model, tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    return folder, export_for_web(model, tokenizer, folder)


def test_onnxruntime_gives_pytorchs_logits_at_every_batch_size_and_length(
    model, exported
):
    folder, done = exported
    T = model.config.block_size
    shapes = [(1, 1), (1, 2), (2, 17), (3, T - 1), (4, T)]
    difference = onnx_difference(folder / "model.onnx", model, shapes, seed=1)
    print(f"max |onnxruntime - pytorch| over {shapes}: {difference:.1e}")
    assert difference <= TOLERANCE
    assert done["max_difference"] <= TOLERANCE and done["block_size"] == T == 64


def test_the_attention_weights_are_causal_rows_that_sum_to_one(model, exported):
    folder, _ = exported
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    ids = torch.randint(model.config.vocab_size, (2, 20), generator=torch.Generator())
    logits, maps = session.run(None, {"ids": ids.numpy()})
    c = model.config
    assert maps.shape == (2, c.n_layer, c.n_head, 20, 20)
    assert np.allclose(maps.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones((20, 20), dtype=bool), k=1)
    assert (maps[..., upper] == 0).all() and (maps[..., ~upper] > 0).all()
    # the first layer's weights are those of chapter 06's formula on its q and k
    with torch.no_grad():
        block = model.blocks[0]
        x = model.tok_emb(ids) + model.pos_emb(torch.arange(20))
        q, k, _ = block.attn.heads(block.ln_1(x))
        expected = attention_weights(q, k).numpy()
    assert np.abs(maps[:, 0] - expected).max() <= 1e-5


def test_web_gpt_is_the_model(model):
    """The export's forward pass, written out from the model's layers, is the
    model's (no onnx involved): the same logits, with or without the weights."""
    ids = torch.randint(model.config.vocab_size, (3, 33))
    with torch.no_grad():
        expected = model(ids)[0]
        with_maps = WebGPT(model)(ids)
        plain = WebGPT(model, attention=False)(ids)
    assert len(with_maps) == 2 and len(plain) == 1
    torch.testing.assert_close(with_maps[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain[0], expected, atol=1e-5, rtol=1e-5)


def test_the_files_are_small_and_the_tokenizer_is_gptlibs(tokenizer, exported):
    folder, done = exported
    size = (folder / "model.onnx").stat().st_size
    print(f"model.onnx: {size / 1e6:.2f} MB, {done['parameters']:,} parameters")
    assert size == done["model_bytes"] < 5e6  # float32: 4 bytes a parameter
    assert size > 4 * done["parameters"]  # and the weights are in the file itself
    again = load_tokenizer(folder / "tokenizer.json")
    assert again.encode("The model 模型") == tokenizer.encode("The model 模型")
    assert json.loads((folder / "tokenizer.json").read_text())["type"] == "char"


def test_logits_only(model, tmp_path):
    path = export_onnx(model, tmp_path / "plain.onnx", attention=False)
    session = onnxruntime.InferenceSession(str(path))
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert onnx_difference(path, model, [(2, 9)]) <= TOLERANCE


def test_gptlib_export_writes_both_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main("train --preset nano --steps 2 --no-progress".split()) == 0
    capsys.readouterr()
    assert main("export --onnx web".split()) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("web/model.onnx: 0.8 MB, 177,728 parameters, up to 64")
    assert out[1].startswith("onnxruntime's logits differ from PyTorch's by at most")
    assert out[2] == "web/tokenizer.json: char tokenizer, vocab 1149"
