"""Chapters 4-5: text <-> token ids and text generation (greedy, temperature, top-k, top-p, eos, KV cache)."""

from __future__ import annotations

import math

import torch

from .checks import END_OF_TEXT


def text_to_token_ids(text, tokenizer):
    """`text` -> token ids of shape `(1, num_tokens)` (a batch of one)."""
    encoded = tokenizer.encode(text, allowed_special={END_OF_TEXT})
    encoded_tensor = torch.tensor(encoded).unsqueeze(0)  # add the batch dimension
    return encoded_tensor


def token_ids_to_text(token_ids, tokenizer):
    """Token ids of shape `(1, num_tokens)` or `(num_tokens,)` -> text."""
    flat = token_ids.squeeze(0)  # remove the batch dimension
    if flat.dim() != 1:
        raise ValueError(f"token_ids must have shape (1, num_tokens), got {tuple(token_ids.shape)}: decode one row at a time (token_ids[i])")
    return tokenizer.decode(flat.tolist())


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Greedy decoding: append the most likely next token `max_new_tokens` times. `idx`: `(batch, num_tokens)`."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to the supported context
        with torch.no_grad():
            logits = model(idx_cond)  # (batch, num_tokens, vocab_size)
        logits = logits[:, -1, :]  # (batch, vocab_size): only the last position predicts the next token
        probas = torch.softmax(logits, dim=-1)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)  # (batch, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (batch, num_tokens + 1)
    return idx


def top_k_filter(logits, top_k):
    """Keep the `top_k` largest logits per row, set the rest to -inf. `logits`: `(batch, vocab_size)`."""
    if not top_k >= 1:
        raise ValueError(f"top_k must be at least 1 (the number of most likely tokens to sample from; None: no top-k filter), got {top_k!r}")
    top_logits, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
    min_val = top_logits[:, -1:]
    return torch.where(logits < min_val, torch.tensor(float("-inf"), device=logits.device), logits)


def top_p_filter(logits, top_p):
    """Nucleus filter: keep the smallest set of tokens whose probabilities sum to >= `top_p`; -inf elsewhere."""
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None for no top-p filter), got {top_p!r}")
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    sorted_logits = sorted_logits.masked_fill(torch.cumsum(probs, dim=-1) - probs >= top_p, float("-inf"))  # mass before: enough
    return torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)


def sample_next_token(logits, temperature=0.0, top_k=None, top_p=None):
    """`logits` `(batch, vocab_size)` -> next token ids `(batch, 1)`: greedy at temperature 0, else filtered sampling."""
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number (0 or less: greedy decoding), got {temperature!r}")
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if temperature > 0.0:
        logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature  # largest logit at 0: a tiny temperature cannot overflow to inf
        if top_p is not None:
            logits = top_p_filter(logits, top_p)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, num_samples=1)  # (batch, 1)
    return torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None, top_p=None,
             use_cache=True):
    """Sample up to `max_new_tokens` tokens after `idx` `(batch, num_tokens)`; returns `(batch, num_tokens + new)`.

    With `use_cache` (and a model that has a KV cache) each step feeds only the new token; past `context_size`
    tokens it recomputes the last `context_size`. A batch stops when every row has produced `eos_id`.
    """
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        raise ValueError(f"idx must be a tensor of token ids of shape (batch, num_tokens), got {tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__}: use text_to_token_ids(text, tokenizer), ids.unsqueeze(0) or torch.tensor([ids])")
    use_cache = use_cache and hasattr(model, "reset_kv_cache")
    if use_cache:
        model.reset_kv_cache()
    finished = torch.zeros(idx.shape[0], 1, dtype=torch.bool, device=idx.device)  # rows that produced eos_id
    for step in range(max_new_tokens):
        with torch.no_grad():
            if use_cache and idx.shape[1] <= context_size:
                logits = model(idx if step == 0 else idx[:, -1:], use_cache=True)
            else:
                logits = model(idx[:, -context_size:])
        logits = logits[:, -1, :]  # (batch, vocab_size)
        idx_next = sample_next_token(logits, temperature, top_k, top_p)  # (batch, 1)
        if eos_id is not None:
            if idx.shape[0] == 1 and idx_next.item() == eos_id:
                break  # the book's behaviour: stop before appending <|endoftext|>
            idx_next = idx_next.masked_fill(finished, eos_id)  # finished rows keep padding with eos_id
            finished |= idx_next == eos_id
        idx = torch.cat((idx, idx_next), dim=1)  # (batch, num_tokens + 1)
        if eos_id is not None and finished.all():
            break
    if use_cache:
        model.reset_kv_cache()  # free the cached keys and values
    return idx
