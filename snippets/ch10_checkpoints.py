"""Chapter 10 (Saving & resuming): a pickle that runs code when it is loaded, and the
exercises' rotating checkpoints, checkpoint size from the parameter count, and loading
only the weights for inference.

Run it: `python snippets/ch10_checkpoints.py` prints a short demo. The page
docs/10-saving-resuming.md includes its sections; the library code is
gptlib/checkpoint.py.
"""

# --8<-- [start:imports]
import json
from pathlib import Path

import torch
from safetensors import safe_open

from gptlib import GPT, GPTConfig, save_checkpoint

# --8<-- [end:imports]


# --8<-- [start:payload]
class Payload:
    """An object whose unpickling runs code chosen by whoever wrote the file.

    The code here is harmless: it prints a line and creates an empty marker file.
    """

    def __init__(self, marker: str | Path):
        self.marker = str(marker)

    def __reduce__(self):
        # pickle stores "call exec(code)" in place of this object;
        # loading makes the call
        code = (
            "print('this line was printed by code inside the file'); "
            f"open({self.marker!r}, 'w').close()"
        )
        return (exec, (code,))


# --8<-- [end:payload]


# --8<-- [start:rotate]
def save_rotating(
    run_dir, model, optimizer=None, step=0, tokenizer=None, keep=3
) -> Path:
    """Save run_dir/ckpt-STEP.safetensors, then delete all but the newest `keep` of
    them."""
    run_dir = Path(run_dir)
    path = save_checkpoint(
        run_dir / f"ckpt-{step:07d}.safetensors", model, optimizer, step, tokenizer
    )
    # zero-padded steps: name order is step order
    saved = sorted(run_dir.glob("ckpt-*.safetensors"))
    for old in saved[:-keep]:  # only after the new one is safely on disk
        old.unlink()
    return path


# --8<-- [end:rotate]


# --8<-- [start:size]
def predicted_size(model: GPT, with_optimizer: bool = True) -> int:
    """Bytes of tensor data in a float32 checkpoint, from the parameter count alone."""
    params = list(model.parameters())  # a tied weight is listed once, and stored once
    n = sum(p.numel() for p in params)
    size = 4 * n  # the weights: 4 bytes per float32 number
    if with_optimizer:
        size += 2 * 4 * n  # AdamW's exp_avg and exp_avg_sq: one number each per weight
        size += 4 * len(params)  # and its step counter, a float32 per parameter tensor
    return size


# --8<-- [end:size]


# --8<-- [start:weights_only]
def load_weights(path: str | Path) -> GPT:
    """A model for inference, reading only the `model.*` tensors of a checkpoint."""
    with safe_open(path, framework="pt", device="cpu") as f:
        meta = f.metadata()
        state = {
            name[len("model.") :]: f.get_tensor(name)
            for name in f.keys()
            if name.startswith("model.")
        }
    tied = json.loads(meta["tied"])  # lm_head.weight is tok_emb.weight
    for alias, source in tied.items():
        state[alias] = state[source]
    model = GPT(GPTConfig.from_dict(json.loads(meta["config"])))
    model.load_state_dict(state)
    return model.eval()


# --8<-- [end:weights_only]


if __name__ == "__main__":
    import pickle
    import tempfile

    from gptlib import CheckpointError, load_checkpoint, load_model
    from gptlib.training import TrainConfig, configure_optimizer

    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "marker"
        pickle.loads(pickle.dumps(Payload(marker)))
        print("pickle.loads ran the code:", marker.exists())
        marker.unlink()
        torch.save({"x": Payload(marker)}, Path(tmp) / "evil.pt")
        try:
            load_checkpoint(Path(tmp) / "evil.pt")
        except CheckpointError as e:
            print("load_checkpoint refused it:", type(e).__name__)
        print("marker created by the refused file:", marker.exists())

        torch.manual_seed(0)
        model = GPT(
            GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)
        )
        optimizer = configure_optimizer(model, TrainConfig())
        x = torch.randint(0, 32, (4, 16))
        model(x, x)[1].backward()
        optimizer.step()
        for step in range(10, 60, 10):
            last = save_rotating(Path(tmp) / "run", model, optimizer, step, keep=3)
        print("kept:", sorted(p.name for p in (Path(tmp) / "run").iterdir()))
        size = last.stat().st_size
        print(
            f"predicted {predicted_size(model):,} bytes of tensors, file {size:,} bytes"
        )
        ours, (theirs, _) = load_weights(last), load_model(last)
        print(
            "weights-only model == load_model:", torch.equal(ours(x)[0], theirs(x)[0])
        )
