"""Chapter 7's exercises: the Phi-3 prompt, masking the instruction, the full Alpaca split, LoRA, loss positions."""

from __future__ import annotations

import functools

import torch

from .core import Wrong, answer_tensor, count_params, exercise, items, meta_model, token_ids, tokenizer, whole_number

ALPACA_FULL_SIZE = 52_002  # entries in Stanford Alpaca's alpaca_data.json (exercise 7.3)
# Two instruction entries for exercises 7.1 and 7.2 (one with an input, one without).
EXAMPLE_ENTRIES = [
    {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
     "output": "The car is as fast as lightning."},
    {"instruction": "What is the capital of Italy?", "input": "", "output": "The capital of Italy is Rome."},
]


def phi3_prompt(entry: dict) -> str:
    """Exercise 7.1's prompt: '<|user|>\\n' + instruction (+ '\\n' + input)."""
    return f"<|user|>\n{entry['instruction']}" + (f"\n{entry['input']}" if entry.get("input") else "")


@exercise("7.1")
def phi3_format(answer):
    if not callable(answer):
        raise Wrong("the answer should be a function: entry dict -> prompt text")
    for entry in EXAMPLE_ENTRIES:
        try:
            got = answer(dict(entry))
        except Exception as exc:  # noqa: BLE001
            raise Wrong(f"calling it raised {type(exc).__name__}: {exc}") from None
        if not isinstance(got, str):
            raise Wrong(f"it returns {type(got).__name__}, not a str")
        if "### Instruction" in got:
            raise Wrong("that is still the Alpaca style; the Phi-3 style starts with '<|user|>' and a newline")
        if got != phi3_prompt(entry):
            which = "with" if entry["input"] else "without"
            raise Wrong(f"the prompt for an entry {which} an input is not the Phi-3 style asked for. Hint: compare "
                        "it with the statement's example character by character: the newlines, and the input line "
                        "only when there is an input")
    return "shorter prompts: fewer tokens per entry, so training is a little faster"


def expected_masked(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """custom_collate_fn's (inputs, targets) for `batch` of (prompt_length, ids), prompt targets set to -100."""
    from ..instruct import custom_collate_fn

    inputs, targets = custom_collate_fn([ids for _, ids in batch])
    for i, (prompt_len, _) in enumerate(batch):
        targets[i, : prompt_len - 1] = -100  # targets[t] is token t + 1: the prompt's tokens 1..prompt_len-1
    return inputs, targets


def example_items() -> list[tuple[int, list[int]]]:
    """Exercise 7.2's batch: `(prompt_length, token_ids)` for the two EXAMPLE_ENTRIES (Alpaca prompt + response)."""
    from ..instruct import format_input, format_response

    tok = tokenizer()
    return [(len(tok.encode(format_input(e))), tok.encode(format_input(e) + format_response(e))) for e in EXAMPLE_ENTRIES]


@exercise("7.2")
def instruction_masked(answer):
    from ..instruct import custom_collate_fn

    if not callable(answer):
        raise Wrong("the answer should be a collate function: list of (prompt_length, token_ids) -> (inputs, targets)")
    batch = example_items()
    try:
        got = answer([(n, list(ids)) for n, ids in batch])
    except Exception as exc:  # noqa: BLE001
        raise Wrong(f"calling it on exercises.example_items() raised {type(exc).__name__}: {exc}") from None
    inputs, targets = items(got, "(inputs, targets)")
    inputs, targets = answer_tensor(inputs, "inputs"), answer_tensor(targets, "targets")
    exp_inputs, exp_targets = expected_masked(batch)
    if tuple(targets.shape) != tuple(exp_targets.shape) or not torch.equal(inputs, exp_inputs):
        raise Wrong("the inputs or the shapes differ from custom_collate_fn's: mask only the targets, pad as before")
    if torch.equal(targets, custom_collate_fn([ids for _, ids in batch])[1]):
        raise Wrong("no prompt target is masked yet. Hint: the loss skips every target equal to the ignore index")
    if not torch.equal(targets, exp_targets):
        raise Wrong("the masked positions are off by some. Hint: target t is the token at position t + 1. Which "
                    "targets predict a prompt token, and which one predicts the response's first token?")
    return "the loss now counts only the response (and the end-of-text token)"


@exercise("7.3")
def alpaca_split(answer):
    from ..instruct import split_data

    sizes = tuple(whole_number(v, "a split size") for v in items(answer, "(train, test, validation) sizes", 3))
    expected = tuple(len(part) for part in split_data(list(range(ALPACA_FULL_SIZE))))
    if sizes == expected:
        return "with the whole set, one epoch is ~47x the chapter's steps: plan for a GPU (the book's solution trained for over 3 hours on one)"
    if sorted(sizes) == sorted(expected):
        raise Wrong("the right sizes in the wrong order: split_data returns train, test, validation")
    if sum(sizes) != ALPACA_FULL_SIZE:
        raise Wrong(f"the sizes add up to {sum(sizes):,}, not Alpaca's {ALPACA_FULL_SIZE:,} entries")
    raise Wrong("the split is off. Hint: utils.split_data (85% / 10% / the rest, rounded down)")


@functools.lru_cache(maxsize=None)
def lora_trainable_355m(rank: int = 16) -> int:
    """Trainable parameters of GPT-2 medium, frozen, with every nn.Linear replaced by LoRA of `rank`."""
    from ..lora import replace_linear_with_lora
    from ..model import gpt2_config

    model = meta_model(gpt2_config("355M"))
    for p in model.parameters():
        p.requires_grad = False
    with torch.device("meta"):
        replace_linear_with_lora(model, rank=rank, alpha=rank)
    return count_params(model, trainable_only=True)


@exercise("7.4")
def lora_count(answer):
    n = whole_number(answer, "the answer")
    expected = lora_trainable_355m()
    if n == expected:
        return f"{n:,} trainable LoRA parameters, about 2% of GPT-2 medium's"
    if n == lora_trainable_355m(8):
        raise Wrong("that is rank 8; the exercise uses rank 16")
    if n > 20 * expected:
        raise Wrong("that counts the frozen weights too. Hint: freeze the model first (requires_grad=False), "
                    "then replace_linear_with_lora, then count parameters with requires_grad")
    raise Wrong("the count is off. Hint: GPT-2 medium (gpt2_config('355M')), every nn.Linear replaced "
                "(output head included), rank=16")


@exercise("7.5")
def loss_positions(answer):
    from ..instruct import custom_collate_fn

    batch, count = items(answer, "(batch of token id lists, positions that count in the loss)")
    count = whole_number(count, "the count")
    if not isinstance(batch, (list, tuple)) or not batch:
        raise Wrong("the first item should be the batch: a list of token id lists")
    batch = [token_ids(item, "each batch item") for item in batch]
    _, targets = custom_collate_fn(batch)
    expected = int((targets != -100).sum())
    if count == expected:
        return "every real token and one end-of-text token per entry count; the rest of the padding does not"
    if count == targets.numel():
        raise Wrong("that counts every target, padding included. Hint: the collate function marks the targets "
                    "the loss skips")
    if count == expected - len(batch):
        raise Wrong("the end-of-text token right after each response counts too: the model must learn to stop")
    raise Wrong("the count is off. Hint: collate the batch as the chapter does and count the targets the loss "
                "does not skip")
