"""Chapter 3: causal multi-head attention, as the book builds it, plus a fast path and a KV cache.

`MultiHeadAttention` keeps the book's parameter names and initialisation order (W_query, W_key,
W_value, out_proj, then the `mask` buffer), so seeded outputs and the book's checkpoints match.
With `fast=True` it computes the same thing with `torch.nn.functional.scaled_dot_product_attention`
(one fused kernel instead of matmul -> mask -> softmax -> dropout -> matmul).
With `use_cache=True` it keeps the keys and values of earlier calls, so generation can feed
only the newest token (see `utils.generate`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    """Causal self-attention with `num_heads` heads: `(batch, num_tokens, d_in) -> (batch, num_tokens, d_out)`."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False, fast=True):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads  # reduce the projection dim to match the desired output dim
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # combines the heads' outputs
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))
        self.fast = fast  # compute with the fused scaled_dot_product_attention (same result)
        self.reset_cache()

    def reset_cache(self):
        """Forget the cached keys and values (call before generating from a new prompt)."""
        self.cache_k, self.cache_v, self.cache_pos, self.buffers_kv = None, None, 0, None

    def forward(self, x, use_cache=False):
        b, num_tokens, d_in = x.shape  # (batch, num_tokens, d_in)
        start = self.cache_pos if use_cache else 0  # absolute position of the first of these tokens
        if start + num_tokens > self.mask.shape[0]:
            raise ValueError(f"{start + num_tokens} tokens exceed the context length {self.mask.shape[0]} of this "
                             "attention: pass fewer tokens, or call reset_cache() to empty the KV cache")
        # (b, num_tokens, d_out) -> (b, num_heads, num_tokens, head_dim)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        if use_cache:
            keys, values = append_to_cache(self, keys, values, self.mask.shape[0])  # earlier tokens' keys, then these
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


def append_to_cache(layer, keys, values, capacity):
    """`layer.cache_k/cache_v` plus the new `keys`/`values` `(b, heads, num_tokens, head_dim)`, returned as
    `(b, heads, num_keys, head_dim)`: written into buffers allocated ahead (doubling, up to `capacity` tokens), so
    a step copies one token's keys and values, not the whole cache (torch.cat would copy it every step)."""
    past = 0 if layer.cache_k is None else layer.cache_k.shape[2]
    end, buffers = past + keys.shape[2], layer.buffers_kv
    if buffers is None or end > buffers[0].shape[2] or buffers[0].shape[:2] != keys.shape[:2] \
            or (buffers[0].dtype, buffers[0].device) != (keys.dtype, keys.device) \
            or (past and layer.cache_k.data_ptr() != buffers[0].data_ptr()):  # a cache replaced from outside
        size = max(min(max(2 * end, 256), capacity), end)
        buffers = tuple(keys.new_empty(*keys.shape[:2], size, keys.shape[3]) for _ in range(2))
        if past:
            buffers[0][:, :, :past], buffers[1][:, :, :past] = layer.cache_k, layer.cache_v
        layer.buffers_kv = buffers
    buffers[0][:, :, past:end], buffers[1][:, :, past:end] = keys, values
    layer.cache_k, layer.cache_v = buffers[0][:, :, :end], buffers[1][:, :, :end]
    return layer.cache_k, layer.cache_v
