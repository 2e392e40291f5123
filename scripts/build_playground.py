"""Build the playground's model: train the `tiny` preset on the course corpus, exactly
as `python -m gptlib train --preset tiny` does, and export it for the browser into
docs/playground/model/ (model.onnx, tokenizer.json, and model.json saying how it was
made). Run on purpose (`./dev playground`), like `./dev corpus`: the committed model
is versioned data, so editing a page never changes what the playground writes.

    python scripts/build_playground.py [--steps N]
"""

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

from gptlib import __version__, load_model
from gptlib.cli import main as gptlib
from gptlib.export import MODEL_FILE, TOKENIZER_FILE, export_for_web
from gptlib.training import read_metrics

OUT = Path(__file__).resolve().parent.parent / "docs" / "playground" / "model"


def build(steps: int | None) -> dict:
    with tempfile.TemporaryDirectory() as work:
        run = Path(work) / "run"
        command = ["train", "--preset", "tiny", "--corpus", "course", "--no-progress"]
        command += ["--out", str(run)]
        command += ["--steps", str(steps)] if steps else []
        assert gptlib(command) == 0
        model, tokenizer = load_model(run / "checkpoint.safetensors", "cpu")
        done = export_for_web(model, tokenizer, OUT)
        last = [r for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r][-1]
    files = {
        name: hashlib.sha256((OUT / name).read_bytes()).hexdigest()
        for name in (MODEL_FILE, TOKENIZER_FILE)
    }
    record = {
        "made_by": "python -m gptlib train --preset tiny --corpus course"
        + (f" --steps {steps}" if steps else "")
        + ", then gptlib.export.export_for_web (scripts/build_playground.py)",
        "gptlib": __version__,
        "preset": "tiny",
        "corpus": "course",
        "step": last["step"],
        "val_loss": round(last["val_loss"], 4),
        "parameters": done["parameters"],
        "block_size": done["block_size"],
        "vocab_size": tokenizer.vocab_size,
        "n_layer": model.config.n_layer,
        "n_head": model.config.n_head,
        "max_difference_from_pytorch": done["max_difference"],
        "sha256": files,
    }
    (OUT / "model.json").write_text(json.dumps(record, indent=1) + "\n", "utf-8")
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, help="default: the preset's")
    print(json.dumps(build(parser.parse_args().steps), indent=1))
