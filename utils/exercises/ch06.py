"""Chapter 6's exercises: padding to the full context, training every layer, the first token, trainable count."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from .core import Wrong, answer_tensor, count_params, exercise, items, meta_model, module, whole_number


@exercise("6.1")
def padded_to_context(answer):
    dataset, model = items(answer, "(training dataset, model)")
    model = module(model, "the model")
    while hasattr(dataset, "dataset") and not hasattr(dataset, "max_length"):
        dataset = dataset.dataset  # a Subset
    if not hasattr(dataset, "max_length"):
        raise Wrong("the first item should be the SpamDataset you built")
    context = model.pos_emb.num_embeddings
    length = len(dataset[0][0])
    if dataset.max_length != context or length != context:
        hint = ("max_length=None pads to the longest message only" if dataset.max_length < context
                else "the model cannot read more tokens than its context length")
        raise Wrong(f"the messages are padded to {length} tokens, not to the model's context length. Hint: {hint}; "
                    "the context length is the number of rows of the position embedding")
    return ("every message now fills the whole context, mostly padding: much slower, and the book found it less "
            "accurate (the last position, which the classifier reads, is now padding)")


@exercise("6.2")
def every_layer_trains(answer):
    model = module(answer, "the answer")
    head = getattr(model, "out_head", None)
    if not isinstance(head, nn.Linear) or head.out_features != 2:
        raise Wrong("the output head should map to 2 classes. Hint: replace the output head as the chapter does")
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:
        raise Wrong(f"{len(frozen)} parameter tensors are still frozen (e.g. {frozen[0]}). Hint: set requires_grad "
                    "to True for every parameter, not only the last block's")
    return "every parameter trains: slower per step, often a little more accurate"


@exercise("6.3")
def first_token_logits(answer):
    if not callable(answer):
        raise Wrong("the answer should be a function: model outputs (batch, num_tokens, 2) -> logits (batch, 2)")
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(3, 5, 2, generator=g)
    try:
        got = answer(outputs)
    except Exception as exc:  # noqa: BLE001
        raise Wrong(f"calling it on a (3, 5, 2) tensor raised {type(exc).__name__}: {exc}") from None
    got = answer_tensor(got, "what it returns")
    if tuple(got.shape) != (3, 2):
        raise Wrong(f"on (batch=3, num_tokens=5, classes=2) outputs it returns shape {tuple(got.shape)}, not (3, 2). "
                    "Hint: index the token axis (dim 1), keep batch and classes")
    if torch.equal(got, outputs[:, -1, :]):
        raise Wrong("that is the last token, the chapter's choice; this exercise uses the first one")
    if not torch.equal(got, outputs[:, 0, :]):
        raise Wrong("those are not the first token's logits. Hint: the first position along the token axis, for "
                    "every message of the batch")
    return ("the first token sees only itself under the causal mask, so it knows nothing of the rest of the message: "
            "expect much lower accuracy")


@functools.lru_cache(maxsize=None)
def classifier_trainable() -> int:
    """Trainable parameters of prepare_classifier(GPTModel(gpt2_config('124M')))."""
    from ..model import gpt2_config
    from ..spam import prepare_classifier

    model = meta_model(gpt2_config("124M"))
    with torch.device("meta"):
        prepare_classifier(model, num_classes=2)
    return count_params(model, trainable_only=True)


@exercise("6.4")
def trainable_count(answer):
    from ..model import gpt2_config

    n = whole_number(answer, "the answer")
    expected = classifier_trainable()
    if n == expected:
        return f"{n:,} of about 124M parameters train (about {100 * n / 124.4e6:.0f}%)"
    if n > 20 * expected:
        raise Wrong("that counts every parameter; count only those with requires_grad=True")
    if n == expected - 3 * gpt2_config("124M")["emb_dim"]:
        raise Wrong("that is the count of a model without query/key/value biases (qkv_bias=False, like the "
                    "chapter-5 fallback model). Hint: OpenAI's GPT-2 has them: build from gpt2_config('124M')")
    raise Wrong("the trainable count is off. Hint: what prepare_classifier leaves trainable: the last block, the "
                "final LayerNorm and the new head; count each with everything it holds")
