"""Chapters 4-5: text <-> token ids and text generation (greedy, temperature, top-k, top-p, KV cache)."""

from __future__ import annotations

import math
import numbers

import torch


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_tokenizer(tokenizer, method: str) -> None:
    if isinstance(tokenizer, (str, bytes)) or not callable(getattr(tokenizer, method, None)):
        raise TypeError(f"tokenizer must have a {method} method (e.g. gpt2_tokenizer()), got {type(tokenizer).__name__}")


def _check_generation(model, idx, max_new_tokens, context_size) -> None:
    """Arguments shared by both decoders, checked before any token is generated."""
    from .model import check_token_ids

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (e.g. GPTModel(cfg)), got {type(model).__name__}")
    vocab = model.tok_emb.num_embeddings if hasattr(model, "tok_emb") else None
    if vocab is not None:
        check_token_ids(idx, vocab, name="idx")
    elif not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError("idx must be a non-empty tensor of token ids of shape (batch, num_tokens): "
                         "use text_to_token_ids(text, tokenizer)")
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    if not _is_int(context_size) or context_size < 1:
        raise ValueError(f"context_size must be a whole number >= 1 (the model's context length), got {context_size!r}")
    limit = model.pos_emb.num_embeddings if hasattr(model, "pos_emb") else None
    if limit is not None and context_size > limit:
        raise ValueError(f"context_size={context_size} is larger than the model's context length {limit}: "
                         f"pass context_size={limit} (cfg['context_length'])")


def text_to_token_ids(text: str, tokenizer) -> torch.Tensor:
    """`text` -> token ids of shape `(1, num_tokens)` (a batch of one)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError("text is empty: give at least one word (a prompt needs at least one token)")
    _check_tokenizer(tokenizer, "encode")
    encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return torch.tensor(encoded).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer) -> str:
    """Token ids of shape `(1, num_tokens)` or `(num_tokens,)` -> text."""
    _check_tokenizer(tokenizer, "decode")
    if isinstance(token_ids, (list, tuple)):
        token_ids = torch.tensor(token_ids, dtype=torch.long)
    if not isinstance(token_ids, torch.Tensor):
        raise TypeError(f"token_ids must be a tensor (or list) of token ids, got {type(token_ids).__name__}")
    if token_ids.dim() > 2 or (token_ids.dim() == 2 and token_ids.shape[0] != 1):
        raise ValueError(f"token_ids must have shape (1, num_tokens) or (num_tokens,), got {tuple(token_ids.shape)}: "
                         "decode one row at a time (token_ids[i])")
    if token_ids.dtype.is_floating_point:
        raise TypeError(f"token_ids must hold integer token ids, got dtype {token_ids.dtype}")
    return tokenizer.decode(token_ids.squeeze(0).tolist())


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Greedy decoding: append the most likely next token `max_new_tokens` times. `idx`: `(batch, num_tokens)`."""
    _check_generation(model, idx, max_new_tokens, context_size)
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
    if not _is_int(top_k) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1 (or None for no top-k filter), got {top_k!r}")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a tensor of shape (batch, vocab_size)")
    top_logits, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
    min_val = top_logits[:, -1:]
    return torch.where(logits < min_val, torch.tensor(float("-inf"), device=logits.device), logits)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of tokens whose probabilities sum to >= `top_p`; -inf elsewhere."""
    if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be a number in (0, 1] (or None for no top-p filter), got {top_p!r}")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a tensor of shape (batch, vocab_size)")
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    cum_probs = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cum_probs - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already enough
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)


def sample_next_token(logits, temperature=0.0, top_k=None, top_p=None):
    """`logits` `(batch, vocab_size)` -> next token ids `(batch, 1)`: greedy at temperature 0, else filtered sampling."""
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if temperature > 0.0:
        logits = logits / temperature
        if top_p is not None:
            logits = top_p_filter(logits, top_p)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, num_samples=1)  # (batch, 1)
    return torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)


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
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 is greedy; 0.7 to 1.5 samples), got {temperature!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be a whole number >= 1 (or None for no top-k filter), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (or None for no top-p filter), got {top_p!r}")
    if not isinstance(use_cache, bool):
        raise TypeError(f"use_cache must be True or False, got {use_cache!r}")
    _check_generation(model, idx, max_new_tokens, context_size)
    vocab = model.tok_emb.num_embeddings if hasattr(model, "tok_emb") else None
    if eos_id is not None and (not _is_int(eos_id) or eos_id < 0 or (vocab is not None and eos_id >= vocab)):
        raise ValueError(f"eos_id must be a token id of the model (GPT-2's <|endoftext|> is 50256) or None, got {eos_id!r}")
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
            idx_next = sample_next_token(logits, temperature, top_k, top_p)  # (batch, 1)
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
