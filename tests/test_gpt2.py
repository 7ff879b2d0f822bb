"""utils.gpt2 on a tiny checkpoint written in Hugging Face's GPT-2 safetensors layout, served from 127.0.0.1."""

import functools
import http.server
import math
import threading

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from utils import GPTModel, assets, gpt2, gpt2_config, save_checkpoint
from utils.assets import Asset, AssetError, sha256_of
from utils.gpt2 import check_gpt2_weights, download_and_load_gpt2, gpt2_or_fallback, hf_shapes, load_weights_into_gpt

TINY = dict(vocab_size=100, context_length=16, emb_dim=32, n_layers=2, n_heads=4)


def hf_weights(cfg, seed=0):
    """Random tensors named and shaped as in OpenAI's HF file (Conv1D weights `(in, out)`), plus the mask buffers."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in hf_shapes(cfg).items():
        t = torch.randn(shape, generator=g) * 0.3
        weights[name] = t + 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else t
    c = cfg["context_length"]
    for i in range(cfg["n_layers"]):
        weights[f"h.{i}.attn.bias"] = torch.tril(torch.ones(c, c)).view(1, 1, c, c)
        weights[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return weights


def reference_logits(w, idx, n_heads):
    """GPT-2's forward pass written directly on the HF tensors (x @ W + b), independent of utils.model."""
    e = w["wte.weight"].shape[1]
    hd = e // n_heads
    b, t = idx.shape
    x = w["wte.weight"][idx] + w["wpe.weight"][:t]

    def ln(x, p):
        return F.layer_norm(x, (e,), w[p + ".weight"], w[p + ".bias"], eps=1e-5)

    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    n_layers = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("h."))
    for i in range(n_layers):
        h = f"h.{i}."
        qkv = ln(x, h + "ln_1") @ w[h + "attn.c_attn.weight"] + w[h + "attn.c_attn.bias"]
        q, k, v = (z.view(b, t, n_heads, hd).transpose(1, 2) for z in qkv.split(e, dim=-1))
        scores = (q @ k.transpose(-2, -1) / math.sqrt(hd)).masked_fill(~causal, float("-inf"))
        y = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, e)
        x = x + y @ w[h + "attn.c_proj.weight"] + w[h + "attn.c_proj.bias"]
        m = F.gelu(ln(x, h + "ln_2") @ w[h + "mlp.c_fc.weight"] + w[h + "mlp.c_fc.bias"], approximate="tanh")
        x = x + m @ w[h + "mlp.c_proj.weight"] + w[h + "mlp.c_proj.bias"]
    return ln(x, "ln_f") @ w["wte.weight"].T


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A folder served on 127.0.0.1 as LLM_ASSET_MIRROR; downloads land in tmp_path/data."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("LLM_ASSET_MIRROR", base)
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path / "data"))
    yield folder, base
    server.shutdown()
    server.server_close()


def register(monkeypatch, base, name, filename, sha256):
    """Point asset `name` at `filename` on the local server (its 'real' URL is a 404 on the same server)."""
    asset = Asset(filename=filename, urls=(f"{base}/origin/{filename}",), sha256=sha256, size=None, description="tiny GPT-2")
    monkeypatch.setitem(assets.ASSETS, name, asset)


def serve_tiny(monkeypatch, mirror, weights, name="gpt2-124M", hashed=True):
    folder, base = mirror
    path = folder / "gpt2-tiny.safetensors"
    save_file(weights, str(path))
    register(monkeypatch, base, name, path.name, sha256_of(path) if hashed else None)
    return path


def test_real_layout_counts():
    """The 124M file's 148 parameter tensors hold 124,439,808 values (SOURCES.md)."""
    shapes = hf_shapes(gpt2_config("124M"))
    assert len(shapes) == 148
    assert sum(math.prod(s) for s in shapes.values()) == 124_439_808


@pytest.mark.parametrize("size", ["124M", "355M"])
def test_full_size_layout_loads(size):
    """The real files' names and shapes (plus one (1, 1, 1024, 1024) mask buffer per layer) fit gpt2_config(size).

    Checked on the meta device: shapes only, no memory.
    """
    cfg = gpt2_config(size)
    with torch.device("meta"):
        model = GPTModel(cfg)
        weights = {name: torch.empty(shape) for name, shape in hf_shapes(cfg).items()}
        weights.update({f"h.{i}.attn.bias": torch.empty(1, 1, 1024, 1024) for i in range(cfg["n_layers"])})
    assert len(weights) == {"124M": 160, "355M": 24 * 13 + 4}[size]
    load_weights_into_gpt(model, weights)


@pytest.mark.parametrize("fast", [True, False])
def test_download_and_load_matches_reference(monkeypatch, mirror, tmp_path, fast):
    weights = hf_weights(gpt2_config("124M", **TINY))
    serve_tiny(monkeypatch, mirror, weights)
    model, config = download_and_load_gpt2("124M", fast_attention=fast, **TINY)
    assert (tmp_path / "data" / "gpt2-tiny.safetensors").is_file()
    assert not model.training and config["emb_dim"] == 32 and config["qkv_bias"]
    torch.manual_seed(123)
    idx = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        logits = model(idx)
    expected = reference_logits(weights, idx, n_heads=4)
    assert logits.shape == (2, 16, 100)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.out_head.weight, weights["wte.weight"])  # head tied to the token embedding


def test_transformer_prefix_and_lm_head_accepted():
    cfg = gpt2_config("124M", **TINY)
    weights = hf_weights(cfg, seed=1)
    prefixed = {"transformer." + k: v for k, v in weights.items()}
    model = GPTModel(cfg).eval()
    load_weights_into_gpt(model, prefixed)
    idx = torch.arange(10).view(1, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference_logits(weights, idx, 4), atol=1e-5, rtol=1e-5)
    lm_head = torch.randn(100, 32)
    load_weights_into_gpt(model, {**prefixed, "lm_head.weight": lm_head})  # an export with an untied head
    assert torch.equal(model.out_head.weight, lm_head)


def test_wrong_shape_names_tensor_and_both_shapes():
    cfg = gpt2_config("124M", **TINY)
    weights = hf_weights(cfg)
    weights["h.1.mlp.c_fc.weight"] = torch.zeros(32, 64)
    model = GPTModel(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.weight.*\(32, 64\).*\(32, 128\)"):
        load_weights_into_gpt(model, weights)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_missing_tensor_named():
    cfg = gpt2_config("124M", **TINY)
    weights = hf_weights(cfg)
    del weights["h.1.ln_2.bias"]
    with pytest.raises(ValueError, match=r"missing tensor h\.1\.ln_2\.bias .*\(32,\)"):
        load_weights_into_gpt(GPTModel(cfg), weights)


def test_unexpected_tensors():
    cfg = gpt2_config("124M", **TINY)
    three_layers = hf_weights(gpt2_config("124M", **{**TINY, "n_layers": 3}))
    with pytest.raises(ValueError, match=r"unexpected tensor h\.2\.ln_1\.weight"):
        load_weights_into_gpt(GPTModel(cfg), three_layers)
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn\.bias.*qkv_bias=True"):
        load_weights_into_gpt(GPTModel({**cfg, "qkv_bias": False}), hf_weights(cfg))


def test_wrong_size_hint():
    """GPT-2 355M's names and shapes against a 124M model: the error says which size the file is."""
    with pytest.raises(ValueError, match=r"(?s)h\.0\.ln_1\.weight: the checkpoint has shape \(1024,\), the model expects \(768,\).*use size='355M'"):
        check_gpt2_weights(hf_shapes(gpt2_config("355M")), gpt2_config("124M"))


def test_fallback_to_checkpoint(monkeypatch, mirror, tmp_path, capsys):
    _, base = mirror
    register(monkeypatch, base, "gpt2-124M", "gpt2-124M.safetensors", "0" * 64)  # nothing served: 404s
    cfg = gpt2_config("124M", **TINY)
    torch.manual_seed(7)
    trained = GPTModel(cfg)
    ckpt = save_checkpoint(tmp_path / "ch05_model.pth", trained, None, config=cfg)
    model, config, source = gpt2_or_fallback("124M", fallback_checkpoint=ckpt, drop_rate=0.2)
    out = capsys.readouterr().out
    assert source == "chapter-5 checkpoint" and not model.training
    assert out.count("\n") == 1 and "OpenAI GPT-2 124M weights unreachable" in out and "ch05_model.pth" in out
    assert str(tmp_path) not in out  # no absolute paths in notebook outputs
    assert config["drop_rate"] == 0.2 and config["emb_dim"] == 32
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    assert not list((tmp_path / "data").glob("*.part"))


def test_fallback_to_random_init(monkeypatch, mirror, tmp_path, capsys):
    _, base = mirror
    register(monkeypatch, base, "gpt2-124M", "gpt2-124M.safetensors", "0" * 64)
    model, config, source = gpt2_or_fallback("124M", fallback_checkpoint=tmp_path / "absent.pth", **TINY)
    out = capsys.readouterr().out
    assert source == "random init" and out.count("\n") == 1 and "random" in out
    torch.manual_seed(123)
    expected = GPTModel(gpt2_config("124M", **TINY))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))


def test_fallback_without_download_and_success(monkeypatch, mirror, capsys):
    def no_fetch(name, **kwargs):
        raise AssertionError("try_download=False must not fetch")

    small = {**gpt2_config("124M", **TINY), "n_layers": 1}
    with monkeypatch.context() as m:
        m.setattr(gpt2, "fetch", no_fetch)
        model, config, source = gpt2_or_fallback("124M", try_download=False, fallback_config=small)
    assert source == "random init" and len(model.trf_blocks) == 1 and config == small
    assert capsys.readouterr().out.count("\n") == 1

    serve_tiny(monkeypatch, mirror, hf_weights(gpt2_config("124M", **TINY)))
    model, config, source = gpt2_or_fallback("124M", **TINY)
    assert source == "OpenAI GPT-2 124M" and capsys.readouterr().out == ""


@pytest.mark.parametrize("min_bytes", [None, 0])
def test_unhashed_asset_checked_and_deleted(monkeypatch, mirror, tmp_path, min_bytes):
    """355M has no pinned sha256: a small or wrong file is refused (size, then names/shapes) and deleted."""
    path = serve_tiny(monkeypatch, mirror, hf_weights(gpt2_config("124M", **TINY)), name="gpt2-355M", hashed=False)
    if min_bytes is not None:
        monkeypatch.setitem(gpt2.MIN_BYTES, "355M", min_bytes)
    why = "bytes, expected over" if min_bytes is None else r"h\.0\.ln_1\.weight.*\(1024,\)"
    with pytest.raises(AssetError, match=rf"(?s)not OpenAI's GPT-2 355M.*{why}.*deleted it"):
        download_and_load_gpt2("355M")
    assert not (tmp_path / "data" / path.name).exists()
