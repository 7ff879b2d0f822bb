"""Exercises a learner can check: `check("4.1", answer)` prints one line of feedback and returns True or False.

Ids are strings: the book's exercise numbers ("2.1" ... "7.4", "A.1", "A.2") and ours, which continue each
chapter's numbering ("2.3", "3.4", ...). Expected values are computed from `utils` (parameter counts of its own
modules, its tokenizer, its data loaders), not typed in. Feedback says what is off and hints at the way, never
the expected value itself. An answer still holding `...` (or `None`) prints "not answered yet" and returns False.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn as nn

TICK, CROSS = "✓", "✗"

# The book's toy data: six 3-dimensional word vectors ("Your journey starts with one step", chapter 3) ...
BOOK_INPUTS = [
    [0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
    [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55],
]
# ... and the next-token logits over a nine-word vocabulary (chapter 5, sampling).
BOOK_VOCAB = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
BOOK_LOGITS = [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]
DROPOUT_RATES_4_3 = {"embedding": 0.1, "attention": 0.2, "shortcut": 0.3}
TEMPERATURES_5_1 = (1, 0.1, 5)
ALPACA_FULL_SIZE = 52_002  # entries in Stanford Alpaca's alpaca_data.json (exercise 7.3)
# Two instruction entries for exercises 7.1 and 7.2 (one with an input, one without).
EXAMPLE_ENTRIES = [
    {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
     "output": "The car is as fast as lightning."},
    {"instruction": "What is the capital of Italy?", "input": "", "output": "The capital of Italy is Rome."},
]


class Wrong(Exception):
    """Raised inside a checker: what is off, and a hint."""


# --- helpers -------------------------------------------------------------------------------------------------


def _unanswered(answer) -> bool:
    """None, or `...` anywhere in the answer (a None inside may be meant, e.g. top_k=None)."""
    return answer is None or _holds_ellipsis(answer)


def _holds_ellipsis(answer) -> bool:
    if answer is Ellipsis:
        return True
    if isinstance(answer, (list, tuple)):
        return any(_holds_ellipsis(a) for a in answer)
    if isinstance(answer, dict):
        return any(_holds_ellipsis(a) for a in answer.values())
    return False


def _int(value, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise Wrong(f"{what} should be a whole number, got {value!r}")
    return int(value)


def _float(value, what: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Wrong(f"{what} should be a number, got {type(value).__name__} {value!r}")
    return float(value)


def _ids(value, what: str) -> list[int]:
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
        raise Wrong(f"{what} should be a list of integer token ids, got {type(value).__name__}")
    return list(value)


def _tensor(value, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise Wrong(f"{what} should be a tensor, got {type(value).__name__}")
    return value.detach().cpu()


def _pair(answer, what: str, n: int = 2) -> tuple:
    if not isinstance(answer, (tuple, list)) or len(answer) != n:
        raise Wrong(f"the answer should be a tuple of {n}: {what}")
    return tuple(answer)


def _module(value, what: str) -> nn.Module:
    if not isinstance(value, nn.Module):
        raise Wrong(f"{what} should be a torch.nn.Module, got {type(value).__name__}")
    return value


def _call_eval(module: nn.Module, *args):
    """`module(*args)` in eval mode without gradients, restoring its mode; a failure is the learner's to see."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(*args)
    except Exception as exc:  # noqa: BLE001  (the learner's code: report, never raise)
        raise Wrong(f"calling the module raised {type(exc).__name__}: {exc}") from None
    finally:
        module.train(was_training)


def _params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@functools.lru_cache(maxsize=None)
def _tokenizer():
    from .tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


@functools.lru_cache(maxsize=None)
def _verdict() -> str:
    from .assets import fetch

    return fetch("the-verdict", progress=False).read_text(encoding="utf-8")


def _book_inputs() -> torch.Tensor:
    return torch.tensor(BOOK_INPUTS)  # (6, 3)


def _meta_model(cfg: dict) -> nn.Module:
    """A GPTModel with `cfg` on the meta device: parameter shapes without memory or time."""
    from .model import GPTModel

    with torch.device("meta"):
        return GPTModel(cfg)


# --- chapter 2 -------------------------------------------------------------------------------------------------


def _check_2_1(answer):
    ids = _ids(answer, "the answer")
    expected = _tokenizer().encode("Akwirw ier")
    if ids == expected:
        return "tiktoken splits the unknown word into known pieces, so nothing is ever out of vocabulary"
    if len(ids) != len(expected):
        raise Wrong(f"{len(ids)} ids, but 'Akwirw ier' encodes to a different number of tokens. "
                    "Hint: encode the whole string, space included, with gpt2_tokenizer().encode")
    raise Wrong("the right number of ids, but not the right ids. Hint: gpt2_tokenizer().encode('Akwirw ier')")


def _first_inputs(max_length: int, stride: int) -> torch.Tensor:
    from .data import create_dataloader_v1

    loader = create_dataloader_v1(_verdict(), batch_size=4, max_length=max_length, stride=stride, shuffle=False,
                                  tokenizer=_tokenizer())
    return next(iter(loader))[0]


def _check_2_2(answer):
    a, b = _pair(answer, "(first inputs with max_length=2, stride=2, first inputs with max_length=8, stride=2)")
    for value, (max_length, stride), name in [(a, (2, 2), "first"), (b, (8, 2), "second")]:
        got, expected = _tensor(value, f"the {name} batch"), _first_inputs(max_length, stride)
        if tuple(got.shape) != tuple(expected.shape):
            raise Wrong(f"the {name} batch has shape {tuple(got.shape)}; a batch of 4 windows of max_length="
                        f"{max_length} should be (4, {max_length}). Hint: batch_size=4, and take the inputs, not the targets")
        if not torch.equal(got, expected):
            raise Wrong(f"the {name} batch (max_length={max_length}, stride={stride}) holds other token ids. "
                        "Hint: shuffle=False, and the inputs (the first tensor of a batch), not the targets")
    return "with stride == max_length windows do not overlap; with stride < max_length they share tokens"


def _check_2_3(answer):
    from .tokenizer import build_vocab

    words, bpe = _pair(answer, "(word vocabulary size, distinct BPE token ids)")
    words, bpe = _int(words, "the word vocabulary size"), _int(bpe, "the number of distinct BPE ids")
    text = _verdict()
    exp_words, exp_bpe = len(build_vocab(text)), len(set(_tokenizer().encode(text)))
    if words != exp_words:
        hint = ("the special tokens are not words of the text" if words == exp_words + 2 else
                "count distinct words and punctuation marks (build_vocab or set(split_text(text))), not all of them")
        raise Wrong(f"the word vocabulary size is off. Hint: {hint}")
    if bpe != exp_bpe:
        raise Wrong("the number of distinct BPE ids is off. Hint: len(set(tokenizer.encode(text))), "
                    "distinct ids, not the length of the encoded text")
    return "a word vocabulary grows with every new text; BPE's stays at 50,257 pieces and spells any word"


# --- chapter 3 -------------------------------------------------------------------------------------------------


def _check_3_1(answer):
    v1, v2 = _pair(answer, "(sa_v1, sa_v2)")
    v1, v2 = _module(v1, "sa_v1"), _module(v2, "sa_v2")
    if v1 is v2:
        raise Wrong("both are the same module: pass the SelfAttention_v1 instance and the SelfAttention_v2 instance")
    x = _book_inputs()
    out1, out2 = _call_eval(v1, x), _call_eval(v2, x)
    if tuple(out1.shape) != tuple(out2.shape):
        raise Wrong(f"the outputs differ in shape {tuple(out1.shape)} vs {tuple(out2.shape)}. Hint: build both "
                    "with the same d_in and d_out")
    if not torch.allclose(out1, out2, atol=1e-6):
        raise Wrong("the two modules still give different outputs. Hint: nn.Linear stores its weight as "
                    "(d_out, d_in); SelfAttention_v1 multiplies x @ W, so it needs the transpose (.weight.T)")
    return "same weights, same outputs: nn.Linear is a matrix multiplication with a transposed weight"


def _check_3_2(answer):
    module = _module(answer, "the answer")
    x = torch.stack((_book_inputs(), _book_inputs()))  # (2, 6, 3)
    out = _call_eval(module, x)
    heads = len(module.heads) if hasattr(module, "heads") else getattr(module, "num_heads", None)
    if heads is not None and heads != 2:
        raise Wrong(f"the module has {heads} head(s). Hint: num_heads=2")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 6, 2):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise Wrong(f"on a (2, 6, 3) batch it returns {shape}, not (2, 6, 2). Hint: each head's d_out is "
                    "concatenated, so the output width is num_heads * d_out")
    return "two heads of width 1 concatenate to a 2-dimensional context vector"


def _check_3_3(answer):
    from .attention import MultiHeadAttention

    module = _module(answer, "the answer")
    with torch.device("meta"):
        reference = MultiHeadAttention(768, 768, context_length=1024, dropout=0.0, num_heads=12)
    heads = getattr(module, "num_heads", None)
    if heads is not None and heads != 12:
        raise Wrong(f"{heads} heads; GPT-2 small has 12. Hint: num_heads=12")
    mask = getattr(module, "mask", None)
    if isinstance(mask, torch.Tensor) and mask.shape[-1] != 1024:
        raise Wrong(f"the causal mask covers {mask.shape[-1]} tokens; GPT-2 small's context is longer. "
                    "Hint: context_length=1024")
    n = _params(module)
    if n != _params(reference):
        hint = ("GPT_CONFIG_124M has qkv_bias=False" if n > _params(reference) else "d_in = d_out = 768")
        raise Wrong(f"{n:,} parameters is not the size of GPT-2 small's attention. Hint: {hint}")
    out = _call_eval(module, torch.zeros(1, 4, 768))
    if tuple(out.shape) != (1, 4, 768):
        raise Wrong(f"a (1, 4, 768) input gives {tuple(out.shape)}. Hint: d_out=768")
    return f"{n:,} parameters: four 768 x 768 projections (and the output projection's bias)"


def _check_3_4(answer):
    raw, scaled = _pair(answer, "(largest weight without scaling, largest weight with scaling)")
    raw, scaled = _float(raw, "the first weight"), _float(scaled, "the second weight")
    g = torch.Generator().manual_seed(123)
    query, keys = torch.randn(64, generator=g), torch.randn(6, 64, generator=g)
    scores = keys @ query  # (6,)
    exp_raw = torch.softmax(scores, dim=-1).max().item()
    exp_scaled = torch.softmax(scores / 64**0.5, dim=-1).max().item()
    if math.isclose(raw, exp_raw, abs_tol=1e-4) and math.isclose(scaled, exp_scaled, abs_tol=1e-4):
        return "unscaled dot products of 64-dim vectors are large, so softmax is nearly one-hot; / sqrt(d_k) softens it"
    if math.isclose(raw, exp_scaled, abs_tol=1e-4) and math.isclose(scaled, exp_raw, abs_tol=1e-4):
        raise Wrong("the two weights are swapped: the unscaled softmax is the sharper one")
    if math.isclose(scaled, torch.softmax(scores / 64, dim=-1).max().item(), abs_tol=1e-4):
        raise Wrong("the scaled weight is off. Hint: divide by the square root of d_k, not by d_k")
    raise Wrong("the weights are off. Hint: seed a torch.Generator with 123, draw the query then the keys, "
                "scores = keys @ query, softmax over the 6 scores, take the largest")


# --- chapter 4 -------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _block_counts() -> tuple[int, int]:
    from .model import GPT_CONFIG_124M, TransformerBlock

    with torch.device("meta"):
        block = TransformerBlock(GPT_CONFIG_124M)
    return _params(block.ff), _params(block.att)


def _check_4_1(answer):
    ff, att = _pair(answer, "(feed-forward parameters, attention parameters)")
    ff, att = _int(ff, "the feed-forward count"), _int(att, "the attention count")
    exp_ff, exp_att = _block_counts()
    if (ff, att) == (exp_ff, exp_att):
        return f"the feed-forward module holds {ff / att:.1f}x the attention module's parameters"
    if (ff, att) == (exp_att, exp_ff):
        raise Wrong("the two counts are swapped: feed-forward first, then attention")
    if ff != exp_ff:
        raise Wrong("the feed-forward count is off. Hint: sum(p.numel() for p in block.ff.parameters()) "
                    "for one TransformerBlock(GPT_CONFIG_124M); both Linear layers have a bias")
    raise Wrong("the attention count is off. Hint: count block.att's parameters (query, key, value, out_proj)")


@functools.lru_cache(maxsize=None)
def _gpt2_sizes() -> dict[str, tuple[int, int, float]]:
    from .model import GPT_CONFIG_124M, MODEL_SIZES

    names = {"355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
    sizes = {}
    for size, name in names.items():
        model = _meta_model({**GPT_CONFIG_124M, **MODEL_SIZES[size]})
        total = _params(model)
        sizes[name] = (total, total - model.out_head.weight.numel(), total * 4 / 1024**2)
    return sizes


def _check_4_2(answer):
    if not isinstance(answer, dict):
        raise Wrong("the answer should be a dict {'gpt2-medium': (total, with weight tying, MB), 'gpt2-large': ..., "
                    "'gpt2-xl': ...}")
    expected = _gpt2_sizes()
    got = {("gpt2-" + str(k)) if not str(k).startswith("gpt2-") else str(k): v for k, v in answer.items()}
    if set(got) != set(expected):
        raise Wrong(f"the keys should be {sorted(expected)}, got {sorted(answer)}")
    for name, (total, tied, mb) in expected.items():
        g_total, g_tied, g_mb = _pair(got[name], f"{name}: (total parameters, with weight tying, size in MB)", 3)
        g_total, g_tied, g_mb = _int(g_total, "total"), _int(g_tied, "tied"), _float(g_mb, "MB")
        if g_total == tied:
            raise Wrong(f"{name}: the total already leaves out the output head; count it, then subtract it for tying")
        if g_total != total:
            raise Wrong(f"{name}: the total is off. Hint: GPT_CONFIG_124M with emb_dim, n_layers and n_heads "
                        "changed (context_length 1024, qkv_bias False), then sum(p.numel() ...)")
        if g_tied != tied:
            raise Wrong(f"{name}: the count with weight tying is off. Hint: subtract out_head.weight.numel()")
        if abs(g_mb - mb) > 0.5:
            hint = "1 MB = 1024 * 1024 bytes" if abs(g_mb - total * 4 / 1e6) < 0.5 else "4 bytes per float32 parameter"
            raise Wrong(f"{name}: the size in MB is off. Hint: {hint}")
    return "the parameter count grows with emb_dim squared times the number of blocks"


def _dropout_groups(model: nn.Module) -> dict[str, set[float]]:
    groups: dict[str, set[float]] = {"embedding": set(), "attention": set(), "shortcut": set()}
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            parts = name.split(".")
            in_block = "trf_blocks" in parts
            in_att = in_block and any(p.startswith("att") for p in parts)
            groups["attention" if in_att else "shortcut" if in_block else "embedding"].add(module.p)
    return groups


def _check_4_3(answer):
    model = _module(answer, "the answer")
    if not hasattr(model, "trf_blocks"):
        raise Wrong("pass the GPT model (with .trf_blocks, like utils.GPTModel)")
    groups = _dropout_groups(model)
    for group, rate in DROPOUT_RATES_4_3.items():
        if not groups[group]:
            raise Wrong(f"no nn.Dropout found for the {group}s")
        if groups[group] != {rate}:
            where = {"embedding": "drop_emb", "attention": "each block's att.dropout",
                     "shortcut": "each block's drop_shortcut"}[group]
            raise Wrong(f"the {group} dropout rate(s) {sorted(groups[group])} are not the ones asked for. "
                        f"Hint: {where} should use the {group} rate from the config")
    return "three dropout rates, each set from its own config key"


@functools.lru_cache(maxsize=None)
def _flops_per_token_124m() -> int:
    from .model import GPT_CONFIG_124M

    model = _meta_model(GPT_CONFIG_124M)
    return 2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def _check_4_4(answer):
    flops = _float(answer, "the answer")
    expected = _flops_per_token_124m()
    if math.isclose(flops, expected, rel_tol=0.005):
        return "about 2 FLOPs per weight per token: a multiply and an add"
    if math.isclose(flops, expected / 2, rel_tol=0.005):
        raise Wrong("that counts multiply-adds; each is two floating-point operations")
    if flops > expected:
        raise Wrong("too many. Hint: embedding lookups are not multiplications; count only the weights of the "
                    "nn.Linear layers (output head included)")
    raise Wrong("too few. Hint: every nn.Linear weight, in all 12 blocks and the output head, times 2")


# --- chapter 5 -------------------------------------------------------------------------------------------------


def _book_probas(temperature: float, top_k: int | None = None) -> torch.Tensor:
    from .generate import top_k_filter

    logits = torch.tensor([BOOK_LOGITS])  # (1, 9)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), len(BOOK_VOCAB)).float()[0]
    return torch.softmax(logits / temperature, dim=-1)[0]


def _check_5_1(answer):
    if not isinstance(answer, dict):
        raise Wrong("the answer should be a dict {temperature: times 'pizza' was drawn in 1,000 samples}")
    got = {float(k): v for k, v in answer.items()}
    if set(got) != {float(t) for t in TEMPERATURES_5_1}:
        raise Wrong(f"give a count for each temperature {list(TEMPERATURES_5_1)}, got keys {sorted(answer)}")
    for t in TEMPERATURES_5_1:
        count = _float(got[float(t)], f"the count at temperature {t}")
        if 0 < count < 1:
            raise Wrong(f"at temperature {t}: {count} looks like a fraction; give the count out of 1,000 draws")
        p = _book_probas(t)[BOOK_VOCAB.index("pizza")].item()
        mean, sd = 1000 * p, math.sqrt(1000 * p * (1 - p))
        if abs(count - mean) > 4 * sd + 1.5:
            raise Wrong(f"at temperature {t} the count is far from what sampling gives. Hint: divide the logits by "
                        "the temperature, softmax, then draw 1,000 times with torch.multinomial")
    return "the exact answer is 1,000 x softmax(logits / T)['pizza']: no sampling needed"


def _check_5_2(answer):
    if not isinstance(answer, dict) or set(answer) != {"precise", "creative"}:
        raise Wrong("the answer should be {'precise': {'temperature': ..., 'top_k': ...}, 'creative': {...}}")
    probas = {}
    for task, settings in answer.items():
        if not isinstance(settings, dict) or not set(settings) <= {"temperature", "top_k"}:
            raise Wrong(f"{task}: give a dict with 'temperature' and 'top_k' (None for no top-k)")
        t = _float(settings.get("temperature", 1.0), f"{task} temperature")
        k = settings.get("top_k")
        if t < 0 or (k is not None and _int(k, f"{task} top_k") < 1):
            raise Wrong(f"{task}: temperature must be >= 0 and top_k >= 1 (or None)")
        probas[task] = _book_probas(t, None if k is None else int(k))
    if probas["precise"].max() < 0.95:
        raise Wrong("the precise settings still spread probability over several words (on the book's logits). "
                    "Hint: a low temperature or a top_k of 1 makes the choice nearly certain")
    if (probas["creative"] >= 0.05).sum() < 3:
        raise Wrong("the creative settings leave fewer than three likely words. Hint: temperature 1 or more, "
                    "and a top_k that keeps several words")
    return "low temperature / small top-k for factual answers, higher temperature / larger top-k for variety"


@functools.lru_cache(maxsize=None)
def _tiny_model():
    from .model import GPTModel

    cfg = {"vocab_size": 100, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(0)
        model = GPTModel(cfg)
    return model.eval()


def _check_5_3(answer):
    from .generate import generate

    if not isinstance(answer, dict) or not set(answer) <= {"temperature", "top_k", "top_p"}:
        raise Wrong("the answer should be a dict of generate's sampling settings: temperature, top_k, top_p")
    model, idx, runs = _tiny_model(), torch.tensor([[1, 2, 3]]), []
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


def _check_5_4(answer):
    optimizer, before, per_epoch = _pair(answer, "(optimizer, steps before saving, batches in one epoch)", 3)
    before, per_epoch = _int(before, "steps before saving"), _int(per_epoch, "batches in one epoch")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise Wrong(f"the first item should be the optimizer, got {type(optimizer).__name__}")
    steps = {int(s["step"]) for s in optimizer.state.values() if "step" in s}
    if not steps:
        raise Wrong("the optimizer has no state: it never stepped. Hint: load optimizer_state_dict, then train")
    if steps == {per_epoch} and before > 0:
        raise Wrong("the optimizer counted only the new epoch's steps: it started fresh. Hint: "
                    "optimizer.load_state_dict(checkpoint['optimizer_state_dict']) before training")
    if steps == {before}:
        raise Wrong("the optimizer's step count is where the checkpoint left it: train one more epoch")
    if steps != {before + per_epoch}:
        raise Wrong(f"the optimizer's step count {sorted(steps)} is not the checkpoint's steps plus one epoch. "
                    "Hint: one optimizer.step() per batch, for one pass over the training loader")
    return "the optimizer kept its moment estimates across the reload: training goes on where it stopped"


@functools.lru_cache(maxsize=None)
def _verdict_loaders():
    from .data import create_dataloader_v1

    text = _verdict()
    split = int(0.90 * len(text))
    kwargs = {"batch_size": 2, "max_length": 256, "stride": 256, "shuffle": False, "tokenizer": _tokenizer()}
    return (create_dataloader_v1(text[:split], drop_last=True, **kwargs),
            create_dataloader_v1(text[split:], drop_last=False, **kwargs))


def _check_5_5(answer):
    from .train import calc_loss_loader

    model, train_loss, val_loss = _pair(answer, "(model, training loss, validation loss)", 3)
    model = _module(model, "the model")
    train_loss, val_loss = _float(train_loss, "the training loss"), _float(val_loss, "the validation loss")
    if model.pos_emb.num_embeddings < 256:
        raise Wrong("the model's context is shorter than the chapter's 256-token windows")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            exp_train, exp_val = (calc_loss_loader(loader, model, device) for loader in _verdict_loaders())
    finally:
        model.train(was_training)
    if math.isclose(train_loss, exp_val, abs_tol=2e-3) and math.isclose(val_loss, exp_train, abs_tol=2e-3):
        raise Wrong("the two losses are swapped: training first, then validation")
    if not (math.isclose(train_loss, exp_train, abs_tol=2e-3) and math.isclose(val_loss, exp_val, abs_tol=2e-3)):
        raise Wrong("these are not this model's losses on The Verdict's 90/10 split. Hint: the chapter's loaders "
                    "(256-token windows, stride 256) and model.eval() so dropout is off")
    return "the book measured 3.7547 / 3.5596 with OpenAI's GPT-2 124M"


def _check_5_6(answer):
    from .model import MODEL_SIZES, gpt2_config

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


def _check_5_7(answer):
    model, text, ppl = _pair(answer, "(model, text, perplexity)", 3)
    model = _module(model, "the model")
    if not isinstance(text, str):
        raise Wrong("the second item should be your sentence (a str)")
    ppl = _float(ppl, "the perplexity")
    ids = _tokenizer().encode(text)[: model.pos_emb.num_embeddings + 1]
    if len(ids) < 2:
        raise Wrong("the sentence needs at least two tokens: one to read and one to predict")
    device = next(model.parameters()).device
    x = torch.tensor(ids, device=device).unsqueeze(0)
    logits = _call_eval(model, x[:, :-1])  # (1, n - 1, vocab)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten()).item()
    if math.isclose(ppl, math.exp(loss), rel_tol=1e-3):
        return "exp(mean cross-entropy): on average the model hesitates between about that many tokens"
    if math.isclose(ppl, loss, rel_tol=1e-3):
        raise Wrong("that is the cross-entropy loss; perplexity is exp(loss)")
    raise Wrong("not this model's perplexity on that sentence. Hint: inputs are tokens 0..n-2, targets 1..n-1 "
                "(shifted by one), mean cross-entropy, then exp; model.eval()")


# --- chapter 6 -------------------------------------------------------------------------------------------------


def _check_6_1(answer):
    dataset, model = _pair(answer, "(training dataset, model)")
    model = _module(model, "the model")
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
                    "pass max_length=model.pos_emb.weight.shape[0]")
    return "every message now fills the whole context, mostly padding: slower, and the book found it no more accurate"


def _check_6_2(answer):
    model = _module(answer, "the answer")
    head = getattr(model, "out_head", None)
    if not isinstance(head, nn.Linear) or head.out_features != 2:
        raise Wrong("the output head should map to 2 classes. Hint: model.out_head = nn.Linear(emb_dim, 2)")
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:
        raise Wrong(f"{len(frozen)} parameter tensors are still frozen (e.g. {frozen[0]}). Hint: set requires_grad "
                    "to True for every parameter, not only the last block's")
    return "every parameter trains: slower per step, often a little more accurate"


def _check_6_3(answer):
    if not callable(answer):
        raise Wrong("the answer should be a function: model outputs (batch, num_tokens, 2) -> logits (batch, 2)")
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(3, 5, 2, generator=g)
    try:
        got = answer(outputs)
    except Exception as exc:  # noqa: BLE001
        raise Wrong(f"calling it on a (3, 5, 2) tensor raised {type(exc).__name__}: {exc}") from None
    got = _tensor(got, "what it returns")
    if tuple(got.shape) != (3, 2):
        raise Wrong(f"on (batch=3, num_tokens=5, classes=2) outputs it returns shape {tuple(got.shape)}, not (3, 2). "
                    "Hint: index the token axis (dim 1), keep batch and classes")
    if torch.equal(got, outputs[:, -1, :]):
        raise Wrong("that is the last token, the chapter's choice; this exercise uses the first one")
    if not torch.equal(got, outputs[:, 0, :]):
        raise Wrong("those are not the first token's logits. Hint: outputs[:, 0, :]")
    return ("the first token sees only itself under the causal mask, so it knows nothing of the rest of the message: "
            "expect much lower accuracy")


@functools.lru_cache(maxsize=None)
def _classifier_trainable() -> int:
    from .model import gpt2_config
    from .spam import prepare_classifier

    model = _meta_model(gpt2_config("124M"))
    with torch.device("meta"):
        prepare_classifier(model, num_classes=2)
    return _params(model, trainable_only=True)


def _check_6_4(answer):
    n = _int(answer, "the answer")
    expected = _classifier_trainable()
    if n == expected:
        return f"{n:,} of about 124M parameters train (about {100 * n / 124.4e6:.0f}%)"
    if n > 20 * expected:
        raise Wrong("that counts every parameter; count only those with requires_grad=True")
    raise Wrong("the trainable count is off. Hint: prepare_classifier on GPTModel(gpt2_config('124M')): the last "
                "block, the final LayerNorm and the new 2-class head (with its bias)")


# --- chapter 7 -------------------------------------------------------------------------------------------------


def _phi3_prompt(entry: dict) -> str:
    return f"<|user|>\n{entry['instruction']}" + (f"\n{entry['input']}" if entry.get("input") else "")


def _check_7_1(answer):
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
        if got != _phi3_prompt(entry):
            which = "with" if entry["input"] else "without"
            raise Wrong(f"the prompt for an entry {which} an input is not the Phi-3 style asked for. Hint: "
                        "'<|user|>\\n' + instruction, then '\\n' + input only when there is one; no trailing newline")
    return "shorter prompts: fewer tokens per entry, so training is a little faster"


def _expected_masked(items) -> tuple[torch.Tensor, torch.Tensor]:
    from .instruct import custom_collate_fn

    inputs, targets = custom_collate_fn([ids for _, ids in items])
    for i, (prompt_len, _) in enumerate(items):
        targets[i, : prompt_len - 1] = -100  # targets[t] is token t + 1: the prompt's tokens 1..prompt_len-1
    return inputs, targets


def example_items() -> list[tuple[int, list[int]]]:
    """Exercise 7.2's batch: `(prompt_length, token_ids)` for the two EXAMPLE_ENTRIES (Alpaca prompt + response)."""
    from .instruct import format_input, format_response

    tok = _tokenizer()
    return [(len(tok.encode(format_input(e))), tok.encode(format_input(e) + format_response(e))) for e in EXAMPLE_ENTRIES]


def _check_7_2(answer):
    from .instruct import custom_collate_fn

    if not callable(answer):
        raise Wrong("the answer should be a collate function: list of (prompt_length, token_ids) -> (inputs, targets)")
    items = example_items()
    try:
        got = answer([(n, list(ids)) for n, ids in items])
    except Exception as exc:  # noqa: BLE001
        raise Wrong(f"calling it on exercises.example_items() raised {type(exc).__name__}: {exc}") from None
    inputs, targets = _pair(got, "(inputs, targets)")
    inputs, targets = _tensor(inputs, "inputs"), _tensor(targets, "targets")
    exp_inputs, exp_targets = _expected_masked(items)
    if tuple(targets.shape) != tuple(exp_targets.shape) or not torch.equal(inputs, exp_inputs):
        raise Wrong("the inputs or the shapes differ from custom_collate_fn's: mask only the targets, pad as before")
    if torch.equal(targets, custom_collate_fn([ids for _, ids in items])[1]):
        raise Wrong("no prompt target is masked yet. Hint: set the targets of the prompt's positions to -100")
    if not torch.equal(targets, exp_targets):
        raise Wrong("the masked positions are off by some. Hint: targets are shifted by one, so masking the prompt's "
                    "n tokens means the first n - 1 targets; the response's first token stays")
    return "the loss now counts only the response (and the end-of-text token)"


def _check_7_3(answer):
    from .instruct import split_data

    sizes = tuple(_int(v, "a split size") for v in _pair(answer, "(train, test, validation) sizes", 3))
    expected = tuple(len(part) for part in split_data(list(range(ALPACA_FULL_SIZE))))
    if sizes == expected:
        return "with the whole set, one epoch is ~47x the chapter's steps: plan for a GPU (the book: hours on an A100)"
    if sorted(sizes) == sorted(expected):
        raise Wrong("the right sizes in the wrong order: split_data returns train, test, validation")
    if sum(sizes) != ALPACA_FULL_SIZE:
        raise Wrong(f"the sizes add up to {sum(sizes):,}, not Alpaca's {ALPACA_FULL_SIZE:,} entries")
    raise Wrong("the split is off. Hint: utils.split_data (85% / 10% / the rest, rounded down)")


@functools.lru_cache(maxsize=None)
def _lora_trainable_355m(rank: int = 16) -> int:
    from .lora import replace_linear_with_lora
    from .model import gpt2_config

    model = _meta_model(gpt2_config("355M"))
    for p in model.parameters():
        p.requires_grad = False
    with torch.device("meta"):
        replace_linear_with_lora(model, rank=rank, alpha=rank)
    return _params(model, trainable_only=True)


def _check_7_4(answer):
    n = _int(answer, "the answer")
    expected = _lora_trainable_355m()
    if n == expected:
        return f"{n:,} trainable LoRA parameters, about 2% of GPT-2 medium's"
    if n == _lora_trainable_355m(8):
        raise Wrong("that is rank 8; the exercise uses rank 16")
    if n > 20 * expected:
        raise Wrong("that counts the frozen weights too. Hint: freeze the model first (requires_grad=False), "
                    "then replace_linear_with_lora, then count parameters with requires_grad")
    raise Wrong("the count is off. Hint: GPT-2 medium (gpt2_config('355M')), every nn.Linear replaced "
                "(output head included), rank=16")


def _check_7_5(answer):
    from .instruct import custom_collate_fn

    batch, count = _pair(answer, "(batch of token id lists, positions that count in the loss)")
    count = _int(count, "the count")
    if not isinstance(batch, (list, tuple)) or not batch:
        raise Wrong("the first item should be the batch: a list of token id lists")
    batch = [_ids(item, "each batch item") for item in batch]
    _, targets = custom_collate_fn(batch)
    expected = int((targets != -100).sum())
    if count == expected:
        return "every real token and one end-of-text token per entry count; the rest of the padding does not"
    if count == targets.numel():
        raise Wrong("that counts every target, padding included. Hint: (targets != -100).sum()")
    if count == expected - len(batch):
        raise Wrong("the end-of-text token right after each response counts too: the model must learn to stop")
    raise Wrong("the count is off. Hint: inputs, targets = custom_collate_fn(batch); (targets != -100).sum()")


# --- appendix A ------------------------------------------------------------------------------------------------


def _check_a_1(answer):
    n = _int(answer, "the answer")
    with torch.device("meta"):
        mlp = nn.Sequential(nn.Linear(2, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 2))
    expected = _params(mlp)
    if n == expected:
        return "three Linear layers: (inputs x outputs) weights plus one bias per output each"
    if n == sum(m.weight.numel() for m in mlp if isinstance(m, nn.Linear)):
        raise Wrong("that leaves out the biases: every Linear layer has one bias per output")
    raise Wrong("the count is off. Hint: sum(p.numel() for p in model.parameters() if p.requires_grad)")


def _check_a_2(answer):
    ratio = _float(answer, "the ratio")
    if not math.isfinite(ratio) or ratio <= 0:
        raise Wrong(f"{ratio} is not a measured ratio: divide the CPU time by the GPU time, both positive")
    return "a measured CPU time / GPU time: above 1 the GPU is faster (on small work the CPU can win)"


CHECKERS: dict[str, Callable] = {
    "2.1": _check_2_1, "2.2": _check_2_2, "2.3": _check_2_3,
    "3.1": _check_3_1, "3.2": _check_3_2, "3.3": _check_3_3, "3.4": _check_3_4,
    "4.1": _check_4_1, "4.2": _check_4_2, "4.3": _check_4_3, "4.4": _check_4_4,
    "5.1": _check_5_1, "5.2": _check_5_2, "5.3": _check_5_3, "5.4": _check_5_4, "5.5": _check_5_5,
    "5.6": _check_5_6, "5.7": _check_5_7,
    "6.1": _check_6_1, "6.2": _check_6_2, "6.3": _check_6_3, "6.4": _check_6_4,
    "7.1": _check_7_1, "7.2": _check_7_2, "7.3": _check_7_3, "7.4": _check_7_4, "7.5": _check_7_5,
    "A.1": _check_a_1, "A.2": _check_a_2,
}
BOOK_EXERCISES = ("2.1", "2.2", "3.1", "3.2", "3.3", "4.1", "4.2", "4.3", "5.1", "5.2", "5.3", "5.4", "5.5", "5.6",
                  "6.1", "6.2", "6.3", "7.1", "7.2", "7.3", "7.4", "A.1", "A.2")


def check(exercise_id: str, answer) -> bool:
    """Check `answer` to exercise `exercise_id` ("2.1", "4.2", "A.1", ...); print one line; True if right.

    `...` (anywhere in the answer) or None prints "not answered yet" and returns False. An unknown id raises
    ValueError listing the known ones. A wrong answer, or one whose code raises, prints what is off and a hint.
    """
    key = str(exercise_id).strip()
    if key not in CHECKERS:
        raise ValueError(f"unknown exercise id {exercise_id!r}: known ids are {', '.join(CHECKERS)}")
    if _unanswered(answer):
        print(f"Exercise {key}: not answered yet (replace the ... above with your answer)")
        return False
    try:
        message = CHECKERS[key](answer)
    except Wrong as exc:
        print(f"{CROSS} Exercise {key}: {exc}")
        return False
    except Exception as exc:  # noqa: BLE001  (an answer of an unexpected kind: say so, never raise)
        print(f"{CROSS} Exercise {key}: could not check this answer ({type(exc).__name__}: {exc})")
        return False
    print(f"{TICK} Exercise {key}: right. {message}")
    return True
