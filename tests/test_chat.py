"""utils.chat as a person uses it: templates, conversations files, assistant-only targets, streaming, trimming."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from utils import GPTModel, LlamaModel, generate
from utils.chat import (
    ASSISTANT_HEADER,
    IGNORE_INDEX,
    REPEAT_REQUEST,
    AlpacaChatTemplate,
    Chat,
    ConversationDataset,
    assistant_token_ids,
    chat_collate_fn,
    check_template,
    conversations_from_instructions,
    fit_history,
    load_conversations,
    reply_to,
    score_replies,
    stream_reply,
    stream_text,
)
from utils.corpus import ByteTokenizer
from utils.instruct import format_input

TOKENIZER = ByteTokenizer()  # byte-level: every accented letter and emoji is split across several tokens
EOT = TOKENIZER.eot_token
ACCENTED = "Crème brûlée, naïve façade; Ελληνικά, 日本語 and emoji 🙂👩‍🔬 🇫🇷!"
TINY = dict(vocab_size=257, context_length=512, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=False)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


class ScriptedModel(torch.nn.Module):
    """Says the token ids of `script`, one per step, whatever the prompt (the KV-cache interface of GPTModel)."""

    def __init__(self, script, vocab_size=257):
        super().__init__()
        self.script, self.vocab_size, self.pos = list(script), vocab_size, 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def reset_kv_cache(self):
        self.pos = 0

    def forward(self, idx, use_cache=False):
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.vocab_size)
        step = self.pos if use_cache else 0
        logits[:, -1, self.script[min(step, len(self.script) - 1)]] = 1.0
        self.pos += 1
        return logits


@pytest.fixture
def template():
    return AlpacaChatTemplate(TOKENIZER)


TINY_LLAMA = dict(vocab_size=257, context_length=512, emb_dim=32, n_heads=4, n_kv_heads=2, head_dim=8, n_layers=2,
                  hidden_dim=48, rope_base=10_000.0, rope_scaling=None, qk_norm=False, norm_eps=1e-5,
                  tie_embeddings=True)


def random_model(cfg=TINY):
    torch.manual_seed(123)
    return GPTModel(cfg).eval() if "n_kv_heads" not in cfg else LlamaModel(cfg).eval()


# --- the template ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [{"instruction": "Name a color.", "input": "", "output": "Red."},
                                   {"instruction": "Sort the words.", "input": "pear, apple", "output": "apple, pear"}])
def test_first_turn_is_chapter_7s_prompt(template, entry):
    conversation = conversations_from_instructions([entry], max_turns=1, repeat_share=0.0)[0]
    ids = template.encode(conversation[:1])
    assert TOKENIZER.decode(ids) == format_input(entry) + ASSISTANT_HEADER  # '### Input:' included


def test_every_assistant_turn_ends_with_the_end_of_turn_token(template):
    messages = [user("Hi"), assistant("Hello!"), user("Bye")]
    ids = template.encode(messages)
    assert template.stop_ids == {EOT}
    assert ids.count(EOT) == 1
    text = TOKENIZER.decode(ids)
    assert "### Response:\nHello!<|endoftext|>\n\n### Instruction:\nBye" in text
    assert text.endswith("### Response:\n")
    assert template.encode(messages[:2], add_generation_prompt=False)[-1] == EOT


def test_a_message_with_the_end_of_text_text_cannot_end_a_turn(template):
    ids = template.encode([user("Say <|endoftext|> please")])
    assert EOT not in ids and "Say <|endoftext|> please" in TOKENIZER.decode(ids)


def test_a_system_message_replaces_the_preamble(template):
    text = TOKENIZER.decode(template.encode([{"role": "system", "content": "Be brief."}, user("Hi")]))
    assert text.startswith("Be brief.\n\n### Instruction:\nHi")


@pytest.mark.parametrize("messages, says", [
    ([], "non-empty"),
    ([assistant("Hi")], "'assistant' turn where a 'user' turn belongs"),
    ([user("a"), user("b")], "a 'user' turn where an 'assistant' turn belongs"),
    ([user("a"), {"role": "robot", "content": "x"}], "'role'"),
    ([user("a"), assistant("b")], "last message must be a 'user' turn"),
])
def test_messages_out_of_order_are_refused(template, messages, says):
    with pytest.raises(ValueError, match=says):
        template.encode(messages)


def test_an_object_without_a_chat_template_says_how_to_write_one():
    with pytest.raises(TypeError, match="encode\\(messages, add_generation_prompt=True\\).*AlpacaChatTemplate"):
        check_template(object())
    with pytest.raises(TypeError, match="not a chat template"):
        Chat(random_model(), TOKENIZER, 512)


# --- data -----------------------------------------------------------------------------------------------------------


def test_only_the_assistant_turns_are_learned(template):
    messages = [user("Hi"), assistant("Hello!"), user("Again"), assistant("Hey.")]
    ids, labels = assistant_token_ids(template, messages)
    assert ids == template.encode(messages, add_generation_prompt=False)
    learned = [t for t in labels if t != IGNORE_INDEX]
    assert TOKENIZER.decode(learned) == "Hello!<|endoftext|>Hey.<|endoftext|>"
    inputs, targets = chat_collate_fn([(ids, labels), (ids[:10] + [EOT], labels[:10] + [EOT])], pad_token_id=EOT)
    assert inputs.shape == targets.shape == (2, len(ids) - 1)
    assert targets[0].tolist() == labels[1:]  # targets: the next token, -100 where nothing is learned
    assert targets[1].tolist() == labels[1:10] + [EOT] + [IGNORE_INDEX] * (len(ids) - 11)
    assert (inputs[1, 10:] == EOT).all()  # padded with the end-of-text token, which no target learns there


def test_conversations_from_the_instruction_data():
    data = [{"instruction": f"Task {i}.", "input": "x" if i % 2 else "", "output": f"Answer {i}."} for i in range(40)]
    conversations = conversations_from_instructions(data, max_turns=3, seed=123)
    pairs = [(c[i]["content"], c[i + 1]["content"]) for c in conversations for i in range(0, len(c), 2)]
    answers = [answer for question, answer in pairs if question != REPEAT_REQUEST]
    assert answers == [e["output"] for e in data]  # every entry once, in order
    assert any(len(c) > 2 for c in conversations)
    repeats = [c for c in conversations if c[-2]["content"] == REPEAT_REQUEST]
    assert repeats and all(c[-1]["content"] == c[-3]["content"] for c in repeats)
    assert conversations == conversations_from_instructions(data, max_turns=3, seed=123)  # seeded
    assert ("Task 1.\n\n### Input:\nx", "Answer 1.") in pairs and ("Task 0.", "Answer 0.") in pairs  # chapter 7's header
    ConversationDataset(conversations, AlpacaChatTemplate(TOKENIZER))  # every conversation is well formed


def write_lines(tmp_path, lines):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_conversations_file_of_my_own(tmp_path):
    good = json.dumps({"messages": [user("Hi"), assistant("Hello, ça va? 🙂")]}, ensure_ascii=False)
    path = write_lines(tmp_path, [good, "", good])
    assert load_conversations(path) == [[user("Hi"), assistant("Hello, ça va? 🙂")]] * 2


@pytest.mark.parametrize("bad, says", [
    ('{"messages": [{"role": "user", "content": "Hi"}', "line 2: Expecting"),
    (json.dumps({"messages": [user("Hi"), user("Hi again")]}), "line 2: message 1 is a 'user' turn"),
    (json.dumps({"messages": [user("Hi")]}), "line 2: the last message must be an 'assistant' turn"),
    (json.dumps([user("Hi")]), "line 2: each line must be an object"),
])
def test_a_broken_conversations_file_is_refused_with_the_line_number(tmp_path, bad, says):
    good = json.dumps({"messages": [user("Hi"), assistant("Hello")]})
    with pytest.raises(ValueError, match=says):
        load_conversations(write_lines(tmp_path, [good, bad]))


def test_a_latin_1_byte_is_named_with_file_and_line(tmp_path):
    path = tmp_path / "mine.jsonl"
    good = json.dumps({"messages": [user("Hi"), assistant("Hello")]})
    path.write_bytes((good + "\n" + good.replace("Hello", "Caf\u00e9") + "\n").encode("latin-1"))
    with pytest.raises(ValueError, match=r"mine.jsonl, line 2: byte b'\\xe9' at column \d+ is not UTF-8"):
        load_conversations(path)


def test_a_conversation_longer_than_the_context_is_named_not_a_nan(template, capsys):
    short = [user("Hi"), assistant("Hello")]
    long = [user("x" * 300), assistant("Too late.")]
    dataset = ConversationDataset([short, long, short], template, max_length=256)
    assert len(dataset) == 2 and dataset.left_out == [1]
    assert "left out 1 conversation(s) with no assistant token in their first 256 tokens" in capsys.readouterr().out
    ids, labels = ConversationDataset([long], template).items[0]
    with pytest.raises(ValueError, match="no conversation in this batch .* within allowed_max_length=256"):
        chat_collate_fn([(ids, labels)], allowed_max_length=256)
    chat_collate_fn([(ids, labels), dataset[0]], allowed_max_length=256)  # one learns: the batch's loss is finite


def test_a_missing_or_empty_conversations_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="one conversation per line"):
        load_conversations(tmp_path / "none.jsonl")
    with pytest.raises(ValueError, match="holds no conversation"):
        load_conversations(write_lines(tmp_path, [""]))


# --- streaming ------------------------------------------------------------------------------------------------------


def test_streamed_text_never_shows_a_broken_character():
    ids = TOKENIZER.encode(ACCENTED)
    assert len(ids) > len(ACCENTED)  # multi-byte characters span several tokens
    pieces = list(stream_text(ids, TOKENIZER))
    assert "".join(pieces) == ACCENTED
    assert not any("\ufffd" in piece for piece in pieces)


def test_streamed_text_with_gpt2s_tokenizer():
    tiktoken = pytest.importorskip("tiktoken")
    try:
        tokenizer = tiktoken.get_encoding("gpt2")
    except Exception as exc:  # no cached BPE files and no internet
        pytest.skip(f"GPT-2's tokenizer files are not available: {exc}")
    ids = tokenizer.encode(ACCENTED)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some tokens hold part of a character
    pieces = list(stream_text(ids, tokenizer))
    assert "".join(pieces) == ACCENTED and not any("\ufffd" in piece for piece in pieces)


def test_a_reply_streams_token_by_token_and_stops_at_the_end_of_turn(template):
    script = TOKENIZER.encode("Voilà: 🙂 café") + [EOT] + TOKENIZER.encode("never said")
    chat = Chat(ScriptedModel(script), template, context_size=512, max_new_tokens=100)
    pieces = list(chat.send("Say something"))
    assert "".join(pieces) == "Voilà: 🙂 café"
    assert len(pieces) == len("Voilà: 🙂 café")  # one character a piece: held back only inside a character
    assert chat.messages[-1] == assistant("Voilà: 🙂 café")


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=1.0, top_k=20, top_p=0.9)])
def test_streamed_pieces_join_to_the_non_streamed_answer(template, sampling):
    model = random_model()
    chat = Chat(model, template, context_size=512, max_new_tokens=60, **sampling)
    prompt_ids = template.encode([user("Écris un mot: élève 🙂")])
    torch.manual_seed(7)
    pieces = list(chat.send("Écris un mot: élève 🙂"))
    torch.manual_seed(7)
    out = generate(model, torch.tensor([prompt_ids]), 60, 512, eos_id=EOT, **sampling)
    assert "".join(pieces) == TOKENIZER.decode(out[0, len(prompt_ids):].tolist())
    assert chat.reply("Encore") == chat.messages[-1]["content"]


def test_the_kv_cache_gives_the_same_tokens_as_rereading_everything():
    model = random_model()
    prompt = TOKENIZER.encode("Hello there")
    streamed = list(stream_reply(model, prompt, set(), 30))
    full = generate(model, torch.tensor([prompt]), 30, 512, use_cache=False)[0, len(prompt):].tolist()
    assert streamed == full


# --- the conversation: history, trimming, bad input -------------------------------------------------------------------


def test_every_prompt_holds_the_whole_history(template):
    chat = Chat(random_model(), template, context_size=512, max_new_tokens=8)
    first = chat.reply("First question")
    chat.reply("Second question")
    assert f"First question\n\n### Response:\n{first}<|endoftext|>\n\n### Instruction:\nSecond question" in chat.last_prompt
    chat.reset()
    chat.reply("Third")
    assert "First" not in chat.last_prompt


def test_the_oldest_turns_go_first_when_the_history_outgrows_the_context(template):
    notes = []
    chat = Chat(ScriptedModel(TOKENIZER.encode("ok") + [EOT]), template, context_size=240, max_new_tokens=20,
                system="Short.", note=notes.append)
    for i in range(8):
        chat.reply(f"Question number {i}, asked with a few more words")
    assert any("oldest" in n for n in notes)
    assert len(template.encode(chat.messages[:-1])) <= 240 - 20
    assert chat.messages[0] == {"role": "system", "content": "Short."}  # the system message stays
    assert chat.messages[-2] == user("Question number 7, asked with a few more words")
    assert "Question number 0" not in chat.last_prompt and "Question number 7" in chat.last_prompt
    trimmed, dropped = fit_history(template, chat.messages[:-1], 10)  # nothing fits: the last user turn stays
    assert trimmed[-1]["role"] == "user" and dropped > 0


def test_an_empty_message_is_ignored_and_a_long_one_cut(template):
    notes = []
    chat = Chat(ScriptedModel(TOKENIZER.encode("ok") + [EOT]), template, context_size=256, max_new_tokens=20,
                note=notes.append)
    assert list(chat.send("   ")) == [] and chat.messages == []
    assert "empty message ignored" in notes[-1]
    chat.reply("é" * 500)
    assert "was cut" in notes[-1]
    assert len(template.encode(chat.messages[:-1])) <= 256 - 20
    assert chat.messages[0]["content"].startswith("éé") and "\ufffd" not in chat.messages[0]["content"]


def test_stop_mid_reply_keeps_what_was_said(template):
    stop = threading.Event()
    chat = Chat(ScriptedModel(TOKENIZER.encode("a long answer that goes on")), template, 512, max_new_tokens=100)
    pieces = []
    for piece in chat.send("Talk", stop=stop):
        pieces.append(piece)
        if len(pieces) == 6:
            stop.set()
    assert "".join(pieces) == "a long"
    assert chat.messages[-1] == assistant("a long")  # the conversation goes on from what was shown


def test_max_new_tokens_must_leave_room_for_the_prompt(template):
    with pytest.raises(ValueError, match="no room for the prompt"):
        Chat(random_model(), template, context_size=64, max_new_tokens=64)


# --- the KV cache across turns ----------------------------------------------------------------------------------------


def count_reads(model):
    """A list that gets the number of tokens of every forward call of `model`."""
    reads = []
    model.register_forward_pre_hook(lambda _, args, kwargs: reads.append(args[0].shape[1]), with_kwargs=True)
    return reads


@pytest.mark.parametrize("cfg", [TINY, TINY_LLAMA], ids=["GPTModel", "LlamaModel"])
def test_a_chat_reads_only_the_new_turn_and_says_the_same(template, cfg):
    model, twin = random_model(cfg), random_model(cfg)
    chat = Chat(model, template, context_size=512, max_new_tokens=12)
    reads = count_reads(model)
    for text in ["First question", "Second one", "Third"]:
        before = len(reads)
        reply = chat.reply(text)
        prompt = template.encode(chat.messages[:-1])
        assert reads[before] == chat.cache.last_read  # the first call of a turn reads the prompt, or its new part
        fresh = list(stream_reply(twin, prompt, template.stop_ids, 12))  # everything read again
        assert reply == TOKENIZER.decode(fresh)
    assert chat.cache.last_read < len(prompt) // 2  # turn 3: its own message and template, not the whole history
    new_turn = template.encode(chat.messages[:-1])[len(template.encode(chat.messages[:-2], False)):]
    assert chat.cache.last_read >= len(new_turn)


def test_the_cache_is_read_again_after_a_trim_or_another_caller(template):
    model = random_model()
    notes = []
    chat = Chat(model, template, context_size=240, max_new_tokens=8, note=notes.append)
    chat.reply("One two three four five six seven eight nine ten")
    list(stream_reply(model, template.encode([user("Elsewhere")]), set(), 4))  # another caller empties the cache
    chat.reply("Again")
    assert chat.cache.last_read == len(template.encode(chat.messages[:-1]))  # all of it: the cache was not ours
    for i in range(4):  # the history outgrows 160 - 8 tokens: the oldest turns go, the prompt changes near its start
        reply = chat.reply(f"Question {i} with a few more words in it")
    prompt = template.encode(chat.messages[:-1])
    assert any("oldest" in note for note in notes) and chat.cache.last_read < len(prompt)
    assert reply == TOKENIZER.decode(list(stream_reply(random_model(), prompt, template.stop_ids, 8)))


def test_reply_to_and_scores_use_the_chats_whole_turn_policy(template):
    model = ScriptedModel(TOKENIZER.encode("Your cat is MISO.") + [EOT])
    long = [user("x" * 100), assistant("y" * 100), user("My cat is Miso."), assistant("Nice."), user("Cat?")]
    assert reply_to(model, template, long, context_size=250, max_new_tokens=20) == "Your cat is MISO."
    right, replies = score_replies(model, template, [long + [assistant("miso")], long + [assistant("Luna")]], 250, 20)
    assert right == [True, False] and replies == ["Your cat is MISO."] * 2


# --- the real SmolLM2 and its ChatML template (skipped where it cannot be fetched) -------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    """(model, template) of SmolLM2-135M-Instruct, float32 on the CPU."""
    from utils import fetch, load_pretrained
    from utils.assets import AssetUnavailable

    try:
        path = fetch("smollm2-135m")
    except AssetUnavailable as exc:
        pytest.skip(f"SmolLM2 could not be fetched: {str(exc).splitlines()[-1][:200]}")
    return load_pretrained(path, device="cpu", dtype=torch.float32)


def test_chatml_conversations_learn_only_the_assistant_turns(smollm2):
    model, template = smollm2
    messages = [user("Hi"), assistant("Hello! 🙂"), user("Bye"), assistant("Goodbye.")]
    ids, labels = assistant_token_ids(template, messages)
    learned = template.tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert learned == "Hello! 🙂<|im_end|>Goodbye.<|im_end|>"  # the reply ends at <|im_end|>, as generation does
    pad_id = template.tokenizer.token_id("<|endoftext|>")
    inputs, targets = chat_collate_fn([(ids, labels), (ids[:12], labels[:12])], pad_token_id=pad_id)
    assert pad_id == 0 and inputs.max() < model.cfg["vocab_size"]  # GPT-2's 50256 would be outside the vocabulary
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
    assert torch.isfinite(loss)


def test_smollm2_recalls_across_turns_with_the_kept_cache(smollm2):
    model, template = smollm2
    chat = Chat(model, template, context_size=1024, max_new_tokens=20)
    chat.reply("My name is Ada.")
    answer = chat.reply("What is the capital of France?")
    assert "Paris" in answer
    assert chat.cache.last_read < len(template.encode(chat.messages[:-1])) // 2  # only the new turn was read


def test_the_widget_refuses_an_empty_message_keeps_every_note_and_is_off_while_writing(template):
    pytest.importorskip("anywidget")
    from utils.chat_widget import ChatWidget

    widget = ChatWidget(Chat(random_model(), template, 512, 8))
    widget._on_msg(widget, {"type": "send", "text": "   "}, [])  # what the browser sends on Enter or Send
    assert widget.messages == [] and "empty message ignored" in widget.status
    widget._on_msg(widget, {"type": "send", "text": "x" * 600}, [])  # cut to fit: a note
    assert widget.writing and widget.messages[-1] == {"role": "user", "text": "x" * 600}
    widget._on_msg(widget, {"type": "send", "text": "a second send while writing"}, [])
    widget.thread.join()
    assert not widget.writing and [m["role"] for m in widget.messages] == ["user", "assistant"]  # refused, not queued
    assert widget.messages[-1]["text"] and not widget.messages[-1]["stopped"] and widget.reply == ""
    assert "the rest was cut" in widget.status and "writing" not in widget.status
    assert widget.prompt == widget.chat.last_prompt and "x" * 50 in widget.prompt
    widget.on_send("y" * 600)
    widget.thread.join()
    assert "the rest was cut" in widget.status and "turn(s) were dropped" in widget.status  # both kept
    widget._on_msg(widget, {"type": "new"}, [])
    assert widget.messages == [] and widget.prompt == "" and widget.status == "(new chat)" and not widget.chat.messages


def test_the_widget_stops_a_reply_and_marks_it(template):
    pytest.importorskip("anywidget")
    from utils.chat_widget import ChatWidget

    widget = ChatWidget(Chat(random_model(), template, 512, 200))
    started = threading.Event()
    send = widget.chat.send
    widget.chat.send = lambda text, stop: (started.set() or piece for piece in send(text, stop=stop))
    widget.on_send("Hello")
    assert started.wait(30)
    widget._on_msg(widget, {"type": "stop"}, [])
    widget.thread.join(30)
    assert widget.messages[-1]["stopped"] and len(widget.chat.messages) == 2


def test_importing_utils_sets_a_short_openmp_spin_before_torch_loads():
    """`import utils` (a notebook's first import, `python -m utils.<x>`) sets GOMP_SPINCOUNT unless the user set a
    policy, before torch reads it."""
    import subprocess
    import sys

    probe = "import os, utils; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in __import__("os").environ.items() if k not in {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "20000"
    run = subprocess.run([sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "PASSIVE"}, capture_output=True,
                         text=True, check=True)
    assert run.stdout.strip() == "None"  # the user's choice wins
