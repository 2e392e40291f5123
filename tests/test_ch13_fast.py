"""Chapter 13 (Making it fast): each speed technique computes what the plain code does,
and the benchmark functions measure what they say.

The speed itself is measured by benchmarks/ (bench_train.py, bench_generate.py), not
here: these tests check results, shapes and arithmetic, never timings.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from ch13_fast import TokenWindows, batches, batches_per_second
from torch.nn.attention.bias import causal_lower_right
from torch.utils.flop_counter import FlopCounterMode

from gptlib import (
    GPT,
    CharTokenizer,
    GPTConfig,
    KVCache,
    StaticKVCache,
    generate_tokens,
    preset_config,
)
from gptlib import benchmark as bench
from gptlib.cli import main
from gptlib.data import get_batch, prepare_token_files
from gptlib.model import manual_attention
from gptlib.training import TrainConfig, configure_optimizer, resolve_dtype


def qkv(T, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, T, 8, generator=g)
    k, v = torch.randn(2, 2, 3, S, 8, generator=g)
    return q, k, v


@pytest.mark.parametrize("T,S", [(7, 7), (1, 9), (3, 10)])
def test_manual_attention_equals_pytorchs_fused_kernel(T, S):
    """Queries are the last T of S positions: the whole window (T = S) and the steps
    of a KV cache (T < S), against scaled_dot_product_attention's causal masks."""
    q, k, v = qkv(T, S)
    mask = causal_lower_right(T, S) if T < S else None
    expected = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=mask is None
    )
    torch.testing.assert_close(manual_attention(q, k, v), expected)


def test_manual_attention_keeps_the_softmax_in_float32_under_bfloat16():
    q, k, v = (t.bfloat16() for t in qkv(6, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = manual_attention(q, k, v)
    assert y.dtype == torch.bfloat16
    reference = F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), is_causal=True
    )
    torch.testing.assert_close(y.float(), reference, atol=0.03, rtol=0.03)


def test_a_model_with_manual_attention_computes_the_same_loss_and_gradients():
    sdpa = GPT(preset_config("nano", vocab_size=30))
    manual = GPT(preset_config("nano", vocab_size=30, attention="manual"))
    manual.load_state_dict(sdpa.state_dict())
    x = torch.randint(0, 30, (3, 64), generator=torch.Generator().manual_seed(1))
    losses = []
    for model in (sdpa, manual):
        _, loss = model(x, x)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(sdpa.named_parameters(), manual.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_an_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="attention must be one of"):
        GPTConfig(attention="flash")


def test_static_cache_gives_the_logits_of_the_growing_cache_and_of_no_cache():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16))
    model.eval()
    ids = torch.randint(0, 20, (2, 12))
    static, growing = StaticKVCache(2, 16), KVCache(2)
    with torch.no_grad():
        full, _ = model(ids)  # (B, T, V) in one pass
        a, _ = model(ids[:, :5], cache=static)  # a prompt, then one token at a time
        b, _ = model(ids[:, :5], cache=growing)
        torch.testing.assert_close(a, full[:, :5])
        torch.testing.assert_close(b, full[:, :5])
        for t in range(5, 12):
            a, _ = model(ids[:, t : t + 1], cache=static)
            b, _ = model(ids[:, t : t + 1], cache=growing)
            torch.testing.assert_close(a[:, 0], full[:, t])
            torch.testing.assert_close(b[:, 0], full[:, t])
    assert len(static) == len(growing) == 12
    assert static.keys[0].shape == (2, 2, 16, 8)  # allocated once, for 16 positions


def test_static_cache_refuses_more_positions_than_it_holds():
    cache = StaticKVCache(1, 4)
    k = torch.zeros(1, 1, 3, 2)
    cache.update(0, k, k)
    with pytest.raises(ValueError, match="holds 4 positions, not 5"):
        cache.update(0, k[:, :, :2], k[:, :, :2])


def test_generation_with_the_static_cache_past_the_window_matches_no_cache():
    """generate_tokens rebuilds its StaticKVCache when the text outgrows the window."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    prompt = torch.randint(0, 20, (2, 3))
    runs = [
        torch.cat(
            list(
                generate_tokens(
                    model,
                    prompt,
                    20,
                    generator=torch.Generator().manual_seed(5),
                    use_cache=use_cache,
                )
            ),
            dim=1,
        )
        for use_cache in (True, False)
    ]
    assert torch.equal(runs[0], runs[1])


def test_flops_per_token_counts_what_pytorchs_flop_counter_counts():
    """FlopCounterMode counts the matmuls of one forward and backward pass; the formula
    also counts 6 FLOPs for each bias and LayerNorm parameter (no matmul uses them),
    as nanoGPT and the PaLM paper do."""
    model = GPT(preset_config("nano", vocab_size=65, attention="manual"))
    T = model.config.block_size
    x = torch.randint(0, 65, (2, T))
    with FlopCounterMode(display=False) as counter:
        _, loss = model(x, x)
        loss.backward()
    not_in_matmuls = sum(p.numel() for p in model.parameters() if p.dim() < 2)
    counted = counter.get_total_flops() / x.numel()
    assert model.flops_per_token() == counted + 6 * not_in_matmuls


def test_mfu_is_the_share_of_the_peak():
    model = GPT(preset_config("nano", vocab_size=65))
    flops = model.flops_per_token()
    assert model.estimate_mfu(1000.0, flops * 4000.0) == pytest.approx(0.25)


def test_peak_flops_come_from_the_table_by_gpu_name(monkeypatch):
    monkeypatch.setattr(
        torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3"
    )
    cuda = torch.device("cuda")
    assert bench.peak_flops(cuda, "bfloat16") == 989e12
    assert bench.peak_flops(cuda, "float64") is None  # not in the table
    assert bench.peak_flops(torch.device("cpu"), "bfloat16") is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mystery")
    assert bench.peak_flops(cuda, "bfloat16") is None


def test_auto_dtype_is_float32_on_a_cpu_and_explicit_dtypes_stay():
    cpu = torch.device("cpu")
    assert resolve_dtype(cpu, "auto") == "float32"
    assert resolve_dtype(cpu, "bfloat16") == "bfloat16"
    assert TrainConfig().dtype == "auto"
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="int8")


def test_fused_adamw_takes_the_same_step_as_the_plain_one():
    """fused=True runs the whole update in one kernel (CPU kernels exist since
    PyTorch 2.4): the same arithmetic as the per-parameter loop."""
    torch.manual_seed(0)
    models = [GPT(preset_config("nano", vocab_size=30)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randint(0, 30, (2, 64))
    for model, fused in zip(models, (False, True)):
        optimizer = configure_optimizer(model, TrainConfig(), fused=fused)
        assert optimizer.defaults["fused"] is (True if fused else None)
        for _ in range(3):
            optimizer.zero_grad()
            model(x, x)[1].backward()
            optimizer.step()
    # Adam divides by sqrt(v): rounding in a near-zero gradient can move a weight by a
    # small part of one step (lr), never more
    lr = TrainConfig().learning_rate
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, atol=lr / 100, rtol=1e-5)


def test_batches_are_not_pinned_for_a_cpu():
    data = torch.arange(100)
    x, y = get_batch(data, 4, 8, "cpu", pin_memory=True)
    assert not x.is_pinned() and torch.equal(y, x + 1)


def test_time_training_reports_speed_memory_and_no_mfu_on_a_cpu():
    result = bench.time_training(
        bench.Setting("bfloat16 + manual", dtype="bfloat16", attention="manual"),
        "nano", batch_size=2, steps=2, warmup=1, device=torch.device("cpu"),
    )  # fmt: skip
    assert result["ms_per_step"] > 0 and result["peak_memory_mib"] > 0
    assert result["tokens_per_sec"] == pytest.approx(
        2 * 64 / result["ms_per_step"] * 1e3
    )
    assert result["mfu"] is None
    assert result["params"] == GPT(preset_config("nano", vocab_size=65)).num_params()


def test_bench_train_takes_turns_and_reports_the_median_and_the_spread(monkeypatch):
    """The order of the runs and the arithmetic of the rows; run_isolated itself (a
    fresh process per run) is checked below and by the README's `bench train`."""
    calls = []
    times = iter([30.0, 20.0, 10.0, 22.0, 40.0, 21.0])  # base, fused, base, ...

    def fake_run(function, **kwargs):
        calls.append((function, kwargs["setting"]["name"], kwargs["preset"]))
        return {"ms_per_step": next(times), "peak_memory_mib": 5.0, "mfu": None}

    monkeypatch.setattr(bench, "run_isolated", fake_run)
    settings = [bench.Setting("base"), bench.Setting("fused AdamW", fused=True)]
    lines = []
    rows = bench.bench_train(
        settings, "nano", batch_size=2, repeats=3, device="cpu", progress=lines.append
    )
    assert [name for _, name, _ in calls] == ["base", "fused AdamW"] * 3
    assert lines[:3] == [
        "repeat 1/3: base",
        "repeat 1/3: fused AdamW",
        "repeat 2/3: base",
    ]
    base, fused = rows
    assert base["repeats_ms"] == [30.0, 10.0, 40.0] and fused["repeats_ms"] == [
        20.0,
        22.0,
        21.0,
    ]
    assert (base["ms_per_step"], base["ms_per_step_min"], base["ms_per_step_max"]) == (
        30.0,
        10.0,
        40.0,
    )
    assert fused["tokens_per_sec"] == pytest.approx(2 * 64 / 21.0 * 1000)
    table = bench.train_table(rows).splitlines()
    assert (
        table[2].startswith("| base | 30.0 (10.0-40.0) |") and "| 1.00x |" in table[2]
    )
    assert "| 1.43x |" in table[3]  # 30 / 21


def test_an_isolated_run_returns_the_result_of_its_own_process():
    result = bench.run_isolated(
        "time_training", setting={"name": "base", "threads": 1}, preset="nano",
        batch_size=2, steps=1, warmup=1, device="cpu",
    )  # fmt: skip
    assert result["ms_per_step"] > 0 and result["mfu"] is None


def test_a_failing_isolated_run_says_why():
    with pytest.raises(RuntimeError, match="time_training failed in its process"):
        bench.run_isolated("time_training", setting={"name": "x", "dtype": "int3"})


def test_train_table_compares_the_50304_vocabulary_with_the_50257_one():
    def row(name, ms):
        return {
            "setting": {"name": name}, "ms_per_step": ms, "ms_per_step_min": ms,
            "ms_per_step_max": ms, "tokens_per_sec": 1.0, "peak_memory_mib": 1.0,
            "mfu": None,
        }  # fmt: skip

    rows = [row("base", 10.0), row("vocabulary 50257", 20.0)]
    table = bench.train_table([*rows, row("vocabulary 50304", 16.0)])
    assert table.splitlines()[-1].split(" | ")[3] == "1.25x"  # 20 / 16, not 10 / 16


def test_time_generation_measures_every_kind_of_cache():
    torch.manual_seed(0)
    model = GPT(preset_config("nano", vocab_size=65)).eval()
    for cache in ("none", "concat", "static"):
        assert bench.time_generation(model, 32, 4, cache, batch_size=2) > 0
    rows = bench.bench_generate(
        "nano", contexts=(16, 32), new_tokens=4, batch_sizes=(1,), repeats=1,
        progress=lambda line: None,
    )  # fmt: skip
    assert [(r["context"], r["new_tokens"]) for r in rows] == [(16, 4), (32, 4)]
    assert len(bench.generate_table(rows).splitlines()) == 4


def test_split_loss_is_the_mean_loss_over_every_window():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    ids = torch.randint(0, 11, (8 * 70 + 3,))
    n = (len(ids) - 1) // 8
    with torch.no_grad():
        logits, _ = model(ids[: n * 8].view(n, 8))
    expected = F.cross_entropy(logits.reshape(-1, 11), ids[1 : n * 8 + 1])
    assert bench.split_loss(model, ids, 8) == pytest.approx(expected.item(), rel=1e-5)
    assert model.training  # put back as it was


def test_the_nanogpt_recipe_reports_what_nanogpts_runner_reports():
    text = "To be, or not to be, that is the question. " * 60
    result = bench.train_nanogpt_recipe(text, steps=12)
    assert result["final_step"] == 12 and result["iters"] == 12
    assert result["tokens_per_iter"] == 12 * 64
    assert result["ms_per_iter_p10"] <= result["ms_per_iter_median"]
    assert result["ms_per_iter_median"] <= result["ms_per_iter_p90"]
    assert math.isfinite(result["split_val_loss"]) and result["val_loss"] > 0
    tiny = GPT(preset_config("tiny", vocab_size=len(set(text)), bias=False))
    assert result["params"] == tiny.num_params()


def test_the_profile_accounts_for_the_whole_step():
    shares = bench.profile_training_step("nano", batch_size=2, steps=2)
    parts = sum(ms for name, ms in shares.items() if name != "step_ms")
    assert shares["matmuls"] > 0 and shares["optimizer and clipping"] > 0
    assert parts == pytest.approx(shares["step_ms"]) or parts > shares["step_ms"]
    table = bench.profile_table(shares)
    assert table.splitlines()[-1].endswith("| 100% |")


def test_bench_profile_prints_the_table(capsys):
    assert main(["bench", "profile", "--preset", "nano", "--batch-size", "2"]) == 0
    assert "| matmuls |" in capsys.readouterr().out


def test_token_windows_are_the_windows_get_batch_draws(tmp_path):
    text = "hello world, " * 50
    tok = CharTokenizer.train(text)
    prepare_token_files(text, tok, tmp_path)
    dataset = TokenWindows(str(tmp_path / "train.bin"), block_size=8)
    ids = torch.tensor(tok.encode(text))
    x, y = dataset[5]
    n_train = len(dataset) + 8
    assert torch.equal(x, ids[5:13]) and torch.equal(y, ids[6:14])
    assert n_train < len(ids)  # the file holds the training split only


@pytest.mark.slow
def test_worker_processes_deliver_the_same_batches(tmp_path):
    """The sampler draws the indices in the main process: how many workers build the
    batches does not change which batches come."""
    text = "the quick brown fox jumps over the lazy dog. " * 40
    prepare_token_files(text, CharTokenizer.train(text), tmp_path)
    dataset = TokenWindows(str(tmp_path / "train.bin"), block_size=16)
    runs = []
    for workers in (0, 2):
        loader = iter(batches(dataset, 4, num_workers=workers, seed=3))
        runs.append([next(loader) for _ in range(5)])
    for (x0, y0), (x2, y2) in zip(*runs):
        assert x0.shape == (4, 16) and torch.equal(x0, x2) and torch.equal(y0, y2)
    assert batches_per_second(batches(dataset, 4), n=5) > 0


def test_bench_generate_doubles_the_context_up_to_the_flag(capsys):
    argv = ["bench", "generate", "--preset", "nano", "--repeats", "1"]
    assert main([*argv, "--max-context", "200"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == ["64", "128"] * 2  # batch 1, 8


def test_bench_train_only_times_the_baseline_and_the_chosen_settings():
    rows = bench.settings_for("cpu", "MANUAL")
    assert [s.name for s in rows] == [
        "baseline: float32, SDPA, eager, AdamW",
        "manual attention",
        "bfloat16 + manual attention",
    ]
    assert bench.settings_for("cpu") == bench.CPU_SETTINGS
    assert bench.settings_for("cuda:0")[1].name == "TF32"
    assert bench.contexts_up_to(1024) == (64, 128, 256, 512, 1024)
    assert bench.contexts_up_to(200) == (64, 128)
