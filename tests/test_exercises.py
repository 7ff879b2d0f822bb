"""utils.exercises: each exercise accepts its solution and rejects typical wrong answers, without raising."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from utils import (
    GPT_CONFIG_124M,
    MODEL_SIZES,
    GPTModel,
    MultiHeadAttention,
    SpamDataset,
    TransformerBlock,
    calc_loss_batch,
    create_dataloader_v1,
    custom_collate_fn,
    gpt2_config,
    gpt2_tokenizer,
    prepare_classifier,
    write_split_csv,
)
from utils.exercises import CHECKERS, CROSS, TICK, ch04, ch05, ch06, ch07, check, core, grade
from utils.lora import replace_linear_with_lora

TINY = {"vocab_size": 50257, "context_length": 256, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}


def verdict():
    return core.the_verdict()


def tiny_model(seed=123, **overrides):
    torch.manual_seed(seed)
    return GPTModel({**TINY, **overrides}).eval()


def meta(cfg):
    with torch.device("meta"):
        return GPTModel(cfg)


def count(module, trainable=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


# --- the book's classes of chapter 3, as a learner writes them --------------------------------------------------


class SelfAttentionV1(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x):
        q, k, v = x @ self.W_query, x @ self.W_key, x @ self.W_value
        return torch.softmax(q @ k.T / k.shape[-1] ** 0.5, dim=-1) @ v


class SelfAttentionV2(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.W_query, self.W_key, self.W_value = (nn.Linear(d_in, d_out, bias=False) for _ in range(3))

    def forward(self, x):
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        return torch.softmax(q @ k.T / k.shape[-1] ** 0.5, dim=-1) @ v


def copied_v1(v2, transpose=True):
    torch.manual_seed(123)
    v1 = SelfAttentionV1(3, 2)
    for name in ("W_query", "W_key", "W_value"):
        w = getattr(v2, name).weight
        setattr(v1, name, nn.Parameter(w.T.clone() if transpose else w.clone()))
    return v1


class Wrapper(nn.Module):
    """Heads of utils' MultiHeadAttention with one head each, concatenated (the book's wrapper)."""

    def __init__(self, d_in, d_out, num_heads, context_length=6):
        super().__init__()
        self.heads = nn.ModuleList(MultiHeadAttention(d_in, d_out, context_length, 0.0, num_heads=1)
                                   for _ in range(num_heads))

    def forward(self, x):
        return torch.cat([h(x) for h in self.heads], dim=-1)


# --- answers: (solution, [wrong answers]) per exercise -----------------------------------------------------------


def answers_2_1():
    ids = gpt2_tokenizer().encode("Akwirw ier")
    return ids, [ids[:-1], gpt2_tokenizer().encode("Akwirwier"), "Akwirw ier"]


def answers_2_2():
    def first(max_length, stride, targets=False, shuffle=False):
        torch.manual_seed(123)
        loader = create_dataloader_v1(verdict(), batch_size=4, max_length=max_length, stride=stride, shuffle=shuffle)
        return next(iter(loader))[1 if targets else 0]

    right = (first(2, 2), first(8, 2))
    return right, [(first(2, 1), first(8, 1)), (first(2, 2, targets=True), first(8, 2, targets=True)),
                   (first(2, 2), first(8, 2, shuffle=True)), right[::-1], first(2, 2)]


def answers_2_3():
    from utils import build_vocab, split_text

    text, tok = verdict(), gpt2_tokenizer()
    right = (len(build_vocab(text)), len(set(tok.encode(text))))
    return right, [(right[0] + 2, right[1]), (len(split_text(text)), right[1]), (right[0], len(tok.encode(text)))]


def answers_3_1():
    torch.manual_seed(789)
    v2 = SelfAttentionV2(3, 2)
    torch.manual_seed(123)
    return (copied_v1(v2), v2), [(SelfAttentionV1(3, 2), v2), (copied_v1(v2, transpose=False), v2), (v2, v2)]


def answers_3_2():
    torch.manual_seed(123)
    return Wrapper(3, 1, 2), [Wrapper(3, 2, 2), Wrapper(3, 2, 1), MultiHeadAttention(3, 2, 6, 0.0, num_heads=1),
                              Wrapper(3, 1, 2, context_length=4)]


def answers_3_3():
    def mha(**kw):
        args = {"d_in": 768, "d_out": 768, "context_length": 1024, "dropout": 0.0, "num_heads": 12, **kw}
        return MultiHeadAttention(**args)

    return mha(), [mha(qkv_bias=True), mha(context_length=256), mha(num_heads=2), mha(d_out=96)]


def answers_3_4():
    g = torch.Generator().manual_seed(123)
    query, keys = torch.randn(64, generator=g), torch.randn(6, 64, generator=g)
    scores = keys @ query
    raw, scaled = (torch.softmax(s, dim=-1).max().item() for s in (scores, scores / 8))
    return (raw, scaled), [(scaled, raw), (raw, torch.softmax(scores / 64, dim=-1).max().item()), (raw, "0.5")]


def answers_4_1():
    block = TransformerBlock(GPT_CONFIG_124M)
    ff, att = count(block.ff), count(block.att)
    return (ff, att), [(att, ff), (ff + 1, att), (count(block), att)]


def answers_4_2():
    def sizes(tie_total=False, mb_base=1024**2, cfg_extra=None):
        out = {}
        for size, name in [("355M", "gpt2-medium"), ("774M", "gpt2-large"), ("1558M", "gpt2-xl")]:
            model = meta({**GPT_CONFIG_124M, **MODEL_SIZES[size], **(cfg_extra or {})})
            total = count(model)
            tied = total - model.out_head.weight.numel()
            out[name] = (tied if tie_total else total, tied, total * 4 / mb_base)
        return out

    right = sizes()
    return right, [sizes(tie_total=True), sizes(mb_base=1e6), sizes(cfg_extra={"qkv_bias": True}),
                   {k: v for k, v in right.items() if k != "gpt2-xl"}]


def model_with_dropouts(emb, attn, shortcut):
    model = GPTModel({**TINY, "n_layers": 2})
    model.drop_emb = nn.Dropout(emb)
    for block in model.trf_blocks:
        block.att.dropout = nn.Dropout(attn)
        block.drop_shortcut = nn.Dropout(shortcut)
    return model


def answers_4_3():
    r = ch04.DROPOUT_RATES_4_3
    right = model_with_dropouts(r["embedding"], r["attention"], r["shortcut"])
    half = model_with_dropouts(r["embedding"], r["attention"], r["shortcut"])
    half.trf_blocks[0].att.dropout = nn.Dropout(0.1)
    return right, [GPTModel({**TINY, "drop_rate": 0.1}), model_with_dropouts(0.1, 0.3, 0.2), half]


def answers_4_4():
    model = meta(GPT_CONFIG_124M)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 2 * linear, [linear, 2 * count(model), 2 * (linear - model.out_head.weight.numel())]


def pizza_counts(scale=lambda logits, t: logits / t):
    logits = torch.tensor(ch05.BOOK_LOGITS)
    counts = {}
    for t in ch05.TEMPERATURES_5_1:
        torch.manual_seed(123)
        probas = torch.softmax(scale(logits, t), dim=0)
        counts[t] = int((torch.multinomial(probas, 1000, replacement=True) == ch05.BOOK_VOCAB.index("pizza")).sum())
    return counts


def answers_5_1():
    right = pizza_counts()
    fractions = {t: n / 1000 for t, n in right.items()}
    return right, [pizza_counts(lambda logits, t: logits * t), {1: right[1], 0.1: right[0.1]}, fractions]


def answers_5_2():
    right = {"precise": {"temperature": 0.1, "top_k": None}, "creative": {"temperature": 1.5, "top_k": 5}}
    return right, [{"precise": right["creative"], "creative": right["precise"]},
                   {"precise": {"temperature": 1.0, "top_k": None}, "creative": right["creative"]},
                   {"precise": {"temperature": 0.1}, "creative": {"temperature": 2.0, "top_k": 1}}]


def answers_5_3():
    return {"temperature": 0.0}, [{"temperature": 1.0}, {"temperature": 1.4, "top_k": 25}, {"seed": 123}]


def answers_5_4():
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 50257, (2, 8))

    def steps(optimizer, n):
        for _ in range(n):
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()

    steps(opt, 3)
    reloaded = torch.optim.AdamW(model.parameters(), lr=1e-3)
    reloaded.load_state_dict(copy.deepcopy(opt.state_dict()))
    steps(reloaded, 5)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps(fresh, 5)
    return (reloaded, 3, 5), [(fresh, 3, 5), (opt, 3, 5), (reloaded, 3, 4), (model, 3, 5)]


def answers_5_5():
    model = tiny_model()
    train_loss, val_loss = 11.0049, 10.9939  # computed once (torch 2.13, CPU); the checker allows 2e-3
    short = tiny_model(context_length=64)
    return (model, train_loss, val_loss), [(model, val_loss, train_loss), (model, train_loss + 0.1, val_loss),
                                           (short, train_loss, val_loss)]


def answers_5_6():
    right = gpt2_config("355M")
    return right, [gpt2_config("124M"), {**right, "qkv_bias": False}, {**right, "n_heads": 12},
                   {**GPT_CONFIG_124M, **MODEL_SIZES["355M"]}]


def answers_5_7():
    model, text = tiny_model(), "Every effort moves you forward."
    ids = torch.tensor([gpt2_tokenizer().encode(text)])
    with torch.no_grad():
        logits = model(ids)
    loss = nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item()
    unshifted = nn.functional.cross_entropy(logits[0], ids[0]).item()
    return (model, text, math.exp(loss)), [(model, text, loss), (model, text, math.exp(unshifted)),
                                           (model, "Another text entirely.", math.exp(loss))]


@pytest.fixture
def spam_csv(tmp_path):
    rows = [(1, "WINNER! Claim your free prize now"), (0, "See you at lunch?"), (0, "ok"), (1, "Free entry, txt WIN")]
    return write_split_csv(rows, tmp_path / "train.csv")


def answers_6_1(spam_csv):
    model, tok = tiny_model(), gpt2_tokenizer()
    full = SpamDataset(spam_csv, tok, max_length=256, context_length=256)
    return (full, model), [(SpamDataset(spam_csv, tok), model), (SpamDataset(spam_csv, tok, max_length=255), model),
                           (model, full)]


def answers_6_2():
    def classifier(all_trainable=True, new_head=True):
        model = tiny_model(n_layers=2)
        if new_head:
            prepare_classifier(model)
        for p in model.parameters():
            p.requires_grad = all_trainable or p.requires_grad
        return model

    return classifier(), [classifier(all_trainable=False), classifier(new_head=False)]


def answers_6_3():
    return (lambda outputs: outputs[:, 0, :]), [lambda outputs: outputs[:, -1, :], lambda outputs: outputs[0],
                                                lambda outputs: outputs[:, :, 0], lambda outputs: outputs.foo]


def answers_6_4():
    model = meta(gpt2_config("124M"))
    with torch.device("meta"):
        prepare_classifier(model)
    n = 7_090_946  # GPT-2 124M's configuration: the trained block's query/key/value have biases
    without_qkv_bias = 7_088_642  # what chapter 6 prints on its fallback model (qkv_bias=False)
    return n, [count(model), n - 2, n - 1536, without_qkv_bias]


def answers_7_1():
    from utils import format_input

    def phi(entry):
        return f"<|user|>\n{entry['instruction']}" + (f"\n{entry['input']}" if entry["input"] else "")

    return phi, [format_input, lambda e: phi(e) + "\n", lambda e: f"<|user|>\n{e['instruction']}"]


def masked_collate(offset=1, mask=True):
    def collate(batch):
        inputs, targets = custom_collate_fn([ids for _, ids in batch])
        if mask:
            for i, (prompt_length, _) in enumerate(batch):
                targets[i, : prompt_length - offset] = -100
        return inputs, targets

    return collate


def answers_7_2():
    def mask_inputs(batch):
        inputs, targets = masked_collate()(batch)
        return torch.where(targets == -100, -100, inputs), targets

    return masked_collate(), [masked_collate(mask=False), masked_collate(offset=0), mask_inputs, masked_collate(2)]


def answers_7_3():
    right = (44_201, 5_200, 2_601)  # split_data's 85% / 10% / rest of Alpaca's 52,002 entries
    return right, [(right[0], right[2], right[1]), (935, 110, 55), (right[0] + 1, right[1], right[2])]


def answers_7_4():
    def lora_count(rank, freeze=True):
        model = meta(gpt2_config("355M"))
        for p in model.parameters():
            p.requires_grad = not freeze
        with torch.device("meta"):
            replace_linear_with_lora(model, rank=rank, alpha=rank)
        return count(model, trainable=True)

    return lora_count(16), [lora_count(8), lora_count(16, freeze=False), lora_count(16) + 1]


def answers_7_5():
    tok = gpt2_tokenizer()
    batch = [tok.encode("Name a colour. Blue."), tok.encode("Name a big animal. The elephant.")]
    _, targets = custom_collate_fn(batch)
    n = int((targets != -100).sum())
    return (batch, n), [(batch, targets.numel()), (batch, n - len(batch)), (batch, n + 1)]


def answers_a_3():
    mlp = nn.Sequential(nn.Linear(2, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 2))
    return count(mlp), [2 * 30 + 30 * 20 + 20 * 2, 2 + 30 + 20 + 2, count(mlp) - 1]


def answers_a_4():
    right = (0.025, None)  # 80 GFLOP/s on the CPU, no GPU: answerable on any machine
    wrongs = [(25.0, None),  # milliseconds given as seconds
              (0.025, 1e-7),  # a GPU timed without waiting for it: 20 PFLOP/s
              (-1.0, None), (float("nan"), None), ("fast", None), 3.7]
    assert grade("A.4", (0.025, 0.0002))[0]  # a GPU 125x faster: 10 TFLOP/s
    return right, wrongs


def answers_8_1():
    gqa = 2 * 30 * 3 * 64 * 4  # SmolLM2: keys + values, layers, KV heads, head_dim, bytes (float32)
    return (gqa, 3 * gqa), [(gqa // 2, 3 * gqa), (gqa, gqa), (gqa, 2 * gqa)]


def answers_8_2():
    from utils.llama import QWEN3_06B, LlamaModel, count_unique_parameters

    with torch.device("meta"):
        untied = LlamaModel({**QWEN3_06B, "tie_embeddings": False})
    unique = count_unique_parameters(untied)[1]
    share = 2 * 151_936 * 1024 / unique
    return (unique, share), [(unique - 151_936 * 1024, share), (unique, share / 2), (unique + 1, share)]


def answers_8_3():
    def rms_norm(x, weight, eps):
        return weight * x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)

    def layer_norm(x, weight, eps):
        return weight * torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)

    return rms_norm, [layer_norm, lambda x, weight, eps: x, lambda x, weight, eps: x.sum(), "rms_norm"]


def answers_8_4():
    return (29, 29, 6), [(14, 15, 3), (29, 30, 5), (64, 0, 0)]


def answers_5c_1():
    def accumulate(model, inputs, targets, micro_batches):
        for x, y in zip(inputs.chunk(micro_batches), targets.chunk(micro_batches)):
            (calc_loss_batch(x, y, model, "cpu") / micro_batches).backward()

    def summed(model, inputs, targets, micro_batches):  # forgets to divide: 4x the gradient
        for x, y in zip(inputs.chunk(micro_batches), targets.chunk(micro_batches)):
            calc_loss_batch(x, y, model, "cpu").backward()

    def first_only(model, inputs, targets, micro_batches):
        calc_loss_batch(inputs[:2], targets[:2], model, "cpu").backward()

    return accumulate, [summed, first_only, 42]


def answers_5c_2():
    return 2 ** -7, [2 ** -23, 2 ** -8, "small"]


def answers_2b_1():
    def encode_piece(piece, merges):  # the earliest learned pair first, until none is left
        ids, rank = list(piece), {pair: k for k, pair in enumerate(merges)}
        while len(ids) > 1:
            k, i = min((rank.get(pair, len(merges)), i) for i, pair in enumerate(zip(ids, ids[1:])))
            if k == len(merges):
                break
            ids[i : i + 2] = [256 + k]
        return ids

    def one_pass(piece, merges):  # left to right, whichever learned pair comes first
        ids, out, i = list(piece), [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) in merges:
                out.append(256 + merges.index((ids[i], ids[i + 1])))
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    def latest_first(piece, merges):  # every merge replayed over the whole piece, the last learned first
        ids = list(piece)
        for k in reversed(range(len(merges))):
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == merges[k]:
                    out.append(256 + k)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    return encode_piece, [one_pass, latest_first, lambda piece, merges: list(piece), "encode_piece"]


def answers_5b_1():
    def count_windows(num_tokens, context_length, val_fraction):
        split = round(num_tokens * (1 - val_fraction))
        return tuple((n - 1) // context_length for n in (split, num_tokens - split))

    def forgets_the_target(num_tokens, context_length, val_fraction):
        split = round(num_tokens * (1 - val_fraction))
        return tuple(n // context_length for n in (split, num_tokens - split))

    return count_windows, [forgets_the_target, lambda *case: count_windows(*case)[::-1], lambda *case: (1, 1), 42]


def test_5b_1_counts_are_train_val_windows(tmp_path):
    """The checker's expected counts are those of real TokenWindows on a real token file."""
    from utils.corpus import build_token_file, get_tokenizer, train_val_windows
    from utils.exercises import ch05b

    (tmp_path / "text.txt").write_text(verdict(), encoding="utf-8")
    token_file = build_token_file(tmp_path / "text.txt", tmp_path / "tokens.bin", get_tokenizer("bytes"), progress=False)
    for context_length, val_fraction in [(256, 0.1), (128, 0.2), (64, 0.25), (100, 0.1)]:
        train_ds, val_ds = train_val_windows(token_file, context_length, val_fraction)
        assert ch05b.windows(token_file.num_tokens, context_length, val_fraction) == (len(train_ds), len(val_ds))


def answers_d_1():
    g1 = torch.tensor([3.0, 4.0])  # and g2 = [0, 0, 12]: a global norm of 13
    return g1 / 13, [g1, g1 / 5, g1 / 13 * 2, torch.tensor([1.0]), "small"]


def answers_d_2():
    return (27, 28), [(28, 27), (26, 27), (27, 27), (28, 28)]


def answers_e_1():
    return {"a", "b"}, [{"a"}, {"a", "b", "c"}, {"c"}, "abc", {"d"}, 1]


def _exercise_id(name: str) -> str:
    """answers_4_1 -> "4.1", answers_a_1 -> "A.1", answers_5c_1 -> "5c.1"."""
    chapter, number = name.removeprefix("answers_").split("_")
    return f"{chapter.upper() if chapter.isalpha() else chapter}.{number}"


class PhiChatTemplate:  # exercise 9.1's answer (as in solutions/09_solutions.ipynb)
    def __init__(self, tokenizer, end_of_turn=True, generation_prompt="<|assistant|>\n"):
        self.tokenizer, self.stop_ids = tokenizer, {50256}
        self.end_of_turn, self.generation_prompt = end_of_turn, generation_prompt

    def encode(self, messages, add_generation_prompt=True):
        ids = []
        for m in messages:
            if m["role"] == "user":
                ids += self.tokenizer.encode(f"<|user|>\n{m['content']}\n")
            elif m["role"] == "assistant":
                ids += self.tokenizer.encode(f"<|assistant|>\n{m['content']}") + [50256] * self.end_of_turn
        return ids + (self.tokenizer.encode(self.generation_prompt) if add_generation_prompt else [])


def answers_9_1():
    from utils.chat import AlpacaChatTemplate

    no_end = type("NoEnd", (PhiChatTemplate,), {"__init__": lambda self, t: PhiChatTemplate.__init__(self, t, False)})
    return PhiChatTemplate, [AlpacaChatTemplate, no_end, PhiChatTemplate(gpt2_tokenizer())]


def answers_9_2():
    return 6, [4, 62, 0]  # "Red." is 2 tokens, plus the end-of-turn token, twice


def answers_9_3():
    return 3, [5, 4, 0]


def answers_10_1():  # z = (-1.2 + 2.0) - (-1.5 + 1.8) = 0.5; loss = log(1 + exp(-0.1 * 0.5))
    return math.log(1 + math.exp(-0.05)), [math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(0.05)), 0.6931, "0.67"]


def answers_10_2():
    z = math.log(math.exp(-0.5) / (1 - math.exp(-0.5)))  # beta * margin at a loss of 0.5
    return (z / 0.1, z / 0.5), [(z / 0.5, z / 0.1), (z, z), (z / 0.1,), 4.33]


def answers_10_3():
    def summed(logits, labels, selection_mask):
        log_probs = torch.log_softmax(logits[:, :-1, :], dim=-1)
        selected = torch.gather(log_probs, -1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
        return (selected * selection_mask[:, 1:]).sum(-1)

    def mean(logits, labels, selection_mask):
        return summed(logits, labels, selection_mask) / selection_mask[:, 1:].sum(-1)

    def unshifted(logits, labels, selection_mask):
        selected = torch.gather(torch.log_softmax(logits, -1), -1, labels.unsqueeze(-1)).squeeze(-1)
        return (selected * selection_mask).sum(-1)

    return summed, [mean, unshifted, lambda *args: None, "summed"]


ANSWERS = {_exercise_id(name): f for name, f in dict(globals()).items() if name.startswith("answers_")}


def test_every_exercise_has_answers():
    assert sorted(ANSWERS) == sorted(CHECKERS)


@pytest.mark.parametrize("exercise_id", sorted(CHECKERS))
def test_solution_accepted_and_wrong_answers_rejected(exercise_id, request):
    factory = ANSWERS[exercise_id]
    args = [request.getfixturevalue(n) for n in factory.__code__.co_varnames[: factory.__code__.co_argcount]]
    right, wrongs = factory(*args)
    assert len(wrongs) >= 2
    ok, line = grade(exercise_id, right)
    assert ok, line
    assert line.startswith(f"{TICK} Exercise {exercise_id}: right.") and "\n" not in line, line
    for i, wrong in enumerate(wrongs):
        ok, line = grade(exercise_id, wrong)
        assert not ok, f"wrong answer {i} was accepted"
        assert line.startswith(f"{CROSS} Exercise {exercise_id}:") and "\n" not in line, line


@pytest.mark.parametrize("answer", [..., None, (..., ...), {"gpt2-medium": (1, ..., 2.0)}])
def test_unanswered_prints_not_answered_yet(answer, capsys):
    assert check("4.2", answer) is None  # a notebook cell shows the printed line and nothing else
    assert grade("4.2", answer)[0] is False
    assert capsys.readouterr().out == "Exercise 4.2: not answered yet (replace the ... above with your answer)\n"


def test_unknown_id_raises_with_known_ids():
    with pytest.raises(ValueError, match=r"unknown exercise id '9\.9'.*2\.1, 2\.2"):
        check("9.9", 1)


def test_feedback_never_gives_the_expected_value():
    """A wrong count must not be answered with the right one."""
    right, wrongs = answers_4_1()
    for wrong in wrongs:
        out = grade("4.1", wrong)[1]
        assert str(right[0]) not in out and f"{right[0]:,}" not in out, out


def test_book_figures():
    """The computed expected values reproduce the book's numbers."""
    assert ch04.block_counts() == (4_722_432, 2_360_064)
    assert {k: v[:2] for k, v in ch04.gpt2_sizes().items()} == {
        "gpt2-medium": (406_212_608, 354_749_440), "gpt2-large": (838_220_800, 773_891_840),
        "gpt2-xl": (1_637_792_000, 1_557_380_800)}
    assert [round(v[2], 2) for v in ch04.gpt2_sizes().values()] == [1549.58, 3197.56, 6247.68]
    assert gpt2_tokenizer().encode("Akwirw ier") == [33901, 86, 343, 86, 220, 959]
    assert ch07.lora_trainable_355m() == 7_898_384
    assert answers_a_3()[0] == 752
    assert ch06.classifier_trainable() == 7_090_946  # exercise 6.4: GPT-2 124M's configuration
