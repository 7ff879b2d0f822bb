"""Chapter 5: OpenAI's GPT-2 weights (Hugging Face safetensors) loaded into `GPTModel`.

The file holds Hugging Face's tensor names (`wte.weight`, `h.0.attn.c_attn.weight`, ...). GPT-2 used
`Conv1D` layers that store weights as `(in, out)`, so every one is transposed into `nn.Linear`'s
`(out, in)`; `c_attn` holds query, key and value side by side and is split in that order.
No TensorFlow and no `transformers`: only `safetensors`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .assets import ASSETS, REPO_ROOT, AssetError, AssetUnavailable, fetch
from .checkpoint import CheckpointError, check_fits, read_checkpoint
from .model import MODEL_SIZES, GPTModel, gpt2_config

GPT2_ASSETS = {"124M": "gpt2-124M", "355M": "gpt2-355M"}  # size -> name in utils.assets.ASSETS
# Files without a pinned sha256 must at least be this large (the real 355M file is about 1.52 GB).
MIN_BYTES = {"355M": 1_000_000_000}
SHAPE_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias")
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers in the file: not weights


def hf_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter tensor a GPT-2 safetensors file holds for model config `cfg`."""
    e, v, c = cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"]
    shapes = {"wte.weight": (v, e), "wpe.weight": (c, e), "ln_f.weight": (e,), "ln_f.bias": (e,)}
    for i in range(cfg["n_layers"]):
        h = f"h.{i}."
        shapes.update({
            h + "ln_1.weight": (e,), h + "ln_1.bias": (e,),
            h + "attn.c_attn.weight": (e, 3 * e),  # Conv1D: (in, out), out = query | key | value
            h + "attn.c_proj.weight": (e, e), h + "attn.c_proj.bias": (e,),
            h + "ln_2.weight": (e,), h + "ln_2.bias": (e,),
            h + "mlp.c_fc.weight": (e, 4 * e), h + "mlp.c_fc.bias": (4 * e,),
            h + "mlp.c_proj.weight": (4 * e, e), h + "mlp.c_proj.bias": (e,),
        })
        if cfg["qkv_bias"]:
            shapes[h + "attn.c_attn.bias"] = (3 * e,)
    return shapes


def _config_of(model: GPTModel) -> dict:
    """The shape-defining config keys of a built `GPTModel`."""
    att = model.trf_blocks[0].att if len(model.trf_blocks) else None
    return {
        "vocab_size": model.tok_emb.num_embeddings,
        "context_length": model.pos_emb.num_embeddings,
        "emb_dim": model.tok_emb.embedding_dim,
        "n_layers": len(model.trf_blocks),
        "qkv_bias": att is not None and att.W_query.bias is not None,
    }


def _strip(weights: dict) -> dict:
    """Drop an optional 'transformer.' prefix and the attention-mask buffers."""
    out = {}
    for name, tensor in weights.items():
        name = name.removeprefix("transformer.")
        if not _BUFFER.fullmatch(name):
            out[name] = tensor
    return out


def _size_hint(shapes: dict[str, tuple[int, ...]], cfg: dict) -> str:
    """What the checkpoint looks like, e.g. "this looks like GPT-2 355M: use size='355M'"."""
    if "wte.weight" not in shapes:
        return "the file holds no wte.weight: is it a GPT-2 checkpoint in Hugging Face's layout?"
    v, e = shapes["wte.weight"]
    layers = {int(m.group(1)) for name in shapes if (m := re.match(r"h\.(\d+)\.", name))}
    n_layers = max(layers) + 1 if layers else 0
    c = shapes.get("wpe.weight", (None,))[0]
    for size, dims in MODEL_SIZES.items():
        if dims["emb_dim"] == e and dims["n_layers"] == n_layers and (e, n_layers) != (cfg["emb_dim"], cfg["n_layers"]):
            return f"this looks like GPT-2 {size}: use size='{size}' (gpt2_config('{size}'))"
    if (n_layers, e, v, c) == (cfg["n_layers"], cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"]):
        return "its sizes match the model's, so the file is damaged or not in GPT-2's Hugging Face layout"
    return (
        f"the checkpoint has {n_layers} layers, emb_dim {e}, vocab_size {v}, context_length {c}: "
        "build the model from a config that matches (gpt2_config(size) for OpenAI's files)"
    )


def check_gpt2_weights(shapes: dict[str, tuple[int, ...]], cfg: dict) -> None:
    """Raise ValueError naming every missing, unexpected or wrong-shaped tensor (names without prefix/buffers)."""
    expected = hf_shapes(cfg)
    problems = []
    for name, shape in expected.items():
        if name not in shapes:
            problems.append(f"missing tensor {name} (the model expects shape {shape})")
        elif tuple(shapes[name]) != shape:
            problems.append(f"{name}: the checkpoint has shape {tuple(shapes[name])}, the model expects {shape}")
    for name, shape in shapes.items():
        if name == "lm_head.weight" and tuple(shape) == expected["wte.weight"]:
            continue  # an untied output head (some exports hold one): loaded into out_head
        if name not in expected:
            why = " (the model has qkv_bias=False; GPT-2's weights need qkv_bias=True)" if name.endswith("c_attn.bias") else ""
            problems.append(f"unexpected tensor {name} of shape {tuple(shape)}: the model has no such parameter{why}")
    if problems:
        shown = "\n  ".join(problems[:6]) + (f"\n  ... and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ValueError(f"the weights do not fit the model:\n  {shown}\nHint: {_size_hint(shapes, cfg)}")


def load_weights_into_gpt(model: GPTModel, weights: dict[str, torch.Tensor]) -> None:
    """Copy HF GPT-2 tensors (`{name: tensor}`, Conv1D `(in, out)`) into `model`; every name and shape is checked first."""
    weights = _strip(weights)
    check_gpt2_weights({k: tuple(t.shape) for k, t in weights.items()}, _config_of(model))  # nothing copied on error
    e = model.tok_emb.embedding_dim
    with torch.no_grad():
        model.tok_emb.weight.copy_(weights["wte.weight"])  # (vocab_size, emb_dim)
        model.pos_emb.weight.copy_(weights["wpe.weight"])  # (context_length, emb_dim)
        for i, block in enumerate(model.trf_blocks):
            h = f"h.{i}."
            att, ff = block.att, block.ff.layers
            q, k, v = torch.split(weights[h + "attn.c_attn.weight"], e, dim=-1)  # each (emb_dim in, emb_dim out)
            att.W_query.weight.copy_(q.T)
            att.W_key.weight.copy_(k.T)
            att.W_value.weight.copy_(v.T)
            if att.W_query.bias is not None:
                qb, kb, vb = torch.split(weights[h + "attn.c_attn.bias"], e, dim=-1)
                att.W_query.bias.copy_(qb)
                att.W_key.bias.copy_(kb)
                att.W_value.bias.copy_(vb)
            att.out_proj.weight.copy_(weights[h + "attn.c_proj.weight"].T)
            att.out_proj.bias.copy_(weights[h + "attn.c_proj.bias"])
            ff[0].weight.copy_(weights[h + "mlp.c_fc.weight"].T)  # (4 * emb_dim, emb_dim)
            ff[0].bias.copy_(weights[h + "mlp.c_fc.bias"])
            ff[2].weight.copy_(weights[h + "mlp.c_proj.weight"].T)  # (emb_dim, 4 * emb_dim)
            ff[2].bias.copy_(weights[h + "mlp.c_proj.bias"])
            block.norm1.scale.copy_(weights[h + "ln_1.weight"])
            block.norm1.shift.copy_(weights[h + "ln_1.bias"])
            block.norm2.scale.copy_(weights[h + "ln_2.weight"])
            block.norm2.shift.copy_(weights[h + "ln_2.bias"])
        model.final_norm.scale.copy_(weights["ln_f.weight"])
        model.final_norm.shift.copy_(weights["ln_f.bias"])
        # GPT-2 ties its output head to the token embedding; as in the book, out_head starts as a copy of wte.
        model.out_head.weight.copy_(weights.get("lm_head.weight", weights["wte.weight"]))


def _check_unhashed(path: Path, size: str) -> None:
    """Identity check for a file with no pinned sha256: its size and every tensor name/shape.

    The 355M file's sha256 could not be confirmed when this was written, so a wrong or damaged file
    (an HTML error page, a different model) would otherwise pass `fetch`. A file that fails is deleted
    so the next call downloads a fresh copy.
    """
    problem = None
    minimum = MIN_BYTES.get(size, 0)
    if path.stat().st_size < minimum:
        problem = f"it has {path.stat().st_size} bytes, expected over {minimum}"
    else:
        try:
            with safe_open(str(path), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            check_gpt2_weights(_strip(shapes), gpt2_config(size))
        except (SafetensorError, OSError, ValueError) as exc:
            problem = str(exc).splitlines()[0] if not isinstance(exc, ValueError) else str(exc)
    if problem:
        path.unlink(missing_ok=True)
        raise AssetError(f"{path.name} is not OpenAI's GPT-2 {size} safetensors file ({problem}); deleted it, run again")


def download_and_load_gpt2(size: str = "124M", **config_overrides) -> tuple[GPTModel, dict]:
    """Fetch OpenAI's GPT-2 `size` weights and return `(model in eval mode, config)`; AssetError if unreachable."""
    if size not in GPT2_ASSETS:
        raise ValueError(f"no GPT-2 {size!r} weights are registered: choose one of {', '.join(GPT2_ASSETS)}")
    config = gpt2_config(size, **config_overrides)
    path = fetch(GPT2_ASSETS[size])
    if ASSETS[GPT2_ASSETS[size]].sha256 is None:
        _check_unhashed(path, size)
    try:
        weights = load_file(str(path))
    except SafetensorError as exc:
        raise AssetError(f"{path} is not a readable safetensors file ({exc}): delete it and run again") from None
    model = GPTModel(config)
    load_weights_into_gpt(model, weights)
    model.eval()
    return model, config


def _shown(path: Path) -> str:
    """`path` relative to the repository (no absolute paths in notebook outputs), else its name."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.name


def _why_unreachable(exc: AssetUnavailable) -> str:
    """'huggingface.co: <urlopen error [Errno -3] ...>' for each real source tried, shortened to one line."""
    mirror = os.environ.get("LLM_ASSET_MIRROR", "").strip().rstrip("/")  # a local test set-up, not a source to name
    real = [(url, why) for url, why in exc.reasons if not (mirror and url.startswith(mirror + "/"))] or exc.reasons
    parts = [f"{urllib.parse.urlparse(url).hostname or url}: {why}" for url, why in real] or [str(exc)]
    text = "; ".join(" ".join(part.split()) for part in parts)
    return text if len(text) <= 200 else text[:197] + "..."


def gpt2_or_fallback(
    size: str = "124M", *, try_download=True, fallback_checkpoint=None, fallback_config=None, **config_overrides
) -> tuple[GPTModel, dict, str]:
    """OpenAI's GPT-2 `size` if reachable, else a `save_checkpoint` file with a config, else a seeded random init.

    Falls back only when the weights cannot be downloaded (offline, server errors), and then prints one line
    saying why; a damaged file already in the data folder raises instead. The checkpoint is read with
    `torch.load(weights_only=True)`: a file that would run code is refused. Returns `(model in eval mode,
    config, source)` with source one of "OpenAI GPT-2 <size>", "chapter-5 checkpoint", "random init".
    """
    if size not in GPT2_ASSETS:
        raise ValueError(f"no GPT-2 {size!r} weights are registered: choose one of {', '.join(GPT2_ASSETS)}")
    why = "try_download=False"
    if try_download:
        try:
            model, config = download_and_load_gpt2(size, **config_overrides)
            return model, config, f"OpenAI GPT-2 {size}"
        except AssetUnavailable as exc:  # only "cannot be reached": a bad file in data/ raises
            why = _why_unreachable(exc)
    ckpt = Path(fallback_checkpoint) if fallback_checkpoint is not None else None
    missing = ""
    if ckpt is not None and ckpt.is_file():
        payload = read_checkpoint(ckpt, map_location="cpu")
        if not isinstance(payload.get("config"), dict):
            raise CheckpointError(
                f"{_shown(ckpt)} holds no model config: save it with save_checkpoint(path, model, config=cfg)"
            )
        # settings that change no parameter shape (e.g. drop_rate) may be overridden
        config = {**payload["config"], **{k: v for k, v in config_overrides.items() if k not in SHAPE_KEYS}}
        model = GPTModel(config)
        check_fits(_shown(ckpt), payload, model)
        model.load_state_dict(payload["model_state_dict"])
        source, label = "chapter-5 checkpoint", f"the chapter-5 checkpoint {_shown(ckpt)}"
    else:
        if ckpt is not None:
            missing = f" (there is no {_shown(ckpt)} yet: chapter 5 writes it)"
        config = dict(fallback_config) if fallback_config is not None else gpt2_config(size, **config_overrides)
        torch.manual_seed(123)
        model = GPTModel(config)
        source, label = "random init", f"a randomly initialised model (seed 123){missing}"
    if try_download:
        print(f"OpenAI GPT-2 {size} weights unreachable ({why}); continuing on {label} instead.")
    else:
        print(f"Not downloading the OpenAI GPT-2 {size} weights (try_download=False); using {label}.")
    model.eval()
    return model, config, source
