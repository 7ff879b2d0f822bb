"""Chapter 8: from GPT-2 to Llama 3.2 and Qwen3, one module for both families; configs name the differences.

Compared with chapter 4's `GPTModel`: RMSNorm instead of LayerNorm, a SwiGLU feed-forward instead of GELU,
rotary position embeddings (RoPE, with Llama 3's frequency scaling) instead of learned positions, grouped-query
attention (several query heads share one key/value head), Qwen3's RMSNorm of queries and keys, no dropout and no
biases. Weights load from Hugging Face-layout safetensors (`model.layers.0.self_attn.q_proj.weight`, ...) into a
model built on the meta device, one tensor at a time from the memory-mapped file: never two copies in RAM.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .assets import AssetError, fetch
from .attention import append_to_cache
from .checks import check_file, check_token_ids, is_int
from .device import get_device, inference_dtype

LLAMA32_1B = {
    "vocab_size": 128_256,  # Llama 3's tiktoken vocabulary (128,000 BPE tokens + 256 special tokens)
    "context_length": 131_072,  # 128k tokens, reached through the RoPE frequency scaling below
    "emb_dim": 2048,
    "n_heads": 32,  # query heads
    "n_kv_heads": 8,  # key/value heads: each is shared by n_heads // n_kv_heads = 4 query heads (GQA)
    "head_dim": 64,  # emb_dim // n_heads
    "n_layers": 16,
    "hidden_dim": 8192,  # width inside the SwiGLU feed-forward
    "rope_base": 500_000.0,  # RoPE's theta: the slowest pair turns once in 2.08M tokens (67M after the scaling below)
    "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_context_length": 8192},
    "qk_norm": False,  # Llama does not normalise queries and keys
    "norm_eps": 1e-5,
    "tie_embeddings": True,  # the output head shares the token-embedding matrix
}

QWEN3_06B = {
    "vocab_size": 151_936,  # Qwen's byte-level BPE vocabulary (padded)
    "context_length": 40_960,
    "emb_dim": 1024,
    "n_heads": 16,
    "n_kv_heads": 8,  # 2 query heads per key/value head
    "head_dim": 128,  # larger than emb_dim // n_heads = 64: attention is 2048 wide inside
    "n_layers": 28,
    "hidden_dim": 3072,
    "rope_base": 1_000_000.0,
    "rope_scaling": None,  # no frequency scaling
    "qk_norm": True,  # RMSNorm of every query and key head before RoPE
    "norm_eps": 1e-6,
    "tie_embeddings": True,
}

_INT_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_heads", "head_dim", "n_layers", "hidden_dim")
_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_context_length")


def check_llama_config(cfg, where: str = "", names: dict | None = None) -> None:
    """Raise TypeError/ValueError naming the config field that is missing or unusable.

    `names` maps our keys (and rope_scaling's) to the names a file gives them, `where` starts each message
    (llama_config_from_hf: config.json's field names and its path); by default `config['n_heads']`.
    """
    def field(key):
        if names:
            return names[key]
        return f"config[{key!r}]" if key in LLAMA32_1B else f"config['rope_scaling'][{key!r}]"

    if not isinstance(cfg, dict):
        raise TypeError(f"the config must be a dict (start from LLAMA32_1B or QWEN3_06B), got {type(cfg).__name__}")
    missing = sorted(set(LLAMA32_1B) - set(cfg))
    if missing:
        raise ValueError(f"the config lacks {missing}: start from LLAMA32_1B or QWEN3_06B ({{**QWEN3_06B, ...}})")
    for key in _INT_KEYS:
        if not is_int(cfg[key]) or cfg[key] < 1:
            raise ValueError(f"{where}{field(key)} must be a whole number >= 1, got {cfg[key]!r}")
    if cfg["n_heads"] % cfg["n_kv_heads"]:
        raise ValueError(f"{where}{field('n_heads')} ({cfg['n_heads']}) must be a multiple of {field('n_kv_heads')} "
                         f"({cfg['n_kv_heads']}): each key/value head serves the same number of query heads")
    if cfg["head_dim"] % 2:
        raise ValueError(f"{where}{field('head_dim')} must be even (RoPE rotates pairs of numbers), got {cfg['head_dim']}")
    for key in ("qk_norm", "tie_embeddings"):
        if not isinstance(cfg[key], bool):
            raise TypeError(f"{where}{field(key)} must be True or False, got {cfg[key]!r}")
    scaling = cfg["rope_scaling"]
    if scaling is not None and (not isinstance(scaling, dict) or sorted(scaling) != sorted(_SCALING_KEYS)):
        raise ValueError(f"{where}{field('rope_scaling')} must be None or a dict with {list(_SCALING_KEYS)}, got {scaling!r}")
    for key, value in (("rope_base", cfg["rope_base"]), ("norm_eps", cfg["norm_eps"]), *(scaling or {}).items()):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < math.inf:
            raise ValueError(f"{where}{field(key)} must be a number > 0, got {value!r}")


class RMSNorm(nn.Module):
    """Scale every vector of `(..., emb_dim)` to root-mean-square 1, times a learned weight: no mean, no shift."""

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x):
        # x / sqrt(mean(x**2) + eps) in float32, also for bfloat16 inputs: chapter 8 writes it out; torch's fused
        # rms_norm gives the same numbers, bit for bit, in one call instead of six (generation calls it 61 times a token)
        norm_x = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * norm_x.to(x.dtype)


class SwiGLU(nn.Module):
    """fc3(silu(fc1(x)) * fc2(x)): a gated feed-forward, `(batch, num_tokens, emb_dim)` kept."""

    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg["emb_dim"], cfg["hidden_dim"], bias=False)  # gate
        self.fc2 = nn.Linear(cfg["emb_dim"], cfg["hidden_dim"], bias=False)  # up
        self.fc3 = nn.Linear(cfg["hidden_dim"], cfg["emb_dim"], bias=False)  # down

    def forward(self, x):
        return self.fc3(F.silu(self.fc1(x)) * self.fc2(x))


def rope_inv_freq(head_dim, theta_base=10_000.0, freq_config=None):
    """The `head_dim // 2` rotation speeds (radians per position) of RoPE, with Llama 3's scaling if given."""
    inv_freq = 1.0 / theta_base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    if freq_config is None:
        return inv_freq
    factor, low, high = freq_config["factor"], freq_config["low_freq_factor"], freq_config["high_freq_factor"]
    old_context = freq_config["original_context_length"]
    wavelen = 2 * math.pi / inv_freq  # tokens per full turn
    # long wavelengths (slow pairs) are slowed down by `factor`, short ones kept, the middle blended smoothly
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, blended, scaled)


def compute_rope_params(head_dim, theta_base=10_000.0, positions=None, freq_config=None):
    """cos and sin of the rotation angles, each `(num_positions, head_dim)` (float32) for `positions`."""
    inv_freq = rope_inv_freq(head_dim, theta_base, freq_config).to(positions.device)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (num_positions, head_dim // 2)
    angles = torch.cat([angles, angles], dim=-1)  # pair i is (x[i], x[i + head_dim // 2])
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    """Rotate every pair (x[i], x[i + head_dim // 2]) of `x` `(batch, heads, num_tokens, head_dim)`."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # (-x2, x1)
    return (x * cos + rotated * sin).to(x.dtype)


class GroupedQueryAttention(nn.Module):
    """Causal attention where `n_heads // n_kv_heads` query heads share each key/value head; KV cache included."""

    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
        self.context_length = cfg["context_length"]  # the most keys the cache will hold
        self.W_query = nn.Linear(cfg["emb_dim"], self.n_heads * self.head_dim, bias=False)
        self.W_key = nn.Linear(cfg["emb_dim"], self.n_kv_heads * self.head_dim, bias=False)
        self.W_value = nn.Linear(cfg["emb_dim"], self.n_kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(self.n_heads * self.head_dim, cfg["emb_dim"], bias=False)
        if cfg["qk_norm"]:
            self.q_norm = RMSNorm(self.head_dim, eps=cfg["norm_eps"])
            self.k_norm = RMSNorm(self.head_dim, eps=cfg["norm_eps"])
        else:
            self.q_norm = self.k_norm = None
        self.reset_cache()

    def reset_cache(self):
        """Forget the cached keys and values (and free their buffers)."""
        self.cache_k = self.cache_v = self.buffers_kv = None

    def forward(self, x, cos, sin, use_cache=False):
        b, num_tokens, _ = x.shape  # (b, num_tokens, emb_dim)
        queries = self.W_query(x).view(b, num_tokens, self.n_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.n_kv_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:  # Qwen3: every query and key head to RMS 1 (stable attention logits)
            queries, keys = self.q_norm(queries), self.k_norm(keys)
        queries, keys = apply_rope(queries, cos, sin), apply_rope(keys, cos, sin)  # positions enter here
        if use_cache:
            keys, values = append_to_cache(self, keys, values, self.context_length)  # (b, n_kv_heads, num_keys, head_dim)
        num_keys = keys.shape[2]
        # query i sits at position num_keys - num_tokens + i and may see keys up to there; each key/value head serves
        # n_heads // n_kv_heads query heads (enable_gqa: the same as repeat_interleave, without the copies)
        context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=causal_mask(num_tokens, num_keys, x.device),
                                                 is_causal=num_tokens == num_keys > 1, enable_gqa=True)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.n_heads * self.head_dim)
        return self.out_proj(context)  # (b, num_tokens, emb_dim)


def causal_mask(num_tokens, num_keys, device):
    """None where no mask is needed (one new token sees every key; a whole sequence uses is_causal), else
    `(num_tokens, num_keys)`: True where query i (at position num_keys - num_tokens + i) may see key j."""
    if num_tokens == 1 or num_tokens == num_keys:
        return None
    return torch.ones(num_tokens, num_keys, dtype=torch.bool, device=device).tril(num_keys - num_tokens)


class LlamaBlock(nn.Module):
    """x + attn(norm1(x)), then x + ff(norm2(x)), with RMSNorm and SwiGLU; `(batch, num_tokens, emb_dim)` kept."""

    def __init__(self, cfg):
        super().__init__()
        self.att = GroupedQueryAttention(cfg)
        self.ff = SwiGLU(cfg)
        self.norm1 = RMSNorm(cfg["emb_dim"], eps=cfg["norm_eps"])
        self.norm2 = RMSNorm(cfg["emb_dim"], eps=cfg["norm_eps"])

    def forward(self, x, cos, sin, use_cache=False):
        x = x + self.att(self.norm1(x), cos, sin, use_cache=use_cache)
        return x + self.ff(self.norm2(x))


class LlamaModel(nn.Module):
    """Token ids `(batch, num_tokens)` -> next-token logits `(batch, num_tokens, vocab_size)`; Llama 3 or Qwen3."""

    def __init__(self, cfg):
        super().__init__()
        check_llama_config(cfg)
        self.cfg = dict(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.trf_blocks = nn.ModuleList([LlamaBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = RMSNorm(cfg["emb_dim"], eps=cfg["norm_eps"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if cfg["tie_embeddings"]:
            self.out_head.weight = self.tok_emb.weight  # one matrix, used twice
        self.current_pos = 0  # position of the next token when generating with the KV cache
        self.rope_table = None  # (cos, sin) of positions 0..n-1, built at first use (the model may start on "meta")

    def reset_kv_cache(self):
        """Empty every block's KV cache and restart positions at 0."""
        self.current_pos = 0
        for block in self.trf_blocks:
            block.att.reset_cache()

    def rope(self, start, end, device):
        """cos and sin `(end - start, head_dim)` of positions start..end-1, sliced from a table computed once."""
        if self.rope_table is None or self.rope_table[0].shape[0] < end or self.rope_table[0].device != device:
            length = min(max(end, 2 * (0 if self.rope_table is None else self.rope_table[0].shape[0]), 1024),
                         self.cfg["context_length"])
            self.rope_table = compute_rope_params(self.cfg["head_dim"], self.cfg["rope_base"],
                                                  torch.arange(length, device=device), self.cfg["rope_scaling"])
        return self.rope_table[0][start:end], self.rope_table[1][start:end]

    def forward(self, in_idx, use_cache=False):
        start = self.current_pos if use_cache else 0
        check_token_ids(in_idx, self.cfg["vocab_size"], self.cfg["context_length"], cached=start)
        end = start + in_idx.shape[1]
        self.current_pos = end if use_cache else self.current_pos
        cos, sin = self.rope(start, end, in_idx.device)  # (num_tokens, head_dim) each
        x = self.tok_emb(in_idx)  # (batch, num_tokens, emb_dim)
        for block in self.trf_blocks:
            x = block(x, cos, sin, use_cache=use_cache)
        return self.out_head(self.final_norm(x))  # (batch, num_tokens, vocab_size)


def count_unique_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, unique): every use of a parameter counted, and a tied matrix counted once."""
    total = sum(p.numel() for m in model.modules() for p in m.parameters(recurse=False))
    unique = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    return total, unique


# ---- Hugging Face layout -------------------------------------------------------------------------------------

_HF_NAMES = (  # our name pattern -> Hugging Face's
    (r"tok_emb\.", "model.embed_tokens."), (r"final_norm\.", "model.norm."), (r"out_head\.", "lm_head."),
    (r"trf_blocks\.(\d+)\.", r"model.layers.\1."), (r"att\.W_query\.", "self_attn.q_proj."),
    (r"att\.W_key\.", "self_attn.k_proj."), (r"att\.W_value\.", "self_attn.v_proj."),
    (r"att\.out_proj\.", "self_attn.o_proj."), (r"att\.q_norm\.", "self_attn.q_norm."),
    (r"att\.k_norm\.", "self_attn.k_norm."), (r"ff\.fc1\.", "mlp.gate_proj."), (r"ff\.fc2\.", "mlp.up_proj."),
    (r"ff\.fc3\.", "mlp.down_proj."), (r"norm1\.", "input_layernorm."), (r"norm2\.", "post_attention_layernorm."),
)


def hf_name(name: str) -> str:
    """Our parameter name -> Hugging Face's ('trf_blocks.0.att.W_query.weight' -> 'model.layers.0.self_attn.q_proj.weight')."""
    for pattern, replacement in _HF_NAMES:
        name = re.sub(pattern, replacement, name)
    return name


_HF_REQUIRED = ("vocab_size", "max_position_embeddings", "hidden_size", "num_attention_heads", "num_hidden_layers",
                "intermediate_size", "rms_norm_eps")


def _read_json(path, what: str, hint: str = "") -> dict:
    """The JSON object in file `path`; FileNotFoundError or ValueError naming `what` when it is not one."""
    path = check_file(path, what, hint)
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is not JSON ({exc}): download it again") from None
    if not isinstance(found, dict):
        raise ValueError(f"{path.name} holds a {type(found).__name__}, not a JSON object: download it again")
    return found


def read_hf_config(path) -> dict:
    """The dict in a Hugging Face `config.json`; ValueError naming the file when it is not a JSON object."""
    return _read_json(path, "config.json", "is it a Hugging Face model folder?")


_HF_FIELDS = {  # our config key -> config.json's field
    "vocab_size": "vocab_size", "context_length": "max_position_embeddings", "emb_dim": "hidden_size",
    "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads", "n_layers": "num_hidden_layers",
    "hidden_dim": "intermediate_size", "qk_norm": "model_type", "norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings",
}
_HF_SCALING = {"factor": "factor", "low_freq_factor": "low_freq_factor", "high_freq_factor": "high_freq_factor",
               "original_context_length": "original_max_position_embeddings"}  # ours -> Llama 3's rope fields


def llama_config_from_hf(hf: dict, what="config.json") -> dict:
    """Our config dict from a Hugging Face `config.json` of a Llama or Qwen3 model; ValueError naming the
    config.json field and `what` (the file)."""
    if hf.get("model_type") not in ("llama", "qwen3"):
        raise ValueError(f"{what}: model_type {hf.get('model_type')!r} is not supported: this loads 'llama' and 'qwen3'")
    missing = [key for key in _HF_REQUIRED if key not in hf]
    if missing:
        raise ValueError(f"{what} lacks {missing}: is it the complete config.json of the model?")
    for key, ok in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if hf.get(key, ok) != ok:
            raise ValueError(f"{what}: {key}={hf[key]!r} is not supported (the model is built with {key}={ok!r})")
    rope_key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"  # transformers 5 : 4
    rope = hf.get(rope_key) or {}
    if not isinstance(rope, dict):
        raise ValueError(f"{what}: {rope_key} must be an object or null, got {rope!r}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise ValueError(f"{what}: rope_type {rope_type!r} is not supported (only 'default' and 'llama3')")
    n_heads, n_kv_heads, head_dim = hf["num_attention_heads"], hf.get("num_key_value_heads"), hf.get("head_dim")
    if head_dim is None and is_int(hf["hidden_size"]) and is_int(n_heads) and n_heads > 0:
        head_dim = hf["hidden_size"] // n_heads
    cfg = {
        "vocab_size": hf["vocab_size"], "context_length": hf["max_position_embeddings"], "emb_dim": hf["hidden_size"],
        "n_heads": n_heads, "n_kv_heads": n_heads if n_kv_heads is None else n_kv_heads, "head_dim": head_dim,
        "n_layers": hf["num_hidden_layers"], "hidden_dim": hf["intermediate_size"],
        "rope_base": rope.get("rope_theta", hf.get("rope_theta", 10_000.0)),
        "rope_scaling": {ours: rope.get(theirs) for ours, theirs in _HF_SCALING.items()} if rope_type == "llama3" else None,
        "qk_norm": hf["model_type"] == "qwen3", "norm_eps": hf["rms_norm_eps"],
        "tie_embeddings": hf.get("tie_word_embeddings", False),
    }
    names = {**_HF_FIELDS, "head_dim": "head_dim" if "head_dim" in hf else "hidden_size // num_attention_heads",
             "rope_base": f"{rope_key}.rope_theta" if "rope_theta" in rope else "rope_theta", "rope_scaling": rope_key,
             **{ours: f"{rope_key}.{theirs}" for ours, theirs in _HF_SCALING.items()}}
    check_llama_config(cfg, f"{what}: ", names)
    _check_full_attention(hf, cfg["n_layers"], what)
    return {**cfg, "rope_base": float(cfg["rope_base"])}


def _check_full_attention(hf: dict, n_layers: int, what) -> None:
    """ValueError when transformers would mask some layer to a sliding window (Qwen3's use_sliding_window: true)."""
    if not hf.get("use_sliding_window") or hf.get("sliding_window") is None:
        return
    types, first = hf.get("layer_types"), hf.get("max_window_layers", 28)  # transformers' rule when layer_types is absent
    if types is None:
        types = ["full_attention" if is_int(first) and i < first else "sliding_attention" for i in range(n_layers)]
    sliding = [i for i, kind in enumerate(types) if kind != "full_attention"] if isinstance(types, list) else types
    if sliding:
        raise ValueError(f"{what}: use_sliding_window is {hf['use_sliding_window']!r}, so transformers limits layers "
                         f"{sliding} to a window of {hf['sliding_window']} tokens, while this model attends over the whole "
                         "context in every layer: set use_sliding_window to false (as Qwen3's released configs have it) "
                         "or run it with transformers")


def _file_shapes(paths) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Tensor name -> (file, shape) from the headers of `paths` (reads no tensor data)."""
    from safetensors import SafetensorError, safe_open

    found = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                found.update({name: (path, tuple(f.get_slice(name).get_shape())) for name in f.keys()})
        except (SafetensorError, OSError) as exc:
            raise AssetError(f"{path.name} is not a readable safetensors file ({exc}): "
                             "it may be truncated; download it again") from None
    return found


def check_llama_weights(model: LlamaModel, found: dict, file_name=hf_name) -> None:
    """Raise ValueError naming every missing, unexpected or wrong-shaped tensor of the files in `found`
    (keyed by `file_name(our name)`: Hugging Face's names, or GGUF's)."""
    expected = {file_name(name): tuple(p.shape) for name, p in model.named_parameters()}  # a tied head appears once
    tied_head = model.cfg["tie_embeddings"] and file_name("out_head.weight") in found
    problems = []
    for name, shape in expected.items():
        if name not in found:
            hint = " (config['qk_norm'] is True: is this a Llama checkpoint?)" if "_norm." in name and "self_attn" in name else ""
            problems.append(f"missing tensor {name} (the model expects shape {shape}){hint}")
        elif found[name][1] != shape:
            problems.append(f"{name} in {found[name][0].name}: shape {found[name][1]}, the config gives {shape}")
    for name, (path, shape) in found.items():
        if name not in expected and not (tied_head and name == file_name("out_head.weight")):
            hint = " (config['qk_norm'] is False: is this a Qwen3 checkpoint?)" if "_norm." in name else ""
            problems.append(f"unexpected tensor {name} {shape} in {path.name}: the model has no such parameter{hint}")
    if problems:
        shown = "\n  ".join(problems[:6]) + (f"\n  ... and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ValueError(f"the weights do not fit the config:\n  {shown}")


def _check_tied_head(found: dict) -> None:
    """ValueError when the files hold their own lm_head.weight that differs from the embedding a tied config uses."""
    from safetensors import safe_open

    tensors = []
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        with safe_open(str(found[name][0]), framework="pt") as f:
            tensors.append(f.get_tensor(name))
    emb, head = tensors
    if emb.shape == head.shape and torch.equal(emb, head):
        return  # the same matrix written twice: tying loses nothing
    diff = (f"max difference {(emb.float() - head.float()).abs().max():.3g}" if emb.shape == head.shape
            else f"shape {tuple(head.shape)} vs {tuple(emb.shape)}")
    raise ValueError(f"the config ties the output head to the embedding (config['tie_embeddings'], config.json's "
                     f"tie_word_embeddings: true), but "
                     f"lm_head.weight in {found['lm_head.weight'][0].name} differs from model.embed_tokens.weight in "
                     f"{found['model.embed_tokens.weight'][0].name} ({diff}): set tie_word_embeddings to false in "
                     "config.json to use the file's lm_head.weight (as transformers does), or delete lm_head.weight from the file")


def load_hf_weights(cfg: dict, paths, device=None, dtype=torch.float32) -> LlamaModel:
    """A `LlamaModel(cfg)` filled from Hugging Face safetensors `paths`: built on the meta device, one tensor at a time."""
    from safetensors import safe_open

    paths = [check_file(p, "safetensors file") for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    device = torch.device(device or "cpu")
    with torch.device("meta"):
        model = LlamaModel(cfg)  # shapes only: no memory, no random init
    found = _file_shapes(paths)
    check_llama_weights(model, found)  # nothing read on error
    if cfg["tie_embeddings"] and "lm_head.weight" in found:
        _check_tied_head(found)
    ours = {hf_name(name): name for name, _ in model.named_parameters()}
    state = {}
    for path in paths:
        with safe_open(str(path), framework="pt", device="cpu") as f:  # memory-mapped: read one tensor at a time
            for name in f.keys():
                if name in ours:
                    state[ours[name]] = f.get_tensor(name).to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=False, assign=True)  # the tensors themselves: no second copy
    if cfg["tie_embeddings"]:
        model.out_head.weight = model.tok_emb.weight
    return model.eval()


# ---- tokenizers and chat templates ----------------------------------------------------------------------------

LLAMA3_PATTERN = (  # Llama 3's pre-tokenizer split (Meta's tokenizer.py)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIAL = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]  # 256 special tokens after the BPE vocabulary


class HFTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` (Qwen3's or SmolLM2's): text <-> ids, special tokens in text recognised."""

    def __init__(self, tok, name: str):
        self.tok, self.name = tok, name

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_text(self, text):
        """Like `encode`, but special-token text (`<|im_end|>`) stays text: what a chat template does with messages."""
        self.tok.encode_special_tokens = True
        try:
            return self.tok.encode(text, add_special_tokens=False).ids
        finally:
            self.tok.encode_special_tokens = False

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def token_id(self, token):
        """The id of a special token; ValueError naming the tokenizer if it has none."""
        token_id = self.tok.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{self.name} has no token {token!r}: is it the tokenizer of this model?")
        return token_id


def read_tokenizer_json(path, what: str = "tokenizer.json") -> HFTokenizer:
    """An HFTokenizer from a `tokenizer.json` file; ValueError naming the file when the library cannot read it."""
    from tokenizers import Tokenizer

    path = check_file(path, what, "pass the tokenizer.json of the model's folder")
    try:
        return HFTokenizer(Tokenizer.from_file(str(path)), path.name)
    except Exception as exc:  # tokenizers raises its own Exception type for a bad file
        raise ValueError(f"{path.name} is not a tokenizer.json the tokenizers library can read ({exc})") from None


def Qwen3Tokenizer(path) -> HFTokenizer:  # noqa: N802 (kept as the name chapter 8 teaches)
    """Qwen3's `tokenizer.json` through Hugging Face's `tokenizers`."""
    return read_tokenizer_json(path, "Qwen3 tokenizer.json")


class Llama3Tokenizer:
    """Llama 3's tiktoken-format `tokenizer.model` (base64 token + rank per line) with its 256 special tokens."""

    def __init__(self, path):
        import base64
        import binascii

        import tiktoken

        self.path = check_file(path, "Llama 3 tokenizer.model", "pass original/tokenizer.model of the model's folder")
        ranks = {}
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error):
                raise ValueError(f"{self.path.name} line {n} is not 'base64-token rank': is it Llama 3's "
                                 "tiktoken-format tokenizer.model?") from None
        specials = {name: len(ranks) + i for i, name in enumerate(LLAMA3_SPECIAL)}
        self.enc = tiktoken.Encoding(self.path.name, pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)

    def encode(self, text):
        return self.enc.encode(text, allowed_special="all")

    def encode_text(self, text):
        """Like `encode`, but special-token text (`<|eot_id|>`) stays text: what a chat template does with messages."""
        return self.enc.encode(text, disallowed_special=())

    def decode(self, ids):
        return self.enc.decode(list(ids))

    def token_id(self, token):
        """The id of a special token such as '<|eot_id|>'."""
        return self.enc.encode_single_token(token)


def _check_messages(messages) -> None:
    """Raise ValueError unless `messages` is a list of {"role": system|user|assistant, "content": str}."""
    if not isinstance(messages, list):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)):
            raise ValueError(f"messages[{i}] must be {{'role': 'system'|'user'|'assistant', 'content': str}}, got {m!r:.120}")


SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # its template's default


class Special(str):
    """A control token in a template's output (`<|im_start|>`): encoded by its id, never spelled as text."""


def encode_pieces(tokenizer, pieces) -> list[int]:
    """Token ids of a template's `pieces`: each `Special` by its id, the text between them with `encode_text`, so a
    message that contains `<|im_end|>` stays text and cannot forge a turn."""
    ids, text = [], ""
    for piece in [*pieces, None]:
        if piece is not None and not isinstance(piece, Special):
            text += piece
            continue
        ids += tokenizer.encode_text(text) if text else []
        text = ""
        if piece is not None:
            ids.append(tokenizer.token_id(piece))
    return ids


class ChatMLTemplate:
    """ChatML turns `<|im_start|>role\\ncontent<|im_end|>\\n` (SmolLM2, Qwen); `system` is added when none is given."""

    def __init__(self, tokenizer, system=None):
        self.tokenizer, self.system = tokenizer, system
        self.stop_ids = {tokenizer.token_id("<|im_end|>"), tokenizer.token_id("<|endoftext|>")}

    def turn(self, message) -> list[str]:
        return [Special("<|im_start|>"), f"{message['role']}\n{message['content']}", Special("<|im_end|>"), "\n"]

    def generation_prompt(self) -> list[str]:
        return [Special("<|im_start|>"), "assistant\n"]

    def pieces(self, messages, add_generation_prompt=True) -> list[str]:
        """The template's output: text, and the control tokens as `Special`."""
        if self.system is not None and messages and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.system}, *messages]
        turns = [piece for m in messages for piece in self.turn(m)]
        return turns + (self.generation_prompt() if add_generation_prompt else [])

    def encode(self, messages, add_generation_prompt=True):
        """messages -> token ids, as the model's own Jinja chat template renders them (message text stays text)."""
        _check_messages(messages)
        return encode_pieces(self.tokenizer, self.pieces(messages, add_generation_prompt))


def split_think(content: str) -> tuple[str, str]:
    """(reasoning, answer) of a Qwen3 answer `<think>reasoning</think>answer`, as Qwen3's template splits it."""
    if "</think>" not in content:
        return "", content
    return (content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n"),
            content.split("</think>")[-1].lstrip("\n"))


class Qwen3ChatTemplate(ChatMLTemplate):
    """Qwen3's ChatML, as its official template: earlier answers lose their <think> part; an answer after the last
    user message keeps it (an empty block when it has none); with thinking=False the prompt opens an empty block."""

    def __init__(self, tokenizer, thinking=False):
        super().__init__(tokenizer)
        self.thinking = thinking

    def pieces(self, messages, add_generation_prompt=True) -> list[str]:
        last_query = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
        turns = []
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                reasoning, content = split_think(m["content"])
                if i > last_query and (i == len(messages) - 1 or reasoning):
                    content = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{content.lstrip(chr(10))}"
                m = {**m, "content": content}
            turns += self.turn(m)
        return turns + (self.generation_prompt() if add_generation_prompt else [])

    def generation_prompt(self) -> list[str]:
        return [Special("<|im_start|>"), "assistant\n" + ("" if self.thinking else "<think>\n\n</think>\n\n")]


def default_system_message(jinja: str | None) -> str | None:
    """The system message a ChatML Jinja template adds when the messages have none (SmolLM2's), else None."""
    if not jinja or "!= 'system'" not in jinja:
        return None
    found = re.search(r"'<\|im_start\|>system\n(.*?)<\|im_end\|>", jinja, flags=re.S)
    return found.group(1) if found else None


class Llama3ChatTemplate:
    """Llama 3's turns: `<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>` after `<|begin_of_text|>`."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.stop_ids = {tokenizer.token_id(t) for t in ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")}

    def encode(self, messages, add_generation_prompt=True):
        """messages -> token ids (no default system message with dates, unlike Meta's Llama 3.2 template)."""
        _check_messages(messages)
        pieces = [Special("<|begin_of_text|>")]
        for role, content in [(m["role"], m["content"].strip()) for m in messages] + (
                [("assistant", None)] if add_generation_prompt else []):
            pieces += [Special("<|start_header_id|>"), role, Special("<|end_header_id|>"), "\n\n"]
            pieces += [content, Special("<|eot_id|>")] if content is not None else []
        return encode_pieces(self.tokenizer, pieces)


# ---- one call: name or folder -> (model, chat template) ------------------------------------------------------

PRETRAINED = {  # name -> (config, weights, tokenizer) assets, or the one GGUF file that holds all three
    "smollm2-135m": ("smollm2-135m",),
    "qwen3-0.6b": ("qwen3-0.6b-config", "qwen3-0.6b", "qwen3-0.6b-tokenizer"),
}


def _index_shards(index: Path) -> list[Path]:
    """The shard files a sharded checkpoint's `model.safetensors.index.json` names ([] without one); each must be there."""
    if not index.is_file():
        return []
    weight_map = _read_json(index, index.name).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(shard, str) and Path(shard).name == shard for shard in weight_map.values()):
        raise ValueError(f"{index} has no weight_map of tensor name -> shard file name: download it again")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not (index.parent / shard).is_file():
            tensors = [name for name, file in weight_map.items() if file == shard]
            raise FileNotFoundError(f"{index.parent / shard} not found: {index.name} puts {len(tensors)} of its tensors in it "
                                    f"({tensors[0]}, ...); download {shard} into {index.parent}")
    return [index.parent / shard for shard in shards]


def _folder_files(folder: Path, model_type: str):
    """(safetensors files, tokenizer file) of a Hugging Face model folder."""
    weights = _index_shards(folder / "model.safetensors.index.json") or sorted(folder.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{folder} holds no *.safetensors file: download the model's weights into it")
    names = ("tokenizer.json",) if model_type == "qwen3" else ("original/tokenizer.model", "tokenizer.model", "tokenizer.json")
    for name in names:
        if (folder / name).is_file():
            return weights, folder / name
    raise FileNotFoundError(f"{folder} holds no {' or '.join(names)}: download the model's tokenizer into it")


def _folder_template(folder: Path, model_type: str, tokenizer_path: Path):
    """The chat template of a Hugging Face folder: Qwen3's, Llama 3's, or ChatML (SmolLM2) for a Llama with tokenizer.json."""
    if model_type == "qwen3":
        return Qwen3ChatTemplate(Qwen3Tokenizer(tokenizer_path))
    if tokenizer_path.suffix == ".model":
        return Llama3ChatTemplate(Llama3Tokenizer(tokenizer_path))
    tokenizer = read_tokenizer_json(tokenizer_path)
    if tokenizer.tok.token_to_id("<|im_start|>") is None:
        raise ValueError(f"{tokenizer_path} has no <|im_start|> token: only ChatML models (SmolLM2) are read from a "
                         "Llama folder's tokenizer.json; for Llama 3 add original/tokenizer.model")
    settings = folder / "tokenizer_config.json"
    jinja = json.loads(settings.read_text(encoding="utf-8")).get("chat_template") if settings.is_file() else None
    return ChatMLTemplate(tokenizer, system=default_system_message(jinja if isinstance(jinja, str) else None))


def load_pretrained(name_or_folder, device=None, dtype=None):
    """(model in eval mode, chat template) for "smollm2-135m" (fetched once, about 100 MB; offline afterwards),
    "qwen3-0.6b", a llama.cpp .gguf file, or a local Hugging Face folder of a Llama 3, SmolLM2 or Qwen3 model.

    dtype None: `inference_dtype(device)` (bfloat16 on a CUDA or MPS GPU that has it, else float32). AssetUnavailable
    when the files cannot be fetched.
    """
    device = get_device() if device is None else torch.device(device)
    dtype = inference_dtype(device) if dtype is None else dtype
    if name_or_folder == "smollm2-135m" or str(name_or_folder).endswith(".gguf"):
        from .gguf_reader import load_gguf  # reads the file with the gguf package

        return load_gguf(fetch("smollm2-135m") if name_or_folder == "smollm2-135m" else name_or_folder, device, dtype)
    if name_or_folder in PRETRAINED:
        config_path, weights_path, tokenizer_path = (fetch(asset) for asset in PRETRAINED[name_or_folder])
        hf, weights, folder = read_hf_config(config_path), [weights_path], config_path.parent
        cfg = llama_config_from_hf(hf, config_path)
    else:
        folder = Path(name_or_folder)
        if not folder.is_dir():
            raise ValueError(f"{name_or_folder!r} is neither a known model ({', '.join(PRETRAINED)}), a .gguf file "
                             "nor a folder")
        hf = read_hf_config(folder / "config.json")
        cfg = llama_config_from_hf(hf, folder / "config.json")  # an unsupported model is named before any file is looked for
        weights, tokenizer_path = _folder_files(folder, hf["model_type"])
    model = load_hf_weights(cfg, weights, device=device, dtype=dtype)
    return model, _folder_template(folder, hf["model_type"], tokenizer_path)
