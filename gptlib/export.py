"""The course's model for a web page: ONNX for onnxruntime-web, the tokenizer as JSON.

* `WebGPT` wraps a trained GPT for export: token ids (B, T) -> logits (B, T, V) and,
  optionally, the attention weights of every head of every layer (B, L, H, T, T), the
  pictures of chapter 06 for any text;
* `export_onnx` writes it as one .onnx file with the batch and the length left
  dynamic, through `torch.onnx.export(..., dynamo=True)` (torch.export, then
  onnxscript; the path PyTorch takes by default since 2.9, pinned here);
* `onnx_difference` runs the file with onnxruntime and returns the largest
  difference from PyTorch's logits;
* `export_for_web` writes model.onnx and tokenizer.json into a folder.

Needs `pip install 'gptlib[web]'` (onnx, onnxscript, onnxruntime).
"""

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from gptlib.checkpoint import atomic_write_bytes
from gptlib.model import GPT, attention_weights
from gptlib.tokenizer import Tokenizer

MODEL_FILE, TOKENIZER_FILE = "model.onnx", "tokenizer.json"
OPSET = 18  # what onnxruntime-web 1.20 and later run


class WebGPT(nn.Module):
    """A GPT's forward pass as the browser runs it, from its own layers. With
    `attention=True` it also returns each head's attention weights, computed as
    chapter 06 does (the fused kernel of training keeps them to itself)."""

    def __init__(self, model: GPT, attention: bool = True):
        super().__init__()
        self.model, self.attention = model, attention
        self.eval()  # no dropout: the browser samples from the trained model as it is

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, (B, T) = self.model, ids.shape
        pos = torch.arange(T, device=ids.device)  # (T,)
        x = m.tok_emb(ids) + m.pos_emb(pos)  # (B, T, C)
        maps = []
        for block in m.blocks:
            attn = block.attn
            q, k, v = attn.heads(block.ln_1(x))  # each (B, H, T, D)
            weights = attention_weights(q, k)  # (B, H, T, T)
            y = (weights @ v).transpose(1, 2).reshape(B, T, -1)  # (B, T, C)
            x = x + attn.c_proj(y)
            x = x + block.mlp(block.ln_2(x))
            maps.append(weights)
        logits = m.lm_head(m.ln_f(x))  # (B, T, V)
        if not self.attention:
            return (logits,)
        return logits, torch.stack(maps, dim=1)  # (B, T, V), (B, L, H, T, T)


def export_onnx(model: GPT, path: str | Path, attention: bool = True) -> Path:
    """Write `model` to `path` as ONNX: input "ids" (int64, B x T, both dynamic, T up
    to block_size), outputs "logits" and, with `attention`, "attention"."""
    wrapped = WebGPT(model, attention)
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=model.config.block_size)
    example = torch.zeros(2, min(8, model.config.block_size), dtype=torch.long)
    outputs = ["logits", "attention"] if attention else ["logits"]
    # the exporter logs each torchvision operator it skips, and torch's internals warn
    # about their own deprecations: nothing a reader can act on
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(
        logging.ERROR
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            input_names=["ids"],
            output_names=outputs,
            dynamic_shapes={"ids": {0: batch, 1: length}},
            opset_version=OPSET,
            verbose=False,
        )
    path = Path(path)
    atomic_write_bytes(path, program.model_proto.SerializeToString(), what="model")
    return path


def onnx_difference(
    path: str | Path, model: GPT, shapes: list[tuple[int, int]], seed: int = 0
) -> float:
    """The largest |logits_onnxruntime - logits_pytorch| over random ids of each
    (batch, length) in `shapes`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for B, T in shapes:
        ids = torch.randint(model.config.vocab_size, (B, T), generator=generator)
        (logits, *_) = session.run(None, {"ids": ids.numpy()})
        with torch.no_grad():
            expected = model(ids)[0].numpy()
        worst = max(worst, float(np.abs(logits - expected).max()))
    return worst


def export_for_web(
    model: GPT, tokenizer: Tokenizer, out_dir: str | Path, attention: bool = True
) -> dict[str, Any]:
    """model.onnx and tokenizer.json in `out_dir`, and what they hold: the file
    sizes, the model's settings and the largest difference from PyTorch."""
    out_dir = Path(out_dir)
    model_path = export_onnx(model, out_dir / MODEL_FILE, attention)
    T = model.config.block_size
    difference = onnx_difference(model_path, model, [(1, 1), (1, 7), (3, T)])
    tokenizer.save(out_dir / TOKENIZER_FILE)  # gptlib's JSON: the page reads it too
    return {
        "model": str(model_path),
        "model_bytes": model_path.stat().st_size,
        "tokenizer": str(out_dir / TOKENIZER_FILE),
        "parameters": model.num_params(),
        "block_size": T,
        "attention": attention,
        "max_difference": difference,
    }
