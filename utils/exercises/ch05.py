"""Chapter 5's exercises: temperature and top-k on the book's logits, deterministic settings, resuming training,
losses of a loaded model, a larger GPT-2, perplexity."""

from __future__ import annotations

import functools
import math

import torch

from .core import Wrong, call_eval, exercise, items, module, number, the_verdict, tokenizer, whole_number

# The next-token logits over a nine-word vocabulary (chapter 5, sampling).
BOOK_VOCAB = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
BOOK_LOGITS = [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]
TEMPERATURES_5_1 = (1, 0.1, 5)


def book_probas(temperature: float, top_k: int | None = None) -> torch.Tensor:
    """Next-word probabilities over BOOK_VOCAB at `temperature` (0: greedy) after top-k: (9,)."""
    from ..generate import top_k_filter

    logits = torch.tensor([BOOK_LOGITS])  # (1, 9)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), len(BOOK_VOCAB)).float()[0]
    return torch.softmax(logits / temperature, dim=-1)[0]


@exercise("5.1")
def pizza_counts(answer):
    if not isinstance(answer, dict):
        raise Wrong("the answer should be a dict {temperature: times 'pizza' was drawn in 1,000 samples}")
    got = {float(k): v for k, v in answer.items()}
    if set(got) != {float(t) for t in TEMPERATURES_5_1}:
        raise Wrong(f"give a count for each temperature {list(TEMPERATURES_5_1)}, got keys {sorted(answer)}")
    for t in TEMPERATURES_5_1:
        count = number(got[float(t)], f"the count at temperature {t}")
        if 0 < count < 1:
            raise Wrong(f"at temperature {t}: {count} looks like a fraction; give the count out of 1,000 draws")
        p = book_probas(t)[BOOK_VOCAB.index("pizza")].item()
        mean, sd = 1000 * p, math.sqrt(1000 * p * (1 - p))
        if abs(count - mean) > 4 * sd + 1.5:
            raise Wrong(f"at temperature {t} the count is far from what sampling gives. Hint: divide the logits by "
                        "the temperature, softmax, then draw 1,000 times with torch.multinomial")
    return "the exact answer is 1,000 x softmax(logits / T)['pizza']: no sampling needed"


@exercise("5.2")
def precise_and_creative(answer):
    if not isinstance(answer, dict) or set(answer) != {"precise", "creative"}:
        raise Wrong("the answer should be {'precise': {'temperature': ..., 'top_k': ...}, 'creative': {...}}")
    probas = {}
    for task, settings in answer.items():
        if not isinstance(settings, dict) or not set(settings) <= {"temperature", "top_k"}:
            raise Wrong(f"{task}: give a dict with 'temperature' and 'top_k' (None for no top-k)")
        t = number(settings.get("temperature", 1.0), f"{task} temperature")
        k = settings.get("top_k")
        if t < 0 or (k is not None and whole_number(k, f"{task} top_k") < 1):
            raise Wrong(f"{task}: temperature must be >= 0 and top_k >= 1 (or None)")
        probas[task] = book_probas(t, None if k is None else int(k))
    if probas["precise"].max() < 0.95:
        raise Wrong("the precise settings still spread probability over several words (on the book's logits). "
                    "Hint: a low temperature or a top_k of 1 makes the choice nearly certain")
    if (probas["creative"] >= 0.05).sum() < 3:
        raise Wrong("the creative settings leave fewer than three likely words. Hint: temperature 1 or more, "
                    "and a top_k that keeps several words")
    return "low temperature / small top-k for factual answers, higher temperature / larger top-k for variety"


@functools.lru_cache(maxsize=None)
def tiny_model():
    """A seeded one-block GPTModel (vocabulary 100, context 32), for the generation exercise."""
    from ..model import GPTModel

    cfg = {"vocab_size": 100, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPTModel(cfg)
    return model.eval()


@exercise("5.3")
def deterministic_settings(answer):
    from ..generate import generate

    if not isinstance(answer, dict) or not set(answer) <= {"temperature", "top_k", "top_p"}:
        raise Wrong("the answer should be a dict of generate's sampling settings: temperature, top_k, top_p")
    model, idx, runs = tiny_model(), torch.tensor([[1, 2, 3]]), []
    with torch.random.fork_rng():
        for seed in (1, 2, 3):
            torch.manual_seed(seed)
            try:
                runs.append(generate(model, idx, max_new_tokens=12, context_size=32, **answer).tolist())
            except Exception as exc:  # noqa: BLE001
                raise Wrong(f"generate raised {type(exc).__name__}: {exc}") from None
    if not runs[0] == runs[1] == runs[2]:
        raise Wrong("these settings still sample: different seeds give different text. Hint: what does "
                    "generate do at temperature 0 (or with a top_k of 1)?")
    return "deterministic: the most likely token every step, whatever the seed (and model.eval() turns off dropout)"


@exercise("5.4")
def resumed_optimizer(answer):
    optimizer, before, per_epoch = items(answer, "(optimizer, steps before saving, batches in one epoch)", 3)
    before, per_epoch = whole_number(before, "steps before saving"), whole_number(per_epoch, "batches in one epoch")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise Wrong(f"the first item should be the optimizer, got {type(optimizer).__name__}")
    steps = {int(s["step"]) for s in optimizer.state.values() if "step" in s}
    if not steps:
        raise Wrong("the optimizer has no state: it never stepped. Hint: load optimizer_state_dict, then train")
    if steps == {per_epoch} and before > 0:
        raise Wrong("the optimizer counted only the new epoch's steps: it started fresh. Hint: restore the "
                    "optimizer's saved state too, not only the model's, before training")
    if steps == {before}:
        raise Wrong("the optimizer's step count is where the checkpoint left it: train one more epoch")
    if steps != {before + per_epoch}:
        raise Wrong(f"the optimizer's step count {sorted(steps)} is not the checkpoint's steps plus one epoch. "
                    "Hint: one optimizer.step() per batch, for one pass over the training loader")
    return "the optimizer kept its moment estimates across the reload: training goes on where it stopped"


@functools.lru_cache(maxsize=None)
def verdict_loaders():
    """Chapter 5's (train, val) loaders: The Verdict split 90/10, 256-token windows, stride 256, unshuffled."""
    from ..data import create_dataloader_v1

    text = the_verdict()
    split = int(0.90 * len(text))
    kwargs = {"batch_size": 2, "max_length": 256, "stride": 256, "shuffle": False}
    return (create_dataloader_v1(text[:split], drop_last=True, **kwargs),
            create_dataloader_v1(text[split:], drop_last=False, **kwargs))


@exercise("5.5")
def loaded_model_losses(answer):
    from ..train import calc_loss_loader

    model, train_loss, val_loss = items(answer, "(model, training loss, validation loss)", 3)
    model = module(model, "the model")
    train_loss, val_loss = number(train_loss, "the training loss"), number(val_loss, "the validation loss")
    if model.pos_emb.num_embeddings < 256:
        raise Wrong("the model's context is shorter than the chapter's 256-token windows")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            exp_train, exp_val = (calc_loss_loader(loader, model, device) for loader in verdict_loaders())
    finally:
        model.train(was_training)
    if math.isclose(train_loss, exp_val, abs_tol=2e-3) and math.isclose(val_loss, exp_train, abs_tol=2e-3):
        raise Wrong("the two losses are swapped: training first, then validation")
    if not (math.isclose(train_loss, exp_train, abs_tol=2e-3) and math.isclose(val_loss, exp_val, abs_tol=2e-3)):
        raise Wrong("these are not this model's losses on The Verdict's 90/10 split. Hint: the chapter's loaders "
                    "(256-token windows, stride 256) and model.eval() so dropout is off")
    return "the book measured 3.7547 / 3.5596 with OpenAI's GPT-2 124M"


@exercise("5.6")
def larger_gpt2_config(answer):
    from ..model import MODEL_SIZES, gpt2_config

    if not isinstance(answer, dict):
        raise Wrong("the answer should be the model config dict you built the larger GPT-2 with")
    shape_keys = ("emb_dim", "n_layers", "n_heads")
    size = next((s for s, dims in MODEL_SIZES.items() if all(answer.get(k) == v for k, v in dims.items())), None)
    if size is None:
        raise Wrong(f"{ {k: answer.get(k) for k in shape_keys} } is none of GPT-2's sizes. Hint: utils.MODEL_SIZES")
    if size == "124M":
        raise Wrong("that is GPT-2 small; the exercise asks for a larger one")
    reference = gpt2_config(size)
    for key in ("vocab_size", "context_length", "qkv_bias"):
        if answer.get(key) != reference[key]:
            raise Wrong(f"{key}={answer.get(key)!r} does not match OpenAI's checkpoints. Hint: start from "
                        f"gpt2_config({size!r})")
    return f"GPT-2 {size}: the same code, only emb_dim, n_layers and n_heads change"


@exercise("5.7")
def sentence_perplexity(answer):
    model, text, ppl = items(answer, "(model, text, perplexity)", 3)
    model = module(model, "the model")
    if not isinstance(text, str):
        raise Wrong("the second item should be your sentence (a str)")
    ppl = number(ppl, "the perplexity")
    ids = tokenizer().encode(text)[: model.pos_emb.num_embeddings + 1]
    if len(ids) < 2:
        raise Wrong("the sentence needs at least two tokens: one to read and one to predict")
    device = next(model.parameters()).device
    x = torch.tensor(ids, device=device).unsqueeze(0)
    logits = call_eval(model, x[:, :-1])  # (1, n - 1, vocab)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten()).item()
    if math.isclose(ppl, math.exp(loss), rel_tol=1e-3):
        return "exp(mean cross-entropy): on average the model hesitates between about that many tokens"
    if math.isclose(ppl, loss, rel_tol=1e-3):
        raise Wrong("that is the cross-entropy loss; perplexity is exp(loss)")
    raise Wrong("not this model's perplexity on that sentence. Hint: each token is predicted from the ones before "
                "it (targets shifted by one); perplexity is exp of the mean cross-entropy, with dropout off")
