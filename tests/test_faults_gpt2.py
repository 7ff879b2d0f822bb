"""Fault catalogue of utils.gpt2: clear errors, a fallback only when the weights cannot be reached, no code run.

Each case: (id, set-up(ctx) -> callable, exception, message fragment); afterwards no `.part`/`.tmp` file
remains and the marker a malicious checkpoint would create does not exist.
"""

from types import SimpleNamespace

import pytest
import torch
from faults import MakesMarker, catalogue, expect_fault
from test_assets import closed_port_url

import utils.assets as assets
from utils import CheckpointError, GPTModel, gpt2_config, save_checkpoint
from utils.assets import Asset, AssetError
from utils.gpt2 import download_and_load_gpt2, gpt2_or_fallback, load_weights_into_gpt

TINY = dict(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1)


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    """Downloads land in tmp/data; the GPT-2 URLs point at a closed port (unreachable, as offline)."""
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LLM_ASSET_MIRROR", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name, filename in (("gpt2-124M", "gpt2-124M.safetensors"), ("gpt2-355M", "gpt2-355M.safetensors")):
        monkeypatch.setitem(assets.ASSETS, name, Asset(filename, (closed_port_url("/" + filename),), "0" * 64, None,
                                                       "GPT-2 (test)"))
    return SimpleNamespace(tmp=tmp_path, mp=monkeypatch)


def tiny_model(**overrides):
    torch.manual_seed(3)
    return GPTModel(gpt2_config("124M", **{**TINY, **overrides}))


def evil(c):
    model = tiny_model()
    torch.save({"model_state_dict": model.state_dict(), "config": gpt2_config("124M", **TINY),
                "x": MakesMarker(c.tmp / "MARKER")}, c.tmp / "evil.pth")
    return lambda: gpt2_or_fallback("124M", fallback_checkpoint=c.tmp / "evil.pth")


def no_config(c):
    save_checkpoint(c.tmp / "ck.pth", tiny_model())
    return lambda: gpt2_or_fallback("124M", fallback_checkpoint=c.tmp / "ck.pth")


def truncated(c):
    path = save_checkpoint(c.tmp / "ck.pth", tiny_model(), config=gpt2_config("124M", **TINY))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return lambda: gpt2_or_fallback("124M", fallback_checkpoint=path)


def empty(c):
    (c.tmp / "ck.pth").write_bytes(b"")
    return lambda: gpt2_or_fallback("124M", fallback_checkpoint=c.tmp / "ck.pth")


def config_disagrees(c):
    save_checkpoint(c.tmp / "ck.pth", tiny_model(), config=gpt2_config("124M", **{**TINY, "n_layers": 2}))
    return lambda: gpt2_or_fallback("124M", fallback_checkpoint=c.tmp / "ck.pth")


def bad_file_in_data(c):
    (c.tmp / "data").mkdir()
    (c.tmp / "data" / "gpt2-124M.safetensors").write_bytes(b"<html>not weights</html>")
    return lambda: gpt2_or_fallback("124M", fallback_checkpoint=c.tmp / "absent.pth", **TINY)


CASES = [
    ("unknown size", lambda c: lambda: gpt2_or_fallback("1B"), ValueError, "choose one of 124M, 355M"),
    ("download unknown size", lambda c: lambda: download_and_load_gpt2("2B"), ValueError, "choose one of"),
    ("fallback checkpoint runs code", evil, CheckpointError, "can run any code. Nothing was loaded"),
    ("fallback checkpoint without config", no_config, CheckpointError, "save it with save_checkpoint(path, model, config=cfg)"),
    ("fallback checkpoint truncated", truncated, CheckpointError, "re-save it with save_checkpoint, or delete it"),
    ("fallback checkpoint empty", empty, CheckpointError, "Delete it, or re-save it"),
    ("fallback checkpoint config disagrees", config_disagrees, CheckpointError, "another shape"),
    ("a file in data/ does not verify", bad_file_in_data, AssetError, "exists but does not verify"),
    ("weights of another shape", lambda c: lambda: load_weights_into_gpt(
        tiny_model(), {"wte.weight": torch.zeros(3, 3)}), ValueError, "Hint:"),
    ("bad config override", lambda c: lambda: gpt2_or_fallback("124M", try_download=False, **{**TINY, "n_heads": 3}),
     ValueError, "must be divisible by num_heads"),
]


@catalogue(CASES)
def test_fault(ctx, capsys, case):
    expect_fault(case, ctx, ctx.tmp)
    assert "unreachable" not in capsys.readouterr().out  # an error is never reported as a fallback


def test_unreachable_weights_fall_back_and_say_why(ctx, capsys):
    model, config, source = gpt2_or_fallback("124M", fallback_checkpoint=ctx.tmp / "absent.pth", **TINY)
    out = capsys.readouterr().out
    assert source == "random init" and out.count("\n") == 1
    assert "unreachable (127.0.0.1: " in out and "refused" in out and "(offline?)" not in out
    assert "there is no absent.pth yet" in out


def test_gpt2_or_fallback_refuses_a_pth_that_runs_code(ctx, capsys):
    run = evil(ctx)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil.pth"):
        run()
    assert not (ctx.tmp / "MARKER").exists()
    assert "continuing" not in capsys.readouterr().out


def test_fallback_line_leaves_out_the_test_mirror(ctx, capsys):
    """A reader's output names the real sources only: the asset mirror is a test set-up (issue 18)."""
    ctx.mp.setenv("LLM_ASSET_MIRROR", closed_port_url(""))
    gpt2_or_fallback("124M", fallback_checkpoint=ctx.tmp / "absent.pth", **TINY)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.count("127.0.0.1") == 1  # the real URL (a closed port here), not the mirror
