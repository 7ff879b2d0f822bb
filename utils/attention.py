"""Chapter 3: causal multi-head attention, as the book builds it, plus a fast path and a KV cache.

`MultiHeadAttention` keeps the book's parameter names and initialisation order (W_query, W_key,
W_value, out_proj, then the `mask` buffer), so seeded outputs and the book's checkpoints match.
With `fast=True` it computes the same thing with `torch.nn.functional.scaled_dot_product_attention`
(one fused kernel instead of matmul -> mask -> softmax -> dropout -> matmul).
With `use_cache=True` it keeps the keys and values of earlier calls, so generation can feed
only the newest token (see `utils.generate`).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    """Causal self-attention with `num_heads` heads: `(batch, num_tokens, d_in) -> (batch, num_tokens, d_out)`."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False, fast=True):
        super().__init__()
        for name, value in (("d_in", d_in), ("d_out", d_out), ("context_length", context_length), ("num_heads", num_heads)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1) (0.0 for none), got {dropout!r}")
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # combines the heads' outputs
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))
        self.fast = fast
        self.reset_cache()

    def reset_cache(self):
        """Forget the cached keys and values (call before generating from a new prompt)."""
        self.cache_k = None
        self.cache_v = None
        self.cache_pos = 0

    def forward(self, x, use_cache=False):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.W_query.in_features:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x must be a tensor of shape (batch, num_tokens, d_in={self.W_query.in_features}), got {got}"
                + (" (add the batch dimension: x.unsqueeze(0))" if isinstance(x, torch.Tensor) and x.dim() == 2 else "")
            )
        if x.shape[1] > self.mask.shape[0]:
            raise ValueError(f"{x.shape[1]} tokens exceed the context length {self.mask.shape[0]} this attention was "
                             f"built for: pass at most {self.mask.shape[0]} tokens (x[:, -{self.mask.shape[0]}:])")
        b, num_tokens, _ = x.shape  # (batch, num_tokens, d_in)
        # (b, num_tokens, d_out) -> (b, num_heads, num_tokens, head_dim)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        start = 0
        if use_cache:
            start = self.cache_pos
            if start + num_tokens > self.mask.shape[0]:
                raise ValueError(
                    f"the KV cache holds {start} tokens; {num_tokens} more exceed the context length "
                    f"{self.mask.shape[0]}: call reset_cache() or generate without the cache"
                )
            if self.cache_k is not None:
                keys = torch.cat([self.cache_k, keys], dim=2)
                values = torch.cat([self.cache_v, values], dim=2)
            self.cache_k, self.cache_v = keys, values
            self.cache_pos += num_tokens
        num_keys = keys.shape[2]

        if self.fast:
            p = self.dropout.p if self.training else 0.0
            if num_keys == num_tokens:  # no cached keys: plain causal attention, no mask tensor needed
                context = F.scaled_dot_product_attention(queries, keys, values, dropout_p=p, is_causal=True)
            elif num_tokens == 1:  # one new token after the cache: it may attend to every key
                context = F.scaled_dot_product_attention(queries, keys, values, dropout_p=p)
            else:
                allowed = self.mask[start : start + num_tokens, :num_keys] == 0  # (num_tokens, num_keys)
                context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, dropout_p=p)
        else:
            # query i (absolute position start + i) may attend to keys 0 .. start + i
            mask_bool = self.mask.bool()[start : start + num_tokens, :num_keys]  # (num_tokens, num_keys)
            attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, num_tokens, num_keys)
            attn_scores.masked_fill_(mask_bool, -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context = attn_weights @ values  # (b, num_heads, num_tokens, head_dim)

        context = context.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context)  # (b, num_tokens, d_out)
