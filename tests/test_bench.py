"""bench/speed.py runs end to end on a tiny model (no timing assertions: the machine is shared)."""

import importlib.util
from pathlib import Path

import pytest
import torch

from utils import GPT_CONFIG_124M, GPTModel

SPEC = importlib.util.spec_from_file_location("speed", Path(__file__).resolve().parents[1] / "bench" / "speed.py")
speed = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(speed)

TINY = {**GPT_CONFIG_124M, "vocab_size": 100, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2}


def test_run_and_report_tiny(capsys):
    res = speed.run(TINY, steps=1, warmup=1, new_tokens=5, gen_reps=1, matmul_n=64, log=lambda *a: None)
    assert res["max_diff"] < 1e-4  # book and fast paths agree
    assert len(res["train"]["book"]) == len(res["train"]["fast"]) == 1
    assert len(res["gen"]["cache"]) == 2 and len(res["gen"]["no_cache"]) == 1  # cache, none, cache
    assert res["gen"]["tokens"].shape == (1, 4 + 5)  # prompt + new tokens
    for key in ("fast_speedup", "cache_speedup", "mfu", "mfu_best"):
        assert res[key] > 0 and res[key] == res[key]  # positive, not NaN
    assert set(res["attention"]) == {(16, 0.1), (16, 0.0), (64, 0.0)}  # (num_tokens, dropout)
    speed.report(res)
    out = capsys.readouterr().out
    for text in ("fast/book =", "KV cache speed-up =", "of median matmul", "SDPA kernel on this CPU"):
        assert text in out


def test_flop_params_leaves_out_embedding_tables():
    torch.manual_seed(123)
    model = GPTModel(TINY)
    total = sum(p.numel() for p in model.parameters())
    assert speed.flop_params(model) == total - 100 * 32 - 16 * 32


def test_check_same_outputs_catches_a_difference():
    torch.manual_seed(123)
    model = GPTModel(TINY)
    inputs = torch.randint(0, 100, (2, 16))
    assert speed.check_same_outputs(model, inputs) < 1e-4
    with torch.no_grad():
        model.trf_blocks[0].att.mask.zero_()  # the book's path now sees the future; the fast path (is_causal) does not
    with pytest.raises(AssertionError, match="differ"):
        speed.check_same_outputs(model, inputs)


def test_generation_longer_than_context_is_refused():
    torch.manual_seed(123)
    model = GPTModel(TINY)
    with pytest.raises(ValueError, match="exceed the context length"):
        speed.time_generation(model, torch.tensor([[1, 2, 3, 4]]), new_tokens=13)


def test_main_quick_flags_parse(monkeypatch):
    seen = {}
    monkeypatch.setattr(speed, "run", lambda cfg, **kw: seen.update(kw) or {})
    monkeypatch.setattr(speed, "report", lambda res: None)
    speed.main(["--quick", "--threads", "1"])
    assert seen["steps"] == 2 and seen["new_tokens"] == 50 and seen["gen_reps"] == 1
    speed.main(["--steps", "4", "--new-tokens", "7"])
    assert seen["steps"] == 4 and seen["new_tokens"] == 7


TRAIN_SPEC = importlib.util.spec_from_file_location(
    "train_speed", Path(__file__).resolve().parents[1] / "bench" / "train_speed.py")
train_speed = importlib.util.module_from_spec(TRAIN_SPEC)
TRAIN_SPEC.loader.exec_module(train_speed)


def test_train_speed_ladder_tiny(capsys):
    """Every rung but torch.compile (its compile takes a minute) on a tiny model, each beside the rung it changes;
    inapplicable rungs are skipped."""
    from utils.speed import ladder

    torch.manual_seed(0)
    windows = torch.randint(0, 100, (8, 17))  # (n, num_tokens + 1)
    rungs = [r for r in ladder("cpu", base_batch=2, big_batch=4) if not r.compile]
    res = train_speed.run(TINY, windows, windows[:2], steps=1, device="cpu", rungs=rungs, log=lambda *a: None)
    names = [row["rung"].name for row in res["rows"]]
    assert names[0].startswith("book") and len(names) == len(rungs)
    tf32 = next(row for row in res["rows"] if row["rung"].tf32 and "skipped" in row)
    assert "NVIDIA" in tf32["skipped"]  # a CPU has no TF32 tensor cores: said, not faked
    for row in res["rows"]:
        if "skipped" not in row:
            assert not row["rung"].tf32  # a skipped rung is not built upon
            assert row["tokens_per_s"] > 0 and row["loss"] == row["loss"]  # positive, not NaN
            assert row["state_bytes"] > 0 and row["activation_bytes"] > 0
    by_name = {row["rung"].name: row for row in res["rows"]}
    big, accumulated = by_name["+ batch 4"], by_name["batch 2 x 2 accumulated"]
    assert accumulated["rung"].after == "+ batch 4"  # each change against the rung it changes
    assert accumulated["activation_bytes"] < big["activation_bytes"]  # the same step in less memory
    assert abs(accumulated["loss"] - big["loss"]) < 1e-2  # ... and the same training (up to bfloat16 rounding)
    train_speed.report(res)
    out = capsys.readouterr().out
    assert "| rung | x the rung before" in out and "skipped: TF32" in out


def test_train_speed_headline_stops_and_says_so(capsys, monkeypatch):
    """The headline pairs stop once the ratios agree, or at the limit with "no headline" and the spread."""
    torch.manual_seed(0)
    windows = torch.randint(0, 100, (8, 17))
    monkeypatch.setattr(train_speed, "MAX_PAIRS", 6)
    head = train_speed.headline(TINY, windows, "cpu", log=lambda *a: None)
    assert train_speed.MIN_PAIRS <= len(head["ratios"]) <= 6 and all(r > 0 for r in head["ratios"])
    assert head["agreed"] == train_speed.agreed(head["ratios"])
    train_speed.report({"headline": head})
    assert capsys.readouterr().out.splitlines()[-1].startswith("headline:" if head["agreed"] else "no headline:")
    assert train_speed.agreed([1.30, 1.31, 1.29, 1.30]) and not train_speed.agreed([1.3, 1.3, 1.3])
    assert not train_speed.agreed([0.5, 2.2, 1.3, 0.9])  # a shared machine's noise: no headline
    train_speed.report({"headline": {"ratios": [0.5, 2.2, 1.3, 0.9], "agreed": False}})
    assert "no headline" in capsys.readouterr().out


def test_train_speed_sets_up_offline_data(monkeypatch):
    """The Verdict and GPT-2's tokenizer come through tools.offline, as in every bench script."""
    import tools.offline

    calls = []
    monkeypatch.setattr(tools.offline, "use_shared_data", lambda: calls.append(1))
    train_windows, val_windows = train_speed.chapter5_windows(256)
    assert calls and train_windows.shape[1] == val_windows.shape[1] == 257


def test_memory_bytes_keeps_no_model_alive():
    """Counting the saved activations must not keep the graph (and so the model) alive: a 124M pair would not fit."""
    import gc
    import weakref

    from utils.speed import build, ladder, memory_bytes

    rung = ladder("cpu")[2]
    model, optimizer = build(rung, TINY, "cpu")
    state, activations = memory_bytes(rung, model, torch.randint(0, 100, (4, 17)), "cpu")
    assert state == 4 * sum(p.numel() * 4 for p in model.parameters()) and activations > 0
    alive = weakref.ref(model)
    del model, optimizer
    gc.collect()
    assert alive() is None
