"""Appendix E: LoRA (low-rank adaptation). Train a small update `x @ A @ B` beside each frozen linear layer.

`replace_linear_with_lora(model, rank, alpha)` wraps every `nn.Linear` of a model (attention projections, both
feed-forward layers, the output head) in `LinearWithLoRA`; `merge_lora` folds the updates back into plain
linear layers; `save_lora` / `load_lora` keep only the LoRA tensors (plus, say, a classifier head) in a small
safetensors file.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from .checks import atomic_write

LORA_FORMAT = "llm-from-scratch-lora-v1"


class LoRALayer(nn.Module):
    """The low-rank update alone: `(..., in_dim) -> (alpha / rank) * x @ A @ B`, shape `(..., out_dim)`.

    A `(in_dim, rank)` starts Kaiming-uniform (as the book initialises it), B `(rank, out_dim)` at zero,
    so the update is zero until training changes B.
    """

    def __init__(self, in_dim, out_dim, rank, alpha, *, device=None, dtype=None):
        super().__init__()
        self.A = nn.Parameter(torch.empty(in_dim, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # the book's choice: like nn.Linear's own weights
        self.B = nn.Parameter(torch.zeros(rank, out_dim, device=device, dtype=dtype))
        self.alpha = alpha
        self.rank = rank

    def forward(self, x):
        x = (self.alpha / self.rank) * (x @ self.A @ self.B)  # (..., in_dim) @ (in_dim, rank) @ (rank, out_dim)
        return x

    def extra_repr(self):
        return f"in_dim={self.A.shape[0]}, out_dim={self.B.shape[1]}, rank={self.rank}, alpha={self.alpha:g}"


class LinearWithLoRA(nn.Module):
    """`linear(x) + lora(x)`: a frozen-or-not `nn.Linear` plus a LoRA update; `(..., in) -> (..., out)`."""

    def __init__(self, linear, rank, alpha):
        super().__init__()
        self.linear = linear
        w = linear.weight  # the update lives on the layer's device, in its dtype
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha, device=w.device, dtype=w.dtype)

    def forward(self, x):
        return self.linear(x) + self.lora(x)


def replace_linear_with_lora(model, rank, alpha):
    """Wrap every `nn.Linear` of `model` in place in `LinearWithLoRA(linear, rank, alpha)`, depth first (the book's order)."""
    for name, module in model.named_children():
        if hasattr(module, "lora"):  # a LinearWithLoRA (or a notebook's own): wrapping again would nest updates
            raise ValueError("the model already has LoRA layers: wrap it once (to start again, merge_lora(model) first, "
                             "or build a fresh model)")
        if isinstance(module, nn.Linear):
            setattr(model, name, LinearWithLoRA(module, rank, alpha))  # replace the Linear with LinearWithLoRA
        else:
            replace_linear_with_lora(module, rank, alpha)  # apply the same to the child modules


def _is_lora_wrapper(module) -> bool:
    """A `LinearWithLoRA`, or a look-alike (a notebook's own class): `.linear` an nn.Linear, `.lora` with A and B."""
    if isinstance(module, LinearWithLoRA):
        return True
    lora = getattr(module, "lora", None)
    return (isinstance(getattr(module, "linear", None), nn.Linear) and isinstance(lora, nn.Module)
            and isinstance(getattr(lora, "A", None), torch.Tensor) and isinstance(getattr(lora, "B", None), torch.Tensor))


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every `LinearWithLoRA` (or look-alike: `.linear` + `.lora.A`/`.lora.B`) in `model`, by module name."""
    return {name: m for name, m in model.named_modules() if _is_lora_wrapper(m)}


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its linear layer, in place: `W + (alpha / rank) * (A @ B).T`; return `model`.

    Afterwards the model is a plain one again (only `nn.Linear`), with the same outputs up to rounding and
    no extra work per token; each merged layer keeps the `requires_grad` of its original weight.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to merge: call replace_linear_with_lora(model, rank, alpha) first")
    if "" in layers:
        raise TypeError("merge_lora needs the model that holds the LoRA layers, not a LinearWithLoRA itself")
    for name, wrapped in layers.items():
        old = wrapped.linear
        merged = nn.Linear(old.in_features, old.out_features, bias=old.bias is not None,
                           device=old.weight.device, dtype=old.weight.dtype)
        eye = torch.eye(old.in_features, device=old.weight.device, dtype=wrapped.lora.A.dtype)
        delta = wrapped.lora(eye).T  # (out, in): the layer's own update applied to every unit vector
        merged.weight.copy_(old.weight + delta.to(old.weight.dtype))
        merged.weight.requires_grad_(old.weight.requires_grad)
        if old.bias is not None:
            merged.bias.copy_(old.bias)
            merged.bias.requires_grad_(old.bias.requires_grad)
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, merged)
    return model


def _lora_keys(model) -> list[str]:
    return [k for k in model.state_dict() if k.endswith((".lora.A", ".lora.B"))]


def lora_state_dict(model: nn.Module, include=()) -> dict[str, torch.Tensor]:
    """The LoRA tensors of `model` (names ending in `.lora.A` / `.lora.B`), plus every tensor of the modules
    named in `include` (e.g. `["out_head"]` for a classifier's new head), as CPU copies."""
    if not lora_layers(model):
        raise ValueError("the model has no LoRA layers: call replace_linear_with_lora(model, rank, alpha) first")
    state = model.state_dict()
    keys = _lora_keys(model)
    for prefix in include:
        extra = [k for k in state if k == prefix or k.startswith(prefix + ".")]
        if not extra:
            raise ValueError(f"include names {prefix!r}, but the model has no tensor under that name")
        keys += [k for k in extra if k not in keys]
    return {k: state[k].detach().cpu().clone().contiguous() for k in keys}


def save_lora(model: nn.Module, path, include=()) -> Path:
    """Write `lora_state_dict(model, include)` to a safetensors file atomically (rank and alpha in its metadata)."""
    from safetensors.torch import save

    layers = lora_layers(model)
    tensors = lora_state_dict(model, include)
    ranks = {int(getattr(m.lora, "rank", m.lora.A.shape[1])) for m in layers.values()}
    alphas = {float(getattr(m.lora, "alpha", float("nan"))) for m in layers.values()}
    if len(ranks) > 1 or len(alphas) > 1:
        raise ValueError(f"the LoRA layers differ in rank {sorted(ranks)} or alpha {sorted(alphas)}: save_lora expects one of each")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": LORA_FORMAT, "rank": str(ranks.pop()), "alpha": repr(alphas.pop()),
                "include": ",".join(include)}
    with atomic_write(path) as f:
        f.write(save(tensors, metadata=metadata))
    return path


@torch.no_grad()
def load_lora(model: nn.Module, path) -> nn.Module:
    """Load a `save_lora` file into `model` (in place; returned).

    A model without LoRA layers is first wrapped with the file's rank and alpha (after `torch.manual_seed`
    nothing depends on it: A and B are overwritten). Every LoRA tensor of the model must be in the file and
    every tensor of the file in the model, with the same shape; otherwise a ValueError says which.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}: write one with save_lora(model, path)")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if metadata.get("format") != LORA_FORMAT:
        raise ValueError(f"{path.name} is not a save_lora file (metadata format {metadata.get('format')!r})")
    rank, alpha = int(metadata["rank"]), float(metadata["alpha"])
    layers = lora_layers(model)
    if not layers:
        replace_linear_with_lora(model, rank, alpha)
        layers = lora_layers(model)
    def rank_alpha(m):
        return int(getattr(m.lora, "rank", m.lora.A.shape[1])), float(getattr(m.lora, "alpha", alpha))

    mismatched = [n for n, m in layers.items() if rank_alpha(m) != (rank, alpha)]
    if mismatched:
        r, a = rank_alpha(layers[mismatched[0]])
        raise ValueError(
            f"{path.name} holds rank {rank}, alpha {alpha:g}, but the model's LoRA layer {mismatched[0]} has rank "
            f"{r}, alpha {a:g}: wrap a fresh model with the file's rank and alpha (or let load_lora do it)"
        )
    state = model.state_dict()
    missing = [k for k in _lora_keys(model) if k not in tensors]
    unknown = [k for k in tensors if k not in state]
    if missing or unknown:
        raise ValueError(
            f"{path.name} does not fit this model: "
            + (f"{len(missing)} LoRA tensors of the model are not in the file (e.g. {missing[0]}); " if missing else "")
            + (f"{len(unknown)} tensors of the file are not in the model (e.g. {unknown[0]}); " if unknown else "")
            + "build the model with the config the file was trained with (layers, heads, head size)"
        )
    wrong = [(k, tuple(t.shape), tuple(state[k].shape)) for k, t in tensors.items() if t.shape != state[k].shape]
    if wrong:
        k, file_shape, model_shape = wrong[0]
        raise ValueError(
            f"{path.name} does not fit this model: {len(wrong)} tensors differ in shape, e.g. {k} is {file_shape} "
            f"in the file but {model_shape} in the model; build the model with the config the file was trained "
            "with (emb_dim, vocabulary, number of classes of the head)"
        )
    for k, t in tensors.items():
        state[k].copy_(t)
    return model
