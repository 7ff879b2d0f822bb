"""Chapter 8: reading llama.cpp's GGUF files (SmolLM2-135M-Instruct, 4-bit) into chapter 8's `LlamaModel`.

The container (header, metadata, tensor table) is read by the `gguf` package, llama.cpp's own reader; what is
taught is written out here: dequantizing Q8_0 and Q4_1 blocks of 32 numbers, putting back the row order of the
query and key weights that llama.cpp's converter changes for its RoPE, and mapping GGUF's tensor names to ours.
The model is built on the meta device and filled one tensor at a time: never a second float32 copy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .checks import check_file
from .llama import ChatMLTemplate, HFTokenizer, LlamaModel, check_llama_weights, default_system_message

BLOCK = 32  # numbers per quantized block, in Q8_0 and Q4_1 alike
GGUF_NAMES = {  # GGUF's name in block N (or at the top) -> ours
    "token_embd": "tok_emb", "output_norm": "final_norm", "output": "out_head",
    "attn_q": "att.W_query", "attn_k": "att.W_key", "attn_v": "att.W_value", "attn_output": "att.out_proj",
    "attn_q_norm": "att.q_norm", "attn_k_norm": "att.k_norm",
    "ffn_gate": "ff.fc1", "ffn_up": "ff.fc2", "ffn_down": "ff.fc3", "attn_norm": "norm1", "ffn_norm": "norm2",
}


class GGUFError(ValueError):
    """A GGUF file this reader cannot use; the message names the file, the tensor or field, and what to do."""


def our_name(gguf_name: str) -> str:
    """'blk.3.attn_q.weight' -> 'trf_blocks.3.att.W_query.weight'; 'token_embd.weight' -> 'tok_emb.weight'."""
    found = re.fullmatch(r"(?:blk\.(\d+)\.)?(\w+)\.(weight|bias)", gguf_name)
    if not found or found.group(2) not in GGUF_NAMES:
        return gguf_name  # reported as an unexpected tensor by the weight check
    block, part, kind = found.groups()
    return (f"trf_blocks.{block}." if block is not None else "") + f"{GGUF_NAMES[part]}.{kind}"


def gguf_name(ours: str) -> str:
    """Our parameter name -> GGUF's ('trf_blocks.3.att.W_query.weight' -> 'blk.3.attn_q.weight')."""
    to_gguf = {mine: theirs for theirs, mine in GGUF_NAMES.items()}
    found = re.fullmatch(r"(?:trf_blocks\.(\d+)\.)?(.+)\.(weight|bias)", ours)
    block, part, kind = found.groups()
    return (f"blk.{block}." if block is not None else "") + f"{to_gguf[part]}.{kind}"


def dequantize_q8_0(data: np.ndarray, rows: int) -> torch.Tensor:
    """Q8_0: each block is a float16 scale + 32 int8 numbers; value = scale * q. `(rows, columns)` float32."""
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, 2 + BLOCK)  # (n_blocks, 34) bytes
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    q = blocks[:, 2:].view(np.int8).astype(np.float32)  # (n_blocks, 32)
    return torch.from_numpy(scale * q).reshape(rows, -1)


def dequantize_q4_1(data: np.ndarray, rows: int) -> torch.Tensor:
    """Q4_1: a float16 scale and minimum + 16 bytes of 4-bit q (0..15); value = scale * q + minimum."""
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, 4 + BLOCK // 2)  # (n_blocks, 20) bytes
    scale = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    minimum = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    packed = blocks[:, 4:]  # byte j holds number j (low 4 bits) and number j + 16 (high 4 bits)
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)  # (n_blocks, 32)
    return torch.from_numpy(scale * q + minimum).reshape(rows, -1)


DEQUANTIZE = {"Q8_0": dequantize_q8_0, "Q4_1": dequantize_q4_1}


def tensor_values(tensor, path: Path) -> torch.Tensor:
    """One GGUF tensor as float32 in PyTorch's shape order (GGUF lists the fastest-changing dimension first)."""
    shape = tuple(int(n) for n in reversed(tensor.shape))
    kind = tensor.tensor_type.name
    if kind in ("F32", "F16"):
        return torch.from_numpy(np.array(tensor.data, dtype=np.float32)).reshape(shape)
    if kind not in DEQUANTIZE:
        raise GGUFError(f"{path.name}: tensor {tensor.name} is stored as {kind}, which this reader does not read "
                        "(it reads F32, F16, Q8_0 and Q4_1): use a Q8_0 or Q4_1 conversion, or the Hugging Face folder")
    return DEQUANTIZE[kind](tensor.data, shape[0]).reshape(shape)


def unpermute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row order for a query or key weight `(n_heads * head_dim, emb_dim)`.

    llama.cpp rotates neighbouring numbers (x0, x1), (x2, x3), ... so its converter interleaved each head's two
    halves; our RoPE (and Hugging Face's) rotates x[i] with x[i + head_dim // 2]: put the halves back.
    """
    rows, cols = weight.shape
    return weight.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def read_gguf(path):
    """A `gguf.GGUFReader` over `path` (memory-mapped); GGUFError naming the file if it is not a complete GGUF."""
    from gguf import GGUFReader

    path = check_file(path, "GGUF file", "fetch it with utils.fetch('smollm2-135m')")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors ... for a damaged file
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise GGUFError(f"{path.name} is not a readable GGUF file ({first}): it may be truncated or another kind "
                        "of file; delete it and fetch it again") from None
    for tensor in reader.tensors:  # a truncated file yields short memory maps instead of an error
        if tensor.data.nbytes != int(tensor.n_bytes):
            raise GGUFError(f"{path.name} is truncated: tensor {tensor.name} has {tensor.data.nbytes} of its "
                            f"{int(tensor.n_bytes)} bytes; delete the file and fetch it again")
    return reader


def field(reader, key: str, path: Path, default=None):
    """The value of metadata field `key`; GGUFError naming it when it is missing and has no default."""
    if key in reader.fields:
        return reader.fields[key].contents()
    if default is None:
        raise GGUFError(f"{path.name} lacks the metadata field {key!r}: is it a complete llama.cpp conversion?")
    return default


def llama_config_from_gguf(reader, path: Path) -> dict:
    """Our config dict from a GGUF's `llama.*` metadata (the same keys as chapter 8's LLAMA32_1B)."""
    arch = field(reader, "general.architecture", path)
    if arch != "llama":
        raise GGUFError(f"{path.name} holds a {arch!r} model: this reader builds 'llama' models (SmolLM2, Llama)")
    if field(reader, "llama.rope.scaling.type", path, "none") not in ("none", "linear") or any(
            t.name == "rope_freqs.weight" for t in reader.tensors):
        raise GGUFError(f"{path.name} uses a RoPE frequency scaling this reader does not build: load the model's "
                        "Hugging Face folder with load_pretrained(folder) instead")
    emb_dim, n_heads = int(field(reader, "llama.embedding_length", path)), int(field(reader, "llama.attention.head_count", path))
    names = {t.name for t in reader.tensors}
    return {
        "vocab_size": len(field(reader, "tokenizer.ggml.tokens", path)),
        "context_length": int(field(reader, "llama.context_length", path)),
        "emb_dim": emb_dim, "n_heads": n_heads,
        "n_kv_heads": int(field(reader, "llama.attention.head_count_kv", path, n_heads)),
        "head_dim": int(field(reader, "llama.rope.dimension_count", path, emb_dim // n_heads)),
        "n_layers": int(field(reader, "llama.block_count", path)),
        "hidden_dim": int(field(reader, "llama.feed_forward_length", path)),
        "rope_base": float(field(reader, "llama.rope.freq_base", path, 10_000.0)),
        "rope_scaling": None, "qk_norm": False,
        "norm_eps": float(f"{field(reader, 'llama.attention.layer_norm_rms_epsilon', path):.6g}"),  # stored as float32
        "tie_embeddings": "output.weight" not in names,  # no separate head: it reuses the embedding
    }


def load_gguf_model(path, device=None, dtype=torch.float32) -> tuple[LlamaModel, object]:
    """(LlamaModel in eval mode, the GGUF reader) from a llama.cpp GGUF file: dequantized, rows put back, names mapped."""
    reader = read_gguf(path)
    path = Path(path)
    cfg = llama_config_from_gguf(reader, path)
    with torch.device("meta"):
        model = LlamaModel(cfg)  # shapes only: no memory, no random init
    found = {t.name: (path, tuple(int(n) for n in reversed(t.shape))) for t in reader.tensors}
    check_llama_weights(model, found, gguf_name)  # every missing, unexpected or wrong-shaped tensor named; nothing read yet
    state = {}
    for tensor in reader.tensors:
        name, values = our_name(tensor.name), tensor_values(tensor, path)
        if name.endswith("W_query.weight"):
            values = unpermute_qk(values, cfg["n_heads"])
        elif name.endswith("W_key.weight"):
            values = unpermute_qk(values, cfg["n_kv_heads"])
        state[name] = values.to(device=device or "cpu", dtype=dtype)
    model.load_state_dict(state, strict=False, assign=True)
    if cfg["tie_embeddings"]:
        model.out_head.weight = model.tok_emb.weight
    return model.eval(), reader


PRE_TOKENIZERS = {"smollm": True, "gpt2": False}  # GGUF's tokenizer.ggml.pre -> digits split one by one first?


def gguf_tokenizer(reader, path: Path):
    """A `tokenizers.Tokenizer` from a GGUF's byte-level BPE metadata: vocabulary, merges, control tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    model, pre = field(reader, "tokenizer.ggml.model", path), field(reader, "tokenizer.ggml.pre", path, "gpt2")
    if model != "gpt2" or pre not in PRE_TOKENIZERS:
        raise GGUFError(f"{path.name}: tokenizer {model!r} with pre-tokenizer {pre!r} is not one this reader builds "
                        f"(byte-level BPE 'gpt2' with {sorted(PRE_TOKENIZERS)}): use the model's tokenizer.json")
    tokens, kinds = field(reader, "tokenizer.ggml.tokens", path), field(reader, "tokenizer.ggml.token_type", path)
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges", path)]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's split, bytes as letters
    split = [pre_tokenizers.Digits(individual_digits=True), byte_level] if PRE_TOKENIZERS[pre] else [byte_level]
    tok.pre_tokenizer = pre_tokenizers.Sequence(split)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, kind in zip(tokens, kinds) if kind == 3])  # 3: control tokens (<|im_end|>, ...)
    return tok


def load_gguf(path, device=None, dtype=torch.float32):
    """(LlamaModel in eval mode, ChatMLTemplate) from a llama.cpp GGUF file: weights, tokenizer and chat template."""
    model, reader = load_gguf_model(path, device=device, dtype=dtype)
    path = Path(path)
    tokenizer = HFTokenizer(gguf_tokenizer(reader, path), path.name)
    jinja = field(reader, "tokenizer.chat_template", path, "")
    if "<|im_start|>" not in jinja:
        raise GGUFError(f"{path.name}: its chat template is not ChatML (<|im_start|>role ...), the one this reader "
                        "builds (SmolLM2's): load the model's Hugging Face folder instead")
    return model, ChatMLTemplate(tokenizer, system=default_system_message(jinja))


# GPT-2's split (Hugging Face's form) after SmolLM's first step, which cuts every digit out on its own: digits one by
# one, and the whitespace before a digit kept whole (it ended a piece there)
SMOLLM_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""


def gguf_bpe_tokenizer(reader, path: Path):
    """(`utils.bpe.BPETokenizer`, `ids`) from a GGUF's vocabulary and merges: chapter 2b's tokenizer on SmolLM2's
    merges, splitting every text into the same tokens; `ids[our_id]` is the GGUF's id of the same token."""
    from .bpe import BPETokenizer, bytes_to_unicode

    tokens, kinds = field(reader, "tokenizer.ggml.tokens", path), field(reader, "tokenizer.ggml.token_type", path)
    char_byte = {c: b for b, c in bytes_to_unicode().items()}
    present = [i for i, t in enumerate(tokens) if kinds[i] == 1 and len(t) == 1 and t in char_byte]  # byte tokens
    byte_order = [char_byte[tokens[i]] for i in present]
    byte_order += sorted(set(range(256)) - set(byte_order))  # bytes the vocabulary never uses come last
    ours = {tokens[i]: k for k, i in enumerate(present)}
    merges = []
    for merge in field(reader, "tokenizer.ggml.merges", path):
        left, right = merge.split(" ")
        merges.append((ours[left], ours[right]))
        ours[left + right] = 256 + len(merges) - 1
    specials = [t for t, kind in zip(tokens, kinds) if kind == 3]
    bpe = BPETokenizer(merges, specials, name=path.stem, byte_order=byte_order, pattern=SMOLLM_PATTERN)
    gguf_id = {t: i for i, t in enumerate(tokens)}
    ids = [gguf_id.get(tok, -1) for tok in [*ours, *specials]]  # -1: a byte SmolLM2 never uses
    missing_bytes = 256 - len(present)
    return bpe, ids[: len(present)] + [-1] * missing_bytes + ids[len(present):]
