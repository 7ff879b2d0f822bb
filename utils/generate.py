"""Chapters 4-5: text <-> token ids and text generation (greedy, temperature, top-k, top-p, KV cache)."""

from __future__ import annotations

import torch


def text_to_token_ids(text: str, tokenizer) -> torch.Tensor:
    """`text` -> token ids of shape `(1, num_tokens)` (a batch of one)."""
    encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return torch.tensor(encoded).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer) -> str:
    """Token ids of shape `(1, num_tokens)` or `(num_tokens,)` -> text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())


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


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` largest logits per row, set the rest to -inf. `logits`: `(batch, vocab_size)`."""
    top_logits, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
    min_val = top_logits[:, -1:]
    return torch.where(logits < min_val, torch.tensor(float("-inf"), device=logits.device), logits)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of tokens whose probabilities sum to >= `top_p`; -inf elsewhere."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    cum_probs = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cum_probs - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already enough
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)


def generate(
    model,
    idx,
    max_new_tokens,
    context_size,
    temperature=0.0,
    top_k=None,
    top_p=None,
    eos_id=None,
    use_cache=True,
):
    """Sample up to `max_new_tokens` tokens after `idx` `(batch, num_tokens)`; returns `(batch, num_tokens + new)`.

    temperature 0 is greedy; otherwise logits are divided by `temperature` and filtered by top-k and/or
    top-p before sampling. Generation stops early when every row produced `eos_id`. With `use_cache`,
    each step feeds only the new token and reuses the cached keys/values (same tokens, much faster);
    once the sequence outgrows `context_size`, it falls back to recomputing the last `context_size` tokens.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    cache_ok = use_cache and hasattr(model, "reset_kv_cache")
    if cache_ok:
        model.reset_kv_cache()
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    try:
        for step in range(max_new_tokens):
            with torch.no_grad():
                if cache_ok and idx.shape[1] <= context_size:
                    new = idx if step == 0 else idx[:, -1:]
                    logits = model(new, use_cache=True)[:, -1, :]
                else:
                    logits = model(idx[:, -context_size:])[:, -1, :]
            if top_k is not None:
                logits = top_k_filter(logits, top_k)
            if temperature > 0.0:
                logits = logits / temperature
                if top_p is not None:
                    logits = top_p_filter(logits, top_p)
                probs = torch.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)  # (batch, 1)
            else:
                idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)
            if eos_id is not None:
                if idx.shape[0] == 1 and idx_next.item() == eos_id:
                    break  # the book's behaviour: stop before appending <|endoftext|>
                idx_next = torch.where(finished.unsqueeze(1), torch.full_like(idx_next, eos_id), idx_next)
                finished |= idx_next.squeeze(1) == eos_id
            idx = torch.cat((idx, idx_next), dim=1)
            if eos_id is not None and bool(finished.all()):
                break
    finally:
        if cache_ok:
            model.reset_kv_cache()
    return idx
