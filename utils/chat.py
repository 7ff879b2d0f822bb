"""Chapter 9: a conversation as token ids, finetuning on the assistant's turns, a streaming chat, `python -m utils.chat`.

A chat template turns messages `{"role": "system"|"user"|"assistant", "content": str}` into token ids and names the
ids that end an assistant turn (`stop_ids`). `AlpacaChatTemplate` is chapter 7's prompt extended to many turns;
`utils.llama` has Qwen3's and Llama 3's with the same interface, and `Chat` takes any of them.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .checks import END_OF_TEXT, END_OF_TEXT_ID, check_file, check_int, check_tokenizer
from .generate import sample_next_token

PREAMBLE = (  # chapter 7's: the first turn of a conversation is exactly chapter 7's prompt
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
USER_HEADER, ASSISTANT_HEADER = "\n\n### Instruction:\n", "\n\n### Response:\n"
INPUT_HEADER = "\n\n### Input:\n"  # chapter 7's: an entry's input follows its instruction under this header
IGNORE_INDEX = -100  # cross_entropy skips these targets (chapter 7)
REPEAT_REQUEST = "Say that again."  # a follow-up only a model that reads the history can answer
ROLES = ("system", "user", "assistant")
TEMPLATE_HELP = (
    "a chat template is an object with encode(messages, add_generation_prompt=True) -> token ids, stop_ids (the ids "
    "that end an assistant turn) and tokenizer: write one in the format the model was finetuned on, like "
    "utils.chat.AlpacaChatTemplate (chapter 7's format) or utils.llama's Qwen3ChatTemplate"
)
CHECKPOINT_HELP = {  # which chapter writes which checkpoint
    "ch07_instruction_model.pth": "chapter 7 (notebooks/07_instruction_finetuning.ipynb) writes it",
    "ch09_chat_model.pth": "chapter 9 (notebooks/09_chat.ipynb) writes it",
}


def article(role: str) -> str:
    """"a 'user'", "an 'assistant'": a role named with its article."""
    return ("an " if role[:1] in "aeio" else "a ") + repr(role)  # "a user": the u sounds like "you"


def check_messages(messages, *, generation: bool) -> None:
    """ValueError unless `messages` is [system?] user, assistant, user, ... ending with a user turn (`generation`)
    or with an assistant turn (a training conversation)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    expected = "user"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise ValueError(f"message {i} must be a dict with a 'role' ({', '.join(ROLES)}) and a 'content' string, "
                             f"got {message!r}")
        role = message["role"]
        if role == "system" and i == 0:
            continue
        if role != expected:
            raise ValueError(f"message {i} is {article(role)} turn where {article(expected)} turn belongs: a conversation is an "
                             "optional system message, then user and assistant turns in turn, starting with the user")
        expected = "assistant" if role == "user" else "user"
    last = "user" if generation else "assistant"
    if messages[-1]["role"] != last:
        raise ValueError(f"the last message must be {article(last)} turn, got {messages[-1]['role']!r}"
                         + ("" if generation else ": a conversation to learn from needs an assistant turn at the end"))


class AlpacaChatTemplate:
    """Chapter 7's Alpaca prompt for many turns: preamble, then '### Instruction:' (user) and '### Response:'
    (assistant) turns; every assistant turn ends with `<|endoftext|>`, the token chapter 7 taught the model to stop at."""

    def __init__(self, tokenizer):
        check_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.end_of_turn_id = tokenizer.encode(END_OF_TEXT, allowed_special={END_OF_TEXT})[0]
        self.stop_ids = {self.end_of_turn_id}
        # text is only ever text: a message that contains "<|endoftext|>" cannot end a turn
        self.encode_text = getattr(tokenizer, "encode_ordinary", tokenizer.encode)

    def encode(self, messages, add_generation_prompt=True) -> list[int]:
        """Messages -> token ids `(num_tokens,)`; with `add_generation_prompt` it ends where the reply starts."""
        check_messages(messages, generation=add_generation_prompt)
        system = messages[0]["content"] if messages[0]["role"] == "system" else PREAMBLE
        ids = self.encode_text(system)
        for message in messages:  # each piece encoded on its own: a turn's ids never depend on the next turn
            if message["role"] == "user":
                ids += self.encode_text(USER_HEADER) + self.encode_text(message["content"])
            elif message["role"] == "assistant":
                ids += self.encode_text(ASSISTANT_HEADER) + self.encode_text(message["content"])
                ids.append(self.end_of_turn_id)
        if add_generation_prompt:
            ids += self.encode_text(ASSISTANT_HEADER)
        return ids


def check_template(template) -> None:
    """TypeError saying how to write a chat template unless `template` has encode, stop_ids and tokenizer."""
    if not (callable(getattr(template, "encode", None)) and hasattr(template, "stop_ids")
            and hasattr(template, "tokenizer")):
        raise TypeError(f"{type(template).__name__} is not a chat template: {TEMPLATE_HELP}")


# --- data: conversations to learn from ----------------------------------------------------------------------------


def conversations_from_instructions(data, max_turns=3, repeat_share=0.25, seed=123) -> list[list[dict]]:
    """Chapter 7's entries grouped into conversations of 1 to `max_turns` user/assistant turns (seeded); a share
    `repeat_share` of them ends with the user asking "Say that again." and the assistant repeating its last answer.
    An entry's input follows its instruction under chapter 7's '### Input:' header, so a one-turn conversation is
    chapter 7's prompt."""
    check_int(max_turns, "max_turns")
    rng = random.Random(seed)
    turns = [[{"role": "user", "content": e["instruction"] + (INPUT_HEADER + e["input"] if e.get("input") else "")},
              {"role": "assistant", "content": e["output"]}] for e in data]
    conversations, start = [], 0
    while start < len(turns):
        n = rng.randint(1, max_turns)
        conversation = [message for turn in turns[start:start + n] for message in turn]
        if rng.random() < repeat_share:
            conversation += [{"role": "user", "content": REPEAT_REQUEST},
                             {"role": "assistant", "content": conversation[-1]["content"]}]
        conversations.append(conversation)
        start += n
    return conversations


def load_conversations(path) -> list[list[dict]]:
    """A JSON-lines file, one conversation a line: {"messages": [{"role": ..., "content": ...}, ...]}.
    A broken line, roles out of order or no assistant turn at the end raise ValueError naming the line."""
    path = check_file(path, "conversations file", "write one conversation per line: "
                      '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}')
    conversations = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
            record = json.loads(line)
            if not isinstance(record, dict) or "messages" not in record:
                raise ValueError('each line must be an object {"messages": [...]}')
            check_messages(record["messages"], generation=False)
        except UnicodeDecodeError as exc:  # a Latin-1 or Windows-1252 byte: say where, not just which byte
            raise ValueError(f"{path.name}, line {number}: byte {raw[exc.start:exc.start + 1]!r} at column "
                             f"{exc.start + 1} is not UTF-8: save the file as UTF-8") from None
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            raise ValueError(f"{path.name}, line {number}: {exc}") from None
        conversations.append(record["messages"])
    if not conversations:
        raise ValueError(f"{path.name} holds no conversation: write one per line")
    return conversations


def assistant_token_ids(template, messages) -> tuple[list[int], list[int]]:
    """(ids, labels) of a conversation: labels equal ids on the assistant's turns (from where the reply begins to its
    end-of-turn token included) and -100 elsewhere, so only what the assistant says is learned."""
    ids = template.encode(messages, add_generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = template.encode(messages[:i], add_generation_prompt=True)
        # where the reply begins: the end of its prompt, or where the conversation leaves that prompt (Qwen3 writes an
        # earlier answer without the empty <think> block that its generation prompt opens)
        start = next((k for k, (a, b) in enumerate(zip(prompt, ids)) if a != b), len(prompt))
        end = next((k + 1 for k in range(start, len(ids)) if ids[k] in template.stop_ids),  # its end-of-turn token
                   len(template.encode(messages[:i + 1], add_generation_prompt=False)))
        labels[start:end] = ids[start:end]
    return ids, labels


class ConversationDataset(Dataset):
    """Conversations tokenized once: item i is `(ids, labels)` (see `assistant_token_ids`). With `max_length` (the
    collate's `allowed_max_length`), a conversation with nothing to learn in its first `max_length` tokens is left out
    and named (`left_out`: their indices)."""

    def __init__(self, conversations, template, max_length=None):
        check_template(template)
        items = [assistant_token_ids(template, messages) for messages in conversations]
        first = [next((k for k, t in enumerate(labels) if t != IGNORE_INDEX), len(ids)) for ids, labels in items]
        self.left_out = [i for i, k in enumerate(first) if max_length is not None and k > max_length]  # k: a target at k-1
        if self.left_out:
            print(f"left out {len(self.left_out)} conversation(s) with no assistant token in their first {max_length} "
                  "tokens, nothing to learn: " + ", ".join(f"#{i} ({len(items[i][0])} tokens, the answer starts at "
                                                          f"token {first[i]})" for i in self.left_out[:5])
                  + (", ..." if len(self.left_out) > 5 else ""))
        self.items = [item for i, item in enumerate(items) if i not in self.left_out]

    def __getitem__(self, index):
        return self.items[index]

    def __len__(self):
        return len(self.items)


def chat_collate_fn(batch, pad_token_id=END_OF_TEXT_ID, ignore_index=IGNORE_INDEX, allowed_max_length=None,
                    device="cpu"):
    """Chapter 7's collate for `(ids, labels)` items: inputs padded with `pad_token_id`, targets shifted by one and
    -100 wherever the label is (prompt, user turns, padding). Returns two `(batch, num_tokens)` tensors."""
    batch_max_length = max(len(ids) for ids, _ in batch)
    inputs_lst, targets_lst = [], []
    for ids, labels in batch:
        padding = batch_max_length - len(ids)
        inputs = torch.tensor(ids[:-1] + [pad_token_id] * padding)  # (batch_max_length - 1,)
        targets = torch.tensor(labels[1:] + [ignore_index] * padding)  # the next token, or -100: not learned
        if allowed_max_length is not None:
            inputs, targets = inputs[:allowed_max_length], targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    if all((t == ignore_index).all() for t in targets_lst):  # the loss would be NaN (0 / 0), not a learning rate's fault
        raise ValueError(f"no conversation in this batch ({[len(ids) for ids, _ in batch]} tokens) has an assistant token "
                         f"within allowed_max_length={allowed_max_length}: nothing to learn; "
                         "ConversationDataset(..., max_length=allowed_max_length) names and leaves out such conversations")
    return torch.stack(inputs_lst).to(device), torch.stack(targets_lst).to(device)


# --- generation: token by token with the KV cache ------------------------------------------------------------------


class KVCache:
    """The token ids a model's KV cache holds, so that the next prompt feeds only what follows the longest prefix
    already read (`Chat` keeps one across turns). `last_read`: how many ids the last `read` fed."""

    def __init__(self, model):
        self.model, self.ids, self.mark, self.last_read = model, [], None, 0
        self.layers = [m for m in model.modules() if hasattr(m, "cache_k")]  # GPTModel's and LlamaModel's attention

    def holds(self) -> bool:
        """Whether the model's cache is still the one this object filled (no other call reset or extended it)."""
        return bool(self.ids) and bool(self.layers) and self.layers[-1].cache_k is self.mark

    def read(self, ids) -> torch.Tensor:
        """Next-token logits `(1, vocab_size)` after `ids`: the cache is cut back to the longest prefix of `ids` it
        holds (at most all but the last id), and only the rest is fed."""
        keep, limit = 0, min(len(self.ids), len(ids) - 1) if self.holds() else 0
        while keep < limit and self.ids[keep] == ids[keep]:
            keep += 1
        if keep == 0:
            self.model.reset_kv_cache()
        elif keep < len(self.ids):
            self.cut(keep)
        self.ids, self.last_read = self.ids[:keep], len(ids) - keep
        return self.feed(ids[keep:])

    def cut(self, keep: int) -> None:
        """Keep the first `keep` positions of every layer's keys and values `(batch, n_kv_heads, keep, head_dim)`."""
        for layer in self.layers:
            layer.cache_k, layer.cache_v = layer.cache_k[:, :, :keep], layer.cache_v[:, :, :keep]
            if hasattr(layer, "cache_pos"):  # GPTModel's attention counts positions itself
                layer.cache_pos = keep
        self.model.current_pos = keep

    def feed(self, new_ids) -> torch.Tensor:
        """Next-token logits `(1, vocab_size)` after feeding `new_ids` on top of the cache."""
        idx = torch.tensor([list(new_ids)], device=next(self.model.parameters()).device)  # (1, num_new)
        logits = self.model(idx, use_cache=True)[:, -1, :]  # (1, vocab_size)
        self.ids += list(new_ids)
        self.mark = self.layers[-1].cache_k if self.layers else None
        return logits


def stream_reply(model, prompt_ids, stop_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, stop=None,
                 cache=None):
    """Yield the reply's token ids one at a time: the prompt `(num_tokens,)` is read into the KV cache, then each
    step feeds only the new token. Ends at a stop id (not yielded), after `max_new_tokens`, or when `stop` (a
    threading.Event) is set. `cache`: a KVCache kept from earlier calls (only the prompt past what it holds is read);
    None: a fresh cache, emptied at the end."""
    model.eval()
    own = cache is None
    cache = KVCache(model) if own else cache
    try:
        with torch.no_grad():
            logits = cache.read(list(prompt_ids))  # (1, vocab_size): the first token's scores
        for step in range(max_new_tokens):
            if stop is not None and stop.is_set():
                return
            next_id = sample_next_token(logits, temperature, top_k, top_p).item()
            if next_id in stop_ids:
                return
            yield next_id
            if step + 1 < max_new_tokens:
                with torch.no_grad():
                    logits = cache.feed([next_id])  # only the new token is read
    finally:
        if own:
            model.reset_kv_cache()


def stream_text(token_ids, tokenizer):
    """Text pieces of a stream of token ids, never a broken character: a UTF-8 character split across byte-level
    tokens is held back until its last byte arrives. The pieces concatenate to `tokenizer.decode(all ids)`."""
    pending = []
    for token_id in token_ids:
        pending.append(token_id)
        text = tokenizer.decode(pending)
        if not text.endswith("\ufffd"):  # U+FFFD: the decoder's mark for bytes of an unfinished character
            pending = []
            yield text
    if pending:
        yield tokenizer.decode(pending)  # the stream ended inside a character: show what the decoder makes of it


def fit_history(template, messages, budget) -> tuple[list[dict], int]:
    """The newest messages whose prompt fits `budget` tokens: the oldest user/assistant turns go first (a system
    message and the last user message stay). Returns (messages, number of turns dropped)."""
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    dropped = 0
    while len(turns) > 1 and len(template.encode(system + turns)) > budget:
        turns = turns[2:]  # one user message and the assistant's answer to it
        dropped += 1
    return system + turns, dropped


class Chat:
    """A conversation with `model` through `template`: every reply is generated from the whole history, trimmed to fit
    `context_size - max_new_tokens` tokens, and streams as text (`send`). The KV cache is kept across turns, so only
    what is new since the last reply is read (all of it again after a trim). `note` gets what the user is told."""

    def __init__(self, model, template, context_size, max_new_tokens=100, temperature=0.0, top_k=None, top_p=None,
                 system=None, note=print):
        check_template(template)
        check_int(context_size, "context_size", 2, "the model's context length, e.g. cfg['context_length']")
        check_int(max_new_tokens, "max_new_tokens", 1, f"and below context_size={context_size}")
        if max_new_tokens >= context_size:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for the prompt in a context of "
                             f"{context_size} tokens: use at most {context_size // 2}")
        self.model, self.template, self.context_size, self.max_new_tokens = model, template, context_size, max_new_tokens
        self.sampling = check_sampling(temperature, top_k, top_p)
        self.system, self.note = system, note
        self.check_fits_model()
        self.reset()

    def check_fits_model(self):
        """ValueError unless the context fits the model's and a system message leaves room for a message and a reply."""
        try:
            limit = model_context_length(self.model)
        except ValueError:
            limit = self.context_size  # a model that does not say: the caller's word
        if self.context_size > limit:
            raise ValueError(f"context_size={self.context_size} is longer than the model's context of {limit} tokens "
                             f"(it would fail mid-reply): use at most {limit}")
        system = [{"role": "system", "content": self.system}] if self.system else []
        used = len(self.template.encode(system + [{"role": "user", "content": ""}]))
        if used >= self.context_size - self.max_new_tokens:
            raise ValueError(f"the system message takes {used} of the {self.context_size}-token context, which leaves "
                             f"no room for a message and a {self.max_new_tokens}-token reply: shorten it")

    def reset(self):
        """Start a new conversation (only the system message, if any, stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.last_prompt, self.cache = "", KVCache(self.model)

    def _cut_to_fit(self, text: str) -> str:
        """`text`, cut to the tokens a prompt of this message alone leaves room for (with a note)."""
        tokenizer, budget = self.template.tokenizer, self.context_size - self.max_new_tokens
        system = [m for m in self.messages[:1] if m["role"] == "system"]
        room = budget - len(self.template.encode(system + [{"role": "user", "content": ""}]))
        ids = getattr(tokenizer, "encode_ordinary", tokenizer.encode)(text)
        if len(ids) <= room:
            return text
        cut = tokenizer.decode(ids[:max(room, 1)]).rstrip("\ufffd")
        self.note(f"(your message has {len(ids)} tokens; only the first {room} fit in the model's context of "
                  f"{self.context_size} with room for a {self.max_new_tokens}-token reply: the rest was cut)")
        return cut

    def send(self, text: str, stop=None):
        """Add the user's `text`, then yield the reply as text pieces while it is generated. The reply joins the
        history when it ends, also when it is stopped (`stop` set, Ctrl-C) half-way."""
        if not isinstance(text, str) or not text.strip():
            self.note("(empty message ignored: type something)")
            return
        self.messages.append({"role": "user", "content": self._cut_to_fit(text.strip())})
        self.messages, dropped = fit_history(self.template, self.messages, self.context_size - self.max_new_tokens)
        if dropped:
            self.note(f"(the conversation is longer than the model's context: the oldest {dropped} turn(s) were "
                      "dropped from what the model reads)")
        prompt_ids = self.template.encode(self.messages)
        self.last_prompt = self.template.tokenizer.decode(prompt_ids)
        reply = []
        try:
            ids = stream_reply(self.model, prompt_ids, self.template.stop_ids, self.max_new_tokens, stop=stop,
                               cache=self.cache, **self.sampling)
            for piece in stream_text(ids, self.template.tokenizer):
                reply.append(piece)
                yield piece
        finally:
            self.messages.append({"role": "assistant", "content": "".join(reply)})

    def reply(self, text: str) -> str:
        """The whole reply to `text` at once (`send` without streaming)."""
        return "".join(self.send(text))


def check_sampling(temperature, top_k, top_p) -> dict:
    """The sampling settings as a dict, or ValueError saying which one is out of range."""
    if not (isinstance(temperature, (int, float)) and 0 <= temperature < float("inf")):
        raise ValueError(f"temperature must be 0 (greedy) or more (0.7-1.0 samples), got {temperature!r}")
    if top_k is not None:
        check_int(top_k, "top_k", 1, "None keeps every token")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be above 0 and at most 1 (the share of probability kept), got {top_p!r}")
    return dict(temperature=temperature, top_k=top_k, top_p=top_p)


def reply_to(model, template, messages, context_size, max_new_tokens=100) -> str:
    """The model's greedy reply to `messages` (ending with a user turn), the oldest turns dropped to fit as in `Chat`."""
    chat = Chat(model, template, context_size, max_new_tokens, note=lambda _: None)
    chat.messages = list(messages[:-1])
    return chat.reply(messages[-1]["content"])


def score_replies(model, template, conversations, context_size, max_new_tokens=40) -> tuple[list[bool], list[str]]:
    """(right, replies): the reply to each conversation without its last turn, right when it contains that last
    (assistant) turn, the fact to recall, in any case."""
    replies = [reply_to(model, template, c[:-1], context_size, max_new_tokens) for c in conversations]
    return [c[-1]["content"].lower() in r.lower() for c, r in zip(conversations, replies)], replies


# --- models: a checkpoint, the fallback chain, utils.llama's pretrained models ----------------------------------------


def load_chat_checkpoint(path, device="cpu", dtype=None):
    """(model, template, config) from a `save_checkpoint` file of chapter 7 or 9: a GPTModel with GPT-2's tokenizer
    (unless it names another), or a chapter-8 model saved with `save_chat_checkpoint` (its base model named).
    `dtype` None: float32 for a GPTModel, `load_pretrained`'s choice for a chapter-8 model."""
    from .checkpoint import check_fits, read_checkpoint
    from .corpus import get_tokenizer
    from .model import GPTModel

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the checkpoint file in it (.pth), or --model {path} for a "
                                "Hugging Face model folder")
    if not path.is_file():
        made_by = CHECKPOINT_HELP.get(path.name, "chapter 7 or chapter 9 writes one (data/ch07_instruction_model.pth, "
                                      "data/ch09_chat_model.pth)")
        raise FileNotFoundError(f"there is no checkpoint at {path}: {made_by}; run that notebook first")
    payload = read_checkpoint(path, map_location="cpu")
    if not isinstance(payload.get("config"), dict):
        raise ValueError(f"{path} holds no model config: save it with save_checkpoint(path, model, config=cfg)")
    if payload.get("base_model"):
        return llama_from_checkpoint(path, payload, device, dtype)
    model = GPTModel(payload["config"])
    check_fits(path, payload, model, hint="Not a chat model (chapter 6's classifier?): give a checkpoint of chapter 7 "
               "or 9, or use --model")
    try:
        template = AlpacaChatTemplate(get_tokenizer(payload.get("tokenizer", "gpt2")))
    except ValueError as exc:
        raise ValueError(f"{path} was trained with another tokenizer: {exc}") from None
    model.load_state_dict(payload["model_state_dict"])
    return model.to(device, dtype).eval(), template, payload["config"]


def save_chat_checkpoint(path, model, base_model, **state):
    """Save a chapter-8 model (SmolLM2, ...) in the one checkpoint format: its config, `base_model` (the name or .gguf
    file its tokenizer, template and weights come from) and, when LoRA-wrapped, only the LoRA weights."""
    from .checkpoint import save_checkpoint
    from .lora import lora_layers, lora_state_dict

    if not isinstance(getattr(model, "cfg", None), dict) or "n_kv_heads" not in model.cfg:
        raise TypeError("save_chat_checkpoint saves chapter 8's LlamaModel; save a GPTModel with save_checkpoint")
    layers = list(lora_layers(model).values())
    lora = {"rank": layers[0].lora.rank, "alpha": layers[0].lora.alpha} if layers else None
    weights = lora_state_dict(model) if layers else None  # the base model's weights come from `base_model` again
    return save_checkpoint(path, model, weights=weights, config=model.cfg, base_model=str(base_model), lora=lora,
                           **state)


def llama_from_checkpoint(path, payload, device="cpu", dtype=None):
    """(model, template, config): the checkpoint's base model loaded again, its saved weights (all, or LoRA's) on top."""
    from .llama import load_pretrained
    from .lora import replace_linear_with_lora

    model, template = load_pretrained(payload["base_model"], device=device, dtype=dtype)
    if model.cfg != payload["config"]:
        raise ValueError(f"{path} was trained on a model of another shape than {payload['base_model']}: "
                         f"its config is {payload['config']}")
    if payload.get("lora"):
        base = next(model.parameters())
        replace_linear_with_lora(model, payload["lora"]["rank"], payload["lora"]["alpha"])
        model.to(base.device, base.dtype)  # the new LoRA tensors where the base model is, in its dtype
    own = model.state_dict()
    wrong = [k for k, v in payload["model_state_dict"].items() if k not in own or own[k].shape != v.shape]
    if wrong or (not payload.get("lora") and own.keys() != payload["model_state_dict"].keys()):
        raise ValueError(f"{path} does not fit {payload['base_model']} (e.g. {(wrong or sorted(own))[0]}): "
                         "save it again with save_chat_checkpoint")
    model.load_state_dict(payload["model_state_dict"], strict=not payload.get("lora"))
    return model.eval(), template, payload["config"]


def chat_model_or_fallback(checkpoints, fallback_config, device="cpu"):
    """(model, template, config, source): the first of `checkpoints` that exists, else a random
    GPTModel(`fallback_config`) (seed 123) with GPT-2's tokenizer; one line says which."""
    from .model import GPTModel
    from .tokenizer import gpt2_tokenizer

    for path in checkpoints:
        if Path(path).is_file():
            model, template, config = load_chat_checkpoint(path, device)
            print(f"model: data/{Path(path).name}")
            return model, template, config, Path(path).name
    torch.manual_seed(123)
    model = GPTModel(fallback_config).to(device).eval()
    names = " or ".join(f"data/{Path(p).name}" for p in checkpoints)
    print("model: random weights (seed 123)" + (f": there is no {names} yet (chapters 7 and 5 write them)" if names else ""))
    return model, AlpacaChatTemplate(gpt2_tokenizer()), dict(fallback_config), "random weights"


def model_context_length(model) -> int:
    """The context length of a GPTModel (its position embeddings) or of a model with a `cfg` dict."""
    if hasattr(model, "pos_emb"):
        return model.pos_emb.num_embeddings
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None) or {}
    if isinstance(cfg, dict) and "context_length" in cfg:
        return cfg["context_length"]
    raise ValueError(f"cannot tell the context length of {type(model).__name__}: pass --context-length")


# --- the chat in a terminal: python -m utils.chat ---------------------------------------------------------------------


COMMANDS = {"/help": "lists these commands", "/reset": "starts a new conversation",
            "/quit": "leaves (so does Ctrl-D)"}


def use_readline() -> None:
    """Line editing and history (arrow keys) for `input()` where Python has readline (not on Windows)."""
    try:
        import readline  # noqa: F401  (importing it is what makes input() edit lines)
    except ImportError:
        pass


def terminal_chat(chat, read=None, write=None):
    """The chat loop of `python -m utils.chat`: /help, /reset, /quit (or Ctrl-D); Ctrl-C stops a reply."""
    read = read or input
    write = write or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    write("Chat: type a message. /help lists the commands; Ctrl-C stops a reply.\n")
    while True:
        try:
            text = read("you> ").strip()
        except EOFError:
            write("\n")
            return
        except KeyboardInterrupt:
            write("\n(Ctrl-C: no reply is being written; /quit leaves)\n")
            continue
        command = text.split()[0] if text.startswith("/") else None
        if command == "/quit":
            return
        if command == "/reset":
            chat.reset()
            write("(new conversation)\n")
        elif command == "/help":
            write("".join(f"  {name:7} {what}\n" for name, what in COMMANDS.items()))
        elif command:
            write(f"(unknown command {command}: /help lists the commands)\n")
        elif not text:
            list(chat.send(text))  # says why nothing happens
        else:
            write_reply(chat.send(text), write)


def write_reply(pieces, write) -> None:
    """`model> ` and the reply as it streams; notes the chat prints before the reply come on lines of their own."""
    started = False
    try:
        for piece in pieces:
            write("" if started else "model> ")
            started = True
            write(piece)
        write(("" if started else "model> ") + "\n")
    except KeyboardInterrupt:
        write(("" if started else "model> ") + " [stopped: the conversation goes on]\n")


def load_for_terminal(args):
    """(model, template, context length) for the command line's --checkpoint or --model."""
    from .device import get_device

    device = args.device or get_device()
    if args.checkpoint:
        model, template, _ = load_chat_checkpoint(args.checkpoint, device)
    else:
        from .llama import load_pretrained  # Llama 3.2 / Qwen3 and their own chat templates (chapter 8)

        model, template = load_pretrained(args.model, device=device)
    check_template(template)
    return model, template, args.context_length or model_context_length(model)


def main(argv=None):
    # Ctrl-C stops a reply even when the shell started us with SIGINT ignored (a background job, nohup, a test runner)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(prog="python -m utils.chat", description="Talk to a model in the terminal.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a chapter-7, 9 or 10 checkpoint, e.g. data/ch09_chat_model.pth")
    source.add_argument("--model", help="smollm2-135m (fetched once, then offline), qwen3-0.6b, a .gguf file, or a "
                        "local Hugging Face folder of a SmolLM2 / Llama 3 / Qwen3 model")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="the longest reply (default: 200, or a quarter of a shorter model's context)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy; 0.7-1.0 samples")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--system", default=None, help="a system message (replaces the default preamble)")
    parser.add_argument("--context-length", type=int, default=None, help="default: the model's")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best there is)")
    args = parser.parse_args(argv)
    from .assets import AssetError

    try:
        model, template, context_length = load_for_terminal(args)
        # a quarter of the context by default: a reply, the message it answers and one earlier exchange still fit
        reply = min(args.max_new_tokens or 200, context_length // (2 if args.max_new_tokens else 4))
        chat = Chat(model, template, context_length, reply, args.temperature, args.top_k, args.top_p,
                    system=args.system, note=lambda text: print(text, flush=True))
    except (OSError, ValueError, TypeError, ImportError, AssetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n(stopped while loading the model)", file=sys.stderr)
        return 130
    print(f"(replies of up to {reply} tokens in the model's {context_length}-token context; --max-new-tokens "
          "changes it)")
    use_readline()
    terminal_chat(chat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
