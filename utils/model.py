"""Chapter 4: the GPT model (GPT-2 architecture) and its configurations."""

from __future__ import annotations

import torch
import torch.nn as nn

from .attention import MultiHeadAttention
from .checks import check_int, check_token_ids

GPT_CONFIG_124M = {
    "vocab_size": 50257,  # GPT-2's BPE vocabulary
    "context_length": 1024,  # longest input the positional embedding covers
    "emb_dim": 768,  # width of every token vector
    "n_heads": 12,  # attention heads per block
    "n_layers": 12,  # transformer blocks
    "drop_rate": 0.1,  # dropout on embeddings, attention weights and shortcuts
    "qkv_bias": False,  # bias in the query/key/value projections (GPT-2's weights have one)
}

# The four GPT-2 sizes; OpenAI's weights use qkv_bias=True and drop_rate 0 when loaded for finetuning.
MODEL_SIZES = {
    "124M": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},
    "355M": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "774M": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "1558M": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},
}


CONFIG_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")


def check_config(cfg) -> None:
    """Raise ValueError naming the key if `cfg` lacks a key of GPT_CONFIG_124M or holds a size that is not a whole number."""
    missing = [key for key in CONFIG_KEYS if key not in cfg]
    if missing:
        raise ValueError(f"the model config lacks {missing}: start from GPT_CONFIG_124M or gpt2_config()")
    for key in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
        check_int(cfg[key], f"config[{key!r}]", minimum=0 if key == "n_layers" else 1)


def gpt2_config(size: str = "124M", **overrides) -> dict:
    """The config of OpenAI's GPT-2 `size` ('124M', '355M', '774M', '1558M'), with `overrides` applied."""
    if not isinstance(size, str) or size not in MODEL_SIZES:
        raise ValueError(f"unknown GPT-2 size {size!r}: choose one of {', '.join(MODEL_SIZES)}")
    config = {**GPT_CONFIG_124M, **MODEL_SIZES[size], "context_length": 1024, "qkv_bias": True, "drop_rate": 0.0}
    config.update(overrides)
    return config


class LayerNorm(nn.Module):
    """Normalise the last dimension to mean 0, variance 1, then scale and shift (learned)."""

    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    """GELU activation, tanh approximation (as GPT-2 used)."""

    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    """emb_dim -> 4 * emb_dim -> GELU -> emb_dim, applied to every token on its own."""

    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(norm1(x)), then x + ff(norm2(x)); shape `(batch, num_tokens, emb_dim)` kept."""

    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"],
            fast=cfg.get("fast_attention", True),
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x, use_cache=False):
        shortcut = x
        x = self.norm1(x)
        x = self.att(x, use_cache=use_cache)  # (batch, num_tokens, emb_dim)
        x = self.drop_shortcut(x)
        x = x + shortcut

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut


class GPTModel(nn.Module):
    """Token ids `(batch, num_tokens)` -> next-token logits `(batch, num_tokens, vocab_size)`."""

    def __init__(self, cfg):
        super().__init__()
        check_config(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        self.current_pos = 0  # position of the next token when generating with the KV cache

    def forward(self, in_idx, use_cache=False):
        start = self.current_pos if use_cache else 0  # position of the first token (> 0 after cached tokens)
        check_token_ids(in_idx, self.tok_emb.num_embeddings, self.pos_emb.num_embeddings, cached=start)
        batch_size, seq_len = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)  # (batch, seq_len, emb_dim)
        pos_embeds = self.pos_emb(torch.arange(start, start + seq_len, device=in_idx.device))  # (seq_len, emb_dim)
        self.current_pos = start + seq_len if use_cache else self.current_pos
        x = tok_embeds + pos_embeds
        x = self.drop_emb(x)
        for block in self.trf_blocks:
            x = block(x, use_cache=use_cache)
        x = self.final_norm(x)
        logits = self.out_head(x)
        return logits  # (batch, seq_len, vocab_size)

    def reset_kv_cache(self):
        """Empty every block's KV cache and restart positions at 0."""
        self.current_pos = 0
        for block in self.trf_blocks:
            block.att.reset_cache()


def count_parameters(model: nn.Module, tied: bool = False) -> int:
    """Number of parameters; `tied=True` counts the output head as shared with the token embedding."""
    total = sum(p.numel() for p in model.parameters())
    if tied and hasattr(model, "out_head"):
        total -= model.out_head.weight.numel()
    return total
