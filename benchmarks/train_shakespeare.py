"""Train the `tiny` model on Tiny Shakespeare, one character per token.

    python benchmarks/train_shakespeare.py [--steps 2000] [--device cpu]
                                           [--eval-batches 20]

The reference is nanoGPT's shakespeare-char run on a CPU (4 layers, 4 heads, 128
channels, block 64, batch 12, lr 1e-3 decaying to 1e-4 after a 100-step warm-up, no
dropout): a validation loss of about 1.88 after 2000 iterations. This script trains
the same model with `gptlib.training` and prints a table (steps, minutes, train and
validation loss), a 300-character sample, and writes
benchmarks/results/train_shakespeare.json.

Training runs in slices of `--eval-interval` steps (`stop_at_step`, then `resume=True`):
resuming is bit-exact, so the slices give the same weights as one straight run, and the
clock can be read between them. The run folder is runs/train_shakespeare.
"""

import argparse
import time
from pathlib import Path

import torch
from report import write_report  # benchmarks/report.py

from gptlib import (
    GPT,
    CharTokenizer,
    TrainConfig,
    encode_corpus,
    generate,
    get_device,
    load_corpus,
    preset_config,
    seed_everything,
    train,
    train_val_split,
)
from gptlib.checkpoint import CHECKPOINT_NAME, RunCheckpoint

REFERENCE_VAL_LOSS = 1.88  # nanoGPT shakespeare-char, CPU, 2000 iterations


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, mps (default: the best available)"
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs") / "train_shakespeare"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    seed_everything(args.seed)
    device = get_device(args.device)
    text = load_corpus("tinyshakespeare")
    tok = CharTokenizer.train(text)
    train_data, val_data = train_val_split(encode_corpus(text, tok), 0.1)
    model_config = preset_config(
        "tiny", vocab_size=tok.vocab_size
    )  # 4 layers, 4 heads, 128 wide, block 64
    config = TrainConfig(
        max_steps=args.steps,
        batch_size=12,
        learning_rate=1e-3,
        min_lr=1e-4,
        warmup_steps=100,
        eval_interval=args.eval_interval,
        eval_batches=args.eval_batches,
        seed=args.seed,
        device=str(device),
        progress=False,
    )
    model = GPT(model_config)
    print(
        f"tinyshakespeare: {len(text):,} characters, vocabulary {tok.vocab_size}; "
        f"model tiny: {model.num_params():,} parameters; "
        f"{args.steps} steps on {device} ({torch.get_num_threads()} threads)"
    )

    minutes_at = {0: 0.0}  # step -> minutes of training (and evaluation) before it
    history = []
    start = time.perf_counter()
    stops = list(range(args.eval_interval, args.steps, args.eval_interval)) + [None]
    for i, stop in enumerate(stops):
        checkpoint = RunCheckpoint(args.run_dir / CHECKPOINT_NAME, tok, resume=i > 0)
        result = train(
            model,
            train_data,
            val_data,
            config,
            out_dir=args.run_dir,
            checkpoint=checkpoint,
            stop_at_step=stop,
        )
        minutes_at[result.steps] = (time.perf_counter() - start) / 60
        # each slice ends with the evaluation of its last step
        history += result.history
    elapsed = (time.perf_counter() - start) / 60

    print()
    print(f"| {'step':>5} | {'minutes':>7} | {'train loss':>10} | {'val loss':>8} |")
    print(f"|{'-' * 7}|{'-' * 9}|{'-' * 12}|{'-' * 10}|")
    rows = []
    for record in history:
        minutes = minutes_at.get(record["step"], float("nan"))
        rows.append({**record, "minutes": minutes})
        print(
            f"| {record['step']:5d} | {minutes:7.2f} "
            f"| {record['train_loss']:10.3f} | {record['val_loss']:8.3f} |"
        )
    final = history[-1]
    print(
        f"val loss {final['val_loss']:.3f} after {final['step']} steps "
        f"in {elapsed:.1f} minutes "
        f"(nanoGPT's CPU reference: {REFERENCE_VAL_LOSS} after 2000)"
    )

    model.eval()
    sample = generate(model, tok, "\n", max_new_tokens=300, temperature=0.8, seed=0)[1:]
    print("\nsample (temperature 0.8, seed 0):")
    print(sample)

    write_report(
        args.out / "train_shakespeare.json",
        "train_shakespeare",
        device,
        params=model.num_params(),
        model=model_config.to_dict(),
        train_config=dict(vars(config)),
        minutes=elapsed,
        history=rows,
        final_val_loss=final["val_loss"],
        reference_val_loss=REFERENCE_VAL_LOSS,
        sample=sample,
    )


if __name__ == "__main__":
    main()
